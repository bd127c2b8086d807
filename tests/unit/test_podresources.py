"""Pod attribution from a real gRPC server speaking the kubelet's pod-resources v1 API on a unix socket."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_kubelet import Kubelet, serve, serving_kubelet

from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.gpu.nvml_backend import open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import load_profile
from esnode_agent.gpu.visibility import DeviceList
from esnode_agent.podresources import api_pb2
from esnode_agent.podresources.client import (
    PodRef,
    PodResourcesRefresher,
    holders_from_response,
    sharers_from_response,
)


def pod(namespace: str, name: str, *containers: tuple[str, str, list[str]]) -> api_pb2.PodResources:
    return api_pb2.PodResources(
        namespace=namespace,
        name=name,
        containers=[
            api_pb2.ContainerResources(
                name=container,
                devices=[api_pb2.ContainerDevices(resource_name=resource, device_ids=ids)],
            )
            for container, resource, ids in containers
        ],
    )


@pytest.fixture
def socket_path(tmp_path: Path) -> Path:
    return tmp_path / "kubelet.sock"


@pytest.fixture
def kubelet(socket_path: Path) -> Iterator[Kubelet]:
    with serving_kubelet(socket_path) as servicer:
        yield servicer


def test_holders_cover_gpus_mig_devices_shared_gpus_and_nothing_else() -> None:
    response = api_pb2.ListPodResourcesResponse(
        pod_resources=[
            pod("ml", "train-0", ("trainer", "nvidia.com/gpu", ["GPU-aaa", "GPU-bbb"])),
            pod("ml", "infer-0", ("server", "nvidia.com/mig-3g.40gb", ["MIG-ccc"])),
            pod("dev", "nb-1", ("lab", "nvidia.com/gpu", ["GPU-ddd::0"])),
            pod("dev", "nb-2", ("lab", "nvidia.com/gpu", ["GPU-ddd::1"])),
            pod("net", "sriov", ("app", "intel.com/sriov", ["0000:3b:00.1"])),
        ]
    )
    assert holders_from_response(response) == {
        "GPU-aaa": PodRef("ml", "train-0", "trainer"),
        "GPU-bbb": PodRef("ml", "train-0", "trainer"),
        "MIG-ccc": PodRef("ml", "infer-0", "server"),
        "GPU-ddd": PodRef("dev,dev", "nb-1,nb-2", "lab,lab"),  # a time-sliced GPU, held by two pods
    }
    assert sharers_from_response(response)["GPU-ddd"] == (
        PodRef("dev", "nb-1", "lab"),
        PodRef("dev", "nb-2", "lab"),
    )


def test_a_refresh_reads_the_kubelet(kubelet: Kubelet, socket_path: Path) -> None:
    kubelet.pods = [pod("ml", "train-0", ("trainer", "nvidia.com/gpu", ["GPU-aaa"]))]
    refresher = PodResourcesRefresher(socket_path, refresh_seconds=60)
    try:
        assert refresher.holders() == {}
        assert refresher.refresh()
        assert refresher.holders() == {"GPU-aaa": PodRef("ml", "train-0", "trainer")}
    finally:
        refresher.stop()


def test_the_background_thread_keeps_the_map_current(kubelet: Kubelet, socket_path: Path) -> None:
    refresher = PodResourcesRefresher(socket_path, refresh_seconds=0.05)
    refresher.start()
    try:
        kubelet.pods = [pod("ml", "a", ("c", "nvidia.com/gpu", ["GPU-aaa"]))]
        assert wait_until(lambda: "GPU-aaa" in refresher.holders())
        kubelet.pods = [pod("ml", "b", ("c", "nvidia.com/gpu", ["GPU-bbb"]))]
        assert wait_until(lambda: set(refresher.holders()) == {"GPU-bbb"})
    finally:
        refresher.stop()


def test_gpu_and_mig_series_carry_the_pod_that_holds_them(kubelet: Kubelet, socket_path: Path) -> None:
    backend = open_nvml(FakeNvml(load_profile("h100-mig")))
    gpu1 = backend.devices()[1].identity.uuid
    mig = backend.devices()[0].mig_instances()[1]
    kubelet.pods = [
        pod("ml", "train-0", ("trainer", "nvidia.com/gpu", [gpu1])),
        pod("ml", "infer-0", ("server", "nvidia.com/mig-2g.20gb", [mig.uuid])),
    ]
    refresher = PodResourcesRefresher(socket_path, refresh_seconds=60)
    everything = DeviceList(everything=True)
    collector = GpuCollector(backend, everything, everything, pods=refresher, k8s_mode=True)
    try:
        assert refresher.refresh()
        sink = SampleSink(0.0)
        collector.collect(sink)
        samples = SampleIndex(sink.samples)
    finally:
        collector.close()
    held = {
        (s.label("gpu"), s.labels.get("mig_uuid", ""), s.label("pod"), s.label("container"))
        for s in samples
        if s.spec.name != "esnode_pod_gpu_energy_joules_total"  # per pod, not per device
    }
    assert {key for key in held if key[2]} == {
        ("1", "", "train-0", "trainer"),
        ("0", mig.uuid, "infer-0", "server"),
    }
    power = {
        s.label("gpu"): (s.label("namespace"), s.label("pod"))
        for s in samples.named("esnode_gpu_power_watts")
    }
    assert power == {"0": ("", ""), "1": ("ml", "train-0"), "2": ("", ""), "3": ("", "")}
    assert samples.value("esnode_mig_memory_used_bytes", mig_uuid=mig.uuid, pod="infer-0") is not None


def test_an_absent_socket_turns_attribution_off_with_one_log_line_until_it_appears(
    socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refresher = PodResourcesRefresher(socket_path, refresh_seconds=60)
    with caplog.at_level(logging.INFO, logger="esnode_agent.podresources.client"):
        assert not refresher.refresh()
        assert not refresher.refresh()
        assert caplog.messages == ["pod-resources socket absent; pod attribution off"]
        kubelet = Kubelet()
        kubelet.pods = [pod("ml", "late", ("c", "nvidia.com/gpu", ["GPU-aaa"]))]
        server = serve(kubelet, socket_path)
        try:
            assert refresher.refresh()
        finally:
            server.stop(grace=None)
            refresher.stop()
    assert caplog.messages[-1] == "pod attribution on"
    assert refresher.holders() == {"GPU-aaa": PodRef("ml", "late", "c")}


def test_a_failing_kubelet_keeps_the_last_map_and_warns_once(
    kubelet: Kubelet, socket_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    kubelet.pods = [pod("ml", "train-0", ("trainer", "nvidia.com/gpu", ["GPU-aaa"]))]
    refresher = PodResourcesRefresher(socket_path, refresh_seconds=60)
    try:
        assert refresher.refresh()
        kubelet.fail = True
        with caplog.at_level(logging.WARNING, logger="esnode_agent.podresources.client"):
            assert not refresher.refresh()
            assert not refresher.refresh()
    finally:
        refresher.stop()
    # Only warnings count: another test may have left the root logger at INFO (kopf.configure).
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == [
        "pod-resources List failed"
    ]
    assert refresher.holders() == {"GPU-aaa": PodRef("ml", "train-0", "trainer")}


def test_collection_never_calls_the_kubelet(kubelet: Kubelet, socket_path: Path) -> None:
    backend = open_nvml(FakeNvml(load_profile("h100x8")))
    refresher = PodResourcesRefresher(socket_path, refresh_seconds=60)
    everything = DeviceList(everything=True)
    collector = GpuCollector(backend, everything, everything, pods=refresher, k8s_mode=True)
    try:
        refresher.refresh()
        for _ in range(5):
            collector.collect(SampleSink(0.0))
    finally:
        collector.close()
    assert kubelet.calls == 1


def wait_until(condition: Callable[[], bool], timeout_seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return condition()
