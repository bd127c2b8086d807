"""The `esnode-agent` command: run (default), config, status, metrics."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import types
from collections.abc import Sequence
from typing import Any, NoReturn, Union, get_args, get_origin

from esnode_agent import __version__
from esnode_agent.client import AgentUnreachableError, fetch_metrics, fetch_status
from esnode_agent.config import node_exporter_flags
from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError, LoadedConfig, flag_name, load_config
from esnode_agent.history.cli import add_history_commands, run_history_export
from esnode_agent.history.reader import HistoryUnavailableError
from esnode_agent.logging_setup import configure_logging
from esnode_agent.runtime import bind_listener, serve
from esnode_agent.serve.history_route import BadTimeError
from esnode_agent.serve.web_config import WebConfigWatcher
from esnode_agent.top.command import add_top_command, run_top

log = logging.getLogger(__name__)

PROG = "esnode-agent"
EXIT_BAD_CONFIG = 2
EXIT_UNREACHABLE = 1
COMMANDS = ("run", "config", "status", "metrics", "history", "top", "cli")


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        """One readable line, like every other config fault; usage is one --help away."""
        self.exit(EXIT_BAD_CONFIG, f"{PROG}: {message} (see {PROG} --help)\n")


def _is_bool(annotation: Any) -> bool:
    if get_origin(annotation) in (Union, types.UnionType):
        return bool in get_args(annotation)
    return annotation is bool


def _add_config_flags(parser: argparse.ArgumentParser) -> None:
    """One flag per config key; values stay strings so the model reports bad ones by key."""
    for name, field in AgentConfig.model_fields.items():
        if _is_bool(field.annotation):
            parser.add_argument(
                flag_name(name),
                dest=name,
                default=None,
                help=field.description,
                action=argparse.BooleanOptionalAction,
            )
        else:
            parser.add_argument(
                flag_name(name), dest=name, default=None, help=field.description, metavar="VALUE"
            )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="esnode node agent: host, GPU and power metrics.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    _add_config_flags(commands.add_parser("run", help="collect and serve metrics (the default)"))
    _add_config_flags(
        commands.add_parser("config", help="print the effective config and each value's source")
    )
    for name, help_text in (("status", "print a running agent's /status"), ("metrics", "print its /metrics")):
        client = commands.add_parser(name, help=help_text)
        client.add_argument("--address", default="127.0.0.1:9100", help="HOST:PORT of the agent")
    # Standalone use: local history and the terminal view.
    add_history_commands(commands)
    add_top_command(commands)
    return parser


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    return {name: getattr(args, name) for name in AgentConfig.model_fields}


def _print_config(loaded: LoadedConfig) -> None:
    width = max(len(name) for name in AgentConfig.model_fields)
    for name, value in loaded.config.model_dump(mode="json").items():
        print(f"{name:<{width}} = {value!r:<24} # {loaded.sources[name]}")


def _run(loaded: LoadedConfig, ignored_flags: Sequence[str]) -> int:
    config = loaded.config
    configure_logging(config.log_level, config.log_format)
    if ignored_flags:
        log.warning(
            "node_exporter flags with no esnode counterpart ignored", extra={"flags": " ".join(ignored_flags)}
        )
    web = WebConfigWatcher(config.web_config_file) if config.web_config_file else None
    sock = bind_listener(config)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, sock, web))
    return 0


def _standalone(args: argparse.Namespace) -> int:
    if args.command == "history":
        run_history_export(args)
        return 0
    return run_top(args)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if not args_list or args_list[0] not in (*COMMANDS, "-h", "--help", "--version"):
        args_list.insert(0, "run")
    try:
        translation = node_exporter_flags.translate(args_list)
        args = _parser().parse_args(translation.argv)
        if args.command in ("history", "top", "cli"):
            return _standalone(args)
        if args.command in ("status", "metrics"):
            fetch = fetch_status if args.command == "status" else fetch_metrics
            print(fetch(args.address), end="" if args.command == "metrics" else "\n")
            return 0
        loaded = load_config(_flags(args))
        if args.command == "config":
            _print_config(loaded)
            return 0
        return _run(loaded, translation.ignored)
    except (ConfigError, HistoryUnavailableError, BadTimeError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    except AgentUnreachableError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE


if __name__ == "__main__":
    sys.exit(main())
