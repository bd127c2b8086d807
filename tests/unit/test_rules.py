"""Prometheus rules: promtool accepts them, their unit tests pass, every rule is tested and described."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from esnode_agent.collectors.catalog import metric_families

RULES_DIR = Path(__file__).resolve().parents[2] / "rules"
RULES_FILE = RULES_DIR / "esnode-rules.yaml"
RULE_TESTS = sorted((RULES_DIR / "tests").glob("*.yaml"))
SEVERITIES = {"critical", "warning", "info"}
# Efficiency metrics the agent exports beyond the contract's single tokens-per-joule gauge.
EFFICIENCY_METRICS = {
    "esnode_app_tokens_per_joule",
    "esnode_app_requests_per_joule",
    "esnode_app_tokens_total",
    "esnode_app_requests_total",
    "esnode_app_tokens_per_second",
}
# rate() and friends are for counters; on a gauge in watts they give watts per second.
COUNTER_FUNCTION_ON_WATTS = re.compile(r"\b(rate|irate|increase|resets)\s*\(\s*[a-zA-Z_:]*_watts\b")
ESNODE_METRIC = re.compile(r"\besnode_[a-z0-9_]+")
OPERATOR_METRICS_SOURCE = Path(__file__).resolve().parents[2] / "operator" / "esnode_operator" / "metrics.py"


def promtool() -> str:
    binary = shutil.which("promtool")
    assert binary, "promtool is required (Debian package prometheus)"
    return binary


def rule_groups() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(RULES_FILE.read_text())["groups"]
    return groups


def rules_of(kind: str) -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"] if kind in rule]


def unit_tests() -> list[dict[str, Any]]:
    return [test for path in RULE_TESTS for test in yaml.safe_load(path.read_text())["tests"]]


def contract_metric_names(contract: Path) -> set[str]:
    """Metric names in the first column of the contract's tables; `a_{x,y}_b` expands to both."""
    names: set[str] = set()
    for line in contract.read_text().splitlines():
        if line.startswith("| esnode_"):
            for name in line.split("|")[1].split(", "):
                names.update(_expand(name.strip()))
    return names


def operator_metric_names() -> set[str]:
    """The names the operator's metrics module declares (quoted string literals)."""
    return set(re.findall(r'"(esnode_operator_[a-z0-9_]+)"', OPERATOR_METRICS_SOURCE.read_text()))


def _expand(name: str) -> set[str]:
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return {name}
    head, tail = name[: match.start()], name[match.end() :]
    return {full for option in match.group(1).split(",") for full in _expand(head + option + tail)}


def test_promtool_accepts_the_rule_file() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(RULES_FILE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", RULE_TESTS, ids=[p.name for p in RULE_TESTS])
def test_promtool_unit_tests_pass(test_file: Path) -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", test_file.name],
        cwd=test_file.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_quiet() -> None:
    checks = [check for test in unit_tests() for check in test.get("alert_rule_test", [])]
    fired = {check["alertname"] for check in checks if check.get("exp_alerts")}
    quiet = {check["alertname"] for check in checks if not check.get("exp_alerts")}
    alerts = {rule["alert"] for rule in rules_of("alert")}
    assert alerts - fired == set(), "alerts never tested firing"
    assert alerts - quiet == set(), "alerts never tested staying quiet"


def test_every_recording_rule_is_tested() -> None:
    tested = {check["expr"] for test in unit_tests() for check in test.get("promql_expr_test", [])}
    recorded = {rule["record"] for rule in rules_of("record")}
    assert recorded - tested == set()


@pytest.mark.parametrize("rule", rules_of("alert"), ids=lambda rule: rule["alert"])
def test_alert_has_severity_summary_and_runbook_description(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["annotations"]["summary"].strip()
    assert len(rule["annotations"]["description"].split()) >= 30, "description should say what to check"


def test_no_counter_function_is_applied_to_a_watts_gauge() -> None:
    exprs = [rule["expr"] for group in rule_groups() for rule in group["rules"]]
    assert [expr for expr in exprs if COUNTER_FUNCTION_ON_WATTS.search(expr)] == []


def test_rules_use_only_metrics_esnode_exports(metrics_contract: Path) -> None:
    known = (
        contract_metric_names(metrics_contract)
        | EFFICIENCY_METRICS
        | operator_metric_names()
        | {spec.name for spec in metric_families()}  # the agent's own catalog (docs/metrics.md)
    )
    exprs = [rule["expr"] for group in rule_groups() for rule in group["rules"]]
    used = {name for expr in exprs for name in ESNODE_METRIC.findall(expr)}
    assert used - known == set()


def test_the_watts_lint_catches_rate_of_a_gauge() -> None:
    assert COUNTER_FUNCTION_ON_WATTS.search("sum(rate(esnode_node_power_watts[5m]))")
    assert not COUNTER_FUNCTION_ON_WATTS.search("rate(esnode_node_energy_joules_total[5m])")
