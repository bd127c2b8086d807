"""Real Prometheus scrapes the agent; the seed documents' queries return data."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_process import RaplTree, agent
from prometheus_process import prometheus, query, wait_for_result

pytestmark = pytest.mark.e2e

# The seeds' dashboard queries, with power math fixed to energy counters or avg_over_time.
SEED_QUERIES = {
    "cpu per node": "avg by (instance) (esnode_cpu_usage_percent)",
    "memory percent": "100 * (esnode_memory_used_bytes / esnode_memory_total_bytes)",
    "root disk percent": '100 * (esnode_disk_used_bytes{mount="/"} / esnode_disk_total_bytes{mount="/"})',
    "network rx rate": "rate(esnode_network_rx_bytes_total[5m])",
    "gpu utilization": "esnode_gpu_utilization_percent",
    "gpu power 5m": "avg_over_time(esnode_gpu_power_watts[5m])",
    "gpu thermal throttle": 'esnode_gpu_throttle_reason{reason="thermal"} == 1',
    "nvlink rx rate": "rate(esnode_gpu_nvlink_rx_bytes_total[5m])",
    "node power": "esnode_node_power_watts",
    "cpu package power": "esnode_cpu_package_power_watts",
    "node power from energy": "rate(esnode_node_energy_joules_total[5m])",
    "envelope breaches": "esnode_node_power_envelope_exceeded",
}


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("prometheus")
    flags = ("--scrape-interval", "1", "--gpu-backend", "sim:h100x8", "--node-power-envelope-watts", "4000")
    with (
        RaplTree(workdir / "sys", package_watts=(180.0, 170.0)) as rapl,
        agent(*flags, "--path-sysfs", str(rapl.sysfs), log_path=workdir / "agent.log") as agent_url,
        prometheus([agent_url.removeprefix("http://")], workdir) as url,
    ):
        yield url


@pytest.mark.parametrize("promql", SEED_QUERIES.values(), ids=SEED_QUERIES.keys())
def test_seed_query_returns_data(prometheus_url: str, promql: str) -> None:
    result = wait_for_result(prometheus_url, promql)
    assert result, f"no data for {promql}"


def test_root_disk_percent_is_a_percentage(prometheus_url: str) -> None:
    result = wait_for_result(prometheus_url, SEED_QUERIES["root disk percent"])
    assert 0 < float(result[0]["value"][1]) < 100


def test_node_power_from_energy_agrees_with_the_gauge(prometheus_url: str) -> None:
    """rate() of the energy counter and avg_over_time() of the gauge describe the same watts."""
    # rate() only sees what it has samples for: wait until the window is full of them. Scrapes and
    # collection cycles share a 1 s period without sharing a clock, so a window can miss one
    # cycle's increase: 1 in 20 here, hence the tolerance.
    assert wait_for_result(prometheus_url, "count_over_time(esnode_node_power_watts[20s]) >= 19", 60)
    from_energy = query(prometheus_url, "rate(esnode_node_energy_joules_total[20s])")
    from_gauge = query(prometheus_url, "avg_over_time(esnode_node_power_watts[20s])")
    assert float(from_energy[0]["value"][1]) == pytest.approx(float(from_gauge[0]["value"][1]), rel=0.12)
