"""At most a few log records of one kind per interval, so a client cannot flood the log.

Every malformed request costs a line (uvicorn's "Invalid HTTP request received.", a connection
closed for being slow): a thousand bad requests were a thousand lines. Records are grouped by
logger, level and message template (not the formatted text: fields differ per client); past
`burst` in `interval_seconds` a group is suppressed, with one line saying so, and the next record
of the group after the interval is preceded by one line counting what was suppressed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

_Key = tuple[str, int, str]
# Groups remembered at once; beyond it, records of new groups share one group.
MAX_GROUPS = 1024
_OVERFLOW: _Key = ("", 0, "")
_SUMMARY_ATTR = "_esnode_rate_limit_summary"  # set on our own lines: never limited themselves


@dataclass
class _Group:
    window_start: float
    passed: int = 0
    suppressed: int = 0


class RateLimitFilter(logging.Filter):
    """A handler filter; `emit` is that handler's `handle`, which the summary lines go through."""

    def __init__(
        self,
        emit: Callable[[logging.LogRecord], object],
        burst: int = 5,
        interval_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._emit, self._burst, self._interval, self._clock = emit, burst, interval_seconds, clock
        self._groups: dict[_Key, _Group] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, _SUMMARY_ATTR, False):
            return True
        with self._lock:
            passes, summary = self._count(record)
        if summary is not None:
            self._emit(summary)
        return passes

    def _count(self, record: logging.LogRecord) -> tuple[bool, logging.LogRecord | None]:
        now = self._clock()
        group = self._group(record, now)
        summary = None
        if now - group.window_start >= self._interval:
            if group.suppressed:
                summary = _summary(
                    record, f"suppressed {group.suppressed} similar", group.suppressed, self._interval
                )
            group.window_start, group.passed, group.suppressed = now, 0, 0
        if group.passed < self._burst:
            group.passed += 1
            return True, summary
        group.suppressed += 1
        if group.suppressed == 1:
            return False, _summary(record, "suppressing similar records", None, self._interval)
        return False, summary

    def _group(self, record: logging.LogRecord, now: float) -> _Group:
        key: _Key = (record.name, record.levelno, str(record.msg))
        if key not in self._groups and len(self._groups) >= MAX_GROUPS:
            self._forget_quiet_groups(now)
            if len(self._groups) >= MAX_GROUPS:
                key = _OVERFLOW
        return self._groups.setdefault(key, _Group(window_start=now))

    def _forget_quiet_groups(self, now: float) -> None:
        quiet = [
            k for k, g in self._groups.items() if now - g.window_start >= self._interval and not g.suppressed
        ]
        for key in quiet:
            del self._groups[key]


def _summary(
    record: logging.LogRecord, text: str, count: int | None, interval_seconds: float
) -> logging.LogRecord:
    fields: dict[str, object] = {"similar_to": str(record.msg), "interval_seconds": interval_seconds}
    if count is not None:
        fields["suppressed"] = count
    summary = logging.makeLogRecord(
        {"name": record.name, "levelno": record.levelno, "levelname": record.levelname, "msg": text, **fields}
    )
    setattr(summary, _SUMMARY_ATTR, True)
    return summary
