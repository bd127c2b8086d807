"""Real Prometheus, a k8s_mode agent on sim:h100x8, a kubelet's pod-resources API on a unix socket,
and a host procfs and log folder in a temp dir: each GPU process carries its pod, found through its
cgroup, and a time-sliced GPU's energy follows its pods' SM use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
import httpx
import pytest
from agent_process import agent
from prometheus_process import prometheus, query, wait_for_result

from esnode_agent.podresources import api_pb2, api_pb2_grpc

pytestmark = pytest.mark.e2e
GPU_UUID = re.compile(r'esnode_gpu_info\{gpu="(\d+)",uuid="(GPU-[^"]+)"')
# sim:h100x8's processes: 4100 on GPU 0, 4201 and 4202 time-sliced on GPU 1 (75 % and 25 % of its SM use).
PODS = {  # pid -> (pod UID, container ID, pod, container)
    4100: ("11111111-2222-4333-8444-555555555555", "1" * 64, "trainer-0", "main"),
    4201: ("22222222-3333-4444-8555-666666666666", "2" * 64, "infer-a", "server"),
    4202: ("33333333-4444-4555-8666-777777777777", "3" * 64, "infer-b", "server"),
}
HOST_PROCESS = 4102  # a service on the host, in no pod


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.pods: list[api_pb2.PodResources] = []

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:  # noqa: N802
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


def holding(name: str, container: str, device_id: str) -> api_pb2.PodResources:
    devices = api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[device_id])
    return api_pb2.PodResources(
        namespace="ml", name=name, containers=[api_pb2.ContainerResources(name=container, devices=[devices])]
    )


def host_tree(root: Path) -> None:
    """The host's /proc/<pid>/cgroup (cgroup v2, systemd driver, containerd) and container log links."""
    links = root / "var" / "log" / "containers"
    links.mkdir(parents=True)
    for pid, (uid, cid, pod, container) in PODS.items():
        slice_ = f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        cgroup = f"0::/kubepods.slice/kubepods-burstable.slice/{slice_}/cri-containerd-{cid}.scope\n"
        (root / "proc" / str(pid)).mkdir(parents=True)
        (root / "proc" / str(pid) / "cgroup").write_text(cgroup)
        (links / f"{pod}_ml_{container}-{cid}.log").touch()
    (root / "proc" / str(HOST_PROCESS)).mkdir()
    (root / "proc" / str(HOST_PROCESS) / "cgroup").write_text("0::/system.slice/batch.service\n")


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gpu-processes")
    host_tree(workdir / "host")
    socket_path = workdir / "kubelet.sock"
    kubelet = Kubelet()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, server)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    # Two-second cycles: the simulated driver samples process use once a second.
    flags = ("--scrape-interval", "2", "--gpu-backend", "sim:h100x8", "--k8s-mode")
    socket_flags = ("--pod-resources-socket", str(socket_path), "--pod-resources-refresh-seconds", "1")
    host_flags = ("--path-procfs", str(workdir / "host" / "proc"), "--path-rootfs", str(workdir / "host"))
    # The host collectors would read the fake procfs; only the GPU is under test.
    off = (
        "--no-enable-cpu",
        "--no-enable-memory",
        "--no-enable-disk",
        "--no-enable-network",
        "--no-enable-power",
    )
    try:
        with agent(*flags, *socket_flags, *host_flags, *off, log_path=workdir / "agent.log") as agent_url:
            uuids = dict(GPU_UUID.findall(httpx.get(f"{agent_url}/metrics", timeout=5).text))
            kubelet.pods = [
                holding("trainer-0", "main", uuids["0"]),
                holding("infer-a", "server", f"{uuids['1']}::0"),
                holding("infer-b", "server", f"{uuids['1']}::1"),
            ]
            with prometheus([agent_url.removeprefix("http://")], Path(workdir), scrape_interval="2s") as url:
                yield url
    finally:
        server.stop(None)


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
    full = 'count_over_time(esnode_pod_gpu_energy_joules_total{pod="infer-b"}[40s]) >= 18'
    assert wait_for_result(prometheus_url, full, 90)
    by_pod = {
        r["metric"]["pod"]: float(r["value"][1])
        for r in query(prometheus_url, "sum by (pod) (rate(esnode_pod_gpu_energy_joules_total[30s]))")
    }
    assert set(by_pod) == {"trainer-0", "infer-a", "infer-b"}
    assert by_pod["infer-a"] / by_pod["infer-b"] == pytest.approx(3.0, rel=0.2)  # SM shares 0.75 : 0.25
    power = query(prometheus_url, 'sum(avg_over_time(esnode_gpu_power_watts{gpu=~"0|1"}[30s]))')
    assert sum(by_pod.values()) == pytest.approx(float(power[0]["value"][1]), rel=0.05)
