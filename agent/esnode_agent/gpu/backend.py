"""What the GPU collector needs from a GPU library, in esnode's terms: readings in base units.

A backend is chosen once (see ``backends``): NVML, NVML simulated from a profile, or the null
backend when no GPU library can be opened. A field the device does not support is ``None`` (or
missing from a mapping) in a reading, never a made-up zero.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

# Throttle (clock event) reasons, named as the metric's `reason` label values.
THROTTLE_REASONS = (
    "idle",
    "applications_clocks_setting",
    "power",
    "hw_slowdown",
    "sync_boost",
    "sw_thermal",
    "thermal",
    "power_brake",
    "display_clocks",
)
CLOCKS = ("graphics", "sm", "memory")


class GpuLostError(Exception):
    """The GPU stopped answering (lost from the bus, needs a reset): none of its fields can be read."""


class EventsUnsupportedError(Exception):
    """No visible GPU can deliver XID events."""


# Power limits (opt-in capping, esnode_agent.capping): why a GPU refuses to have its limit set.
REFUSED_NO_PERMISSION = "no_permission"
REFUSED_NOT_SUPPORTED = "not_supported"
REFUSED_OUT_OF_RANGE = "out_of_range"
REFUSED_GPU_LOST = "gpu_lost"
REFUSED_OTHER = "error"


class PowerLimitError(Exception):
    """The GPU refused to read or set its power limit; ``reason`` is one of the REFUSED_ values."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class PowerLimits:
    """A GPU's power management limits, in watts."""

    min_watts: float
    max_watts: float
    default_watts: float
    current_watts: float


@dataclass(frozen=True, slots=True)
class GpuIdentity:
    """What names a GPU; read once when the backend opens."""

    index: int
    uuid: str
    model: str
    pci_bus_id: str
    serial: str | None


@dataclass(frozen=True, slots=True)
class NvlinkCounters:
    link: int
    rx_bytes_total: float
    tx_bytes_total: float


@dataclass(frozen=True, slots=True)
class GpuReading:
    """One cycle's values for one GPU; ``None`` or an absent key where the GPU lacks the field."""

    mig_mode_enabled: bool | None = None
    utilization_percent: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    power_limit_watts: float | None = None
    energy_joules_total: float | None = None
    fan_speed_ratio: float | None = None
    performance_state: int | None = None
    clock_hertz: Mapping[str, float] = field(default_factory=dict)  # CLOCKS -> Hz
    throttle_reasons: Mapping[str, bool] = field(default_factory=dict)  # THROTTLE_REASONS -> active
    ecc_errors_total: Mapping[str, float] = field(default_factory=dict)  # corrected, uncorrected
    pcie_bytes_per_second: Mapping[str, float] = field(default_factory=dict)  # rx, tx
    nvlink: tuple[NvlinkCounters, ...] = ()
    retired_pages: Mapping[str, float] = field(default_factory=dict)  # single_bit_ecc, double_bit_ecc
    retired_pages_pending: bool | None = None
    remapped_rows: Mapping[str, float] = field(default_factory=dict)  # corrected, uncorrected
    remapped_rows_pending: bool | None = None
    remapped_rows_failed: bool | None = None
    # Read in the same NVML calls as the fields above (the field-value batch, memory, utilization).
    memory_utilization_percent: float | None = None  # utilization.memory: time memory was read or written
    memory_free_bytes: float | None = None
    memory_reserved_bytes: float | None = None  # the driver's; absent where only v1 memory info exists
    memory_temperature_celsius: float | None = None
    power_limit_min_watts: float | None = None
    power_limit_max_watts: float | None = None
    power_limit_default_watts: float | None = None
    pcie_replays_total: float | None = None
    nvlink_errors_total: Mapping[str, float] = field(default_factory=dict)  # crc, replay, recovery
    # GPM (Hopper and later), over the last cycle: graphics_engine, sm, sm_occupancy, tensor, dram.
    activity_ratio: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class MigReading:
    """One MIG device (a compute instance inside a GPU instance) and its memory."""

    uuid: str
    gpu_instance_id: int
    compute_instance_id: int
    profile: str  # as the device plugin names it: 3g.40gb, 1g.10gb+me, 1c.3g.40gb
    sm_count: int | None
    memory_used_bytes: float | None
    memory_total_bytes: float | None
    activity_ratio: Mapping[str, float] = field(default_factory=dict)  # its GPU instance's GPM ratios


@dataclass(frozen=True, slots=True)
class GpuProcess:
    """A process with a compute context on a GPU or MIG device (NVML's compute running processes)."""

    pid: int  # in the host's PID namespace, as the driver reports it
    memory_used_bytes: float | None  # None where NVML cannot say (NVML_VALUE_NOT_AVAILABLE)
    mig_uuid: str = ""  # the MIG device it runs on; empty on a whole GPU
    # Means of NVML's process samples since the last cycle (0 without one); None where unsupported.
    sm_utilization_ratio: float | None = None
    memory_utilization_ratio: float | None = None


@dataclass(frozen=True, slots=True)
class XidEvent:
    gpu_uuid: str
    xid: int


class GpuDevice(Protocol):
    @property
    def identity(self) -> GpuIdentity: ...

    def read(self) -> GpuReading:
        """This cycle's values; raises GpuLostError when the GPU does not answer at all."""
        ...

    def mig_instances(self) -> list[MigReading]:
        """The MIG devices configured now (empty when MIG mode is off); raises GpuLostError."""
        ...

    def processes(self, migs: Sequence[MigReading]) -> list[GpuProcess]:
        """Compute processes on the GPU, or in MIG mode on these MIG devices; raises GpuLostError."""
        ...


class XidEventSource(Protocol):
    def wait(self, timeout_seconds: float) -> XidEvent | None:
        """The next XID event, or None when none arrived within the timeout."""
        ...

    def close(self) -> None: ...


class GpuBackend(Protocol):
    @property
    def unavailable_reason(self) -> str | None:
        """Why there are no GPUs to read (no library, init failed); None for a working backend."""
        ...

    @property
    def driver_version(self) -> str: ...

    def devices(self) -> Sequence[GpuDevice]: ...

    def xid_events(self, devices: Sequence[GpuDevice]) -> XidEventSource:
        """An event source for these devices; raises EventsUnsupportedError when none can deliver."""
        ...

    def close(self) -> None: ...


class NullBackend:
    """No usable GPU library: no devices, and the reason, for /status.

    ``library_missing`` means no NVIDIA driver is installed at all (a CPU-only node), as opposed
    to a driver that is there but failed, which is a fault worth reporting.
    """

    def __init__(self, reason: str, library_missing: bool = False) -> None:
        self._reason = reason
        self.library_missing = library_missing

    @property
    def unavailable_reason(self) -> str | None:
        return self._reason

    @property
    def driver_version(self) -> str:
        return ""

    def devices(self) -> Sequence[GpuDevice]:
        return ()

    def xid_events(self, devices: Sequence[GpuDevice]) -> XidEventSource:
        raise EventsUnsupportedError(self._reason)

    def close(self) -> None:
        return None
