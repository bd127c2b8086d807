"""A fleet's power budget kept shared out: which envelopes to write into which EsnodeNode specs.

Each period the budget is shared afresh (``share_budget``), then ``settle`` keeps a node's last
envelope where the new share is within the deadband, so a steady fleet writes nothing. Writes are
bounded and ordered for the feed's sake: cuts go first and at once (they make the room), a raise
waits until the node's last raise is ``RAISE_INTERVAL_SECONDS`` old, and a raise is written only
when the envelopes in force still sum to at most the budget with it: a cut counts once the node's
report shows its agent holds it, so the agents' limits, which sum to at most their envelopes, sum to
at most the budget even while envelopes travel.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from esnode_operator.api.models import PowerBudget, PowerSummary
from esnode_operator.conditions import condition
from esnode_operator.power.budget import NodeDemand, Reporting, node_bounds, settle, share_budget
from esnode_operator.power.summary import NodeEntry

BUDGET_CONDITION = "BudgetInsufficient"
RAISE_INTERVAL_SECONDS = 60.0
DEADBAND_WATTS = 100.0
SILENT_AFTER_HEARTBEATS = 2.0  # a report missed: the node keeps its envelope (stale after 3)


@dataclass(frozen=True, slots=True)
class BudgetStep:
    writes: list[tuple[str, float | None]]  # in order: cuts first; None removes the envelope
    allocated_watts: float
    covers_floors: bool


def reporting(entry: NodeEntry, now_seconds: float) -> Reporting:
    if not entry.fresh(now_seconds):
        return Reporting.STALE
    age_seconds = now_seconds - entry.last_report_time.timestamp()
    return (
        Reporting.SILENT
        if age_seconds > SILENT_AFTER_HEARTBEATS * entry.heartbeat_seconds
        else Reporting.FRESH
    )


def node_demand(entry: NodeEntry, budget: PowerBudget, now_seconds: float) -> NodeDemand:
    # A node holding an envelope the operator never wrote has one from the agent's config: it wins.
    static = entry.envelope_watts if entry.spec_envelope_watts is None else None
    floor, ceiling = node_bounds(
        entry.gpu_power_limit_min_watts,
        entry.gpu_power_limit_max_watts,
        _other_watts(entry),
        budget.floor_watts,
        budget.ceiling_watts,
    )
    return NodeDemand(
        name=entry.node,
        reporting=reporting(entry, now_seconds),
        power_watts=entry.node_power_watts,
        wanted_watts=entry.power_wanted_watts,
        floor_watts=floor,
        ceiling_watts=ceiling,
        static_envelope_watts=static,
        last_envelope_watts=entry.spec_envelope_watts,
    )


def _other_watts(entry: NodeEntry) -> float:
    """What the node draws besides its GPUs (CPUs, fans, NICs): 0 where node power is the GPUs'."""
    if entry.node_power_watts is None or entry.gpu_power_watts is None:
        return 0.0
    return max(0.0, entry.node_power_watts - entry.gpu_power_watts)


class FleetBudget:
    """The envelopes this fleet's nodes were last written, and when each was last raised."""

    def __init__(self) -> None:
        self._raised_at: dict[str, float] = {}

    def step(self, budget: PowerBudget, entries: Iterable[NodeEntry], now_seconds: float) -> BudgetStep:
        nodes = list(entries)
        written = {e.node: e.spec_envelope_watts for e in nodes if e.spec_envelope_watts is not None}
        if budget.total_watts is None:  # off: take back every envelope the budget wrote
            return BudgetStep([(name, None) for name in sorted(written)], 0.0, True)
        demands = [node_demand(entry, budget, now_seconds) for entry in nodes]
        allocation = share_budget(budget.total_watts, demands)
        target = settle(written, allocation, budget.total_watts, DEADBAND_WATTS)
        dynamic = {
            d.name for d in demands if d.static_envelope_watts is None and d.reporting is Reporting.FRESH
        }
        cuts = [(n, w) for n, w in sorted(target.items()) if n in dynamic and w < written.get(n, w + 1)]
        held = _in_force({**written, **dict(cuts)}, nodes)
        raises: list[tuple[str, float | None]] = []
        for name, watts in sorted(target.items()):
            if name not in dynamic or watts <= held.get(name, 0.0) or not self._may_raise(name, now_seconds):
                continue
            if sum(held.values()) - held.get(name, 0.0) + watts <= budget.total_watts:
                held[name] = watts
                raises.append((name, watts))
        return BudgetStep([*cuts, *raises], allocation.allocated_watts, allocation.covers_floors)

    def _may_raise(self, name: str, now_seconds: float) -> bool:
        return now_seconds - self._raised_at.get(name, -RAISE_INTERVAL_SECONDS) >= RAISE_INTERVAL_SECONDS

    def written(self, name: str, watts: float | None, previous: float | None, now_seconds: float) -> None:
        if watts is not None and (previous is None or watts > previous):
            self._raised_at[name] = now_seconds


def _in_force(written: Mapping[str, float], nodes: Iterable[NodeEntry]) -> dict[str, float]:
    """Each written envelope, or the larger one its agent still holds: a cut is in force only once
    the node's report shows it, so no raise is written on room the node may still draw."""
    holding = {e.node: e.envelope_watts for e in nodes if e.envelope_watts is not None}
    return {name: max(watts, holding.get(name, watts)) for name, watts in written.items()}


def budget_summary(
    summary: PowerSummary,
    budget: PowerBudget,
    step: BudgetStep,
    entries: Iterable[NodeEntry],
    now_seconds: float,
) -> PowerSummary:
    if budget.total_watts is None:
        return summary
    drawn = summary.total_power_watts
    return summary.model_copy(
        update={
            "budget_watts": budget.total_watts,
            "allocated_watts": float(round(step.allocated_watts)),
            "headroom_watts": None if drawn is None else float(round(budget.total_watts - drawn)),
            "nodes_capped": sum(1 for e in entries if e.fresh(now_seconds) and e.capped_gpus > 0),
        }
    )


def budget_condition(budget: PowerBudget, step: BudgetStep, nodes: int) -> dict[str, Any] | None:
    """BudgetInsufficient: True when the budget cannot give every node its floor; None while off."""
    if budget.total_watts is None:
        return None
    if step.covers_floors:
        return condition(
            BUDGET_CONDITION,
            False,
            "FloorsCovered",
            f"the budget covers the floors of the fleet's {nodes} nodes",
        )
    return condition(
        BUDGET_CONDITION,
        True,
        "FloorsExceedBudget",
        f"{nodes} nodes' floors and reserved envelopes need more than the budget of {budget.total_watts:g} W",
    )


def envelope_patch(watts: float | None) -> Mapping[str, Any]:
    return {"spec": {"envelopeWatts": watts}}
