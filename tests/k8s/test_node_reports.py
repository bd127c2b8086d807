"""Node reports on the real control plane: agents write EsnodeNodes, the operator sums them into the fleet.

The agents run as real processes (`python -m esnode_agent`, simulated 8xH100 GPUs and a fake RAPL
tree) reporting for the three kwok nodes. Each uses a token of its fleet's ServiceAccount bound to
the fleet's (kwok-faked) agent pod on its node, as the kubelet would mount it, so every write goes
through the agents' RBAC and rbac/agents.yaml's admission policy. The operator runs with
no more than rbac/operator.yaml grants.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import datetime
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kwok_pod_processes import token_kubeconfig
from test_operator import FLEET_COLUMNS, Cluster, free_port, operator_identity_for, operator_running, refusals

pytestmark = pytest.mark.k8s

Env = Any  # conftest.TestEnv

REPO = Path(__file__).resolve().parents[2]
CRDS = [REPO / "crds" / "esnodefleet.yaml", REPO / "crds" / "esnodenode.yaml"]
AGENTS_RBAC = REPO / "rbac" / "agents.yaml"
NODES = ["kwok-node-1", "kwok-node-2", "kwok-node-3"]
HEARTBEAT_SECONDS = 5
HIGH_ENVELOPE_WATTS = 20000
LOW_ENVELOPE_WATTS = 1000  # below what 8 simulated H100s and two CPU packages draw
NODE_CONDITION = "EsnodePowerEnvelopeExceeded"


def _load_agent_process() -> ModuleType:
    """tests/e2e/agent_process.py: the agent launcher and the fake RAPL tree the e2e tests use."""
    spec = importlib.util.spec_from_file_location(
        "agent_process", REPO / "tests" / "e2e" / "agent_process.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


agent_process = _load_agent_process()


@pytest.fixture(scope="module")
def installed(testenv: Env) -> Iterator[Env]:
    """The CRDs and the agents' cluster-wide RBAC and admission policy, as an installation has them."""
    for crd in CRDS:
        testenv.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd))
    testenv.kubectl(
        "wait", "--for=condition=Established", "crd/esnodefleets.esnode.io", "crd/esnodenodes.esnode.io"
    )
    testenv.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(AGENTS_RBAC))
    yield testenv
    testenv.kubectl("delete", "--ignore-not-found", "-f", str(AGENTS_RBAC), check=False)


@pytest.fixture
def cluster(installed: Env, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    """The operator serving the test's namespace with only its own RBAC."""
    with (
        operator_identity_for(installed, namespace, tmp_path / "operator.kubeconfig") as kubeconfig,
        operator_running(installed, namespace, kubeconfig, tmp_path / "operator") as running,
    ):
        yield running
    log = (tmp_path / "operator" / "operator.log").read_text()
    assert not refusals(log, running.outages), refusals(log, running.outages)


def can_i(cluster: Cluster, account: str) -> Callable[..., str]:
    """`kubectl auth can-i VERB RESOURCE [ARGS]` as the ServiceAccount ``account`` of the test's
    namespace: "yes" or "no"."""

    def can(verb: str, resource: str, *where: str) -> str:
        as_account = f"--as=system:serviceaccount:{cluster.namespace}:{account}"
        answer: str = cluster.env.kubectl(
            "auth", "can-i", verb, resource, as_account, *where, check=False
        ).stdout
        return answer.strip()

    return can


def apply_fleet(cluster: Cluster, name: str, **spec: Any) -> dict[str, Any]:
    cluster.apply(name, {"serviceMonitor": {"enabled": False}, "port": free_port(), **spec})
    cluster.wait_condition(name, "Ready", "True")
    return cluster.fleet(name)


def agent_pods(cluster: Cluster, fleet: str) -> dict[str, str]:
    """Node -> the fleet's (kwok-faked) agent pod there."""
    pods = cluster.kube.list(
        "v1", "Pod", cluster.namespace, label_selector=f"app.kubernetes.io/instance={fleet}"
    )
    return {
        p["spec"]["nodeName"]: p["metadata"]["name"] for p in pods if p["status"].get("phase") == "Running"
    }


def pod_token(cluster: Cluster, fleet: str, pod: str, path: Path) -> Path:
    """A kubeconfig with the agents' ServiceAccount token bound to ``pod`` (so to its node)."""
    token = cluster.env.kubectl(
        "create", "token", f"esnode-{fleet}", "-n", cluster.namespace,
        "--bound-object-kind", "Pod", "--bound-object-name", pod, "--duration=1h",
    ).stdout  # fmt: skip
    return token_kubeconfig(cluster.env.kubeconfig, token, path)


def as_identity(
    cluster: Cluster, kubeconfig: Path, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    result: subprocess.CompletedProcess[str] = cluster.env.kubectl(
        f"--kubeconfig={kubeconfig}", *args, input=input, check=False
    )
    return result


def power(cluster: Cluster, fleet: str) -> dict[str, Any]:
    found: dict[str, Any] = (cluster.fleet(fleet).get("status") or {}).get("power") or {}
    return found


def table(cluster: Cluster, resource: str) -> list[dict[str, str]]:
    """`kubectl get` output as rows keyed by column header."""
    header, *rows = cluster.env.kubectl("get", resource, "-n", cluster.namespace).stdout.splitlines()
    starts = [header.index(name) for name in header.split()]
    ends = [*starts[1:], None]
    return [
        {header[s:e].strip(): row[s:e].strip() for s, e in zip(starts, ends, strict=True)} for row in rows
    ]


def node_condition(cluster: Cluster, node: str) -> dict[str, Any]:
    conditions = cluster.kube.get("v1", "Node", None, node)["status"].get("conditions") or []
    return next((c for c in conditions if c["type"] == NODE_CONDITION), {})


class Agents:
    """One agent process per kwok node, each reporting with its own pod-bound token; restartable."""

    def __init__(self, cluster: Cluster, fleet: dict[str, Any], workdir: Path) -> None:
        self.cluster = cluster
        self.fleet = fleet["metadata"]["name"]
        self.uid = fleet["metadata"]["uid"]
        self.workdir = workdir
        self.urls: dict[str, str] = {}
        self._running: dict[str, ExitStack] = {}
        pods = agent_pods(cluster, self.fleet)
        self.kubeconfigs = {
            node: pod_token(cluster, self.fleet, pods[node], workdir / f"{node}.kubeconfig") for node in NODES
        }

    def start(self, node: str, envelope_watts: float | None, *flags: str) -> None:
        """``envelope_watts`` None: no configured envelope (the fleet's budget may give one);
        ``flags``: more agent flags (power capping)."""
        stack = ExitStack()
        sysfs = self.workdir / f"sys-{node}-{time.monotonic_ns()}"
        rapl = stack.enter_context(agent_process.RaplTree(sysfs, package_watts=(180.0, 170.0)))
        self.urls[node] = stack.enter_context(
            agent_process.agent(
                "--kubeconfig", str(self.kubeconfigs[node]), "--node-name", node,
                "--namespace", self.cluster.namespace, "--fleet", self.fleet, "--fleet-uid", self.uid,
                "--gpu-backend", "sim:h100x8", "--path-sysfs", str(rapl.sysfs),
                *([] if envelope_watts is None else ["--node-power-envelope-watts", str(envelope_watts)]),
                "--scrape-interval", "1",
                "--report-heartbeat-seconds", str(HEARTBEAT_SECONDS), "--node-condition", *flags,
                log_path=self.workdir / f"agent-{node}.log",
            )
        )  # fmt: skip
        self._running[node] = stack

    def stop(self, node: str) -> None:
        self._running.pop(node).close()

    def restart(self, node: str, envelope_watts: float) -> None:
        self.stop(node)
        self.start(node, envelope_watts)

    def node_power_watts(self) -> dict[str, float | None]:
        return {
            node: httpx.get(f"{url}/status", timeout=5).json()["power"]["node_power_watts"]
            for node, url in self.urls.items()
            if node in self._running
        }

    def close(self) -> None:
        for node in list(self._running):
            self.stop(node)


@contextmanager
def agents_for(cluster: Cluster, fleet: dict[str, Any], workdir: Path) -> Iterator[Agents]:
    workdir.mkdir(parents=True, exist_ok=True)
    agents = Agents(cluster, fleet, workdir)
    try:
        yield agents
    finally:
        agents.close()


# ------------------------------------------------------------------------------------------ tests


def test_agents_report_and_the_fleet_shows_power_envelopes_and_stale_nodes(
    cluster: Cluster, tmp_path: Path
) -> None:
    fleet = apply_fleet(cluster, "power", nodeCondition=True, report={"heartbeatSeconds": HEARTBEAT_SECONDS})
    cluster.wait("the operator to grant nodes/status", lambda: _bound(cluster, "power"))
    with agents_for(cluster, fleet, tmp_path / "agents") as agents:
        for node in NODES:
            agents.start(node, HIGH_ENVELOPE_WATTS)
        cluster.wait("3 nodes reporting", lambda: power(cluster, "power").get("nodesReporting") == 3)

        # The fleet's total is the sum of what the agents themselves measure.
        def total_matches() -> bool:
            readings = agents.node_power_watts().values()
            if None in readings:  # an agent's first cycle: rates need two
                return False
            measured = sum(readings)
            total = power(cluster, "power").get("totalPowerWatts") or 0.0
            return abs(total - measured) <= 0.05 * measured

        cluster.wait("the fleet's power to match the agents'", total_matches, timeout=30)
        summary = power(cluster, "power")
        assert (summary["totalGpus"], summary["nodesOverEnvelope"], summary["nodesStale"]) == (24, 0, 0)
        [row] = table(cluster, "esnodefleets")
        assert list(row) == FLEET_COLUMNS
        assert (row["NAME"], row["NODES"], row["OVER-ENVELOPE"]) == ("power", "3", "0")
        assert float(row["POWER"]) > 3 * 1000
        reports = table(cluster, "esnodenodes")
        assert [(r["NAME"], r["NODE"], r["EXCEEDED"], r["GPUS"]) for r in reports] == [
            (node, node, "false", "8") for node in NODES
        ]
        assert cluster.condition("power", "EnvelopeExceeded")["status"] == "False"
        assert cluster.condition("power", "Ready")["status"] == "True"  # the reconciler's stay

        # One node over its envelope: the fleet names it, and so does the Node's condition.
        agents.restart("kwok-node-2", LOW_ENVELOPE_WATTS)
        cluster.wait(
            "one node over its envelope", lambda: power(cluster, "power").get("nodesOverEnvelope") == 1
        )
        assert power(cluster, "power")["overEnvelopeNodes"] == ["kwok-node-2"]
        exceeded = cluster.wait_condition("power", "EnvelopeExceeded", "True", "NodesOverEnvelope")
        assert "kwok-node-2" in exceeded["message"]
        assert table(cluster, "esnodefleets")[0]["OVER-ENVELOPE"] == "1"
        cluster.wait(
            "the Node condition", lambda: node_condition(cluster, "kwok-node-2").get("status") == "True"
        )
        assert node_condition(cluster, "kwok-node-2")["reason"] == "PowerAboveEnvelope"
        assert node_condition(cluster, "kwok-node-1")["status"] == "False"

        # Raised again: both clear.
        agents.restart("kwok-node-2", HIGH_ENVELOPE_WATTS)
        cluster.wait_condition("power", "EnvelopeExceeded", "False", "WithinEnvelope")
        assert power(cluster, "power")["nodesOverEnvelope"] == 0
        cluster.wait(
            "the Node condition cleared",
            lambda: node_condition(cluster, "kwok-node-2").get("status") == "False",
        )

        # A silent agent turns stale after 3 heartbeats (since its last report), not before.
        agents.stop("kwok-node-3")
        cluster.wait("kwok-node-3 stale", lambda: power(cluster, "power").get("nodesStale") == 1, timeout=40)
        seen_stale = time.time()
        report = cluster.kube.get("esnode.io/v1alpha1", "EsnodeNode", cluster.namespace, "kwok-node-3")
        last_report = datetime.fromisoformat(report["status"]["lastReportTime"]).timestamp()
        assert 3 * HEARTBEAT_SECONDS <= seen_stale - last_report <= 3 * HEARTBEAT_SECONDS + 5
        summary = power(cluster, "power")
        assert (summary["staleNodes"], summary["nodesReporting"]) == (["kwok-node-3"], 2)
        assert table(cluster, "esnodefleets")[0]["NODES"] == "2"

    # Deleting the fleet takes its node reports with it (they are owned by it), and the right to
    # set Node conditions.
    cluster.env.kubectl("delete", "esnodefleet", "-n", cluster.namespace, "power")
    cluster.wait(
        "the EsnodeNodes collected",
        lambda: not cluster.kube.list("esnode.io/v1alpha1", "EsnodeNode", cluster.namespace),
        timeout=90,
    )
    assert not _bound(cluster, "power")


def _bound(cluster: Cluster, fleet: str) -> bool:
    binding = cluster.kube.get(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", None, "esnode-agent-node-status"
    )
    subject = {"kind": "ServiceAccount", "name": f"esnode-{fleet}", "namespace": cluster.namespace}
    return subject in (binding.get("subjects") or [])


def test_an_agent_may_write_only_its_own_node(cluster: Cluster, tmp_path: Path) -> None:
    apply_fleet(cluster, "own", nodeCondition=True)
    cluster.wait("the operator to grant nodes/status", lambda: _bound(cluster, "own"))
    pods = agent_pods(cluster, "own")
    on_node_1 = pod_token(cluster, "own", pods["kwok-node-1"], tmp_path / "node-1.kubeconfig")

    def esnode_node(name: str, fleet: str = "own") -> str:
        spec = {"nodeName": name, "fleet": fleet}
        return json.dumps(
            {
                "apiVersion": "esnode.io/v1alpha1",
                "kind": "EsnodeNode",
                "metadata": {"name": name},
                "spec": spec,
            }
        )

    # Its own node's object, but for another fleet (another fleet's summary): refused.
    result = as_identity(
        cluster,
        on_node_1,
        "create",
        "-n",
        cluster.namespace,
        "-f",
        "-",
        input=esnode_node("kwok-node-1", "other"),
    )
    assert "may not create an EsnodeNode for another node or fleet" in result.stderr, result.stderr
    for node in ("kwok-node-1", "kwok-node-2"):
        report = esnode_node(node)
        result = as_identity(cluster, on_node_1, "create", "-n", cluster.namespace, "-f", "-", input=report)
        if node == "kwok-node-1":
            assert result.returncode == 0, result.stderr
        else:
            assert result.returncode != 0
            assert "may not write esnodenodes kwok-node-2" in result.stderr, result.stderr
            cluster.env.kubectl("create", "-n", cluster.namespace, "-f", "-", input=report)  # as admin
    status = {
        "fleet": "own",
        "agentVersion": "test",
        "lastReportTime": "2027-01-15T08:00:00Z",
        "heartbeatSeconds": 60,
    }
    patch = [
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": {**status, "nodeName": "n"}}),
    ]
    own = as_identity(
        cluster, on_node_1, "patch", "esnodenode", "kwok-node-1", "-n", cluster.namespace, *patch
    )
    assert own.returncode == 0, own.stderr
    moved = as_identity(
        cluster, on_node_1, "patch", "esnodenode", "kwok-node-1", "-n", cluster.namespace,
        "--type=merge", "-p", json.dumps({"spec": {"fleet": "other"}}),
    )  # fmt: skip
    assert "may not change the spec of EsnodeNode kwok-node-1" in moved.stderr, moved.stderr
    other = as_identity(
        cluster, on_node_1, "patch", "esnodenode", "kwok-node-2", "-n", cluster.namespace, *patch
    )
    assert other.returncode != 0
    assert (
        f"system:serviceaccount:{cluster.namespace}:esnode-own on node kwok-node-1 may not write "
        "esnodenodes kwok-node-2: an esnode agent writes only its own node"
    ) in other.stderr
    # Nodes/status likewise (kubectl would GET the Node first, which agents may not: the API directly).
    condition = {"type": NODE_CONDITION, "status": "False", "reason": "Test", "message": ""}
    nodes = client.CoreV1Api(config.new_client_from_config(config_file=str(on_node_1)))
    with pytest.raises(ApiException) as refused:
        nodes.patch_node_status("kwok-node-2", {"status": {"conditions": [condition]}})
    assert refused.value.status == 403
    assert "may not write nodes kwok-node-2" in str(refused.value.body)
    nodes.patch_node_status("kwok-node-1", {"status": {"conditions": [condition]}})

    # A token bound to no pod names no node: such a token writes nothing.
    unbound = token_kubeconfig(
        cluster.env.kubeconfig,
        cluster.env.kubectl("create", "token", "esnode-own", "-n", cluster.namespace).stdout,
        tmp_path / "unbound.kubeconfig",
    )
    result = as_identity(
        cluster, unbound, "patch", "esnodenode", "kwok-node-1", "-n", cluster.namespace, *patch
    )
    assert result.returncode != 0 and "bound to no node" in result.stderr, result.stderr


def test_agent_rights_stay_in_the_namespace_and_node_status_follows_node_condition(cluster: Cluster) -> None:
    apply_fleet(cluster, "rights")
    can = can_i(cluster, "esnode-rights")
    here = ("-n", cluster.namespace)
    assert can("patch", "esnodenodes.esnode.io", "--subresource=status", *here) == "yes"
    assert can("create", "esnodenodes.esnode.io", *here) == "yes"
    assert can("get", "secrets", *here) == "no"
    assert can("list", "esnodenodes.esnode.io", *here) == "no"
    assert can("delete", "esnodenodes.esnode.io", *here) == "no"
    assert can("patch", "esnodenodes.esnode.io", "--subresource=status", "-n", "default") == "no"
    assert can("patch", "nodes", "--subresource=status") == "no"

    apply_fleet(cluster, "rights", nodeCondition=True)
    cluster.wait("nodes/status granted", lambda: can("patch", "nodes", "--subresource=status") == "yes")
    assert can("patch", "nodes") == "no"  # the status only, not the spec
    apply_fleet(cluster, "rights", nodeCondition=False)
    cluster.wait("nodes/status withdrawn", lambda: can("patch", "nodes", "--subresource=status") == "no")


def test_token_review_rights_follow_metrics_auth(cluster: Cluster) -> None:
    """The operator, with only its own RBAC, lists the agents in the auth-delegator binding and back."""
    apply_fleet(cluster, "reviews")
    can = can_i(cluster, "esnode-reviews")
    assert can("create", "tokenreviews.authentication.k8s.io") == "no"
    apply_fleet(cluster, "reviews", metricsAuth="kubernetes")
    cluster.wait(
        "token reviews granted", lambda: can("create", "tokenreviews.authentication.k8s.io") == "yes"
    )
    assert can("create", "subjectaccessreviews.authorization.k8s.io") == "yes"
    assert can("get", "secrets") == "no"  # system:auth-delegator grants the reviews, nothing more
    apply_fleet(cluster, "reviews", metricsAuth="none")
    cluster.wait(
        "token reviews withdrawn", lambda: can("create", "tokenreviews.authentication.k8s.io") == "no"
    )
