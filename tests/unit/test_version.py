"""One version: pyproject's. Both programs report it, and the chart and images are released with it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("program", ["esnode_agent", "esnode_operator"])
def test_both_programs_print_the_package_version(program: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", program, "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [program.replace("_", "-"), VERSION]


def test_the_chart_releases_this_version() -> None:
    chart = yaml.safe_load((REPO / "charts" / "esnode" / "Chart.yaml").read_text())
    assert (chart["version"], chart["appVersion"]) == (VERSION, VERSION)


@pytest.mark.parametrize("dockerfile", ["Dockerfile.agent", "Dockerfile.operator"])
def test_the_images_label_this_version(dockerfile: str) -> None:
    defaults = re.findall(r"^ARG VERSION=(\S+)$", (REPO / dockerfile).read_text(), re.M)
    assert defaults == [VERSION]
