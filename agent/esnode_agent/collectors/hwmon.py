"""Power and energy sensors of the kernel's hwmon chips, and which of them measure the whole node.

Each ``<sysfs>/class/hwmon/hwmonN`` has a ``name`` and sensor files: ``powerK_input`` or
``powerK_average`` in microwatts, ``energyK_input`` in microjoules, and an optional
``<sensor>_label``. Older kernels keep these files in ``hwmonN/device``.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.cycle.collector import STAGE_READ, NoDataError
from esnode_agent.cycle.samples import SampleSink, counter, gauge

log = logging.getLogger(__name__)

MICROS_PER_UNIT = 1_000_000

POWER = gauge(
    "esnode_hwmon_power_watts",
    "Power reported by a hwmon sensor (powerK_input, else powerK_average).",
    "chip",
    "sensor",
    "label",
)
ENERGY = counter(
    "esnode_hwmon_energy_joules_total",
    "Energy reported by a hwmon sensor, summed from its positive increments since the agent started "
    "(a sensor reset adds nothing).",
    "chip",
    "sensor",
    "label",
)

# Chips whose power sensor is the whole node's, and the node power source each stands for.
# acpi_power_meter is the ACPI Power Meter device, fed by the BMC.
NODE_METER_SOURCES = {"acpi_power_meter": "bmc", "power_meter": "hwmon"}
CONFIGURED_SENSOR_SOURCE = "bmc"

_POWER_FILE = re.compile(r"^(power\d+)_(input|average)$")
_ENERGY_FILE = re.compile(r"^(energy\d+)_input$")


def node_power_source(chip: str, sensor: str, configured: str | None) -> str | None:
    """The node power source a hwmon power sensor stands for, or None when it measures one device.

    ``configured`` ("CHIP/SENSOR", from the node_power_sensor setting) replaces detection by chip name.
    """
    if configured is not None:
        return CONFIGURED_SENSOR_SOURCE if f"{chip}/{sensor}" == configured else None
    chip_name = chip.partition("@")[0]
    return NODE_METER_SOURCES.get(chip_name) if sensor.startswith("power") else None


@dataclass(frozen=True, slots=True)
class HwmonChip:
    path: Path  # the folder holding name and the sensor files
    label: str  # the chip's name, made unique with "@<device>" when several chips share it


@dataclass(frozen=True, slots=True)
class HwmonSensor:
    chip: str
    sensor: str  # "power1", "energy2"
    label: str
    file: Path


def discover_chips(sysfs: Path) -> list[HwmonChip]:
    root = sysfs / "class" / "hwmon"
    if not root.is_dir():
        return []
    found: list[tuple[Path, str, str]] = []  # (folder, name, device id)
    for entry in sorted(root.glob("hwmon*")):
        folder = entry if (entry / "name").is_file() else entry / "device"
        if (folder / "name").is_file():
            found.append((folder, (folder / "name").read_text().strip(), _device_id(entry)))
    names = Counter(name for _, name, _ in found)
    return [
        HwmonChip(folder, name if names[name] == 1 else f"{name}@{device}") for folder, name, device in found
    ]


def _device_id(entry: Path) -> str:
    """The chip's device (e.g. "ACPI000D:00", "0000:03:00.0"), stable across reboots unlike hwmonN."""
    device = entry / "device"
    return device.resolve().name if device.exists() else entry.name


def chip_sensors(chip: HwmonChip) -> tuple[list[HwmonSensor], list[HwmonSensor]]:
    """(power sensors, energy sensors); a power sensor with both files reads ``_input``."""
    power: dict[str, Path] = {}
    energy: dict[str, Path] = {}
    for file in sorted(chip.path.iterdir()):
        if match := _POWER_FILE.match(file.name):
            if match[2] == "input" or match[1] not in power:
                power[match[1]] = file
        elif match := _ENERGY_FILE.match(file.name):
            energy[match[1]] = file
    return _sensors(chip, power), _sensors(chip, energy)


def _sensors(chip: HwmonChip, files: dict[str, Path]) -> list[HwmonSensor]:
    return [HwmonSensor(chip.label, name, _label(chip.path, name), file) for name, file in files.items()]


def _label(folder: Path, sensor: str) -> str:
    try:
        return (folder / f"{sensor}_label").read_text().strip()
    except OSError:
        return ""


def _read_micros(file: Path) -> float | None:
    """A sensor value in base units; None when the driver refuses the read (ENODATA, EIO, EACCES)."""
    try:
        return int(file.read_text().strip()) / MICROS_PER_UNIT
    except (OSError, ValueError, OverflowError) as exc:  # OverflowError: too many digits for a float
        log.debug("hwmon sensor unreadable", extra={"file": str(file), "error": str(exc)})
        return None


@dataclass(slots=True)
class _EnergyState:
    raw_joules: float
    total_joules: float


class HwmonCollector:
    name = "hwmon"
    stage = STAGE_READ

    def __init__(self, sysfs: Path) -> None:
        self._sysfs = sysfs
        self._energy: dict[Path, _EnergyState] = {}

    def collect(self, sink: SampleSink) -> None:
        chips = discover_chips(self._sysfs)
        if not chips:
            raise NoDataError(f"no hwmon chips under {self._sysfs / 'class' / 'hwmon'}")
        found = 0
        for chip in chips:
            power, energy = chip_sensors(chip)
            found += len(power) + len(energy)
            for sensor in power:
                self._collect_power(sensor, sink)
            for sensor in energy:
                self._collect_energy(sensor, sink)
        if not found:
            raise NoDataError("no hwmon power or energy sensors")

    def _collect_power(self, sensor: HwmonSensor, sink: SampleSink) -> None:
        watts = _read_micros(sensor.file)
        if watts is not None:
            sink.add(POWER, watts, chip=sensor.chip, sensor=sensor.sensor, label=sensor.label)

    def _collect_energy(self, sensor: HwmonSensor, sink: SampleSink) -> None:
        joules = _read_micros(sensor.file)
        if joules is None:
            return
        state = self._energy.get(sensor.file)
        if state is None:
            state = self._energy[sensor.file] = _EnergyState(joules, 0.0)
        elif joules >= state.raw_joules:
            state.total_joules += joules - state.raw_joules
        state.raw_joules = joules
        sink.add(ENERGY, state.total_joules, chip=sensor.chip, sensor=sensor.sensor, label=sensor.label)
