"""Opt-in GPU power capping: the sharing rule, the capper over the simulated NVML, restore and errors."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest

from esnode_agent.capping.collector import PowerCappingCollector
from esnode_agent.capping.controller import STATE_CAPPING, STATE_IDLE, STATE_NO_ENVELOPE, PowerCapper
from esnode_agent.capping.peak import RecentDraws, at_limit
from esnode_agent.capping.share import GpuPower, Policy, next_limits, node_wanted_watts
from esnode_agent.capping.state_file import StateFile
from esnode_agent.capping.wiring import build_capper, capper_for
from esnode_agent.collectors.envelope import EnvelopeCollector, EnvelopeHolder
from esnode_agent.collectors.gpu import PLAIN
from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError
from esnode_agent.cycle.samples import Sample, SampleIndex, SampleSink
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.gpu.backend import PowerLimitError
from esnode_agent.gpu.nvml_backend import NvmlBackend, NvmlDevice
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_power_limit import read_driver_state
from esnode_agent.gpu.sim_profile import SimProfile, load_profile
from esnode_agent.report.fleet_envelope import follow_fleet_envelope
from esnode_agent.report.model import build_report


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


POLICY = Policy(envelope_watts=3000, hysteresis_watts=50, step_watts=25)
OTHER_WATTS = 400.0  # the rest of the node: CPUs, fans


def _gpu(uuid: str, draw: float, limit: float = 700.0, peak: float | None = None) -> GpuPower:
    peak = draw if peak is None else peak
    return GpuPower(uuid, draw, peak, at_limit(peak, limit), limit, 200.0, 700.0)


def _power_of(gpus: list[GpuPower]) -> float:
    return OTHER_WATTS + sum(g.draw_watts for g in gpus)


class SimulatedNode:
    """GPUs drawing min(demand, limit) under the rule, cycle after cycle, as the capper runs it."""

    def __init__(self, demands: dict[str, float], policy: Policy = POLICY) -> None:
        self.demands = demands
        self.policy = policy
        self.limits = dict.fromkeys(demands, 700.0)
        self.recent = RecentDraws(10.0)
        self.now = 0.0
        self.writes = 0

    def cycle(self) -> dict[str, float]:
        gpus = []
        for uuid, demand in self.demands.items():
            draw = min(demand, self.limits[uuid])
            recent = self.recent.add(uuid, self.now, draw, at_limit(draw, self.limits[uuid]))
            gpus.append(
                GpuPower(uuid, draw, recent.peak_watts, recent.held_back, self.limits[uuid], 200, 700)
            )
        changes = next_limits(gpus, _power_of(gpus), self.policy, may_raise=True)
        self.limits.update(changes)
        self.writes += len(changes)
        self.now += 5.0
        return dict(changes)


# The rule.
@pytest.mark.parametrize("seed", range(20))
def test_the_limits_never_sum_above_the_envelope_minus_the_rest_of_the_node(seed: int) -> None:
    rng = random.Random(seed)
    gpus = [
        _gpu(str(i), draw, limit=limit, peak=max(draw, rng.uniform(72, 700)))
        for i in range(8)
        for limit in [rng.uniform(200, 700)]
        for draw in [rng.uniform(72, limit)]
    ]
    node_power = _power_of(gpus)
    limits = {g.uuid: g.limit_watts for g in gpus}
    share = 3000 - (node_power - sum(g.draw_watts for g in gpus)) - 50
    for uuid, watts in next_limits(gpus, node_power, POLICY, may_raise=True).items():
        before = sum(limits.values())
        limits[uuid] = watts  # applied in order, as the capper applies them
        assert sum(limits.values()) <= max(share, before)  # a write adds watts only within the share
    assert sum(limits.values()) <= share
    assert all(200 <= watts <= 700 for watts in limits.values())


def test_cuts_come_first_so_the_sum_holds_between_two_writes() -> None:
    gpus = [_gpu("busy", 600, limit=600), _gpu("idle", 100, limit=1200 - 600, peak=100)]
    changes = list(next_limits(gpus, 400 + 700, Policy(1600, 50, 25), may_raise=True).items())
    limits = {g.uuid: g.limit_watts for g in gpus}
    for uuid, watts in changes:
        limits[uuid] = watts
        assert sum(limits.values()) <= 1200 - 50  # never above the share, even after the first write
    assert [uuid for uuid, _ in changes] == ["idle", "busy"]


def test_no_limit_goes_below_the_floor_even_when_the_share_cannot_cover_the_floors() -> None:
    gpus = [_gpu(str(i), 500) for i in range(8)]
    limits = next_limits(gpus, _power_of(gpus), Policy(1000, 50, 25), may_raise=True)
    assert limits == dict.fromkeys(limits, 200.0) and len(limits) == 8


def test_a_node_well_under_its_envelope_is_left_alone() -> None:
    gpus = [_gpu(str(i), 300) for i in range(4)]
    assert next_limits(gpus, _power_of(gpus), Policy(3400, 50, 25), may_raise=True) == {}


def test_a_steady_overload_is_shared_once_and_then_left_alone() -> None:
    tight = Policy(envelope_watts=2400, hysteresis_watts=50, step_watts=25)  # 1950 W for the GPUs
    node = SimulatedNode({"a": 650.0, "b": 650.0, "c": 650.0, "d": 150.0}, tight)
    node.cycle()
    writes_after_first = node.writes
    for _ in range(30):
        node.cycle()
    assert node.writes == writes_after_first  # no oscillation, no NVML writes on a steady load
    assert node.limits == {"a": 583.0, "b": 583.0, "c": 583.0, "d": 200.0}  # the idle one at its floor


def test_room_an_idle_gpu_leaves_moves_to_the_one_whose_demand_rises() -> None:
    tight = Policy(envelope_watts=2400, hysteresis_watts=50, step_watts=25)
    node = SimulatedNode({"a": 650.0, "b": 650.0, "c": 650.0, "d": 100.0}, tight)
    for _ in range(6):
        node.cycle()
    before = dict(node.limits)
    node.demands.update(d=650.0, a=100.0)  # the work moved from a to d
    for _ in range(6):
        node.cycle()
    assert node.limits["d"] > before["d"] + 300
    assert node.limits["a"] < before["a"] - 300
    assert sum(node.limits.values()) <= 2400 - OTHER_WATTS - 50


def test_limits_rise_back_when_the_envelope_grows() -> None:
    node = SimulatedNode(dict.fromkeys("abcd", 650.0))
    for _ in range(3):
        node.cycle()
    assert max(node.limits.values()) < 650
    node.policy = Policy(envelope_watts=4000, hysteresis_watts=50, step_watts=25)
    for _ in range(3):
        node.cycle()
    assert min(node.limits.values()) >= 650  # what they draw, at once: a raise is safe under the sum
    node.policy = Policy(envelope_watts=None, hysteresis_watts=50, step_watts=25)
    limits = [node.cycle() for _ in range(4)]  # no envelope: back up a step at a time
    assert all(watts <= 700 for changes in limits for watts in changes.values())
    assert node.limits == dict.fromkeys("abcd", 700.0)


def test_the_node_wants_its_gpus_peaks_with_idle_ones_at_their_minimum() -> None:
    gpus = [_gpu("a", 300, peak=650), _gpu("b", 100)]
    assert node_wanted_watts(gpus, 400 + 400) == 400 + 650 + 200


# The capper over the simulated NVML.
def _server(tmp_path: Path, **gpu_changes: object) -> tuple[FakeNvml, Clock, list[NvmlDevice]]:
    profile = load_profile("h100x8")
    groups = tuple(group.model_copy(update={"steady_load": 0.9, **gpu_changes}) for group in profile.gpus)
    profile = profile.model_copy(update={"gpus": groups, "driver_state_path": tmp_path / "driver.json"})
    clock = Clock()
    fake = FakeNvml(SimProfile.model_validate(profile.model_dump()), clock)
    fake.nvmlInit()
    backend = NvmlBackend(fake)
    backend.close()  # stops the PCIe sampler thread; the devices still answer the fake
    fake.nvmlInit()
    return fake, clock, list(backend.devices())


def _snapshot(devices: list[NvmlDevice], extra_watts: float = 0.0) -> Snapshot:
    samples = []
    for device in devices:
        power = device.read().power_watts or 0.0
        samples.append(Sample(PLAIN.power, (str(device.identity.index), device.identity.uuid), power))
    node = sum(s.value for s in samples) + extra_watts
    return Snapshot(1, 0.0, 0.0, SampleIndex([*samples, Sample(NODE_POWER, (), node)]), ())


def _capper(
    devices: list[NvmlDevice], tmp_path: Path, clock: Clock, envelope: float | EnvelopeHolder
) -> PowerCapper:
    holder = envelope if isinstance(envelope, EnvelopeHolder) else EnvelopeHolder(envelope)
    return PowerCapper(
        "enforce",
        devices,
        envelope=lambda: holder.current_watts,
        hysteresis_watts=50.0,
        step_watts=25.0,
        hold_seconds=30.0,
        state_file=StateFile(tmp_path / "state"),
        clock=clock,
    )


def _node_power(devices: list[NvmlDevice]) -> float:
    return _snapshot(devices).samples.value(NODE_POWER.name) or 0.0


def test_a_steady_overload_is_cut_once_and_then_left_alone(tmp_path: Path) -> None:
    _, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    assert _node_power(devices) > 4500
    actions = []
    for _ in range(30):
        capper.step(_snapshot(devices))
        clock.now += 1.0
        actions.append(capper.view.actions["cut"] + capper.view.actions["raise"])
    assert _node_power(devices) <= 4000.0
    assert capper.view.state == STATE_CAPPING
    assert actions[-1] == actions[2]  # no change after the first cycles: no oscillation


def test_limits_come_back_when_the_envelope_grows(tmp_path: Path) -> None:
    fake, clock, devices = _server(tmp_path)
    holder = EnvelopeHolder(None)
    holder.offer_fleet(4000.0)
    capper = _capper(devices, tmp_path, clock, envelope=holder)
    for _ in range(3):
        capper.step(_snapshot(devices))
        clock.now += 1.0
    assert capper.view.state == STATE_CAPPING
    holder.offer_fleet(8000.0)  # the fleet's budget gave this node more than its GPUs can draw
    for _ in range(3):
        capper.step(_snapshot(devices))
        clock.now += 1.0
    limits = [fake.nvmlDeviceGetEnforcedPowerLimit(fake.nvmlDeviceGetHandleByIndex(i)) for i in range(8)]
    assert limits == [700_000] * 8
    assert capper.view.state == STATE_IDLE


def test_a_gpu_without_a_reading_still_counts_in_the_sum_of_limits(tmp_path: Path) -> None:
    fake, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    full = _snapshot(devices)
    unread = devices[0].identity.uuid
    samples = [s for s in full.samples.named(PLAIN.power.name) if s.label("uuid") != unread]
    node = Sample(NODE_POWER, (), full.samples.value(NODE_POWER.name) or 0.0)  # it still draws
    capper.step(Snapshot(1, 0.0, 0.0, SampleIndex([*samples, node]), ()))
    handles = [fake.nvmlDeviceGetHandleByIndex(i) for i in range(len(devices))]
    assert sum(fake.nvmlDeviceGetEnforcedPowerLimit(h) for h in handles) <= (4000.0 - 50.0) * 1000


def test_a_gpu_its_power_cap_slows_is_held_back_though_it_draws_under_its_limit(tmp_path: Path) -> None:
    """A real GPU at its cap averages a little under it; NVML's power-cap clock reason says so."""
    fake, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=3500.0)  # 3450 W for the GPUs
    samples = []
    for device in devices:
        labels = (str(device.identity.index), device.identity.uuid)
        samples.append(Sample(PLAIN.power, labels, 400.0))  # each wants 412 W
        capped = device.identity.index == 0
        samples.append(Sample(PLAIN.throttle, (*labels, "power"), 1.0 if capped else 0.0))
    node = Sample(NODE_POWER, (), 8 * 400.0)
    capper.step(Snapshot(1, 0.0, 0.0, SampleIndex([*samples, node]), ()))
    limits = [fake.nvmlDeviceGetEnforcedPowerLimit(fake.nvmlDeviceGetHandleByIndex(i)) for i in range(8)]
    assert limits[0] > max(limits[1:]) + 100_000  # the room left goes to the one held back first
    assert sum(limits) <= 3450_000


def test_close_restores_every_limit_it_set_and_forgets_them(tmp_path: Path) -> None:
    _, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    capper.step(_snapshot(devices))
    state_file = tmp_path / "state" / "power-capping.json"
    assert set(json.loads(state_file.read_text())["gpus"]) == {d.identity.uuid for d in devices}
    assert set(read_driver_state(tmp_path / "driver.json").values()) != {700_000}
    capper.close()
    assert set(read_driver_state(tmp_path / "driver.json").values()) == {700_000}
    assert not state_file.exists()


def test_a_start_after_a_crash_restores_what_the_last_run_set(tmp_path: Path) -> None:
    fake, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    capper.step(_snapshot(devices))  # then the process dies: no close
    someone = fake.nvmlDeviceGetHandleByIndex(5)
    fake.nvmlDeviceSetPowerManagementLimit(someone, 450_000)  # an admin's nvidia-smi -pl since
    _, _, devices_after_restart = _server(tmp_path)  # the driver kept the limits
    config = AgentConfig(power_capping_state_dir=tmp_path / "state")
    assert capper_for(config, devices_after_restart) is None  # capping off
    kept = read_driver_state(tmp_path / "driver.json")
    assert kept.pop(devices[5].identity.uuid) == 450_000  # not ours: left alone
    assert set(kept.values()) == {700_000}
    assert not (tmp_path / "state" / "power-capping.json").exists()


# Refusals: one log line and a metric per GPU, never a crash.
@pytest.mark.parametrize(
    ("control", "reason"), [("no_permission", "no_permission"), ("not_supported", "not_supported")]
)
def test_a_gpu_that_refuses_is_dropped_with_its_reason(tmp_path: Path, control: str, reason: str) -> None:
    _, clock, devices = _server(tmp_path, power_limit_control=control)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    capper.step(_snapshot(devices))
    capper.step(_snapshot(devices))
    sink = SampleSink(0.0)
    PowerCappingCollector(capper).collect(sink)
    disabled = [s for s in sink.samples if s.spec.name == "esnode_gpu_power_capping_disabled"]
    assert {s.label("reason") for s in disabled} == {reason}
    assert len(disabled) == len(devices)
    assert capper.view.actions["refused"] == (len(devices) if control == "no_permission" else 0)
    assert read_driver_state(tmp_path / "driver.json") == {}


def test_a_lost_gpu_is_dropped_and_the_others_are_capped(tmp_path: Path) -> None:
    fake, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    readings = _snapshot(devices)
    fake.fail_gpu(2)  # lost between the cycle's readings and the capper's call
    capper.step(readings)
    assert list(capper.view.disabled.values()) == [(2, "gpu_lost")]
    assert len(read_driver_state(tmp_path / "driver.json")) == len(devices) - 1


def test_out_of_range_limits_are_refused_as_nvml_refuses_them(tmp_path: Path) -> None:
    _, _, devices = _server(tmp_path)
    with pytest.raises(PowerLimitError) as refused:
        devices[0].set_power_limit_milliwatts(150_000)  # under the 200 W minimum
    assert refused.value.reason == "out_of_range"
    limits = devices[0].power_limits()
    assert (limits.min_watts, limits.max_watts, limits.default_watts) == (200.0, 700.0, 700.0)


def test_capping_needs_an_envelope_or_a_fleet_to_get_one_from() -> None:
    with pytest.raises(ValueError, match="needs node_power_envelope_watts, or a fleet"):
        AgentConfig(power_capping="enforce")
    assert AgentConfig(power_capping="enforce", fleet="gpus").node_power_envelope_watts is None
    off_cluster = AgentConfig(power_capping="enforce", fleet="gpus", enable_gpu=False)
    with pytest.raises(ConfigError, match="no node report"):  # a fleet, but nothing reports to it
        build_capper(off_cluster, build_collectors(off_cluster), reporting=False)


def test_capping_follows_the_fleet_envelope_holding_until_the_first_arrives(tmp_path: Path) -> None:
    fake, clock, devices = _server(tmp_path)
    config = AgentConfig(
        power_capping="enforce",
        fleet="gpus",
        power_capping_state_dir=tmp_path / "state",
        power_capping_hold_seconds=0,  # the capper runs on the real clock here
    )
    collectors = build_collectors(config.model_copy(update={"enable_gpu": False}))
    holder = next(c.holder for c in collectors if isinstance(c, EnvelopeCollector))
    capper = capper_for(config, devices, holder)  # as build_capper wires it
    follow = follow_fleet_envelope(collectors)
    assert capper is not None and follow is not None

    def cycles(count: int) -> list[float]:
        powers = []
        for _ in range(count):
            capper.step(_snapshot(devices))
            clock.now += 1.0
            powers.append(_node_power(devices))
        return powers

    assert max(cycles(5)) > 4500  # no envelope yet: nothing is cut
    assert capper.view.state == STATE_NO_ENVELOPE and capper.view.actions["cut"] == 0
    follow(4000.0)  # the node report brought the fleet's envelope
    assert max(cycles(10)[2:]) <= 4000.0
    assert capper.view.state == STATE_CAPPING
    follow(None)  # the fleet's budget was turned off: limits go back up, a step at a time
    limits = [fake.nvmlDeviceGetEnforcedPowerLimit(fake.nvmlDeviceGetHandleByIndex(0))]
    for _ in range(20):
        cycles(1)
        limits.append(fake.nvmlDeviceGetEnforcedPowerLimit(fake.nvmlDeviceGetHandleByIndex(0)))
    assert max(after - before for before, after in itertools.pairwise(limits)) <= 25_000
    assert limits[-1] == 700_000 and capper.view.state == STATE_NO_ENVELOPE


def test_a_configured_envelope_wins_over_the_fleets_for_the_capper(tmp_path: Path) -> None:
    _, clock, devices = _server(tmp_path)
    holder = EnvelopeHolder(4000.0)
    holder.offer_fleet(9000.0)
    capper = _capper(devices, tmp_path, clock, envelope=holder)
    for _ in range(8):
        capper.step(_snapshot(devices))
        clock.now += 1.0
    assert _node_power(devices) <= 4000.0


def test_the_node_report_shows_a_capped_node(tmp_path: Path) -> None:
    _, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)
    readings = _snapshot(devices, extra_watts=300.0)  # the rest of the node: 300 W
    capper.step(readings)
    sink = SampleSink(0.0)
    PowerCappingCollector(capper).collect(sink)
    snapshot = Snapshot(2, 0.0, 0.0, SampleIndex(sink.samples), ())
    report = build_report(snapshot, "node-a", "fleet", heartbeat_seconds=60)
    assert report.power_capping == "capping"
    assert report.capped_gpus == len(capper.view.gpus) - sum(g.esnode_watts is None for g in capper.view.gpus)
    assert report.capped_gpus > 0
    assert report.model_dump(by_alias=True)["powerCapping"] == "capping"  # the printer column's path
    # What the fleet's budget shares by: every GPU's peak so far (its only reading) and the rest.
    assert report.model_dump(by_alias=True)["powerWantedWatts"] == pytest.approx(
        readings.samples.value(NODE_POWER.name), abs=0.1
    )


def test_advise_exports_the_limits_it_would_set_and_sets_none(tmp_path: Path) -> None:
    _, clock, devices = _server(tmp_path)
    capper = PowerCapper(
        "advise",
        devices,
        envelope=lambda: 4000.0,
        hysteresis_watts=50.0,
        step_watts=25.0,
        hold_seconds=30.0,
        state_file=StateFile(tmp_path / "state"),
        clock=clock,
    )
    capper.step(_snapshot(devices))
    sink = SampleSink(0.0)
    PowerCappingCollector(capper).collect(sink)
    advised = [s.value for s in sink.samples if s.spec.name == "esnode_gpu_power_limit_esnode_watts"]
    assert advised and max(advised) < 700.0
    assert read_driver_state(tmp_path / "driver.json") == {}
    assert not (tmp_path / "state" / "power-capping.json").exists()


def test_enforce_without_a_writable_state_dir_is_a_config_error(tmp_path: Path) -> None:
    _, _, devices = _server(tmp_path)
    (tmp_path / "file").write_text("")
    config = AgentConfig(
        power_capping="enforce", node_power_envelope_watts=4000.0, power_capping_state_dir=tmp_path / "file"
    )
    with pytest.raises(ConfigError, match="power_capping_state_dir"):
        capper_for(config, devices)


def test_a_corrupt_state_file_stops_enforce_and_only_warns_when_off(tmp_path: Path) -> None:
    _, _, devices = _server(tmp_path)
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "power-capping.json").write_text("{not json")
    enforce = AgentConfig(
        power_capping="enforce", node_power_envelope_watts=4000.0, power_capping_state_dir=tmp_path / "state"
    )
    with pytest.raises(ConfigError, match="not a power-capping state file"):
        capper_for(enforce, devices)
    assert capper_for(AgentConfig(power_capping_state_dir=tmp_path / "state"), devices) is None


def test_entries_for_gpus_this_run_does_not_see_are_kept(tmp_path: Path) -> None:
    _, clock, devices = _server(tmp_path)
    _capper(devices, tmp_path, clock, envelope=4000.0).step(_snapshot(devices))  # then a crash
    capper_for(AgentConfig(power_capping_state_dir=tmp_path / "state"), devices[:4])
    left = json.loads((tmp_path / "state" / "power-capping.json").read_text())["gpus"]
    assert set(left) == {d.identity.uuid for d in devices[4:]}


def test_a_state_file_that_stops_taking_writes_refuses_changes_and_never_raises(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, clock, devices = _server(tmp_path)
    capper = _capper(devices, tmp_path, clock, envelope=4000.0)

    def full_disk(self: StateFile, state: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(StateFile, "save", full_disk)
    capper.step(_snapshot(devices))
    assert capper.view.actions["refused"] == len(devices)
    assert read_driver_state(tmp_path / "driver.json") == {}  # nothing set that could not be recorded
