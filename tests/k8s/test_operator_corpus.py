"""A corpus of bad EsnodeFleet specs on the real control plane: each refused or held, none Ready.

Refused: the apiserver answers 422 (400 for a field the schema does not declare) naming the field,
and nothing is stored. Held: the fleet is stored but the operator applies nothing and says why in
its Degraded condition (InvalidSpec: the operator's own checks, e.g. an ESNODE_* value the agent
would exit 2 on; ApplyRejected: a child the apiserver refuses on the dry run; ApplyFailed: one it
cannot even process, retried). Every case in one namespace under one operator, created in a batch.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import test_operator
from test_operator import FLEET_API, Cluster

from esnode_operator.kube import KubeError, resource_path

pytestmark = pytest.mark.k8s

# test_operator.py's fixtures: the CRD, and the operator serving the test's namespace
fleet_crd = test_operator.fleet_crd
cluster = test_operator.cluster

Case = tuple[str, dict[str, Any], str]  # name, spec, what the refusal names

REFUSED: list[Case] = [
    ("port-zero", {"port": 0}, "spec.port"),
    ("port-too-big", {"port": 70000}, "spec.port"),
    ("port-text", {"port": "http"}, "spec.port"),
    ("interval-tiny", {"scrapeIntervalSeconds": 0.001}, "spec.scrapeIntervalSeconds"),
    ("interval-zero", {"scrapeIntervalSeconds": 0}, "spec.scrapeIntervalSeconds"),  # an integer under 0.1
    ("interval-huge", {"scrapeIntervalSeconds": 99999}, "spec.scrapeIntervalSeconds"),
    ("pull-sometimes", {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy"),
    ("image-space", {"image": "my agent:1"}, "spec.image"),
    ("image-empty", {"image": ""}, "spec.image"),
    ("pull-secret-upper", {"imagePullSecrets": [{"name": "Bad_Secret"}]}, "spec.imagePullSecrets[0].name"),
    ("selector-key", {"nodeSelector": {"bad key!": "x"}}, "spec.nodeSelector"),
    ("selector-value-long", {"nodeSelector": {"a": "v" * 64}}, "spec.nodeSelector.a"),
    ("toleration-operator", {"tolerations": [{"operator": "Maybe"}]}, "spec.tolerations[0].operator"),
    ("toleration-no-key", {"tolerations": [{"operator": "Equal", "value": "x"}]}, "spec.tolerations[0]"),
    ("toleration-exists-value", {"tolerations": [{"operator": "Exists", "value": "x"}]}, "spec.tolerations[0]"),
    ("toleration-effect", {"tolerations": [{"operator": "Exists", "effect": "Sometimes"}]}, "spec.tolerations[0].effect"),
    ("priority-class-upper", {"priorityClassName": "Bad_Name"}, "spec.priorityClassName"),
    ("runtime-class-upper", {"runtimeClassName": "NVIDIA"}, "spec.runtimeClassName"),
    ("visible-devices-shell", {"gpu": {"visibleDevices": "all;rm"}}, "spec.gpu.visibleDevices"),
    ("socket-at-root", {"gpu": {"podResourcesSocket": "/kubelet.sock"}}, "spec.gpu.podResourcesSocket"),
    ("socket-under-dev", {"gpu": {"podResourcesSocket": "/dev/kubelet.sock"}}, "spec.gpu.podResourcesSocket"),
    ("socket-under-proc", {"gpu": {"podResourcesSocket": "/proc/1/x.sock"}}, "spec.gpu.podResourcesSocket"),
    ("socket-relative", {"gpu": {"podResourcesSocket": "run/kubelet.sock"}}, "spec.gpu.podResourcesSocket"),
    ("socket-dotdot", {"gpu": {"podResourcesSocket": "/var/../kubelet.sock"}}, "spec.gpu.podResourcesSocket"),
    ("watts-negative", {"powerEnvelope": {"defaultWatts": -1}}, "spec.powerEnvelope.defaultWatts"),
    ("watts-zero", {"powerEnvelope": {"defaultWatts": 0}}, "spec.powerEnvelope.defaultWatts"),
    ("watts-huge", {"powerEnvelope": {"defaultWatts": 2e6}}, "spec.powerEnvelope.defaultWatts"),
    ("override-empty-selector", {"powerEnvelope": {"overrides": [{"nodeSelector": {}, "watts": 100}]}},
     "spec.powerEnvelope.overrides[0].nodeSelector"),
    ("override-duplicate", {"powerEnvelope": {"overrides": [
        {"nodeSelector": {"matchLabels": {"t": "a"}}, "watts": 100},
        {"nodeSelector": {"matchLabels": {"t": "a"}}, "watts": 200}]}}, "spec.powerEnvelope.overrides"),
    ("override-watts-zero", {"powerEnvelope": {"overrides": [{"nodeSelector": {"matchLabels": {"t": "a"}}, "watts": 0}]}},
     "spec.powerEnvelope.overrides[0].watts"),
    ("override-in-no-values", {"powerEnvelope": {"overrides": [{"nodeSelector": {"matchExpressions": [
        {"key": "t", "operator": "In"}]}, "watts": 100}]}}, "spec.powerEnvelope.overrides[0].nodeSelector.matchExpressions[0]"),
    ("budget-floor-above-ceiling", {"powerBudget": {"totalWatts": 9000, "floorWatts": 5000, "ceilingWatts": 4000}},
     "spec.powerBudget.floorWatts"),
    ("monitor-interval-words", {"serviceMonitor": {"interval": "5 minutes"}}, "spec.serviceMonitor.interval"),
    ("monitor-interval-zero", {"serviceMonitor": {"interval": "0s"}}, "spec.serviceMonitor.interval"),
    ("monitor-timeout-above", {"serviceMonitor": {"interval": "10s", "scrapeTimeout": "1m"}}, "spec.serviceMonitor.scrapeTimeout"),
    ("heartbeat-short", {"report": {"heartbeatSeconds": 1}}, "spec.report.heartbeatSeconds"),
    ("power-step-zero", {"report": {"powerStepWatts": 0}}, "spec.report.powerStepWatts"),
    ("log-level-loud", {"agent": {"logLevel": "loud"}}, "spec.agent.logLevel"),
    ("collector-timeout-above", {"scrapeIntervalSeconds": 2, "agent": {"collectorTimeoutSeconds": 3}},
     "spec.agent.collectorTimeoutSeconds"),
    ("env-name-digit", {"env": [{"name": "1BAD", "value": "x"}]}, "spec.env[0].name"),
    ("env-both-sources", {"env": [{"name": "A", "value": "1", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}]},
     "spec.env[0]"),
    ("env-duplicate", {"env": [{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]}, "spec.env[1]"),
    ("memory-in-words", {"resources": {"limits": {"memory": "lots"}}}, "spec.resources.limits.memory"),
    ("host-network-text", {"hostNetwork": "yes"}, "spec.hostNetwork"),
    ("collector-text", {"collectors": {"gpu": "maybe"}}, "spec.collectors.gpu"),
    ("otlp-no-endpoint", {"otlp": {}}, "spec.otlp.endpoint"),
    ("otlp-endpoint-ftp", {"otlp": {"endpoint": "ftp://collector:4318"}}, "spec.otlp.endpoint"),
    ("otlp-endpoint-password", {"otlp": {"endpoint": "https://user:secret@collector:4318"}}, "spec.otlp.endpoint"),
    ("otlp-interval-zero", {"otlp": {"endpoint": "http://collector:4318", "intervalSeconds": 0}},
     "spec.otlp.intervalSeconds"),
    ("otlp-header-twice", {"otlp": {"endpoint": "http://collector:4318", "headers": [
        {"name": "Authorization", "secretKeyRef": {"name": "otlp", "key": "a"}},
        {"name": "authorization", "secretKeyRef": {"name": "otlp", "key": "b"}}]}}, "spec.otlp.headers"),
    ("otlp-tls-secret-upper", {"otlp": {"endpoint": "https://collector:4318", "tlsSecret": {"name": "Bad_Name"}}},
     "spec.otlp.tlsSecret.name"),
    ("unknown-field", {"bogus": 1}, "spec.bogus"),
]  # fmt: skip
# The name rules sit on the root (CEL cannot point a fieldPath into metadata): they say "name".
REFUSED_NAMES: list[tuple[str, str]] = [
    ("dotted.name", "name must be a DNS-1035 label"),
    ("f" * 41, "name must be at most 40"),
]

Held = tuple[str, dict[str, Any], str, str]  # name, spec, Degraded reason, in its message
_AFFINITY_BAD_OPERATOR = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "zone", "operator": "Bogus", "values": ["a"]}]}]}}}  # fmt: skip
HELD: list[Held] = [
    ("env-interval-words", {"env": [{"name": "ESNODE_SCRAPE_INTERVAL_SECONDS", "value": "soon"}]},
     "InvalidSpec", "ESNODE_SCRAPE_INTERVAL_SECONDS"),
    ("env-interval-tiny", {"env": [{"name": "ESNODE_SCRAPE_INTERVAL_SECONDS", "value": "0.001"}]},
     "InvalidSpec", "ESNODE_SCRAPE_INTERVAL_SECONDS"),
    ("env-listen-nowhere", {"env": [{"name": "ESNODE_LISTEN_ADDRESS", "value": "nowhere"}]},
     "InvalidSpec", "ESNODE_LISTEN_ADDRESS"),
    ("env-listen-port", {"env": [{"name": "ESNODE_LISTEN_ADDRESS", "value": "0.0.0.0:99999"}]},
     "InvalidSpec", "ESNODE_LISTEN_ADDRESS"),
    ("env-log-level", {"env": [{"name": "ESNODE_LOG_LEVEL", "value": "loud"}]}, "InvalidSpec", "ESNODE_LOG_LEVEL"),
    ("env-log-format", {"env": [{"name": "ESNODE_LOG_FORMAT", "value": "xml"}]}, "InvalidSpec", "ESNODE_LOG_FORMAT"),
    ("env-gpu-maybe", {"env": [{"name": "ESNODE_ENABLE_GPU", "value": "maybe"}]}, "InvalidSpec", "ESNODE_ENABLE_GPU"),
    ("env-envelope-negative", {"env": [{"name": "ESNODE_NODE_POWER_ENVELOPE_WATTS", "value": "-5"}]},
     "InvalidSpec", "ESNODE_NODE_POWER_ENVELOPE_WATTS"),
    ("env-backend-bogus", {"env": [{"name": "ESNODE_GPU_BACKEND", "value": "bogus"}]}, "InvalidSpec", "ESNODE_GPU_BACKEND"),
    ("env-timeout-above", {"scrapeIntervalSeconds": 5, "env": [{"name": "ESNODE_COLLECTOR_TIMEOUT_SECONDS", "value": "30"}]},
     "InvalidSpec", "ESNODE_COLLECTOR_TIMEOUT_SECONDS"),
    ("override-contradicts-itself", {"powerEnvelope": {"overrides": [{"nodeSelector": {
        "matchLabels": {"t": "a"}, "matchExpressions": [{"key": "t", "operator": "NotIn", "values": ["a"]}]}, "watts": 900}]}},
     "InvalidSpec", "overrides[0].nodeSelector contradicts itself"),
    ("override-contradicts-base", {"nodeSelector": {"gpu": "true"}, "powerEnvelope": {"overrides": [
        {"nodeSelector": {"matchLabels": {"gpu": "false"}}, "watts": 900}]}},
     "InvalidSpec", "overrides[0].nodeSelector contradicts spec.nodeSelector"),
    ("override-shadowed", {"powerEnvelope": {"overrides": [
        {"nodeSelector": {"matchLabels": {"t": "a"}}, "watts": 900},
        {"nodeSelector": {"matchLabels": {"t": "a", "z": "b"}}, "watts": 800}]}},
     "InvalidSpec", "overrides[1].nodeSelector selects only nodes that earlier overrides take"),
    ("override-absent-and-present", {"powerEnvelope": {"overrides": [{"nodeSelector": {"matchExpressions": [
        {"key": "t", "operator": "Exists"}, {"key": "t", "operator": "DoesNotExist"}]}, "watts": 900}]}},
     "InvalidSpec", "contradicts itself"),
    ("request-above-limit", {"resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}},
     "ApplyRejected", "must be less than or equal to cpu limit"),
    ("gpu-request-without-limit", {"resources": {"requests": {"nvidia.com/gpu": 1}, "limits": {}}},
     "ApplyRejected", "non overcommitable"),
    ("resource-name-bad", {"resources": {"limits": {"a/b/c": "1"}}}, "ApplyRejected", "a/b/c"),
    ("toleration-seconds-noschedule", {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule",
        "tolerationSeconds": 5}]}, "ApplyRejected", "tolerations[0].effect"),
    ("affinity-bad-operator", {"affinity": _AFFINITY_BAD_OPERATOR}, "ApplyRejected", "Bogus"),
    ("affinity-weight", {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 500, "preference": {"matchExpressions": [{"key": "z", "operator": "Exists"}]}}]}}},
     "ApplyRejected", "weight"),
    ("affinity-no-topology", {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"a": "b"}}, "topologyKey": ""}]}}}, "ApplyRejected", "topologyKey"),
    ("env-from-bad-field", {"env": [{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}]},
     "ApplyRejected", "fieldPath"),
    ("env-from-nothing", {"env": [{"name": "X", "valueFrom": {}}]}, "ApplyRejected", "valueFrom"),
    ("affinity-typo", {"affinity": {"nodeAffinity": "yes"}}, "ApplyFailed", "DaemonSet"),
    # The schema's check of an endpoint's shape lets this through; the agent's own rule does not.
    ("otlp-endpoint-broken-ipv6", {"otlp": {"endpoint": "http://[::1:4318"}}, "InvalidSpec", "otlp.endpoint"),
]  # fmt: skip


def _create(cluster: Cluster, name: str, spec: dict[str, Any]) -> KubeError | None:
    body = {"apiVersion": FLEET_API, "kind": "EsnodeFleet", "metadata": {"name": name}, "spec": spec}
    try:
        cluster.kube.request(
            "POST", resource_path(FLEET_API, "EsnodeFleet", cluster.namespace),
            query={"fieldValidation": "Strict"}, body=body,
        )  # fmt: skip
    except KubeError as exc:
        return exc
    return None


def _held_spec(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Off every node (its own label matches none), so that no two cases conflict over nodes."""
    selector = {**spec.get("nodeSelector", {}), "corpus.esnode.io/case": name}
    return {"serviceMonitor": {"enabled": False}, **spec, "nodeSelector": selector}


def test_every_bad_spec_is_refused_naming_the_field_or_held_with_a_reason(cluster: Cluster) -> None:
    assert len(REFUSED) + len(REFUSED_NAMES) + len(HELD) >= 40
    outcomes: Counter[str] = Counter()
    started = time.monotonic()
    wrong = []
    for name, spec, field in [*REFUSED, *((n, {}, f) for n, f in REFUSED_NAMES)]:
        refusal = _create(cluster, name, spec)
        if refusal is None or refusal.status not in (400, 422) or field not in refusal.message:
            wrong.append(f"{name}: {refusal or 'accepted'}")
        outcomes["refused"] += 1
    for name, spec, _, _ in HELD:
        refusal = _create(cluster, name, _held_spec(name, spec))
        if refusal is not None:
            wrong.append(f"{name}: refused, not held: {refusal}")
    assert not wrong, "\n".join(wrong)

    def degraded(name: str) -> dict[str, Any]:
        return cluster.condition(name, "Degraded")

    cluster.wait(
        "every held case Degraded",
        lambda: all(degraded(n).get("status") == "True" for n, *_ in HELD),
        timeout=120,
    )
    for name, _, reason, says in HELD:
        condition = degraded(name)
        if (condition["reason"], says in condition["message"]) != (reason, True):
            wrong.append(f"{name}: {condition['reason']}: {condition['message']}")
        if cluster.condition(name, "Ready")["status"] != "False" or cluster.daemonsets(name):
            wrong.append(f"{name}: Ready or half-applied")
        outcomes[f"held {reason}"] += 1
    assert not wrong, "\n".join(wrong)
    ready = sum(cluster.condition(n, "Ready").get("status") == "True" for n, *_ in HELD)
    outcomes["Ready"] = ready
    print(
        f"corpus of {sum(outcomes.values())} bad specs in {time.monotonic() - started:.1f} s: {dict(outcomes)}"
    )
    assert ready == 0
