"""Start and stop the harness's child processes (Prometheus Operator, Prometheus, agents, operator)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import httpx

STOP_TIMEOUT_SECONDS = 15.0


def start(
    args: list[str], log_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Output appended to log_path; no stdin."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=cwd
        )


def wait_ok(process: subprocess.Popen[bytes], url: str, timeout_seconds: float) -> None:
    """Until GET url answers 200; fails early if the process exits."""
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer 200 within {timeout_seconds:g}s")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after STOP_TIMEOUT_SECONDS."""
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
