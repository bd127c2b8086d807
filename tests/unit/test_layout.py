"""Layout rules: import names, dependency direction, and packaging that ships every module."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_operator_folder_never_shadows_the_standard_library() -> None:
    """The import package is operator/esnode_operator/; the folder above it is no package, so run
    from the repo root `operator` is still the standard library's."""
    assert not (REPO / "operator" / "__init__.py").exists()
    assert (REPO / "operator" / "esnode_operator" / "__init__.py").exists()
    result = subprocess.run(
        [sys.executable, "-c", "import operator, enum; print(operator.__file__)"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not result.stdout.strip().startswith(str(REPO))


def test_agent_never_imports_the_operator() -> None:
    offenders = {
        str(path.relative_to(REPO)): sorted(n for n in _imports(path) if n.split(".")[0] == "esnode_operator")
        for path in (REPO / "agent" / "esnode_agent").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_collectors_never_import_the_http_layer() -> None:
    http_layer = {
        "esnode_agent.serve.app",
        "esnode_agent.serve.publication",
        "esnode_agent.runtime",
        "starlette",
        "uvicorn",
    }
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & http_layer)
        for path in (REPO / "agent" / "collectors").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize(("root", "package"), [("agent", "esnode_agent"), ("operator", "esnode_operator")])
def test_every_module_folder_is_a_packaged_regular_package(root: str, package: str) -> None:
    """Every folder holding modules has an __init__.py, so packages.find ships it in the wheel."""
    base = REPO / root / package
    missing = [
        str(d.relative_to(REPO))
        for d in [base, *(p for p in base.rglob("*") if p.is_dir())]
        if any(d.glob("*.py")) and "__pycache__" not in d.parts and not (d / "__init__.py").exists()
    ]
    assert missing == []
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    assert root in config["where"]


def test_importing_one_collector_does_not_load_the_gpu_library() -> None:
    code = "import esnode_agent.collectors.cpu, sys; print('pynvml' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr
