"""End-to-end fixtures: the metric names users' dashboards depend on, from the project's metrics contract."""

from __future__ import annotations

import re
from pathlib import Path

import pytest


def contract_seed_names(contract: Path) -> set[str]:
    """Names the contract marks **seed**; `a_{x,y}_b` rows expand to every combination."""
    names: set[str] = set()
    for line in contract.read_text().splitlines():
        if not line.startswith("| esnode_") or "**seed**" not in line:
            continue
        for name in line.split("|")[1].split(","):
            names.update(_expand(name.strip()))
    return names


def _expand(name: str) -> list[str]:
    match = re.search(r"\{([^}]*)\}", name)
    if not match:
        return [name]
    return [
        expanded
        for option in match.group(1).split(",")
        for expanded in _expand(name[: match.start()] + option + name[match.end() :])
    ]


@pytest.fixture(scope="session")
def seed_names(metrics_contract: Path) -> set[str]:
    names = contract_seed_names(metrics_contract)
    assert "esnode_node_power_envelope_exceeded" in names  # the contract was found and read
    return names
