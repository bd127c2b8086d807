"""GPUs through NVML: the GpuBackend over pynvml's functions, or over a fake of them (the simulator).

The scalar fields (power, limits, energy, ECC, memory health, NVLink counters) come from one
nvmlDeviceGetFieldValues call per GPU per cycle; a field the driver refuses there is read with
its own function instead (remembered). Every field fails on its own: NOT_SUPPORTED (or a function
the driver lacks, or no permission) drops that field for that GPU and is remembered, so it is not
asked again every cycle; GPU_IS_LOST and its kin make the whole GPU unreadable for the cycle
(GpuLostError) while others carry on.
Units are converted here: mW -> W, mJ -> J, MHz -> Hz, KB/s and KiB -> bytes.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

import pynvml  # type: ignore[import-untyped]  # constants and error classes only; calls go through NvmlApi

from esnode_agent.gpu import backend
from esnode_agent.gpu import nvml_fields as fi
from esnode_agent.gpu.backend import (
    EventsUnsupportedError,
    GpuDevice,
    GpuIdentity,
    GpuLostError,
    GpuProcess,
    GpuReading,
    MigReading,
    NullBackend,
    NvlinkCounters,
    PowerLimitError,
    PowerLimits,
    XidEvent,
)
from esnode_agent.gpu.gpm import GpmReader, gpm_supported
from esnode_agent.gpu.nvml_api import (
    DeviceAttributes,
    EventSet,
    Handle,
    MemoryInfo,
    NvmlApi,
    ProcessInfo,
    ProcessUtilizationSample,
)
from esnode_agent.gpu.nvml_fields import FieldKey, FieldReadout, number
from esnode_agent.gpu.pcie_sampler import PCIE_SAMPLE_INTERVAL_SECONDS, PcieSampler

log = logging.getLogger(__name__)

T = TypeVar("T")

# The field will not start working while the driver stays loaded: stop asking.
_UNSUPPORTED = frozenset(
    {pynvml.NVML_ERROR_NOT_SUPPORTED, pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, pynvml.NVML_ERROR_NO_PERMISSION}
)
# A field ID the driver does not know (newer than it) answers INVALID_ARGUMENT in its slot.
_FIELD_REFUSED = _UNSUPPORTED | {pynvml.NVML_ERROR_INVALID_ARGUMENT}
# The GPU as a whole does not answer.
_LOST = frozenset(
    {
        pynvml.NVML_ERROR_GPU_IS_LOST,
        pynvml.NVML_ERROR_RESET_REQUIRED,
        pynvml.NVML_ERROR_UNKNOWN,
        pynvml.NVML_ERROR_UNINITIALIZED,
        pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
    }
)

# nvmlDeviceGetProcessUtilization with no sample since the timestamp: NOT_FOUND (NVML's documented
# answer), or SUCCESS raised by pynvml when the driver answers the sizing call with no samples.
_NO_NEW_SAMPLES = frozenset({pynvml.NVML_ERROR_NOT_FOUND, pynvml.NVML_SUCCESS})

_THROTTLE_BITS = {
    "idle": pynvml.nvmlClocksEventReasonGpuIdle,
    "applications_clocks_setting": pynvml.nvmlClocksEventReasonApplicationsClocksSetting,
    "power": pynvml.nvmlClocksEventReasonSwPowerCap,
    "hw_slowdown": pynvml.nvmlClocksEventReasonHwSlowdown,
    "sync_boost": pynvml.nvmlClocksEventReasonSyncBoost,
    "sw_thermal": pynvml.nvmlClocksEventReasonSwThermalSlowdown,
    "thermal": pynvml.nvmlClocksEventReasonHwThermalSlowdown,
    "power_brake": pynvml.nvmlClocksEventReasonHwPowerBrakeSlowdown,
    "display_clocks": pynvml.nvmlClocksEventReasonDisplayClockSetting,
}
_CLOCK_TYPES = {
    "graphics": pynvml.NVML_CLOCK_GRAPHICS,
    "sm": pynvml.NVML_CLOCK_SM,
    "memory": pynvml.NVML_CLOCK_MEM,
}
_ECC_TYPES = {  # kind -> (batched field, legacy error type)
    "corrected": (fi.ECC_CORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED),
    "uncorrected": (fi.ECC_UNCORRECTED, pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED),
}
_PCIE_COUNTERS = {"rx": pynvml.NVML_PCIE_UTIL_RX_BYTES, "tx": pynvml.NVML_PCIE_UTIL_TX_BYTES}
KIB = 1024  # NVML's PCIe "KB/s" and NVLink "KiB" are both 1024 bytes
MHZ = 1_000_000

_MIG_PROFILE_IN_NAME = re.compile(r"\bMIG\s+((?:\d+c\.)?\d+g\.\d+gb(?:\+[a-z]+)?)\s*$")


def open_nvml(lib: NvmlApi) -> NvmlBackend | NullBackend:
    """Initialise NVML and find its GPUs; any failure gives the null backend and one log line."""
    try:
        lib.nvmlInit()
    except pynvml.NVMLError as exc:
        missing = exc.value == pynvml.NVML_ERROR_LIBRARY_NOT_FOUND
        log.log(
            logging.INFO if missing else logging.WARNING,
            "NVML unavailable; GPU metrics off",
            extra={"error": str(exc)},
        )
        return NullBackend(f"NVML unavailable: {exc}", library_missing=missing)
    try:
        backend = NvmlBackend(lib)
    except pynvml.NVMLError as exc:
        log.warning("NVML device discovery failed; GPU metrics off", extra={"error": str(exc)})
        lib.nvmlShutdown()
        return NullBackend(f"NVML device discovery failed: {exc}")
    log.info("NVML opened", extra={"gpus": len(backend.devices()), "driver_version": backend.driver_version})
    return backend


class NvmlBackend:
    """An initialised NVML: its driver version and the GPUs that could be identified."""

    def __init__(self, lib: NvmlApi) -> None:
        self._lib = lib
        self._driver_version = lib.nvmlSystemGetDriverVersion()
        self._devices = [d for d in (self._discover(i) for i in range(lib.nvmlDeviceGetCount())) if d]
        self._pcie_sampler = PcieSampler(
            [d.refresh_pcie for d in self._devices], PCIE_SAMPLE_INTERVAL_SECONDS
        )
        self._pcie_sampler.start()

    @property
    def unavailable_reason(self) -> str | None:
        return None

    @property
    def driver_version(self) -> str:
        return self._driver_version

    def devices(self) -> Sequence[NvmlDevice]:
        return self._devices

    def xid_events(self, devices: Sequence[GpuDevice]) -> NvmlXidEvents:
        return NvmlXidEvents(self._lib, [d for d in self._devices if d in devices])

    def close(self) -> None:
        self._pcie_sampler.stop()
        self._lib.nvmlShutdown()

    def _discover(self, index: int) -> NvmlDevice | None:
        """One GPU's handle and identity; a GPU that cannot even say its UUID is left out."""
        lib = self._lib
        try:
            handle = lib.nvmlDeviceGetHandleByIndex(index)
            identity = GpuIdentity(
                index=index,
                uuid=lib.nvmlDeviceGetUUID(handle),
                model=lib.nvmlDeviceGetName(handle),
                pci_bus_id=lib.nvmlDeviceGetPciInfo(handle).busId,
                serial=_optional(lambda: lib.nvmlDeviceGetSerial(handle)),
            )
        except pynvml.NVMLError as exc:
            log.warning("GPU left out: cannot identify it", extra={"gpu": index, "error": str(exc)})
            return None
        return NvmlDevice(lib, handle, identity)


def _optional(read: Callable[[], str]) -> str | None:
    try:
        return read()
    except pynvml.NVMLError as exc:
        if exc.value in _UNSUPPORTED:
            return None
        raise


@dataclass(frozen=True, slots=True)
class _MigStatic:
    gpu_instance_id: int
    compute_instance_id: int
    profile: str
    sm_count: int | None


class NvmlDevice:
    """One GPU: reads every field on its own and remembers which ones it does not support."""

    def __init__(self, lib: NvmlApi, handle: Handle, identity: GpuIdentity) -> None:
        self._lib = lib
        self._handle = handle
        self._identity = identity
        self._unsupported: set[str] = set()
        self._reported: dict[str, str] = {}  # field -> last error logged, so each is logged once
        self._mig_mode: bool | None = None
        self._nvlink_links: tuple[int, ...] | None = None
        self._dropped_field_ids: set[tuple[int, int]] = set()
        self._mig_static: dict[str, _MigStatic] = {}
        self._pcie: dict[str, float] = {}  # the PCIe sampler's latest, replaced whole
        self._gpm: GpmReader | None = None  # set once GPM answers as supported
        self._mig_gpm: dict[str, GpmReader] = {}  # MIG device UUID -> its GPU instance's reader
        self._mig_handles: dict[str, Handle] = {}  # MIG device UUID -> its handle, for its processes
        self._process_samples_seen_us = 0  # the newest process sample's timestamp so far

    @property
    def identity(self) -> GpuIdentity:
        return self._identity

    @property
    def handle(self) -> Handle:
        return self._handle

    def read(self) -> GpuReading:
        lib, h = self._lib, self._handle
        mig_mode = self._read_mig_mode()
        memory = self._field("memory", lambda: _memory(lib, h))
        utilization = self._field("utilization", lambda: lib.nvmlDeviceGetUtilizationRates(h))
        fields = self._read_fields()
        nvml_milli = partial(self._batched, fields, scale=1 / 1000)  # mW -> W, mJ -> J
        return GpuReading(
            mig_mode_enabled=mig_mode,
            utilization_percent=None if utilization is None else float(utilization.gpu),
            memory_used_bytes=memory.used if memory else None,
            memory_total_bytes=memory.total if memory else None,
            temperature_celsius=self._field(
                "temperature", lambda: float(lib.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU))
            ),
            power_watts=nvml_milli(fi.POWER, "power", lambda: lib.nvmlDeviceGetPowerUsage(h)),
            power_limit_watts=nvml_milli(
                fi.POWER_LIMIT, "power_limit", lambda: lib.nvmlDeviceGetEnforcedPowerLimit(h)
            ),
            energy_joules_total=nvml_milli(
                fi.ENERGY, "energy", lambda: lib.nvmlDeviceGetTotalEnergyConsumption(h)
            ),
            fan_speed_ratio=self._field("fan", lambda: lib.nvmlDeviceGetFanSpeed(h) / 100),
            performance_state=self._field("performance_state", self._performance_state),
            clock_hertz=self._each(
                "clock", _CLOCK_TYPES, lambda t: float(lib.nvmlDeviceGetClockInfo(h, t) * MHZ)
            ),
            throttle_reasons=self._throttle_reasons(),
            ecc_errors_total=_present(
                {
                    kind: self._batched(
                        fields,
                        key,
                        f"ecc_{kind}",
                        partial(lib.nvmlDeviceGetTotalEccErrors, h, code, pynvml.NVML_VOLATILE_ECC),
                    )
                    for kind, (key, code) in _ECC_TYPES.items()
                }
            ),
            pcie_bytes_per_second=self._pcie,
            nvlink=tuple(
                NvlinkCounters(link, rx * KIB, tx * KIB)
                for link in self._nvlink_links or ()
                if (rx := fields.get((fi.NVLINK_RX, link))) is not None
                and (tx := fields.get((fi.NVLINK_TX, link))) is not None
            ),
            retired_pages=_present(
                {"single_bit_ecc": fields.get(fi.RETIRED_SBE), "double_bit_ecc": fields.get(fi.RETIRED_DBE)}
            ),
            retired_pages_pending=_flag(fields.get(fi.RETIRED_PENDING)),
            remapped_rows=_present(
                {"corrected": fields.get(fi.REMAPPED_COR), "uncorrected": fields.get(fi.REMAPPED_UNC)}
            ),
            remapped_rows_pending=_flag(fields.get(fi.REMAPPED_PENDING)),
            remapped_rows_failed=_flag(fields.get(fi.REMAPPED_FAILURE)),
            memory_utilization_percent=None if utilization is None else float(utilization.memory),
            memory_free_bytes=memory.free if memory else None,
            memory_reserved_bytes=memory.reserved if memory else None,
            memory_temperature_celsius=fields.get(fi.MEMORY_TEMPERATURE),
            power_limit_min_watts=_scaled(fields.get(fi.POWER_LIMIT_MIN), 1 / 1000),
            power_limit_max_watts=_scaled(fields.get(fi.POWER_LIMIT_MAX), 1 / 1000),
            power_limit_default_watts=_scaled(fields.get(fi.POWER_LIMIT_DEFAULT), 1 / 1000),
            pcie_replays_total=fields.get(fi.PCIE_REPLAYS),
            nvlink_errors_total=_present({kind: fields.get(key) for kind, key in fi.NVLINK_ERRORS.items()}),
            activity_ratio=self._field("gpm", self._read_gpm) or {},
        )

    # Power limits: only the opt-in capper calls these (esnode_agent.capping).
    def power_limits(self) -> PowerLimits:
        lib, h = self._lib, self._handle
        with _power_limit_errors():
            low, high = lib.nvmlDeviceGetPowerManagementLimitConstraints(h)
            return PowerLimits(
                min_watts=low / 1000,
                max_watts=high / 1000,
                default_watts=lib.nvmlDeviceGetPowerManagementDefaultLimit(h) / 1000,
                current_watts=lib.nvmlDeviceGetPowerManagementLimit(h) / 1000,
            )

    def set_power_limit_milliwatts(self, milliwatts: int) -> None:
        with _power_limit_errors():
            self._lib.nvmlDeviceSetPowerManagementLimit(self._handle, milliwatts)

    def _read_gpm(self) -> dict[str, float]:
        if self._gpm is None:
            if not gpm_supported(self._lib, self._handle):  # before Hopper
                raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
            self._gpm = GpmReader(self._lib, partial(self._lib.nvmlGpmSampleGet, self._handle))
        return self._gpm.read()

    def _mig_activity(self, uuid: str, gpu_instance_id: int) -> dict[str, float]:
        """The MIG device's GPU instance's GPM ratios; none where the GPU lacks GPM."""
        if self._gpm is None:
            return {}
        lib, parent = self._lib, self._handle
        reader = self._mig_gpm.get(uuid) or GpmReader(
            lib, lambda sample: lib.nvmlGpmMigSampleGet(parent, gpu_instance_id, sample)
        )
        self._mig_gpm[uuid] = reader
        return self._field(f"gpm_{uuid}", reader.read) or {}

    def _batched(
        self, fields: FieldReadout, key: FieldKey, name: str, legacy: Callable[[], float], scale: float = 1.0
    ) -> float | None:
        """A batched field's value; where the driver refused it in the batch, its own function's."""
        if key in fields.values:
            return fields.values[key] * scale
        if key in fields.failed:
            return None
        return self._field(name, lambda: float(legacy()) * scale)

    def refresh_pcie(self) -> None:
        """Called by the PCIe sampler thread: NVML blocks ~20 ms per direction here."""
        lib, h = self._lib, self._handle
        self._pcie = self._each(
            "pcie", _PCIE_COUNTERS, lambda c: float(lib.nvmlDeviceGetPcieThroughput(h, c) * KIB)
        )

    def mig_instances(self) -> list[MigReading]:
        if not self._read_mig_mode():
            return []
        count = self._field(
            "mig_device_count", lambda: self._lib.nvmlDeviceGetMaxMigDeviceCount(self._handle)
        )
        readings = (self._mig_reading(slot) for slot in range(count or 0))
        return [reading for reading in readings if reading is not None]

    def processes(self, migs: Sequence[MigReading]) -> list[GpuProcess]:
        """Per MIG device in MIG mode (NVML measures no per-process utilization there); else the
        GPU's processes with their SM and memory utilization from the samples since the last call."""
        if self._mig_mode:
            return [process for mig in migs for process in self._mig_processes(mig.uuid)]
        lib, h = self._lib, self._handle
        running = self._field("processes", lambda: _running_processes(lib, h))
        samples = self._field("process_utilization", self._process_samples) if running else None
        return [_process(info, samples) for info in running or ()]

    def _mig_processes(self, uuid: str) -> list[GpuProcess]:
        handle = self._mig_handles.get(uuid)
        if handle is None:
            return []
        running = self._field(f"processes_{uuid}", lambda: _running_processes(self._lib, handle))
        return [
            GpuProcess(int(info.pid), _bytes_or_none(info.usedGpuMemory), mig_uuid=uuid)
            for info in running or ()
        ]

    def _process_samples(self) -> dict[int, tuple[float, float]]:
        """pid -> mean (SM, memory) utilization ratio of NVML's samples newer than the last ones read."""
        try:
            samples: Sequence[ProcessUtilizationSample] = self._lib.nvmlDeviceGetProcessUtilization(
                self._handle, self._process_samples_seen_us
            )
        except pynvml.NVMLError as exc:
            if exc.value in _NO_NEW_SAMPLES:
                return {}
            raise
        by_pid: dict[int, list[ProcessUtilizationSample]] = {}
        for sample in samples:
            by_pid.setdefault(int(sample.pid), []).append(sample)
            self._process_samples_seen_us = max(self._process_samples_seen_us, int(sample.timeStamp))
        return {
            pid: (
                sum(s.smUtil for s in taken) / len(taken) / 100,
                sum(s.memUtil for s in taken) / len(taken) / 100,
            )
            for pid, taken in by_pid.items()
        }

    def _read_mig_mode(self) -> bool | None:
        enabled = self._field(
            "mig_mode",
            lambda: self._lib.nvmlDeviceGetMigMode(self._handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE,
        )
        if enabled != self._mig_mode and self._mig_mode is not None:
            self._unsupported.clear()  # what MIG mode disables (utilization) comes back without it
            self._dropped_field_ids.clear()
        self._mig_mode = enabled
        return enabled

    def _field(self, name: str, read: Callable[[], T]) -> T | None:
        """One field's value; None when unsupported (remembered) or failing this cycle (logged once)."""
        if name in self._unsupported:
            return None
        try:
            value = read()
        except pynvml.NVMLError as exc:
            if exc.value in _LOST:
                raise GpuLostError(str(exc)) from exc
            if exc.value in _UNSUPPORTED:
                self._unsupported.add(name)
                log.debug(
                    "GPU field unsupported",
                    extra={"gpu": self._identity.index, "field": name, "error": str(exc)},
                )
            else:
                self._report(name, str(exc))
            return None
        self._reported.pop(name, None)
        return value

    def _each(self, name: str, kinds: dict[str, int], read: Callable[[int], float]) -> dict[str, float]:
        return _present(
            {kind: self._field(f"{name}_{kind}", partial(read, code)) for kind, code in kinds.items()}
        )

    def _report(self, name: str, error: str) -> None:
        if self._reported.get(name) != error:
            log.warning(
                "GPU field unreadable", extra={"gpu": self._identity.index, "field": name, "error": error}
            )
            self._reported[name] = error

    def _performance_state(self) -> int | None:
        state = int(self._lib.nvmlDeviceGetPerformanceState(self._handle))
        return None if state == pynvml.NVML_PSTATE_UNKNOWN else state

    def _throttle_reasons(self) -> dict[str, bool]:
        mask = self._field("clock_event_reasons", self._clock_event_reasons)
        return {} if mask is None else {reason: bool(mask & bit) for reason, bit in _THROTTLE_BITS.items()}

    def _clock_event_reasons(self) -> int:
        try:
            return int(self._lib.nvmlDeviceGetCurrentClocksEventReasons(self._handle))
        except pynvml.NVMLError_FunctionNotFound:  # drivers before R535 only have the older name
            return int(self._lib.nvmlDeviceGetCurrentClocksThrottleReasons(self._handle))

    def _read_fields(self) -> FieldReadout:
        readout = self._field("field_values", self._field_values)
        if readout is not None:
            return readout
        if "field_values" in self._unsupported:  # a driver without the call: the legacy calls answer
            return FieldReadout()
        return FieldReadout(failed=frozenset(self._wanted_fields()))  # erred this cycle, logged

    def _wanted_fields(self) -> list[FieldKey]:
        if self._nvlink_links is None:
            self._nvlink_links = self._active_nvlinks()
        links = ((field_id, link) for link in self._nvlink_links for field_id in (fi.NVLINK_RX, fi.NVLINK_TX))
        return [key for key in (*fi.SCALAR_FIELDS, *links) if key not in self._dropped_field_ids]

    def _field_values(self) -> FieldReadout:
        """The scalar fields in one call; each value succeeds, is refused or fails on its own."""
        wanted = self._wanted_fields()
        if not wanted:
            return FieldReadout()
        values: dict[FieldKey, float] = {}
        failed: set[FieldKey] = set()
        for value in self._lib.nvmlDeviceGetFieldValues(self._handle, wanted):
            key = (int(value.fieldId), int(value.scopeId))
            code = int(value.nvmlReturn)
            if code == pynvml.NVML_SUCCESS:
                values[key] = number(value)
                self._reported.pop(f"field {key}", None)
            elif code in _FIELD_REFUSED:
                self._dropped_field_ids.add(key)
            elif code in _LOST:
                raise GpuLostError(str(pynvml.NVMLError(code)))
            else:
                failed.add(key)
                self._report(f"field {key}", str(pynvml.NVMLError(code)))
        return FieldReadout(values, frozenset(failed))

    def _active_nvlinks(self) -> tuple[int, ...]:
        try:
            (count,) = self._lib.nvmlDeviceGetFieldValues(
                self._handle, [(pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT, 0)]
            )
        except pynvml.NVMLError as exc:
            if exc.value in _LOST:
                raise
            return ()
        if count.nvmlReturn != pynvml.NVML_SUCCESS:
            return ()
        return tuple(link for link in range(int(number(count))) if self._nvlink_active(link))

    def _nvlink_active(self, link: int) -> bool:
        try:
            return bool(self._lib.nvmlDeviceGetNvLinkState(self._handle, link) == pynvml.NVML_FEATURE_ENABLED)
        except pynvml.NVMLError as exc:
            if exc.value in _LOST:
                raise
            return False

    def _mig_reading(self, slot: int) -> MigReading | None:
        lib = self._lib
        try:
            handle = lib.nvmlDeviceGetMigDeviceHandleByIndex(self._handle, slot)
        except pynvml.NVMLError_NotFound:  # an empty slot
            return None
        except pynvml.NVMLError as exc:
            self._mig_failed(slot, exc)
            return None
        try:
            uuid = lib.nvmlDeviceGetUUID(handle)
            static = self._mig_static.get(uuid) or self._read_mig_static(handle)
            memory = _memory(lib, handle)
        except pynvml.NVMLError as exc:
            self._mig_failed(slot, exc)
            return None
        self._mig_static[uuid] = static
        self._mig_handles[uuid] = handle
        self._reported.pop(f"mig_{slot}", None)
        return MigReading(
            uuid=uuid,
            gpu_instance_id=static.gpu_instance_id,
            compute_instance_id=static.compute_instance_id,
            profile=static.profile,
            sm_count=static.sm_count,
            memory_used_bytes=memory.used,
            memory_total_bytes=memory.total,
            activity_ratio=self._mig_activity(uuid, static.gpu_instance_id),
        )

    def _mig_failed(self, slot: int, exc: pynvml.NVMLError) -> None:
        if exc.value in _LOST:
            raise GpuLostError(str(exc)) from exc
        self._report(f"mig_{slot}", str(exc))

    def _read_mig_static(self, handle: Handle) -> _MigStatic:
        lib = self._lib
        attributes = lib.nvmlDeviceGetAttributes(handle)
        return _MigStatic(
            gpu_instance_id=int(lib.nvmlDeviceGetGpuInstanceId(handle)),
            compute_instance_id=int(lib.nvmlDeviceGetComputeInstanceId(handle)),
            profile=mig_profile(lib.nvmlDeviceGetName(handle), attributes),
            sm_count=int(attributes.multiprocessorCount),
        )


_POWER_LIMIT_REFUSALS = {
    pynvml.NVML_ERROR_NO_PERMISSION: backend.REFUSED_NO_PERMISSION,
    pynvml.NVML_ERROR_NOT_SUPPORTED: backend.REFUSED_NOT_SUPPORTED,
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: backend.REFUSED_NOT_SUPPORTED,
    pynvml.NVML_ERROR_INVALID_ARGUMENT: backend.REFUSED_OUT_OF_RANGE,
    **dict.fromkeys(_LOST, backend.REFUSED_GPU_LOST),
}


@contextmanager
def _power_limit_errors() -> Iterator[None]:
    try:
        yield
    except pynvml.NVMLError as exc:
        raise PowerLimitError(_POWER_LIMIT_REFUSALS.get(exc.value, backend.REFUSED_OTHER), str(exc)) from exc


def mig_profile(device_name: str, attributes: DeviceAttributes) -> str:
    """The profile as NVIDIA names it (``NVIDIA H100 80GB HBM3 MIG 3g.40gb`` -> ``3g.40gb``).

    Falls back to slices and memory when the name does not carry it; NVIDIA rounds memory up to GiB.
    """
    match = _MIG_PROFILE_IN_NAME.search(device_name)
    if match:
        return match.group(1)
    gpu_slices, compute_slices = attributes.gpuInstanceSliceCount, attributes.computeInstanceSliceCount
    profile = f"{gpu_slices}g.{math.ceil(attributes.memorySizeMB / 1024)}gb"
    return profile if compute_slices in (0, gpu_slices) else f"{compute_slices}c.{profile}"


@dataclass(frozen=True, slots=True)
class _Memory:
    used: float
    total: float
    free: float
    reserved: float | None  # v2 only


def _memory(lib: NvmlApi, handle: Handle) -> _Memory:
    """Memory in bytes; the v2 call leaves driver-reserved memory out of used, as nvidia-smi does."""
    try:
        info: MemoryInfo = lib.nvmlDeviceGetMemoryInfo(handle, version=pynvml.nvmlMemory_v2)
    except (pynvml.NVMLError_FunctionNotFound, pynvml.NVMLError_ArgumentVersionMismatch):
        info = lib.nvmlDeviceGetMemoryInfo(handle)
        return _Memory(float(info.used), float(info.total), float(info.free), None)
    return _Memory(float(info.used), float(info.total), float(info.free), float(info.reserved))


def _running_processes(lib: NvmlApi, handle: Handle) -> Sequence[ProcessInfo]:
    """Drivers older than the v3 call have v2 (same fields); for the unversioned call pynvml then
    raises its own NVMLLibraryMismatchError, not an NVMLError. Neither: FUNCTION_NOT_FOUND."""
    try:
        return lib.nvmlDeviceGetComputeRunningProcesses(handle)
    except pynvml.NVMLLibraryMismatchError:
        return lib.nvmlDeviceGetComputeRunningProcesses_v2(handle)


def _process(info: ProcessInfo, samples: dict[int, tuple[float, float]] | None) -> GpuProcess:
    """A whole GPU's process; NVML samples only processes that used the GPU, so no sample is 0."""
    pid = int(info.pid)
    sm, memory = (None, None) if samples is None else samples.get(pid, (0.0, 0.0))
    return GpuProcess(
        pid, _bytes_or_none(info.usedGpuMemory), sm_utilization_ratio=sm, memory_utilization_ratio=memory
    )


def _bytes_or_none(value: int | None) -> float | None:
    return None if value is None else float(value)


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _present(values: dict[str, float | None]) -> dict[str, float]:
    return {k: v for k, v in values.items() if v is not None}


def _flag(value: float | None) -> bool | None:
    return None if value is None else value != 0


class NvmlXidEvents:
    """XID critical-error events of some GPUs, through one NVML event set."""

    def __init__(self, lib: NvmlApi, devices: Sequence[NvmlDevice]) -> None:
        self._lib = lib
        try:
            self._event_set: EventSet = lib.nvmlEventSetCreate()
        except pynvml.NVMLError as exc:
            raise EventsUnsupportedError(f"cannot create an NVML event set: {exc}") from exc
        registered = [d for d in devices if self._register(d)]
        if not registered:
            lib.nvmlEventSetFree(self._event_set)
            raise EventsUnsupportedError("no GPU accepts XID event registration")

    def _register(self, device: NvmlDevice) -> bool:
        try:
            self._lib.nvmlDeviceRegisterEvents(
                device.handle, pynvml.nvmlEventTypeXidCriticalError, self._event_set
            )
        except pynvml.NVMLError as exc:
            log.info(
                "XID events unavailable for GPU", extra={"gpu": device.identity.index, "error": str(exc)}
            )
            return False
        return True

    def wait(self, timeout_seconds: float) -> XidEvent | None:
        try:
            data = self._lib.nvmlEventSetWait(self._event_set, max(1, int(timeout_seconds * 1000)))
        except pynvml.NVMLError_Timeout:
            return None
        if not data.eventType & pynvml.nvmlEventTypeXidCriticalError:
            return None
        return XidEvent(self._lib.nvmlDeviceGetUUID(data.device), int(data.eventData))

    def close(self) -> None:
        self._lib.nvmlEventSetFree(self._event_set)
