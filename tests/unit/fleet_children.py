"""What the operator renders for a fleet named gpus in namespace monitoring with a given spec."""

from __future__ import annotations

from typing import Any

from esnode_operator.api.fleet import Fleet
from esnode_operator.children.desired import Children, desired_children


def children(spec: dict[str, Any]) -> Children:
    body = {
        "apiVersion": "esnode.io/v1alpha1",
        "kind": "EsnodeFleet",
        "metadata": {"name": "gpus", "namespace": "monitoring", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }
    return desired_children(Fleet.from_body(body))
