"""`esnode-agent history export`: the same export as /tsdb/export, from the database file."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TypeVar

from esnode_agent.history.export import export
from esnode_agent.history.reader import open_reader
from esnode_agent.history.store import database_file
from esnode_agent.serve.history_route import query_of

DEFAULT_SPAN_SECONDS = 48 * 3600

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_history_commands(commands: argparse._SubParsersAction[Parser]) -> None:
    history = commands.add_parser("history", help="read the local history (enable_local_tsdb)")
    actions = history.add_subparsers(dest="history_command", required=True)
    exporter = actions.add_parser("export", help="print history as exposition text with timestamps")
    exporter.add_argument("--from", dest="from_", help="start: unix seconds or RFC 3339; default 48 h ago")
    exporter.add_argument("--to", help="end: unix seconds or RFC 3339; default now")
    exporter.add_argument("--metrics", help="comma-separated name globs; default esnode_*")
    exporter.add_argument("--db", help="the database file; default: the one under local_tsdb_path's default")
    exporter.add_argument(
        "--openmetrics",
        action="store_true",
        help="OpenMetrics (seconds, # EOF) as promtool tsdb create-blocks-from openmetrics reads",
    )


def run_history_export(args: argparse.Namespace) -> None:
    """Raises ValueError for bad times and HistoryUnavailableError for a missing database."""
    params = {key: value for key, value in (("from", args.from_), ("to", args.to)) if value is not None}
    if args.metrics is not None:
        params["metrics"] = args.metrics
    query = query_of(params, time.time(), DEFAULT_SPAN_SECONDS)
    db = open_reader(database_file(None) if args.db is None else _as_path(args.db))
    try:
        for piece in export(db, query, args.openmetrics):
            sys.stdout.buffer.write(piece)
        sys.stdout.buffer.flush()
    finally:
        db.close()


def _as_path(text: str) -> Path:
    return Path(text).expanduser()
