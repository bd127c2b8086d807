"""The terminal view, driven headless by textual's pilot against a real agent process."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from agent_process import agent

from esnode_agent.cli import main
from esnode_agent.top.app import TopApp

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 20.0
GPU_ROW = re.compile(r"^(\d)\s+(\d+)\s+[\d.]+/\d+\s+\d+\s+\d+\s+[▁▂▃▄▅▆▇█]+$", re.MULTILINE)


async def _until(app: TopApp, pilot: object, text: str) -> str:
    deadline = time.monotonic() + WAIT_SECONDS
    while text not in (screen := app.screen_text()) and time.monotonic() < deadline:
        await pilot.pause(0.2)  # type: ignore[attr-defined]
    assert text in screen, screen
    return screen


async def test_top_shows_every_gpu_the_envelope_and_switches_panels_on_keys(tmp_path: Path) -> None:
    flags = (
        "--scrape-interval",
        "1",
        "--gpu-backend",
        "sim:h100x8",
        "--node-power-envelope-watts",
        "4000",
        "--enable-local-tsdb",
        "--local-tsdb-path",
        str(tmp_path / "tsdb"),
        "--local-tsdb-flush-seconds",
        "1",
    )
    with agent(*flags, log_path=tmp_path / "agent.log") as base_url:
        time.sleep(3)  # a few cycles in history: the sparklines start from them
        app = TopApp(base_url.removeprefix("http://"), interval_hint_seconds=1.0)
        async with app.run_test(size=(80, 24)) as pilot:
            screen = await _until(app, pilot, "8 GPUs")
            assert sorted(m.group(1) for m in GPU_ROW.finditer(screen)) == [str(i) for i in range(8)]
            assert re.search(
                r"^Node power [\d.]+ W of envelope 4000 W \(\d+%\) \| (OK|EXCEEDED)$", screen, re.M
            )
            assert all(len(line) <= 80 for line in screen.splitlines())
            assert len(app.trends.gpu_utilization["0"]) > app.snapshots_seen  # seeded from history

            await pilot.press("p")
            screen = await _until(app, pilot, "panel: power")
            assert "headroom" in screen and "GPUs together" in screen
            await pilot.press("h")
            screen = await _until(app, pilot, "panel: health")
            assert re.search(r"^  gpu\s+OK\s", screen, re.M)
            assert "flags: " in screen
            await pilot.press("tab")
            await _until(app, pilot, "panel: gpus")
            await pilot.press("q")
        assert app.return_code == 0


def test_cli_is_an_alias_and_help_names_the_address_flag(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("top", "cli"):
        with pytest.raises(SystemExit) as exited:
            main([command, "--help"])
        assert exited.value.code == 0
        assert "--address" in capsys.readouterr().out
