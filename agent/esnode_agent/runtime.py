"""Wires one agent process together: collectors -> loop -> publication -> HTTP server."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from types import FrameType

import uvicorn
from starlette.types import ASGIApp

from esnode_agent.capping.collector import PowerCappingCollector
from esnode_agent.capping.controller import PowerCapper
from esnode_agent.capping.wiring import build_capper
from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError
from esnode_agent.cycle.loop import CollectionLoop, SnapshotHandler
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.history.writer import HistoryWriter, build_history_writer
from esnode_agent.otlp.collector import OtlpPushCollector
from esnode_agent.otlp.push import OtlpPusher
from esnode_agent.otlp.wiring import build_pusher
from esnode_agent.report.fleet_envelope import follow_fleet_envelope
from esnode_agent.report.reporter import Reporter
from esnode_agent.report.wiring import api_client, build_reporter
from esnode_agent.serve.app import create_app
from esnode_agent.serve.connection_limits import bounded_h11_protocol
from esnode_agent.serve.kube_auth import kube_auth_guard
from esnode_agent.serve.publication import Latest
from esnode_agent.serve.web_config import WebConfigWatcher
from esnode_agent.serve.web_guard import WebGuard

log = logging.getLogger(__name__)

# The loop counts as stalled once it misses this many intervals.
STALL_INTERVALS = 3
# A request's line and headers larger than this are refused (h11 answers 431 and closes): a scraper
# sends well under 1 KiB, and an unbounded header once grew the agent by 100 MiB per request.
MAX_REQUEST_HEAD_BYTES = 64 * 1024


class _QuietServer(uvicorn.Server):
    """Sleeps until told to exit. uvicorn's own loop wakes ten times a second to refresh its Date
    header and poll for shutdown: 12.7 ms of CPU per 5 s interval on an idle agent, more than a
    collection cycle. The Date header comes from serve/app.py instead."""

    _exiting: asyncio.Event | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        # Run in order, in a worker thread, after connections close and before uvicorn re-raises
        # the signal that stopped it (which ends the process before any finally: of ours): what
        # must be undone or reach disk on the way out (GPU limits restored, history flushed).
        self.on_shutdown: list[Callable[[], None]] = []

    async def main_loop(self) -> None:
        self._loop, self._exiting = asyncio.get_running_loop(), asyncio.Event()
        if not self.should_exit:
            await self._exiting.wait()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await super().shutdown(sockets)
        for step in self.on_shutdown:
            await asyncio.to_thread(step)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)  # runs in the signal handler: only the thread-safe call below
        if self._loop is not None and self._exiting is not None:
            self._loop.call_soon_threadsafe(self._exiting.set)


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


def _snapshot_handler(
    latest: Latest,
    reporter: Reporter | None,
    history: HistoryWriter | None,
    pusher: OtlpPusher | None,
    capper: PowerCapper | None,
) -> SnapshotHandler:
    """What each finished cycle is handed to; all but the capper only enqueue it."""

    async def on_snapshot(snapshot: Snapshot) -> None:
        await latest.publish(snapshot)
        if reporter is not None:
            reporter.offer(snapshot)
        if history is not None:
            history.offer(snapshot)
        if pusher is not None:
            pusher.offer(snapshot)
        if capper is not None:
            await asyncio.to_thread(capper.step, snapshot)

    return on_snapshot


async def serve(config: AgentConfig, sock: socket.socket, web: WebConfigWatcher | None = None) -> None:
    latest = Latest()
    history = build_history_writer(config)  # a bad path fails before any collector starts
    collectors = build_collectors(config)
    reporter = build_reporter(config, follow_fleet_envelope(collectors))  # fleet budget: envelope from spec
    # Power capping: opt-in; acts after each cycle, in a worker thread (NVML calls block).
    capper = build_capper(config, collectors, reporting=reporter is not None)
    if capper is not None:
        collectors.append(PowerCappingCollector(capper))
    pusher = build_pusher(config)  # OTLP push: opt-in, on its own thread
    if pusher is not None:
        collectors.append(OtlpPushCollector(pusher))

    loop = CollectionLoop(
        collectors,
        interval_seconds=config.scrape_interval_seconds,
        timeout_seconds=config.effective_collector_timeout_seconds,
        on_snapshot=_snapshot_handler(latest, reporter, history, pusher, capper),
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

    app: ASGIApp = create_app(
        latest,
        loop_alive,
        telemetry_path=config.telemetry_path,
        max_event_clients=config.max_event_clients,
        history=(history.path, config.local_tsdb_retention_hours * 3600) if history is not None else None,
    )
    if config.metrics_auth == "kubernetes":
        app = kube_auth_guard(app, api_client(config), config.metrics_auth_cache_seconds)
    if web is not None:
        app = WebGuard(app, web)
    server_config = uvicorn.Config(
        app,
        # h11 (not httptools, when installed): the head-size limit is h11's. No limit_concurrency:
        # it counts idle connections and then answers probes 503; the connection cap replaces it.
        http=bounded_h11_protocol(config.http_header_timeout_seconds, config.http_max_connections),
        h11_max_incomplete_event_size=MAX_REQUEST_HEAD_BYTES,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_keep_alive=30,
        date_header=False,  # serve/app.py adds it: uvicorn's would need a 10 Hz timer
    )
    if web is not None and web.ssl_context is not None:
        # uvicorn builds a context only from file names; ours is reloaded in place when the
        # certificate changes (web_config.py), so it is handed over after uvicorn's own load.
        server_config.load()
        server_config.ssl = web.ssl_context
    server = _QuietServer(server_config)
    if capper is not None:
        server.on_shutdown.append(capper.close)  # put back every limit esnode set
    if history is not None:
        history.start()
        server.on_shutdown.append(history.stop)  # the last flush
    if pusher is not None:
        pusher.start()
        server.on_shutdown.append(pusher.stop)
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
        if capper is not None:
            capper.close()  # when serve() ends without a signal; a second close finds nothing to do
