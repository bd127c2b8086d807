"""Real Prometheus scrapes agents with gpu_dcgm_compat on: DCGM-style dashboard queries see every GPU.

The queries are the panels of dcgm-exporter's Grafana dashboard (12239 and its forks): temperature,
power, SM clock x 1e6, utilisation, framebuffer used, energy, tensor and SM active (GPM). Agent A simulates an 8xH100 server,
agent B a server with a GPU in MIG mode (whose utilisation NVML does not measure).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from agent_process import agent
from prometheus_process import prometheus, query, wait_for_result

pytestmark = pytest.mark.e2e

H100X8_GPUS = 8
MIG_GPUS = 4
DASHBOARD_QUERIES = {
    "gpu temperature": "DCGM_FI_DEV_GPU_TEMP",
    "gpu power": "DCGM_FI_DEV_POWER_USAGE",
    "sm clocks": "DCGM_FI_DEV_SM_CLOCK * 1000000",
    "memory clocks": "DCGM_FI_DEV_MEM_CLOCK * 1000000",
    "framebuffer used": "DCGM_FI_DEV_FB_USED",
    "memory temperature": "DCGM_FI_DEV_MEMORY_TEMP",
    "energy rate": "rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[1m]) / 1000",
    "tensor active": "DCGM_FI_PROF_PIPE_TENSOR_ACTIVE",
    "sm active": "DCGM_FI_PROF_SM_ACTIVE",
}


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("prometheus-dcgm")
    flags = ("--scrape-interval", "1", "--gpu-dcgm-compat")
    with (
        agent(*flags, "--gpu-backend", "sim:h100x8", log_path=workdir / "a.log") as agent_a,
        agent(*flags, "--gpu-backend", "sim:h100-mig", log_path=workdir / "b.log") as agent_b,
        prometheus([url.removeprefix("http://") for url in (agent_a, agent_b)], workdir) as url,
    ):
        yield url


def gpus_by_instance(result: list[dict[str, object]]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for series in result:
        metric = series["metric"]
        assert isinstance(metric, dict)
        if metric.get("GPU_I_ID"):  # a MIG instance's own series
            continue
        seen.setdefault(metric["instance"], set()).add(metric["gpu"])
    return seen


@pytest.mark.parametrize("promql", DASHBOARD_QUERIES.values(), ids=DASHBOARD_QUERIES.keys())
def test_dcgm_dashboard_query_returns_every_gpu(prometheus_url: str, promql: str) -> None:
    wait_for_result(prometheus_url, "count_over_time(DCGM_FI_DEV_POWER_USAGE[30s]) >= 10", 60)
    result = wait_for_result(prometheus_url, promql)
    counts = sorted(len(gpus) for gpus in gpus_by_instance(result).values())
    assert counts == [MIG_GPUS, H100X8_GPUS], promql


def test_utilization_is_there_for_every_gpu_not_in_mig_mode(prometheus_url: str) -> None:
    result = wait_for_result(prometheus_url, "DCGM_FI_DEV_GPU_UTIL")
    assert sorted(len(gpus) for gpus in gpus_by_instance(result).values()) == [MIG_GPUS - 1, H100X8_GPUS]


def test_energy_rate_agrees_with_esnodes_counter_and_with_power(prometheus_url: str) -> None:
    # rate() divides by the whole window: wait until the series are older than it.
    wait_for_result(prometheus_url, "count_over_time(DCGM_FI_DEV_POWER_USAGE[30s]) >= 27", 60)
    # One query, so both counters are read at the same instant: mJ vs J of the same NVML counter.
    ratio = query(
        prometheus_url,
        "sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[20s])) / 1000"
        " / sum(rate(esnode_gpu_energy_joules_total[20s]))",
    )
    assert float(ratio[0]["value"][1]) == pytest.approx(1.0, rel=1e-6)
    # Scrapes and collection cycles share a 1 s period without sharing a clock, so a 20 s window can
    # gain or miss a cycle's increase at an end.
    from_energy = query(prometheus_url, "sum(rate(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[20s])) / 1000")
    from_power = query(prometheus_url, "sum(avg_over_time(DCGM_FI_DEV_POWER_USAGE[20s]))")
    assert float(from_energy[0]["value"][1]) == pytest.approx(float(from_power[0]["value"][1]), rel=0.08)


def test_mig_instances_carry_dcgm_instance_labels(prometheus_url: str) -> None:
    result = wait_for_result(prometheus_url, 'DCGM_FI_DEV_FB_USED{GPU_I_ID!=""}')
    profiles = sorted(series["metric"]["GPU_I_PROFILE"] for series in result)
    assert profiles == ["1g.10gb", "2g.20gb", "3g.40gb"]
