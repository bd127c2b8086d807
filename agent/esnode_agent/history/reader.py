"""Reads history back: series whose names match globs, their samples within a time range."""

from __future__ import annotations

import fnmatch
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.cycle.samples import MetricSpec, MetricType
from esnode_agent.history.chunk import decode
from esnode_agent.history.store import HistoryFormatError, check_format, connect

DEFAULT_METRICS = ("esnode_*",)
_CHUNKS_OF_SERIES = (
    "SELECT start_ms, header, body FROM chunks WHERE series_id = ? AND start_ms <= ? AND end_ms >= ?"
    " UNION ALL"
    " SELECT start_ms, header, body FROM heads WHERE series_id = ? AND start_ms <= ? AND end_ms >= ?"
    " ORDER BY 1"
)


class HistoryUnavailableError(Exception):
    """No history database at the path given."""


@dataclass(frozen=True, slots=True)
class SeriesSamples:
    spec: MetricSpec
    label_values: tuple[str, ...]
    samples: list[tuple[int, float]]  # (timestamp_ms, value), oldest first


@dataclass(frozen=True, slots=True)
class Query:
    from_ms: int
    to_ms: int
    metrics: tuple[str, ...] = DEFAULT_METRICS  # globs on the exposed name, e.g. esnode_gpu_*

    def matches(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.metrics)


def open_reader(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise HistoryUnavailableError(f"no history database at {path}")
    db = connect(path)
    try:
        check_format(db, path)
    except HistoryFormatError as exc:
        db.close()
        raise HistoryUnavailableError(str(exc)) from None
    return db


def read(db: sqlite3.Connection, query: Query) -> Iterator[SeriesSamples]:
    """Series sorted by name (a family's series together), each with its samples in range.

    One series is decoded at a time, so memory follows the longest series, not the range.
    """
    series = [
        row
        for row in db.execute("SELECT id, name, type, help, labels FROM series ORDER BY name, id")
        if query.matches(row[1])
    ]
    for series_id, name, kind, help_text, labels_json in series:
        labels: dict[str, str] = json.loads(labels_json)
        samples = [
            (timestamp_ms, value)
            for _, header, body in db.execute(_CHUNKS_OF_SERIES, (series_id, query.to_ms, query.from_ms) * 2)
            for timestamp_ms, value in decode(header, body)
            if query.from_ms <= timestamp_ms <= query.to_ms
        ]
        if samples:
            spec = MetricSpec(name, help_text, MetricType(kind), tuple(labels))
            yield SeriesSamples(spec, tuple(labels.values()), samples)


def parse_metric_globs(text: str | None) -> tuple[str, ...]:
    globs = tuple(part.strip() for part in (text or "").split(",") if part.strip())
    return globs or DEFAULT_METRICS
