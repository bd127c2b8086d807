"""HTTP surface: serves what the collection loop published; never collects on a request."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate

from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esnode_agent import __version__
from esnode_agent.serve.exposition import Payload
from esnode_agent.serve.publication import Latest

LANDING_PAGE = f"""<!doctype html>
<html><head><title>esnode agent</title></head><body>
<h1>esnode agent {__version__}</h1>
<ul>
<li><a href="/metrics">/metrics</a> Prometheus exposition</li>
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


def _choose_payload(request: Request, text: Payload, openmetrics: Payload) -> Payload:
    accept = request.headers.get("accept", "")
    return openmetrics if "application/openmetrics-text" in accept else text


def _accepts_gzip(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def create_app(latest: Latest, loop_alive: Callable[[], bool]) -> Starlette:
    """``loop_alive`` says whether the collection loop is still cycling on time."""

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
        return HTMLResponse(LANDING_PAGE)

    return Starlette(
        middleware=[Middleware(DateHeader)],
        routes=[
            Route("/", landing),
            Route("/metrics", metrics),
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/status", status),
            Route("/v1/status", status),
            Route("/events", events),
        ],
    )
