"""Grafana dashboards: well-formed, portable between Grafana instances, and every query valid PromQL."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "dashboards").glob("*.json"))
DATASOURCE_REFS = {"${datasource}", "$datasource"}
GRID_WIDTH = 24
# Which template variables each dashboard offers, by uid.
VARIABLES = {
    "esnode-node-overview": {"datasource", "job", "node", "instance"},
    "esnode-gpu-power": {"datasource", "job", "node", "instance", "gpu"},
    "esnode-mig": {"datasource", "job", "node", "instance", "gpu"},
    "esnode-model-efficiency": {"datasource", "job", "node", "instance", "model"},
}
COUNTER_FUNCTION_ON_WATTS = re.compile(r"\b(rate|irate|increase|resets)\s*\(\s*[a-zA-Z_:]*_watts\b")
# An esnode metric and the label matchers that follow it, if any.
ESNODE_SELECTOR = re.compile(r"\b(esnode_[a-z0-9_]+)(\{[^}]*\})?")
GRAFANA_VARIABLE = re.compile(r"\$(__\w+|\{\w+\}|\w+)")


def load(path: Path) -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(path.read_text())
    return dashboard


def all_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def exprs(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in all_panels(dashboard) for target in panel.get("targets", [])]


def datasources(node: object) -> Iterator[object]:
    """Every value of a "datasource" key anywhere in the dashboard."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                yield value
            yield from datasources(value)
    elif isinstance(node, list):
        for item in node:
            yield from datasources(item)


def as_plain_promql(expr: str) -> str:
    """Grafana's variables replaced by values PromQL accepts: ranges for the built-ins, regexes otherwise."""

    def value(match: re.Match[str]) -> str:
        return "5m" if match.group(1).startswith("__") else ".*"

    return GRAFANA_VARIABLE.sub(value, expr)


@pytest.fixture(params=DASHBOARDS, ids=[p.stem for p in DASHBOARDS])
def dashboard(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load(request.param)


def test_every_dashboard_is_shipped() -> None:
    assert {load(path)["uid"] for path in DASHBOARDS} == set(VARIABLES)


def test_dashboard_has_identity_and_schema_version(dashboard: dict[str, Any]) -> None:
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["title"].startswith("esnode / ")
    assert "esnode" in dashboard["tags"]
    assert "id" not in dashboard, "a fixed database id breaks import into another Grafana"


def test_panel_ids_are_unique(dashboard: dict[str, Any]) -> None:
    ids = [panel["id"] for panel in all_panels(dashboard)]
    assert len(ids) == len(set(ids))


def test_every_datasource_is_the_variable(dashboard: dict[str, Any]) -> None:
    refs = list(datasources(dashboard))
    assert refs, "panels must name their datasource"
    assert [ref for ref in refs if not (isinstance(ref, dict) and ref.get("uid") in DATASOURCE_REFS)] == []
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_dashboard_offers_its_variables(dashboard: dict[str, Any]) -> None:
    assert {v["name"] for v in dashboard["templating"]["list"]} == VARIABLES[dashboard["uid"]]


def test_every_query_is_filtered_by_the_dashboard_variables(dashboard: dict[str, Any]) -> None:
    """A selector without the instance (and gpu/model) matcher would ignore what the user picked."""
    # node narrows the instance list (esnode_node_info maps names to scrape addresses), so it
    # reaches every query through instance.
    filters = [f'{name}=~"${name}"' for name in VARIABLES[dashboard["uid"]] - {"datasource", "node"}]
    unfiltered = []
    for expr in exprs(dashboard):
        for metric, matchers in ESNODE_SELECTOR.findall(expr):
            if 'instance=~"$instance"' not in matchers:
                unfiltered.append(f"{metric}{matchers}")
            unfiltered += [
                f"{metric}{matchers}" for f in filters if f not in matchers and _carries(metric, f)
            ]
    assert unfiltered == []


def _carries(metric: str, matcher: str) -> bool:
    """Whether a metric has the label a gpu or model matcher filters on."""
    label = matcher.split("=", 1)[0]
    if label == "gpu":
        return metric.startswith(("esnode_gpu_", "esnode_mig_"))
    if label == "model":
        return metric.startswith("esnode_app_")
    return True


def test_panels_fit_the_grid_without_overlap(dashboard: dict[str, Any]) -> None:
    cells: dict[tuple[int, int], int] = {}
    for panel in all_panels(dashboard):
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= GRID_WIDTH, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def test_no_counter_function_is_applied_to_a_watts_gauge(dashboard: dict[str, Any]) -> None:
    assert [e for e in exprs(dashboard) if COUNTER_FUNCTION_ON_WATTS.search(e)] == []


def test_every_query_parses(dashboard: dict[str, Any], tmp_path: Path) -> None:
    """promtool parses each expression as a recording rule, with the variables filled in."""
    binary = shutil.which("promtool")
    assert binary, "promtool is required (Debian package prometheus)"
    rules = [
        {"record": f"dashboard:query:{n}", "expr": as_plain_promql(e)} for n, e in enumerate(exprs(dashboard))
    ]
    rule_file = tmp_path / "queries.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "queries", "rules": rules}]}))
    result = subprocess.run(
        [binary, "check", "rules", str(rule_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_variable_substitution_leaves_no_grafana_syntax() -> None:
    promql = as_plain_promql('rate(x{instance=~"$instance", gpu=~"${gpu}"}[$__rate_interval])')
    assert promql == 'rate(x{instance=~".*", gpu=~".*"}[5m])'
