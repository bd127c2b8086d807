"""The Helm chart's copies of files that live elsewhere in the repository, and its values' documentation.

Helm reads only the chart's own folder, so charts/esnode carries copies (made by
charts/esnode/hack/sync_files.py); these tests fail while a copy is out of date.
"""

from __future__ import annotations

import importlib.util
import json
import re
import tomllib
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from esnode_operator.names import MAX_FLEET_NAME_LENGTH

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "esnode"
SYNC_HINT = "out of date: run `python charts/esnode/hack/sync_files.py`"
# (repository folder, glob, chart folder)
COPIES = [
    (REPO / "crds", "*.yaml", CHART / "crds"),
    (REPO / "rules", "esnode-rules.yaml", CHART / "files"),
    (REPO / "dashboards", "*.json", CHART / "files" / "dashboards"),
    (REPO / "rbac", "operator.yaml", CHART / "files" / "rbac"),
    (REPO / "rbac", "prometheus.yaml", CHART / "files" / "rbac"),
]
YAML_KEY = re.compile(r"^(\s*)([\w.-]+):(.*)$")


def sync_module() -> ModuleType:
    path = CHART / "hack" / "sync_files.py"
    spec = importlib.util.spec_from_file_location("esnode_chart_sync_files", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def values_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text())
    return schema


@pytest.mark.parametrize(
    "source, pattern, copy", COPIES, ids=[c[2].relative_to(CHART).as_posix() for c in COPIES]
)
def test_chart_copy_is_identical(source: Path, pattern: str, copy: Path) -> None:
    originals = {path.name: path.read_bytes() for path in source.glob(pattern)}
    copies = {path.name: path.read_bytes() for path in copy.glob(pattern)}
    assert sorted(copies) == sorted(originals), SYNC_HINT
    assert [name for name in originals if copies[name] != originals[name]] == [], SYNC_HINT


def test_crds_are_in_the_chart() -> None:
    assert {path.name for path in (CHART / "crds").glob("*.yaml")} >= {
        "esnodefleet.yaml",
        "kopf-peering.yaml",
    }


def test_fleet_spec_schema_follows_the_crd() -> None:
    assert (
        values_schema()["properties"]["fleet"]["properties"]["spec"] == sync_module().fleet_spec_schema()
    ), SYNC_HINT


def test_fleet_spec_schema_rejects_unknown_fields() -> None:
    spec = values_schema()["properties"]["fleet"]["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert spec["properties"]["powerEnvelope"]["additionalProperties"] is False


def test_crd_schema_conversion() -> None:
    """OpenAPI's nullable, boolean exclusiveMinimum and int-or-string become their JSON Schema forms."""
    openapi = {
        "type": "object",
        "properties": {
            "watts": {
                "type": "number",
                "minimum": 0,
                "exclusiveMinimum": True,
                "nullable": True,
                "default": 1,
            },
            "quantity": {"x-kubernetes-int-or-string": True, "pattern": "^[0-9]+m?$"},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "x-kubernetes-validations": [{"rule": "true"}],
    }
    assert sync_module().values_schema(openapi) == {
        "type": "object",
        "properties": {
            "watts": {"type": ["number", "null"], "exclusiveMinimum": 0},
            "quantity": {"type": ["integer", "string"], "pattern": "^[0-9]+m?$"},
            "free": {"type": "object"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
        },
        "additionalProperties": False,
    }


def test_fleet_name_bound_matches_the_operator() -> None:
    assert values_schema()["properties"]["fleet"]["properties"]["name"]["maxLength"] == MAX_FLEET_NAME_LENGTH


def test_chart_app_version_is_the_package_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def test_every_value_is_documented() -> None:
    """Each key of values.yaml has a comment above it, or sits inside a commented block."""
    undocumented = []
    documented_ancestors: list[tuple[int, bool]] = []
    previous = ""
    for line in (CHART / "values.yaml").read_text().splitlines():
        match = YAML_KEY.match(line)
        if match:
            indent = len(match.group(1))
            while documented_ancestors and documented_ancestors[-1][0] >= indent:
                documented_ancestors.pop()
            documented = previous.lstrip().startswith("#") or any(d for _, d in documented_ancestors)
            is_leaf = bool(match.group(3).strip())
            if is_leaf and not documented:
                undocumented.append(match.group(2))
            documented_ancestors.append((indent, documented))
        if line.strip():
            previous = line
    assert undocumented == []


def test_every_value_is_in_the_schema() -> None:
    def unknown(values: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
        found = []
        for key, value in values.items():
            sub = schema.get("properties", {}).get(key)
            if sub is None:
                found.append(f"{path}{key}")
            elif isinstance(value, dict) and "properties" in sub:
                found += unknown(value, sub, f"{path}{key}.")
        return found

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert unknown(values, values_schema(), "") == []
