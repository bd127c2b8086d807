"""The agents' DaemonSets: one per envelope group (see placement.py), privileged, host-wide view."""

from __future__ import annotations

import posixpath
from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.api.models import FleetSpec
from esnode_operator.children.agent_config import CAPPING_STATE_DIR, HOST_PROC, HOST_ROOT, HOST_SYS
from esnode_operator.children.agent_otlp import OTLP_TLS_FOLDER, otlp_header_env, otlp_tls_keys
from esnode_operator.children.agent_web_config import TLS_FOLDER, TLS_KEYS
from esnode_operator.children.placement import EnvelopeGroup, envelope_groups, merged_affinity
from esnode_operator.children.service import agent_pod_selector
from esnode_operator.names import (
    AGENT_CONTAINER_NAME,
    ANNOTATION_CONFIG_HASH,
    CONFIG_FILE_NAME,
    CONFIG_MOUNT_PATH,
    LABEL_ENVELOPE_GROUP,
    METRICS_PORT_NAME,
    child_name,
    configmap_name,
    daemonset_name,
    fleet_labels,
)

ENVELOPE_ENV = "ESNODE_NODE_POWER_ENVELOPE_WATTS"  # the agent's env layer beats its config file

# name, host path, mount path, mount options. /dev is read-only yet NVML still opens its devices:
# a read-only mount forbids writing files, not I/O on character devices.
_HOST_MOUNTS: tuple[tuple[str, str, str, dict[str, str]], ...] = (
    ("proc", "/proc", HOST_PROC, {}),
    ("sys", "/sys", HOST_SYS, {}),
    ("root", "/", HOST_ROOT, {"mountPropagation": "HostToContainer"}),
    ("dev", "/dev", "/dev", {}),
)


def build_daemonsets(fleet: Fleet, config_hash: str) -> list[dict[str, Any]]:
    """One DaemonSet per envelope group; raises PlacementError when the overrides cannot be placed."""
    return [
        _daemonset(fleet, group, config_hash)
        for group in envelope_groups(fleet.spec.power_envelope, fleet.spec.node_selector)
    ]


def _daemonset(fleet: Fleet, group: EnvelopeGroup, config_hash: str) -> dict[str, Any]:
    selector = {**agent_pod_selector(fleet), LABEL_ENVELOPE_GROUP: group.group_id}
    labels = {**fleet_labels(fleet.name), LABEL_ENVELOPE_GROUP: group.group_id}
    return adopted(
        {
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": daemonset_name(fleet.name, group.group_id), "labels": labels},
            "spec": {
                "selector": {"matchLabels": selector},
                "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "template": {
                    # a copy: adoption adds the fleet's labels to the DaemonSet's, not to its pods'
                    "metadata": {
                        "labels": dict(labels),
                        "annotations": {ANNOTATION_CONFIG_HASH: config_hash},
                    },
                    "spec": _pod_spec(fleet, group),
                },
            },
        },
        fleet,
    )


def _pod_spec(fleet: Fleet, group: EnvelopeGroup) -> dict[str, Any]:
    spec = fleet.spec
    pod: dict[str, Any] = {
        "serviceAccountName": child_name(fleet.name),
        "automountServiceAccountToken": True,  # pod-bound: names the node, as agents.yaml's policy needs
        "hostPID": True,
        "hostNetwork": spec.host_network,
        "dnsPolicy": "ClusterFirstWithHostNet" if spec.host_network else "ClusterFirst",
        "terminationGracePeriodSeconds": 10,
        "nodeSelector": dict(spec.node_selector),
        "tolerations": [t.model_dump(mode="json", exclude_none=True) for t in spec.tolerations],
        "imagePullSecrets": [{"name": s.name} for s in spec.image_pull_secrets],
        "containers": [_container(fleet, group)],
        "volumes": _volumes(fleet),
    }
    affinity = merged_affinity(spec.affinity, group.terms)
    optional = {
        "affinity": affinity,
        "priorityClassName": spec.priority_class_name,
        "runtimeClassName": spec.runtime_class_name,
    }
    pod.update({key: value for key, value in optional.items() if value is not None})
    return pod


def _container(fleet: Fleet, group: EnvelopeGroup) -> dict[str, Any]:
    spec = fleet.spec
    return {
        "name": AGENT_CONTAINER_NAME,
        "image": spec.effective_image,
        "imagePullPolicy": spec.image_pull_policy,
        "env": _env(fleet, group),
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "readinessProbe": _probe(fleet, "/readyz", period_seconds=5, failure_threshold=3),
        "livenessProbe": _probe(
            fleet, "/healthz", period_seconds=20, failure_threshold=3, initial_delay_seconds=10
        ),
        "resources": spec.resources.model_dump(mode="json"),
        "securityContext": {"privileged": True},  # RAPL, hwmon, NVML and /dev/cpu need the host's view
        "volumeMounts": _volume_mounts(fleet),
    }


def _probe(
    fleet: Fleet, path: str, *, period_seconds: int, failure_threshold: int, initial_delay_seconds: int = 0
) -> dict[str, Any]:
    # The probe paths stay open under metricsAuth; over TLS the kubelet probes HTTPS (it verifies no
    # certificate).
    scheme = {"scheme": "HTTPS"} if fleet.spec.metrics_tls is not None else {}
    return {
        "httpGet": {"path": path, "port": METRICS_PORT_NAME, **scheme},
        "periodSeconds": period_seconds,
        "failureThreshold": failure_threshold,
        "initialDelaySeconds": initial_delay_seconds,
        "timeoutSeconds": 2,
    }


def _env(fleet: Fleet, group: EnvelopeGroup) -> list[dict[str, Any]]:
    """The operator's variables, then the user's: a user entry of the same name replaces ours.

    Who the agent reports as (node, namespace, fleet) is here; how it reports is in the config file.
    """
    env: dict[str, dict[str, Any]] = {
        "ESNODE_NODE_NAME": {"valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        "ESNODE_NAMESPACE": {"valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        "ESNODE_FLEET": {"value": fleet.name},
        "ESNODE_FLEET_UID": {"value": fleet.uid},
        "ESNODE_CONFIG": {"value": f"{CONFIG_MOUNT_PATH}/{CONFIG_FILE_NAME}"},
        "NVIDIA_VISIBLE_DEVICES": {"value": fleet.spec.gpu.visible_devices},
        "NVIDIA_DRIVER_CAPABILITIES": {"value": "utility"},  # NVML only: no compute, no graphics
    }
    if group.watts is not None:
        env[ENVELOPE_ENV] = {"value": repr(float(group.watts))}
    if fleet.spec.otlp is not None:
        env.update(otlp_header_env(fleet.spec.otlp))
    for user in fleet.spec.env:
        env[user.name] = user.model_dump(mode="json", exclude_none=True, exclude={"name"})
    return [{"name": name, **source} for name, source in env.items()]


def _volumes(fleet: Fleet) -> list[dict[str, Any]]:
    volumes: list[dict[str, Any]] = [
        _config_volume(fleet),
        *({"name": name, "hostPath": {"path": host_path}} for name, host_path, _, _ in _HOST_MOUNTS),
        # Always, capping on or off: an agent started with capping off restores what a crashed one set.
        {"name": "capping-state", "hostPath": {"path": CAPPING_STATE_DIR, "type": "DirectoryOrCreate"}},
    ]
    if fleet.spec.gpu.k8s_mode:
        directory = posixpath.dirname(fleet.spec.gpu.pod_resources_socket)
        volumes.append({"name": "pod-resources", "hostPath": {"path": directory, "type": "Directory"}})
    return volumes


def _config_volume(fleet: Fleet) -> dict[str, Any]:
    """The ConfigMap, with the TLS Secrets' files projected beside it (mounted read-only, as a whole)."""
    configmap = {"name": configmap_name(fleet.name)}
    secrets = _tls_secret_files(fleet.spec)
    if not secrets:
        return {"name": "config", "configMap": configmap}
    sources = [{"configMap": configmap}, *({"secret": secret} for secret in secrets)]
    return {"name": "config", "projected": {"sources": sources}}


def _tls_secret_files(spec: FleetSpec) -> list[dict[str, Any]]:
    """Projected Secret sources: spec.metricsTLS's certificate and key in tls/, spec.otlp's in otlp/."""
    wanted: list[tuple[str, str, tuple[str, ...]]] = []
    if spec.metrics_tls is not None:
        wanted.append((spec.metrics_tls.secret_name, TLS_FOLDER, TLS_KEYS))
    if spec.otlp is not None and spec.otlp.tls_secret is not None:
        wanted.append((spec.otlp.tls_secret.name, OTLP_TLS_FOLDER, otlp_tls_keys(spec.otlp.tls_secret)))
    return [
        {"name": name, "items": [{"key": key, "path": f"{folder}/{key}"} for key in keys]}
        for name, folder, keys in wanted
    ]


def _volume_mounts(fleet: Fleet) -> list[dict[str, Any]]:
    mounts: list[dict[str, Any]] = [
        {"name": "config", "mountPath": CONFIG_MOUNT_PATH, "readOnly": True},
        *(
            {"name": name, "mountPath": mount_path, "readOnly": True, **options}
            for name, _, mount_path, options in _HOST_MOUNTS
        ),
        {"name": "capping-state", "mountPath": CAPPING_STATE_DIR},  # the one the agent writes
    ]
    if fleet.spec.gpu.k8s_mode:
        directory = posixpath.dirname(fleet.spec.gpu.pod_resources_socket)
        mounts.append({"name": "pod-resources", "mountPath": directory, "readOnly": True})
    return mounts
