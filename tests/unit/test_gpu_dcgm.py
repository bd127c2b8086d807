"""The DCGM-compatible exposition against dcgm-exporter's published default counters."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from esnode_agent.collectors.gpu import GpuCollector, build_gpu_collector
from esnode_agent.collectors.gpu_dcgm import DcgmWriter
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.gpu.events import XidCounter
from esnode_agent.gpu.nvml_backend import NvmlBackend, open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import load_profile
from esnode_agent.gpu.visibility import DeviceList
from esnode_agent.podresources.pod_ref import PodRef
from esnode_agent.serve.exposition import render

EVERYTHING = DeviceList(everything=True)
MIB = 2**20

# dcgm-exporter's etc/default-counters.csv (DCGM field, Prometheus type) that NVML can answer.
# ENC_UTIL, DEC_UTIL and VGPU_LICENSE_STATUS are left out on purpose (docs/gpu.md says why);
# XID_ERRORS needs enable_gpu_events and is tested below.
DEFAULT_COUNTERS = {
    "DCGM_FI_DEV_SM_CLOCK": "gauge",
    "DCGM_FI_DEV_MEM_CLOCK": "gauge",
    "DCGM_FI_DEV_MEMORY_TEMP": "gauge",
    "DCGM_FI_DEV_GPU_TEMP": "gauge",
    "DCGM_FI_DEV_POWER_USAGE": "gauge",
    "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION": "counter",
    "DCGM_FI_DEV_PCIE_REPLAY_COUNTER": "counter",
    "DCGM_FI_DEV_GPU_UTIL": "gauge",
    "DCGM_FI_DEV_MEM_COPY_UTIL": "gauge",
    "DCGM_FI_DEV_FB_FREE": "gauge",
    "DCGM_FI_DEV_FB_USED": "gauge",
    "DCGM_FI_DEV_FB_RESERVED": "gauge",
    "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL": "counter",
    "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS": "counter",
    "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS": "counter",
    "DCGM_FI_DEV_ROW_REMAP_FAILURE": "gauge",
}
# dcgm-exporter's label names on every series; the pod's in Kubernetes mode.
DCGM_LABELS = {"gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION"}
DCGM_K8S_LABELS = {"container", "namespace", "pod"}
DCGM_MIG_LABELS = {"GPU_I_PROFILE", "GPU_I_ID"}


def backend(profile: str = "h100x8") -> tuple[FakeNvml, NvmlBackend]:
    clock = [500.0]
    fake = FakeNvml(load_profile(profile), lambda: clock[0])
    opened = open_nvml(fake)
    assert isinstance(opened, NvmlBackend)
    return fake, opened


def collect_compat(profile: str = "h100x8", *, k8s_mode: bool = False, **kwargs: object) -> SampleIndex:
    _, nvml = backend(profile)
    writer = DcgmWriter("node-a", nvml.driver_version, k8s_mode=k8s_mode)
    collector = GpuCollector(nvml, EVERYTHING, EVERYTHING, k8s_mode=k8s_mode, dcgm=writer, **kwargs)  # type: ignore[arg-type]
    sink = SampleSink(0.0)
    collector.collect(sink)
    collector.close()
    return SampleIndex(sink.samples)


def test_every_default_counter_is_served_for_every_gpu_with_its_type_and_labels() -> None:
    samples = collect_compat()
    for name, kind in DEFAULT_COUNTERS.items():
        series = samples.named(name)
        assert sorted(s.label("gpu") for s in series) == [str(g) for g in range(8)], name
        for sample in series:
            assert str(sample.spec.type) == kind, name
            assert set(sample.spec.labels) == DCGM_LABELS | DCGM_MIG_LABELS, name
            assert sample.label("device") == f"nvidia{sample.label('gpu')}"
            assert sample.label("modelName") == "NVIDIA H100 80GB HBM3"
            assert sample.label("Hostname") == "node-a"
            assert sample.label("DCGM_FI_DRIVER_VERSION") == "550.90.07"
            assert sample.label("GPU_I_ID") == sample.label("GPU_I_PROFILE") == ""


def test_values_are_the_esnode_readings_in_dcgm_units() -> None:
    samples = collect_compat()
    for gpu in map(str, range(8)):
        esnode = {
            "sm_hz": samples.value("esnode_gpu_clock_hertz", gpu=gpu, clock="sm"),
            "mem_hz": samples.value("esnode_gpu_clock_hertz", gpu=gpu, clock="memory"),
            "watts": samples.value("esnode_gpu_power_watts", gpu=gpu),
            "joules": samples.value("esnode_gpu_energy_joules_total", gpu=gpu),
            "used": samples.value("esnode_gpu_memory_used_bytes", gpu=gpu),
            "total": samples.value("esnode_gpu_memory_total_bytes", gpu=gpu),
            "celsius": samples.value("esnode_gpu_temperature_celsius", gpu=gpu),
            "util": samples.value("esnode_gpu_utilization_percent", gpu=gpu),
        }
        assert None not in esnode.values()
        dcgm = {name: samples.value(name, gpu=gpu) for name in DEFAULT_COUNTERS}
        assert dcgm["DCGM_FI_DEV_SM_CLOCK"] == esnode["sm_hz"] / 1e6  # type: ignore[operator]
        assert dcgm["DCGM_FI_DEV_MEM_CLOCK"] == 2619 == esnode["mem_hz"] / 1e6  # type: ignore[operator]
        assert dcgm["DCGM_FI_DEV_POWER_USAGE"] == esnode["watts"]
        assert dcgm["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == pytest.approx(esnode["joules"] * 1000)  # type: ignore[operator]
        assert dcgm["DCGM_FI_DEV_GPU_TEMP"] == esnode["celsius"]
        assert dcgm["DCGM_FI_DEV_GPU_UTIL"] == esnode["util"]
        assert dcgm["DCGM_FI_DEV_FB_USED"] == esnode["used"] / MIB  # type: ignore[operator]
        framebuffer = sum(dcgm[f"DCGM_FI_DEV_FB_{part}"] for part in ("FREE", "USED", "RESERVED"))  # type: ignore[misc]
        assert framebuffer == pytest.approx(esnode["total"] / MIB)  # type: ignore[operator]
        assert dcgm["DCGM_FI_DEV_ROW_REMAP_FAILURE"] == 0


def test_compat_reads_nothing_more_from_nvml() -> None:
    def calls(dcgm: bool) -> int:
        fake, nvml = backend()
        writer = DcgmWriter("n", nvml.driver_version, k8s_mode=False) if dcgm else None
        collector = GpuCollector(nvml, EVERYTHING, EVERYTHING, dcgm=writer)
        collector.collect(SampleSink(0.0))
        before = fake.call_counts()
        collector.collect(SampleSink(1.0))
        spent = fake.call_counts() - before
        collector.close()
        return sum(n for (_, function), n in spent.items() if function != "nvmlDeviceGetPcieThroughput")

    assert calls(dcgm=True) == calls(dcgm=False)


def test_off_by_default() -> None:
    assert AgentConfig().gpu_dcgm_compat is False
    collector = build_gpu_collector(AgentConfig(gpu_backend="sim:h100x8"), {})
    assert collector is not None
    sink = SampleSink(0.0)
    collector.collect(sink)
    collector.close()
    assert not any(s.spec.name.startswith("DCGM_") for s in sink.samples)


def test_the_setting_turns_it_on_with_the_node_name_as_hostname() -> None:
    config = AgentConfig(gpu_backend="sim:h100x8", gpu_dcgm_compat=True)
    collector = build_gpu_collector(config, {"NODE_NAME": "gpu-node-7"})
    assert collector is not None
    sink = SampleSink(0.0)
    collector.collect(sink)
    collector.close()
    temps = SampleIndex(sink.samples).named("DCGM_FI_DEV_GPU_TEMP")
    assert {s.label("Hostname") for s in temps} == {"gpu-node-7"}


class Holders:
    def __init__(self, holders: dict[str, PodRef]) -> None:
        self._holders = holders

    def holders(self) -> dict[str, PodRef]:
        return self._holders

    def sharers(self) -> dict[str, tuple[PodRef, ...]]:
        return {device: (pod,) for device, pod in self._holders.items()}

    def stop(self) -> None:
        return None


def test_k8s_mode_adds_dcgm_exporters_pod_labels_and_mig_instances() -> None:
    fake, nvml = backend("h100-mig")
    mig_uuid = fake.nvmlDeviceGetUUID(
        fake.nvmlDeviceGetMigDeviceHandleByIndex(fake.nvmlDeviceGetHandleByIndex(0), 1)
    )
    gpu1 = nvml.devices()[1].identity.uuid
    pods = Holders({mig_uuid: PodRef("ml", "trainer-0", "main"), gpu1: PodRef("ml", "infer-1", "server")})
    writer = DcgmWriter("n", nvml.driver_version, k8s_mode=True)
    collector = GpuCollector(nvml, EVERYTHING, EVERYTHING, k8s_mode=True, dcgm=writer, pods=pods)  # type: ignore[arg-type]
    sink = SampleSink(0.0)
    collector.collect(sink)
    collector.close()
    samples = SampleIndex(sink.samples)
    for sample in samples:
        if sample.spec.name.startswith("DCGM_"):
            assert set(sample.spec.labels) == DCGM_LABELS | DCGM_MIG_LABELS | DCGM_K8S_LABELS
    used = {(s.label("gpu"), s.label("GPU_I_ID")): s for s in samples.named("DCGM_FI_DEV_FB_USED")}
    assert {key for key in used if key[0] == "0"} == {("0", ""), ("0", "2"), ("0", "3"), ("0", "9")}
    instance = next(s for s in used.values() if s.label("pod") == "trainer-0")
    assert (instance.label("GPU_I_PROFILE"), instance.label("container")) == ("2g.20gb", "main")
    assert samples.value("DCGM_FI_DEV_POWER_USAGE", gpu="1", pod="infer-1", namespace="ml") is not None
    assert samples.named("DCGM_FI_DEV_GPU_UTIL") and all(
        s.label("gpu") != "0" for s in samples.named("DCGM_FI_DEV_GPU_UTIL")
    )


def test_xid_errors_is_the_last_xid_per_gpu_and_0_before_any() -> None:
    fake, nvml = backend()
    xids = XidCounter(nvml.xid_events(nvml.devices()), wait_timeout_seconds=0.05)
    xids.start()
    writer = DcgmWriter("n", nvml.driver_version, k8s_mode=False)
    collector = GpuCollector(nvml, EVERYTHING, EVERYTHING, dcgm=writer, xids=xids)
    try:
        fake.inject_xid(2, 79)
        fake.inject_xid(2, 13)
        deadline = 200
        while xids.last().get(nvml.devices()[2].identity.uuid) != 13 and deadline:
            deadline -= 1
            xids._stop.wait(0.02)
        sink = SampleSink(0.0)
        collector.collect(sink)
        last = {s.label("gpu"): s.value for s in SampleIndex(sink.samples).named("DCGM_FI_DEV_XID_ERRORS")}
        assert last == {**{str(g): 0.0 for g in range(8)}, "2": 13.0}
    finally:
        collector.close()


PROMTOOL = shutil.which("promtool")
# What promtool's linter says of dcgm-exporter's own names, which compat keeps on purpose: its
# counters lack `_total`, `modelName` is camelCase, PCIE_REPLAY_COUNTER names its type. Anything
# else is a defect.
DCGM_NAMING_LINT = re.compile(
    r"^DCGM_FI_\w+ (counter metrics should have \"_total\" suffix"
    r"|label names should be written in 'snake_case' not 'camelCase')$"
    r"|^DCGM_FI_DEV_PCIE_REPLAY_COUNTER metric name should not include type 'counter'$"
)
KNOWN_LINT = 'esnode_mig_sm_count non-histogram and non-summary metrics should not have "_count" suffix'


@pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")
@pytest.mark.parametrize(("profile", "k8s_mode"), [("h100x8", False), ("h100-mig", True)])
def test_the_compat_exposition_parses_and_promtool_only_flags_dcgms_own_names(
    profile: str, k8s_mode: bool
) -> None:
    exposition = render(collect_compat(profile, k8s_mode=k8s_mode))
    result = subprocess.run(
        [PROMTOOL or "promtool", "check", "metrics"],
        input=exposition.text.body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    problems = [
        line
        for line in result.stderr.decode().splitlines()
        if line and line != KNOWN_LINT and not DCGM_NAMING_LINT.match(line)
    ]
    assert result.returncode in (0, 3)  # 3: lint findings only; 1 would be a parse error
    assert problems == []
    text_families = {f.name: f.type for f in text_string_to_metric_families(exposition.text.body.decode())}
    assert text_families["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == "counter"
    openmetrics = {f.name: f.type for f in parse_openmetrics(exposition.openmetrics.body.decode())}
    assert openmetrics["DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"] == "unknown"  # OpenMetrics needs _total
