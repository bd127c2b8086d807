"""Dockerfile.agent built and run: the agent serves on loopback with no NVML library in the image."""

from __future__ import annotations

import time
import tomllib
from pathlib import Path

import httpx
import oci_images
import pytest

pytestmark = [pytest.mark.images, pytest.mark.timeout(1800)]  # a cold build: base and image

VERSION = tomllib.loads((oci_images.REPO / "pyproject.toml").read_text())["project"]["version"]
# What the agent's own layers (everything above the base) may weigh: the venv, without kubernetes'
# unused asyncio client, pip, setuptools, caches, compilers or tests.
AGENT_LAYERS_BUDGET_BYTES = 140_000_000
BUILDAH_LINES = ("subprocess exited", "Error: exit status")


def program_lines(stderr: str) -> list[str]:
    """stderr without the lines buildah itself adds about the exit status."""
    return [line for line in stderr.splitlines() if line and not line.startswith(BUILDAH_LINES)]


def test_the_agent_image_carries_only_the_agent(agent_image: oci_images.Built) -> None:
    with oci_images.mounted(agent_image.name) as root:
        installed = oci_images.installed(root)
        assert {"esnode", "nvidia_ml_py", "uvicorn", "kubernetes"} <= installed
        assert installed.isdisjoint({"kopf", "textual", "pip", "setuptools", "pytest", "psutil"})
        assert list(root.glob("opt/esnode/lib/python3.*/site-packages/kubernetes/aio")) == []
        assert [p for p in root.glob("usr/bin/*") if p.name in {"gcc", "cc", "c++", "make"}] == []
        assert list(root.glob("root/.cache/pip")) + list(root.glob("src")) + list(root.glob("tmp/*")) == []
        assert list(root.rglob("libnvidia-ml.so*")) == [], "NVML comes from the host's driver, not the image"
    assert sum(agent_image.layer_sizes_bytes[1:]) < AGENT_LAYERS_BUDGET_BYTES, agent_image.summary()


def test_the_agent_image_prints_its_version_as_root(agent_image: oci_images.Built) -> None:
    assert oci_images.image_config(agent_image.name)["User"] == "0:0"
    with oci_images.container(agent_image.name) as ctr:
        result = ctr.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["esnode-agent", VERSION]


def test_the_agent_image_serves_metrics_and_readiness_without_nvml(
    agent_image: oci_images.Built, tmp_path: Path
) -> None:
    port = oci_images.free_port()
    log = tmp_path / "agent.log"
    with (
        oci_images.container(agent_image.name) as ctr,
        oci_images.running(ctr.command("--listen-address", f"127.0.0.1:{port}"), log) as process,
    ):
        deadline = time.monotonic() + 60
        while not ready(port):
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.5)
        metrics = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert metrics.status_code == 200
    assert 'esnode_agent_collector_success{collector="cpu"} 1.0' in metrics.text
    assert 'collector="gpu"' not in metrics.text and "esnode_gpu_" not in metrics.text, (
        "no GPU, no GPU series"
    )
    assert "NVML unavailable; GPU metrics off" in log.read_text()


def ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def test_the_agent_image_exits_2_with_one_line_on_bad_config(agent_image: oci_images.Built) -> None:
    with oci_images.container(agent_image.name) as ctr:
        result = ctr.run("--scrape-interval", "-1")
    assert result.returncode == 2
    assert program_lines(result.stderr) == [
        "esnode-agent: invalid config: scrape_interval_seconds='-1' from flag --scrape-interval: "
        "Input should be greater than or equal to 0.1"
    ]
