"""The whole used-by chain on the test control plane, for the tests, scripts/demo and the bench.

Prometheus Operator (real, pinned) and a node-exporter DaemonSet holding host port 9100 (as
kube-prometheus-stack renders it), workload pods holding GPUs, the esnode chart installed with
default values, real agent and operator processes behind kwok's pods (kwok_pod_processes.py), and
the Debian Prometheus run with the configuration Prometheus Operator generated
(operator_prometheus.py), discovering the agents through their Service's endpoints.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kwok_pod_processes import KwokPodProcesses
from operator_prometheus import OperatorPrometheus, operator_prometheus
from prometheus_operator import (
    crd_files,
    crd_names,
    prometheus_object,
    prometheus_operator,
    prometheus_version,
)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "esnode"
MONITORING_NAMESPACE = "monitoring"
WORKLOAD_NAMESPACE = "ml"
ESNODE_NAMESPACE = "esnode"
RELEASE = "esnode"
AGENT_SELECTOR = "app.kubernetes.io/name=esnode-agent"
AGENT_JOB = "esnode-default"  # Prometheus Operator's job label: the Service's name
PROMETHEUS = "k8s"  # kube-prometheus-stack's Prometheus is monitoring/k8s too
# The fleet's agents use simulated GPUs; everything else is the chart's defaults.
CHART_VALUES = [
    "--set-json",
    'fleet.spec.env=[{"name": "ESNODE_GPU_BACKEND", "value": "sim:h100x8"}]',
]
# (pod, container, GPUs): what the kubelet's pod-resources API then reports on their nodes.
WORKLOADS = [("trainer-0", "trainer", 2), ("trainer-1", "trainer", 2), ("inference", "server", 1)]


class Tools:
    """kubectl and helm from the test control plane's cache, against its kubeconfig."""

    def __init__(self, bin_dir: Path, kubeconfig: Path, home: Path) -> None:
        self.bin_dir, self.kubeconfig, self.home = bin_dir, kubeconfig, home

    def run(self, tool: str, *args: str, input: str | None = None) -> str:
        env = {
            "PATH": f"{self.bin_dir}:/usr/bin:/bin",
            "KUBECONFIG": str(self.kubeconfig),
            "HOME": str(self.home),
            **{f"HELM_{k}_HOME": str(self.home / "helm" / k.lower()) for k in ("CACHE", "CONFIG", "DATA")},
        }
        proc = subprocess.run(
            [str(self.bin_dir / tool), *args],
            input=input,
            capture_output=True,
            text=True,
            env=env,
            timeout=180,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
        return proc.stdout

    def apply(self, *documents: dict[str, Any]) -> None:
        items = {"apiVersion": "v1", "kind": "List", "items": list(documents)}
        self.run("kubectl", "apply", "--server-side", "--force-conflicts", "-f", "-", input=json.dumps(items))


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.5)


def node_exporter_daemonset() -> dict[str, Any]:
    """The part of kube-prometheus-stack's node-exporter that matters here: host network, port 9100."""
    labels = {"app.kubernetes.io/name": "prometheus-node-exporter"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {"name": "node-exporter", "namespace": MONITORING_NAMESPACE, "labels": labels},
        "spec": {
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "hostNetwork": True,
                    "hostPID": True,
                    "containers": [
                        {
                            "name": "node-exporter",
                            "image": "quay.io/prometheus/node-exporter:v1.9.1",
                            "ports": [{"name": "http-metrics", "containerPort": 9100, "hostPort": 9100}],
                        }
                    ],
                    "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                },
            },
        },
    }


def workload_pod(name: str, container: str, gpus: int) -> dict[str, Any]:
    limits = {"nvidia.com/gpu": str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": WORKLOAD_NAMESPACE},
        "spec": {
            "containers": [{"name": container, "image": "example/trainer", "resources": {"limits": limits}}]
        },
    }


def namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def pods(api_client: Any, namespace: str, selector: str = "") -> list[Any]:
    items: list[Any] = (
        client.CoreV1Api(api_client).list_namespaced_pod(namespace, label_selector=selector).items
    )
    return items


def all_running(api_client: Any, namespace: str, selector: str, count: int) -> Callable[[], bool]:
    def check() -> bool:
        found = pods(api_client, namespace, selector)
        return len(found) == count and all(p.status.phase == "Running" for p in found)

    return check


def helm_install(tools: Tools, *args: str) -> None:
    tools.run(
        "helm", "upgrade", "--install", RELEASE, str(CHART), "-n", ESNODE_NAMESPACE, *CHART_VALUES, *args
    )


def uninstall(tools: Tools) -> float:
    """A plain `helm uninstall` with the operator running: the chart's pre-delete hook deletes the
    fleets first and waits for them; the seconds it took."""
    started = time.monotonic()
    tools.run(
        "helm", "uninstall", RELEASE, "-n", ESNODE_NAMESPACE, "--ignore-not-found", "--wait", "--timeout=180s"
    )
    return time.monotonic() - started


@dataclass
class Chain:
    tools: Tools
    api_client: Any
    processes: KwokPodProcesses
    prometheus: OperatorPrometheus
    kwok_nodes: list[str]

    def agent_pods(self) -> list[Any]:
        return pods(self.api_client, ESNODE_NAMESPACE, AGENT_SELECTOR)

    def helm_install(self, *args: str) -> None:
        helm_install(self.tools, *args)

    def agent_targets(self) -> list[dict[str, Any]]:
        return [t for t in self.prometheus.targets() if t["labels"].get("job") == AGENT_JOB]

    def agents_up(self) -> int:
        return sum(t["health"] == "up" for t in self.agent_targets())


@contextmanager
def chain_running(
    api_client: Any,
    bin_dir: Path,
    kubeconfig: Path,
    workdir: Path,
    *,
    prometheus_port: int,
    operator_port: int,
    chart_args: Sequence[str] = (),
    objects: Sequence[dict[str, Any]] = (),
    prometheus_spec: Mapping[str, Any] | None = None,
) -> Iterator[Chain]:
    """Everything up to an installed chart scraped by Prometheus; all of it removed on exit.

    `chart_args` are more helm values; `objects` are applied once the namespaces exist, before the
    chart; `prometheus_spec` is merged into the Prometheus object's spec."""
    tools = Tools(bin_dir, kubeconfig, workdir)
    core = client.CoreV1Api(api_client)
    kwok_nodes = sorted(
        n.metadata.name
        for n in core.list_node().items
        if (n.metadata.annotations or {}).get("kwok.x-k8s.io/node") == "fake"
    )
    with ExitStack() as stack:
        for crd in crd_files():
            tools.run("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        stack.callback(tools.run, "kubectl", "delete", "crd", "--ignore-not-found", *crd_names())
        tools.run(
            "kubectl",
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            *(f"crd/{n}" for n in crd_names()),
        )
        stack.enter_context(
            prometheus_operator(
                bin_dir / "prometheus-operator", kubeconfig, workdir / "prometheus-operator", operator_port
            )
        )
        tools.apply(*(namespace(n) for n in (MONITORING_NAMESPACE, WORKLOAD_NAMESPACE, ESNODE_NAMESPACE)))
        stack.callback(
            tools.run, "kubectl", "delete", "namespace", "--wait=true", "--ignore-not-found",
            MONITORING_NAMESPACE, WORKLOAD_NAMESPACE, ESNODE_NAMESPACE,
        )  # fmt: skip
        tools.apply(node_exporter_daemonset(), *(workload_pod(*w) for w in WORKLOADS), *objects)
        node_exporters = all_running(
            api_client,
            MONITORING_NAMESPACE,
            "app.kubernetes.io/name=prometheus-node-exporter",
            len(kwok_nodes),
        )
        wait_for("node-exporter on every node", node_exporters)
        wait_for("the workload pods", all_running(api_client, WORKLOAD_NAMESPACE, "", len(WORKLOADS)))
        processes = KwokPodProcesses(api_client, kubeconfig, workdir / "kwok-pods")
        processes.start()
        stack.callback(processes.stop)
        # Helm installs the chart's crds/ once and never upgrades them: apply this checkout's.
        tools.run("kubectl", "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds"))
        helm_install(tools, "--wait", "--timeout=120s", *chart_args)
        stack.callback(uninstall, tools)
        base = prometheus_object(PROMETHEUS, prometheus_version(bin_dir / "prometheus"))
        tools.apply(
            {
                **base,
                "metadata": {"name": PROMETHEUS, "namespace": MONITORING_NAMESPACE},
                "spec": {**base["spec"], **(prometheus_spec or {})},
            }
        )
        prometheus = stack.enter_context(
            operator_prometheus(
                api_client,
                MONITORING_NAMESPACE,
                PROMETHEUS,
                binary=bin_dir / "prometheus",
                kubeconfig=kubeconfig,
                workdir=workdir / "prometheus",
                port=prometheus_port,
            )
        )
        yield Chain(tools, api_client, processes, prometheus, kwok_nodes)
