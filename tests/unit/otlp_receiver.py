"""A loopback OTLP/HTTP receiver answering each POST with the next scripted status (then 200),
over plain HTTP or, given a server context, HTTPS."""

from __future__ import annotations

import http.server
import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from http_serving import serving


class Receiver:
    def __init__(self, statuses: list[tuple[int, dict[str, str]]], tls: ssl.SSLContext | None) -> None:
        self.statuses = statuses
        self.bodies: list[bytes] = []
        self.headers: list[dict[str, str]] = []
        self.client_names: list[str | None] = []  # the client certificate's CN, over TLS
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                receiver.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
                receiver.headers.append(dict(self.headers))
                receiver.client_names.append(_client_name(self.connection))
                status, headers = receiver.statuses.pop(0) if receiver.statuses else (200, {})
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "http" if tls is None else "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/v1/metrics"


def _client_name(connection: object) -> str | None:
    if not isinstance(connection, ssl.SSLSocket):
        return None
    peer = connection.getpeercert() or {}
    names = dict(pair[0] for pair in peer.get("subject", ()))  # type: ignore[misc]
    return names.get("commonName")


@contextmanager
def receiving(
    statuses: list[tuple[int, dict[str, str]]], tls: ssl.SSLContext | None = None
) -> Iterator[Receiver]:
    receiver = Receiver(statuses, tls)
    with serving(receiver.server):
        yield receiver
