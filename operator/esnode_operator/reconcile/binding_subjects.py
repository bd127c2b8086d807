"""Fleets' agent accounts as subjects of one shared ClusterRoleBinding, listed while a spec field asks.

A cluster-wide right cannot be granted by an object a namespaced fleet owns (the garbage collector
would never remove it). So the ClusterRoleBinding is installed once with the operator
(rbac/agents.yaml) and the operator only edits its subjects: a fleet's ServiceAccount is listed
while the fleet wants the right. The operator needs nothing more than get/patch on that one
binding and `bind` on its one role. node_status_access.py and auth_delegation.py say which.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from esnode_operator.children.agent_rbac import RBAC_API_VERSION, agent_subject
from esnode_operator.kube import Kube, KubeError, resource_path
from esnode_operator.reconcile.fleet_status import AGENT_RBAC_MISSING, Problem

log = logging.getLogger(__name__)

_CONFLICT_RETRIES = 5  # fleets edit the one subjects list concurrently; each try re-reads it


@dataclass(frozen=True)
class BindingPurpose:
    rights: str  # in log lines: "<rights> granted"
    wanted_when: str  # the spec that asks for it, in a Problem's message
    meanwhile: str  # what the agents do without it


class BindingSubjects:
    def __init__(self, kube: Kube, binding_name: str, purpose: BindingPurpose) -> None:
        self._kube = kube
        self._binding = binding_name
        self._purpose = purpose

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
            self._purpose.rights + (" granted" if granted else " withdrawn"),
            extra={"fleet": f"{namespace}/{fleet_name}", "binding": self._binding},
        )
        return None

    def _missing(self, exc: KubeError) -> Problem:
        what = "is missing" if exc.status == 404 else "cannot be read or edited by the operator"
        return Problem(
            AGENT_RBAC_MISSING,
            f"{self._purpose.wanted_when} but the ClusterRoleBinding {self._binding} {what}: install "
            "rbac/agents.yaml (the Helm chart does) and grant the operator its RBAC; until "
            f"then {self._purpose.meanwhile}",
        )
