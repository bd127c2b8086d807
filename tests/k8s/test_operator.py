"""The operator on the real test control plane: fleets in, agents, monitors and honest status out.

The operator runs as its console script (`esnode-operator run --namespace <test ns> --standalone`),
one process per test, against kwok nodes: kwok-node-1 and -2 carry nvidia.com/gpu.present=true,
kwok-node-3 is CPU-only. Each test uses its own namespace and, where agents run on the host
network, its own port, so that tests never compete for a node's host port.
"""

from __future__ import annotations

import itertools
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kwok_pod_processes import token_kubeconfig

from esnode_operator.kube import Kube, KubeError

pytestmark = pytest.mark.k8s

# `testenv` is conftest.TestEnv; conftest modules are not imported by tests, so it is typed Any.
Env = Any

REPO = Path(__file__).resolve().parents[2]
FLEET_CRD = REPO / "crds" / "esnodefleet.yaml"
OPERATOR = Path(sys.executable).parent / "esnode-operator"
GPU_NODES = ["kwok-node-1", "kwok-node-2"]
ALL_NODES = ["kwok-node-1", "kwok-node-2", "kwok-node-3"]
FLEET_API = "esnode.io/v1alpha1"
# What `kubectl get esnodefleets` shows: NAME, the CRD's printer columns, AGE.
FLEET_COLUMNS = ["NAME", "READY", "NODES", "STALE", "POWER", "OVER-ENVELOPE", "STATUS", "WHY", "AGE"]
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")  # kopf's log lines
OUTAGE_GRACE = timedelta(seconds=2)  # a refusal answered before /readyz, logged just after
_ports = itertools.count(21000 + os.getpid() % 1000 * 20)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def fleet_crd(testenv: Env) -> Env:
    testenv.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(FLEET_CRD))
    testenv.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/esnodefleets.esnode.io")
    return testenv


@dataclass
class Cluster:
    """One test's view: its namespace, the operator serving it, and helpers to read and wait."""

    env: Env
    namespace: str
    kube: Kube
    metrics_port: int
    log: Path
    process: subprocess.Popen[bytes]
    # While the apiserver restarts, it answers before its RBAC cache is filled: 403s then are its
    # start-up, not a right the operator lacks (kopf retries them). Windows of local time.
    outages: list[tuple[datetime, datetime]] = field(default_factory=list)

    @contextmanager
    def outage(self) -> Iterator[None]:
        """Refusals logged until a grace after the block (the apiserver back, /readyz ok) are excused."""
        started = datetime.now()
        try:
            yield
        finally:
            self.outages.append((started, datetime.now() + OUTAGE_GRACE))

    def apply(self, name: str, spec: dict[str, Any], check: bool = True) -> subprocess.CompletedProcess[str]:
        fleet = {"apiVersion": FLEET_API, "kind": "EsnodeFleet", "metadata": {"name": name}, "spec": spec}
        result: subprocess.CompletedProcess[str] = self.env.kubectl(
            "apply", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(fleet), check=check
        )
        return result

    def get(self, api_version: str, kind: str, name: str) -> dict[str, Any] | None:
        try:
            return self.kube.get(api_version, kind, self.namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def fleet(self, name: str) -> dict[str, Any]:
        fleet = self.get(FLEET_API, "EsnodeFleet", name)
        assert fleet is not None
        return fleet

    def condition(self, name: str, type_: str) -> dict[str, Any]:
        conditions = (self.fleet(name).get("status") or {}).get("conditions") or []
        return next((c for c in conditions if c["type"] == type_), {})

    def daemonsets(self, fleet: str) -> list[dict[str, Any]]:
        return self.kube.list(
            "apps/v1", "DaemonSet", self.namespace, label_selector=f"app.kubernetes.io/instance={fleet}"
        )

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 60.0) -> None:
        try:
            self.env.wait_until(what, predicate, timeout=timeout)
        except BaseException:
            print(self.log.read_text()[-6000:], file=sys.stderr)  # the operator's side of the story
            raise

    def wait_condition(
        self, name: str, type_: str, status: str, reason: str | None = None, timeout: float = 60
    ) -> dict[str, Any]:
        def holds() -> bool:
            found = self.condition(name, type_)
            return found.get("status") == status and (reason is None or found.get("reason") == reason)

        self.wait(f"{name}: {type_}={status} {reason or ''}", holds, timeout)
        return self.condition(name, type_)

    def agent_nodes(self, fleet: str) -> list[str]:
        pods = self.kube.list(
            "v1", "Pod", self.namespace, label_selector=f"app.kubernetes.io/instance={fleet}"
        )
        return sorted(p["spec"].get("nodeName", "") for p in pods if p["status"].get("phase") == "Running")


@contextmanager
def operator_running(
    env: Env, namespace: str, kubeconfig: Path, workdir: Path, peering: tuple[str, ...] = ("--standalone",)
) -> Iterator[Cluster]:
    """The operator as its console script, serving one namespace; stopped (fleets deleted first) after."""
    port = free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    log = workdir / "operator.log"
    command = [
        str(OPERATOR),
        "run",
        "--namespace",
        namespace,
        *peering,
        "--metrics-port",
        str(port),
        "--verbose",
    ]
    with log.open("w") as out:
        process = subprocess.Popen(
            command,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "KUBECONFIG": str(kubeconfig)},
            cwd=workdir,
        )
    cluster = Cluster(env, namespace, Kube(env.api_client), port, log, process)

    def serving() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    try:
        cluster.wait("the operator's metrics endpoint", serving, timeout=30)
        yield cluster
    finally:
        # While the operator still runs: kopf's finalizer (for its resync timer) must be released.
        env.kubectl(
            "delete", "esnodefleets", "--all", "-n", namespace, "--wait", "--timeout=60s", check=False
        )
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def cluster(fleet_crd: Env, namespace: str, tmp_path: Path) -> Iterator[Cluster]:
    with operator_running(fleet_crd, namespace, fleet_crd.kubeconfig, tmp_path) as cluster:
        yield cluster


def gpu_fleet(**spec: Any) -> dict[str, Any]:
    return {"nodeSelector": {"nvidia.com/gpu.present": "true"}, "port": next(_ports), **spec}


# ---------------------------------------------------------------------------------- happy path


def test_gpu_fleet_runs_agents_on_the_gpu_nodes_and_reports_ready(cluster: Cluster) -> None:
    cluster.apply("gpus", gpu_fleet(serviceMonitor={"enabled": False}, powerEnvelope={"defaultWatts": 1200}))
    cluster.wait_condition("gpus", "Ready", "True", "AgentsReady")
    assert cluster.agent_nodes("gpus") == GPU_NODES

    status = cluster.fleet("gpus")["status"]
    assert (status["readyText"], status["state"], status["daemonSet"]["desired"]) == ("2/2", "Ready", 2)
    assert status["observedGeneration"] == cluster.fleet("gpus")["metadata"]["generation"]
    assert cluster.condition("gpus", "Degraded")["status"] == "False"
    table = cluster.env.kubectl("get", "esnodefleets", "-n", cluster.namespace).stdout
    header, row = table.splitlines()
    assert header.split() == FLEET_COLUMNS
    # NODES counts nodes reporting: kwok runs no agent, so none (test_node_reports.py runs real ones)
    assert row.split()[:3] == ["gpus", "2/2", "0"] and "Ready" in row.split()

    configmap = cluster.get("v1", "ConfigMap", "esnode-gpus-config")
    assert configmap is not None and "node_power_envelope_watts = 1200.0" in configmap["data"]["esnode.toml"]
    for kind, api in (("ServiceAccount", "v1"), ("Service", "v1")):
        child = cluster.get(api, kind, "esnode-gpus")
        assert child is not None, kind
        assert child["metadata"]["ownerReferences"][0]["kind"] == "EsnodeFleet"
    [daemonset] = cluster.daemonsets("gpus")
    pod_spec = daemonset["spec"]["template"]["spec"]
    assert pod_spec["hostPID"] and pod_spec["containers"][0]["securityContext"]["privileged"]


def test_an_empty_fleet_deploys_everywhere_with_defaults_and_names_the_missing_monitor_crd(
    cluster: Cluster,
) -> None:
    cluster.apply("all", {})
    degraded = cluster.wait_condition("all", "Degraded", "True", "ServiceMonitorCRDMissing")
    assert "Prometheus Operator" in degraded["message"]
    cluster.wait_condition("all", "Ready", "True")
    assert cluster.agent_nodes("all") == ALL_NODES
    fleet = cluster.fleet("all")
    assert (
        fleet["spec"]["port"] == 9100 and fleet["spec"]["serviceMonitor"]["enabled"] is True
    )  # CRD defaults
    assert (fleet["status"]["state"], fleet["status"]["readyText"]) == ("Degraded", "3/3")
    for kind in ("Service", "ServiceAccount"):
        assert cluster.get("v1", kind, "esnode-all") is not None  # everything else applied


def test_with_the_prometheus_operator_crds_the_servicemonitor_is_accepted(
    cluster: Cluster, prometheus_operator_crds: Env
) -> None:
    cluster.apply("mon", gpu_fleet(serviceMonitor={"interval": "30s", "labels": {"release": "kps"}}))
    cluster.wait_condition("mon", "Ready", "True")
    cluster.wait_condition("mon", "Degraded", "False", "AsExpected")
    monitor = cluster.get("monitoring.coreos.com/v1", "ServiceMonitor", "esnode-mon")
    assert monitor is not None
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert monitor["spec"]["endpoints"][0]["interval"] == "30s"

    cluster.apply("mon", gpu_fleet(serviceMonitor={"enabled": False}))
    cluster.wait(
        "the disabled ServiceMonitor deleted",
        lambda: cluster.get("monitoring.coreos.com/v1", "ServiceMonitor", "esnode-mon") is None,
    )


# ------------------------------------------------------------------------------- level-based


def _template_hash(daemonset: dict[str, Any]) -> str:
    value: str = daemonset["spec"]["template"]["metadata"]["annotations"]["esnode.io/config-hash"]
    return value


def test_an_envelope_change_rewrites_the_config_and_rolls_the_agents(cluster: Cluster) -> None:
    spec = gpu_fleet(serviceMonitor={"enabled": False}, powerEnvelope={"defaultWatts": 1000})
    cluster.apply("env", spec)
    cluster.wait_condition("env", "Ready", "True")
    [before] = cluster.daemonsets("env")

    cluster.apply("env", {**spec, "powerEnvelope": {"defaultWatts": 1500}})

    def config_has_new_envelope() -> bool:
        configmap = cluster.get("v1", "ConfigMap", "esnode-env-config")
        return (
            configmap is not None and "node_power_envelope_watts = 1500.0" in configmap["data"]["esnode.toml"]
        )

    cluster.wait("the ConfigMap with the new envelope", config_has_new_envelope)
    cluster.wait(
        "a new pod-template hash",
        lambda: _template_hash(cluster.daemonsets("env")[0]) != _template_hash(before),
    )
    cluster.wait_condition("env", "Ready", "True")


def test_an_envelope_override_gets_its_own_daemonset_on_its_nodes(cluster: Cluster) -> None:
    override = {"nodeSelector": {"matchLabels": {"kubernetes.io/hostname": "kwok-node-1"}}, "watts": 6500}
    cluster.apply(
        "split",
        gpu_fleet(
            serviceMonitor={"enabled": False}, powerEnvelope={"defaultWatts": 1000, "overrides": [override]}
        ),
    )
    cluster.wait_condition("split", "Ready", "True")
    by_group = {
        ds["metadata"]["labels"]["esnode.io/envelope-group"]: ds["status"]["desiredNumberScheduled"]
        for ds in cluster.daemonsets("split")
    }
    assert by_group.pop("default") == 1 and list(by_group.values()) == [1]
    assert cluster.fleet("split")["status"]["readyText"] == "2/2"

    cluster.apply("split", gpu_fleet(serviceMonitor={"enabled": False}, powerEnvelope={"defaultWatts": 1000}))
    cluster.wait("the override's DaemonSet pruned", lambda: len(cluster.daemonsets("split")) == 1)
    cluster.wait(
        "the default group back on both GPU nodes", lambda: cluster.agent_nodes("split") == GPU_NODES
    )


def test_a_deleted_daemonset_comes_back_and_an_edited_one_is_restored(cluster: Cluster) -> None:
    cluster.apply("heal", gpu_fleet(serviceMonitor={"enabled": False}))
    cluster.wait_condition("heal", "Ready", "True")
    [original] = cluster.daemonsets("heal")

    cluster.env.kubectl("delete", "daemonset", "-n", cluster.namespace, "esnode-heal")
    cluster.wait(
        "the DaemonSet recreated",
        lambda: (
            [d["metadata"]["uid"] for d in cluster.daemonsets("heal")]
            not in ([], [original["metadata"]["uid"]])
        ),
    )

    cluster.env.kubectl(
        "set", "image", "-n", cluster.namespace, "daemonset/esnode-heal", "agent=example.invalid/other:1"
    )
    image = original["spec"]["template"]["spec"]["containers"][0]["image"]
    cluster.wait(
        "the edited image restored",
        lambda: cluster.daemonsets("heal")[0]["spec"]["template"]["spec"]["containers"][0]["image"] == image,
    )

    cluster.env.kubectl("delete", "configmap", "-n", cluster.namespace, "esnode-heal-config")
    cluster.wait(
        "the ConfigMap recreated", lambda: cluster.get("v1", "ConfigMap", "esnode-heal-config") is not None
    )
    cluster.wait_condition("heal", "Ready", "True")


def test_deleting_the_fleet_garbage_collects_its_children(cluster: Cluster) -> None:
    cluster.apply("gone", gpu_fleet(serviceMonitor={"enabled": False}))
    cluster.wait_condition("gone", "Ready", "True")
    cluster.env.kubectl("delete", "esnodefleet", "-n", cluster.namespace, "gone")

    def collected() -> bool:
        children = [
            cluster.get("v1", "ConfigMap", "esnode-gone-config"),
            cluster.get("v1", "Service", "esnode-gone"),
            cluster.get("v1", "ServiceAccount", "esnode-gone"),
        ]
        return not cluster.daemonsets("gone") and not any(children)

    cluster.wait("the fleet's children garbage-collected", collected, timeout=90)


# ---------------------------------------------------------------------------------- bad input

REJECTED = {
    "negative watts": ({"powerEnvelope": {"defaultWatts": -5}}, "spec.powerEnvelope.defaultWatts"),
    "unknown field": ({"bogus": 1}, 'unknown field "spec.bogus"'),
    "interval in words": ({"serviceMonitor": {"interval": "5 minutes"}}, "spec.serviceMonitor.interval"),
    "timeout above interval": (
        {"serviceMonitor": {"interval": "10s", "scrapeTimeout": "1m"}},
        "scrapeTimeout must not exceed interval",
    ),
    "label value with spaces": ({"nodeSelector": {"gpu": "not valid"}}, "spec.nodeSelector.gpu"),
    "label key with spaces": ({"nodeSelector": {"bad key": "x"}}, "keys must be valid label keys"),
    "override selecting every node": (
        {"powerEnvelope": {"overrides": [{"nodeSelector": {}, "watts": 100}]}},
        "must name at least one label",
    ),
    "collector timeout above interval": (
        {"scrapeIntervalSeconds": 2, "agent": {"collectorTimeoutSeconds": 3}},
        "must not exceed scrapeIntervalSeconds",
    ),
    "duplicate env": ({"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "Duplicate value"),
    "quantity in words": ({"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
    "process series above the bound": ({"gpu": {"processTopN": 5000}}, "spec.gpu.processTopN"),
    "capping mode unknown": ({"powerCapping": {"mode": "on"}}, "spec.powerCapping.mode"),
    "capping hysteresis of 0": (
        {"powerCapping": {"hysteresisWatts": 0}},
        "spec.powerCapping.hysteresisWatts",
    ),
    "scrape token without metricsAuth": (
        {"serviceMonitor": {"authorization": {"credentials": {"name": "t", "key": "token"}}}},
        "serviceMonitor.authorization needs metricsAuth kubernetes",
    ),
    "metricsTLS without a Secret": ({"metricsTLS": {}}, "spec.metricsTLS.secretName: Required value"),
}


@pytest.mark.parametrize(("spec", "expected"), REJECTED.values(), ids=REJECTED.keys())
def test_the_apiserver_rejects_what_the_schema_can_see(
    fleet_crd: Env, namespace: str, spec: dict[str, Any], expected: str
) -> None:
    fleet = {"apiVersion": FLEET_API, "kind": "EsnodeFleet", "metadata": {"name": "bad"}, "spec": spec}
    result = fleet_crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(fleet), check=False)
    assert result.returncode != 0
    assert expected in result.stderr, result.stderr


def test_long_names_are_rejected(fleet_crd: Env, namespace: str) -> None:
    fleet = {"apiVersion": FLEET_API, "kind": "EsnodeFleet", "metadata": {"name": "f" * 41}}
    result = fleet_crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(fleet), check=False)
    assert "name must be at most 40 characters" in result.stderr


@pytest.mark.parametrize("name", ["operator", "operator-uninstall"])
def test_names_that_would_take_the_operators_account_are_rejected(
    fleet_crd: Env, namespace: str, name: str
) -> None:
    fleet = {"apiVersion": FLEET_API, "kind": "EsnodeFleet", "metadata": {"name": name}}
    result = fleet_crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(fleet), check=False)
    assert "are reserved: the agents' account would be named like the operator's" in result.stderr


def test_a_selector_matching_no_node_is_a_condition(cluster: Cluster) -> None:
    cluster.apply(
        "nowhere", {"nodeSelector": {"esnode.io/test": "absent"}, "serviceMonitor": {"enabled": False}}
    )
    degraded = cluster.wait_condition("nowhere", "Degraded", "True", "NoMatchingNodes")
    assert "esnode.io/test=absent matches no node" in degraded["message"]
    assert cluster.condition("nowhere", "Ready")["status"] == "False"
    assert cluster.fleet("nowhere")["status"]["readyText"] == "0/0"
    assert len(cluster.daemonsets("nowhere")) == 1  # applied: nodes may get the label later


def test_a_younger_fleet_selecting_the_same_nodes_is_held(cluster: Cluster) -> None:
    cluster.apply("first", gpu_fleet(serviceMonitor={"enabled": False}))
    cluster.wait_condition("first", "Ready", "True")
    cluster.apply("second", {"serviceMonitor": {"enabled": False}, "port": next(_ports)})  # every node
    held = cluster.wait_condition("second", "Degraded", "True", "NodeConflict")
    assert "EsnodeFleet first" in held["message"] and "kwok-node-1" in held["message"]
    assert cluster.condition("second", "Ready")["reason"] == "NodeConflict"
    assert cluster.daemonsets("second") == []  # nothing half-applied
    assert cluster.get("v1", "ConfigMap", "esnode-second-config") is None
    assert cluster.condition("first", "Ready")["status"] == "True"

    cluster.apply(
        "second",
        {
            "nodeSelector": {"type": "kwok", "nvidia.com/gpu.present": "false"},
            "serviceMonitor": {"enabled": False},
        },
    )
    cluster.wait_condition(
        "second", "Degraded", "True", "NoMatchingNodes"
    )  # disjoint now, and honest about it


def test_an_update_the_apiserver_refuses_keeps_the_working_agents(cluster: Cluster) -> None:
    spec = gpu_fleet(serviceMonitor={"enabled": False})
    cluster.apply("keep", spec)
    cluster.wait_condition("keep", "Ready", "True")
    [working] = cluster.daemonsets("keep")

    cluster.apply("keep", {**spec, "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}})
    refused = cluster.wait_condition("keep", "Degraded", "True", "ApplyRejected")
    assert "DaemonSet esnode-keep" in refused["message"] and "nothing was changed" in refused["message"]
    [still] = cluster.daemonsets("keep")
    assert still["metadata"]["uid"] == working["metadata"]["uid"]
    assert still["spec"]["template"] == working["spec"]["template"]
    assert cluster.agent_nodes("keep") == GPU_NODES

    cluster.apply("keep", spec)
    cluster.wait_condition("keep", "Degraded", "False", "AsExpected")


# --------------------------------------------------------------------------------- self-metrics


def test_the_operator_counts_its_reconciliations(cluster: Cluster) -> None:
    cluster.apply("counted", gpu_fleet(serviceMonitor={"enabled": False}))
    cluster.wait_condition("counted", "Ready", "True")
    text = httpx.get(f"http://127.0.0.1:{cluster.metrics_port}/metrics", timeout=5).text
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }
    assert samples['esnode_operator_reconciles_total{result="ok",trigger="fleet"}'] >= 1
    assert samples['esnode_operator_applied_objects_total{kind="DaemonSet"}'] >= 1
    assert samples['esnode_operator_reconcile_duration_seconds_count{trigger="fleet"}'] >= 1
    assert samples["esnode_operator_status_patches_total"] >= 1


# ------------------------------------------------------------------------------------- RBAC

RBAC = REPO / "rbac" / "operator.yaml"


def refusals(log: str, outages: Iterable[tuple[datetime, datetime]] = ()) -> str:
    """Each request the apiserver refused the operator (403) outside ``outages``, with the lines
    that led to it."""
    windows = list(outages)
    lines = log.splitlines()

    def excused(line: str) -> bool:
        stamp = LOG_TIME.match(line)
        if stamp is None:
            return False
        at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
        return any(start <= at <= end for start, end in windows)

    found = [
        i for i, line in enumerate(lines) if ("Forbidden" in line or " 403 " in line) and not excused(line)
    ]
    return "\n---\n".join("\n".join(lines[max(0, i - 8) : i + 3]) for i in found[:5])


def _rbac_for(namespace: str) -> list[dict[str, Any]]:
    """rbac/operator.yaml for this test: its ServiceAccount here, cluster objects renamed."""
    documents = [d for d in yaml.safe_load_all(RBAC.read_text()) if d]
    for doc in documents:
        if doc["kind"] in ("ServiceAccount", "RoleBinding"):
            doc["metadata"]["namespace"] = namespace
        if doc["kind"] == "RoleBinding":  # of a ClusterRole, renamed below
            doc["roleRef"]["name"] += f"-{namespace}"
            doc["subjects"][0]["namespace"] = namespace
        if doc["kind"].startswith("Cluster"):
            doc["metadata"]["name"] += f"-{namespace}"
        if doc["kind"] == "ClusterRoleBinding":
            doc["roleRef"]["name"] += f"-{namespace}"
            doc["subjects"][0]["namespace"] = namespace
    return documents


@contextmanager
def operator_identity_for(env: Env, namespace: str, path: Path) -> Iterator[Path]:
    """A kubeconfig at ``path`` holding a token of the operator's ServiceAccount in ``namespace``,
    bound exactly as rbac/operator.yaml says; the cluster-scoped objects go afterwards."""
    documents = _rbac_for(namespace)
    env.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))
    token = env.kubectl("create", "token", "esnode-operator", "-n", namespace, "--duration=1h").stdout
    try:
        yield token_kubeconfig(env.kubeconfig, token, path)
    finally:
        cluster_scoped = [
            f"{d['kind'].lower()}/{d['metadata']['name']}"
            for d in documents
            if d["kind"].startswith("Cluster")
        ]
        env.kubectl("delete", "--ignore-not-found", *cluster_scoped, check=False)


@pytest.fixture
def operator_identity(fleet_crd: Env, namespace: str, tmp_path: Path) -> Iterator[Path]:
    with operator_identity_for(fleet_crd, namespace, tmp_path / "operator.kubeconfig") as path:
        yield path


def test_the_operator_works_with_no_more_than_its_rbac(
    fleet_crd: Env, namespace: str, operator_identity: Path, tmp_path: Path
) -> None:
    with operator_running(fleet_crd, namespace, operator_identity, tmp_path) as cluster:
        cluster.apply("least", gpu_fleet())
        cluster.wait_condition("least", "Ready", "True")
        cluster.wait_condition("least", "Degraded", "True", "ServiceMonitorCRDMissing")
        cluster.apply(
            "least", gpu_fleet(serviceMonitor={"enabled": False}, powerEnvelope={"defaultWatts": 900})
        )
        cluster.wait_condition("least", "Degraded", "False", "AsExpected")
        log = cluster.log.read_text()
    assert not refusals(log, cluster.outages), refusals(log, cluster.outages)


# ---------------------------------------------------------------------------------- peering

PEERING_CRDS = REPO / "crds" / "kopf-peering.yaml"


def test_two_peered_replicas_have_one_active_and_the_other_takes_over(
    fleet_crd: Env, namespace: str, tmp_path: Path
) -> None:
    fleet_crd.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(PEERING_CRDS))
    fleet_crd.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev")
    peering = {"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "esnode-operator"}}
    fleet_crd.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(peering))
    options = ("--peering", "esnode-operator", "--priority")
    kubeconfig = fleet_crd.kubeconfig
    with (
        operator_running(fleet_crd, namespace, kubeconfig, tmp_path / "a", (*options, "200")) as active,
        operator_running(fleet_crd, namespace, kubeconfig, tmp_path / "b", (*options, "100")) as standby,
    ):
        # kopf starts paused and resumes only when no live peer outranks it.
        active.wait("the active replica to resume", lambda: "Resuming operations" in active.log.read_text())
        standby.wait(
            "the standby to join", lambda: "Keep-alive in 'esnode-operator'" in standby.log.read_text()
        )
        active.apply("ha", gpu_fleet(serviceMonitor={"enabled": False}))
        active.wait_condition("ha", "Ready", "True")
        assert "fleet_changed" in active.log.read_text()
        assert "Resuming operations" not in standby.log.read_text()
        assert "fleet_changed" not in standby.log.read_text()

        active.process.terminate()  # a clean exit withdraws its keep-alive at once
        active.process.wait(timeout=15)
        standby.wait("the standby to resume", lambda: "Resuming operations" in standby.log.read_text())
        standby.apply("ha", gpu_fleet(serviceMonitor={"enabled": False}, powerEnvelope={"defaultWatts": 800}))
        standby.wait(
            "the former standby to apply the change",
            lambda: (
                "800.0"
                in (standby.get("v1", "ConfigMap", "esnode-ha-config") or {})
                .get("data", {})
                .get("esnode.toml", "")
            ),
        )
