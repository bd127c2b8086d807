"""Start the agent, and the things it is compared with, as real processes on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

STARTUP_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_ok(url: str, timeout_seconds: float = STARTUP_TIMEOUT_SECONDS, **request: Any) -> None:
    """``request``: more httpx.get arguments (verify, auth) for an agent behind its web config."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0, **request).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_seconds:g}s")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESNODE_", "NVIDIA_"))}
    return {**env, **extra}


@contextmanager
def running(
    args: list[str], ready_url: str, log_path: Path, env: dict[str, str] | None = None, **request: Any
) -> Iterator[subprocess.Popen[bytes]]:
    with log_path.open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env or clean_env())
        try:
            wait_until_ok(ready_url, **request)
            yield process
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@contextmanager
def agent(*flags: str, log_path: Path, cwd_env: dict[str, str] | None = None) -> Iterator[str]:
    """Yields the agent's base URL once /readyz is 200 (the first cycle has finished)."""
    port = free_port()
    args = [sys.executable, "-m", "esnode_agent", "--listen-address", f"127.0.0.1:{port}", *flags]
    with running(args, f"http://127.0.0.1:{port}/readyz", log_path, cwd_env):
        yield f"http://127.0.0.1:{port}"


class RaplTree:
    """A powercap tree whose package counters advance like a CPU drawing steady power.

    Real RAPL files cannot exist on this machine; the agent reads this tree through
    --path-sysfs exactly as it would read /sys.
    """

    MAX_ENERGY_RANGE_UJ = 262_143_328_850

    def __init__(self, sysfs: Path, package_watts: tuple[float, ...]) -> None:
        self.sysfs = sysfs
        self._watts = package_watts
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._advance, daemon=True)
        for package, _ in enumerate(package_watts):
            zone = sysfs / "class" / "powercap" / f"intel-rapl:{package}"
            zone.mkdir(parents=True)
            (zone / "name").write_text(f"package-{package}\n")
            (zone / "max_energy_range_uj").write_text(f"{self.MAX_ENERGY_RANGE_UJ}\n")
            (zone / "energy_uj").write_text("1000000\n")

    def _advance(self) -> None:
        started = time.monotonic()
        while not self._stop.wait(0.2):
            elapsed = time.monotonic() - started
            for package, watts in enumerate(self._watts):
                energy_uj = 1_000_000 + int(watts * elapsed * 1e6)
                path = self.sysfs / "class" / "powercap" / f"intel-rapl:{package}" / "energy_uj"
                tmp = path.with_suffix(".tmp")
                tmp.write_text(f"{energy_uj}\n")
                tmp.replace(path)

    def __enter__(self) -> RaplTree:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@contextmanager
def growing_model_server(exposition: Callable[[float], str]) -> Iterator[str]:
    """A model server's /metrics on loopback, serving ``exposition(seconds since it started)``:
    counters that grow with wall time, as a serving model's do. Yields the /metrics URL."""
    started = time.monotonic()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # as real servers do; else keep-alive fetches wait on delayed ACKs

        def do_GET(self) -> None:
            body = exposition(time.monotonic() - started).encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/metrics"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
