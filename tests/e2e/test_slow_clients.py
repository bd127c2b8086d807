"""Slow and idle clients cannot hold the agent: a request must arrive in time, and open connections are capped."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psutil
import pytest
from agent_process import agent

pytestmark = pytest.mark.e2e

SLOW_CLIENTS = 200
HEADER_TIMEOUT_SECONDS = 3.0
PROBE_TIMEOUT_SECONDS = 1.0  # the chart's liveness probe timeout
HEAD = b"GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Slow: " + b"a" * 1000


def _agent_process(url: str) -> psutil.Process:
    port = int(url.rsplit(":", 1)[1])
    for conn in psutil.net_connections("tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port and conn.pid:
            return psutil.Process(conn.pid)
    raise LookupError(f"no process listens on {port}")


def _open(url: str, count: int) -> list[socket.socket]:
    host, port = url.removeprefix("http://").split(":")
    return [socket.create_connection((host, int(port)), timeout=2) for _ in range(count)]


def _is_closed_by_peer(conn: socket.socket) -> bool:
    conn.setblocking(False)
    try:
        return conn.recv(1) == b""
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True


class _Trickle:
    """Each connection sends one byte of its request head a second, as slowloris does."""

    def __init__(self, conns: list[socket.socket]) -> None:
        self.conns = conns
        self.closed: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for offset in range(len(HEAD)):
            for index, conn in enumerate(self.conns):
                if index in self.closed:
                    continue
                try:
                    conn.send(HEAD[offset : offset + 1])
                except OSError:
                    self.closed.add(index)
            if self._stop.wait(1.0):
                return

    def __enter__(self) -> _Trickle:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def _probing(url: str) -> Iterator[list[float]]:
    """Probes /healthz twice a second; yields the list of answer times (a failure raises at the end)."""
    times: list[float] = []
    failures: list[str] = []
    stop = threading.Event()

    def probe() -> None:
        with httpx.Client(timeout=PROBE_TIMEOUT_SECONDS) as client:
            while not stop.wait(0.5):
                started = time.monotonic()
                try:
                    status = client.get(f"{url}/healthz", headers={"Connection": "close"}).status_code
                except httpx.HTTPError as exc:
                    failures.append(repr(exc))
                    continue
                times.append(time.monotonic() - started)
                if status != 200:
                    failures.append(f"status {status}")

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    try:
        yield times
    finally:
        stop.set()
        thread.join()
    assert not failures, failures


def test_slowloris_connections_are_closed_and_probes_answered(tmp_path: Path) -> None:
    flags = (
        "--scrape-interval",
        "1",
        "--no-enable-gpu",
        "--http-header-timeout-seconds",
        str(HEADER_TIMEOUT_SECONDS),
    )
    with agent(*flags, log_path=tmp_path / "agent.log") as url:
        process = _agent_process(url)
        baseline_fds = process.num_fds()
        with ExitStack() as stack, _probing(url) as probe_seconds:
            conns = _open(url, SLOW_CLIENTS)
            for conn in conns:
                stack.callback(conn.close)
            with _Trickle(conns) as trickle:
                time.sleep(1.5)
                assert process.num_fds() >= baseline_fds + SLOW_CLIENTS * 0.9  # they are open
                deadline = time.monotonic() + HEADER_TIMEOUT_SECONDS + 5
                while len(trickle.closed) < SLOW_CLIENTS and time.monotonic() < deadline:
                    time.sleep(0.25)
                still_open = [c for i, c in enumerate(conns) if i not in trickle.closed]
                assert not [c for c in still_open if not _is_closed_by_peer(c)]
        print(
            f"\n/healthz under slowloris: {len(probe_seconds)} probes, slowest {max(probe_seconds) * 1000:.0f} ms"
        )
        assert len(probe_seconds) >= 4  # probes went on throughout (how many depends on how soon all closed)
        deadline = time.monotonic() + 5
        while process.num_fds() > baseline_fds + 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert process.num_fds() <= baseline_fds + 2
    log = (tmp_path / "agent.log").read_text()
    assert "request not received in time" in log


def _get(conn: socket.socket) -> bytes:
    """One keep-alive exchange: the whole response, read by its Content-Length."""
    conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: agent\r\n\r\n")
    answer = b""
    while b"\r\n\r\n" not in answer:
        answer += conn.recv(65536)
    head, _, body = answer.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1]) for line in head.lower().split(b"\r\n") if line.startswith(b"content-length")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head


def test_a_silent_new_connection_is_closed_a_quiet_keep_alive_one_is_not(tmp_path: Path) -> None:
    """The deadline runs from the connect and while a request arrives, not while a kept-alive
    connection is silent between requests (uvicorn's 30 s keep-alive timeout bounds that)."""
    flags = ("--no-enable-gpu", "--http-header-timeout-seconds", "1")
    with agent(*flags, log_path=tmp_path / "agent.log") as url:
        kept, silent = _open(url, 2)
        with kept, silent:
            assert _get(kept).startswith(b"HTTP/1.1 200")
            time.sleep(2.5)
            assert _is_closed_by_peer(silent)
            kept.setblocking(True)
            assert _get(kept).startswith(b"HTTP/1.1 200")


def test_open_connections_are_capped_and_probes_and_streams_stay(tmp_path: Path) -> None:
    cap = 100
    flags = (
        "--scrape-interval",
        "1",
        "--no-enable-gpu",
        "--http-max-connections",
        str(cap),
        "--max-event-clients",
        "8",
    )
    with agent(*flags, log_path=tmp_path / "agent.log") as url:
        process = _agent_process(url)
        baseline_fds = process.num_fds()
        with ExitStack() as stack, _probing(url), httpx.stream("GET", f"{url}/events", timeout=10) as events:
            lines = events.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))
            for conn in _open(url, SLOW_CLIENTS):  # idle: connected, nothing sent
                stack.callback(conn.close)
            time.sleep(2.0)
            # The listener, the probe's and the stream's connections, and the cap's worth of idle ones.
            assert process.num_fds() <= baseline_fds + cap + 3
            # Being answered, the stream is never the one closed to make room.
            assert next(line for line in lines if line.startswith("data:"))
    assert "too many open connections" in (tmp_path / "agent.log").read_text()
