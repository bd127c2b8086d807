"""Model efficiency end to end: a model server and the agent on loopback, scraped by real Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from agent_process import RaplTree, agent, growing_model_server
from prometheus_process import prometheus, query, wait_for_result

pytestmark = pytest.mark.e2e

PACKAGE_WATTS = (180.0, 170.0)
TOKENS_PER_SECOND = {"llama-3-70b": 700.0, "mistral-7b": 175.0}
# The seeds' tokens-per-kWh panel with its power taken from the node energy counter (J/s = W). As the
# seeds write it, the division matches {model=...} against {} and returns nothing: the energy side
# must be joined with on() group_left.
SEED_TOKENS_PER_KWH = (
    "sum by (model) (rate(model_tokens_total[1m])) / sum(rate(esnode_node_energy_joules_total[1m])) * 3.6e6"
)
TOKENS_PER_KWH = (
    "sum by (model) (rate(model_tokens_total[1m]))"
    " / on() group_left sum(rate(esnode_node_energy_joules_total[1m])) * 3.6e6"
)

# The other queries docs/efficiency.md offers.
DOC_QUERIES = {
    "agent gauge per kWh": "esnode_app_tokens_per_joule * 3.6e6",
    "per node from agent counters": (
        "sum by (instance, model) (rate(esnode_app_tokens_total[1m])) / on (instance) group_left"
        " sum by (instance) (rate(esnode_node_energy_joules_total[1m])) * 3.6e6"
    ),
    "requests per joule": (
        'sum by (model) (rate(model_requests_total{status="ok"}[1m])) / on () group_left'
        " sum(rate(esnode_node_energy_joules_total[1m]))"
    ),
}


def steady_exposition(elapsed_seconds: float) -> str:
    """Generic model counters grown at TOKENS_PER_SECOND (and one request per 100 tokens)."""
    lines = ["# TYPE model_tokens_total counter", "# TYPE model_requests_total counter"]
    for model, rate in TOKENS_PER_SECOND.items():
        tokens = rate * elapsed_seconds
        lines.append(f'model_tokens_total{{model="{model}",namespace="llm-serving"}} {tokens}')
        lines.append(f'model_requests_total{{model="{model}",status="ok"}} {tokens // 100}')
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("efficiency")


@pytest.fixture(scope="module")
def stack(workdir: Path) -> Iterator[tuple[str, str]]:
    """(Prometheus URL, agent URL)."""
    with (
        growing_model_server(steady_exposition) as model_url,
        RaplTree(workdir / "sys", PACKAGE_WATTS) as rapl,
    ):
        flags = ("--scrape-interval", "1", "--path-sysfs", str(rapl.sysfs))
        model_address = model_url.removeprefix("http://").removesuffix("/metrics")
        with (
            agent(*flags, "--app-metrics-urls", model_url, log_path=workdir / "agent.log") as agent_url,
            prometheus([agent_url.removeprefix("http://"), model_address], workdir) as prometheus_url,
        ):
            # rate() over the first two or three samples swings with their timing; give it ten.
            wait_for_result(prometheus_url, "count_over_time(esnode_node_energy_joules_total[1m]) >= 10")
            yield prometheus_url, agent_url


def by_model(result: list[dict[str, Any]]) -> dict[str, float]:
    return {series["metric"]["model"]: float(series["value"][1]) for series in result}


def test_seed_tokens_per_kwh_query_with_an_energy_counter_returns_each_model(stack: tuple[str, str]) -> None:
    prometheus_url, _ = stack
    tokens_per_kwh = by_model(wait_for_result(prometheus_url, TOKENS_PER_KWH))

    assert tokens_per_kwh.keys() == TOKENS_PER_SECOND.keys()
    node_watts = sum(PACKAGE_WATTS)
    for model, rate in TOKENS_PER_SECOND.items():
        assert tokens_per_kwh[model] == pytest.approx(rate / node_watts * 3.6e6, rel=0.15)
    assert query(prometheus_url, SEED_TOKENS_PER_KWH) == []  # why docs/efficiency.md adds on() group_left


def test_agent_tokens_per_joule_reaches_prometheus_and_agrees_with_promql(stack: tuple[str, str]) -> None:
    prometheus_url, _ = stack
    from_agent = by_model(wait_for_result(prometheus_url, "esnode_app_tokens_per_joule"))
    from_counters = by_model(
        wait_for_result(
            prometheus_url,
            "sum by (model) (rate(esnode_app_tokens_total[20s])) / scalar(rate(esnode_node_energy_joules_total[20s]))",
        )
    )

    assert from_agent.keys() == TOKENS_PER_SECOND.keys()
    for model, rate in TOKENS_PER_SECOND.items():
        assert from_agent[model] == pytest.approx(rate / sum(PACKAGE_WATTS), rel=0.15)
        assert from_counters[model] == pytest.approx(from_agent[model], rel=0.15)


@pytest.mark.parametrize("promql", DOC_QUERIES.values(), ids=DOC_QUERIES.keys())
def test_documented_query_returns_each_model(stack: tuple[str, str], promql: str) -> None:
    prometheus_url, _ = stack
    assert by_model(wait_for_result(prometheus_url, promql)).keys() == TOKENS_PER_SECOND.keys()


def test_status_reports_the_endpoint_and_each_models_figures(stack: tuple[str, str]) -> None:
    _, agent_url = stack
    efficiency = httpx.get(f"{agent_url}/status", timeout=5).json()["efficiency"]

    assert list(efficiency["targets"].values()) == [True]
    assert efficiency["models"].keys() == TOKENS_PER_SECOND.keys()
    assert all(figures["tokens_per_second"] > 0 for figures in efficiency["models"].values())


def test_fetches_do_not_log_a_line_each(stack: tuple[str, str], workdir: Path) -> None:
    log = (workdir / "agent.log").read_text()
    assert "HTTP Request" not in log
    assert "model server endpoint" not in log  # it never failed
