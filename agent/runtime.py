"""Wires one agent process together: collectors -> loop -> publication -> HTTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
import time

import uvicorn
from esnode_agent.collection import CollectionLoop
from esnode_agent.collectors import build_collectors
from esnode_agent.config import AgentConfig
from esnode_agent.config_sources import ConfigError
from esnode_agent.publication import Latest
from esnode_agent.reporting_setup import build_reporter
from esnode_agent.server import create_app
from esnode_agent.snapshot import Snapshot

log = logging.getLogger(__name__)

# The loop counts as stalled once it misses this many intervals.
STALL_INTERVALS = 3


def bind_listener(config: AgentConfig) -> socket.socket:
    """Bind before anything starts so a taken port is a config error, not a crash later."""
    host, port = config.listen_host_port
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit this on Linux; without it keep-alive scrapes wait ~40 ms
    # for a delayed ACK between the header and body writes.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"listen_address={config.listen_address}: {exc.strerror}") from None
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


async def serve(config: AgentConfig, sock: socket.socket) -> None:
    latest = Latest()
    reporter = build_reporter(config)

    async def on_snapshot(snapshot: Snapshot) -> None:
        await latest.publish(snapshot)
        if reporter is not None:
            reporter.offer(snapshot)

    loop = CollectionLoop(
        build_collectors(config),
        interval_seconds=config.scrape_interval_seconds,
        timeout_seconds=config.effective_collector_timeout_seconds,
        on_snapshot=on_snapshot,
    )
    loop_task = asyncio.create_task(loop.run_forever(), name="collection-loop")
    tasks = [loop_task]
    if reporter is not None:
        tasks.append(asyncio.create_task(reporter.run_forever(), name="node-reporter"))

    def loop_alive() -> bool:
        started = loop.last_cycle_started_monotonic
        on_time = started is not None and time.monotonic() - started < STALL_INTERVALS * max(
            config.scrape_interval_seconds, 1.0
        )
        return not loop_task.done() and on_time

    server = uvicorn.Server(
        uvicorn.Config(
            create_app(latest, loop_alive),
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_keep_alive=30,
        )
    )
    host, _ = config.listen_host_port
    log.info(
        "serving",
        extra={
            "address": f"{host}:{sock.getsockname()[1]}",
            "interval_seconds": config.scrape_interval_seconds,
        },
    )
    try:
        await server.serve(sockets=[sock])
    finally:
        for task in tasks:
            task.cancel()
