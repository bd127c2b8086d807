"""Who may set the Node condition: fleets' agent accounts as subjects of one shared ClusterRoleBinding.

Patching nodes/status is a cluster-wide right, and a namespaced fleet cannot own a cluster-wide
object (the garbage collector would never remove it). So the ClusterRole and its binding are
installed once with the operator (rbac/agents.yaml) and the operator only edits the
binding's subjects: a fleet's ServiceAccount is listed while its spec.nodeCondition is true. The
operator needs nothing more than get/patch on that one binding and `bind` on that one role.
"""

from __future__ import annotations

import logging

from esnode_operator.children.agent_rbac import RBAC_API_VERSION, agent_subject
from esnode_operator.kube import Kube, KubeError, resource_path
from esnode_operator.reconcile.fleet_status import AGENT_RBAC_MISSING, Problem

log = logging.getLogger(__name__)

DEFAULT_NODE_STATUS_BINDING = "esnode-agent-node-status"
_CONFLICT_RETRIES = 5  # fleets edit the one subjects list concurrently; each try re-reads it


class NodeStatusAccess:
    def __init__(self, kube: Kube, binding_name: str = DEFAULT_NODE_STATUS_BINDING) -> None:
        self._kube = kube
        self._binding = binding_name

    def grant(self, namespace: str, fleet_name: str, granted: bool) -> Problem | None:
        """List (or unlist) the fleet's agents in the binding; a Problem when it cannot be granted."""
        for _ in range(_CONFLICT_RETRIES):
            try:
                return self._try(namespace, fleet_name, granted)
            except KubeError as exc:
                if exc.status != 409:
                    raise
        raise KubeError(409, "Conflict", f"ClusterRoleBinding {self._binding} kept changing under us")

    def _try(self, namespace: str, fleet_name: str, granted: bool) -> Problem | None:
        try:
            binding = self._kube.get(RBAC_API_VERSION, "ClusterRoleBinding", None, self._binding)
        except KubeError as exc:
            if exc.status not in (403, 404):
                raise
            return self._missing(exc) if granted else None  # nothing granted that could be taken back
        subject = agent_subject(namespace, fleet_name)
        subjects = binding.get("subjects") or []
        if (subject in subjects) == granted:
            return None
        wanted = [*subjects, subject] if granted else [s for s in subjects if s != subject]
        # resourceVersion makes the patch conditional: a concurrent edit answers 409 and we re-read.
        patch = {"metadata": {"resourceVersion": binding["metadata"]["resourceVersion"]}, "subjects": wanted}
        self._kube.request(
            "PATCH",
            resource_path(RBAC_API_VERSION, "ClusterRoleBinding", None, self._binding),
            body=patch,
            content_type="application/merge-patch+json",
        )
        log.info(
            "node condition rights " + ("granted" if granted else "withdrawn"),
            extra={"fleet": f"{namespace}/{fleet_name}", "binding": self._binding},
        )
        return None

    def _missing(self, exc: KubeError) -> Problem:
        what = "is missing" if exc.status == 404 else "cannot be read or edited by the operator"
        return Problem(
            AGENT_RBAC_MISSING,
            f"spec.nodeCondition is true but the ClusterRoleBinding {self._binding} {what}: install "
            "rbac/agents.yaml (the Helm chart does) and grant the operator its RBAC; until "
            "then the agents report without setting the Node condition",
        )
