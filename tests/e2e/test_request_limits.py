"""Hostile requests cost bounded memory: an oversized request head is refused and the agent serves on."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import httpx
import pytest
from agent_process import agent

pytestmark = pytest.mark.e2e


def _raw_exchange(url: str, request: bytes) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        # Closed before we finished sending: refused, as it should be.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.sendall(request)
        chunks = []
        try:
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
    return b"".join(chunks)


def test_an_oversized_header_is_refused_and_others_are_still_served(tmp_path: Path) -> None:
    with agent("--scrape-interval", "1", "--no-enable-gpu", log_path=tmp_path / "agent.log") as url:
        huge = b"GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Filler: " + b"a" * (8 * 1024 * 1024) + b"\r\n\r\n"
        answer = _raw_exchange(url, huge)
        assert b"esnode_" not in answer  # never served
        assert answer == b"" or answer.startswith((b"HTTP/1.1 431", b"HTTP/1.1 400"))
        assert httpx.get(f"{url}/metrics", timeout=5).status_code == 200


def test_a_flood_of_bad_requests_costs_a_few_log_lines(tmp_path: Path) -> None:
    log_path = tmp_path / "agent.log"
    with agent("--scrape-interval", "1", "--no-enable-gpu", log_path=log_path) as url:
        before = len(log_path.read_text().splitlines())
        for _ in range(1000):
            answer = _raw_exchange(url, b"NOT HTTP AT ALL\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 400")
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        flood = log_path.read_text().splitlines()[before:]
    invalid = [line for line in flood if "Invalid HTTP request received" in line]
    # The burst of five, then one line saying the rest are suppressed.
    assert len(invalid) == 6, flood
    assert 'msg="suppressing similar records"' in invalid[-1]
    assert len(flood) <= 10, flood
