"""Fixtures for the image tier: both images built once per session on a local Debian base.

The control plane fixtures (`testenv`, `namespace`) are tests/k8s/conftest.py's, loaded from there
so that the operator image connects to the same kind of cluster the k8s tier uses.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time
from pathlib import Path

import oci_images
import pytest

_K8S_CONFTEST = Path(__file__).resolve().parents[1] / "k8s" / "conftest.py"
_spec = importlib.util.spec_from_file_location("esnode_k8s_fixtures", _K8S_CONFTEST)
assert _spec is not None and _spec.loader is not None
_k8s = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _k8s  # dataclasses look their module up there
_spec.loader.exec_module(_k8s)
testenv = _k8s.testenv
namespace = _k8s.namespace
_SUMMARY = pytest.StashKey[list[str]]()


def _record(config: pytest.Config, built: oci_images.Built) -> oci_images.Built:
    config.stash.setdefault(_SUMMARY, []).append(built.summary())
    return built


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """Each image's size, layers and build time, in CI's output (and for docs/images.md)."""
    for line in config.stash.get(_SUMMARY, []):
        terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def base_image(pytestconfig: pytest.Config) -> str:
    if missing := oci_images.missing_tools():
        pytest.fail(f"{', '.join(missing)} not installed: scripts/test installs them (Debian packages)")
    if os.geteuid() != 0:
        pytest.fail("the image tier runs buildah and mmdebstrap as root (as CI does)")
    started = time.monotonic()
    name = oci_images.base_image()
    pytestconfig.stash.setdefault(_SUMMARY, []).append(f"{name}: ready in {time.monotonic() - started:.0f} s")
    return name


@pytest.fixture(scope="session")
def agent_image(base_image: str, pytestconfig: pytest.Config) -> oci_images.Built:
    return _record(
        pytestconfig, oci_images.build("Dockerfile.agent", "localhost/esnode-agent:test", base_image)
    )


@pytest.fixture(scope="session")
def operator_image(base_image: str, pytestconfig: pytest.Config) -> oci_images.Built:
    built = oci_images.build("Dockerfile.operator", "localhost/esnode-operator:test", base_image)
    return _record(pytestconfig, built)
