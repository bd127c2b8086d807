"""OTLP push: the encoding of a snapshot, and the pusher's retries, backoff and drops against a
real loopback HTTP server answering as a receiver under load does (503, 429 with Retry-After)."""

from __future__ import annotations

import logging
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from collecting import collect
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import AGGREGATION_TEMPORALITY_CUMULATIVE, Metric
from otlp_receiver import receiving

from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError, load_config
from esnode_agent.cycle.samples import Sample, SampleIndex
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.otlp.collector import OtlpPushCollector
from esnode_agent.otlp.encode import SnapshotEncoder, resource_attributes
from esnode_agent.otlp.push import QUEUE_SNAPSHOTS, OtlpPusher, metrics_url, retry_after_seconds, tls_context
from esnode_agent.otlp.wiring import build_pusher

GPU_LABELS = ("0", "GPU-aaaa")


def _snapshot(sequence: int, watts: float, joules: float, at_seconds: float | None = None) -> Snapshot:
    samples = [
        Sample(GPU.power, GPU_LABELS, watts),
        Sample(GPU.energy, GPU_LABELS, joules),
    ]
    return Snapshot(sequence, at_seconds or 1000.0 + sequence, 0.01, SampleIndex(samples), ())


def _metrics(body: bytes) -> dict[str, Metric]:
    request = ExportMetricsServiceRequest.FromString(body)
    [resource] = request.resource_metrics
    [scope] = resource.scope_metrics
    return {metric.name: metric for metric in scope.metrics}


def _resource(body: bytes) -> dict[str, str]:
    [resource] = ExportMetricsServiceRequest.FromString(body).resource_metrics
    return {kv.key: kv.value.string_value for kv in resource.resource.attributes}


def test_gauges_are_gauges_and_counters_cumulative_monotonic_sums_with_their_labels() -> None:
    body = SnapshotEncoder(resource_attributes("host-a", "node-a")).encode(_snapshot(1, 312.5, 9000.0))
    metrics = _metrics(body)
    power, energy = metrics[GPU.power.name], metrics[GPU.energy.name]
    assert power.WhichOneof("data") == "gauge"
    [point] = power.gauge.data_points
    assert point.as_double == 312.5
    assert point.time_unix_nano == 1001 * 10**9
    assert {kv.key: kv.value.string_value for kv in point.attributes} == {"gpu": "0", "uuid": "GPU-aaaa"}
    assert energy.WhichOneof("data") == "sum"
    assert energy.sum.is_monotonic
    assert energy.sum.aggregation_temporality == AGGREGATION_TEMPORALITY_CUMULATIVE
    assert energy.sum.data_points[0].as_double == 9000.0
    assert power.description == GPU.power.help


def test_resource_names_the_service_host_and_node() -> None:
    in_cluster = _resource(
        SnapshotEncoder(resource_attributes("host-a", "node-a")).encode(_snapshot(1, 1, 1))
    )
    assert in_cluster["service.name"] == "esnode-agent"
    assert in_cluster["host.name"] == "host-a"
    assert in_cluster["k8s.node.name"] == "node-a"
    assert in_cluster["service.instance.id"] == "node-a"
    off_cluster = _resource(SnapshotEncoder(resource_attributes("host-a", None)).encode(_snapshot(1, 1, 1)))
    assert "k8s.node.name" not in off_cluster
    assert off_cluster["service.instance.id"] == "host-a"


def test_a_counter_keeps_its_start_time_until_it_goes_down() -> None:
    encoder = SnapshotEncoder(resource_attributes("h", None))

    def start_and_time(snapshot: Snapshot) -> tuple[int, int]:
        [point] = _metrics(encoder.encode(snapshot))[GPU.energy.name].sum.data_points
        return point.start_time_unix_nano, point.time_unix_nano

    first = start_and_time(_snapshot(1, 300, 100.0))
    second = start_and_time(_snapshot(2, 300, 400.0))
    reset = start_and_time(_snapshot(3, 300, 5.0))  # the GPU was reset: its counter restarted
    after = start_and_time(_snapshot(4, 300, 50.0))
    assert first[0] == first[1]  # first seen: accrued before the agent saw it is not claimed
    assert second[0] == first[0] < second[1]
    assert reset[0] == second[1]  # the restart happened after the previous push
    assert after[0] == reset[0]


def test_metrics_url_appends_the_signal_path_to_a_base() -> None:
    assert metrics_url("http://127.0.0.1:9090/api/v1/otlp") == "http://127.0.0.1:9090/api/v1/otlp/v1/metrics"
    assert metrics_url("http://127.0.0.1:4318/") == "http://127.0.0.1:4318/v1/metrics"
    assert metrics_url("http://127.0.0.1:4318/v1/metrics") == "http://127.0.0.1:4318/v1/metrics"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_seconds("7", now=0.0) == 7.0
    assert retry_after_seconds("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert retry_after_seconds("soon", now=0.0) is None
    assert retry_after_seconds(None, now=0.0) is None


class _Waits:
    """The pusher's sleep, recorded and returned at once."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def __call__(self, seconds: float) -> bool:
        self.seconds.append(seconds)
        return False


def _pusher(url: str, waits: _Waits, headers: dict[str, str] | None = None) -> OtlpPusher:
    client = httpx.Client(timeout=5, headers=headers)
    return OtlpPusher(client, url, SnapshotEncoder(resource_attributes("h", None)), 1.0, sleep=waits)


def _wait_for(pusher: OtlpPusher, finished: int) -> None:
    for _ in range(500):
        if sum(v for k, v in pusher.stats.results.items() if k != "dropped") >= finished:
            return
        time.sleep(0.01)
    raise AssertionError(f"pushes did not finish: {pusher.stats}")


def test_503_and_429_are_retried_with_backoff_honouring_retry_after() -> None:
    waits = _Waits()
    with receiving([(503, {}), (429, {"Retry-After": "12"})]) as receiver:
        pusher = _pusher(receiver.url, waits, headers={"Authorization": "Bearer s3cret"})
        pusher.start()
        pusher.offer(_snapshot(1, 300, 100))
        _wait_for(pusher, 1)
        pusher.stop()
    stats = pusher.stats
    assert stats.results["success"] == 1
    assert stats.retries == 2
    assert 0.5 <= waits.seconds[0] <= 1.0  # first backoff: up to a second
    assert waits.seconds[1] >= 12.0  # the receiver asked for 12 s
    assert len(receiver.bodies) == 3 and receiver.bodies[0] == receiver.bodies[2]  # the same push again
    assert receiver.headers[0]["Content-Type"] == "application/x-protobuf"
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    assert [s.value for s in collect(OtlpPushCollector(pusher)).named("esnode_otlp_push_total")] == [
        1,
        0,
        0,
        0,
    ]


def test_a_receiver_that_keeps_failing_costs_one_push_not_the_rest(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="esnode_agent.otlp.push")
    waits = _Waits()
    with receiving([(503, {})] * 5 + [(400, {})]) as receiver:
        pusher = _pusher(receiver.url, waits)
        pusher.start()
        pusher.offer(_snapshot(1, 300, 100))  # 5 x 503: given up
        pusher.offer(_snapshot(2, 300, 200))  # 400: refused for good, not retried
        pusher.offer(_snapshot(3, 300, 300))  # 200
        _wait_for(pusher, 3)
        pusher.stop()
    assert pusher.stats.results == {"success": 1, "rejected": 1, "failed": 1, "dropped": 0}
    assert pusher.stats.retries == 4
    assert len(receiver.bodies) == 7
    # One line per change of state (failing, failing otherwise, recovered), not one per attempt.
    pushes = [r for r in caplog.records if r.name == "esnode_agent.otlp.push"]  # not httpx's own
    assert [(r.levelname, r.getMessage(), getattr(r, "result", None)) for r in pushes] == [
        ("WARNING", "otlp push failing", "failed"),
        ("WARNING", "otlp push failing", "rejected"),
        ("INFO", "otlp push recovered", None),
    ]


def test_a_full_queue_drops_its_oldest_snapshots_and_counts_them() -> None:
    waits = _Waits()
    with receiving([]) as receiver:
        pusher = _pusher(receiver.url, waits)
        for sequence in range(1, QUEUE_SNAPSHOTS + 3):  # the pusher is not running yet: a stalled one
            pusher.offer(_snapshot(sequence, 300, 100 * sequence))
        assert pusher.stats.results["dropped"] == 2
        assert pusher.stats.queued == QUEUE_SNAPSHOTS
        pusher.start()
        _wait_for(pusher, QUEUE_SNAPSHOTS)
        pusher.stop()
    first = _metrics(receiver.bodies[0])[GPU.energy.name].sum.data_points[0].as_double
    assert first == 300.0  # snapshots 1 and 2 were the ones dropped
    assert pusher.stats.results["success"] == QUEUE_SNAPSHOTS


def test_snapshots_are_offered_once_per_interval() -> None:
    pusher = _pusher("http://127.0.0.1:9/v1/metrics", _Waits())
    for at in (100.0, 100.5, 100.95, 101.2, 102.0):  # interval 1 s; a tenth early still counts
        pusher.offer(_snapshot(1, 300, 1, at_seconds=at))
    assert pusher.stats.queued == 3


@pytest.mark.parametrize("value", ["Authorization=Basic dXNlcjpwYXNz", "X-Key=a%2Cb=="])
def test_header_values_keep_their_equals_signs_and_are_percent_decoded(value: str) -> None:
    config = AgentConfig(otlp_endpoint="http://127.0.0.1:4318", otlp_headers=value)
    [(name, secret)] = config.otlp_headers.items()
    assert f"{name}={secret.get_secret_value()}" in (value, "X-Key=a,b==")
    assert "dXNl" not in repr(config) and "a,b" not in repr(config)


def test_a_bad_header_setting_is_refused_without_echoing_its_values(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config({"otlp_headers": "Authorization Bearer s3cret"}, cwd=tmp_path)
    assert "otlp_headers" in str(refused.value)
    assert "s3cret" not in str(refused.value)


def test_a_client_certificate_needs_its_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="otlp_cert_file and otlp_key_file go together"):
        load_config(
            {"otlp_endpoint": "https://127.0.0.1:4318", "otlp_cert_file": str(tmp_path / "c.pem")},
            cwd=tmp_path,
        )


def test_an_agent_without_otlp_loads_no_otlp_messages() -> None:
    """The protobuf descriptors cost ~4 MiB of RSS: only an agent that pushes pays for them."""
    code = "import esnode_agent.cli, sys; print(any(m.startswith('opentelemetry') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr


def test_an_unreadable_ca_file_is_a_config_error_before_anything_starts(tmp_path: Path) -> None:
    config = AgentConfig(otlp_endpoint="https://127.0.0.1:4318", otlp_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ConfigError, match="otlp TLS files"):
        build_pusher(config)


def test_skipping_verification_is_opt_in() -> None:
    assert tls_context(None, None, None, insecure_skip_verify=False).verify_mode == ssl.CERT_REQUIRED
    insecure = tls_context(None, None, None, insecure_skip_verify=True)
    assert (insecure.verify_mode, insecure.check_hostname) == (ssl.CERT_NONE, False)
    assert build_pusher(AgentConfig()) is None  # no endpoint: no pusher at all
