"""Layout rules: import names, dependency direction, and packaging that ships every module."""

from __future__ import annotations

import ast
import re
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


# The agent extra's own libraries, absent from the operator's image (its extra has none of them).
_AGENT_ONLY_MODULES = ("bcrypt", "pynvml", "grpc", "starlette", "uvicorn")


def test_the_operator_loads_none_of_the_agents_own_libraries() -> None:
    code = (
        "import esnode_operator.cli, esnode_operator.handlers, sys; "
        f"print(sorted(m for m in {_AGENT_ONLY_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=30, check=False
    )
    assert (result.returncode, result.stdout.strip()) == (0, "[]"), result.stderr


# Strings that look like metric names but are not: the status view's JSON keys.
_NOT_METRIC_NAMES = {"esnode_limit_watts"}
# The functions that declare a metric family (gpu_specs.py wraps them as g, c and mig).
_SPEC_DECLARATIONS = {"gauge", "counter", "MetricSpec", "g", "c", "mig"}


def _metric_name_literals(path: Path) -> list[str]:
    """String constants spelling an esnode metric name anywhere but as the name a spec is declared with."""
    tree = ast.parse(path.read_text(), str(path))
    declared = {
        id(call.args[0])
        for call in ast.walk(tree)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Name)
        and call.func.id in _SPEC_DECLARATIONS
        and call.args
    }
    return [
        f"{path.name}:{node.lineno} {node.value}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"esnode_[a-z0-9_]+", node.value)
        and node.value not in _NOT_METRIC_NAMES
        and node.value not in {"esnode_agent", "esnode_operator"}
        and id(node) not in declared
    ]


def test_metric_names_are_spelled_once_in_their_spec() -> None:
    """Readers of samples name families through the collectors' specs, so a rename cannot miss one."""
    offenders = [
        hit for path in (REPO / "agent" / "esnode_agent").rglob("*.py") for hit in _metric_name_literals(path)
    ]
    assert offenders == []


def test_the_metric_name_guard_sees_a_copied_name(tmp_path: Path) -> None:
    planted = tmp_path / "planted.py"
    planted.write_text(
        'POWER = gauge("esnode_gpu_power_watts", "declared")\n'
        'COPY = "esnode_gpu_power_watts"\n'
        'watts = samples.value("esnode_node_power_watts")\n'
    )
    assert [hit.split(" ")[1] for hit in _metric_name_literals(planted)] == [
        "esnode_gpu_power_watts",
        "esnode_node_power_watts",
    ]


def test_test_modules_have_names_unique_across_tiers() -> None:
    """pytest imports test modules by basename (no packages under tests/): two alike break collection."""
    names = [p.name for p in (REPO / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []


def test_node_reports_never_import_the_http_layer() -> None:
    """report/ and serve/ both read snapshots; neither is built on the other's side of the pipeline."""
    offenders = {
        str(path.relative_to(REPO)): sorted(n for n in _imports(path) if n.startswith("esnode_agent.serve"))
        for path in (REPO / "agent" / "esnode_agent" / "report").rglob("*.py")
    }
    assert {k: v for k, v in offenders.items() if v} == {}
