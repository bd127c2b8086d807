"""A node_exporter user's set-up, unchanged, on esnode: its flags, its textfile script, real Prometheus."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from agent_process import clean_env, free_port, running
from prometheus_process import prometheus, wait_for_result

pytestmark = pytest.mark.e2e

SEED_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "textfile" / "gpu_metrics.prom"


def test_node_exporter_flags_and_textfile_script_output_reach_prometheus(tmp_path: Path) -> None:
    textfiles = tmp_path / "textfile"
    textfiles.mkdir()
    shutil.copy(SEED_FILE, textfiles)
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "esnode_agent",
        f"--web.listen-address=127.0.0.1:{port}",
        "--web.telemetry-path=/node-metrics",
        f"--collector.textfile.directory={textfiles}",
        "--no-collector.wifi",
        "--log.format=logfmt",
        "--log.level=info",
        "--scrape-interval=1",
        "--gpu-backend=sim:h100x8",
    ]
    log = tmp_path / "agent.log"
    with running(args, f"http://127.0.0.1:{port}/readyz", log, clean_env()):
        body = httpx.get(f"http://127.0.0.1:{port}/node-metrics", timeout=5).text
        promtool = shutil.which("promtool")
        assert promtool, "promtool is required (Debian package prometheus)"
        check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr
        with prometheus([f"127.0.0.1:{port}"], tmp_path, metrics_path="/node-metrics") as url:
            power = wait_for_result(url, "node_gpu_power_draw_watts")
            assert {r["metric"]["gpu"]: float(r["value"][1]) for r in power} == {"0": 71.23, "1": 69.8}
            [info] = wait_for_result(url, "esnode_node_info")
            assert info["metric"]["nodename"]
            assert wait_for_result(url, "esnode_textfile_scrape_error == 0")
    lines = log.read_text().splitlines()
    ignored = [line for line in lines if "node_exporter flags with no esnode counterpart" in line]
    assert len(ignored) == 1 and "flags=--no-collector.wifi" in ignored[0]
    assert all(line.startswith("ts=") for line in lines if line), lines[:3]
