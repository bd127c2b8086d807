"""The agents' DaemonSets, Service, ServiceAccount and ServiceMonitor, built without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from esnode_operator.api.fleet import Fleet
from esnode_operator.children.desired import desired_children
from esnode_operator.children.servicemonitor import prometheus_duration


def fleet(spec: dict[str, Any], labels: dict[str, str] | None = None) -> Fleet:
    metadata: dict[str, Any] = {"name": "gpus", "namespace": "monitoring", "uid": "uid-1", "generation": 3}
    if labels:
        metadata["labels"] = labels
    return Fleet.from_body(
        {"apiVersion": "esnode.io/v1alpha1", "kind": "EsnodeFleet", "metadata": metadata, "spec": spec}
    )


def only_daemonset(spec: dict[str, Any]) -> dict[str, Any]:
    [daemonset] = desired_children(fleet(spec)).daemonsets
    return daemonset


def pod(daemonset: dict[str, Any]) -> dict[str, Any]:
    spec: dict[str, Any] = daemonset["spec"]["template"]["spec"]
    return spec


def container(daemonset: dict[str, Any]) -> dict[str, Any]:
    agent: dict[str, Any]
    [agent] = pod(daemonset)["containers"]
    return agent


def env(daemonset: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(daemonset)["env"]}


def test_agents_run_privileged_with_the_hosts_view() -> None:
    daemonset = only_daemonset({})
    spec = pod(daemonset)
    assert spec["hostPID"] is True  # the host's PID 1: its mounts and network namespace
    assert container(daemonset)["securityContext"] == {"privileged": True}
    mounts = {m["name"]: m for m in container(daemonset)["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for name, host_path, mount_path in [
        ("proc", "/proc", "/host/proc"),
        ("sys", "/sys", "/host/sys"),
        ("root", "/", "/host/root"),
        ("dev", "/dev", "/dev"),
    ]:
        assert volumes[name]["hostPath"]["path"] == host_path
        assert mounts[name]["mountPath"] == mount_path
    writable = {name for name, mount in mounts.items() if not mount.get("readOnly")}
    assert writable == {"capping-state"}  # the capper's record of what it set, kept on the host
    assert volumes["capping-state"]["hostPath"] == {
        "path": "/var/lib/esnode/capping",
        "type": "DirectoryOrCreate",
    }
    assert mounts["capping-state"]["mountPath"] == "/var/lib/esnode/capping"
    assert mounts["root"]["mountPropagation"] == "HostToContainer"
    assert volumes["config"]["configMap"]["name"] == "esnode-gpus-config"
    assert mounts["config"]["mountPath"] == "/etc/esnode"


def test_agent_environment_names_its_node_namespace_fleet_config_and_gpus() -> None:
    variables = env(only_daemonset({"gpu": {"visibleDevices": "0,1"}}))
    assert variables["ESNODE_NODE_NAME"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}
    assert variables["ESNODE_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert (variables["ESNODE_FLEET"], variables["ESNODE_FLEET_UID"]) == ("gpus", "uid-1")
    assert variables["ESNODE_CONFIG"] == "/etc/esnode/esnode.toml"
    assert variables["NVIDIA_VISIBLE_DEVICES"] == "0,1"


def test_user_env_is_added_and_replaces_an_operator_variable_of_the_same_name() -> None:
    daemonset = only_daemonset(
        {
            "env": [
                {"name": "ESNODE_LOG_LEVEL", "value": "debug"},
                {"name": "NVIDIA_VISIBLE_DEVICES", "value": "none"},
            ]
        }
    )
    names = [e["name"] for e in container(daemonset)["env"]]
    assert len(names) == len(set(names))
    assert env(daemonset)["ESNODE_LOG_LEVEL"] == "debug"
    assert env(daemonset)["NVIDIA_VISIBLE_DEVICES"] == "none"


def test_probes_hit_the_agents_health_endpoints_on_the_metrics_port() -> None:
    agent = container(only_daemonset({"port": 9400}))
    assert agent["ports"] == [{"name": "metrics", "containerPort": 9400, "protocol": "TCP"}]
    assert agent["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert agent["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_config_change_changes_the_pod_template_hash() -> None:
    def annotation(spec: dict[str, Any]) -> str:
        value: str = only_daemonset(spec)["spec"]["template"]["metadata"]["annotations"][
            "esnode.io/config-hash"
        ]
        return value

    base = annotation({"powerEnvelope": {"defaultWatts": 1000}})
    assert base == annotation({"powerEnvelope": {"defaultWatts": 1000}})
    assert base != annotation({"powerEnvelope": {"defaultWatts": 1500}})
    assert base != annotation({"powerEnvelope": {"defaultWatts": 1000}, "scrapeIntervalSeconds": 10})


def test_rolling_update_and_a_selector_that_never_changes_with_the_spec() -> None:
    one = only_daemonset({})
    other = only_daemonset({"image": "registry.example/esnode:2", "nodeSelector": {"a": "b"}, "port": 9500})
    assert one["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    assert one["spec"]["selector"] == other["spec"]["selector"]  # immutable on a DaemonSet
    selector = one["spec"]["selector"]["matchLabels"]
    assert selector.items() <= one["spec"]["template"]["metadata"]["labels"].items()


def test_scheduling_options_reach_the_pod() -> None:
    daemonset = only_daemonset(
        {
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"podAntiAffinity": {"x": 1}},
            "priorityClassName": "system-node-critical",
            "runtimeClassName": "nvidia",
            "imagePullSecrets": [{"name": "registry"}],
            "image": "registry.example/esnode:2",
            "imagePullPolicy": "Always",
            "resources": {"limits": {"memory": "512Mi"}, "requests": {"cpu": 1}},
            "hostNetwork": False,
        }
    )
    spec = pod(daemonset)
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["affinity"] == {"podAntiAffinity": {"x": 1}}
    assert (spec["priorityClassName"], spec["runtimeClassName"]) == ("system-node-critical", "nvidia")
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert (spec["hostNetwork"], spec["dnsPolicy"]) == (False, "ClusterFirst")
    agent = container(daemonset)
    assert (agent["image"], agent["imagePullPolicy"]) == ("registry.example/esnode:2", "Always")
    assert agent["resources"] == {"limits": {"memory": "512Mi"}, "requests": {"cpu": 1}}


def test_agents_install_beside_node_exporter_on_the_pod_network_by_default() -> None:
    """kube-prometheus-stack's node-exporter holds hostNetwork and host port 9100 on every node."""
    daemonset = only_daemonset({})
    spec = pod(daemonset)
    assert (spec["hostNetwork"], spec["dnsPolicy"]) == (False, "ClusterFirst")
    assert container(daemonset)["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]


def test_host_network_stays_an_option() -> None:
    daemonset = only_daemonset({"hostNetwork": True, "port": 9101})
    spec = pod(daemonset)
    assert (spec["hostNetwork"], spec["dnsPolicy"]) == (True, "ClusterFirstWithHostNet")
    assert container(daemonset)["ports"] == [{"name": "metrics", "containerPort": 9101, "protocol": "TCP"}]


def test_pod_attribution_is_on_by_default_and_mounts_the_pod_resources_directory_read_only() -> None:
    without = only_daemonset({"gpu": {"k8sMode": False}})
    assert "pod-resources" not in {v["name"] for v in pod(without)["volumes"]}
    daemonset = only_daemonset({})
    volumes = {v["name"]: v for v in pod(daemonset)["volumes"]}
    mounts = {m["name"]: m for m in container(daemonset)["volumeMounts"]}
    assert volumes["pod-resources"]["hostPath"] == {
        "path": "/var/lib/kubelet/pod-resources",
        "type": "Directory",
    }
    assert mounts["pod-resources"] == {
        "name": "pod-resources",
        "mountPath": "/var/lib/kubelet/pod-resources",
        "readOnly": True,
    }


def test_envelope_overrides_get_a_daemonset_each_with_their_watts() -> None:
    children = desired_children(
        fleet(
            {
                "powerEnvelope": {
                    "defaultWatts": 1200,
                    "overrides": [{"nodeSelector": {"matchLabels": {"type": "dgx"}}, "watts": 6500}],
                }
            }
        )
    )
    default, dgx = children.daemonsets
    assert default["metadata"]["name"] == "esnode-gpus"
    assert dgx["metadata"]["name"].startswith("esnode-gpus-") and len(dgx["metadata"]["name"]) <= 63
    assert "ESNODE_NODE_POWER_ENVELOPE_WATTS" not in env(default)  # the ConfigMap's default applies
    assert env(dgx)["ESNODE_NODE_POWER_ENVELOPE_WATTS"] == "6500.0"
    terms = {
        d["metadata"]["name"]: pod(d)["affinity"]["nodeAffinity"][
            "requiredDuringSchedulingIgnoredDuringExecution"
        ]["nodeSelectorTerms"]
        for d in children.daemonsets
    }
    assert terms[default["metadata"]["name"]] == [
        {"matchExpressions": [{"key": "type", "operator": "NotIn", "values": ["dgx"]}]}
    ]
    assert terms[dgx["metadata"]["name"]] == [
        {"matchExpressions": [{"key": "type", "operator": "In", "values": ["dgx"]}]}
    ]
    selectors = [
        d["spec"]["selector"]["matchLabels"]["esnode.io/envelope-group"] for d in children.daemonsets
    ]
    assert len(set(selectors)) == 2


def test_every_child_is_owned_by_the_fleet_and_carries_its_labels() -> None:
    children = desired_children(fleet({}, labels={"team": "ml"}))
    objects = [*children.core, children.servicemonitor]
    for obj in objects:
        assert obj is not None
        assert obj["metadata"]["namespace"] == "monitoring"
        assert [ref["uid"] for ref in obj["metadata"]["ownerReferences"]] == ["uid-1"]
        assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "esnode-operator"
        assert obj["metadata"]["labels"]["team"] == "ml"
    [daemonset] = children.daemonsets
    assert "team" not in daemonset["spec"]["template"]["metadata"]["labels"]


def test_service_is_headless_on_the_metrics_port_and_selects_every_agent() -> None:
    children = desired_children(fleet({"port": 9400}))
    service = children.service
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}
    ]
    [daemonset] = children.daemonsets
    assert service["spec"]["selector"].items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    # Only the agent pods mount a token (pod-bound, naming their node); other users of the account get none.
    assert children.serviceaccount["automountServiceAccountToken"] is False
    assert pod(daemonset)["automountServiceAccountToken"] is True
    assert pod(daemonset)["serviceAccountName"] == children.serviceaccount["metadata"]["name"]


def test_agents_may_write_their_node_reports_in_the_fleets_namespace_and_nothing_else() -> None:
    children = desired_children(fleet({}))
    role, binding = children.role, children.rolebinding
    assert (role["kind"], role["metadata"]["namespace"]) == ("Role", "monitoring")
    assert role["rules"] == [
        {"apiGroups": ["esnode.io"], "resources": ["esnodenodes"], "verbs": ["get", "create", "patch"]},
        {"apiGroups": ["esnode.io"], "resources": ["esnodenodes/status"], "verbs": ["get", "patch"]},
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": "esnode-gpus",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "esnode-gpus", "namespace": "monitoring"}
    ]
    for obj in (role, binding):
        assert obj["metadata"]["ownerReferences"][0]["uid"] == "uid-1"  # collected with the fleet
    # applied before the DaemonSets whose agents use them
    order = [obj["kind"] for obj in children.core]
    assert order.index("RoleBinding") < order.index("DaemonSet")


def test_servicemonitor_scrapes_the_service_at_the_agents_pace() -> None:
    children = desired_children(
        fleet({"scrapeIntervalSeconds": 2.5, "serviceMonitor": {"labels": {"release": "kps"}}})
    )
    monitor = children.servicemonitor
    assert monitor is not None
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1" and monitor["kind"] == "ServiceMonitor"
    assert monitor["metadata"]["labels"]["release"] == "kps"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= children.service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["monitoring"]}
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"], endpoint["interval"]) == ("metrics", "/metrics", "2500ms")
    assert "scrapeTimeout" not in endpoint


def test_servicemonitor_moves_the_agent_pods_identity_out_of_the_workload_labels() -> None:
    """Applied after Prometheus Operator's target labels: workload pod/namespace/container stay unrenamed."""
    monitor = desired_children(fleet({})).servicemonitor
    assert monitor is not None
    [endpoint] = monitor["spec"]["endpoints"]
    assert "honorLabels" not in endpoint
    assert endpoint["relabelings"] == [
        {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"},
        {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "agent_pod", "action": "replace"},
        {
            "sourceLabels": ["__meta_kubernetes_namespace"],
            "targetLabel": "agent_namespace",
            "action": "replace",
        },
        {"regex": "pod|namespace|container", "action": "labeldrop"},
    ]


def test_servicemonitor_options_and_disabling() -> None:
    relabel = {"action": "labeldrop", "regex": "agent_namespace"}
    options = {"interval": "30s", "scrapeTimeout": "10s", "relabelings": [relabel]}
    monitor = desired_children(fleet({"serviceMonitor": options})).servicemonitor
    assert monitor is not None
    [endpoint] = monitor["spec"]["endpoints"]
    assert (endpoint["interval"], endpoint["scrapeTimeout"]) == ("30s", "10s")
    assert endpoint["relabelings"][-1] == relabel  # the user's come last, so they can undo ours
    assert desired_children(fleet({"serviceMonitor": {"enabled": False}})).servicemonitor is None


@pytest.mark.parametrize(("seconds", "text"), [(5.0, "5s"), (2.5, "2500ms"), (0.1, "100ms"), (60.0, "60s")])
def test_prometheus_durations(seconds: float, text: str) -> None:
    assert prometheus_duration(seconds) == text
