"""The capping rule, pure: GPU power limits that hold a node under its envelope, whatever the GPUs do.

A GPU's firmware enforces its power limit within milliseconds, so a node whose limits sum to at most
its envelope minus the power of the rest of the node cannot go over, however suddenly its demand
jumps; a fleet whose envelopes sum to at most its budget cannot either. The rule keeps that sum
there at all times (it is guarded, not reactive), and shares it by what the GPUs want:

- the GPUs' share is ``envelope - other - hysteresis``: ``other`` is node power minus the GPUs'
  draw (CPUs, fans: no limit controls it), the hysteresis covers it rising before the next cycle;
- a GPU wants its recent peak draw plus half a ``step``; one that reached its limit lately was held
  back by it (what it would draw is unknown) and wants a whole ``step`` more;
- the share is filled level by level, smallest first (max-min fair): every GPU gets its minimum, then
  its want; what is left goes to the held-back GPUs up to their ceilings, then to all of them, so a
  GPU whose demand rises finds room at once and room an idle GPU does not use moves to busy ones;
- a limit moves only by ``step`` or more (half a step up for a GPU its limit holds back), unless the
  sum needs it: a steady load costs no writes.
  Cuts come first in the result: applied in order, the limits never sum above the share, not even
  between two writes.

Without an envelope nothing is cut, and limits esnode set go back up ``step`` at a time while
``may_raise`` (the hold time since the last cut has passed): the fleet's budget was turned off.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuPower:
    uuid: str
    draw_watts: float  # now: part of the node power measured with it
    peak_watts: float  # the most it drew lately: what it wants
    held_back: bool  # it reached its limit lately
    limit_watts: float
    min_watts: float
    ceiling_watts: float  # the limit in force before esnode, at most the default


@dataclass(frozen=True, slots=True)
class Policy:
    envelope_watts: float | None  # None: no envelope (yet): nothing is cut
    hysteresis_watts: float
    step_watts: float


def other_watts(gpus: Sequence[GpuPower], node_power_watts: float) -> float:
    """What the rest of the node draws (CPUs, fans, NICs): no GPU limit controls it."""
    return max(0.0, node_power_watts - sum(g.draw_watts for g in gpus))


def node_wanted_watts(gpus: Sequence[GpuPower], node_power_watts: float) -> float:
    """The node power its limits must leave room for: the rest of the node, and each GPU's recent
    peak, at least its minimum (an idle GPU's limit is never below it). What the fleet's budget
    should give the node: its measured power understates it."""
    return other_watts(gpus, node_power_watts) + sum(max(g.min_watts, g.peak_watts) for g in gpus)


def wanted_watts(gpu: GpuPower, step_watts: float) -> float:
    """What the GPU's limit should leave it: its peak and a margin to grow, within its constraints."""
    margin_watts = step_watts if gpu.held_back else step_watts / 2
    return min(_ceiling(gpu), max(gpu.min_watts, gpu.peak_watts + margin_watts))


def share_limits(gpus: Sequence[GpuPower], share_watts: float, step_watts: float) -> dict[str, float]:
    """Each GPU's limit (whole watts) with ``share_watts`` filled by want, then by room up to the
    ceilings of the held-back GPUs, then of all."""
    floors = [g.min_watts for g in gpus]
    wants = [wanted_watts(g, step_watts) for g in gpus]
    held = [_ceiling(g) if g.held_back else want for g, want in zip(gpus, wants, strict=True)]
    ceilings = [_ceiling(g) for g in gpus]
    if share_watts <= sum(wants):
        limits = _fill(floors, wants, share_watts)
    elif share_watts <= sum(held):
        limits = _fill(wants, held, share_watts)
    else:
        limits = _fill(held, ceilings, share_watts)
    return {g.uuid: max(g.min_watts, math.floor(watts)) for g, watts in zip(gpus, limits, strict=True)}


def _ceiling(gpu: GpuPower) -> float:
    return max(gpu.min_watts, gpu.ceiling_watts)


def _fill(lows: Sequence[float], highs: Sequence[float], total_watts: float) -> list[float]:
    """Water-filling: each ``clamp(level, low, high)``, at the level where they sum to the total."""
    if total_watts <= sum(lows):
        return list(lows)
    if total_watts >= sum(highs):
        return list(highs)
    levels = sorted({*lows, *highs})
    sums = [sum(min(max(level, lo), hi) for lo, hi in zip(lows, highs, strict=True)) for level in levels]
    for below, above, sum_below, sum_above in zip(levels, levels[1:], sums, sums[1:], strict=False):
        if sum_below <= total_watts <= sum_above:
            level = below + (above - below) * (total_watts - sum_below) / (sum_above - sum_below)
            return [min(max(level, lo), hi) for lo, hi in zip(lows, highs, strict=True)]
    return list(highs)  # not reached: the sums run from sum(lows) to sum(highs)


def settle(
    gpus: Sequence[GpuPower], targets: Mapping[str, float], share_watts: float, step_watts: float
) -> dict[str, float]:
    """The limits to write, cuts first. A GPU whose target is within a step of its limit keeps it,
    where the limits still sum within the share (the ones that give watts back first); within half a
    step for a raise of a GPU its limit held back, which loses work meanwhile."""
    limits = dict(targets)
    near = sorted(
        (g for g in gpus if abs(g.limit_watts - targets[g.uuid]) < _deadband(g, targets[g.uuid], step_watts)),
        key=lambda g: g.limit_watts - targets[g.uuid],
    )
    for gpu in near:
        if sum(limits.values()) + gpu.limit_watts - limits[gpu.uuid] <= share_watts:
            limits[gpu.uuid] = gpu.limit_watts
    changes = sorted(
        ((g, limits[g.uuid]) for g in gpus if limits[g.uuid] != g.limit_watts),
        key=lambda change: change[1] - change[0].limit_watts,
    )
    return {g.uuid: watts for g, watts in changes}


def _deadband(gpu: GpuPower, target_watts: float, step_watts: float) -> float:
    return step_watts / 2 if gpu.held_back and target_watts > gpu.limit_watts else step_watts


def raise_limits(gpus: Sequence[GpuPower], step_watts: float) -> dict[str, float]:
    capped = (g for g in gpus if g.limit_watts < g.ceiling_watts)
    return {g.uuid: min(g.ceiling_watts, g.limit_watts + step_watts) for g in capped}


def next_limits(
    gpus: Sequence[GpuPower], node_power_watts: float, policy: Policy, may_raise: bool
) -> Mapping[str, float]:
    """The limits to change this cycle, in the order to apply them (empty: leave them all)."""
    if policy.envelope_watts is None:
        return raise_limits(gpus, policy.step_watts) if may_raise else {}
    share_watts = policy.envelope_watts - other_watts(gpus, node_power_watts) - policy.hysteresis_watts
    targets = share_limits(gpus, share_watts, policy.step_watts)
    # Floors above the share are all a GPU can do: they are the limits' sum then.
    return settle(gpus, targets, max(share_watts, sum(targets.values())), policy.step_watts)
