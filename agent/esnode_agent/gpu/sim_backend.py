"""A simulated NVML: pynvml's functions, answered from a profile instead of a driver.

The NVML backend runs on it unchanged, so `--gpu-backend sim:h100x8` and the tests exercise the same
code path as real GPUs. It keeps NVML's contract at the library boundary: pynvml's structs, NVML's
units (mW, mJ, MHz, KB/s, KiB), pynvml.NVMLError subclasses with the real codes (NOT_SUPPORTED for
what the modelled board lacks, GPU_IS_LOST for a failed GPU), monotonic energy and NVLink
counters. Values follow a demand trace per GPU (sim_demand), deterministic from the profile's seed
and the time elapsed since the simulator was created; power limits are NVML's (mW, constraints,
NO_PERMISSION / INVALID_ARGUMENT / NOT_SUPPORTED), and the draw follows min(demand, limit) with the
response time of a real power controller (sim_power_limit).
"""

# ruff: noqa: N802, N803, N815  (NVML's own camelCase names)

from __future__ import annotations

import ctypes
import math
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, TypeVar

import pynvml  # type: ignore[import-untyped]  # structs, constants and error classes

from esnode_agent.gpu.sim_demand import Demand, Diurnal, TrainingSteps, Wave
from esnode_agent.gpu.sim_power_limit import DriverState, PowerController
from esnode_agent.gpu.sim_profile import SimGpuGroup, SimMigInstance, SimProcess, SimProfile

MAX_MIG_DEVICES = 7  # what NVML reports for H100 and A100
_IDLE_LOAD = 0.1  # below this a GPU reports the idle clock reason
_POWER_CAP_LOAD = 0.9  # above this, the software power cap
_AMBIENT_CELSIUS = 28.0  # an idle GPU in a cooled rack
_LOAD_HEATING_CELSIUS = 50.0  # what full load adds
_PCIE_SAMPLE_WINDOW_SECONDS = 0.02  # measured: 21 ms per direction on an H200, driver 580
_PCI_BUSES = (0x18, 0x2A, 0x3A, 0x5D, 0x9A, 0xAB, 0xBA, 0xDB)  # an HGX board's GPUs
_CAPPED_CLOCK_EXPONENT = 1 / 3  # dynamic power goes roughly as f * V^2, and V with f: f ~ P^(1/3)
_LOAD_MEAN, _LOAD_SWING = 0.5, 0.45
_HBM_OVER_DIE_CELSIUS = 6.0  # HBM stacks run a few degrees above the die
_RESERVED_MEMORY_SHARE = 0.006  # the driver's reservation; nvidia-smi shows ~500 MiB on an H100 80GB
# The driver samples per-process utilization periodically and keeps a bounded buffer of samples.
_PROCESS_SAMPLE_PERIOD_SECONDS = 1.0
_PROCESS_SAMPLE_BUFFER = 20
_PROCESS_MEMORY_UTIL_SHARE = 0.6  # memory busy per unit of SM load, as utilization.memory is here
_NO_INSTANCE_ID = 0xFFFFFFFF  # gpuInstanceId/computeInstanceId of a process outside MIG
_UINT = pynvml.NVML_VALUE_TYPE_UNSIGNED_INT
_ULL = pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG
_POWER_FIELDS = frozenset(
    {
        pynvml.NVML_FI_DEV_POWER_AVERAGE,
        pynvml.NVML_FI_DEV_POWER_INSTANT,
        pynvml.NVML_FI_DEV_POWER_MIN_LIMIT,
        pynvml.NVML_FI_DEV_POWER_MAX_LIMIT,
        pynvml.NVML_FI_DEV_POWER_DEFAULT_LIMIT,
        pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT,
        pynvml.NVML_FI_DEV_POWER_REQUESTED_LIMIT,
    }
)
_NVLINK_ERROR_TOTALS = frozenset(
    {
        pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL,
        pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL,
        pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL,
    }
)
_REMAPPED_FIELDS = frozenset(
    {
        pynvml.NVML_FI_DEV_REMAPPED_COR,
        pynvml.NVML_FI_DEV_REMAPPED_UNC,
        pynvml.NVML_FI_DEV_REMAPPED_PENDING,
        pynvml.NVML_FI_DEV_REMAPPED_FAILURE,
    }
)
_RETIRED_FIELDS = frozenset(
    {pynvml.NVML_FI_DEV_RETIRED_SBE, pynvml.NVML_FI_DEV_RETIRED_DBE, pynvml.NVML_FI_DEV_RETIRED_PENDING}
)
_NVLINK_THROUGHPUT = frozenset(
    {pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX}
)


_T = TypeVar("_T")


def _error(code: int) -> pynvml.NVMLError:
    return pynvml.NVMLError(code)


@dataclass(frozen=True, slots=True)
class _Handle:
    gpu: int
    mig_slot: int | None = None


def _demand(spec: SimGpuGroup, phase: float) -> Demand:
    if spec.steady_load is not None:  # a long job holding the GPU at one load
        return Wave(spec.load_period_seconds, 0.0, mean=spec.steady_load, swing=0.0)
    if spec.demand == "diurnal":
        return Diurnal.starting_at(spec.load_period_seconds, phase)
    if spec.demand == "training":
        return TrainingSteps(spec.load_period_seconds, phase / (2 * math.pi) * spec.load_period_seconds)
    return Wave(spec.load_period_seconds, phase)


@dataclass(slots=True)
class _SimGpu:
    index: int
    spec: SimGpuGroup
    uuid: str
    serial: str
    pci_bus_id: str
    mig_uuids: tuple[str, ...]
    load: Demand
    memory: Wave
    energy_at_start_millijoules: int
    power: PowerController = field(init=False)

    def __post_init__(self) -> None:
        self.power = PowerController(
            self.demand_watts, self.spec.idle_power_watts + self._dynamic_watts(), self.spec.power_limit_watts
        )

    def demand_watts(self, t: float) -> float:
        return self.spec.idle_power_watts + self._dynamic_watts() * self.load.load(t)

    def power_watts(self, t: float) -> float:
        return self.power.draw_watts(t)

    def capped_ratio(self, t: float) -> float:
        """Dynamic power the cap allows over what the load asks: 1 when the cap does not bite."""
        idle, demand = self.spec.idle_power_watts, self.demand_watts(t)
        if demand <= idle:
            return 1.0
        return max(0.0, min(1.0, (self.power_watts(t) - idle) / (demand - idle)))

    def temperature_celsius(self, t: float) -> float:
        heat = (self.power_watts(t) - self.spec.idle_power_watts) / self._dynamic_watts()
        return _AMBIENT_CELSIUS + self.spec.cooling_offset_celsius + _LOAD_HEATING_CELSIUS * heat

    def energy_joules(self, t: float) -> float:
        demanded = self.spec.idle_power_watts * t + self._dynamic_watts() * self.load.integral(t)
        return demanded - self.power.advance(t)

    def _dynamic_watts(self) -> float:
        return 0.95 * self.spec.power_limit_watts - self.spec.idle_power_watts


# GPM metric -> percent of the load (a busy H100 keeps SMs ~90% active, tensor pipes less).
_GPM_SHARES = {
    pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL: 100.0,
    pynvml.NVML_GPM_METRIC_SM_UTIL: 90.0,
    pynvml.NVML_GPM_METRIC_SM_OCCUPANCY: 45.0,
    pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL: 70.0,
    pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL: 55.0,
}


@dataclass(frozen=True, slots=True)
class _GpmTaken:
    """What a filled GPM sample holds: whose it is, when, and the load-seconds so far."""

    gpu: int
    gpu_instance_id: int | None
    t: float
    load_seconds: float


@dataclass
class _EventSet:
    gpus: set[int] = field(default_factory=set)
    pending: deque[tuple[int, int]] = field(default_factory=deque)
    ready: threading.Condition = field(default_factory=threading.Condition)


@dataclass(slots=True)
class _EventData:
    device: object
    eventType: int
    eventData: int


def _address(sample: object) -> int:
    """A GPM sample pointer's target address, which names the sample."""
    try:
        return int(ctypes.cast(sample, ctypes.c_void_p).value or 0)  # type: ignore[arg-type]
    except ctypes.ArgumentError as exc:
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT) from exc


def _instance_wave(gpu: _SimGpu, slot: int) -> Demand:
    """A MIG instance's own load: its GPU's wave shifted, so instances differ; a GPU on another
    demand trace lends its instances that trace."""
    load = gpu.load
    if not isinstance(load, Wave):
        return load
    return Wave(load.period_seconds, load.phase + 1.3 * (slot + 1), load.mean, load.swing)


def _process_samples(
    processes: Sequence[SimProcess], load: float, stamp: int
) -> list[pynvml.c_nvmlProcessUtilizationSample_t]:
    """One period's samples: NVML keeps one only for a process that used the GPU in it."""
    samples = []
    for process in processes:
        sm = round(100 * process.sm_share * load)
        if sm == 0:
            continue
        sample = pynvml.c_nvmlProcessUtilizationSample_t()
        sample.pid, sample.timeStamp, sample.smUtil = process.pid, stamp, sm
        sample.memUtil = round(100 * _PROCESS_MEMORY_UTIL_SHARE * process.sm_share * load)
        samples.append(sample)
    return samples


def _as_handle(handle: object) -> _Handle:
    if not isinstance(handle, _Handle):
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    return handle


def _as_event_set(event_set: object) -> _EventSet:
    if not isinstance(event_set, _EventSet):
        raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
    return event_set


def _build_gpus(profile: SimProfile) -> list[_SimGpu]:
    gpus = []
    for index, spec in enumerate(profile.expanded()):
        rng = random.Random(f"{profile.seed}:{index}")
        bus = _PCI_BUSES[index] if index < len(_PCI_BUSES) else 0x100 + index
        gpus.append(
            _SimGpu(
                index=index,
                spec=spec,
                uuid=f"GPU-{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                serial=str(1650123000000 + profile.seed * 1000 + index),
                pci_bus_id=f"00000000:{bus:02X}:00.0",
                mig_uuids=tuple(
                    f"MIG-{uuid.UUID(int=rng.getrandbits(128), version=4)}" for _ in spec.mig_instances
                ),
                load=_demand(spec, rng.uniform(0, 2 * math.pi)),
                memory=Wave(spec.load_period_seconds * 5, rng.uniform(0, 2 * math.pi)),
                energy_at_start_millijoules=rng.randrange(10**6, 10**9),
            )
        )
    return gpus


def _counting(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @wraps(function)
    def counted(self: FakeNvml, *args: Any, **kwargs: Any) -> Any:
        gpu = self._gpu_of_call(args[0] if args else None)
        with self._calls_lock:
            self._calls[(gpu, name)] += 1
        return function(self, *args, **kwargs)

    return counted


def _count_nvml_calls(cls: type[_T]) -> type[_T]:
    """Counts every NVML function call by (GPU index or None, function name), as a bench reads them."""
    for name, function in list(vars(cls).items()):
        if name.startswith("nvml") and callable(function):
            setattr(cls, name, _counting(name, function))
    return cls


@_count_nvml_calls
class FakeNvml:
    """pynvml's functions over a simulated server; thread-safe like NVML for the calls made here."""

    def __init__(self, profile: SimProfile, clock: Callable[[], float] = time.monotonic) -> None:
        self._profile = profile
        self._clock = clock
        self._started = clock()
        self._gpus = _build_gpus(profile)
        self._driver = DriverState(profile.driver_state_path)
        for gpu in self._gpus:
            kept = self._driver.limit_milliwatts(gpu.uuid)
            if kept is not None:  # set by an earlier process; the driver kept it
                gpu.power.limit_watts = kept / 1000
        self._failed: set[int] = set()
        self._event_sets: list[_EventSet] = []
        self._initialised = False
        self._epoch_us = int(time.time() * 1e6)  # process samples carry CPU time in microseconds
        self._power_lock = threading.Lock()  # the collector and the capping controller both ask
        self._calls: Counter[tuple[int | None, str]] = Counter()
        self._calls_lock = threading.Lock()
        # GPM samples by address: the struct kept alive, and what was taken into it (None: not yet).
        self._gpm_samples: dict[int, tuple[object, _GpmTaken | None]] = {}

    # Test, bench and demo hooks: not part of NVML.
    def call_counts(self) -> Counter[tuple[int | None, str]]:
        """NVML calls so far by (GPU index, function); None for calls naming no GPU handle."""
        with self._calls_lock:
            return Counter(self._calls)

    def fail_gpu(self, index: int) -> None:
        """From now on, every call on this GPU raises GPU_IS_LOST."""
        self._failed.add(index)

    def inject_xid(self, index: int, xid: int) -> None:
        """Deliver an XID critical error for this GPU to every event set registered for it."""
        for event_set in self._event_sets:
            with event_set.ready:
                if index in event_set.gpus:
                    event_set.pending.append((index, xid))
                    event_set.ready.notify_all()

    # Library.
    def nvmlInit(self) -> None:
        self._initialised = True

    def nvmlShutdown(self) -> None:
        self._initialised = False

    def nvmlSystemGetDriverVersion(self) -> str:
        self._check_init()
        return self._profile.driver_version

    def nvmlDeviceGetCount(self) -> int:
        self._check_init()
        return len(self._gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> _Handle:
        self._check_init()
        if not 0 <= index < len(self._gpus):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return _Handle(index)

    # Identity.
    def nvmlDeviceGetUUID(self, handle: object) -> str:
        gpu, slot = self._gpu(handle), _as_handle(handle).mig_slot
        return gpu.uuid if slot is None else gpu.mig_uuids[slot]

    def nvmlDeviceGetName(self, handle: object) -> str:
        gpu, slot = self._gpu(handle), _as_handle(handle).mig_slot
        return (
            gpu.spec.model if slot is None else f"{gpu.spec.model} MIG {gpu.spec.mig_instances[slot].profile}"
        )

    def nvmlDeviceGetSerial(self, handle: object) -> str:
        return self._whole(handle).serial

    def nvmlDeviceGetPciInfo(self, handle: object) -> pynvml.nvmlPciInfo_t:
        info = pynvml.nvmlPciInfo_t()
        info.busId = self._whole(handle).pci_bus_id
        return info

    def nvmlDeviceGetMigMode(self, handle: object) -> list[int]:
        mode = pynvml.NVML_DEVICE_MIG_ENABLE if self._whole(handle).spec.mig_instances else 0
        return [mode, mode]

    # Readings.
    def nvmlDeviceGetUtilizationRates(self, handle: object) -> pynvml.c_nvmlUtilization_t:
        gpu = self._whole(handle)
        if gpu.spec.mig_instances:  # as on real GPUs in MIG mode
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        utilization = pynvml.c_nvmlUtilization_t()
        utilization.gpu = round(100 * gpu.load.load(self._elapsed()))
        utilization.memory = round(60 * gpu.load.load(self._elapsed()))
        return utilization

    def nvmlDeviceGetMemoryInfo(self, handle: object, version: int | None = None) -> pynvml.c_nvmlMemory_t:
        gpu, slot = self._gpu(handle), _as_handle(handle).mig_slot
        t = self._elapsed()
        if slot is None:
            total = gpu.spec.memory_total_bytes
            used = int(total * (0.1 + 0.7 * gpu.memory.load(t)))
        else:
            total = gpu.spec.mig_instances[slot].memory_total_bytes
            used = int(total * (0.2 + 0.6 * gpu.memory.load(t + 60 * (slot + 1))))
        used = max(used, sum(p.memory_used_bytes or 0 for p in self._processes(gpu, slot)))
        reserved = int(total * _RESERVED_MEMORY_SHARE) if slot is None else 0
        if version is None:  # v1 counts the driver's reservation as used
            info = pynvml.c_nvmlMemory_t()
            info.total, info.used, info.free = total, used + reserved, total - used - reserved
            return info
        info = pynvml.c_nvmlMemory_v2_t()
        info.total, info.used, info.reserved, info.free = total, used, reserved, total - used - reserved
        return info

    def nvmlDeviceGetTemperature(self, handle: object, sensor: int) -> int:
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return round(self._whole(handle).temperature_celsius(self._elapsed()))

    def nvmlDeviceGetPowerUsage(self, handle: object) -> int:
        return round(1000 * self._whole(handle).power_watts(self._elapsed()))

    def nvmlDeviceGetEnforcedPowerLimit(self, handle: object) -> int:
        return round(1000 * self._whole(handle).power.limit_watts)

    # Power management: limits in mW, as NVML has them.
    def nvmlDeviceGetPowerManagementLimit(self, handle: object) -> int:
        return round(1000 * self._managed(handle).power.limit_watts)

    def nvmlDeviceGetPowerManagementDefaultLimit(self, handle: object) -> int:
        return round(1000 * self._managed(handle).spec.power_limit_watts)

    def nvmlDeviceGetPowerManagementLimitConstraints(self, handle: object) -> list[int]:
        low, high = self._managed(handle).spec.limit_range_watts
        return [round(1000 * low), round(1000 * high)]

    def nvmlDeviceSetPowerManagementLimit(self, handle: object, limit: int) -> None:
        gpu = self._managed(handle)
        if gpu.spec.power_limit_control == "no_permission":
            raise _error(pynvml.NVML_ERROR_NO_PERMISSION)
        low, high = gpu.spec.limit_range_watts
        if not round(1000 * low) <= limit <= round(1000 * high):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        with self._power_lock:
            gpu.power.set_limit(self._elapsed(), limit / 1000)
        self._driver.record(gpu.uuid, limit)

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: object) -> int:
        gpu = self._whole(handle)
        if not gpu.spec.energy_counter:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        with self._power_lock:
            joules = gpu.energy_joules(self._elapsed())
        return gpu.energy_at_start_millijoules + round(1000 * joules)

    def nvmlDeviceGetClockInfo(self, handle: object, type: int) -> int:
        gpu = self._whole(handle)
        spec = gpu.spec
        if type == pynvml.NVML_CLOCK_MEM:
            return spec.memory_clock_mhz
        if type not in (pynvml.NVML_CLOCK_GRAPHICS, pynvml.NVML_CLOCK_SM):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        t = self._elapsed()
        load = gpu.load.load(t)
        if load < _IDLE_LOAD:
            return spec.idle_sm_clock_mhz
        if gpu.capped_ratio(t) < 1.0:  # a power limit below demand: the controller lowers the clock
            scale: float = gpu.capped_ratio(t) ** _CAPPED_CLOCK_EXPONENT
            return max(spec.idle_sm_clock_mhz, round(spec.max_sm_clock_mhz * scale))
        return round(spec.max_sm_clock_mhz * (0.9 if load > _POWER_CAP_LOAD else 1.0))

    def nvmlDeviceGetFanSpeed(self, handle: object) -> int:
        gpu = self._whole(handle)
        if not gpu.spec.has_fan:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return round(30 + 60 * gpu.load.load(self._elapsed()))

    def nvmlDeviceGetPerformanceState(self, handle: object) -> int:
        return 0 if self._whole(handle).load.load(self._elapsed()) >= _IDLE_LOAD else 8

    def nvmlDeviceGetCurrentClocksEventReasons(self, handle: object) -> int:
        return self._clock_event_reasons(handle)

    def nvmlDeviceGetCurrentClocksThrottleReasons(self, handle: object) -> int:
        return self._clock_event_reasons(handle)

    def nvmlDeviceGetTotalEccErrors(self, handle: object, errorType: int, counterType: int) -> int:
        gpu = self._whole(handle)
        if errorType == pynvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED:
            return 0
        return math.floor(gpu.spec.ecc_corrected_errors_per_hour * self._elapsed() / 3600)

    def nvmlDeviceGetPcieThroughput(self, device: object, counter: int) -> int:
        gpu = self._whole(device)
        time.sleep(_PCIE_SAMPLE_WINDOW_SECONDS)  # the driver samples over a window before answering
        share = 0.6 if counter == pynvml.NVML_PCIE_UTIL_RX_BYTES else 0.4
        return round(share * gpu.spec.pcie_bytes_per_second * gpu.load.load(self._elapsed()) / 1024)

    def nvmlDeviceGetNvLinkState(self, device: object, link: int) -> int:
        if not 0 <= link < self._whole(device).spec.nvlink_links:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return int(pynvml.NVML_FEATURE_ENABLED)

    def nvmlDeviceGetFieldValues(
        self, handle: object, fieldIds: Sequence[int | tuple[int, int]]
    ) -> pynvml.c_nvmlFieldValue_t:
        """Every field answers on its own (nvmlReturn per value), with NVML's value type and units."""
        gpu = self._whole(handle)
        t = self._elapsed()
        values = (pynvml.c_nvmlFieldValue_t * len(fieldIds))()
        for value, wanted in zip(values, fieldIds, strict=True):
            field_id, scope = wanted if isinstance(wanted, tuple) else (wanted, 0)
            value.fieldId, value.scopeId = field_id, scope
            value.timestamp = int(time.time() * 1e6)  # NVML stamps values in microseconds
            reading = self._field_value(gpu, field_id, scope, t)
            if reading is None:
                value.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED
                continue
            value.nvmlReturn = pynvml.NVML_SUCCESS
            value.valueType, number = reading
            if value.valueType == pynvml.NVML_VALUE_TYPE_UNSIGNED_INT:
                value.value.uiVal = number
            else:
                value.value.ullVal = number
        return values

    # MIG.
    def nvmlDeviceGetMaxMigDeviceCount(self, device: object) -> int:
        self._whole(device)
        return MAX_MIG_DEVICES

    def nvmlDeviceGetMigDeviceHandleByIndex(self, device: object, index: int) -> _Handle:
        gpu = self._whole(device)
        if not 0 <= index < MAX_MIG_DEVICES:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        if index >= len(gpu.spec.mig_instances):
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return _Handle(gpu.index, index)

    def nvmlDeviceGetGpuInstanceId(self, device: object) -> int:
        return self._mig(device).gpu_instance_id

    def nvmlDeviceGetComputeInstanceId(self, device: object) -> int:
        return self._mig(device).compute_instance_id

    def nvmlDeviceGetAttributes(self, device: object) -> pynvml.c_nvmlDeviceAttributes:
        mig = self._mig(device)
        compute, _, rest = mig.profile.rpartition("c.")
        attributes = pynvml.c_nvmlDeviceAttributes()
        attributes.multiprocessorCount = mig.sm_count
        attributes.gpuInstanceSliceCount = int(rest.split("g.")[0])
        attributes.computeInstanceSliceCount = int(compute) if compute else attributes.gpuInstanceSliceCount
        attributes.memorySizeMB = mig.memory_total_bytes // 2**20
        return attributes

    # GPM (Hopper and later).
    def nvmlGpmQueryDeviceSupport(self, device: object) -> pynvml.c_nvmlGpmSupport_t:
        support = pynvml.c_nvmlGpmSupport_t()
        support.version = pynvml.NVML_GPM_SUPPORT_VERSION
        support.isSupportedDevice = int(self._whole(device).spec.gpm)
        return support

    def nvmlGpmSampleAlloc(self) -> pynvml.c_nvmlGpmSample_t:
        self._check_init()
        target = pynvml.struct_c_nvmlGpmSample_t()
        sample = pynvml.c_nvmlGpmSample_t(target)
        self._gpm_samples[_address(sample)] = (target, None)
        return sample

    def nvmlGpmSampleFree(self, gpmSample: object) -> None:
        self._gpm_samples.pop(self._gpm_address(gpmSample))

    def nvmlGpmSampleGet(self, device: object, gpmSample: object) -> object:
        gpu = self._whole(device)
        return self._take_gpm(gpu, None, gpu.load, gpmSample)

    def nvmlGpmMigSampleGet(self, device: object, gpuInstanceId: int, gpmSample: object) -> object:
        gpu = self._whole(device)
        slots = [m.gpu_instance_id for m in gpu.spec.mig_instances]
        if gpuInstanceId not in slots:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._take_gpm(gpu, gpuInstanceId, _instance_wave(gpu, slots.index(gpuInstanceId)), gpmSample)

    def nvmlGpmMetricsGet(self, metricsGet: pynvml.c_nvmlGpmMetricsGet_t) -> pynvml.c_nvmlGpmMetricsGet_t:
        self._check_init()
        if metricsGet.version != pynvml.NVML_GPM_METRICS_GET_VERSION:
            raise _error(pynvml.NVML_ERROR_ARGUMENT_VERSION_MISMATCH)
        first = self._gpm_samples.get(self._gpm_address(metricsGet.sample1), (None, None))[1]
        second = self._gpm_samples.get(self._gpm_address(metricsGet.sample2), (None, None))[1]
        if first is None or second is None or second.t <= first.t:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)  # unfilled, out of order or the same
        if (first.gpu, first.gpu_instance_id) != (second.gpu, second.gpu_instance_id):
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        busy = (second.load_seconds - first.load_seconds) / (second.t - first.t)
        for slot in range(metricsGet.numMetrics):
            metric = metricsGet.metrics[slot]
            share = _GPM_SHARES.get(metric.metricId)
            metric.nvmlReturn = pynvml.NVML_ERROR_NOT_SUPPORTED if share is None else pynvml.NVML_SUCCESS
            metric.value = 0.0 if share is None else share * busy
        return metricsGet

    # Processes.
    def nvmlDeviceGetComputeRunningProcesses(self, handle: object) -> list[Any]:
        """pynvml's friendly objects; on a GPU in MIG mode, its MIG devices' processes together."""
        gpu = self._gpu(handle)
        return [
            self._process_info(gpu, process) for process in self._processes(gpu, _as_handle(handle).mig_slot)
        ]

    def nvmlDeviceGetComputeRunningProcesses_v2(self, handle: object) -> list[Any]:
        """What drivers before the v3 call answer: the same fields."""
        gpu = self._gpu(handle)
        return [
            self._process_info(gpu, process) for process in self._processes(gpu, _as_handle(handle).mig_slot)
        ]

    def nvmlDeviceGetProcessUtilization(
        self, handle: object, timeStamp: int
    ) -> list[pynvml.c_nvmlProcessUtilizationSample_t]:
        """The buffered samples newer than timeStamp, one per process that used the GPU in a period."""
        gpu = self._whole(handle)
        if gpu.spec.mig_instances or not gpu.spec.process_utilization:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        newest = math.floor(self._elapsed() / _PROCESS_SAMPLE_PERIOD_SECONDS)
        samples = []
        for period in range(max(0, newest - _PROCESS_SAMPLE_BUFFER + 1), newest + 1):
            t = period * _PROCESS_SAMPLE_PERIOD_SECONDS
            stamp = self._epoch_us + round(t * 1e6)
            if stamp > timeStamp:
                samples += _process_samples(self._processes(gpu, None), gpu.load.load(t), stamp)
        if not samples:
            raise _error(pynvml.NVML_ERROR_NOT_FOUND)
        return samples

    # Events.
    def nvmlEventSetCreate(self) -> _EventSet:
        self._check_init()
        event_set = _EventSet()
        self._event_sets.append(event_set)
        return event_set

    def nvmlDeviceRegisterEvents(self, handle: object, eventTypes: int, eventSet: object) -> None:
        gpu, event_set = self._whole(handle), _as_event_set(eventSet)
        if eventTypes & ~pynvml.nvmlEventTypeXidCriticalError:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)  # only XID events are simulated
        with event_set.ready:
            event_set.gpus.add(gpu.index)

    def nvmlEventSetWait(self, eventSet: object, timeoutms: int) -> _EventData:
        event_set = _as_event_set(eventSet)
        with event_set.ready:
            if not event_set.ready.wait_for(lambda: bool(event_set.pending), timeoutms / 1000):
                raise _error(pynvml.NVML_ERROR_TIMEOUT)
            index, xid = event_set.pending.popleft()
        return _EventData(_Handle(index), pynvml.nvmlEventTypeXidCriticalError, xid)

    def nvmlEventSetFree(self, eventSet: object) -> None:
        self._event_sets.remove(_as_event_set(eventSet))

    # Helpers.
    def _gpu_of_call(self, target: object) -> int | None:
        """The GPU a call is about, for call counts: its handle's, or its GPM samples'."""
        if isinstance(target, _Handle):
            return target.gpu
        if isinstance(target, pynvml.c_nvmlGpmMetricsGet_t):
            taken = self._gpm_samples.get(_address(target.sample2), (None, None))[1]
            return None if taken is None else taken.gpu
        return None

    def _gpm_address(self, sample: object) -> int:
        address = _address(sample)
        if address not in self._gpm_samples:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return address

    def _take_gpm(self, gpu: _SimGpu, gpu_instance_id: int | None, wave: Demand, sample: object) -> object:
        if not gpu.spec.gpm:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        address = self._gpm_address(sample)
        t = self._elapsed()
        taken = _GpmTaken(gpu.index, gpu_instance_id, t, wave.integral(t))
        self._gpm_samples[address] = (self._gpm_samples[address][0], taken)
        return sample

    def _elapsed(self) -> float:
        return self._clock() - self._started

    def _check_init(self) -> None:
        if not self._initialised:
            raise _error(pynvml.NVML_ERROR_UNINITIALIZED)

    def _gpu(self, handle: object) -> _SimGpu:
        """The GPU behind a handle, or the error a lost GPU gives."""
        self._check_init()
        gpu = self._gpus[_as_handle(handle).gpu]
        fail_after = gpu.spec.fail_after_seconds
        if gpu.index in self._failed or (fail_after is not None and self._elapsed() >= fail_after):
            raise _error(pynvml.NVML_ERROR_GPU_IS_LOST)
        return gpu

    def _whole(self, handle: object) -> _SimGpu:
        """A whole-GPU handle's GPU; MIG device handles do not answer GPU-wide queries."""
        gpu = self._gpu(handle)
        if _as_handle(handle).mig_slot is not None:
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _managed(self, handle: object) -> _SimGpu:
        """A GPU whose power management answers; boards without it say NOT_SUPPORTED."""
        gpu = self._whole(handle)
        if gpu.spec.power_limit_control == "not_supported":
            raise _error(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return gpu

    def _mig(self, handle: object) -> SimMigInstance:
        gpu, slot = self._gpu(handle), _as_handle(handle).mig_slot
        if slot is None:
            raise _error(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.spec.mig_instances[slot]

    def _processes(self, gpu: _SimGpu, slot: int | None) -> list[SimProcess]:
        """The processes on a GPU (all of them, for a GPU in MIG mode) or on one of its MIG devices."""
        on_gpu = [p for p in self._profile.processes if p.gpu == gpu.index]
        if slot is None:
            return on_gpu
        instance = gpu.spec.mig_instances[slot].gpu_instance_id
        return [p for p in on_gpu if p.gpu_instance_id == instance]

    def _process_info(self, gpu: _SimGpu, process: SimProcess) -> Any:
        info = pynvml.c_nvmlProcessInfo_t()
        info.pid = process.pid
        if process.memory_used_bytes is None:
            info.usedGpuMemory = pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value
        else:
            info.usedGpuMemory = process.memory_used_bytes
        instances = {m.gpu_instance_id: m for m in gpu.spec.mig_instances}
        mig = instances.get(process.gpu_instance_id) if process.gpu_instance_id is not None else None
        info.gpuInstanceId = _NO_INSTANCE_ID if mig is None else mig.gpu_instance_id
        info.computeInstanceId = _NO_INSTANCE_ID if mig is None else mig.compute_instance_id
        friendly = pynvml.nvmlStructToFriendlyObject(info)
        if friendly.usedGpuMemory == pynvml.NVML_VALUE_NOT_AVAILABLE_ulonglong.value:
            friendly.usedGpuMemory = None  # as pynvml's own wrapper does
        return friendly

    def _clock_event_reasons(self, handle: object) -> int:
        gpu = self._whole(handle)
        load = gpu.load.load(self._elapsed())
        if load < _IDLE_LOAD:
            return int(pynvml.nvmlClocksEventReasonGpuIdle)
        capped = load > _POWER_CAP_LOAD or gpu.capped_ratio(self._elapsed()) < 1.0
        reasons = int(pynvml.nvmlClocksEventReasonSwPowerCap) if capped else 0
        if gpu.temperature_celsius(self._elapsed()) >= gpu.spec.thermal_slowdown_celsius:
            reasons |= int(pynvml.nvmlClocksEventReasonSwThermalSlowdown)
            reasons |= int(pynvml.nvmlClocksEventReasonHwThermalSlowdown)
        return reasons

    def _field_value(self, gpu: _SimGpu, field_id: int, scope: int, t: float) -> tuple[int, int] | None:
        """(NVML value type, value) of a field, or None for NOT_SUPPORTED."""
        spec = gpu.spec
        if field_id in _POWER_FIELDS:
            return self._power_field(gpu, field_id, scope, t)
        readers: dict[int, Callable[[], tuple[int, int] | None]] = {
            pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION: lambda: (
                (_ULL, gpu.energy_at_start_millijoules + round(1000 * gpu.energy_joules(t)))
                if spec.energy_counter
                else None
            ),
            pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL: lambda: (
                _ULL,
                math.floor(spec.ecc_corrected_errors_per_hour * t / 3600),
            ),
            pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL: lambda: (_ULL, 0),
            pynvml.NVML_FI_DEV_MEMORY_TEMP: lambda: (
                (_UINT, round(gpu.temperature_celsius(t) + _HBM_OVER_DIE_CELSIUS))
                if spec.memory_temperature
                else None
            ),
            pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER: lambda: (_UINT, 0),
        }
        if field_id in readers:
            return readers[field_id]()
        if field_id in _NVLINK_ERROR_TOTALS:
            return (_ULL, 0) if spec.nvlink_links else None
        return self._memory_health_or_nvlink(gpu, field_id, scope, t)

    def _power_field(self, gpu: _SimGpu, field_id: int, scope: int, t: float) -> tuple[int, int] | None:
        """Power fields are scoped by power domain; only the GPU's is modelled. mW, unsigned int."""
        if scope != pynvml.NVML_POWER_SCOPE_GPU:
            return None
        if field_id == pynvml.NVML_FI_DEV_POWER_AVERAGE and not gpu.spec.power_average_field:
            return None
        return _UINT, round(1000 * self._power_field_watts(gpu, field_id, t))

    def _power_field_watts(self, gpu: _SimGpu, field_id: int, t: float) -> float:
        spec = gpu.spec
        if field_id in (pynvml.NVML_FI_DEV_POWER_AVERAGE, pynvml.NVML_FI_DEV_POWER_INSTANT):
            return gpu.power_watts(t)
        low, high = spec.limit_range_watts
        if field_id == pynvml.NVML_FI_DEV_POWER_MIN_LIMIT:
            return low
        if field_id == pynvml.NVML_FI_DEV_POWER_MAX_LIMIT:
            return high
        if field_id in (pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT, pynvml.NVML_FI_DEV_POWER_REQUESTED_LIMIT):
            return gpu.power.limit_watts  # what a capper set, as the limit calls answer
        return spec.power_limit_watts  # the default

    def _memory_health_or_nvlink(
        self, gpu: _SimGpu, field_id: int, scope: int, t: float
    ) -> tuple[int, int] | None:
        spec = gpu.spec
        if field_id in _REMAPPED_FIELDS:
            return (_UINT, 0) if spec.remapped_rows else None
        if field_id in _RETIRED_FIELDS:
            return (_ULL, 0) if spec.retired_pages else None
        if field_id == pynvml.NVML_FI_DEV_NVLINK_LINK_COUNT:
            return (_UINT, spec.nvlink_links) if spec.nvlink_links else None
        if field_id in _NVLINK_THROUGHPUT and scope < spec.nvlink_links:
            share = 1.0 if field_id == pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX else 0.9
            kib = (
                share
                * (1 - 0.01 * scope)
                * spec.nvlink_bytes_per_second_per_link
                * gpu.load.integral(t)
                / 1024
            )
            return _ULL, round(kib)
        return None
