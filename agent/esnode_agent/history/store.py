"""The history database: SQLite in WAL mode, one row per series per chunk (history/chunk.py).

Each ``flush`` is one transaction, so a crash (kill -9 included) keeps every flush that
committed and loses only samples appended since; WAL with synchronous=NORMAL makes a commit
durable against a process crash, though not against power loss in the last moments.
The open chunk of each series is rewritten in place by every flush until it is full.
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.cycle.samples import MetricSpec, Sample
from esnode_agent.history.chunk import ChunkWriter

DATABASE_NAME = "history.sqlite3"
FORMAT_VERSION = 1  # PRAGMA user_version: the chunk encoding of history/chunk.py
CHUNK_SAMPLES = 360  # 30 min at the default interval; SQLite's per-row cost is ~0.1 B/sample then
_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL,
  type TEXT NOT NULL,
  help TEXT NOT NULL,
  labels TEXT NOT NULL,
  UNIQUE (name, labels)
);
CREATE TABLE IF NOT EXISTS chunks (
  series_id INTEGER NOT NULL,
  start_ms INTEGER NOT NULL,
  end_ms INTEGER NOT NULL,
  header INTEGER NOT NULL,
  body BLOB NOT NULL,
  PRIMARY KEY (series_id, start_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS chunks_by_end ON chunks (end_ms);
"""


def default_directory(environ: dict[str, str] | None = None) -> Path:
    """``$XDG_DATA_HOME/esnode/tsdb``, else ``~/.local/share/esnode/tsdb``: writable without root."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_DATA_HOME") or str(Path(env.get("HOME") or Path.home()) / ".local" / "share")
    return Path(base) / "esnode" / "tsdb"


def database_file(directory: Path | None) -> Path:
    return (directory if directory is not None else default_directory()) / DATABASE_NAME


def connect(path: Path) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    connection.execute("PRAGMA busy_timeout = 5000")
    return connection


class HistoryFormatError(Exception):
    """The database was written in an encoding this agent does not read."""


def check_format(db: sqlite3.Connection, path: Path, fresh_ok: bool = False) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version == 0 and fresh_ok:
        db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
    elif version != FORMAT_VERSION:
        raise HistoryFormatError(f"{path}: history format {version}, this agent reads {FORMAT_VERSION}")


@dataclass(frozen=True, slots=True)
class Limits:
    retention_seconds: float
    max_disk_bytes: int


@dataclass(slots=True)
class _Head:
    series_id: int
    chunk: ChunkWriter
    dirty: bool = True


class HistoryStore:
    """Writer side of the database; one thread uses it (history/writer.py)."""

    def __init__(self, path: Path, limits: Limits, chunk_samples: int = CHUNK_SAMPLES) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._limits = limits
        self._chunk_samples = chunk_samples
        self._db = connect(path)
        self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")  # takes effect on a new file only
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.executescript(_SCHEMA)
        check_format(self._db, path, fresh_ok=True)
        self._heads: dict[tuple[str, tuple[str, ...]], _Head] = {}
        self._sealed: list[tuple[int, ChunkWriter]] = []
        self._scale_hints: dict[int, int] = {}

    def append(self, timestamp_seconds: float, samples: list[Sample]) -> None:
        timestamp_ms = math.floor(timestamp_seconds * 1000)
        for sample in samples:
            head = self._heads.get((sample.spec.name, sample.label_values))
            if head is None:
                head = self._open(sample)
            elif timestamp_ms <= head.chunk.end_ms:
                continue  # the wall clock stepped back: Prometheus would refuse it too
            elif head.chunk.count >= self._chunk_samples or not head.chunk.accepts(sample.value):
                self._seal(head)
                head.chunk = ChunkWriter.for_value(sample.value, self._scale_hints.get(head.series_id, 0))
            head.chunk.append(timestamp_ms, sample.value)
            head.dirty = True

    def flush(self, now_seconds: float) -> None:
        """One transaction: sealed and open chunks, then retention by age and by size."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            rows = [(series_id, chunk) for series_id, chunk in self._sealed]
            rows += [(head.series_id, head.chunk) for head in self._heads.values() if head.dirty]
            self._db.executemany(
                "INSERT OR REPLACE INTO chunks VALUES (?, ?, ?, ?, ?)",
                [(sid, c.start_ms, c.end_ms, c.header(), c.body()) for sid, c in rows if c.count],
            )
            removed = self._db.execute(
                "DELETE FROM chunks WHERE end_ms < ?",
                (math.floor((now_seconds - self._limits.retention_seconds) * 1000),),
            ).rowcount
            removed += self._enforce_size()
            if removed:
                self._forget_empty_series()
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._sealed.clear()
        # A series that did not report since the last flush is on disk: drop it from memory,
        # so memory holds only the series of the latest cycles.
        self._heads = {key: head for key, head in self._heads.items() if head.dirty}
        for head in self._heads.values():
            head.dirty = False
        if removed:
            self._db.execute("PRAGMA incremental_vacuum")

    @property
    def series_in_memory(self) -> int:
        return len(self._heads)

    def used_bytes(self) -> int:
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        free = self._db.execute("PRAGMA freelist_count").fetchone()[0]
        size: int = self._db.execute("PRAGMA page_size").fetchone()[0]
        return int((pages - free) * size)

    def close(self) -> None:
        self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def _open(self, sample: Sample) -> _Head:
        series_id = self._series_id(sample.spec, sample.label_values)
        chunk = ChunkWriter.for_value(sample.value, self._scale_hints.get(series_id, 0))
        head = _Head(series_id, chunk)
        self._heads[(sample.spec.name, sample.label_values)] = head
        return head

    def _seal(self, head: _Head) -> None:
        self._sealed.append((head.series_id, head.chunk))
        if head.chunk.kind == 0:
            self._scale_hints[head.series_id] = head.chunk.scale

    def _series_id(self, spec: MetricSpec, label_values: tuple[str, ...]) -> int:
        labels = json.dumps(dict(zip(spec.labels, label_values, strict=True)), separators=(",", ":"))
        self._db.execute(
            "INSERT OR IGNORE INTO series (name, type, help, labels) VALUES (?, ?, ?, ?)",
            (spec.name, str(spec.type), spec.help, labels),
        )
        row = self._db.execute("SELECT id FROM series WHERE name = ? AND labels = ?", (spec.name, labels))
        return int(row.fetchone()[0])

    def _enforce_size(self) -> int:
        """Deletes the oldest chunks until the live pages fit the budget."""
        removed = 0
        while (used := self.used_bytes()) > self._limits.max_disk_bytes:
            total = self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            if not total:
                break
            batch = max(1, math.ceil(total * (used - self._limits.max_disk_bytes) / used))
            removed += self._db.execute(
                "DELETE FROM chunks WHERE (series_id, start_ms) IN "
                "(SELECT series_id, start_ms FROM chunks ORDER BY end_ms LIMIT ?)",
                (batch,),
            ).rowcount
            self._db.execute("PRAGMA incremental_vacuum")
        return removed

    def _forget_empty_series(self) -> None:
        active = {head.series_id for head in self._heads.values()}
        empty = {
            row[0]
            for row in self._db.execute(
                "SELECT id FROM series WHERE NOT EXISTS (SELECT 1 FROM chunks WHERE series_id = series.id)"
            )
        }
        self._db.executemany("DELETE FROM series WHERE id = ?", [(i,) for i in empty - active])
