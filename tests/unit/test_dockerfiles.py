"""The container images' Dockerfiles, checked as parsed text (tests/images builds and runs them)."""

from __future__ import annotations

import io
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dockerfile_parse import DockerfileParser  # type: ignore[import-untyped]

from esnode_agent.config.model import AgentConfig

REPO_ROOT = Path(__file__).resolve().parents[2]
PINNED = re.compile(r"(:\d+\.\d+\.\d+[-\w.]*$)|(@sha256:[0-9a-f]{64}$)")
ROOT_USERS = {"0", "root"}
REQUIRED_LABELS = {"title", "description", "version", "licenses", "source"}


@dataclass(frozen=True)
class Image:
    dockerfile: str
    console_script: str
    runs_as_root: bool


IMAGES = [
    Image("Dockerfile.agent", "esnode-agent", runs_as_root=True),
    Image("Dockerfile.operator", "esnode-operator", runs_as_root=False),
]


def parse(dockerfile: str) -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((REPO_ROOT / dockerfile).read_bytes()))


def final_stage(parser: DockerfileParser) -> list[dict[str, Any]]:
    instructions: list[dict[str, Any]] = parser.structure
    last_from = max(i for i, instr in enumerate(instructions) if instr["instruction"] == "FROM")
    return instructions[last_from:]


def values(stage: list[dict[str, Any]], instruction: str) -> list[str]:
    return [instr["value"] for instr in stage if instr["instruction"] == instruction]


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())


@pytest.fixture(params=IMAGES, ids=[image.dockerfile for image in IMAGES])
def image(request: pytest.FixtureRequest) -> Image:
    param: Image = request.param
    return param


def test_base_images_are_pinned(image: Image) -> None:
    parents = parse(image.dockerfile).parent_images
    assert parents
    assert [p for p in parents if not PINNED.search(p)] == [], (
        "pin a patch-level tag or a digest, never latest"
    )


def test_the_final_stage_only_copies_a_built_venv(image: Image) -> None:
    parser = parse(image.dockerfile)
    assert parser.is_multistage
    stage = final_stage(parser)
    assert values(stage, "RUN") == [], "nothing is built or installed in the final stage"
    assert any(copy.startswith("--from=builder /opt/esnode") for copy in values(stage, "COPY"))


def test_entrypoint_is_a_declared_console_script(image: Image) -> None:
    entrypoint = json.loads(values(final_stage(parse(image.dockerfile)), "ENTRYPOINT")[-1])
    assert entrypoint == [image.console_script]
    assert image.console_script in pyproject()["project"]["scripts"]


def test_user_matches_the_privilege_the_component_needs(image: Image) -> None:
    user = values(final_stage(parse(image.dockerfile)), "USER")[-1]
    uid = user.split(":")[0]
    if image.runs_as_root:
        assert uid in ROOT_USERS, "RAPL energy files are readable by root only"
    else:
        assert uid not in ROOT_USERS
        assert uid.isdigit(), "a numeric uid lets runAsNonRoot verify it"


def test_oci_labels(image: Image) -> None:
    labels = parse(image.dockerfile).labels
    prefix = "org.opencontainers.image."
    assert {key.removeprefix(prefix) for key in labels if key.startswith(prefix)} >= REQUIRED_LABELS
    assert labels[f"{prefix}title"] == image.console_script
    assert labels[f"{prefix}version"] == pyproject()["project"]["version"]
    assert labels[f"{prefix}licenses"] == pyproject()["project"]["license"]


def test_agent_exposes_its_default_metrics_port() -> None:
    exposed = values(final_stage(parse("Dockerfile.agent")), "EXPOSE")
    default_port = AgentConfig.model_fields["listen_address"].default.rsplit(":", 1)[1]
    assert exposed == [default_port] == ["9100"]


def test_agent_asks_the_nvidia_runtime_for_nvml() -> None:
    envs = parse("Dockerfile.agent").envs
    assert envs["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert "utility" in envs["NVIDIA_DRIVER_CAPABILITIES"].split(",")


def test_dockerignore_sends_only_what_the_images_copy() -> None:
    lines = [
        line for line in (REPO_ROOT / ".dockerignore").read_text().splitlines() if line and line[0] != "#"
    ]
    assert lines[0] == "*", "allow-list: everything else (.git, .venv, tests) stays out of the context"
    included = {line.removeprefix("!").rstrip("/") for line in lines if line.startswith("!")}
    sources = {
        source.rstrip("/")
        for image in IMAGES
        for copy in values(parse(image.dockerfile).structure, "COPY")
        if not copy.startswith("--from=")
        for source in copy.split()[:-1]
    }
    assert sources == included
