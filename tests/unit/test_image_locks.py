"""The images' dependency locks (constraints/, written by scripts/lock-images) match pyproject's extras."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+) \\$")
# What each image must not carry: the other program's dependencies, the terminal view, test tools.
LEFT_OUT = {
    "agent": {"kopf", "textual", "psutil", "pytest"},
    "operator": {"grpcio", "nvidia-ml-py", "uvicorn", "bcrypt", "textual", "psutil", "pytest"},
}


def pins(image: str) -> dict[str, str]:
    lines = (REPO / "constraints" / f"{image}.txt").read_text().splitlines()
    return {canonicalize_name(m[1]): m[2] for m in map(PIN.match, lines) if m}


def direct_requirements(image: str) -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"][image]]


@pytest.mark.parametrize("image", sorted(LEFT_OUT))
def test_the_lock_pins_every_direct_dependency_within_its_declared_range(image: str) -> None:
    locked = pins(image)
    outside = {
        str(req): locked.get(canonicalize_name(req.name))
        for req in direct_requirements(image)
        if locked.get(canonicalize_name(req.name)) not in req.specifier
    }
    assert outside == {}, "run scripts/lock-images"


@pytest.mark.parametrize("image", sorted(LEFT_OUT))
def test_the_lock_carries_only_the_images_role(image: str) -> None:
    assert set(pins(image)) & LEFT_OUT[image] == set()


@pytest.mark.parametrize("image", sorted(LEFT_OUT))
def test_every_pin_has_hashes_and_the_dockerfile_installs_this_lock(image: str) -> None:
    text = (REPO / "constraints" / f"{image}.txt").read_text()
    entries = re.split(r"\n(?=[A-Za-z0-9])", text.split("\n", 2)[2])  # after the two header lines
    assert [e.split(" ")[0] for e in entries if "--hash=sha256:" not in e] == []
    dockerfile = (REPO / f"Dockerfile.{image}").read_text()
    assert f"COPY constraints/{image}.txt " in dockerfile
    assert "--require-hashes" in dockerfile
