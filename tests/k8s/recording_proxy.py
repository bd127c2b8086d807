"""A loopback HTTP proxy that records each request's headers and forwards it, body as is, to one
upstream: what a receiver was sent, seen without changing the receiver. With TLS material it serves
HTTPS and requires a client certificate its CA signed (mutual TLS), recording the client's name."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
from http_serving import serving
from loopback_guard import LOOPBACK
from tls_material import TlsMaterial

FORWARDED = ("Content-Type", "Content-Encoding")  # what the upstream needs to read the body


class RecordingProxy:
    def __init__(self, upstream: str, tls: TlsMaterial | None = None) -> None:
        assert ipaddress.ip_address(httpx.URL(upstream).host) in LOOPBACK, upstream
        self.upstream = upstream
        self.requests: list[tuple[str, dict[str, str]]] = []  # (path, headers) of each request
        self.client_names: list[str] = []  # under TLS: each request's client certificate's CN
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                proxy.requests.append((self.path, dict(self.headers)))
                if isinstance(self.connection, ssl.SSLSocket):
                    subject = dict(pair[0] for pair in (self.connection.getpeercert() or {})["subject"])
                    proxy.client_names.append(subject["commonName"])
                headers = {k: v for k in FORWARDED if (v := self.headers.get(k)) is not None}
                answer = httpx.post(proxy.upstream + self.path, content=body, headers=headers, timeout=10)
                self.send_response(answer.status_code)
                self.send_header("Content-Type", answer.headers.get("Content-Type", "text/plain"))
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(tls.ca_cert))
            context.load_cert_chain(str(tls.server_cert), str(tls.server_key))
            context.verify_mode = ssl.CERT_REQUIRED
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"


@contextmanager
def recording_proxy(upstream: str, tls: TlsMaterial | None = None) -> Iterator[RecordingProxy]:
    proxy = RecordingProxy(upstream, tls)
    with serving(proxy.server):
        yield proxy
