"""The agents' ServiceAccount: an identity of their own, bound only to their node-report rights (agent_rbac.py).

Its token is mounted by the agent pods alone (they ask for it); other pods using it get none.
"""

from __future__ import annotations

from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.names import child_name, fleet_labels


def build_serviceaccount(fleet: Fleet) -> dict[str, Any]:
    return adopted(
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": child_name(fleet.name), "labels": fleet_labels(fleet.name)},
            "automountServiceAccountToken": False,
        },
        fleet,
    )
