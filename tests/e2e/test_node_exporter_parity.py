"""The host metrics agree with node_exporter's, read from the same machine at the same time."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_process import agent, free_port, running
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Series:
    text = httpx.get(url, timeout=10).text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def one(series: Series, name: str, **labels: str) -> float:
    matches = [v for (n, ls), v in series.items() if n == name and set(labels.items()) <= ls]
    assert len(matches) == 1, f"{name}{labels}: {len(matches)} matches"
    return matches[0]


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    binary = shutil.which("prometheus-node-exporter") or shutil.which("node_exporter")
    assert binary, "node_exporter is required (Debian package prometheus-node-exporter)"
    workdir: Path = tmp_path_factory.mktemp("parity")
    port = free_port()
    exporter_url = f"http://127.0.0.1:{port}/metrics"
    with (
        running([binary, f"--web.listen-address=127.0.0.1:{port}"], exporter_url, workdir / "ne.log"),
        agent("--scrape-interval", "1", "--no-enable-gpu", log_path=workdir / "agent.log") as agent_url,
    ):
        yield f"{agent_url}/metrics", exporter_url


def test_memory_total_matches(both: tuple[str, str]) -> None:
    ours, theirs = scrape(both[0]), scrape(both[1])
    assert one(ours, "esnode_memory_total_bytes") == one(theirs, "node_memory_MemTotal_bytes")
    assert one(ours, "esnode_swap_total_bytes") == one(theirs, "node_memory_SwapTotal_bytes")


def test_root_filesystem_size_matches(both: tuple[str, str]) -> None:
    ours, theirs = scrape(both[0]), scrape(both[1])
    assert one(ours, "esnode_disk_total_bytes", mount="/") == one(
        theirs, "node_filesystem_size_bytes", mountpoint="/"
    )


def test_cpu_seconds_agree_per_cpu_and_mode(both: tuple[str, str]) -> None:
    ours, theirs = scrape(both[0]), scrape(both[1])
    theirs_cpu = {
        (dict(ls)["cpu"], dict(ls)["mode"]): v
        for (n, ls), v in theirs.items()
        if n == "node_cpu_seconds_total"
    }
    ours_cpu = {
        (dict(ls)["cpu"], dict(ls)["mode"]): v
        for (n, ls), v in ours.items()
        if n == "esnode_cpu_seconds_total"
    }
    assert ours_cpu.keys() == theirs_cpu.keys()
    for key, value in theirs_cpu.items():
        # Read up to one agent interval apart: allow 1 s of CPU time per mode plus rounding.
        assert ours_cpu[key] == pytest.approx(value, abs=1.5), key


def test_network_counters_agree_per_interface(both: tuple[str, str]) -> None:
    ours, theirs = scrape(both[0]), scrape(both[1])
    theirs_rx = {
        dict(ls)["device"]: v for (n, ls), v in theirs.items() if n == "node_network_receive_bytes_total"
    }
    ours_rx = {
        dict(ls)["interface"]: v for (n, ls), v in ours.items() if n == "esnode_network_rx_bytes_total"
    }
    assert ours_rx.keys() == theirs_rx.keys() - {"lo"}
    for interface, value in ours_rx.items():
        assert value == pytest.approx(theirs_rx[interface], abs=1_000_000), interface


def test_disk_read_bytes_agree_per_device(both: tuple[str, str]) -> None:
    ours, theirs = scrape(both[0]), scrape(both[1])
    theirs_read = {
        dict(ls)["device"]: v for (n, ls), v in theirs.items() if n == "node_disk_read_bytes_total"
    }
    ours_read = {dict(ls)["device"]: v for (n, ls), v in ours.items() if n == "esnode_disk_read_bytes_total"}
    assert ours_read and ours_read.keys() <= theirs_read.keys()
    for device, value in ours_read.items():
        assert value == pytest.approx(theirs_read[device], abs=50_000_000), device
