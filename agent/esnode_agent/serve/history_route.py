"""GET /tsdb/export: the local history as timestamped exposition text, for Prometheus backfill."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from esnode_agent.history.export import export
from esnode_agent.history.reader import HistoryUnavailableError, Query, open_reader, parse_metric_globs
from esnode_agent.serve.exposition import OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE


class BadTimeError(ValueError):
    pass


def parse_time(text: str, name: str) -> int:
    """Unix seconds (``1764626911.5``) or RFC 3339 (``2026-12-01T21:00:00Z``), as milliseconds."""
    try:
        return round(float(text) * 1000)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadTimeError(f"{name}={text!r}: expected unix seconds or RFC 3339") from None
    if moment.tzinfo is None:
        raise BadTimeError(f"{name}={text!r}: an RFC 3339 time needs a zone (Z or +00:00)")
    return round(moment.timestamp() * 1000)


def query_of(params: dict[str, str], now_seconds: float, default_span_seconds: float) -> Query:
    """``from``/``to`` default to the retention window ending now; ``metrics`` to esnode_*."""
    to_ms = parse_time(params["to"], "to") if "to" in params else round(now_seconds * 1000)
    from_ms = (
        parse_time(params["from"], "from") if "from" in params else to_ms - round(default_span_seconds * 1000)
    )
    if from_ms > to_ms:
        raise BadTimeError("from must not be after to")
    return Query(from_ms, to_ms, parse_metric_globs(params.get("metrics")))


def export_route(database: Path, retention_seconds: float) -> Route:
    async def tsdb_export(request: Request) -> Response:
        try:
            query = query_of(dict(request.query_params), time.time(), retention_seconds)
            db = open_reader(database)
        except BadTimeError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=400)
        except HistoryUnavailableError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=503)
        openmetrics = "application/openmetrics-text" in request.headers.get("accept", "")

        def body() -> Iterator[bytes]:  # starlette iterates it in a worker thread
            try:
                yield from export(db, query, openmetrics)
            finally:
                db.close()

        media_type = OPENMETRICS_CONTENT_TYPE if openmetrics else TEXT_CONTENT_TYPE
        return StreamingResponse(body(), media_type=media_type, headers={"Vary": "Accept"})

    return Route("/tsdb/export", tsdb_export)
