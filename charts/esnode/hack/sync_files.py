#!/usr/bin/env python3
"""Copy into the chart what Helm cannot read from outside it, and derive fleet.spec's values schema.

Helm's .Files and crds/ only see the chart's own folder, so the chart carries copies of the CRDs,
the Prometheus rules, the dashboards, the operator's RBAC rules and the agents' cluster-wide RBAC and
admission policy; tests/unit/test_chart_files.py
fails while a copy differs. Run from anywhere: `python charts/esnode/hack/sync_files.py`.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parents[1]
REPO = CHART.parents[1]
# (source folder or file, glob, chart folder)
COPIES = (
    (REPO / "crds", "*.yaml", CHART / "crds"),
    (REPO / "rules", "esnode-rules.yaml", CHART / "files"),
    (REPO / "dashboards", "*.json", CHART / "files" / "dashboards"),
    (REPO / "rbac", "operator.yaml", CHART / "files" / "rbac"),
    (REPO / "rbac", "agents.yaml", CHART / "files" / "rbac"),
    (REPO / "rbac", "prometheus.yaml", CHART / "files" / "rbac"),
)
FLEET_CRD = REPO / "crds" / "esnodefleet.yaml"
VALUES_SCHEMA = CHART / "values.schema.json"
# OpenAPI keywords that mean the same in JSON Schema. Defaults are left to the API server;
# CEL rules (x-kubernetes-validations) too: it reports them with the field's path.
_SAME_KEYWORDS = (
    "description", "enum", "minimum", "maximum", "minLength", "maxLength", "pattern",
    "minItems", "maxItems", "minProperties", "maxProperties", "required",
)  # fmt: skip


def values_schema(openapi: dict[str, Any]) -> dict[str, Any]:
    """A CRD's structural OpenAPI schema as JSON Schema, closed to unknown fields.

    The API server silently drops fields its schema does not know; at `helm install` a typo
    should be an error that names the field instead.
    """
    schema = {key: openapi[key] for key in _SAME_KEYWORDS if key in openapi}
    if openapi.get("x-kubernetes-int-or-string"):
        schema["type"] = ["integer", "string"]
    elif "type" in openapi:
        schema["type"] = [openapi["type"], "null"] if openapi.get("nullable") else openapi["type"]
    for bound, exclusive in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        if openapi.get(exclusive) is True:
            schema[exclusive] = schema.pop(bound)
    if "properties" in openapi:
        schema["properties"] = {name: values_schema(sub) for name, sub in openapi["properties"].items()}
        if not openapi.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    if isinstance(openapi.get("additionalProperties"), dict):
        schema["additionalProperties"] = values_schema(openapi["additionalProperties"])
    if "items" in openapi:
        schema["items"] = values_schema(openapi["items"])
    for combinator in ("anyOf", "oneOf", "allOf"):
        if combinator in openapi:
            schema[combinator] = [values_schema(sub) for sub in openapi[combinator]]
    return schema


def fleet_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(FLEET_CRD.read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
    return values_schema(version["schema"]["openAPIV3Schema"]["properties"]["spec"])


def with_fleet_spec(schema: dict[str, Any]) -> dict[str, Any]:
    fleet = schema["properties"]["fleet"]
    return {
        **schema,
        "properties": {
            **schema["properties"],
            "fleet": {**fleet, "properties": {**fleet["properties"], "spec": fleet_spec_schema()}},
        },
    }


def render_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2) + "\n"


def main() -> None:
    for source, pattern, target in COPIES:
        target.mkdir(parents=True, exist_ok=True)
        wanted = {path.name for path in source.glob(pattern)}
        for stale in target.glob(pattern):
            if stale.name not in wanted:
                stale.unlink()
        for path in source.glob(pattern):
            shutil.copyfile(path, target / path.name)
    schema = json.loads(VALUES_SCHEMA.read_text())
    VALUES_SCHEMA.write_text(render_json(with_fleet_spec(schema)))


if __name__ == "__main__":
    main()
