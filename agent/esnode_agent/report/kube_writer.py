"""Writes a node report to the cluster: the node's EsnodeNode status and, when asked, a Node condition.

Blocking kubernetes-client calls; the reporter runs them in a worker thread. Each agent writes
only its own objects (last writer wins on its own EsnodeNode), so agents never conflict.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from esnode_agent.api import (
    AGENT_APP_NAME,
    API_VERSION,
    FLEET_KIND,
    FLEET_LABEL,
    GROUP,
    LABEL_MANAGED_BY,
    NODE_KIND,
    NODE_PLURAL,
    VERSION,
)
from esnode_agent.report.model import NodeReport, condition_message

NODE_CONDITION_TYPE = "EsnodePowerEnvelopeExceeded"
HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409
STRATEGIC_MERGE = "application/strategic-merge-patch+json"
MERGE_PATCH = "application/merge-patch+json"


class KubeStatusWriter:
    def __init__(self, api: client.ApiClient, namespace: str, fleet_uid: str | None) -> None:
        self._objects = client.CustomObjectsApi(api)
        self._core = client.CoreV1Api(api)
        self._namespace = namespace
        self._fleet_uid = fleet_uid

    def write_report(self, report: NodeReport) -> float | None:
        """Write the report; returns the envelope the fleet's budget gives this node (its
        EsnodeNode's spec.envelopeWatts, in the object the write returns), None for none."""
        # Nulls stay in: in a merge patch they delete what an earlier report said (an envelope removed).
        body = {"status": report.model_dump(mode="json", by_alias=True)}
        try:
            written = self._patch_status(report.node_name, body)
        except ApiException as exc:
            if exc.status != HTTP_NOT_FOUND:
                raise
            self._create(report)
            written = self._patch_status(report.node_name, body)
        envelope = ((written or {}).get("spec") or {}).get("envelopeWatts")
        return float(envelope) if isinstance(envelope, int | float) else None

    def write_node_condition(self, report: NodeReport, transition_time: datetime) -> None:
        """Node-problem-detector style; a strategic merge keys on `type`, leaving kubelet's conditions be."""
        condition = {
            "type": NODE_CONDITION_TYPE,
            "status": "True" if report.exceeded else "False",
            "reason": "PowerAboveEnvelope" if report.exceeded else "PowerWithinEnvelope",
            "message": condition_message(report, self._namespace),
            "lastHeartbeatTime": _timestamp(datetime.now(UTC)),
            "lastTransitionTime": _timestamp(transition_time),
        }
        self._core.patch_node_status(
            report.node_name, {"status": {"conditions": [condition]}}, _content_type=STRATEGIC_MERGE
        )

    def _patch_status(self, name: str, body: dict[str, Any]) -> dict[str, Any] | None:
        written = self._objects.patch_namespaced_custom_object_status(
            GROUP, VERSION, self._namespace, NODE_PLURAL, name, body, _content_type=MERGE_PATCH
        )
        return written if isinstance(written, dict) else None

    def _create(self, report: NodeReport) -> None:
        metadata: dict[str, Any] = {
            "name": report.node_name,
            "namespace": self._namespace,
            "labels": {FLEET_LABEL: report.fleet, LABEL_MANAGED_BY: AGENT_APP_NAME},
        }
        if self._fleet_uid:  # owned by the fleet so deleting the fleet removes it
            metadata["ownerReferences"] = [
                {
                    "apiVersion": API_VERSION,
                    "kind": FLEET_KIND,
                    "name": report.fleet,
                    "uid": self._fleet_uid,
                    "blockOwnerDeletion": False,
                }
            ]
        body = {
            "apiVersion": API_VERSION,
            "kind": NODE_KIND,
            "metadata": metadata,
            "spec": {"nodeName": report.node_name, "fleet": report.fleet},
        }
        try:
            self._objects.create_namespaced_custom_object(GROUP, VERSION, self._namespace, NODE_PLURAL, body)
        except ApiException as exc:
            if exc.status != HTTP_CONFLICT:  # created meanwhile by an earlier try: fine
                raise


def _timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
