"""Node power: source selection over upstream samples, and a monotonic node energy counter."""

from __future__ import annotations

from pathlib import Path

import pytest
from collecting import collect
from pydantic import ValidationError

from esnode_agent.collectors.hwmon import POWER as HWMON_POWER
from esnode_agent.collectors.node_power import NodePowerCollector
from esnode_agent.collectors.rapl import PACKAGE_ENERGY, PACKAGE_POWER, RaplCollector
from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.collector import NoDataError
from esnode_agent.cycle.loop import CollectionLoop
from esnode_agent.cycle.samples import Sample, SampleIndex, counter, gauge
from esnode_agent.cycle.snapshot import Snapshot

# The GPU collector's families as the metrics contract defines them.
GPU_POWER = gauge("esnode_gpu_power_watts", "GPU power", "gpu", "uuid")
GPU_ENERGY = counter("esnode_gpu_energy_joules_total", "GPU energy", "gpu", "uuid")


def meter(chip: str, watts: float, sensor: str = "power1") -> Sample:
    return Sample(HWMON_POWER, (chip, sensor, ""), watts)


def package(index: str, joules: float, watts: float | None = None) -> list[Sample]:
    samples = [Sample(PACKAGE_ENERGY, (index,), joules)]
    return samples if watts is None else [*samples, Sample(PACKAGE_POWER, (index,), watts)]


def gpu(index: str, watts: float | None, joules: float | None = None) -> list[Sample]:
    labels = (index, f"GPU-{index}")
    samples = [] if watts is None else [Sample(GPU_POWER, labels, watts)]
    return samples if joules is None else [*samples, Sample(GPU_ENERGY, labels, joules)]


def source_of(samples: SampleIndex) -> str:
    [info] = samples.named("esnode_node_power_source_info")
    assert info.value == 1
    return info.label("source")


def test_the_bmc_meter_wins_over_rapl_and_gpus() -> None:
    upstream = [
        meter("amdgpu", 30.0),
        meter("acpi_power_meter", 820.0),
        *package("0", 100.0, 120.0),
        *gpu("0", 350.0),
    ]

    samples = collect(NodePowerCollector(), 0.0, upstream)

    assert samples.value("esnode_node_power_watts") == 820.0
    assert source_of(samples) == "bmc"


def test_a_configured_sensor_is_the_node_meter() -> None:
    upstream = [meter("acpi_power_meter", 820.0), meter("ibmaem", 790.0, sensor="power2")]

    samples = collect(NodePowerCollector("ibmaem/power2"), 0.0, upstream)

    assert samples.value("esnode_node_power_watts") == 790.0
    assert source_of(samples) == "bmc"


def test_without_a_meter_rapl_packages_and_gpus_add_up() -> None:
    upstream = [
        meter("amdgpu", 30.0),  # a device's own sensor, not the node's
        *package("0", 100.0, 85.0),
        *package("1", 100.0, 95.0),
        *gpu("0", 310.0),
        *gpu("1", 290.0),
    ]

    samples = collect(NodePowerCollector(), 0.0, upstream)

    assert samples.value("esnode_node_power_watts") == pytest.approx(780.0)
    assert source_of(samples) == "rapl+gpu"


def test_rapl_alone_is_named_rapl() -> None:
    samples = collect(NodePowerCollector(), 0.0, package("0", 10.0, 42.0))

    assert samples.value("esnode_node_power_watts") == 42.0
    assert source_of(samples) == "rapl"


def test_before_rapl_has_a_second_reading_energy_starts_and_power_is_absent() -> None:
    samples = collect(NodePowerCollector(), 0.0, [*package("0", 0.0), *gpu("0", 300.0)])

    assert samples.named("esnode_node_power_watts") == []
    assert samples.value("esnode_node_energy_joules_total") == 0.0
    assert source_of(samples) == "rapl+gpu"


def test_energy_counters_are_preferred_and_a_component_reset_keeps_the_total_monotonic() -> None:
    collector = NodePowerCollector()
    cycles = [  # (seconds, package joules, gpu joules): the GPU's counter restarts at the third
        (0.0, 100.0, 1000.0),
        (5.0, 600.0, 2500.0),
        (10.0, 1100.0, 10.0),
        (15.0, 1600.0, 510.0),
    ]
    totals = []
    for seconds, package_joules, gpu_joules in cycles:
        # GPU power says 999 W, but its energy counter is what counts.
        upstream = [*package("0", package_joules, 100.0), *gpu("0", 999.0, gpu_joules)]
        totals.append(collect(collector, seconds, upstream).value("esnode_node_energy_joules_total"))

    assert totals == pytest.approx([0.0, 2000.0, 2500.0, 3500.0])


def test_a_meter_without_an_energy_counter_is_integrated_over_the_interval() -> None:
    collector = NodePowerCollector()
    collect(collector, 0.0, [meter("acpi_power_meter", 400.0)])

    samples = collect(collector, 10.0, [meter("acpi_power_meter", 500.0)])

    assert samples.value("esnode_node_energy_joules_total") == pytest.approx(5000.0)


def test_a_gpu_without_a_power_reading_gets_power_from_its_energy() -> None:
    collector = NodePowerCollector()
    collect(collector, 0.0, [*package("0", 0.0, 50.0), *gpu("0", None, 0.0)])

    samples = collect(collector, 4.0, [*package("0", 200.0, 50.0), *gpu("0", None, 1200.0)])

    assert samples.value("esnode_node_power_watts") == pytest.approx(350.0)


def test_switching_source_adds_nothing_for_that_interval_and_never_double_counts() -> None:
    collector = NodePowerCollector()
    collect(collector, 0.0, package("0", 0.0, 100.0))
    rapl_only = collect(collector, 10.0, package("0", 1000.0, 100.0))
    meter_appears = collect(collector, 20.0, [meter("acpi_power_meter", 400.0), *package("0", 2000.0, 100.0)])
    meter_gone = collect(collector, 30.0, package("0", 3000.0, 100.0))

    assert rapl_only.value("esnode_node_energy_joules_total") == pytest.approx(1000.0)
    assert meter_appears.value("esnode_node_energy_joules_total") == pytest.approx(1000.0)
    assert meter_gone.value("esnode_node_energy_joules_total") == pytest.approx(1000.0)


def test_energy_counters_span_a_cycle_without_any_source() -> None:
    collector = NodePowerCollector()
    collect(collector, 0.0, package("0", 0.0, 100.0))
    with pytest.raises(NoDataError):
        collect(collector, 10.0, [])  # the RAPL collector failed this cycle

    back = collect(collector, 20.0, package("0", 2000.0, 100.0))

    assert back.value("esnode_node_energy_joules_total") == pytest.approx(2000.0)


def test_gpus_alone_are_the_source_where_rapl_is_hidden() -> None:
    collector = NodePowerCollector()
    collect(collector, 0.0, [meter("amdgpu", 30.0), *gpu("0", 300.0), *gpu("1", 200.0)])
    samples = collect(collector, 5.0, [meter("amdgpu", 30.0), *gpu("0", 300.0), *gpu("1", 200.0)])
    assert source_of(samples) == "gpu"
    assert samples.value("esnode_node_power_watts") == 500.0
    assert samples.value("esnode_node_energy_joules_total") == pytest.approx(2500.0)


def test_no_source_at_all_is_no_data() -> None:
    with pytest.raises(NoDataError, match="no node power meter"):
        collect(NodePowerCollector(), 0.0, [meter("amdgpu", 30.0)])


def test_node_power_sensor_setting_names_a_chip_and_power_sensor() -> None:
    assert (
        AgentConfig(node_power_sensor="acpi_power_meter/power1").node_power_sensor
        == "acpi_power_meter/power1"
    )
    for bad in ("acpi_power_meter", "acpi_power_meter/energy1", "a/b/power1"):
        with pytest.raises(ValidationError):
            AgentConfig(node_power_sensor=bad)


def test_power_collectors_are_registered_only_with_enable_power() -> None:
    names = {c.name for c in build_collectors(AgentConfig())}
    assert {"rapl", "hwmon", "node_power"} <= names
    assert not {"rapl", "hwmon", "node_power"} & {
        c.name for c in build_collectors(AgentConfig(enable_power=False))
    }


async def test_the_loop_feeds_rapl_into_node_power_in_one_cycle(tmp_path: Path) -> None:
    zone = tmp_path / "class" / "powercap" / "intel-rapl:0"
    zone.mkdir(parents=True)
    (zone / "name").write_text("package-0\n")
    (zone / "max_energy_range_uj").write_text("262143328850\n")
    (zone / "energy_uj").write_text("1000000\n")
    snapshots: list[Snapshot] = []

    async def keep(snapshot: Snapshot) -> None:
        snapshots.append(snapshot)

    loop = CollectionLoop([NodePowerCollector(), RaplCollector(tmp_path)], 60.0, 5.0, keep)
    await loop.run_once()
    (zone / "energy_uj").write_text("51000000\n")
    second = await loop.run_once()

    assert all(health.success for health in second.health)
    assert second.samples.value("esnode_node_energy_joules_total") == pytest.approx(50.0)
    node_watts = second.samples.value("esnode_node_power_watts")
    assert node_watts is not None
    assert node_watts == second.samples.value("esnode_cpu_package_power_watts", package="0")


GPU_UP = gauge("esnode_gpu_up", "GPU answered", "gpu", "uuid")


def test_a_lost_gpu_leaves_node_power_unknown_not_smaller() -> None:
    upstream = [*package("0", 100.0, 85.0), *gpu("0", 310.0), Sample(GPU_UP, ("1", "GPU-1"), 0.0)]
    samples = collect(NodePowerCollector(), 0.0, upstream)
    assert samples.named("esnode_node_power_watts") == []
    assert source_of(samples) == "rapl+gpu"


def test_a_part_that_goes_missing_leaves_node_power_unknown_until_it_is_back() -> None:
    collector = NodePowerCollector()
    both = [*package("0", 100.0, 85.0), *package("1", 100.0, 95.0)]
    assert collect(collector, 0.0, both).value("esnode_node_power_watts") == pytest.approx(180.0)
    one_missing = collect(collector, 1.0, package("0", 185.0, 85.0))
    assert one_missing.named("esnode_node_power_watts") == []
    back = collect(collector, 2.0, [*package("0", 270.0, 85.0), *package("1", 290.0, 95.0)])
    assert back.value("esnode_node_power_watts") == pytest.approx(180.0)
