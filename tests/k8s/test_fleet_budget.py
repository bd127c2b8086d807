"""The fleet power budget on the real control plane: the operator writes per-node envelopes into the
EsnodeNodes' specs, within the budget, and the agents (real processes, simulated 8xH100) hold them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import test_node_reports
from test_node_reports import HEARTBEAT_SECONDS, NODES, Agents, agents_for, apply_fleet, power
from test_operator import Cluster

from esnode_agent.report.model import STALE_AFTER_HEARTBEATS

pytestmark = pytest.mark.k8s

# The node reports' fixtures: the operator with its own RBAC, the CRDs and the agents' RBAC.
installed = test_node_reports.installed
cluster = test_node_reports.cluster

FLOOR_WATTS = 500
CEILING_WATTS = 12000
LEAVING_CEILING_WATTS = 4000


def esnode_nodes(cluster: Cluster) -> dict[str, dict[str, Any]]:
    found = cluster.kube.list("esnode.io/v1alpha1", "EsnodeNode", cluster.namespace)
    return {item["metadata"]["name"]: item for item in found}


def fleet_total(cluster: Cluster) -> float | None:
    """The fleet's totalPowerWatts once it sums all 3 nodes' reported power, else None."""
    reported = [n.get("status", {}).get("nodePowerWatts") for n in esnode_nodes(cluster).values()]
    total = power(cluster, "budget").get("totalPowerWatts")
    if len(reported) != len(NODES) or None in reported or total is None:
        return None
    return float(total) if abs(total - sum(reported)) <= 0.05 * total else None


def set_budget(cluster: Cluster, **budget: float) -> None:
    """Only the budget changes (the agents' pods, and so their bound tokens, stay)."""
    patch = json.dumps({"spec": {"powerBudget": budget}})
    cluster.env.kubectl(
        "patch", "esnodefleet", "budget", "-n", cluster.namespace, "--type=merge", "-p", patch
    )


def held_within(cluster: Cluster, budget_watts: float) -> bool:
    """Every node has an envelope in its spec, they sum to at most the budget, and each agent
    reports the envelope its spec gives it."""
    nodes = esnode_nodes(cluster)
    written = [nodes[n].get("spec", {}).get("envelopeWatts") for n in NODES if n in nodes]
    if len(written) != len(NODES) or None in written:
        return False
    reported = [nodes[n].get("status", {}).get("envelopeWatts") for n in NODES]
    return sum(written) <= budget_watts and reported == written


def test_the_operator_shares_a_budget_below_demand_and_the_agents_follow_a_change(
    cluster: Cluster, tmp_path: Path
) -> None:
    limits = {"floorWatts": FLOOR_WATTS, "ceilingWatts": CEILING_WATTS}
    fleet = apply_fleet(cluster, "budget", powerBudget=limits)
    with agents_for(cluster, fleet, tmp_path / "agents") as agents:
        for node in NODES:
            agents.start(node, None)  # no configured envelope: the budget's applies
        cluster.wait("the fleet's total over all 3 nodes", lambda: fleet_total(cluster) is not None)
        demand = fleet_total(cluster) or 0.0
        assert all("envelopeWatts" not in n["spec"] for n in esnode_nodes(cluster).values())  # budget off

        budget = round(0.8 * demand)
        set_budget(cluster, totalWatts=budget)
        cluster.wait(
            f"envelopes within {budget} W, held by the agents",
            lambda: held_within(cluster, budget),
            timeout=30,
        )
        summary = power(cluster, "budget")
        assert summary["budgetWatts"] == budget and summary["allocatedWatts"] <= budget
        assert cluster.condition("budget", "BudgetInsufficient")["status"] == "False"

        lower = max(round(0.6 * demand), 3 * 2100)  # above the 3 floors (~1950 W each): they fit
        set_budget(cluster, totalWatts=lower)
        cluster.wait(
            f"envelopes within {lower} W, held by the agents", lambda: held_within(cluster, lower), timeout=30
        )
        envelopes = [n["spec"]["envelopeWatts"] for n in esnode_nodes(cluster).values()]
        assert all(FLOOR_WATTS <= e <= CEILING_WATTS for e in envelopes)

        # A node that leaves keeps its envelope until stale; then its ceiling (most of this budget) is
        # reserved: the others drop to their own floors (their GPUs' minimum limits plus the rest of
        # the node), and the fleet says the budget cannot cover them.
        agents.stop("kwok-node-3")
        cluster.wait_condition("budget", "BudgetInsufficient", "True", "FloorsExceedBudget", timeout=40)
        cluster.wait("the reporting nodes at their floors", lambda: at_own_floors(cluster, NODES[:2]))


def own_floor(status: dict[str, Any]) -> float:
    """The operator's floor for a node (power/budget.py node_bounds), from its report."""
    other = max(0.0, status["nodePowerWatts"] - status["gpuPowerWatts"])
    return max(FLOOR_WATTS, status["gpuPowerLimitMinWatts"] + other)


def at_own_floors(cluster: Cluster, names: list[str]) -> bool:
    nodes = esnode_nodes(cluster)
    # Within the shares' 10 W quantum and the drift of the rest of the node's power between reports.
    return all(
        abs(nodes[n]["spec"].get("envelopeWatts", 0) - own_floor(nodes[n]["status"])) <= 30 for n in names
    )


class FleetMeter:
    """The fleet's power as its running agents measure it, sampled whenever a wait polls."""

    def __init__(self, agents: Agents) -> None:
        self.agents = agents
        self.samples: list[float] = []

    def sample(self) -> None:
        readings = self.agents.node_power_watts().values()
        if None not in readings:
            self.samples.append(sum(r for r in readings if r is not None))

    def during(self, predicate: Callable[[], bool]) -> Callable[[], bool]:
        def sampled() -> bool:
            self.sample()
            return predicate()

        return sampled


def spec_envelopes(cluster: Cluster) -> dict[str, float | None]:
    return {name: item.get("spec", {}).get("envelopeWatts") for name, item in esnode_nodes(cluster).items()}


def test_capping_agents_hold_the_budget_while_a_node_leaves_and_comes_back(
    cluster: Cluster, tmp_path: Path
) -> None:
    # A ceiling clamp above what a node draws uncapped (~3.4 kW here) and low enough that one stale
    # node's reservation plus the others' floors fits the budget.
    limits = {"floorWatts": FLOOR_WATTS, "ceilingWatts": LEAVING_CEILING_WATTS}
    fleet = apply_fleet(cluster, "budget", powerBudget=limits)
    with agents_for(cluster, fleet, tmp_path / "agents") as agents:

        def start(node: str) -> None:  # no configured envelope: the capper follows the fleet's
            state = str(tmp_path / f"capping-{node}")
            agents.start(node, None, "--power-capping", "enforce", "--power-capping-state-dir", state)

        for node in NODES:
            start(node)
        cluster.wait("the fleet's total over all 3 nodes", lambda: fleet_total(cluster) is not None)
        demand = fleet_total(cluster) or 0.0
        states = [httpx.get(f"{u}/status", timeout=5).json()["power_capping"] for u in agents.urls.values()]
        assert {s["state"] for s in states} == {"no_envelope"}  # no envelope yet: nothing cut
        # One reservation and two floors (~1950 W each) fit, and the agents have to cap.
        budget = max(round(0.85 * demand), LEAVING_CEILING_WATTS + 2 * 2200)
        assert budget < 0.95 * demand, demand

        meter = FleetMeter(agents)
        set_budget(cluster, totalWatts=budget)
        cluster.wait(
            "the agents capping their nodes under the budget",
            meter.during(
                lambda: held_within(cluster, budget) and bool(meter.samples) and meter.samples[-1] <= budget
            ),
            timeout=40,
        )
        meter.samples.clear()  # from here on the fleet must stay under the budget

        leaving, staying = NODES[2], NODES[:2]
        agents.stop(leaving)

        def reserved() -> bool:
            """True once the others leave the stale node its ceiling; until stale, its envelope is
            what the fleet holds for it (the others share no more than the rest)."""
            nodes = esnode_nodes(cluster)
            others = sum(nodes[n]["spec"].get("envelopeWatts") or budget for n in staying)
            age = time.time() - datetime.fromisoformat(nodes[leaving]["status"]["lastReportTime"]).timestamp()
            if age < STALE_AFTER_HEARTBEATS * HEARTBEAT_SECONDS - 1:
                assert others + LEAVING_CEILING_WATTS > budget  # the last envelope held, not the ceiling
            return others + LEAVING_CEILING_WATTS <= budget and held_within_reporting(cluster, staying)

        cluster.wait(f"{leaving} stale and its ceiling reserved", meter.during(reserved), timeout=60)
        cut = spec_envelopes(cluster)

        start(leaving)  # back: its last envelope (still in its spec) holds it from its first report
        cluster.wait(
            f"{leaving} back with a share, the reservation released",
            meter.during(
                lambda: (
                    power(cluster, "budget").get("nodesStale") == 0
                    and held_within(cluster, budget)
                    and any((spec_envelopes(cluster)[n] or 0) > (cut[n] or 0) for n in staying)
                )
            ),
            timeout=90,
        )
        assert cluster.condition("budget", "BudgetInsufficient")["status"] == "False"
        assert len(meter.samples) > 20
        assert max(meter.samples) <= budget, meter.samples  # throughout, as the agents measured it


def held_within_reporting(cluster: Cluster, names: list[str]) -> bool:
    """Each named agent reports holding the envelope its spec gives it."""
    nodes = esnode_nodes(cluster)
    return all(
        nodes[n]["spec"].get("envelopeWatts") is not None
        and nodes[n]["status"].get("envelopeWatts") == nodes[n]["spec"]["envelopeWatts"]
        for n in names
    )
