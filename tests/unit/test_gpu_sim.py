"""The simulated NVML keeps NVML's contract: pynvml's structs and errors, NVML's units, moving values."""

from __future__ import annotations

import pynvml  # type: ignore[import-untyped]
import pytest

from esnode_agent.gpu.nvml_backend import NvmlBackend
from esnode_agent.gpu.open_backend import open_backend
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import builtin_profiles, load_profile


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def nvml() -> tuple[FakeNvml, Clock]:
    clock = Clock()
    fake = FakeNvml(load_profile("h100x8"), clock)
    fake.nvmlInit()
    return fake, clock


def test_calls_before_init_fail_as_nvml_does() -> None:
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        FakeNvml(load_profile("h100x8")).nvmlDeviceGetCount()


def test_units_are_nvmls(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, _ = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert 72_000 <= fake.nvmlDeviceGetPowerUsage(handle) <= 700_000  # mW
    assert fake.nvmlDeviceGetEnforcedPowerLimit(handle) == 700_000  # mW
    assert fake.nvmlDeviceGetClockInfo(handle, pynvml.NVML_CLOCK_MEM) == 2619  # MHz
    assert fake.nvmlDeviceGetMemoryInfo(handle).total == 85520809984  # bytes
    assert isinstance(fake.nvmlDeviceGetTotalEnergyConsumption(handle), int)  # mJ


def test_energy_counts_up_by_the_power_drawn(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, clock = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(3)
    before_mj, watts = (
        fake.nvmlDeviceGetTotalEnergyConsumption(handle),
        fake.nvmlDeviceGetPowerUsage(handle) / 1000,
    )
    clock.now += 1.0
    after_mj = fake.nvmlDeviceGetTotalEnergyConsumption(handle)
    assert (after_mj - before_mj) / 1000 == pytest.approx(watts, rel=0.02)


def test_what_an_sxm_h100_lacks_is_not_supported(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, _ = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetFanSpeed(handle)
    (retired,) = fake.nvmlDeviceGetFieldValues(handle, [(pynvml.NVML_FI_DEV_RETIRED_SBE, 0)])
    assert retired.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_field_values_are_pynvml_structs_with_per_link_scope(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, _ = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    wanted = [
        (pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, 0),
        (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, 17),
        (pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, 18),
    ]
    count, link17, link18 = fake.nvmlDeviceGetFieldValues(handle, wanted)
    assert isinstance(count, pynvml.c_nvmlFieldValue_t)
    assert (count.nvmlReturn, count.value.ullVal) == (pynvml.NVML_SUCCESS, 18)
    assert (link17.scopeId, link17.nvmlReturn) == (17, pynvml.NVML_SUCCESS)
    assert link18.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_a_failed_gpu_raises_gpu_is_lost_on_every_call(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, _ = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(1)
    fake.fail_gpu(1)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetPowerUsage(handle)
    with pytest.raises(pynvml.NVMLError_GpuIsLost):
        fake.nvmlDeviceGetUUID(handle)
    assert fake.nvmlDeviceGetPowerUsage(fake.nvmlDeviceGetHandleByIndex(0)) > 0


def test_mig_devices_answer_like_nvml() -> None:
    fake = FakeNvml(load_profile("h100-mig"))
    fake.nvmlInit()
    gpu = fake.nvmlDeviceGetHandleByIndex(0)
    assert fake.nvmlDeviceGetMigMode(gpu) == [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetUtilizationRates(gpu)
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 0)
    assert fake.nvmlDeviceGetName(mig) == "NVIDIA H100 80GB HBM3 MIG 3g.40gb"
    assert fake.nvmlDeviceGetAttributes(mig).multiprocessorCount == 60
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetMigDeviceHandleByIndex(gpu, 3)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetPowerUsage(mig)
    assert fake.nvmlDeviceGetMigMode(fake.nvmlDeviceGetHandleByIndex(1)) == [0, 0]


def test_every_builtin_profile_opens_through_the_nvml_backend() -> None:
    assert builtin_profiles() == ["h100-mig", "h100x8"]
    for name in builtin_profiles():
        backend = open_backend(f"sim:{name}")
        assert isinstance(backend, NvmlBackend)
        assert all(device.read().power_watts for device in backend.devices())


def test_scalar_field_values_carry_nvmls_types_units_and_scopes(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, _ = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    gpu_scope, module_scope = pynvml.NVML_POWER_SCOPE_GPU, pynvml.NVML_POWER_SCOPE_MODULE
    power, module_power, energy, unknown = fake.nvmlDeviceGetFieldValues(
        handle,
        [
            (pynvml.NVML_FI_DEV_POWER_AVERAGE, gpu_scope),
            (pynvml.NVML_FI_DEV_POWER_AVERAGE, module_scope),
            pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION,
            (pynvml.NVML_FI_MAX - 1, 0),
        ],
    )
    assert power.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
    assert power.value.uiVal == fake.nvmlDeviceGetPowerUsage(handle)  # mW
    assert module_power.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED
    assert energy.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
    assert energy.value.ullVal == fake.nvmlDeviceGetTotalEnergyConsumption(handle)  # mJ
    assert energy.timestamp > 0
    assert unknown.nvmlReturn == pynvml.NVML_ERROR_NOT_SUPPORTED


def test_the_simulator_counts_calls_per_gpu_and_function(nvml: tuple[FakeNvml, Clock]) -> None:
    fake, _ = nvml
    handle = fake.nvmlDeviceGetHandleByIndex(3)
    fake.nvmlDeviceGetPowerUsage(handle)
    fake.nvmlDeviceGetPowerUsage(handle)
    counts = fake.call_counts()
    assert counts[(3, "nvmlDeviceGetPowerUsage")] == 2
    assert counts[(None, "nvmlDeviceGetHandleByIndex")] == 1
