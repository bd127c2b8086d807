"""spec.otlp on real parts: a fleet's agents push to Prometheus' OTLP receiver, read back with PromQL.

The operator (a real process with no more than rbac/operator.yaml grants) renders a fleet with
spec.otlp; its agents run as real processes behind kwok's pods (kwok_pod_processes.py), their
header values read from a Secret and joined into ESNODE_OTLP_HEADERS by the kubelet's $(NAME)
expansion, and their CA and client certificate from the Secret spec.otlp.tlsSecret names. They push
over mutual TLS to a loopback proxy that requires that client certificate and records each push's
headers, and on into Prometheus 3.5's OTLP receiver (tests/e2e/prometheus_otlp_process.py). Every kwok node's
series must come back under its node's name, every push must carry the headers and the client certificate, and the header
value must reach neither the fleet's ConfigMap, its DaemonSet, the agents' /status nor their logs.
"""

from __future__ import annotations

import base64
import importlib.util
import json
import sys
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest
from kubernetes import client
from kwok_pod_processes import KwokPodProcesses
from recording_proxy import RecordingProxy, recording_proxy
from test_node_reports import installed  # noqa: F401 (a fixture)
from test_operator import ALL_NODES, Cluster, free_port, operator_identity_for, operator_running, refusals
from tls_material import TlsMaterial, make_tls_material

pytestmark = pytest.mark.k8s

Env = Any  # conftest.TestEnv
E2E = Path(__file__).resolve().parents[1] / "e2e"
FLEET = "push"
AUTH_SECRET = "otlp-auth"
TLS_SECRET = "otlp-tls"  # ca.crt, tls.crt, tls.key: cert-manager's keys
CLIENT_NAME = "prometheus"  # tls_material's client certificate's CN
TOKEN = "Bearer s3cret-fleet-token"  # as the docs' example: a space, not percent-encoded
TENANT_HEADER = "X-Tenant$Id"  # a `$` in a name: the operator writes it `$$` for the kubelet
TENANT = "tenant-a"
SIM_CONFIGMAP = "sim-gpus"  # the GPU backend through a configMapKeyRef, the runner's other key source
POWER = "esnode_gpu_power_watts"


def _e2e_module(name: str) -> ModuleType:
    """tests/e2e/<name>.py, registered under its name so that its imports of its siblings find them."""
    spec = importlib.util.spec_from_file_location(name, E2E / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


_e2e_module("agent_process")
prometheus_otlp_process = _e2e_module("prometheus_otlp_process")
prometheus_process = _e2e_module("prometheus_process")


@dataclass
class Pushing:
    cluster: Cluster
    prometheus: str
    proxy: RecordingProxy
    processes: KwokPodProcesses
    agents: dict[str, str]  # node -> its agent's base URL


def _secret(namespace: str, name: str, values: dict[str, bytes]) -> client.V1Secret:
    return client.V1Secret(
        metadata=client.V1ObjectMeta(name=name, namespace=namespace),
        data={k: base64.b64encode(v).decode() for k, v in values.items()},
    )


def _sources(namespace: str, tls: TlsMaterial) -> tuple[list[client.V1Secret], client.V1ConfigMap]:
    auth = _secret(namespace, AUTH_SECRET, {"authorization": TOKEN.encode(), "tenant": TENANT.encode()})
    files = {"ca.crt": tls.ca_cert, "tls.crt": tls.client_cert, "tls.key": tls.client_key}
    certificates = _secret(namespace, TLS_SECRET, {k: path.read_bytes() for k, path in files.items()})
    configmap = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name=SIM_CONFIGMAP, namespace=namespace), data={"backend": "sim:h100x8"}
    )
    return [auth, certificates], configmap


def _fleet_spec(endpoint: str) -> dict[str, Any]:
    backend = {"configMapKeyRef": {"name": SIM_CONFIGMAP, "key": "backend"}}
    headers = [
        {"name": "Authorization", "secretKeyRef": {"name": AUTH_SECRET, "key": "authorization"}},
        {"name": TENANT_HEADER, "secretKeyRef": {"name": AUTH_SECRET, "key": "tenant"}},
    ]
    return {
        "serviceMonitor": {"enabled": False},
        "port": free_port(),
        "scrapeIntervalSeconds": 1,
        "env": [{"name": "ESNODE_GPU_BACKEND", "valueFrom": backend}],
        "otlp": {
            "endpoint": endpoint,
            "intervalSeconds": 1,
            "timeoutSeconds": 5,
            "headers": headers,
            "tlsSecret": {"name": TLS_SECRET, "clientCertificate": True},
        },
    }


def _agents(processes: KwokPodProcesses, namespace: str, port: int) -> dict[str, str]:
    return {
        r.node: f"http://{r.address}:{port}"
        for r in processes.running.values()
        if r.pod.startswith(f"{namespace}_esnode-{FLEET}-")
    }


@pytest.fixture(scope="module")
def pushing(installed: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pushing]:  # noqa: F811
    workdir = tmp_path_factory.mktemp("otlp")  # short: the kubelet sockets beneath must fit 107 bytes
    core = client.CoreV1Api(installed.api_client)
    namespace = f"esnode-otlp-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
    with ExitStack() as stack:
        stack.callback(core.delete_namespace, namespace)
        tls = make_tls_material(workdir / "tls")
        secrets, configmap = _sources(namespace, tls)
        for secret in secrets:
            core.create_namespaced_secret(namespace, secret)
        core.create_namespaced_config_map(namespace, configmap)
        prometheus = stack.enter_context(
            prometheus_otlp_process.otlp_prometheus(workdir, promote=("k8s.node.name",))
        )
        proxy = stack.enter_context(recording_proxy(prometheus, tls))
        processes = KwokPodProcesses(installed.api_client, installed.kubeconfig, workdir / "kwok-pods")
        processes.start()
        stack.callback(processes.stop)
        kubeconfig = stack.enter_context(
            operator_identity_for(installed, namespace, workdir / "op.kubeconfig")
        )
        cluster = stack.enter_context(
            operator_running(installed, namespace, kubeconfig, workdir / "operator")
        )
        spec = _fleet_spec(f"{proxy.url}/api/v1/otlp")
        cluster.apply(FLEET, spec)
        cluster.wait_condition(FLEET, "Ready", "True")
        cluster.wait(
            "an agent process on every node",
            lambda: sorted(_agents(processes, namespace, spec["port"])) == ALL_NODES,
        )
        pushed = f"count by (k8s_node_name) ({POWER})"
        cluster.wait(
            "every node's series in Prometheus",
            lambda: len(prometheus_process.query(prometheus, pushed)) == len(ALL_NODES),
            timeout=90,
        )
        yield Pushing(cluster, prometheus, proxy, processes, _agents(processes, namespace, spec["port"]))
        assert processes.errors == []  # every pod started, with every Secret and ConfigMap key found
        log = cluster.log.read_text()
        assert not refusals(log, cluster.outages), refusals(log, cluster.outages)


def test_every_nodes_agent_pushes_its_series_under_its_node(pushing: Pushing) -> None:
    per_node = prometheus_process.query(
        pushing.prometheus, f"count by (k8s_node_name, instance, job) ({POWER})"
    )
    found = sorted((r["metric"]["k8s_node_name"], r["metric"]["instance"], r["value"][1]) for r in per_node)
    # 8 simulated H100s each, the backend read through the configMapKeyRef
    assert found == [(node, node, "8") for node in ALL_NODES]
    assert {r["metric"]["job"] for r in per_node} == {"esnode-agent"}
    info = prometheus_process.query(pushing.prometheus, "target_info")
    assert sorted(r["metric"]["k8s_node_name"] for r in info) == ALL_NODES


def test_each_agent_counts_its_pushes_as_successes(pushing: Pushing) -> None:
    for node, url in pushing.agents.items():
        text = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'esnode_otlp_push_total{result="success"}' in text, node
        assert 'esnode_otlp_push_total{result="failed"} 0.0' in text, node
        assert 'esnode_otlp_push_total{result="rejected"} 0.0' in text, node


def test_every_push_carries_the_headers_from_the_secret(pushing: Pushing) -> None:
    pushes = list(pushing.proxy.requests)
    assert len(pushes) >= len(ALL_NODES)
    assert {path for path, _ in pushes} == {"/api/v1/otlp/v1/metrics"}
    first = pushes[0]
    assert all(h.get("Authorization") == TOKEN and h.get(TENANT_HEADER) == TENANT for _, h in pushes), first


def test_every_push_came_over_mutual_tls_with_the_secrets_client_certificate(pushing: Pushing) -> None:
    assert pushing.proxy.url.startswith("https://")
    names = list(pushing.proxy.client_names)
    assert len(names) == len(pushing.proxy.requests) and set(names) == {CLIENT_NAME}
    configmap = pushing.cluster.get("v1", "ConfigMap", f"esnode-{FLEET}-config")
    assert configmap is not None
    config = configmap["data"]["esnode.toml"]
    for key, name in (
        ("otlp_ca_file", "ca.crt"),
        ("otlp_cert_file", "tls.crt"),
        ("otlp_key_file", "tls.key"),
    ):
        assert f'{key} = "/etc/esnode/otlp/{name}"' in config


def test_the_header_values_are_in_neither_the_fleets_children_nor_the_agents_status_or_logs(
    pushing: Pushing,
) -> None:
    cluster = pushing.cluster
    configmap = cluster.get("v1", "ConfigMap", f"esnode-{FLEET}-config")
    assert configmap is not None
    config = configmap["data"]["esnode.toml"]
    assert f'otlp_endpoint = "{pushing.proxy.url}/api/v1/otlp"' in config
    [daemonset] = cluster.daemonsets(FLEET)
    for text in (json.dumps(configmap), json.dumps(daemonset)):
        assert "s3cret" not in text and TENANT not in text
    for node, url in pushing.agents.items():
        assert "s3cret" not in httpx.get(f"{url}/status", timeout=5).text, node
    logs = [r.log.read_text() for r in pushing.processes.running.values()]
    assert logs and not any("s3cret" in log for log in logs)
