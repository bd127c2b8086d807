"""A cap on concurrent /events clients: beyond it 503, and a client that leaves frees its place."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from agent_process import agent

pytestmark = pytest.mark.e2e


def test_event_clients_beyond_the_cap_get_503_and_places_free_up(tmp_path: Path) -> None:
    flags = ("--scrape-interval", "1", "--gpu-backend", "sim:h100x8", "--max-event-clients", "2")
    with agent(*flags, log_path=tmp_path / "agent.log") as url, httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{url}/events") as first, client.stream("GET", f"{url}/events") as second:
            assert (first.status_code, second.status_code) == (200, 200)
            third = client.get(f"{url}/events")
            assert third.status_code == 503 and third.headers["retry-after"] == "10"
            assert client.get(f"{url}/metrics").status_code == 200  # everything else still serves
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with httpx.Client(timeout=10) as fresh, fresh.stream("GET", f"{url}/events") as again:
                if again.status_code == 200:
                    next(again.iter_lines())
                    return
            time.sleep(0.2)
        pytest.fail("no place freed after the clients left")
