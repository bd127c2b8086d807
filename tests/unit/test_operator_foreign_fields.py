"""Others' additions to a child, read from managedFields as the apiserver writes them."""

from __future__ import annotations

from typing import Any

from esnode_operator.reconcile.foreign_fields import additions, adoption_patch, describe

OURS: dict[str, Any] = {
    "f:metadata": {"f:labels": {"f:app.kubernetes.io/name": {}}},
    "f:spec": {
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"agent"}': {
                        ".": {},
                        "f:env": {'k:{"name":"ESNODE_FLEET"}': {".": {}, "f:value": {}}},
                    }
                }
            }
        }
    },
}
KUBECTL: dict[str, Any] = {  # kubectl edit: a label, an env var of the agent, a sidecar
    "f:metadata": {"f:labels": {"f:team": {}}},
    "f:spec": {
        "f:template": {
            "f:spec": {
                "f:containers": {
                    'k:{"name":"agent"}': {"f:env": {'k:{"name":"EXTRA"}': {".": {}, "f:value": {}}}},
                    'k:{"name":"sidecar"}': {".": {}, "f:image": {}, "f:name": {}},
                }
            }
        }
    },
}


def entry(manager: str, operation: str, fields: dict[str, Any], subresource: str = "") -> dict[str, Any]:
    found = {"manager": manager, "operation": operation, "apiVersion": "apps/v1", "time": "2026-12-02T00:00:00Z",
             "fieldsType": "FieldsV1", "fieldsV1": fields}  # fmt: skip
    return {**found, "subresource": subresource} if subresource else found


def live(*entries: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": "esnode-a", "resourceVersion": "42", "managedFields": list(entries)}}


STATUS = entry("kube-controller-manager", "Update", {"f:status": {"f:numberReady": {}}}, "status")


def test_only_the_operators_fields_and_a_controllers_status_are_no_addition() -> None:
    obj = live(entry("esnode-operator", "Apply", OURS), STATUS)
    assert additions(obj) == ([], [])
    assert adoption_patch(obj) is None


def test_an_added_label_env_var_and_sidecar_are_named_by_path() -> None:
    obj = live(entry("esnode-operator", "Apply", OURS), entry("kubectl-edit", "Update", KUBECTL), STATUS)
    managers, paths = additions(obj)
    assert managers == ["kubectl-edit"]
    assert paths == [
        "metadata.labels.team",
        "spec.template.spec.containers[name=agent].env[name=EXTRA]",
        "spec.template.spec.containers[name=sidecar]",
    ]
    assert describe("DaemonSet", "esnode-a", managers, paths).startswith(
        "DaemonSet esnode-a: removed what kubectl-edit added (metadata.labels.team, "
    )


def test_the_adoption_patch_gives_the_operator_the_added_fields_and_keeps_status_entries() -> None:
    obj = live(entry("esnode-operator", "Apply", OURS), entry("kubectl-edit", "Update", KUBECTL), STATUS)
    patch = adoption_patch(obj)
    assert patch is not None
    assert patch["metadata"]["resourceVersion"] == "42"  # conditional: a write in between is a 409
    own, status = patch["metadata"]["managedFields"]
    assert status == STATUS
    assert own["manager"] == "esnode-operator" and own["operation"] == "Apply"
    containers = own["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(containers) == {'k:{"name":"agent"}', 'k:{"name":"sidecar"}'}
    assert set(containers['k:{"name":"agent"}']["f:env"]) == {
        'k:{"name":"ESNODE_FLEET"}',
        'k:{"name":"EXTRA"}',
    }
    assert set(own["fieldsV1"]["f:metadata"]["f:labels"]) == {"f:app.kubernetes.io/name", "f:team"}


def test_a_co_owner_of_the_operators_own_values_is_adopted_but_reports_no_addition() -> None:
    obj = live(entry("esnode-operator", "Apply", OURS), entry("kubectl", "Apply", OURS))
    assert additions(obj) == (["kubectl"], [])
    assert adoption_patch(obj) is not None


def test_many_paths_are_cut_short() -> None:
    text = describe("ConfigMap", "c", ["x"], [f"data.k{i}" for i in range(8)])
    assert text.endswith("data.k4 and 3 more)")
