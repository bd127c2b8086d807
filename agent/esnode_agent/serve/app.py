"""HTTP surface: serves what the collection loop published; never collects on a request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, request_response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esnode_agent import __version__
from esnode_agent.serve.exposition import Payload
from esnode_agent.serve.history_route import export_route
from esnode_agent.serve.publication import Latest

_LANDING_PAGE = """<!doctype html>
<html><head><title>esnode agent</title></head><body>
<h1>esnode agent {version}</h1>
<ul>
<li><a href="{telemetry_path}">{telemetry_path}</a> Prometheus exposition</li>
<li><a href="/status">/status</a> JSON snapshot (also <a href="/v1/status">/v1/status</a>)</li>
<li><a href="/events">/events</a> one snapshot per cycle (Server-Sent Events)</li>
<li><a href="/healthz">/healthz</a> and <a href="/readyz">/readyz</a></li>
</ul></body></html>
"""


class DateHeader:
    """Adds the Date header HTTP/1.1 asks of origin servers, formatted at most once a second."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app
        self._second = -1
        self._value = b""

    def _date(self) -> bytes:
        now = int(time.time())
        if now != self._second:
            self._second, self._value = now, formatdate(now, usegmt=True).encode()
        return self._value

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return

        async def send_with_date(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"date", self._date())]
            await send(message)

        await self._app(scope, receive, send_with_date)


def _accepted(header: str) -> set[str]:
    """The media types or codings a header accepts: those listed without q=0 (RFC 9110 12.4.2)."""
    accepted = set()
    for item in header.split(","):
        name, *params = (part.strip() for part in item.split(";"))
        quality = next((p.partition("=")[2] for p in params if p.replace(" ", "").startswith("q=")), "1")
        try:
            refused = float(quality) <= 0
        except ValueError:
            refused = False
        if name and not refused:
            accepted.add(name.lower())
    return accepted


def _choose_payload(request: Request, text: Payload, openmetrics: Payload) -> Payload:
    wanted = "application/openmetrics-text" in _accepted(request.headers.get("accept", ""))
    return openmetrics if wanted else text


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in _accepted(request.headers.get("accept-encoding", ""))


class AdmissionLimit:
    """Wraps an endpoint so that at most ``limit`` of its responses stream at once; the rest get 503.

    Counted around the whole response, not the stream's generator, so a client that leaves before
    its first event is counted out too.
    """

    def __init__(self, endpoint: ASGIApp, limit: int) -> None:
        self._endpoint = endpoint
        self._limit = limit
        self._active = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._active >= self._limit:
            busy = PlainTextResponse(
                f"at most {self._limit} event clients at once\n",
                status_code=503,
                headers={"Retry-After": "10"},
            )
            await busy(scope, receive, send)
            return
        self._active += 1
        try:
            await self._endpoint(scope, receive, send)
        finally:
            self._active -= 1


def create_app(
    latest: Latest,
    loop_alive: Callable[[], bool],
    *,
    telemetry_path: str = "/metrics",
    max_event_clients: int = 64,
    history: tuple[Path, float] | None = None,
) -> Starlette:
    """``loop_alive`` says whether the collection loop is still cycling on time; ``history``,
    the local history's database and retention in seconds when it is on."""
    landing_page = _LANDING_PAGE.format(version=__version__, telemetry_path=telemetry_path)

    async def metrics(request: Request) -> Response:
        publication = latest.current
        if publication is None:
            return PlainTextResponse("no collection cycle has finished yet\n", status_code=503)
        payload = _choose_payload(request, publication.exposition.text, publication.exposition.openmetrics)
        headers = {"Vary": "Accept, Accept-Encoding"}
        if _accepts_gzip(request):
            headers["Content-Encoding"] = "gzip"
            return Response(payload.body_gzip, media_type=payload.content_type, headers=headers)
        return Response(payload.body, media_type=payload.content_type, headers=headers)

    async def healthz(_: Request) -> Response:
        if loop_alive():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("collection loop is not running\n", status_code=503)

    async def readyz(_: Request) -> Response:
        if latest.current is not None and loop_alive():
            return PlainTextResponse("ok\n")
        return PlainTextResponse("waiting for the first collection cycle\n", status_code=503)

    async def status(_: Request) -> Response:
        publication = latest.current
        if publication is None:
            return JSONResponse({"error": "no collection cycle has finished yet"}, status_code=503)
        return Response(publication.status.at(time.time()), media_type="application/json")

    async def events(_: Request) -> Response:
        async def stream() -> AsyncIterator[dict[str, str]]:
            sequence = 0
            while True:
                publication = await latest.next_after(sequence)
                sequence = publication.snapshot.sequence
                view = publication.status.at(time.time()).decode()
                yield {"event": "snapshot", "id": str(sequence), "data": view}

        return EventSourceResponse(stream(), ping=15)

    async def landing(_: Request) -> Response:
        return HTMLResponse(landing_page)

    app = Starlette(
        middleware=[Middleware(DateHeader)],
        routes=[
            Route(telemetry_path, metrics),
            Route("/", landing),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
            Route("/v1/status", status),
            Route("/events", AdmissionLimit(request_response(events), max_event_clients)),
            # Local history (standalone use): only when enable_local_tsdb is on.
            *([export_route(*history)] if history is not None else []),
        ],
    )
    # Starlette would answer /metrics/ with a redirect built from the request's Host header: a
    # client could make the agent point elsewhere. Unknown paths are 404 instead.
    app.router.redirect_slashes = False
    return app
