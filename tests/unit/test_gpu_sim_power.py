"""The simulated NVML's power management: NVML's limits and errors, and a draw that follows the limit."""

from __future__ import annotations

import math

import pynvml  # type: ignore[import-untyped]
import pytest

from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_demand import Diurnal, TrainingSteps, Wave
from esnode_agent.gpu.sim_profile import SimProfile, load_profile


class Clock:
    def __init__(self) -> None:
        self.now = 10.0

    def __call__(self) -> float:
        return self.now


def _fake(**changes: object) -> tuple[FakeNvml, Clock]:
    profile = load_profile("h100x8")
    groups = tuple(g.model_copy(update={"steady_load": 0.9, **changes}) for g in profile.gpus)
    clock = Clock()
    fake = FakeNvml(SimProfile.model_validate({**profile.model_dump(), "gpus": groups}), clock)
    fake.nvmlInit()
    return fake, clock


def test_limits_are_in_milliwatts_within_the_constraints() -> None:
    fake, _ = _fake()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetPowerManagementLimitConstraints(handle) == [200_000, 700_000]
    assert fake.nvmlDeviceGetPowerManagementDefaultLimit(handle) == 700_000
    fake.nvmlDeviceSetPowerManagementLimit(handle, 350_000)
    assert fake.nvmlDeviceGetPowerManagementLimit(handle) == 350_000
    assert fake.nvmlDeviceGetEnforcedPowerLimit(handle) == 350_000
    with pytest.raises(pynvml.NVMLError_InvalidArgument):
        fake.nvmlDeviceSetPowerManagementLimit(handle, 700_001)


@pytest.mark.parametrize(
    ("control", "error"),
    [("no_permission", pynvml.NVMLError_NoPermission), ("not_supported", pynvml.NVMLError_NotSupported)],
)
def test_refusals_are_nvmls(control: str, error: type[Exception]) -> None:
    fake, _ = _fake(power_limit_control=control)
    with pytest.raises(error):
        fake.nvmlDeviceSetPowerManagementLimit(fake.nvmlDeviceGetHandleByIndex(0), 400_000)


def test_a_lost_gpu_refuses_limits() -> None:
    fake, _ = _fake()
    fake.fail_gpu(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceSetPowerManagementLimit(fake.nvmlDeviceGetHandleByIndex(1), 400_000)


def test_the_draw_settles_under_a_new_limit_within_a_second_and_clocks_drop() -> None:
    fake, clock = _fake()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    uncapped_watts = fake.nvmlDeviceGetPowerUsage(handle) / 1000
    uncapped_mhz = fake.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM)
    fake.nvmlDeviceSetPowerManagementLimit(handle, 400_000)
    clock.now += 0.1
    assert 400 < fake.nvmlDeviceGetPowerUsage(handle) / 1000 < uncapped_watts  # still falling
    clock.now += 0.9
    assert fake.nvmlDeviceGetPowerUsage(handle) / 1000 == pytest.approx(400, abs=10)
    assert fake.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_SM) < uncapped_mhz
    reasons = fake.nvmlDeviceGetCurrentClocksEventReasons(handle)
    assert reasons & pynvml.nvmlClocksEventReasonSwPowerCap


def test_energy_under_a_cap_counts_the_capped_draw() -> None:
    fake, clock = _fake()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    fake.nvmlDeviceSetPowerManagementLimit(handle, 300_000)
    clock.now += 5.0
    before = fake.nvmlDeviceGetTotalEnergyConsumption(handle)
    clock.now += 10.0
    after = fake.nvmlDeviceGetTotalEnergyConsumption(handle)
    assert (after - before) / 1000 / 10.0 == pytest.approx(300, rel=0.01)


@pytest.mark.parametrize(
    "trace", [Wave(300.0, 1.0), Diurnal.starting_at(3600.0, 2.0), TrainingSteps(2.0, 0.7)]
)
def test_every_trace_integrates_to_its_own_load(trace: Wave | Diurnal | TrainingSteps) -> None:
    width = 0.001
    numeric = sum(trace.load(5.0 + (i + 0.5) * width) * width for i in range(10_000))
    assert trace.integral(15.0) - trace.integral(5.0) == pytest.approx(numeric, rel=1e-3)
    assert all(0 <= trace.load(t / 7) <= 1 for t in range(2000))
    assert not math.isnan(trace.integral(0.0))
