"""A node's report follows the node between fleets: a fleet releases the reports of nodes it no longer selects.

Only the agents of the fleet named in an EsnodeNode's spec.fleet may write it (rbac/agents.yaml's
admission policy), and the spec is set once, when the agent creates the object. So when a node's
labels move it from fleet A to fleet B of the same namespace, B's agent is refused A's report
until it is gone: A's pass deletes the reports filed under A whose node A's nodeSelector no longer
matches (or that no longer exists), and B's agent then creates its own (a write that answers 404
creates the object). "Selects" is judged by nodeSelector, as NodeConflict judges it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from esnode_operator.kube import Kube, KubeError
from esnode_operator.names import API_VERSION, NODE_KIND

log = logging.getLogger(__name__)


def unselected_reports(
    reports: Iterable[Mapping[str, Any]], fleet_name: str, selected_nodes: set[str]
) -> list[Mapping[str, Any]]:
    """The fleet's reports (by spec.fleet) for nodes outside ``selected_nodes``."""
    return [
        report
        for report in reports
        if (report.get("spec") or {}).get("fleet") == fleet_name
        and report["metadata"]["name"] not in selected_nodes
    ]


class ReportHandover:
    def __init__(self, kube: Kube) -> None:
        self._kube = kube

    def release_unselected(
        self, namespace: str, fleet_name: str, node_selector: Mapping[str, str]
    ) -> list[str]:
        """Delete the fleet's reports of nodes it does not select; the names deleted.

        A refusal (an operator without the delete right) is logged, never fails the pass.
        """
        try:
            reports = self._kube.list(API_VERSION, NODE_KIND, namespace)
            if not any((r.get("spec") or {}).get("fleet") == fleet_name for r in reports):
                return []
            selected = {
                node["metadata"]["name"]
                for node in self._kube.list(
                    "v1", "Node", label_selector=_selector(node_selector), metadata_only=True
                )
            }
            released = unselected_reports(reports, fleet_name, selected)
            for report in released:
                self._delete(report)
        except KubeError as exc:
            log.warning(
                "node reports not released", extra={"fleet": f"{namespace}/{fleet_name}", "error": str(exc)}
            )
            return []
        names = [r["metadata"]["name"] for r in released]
        if names:
            log.info(
                "node reports released",
                extra={"fleet": f"{namespace}/{fleet_name}", "nodes": ",".join(names)},
            )
        return names

    def _delete(self, report: Mapping[str, Any]) -> None:
        try:
            self._kube.delete(report)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced by a newer object
                raise


def _selector(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
