"""The code honours the metrics contract users' dashboards depend on; docs/metrics.md is current."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

from esnode_agent.collectors.catalog import metric_families, render_markdown
from esnode_agent.cycle.samples import MetricSpec

REPO = Path(__file__).resolve().parents[2]
# Sections whose every series also carries these labels, as the contract's section headings say.
SECTION_LABELS = {"GPU": ("gpu", "uuid")}


@dataclass(frozen=True)
class ContractRow:
    name: str
    type: str
    labels: frozenset[str]


def _expand(name: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return [name]
    return [
        n
        for option in match.group(1).split(",")
        for n in _expand(name[: match.start()] + option + name[match.end() :])
    ]


def _labels(cell: str) -> set[str]:
    cell = re.sub(r"\([^)]*\)", "", cell)  # `window (1m, 5m, 15m)` lists values, not labels
    return {
        label.strip().rstrip("?")
        for label in cell.split(",")
        if label.strip() and not label.strip().endswith("?")
    }


def _names(cell: str) -> list[str]:
    """`a, b` lists two names; commas inside `{x,y}` are alternatives within one."""
    return [n.strip() for n in re.split(r",(?![^{]*\})", cell) if n.strip()]


def contract_rows(text: str) -> list[ContractRow]:
    rows: list[ContractRow] = []
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line.removeprefix("## ").split()[0]
        if not line.startswith("| esnode_"):
            continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[2] == "same":  # the row above's labels
            labels = set(rows[-1].labels)
        else:
            labels = _labels(cells[2]) | set(SECTION_LABELS.get(section, ()))
        kind = "counter" if cells[1].startswith("counter") else "gauge"
        for name in _names(cells[0]):
            rows.extend(ContractRow(expanded, kind, frozenset(labels)) for expanded in _expand(name))
    return rows


@pytest.fixture(scope="module")
def families() -> dict[str, MetricSpec]:
    return {spec.name: spec for spec in metric_families()}


@pytest.fixture(scope="module")
def contract(metrics_contract: Path) -> list[ContractRow]:
    rows = contract_rows(metrics_contract.read_text())
    assert len(rows) > 50  # the tables were found and read
    return rows


def test_every_contract_metric_exists_with_its_type_and_labels(
    contract: list[ContractRow], families: dict[str, MetricSpec]
) -> None:
    problems = []
    for row in contract:
        spec = families.get(row.name)
        if spec is None:
            problems.append(f"{row.name}: missing")
        elif str(spec.type) != row.type:
            problems.append(f"{row.name}: {spec.type}, contract says {row.type}")
        elif not row.labels <= set(spec.labels):
            problems.append(f"{row.name}: labels {spec.labels} lack {sorted(row.labels - set(spec.labels))}")
    assert problems == []


def test_names_follow_prometheus_conventions(families: dict[str, MetricSpec]) -> None:
    for spec in families.values():
        assert spec.name.startswith("esnode_")
        assert spec.help, spec.name
        if str(spec.type) == "counter":
            assert spec.name.endswith("_total"), spec.name
        else:
            assert not spec.name.endswith("_total"), spec.name


def test_docs_metrics_is_generated_from_the_code(families: dict[str, MetricSpec]) -> None:
    expected = render_markdown(list(families.values()))
    assert (REPO / "docs" / "metrics.md").read_text() == expected, "run scripts/gen-metrics-doc"
