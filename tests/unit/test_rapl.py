"""RAPL collector against fake powercap trees laid out as the kernel does (µJ counters, wrap at max)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
from collecting import collect

from esnode_agent.collectors.rapl import RaplCollector
from esnode_agent.cycle.collector import NoDataError

# A real package zone's max_energy_range_uj (about 262 kJ before it wraps).
MAX_UJ = 262_143_328_850


def write_zone(sysfs: Path, zone: str, name: str, energy_uj: int, max_uj: int = MAX_UJ) -> Path:
    """One zone folder as /sys/class/powercap shows it, e.g. zone="intel-rapl:0:1"."""
    path = sysfs / "class" / "powercap" / zone
    path.mkdir(parents=True, exist_ok=True)
    (path / "name").write_text(f"{name}\n")
    (path / "energy_uj").write_text(f"{energy_uj}\n")
    (path / "max_energy_range_uj").write_text(f"{max_uj}\n")
    (path / "enabled").write_text("1\n")
    return path


def set_energy(zone: Path, energy_uj: int) -> None:
    (zone / "energy_uj").write_text(f"{energy_uj}\n")


def test_first_cycle_has_energy_but_no_power_then_power_from_the_delta(tmp_path: Path) -> None:
    zone = write_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000_000)
    collector = RaplCollector(tmp_path)

    first = collect(collector, 100.0)
    assert first.value("esnode_cpu_package_energy_joules_total", package="0") == 0.0
    assert first.named("esnode_cpu_package_power_watts") == []

    set_energy(zone, 5_000_000_000 + 250_000_000)  # +250 J in 2.5 s
    second = collect(collector, 102.5)
    assert second.value("esnode_cpu_package_energy_joules_total", package="0") == pytest.approx(250.0)
    assert second.value("esnode_cpu_package_power_watts", package="0") == pytest.approx(100.0)


def test_wraparound_between_reads_counts_the_energy_across_the_wrap(tmp_path: Path) -> None:
    zone = write_zone(tmp_path, "intel-rapl:0", "package-0", MAX_UJ - 5_000_000)  # 5 J before the wrap
    collector = RaplCollector(tmp_path)
    collect(collector, 0.0)
    set_energy(zone, 15_000_000)  # wrapped, then 15 J more

    after = collect(collector, 2.0)

    # 5 J up to max, one step from max to 0, then 15 J.
    assert after.value("esnode_cpu_package_energy_joules_total", package="0") == pytest.approx(
        20.000001, abs=1e-9
    )
    assert after.value("esnode_cpu_package_power_watts", package="0") == pytest.approx(10.0000005, abs=1e-9)

    set_energy(zone, 25_000_000)
    later = collect(collector, 3.0)
    assert later.value("esnode_cpu_package_energy_joules_total", package="0") == pytest.approx(
        30.000001, abs=1e-9
    )


def test_two_sockets_give_two_packages_with_their_dram_and_skip_core_and_mmio(tmp_path: Path) -> None:
    (tmp_path / "class" / "powercap" / "intel-rapl").mkdir(parents=True)  # the control type, no counter
    zones = {
        "pkg0": write_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000),
        "core0": write_zone(tmp_path, "intel-rapl:0:0", "core", 1_000_000),
        "dram0": write_zone(tmp_path, "intel-rapl:0:1", "dram", 1_000_000),
        "pkg1": write_zone(tmp_path, "intel-rapl:1", "package-1", 9_000_000),
        "dram1": write_zone(tmp_path, "intel-rapl:1:0", "dram", 9_000_000),
        "mmio": write_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 1_000_000),
    }
    collector = RaplCollector(tmp_path)
    collect(collector, 0.0)
    increments_uj = {"pkg0": 100_000_000, "dram0": 10_000_000, "pkg1": 200_000_000, "dram1": 20_000_000}
    for key, zone in zones.items():
        set_energy(zone, int((zone / "energy_uj").read_text()) + increments_uj.get(key, 50_000_000))

    samples = collect(collector, 10.0)

    energy = {s.label("package"): s.value for s in samples.named("esnode_cpu_package_energy_joules_total")}
    assert energy == pytest.approx({"0": 100.0, "1": 200.0})
    power = {s.label("package"): s.value for s in samples.named("esnode_cpu_package_power_watts")}
    assert power == pytest.approx({"0": 10.0, "1": 20.0})
    dram = {s.label("package"): s.value for s in samples.named("esnode_cpu_dram_energy_joules_total")}
    assert dram == pytest.approx({"0": 10.0, "1": 20.0})


def test_psys_is_the_platform_not_a_package(tmp_path: Path) -> None:
    package = write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    platform = write_zone(tmp_path, "intel-rapl:1", "psys", 0)
    collector = RaplCollector(tmp_path)
    collect(collector, 0.0)
    set_energy(package, 3_000_000)
    set_energy(platform, 7_000_000)

    samples = collect(collector, 1.0)

    assert [s.label("package") for s in samples.named("esnode_cpu_package_energy_joules_total")] == ["0"]
    assert samples.value("esnode_platform_energy_joules_total") == pytest.approx(7.0)


def test_zones_sharing_a_name_never_share_a_series(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 0)
    write_zone(tmp_path, "intel-rapl:1", "package-0", 0)
    write_zone(tmp_path, "intel-rapl:2", "package-0-die-1", 0)

    samples = collect(RaplCollector(tmp_path), 0.0)

    labels = [s.label("package") for s in samples.named("esnode_cpu_package_energy_joules_total")]
    assert labels == ["0", "0-zone-1", "0-die-1"]


def test_unreadable_energy_is_no_data_naming_the_file_and_the_fix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    zone = write_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000)
    real_read_text = Path.read_text

    def kernel_read_text(self: Path, *args: object, **kwargs: object) -> str:
        # Since the CVE-2020-8694 fix, energy_uj is mode 0400 root: open() fails with EACCES.
        if self.name == "energy_uj":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read_text(self)

    monkeypatch.setattr(Path, "read_text", kernel_read_text)

    with pytest.raises(NoDataError) as raised:
        collect(RaplCollector(tmp_path), 0.0)
    assert str(zone / "energy_uj") in str(raised.value)
    assert "root" in str(raised.value)


def test_no_powercap_folder_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError, match="no RAPL zones"):
        collect(RaplCollector(tmp_path), 0.0)


def test_zones_hidden_by_the_container_runtime_are_no_data_with_the_reason(tmp_path: Path) -> None:
    # /sys/class/powercap keeps its links; the masked /sys/devices/virtual/powercap is an empty tmpfs.
    classes = tmp_path / "class" / "powercap"
    classes.mkdir(parents=True)
    (classes / "intel-rapl:0").symlink_to("../../devices/virtual/powercap/intel-rapl/intel-rapl:0")

    with pytest.raises(NoDataError, match="privileged"):
        collect(RaplCollector(tmp_path), 0.0)


def test_this_machine_either_reports_packages_or_says_why_not() -> None:
    try:
        samples = collect(RaplCollector(Path("/sys")), 0.0)
    except NoDataError as exc:
        assert str(exc)
    else:
        assert samples.named("esnode_cpu_package_energy_joules_total") or samples.named(
            "esnode_platform_energy_joules_total"
        )


def test_one_unreadable_zone_costs_only_its_own_series(tmp_path: Path) -> None:
    write_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    broken = write_zone(tmp_path, "intel-rapl:1", "package-1", 7_000_000)
    (broken / "energy_uj").write_text("garbage\n")  # a driver answering nonsense for one package
    samples = collect(RaplCollector(tmp_path), 0.0)
    assert {s.label("package") for s in samples.named("esnode_cpu_package_energy_joules_total")} == {"0"}


def test_every_zone_unreadable_is_a_collector_failure(tmp_path: Path) -> None:
    zone = write_zone(tmp_path, "intel-rapl:0", "package-0", 5_000_000)
    (zone / "energy_uj").write_text("garbage\n")
    with pytest.raises(NoDataError, match="intel-rapl:0"):
        collect(RaplCollector(tmp_path), 0.0)
