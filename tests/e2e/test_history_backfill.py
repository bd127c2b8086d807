"""Local history end to end: a real agent records, promtool turns its export into blocks, and a
real Prometheus started on them answers with the values the agent served at those times."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from agent_process import agent
from prometheus_process import prometheus

pytestmark = pytest.mark.e2e

RECORD_SECONDS = 60
GPU = "3"


def _record_served(base_url: str, seconds: float) -> dict[int, tuple[float, float]]:
    """Per cycle (ms, as history stores it): GPU 3's power and the node energy that /status served."""
    served: dict[int, tuple[float, float]] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        view = httpx.get(f"{base_url}/status", timeout=5).json()
        power = next(g["power_watts"] for g in view["gpus"] if g["gpu"] == GPU)
        served[int(view["timestamp_seconds"] * 1000)] = (power, view["power"]["node_energy_joules_total"])
        time.sleep(0.4)
    return served


def _raw_samples(prometheus_url: str, promql: str, at_seconds: float) -> dict[int, float]:
    response = httpx.get(
        f"{prometheus_url}/api/v1/query", params={"query": promql, "time": str(at_seconds)}, timeout=10
    )
    body = response.json()
    assert body["status"] == "success", body
    (series,) = body["data"]["result"]
    return {round(float(t) * 1000): float(v) for t, v in series["values"]}


def test_backfilled_history_answers_with_what_the_agent_served(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (Debian package prometheus)"
    flags = (
        "--scrape-interval",
        "1",
        "--gpu-backend",
        "sim:h100x8",
        "--enable-local-tsdb",
        "--local-tsdb-path",
        str(tmp_path / "tsdb"),
        "--local-tsdb-flush-seconds",
        "2",
    )
    started = time.time()
    with agent(*flags, log_path=tmp_path / "agent.log") as base_url:
        served = _record_served(base_url, RECORD_SECONDS)
        time.sleep(2.5)  # one more flush: everything served is on disk
        export = httpx.get(
            f"{base_url}/tsdb/export",
            params={"from": str(started), "to": str(time.time()), "metrics": "esnode_gpu_*,esnode_node_*"},
            headers={"Accept": "application/openmetrics-text"},
            timeout=60,
        )
    assert export.status_code == 200
    assert export.text.endswith("# EOF\n")
    assert "# TYPE esnode_node_energy_joules counter\n" in export.text
    (tmp_path / "export.om").write_bytes(export.content)
    workdir = tmp_path / "prometheus"
    workdir.mkdir()
    subprocess.run(
        [
            promtool,
            "tsdb",
            "create-blocks-from",
            "openmetrics",
            str(tmp_path / "export.om"),
            str(workdir / "data"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert len(served) >= RECORD_SECONDS * 0.8  # about one /status read per cycle
    last = max(served) / 1000 + 0.5
    with prometheus([], workdir) as prometheus_url:
        power = _raw_samples(prometheus_url, f'esnode_gpu_power_watts{{gpu="{GPU}"}}[2m]', last)
        energy = _raw_samples(prometheus_url, "esnode_node_energy_joules_total[2m]", last)
    assert len(power) >= RECORD_SECONDS - 5  # every cycle, not only those /status was read in
    for stamp_ms, (watts, joules) in served.items():
        assert power[stamp_ms] == watts
        assert energy[stamp_ms] == pytest.approx(joules, rel=1e-12)
