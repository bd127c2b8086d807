"""CPU package, DRAM and platform energy from the kernel's RAPL powercap zones.

Zones live under ``<sysfs>/class/powercap/intel-rapl:N`` (package or platform) and
``intel-rapl:N:M`` (subzones of package N: core, uncore, dram). AMD processors are served by
the same driver and appear under the same names. ``energy_uj`` wraps at
``max_energy_range_uj``; each zone keeps a wraparound-corrected running total here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from esnode_agent.collectors.procfs import parse_count
from esnode_agent.cycle.collector import STAGE_READ, NoDataError
from esnode_agent.cycle.samples import SampleSink, counter, gauge

MICROJOULES_PER_JOULE = 1_000_000

PACKAGE_POWER = gauge(
    "esnode_cpu_package_power_watts",
    "CPU package power from RAPL energy deltas over the last collection interval.",
    "package",
)
PACKAGE_ENERGY = counter(
    "esnode_cpu_package_energy_joules_total",
    "CPU package energy from RAPL, corrected for counter wraparound, since the agent started.",
    "package",
)
DRAM_ENERGY = counter(
    "esnode_cpu_dram_energy_joules_total",
    "DRAM energy from the RAPL dram subzone of a package, wraparound-corrected, since the agent started.",
    "package",
)
PLATFORM_ENERGY = counter(
    "esnode_platform_energy_joules_total",
    "Platform (RAPL psys) energy: the whole SoC platform on client parts, wraparound-corrected, "
    "since the agent started.",
)

log = logging.getLogger(__name__)

# Top-level zones and their subzones; "intel-rapl-mmio:N" duplicates a package and is skipped.
_ZONE_DIR = re.compile(r"^intel-rapl:(\d+)(?::(\d+))?$")
_PERMISSION_FIX = (
    "RAPL energy is readable by root only since the 2020 hardening (CVE-2020-8694); "
    "run the agent as root (uid 0; in Kubernetes a privileged DaemonSet)"
)


class ZoneKind(StrEnum):
    PACKAGE = "package"
    DRAM = "dram"
    PLATFORM = "platform"


@dataclass(frozen=True, slots=True)
class RaplZone:
    path: Path
    kind: ZoneKind
    package: str  # label value; empty for the platform zone


@dataclass(slots=True)
class _ZoneState:
    raw_uj: int
    total_joules: float
    seconds: float


@dataclass(frozen=True, slots=True)
class EnergyReading:
    total_joules: float  # since the zone was first seen
    delta_joules: float | None  # since the previous reading; None on the first
    elapsed_seconds: float | None

    @property
    def power_watts(self) -> float | None:
        if self.delta_joules is None or self.elapsed_seconds is None or self.elapsed_seconds <= 0:
            return None
        return self.delta_joules / self.elapsed_seconds


class WrappingEnergyCounter:
    """Running totals of counters that restart from 0 after ``max_uj``, keyed by zone path."""

    def __init__(self) -> None:
        self._states: dict[Path, _ZoneState] = {}

    def update(self, zone: Path, raw_uj: int, max_uj: int, now_seconds: float) -> EnergyReading:
        state = self._states.get(zone)
        if state is None:
            self._states[zone] = _ZoneState(raw_uj, 0.0, now_seconds)
            return EnergyReading(0.0, None, None)
        # The counter runs 0..max_uj inclusive, so a wrap skips max_uj + 1 values.
        delta_joules = ((raw_uj - state.raw_uj) % (max_uj + 1)) / MICROJOULES_PER_JOULE
        elapsed_seconds = now_seconds - state.seconds
        state.raw_uj = raw_uj
        state.total_joules += delta_joules
        state.seconds = now_seconds
        return EnergyReading(state.total_joules, delta_joules, elapsed_seconds)


def discover_zones(sysfs: Path) -> list[RaplZone]:
    """Package, dram and platform zones, in zone order; core and uncore subzones are skipped."""
    root = sysfs / "class" / "powercap"
    if not root.is_dir():
        return []
    packages: dict[str, str] = {}
    zones: list[RaplZone] = []
    for path in sorted(root.iterdir(), key=_zone_order):
        match = _ZONE_DIR.match(path.name)
        if match is None or not (path / "energy_uj").exists():
            continue
        top, sub = match.groups()
        name = _read_text(path / "name")
        if sub is None:
            zone = _top_level_zone(path, name, top, set(packages.values()))
            if zone.kind is ZoneKind.PACKAGE:
                packages[top] = zone.package
            elif any(z.kind is ZoneKind.PLATFORM for z in zones):
                continue  # one platform series; a second psys zone would be the same platform
            zones.append(zone)
        elif name == "dram" and top in packages:
            zones.append(RaplZone(path, ZoneKind.DRAM, packages[top]))
    return zones


def _zone_order(path: Path) -> tuple[int, ...]:
    """Numeric zone order so that intel-rapl:10 sorts after intel-rapl:2 and parents before subzones."""
    match = _ZONE_DIR.match(path.name)
    if match is None:
        return (-1,)
    return tuple(int(part) for part in match.groups() if part is not None)


def _top_level_zone(path: Path, name: str, index: str, taken: set[str]) -> RaplZone:
    if name == "psys":
        return RaplZone(path, ZoneKind.PLATFORM, "")
    # "package-0" -> "0"; multi-die parts name zones "package-0-die-1" -> "0-die-1".
    label = name.removeprefix("package-") if name.startswith("package-") else index
    if label in taken:
        label = f"{label}-zone-{index}"
    return RaplZone(path, ZoneKind.PACKAGE, label)


def _read_text(path: Path) -> str:
    try:
        return path.read_text().strip()
    except PermissionError:
        raise NoDataError(f"cannot read {path}: permission denied; {_PERMISSION_FIX}") from None


def _read_int(path: Path) -> int:
    return parse_count(_read_text(path))


def _no_zones_reason(root: Path) -> str:
    """Tell a machine without RAPL from a container that cannot see it."""
    listed = root.is_dir() and any(_ZONE_DIR.match(entry.name) for entry in root.iterdir())
    if listed:
        return (
            f"no RAPL zones under {root}: the zones are listed but their files are hidden; container "
            "runtimes mask /sys/devices/virtual/powercap unless the container is privileged"
        )
    return f"no RAPL zones under {root}"


class RaplCollector:
    name = "rapl"
    stage = STAGE_READ

    def __init__(self, sysfs: Path) -> None:
        self._sysfs = sysfs
        self._counters = WrappingEnergyCounter()
        self._failures: list[str] = []

    def collect(self, sink: SampleSink) -> None:
        zones = discover_zones(self._sysfs)
        if not zones:
            raise NoDataError(_no_zones_reason(self._sysfs / "class" / "powercap"))
        failures: list[str] = []
        for zone in zones:
            try:
                self._collect_zone(zone, sink)
            except (OSError, ValueError, NoDataError) as exc:  # one zone's fault is its own
                failures.append(f"{zone.path.name}: {exc}")
        if len(failures) == len(zones):
            raise NoDataError("; ".join(failures))
        self._log_failures(failures)

    def _log_failures(self, failures: list[str]) -> None:
        """Once per change: the cycle repeats every few seconds, the fault rarely changes."""
        if failures != self._failures:
            self._failures = failures
            if failures:
                log.warning("RAPL zones skipped", extra={"zones": "; ".join(failures)})

    def _collect_zone(self, zone: RaplZone, sink: SampleSink) -> None:
        raw_uj = _read_int(zone.path / "energy_uj")
        max_uj = _read_int(zone.path / "max_energy_range_uj")
        # Signs are refused (_read_int): a range of -1 divided by zero, failing every zone, not just this one.
        if raw_uj > max_uj or max_uj == 0:
            raise ValueError(f"energy_uj {raw_uj} outside 0..max_energy_range_uj {max_uj}")
        reading = self._counters.update(zone.path, raw_uj, max_uj, sink.now_seconds)
        if zone.kind is ZoneKind.PLATFORM:
            sink.add(PLATFORM_ENERGY, reading.total_joules)
        elif zone.kind is ZoneKind.DRAM:
            sink.add(DRAM_ENERGY, reading.total_joules, package=zone.package)
        else:
            sink.add(PACKAGE_ENERGY, reading.total_joules, package=zone.package)
            if reading.power_watts is not None:
                sink.add(PACKAGE_POWER, reading.power_watts, package=zone.package)
