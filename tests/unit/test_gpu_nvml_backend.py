"""The NVML backend against pynvml-shaped fakes: fallbacks, per-field errors, MIG names, init failure."""

# ruff: noqa: N802, N803  (the fakes override NVML's own camelCase names)

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest

from esnode_agent.gpu.backend import EventsUnsupportedError, GpuLostError, NullBackend
from esnode_agent.gpu.nvml_backend import NvmlBackend, mig_profile, open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import load_profile


def nvml_error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


def backend_over(fake: FakeNvml) -> NvmlBackend:
    backend = open_nvml(fake)
    assert isinstance(backend, NvmlBackend)
    return backend


class OldDriver(FakeNvml):
    """A driver from before R535 (no ClocksEventReasons) and without nvmlDeviceGetMemoryInfo_v2."""

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: object) -> int:
        raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)

    def nvmlDeviceGetMemoryInfo(self, handle: object, version: int | None = None) -> Any:
        if version is not None:
            raise nvml_error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND)
        return super().nvmlDeviceGetMemoryInfo(handle)


def test_an_older_driver_falls_back_to_the_older_calls() -> None:
    reading = backend_over(OldDriver(load_profile("h100x8"))).devices()[0].read()
    assert set(reading.throttle_reasons) >= {"thermal", "power", "idle"}
    assert reading.memory_total_bytes == 85520809984


class FlakyPower(FakeNvml):
    """Power fails in the field-value batch with an error that is neither 'unsupported' nor 'GPU lost'."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.power_asked = 0

    def nvmlDeviceGetFieldValues(self, handle: object, fieldIds: Any) -> Any:
        values = super().nvmlDeviceGetFieldValues(handle, fieldIds)
        for value in values:
            if value.fieldId == pynvml.NVML_FI_DEV_POWER_AVERAGE:
                self.power_asked += 1
                value.nvmlReturn = pynvml.NVML_ERROR_TIMEOUT
        return values


def test_a_failing_field_is_absent_retried_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    fake = FlakyPower(load_profile("h100x8"))
    device = backend_over(fake).devices()[0]
    with caplog.at_level(logging.WARNING):
        readings = [device.read() for _ in range(3)]
    assert [r.power_watts for r in readings] == [None, None, None]
    assert readings[0].energy_joules_total is not None  # the batch's other fields are unaffected
    assert fake.power_asked == 3
    assert not any(function == "nvmlDeviceGetPowerUsage" for _, function in fake.call_counts())
    assert caplog.messages.count("GPU field unreadable") == 1


def steady_calls(fake: FakeNvml, cycles: int = 3) -> Counter[str]:
    """NVML functions called per cycle for GPU 0 after a first cycle, PCIe sampler aside."""
    device = backend_over(fake).devices()[0]
    device.read()
    before = fake.call_counts()
    for _ in range(cycles):
        device.read()
    spent = fake.call_counts() - before
    return Counter(
        {
            function: count // cycles
            for (gpu, function), count in spent.items()
            if gpu == 0 and function != "nvmlDeviceGetPcieThroughput"
        }
    )


def test_the_scalar_fields_come_from_one_field_value_call_per_cycle() -> None:
    calls = steady_calls(FakeNvml(load_profile("h100x8")))
    assert calls["nvmlDeviceGetFieldValues"] == 1
    for batched in (
        "nvmlDeviceGetPowerUsage",
        "nvmlDeviceGetEnforcedPowerLimit",
        "nvmlDeviceGetTotalEnergyConsumption",
        "nvmlDeviceGetTotalEccErrors",
    ):
        assert calls[batched] == 0, batched
    gpm = {function: n for function, n in calls.items() if function.startswith("nvmlGpm")}
    assert gpm == {"nvmlGpmSampleGet": 1, "nvmlGpmMetricsGet": 1}  # one sample and one pair per cycle
    assert sum(calls.values()) - sum(gpm.values()) == 10  # was 15 with one call per field


def test_batched_values_equal_the_single_calls_in_base_units() -> None:
    clock = [100.0]
    fake = FakeNvml(load_profile("h100x8"), lambda: clock[0])
    reading = backend_over(fake).devices()[0].read()
    handle = fake.nvmlDeviceGetHandleByIndex(0)
    assert reading.power_watts == fake.nvmlDeviceGetPowerUsage(handle) / 1000
    assert reading.power_limit_watts == fake.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000 == 700
    assert reading.energy_joules_total == fake.nvmlDeviceGetTotalEnergyConsumption(handle) / 1000
    corrected = fake.nvmlDeviceGetTotalEccErrors(
        handle, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC
    )
    assert reading.ecc_errors_total == {"corrected": corrected, "uncorrected": 0}
    assert (reading.power_limit_min_watts, reading.power_limit_max_watts) == (200, 700)
    assert reading.power_limit_default_watts == 700
    assert reading.memory_temperature_celsius is not None
    assert reading.nvlink_errors_total == {"crc": 0, "replay": 0, "recovery": 0}


class OlderBoard(FakeNvml):
    """A GA100-like driver answer: no 1 s power average field, and a field ID it does not know."""

    def nvmlDeviceGetFieldValues(self, handle: object, fieldIds: Any) -> Any:
        values = super().nvmlDeviceGetFieldValues(handle, fieldIds)
        for value in values:
            if value.fieldId == pynvml.NVML_FI_DEV_POWER_AVERAGE:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
            if value.fieldId == pynvml.NVML_FI_DEV_MEMORY_TEMP:
                value.nvmlReturn = pynvml.NVML_ERROR_INVALID_ARGUMENT
        return values


def test_a_field_refused_in_the_batch_falls_back_to_its_own_call() -> None:
    fake = OlderBoard(load_profile("h100x8"))
    calls = steady_calls(fake)
    assert calls["nvmlDeviceGetPowerUsage"] == 1
    assert calls["nvmlDeviceGetFieldValues"] == 1
    reading = backend_over(fake).devices()[0].read()
    assert reading.power_watts is not None
    assert reading.memory_temperature_celsius is None


def test_a_lost_gpu_raises_for_readings_and_mig_enumeration() -> None:
    fake = FakeNvml(load_profile("h100-mig"))
    device = backend_over(fake).devices()[0]
    fake.fail_gpu(0)
    with pytest.raises(GpuLostError, match="GPU is lost"):
        device.read()
    with pytest.raises(GpuLostError):
        device.mig_instances()


class NoFieldValues(FakeNvml):
    def nvmlDeviceGetFieldValues(self, handle: object, fieldIds: Any) -> Any:
        raise nvml_error(pynvml.NVML_ERROR_NOT_SUPPORTED)


def test_without_field_values_nvlink_and_memory_health_are_absent() -> None:
    reading = backend_over(NoFieldValues(load_profile("h100x8"))).devices()[0].read()
    assert reading.nvlink == ()
    assert reading.remapped_rows == {}
    assert reading.power_watts is not None


def test_nvlink_counters_are_bytes_and_count_up() -> None:
    clock = [0.0]
    device = backend_over(FakeNvml(load_profile("h100x8"), lambda: clock[0])).devices()[0]
    first = device.read().nvlink
    clock[0] += 10
    second = device.read().nvlink
    assert [link.link for link in first] == list(range(18))
    for before, after in zip(first, second, strict=True):
        rx_rate = (after.rx_bytes_total - before.rx_bytes_total) / 10
        assert 0 < rx_rate <= 25e9  # the profile's per-link bandwidth, in bytes per second
        assert after.tx_bytes_total > before.tx_bytes_total


@pytest.mark.parametrize(
    ("name", "slices", "compute_slices", "memory_mb", "expected"),
    [
        ("NVIDIA H100 80GB HBM3 MIG 3g.40gb", 3, 3, 40192, "3g.40gb"),
        ("NVIDIA A100-SXM4-40GB MIG 1g.5gb+me", 1, 1, 4864, "1g.5gb+me"),
        ("NVIDIA H100 80GB HBM3 MIG 1c.3g.40gb", 3, 1, 40192, "1c.3g.40gb"),
        ("NVIDIA H100 80GB HBM3", 2, 2, 20096, "2g.20gb"),
        ("MIG device", 3, 1, 40192, "1c.3g.40gb"),
        ("NVIDIA A100-SXM4-80GB MIG 7g.80gb", 7, 7, 81408, "7g.80gb"),
    ],
)
def test_mig_profile_comes_from_the_name_else_the_attributes(
    name: str, slices: int, compute_slices: int, memory_mb: int, expected: str
) -> None:
    attributes = pynvml.c_nvmlDeviceAttributes()
    attributes.gpuInstanceSliceCount = slices
    attributes.computeInstanceSliceCount = compute_slices
    attributes.memorySizeMB = memory_mb
    assert mig_profile(name, attributes) == expected


class NoDriver(FakeNvml):
    def nvmlInit(self) -> None:
        raise nvml_error(pynvml.NVML_ERROR_DRIVER_NOT_LOADED)


def test_a_failed_init_gives_the_null_backend_and_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        backend = open_nvml(NoDriver(load_profile("h100x8")))
    assert isinstance(backend, NullBackend)
    assert backend.unavailable_reason == "NVML unavailable: Driver Not Loaded"
    assert [(r.levelname, r.message) for r in caplog.records] == [
        ("WARNING", "NVML unavailable; GPU metrics off")
    ]
    assert backend.devices() == ()
    with pytest.raises(EventsUnsupportedError):
        backend.xid_events(())


def test_the_real_library_is_absent_here() -> None:
    backend = open_nvml(pynvml)
    assert isinstance(backend, NullBackend)
    assert "Library Not Found" in (backend.unavailable_reason or "")


class UnidentifiableGpu(FakeNvml):
    def nvmlDeviceGetUUID(self, handle: object) -> str:
        if getattr(handle, "gpu", None) == 1:
            raise nvml_error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return super().nvmlDeviceGetUUID(handle)


def test_a_gpu_that_cannot_be_identified_is_left_out(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        backend = backend_over(UnidentifiableGpu(load_profile("h100x8")))
    assert [d.identity.index for d in backend.devices()] == [0, 2, 3, 4, 5, 6, 7]
    assert "GPU left out: cannot identify it" in caplog.messages


def test_xid_events_arrive_through_the_event_set() -> None:
    fake = FakeNvml(load_profile("h100x8"))
    backend = backend_over(fake)
    events = backend.xid_events(backend.devices())
    try:
        assert events.wait(0.01) is None
        fake.inject_xid(4, 48)
        event = events.wait(1.0)
        assert event is not None
        assert (event.gpu_uuid, event.xid) == (backend.devices()[4].identity.uuid, 48)
    finally:
        events.close()
