"""A model server's /metrics on loopback: a real HTTP server whose counters the test advances."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from io import BufferedIOBase
from pathlib import Path
from string import Template
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "app"


def exposition(fixture: str, **counters: float) -> str:
    """A recorded exposition (tests/fixtures/app/NAME.prom) with its counters set to ``counters``."""
    return Template((FIXTURES / f"{fixture}.prom").read_text()).substitute(counters)


class ModelServer:
    """Serves ``body`` at /metrics.

    ``delay_seconds`` makes it hang before answering; ``trickle_seconds`` makes it send its body a
    byte at a time at that interval, so no single read waits long yet the answer never ends.
    """

    def __init__(
        self,
        body: str = "",
        port: int = 0,
        delay_seconds: float = 0.0,
        trickle_seconds: float | None = None,
        status: int = 200,
    ) -> None:
        self.body = body
        self.status = status
        self.requests = 0
        self._delay_seconds = delay_seconds
        self._trickle_seconds = trickle_seconds
        self._released = threading.Event()  # ends a hanging answer early when the test is done
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/metrics"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # as real servers do; else keep-alive fetches wait on delayed ACKs

            def do_GET(self) -> None:
                server.requests += 1
                server._released.wait(server._delay_seconds)
                payload = server.body.encode()
                try:
                    self.send_response(server.status)
                    self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    server._send(self.wfile, payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting, as it should

            def log_message(self, *_: Any) -> None:
                pass

        return Handler

    def _send(self, out: BufferedIOBase, payload: bytes) -> None:
        if self._trickle_seconds is None:
            out.write(payload)
            return
        for index in range(len(payload)):
            if self._released.wait(self._trickle_seconds):
                return
            out.write(payload[index : index + 1])

    def __enter__(self) -> ModelServer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._released.set()
        self._server.shutdown()
        self._server.server_close()
