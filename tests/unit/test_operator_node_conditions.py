"""The operator takes its fleet's Node condition back from nodes the fleet no longer covers."""

from __future__ import annotations

from typing import Any

from esnode_operator.reconcile.node_conditions import NodeConditions, selects


def node(name: str, labels: dict[str, str], message: str | None) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True"}]
    if message is not None:
        conditions.append({"type": "EsnodePowerEnvelopeExceeded", "status": "False", "message": message})
    return {"metadata": {"name": name, "labels": labels}, "status": {"conditions": conditions}}


class NodesKube:
    """The nodes API at the operator's boundary: lists nodes, records status patches."""

    def __init__(self, nodes: list[dict[str, Any]]) -> None:
        self.nodes = nodes
        self.patches: list[tuple[str, Any, str]] = []

    def list(self, api_version: str, kind: str) -> list[dict[str, Any]]:
        assert (api_version, kind) == ("v1", "Node")
        return self.nodes

    def request(self, method: str, path: str, *, body: Any, content_type: str) -> dict[str, Any]:
        self.patches.append((f"{method} {path}", body, content_type))
        return {}


NODES = [
    node("gpu-1", {"gpu": "yes"}, "node power 3000 W against 4000 W (fleet ml/a)"),
    node("left", {"gpu": "no"}, "node power 3000 W against 4000 W (fleet ml/a)"),
    node("other-ns", {"gpu": "no"}, "node power 3000 W against 4000 W (fleet lab/a)"),
    node("plain", {"gpu": "no"}, None),
]


def test_only_nodes_the_fleet_left_lose_its_condition_and_only_that_entry_is_deleted() -> None:
    kube = NodesKube(NODES)
    removed = NodeConditions(kube).withdraw("ml", "a", keep=selects({"gpu": "yes"}))  # type: ignore[arg-type]
    assert removed == ["left"]
    [(call, body, content_type)] = kube.patches
    assert call == "PATCH /api/v1/nodes/left/status"
    assert body == {"status": {"conditions": [{"type": "EsnodePowerEnvelopeExceeded", "$patch": "delete"}]}}
    assert content_type == "application/strategic-merge-patch+json"  # keyed by type: the kubelet's stay


def test_a_deleted_fleet_takes_its_condition_from_every_node_and_no_other_fleets() -> None:
    kube = NodesKube(NODES)
    removed = NodeConditions(kube).withdraw("ml", "a", keep=lambda _n: False)  # type: ignore[arg-type]
    assert removed == ["gpu-1", "left"]
