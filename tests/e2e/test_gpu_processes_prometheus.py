"""Real Prometheus, a k8s_mode agent on sim:h100x8, a kubelet's pod-resources API on a unix socket,
and a host procfs and log folder in a temp dir: each GPU process carries its pod, found through its
cgroup, and a time-sliced GPU's energy follows its pods' SM use."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from kubelet_pods import HOST_PROCESS, PODS, agent_with_pods, held_gpus_watts, pod_gpu_watts
from prometheus_process import prometheus, query, wait_for_result

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gpu-processes")
    # Two-second cycles: the simulated driver samples process use once a second.
    with (
        agent_with_pods(workdir, "--scrape-interval", "2", host=workdir / "host") as agent_url,
        prometheus([agent_url.removeprefix("http://")], workdir, scrape_interval="2s") as url,
    ):
        yield url


def test_each_process_carries_its_pod_and_a_host_process_none(prometheus_url: str) -> None:
    result = wait_for_result(prometheus_url, "esnode_gpu_process_memory_used_bytes", 30)
    by_pid = {int(r["metric"]["pid"]): r["metric"] for r in result}
    for pid, (uid, cid, pod, container) in PODS.items():
        labels = by_pid[pid]
        assert (labels["pod_uid"], labels["container_id"], labels["namespace"], labels["pod"]) == (
            uid,
            cid,
            "ml",
            pod,
        )
        assert labels["container"] == container
    assert "pod" not in by_pid[HOST_PROCESS] and by_pid[HOST_PROCESS]["gpu"] == "2"
    assert set(by_pid) == {*PODS, HOST_PROCESS}  # the profile's other pids are not in this procfs
    sm = query(prometheus_url, 'sum by (pod) (esnode_gpu_process_sm_utilization_ratio{gpu="1"})')
    assert {r["metric"]["pod"] for r in sm} == {"infer-a", "infer-b"}


def test_a_time_sliced_gpus_energy_follows_its_pods_sm_use(prometheus_url: str) -> None:
    by_pod = pod_gpu_watts(prometheus_url, full_window_samples=18)  # a sample each 2 s
    assert set(by_pod) == {"trainer-0", "infer-a", "infer-b"}
    assert by_pod["infer-a"] / by_pod["infer-b"] == pytest.approx(3.0, rel=0.2)  # SM shares 0.75 : 0.25
    assert sum(by_pod.values()) == pytest.approx(held_gpus_watts(prometheus_url), rel=0.05)
