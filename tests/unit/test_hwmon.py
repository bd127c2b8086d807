"""hwmon collector against fake /sys/class/hwmon trees (power in µW, energy in µJ, as the kernel reports)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from collecting import collect

from esnode_agent.collectors.hwmon import HwmonCollector, node_power_source
from esnode_agent.cycle.collector import NoDataError


def write_chip(sysfs: Path, index: int, name: str, files: dict[str, str], device: str | None = None) -> Path:
    """hwmon<index> with a name file and sensor files; ``device`` links it to a device folder."""
    chip = sysfs / "class" / "hwmon" / f"hwmon{index}"
    chip.mkdir(parents=True)
    (chip / "name").write_text(f"{name}\n")
    for file, content in files.items():
        (chip / file).write_text(f"{content}\n")
    if device is not None:
        target = sysfs / "devices" / device
        target.mkdir(parents=True)
        (chip / "device").symlink_to(target)
    return chip


def test_power_in_microwatts_becomes_watts_preferring_input_over_average(tmp_path: Path) -> None:
    write_chip(
        tmp_path, 0, "acpi_power_meter", {"power1_average": "412500000", "power1_average_interval": "1000"}
    )
    write_chip(
        tmp_path,
        1,
        "amdgpu",
        {
            "power1_input": "61000000",
            "power1_average": "58000000",
            "power1_label": "PPT",
            "temp1_input": "45000",
        },
    )

    samples = collect(HwmonCollector(tmp_path))

    assert samples.value("esnode_hwmon_power_watts", chip="acpi_power_meter", sensor="power1") == 412.5
    assert samples.value("esnode_hwmon_power_watts", chip="amdgpu", sensor="power1", label="PPT") == 61.0
    assert len(samples.named("esnode_hwmon_power_watts")) == 2


def test_energy_in_microjoules_accumulates_and_a_reset_adds_nothing(tmp_path: Path) -> None:
    chip = write_chip(tmp_path, 0, "amd_energy", {"energy17_input": "10000000", "energy17_label": "Esocket0"})
    collector = HwmonCollector(tmp_path)
    totals = []
    for energy_uj in (10_000_000, 15_500_000, 2_000_000, 4_000_000):  # the third read follows a reset
        (chip / "energy17_input").write_text(f"{energy_uj}\n")
        samples = collect(collector)
        totals.append(samples.value("esnode_hwmon_energy_joules_total", chip="amd_energy", label="Esocket0"))

    assert totals == pytest.approx([0.0, 5.5, 5.5, 7.5])


def test_chips_sharing_a_name_are_told_apart_by_their_device(tmp_path: Path) -> None:
    write_chip(tmp_path, 0, "amdgpu", {"power1_average": "30000000"}, device="0000:03:00.0")
    write_chip(tmp_path, 1, "amdgpu", {"power1_average": "40000000"}, device="0000:83:00.0")

    samples = collect(HwmonCollector(tmp_path))

    chips = {s.label("chip"): s.value for s in samples.named("esnode_hwmon_power_watts")}
    assert chips == {"amdgpu@0000:03:00.0": 30.0, "amdgpu@0000:83:00.0": 40.0}


def test_old_kernels_keep_the_sensor_files_under_device(tmp_path: Path) -> None:
    chip = tmp_path / "class" / "hwmon" / "hwmon0"
    (chip / "device").mkdir(parents=True)
    (chip / "device" / "name").write_text("acpi_power_meter\n")
    (chip / "device" / "power1_average").write_text("300000000\n")

    samples = collect(HwmonCollector(tmp_path))

    assert samples.value("esnode_hwmon_power_watts", chip="acpi_power_meter") == 300.0


def test_a_sensor_the_driver_refuses_is_absent_and_the_others_stay(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_chip(tmp_path, 0, "acpi_power_meter", {"power1_average": "300000000"})
    write_chip(tmp_path, 1, "amdgpu", {"power1_average": "30000000"})
    real_read_text = Path.read_text

    def driver_read_text(self: Path, *args: object, **kwargs: object) -> str:
        if self.parent.name == "hwmon0" and self.name == "power1_average":
            raise OSError(errno.ENODATA, "No data available", str(self))
        return real_read_text(self)

    monkeypatch.setattr(Path, "read_text", driver_read_text)

    samples = collect(HwmonCollector(tmp_path))

    assert [s.label("chip") for s in samples.named("esnode_hwmon_power_watts")] == ["amdgpu"]


def test_no_chips_or_no_power_sensors_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="no hwmon chips"):
        collect(HwmonCollector(tmp_path))
    write_chip(tmp_path, 0, "coretemp", {"temp1_input": "45000", "temp1_label": "Package id 0"})
    with pytest.raises(NoDataError, match="no hwmon power or energy sensors"):
        collect(HwmonCollector(tmp_path))


@pytest.mark.parametrize(
    ("chip", "sensor", "configured", "source"),
    [
        ("acpi_power_meter", "power1", None, "bmc"),
        ("acpi_power_meter@ACPI000D:01", "power1", None, "bmc"),
        ("power_meter", "power1", None, "hwmon"),
        ("amdgpu", "power1", None, None),
        ("acpi_power_meter", "energy1", None, None),
        ("ibmaem", "power2", "ibmaem/power2", "bmc"),
        ("acpi_power_meter", "power1", "ibmaem/power2", None),
    ],
)
def test_which_sensors_measure_the_whole_node(
    chip: str, sensor: str, configured: str | None, source: str | None
) -> None:
    assert node_power_source(chip, sensor, configured) == source


def test_this_machine_either_reports_sensors_or_says_why_not() -> None:
    try:
        samples = collect(HwmonCollector(Path("/sys")))
    except NoDataError as exc:
        assert str(exc)
    else:
        assert samples.named("esnode_hwmon_power_watts") or samples.named("esnode_hwmon_energy_joules_total")
