"""Smoke tests for the test control plane itself (scripts/testenv, tests/k8s/conftest.py).

If these fail, every other k8s test is meaningless: nodes, DaemonSet rollout, owner-reference
garbage collection, kubectl/helm against the apiserver, and the prometheus-operator CRDs.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.rest import ApiException

pytestmark = pytest.mark.k8s

# `testenv` is conftest.TestEnv (conftest modules are not imported by tests, so it is typed Any here).
Env = Any
MONITORING_GROUP = "monitoring.coreos.com"

PAUSE_IMAGE = "registry.k8s.io/pause:3.10"  # never pulled: kwok only fakes the kubelet


def test_nodes_ready_with_gpu_capacity(testenv: Env) -> None:
    nodes = client.CoreV1Api(testenv.api_client).list_node().items
    assert len(nodes) == 3
    for node in nodes:
        ready = {c.type: c.status for c in node.status.conditions}.get("Ready")
        assert ready == "True", node.metadata.name
        assert node.metadata.annotations["kwok.x-k8s.io/node"] == "fake"
        assert not node.spec.taints
    gpu_nodes = sorted(
        n.metadata.name for n in nodes if n.metadata.labels.get("nvidia.com/gpu.present") == "true"
    )
    assert gpu_nodes == ["kwok-node-1", "kwok-node-2"]
    for node in nodes:
        expected = "8" if node.metadata.name in gpu_nodes else None
        assert node.status.allocatable.get("nvidia.com/gpu") == expected
        assert node.status.capacity.get("nvidia.com/gpu") == expected


def _daemonset(name: str, owner: client.V1ConfigMap) -> client.V1DaemonSet:
    labels = {"app": name}
    return client.V1DaemonSet(
        metadata=client.V1ObjectMeta(
            name=name,
            owner_references=[
                client.V1OwnerReference(
                    api_version="v1", kind="ConfigMap", name=owner.metadata.name, uid=owner.metadata.uid
                )
            ],
        ),
        spec=client.V1DaemonSetSpec(
            selector=client.V1LabelSelector(match_labels=labels),
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels=labels),
                spec=client.V1PodSpec(containers=[client.V1Container(name="pause", image=PAUSE_IMAGE)]),
            ),
        ),
    )


def test_daemonset_rolls_out_and_owner_deletion_garbage_collects_it(testenv: Env, namespace: str) -> None:
    core = client.CoreV1Api(testenv.api_client)
    apps = client.AppsV1Api(testenv.api_client)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    apps.create_namespaced_daemon_set(namespace, _daemonset("smoke", owner))

    def rolled_out() -> bool:
        status = apps.read_namespaced_daemon_set_status("smoke", namespace).status
        return status.desired_number_scheduled == 3 and status.number_ready == 3

    testenv.wait_until("DaemonSet smoke ready on 3 nodes", rolled_out, timeout=90)
    pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
    assert sorted(p.spec.node_name for p in pods) == ["kwok-node-1", "kwok-node-2", "kwok-node-3"]
    assert {p.status.phase for p in pods} == {"Running"}

    core.delete_namespaced_config_map("owner", namespace)

    def collected() -> bool:
        daemonsets = apps.list_namespaced_daemon_set(namespace).items
        pods = core.list_namespaced_pod(namespace, label_selector="app=smoke").items
        return not daemonsets and not pods

    testenv.wait_until("garbage collection of the DaemonSet and its pods", collected, timeout=90)


def test_kubectl_matches_the_apiserver(testenv: Env) -> None:
    versions = json.loads(testenv.kubectl("version", "-o", "json").stdout)
    server = versions["serverVersion"]
    assert server["gitVersion"] == versions["clientVersion"]["gitVersion"]
    assert server["gitVersion"].startswith(f"v{server['major']}.{server['minor']}.")
    assert testenv.kubectl("auth", "can-i", "*", "*").stdout.strip() == "yes"  # system:masters
    assert "kwok-node-1" in testenv.kubectl("get", "nodes", "-o", "name").stdout


def test_rbac_denies_a_service_account_token(testenv: Env, namespace: str, tmp_path: Path) -> None:
    """The token controller fills a service-account token; the apiserver accepts it and RBAC says no."""
    core = client.CoreV1Api(testenv.api_client)
    secret = client.V1Secret(
        metadata=client.V1ObjectMeta(
            name="default-token", annotations={"kubernetes.io/service-account.name": "default"}
        ),
        type="kubernetes.io/service-account-token",
    )
    core.create_namespaced_secret(namespace, secret)

    def token() -> str:
        data = core.read_namespaced_secret("default-token", namespace).data or {}
        return base64.b64decode(data.get("token", "")).decode()

    testenv.wait_until("the service-account token", lambda: bool(token()))
    cluster = yaml.safe_load(testenv.kubeconfig.read_text())["clusters"][0]["cluster"]
    (tmp_path / "empty").write_text("apiVersion: v1\nkind: Config\n")
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
    as_sa = (
        f"--kubeconfig={tmp_path / 'empty'}",
        f"--server={cluster['server']}",
        f"--certificate-authority={ca}",
    )
    whoami = json.loads(testenv.kubectl(*as_sa, f"--token={token()}", "auth", "whoami", "-o", "json").stdout)
    assert whoami["status"]["userInfo"]["username"] == f"system:serviceaccount:{namespace}:default"
    denied = testenv.kubectl(*as_sa, f"--token={token()}", "get", "nodes", check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower()


def test_helm_installs_a_chart(testenv: Env, namespace: str, tmp_path: Path) -> None:
    assert testenv.helm("version", "--short").stdout.startswith("v3.")
    chart = tmp_path / "smoke"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: smoke\nversion: 0.1.0\n")
    (chart / "templates" / "cm.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  k: v\n"
    )
    testenv.helm("install", "smoke", str(chart), "--namespace", namespace, "--wait", "--timeout", "60s")
    assert "smoke" in testenv.helm("list", "--namespace", namespace, "--short").stdout
    cm = client.CoreV1Api(testenv.api_client).read_namespaced_config_map("smoke-cm", namespace)
    assert cm.data == {"k": "v"}


def _service_monitor(name: str, spec: dict) -> dict:
    return {
        "apiVersion": f"{MONITORING_GROUP}/v1",
        "kind": "ServiceMonitor",
        "metadata": {"name": name},
        "spec": spec,
    }


def test_service_monitor_crd_absent_until_requested(
    testenv: Env, namespace: str, request: pytest.FixtureRequest
) -> None:
    assert not testenv.api_group_present(MONITORING_GROUP)

    request.getfixturevalue("prometheus_operator_crds")
    assert testenv.api_group_present(MONITORING_GROUP)
    custom = client.CustomObjectsApi(testenv.api_client)
    valid = {
        "selector": {"matchLabels": {"app": "esnode"}},
        "endpoints": [{"port": "metrics", "interval": "30s"}],
    }
    custom.create_namespaced_custom_object(
        MONITORING_GROUP, "v1", namespace, "servicemonitors", _service_monitor("ok", valid)
    )
    # The apiserver validates against the real schema: `selector` is required.
    with pytest.raises(ApiException) as err:
        custom.create_namespaced_custom_object(
            MONITORING_GROUP, "v1", namespace, "servicemonitors", _service_monitor("bad", {"endpoints": []})
        )
    assert err.value.status == 422

    testenv.delete_prometheus_operator_crds()
    assert not testenv.api_group_present(MONITORING_GROUP)
