"""The fleet power budget kept shared out: envelope writes (bounded, cuts first), status, model."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from esnode_operator.api.models import FleetSpec, NodeReportSpec, PowerBudget
from esnode_operator.kube import KubeError
from esnode_operator.metrics import OperatorMetrics
from esnode_operator.power.budget import node_bounds
from esnode_operator.power.fleet_budget import RAISE_INTERVAL_SECONDS, FleetBudget, budget_condition
from esnode_operator.power.fleet_loop import PowerStatus, keep_power_status
from esnode_operator.power.summary import NodeEntry, node_entry

NOW = 1_800_000_000.0
BUDGET = PowerBudget(total_watts=9000.0, floor_watts=1000.0, ceiling_watts=5000.0)


def node(
    name: str,
    power: float = 4000.0,
    *,
    written: float | None = None,
    holds: float | None = None,
    age_seconds: float = 1.0,
    capped: int = 0,
    gpus: int = 0,
    gpu_watts: float | None = None,
) -> NodeEntry:
    """``gpus`` H100s (limits 200-700 W) drawing ``gpu_watts`` in all, when given."""
    return NodeEntry(
        node=name,
        fleet="f",
        node_power_watts=power,
        gpu_power_watts=gpu_watts,
        gpu_count=gpus,
        gpu_power_limit_min_watts=200.0 * gpus if gpus else None,
        gpu_power_limit_max_watts=700.0 * gpus if gpus else None,
        last_report_time=datetime.fromtimestamp(NOW - age_seconds, UTC),
        heartbeat_seconds=5.0,
        spec_envelope_watts=written,
        envelope_watts=holds if holds is not None else written,
        capped_gpus=capped,
    )


def apply(nodes: list[NodeEntry], writes: list[tuple[str, float | None]]) -> list[NodeEntry]:
    """The index after the writes: each node's spec holds what was written, and the agent took it."""
    done = dict(writes)
    return [
        n.model_copy(update={"spec_envelope_watts": done[n.node], "envelope_watts": done[n.node]})
        if n.node in done
        else n
        for n in nodes
    ]


def test_a_budget_below_demand_is_written_within_the_budget_and_then_holds() -> None:
    shares = FleetBudget()
    nodes = [node("a", 4000.0), node("b", 4000.0), node("c", 2000.0)]  # 10 kW wanted, 9 kW fed
    step = shares.step(BUDGET, nodes, NOW)
    assert {name for name, _ in step.writes} == {"a", "b", "c"}
    assert sum(w for _, w in step.writes if w is not None) <= 9000.0
    assert all(1000.0 <= (w or 0) <= 5000.0 for _, w in step.writes)
    nodes = apply(nodes, step.writes)
    for second in range(1, 120):  # a steady fleet: nothing more is written
        assert shares.step(BUDGET, nodes, NOW + second).writes == []


def test_a_capping_node_is_shared_what_it_says_it_wants_when_that_is_more_than_its_power() -> None:
    """Its GPUs' peaks do not coincide and its idle GPUs hold their minimum limits: its power
    understates what its limits need, and its agent reports that as powerWantedWatts."""
    wanting = node("wanting", 3000.0).model_dump(by_alias=True, mode="json")
    body = {
        "metadata": {"name": "wanting"},
        "spec": {"fleet": "f"},
        "status": {**wanting, "powerWantedWatts": 4000.0},
    }
    entry = node_entry(body)
    assert entry is not None and entry.power_wanted_watts == 4000.0
    step = FleetBudget().step(BUDGET, [entry, node("plain", 3000.0)], NOW)
    envelopes = dict(step.writes)
    assert (envelopes["wanting"] or 0) >= 4000.0 + 0.05 * 5000.0  # its want and the margin
    assert (envelopes["wanting"] or 0) > (envelopes["plain"] or 0)
    assert sum(w for w in envelopes.values() if w is not None) <= 9000.0


def test_cuts_go_first_and_a_raise_waits_for_its_interval_and_the_room() -> None:
    shares = FleetBudget()
    nodes = apply([node("a", 4000.0), node("b", 1000.0)], [("a", 5000.0), ("b", 3000.0)])
    for name, watts in [("a", 5000.0), ("b", 3000.0)]:
        shares.written(name, watts, None, NOW)  # both raised just now
    grown = [
        nodes[0].model_copy(update={"node_power_watts": 1000.0}),
        nodes[1].model_copy(update={"node_power_watts": 4500.0}),
    ]
    step = shares.step(BUDGET, grown, NOW + 1)
    assert step.writes and step.writes[0][0] == "a" and step.writes[0][1] < 5000.0  # the cut
    assert [name for name, _ in step.writes] == ["a"]  # b's raise waits: raised a second ago
    grown = apply(grown, step.writes)
    reported = datetime.fromtimestamp(NOW + RAISE_INTERVAL_SECONDS, UTC)  # they kept reporting
    grown = [n.model_copy(update={"last_report_time": reported}) for n in grown]
    later = shares.step(BUDGET, grown, NOW + 1 + RAISE_INTERVAL_SECONDS)
    assert [name for name, _ in later.writes] == ["b"]
    assert sum(n.spec_envelope_watts or 0 for n in apply(grown, later.writes)) <= 9000.0


def test_a_raise_waits_until_the_cut_that_makes_its_room_is_in_force() -> None:
    shares = FleetBudget()
    nodes = apply([node("a", 4000.0), node("b", 1000.0)], [("a", 5000.0), ("b", 3000.0)])
    grown = [
        nodes[0].model_copy(update={"node_power_watts": 1000.0}),
        nodes[1].model_copy(update={"node_power_watts": 4500.0}),
    ]
    step = shares.step(BUDGET, grown, NOW)
    assert [name for name, _ in step.writes] == ["a"]  # b's room is a's, which a's agent still holds
    written = [grown[0].model_copy(update={"spec_envelope_watts": step.writes[0][1]}), grown[1]]
    assert shares.step(BUDGET, written, NOW + 1).writes == []  # written, not yet taken by a's agent
    taken = apply(written, step.writes)  # a's next report shows its agent holds the cut
    later = shares.step(BUDGET, taken, NOW + 2)
    assert [name for name, _ in later.writes] == ["b"]
    assert sum(n.envelope_watts or 0 for n in apply(taken, later.writes)) <= 9000.0


def test_a_silent_node_keeps_its_envelope_and_a_stale_one_gets_its_ceiling_reserved() -> None:
    shares = FleetBudget()
    nodes = apply([node("a"), node("b")], [("a", 4500.0), ("b", 4500.0)])
    silent = [
        nodes[0],
        nodes[1].model_copy(update={"last_report_time": datetime.fromtimestamp(NOW - 12, UTC)}),
    ]
    step = shares.step(BUDGET, silent, NOW)
    assert step.writes == []  # b missed a report: both keep theirs
    stale = [
        nodes[0],
        nodes[1].model_copy(update={"last_report_time": datetime.fromtimestamp(NOW - 20, UTC)}),
    ]
    step = shares.step(BUDGET, stale, NOW)
    assert step.writes == [("a", 4000.0)]  # b may draw its 5 kW ceiling unseen: a gets the rest
    assert "b" not in dict(step.writes)


def test_a_static_envelope_wins_and_is_reserved() -> None:
    step = FleetBudget().step(BUDGET, [node("a", holds=3000.0), node("b", 4000.0)], NOW)
    assert [name for name, _ in step.writes] == ["b"]
    assert dict(step.writes)["b"] <= 6000.0


def test_floors_the_budget_cannot_cover_say_so_and_turning_the_budget_off_takes_envelopes_back() -> None:
    tight = PowerBudget(total_watts=2500.0, floor_watts=1000.0, ceiling_watts=5000.0)
    nodes = [node("a"), node("b"), node("c")]
    status = PowerStatus({})
    shares = FleetBudget()
    step = shares.step(tight, nodes, NOW)
    fragment = status.update(nodes, NOW, "2027-01-15T08:00:00Z", (tight, step))
    assert fragment is not None
    budget = next(c for c in fragment["conditions"] if c["type"] == "BudgetInsufficient")
    assert (budget["status"], budget["reason"]) == ("True", "FloorsExceedBudget")
    power = fragment["power"]
    assert (power["budgetWatts"], power["allocatedWatts"], power["headroomWatts"]) == (
        2500.0,
        3000.0,
        -9500.0,
    )
    off = shares.step(PowerBudget(), apply(nodes, step.writes), NOW + 1)
    assert sorted(off.writes) == [("a", None), ("b", None), ("c", None)]


def test_a_nodes_floor_and_ceiling_come_from_its_gpu_limits_and_the_rest_of_the_node() -> None:
    assert node_bounds(1600.0, 5600.0, 400.0, 1000.0, 12000.0) == (2000.0, 6000.0)
    assert node_bounds(1600.0, 5600.0, 400.0, 2500.0, 5000.0) == (2500.0, 5000.0)  # the fleet's clamps
    assert node_bounds(1600.0, 5600.0, 400.0, 500.0, 1500.0) == (2000.0, 2000.0)  # no floor below the GPUs'
    assert node_bounds(None, None, 300.0, 1000.0, 12000.0) == (1000.0, 12000.0)  # no GPU limits reported


def test_every_node_gets_its_own_floor_and_floors_above_the_budget_say_so() -> None:
    wide = PowerBudget(total_watts=20000.0, floor_watts=100.0, ceiling_watts=50000.0)
    big = node("big", 6000.0, gpus=8, gpu_watts=5600.0)  # floor 8 x 200 + 400 W
    small = node("small", 3000.0, gpus=2, gpu_watts=1300.0)  # floor 2 x 200 + 1700 W
    step = FleetBudget().step(wide.model_copy(update={"total_watts": 5000.0}), [big, small], NOW)
    envelopes = dict(step.writes)
    assert envelopes["big"] >= 2000.0 and envelopes["small"] >= 2100.0
    assert sum(envelopes.values()) <= 5000.0 and step.covers_floors
    short = FleetBudget().step(wide.model_copy(update={"total_watts": 4000.0}), [big, small], NOW)
    assert dict(short.writes) == {"big": 2000.0, "small": 2100.0}  # floors given, never cut below
    assert not short.covers_floors
    condition = budget_condition(wide.model_copy(update={"total_watts": 4000.0}), short, 2)
    assert condition is not None and (condition["status"], condition["reason"]) == (
        "True",
        "FloorsExceedBudget",
    )
    stale = big.model_copy(update={"last_report_time": datetime.fromtimestamp(NOW - 20, UTC)})
    reserved = FleetBudget().step(wide.model_copy(update={"total_watts": 9000.0}), [stale, small], NOW)
    assert dict(reserved.writes)["small"] == 9000.0 - 6000.0  # big's own ceiling: 8 x 700 + 400 W


def test_the_status_counts_capped_nodes_and_leaves_budget_fields_out_while_off() -> None:
    nodes = [node("a", capped=2), node("b"), node("c", capped=8, age_seconds=30.0)]
    step = FleetBudget().step(BUDGET, nodes, NOW)
    fragment = PowerStatus({}).update(nodes, NOW, "2027-01-15T08:00:00Z", (BUDGET, step))
    assert fragment is not None and fragment["power"]["nodesCapped"] == 1  # c is stale
    off = PowerStatus({}).update(
        nodes, NOW, "2027-01-15T08:00:00Z", (PowerBudget(), FleetBudget().step(PowerBudget(), nodes, NOW))
    )
    assert off is not None and "budgetWatts" not in off["power"]
    assert [c["type"] for c in off["conditions"]] == ["EnvelopeExceeded"]


class FakeKube:
    """Records envelope patches; fails the first ``failures`` like an unreachable apiserver."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.patched: list[tuple[str, Any]] = []
        self.statuses: list[Mapping[str, Any]] = []

    def request(
        self, method: str, path: str, *, query: Mapping[str, str], body: Any, content_type: str
    ) -> None:
        assert (method, content_type) == ("PATCH", "application/merge-patch+json")
        if self.failures:
            self.failures -= 1
            raise KubeError(503, "ServiceUnavailable", "apiserver restarting")
        self.patched.append((path.rsplit("/", 1)[-1], body["spec"]["envelopeWatts"]))

    def apply_status(self, _fleet: Mapping[str, Any], status: Mapping[str, Any], _manager: str) -> None:
        self.statuses.append(status)


def test_the_loop_writes_envelopes_into_the_nodes_and_a_failed_write_stops_the_rest() -> None:
    kube = FakeKube(failures=1)
    periods = [[node("a"), node("b"), node("c", 2000.0)]] * 2
    spec = {"powerBudget": {"totalWatts": 9000, "floorWatts": 1000, "ceilingWatts": 5000}}

    async def pause(_seconds: float) -> None:
        return None

    asyncio.run(
        keep_power_status(
            kube,  # type: ignore[arg-type]
            OperatorMetrics(),
            {
                "apiVersion": "esnode.io/v1alpha1",
                "kind": "EsnodeFleet",
                "metadata": {"namespace": "m", "name": "f"},
            },
            entries=lambda: periods.pop(0),
            stopped=lambda: not periods,
            pause=pause,
            spec=lambda: spec,
        )
    )
    # period 1: the first write fails and nothing else goes out; period 2 writes all three
    assert sorted(name for name, _ in kube.patched) == ["a", "b", "c"]
    assert sum(w for _, w in kube.patched) <= 9000.0
    assert kube.statuses[-1]["power"]["budgetWatts"] == 9000.0


def test_the_budget_model_refuses_a_floor_above_its_ceiling_and_defaults_to_off() -> None:
    assert FleetSpec().power_budget.total_watts is None
    with pytest.raises(ValidationError, match="floorWatts must not exceed ceilingWatts"):
        PowerBudget(floor_watts=3000.0, ceiling_watts=2000.0)
    with pytest.raises(ValidationError):
        PowerBudget(total_watts=0.0)
    assert (
        NodeReportSpec.model_validate({"nodeName": "n", "fleet": "f", "envelopeWatts": 4200}).envelope_watts
        == 4200
    )
