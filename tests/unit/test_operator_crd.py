"""The CRDs: committed YAML matches the models, the schema is structural, defaults agree with the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from esnode_agent.report.model import NodeReport
from esnode_operator.api.crd import fleet_crd, node_crd, render_crds
from esnode_operator.api.models import FleetSpec
from esnode_operator.cli import main
from esnode_operator.names import FIELD_MANAGER, RESERVED_FLEET_NAME, child_name

REPO = Path(__file__).resolve().parents[2]


def _nodes(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, child in schema.get("properties", {}).items():
        yield from _nodes(child, f"{path}.{name}")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _nodes(schema["additionalProperties"], f"{path}[*]")
    if "items" in schema:
        yield from _nodes(schema["items"], f"{path}[]")


def _root_schema() -> dict[str, Any]:
    schema: dict[str, Any] = fleet_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def test_committed_crds_match_the_models() -> None:
    """Regenerate with `esnode-operator crds --out crds/` after changing operator/esnode_operator/api/models.py."""
    for name, text in render_crds().items():
        committed = REPO / "crds" / name
        assert committed.is_file(), f"crds/{name} is missing"
        assert committed.read_text() == text, f"crds/{name} is stale: run esnode-operator crds --out crds/"


def test_crds_command_writes_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds", "--out", str(tmp_path)]) == 0
    assert {p.name for p in tmp_path.iterdir()} == set(render_crds())
    assert main(["crds"]) == 0
    documents = [d for d in yaml.safe_load_all(capsys.readouterr().out) if d]
    assert {d["metadata"]["name"] for d in documents} == {
        "esnodefleets.esnode.io",
        "esnodenodes.esnode.io",
        "clusterkopfpeerings.kopf.dev",
        "kopfpeerings.kopf.dev",
    }


def test_the_schema_is_structural() -> None:
    """Every node typed (or int-or-string), no JSON-Schema-only keywords the apiserver refuses."""
    forbidden = {
        "$ref",
        "$defs",
        "anyOf",
        "oneOf",
        "allOf",
        "const",
        "title",
        "patternProperties",
        "propertyNames",
    }
    for path, node in _nodes(_root_schema()):
        assert not forbidden & node.keys(), f"{path}: {sorted(forbidden & node.keys())}"
        assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{path} has no type"
        assert node.get("additionalProperties") not in (True, False), f"{path}: boolean additionalProperties"
        for bound in ("exclusiveMinimum", "exclusiveMaximum"):
            assert node.get(bound, True) is True, f"{path}: {bound} must be OpenAPI 3.0's boolean"
        if node.get("nullable"):
            assert node.get("default") is not None or "default" not in node, f"{path}: null default"


def test_free_form_fields_are_marked_and_only_those() -> None:
    preserved = {
        path for path, node in _nodes(_root_schema()) if node.get("x-kubernetes-preserve-unknown-fields")
    }
    assert preserved == {".spec.affinity", ".spec.env[].valueFrom", ".spec.serviceMonitor.relabelings[]"}


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """What the apiserver's structural defaulting does to a value (objects and arrays, recursively)."""
    if isinstance(value, dict) and "properties" in schema:
        out = dict(value)
        for name, child in schema["properties"].items():
            if name not in out and "default" in child:
                out[name] = child["default"]
            if name in out:
                out[name] = _apply_defaults(child, out[name])
        return out
    if isinstance(value, list) and "items" in schema:
        return [_apply_defaults(schema["items"], item) for item in value]
    return value


def test_schema_defaults_are_the_models_defaults() -> None:
    """`kubectl get -o yaml` of an empty fleet shows exactly what the operator will assume."""
    spec_schema = _root_schema()["properties"]["spec"]
    defaulted = _apply_defaults(spec_schema, spec_schema["default"])
    assert FleetSpec.model_validate(defaulted) == FleetSpec()
    expected = FleetSpec().model_dump(mode="json", exclude_none=True)
    expected["tolerations"] = [{"operator": "Exists"}]
    assert defaulted == expected


def test_validation_rules_and_printer_columns() -> None:
    version = fleet_crd()["spec"]["versions"][0]
    rules = [
        rule["rule"]
        for _, node in _nodes(_root_schema())
        for rule in node.get("x-kubernetes-validations", [])
    ]
    assert any("metadata.name" in rule for rule in rules)
    assert any("duration(self.scrapeTimeout) <= duration(self.interval)" in rule for rule in rules)
    assert any("collectorTimeoutSeconds <= self.scrapeIntervalSeconds" in rule for rule in rules)
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c["jsonPath"] for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Ready": ".status.readyText",
        "Nodes": ".status.power.nodesReporting",
        "Stale": ".status.power.nodesStale",
        "Power": ".status.power.totalPowerWatts",
        "Over-Envelope": ".status.power.nodesOverEnvelope",
        "Status": ".status.state",
        "Why": '.status.conditions[?(@.type=="Degraded")].reason',
        "Age": ".metadata.creationTimestamp",
    }
    names = fleet_crd()["spec"]["names"]
    assert names["shortNames"] == ["esf"] and fleet_crd()["spec"]["scope"] == "Namespaced"


def test_the_node_report_crd_carries_the_agents_report_as_status() -> None:
    """EsnodeNode: namespaced, short name esn, status is the agent's NodeReport (same fields, camelCase)."""
    crd = node_crd()
    assert crd["metadata"]["name"] == "esnodenodes.esnode.io"
    assert (crd["spec"]["scope"], crd["spec"]["names"]["kind"]) == ("Namespaced", "EsnodeNode")
    assert crd["spec"]["names"]["shortNames"] == ["esn"]
    [version] = crd["spec"]["versions"]
    schema = version["schema"]["openAPIV3Schema"]
    status = schema["properties"]["status"]
    assert set(status["properties"]) == {field.alias for field in NodeReport.model_fields.values()}
    assert status["properties"]["lastReportTime"]["format"] == "date-time"
    assert status["properties"]["gpus"]["maxItems"] == 16
    assert schema["properties"]["spec"]["required"] == ["nodeName", "fleet"]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: (c["type"], c["jsonPath"]) for c in version["additionalPrinterColumns"]}
    assert columns == {
        "Node": ("string", ".spec.nodeName"),
        "Power": ("number", ".status.nodePowerWatts"),
        "Envelope": ("number", ".status.envelopeWatts"),
        "Exceeded": ("boolean", ".status.exceeded"),
        "GPUs": ("integer", ".status.gpuCount"),
        "Capping": ("string", ".status.powerCapping"),
        "Last-Seen": ("date", ".status.lastReportTime"),
    }


def test_the_reserved_fleet_name_is_the_one_whose_agents_would_take_the_operators_account() -> None:
    assert child_name(RESERVED_FLEET_NAME) == FIELD_MANAGER  # rbac/operator.yaml's account
    rules = [
        v["rule"]
        for v in fleet_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["x-kubernetes-validations"]
    ]
    assert any(f"'{RESERVED_FLEET_NAME}'" in rule for rule in rules)


def test_every_fractional_numeric_bound_is_also_a_rule() -> None:
    """kube-apiserver checks an integer value against a fractional minimum truncated (0 passed
    ``minimum: 0.1``): such bounds are CEL rules too, and every bound the models declare is kept."""
    fractional = []
    for path, node in _nodes(_root_schema()):
        rules = [v["rule"] for v in node.get("x-kubernetes-validations", [])]
        for key, op in (("minimum", ">"), ("maximum", "<")):
            bound = node.get(key)
            if isinstance(bound, float) and not bound.is_integer():
                strict = node.get(f"exclusive{key.capitalize()}", False)
                assert f"self {op}{'' if strict else '='} {bound!r}" in rules, (path, rules)
                fractional.append(path)
    assert ".spec.scrapeIntervalSeconds" in fractional
    assert ".spec.otlp.intervalSeconds" in fractional
