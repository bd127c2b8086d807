"""Shared fixtures: where the project and its metrics contract live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def metrics_contract() -> Path:
    """The project's metrics contract: what users' dashboards, alerts and queries depend on."""
    return REPO_ROOT / "docs" / "metrics-contract.md"
