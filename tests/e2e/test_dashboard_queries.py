"""Every query of the shipped Grafana dashboards, run by real Prometheus against real agents.

Agent A simulates an 8xH100 server with RAPL power, a power envelope and a model server on the node;
agent B simulates a server with a GPU in MIG mode; agent C, in k8s_mode, one whose kubelet has pods hold
GPUs, their processes running in those pods. Each dashboard query (Grafana's variables filled
in) must parse, return data, and carry the labels its legend names.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from agent_process import RaplTree, agent, growing_model_server
from kubelet_pods import agent_with_pods
from prometheus_process import prometheus, query, wait_for_result

pytestmark = pytest.mark.e2e

DASHBOARDS = sorted((Path(__file__).resolve().parents[2] / "dashboards").glob("*.json"))
# Panels whose queries may rightly return nothing here, and why.
EXPECTED_EMPTY = {
    "Xid errors": "the counter appears with the first Xid event; simulated GPUs raise none",
}
GRAFANA_RANGE = re.compile(r"\$__(rate_interval|range|interval)\b")
GRAFANA_VARIABLE = re.compile(r"\$(\{(\w+)\}|(\w+))")
LEGEND_LABEL = re.compile(r"\{\{\s*(\w+)\s*\}\}")
LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")
# Token and request rates of the simulated model servers.
MODELS = {"llama-3-70b": (900.0, 6.0), "mistral-7b": (2400.0, 20.0)}


@dataclass(frozen=True)
class Query:
    dashboard: str
    panel: str
    ref_id: str
    legend: str
    expr: str

    @property
    def id(self) -> str:
        return f"{self.dashboard}:{self.panel}:{self.ref_id}"


def to_promql(grafana_expr: str, window: str = "1m") -> str:
    """Grafana's interval variables become ``window``, the dashboard's own variables match everything."""
    return GRAFANA_VARIABLE.sub(".*", GRAFANA_RANGE.sub(window, grafana_expr))


def dashboard_queries() -> list[Query]:
    queries = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        for panel in dashboard["panels"]:
            for target in panel.get("targets", []):
                queries.append(
                    Query(
                        dashboard["uid"],
                        panel["title"],
                        target["refId"],
                        target["legendFormat"],
                        target["expr"],
                    )
                )
    return queries


def variable_queries() -> list[tuple[str, str]]:
    return [
        (f"{json.loads(path.read_text())['uid']}:{variable['name']}", variable["definition"])
        for path in DASHBOARDS
        for variable in json.loads(path.read_text())["templating"]["list"]
        if variable["type"] == "query"
    ]


def model_server_exposition(elapsed_seconds: float) -> str:
    lines = ["# TYPE model_tokens_total counter", "# TYPE model_requests_total counter"]
    for model, (tokens_per_second, requests_per_second) in MODELS.items():
        lines.append(f'model_tokens_total{{model="{model}"}} {int(tokens_per_second * elapsed_seconds)}')
        lines.append(
            f'model_requests_total{{model="{model}",status="ok"}} {int(requests_per_second * elapsed_seconds)}'
        )
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def prometheus_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("dashboards")
    (workdir / "pods").mkdir()
    common = ("--scrape-interval", "1")
    with (
        growing_model_server(model_server_exposition) as model_url,
        RaplTree(workdir / "sys", package_watts=(180.0, 170.0)) as rapl,
        agent(
            *common,
            "--gpu-backend", "sim:h100x8",
            "--node-power-envelope-watts", "4000",
            "--path-sysfs", str(rapl.sysfs),
            "--app-metrics-urls", model_url,
            log_path=workdir / "agent-h100x8.log",
        ) as gpu_agent,
        agent(*common, "--gpu-backend", "sim:h100-mig", log_path=workdir / "agent-mig.log") as mig_agent,
        agent_with_pods(workdir / "pods", *common, host=workdir / "pods" / "host") as pod_agent,
        prometheus([url.removeprefix("http://") for url in (gpu_agent, mig_agent, pod_agent)], workdir) as url,
    ):  # fmt: skip
        # Rates need two scrapes of every target; the efficiency gauges need two agent cycles with energy.
        assert wait_for_result(url, "count(count_over_time(esnode_app_tokens_per_joule[1m]) > 2) > 0")
        yield url


@pytest.mark.parametrize("item", dashboard_queries(), ids=lambda q: q.id)
def test_dashboard_query_returns_labelled_data(prometheus_url: str, item: Query) -> None:
    promql = to_promql(item.expr)
    if item.panel in EXPECTED_EMPTY:
        query(prometheus_url, promql)  # parses and evaluates; asserts status success
        return
    result = wait_for_result(prometheus_url, promql, timeout_seconds=20)
    assert result, f"no data for {promql}"
    wanted = set(LEGEND_LABEL.findall(item.legend))
    for series in result:
        assert wanted <= set(series["metric"]), f"{series['metric']} lacks a legend label of {item.legend!r}"
        assert math.isfinite(float(series["value"][1])), series


@pytest.mark.parametrize("variable", variable_queries(), ids=lambda v: v[0])
def test_template_variable_lists_values(prometheus_url: str, variable: tuple[str, str]) -> None:
    match = LABEL_VALUES.match(to_promql(variable[1]))
    assert match, f"{variable[0]}: only label_values(selector, label) is used"
    selector, label = match.groups()
    response = httpx.get(
        f"{prometheus_url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
    )
    assert response.json()["data"], f"{variable[0]} would offer no choices"


def test_tokens_per_kwh_matches_the_simulated_rates(prometheus_url: str) -> None:
    """Each model's tokens over the energy of the node serving it (agent A), not of every node.

    Evaluated over 10s, a window the data already fills: over a window longer than the series'
    history rate() underestimates, which would hide a wrong ratio behind a wrong scale.
    """
    (serving,) = query(prometheus_url, "group by (instance) (esnode_app_tokens_total)")
    instance = serving["metric"]["instance"]
    assert wait_for_result(
        prometheus_url, f'count_over_time(esnode_app_tokens_total{{instance="{instance}"}}[1m]) > 15'
    )
    (panel,) = [q for q in dashboard_queries() if q.panel == "Tokens per kWh by model"]
    result = query(prometheus_url, to_promql(panel.expr, window="10s"))
    by_model = {series["metric"]["model"]: float(series["value"][1]) for series in result}
    (power,) = query(prometheus_url, f'avg_over_time(esnode_node_power_watts{{instance="{instance}"}}[10s])')
    node_watts = float(power["value"][1])
    expected = {
        model: 3.6e6 * tokens_per_second / node_watts for model, (tokens_per_second, _) in MODELS.items()
    }
    assert by_model == pytest.approx(expected, rel=0.1)
