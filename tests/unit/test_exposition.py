"""Exposition: one render per cycle, valid text and OpenMetrics, gzip copies of the same bytes."""

from __future__ import annotations

import gzip
import math
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from esnode_agent.cycle.samples import SampleIndex, SampleSink, counter, gauge
from esnode_agent.serve.exposition import render

CPU_SECONDS = counter("esnode_cpu_seconds_total", "CPU time by mode.", "cpu", "mode")
DISK_USED = gauge("esnode_disk_used_bytes", "Used bytes.", "mount", "device", "fstype")
RESOURCE_INFO = gauge("esnode_test_info", "Identity.", "resource")


def _samples() -> SampleIndex:
    sink = SampleSink(0.0)
    sink.add(CPU_SECONDS, 12.5, cpu="0", mode="user")
    sink.add(CPU_SECONDS, 3.25, cpu="0", mode="system")
    sink.add(DISK_USED, 1024.0, mount="/", device="/dev/vda", fstype="ext4")
    sink.add(RESOURCE_INFO, 1.0, resource='nvidia.com/mig-3g.40gb "quoted"\\')
    return SampleIndex(sink.samples)


def test_text_format_parses_back_to_the_same_values() -> None:
    families = {f.name: f for f in parse_text(render(_samples()).text.body.decode())}
    cpu = families["esnode_cpu_seconds"]
    assert cpu.type == "counter"
    assert {(s.name, s.labels["mode"], s.value) for s in cpu.samples} == {
        ("esnode_cpu_seconds_total", "user", 12.5),
        ("esnode_cpu_seconds_total", "system", 3.25),
    }
    info = families["esnode_test_info"].samples[0]
    assert info.labels["resource"] == 'nvidia.com/mig-3g.40gb "quoted"\\'


def test_openmetrics_parses_and_ends_with_eof() -> None:
    body = render(_samples()).openmetrics.body.decode()
    assert body.endswith("# EOF\n")
    names = {f.name for f in parse_openmetrics(body)}
    assert {"esnode_cpu_seconds", "esnode_disk_used_bytes"} <= names


def test_special_values_use_prometheus_spelling() -> None:
    sink = SampleSink(0.0)
    for value, label in ((math.nan, "nan"), (math.inf, "inf"), (-math.inf, "-inf")):
        sink.add(RESOURCE_INFO, value, resource=label)
    samples = {
        s.labels["resource"]: s.value
        for f in parse_text(render(sink.samples).text.body.decode())
        for s in f.samples
    }
    assert math.isnan(samples["nan"])
    assert samples["inf"] == math.inf
    assert samples["-inf"] == -math.inf


def test_gzip_copies_hold_the_same_bytes() -> None:
    exposition = render(_samples())
    assert gzip.decompress(exposition.text.body_gzip) == exposition.text.body
    assert gzip.decompress(exposition.openmetrics.body_gzip) == exposition.openmetrics.body


def test_promtool_accepts_the_text_format() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is required (Debian package prometheus); .ci/run installs it")
    result = subprocess.run(
        [promtool, "check", "metrics"],
        input=render(_samples()).text.body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr.decode()
