#!/usr/bin/env python3
"""A simulated fleet under a power budget: esnode's budget + per-node capping against static caps and none.

100 nodes x 8 H100 (200-700 W limits), 1 hour in fast-forward, pure functions, no processes. Demand
per GPU follows the simulator's traces (esnode_agent.gpu.sim_demand): a third training steps, a
third diurnal inference, a third the slow wave; each node also draws a steady 600 W besides its
GPUs. At 30 minutes every GPU's demand steps to 95% load for 5 minutes. The feed is 30%
oversubscribed: budget = 77% of the sum of default limits (plus the nodes' other power).

Each control period (the agent's cycle, 5 s) every node's agent applies esnode's capping rule
(esnode_agent.capping.share: guarded, the GPUs' limits never sum above the envelope minus the rest of
the node) to its own envelope, with each GPU's recent draws (esnode_agent.capping.peak); the draw
follows min(demand, limit) (the simulator's power controller settles in ~1 s, well inside a period).
Every operator period (30 s) the operator shares the budget out as envelopes
(esnode_operator.power.budget) from the nodes' reported peak power and peak wanted power
(powerWantedWatts) since its last look; a changed envelope is one API write, and agents take it at
once. Every limit a rule changes is one NVML write. Figures are counted over the hour after two
minutes of warm-up (a running fleet is warm). Compared with:

  * no capping: every GPU at its default limit;
  * static equal caps: every GPU held at (budget / nodes - other power) / 8, what `nvidia-smi -pl` does.

Targets: periods over budget <= 0.1%; delivered work (sum of min(demand, limit) over demand) >= 97%;
back under budget <= 2 periods after the step; API writes <= 1 per node per minute. NVML writes per
GPU per minute are printed too (no target: each is recorded in the agent's state file first).

    python bench/power_budget.py [--nodes 100] [--minutes 60] [--seed 16]
"""

from __future__ import annotations

import argparse
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from esnode_agent.capping.peak import RecentDraws, at_limit
from esnode_agent.capping.share import GpuPower, Policy, next_limits, node_wanted_watts
from esnode_agent.config.model import AgentConfig
from esnode_agent.gpu.sim_demand import Demand, Diurnal, TrainingSteps, Wave
from esnode_operator.power.budget import NodeDemand, Reporting, settle, share_budget

GPUS_PER_NODE = 8
MIN_WATTS, DEFAULT_WATTS, IDLE_WATTS = 200.0, 700.0, 72.0
OTHER_WATTS = 600.0  # CPUs, memory, fans, NICs: not capped
PERIOD_SECONDS = 5.0
OPERATOR_PERIOD_SECONDS = 30.0
OVERSUBSCRIPTION = 0.77
STEP_AT_SECONDS, STEP_FOR_SECONDS, STEP_LOAD = 1800.0, 300.0, 0.95
POLICY_STEP_WATTS = 25.0  # the agent's default
DEADBAND_WATTS = 100.0
WARM_UP_SECONDS = 120.0


def _trace(rng: random.Random, kind: int) -> Demand:
    phase = rng.uniform(0, 2 * math.pi)
    if kind == 0:
        return TrainingSteps(rng.uniform(1.5, 4.0), phase)
    if kind == 1:
        return Diurnal.starting_at(3600.0, phase)
    return Wave(rng.uniform(200, 600), phase)


def demand_watts(trace: Demand, t: float) -> float:
    load = trace.load(t)
    if STEP_AT_SECONDS <= t < STEP_AT_SECONDS + STEP_FOR_SECONDS:
        load = max(load, STEP_LOAD)
    return IDLE_WATTS + (0.95 * DEFAULT_WATTS - IDLE_WATTS) * load


@dataclass
class Node:
    traces: list[Demand]
    limits: list[float] = field(default_factory=lambda: [DEFAULT_WATTS] * GPUS_PER_NODE)
    envelope_watts: float | None = None
    last_cut: float | None = None
    recent: RecentDraws | None = None  # the agent's, made when it starts
    power_watts: float = 0.0
    peak_watts: float = 0.0  # since the operator's last look: what the node's report carries
    wanted_watts: float | None = None  # the same for what its capper says it wants (powerWantedWatts)


@dataclass
class Result:
    periods: int = 0
    over: int = 0
    over_outside_step: int = 0  # not in the two periods after the demand step
    delivered: float = 0.0
    demanded: float = 0.0
    writes: int = 0
    limit_writes: int = 0  # NVML power-limit writes, all GPUs
    recovery_seconds: float | None = None
    worst_over_ratio: float = 0.0  # the most the fleet drew over its budget in one period, relative


def run(
    nodes: list[Node],
    budget: float,
    minutes: float,
    controller: Callable[[float, list[Node]], int],
    *,
    hysteresis_watts: float = AgentConfig.model_fields["power_capping_hysteresis_watts"].default,
    hold_seconds: float = AgentConfig.model_fields["power_capping_hold_seconds"].default,
) -> Result:
    result = Result()
    steps = int((WARM_UP_SECONDS + minutes * 60) / PERIOD_SECONDS)
    over_since_step: float | None = None
    for step in range(steps):
        t = step * PERIOD_SECONDS - WARM_UP_SECONDS
        fleet = 0.0
        limit_writes = 0
        for node in nodes:
            draws = []
            for gpu, trace in enumerate(node.traces):
                demand = demand_watts(trace, t)
                draw = min(demand, node.limits[gpu])
                result.demanded += demand
                result.delivered += draw
                draws.append(draw)
            node.power_watts = OTHER_WATTS + sum(draws)
            node.peak_watts = max(node.peak_watts, node.power_watts)
            fleet += node.power_watts
            limit_writes += _agent(node, draws, t, hysteresis_watts, hold_seconds)
        writes = controller(t, nodes)
        if t < 0:  # agents and operator start from nothing; a fleet runs warm
            result = Result()
            continue
        result.writes += writes
        result.limit_writes += limit_writes
        result.periods += 1
        if fleet > budget:
            result.over += 1
            result.worst_over_ratio = max(result.worst_over_ratio, fleet / budget - 1)
            in_step = STEP_AT_SECONDS <= t < STEP_AT_SECONDS + 2 * PERIOD_SECONDS
            result.over_outside_step += 0 if in_step else 1
            if t >= STEP_AT_SECONDS and over_since_step is None:
                over_since_step = t
        elif over_since_step is not None and result.recovery_seconds is None:
            result.recovery_seconds = t - over_since_step
    if minutes * 60 > STEP_AT_SECONDS and over_since_step is None:
        result.recovery_seconds = 0.0
    return result


def _agent(node: Node, draws: list[float], t: float, hysteresis_watts: float, hold_seconds: float) -> int:
    """One cycle of the node's capper; returns how many limits it wrote."""
    if node.envelope_watts is None:
        return 0
    if node.recent is None:
        node.recent = RecentDraws(hold_seconds)
    gpus = [_gpu_power(node.recent, str(i), t, draws[i], node.limits[i]) for i in range(GPUS_PER_NODE)]
    may_raise = node.last_cut is None or t - node.last_cut >= hold_seconds
    policy = Policy(node.envelope_watts, hysteresis_watts, POLICY_STEP_WATTS)
    changes = next_limits(gpus, node.power_watts, policy, may_raise)
    node.wanted_watts = max(node.wanted_watts or 0.0, node_wanted_watts(gpus, node.power_watts))
    for uuid, watts in changes.items():
        if watts < node.limits[int(uuid)]:
            node.last_cut = t
        node.limits[int(uuid)] = watts
    return len(changes)


def _gpu_power(recent: RecentDraws, uuid: str, t: float, draw_watts: float, limit_watts: float) -> GpuPower:
    window = recent.add(uuid, t, draw_watts, at_limit(draw_watts, limit_watts))
    return GpuPower(
        uuid, draw_watts, window.peak_watts, window.held_back, limit_watts, MIN_WATTS, DEFAULT_WATTS
    )


def _fleet(count: int, seed: int = 16) -> list[Node]:
    rng = random.Random(seed)
    return [Node([_trace(rng, n % 3) for _ in range(GPUS_PER_NODE)]) for n in range(count)]


def _budget_operator(budget: float) -> Callable[[float, list[Node]], int]:
    def operate(t: float, nodes: list[Node]) -> int:
        if t % OPERATOR_PERIOD_SECONDS:
            return 0
        demands = [
            NodeDemand(
                str(i),
                Reporting.FRESH,
                node.peak_watts,
                floor_watts=OTHER_WATTS + GPUS_PER_NODE * MIN_WATTS,
                ceiling_watts=OTHER_WATTS + GPUS_PER_NODE * DEFAULT_WATTS,
                wanted_watts=node.wanted_watts,
            )
            for i, node in enumerate(nodes)
        ]
        previous = {str(i): n.envelope_watts for i, n in enumerate(nodes) if n.envelope_watts is not None}
        envelopes = settle(previous, share_budget(budget, demands), budget, DEADBAND_WATTS)
        writes = 0
        for i, node in enumerate(nodes):
            node.peak_watts, node.wanted_watts = 0.0, None
            if envelopes[str(i)] != node.envelope_watts:
                node.envelope_watts = envelopes[str(i)]
                writes += 1
        return writes

    return operate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=16, help="the fleet's demand traces")
    parser.add_argument(
        "--hysteresis-watts",
        type=float,
        default=AgentConfig.model_fields["power_capping_hysteresis_watts"].default,
        help="the agents' power_capping_hysteresis_watts (default: the agent's default)",
    )
    parser.add_argument(
        "--hold-seconds",
        type=float,
        default=AgentConfig.model_fields["power_capping_hold_seconds"].default,
        help="the agents' power_capping_hold_seconds (default: the agent's default)",
    )
    args = parser.parse_args()
    budget = OVERSUBSCRIPTION * args.nodes * (OTHER_WATTS + GPUS_PER_NODE * DEFAULT_WATTS)
    print(
        f"{args.nodes} nodes x {GPUS_PER_NODE} GPUs, {args.minutes:g} min, period {PERIOD_SECONDS:g} s, "
        f"budget {budget / 1000:.1f} kW (77% of defaults)"
    )

    none = run(_fleet(args.nodes, args.seed), budget, args.minutes, lambda t, nodes: 0)

    static_fleet = _fleet(args.nodes, args.seed)
    static_limit = max(MIN_WATTS, (budget / args.nodes - OTHER_WATTS) / GPUS_PER_NODE)
    for node in static_fleet:
        node.limits = [static_limit] * GPUS_PER_NODE
    static = run(static_fleet, budget, args.minutes, lambda t, nodes: 0)

    esnode = run(
        _fleet(args.nodes, args.seed),
        budget,
        args.minutes,
        _budget_operator(budget),
        hysteresis_watts=args.hysteresis_watts,
        hold_seconds=args.hold_seconds,
    )

    minutes = args.minutes
    rows = [
        ("no capping", none),
        (f"static caps ({static_limit:.0f} W/GPU)", static),
        ("esnode budget + capping", esnode),
    ]
    print(
        f"{'':28} {'over budget':>12} {'(outside step)':>15} {'worst over':>11} {'work delivered':>15} "
        f"{'back under':>11} {'writes/node/min':>16} {'NVML writes/GPU/min':>20}"
    )
    for name, r in rows:
        recovery = "never" if r.recovery_seconds is None else f"{r.recovery_seconds:.0f} s"
        print(
            f"{name:28} {100 * r.over / r.periods:11.2f}% {100 * r.over_outside_step / r.periods:14.2f}% "
            f"{100 * r.worst_over_ratio:10.1f}% {100 * r.delivered / r.demanded:14.2f}% "
            f"{recovery:>11} {r.writes / args.nodes / minutes:16.3f} "
            f"{r.limit_writes / args.nodes / GPUS_PER_NODE / minutes:20.3f}"
        )
    print(
        "targets: over budget <= 0.1%, work >= 97%, back under <= 2 periods "
        f"({2 * PERIOD_SECONDS:g} s), writes <= 1/node/min"
    )


if __name__ == "__main__":
    main()
