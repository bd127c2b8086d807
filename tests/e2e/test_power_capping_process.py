"""Power capping as a user turns it on: an agent process holding an 8-GPU node under its envelope.

The simulated driver keeps the limits set on its GPUs in a file (as a real driver keeps them past
the process that set them), so the test reads what the agent left behind after it stopped.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from agent_process import agent

from esnode_agent.gpu.sim_power_limit import read_driver_state
from esnode_agent.gpu.sim_profile import load_profile

pytestmark = pytest.mark.e2e

# The GPUs alone (no RAPL here, as on most cloud GPU VMs): the node power the agent judges is theirs.
ENVELOPE_WATTS = 2600.0
DEFAULT_LIMIT_MILLIWATTS = 700_000


def _h100x8_keeping_limits_in(path: Path, profile_path: Path) -> Path:
    profile = load_profile("h100x8").model_copy(update={"driver_state_path": path})
    profile_path.write_text(profile.model_dump_json(), encoding="utf-8")
    return profile_path


def _statuses(url: str, count: int) -> list[dict[str, object]]:
    """One /status per new cycle, ``count`` of them."""
    seen: list[dict[str, object]] = []
    deadline = time.monotonic() + 3 * count + 10
    while len(seen) < count and time.monotonic() < deadline:
        status = httpx.get(f"{url}/status", timeout=5).json()
        if not seen or status["sequence"] != seen[-1]["sequence"]:
            seen.append(status)
        time.sleep(0.2)
    return seen


def test_enforce_holds_the_envelope_and_stopping_restores_every_limit(tmp_path: Path) -> None:
    driver = tmp_path / "driver.json"
    profile = _h100x8_keeping_limits_in(driver, tmp_path / "h100x8.json")
    flags = (
        *("--scrape-interval", "1", "--gpu-backend", f"sim:{profile}", "--path-sysfs", str(tmp_path)),
        *("--node-power-envelope-watts", str(ENVELOPE_WATTS), "--power-capping", "enforce"),
        *("--power-capping-state-dir", str(tmp_path / "state")),
    )
    with agent(*flags, log_path=tmp_path / "agent.log") as url:
        statuses = _statuses(url, 12)
        during = read_driver_state(driver)
    powers = [s["power"]["node_power_watts"] for s in statuses]  # type: ignore[index]
    first_over = next(i for i, watts in enumerate(powers) if watts is not None and watts > ENVELOPE_WATTS)
    after = powers[first_over + 2 :]
    assert len(after) >= 6
    assert max(after) <= ENVELOPE_WATTS, powers  # back under within two cycles, and stays
    capping = statuses[-1]["power_capping"]
    assert capping["mode"] == "enforce" and capping["state"] == "capping"  # type: ignore[index]
    assert during and max(during.values()) < DEFAULT_LIMIT_MILLIWATTS  # GPUs near their floor are spared
    # Stopped with SIGTERM: every limit it set is back at its original, and nothing is left to restore.
    assert read_driver_state(driver) == dict.fromkeys(during, DEFAULT_LIMIT_MILLIWATTS)
    assert not (tmp_path / "state" / "power-capping.json").exists()
    log_text = (tmp_path / "agent.log").read_text()
    assert "Traceback" not in log_text
    assert "power capping on" in log_text
