"""Structured logs: `text` (logfmt, as node_exporter writes it) or `json` (one object a line)."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

from esnode_agent.log_rate_limit import RateLimitFilter

# Attributes every LogRecord has; anything else came in through `extra=` and is a field.
# uvicorn adds `color_message`, a terminal-coloured copy of the message.
_STANDARD_ATTRS = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName", "color_message"}


def _fields(record: logging.LogRecord) -> dict[str, Any]:
    # A leading underscore marks bookkeeping of our own (log_rate_limit.py), not a field.
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS and not k.startswith("_")}


def _logfmt_value(value: Any) -> str:
    text = str(value)
    if text and not any(c in text for c in ' ="\\') and text.isprintable():
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'


class _StructuredFormatter(logging.Formatter):
    """One record as ordered pairs: ts, level, logger, msg, the `extra=` fields, any exception."""

    def pairs(self, record: logging.LogRecord) -> dict[str, Any]:
        pairs: dict[str, Any] = {
            "ts": self.formatTime(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
            **_fields(record),
        }
        if record.exc_info:
            pairs["exception"] = self.formatException(record.exc_info)
        return pairs


class TextFormatter(_StructuredFormatter):
    """logfmt: ``ts=... level=info logger=... msg="..." key=value``, one record a line."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in self.pairs(record).items())


class JsonFormatter(_StructuredFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(self.pairs(record), default=str)


def configure_logging(level: str, fmt: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RateLimitFilter(handler.handle))  # one bad request a line would flood the log
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # httpx logs every request at info: a line per model-server endpoint per cycle.
    logging.getLogger("httpx").setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
