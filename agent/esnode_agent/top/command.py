"""The `top` (alias `cli`) command; textual is imported only here, as it is an optional extra."""

from __future__ import annotations

import argparse
import sys
from typing import TypeVar

EXIT_MISSING_EXTRA = 2

Parser = TypeVar("Parser", bound=argparse.ArgumentParser)


def add_top_command(commands: argparse._SubParsersAction[Parser]) -> None:
    for name in ("top", "cli"):
        parser = commands.add_parser(name, help="live terminal view of a running agent (needs esnode[tui])")
        parser.add_argument("--address", default="127.0.0.1:9100", help="HOST:PORT of the agent")


def run_top(args: argparse.Namespace) -> int:
    try:
        from esnode_agent.top.app import TopApp  # noqa: PLC0415
    except ImportError as exc:
        print(
            f"esnode-agent: the terminal view needs the tui extra (pip install 'esnode[tui]'): {exc}",
            file=sys.stderr,
        )
        return EXIT_MISSING_EXTRA
    TopApp(args.address).run()
    return 0
