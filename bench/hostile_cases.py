#!/usr/bin/env python3
"""Peak memory and cycle time of the agent under each hostile case of issue 18, against a clean run.

Each case is a fresh agent process (1 s cycles, sim:h100x8 GPUs) on loopback for --seconds:
a model server listing 10,000 models, one sending an endless chunked body, one a 100 MB body,
one a gzip bomb (200 MB of zeros in ~200 KB), a client sending three 100 MB request headers, and
200 slowloris connections sending a header byte a second. The anchor is the same agent with a
well-behaved model server, measured in the same run. Printed per case: peak RSS (VmHWM) and its
ratio to the anchor, the slowest cycle (/status cycle_seconds), the slowest /healthz answer, and
whether the model server's scrape was refused (esnode_app_scrape_success 0, as it should be).

    python bench/hostile_cases.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

MIB = 2**20
CHUNK = b"# filler comment line of a hostile model server, repeated without end\n" * 1000
GOOD_BODY = b'vllm:prompt_tokens_total{model_name="m"} 100\nvllm:generation_tokens_total{model_name="m"} 50\n'
Serve = Callable[[BaseHTTPRequestHandler], None]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _send_body(handler: BaseHTTPRequestHandler, body: bytes, **headers: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; version=0.0.4")
    for name, value in headers.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _good(handler: BaseHTTPRequestHandler) -> None:
    _send_body(handler, GOOD_BODY)


def _many_models_body(count: int) -> bytes:
    lines = [f'vllm:prompt_tokens_total{{model_name="model-{i}"}} {i * 10}' for i in range(count)]
    return ("\n".join(lines) + "\n").encode()


def _many_models(body: bytes) -> Serve:
    return lambda handler: _send_body(handler, body)


def _endless_chunked(handler: BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "text/plain; version=0.0.4")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    frame = f"{len(CHUNK):x}\r\n".encode() + CHUNK + b"\r\n"
    while True:
        handler.wfile.write(frame)


def _large_body(total_bytes: int) -> Serve:
    def serve(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain; version=0.0.4")
        handler.send_header("Content-Length", str(total_bytes))
        handler.end_headers()
        for _ in range(total_bytes // len(CHUNK)):
            handler.wfile.write(CHUNK)
        handler.wfile.write(CHUNK[: total_bytes % len(CHUNK)])

    return serve


def _gzip_bomb(inflated_bytes: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: a gzip wrapper
    zeros = bytes(MIB)
    parts = [packer.compress(zeros) for _ in range(inflated_bytes // MIB)]
    return b"".join([*parts, packer.flush()])


def _bomb(body: bytes) -> Serve:
    return lambda handler: _send_body(handler, body, Content_Encoding="gzip")


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # the agent hanging up mid-body is the point of most cases


class _ModelServer:
    def __init__(self, serve: Serve) -> None:
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    serve(self)

            def log_message(self, *_: Any) -> None:
                pass

        self._server = _QuietServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, args=(0.1,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _huge_headers(url: str, stop: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    filler = b"a" * MIB
    for _ in range(3):
        with socket.create_connection((host, int(port)), timeout=5) as conn, contextlib.suppress(OSError):
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Filler: ")
            for _ in range(100):
                conn.sendall(filler)
        if stop.is_set():
            return


def _slowloris(url: str, stop: threading.Event) -> None:
    host, port = url.removeprefix("http://").split(":")
    head = b"GET /metrics HTTP/1.1\r\nHost: agent\r\nX-Slow: " + b"a" * 1000
    conns: list[socket.socket] = []
    with contextlib.ExitStack() as stack:
        for _ in range(200):
            conns.append(stack.enter_context(socket.create_connection((host, int(port)), timeout=2)))
        for offset in range(len(head)):
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.send(head[offset : offset + 1])
            if stop.wait(1.0):
                return


@dataclass
class _Result:
    name: str
    peak_rss_bytes: int
    slowest_cycle_seconds: float
    slowest_healthz_seconds: float
    app_scrape_success: str


def _peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise LookupError("no VmHWM")


def _app_success(client: httpx.Client, url: str) -> str:
    for line in client.get(f"{url}/metrics").text.splitlines():
        if line.startswith("esnode_app_scrape_success{"):
            return line.rsplit(" ", 1)[1]
    return "absent"


@contextlib.contextmanager
def _agent(model_url: str | None) -> Iterator[tuple[str, int]]:
    port = _free_port()
    command = [
        sys.executable, "-m", "esnode_agent", "--listen-address", f"127.0.0.1:{port}",
        "--gpu-backend", "sim:h100x8", "--scrape-interval", "1",
    ]  # fmt: skip
    if model_url is not None:
        command += ["--app-metrics-urls", model_url]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ESNODE_", "NVIDIA_"))}
    with tempfile.TemporaryFile() as log:
        agent = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("the agent never became ready")
                time.sleep(0.2)
            yield url, agent.pid
        finally:
            agent.terminate()
            agent.wait(20)


def _run_case(
    name: str,
    seconds: float,
    serve: Serve | None,
    client_attack: Callable[[str, threading.Event], None] | None,
) -> _Result:
    model_server = _ModelServer(serve) if serve is not None else _ModelServer(_good)
    try:
        with _agent(model_server.url) as (url, pid), httpx.Client(timeout=10) as client:
            stop = threading.Event()
            attack = None
            if client_attack is not None:
                attack = threading.Thread(target=client_attack, args=(url, stop), daemon=True)
                attack.start()
            slowest_cycle = slowest_healthz = 0.0
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                started = time.monotonic()
                try:
                    client.get(f"{url}/healthz", timeout=5)
                    healthz = time.monotonic() - started
                except httpx.TimeoutException:
                    healthz = 5.0
                slowest_healthz = max(slowest_healthz, healthz)
                status = client.get(f"{url}/status").json()
                slowest_cycle = max(slowest_cycle, float(status["cycle_seconds"]))
                time.sleep(0.5)
            success = _app_success(client, url)
            stop.set()
            return _Result(name, _peak_rss_bytes(pid), slowest_cycle, slowest_healthz, success)
    finally:
        model_server.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long each case runs")
    args = parser.parse_args()
    cases: list[tuple[str, Serve | None, Callable[[str, threading.Event], None] | None]] = [
        ("anchor: one well-behaved model server", _good, None),
        ("10,000 models", _many_models(_many_models_body(10_000)), None),
        ("endless chunked body", _endless_chunked, None),
        ("100 MB body", _large_body(100_000_000), None),
        ("gzip bomb (200 MB inflated)", _bomb(_gzip_bomb(200 * MIB)), None),
        ("three 100 MB request headers", None, _huge_headers),
        ("200 slowloris connections", None, _slowloris),
    ]
    results = [_run_case(name, args.seconds, serve, attack) for name, serve, attack in cases]
    anchor = results[0]
    print(
        f"{'case':<38} {'peak RSS MiB':>12} {'x anchor':>8} {'slowest cycle s':>15} {'slowest /healthz ms':>19} app scrape ok"
    )
    for r in results:
        print(
            f"{r.name:<38} {r.peak_rss_bytes / MIB:12.1f} {r.peak_rss_bytes / anchor.peak_rss_bytes:8.2f} "
            f"{r.slowest_cycle_seconds:15.3f} {r.slowest_healthz_seconds * 1000:19.1f} {r.app_scrape_success}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
