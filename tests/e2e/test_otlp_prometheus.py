"""OTLP push into a real receiver: Prometheus 3.5's OTLP endpoint, read back with PromQL.

The agent runs as a process on sim:h100x8 pushing every cycle; the pushed series must carry the
values /metrics served for the same cycle, under the same names and types, with the resource's
host and node. A receiver that never answers must cost neither cycles nor /metrics.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_process import agent
from prometheus_client.parser import text_string_to_metric_families
from prometheus_otlp_process import otlp_prometheus
from prometheus_process import query, wait_for_result
from tls_material import make_tls_material

pytestmark = pytest.mark.e2e

NODE = "otlp-node-1"
POWER = "esnode_gpu_power_watts"
ENERGY = "esnode_gpu_energy_joules_total"
LAST_CYCLE = "esnode_agent_last_collection_timestamp_seconds"
SECRET = "s3cret-push-token"


@pytest.fixture(scope="module")
def pushing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """(Prometheus URL, agent URL, agent log) with the agent pushing each cycle into Prometheus."""
    workdir = tmp_path_factory.mktemp("otlp")
    with (
        otlp_prometheus(workdir, promote=("k8s.node.name",)) as prometheus,
        agent(
            "--gpu-backend=sim:h100x8",
            "--scrape-interval=1",
            f"--node-name={NODE}",
            f"--otlp-endpoint={prometheus}/api/v1/otlp",
            "--otlp-interval-seconds=1",
            f"--otlp-headers=Authorization=Bearer%20{SECRET}",
            log_path=workdir / "agent.log",
        ) as agent_url,
    ):
        assert wait_for_result(prometheus, POWER, timeout_seconds=60), "no pushed series arrived"
        yield prometheus, agent_url, workdir / "agent.log"


def _scrape(agent_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{agent_url}/metrics", timeout=5).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _raw_samples(
    prometheus: str, promql: str, at_seconds: float
) -> list[tuple[dict[str, str], float, float]]:
    """(labels, timestamp, value) of every raw sample in the range selector ``promql``."""
    result = httpx.get(
        f"{prometheus}/api/v1/query", params={"query": promql, "time": f"{at_seconds:.3f}"}, timeout=10
    ).json()["data"]["result"]
    return [(r["metric"], float(t), float(v)) for r in result for t, v in r["values"]]


def _pushed_cycle(prometheus: str, cycle_seconds: float) -> float | None:
    """The sample timestamp of the pushed cycle that finished at ``cycle_seconds``, once it is in."""
    for _ in range(30):
        for _, stamp, value in _raw_samples(prometheus, f"{LAST_CYCLE}[30s]", time.time()):
            if value == cycle_seconds:
                return stamp
        time.sleep(0.5)
    return None


def test_pushed_gauges_and_counters_have_the_values_metrics_served_for_that_cycle(
    pushing: tuple[str, str, Path],
) -> None:
    prometheus, agent_url, _ = pushing
    for _ in range(5):  # a cycle may fall between pushes: try the next one
        served = _scrape(agent_url)
        cycle = served[(LAST_CYCLE, frozenset())]
        stamp = _pushed_cycle(prometheus, cycle)
        if stamp is not None:
            break
    else:
        pytest.fail("none of 5 scraped cycles was found among the pushed ones")
    for name in (POWER, ENERGY):
        pushed = {
            labels["uuid"]: value
            for labels, sample_stamp, value in _raw_samples(prometheus, f"{name}[30s]", time.time())
            if sample_stamp == stamp
        }
        expected = {dict(labels)["uuid"]: value for (n, labels), value in served.items() if n == name}
        assert len(expected) == 8
        assert pushed == expected, name


def test_every_family_arrives_under_its_exposition_name(pushing: tuple[str, str, Path]) -> None:
    """The receiver adds suffixes (its default strategy): a gauge sent as a monotonic Sum would gain
    `_total`, a counter's `_total` must not double; every name must come out as /metrics spells it."""
    prometheus, agent_url, _ = pushing
    served = {name for name, _ in _scrape(agent_url)}
    pushed = httpx.get(
        f"{prometheus}/api/v1/label/__name__/values",
        params={"match[]": '{job="esnode-agent"}', "start": f"{time.time() - 3:.3f}"},
        timeout=10,
    ).json()["data"]
    assert set(pushed) - {"target_info"} == served


def test_counters_stay_monotonic(pushing: tuple[str, str, Path]) -> None:
    prometheus, _, _ = pushing
    time.sleep(3)  # a few pushes, for rate()
    rates = query(prometheus, f"rate({ENERGY}[10s])")
    assert len(rates) == 8
    assert all(float(r["value"][1]) >= 0 for r in rates)
    assert any(float(r["value"][1]) > 0 for r in rates)  # simulated GPUs draw power
    assert query(prometheus, "resets(esnode_cpu_seconds_total[1m]) > 0") == []


def test_series_carry_the_service_host_and_node(pushing: tuple[str, str, Path]) -> None:
    prometheus, _, _ = pushing
    [info] = query(prometheus, "target_info")
    labels = info["metric"]
    assert labels["job"] == "esnode-agent"
    assert labels["instance"] == NODE
    assert labels["host_name"] == socket.gethostname()
    assert labels["k8s_node_name"] == NODE
    power = query(prometheus, POWER)
    assert {r["metric"]["k8s_node_name"] for r in power} == {NODE}  # promoted onto every series
    assert {r["metric"]["job"] for r in power} == {"esnode-agent"}


def test_the_pusher_reports_its_successes_and_keeps_its_headers_secret(
    pushing: tuple[str, str, Path],
) -> None:
    _, agent_url, log = pushing
    served = _scrape(agent_url)
    assert SECRET not in httpx.get(f"{agent_url}/status", timeout=5).text
    assert SECRET not in log.read_text()
    assert served[("esnode_otlp_push_total", frozenset({("result", "success")}))] >= 1
    assert served[("esnode_otlp_push_total", frozenset({("result", "failed")}))] == 0
    assert served[("esnode_otlp_push_total", frozenset({("result", "rejected")}))] == 0


def test_a_receiver_that_never_answers_stalls_neither_cycles_nor_metrics(tmp_path: Path) -> None:
    with socket.socket() as silent:  # accepts connections (the kernel does) and never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        port = silent.getsockname()[1]
        with agent(
            "--gpu-backend=sim:h100x8",
            "--scrape-interval=1",
            f"--otlp-endpoint=http://127.0.0.1:{port}",
            "--otlp-interval-seconds=1",
            "--otlp-timeout-seconds=2",
            log_path=tmp_path / "agent.log",
        ) as agent_url:
            cycles, slowest, dropped = [], 0.0, 0.0
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and dropped == 0:
                started = time.monotonic()
                served = _scrape(agent_url)
                slowest = max(slowest, time.monotonic() - started)
                cycles.append(served[(LAST_CYCLE, frozenset())])
                dropped = served[("esnode_otlp_push_total", frozenset({("result", "dropped")}))]
                time.sleep(0.5)
    assert dropped >= 1, "the queue never filled: was anything pushed?"
    assert served[("esnode_otlp_queue_snapshots", frozenset())] == 8
    assert served[("esnode_otlp_push_retries_total", frozenset())] >= 1
    assert slowest < 1.0, f"/metrics took {slowest:.2f}s"
    gaps = [b - a for a, b in zip(sorted(set(cycles)), sorted(set(cycles))[1:], strict=False)]
    assert len(cycles) > 10 and max(gaps) < 2.5, gaps  # a cycle every second throughout


def test_a_push_over_mutual_tls_arrives_and_one_without_a_client_certificate_is_refused(
    tmp_path: Path,
) -> None:
    tls = make_tls_material(tmp_path / "tls")
    web_config = (
        f"tls_server_config:\n  cert_file: {tls.server_cert}\n  key_file: {tls.server_key}\n"
        f"  client_ca_file: {tls.ca_cert}\n  client_auth_type: RequireAndVerifyClientCert\n"
    )
    client = ssl.create_default_context(cafile=str(tls.ca_cert))
    client.load_cert_chain(tls.client_cert, tls.client_key)
    with otlp_prometheus(tmp_path, web_config=web_config, verify=client) as prometheus:
        common = ("--gpu-backend=sim:h100x8", "--scrape-interval=1", "--otlp-interval-seconds=1",
                  f"--otlp-endpoint={prometheus}/api/v1/otlp", f"--otlp-ca-file={tls.ca_cert}")  # fmt: skip
        with (
            agent(*common, "--node-name=no-cert", log_path=tmp_path / "refused.log") as refused,
            agent(
                *common,
                "--node-name=with-cert",
                f"--otlp-cert-file={tls.client_cert}",
                f"--otlp-key-file={tls.client_key}",
                log_path=tmp_path / "accepted.log",
            ),
        ):
            deadline = time.monotonic() + 60
            arrived: set[str] = set()
            retries = 0.0
            while time.monotonic() < deadline and not (arrived and retries >= 1):
                result = httpx.get(
                    f"{prometheus}/api/v1/query", params={"query": POWER}, verify=client, timeout=10
                ).json()["data"]["result"]
                arrived = {r["metric"]["instance"] for r in result}
                retries = _scrape(refused)[("esnode_otlp_push_retries_total", frozenset())]
                time.sleep(0.5)
    assert arrived == {"with-cert"}
    assert retries >= 1  # the handshake failed, and was retried
