"""Shared fixtures: where the project and the shared contract live."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """../shared beside the checkout: the seeds and the metrics contract (CI lays a copy there)."""
    path = REPO_ROOT.parent / "shared"
    assert (path / "metrics-contract.md").is_file(), f"{path} must hold the metrics contract"
    return path
