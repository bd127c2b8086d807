"""The esnode-operator command line and the handlers' pure helpers."""

from __future__ import annotations

from typing import Any

import pytest

from esnode_operator.cli import main
from esnode_operator.handlers import edited_by_others, owner_fleet


def test_run_wants_to_be_told_which_namespaces(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main([])
    assert exited.value.code == 2
    assert "--namespace NAME (repeatable) or --all-namespaces" in capsys.readouterr().err


def test_scope_and_peering_options_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["run", "-n", "a", "--all-namespaces"], ["run", "-A", "--standalone", "--peering", "p"]):
        with pytest.raises(SystemExit):
            main(argv)
        assert "not allowed with argument" in capsys.readouterr().err


def child(managers: list[dict[str, str]], owners: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"managedFields": managers, "ownerReferences": owners or []}}


def test_status_writers_and_the_operator_do_not_count_as_edits() -> None:
    ours = {"manager": "esnode-operator", "operation": "Apply"}
    controller = {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status"}
    assert not edited_by_others(child([ours, controller]))
    assert edited_by_others(child([ours, controller, {"manager": "kubectl-edit", "operation": "Update"}]))


def test_the_owner_is_the_controlling_fleet() -> None:
    fleet = {"apiVersion": "esnode.io/v1alpha1", "kind": "EsnodeFleet", "name": "gpus", "controller": True}
    other = {"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "x", "controller": True}
    assert owner_fleet(child([], [other, fleet])) == "gpus"
    assert owner_fleet(child([], [{**fleet, "controller": False}])) is None
    assert owner_fleet(child([], [other])) is None
