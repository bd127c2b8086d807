"""What the operator reads and deletes beyond its namespaces: kopf's cluster scanning, and the node
reports a fleet hands on when a node leaves it."""

from __future__ import annotations

from typing import Any

import kopf
import pytest

from esnode_operator import cli
from esnode_operator.context import OperatorOptions, options_of
from esnode_operator.reconcile.report_handover import unselected_reports


def options_for(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> OperatorOptions:
    seen: dict[str, Any] = {}
    monkeypatch.setattr(kopf, "run", lambda **kwargs: seen.update(kwargs))
    # kopf.configure would leave the root logger at INFO for every later test's caplog.
    monkeypatch.setattr(kopf, "configure", lambda **kwargs: None)
    assert cli.main(argv) == 0
    return options_of(seen["memo"])


@pytest.mark.parametrize(
    "argv, scanning",
    [
        (["run", "--namespace", "gpu", "--namespace", "infer", "--standalone"], False),
        (["run", "--all-namespaces", "--standalone"], False),
        (["run", "--namespace", "gpu-*", "--standalone"], True),
        (["run", "--namespace", "!kube-system", "--standalone"], True),
    ],
)
def test_only_namespace_globs_make_kopf_list_namespaces_and_crds(
    argv: list[str], scanning: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact names need no cluster-wide reads of namespaces or CRDs (rbac/operator.yaml grants none)."""
    assert options_for(argv, monkeypatch).cluster_scanning is scanning


def report(node: str, fleet: str) -> dict[str, Any]:
    return {"metadata": {"name": node}, "spec": {"nodeName": node, "fleet": fleet}}


def test_a_fleet_releases_only_its_own_reports_of_nodes_it_no_longer_selects() -> None:
    reports = [report("n1", "a"), report("n2", "a"), report("n3", "b"), {"metadata": {"name": "n4"}}]
    released = unselected_reports(reports, "a", selected_nodes={"n1"})
    assert [r["metadata"]["name"] for r in released] == ["n2"]  # n3 is b's, n4 nobody's
    assert unselected_reports(reports, "a", selected_nodes={"n1", "n2", "n3", "n4"}) == []
    assert unselected_reports(reports, "b", selected_nodes=set()) == [reports[2]]  # n3 gone from the cluster
