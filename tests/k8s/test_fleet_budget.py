"""The fleet power budget on the real control plane: the operator writes per-node envelopes into the
EsnodeNodes' specs, within the budget, and the agents (real processes, simulated 8xH100) hold them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import test_node_reports
from test_node_reports import NODES, agents_for, apply_fleet, power
from test_operator import Cluster

pytestmark = pytest.mark.k8s

# The node reports' fixtures: the operator with its own RBAC, the CRDs and the agents' RBAC.
installed = test_node_reports.installed
cluster = test_node_reports.cluster

FLOOR_WATTS = 500
CEILING_WATTS = 12000


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

        lower = round(0.5 * demand)
        set_budget(cluster, totalWatts=lower)
        cluster.wait(
            f"envelopes within {lower} W, held by the agents", lambda: held_within(cluster, lower), timeout=30
        )
        envelopes = [n["spec"]["envelopeWatts"] for n in esnode_nodes(cluster).values()]
        assert all(FLOOR_WATTS <= e <= CEILING_WATTS for e in envelopes)

        # A node that leaves keeps its envelope until stale; then its ceiling (above this budget) is
        # reserved: the others drop to their floors, and the fleet says the budget cannot cover them.
        agents.stop("kwok-node-3")
        cluster.wait_condition("budget", "BudgetInsufficient", "True", "FloorsExceedBudget", timeout=40)
        cluster.wait(
            "the reporting nodes at their floors",
            lambda: (
                [esnode_nodes(cluster)[n]["spec"]["envelopeWatts"] for n in NODES[:2]] == [FLOOR_WATTS] * 2
            ),
        )
