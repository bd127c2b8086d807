"""The one history writer: a thread fed by the collection loop through a bounded queue.

The loop only enqueues a reference to the finished Snapshot (immutable), so history never
adds disk time to a cycle. The thread encodes each snapshot as it arrives and writes to SQLite
every ``flush_seconds`` and once more on stop. A full queue (a disk stalled for many cycles)
drops the newest snapshot and logs it once, rather than growing without bound.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.history.store import HistoryFormatError, HistoryStore, Limits, database_file

log = logging.getLogger(__name__)

QUEUE_SNAPSHOTS = 64
_STOP = object()


class HistoryWriter:
    def __init__(
        self, store: HistoryStore, flush_seconds: float, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._flush_seconds = flush_seconds
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(QUEUE_SNAPSHOTS)
        self._thread = threading.Thread(target=self._run, name="history-writer", daemon=True)
        self._dropping = False

    @property
    def path(self) -> Path:
        return self._store.path

    def start(self) -> None:
        self._thread.start()

    def offer(self, snapshot: Snapshot) -> None:
        try:
            self._queue.put_nowait(snapshot)
            self._dropping = False
        except queue.Full:
            if not self._dropping:
                log.warning("history writer is behind: dropping snapshots", extra={"path": str(self.path)})
            self._dropping = True

    def stop(self) -> None:
        """Writes what was queued, flushes and closes; returns once the database is closed."""
        self._queue.put(_STOP)
        self._thread.join()

    def _run(self) -> None:
        next_flush = time.monotonic() + self._flush_seconds
        try:
            while True:
                try:
                    item = self._queue.get(timeout=max(0.0, next_flush - time.monotonic()))
                except queue.Empty:
                    item = None
                if item is _STOP:
                    break
                if isinstance(item, Snapshot):
                    self._store.append(item.timestamp_seconds, list(item.samples))
                if time.monotonic() >= next_flush:
                    self._flush()
                    next_flush = time.monotonic() + self._flush_seconds
        finally:
            self._flush()
            self._store.close()

    def _flush(self) -> None:
        try:
            self._store.flush(self._clock())
        except Exception as exc:  # a full disk must not stop the agent serving /metrics
            log.warning("history flush failed", extra={"path": str(self.path), "error": str(exc)})


def build_history_writer(config: AgentConfig) -> HistoryWriter | None:
    if not config.enable_local_tsdb:
        return None
    limits = Limits(
        retention_seconds=config.local_tsdb_retention_hours * 3600,
        max_disk_bytes=int(config.local_tsdb_max_disk_mb * 1024 * 1024),
    )
    path = database_file(config.local_tsdb_path)
    try:
        store = HistoryStore(path, limits)
    except (OSError, sqlite3.Error, HistoryFormatError) as exc:
        raise ConfigError(f"local_tsdb_path={path.parent}: {exc}") from None
    return HistoryWriter(store, config.local_tsdb_flush_seconds)
