"""Least privilege on the real control plane: what the operator and the agents may write, proven with
their own tokens (403 expected), and Helm releases that share no cluster-scoped name.

The operator runs with rbac/operator.yaml's rights only (test_node_reports' fixtures); agents are
real processes (simulated GPUs) or kubectl, each with its fleet's ServiceAccount token bound to the
fleet's (kwok-faked) agent pod on its node, so every write goes through rbac/agents.yaml's
admission policy.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import test_chart
import test_node_reports
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from test_chart import CHART, of_kind, operator_container, render
from test_node_reports import (
    NODE_CONDITION,
    agent_pods,
    agent_process,
    apply_fleet,
    as_identity,
    can_i,
    pod_token,
    power,
)
from test_operator import Cluster

pytestmark = pytest.mark.k8s

Env = Any  # conftest.TestEnv

# The node reports' fixtures: the operator with its own RBAC, the CRDs and the agents' RBAC.
installed = test_node_reports.installed
cluster = test_node_reports.cluster
helm_binary = test_chart.helm_binary

HEARTBEAT_SECONDS = 5
FLEET_API = "esnode.io/v1alpha1"


def _bound(cluster: Cluster, fleet: str) -> bool:
    binding = cluster.kube.get(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, "esnode-agent-node-status"
    )
    subject = {"kind": "ServiceAccount", "name": f"esnode-{fleet}", "namespace": cluster.namespace}
    return subject in (binding.get("subjects") or [])


def core_api(kubeconfig: Path) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))


def refused(call: Any, *args: Any) -> str:
    """The apiserver's message for a write that must answer 403."""
    with pytest.raises(ApiException) as denied:
        call(*args)
    assert denied.value.status == 403, denied.value.body
    return str(denied.value.body)


def condition(type_: str, status: str = "True") -> dict[str, str]:
    return {"type": type_, "status": status, "reason": "Test", "message": "written by the test"}


# ------------------------------------------------------------------------- the agents' Node status


def test_an_agent_may_set_its_own_condition_on_its_own_node_and_nothing_else(
    cluster: Cluster, tmp_path: Path
) -> None:
    apply_fleet(cluster, "cond", nodeCondition=True)
    cluster.wait("the operator to grant nodes/status", lambda: _bound(cluster, "cond"))
    try:
        _forge_node_status(cluster, tmp_path)
    finally:  # nodes are shared by the session's tests: take the test's condition off again
        removal = {"status": {"conditions": [{"type": NODE_CONDITION, "$patch": "delete"}]}}
        client.CoreV1Api(cluster.env.api_client).patch_node_status("kwok-node-1", removal)


def _forge_node_status(cluster: Cluster, tmp_path: Path) -> None:
    pods = agent_pods(cluster, "cond")
    agent = core_api(pod_token(cluster, "cond", pods["kwok-node-1"], tmp_path / "node-1.kubeconfig"))
    before = cluster.kube.get("v1", "Node", None, "kwok-node-1")
    assert before["status"]["allocatable"]["nvidia.com/gpu"] == "8"

    # Its own condition on its own node: allowed.
    agent.patch_node_status("kwok-node-1", {"status": {"conditions": [condition(NODE_CONDITION)]}})
    conditions = cluster.kube.get("v1", "Node", None, "kwok-node-1")["status"]["conditions"]
    assert any(c["type"] == NODE_CONDITION and c["status"] == "True" for c in conditions)
    # ... on another node: refused.
    message = refused(
        agent.patch_node_status, "kwok-node-2", {"status": {"conditions": [condition(NODE_CONDITION)]}}
    )
    assert "may not write nodes kwok-node-2" in message

    # Anything else on its own node: refused, and nothing changes.
    forged = refused(
        agent.patch_node_status, "kwok-node-1", {"status": {"conditions": [condition("NetworkUnavailable")]}}
    )
    assert f"may not change the conditions of node kwok-node-1 other than {NODE_CONDITION}" in forged
    for patch in (
        {"status": {"allocatable": {"nvidia.com/gpu": "0"}}},
        {"status": {"capacity": {"nvidia.com/gpu": "0"}}},
        {"metadata": {"labels": {"nvidia.com/gpu.present": "false"}}},
        {"metadata": {"annotations": {"esnode.test/forged": "yes"}}},
    ):
        message = refused(agent.patch_node_status, "kwok-node-1", patch)
        assert f"may change only the {NODE_CONDITION} condition of node kwok-node-1" in message, patch
    after = cluster.kube.get("v1", "Node", None, "kwok-node-1")
    assert after["status"]["allocatable"] == before["status"]["allocatable"]
    assert after["metadata"].get("labels") == before["metadata"].get("labels")
    network = [c for c in after["status"]["conditions"] if c["type"] == "NetworkUnavailable"]
    assert network == [c for c in before["status"]["conditions"] if c["type"] == "NetworkUnavailable"]
    assert all(c["status"] != "True" for c in network)  # kwok's own, untouched
    # Taints are spec: not writable through nodes/status at all (the apiserver keeps the old spec).
    agent.patch_node_status(
        "kwok-node-1",
        {
            "spec": {"taints": [{"key": "esnode.test/forged", "effect": "NoSchedule"}]},
            "status": {"conditions": [condition(NODE_CONDITION, "False")]},
        },
    )
    assert cluster.kube.get("v1", "Node", None, "kwok-node-1")["spec"] == before["spec"]


# ------------------------------------------------------------------------- reports bound to the fleet


@pytest.fixture
def fleet_label(cluster: Cluster) -> Iterator[str]:
    """A node label of this test's own (kwok nodes are shared), removed from every node afterwards."""
    key = f"esnode-test/{cluster.namespace}"
    yield key
    cluster.env.kubectl("label", "nodes", "--all", f"{key}-", check=False)


def label(cluster: Cluster, node: str, key: str, value: str) -> None:
    cluster.env.kubectl("label", "node", node, f"{key}={value}", "--overwrite")


def report(cluster: Cluster, node: str) -> dict[str, Any] | None:
    return cluster.get(FLEET_API, "EsnodeNode", node)


def start_agent(
    stack: ExitStack, cluster: Cluster, fleet: dict[str, Any], node: str, workdir: Path
) -> ExitStack:
    """An agent process for ``fleet`` on ``node`` with a token bound to the fleet's pod there."""
    name = fleet["metadata"]["name"]
    pods: dict[str, str] = {}

    def scheduled() -> bool:
        pods.update(agent_pods(cluster, name))
        return node in pods

    cluster.wait(f"an agent pod of {name} on {node}", scheduled)
    kubeconfig = pod_token(cluster, name, pods[node], workdir / f"{name}-{node}.kubeconfig")
    own = stack.enter_context(ExitStack())
    rapl = own.enter_context(
        agent_process.RaplTree(workdir / f"sys-{name}-{node}", package_watts=(180.0, 170.0))
    )
    own.enter_context(
        agent_process.agent(
            "--kubeconfig", str(kubeconfig), "--node-name", node,
            "--namespace", cluster.namespace, "--fleet", name, "--fleet-uid", fleet["metadata"]["uid"],
            "--gpu-backend", "sim:h100x8", "--path-sysfs", str(rapl.sysfs), "--scrape-interval", "1",
            "--report-heartbeat-seconds", str(HEARTBEAT_SECONDS),
            log_path=workdir / f"agent-{name}-{node}.log",
        )
    )  # fmt: skip
    return own


def test_a_report_is_written_only_by_its_fleet_and_follows_its_node_to_another_fleet(
    cluster: Cluster, fleet_label: str, tmp_path: Path
) -> None:
    label(cluster, "kwok-node-1", fleet_label, "a")
    label(cluster, "kwok-node-2", fleet_label, "a")
    fleet_a = apply_fleet(cluster, "a", nodeSelector={fleet_label: "a"})
    pods = agent_pods(cluster, "a")
    agent_a = pod_token(cluster, "a", pods["kwok-node-1"], tmp_path / "a-node-1.kubeconfig")

    # A report of fleet b on a node of fleet a: a's agent there may not write it or take it over.
    others = {
        "apiVersion": FLEET_API,
        "kind": "EsnodeNode",
        "metadata": {"name": "kwok-node-1"},
        "spec": {"nodeName": "kwok-node-1", "fleet": "b"},
    }
    cluster.env.kubectl("create", "-n", cluster.namespace, "-f", "-", input=json.dumps(others))  # as admin
    status = {
        "nodeName": "kwok-node-1",
        "fleet": "a",
        "agentVersion": "test",
        "lastReportTime": "2027-01-15T08:00:00Z",
        "heartbeatSeconds": 60,
    }
    written = as_identity(
        cluster, agent_a, "patch", "esnodenode", "kwok-node-1", "-n", cluster.namespace,
        "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}),
    )  # fmt: skip
    assert written.returncode != 0
    assert (
        f"system:serviceaccount:{cluster.namespace}:esnode-a may not write EsnodeNode kwok-node-1: "
        "it is the report of fleet b, not of fleet a"
    ) in written.stderr, written.stderr
    taken = as_identity(
        cluster, agent_a, "patch", "esnodenode", "kwok-node-1", "-n", cluster.namespace,
        "--type=merge", "-p", json.dumps({"spec": {"fleet": "a"}}),
    )  # fmt: skip
    assert "it is the report of fleet b, not of fleet a" in taken.stderr, taken.stderr
    assert (report(cluster, "kwok-node-1") or {})["spec"]["fleet"] == "b"
    cluster.env.kubectl("delete", "esnodenode", "kwok-node-1", "-n", cluster.namespace)

    # Fleet b selects kwok-node-3; every node reports into its own fleet.
    label(cluster, "kwok-node-3", fleet_label, "b")
    fleet_b = apply_fleet(cluster, "b", nodeSelector={fleet_label: "b"})
    with ExitStack() as stack:
        agents = {
            ("a", "kwok-node-1"): start_agent(stack, cluster, fleet_a, "kwok-node-1", tmp_path),
            ("a", "kwok-node-2"): start_agent(stack, cluster, fleet_a, "kwok-node-2", tmp_path),
            ("b", "kwok-node-3"): start_agent(stack, cluster, fleet_b, "kwok-node-3", tmp_path),
        }
        cluster.wait(
            "a: 2 nodes, b: 1",
            lambda: (
                (power(cluster, "a").get("nodesReporting"), power(cluster, "b").get("nodesReporting"))
                == (2, 1)
            ),
        )

        # kwok-node-2 moves to fleet b: a's agent stops (the kubelet would kill it with its pod), and
        # b's starts with b's pod.
        moved = time.monotonic()
        label(cluster, "kwok-node-2", fleet_label, "b")
        agents.pop(("a", "kwok-node-2")).close()
        start_agent(stack, cluster, fleet_b, "kwok-node-2", tmp_path)

        def handed_over() -> bool:
            found = report(cluster, "kwok-node-2") or {}
            return (found.get("spec") or {}).get("fleet") == "b" and (
                power(cluster, "a").get("nodesReporting"),
                power(cluster, "b").get("nodesReporting"),
            ) == (1, 2)

        cluster.wait("kwok-node-2 reporting into fleet b, not a", handed_over, timeout=90)
        print(f"kwok-node-2 moved to fleet b's status in {time.monotonic() - moved:.1f} s")
        moved_report = report(cluster, "kwok-node-2") or {}
        assert [r["uid"] for r in moved_report["metadata"]["ownerReferences"]] == [fleet_b["metadata"]["uid"]]
        assert (report(cluster, "kwok-node-1") or {})["spec"]["fleet"] == "a"
        assert power(cluster, "a").get("staleNodes") == []


def test_a_token_bound_to_a_pod_that_is_not_the_fleets_agent_writes_nothing(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Only the fleet's DaemonSet pods (esnode-<fleet>-...) speak for it, even under its account."""
    apply_fleet(cluster, "real")
    impostor = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "impostor"},
        "spec": {
            "nodeName": "kwok-node-1",
            "serviceAccountName": "esnode-real",
            "containers": [{"name": "impostor", "image": "impostor"}],
        },
    }
    cluster.env.kubectl("create", "-n", cluster.namespace, "-f", "-", input=json.dumps(impostor))
    kubeconfig = pod_token(cluster, "real", "impostor", tmp_path / "impostor.kubeconfig")
    report = {
        "apiVersion": FLEET_API,
        "kind": "EsnodeNode",
        "metadata": {"name": "kwok-node-1"},
        "spec": {"nodeName": "kwok-node-1", "fleet": "real"},
    }
    result = as_identity(
        cluster, kubeconfig, "create", "-n", cluster.namespace, "-f", "-", input=json.dumps(report)
    )
    assert result.returncode != 0
    assert "has a token bound to pod impostor, which is not an agent pod of fleet real" in result.stderr, (
        result.stderr
    )


# ---------------------------------------------------------------------------------- the operator


def test_the_operator_writes_only_in_the_namespaces_it_serves(cluster: Cluster, tmp_path: Path) -> None:
    can = can_i(cluster, "esnode-operator")
    here = ("-n", cluster.namespace)
    for verb, resource in [
        ("patch", "daemonsets.apps"),
        ("delete", "daemonsets.apps"),
        ("patch", "configmaps"),
        ("create", "roles.rbac.authorization.k8s.io"),
        ("delete", "esnodenodes.esnode.io"),
    ]:
        assert can(verb, resource, *here) == "yes", (verb, resource)
        assert can(verb, resource, "-n", "kube-system") == "no", (verb, resource, "kube-system")
        assert can(verb, resource, "-n", "default") == "no", (verb, resource, "default")
    # Cluster-scoped: reads of nodes only, and the one binding it fills (no namespaces, no CRDs).
    assert can("list", "nodes") == "yes"
    for verb, resource in [
        ("patch", "nodes"),  # (nodes/status: the admission policy holds it to the esnode condition)
        ("list", "namespaces"),
        ("list", "customresourcedefinitions.apiextensions.k8s.io"),
        ("patch", "clusterkopfpeerings.kopf.dev"),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
        ("get", "secrets"),
    ]:
        assert can(verb, resource) == "no", (verb, resource)
    assert can("patch", "clusterrolebindings/esnode-agent-node-status") == "yes"
    assert can("patch", "clusterrolebindings/esnode-agent-auth-delegator") == "yes"
    assert can("patch", "clusterrolebindings/cluster-admin") == "no"
    # ... and those bindings list agents' accounts only: no other identity gets nodes/status (or
    # token reviews) from them.
    operator = tmp_path / "operator.kubeconfig"  # the cluster fixture's token of the operator
    foreign = {"subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "kube-system"}]}
    for binding in ("esnode-agent-node-status", "esnode-agent-auth-delegator"):
        granted = as_identity(
            cluster,
            operator,
            "patch",
            "clusterrolebinding",
            binding,
            "--type=merge",
            "-p",
            json.dumps(foreign),
        )
        assert granted.returncode != 0, binding
        assert "lists only esnode agents' ServiceAccounts" in granted.stderr, granted.stderr


# ------------------------------------------------------------------------------------------- Helm


def cluster_scoped(docs: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(d["kind"], d["metadata"]["name"]) for d in docs if "namespace" not in d["metadata"]}


def test_the_chart_grants_the_operator_its_namespaces_unless_asked_for_all(helm_binary: Path) -> None:
    docs = render(helm_binary)  # release esnode in gpu-inference
    assert "--namespace=gpu-inference" in operator_container(docs)["args"]
    (binding,) = of_kind(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "gpu-inference"
    assert binding["roleRef"]["name"] == "esnode-gpu-inference-operator"
    assert [b["roleRef"]["name"] for b in of_kind(docs, "ClusterRoleBinding")] == [
        "esnode-gpu-inference-agent-node-status",  # subjects: the operator's to fill
        "system:auth-delegator",  # likewise
        "esnode-gpu-inference-operator-cluster",
    ]
    assert [(p["metadata"]["name"], p["metadata"]["namespace"]) for p in of_kind(docs, "KopfPeering")] == [
        ("esnode-operator", "gpu-inference")
    ]
    assert of_kind(docs, "ClusterKopfPeering") == []

    wide = render(helm_binary, "--set", "operator.clusterWide=true")
    assert operator_container(wide)["args"][:3] == [
        "run",
        "--all-namespaces",
        "--peering=esnode-gpu-inference-operator",
    ]
    assert of_kind(wide, "RoleBinding") == []
    assert sorted(b["roleRef"]["name"] for b in of_kind(wide, "ClusterRoleBinding")) == [
        "esnode-gpu-inference-agent-node-status",
        "esnode-gpu-inference-operator",
        "esnode-gpu-inference-operator-cluster",
        "system:auth-delegator",
    ]
    assert [p["metadata"]["name"] for p in of_kind(wide, "ClusterKopfPeering")] == [
        "esnode-gpu-inference-operator"
    ]


def test_releases_in_two_namespaces_share_no_cluster_scoped_name(helm_binary: Path) -> None:
    def names(namespace: str, *args: str) -> set[tuple[str, str]]:
        result = render(helm_binary, "-n", namespace, *args)
        return cluster_scoped(result)

    first, second = names("team-a"), names("team-b")
    assert first and not first & second
    long = names("a-namespace-name-long-enough-to-need-the-hash-" + "x" * 16)
    assert all(len(name) <= 63 for _, name in long)


@pytest.fixture
def second_namespace(testenv: Env) -> Iterator[str]:
    core = client.CoreV1Api(testenv.api_client)
    name = f"esnode-test-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    try:
        yield name
    finally:
        core.delete_namespace(name)


def test_two_releases_with_default_values_install_side_by_side(
    testenv: Env, namespace: str, second_namespace: str
) -> None:
    """Same release name, default values, two namespaces: both install, each operator namespaced."""
    installed_in: list[str] = []
    try:
        for where in (namespace, second_namespace):
            result = testenv.helm("install", "esnode", str(CHART), "-n", where, check=False)
            assert result.returncode == 0, result.stderr
            installed_in.append(where)
        for where, elsewhere in ((namespace, second_namespace), (second_namespace, namespace)):
            account = f"--as=system:serviceaccount:{where}:esnode-operator"
            for target, allowed in ((where, "yes"), (elsewhere, "no"), ("kube-system", "no")):
                answer = testenv.kubectl(
                    "auth", "can-i", "patch", "daemonsets.apps", "-n", target, account, check=False
                ).stdout.strip()
                assert answer == allowed, (where, target)
            peerings = testenv.kubectl("get", "kopfpeerings.kopf.dev", "-n", where, "-o", "name").stdout
            assert peerings.split() == ["kopfpeering.kopf.dev/esnode-operator"]
        policies = testenv.kubectl(
            "get", "validatingadmissionpolicies", "-o", "name", "-l", "app.kubernetes.io/instance=esnode"
        ).stdout.split()
        assert sorted(policies) == sorted(
            f"validatingadmissionpolicy.admissionregistration.k8s.io/esnode-{n}-agent-{policy}"
            for n in (namespace, second_namespace)
            for policy in ("own-node", "status-subjects")
        )
    finally:
        for where in installed_in:  # no hooks: no process runs behind the uninstall hook's kwok pod here
            testenv.helm("uninstall", "esnode", "-n", where, "--no-hooks", "--wait", "--timeout=60s")


def test_the_operators_node_status_writes_are_held_to_the_esnode_condition(
    cluster: Cluster, tmp_path: Path
) -> None:
    """Given nodes/status (to clear the esnode condition from nodes that left a fleet), the operator's
    account may change that condition only, like an agent, but on any node."""
    name = f"esnode-test-operator-node-status-{cluster.namespace}"
    grant = [
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": [{"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [
                {"kind": "ServiceAccount", "name": "esnode-operator", "namespace": cluster.namespace}
            ],
        },
    ]
    cluster.env.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": grant})
    )
    try:
        operator = core_api(tmp_path / "operator.kubeconfig")  # the cluster fixture's token
        cluster.wait(
            "the grant to take effect",
            lambda: can_i(cluster, "esnode-operator")("patch", "nodes", "--subresource=status") == "yes",
        )
        message = refused(
            operator.patch_node_status, "kwok-node-2", {"status": {"allocatable": {"nvidia.com/gpu": "0"}}}
        )
        assert f"may change only the {NODE_CONDITION} condition of node kwok-node-2" in message
        refused(
            operator.patch_node_status,
            "kwok-node-2",
            {"status": {"conditions": [condition("NetworkUnavailable")]}},
        )
        operator.patch_node_status(
            "kwok-node-2", {"status": {"conditions": [condition(NODE_CONDITION, "False")]}}
        )
        removal = {"status": {"conditions": [{"type": NODE_CONDITION, "$patch": "delete"}]}}
        operator.patch_node_status("kwok-node-2", removal)
        conditions = cluster.kube.get("v1", "Node", None, "kwok-node-2")["status"].get("conditions") or []
        assert not any(c["type"] == NODE_CONDITION for c in conditions)
    finally:
        cluster.env.kubectl(
            "delete", "--ignore-not-found", f"clusterrolebinding/{name}", f"clusterrole/{name}"
        )
