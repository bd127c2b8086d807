"""A fleet power budget shared out as per-node envelopes. Pure functions.

The rule, in order, never handing out more than the budget in total:

1. A node with a static envelope (``spec.powerEnvelope``) is held to it: its envelope is reserved.
2. A node that stopped reporting keeps its last envelope until its report is stale; a stale node
   gets its ceiling reserved (it may be drawing anything up to that, unseen: fail safe).
3. Every reporting node gets its floor (what its GPUs draw at their minimum limits plus the rest of
   the node: ``node_bounds``). When the remaining budget cannot cover the floors, the floors are still given (an
   agent cannot cap below them) and ``covers_floors`` is False: the fleet says so in a condition.
4. What is left goes first to each node's want (its power now, or what its capping agent says it
   wants when that is more, plus a margin, at most its ceiling),
   in proportion to the wants when they do not all fit; then any remainder in proportion to each
   node's room up to its ceiling, so that a node whose demand grows finds room at once.

Envelopes are rounded down to ``quantum_watts``, so a node's envelope (and the API write that
carries it) changes only when its share moves by a quantum, and rounding never adds watts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class Reporting(StrEnum):
    FRESH = "fresh"
    SILENT = "silent"  # no report lately, not yet stale: keeps its last envelope
    STALE = "stale"


@dataclass(frozen=True, slots=True)
class NodeDemand:
    name: str
    reporting: Reporting
    power_watts: float | None  # the last reported node power
    floor_watts: float  # GPUs at their minimum limits plus the rest of the node (or the fleet's floor)
    ceiling_watts: float  # GPUs at their default limits plus the rest (or the fleet's ceiling)
    static_envelope_watts: float | None = None
    last_envelope_watts: float | None = None
    # What a capping agent says its GPUs' recent peaks (an idle one at its minimum limit) and the rest
    # of the node need: more than its power when its GPUs' peaks do not coincide or some idle.
    wanted_watts: float | None = None


@dataclass(frozen=True, slots=True)
class Allocation:
    envelopes_watts: dict[str, float]
    allocated_watts: float
    covers_floors: bool


def node_bounds(
    gpu_min_watts: float | None,
    gpu_max_watts: float | None,
    other_watts: float,
    clamp_floor_watts: float,
    clamp_ceiling_watts: float,
) -> tuple[float, float]:
    """A node's (floor, ceiling): its GPUs' summed minimum (maximum) power limits plus the power of
    the rest of the node, which no GPU limit controls. The fleet's ``floorWatts`` raises the floor,
    its ``ceilingWatts`` lowers the ceiling, and are both used as they are for a node that reports no
    GPU limits. A floor is never lowered: an agent cannot cap its GPUs below their minimums."""
    floor = max(clamp_floor_watts, (gpu_min_watts or 0.0) + other_watts)
    if gpu_max_watts is None:
        return floor, max(floor, clamp_ceiling_watts)
    return floor, max(floor, min(clamp_ceiling_watts, gpu_max_watts + other_watts))


def share_budget(
    total_watts: float, nodes: Sequence[NodeDemand], margin_ratio: float = 0.05, quantum_watts: float = 10.0
) -> Allocation:
    envelopes: dict[str, float] = {}
    dynamic: list[NodeDemand] = []
    for node in nodes:
        reserved = _reserved(node)
        if reserved is None:
            dynamic.append(node)
        else:
            envelopes[node.name] = reserved
    spare = total_watts - sum(envelopes.values())
    floors = {n.name: n.floor_watts for n in dynamic}
    covers_floors = sum(floors.values()) <= spare
    spare -= sum(floors.values())
    wants = {n.name: max(0.0, _want(n, margin_ratio) - n.floor_watts) for n in dynamic}
    given = _proportional(wants, max(0.0, spare))
    spare -= sum(given.values())
    room = {n.name: max(0.0, n.ceiling_watts - n.floor_watts - given[n.name]) for n in dynamic}
    extra = _proportional(room, max(0.0, spare))
    for node in dynamic:
        share = floors[node.name] + given[node.name] + extra[node.name]
        envelopes[node.name] = max(node.floor_watts, math.floor(share / quantum_watts) * quantum_watts)
    return Allocation(envelopes, sum(envelopes.values()), covers_floors)


def _reserved(node: NodeDemand) -> float | None:
    if node.static_envelope_watts is not None:
        return node.static_envelope_watts
    if node.reporting is Reporting.STALE:
        return node.ceiling_watts
    if node.reporting is Reporting.SILENT:
        return node.last_envelope_watts if node.last_envelope_watts is not None else node.ceiling_watts
    return None


def _want(node: NodeDemand, margin_ratio: float) -> float:
    power = node.power_watts if node.power_watts is not None else node.ceiling_watts
    power = max(power, node.wanted_watts or 0.0)
    return min(node.ceiling_watts, power + margin_ratio * node.ceiling_watts)


def _proportional(wants: dict[str, float], available: float) -> dict[str, float]:
    """Each its want when all fit, else shares of ``available`` in proportion to the wants."""
    total = sum(wants.values())
    if total <= available:
        return dict(wants)
    return {name: available * want / total for name, want in wants.items()}


def settle(
    previous: dict[str, float], allocation: Allocation, total_watts: float, deadband_watts: float
) -> dict[str, float]:
    """Envelopes to write: a node's previous envelope stays where its new share is within the
    deadband and keeping it still fits the budget; only the rest change (an API write each)."""
    settled = dict(allocation.envelopes_watts)
    near = [
        name
        for name, watts in settled.items()
        if name in previous and abs(previous[name] - watts) < deadband_watts
    ]
    near.sort(key=lambda name: previous[name] - settled[name])  # the ones that give watts back first
    for name in near:
        change = previous[name] - settled[name]
        if sum(settled.values()) + change <= total_watts:
            settled[name] = previous[name]
    return settled
