"""The capping rule, pure: which GPU power limits bring a node under its envelope.

Cut: when node power comes within half a hysteresis of the envelope (so that GPUs still below their
limits, drifting up, are caught before they carry the node over), the excess down to
``envelope - hysteresis`` is shared
across GPUs in proportion to each one's room above its minimum limit (what it draws, or its limit
if lower, minus the minimum), so a GPU idling near its floor is not cut and every GPU keeps its
share of the work. Raise: once node power is below ``envelope - 2 * hysteresis``, capped GPUs go
up by at most ``step`` each, never by more than the headroom, never above their ceiling. In the
band between, nothing changes: a steady overload, once cut, stays put.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuPower:
    uuid: str
    draw_watts: float
    limit_watts: float
    min_watts: float
    ceiling_watts: float  # the limit in force before esnode, at most the default


@dataclass(frozen=True, slots=True)
class Policy:
    envelope_watts: float | None  # None: no envelope (yet): nothing is cut
    hysteresis_watts: float
    step_watts: float


def cut_limits(gpus: Sequence[GpuPower], excess_watts: float) -> dict[str, float]:
    """Limits that take ``excess_watts`` off the GPUs' draw (or all they have above their floors)."""
    room = {g.uuid: max(0.0, min(g.draw_watts, g.limit_watts) - g.min_watts) for g in gpus}
    total = sum(room.values())
    if excess_watts <= 0 or total <= 0:
        return {}
    share = min(1.0, excess_watts / total)
    return {
        g.uuid: max(g.min_watts, min(g.draw_watts, g.limit_watts) - room[g.uuid] * share)
        for g in gpus
        if room[g.uuid] > 0
    }


def raise_limits(gpus: Sequence[GpuPower], headroom_watts: float, step_watts: float) -> dict[str, float]:
    capped = [g for g in gpus if g.limit_watts < g.ceiling_watts]
    if headroom_watts <= 0 or not capped:
        return {}
    each = min(step_watts, headroom_watts / len(capped))
    return {g.uuid: min(g.ceiling_watts, g.limit_watts + each) for g in capped}


def next_limits(
    gpus: Sequence[GpuPower], node_power_watts: float, policy: Policy, may_raise: bool
) -> Mapping[str, float]:
    """The limits to change this cycle (empty: leave them all). Without an envelope nothing is cut
    and limits esnode set go back up a step at a time (a fleet's budget was turned off)."""
    if policy.envelope_watts is None:
        return raise_limits(gpus, math.inf, policy.step_watts) if may_raise else {}
    target = policy.envelope_watts - policy.hysteresis_watts
    if node_power_watts > policy.envelope_watts - policy.hysteresis_watts / 2:
        return cut_limits(gpus, node_power_watts - target)
    if may_raise and node_power_watts < target - policy.hysteresis_watts:
        return raise_limits(gpus, target - node_power_watts, policy.step_watts)
    return {}
