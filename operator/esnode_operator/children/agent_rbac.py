"""The agents' rights in their fleet's namespace: a Role and RoleBinding for their node reports.

Each agent creates and patches its node's EsnodeNode (and its status), and nothing else: no reads
of other objects, no deletes, no other namespaces. Which EsnodeNode is its own is not expressible
in RBAC (names are per node); rbac/agents.yaml's admission policy enforces that.
"""

from __future__ import annotations

from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.names import GROUP, NODE_PLURAL, child_name, fleet_labels

RBAC_API_VERSION = "rbac.authorization.k8s.io/v1"

AGENT_RULES: list[dict[str, Any]] = [
    {"apiGroups": [GROUP], "resources": [NODE_PLURAL], "verbs": ["get", "create", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{NODE_PLURAL}/status"], "verbs": ["get", "patch"]},
]


def build_agent_role(fleet: Fleet) -> dict[str, Any]:
    return adopted(
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "Role",
            "metadata": {"name": child_name(fleet.name), "labels": fleet_labels(fleet.name)},
            "rules": AGENT_RULES,
        },
        fleet,
    )


def build_agent_rolebinding(fleet: Fleet) -> dict[str, Any]:
    return adopted(
        {
            "apiVersion": RBAC_API_VERSION,
            "kind": "RoleBinding",
            "metadata": {"name": child_name(fleet.name), "labels": fleet_labels(fleet.name)},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": child_name(fleet.name),
            },
            "subjects": [agent_subject(fleet.namespace, fleet.name)],
        },
        fleet,
    )


def agent_subject(namespace: str, fleet_name: str) -> dict[str, str]:
    """The fleet's agents' ServiceAccount as an RBAC subject."""
    return {"kind": "ServiceAccount", "name": child_name(fleet_name), "namespace": namespace}
