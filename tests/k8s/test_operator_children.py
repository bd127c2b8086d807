"""The operator keeps its children whole and takes back the Node conditions of nodes that left.

Real control plane, the operator as its console script (test_operator.py's fixtures). Issue 19:
an added env var, sidecar, label or ConfigMap key stayed forever; the agents' Node condition
stayed on nodes after their fleet was deleted or they left it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import test_operator
from test_operator import Cluster, gpu_fleet

pytestmark = pytest.mark.k8s

# test_operator.py's fixtures: the CRD, and the operator serving the test's namespace
fleet_crd = test_operator.fleet_crd
cluster = test_operator.cluster

CONVERGE_SECONDS = 20.0  # a watched child (DaemonSet, ConfigMap): one event, one pass


def _agent(daemonset: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = daemonset["spec"]["template"]["spec"]["containers"]
    return next(c for c in containers if c["name"] == "agent")


def _timed(cluster: Cluster, what: str, gone: Any) -> float:
    started = time.monotonic()
    cluster.wait(what, gone, timeout=CONVERGE_SECONDS)
    return time.monotonic() - started


def test_what_others_add_to_a_child_is_removed_and_said_once(cluster: Cluster) -> None:
    cluster.apply("whole", gpu_fleet(serviceMonitor={"enabled": False}))
    cluster.wait_condition("whole", "Ready", "True")
    namespace, kubectl = cluster.namespace, cluster.env.kubectl
    [before] = cluster.daemonsets("whole")
    generation_annotation = before["metadata"]["annotations"]["deprecated.daemonset.template.generation"]
    assert generation_annotation  # the apiserver's, nobody's field: it must survive the take-back

    def daemonset() -> dict[str, Any]:
        [found] = cluster.daemonsets("whole")
        return found

    kubectl("set", "env", "-n", namespace, "daemonset/esnode-whole", "-c", "agent", "SNEAKY=1")
    env_s = _timed(
        cluster, "the added env var removed",
        lambda: "SNEAKY" not in {e["name"] for e in _agent(daemonset()).get("env", [])},
    )  # fmt: skip
    sidecar = {"spec": {"template": {"spec": {"containers": [{"name": "sidecar", "image": "busybox:1"}]}}}}
    kubectl("patch", "-n", namespace, "daemonset/esnode-whole", "--type=strategic", "-p", json.dumps(sidecar))
    sidecar_s = _timed(
        cluster, "the sidecar removed",
        lambda: [c["name"] for c in daemonset()["spec"]["template"]["spec"]["containers"]] == ["agent"],
    )  # fmt: skip
    kubectl("label", "-n", namespace, "daemonset/esnode-whole", "team=intruder")
    label_s = _timed(
        cluster, "the added label removed", lambda: "team" not in daemonset()["metadata"]["labels"]
    )
    kubectl(
        "patch",
        "-n",
        namespace,
        "configmap/esnode-whole-config",
        "--type=merge",
        "-p",
        '{"data":{"extra":"1"}}',
    )
    key_s = _timed(
        cluster, "the added ConfigMap key removed",
        lambda: set((cluster.get("v1", "ConfigMap", "esnode-whole-config") or {})["data"]) == {"esnode.toml"},
    )  # fmt: skip
    print(
        f"additions removed after: env var {env_s:.2f} s, sidecar {sidecar_s:.2f} s, "
        f"label {label_s:.2f} s, ConfigMap key {key_s:.2f} s"
    )

    after = daemonset()
    assert after["metadata"]["uid"] == before["metadata"]["uid"]  # taken back in place, not recreated
    assert after["metadata"]["annotations"].get("deprecated.daemonset.template.generation")
    assert after["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"]  # defaults stay
    assert after["status"]["desiredNumberScheduled"] == 2  # the controller's status is untouched
    log = cluster.log.read_text()
    reverted = [line for line in log.splitlines() if "reverted an edit of a child" in line]
    assert len(reverted) == 4, "\n".join(reverted)  # each edit said once
    events = cluster.kube.list(
        "v1", "Event", namespace, field_selector="involvedObject.name=whole,reason=EditReverted"
    )
    messages = " ".join(e["message"] for e in events)
    for added in ("SNEAKY", "sidecar", "metadata.labels.team", "data.extra"):
        assert added in messages, messages
    cluster.wait_condition("whole", "Ready", "True")


CONDITION = "EsnodePowerEnvelopeExceeded"


def _set_condition(cluster: Cluster, node: str, fleet_ref: str) -> None:
    """What the fleet's agent on the node would write (esnode_agent.report.kube_writer)."""
    condition = {
        "type": CONDITION, "status": "False", "reason": "PowerWithinEnvelope",
        "message": f"node power 3000 W against 4500 W (fleet {fleet_ref})",
        "lastHeartbeatTime": "2026-12-02T00:00:00Z", "lastTransitionTime": "2026-12-02T00:00:00Z",
    }  # fmt: skip
    cluster.env.kubectl(
        "patch", "node", node, "--subresource=status", "--type=strategic",
        "-p", json.dumps({"status": {"conditions": [condition]}}),
    )  # fmt: skip


def _condition_message(cluster: Cluster, node: str) -> str | None:
    found = cluster.kube.get("v1", "Node", None, node)
    return next((c["message"] for c in found["status"].get("conditions", []) if c["type"] == CONDITION), None)


def test_the_node_condition_goes_when_the_node_leaves_the_fleet_and_when_the_fleet_goes(
    cluster: Cluster,
) -> None:
    ref = f"{cluster.namespace}/cond"
    cluster.apply("cond", gpu_fleet(serviceMonitor={"enabled": False}, nodeCondition=True))
    cluster.wait_condition("cond", "Progressing", "False")
    for node in ("kwok-node-1", "kwok-node-2"):
        _set_condition(cluster, node, ref)
    _set_condition(cluster, "kwok-node-3", "elsewhere/cond")  # another namespace's fleet of that name
    try:
        spec = gpu_fleet(serviceMonitor={"enabled": False}, nodeCondition=True)
        cluster.apply("cond", {**spec, "nodeSelector": {"kubernetes.io/hostname": "kwok-node-1"}})
        left_s = _timed(
            cluster,
            "kwok-node-2's condition removed",
            lambda: _condition_message(cluster, "kwok-node-2") is None,
        )
        assert _condition_message(cluster, "kwok-node-1") == f"node power 3000 W against 4500 W (fleet {ref})"

        cluster.env.kubectl("delete", "esnodefleet", "-n", cluster.namespace, "cond", "--wait=false")
        gone_s = _timed(
            cluster,
            "kwok-node-1's condition removed",
            lambda: _condition_message(cluster, "kwok-node-1") is None,
        )
        print(
            f"node condition removed after: node left the fleet {left_s:.2f} s, fleet deleted {gone_s:.2f} s"
        )
        node_3 = _condition_message(cluster, "kwok-node-3")
        assert node_3 is not None and node_3.endswith("(fleet elsewhere/cond)")  # not ours: kept
        assert _condition_message(cluster, "kwok-node-3") is not None
    finally:
        delete = {"status": {"conditions": [{"type": CONDITION, "$patch": "delete"}]}}
        for node in ("kwok-node-1", "kwok-node-2", "kwok-node-3"):
            cluster.env.kubectl(
                "patch", "node", node, "--subresource=status", "--type=strategic", "-p", json.dumps(delete)
            )
