"""Taking back the agents' Node condition when its node leaves the fleet or the fleet goes.

An agent sets EsnodePowerEnvelopeExceeded on its own node and cannot take it away once it stops
(its rights go with the fleet). The condition's message names the fleet as namespace/name, so the
operator finds the nodes carrying its fleet's condition and removes the condition from those the
fleet no longer covers: a strategic merge patch deleting the one entry keyed by its type, which
leaves the kubelet's conditions be.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from esnode_agent.report.kube_writer import NODE_CONDITION_TYPE, STRATEGIC_MERGE
from esnode_operator.kube import Kube, KubeError, resource_path

log = logging.getLogger(__name__)

Node = Mapping[str, Any]


def fleet_tag(namespace: str, fleet_name: str) -> str:
    """How the agents' condition message ends (esnode_agent.report.model.condition_message)."""
    return f"(fleet {namespace}/{fleet_name})"


def fleet_condition(node: Node, namespace: str, fleet_name: str) -> Mapping[str, Any] | None:
    for found in (node.get("status") or {}).get("conditions") or []:
        if found.get("type") == NODE_CONDITION_TYPE and str(found.get("message", "")).endswith(
            fleet_tag(namespace, fleet_name)
        ):
            return found  # type: ignore[no-any-return]
    return None


def selects(node_selector: Mapping[str, str]) -> Callable[[Node], bool]:
    def covered(node: Node) -> bool:
        labels = node["metadata"].get("labels") or {}
        return all(labels.get(key) == value for key, value in node_selector.items())

    return covered


class NodeConditions:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def withdraw(self, namespace: str, fleet_name: str, keep: Callable[[Node], bool]) -> list[str]:
        """Remove the fleet's condition from every node ``keep`` rejects; the nodes it was removed from."""
        removed = []
        for node in self._kube.list("v1", "Node"):
            if fleet_condition(node, namespace, fleet_name) is None or keep(node):
                continue
            name = node["metadata"]["name"]
            if self._remove(name):
                removed.append(name)
        if removed:
            log.info(
                "node condition removed",
                extra={"fleet": f"{namespace}/{fleet_name}", "nodes": ",".join(removed)},
            )
        return removed

    def _remove(self, node_name: str) -> bool:
        patch = {"status": {"conditions": [{"type": NODE_CONDITION_TYPE, "$patch": "delete"}]}}
        try:
            self._kube.request(
                "PATCH", resource_path("v1", "Node", None, node_name) + "/status",
                body=patch, content_type=STRATEGIC_MERGE,
            )  # fmt: skip
        except KubeError as exc:
            if exc.status == 404:  # the node went meanwhile
                return False
            if (
                exc.status == 403
            ):  # an older RBAC without nodes/status: the condition stays, said once per pass
                log.warning("node condition not removed", extra={"node": node_name, "error": str(exc)})
                return False
            raise
        return True
