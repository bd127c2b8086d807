"""Faults on the real control plane while a fleet reconciles and its agents report: everything converges.

The apiserver is frozen (SIGSTOP) for 30 s and, separately, killed (SIGKILL) and started again on
its ports and data; the operator is killed mid-reconcile and started again; children are deleted
and edited by hand; the fleet is deleted. After each, the fleet's children are exactly one of each,
its status is right and its node reports are complete. The bounds are generous (a loaded CI
machine); each measured convergence time is printed for the notes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from test_node_reports import (
    HIGH_ENVELOPE_WATTS,
    LOW_ENVELOPE_WATTS,
    NODES,
    Agents,
    agents_for,
    apply_fleet,
    cluster,
    installed,
    power,
)
from test_operator import Cluster, operator_running

from esnode_operator.names import child_name, configmap_name, fleet_selector

pytestmark = pytest.mark.k8s

__all__ = ["cluster", "installed"]  # fixtures, used by name

REPO = Path(__file__).resolve().parents[2]
TESTENV = REPO / "scripts" / "testenv"
HEARTBEAT_SECONDS = 5
STALL_SECONDS = 30
BUDGET_WATTS = 100_000  # above what the three nodes draw: envelopes are written, nothing is cut
FLEET_API = "esnode.io/v1alpha1"
CHILD_KINDS = [
    ("apps/v1", "DaemonSet"),
    ("v1", "ConfigMap"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("rbac.authorization.k8s.io/v1", "Role"),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"),
]


def converged(cluster: Cluster, what: str, predicate: Callable[[], bool], timeout: float) -> float:
    """Seconds until predicate holds (printed); fails the test after timeout."""
    started = time.monotonic()
    try:
        cluster.wait(what, predicate, timeout=timeout)
    except BaseException:
        for found in cluster.kube.list(FLEET_API, "EsnodeFleet", cluster.namespace):
            print("fleet", found["metadata"]["name"], json.dumps(found.get("status")), file=sys.stderr)
        for found in cluster.kube.list(FLEET_API, "EsnodeNode", cluster.namespace):
            print("report", found["metadata"]["name"], json.dumps(found.get("spec")), file=sys.stderr)
        raise
    seconds = time.monotonic() - started
    print(f"converged: {what} in {seconds:.1f} s")
    return seconds


def apiserver_pid(cluster: Cluster) -> int:
    state = json.loads((cluster.env.log_dir.parent / "state.json").read_text())
    pid: int = state["pids"]["kube-apiserver"]
    return pid


def children(cluster: Cluster, fleet: str) -> dict[str, list[str]]:
    """Kind -> names of the fleet's children of that kind (by the fleet's labels)."""
    return {
        kind: sorted(
            o["metadata"]["name"]
            for o in cluster.kube.list(api, kind, cluster.namespace, label_selector=fleet_selector(fleet))
        )
        for api, kind in CHILD_KINDS
    }


def one_of_each(cluster: Cluster, fleet: str) -> bool:
    found = children(cluster, fleet)
    return all(len(names) == 1 for names in found.values())


def reporting(cluster: Cluster, fleet: str, nodes: int, over: int) -> Callable[[], bool]:
    def holds() -> bool:
        summary = power(cluster, fleet)
        return (summary.get("nodesReporting"), summary.get("nodesOverEnvelope")) == (nodes, over)

    return holds


def reports(cluster: Cluster) -> list[str]:
    return sorted(
        o["metadata"]["name"] for o in cluster.kube.list(FLEET_API, "EsnodeNode", cluster.namespace)
    )


def budget_shared(cluster: Cluster) -> Callable[[], bool]:
    """The fleet shows the new budget allocated (its agents' configured envelopes win: no cuts)."""

    def holds() -> bool:
        summary = power(cluster, "faults")
        return summary.get("budgetWatts") == BUDGET_WATTS and summary.get("allocatedWatts", 0) > 0

    return holds


def config_says(cluster: Cluster, fleet: str, text: str) -> Callable[[], bool]:
    def holds() -> bool:
        config_map = cluster.get("v1", "ConfigMap", configmap_name(fleet)) or {}
        return text in "".join((config_map.get("data") or {}).values())

    return holds


def ready_at_generation(cluster: Cluster, fleet: str) -> Callable[[], bool]:
    def holds() -> bool:
        found = cluster.fleet(fleet)
        ready = cluster.condition(fleet, "Ready")
        observed = (found.get("status") or {}).get("observedGeneration")
        return ready.get("status") == "True" and observed == found["metadata"]["generation"]

    return holds


@pytest.fixture
def reporting_fleet(cluster: Cluster, tmp_path: Path) -> Iterator[tuple[Cluster, Agents]]:
    """Fleet `faults`, its three agents reporting, all within their envelopes."""
    fleet = apply_fleet(cluster, "faults", nodeCondition=True, report={"heartbeatSeconds": HEARTBEAT_SECONDS})
    with agents_for(cluster, fleet, tmp_path / "agents") as agents:
        for node in NODES:
            agents.start(node, HIGH_ENVELOPE_WATTS)
        cluster.wait("3 nodes reporting", reporting(cluster, "faults", 3, 0), timeout=60)
        yield cluster, agents


def test_an_apiserver_frozen_for_30_seconds_converges_with_nothing_lost_or_doubled(
    reporting_fleet: tuple[Cluster, Agents],
) -> None:
    cluster, agents = reporting_fleet
    # Changes in flight when the apiserver freezes: a fleet update the operator has yet to
    # reconcile (a budget: the agents' pods, and so their bound tokens, stay), and an agent whose
    # node goes over its envelope.
    patch = json.dumps({"spec": {"powerBudget": {"totalWatts": BUDGET_WATTS}}})
    cluster.env.kubectl(
        "patch", "esnodefleet", "faults", "-n", cluster.namespace, "--type=merge", "-p", patch
    )
    agents.restart("kwok-node-2", LOW_ENVELOPE_WATTS)
    pid = apiserver_pid(cluster)
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(STALL_SECONDS)
    finally:
        os.kill(pid, signal.SIGCONT)

    converged(cluster, "the breach in the fleet's status", reporting(cluster, "faults", 3, 1), timeout=120)
    converged(cluster, "Ready at the new generation", ready_at_generation(cluster, "faults"), timeout=120)
    converged(cluster, "the budget shared out", budget_shared(cluster), timeout=120)
    assert one_of_each(cluster, "faults"), children(cluster, "faults")
    assert reports(cluster) == NODES
    assert power(cluster, "faults")["overEnvelopeNodes"] == ["kwok-node-2"]


def test_an_apiserver_killed_and_restarted_converges_and_agents_report_again(
    reporting_fleet: tuple[Cluster, Agents],
) -> None:
    cluster, agents = reporting_fleet
    with cluster.outage():  # `restart` returns once /readyz is ok
        subprocess.run([str(TESTENV), "restart", "--kill", "kube-apiserver"], check=True, timeout=180)
    back = time.monotonic()
    agents.restart("kwok-node-3", LOW_ENVELOPE_WATTS)  # a breach that starts after the restart
    converged(cluster, "the breach after a restart", reporting(cluster, "faults", 3, 1), timeout=120)
    print(f"apiserver back -> breach shown: {time.monotonic() - back:.1f} s")
    assert one_of_each(cluster, "faults"), children(cluster, "faults")
    assert reports(cluster) == NODES
    assert cluster.condition("faults", "Ready")["status"] == "True"


def test_an_operator_killed_mid_reconcile_is_restarted_without_duplicates(
    cluster: Cluster, tmp_path: Path
) -> None:
    spec = {"serviceMonitor": {"enabled": False}, "nodeCondition": True}
    for index in range(3):  # several reconciles in flight when the operator dies
        cluster.apply(f"killed-{index}", {**spec, "nodeSelector": {"kubernetes.io/hostname": NODES[index]}})
    cluster.process.kill()  # SIGKILL: no finalizers released, no status written
    cluster.process.wait()
    kubeconfig = tmp_path / "operator.kubeconfig"  # the operator's own identity (test_node_reports)
    with operator_running(cluster.env, cluster.namespace, kubeconfig, tmp_path / "restarted") as again:
        for index in range(3):
            name = f"killed-{index}"
            converged(again, f"{name} Ready", ready_at_generation(again, name), timeout=120)
            assert one_of_each(again, name), children(again, name)
            assert again.agent_nodes(name) == [NODES[index]]


def test_children_deleted_or_edited_by_hand_are_restored(cluster: Cluster) -> None:
    apply_fleet(cluster, "faults")
    before = children(cluster, "faults")
    for api, kind in CHILD_KINDS:
        [name] = before[kind]
        cluster.env.kubectl("delete", kind.lower(), name, "-n", cluster.namespace, "--wait=false")
        converged(
            cluster,
            f"the deleted {kind} back",
            lambda api=api, kind=kind, name=name: cluster.get(api, kind, name) is not None,
            timeout=30,  # the operator watches its children: well before the 60 s resync
        )
    name = configmap_name("faults")
    edited = {"data": {"esnode.toml": "scrape_interval_seconds = 999\n"}}
    cluster.env.kubectl(
        "patch", "configmap", name, "-n", cluster.namespace, "--type=merge", "-p", json.dumps(edited)
    )
    converged(
        cluster, "the edited ConfigMap restored", lambda: not config_says(cluster, "faults", "999")(), 90
    )
    assert children(cluster, "faults") == before
    assert cluster.condition("faults", "Ready")["status"] == "True"


def test_deleting_the_fleet_removes_its_children_and_node_reports(
    reporting_fleet: tuple[Cluster, Agents],
) -> None:
    cluster, agents = reporting_fleet
    agents.close()  # agents would recreate their reports; in a cluster their DaemonSet goes too
    cluster.env.kubectl("delete", "esnodefleet", "faults", "-n", cluster.namespace, "--wait=false")

    def all_gone() -> bool:
        left = children(cluster, "faults")
        return not any(left.values()) and not reports(cluster)

    converged(cluster, "children and EsnodeNodes gone", all_gone, timeout=120)
    assert cluster.get("v1", "ServiceAccount", child_name("faults")) is None
