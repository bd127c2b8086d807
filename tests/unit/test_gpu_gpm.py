"""GPM profiling ratios: from pairs of samples, per GPU and per MIG instance, absent before Hopper."""

from __future__ import annotations

from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest

from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.collectors.gpu_dcgm import DcgmWriter
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.gpu.gpm import GPM_METRICS, GpmReader
from esnode_agent.gpu.nvml_backend import NvmlBackend, open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import SimProfile, load_profile
from esnode_agent.gpu.visibility import DeviceList

EVERYTHING = DeviceList(everything=True)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def steady(load: float, *, gpm: bool = True) -> SimProfile:
    group: dict[str, Any] = {
        "model": "NVIDIA H100 80GB HBM3" if gpm else "NVIDIA A100-SXM4-80GB",
        "memory_total_bytes": 85520809984,
        "power_limit_watts": 700,
        "idle_power_watts": 72,
        "max_sm_clock_mhz": 1980,
        "idle_sm_clock_mhz": 345,
        "memory_clock_mhz": 2619,
        "steady_load": load,
        "gpm": gpm,
    }
    return SimProfile.model_validate({"driver_version": "550.90.07", "gpus": [group]})


def backend(fake: FakeNvml) -> NvmlBackend:
    opened = open_nvml(fake)
    assert isinstance(opened, NvmlBackend)
    return opened


def test_ratios_come_from_the_pair_of_this_and_the_last_cycles_samples() -> None:
    clock = Clock()
    device = backend(FakeNvml(steady(0.8), clock)).devices()[0]
    assert device.read().activity_ratio == {}  # one sample: no pair yet
    clock.now += 5
    ratios = device.read().activity_ratio
    assert set(ratios) == set(GPM_METRICS)
    assert ratios["graphics_engine"] == pytest.approx(0.8)
    assert ratios["sm"] == pytest.approx(0.72)
    assert ratios["tensor"] == pytest.approx(0.56)
    assert all(0 <= r <= 1 for r in ratios.values())


def test_a_ratio_averages_the_load_over_the_cycle_it_covers() -> None:
    clock = Clock()
    fake = FakeNvml(load_profile("h100x8"), clock)
    device = backend(fake).devices()[0]
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    device.read()
    loads = []
    for _ in range(10):  # utilization samples the same wave, once a second
        clock.now += 1
        loads.append(fake.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
    ratio = device.read().activity_ratio["graphics_engine"]
    assert ratio == pytest.approx(sum(loads) / len(loads), abs=0.02)


def test_before_hopper_gpm_is_absent_and_asked_once() -> None:
    clock = Clock()
    fake = FakeNvml(steady(0.5, gpm=False), clock)
    device = backend(fake).devices()[0]
    for _ in range(3):
        clock.now += 1
        assert device.read().activity_ratio == {}
    calls = fake.call_counts()
    assert calls[(0, "nvmlGpmQueryDeviceSupport")] == 1
    assert calls[(0, "nvmlGpmSampleGet")] == 0
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlGpmSampleGet(fake.nvmlDeviceGetHandleByIndex(0), fake.nvmlGpmSampleAlloc())


def test_metrics_need_two_samples_of_one_device_in_time_order() -> None:
    clock = Clock()
    fake = FakeNvml(load_profile("h100x8"), clock)
    fake.nvmlInit()
    samples = []
    for index in (0, 0, 1):
        clock.now += 1
        sample = fake.nvmlGpmSampleAlloc()
        fake.nvmlGpmSampleGet(fake.nvmlDeviceGetHandleByIndex(index), sample)
        samples.append(sample)
    first, second, other_gpu = samples
    assert GpmReader(fake, lambda s: None)._metrics(first, second)
    for pair in ((second, first), (first, first), (first, other_gpu)):
        with pytest.raises(pynvml.NVMLError_InvalidArgument):
            GpmReader(fake, lambda s: None)._metrics(*pair)


def test_every_mig_instance_gets_its_own_ratios_and_compat_names_them() -> None:
    clock = Clock()
    nvml = backend(FakeNvml(load_profile("h100-mig"), clock))
    writer = DcgmWriter("n", nvml.driver_version, k8s_mode=False)
    collector = GpuCollector(nvml, EVERYTHING, EVERYTHING, dcgm=writer)
    collector.collect(SampleSink(0.0))
    clock.now += 10
    sink = SampleSink(1.0)
    collector.collect(sink)
    samples = SampleIndex(sink.samples)
    tensor = {
        s.label("profile"): s.value
        for s in samples.named("esnode_mig_activity_ratio")
        if s.label("activity") == "tensor"
    }
    assert set(tensor) == {"3g.40gb", "2g.20gb", "1g.10gb"}
    assert len(set(tensor.values())) == 3  # each instance runs its own load
    gpu_tensor = [s for s in samples.named("esnode_gpu_activity_ratio") if s.label("activity") == "tensor"]
    assert len(gpu_tensor) == 4
    prof = samples.named("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE")
    by_instance = {s.label("GPU_I_PROFILE"): s.value for s in prof if s.label("gpu") == "0"}
    assert by_instance == {
        "": samples.value("esnode_gpu_activity_ratio", gpu="0", activity="tensor"),
        **tensor,
    }
    for name in (
        "DCGM_FI_PROF_GR_ENGINE_ACTIVE",
        "DCGM_FI_PROF_SM_ACTIVE",
        "DCGM_FI_PROF_SM_OCCUPANCY",
        "DCGM_FI_PROF_DRAM_ACTIVE",
    ):
        assert len(samples.named(name)) == 4 + 3, name
    collector.close()
