"""History as exposition text with timestamps, for backfill into Prometheus.

Prometheus text 0.0.4 carries millisecond timestamps; OpenMetrics carries seconds and ends in
``# EOF``, which is what ``promtool tsdb create-blocks-from openmetrics`` reads. Counters keep
their TYPE, so rate() works on the backfilled blocks. Output is produced one series at a time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from esnode_agent.history.reader import Query, SeriesSamples, read
from esnode_agent.serve.exposition import family_headers, format_value, series_key

_SERIES_PER_PIECE = 16  # bytes handed on in pieces of a few series: fewer, larger writes


def _text_timestamp(timestamp_ms: int) -> str:
    return str(timestamp_ms)


def _openmetrics_timestamp(timestamp_ms: int) -> str:
    return f"{timestamp_ms // 1000}.{timestamp_ms % 1000:03d}"


def _series_lines(series: SeriesSamples, openmetrics: bool) -> str:
    key = series_key(series.spec, series.label_values)
    stamp = _openmetrics_timestamp if openmetrics else _text_timestamp
    return "".join(f"{key} {format_value(value)} {stamp(ms)}\n" for ms, value in series.samples)


def export(db: sqlite3.Connection, query: Query, openmetrics: bool) -> Iterator[bytes]:
    family = None
    pieces: list[str] = []
    for count, series in enumerate(read(db, query), start=1):
        if series.spec.name != family:
            family = series.spec.name
            text_header, openmetrics_header = family_headers(series.spec)
            pieces.append(openmetrics_header if openmetrics else text_header)
        pieces.append(_series_lines(series, openmetrics))
        if count % _SERIES_PER_PIECE == 0:
            yield "".join(pieces).encode()
            pieces = []
    if openmetrics:
        pieces.append("# EOF\n")
    if pieces:
        yield "".join(pieces).encode()
