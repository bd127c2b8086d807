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
    """The folder is a namespace portion only: run from the repo root, `operator` is still stdlib's."""
    assert not (REPO / "operator" / "__init__.py").exists()
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
        for path in (REPO / "agent").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


def test_collectors_never_import_the_http_layer() -> None:
    http_layer = {
        "esnode_agent.server",
        "esnode_agent.publication",
        "esnode_agent.runtime",
        "starlette",
        "uvicorn",
    }
    offenders = {
        str(path.relative_to(REPO)): sorted(_imports(path) & http_layer)
        for path in (REPO / "agent" / "collectors").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}


@pytest.mark.parametrize(("folder", "package"), [("agent", "esnode_agent"), ("operator", "esnode_operator")])
def test_every_module_folder_is_packaged(folder: str, package: str) -> None:
    """A subpackage missing from pyproject's list would be left out of the wheel."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = {p for p in config["packages"] if p.split(".")[0] == package}
    root = REPO / folder
    on_disk = {
        ".".join((package, *d.relative_to(root).parts)).rstrip(".")
        for d in [root, *(p for p in root.rglob("*") if p.is_dir())]
        if any(d.glob("*.py")) and "__pycache__" not in d.parts
    }
    assert listed == on_disk
