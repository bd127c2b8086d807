"""The agent as a user runs it: a process on loopback, scraped over HTTP."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from agent_process import RaplTree, agent, free_port, wait_until_ok
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.e2e

AGENT_FLAGS = ("--scrape-interval", "1", "--gpu-backend", "sim:h100x8", "--node-power-envelope-watts", "4000")


@pytest.fixture
def rapl(tmp_path: Path) -> Iterator[RaplTree]:
    with RaplTree(tmp_path / "sys", package_watts=(180.0, 170.0)) as tree:
        yield tree


@pytest.fixture
def agent_url(tmp_path: Path, rapl: RaplTree) -> Iterator[str]:
    with agent(*AGENT_FLAGS, "--path-sysfs", str(rapl.sysfs), log_path=tmp_path / "agent.log") as url:
        yield url


def scrape_names(url: str) -> set[str]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


def wait_for_names(url: str, wanted: set[str], timeout_seconds: float = 15.0) -> set[str]:
    """Rates need two cycles; wait for them rather than sleeping a guess."""
    deadline = time.monotonic() + timeout_seconds
    names = scrape_names(url)
    while not wanted <= names and time.monotonic() < deadline:
        time.sleep(0.5)
        names = scrape_names(url)
    return names


def test_every_seed_metric_is_served(agent_url: str, seed_names: set[str]) -> None:
    names = wait_for_names(agent_url, seed_names)
    assert seed_names - names == set()


def test_live_exposition_passes_promtool(agent_url: str, seed_names: set[str]) -> None:
    wait_for_names(agent_url, seed_names)
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    body = httpx.get(f"{agent_url}/metrics", timeout=5).content
    result = subprocess.run(
        [promtool, "check", "metrics"], input=body, capture_output=True, timeout=30, check=False
    )
    assert result.returncode == 0, result.stderr.decode()


def test_envelope_and_node_power_are_consistent(agent_url: str) -> None:
    wait_for_names(agent_url, {"esnode_node_power_headroom_watts"})
    status = httpx.get(f"{agent_url}/v1/status", timeout=5).json()
    power = status["power"]["node_power_watts"]
    assert power > 350  # two RAPL packages at 180 W and 170 W plus eight simulated H100s
    assert status["envelope"]["envelope_watts"] == 4000
    assert status["envelope"]["headroom_watts"] == pytest.approx(4000 - power)
    assert status["envelope"]["exceeded"] is (power > 4000)


def test_events_stream_one_snapshot_per_cycle(agent_url: str) -> None:
    sequences: list[int] = []
    with httpx.stream("GET", f"{agent_url}/events", timeout=10) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                sequences.append(json.loads(line.removeprefix("data: "))["sequence"])
            if len(sequences) == 2:
                break
    assert sequences[1] > sequences[0]


def test_cli_clients_read_a_running_agent(agent_url: str) -> None:
    address = agent_url.removeprefix("http://")
    status = subprocess.run(
        [sys.executable, "-m", "esnode_agent", "status", "--address", address],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert status.returncode == 0, status.stderr
    assert json.loads(status.stdout)["collectors"]["cpu"]["success"] is True
    metrics = subprocess.run(
        [sys.executable, "-m", "esnode_agent", "metrics", "--address", address],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert "esnode_memory_total_bytes" in metrics.stdout


def test_cli_clients_say_when_no_agent_runs() -> None:
    address = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "esnode_agent", "status", "--address", address],
        capture_output=True,
        text=True,
        timeout=10,
    )
    assert time.monotonic() - started < 5
    assert result.returncode == 1
    assert result.stderr.startswith(f"esnode-agent: no agent running at http://{address}")


def test_a_broken_source_fails_alone(tmp_path: Path, rapl: RaplTree) -> None:
    """procfs pointed at nothing: the host collectors fail, power and GPU keep serving."""
    flags = (*AGENT_FLAGS, "--path-sysfs", str(rapl.sysfs), "--path-procfs", str(tmp_path / "no-proc"))
    with agent(*flags, log_path=tmp_path / "agent.log") as url:
        names = wait_for_names(url, {"esnode_node_power_watts", "esnode_gpu_power_watts"})
        assert {"esnode_node_power_watts", "esnode_gpu_power_watts"} <= names
        status = httpx.get(f"{url}/status", timeout=5).json()
    assert status["collectors"]["cpu"]["success"] is False
    assert status["collectors"]["memory"]["success"] is False
    assert status["collectors"]["gpu"]["success"] is True
    assert status["collectors"]["rapl"]["success"] is True


def test_sigterm_stops_the_agent_promptly(tmp_path: Path) -> None:
    """Kubernetes sends SIGTERM on pod deletion; the agent has no timer that delays its exit."""
    port = free_port()
    args = [sys.executable, "-m", "esnode_agent", "--listen-address", f"127.0.0.1:{port}", "--no-enable-gpu"]
    with (tmp_path / "agent.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_ok(f"http://127.0.0.1:{port}/readyz")
            started = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(10)
        finally:
            process.kill()
    assert time.monotonic() - started < 3
