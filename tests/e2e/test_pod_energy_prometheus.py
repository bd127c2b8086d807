"""Real Prometheus, a k8s_mode agent on sim:h100x8 and a kubelet's pod-resources API on a unix socket:
per-pod GPU energy adds up to the held GPUs' power."""

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


class Kubelet(api_pb2_grpc.PodResourcesListerServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.pods: list[api_pb2.PodResources] = []

    def List(self, request: Any, context: Any) -> api_pb2.ListPodResourcesResponse:  # noqa: N802
        return api_pb2.ListPodResourcesResponse(pod_resources=self.pods)


def holding(name: str, container: str, *device_ids: str) -> api_pb2.PodResources:
    devices = api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=list(device_ids))
    return api_pb2.PodResources(
        namespace="ml", name=name, containers=[api_pb2.ContainerResources(name=container, devices=[devices])]
    )


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("pod-energy")
    socket_path = workdir / "kubelet.sock"
    kubelet = Kubelet()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    api_pb2_grpc.add_PodResourcesListerServicer_to_server(kubelet, server)
    server.add_insecure_port(f"unix://{socket_path}")
    server.start()
    flags = ("--scrape-interval", "1", "--gpu-backend", "sim:h100x8", "--k8s-mode")
    socket_flags = ("--pod-resources-socket", str(socket_path), "--pod-resources-refresh-seconds", "1")
    try:
        with agent(*flags, *socket_flags, log_path=workdir / "agent.log") as agent_url:
            uuids = dict(GPU_UUID.findall(httpx.get(f"{agent_url}/metrics", timeout=5).text))
            kubelet.pods = [
                holding("trainer-0", "main", uuids["0"]),  # a whole GPU
                holding("infer-a", "server", f"{uuids['1']}::0"),  # one GPU, time-sliced
                holding("infer-b", "server", f"{uuids['1']}::1"),
            ]
            with prometheus([agent_url.removeprefix("http://")], Path(workdir)) as url:
                yield url
    finally:
        server.stop(None)


def test_pod_energy_rates_sum_to_the_held_gpus_power(prometheus_url: str) -> None:
    # rate() divides by the whole window: wait until the pods' series are older than it.
    full = 'count_over_time(esnode_pod_gpu_energy_joules_total{pod="infer-b"}[40s]) >= 37'
    assert wait_for_result(prometheus_url, full, 90)
    by_pod = {
        r["metric"]["pod"]: float(r["value"][1])
        for r in query(prometheus_url, "sum by (pod) (rate(esnode_pod_gpu_energy_joules_total[30s]))")
    }
    assert set(by_pod) == {"trainer-0", "infer-a", "infer-b"}
    assert by_pod["infer-a"] == pytest.approx(by_pod["infer-b"], rel=1e-6)  # an equal split
    power = query(prometheus_url, 'sum(avg_over_time(esnode_gpu_power_watts{gpu=~"0|1"}[30s]))')
    assert sum(by_pod.values()) == pytest.approx(float(power[0]["value"][1]), rel=0.05)
