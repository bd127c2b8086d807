"""Node power and energy from the best source this cycle's readings offer.

Preference: a whole-node meter found among the hwmon sensors (the BMC's ACPI power meter, or the
sensor the node_power_sensor setting names); otherwise CPU packages from RAPL plus every GPU;
otherwise, where RAPL is hidden (most cloud VMs), the GPUs alone as a lower bound.
The energy counter is this collector's own running total: each component adds the increase of
its energy counter when it has one, else its power times the interval.
"""

from __future__ import annotations

from dataclasses import dataclass

from esnode_agent.collectors import hwmon, rapl
from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.cycle.collector import STAGE_DERIVE, NoDataError
from esnode_agent.cycle.samples import SampleIndex, SampleSink, counter, gauge

NODE_POWER = gauge(
    "esnode_node_power_watts",
    "Node power from the best source (see esnode_node_power_source_info): a whole-node meter, else "
    "CPU packages (RAPL) plus GPUs, which leaves out DRAM, fans, disks and PSU losses. For averages "
    "use rate(esnode_node_energy_joules_total[5m]) or avg_over_time() of this gauge.",
)
NODE_SOURCE = gauge(
    "esnode_node_power_source_info",
    "Which source node power and energy came from this cycle (bmc, hwmon, rapl+gpu, rapl, gpu); value 1.",
    "source",
)
NODE_ENERGY = counter(
    "esnode_node_energy_joules_total",
    "Node energy since the agent started: each component adds its energy counter's increase when it "
    "has one (RAPL, GPU), else power times the interval; counter resets and intervals in which the "
    "source changed add nothing.",
)


@dataclass(frozen=True, slots=True)
class Component:
    """One thing whose power adds to the node's: a node meter, a CPU package or a GPU."""

    key: str  # stable across cycles
    power_watts: float | None
    energy_joules_total: float | None


@dataclass(frozen=True, slots=True)
class NodeSource:
    name: str
    components: tuple[Component, ...]


def select_source(upstream: SampleIndex, configured_sensor: str | None) -> NodeSource | None:
    return _node_meter(upstream, configured_sensor) or _rapl_and_gpus(upstream)


def _node_meter(upstream: SampleIndex, configured_sensor: str | None) -> NodeSource | None:
    """One whole-node hwmon meter, in NODE_METER_SOURCES order; never a sum of two meters."""
    ranks = list(hwmon.NODE_METER_SOURCES)
    candidates: list[tuple[int, str, str, float]] = []
    for sample in upstream.named(hwmon.POWER.name):
        chip, sensor = sample.label("chip"), sample.label("sensor")
        source = hwmon.node_power_source(chip, sensor, configured_sensor)
        if source is not None:
            chip_name = chip.partition("@")[0]
            rank = ranks.index(chip_name) if chip_name in ranks else -1  # the configured sensor
            candidates.append((rank, f"{chip}/{sensor}", source, sample.value))
    if not candidates:
        return None
    _, sensor_path, source, watts = min(candidates, key=lambda candidate: candidate[:2])
    return NodeSource(source, (Component(f"hwmon:{sensor_path}", watts, None),))


def _rapl_and_gpus(upstream: SampleIndex) -> NodeSource | None:
    packages = tuple(
        Component(
            f"rapl:{sample.label('package')}",
            upstream.value(rapl.PACKAGE_POWER.name, package=sample.label("package")),
            sample.value,
        )
        for sample in upstream.named(rapl.PACKAGE_ENERGY.name)
    )
    gpus = _gpus(upstream)
    if not packages:
        # Cloud GPU VMs rarely expose RAPL; GPU power alone is a lower bound, but on such nodes it
        # is most of the draw and the envelope would otherwise go blind.
        return NodeSource("gpu", gpus) if gpus else None
    return NodeSource("rapl+gpu" if gpus else "rapl", packages + gpus)


def _gpus(upstream: SampleIndex) -> tuple[Component, ...]:
    """Every GPU, a lost one (esnode_gpu_up 0) too: it has no reading, so node power is unknown."""
    power = upstream.by_label(GPU.power.name, "uuid")
    energy = upstream.by_label(GPU.energy.name, "uuid")
    lost = {uuid for uuid, up in upstream.by_label(GPU.up.name, "uuid").items() if up == 0}
    return tuple(
        Component(f"gpu:{gpu}", power.get(gpu), energy.get(gpu))
        for gpu in sorted(power.keys() | energy | lost)
    )


@dataclass(frozen=True, slots=True)
class _Step:
    joules: float | None  # energy this interval; None when unknown
    power_watts: float | None


class NodePowerCollector:
    name = "node_power"
    stage = STAGE_DERIVE

    def __init__(self, configured_sensor: str | None = None) -> None:
        self._configured_sensor = configured_sensor
        self._total_joules = 0.0
        # The last cycle that had a source, and its components. Only they count in the next such
        # cycle, so that energy counted from one source is never counted again from another; their
        # energy counters span any cycles without a source in between.
        self._previous_seconds: float | None = None
        self._previous: dict[str, Component] = {}
        # Every part each source has had: one that goes missing (an unreadable RAPL zone) leaves
        # node power unknown, not smaller, until it is back.
        self._parts_seen: dict[str, set[str]] = {}

    def collect(self, sink: SampleSink) -> None:
        source = select_source(sink.upstream, self._configured_sensor)
        if source is None:
            raise NoDataError("no node power meter among hwmon sensors, no RAPL package energy, no GPU power")
        elapsed_seconds = (
            None if self._previous_seconds is None else sink.now_seconds - self._previous_seconds
        )
        steps = [self._step(component, elapsed_seconds) for component in source.components]
        self._previous_seconds = sink.now_seconds
        self._previous = {component.key: component for component in source.components}
        self._total_joules += sum(step.joules for step in steps if step.joules is not None)
        sink.add(NODE_SOURCE, 1, source=source.name)
        sink.add(NODE_ENERGY, self._total_joules)
        parts = {component.key for component in source.components}
        seen = self._parts_seen.setdefault(source.name, set())
        seen |= parts
        if parts == seen and all(step.power_watts is not None for step in steps):
            sink.add(NODE_POWER, sum(step.power_watts or 0.0 for step in steps))

    def _step(self, component: Component, elapsed_seconds: float | None) -> _Step:
        previous = self._previous.get(component.key)
        interval = elapsed_seconds if previous is not None and elapsed_seconds else None
        if component.energy_joules_total is not None:
            last = None if previous is None else previous.energy_joules_total
            delta = None if last is None else component.energy_joules_total - last
            joules = delta if delta is not None and delta >= 0 else None  # a reset adds nothing
            power = component.power_watts
            if power is None and joules is not None and interval is not None:
                power = joules / interval
            return _Step(joules, power)
        if component.power_watts is not None and interval is not None:
            return _Step(component.power_watts * interval, component.power_watts)
        return _Step(None, component.power_watts)
