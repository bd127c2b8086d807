"""Opt-in GPU power capping: the sharing rule, the capper over the simulated NVML, restore and errors."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest

from esnode_agent.capping.collector import PowerCappingCollector
from esnode_agent.capping.controller import STATE_CAPPING, STATE_IDLE, STATE_NO_ENVELOPE, PowerCapper
from esnode_agent.capping.share import GpuPower, Policy, cut_limits, next_limits
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


def _gpu(uuid: str, draw: float, limit: float = 700.0, floor: float = 200.0) -> GpuPower:
    return GpuPower(uuid, draw, limit, floor, 700.0)


# The rule.
def test_cuts_sum_to_the_excess_in_proportion_to_room_above_the_floor() -> None:
    gpus = [_gpu("a", 600), _gpu("b", 400), _gpu("c", 210)]
    limits = cut_limits(gpus, 150.0)
    cuts = {g.uuid: g.draw_watts - limits[g.uuid] for g in gpus}
    assert sum(cuts.values()) == pytest.approx(150.0)
    assert cuts["a"] == pytest.approx(2 * cuts["b"])  # room 400 W against 200 W
    assert cuts["c"] < 5  # nearly at its floor: nearly untouched


def test_no_limit_goes_below_the_floor_and_an_idle_gpu_is_not_cut() -> None:
    gpus = [_gpu("a", 500), _gpu("idle", 72)]
    limits = cut_limits(gpus, 10_000.0)
    assert limits == {"a": 200.0}


def test_the_band_between_target_and_envelope_changes_nothing() -> None:
    policy = Policy(envelope_watts=3000, hysteresis_watts=50, step_watts=25)
    gpus = [_gpu("a", 500, limit=500)]
    assert next_limits(gpus, 2960.0, policy, may_raise=True) == {}
    assert next_limits(gpus, 2980.0, policy, may_raise=True)["a"] == pytest.approx(
        470.0
    )  # caught before over
    assert next_limits(gpus, 2910.0, policy, may_raise=True) == {}
    assert next_limits(gpus, 2890.0, policy, may_raise=True) == {"a": 525.0}
    assert next_limits(gpus, 2890.0, policy, may_raise=False) == {}
    assert next_limits(gpus, 3010.0, policy, may_raise=True)["a"] == pytest.approx(440.0)


def test_a_raise_never_exceeds_the_headroom_or_the_ceiling() -> None:
    policy = Policy(envelope_watts=3000, hysteresis_watts=50, step_watts=100)
    gpus = [_gpu("a", 400, limit=400), _gpu("b", 690, limit=690)]
    limits = next_limits(gpus, 2880.0, policy, may_raise=True)
    assert limits == {"a": 435.0, "b": 700.0}  # 70 W of headroom shared; b stops at its ceiling


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


def test_limits_come_back_step_by_step_when_headroom_returns(tmp_path: Path) -> None:
    fake, clock, devices = _server(tmp_path)
    holder = EnvelopeHolder(None)
    holder.offer_fleet(4000.0)
    capper = _capper(devices, tmp_path, clock, envelope=holder)
    for _ in range(3):
        capper.step(_snapshot(devices))
        clock.now += 1.0
    holder.offer_fleet(8000.0)  # the fleet's budget gave this node more
    limits = []
    for _ in range(40):
        capper.step(_snapshot(devices))
        clock.now += 1.0
        limits.append(fake.nvmlDeviceGetEnforcedPowerLimit(fake.nvmlDeviceGetHandleByIndex(0)))
    raises = [after - before for before, after in itertools.pairwise(limits) if after > before]
    assert raises and max(raises) <= 25_000  # mW: at most one step a cycle
    assert limits[-1] == 700_000
    assert capper.view.state == STATE_IDLE


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
    capper.step(_snapshot(devices))
    sink = SampleSink(0.0)
    PowerCappingCollector(capper).collect(sink)
    snapshot = Snapshot(2, 0.0, 0.0, SampleIndex(sink.samples), ())
    report = build_report(snapshot, "node-a", "fleet", heartbeat_seconds=60)
    assert report.power_capping == "capping"
    assert report.capped_gpus == len(capper.view.gpus) - sum(g.esnode_watts is None for g in capper.view.gpus)
    assert report.capped_gpus > 0
    assert report.model_dump(by_alias=True)["powerCapping"] == "capping"  # the printer column's path


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
