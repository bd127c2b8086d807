"""The collection loop: runs collectors stage by stage, isolates their faults, builds a Snapshot."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from esnode_agent.collector import Collector, NoDataError
from esnode_agent.samples import Sample, SampleIndex, SampleSink
from esnode_agent.self_metrics import add_self_metrics
from esnode_agent.snapshot import CollectorHealth, Snapshot

log = logging.getLogger(__name__)

SnapshotHandler = Callable[[Snapshot], Awaitable[None]]


class CollectionLoop:
    """Owns time: every ``interval_seconds`` it runs one cycle and hands the Snapshot on.

    Collectors run in worker threads (psutil, sysfs and NVML calls block). One that outlives
    ``timeout_seconds`` is reported failed and is not started again until its thread returns,
    so a hung device costs one thread, never the cycle.
    """

    def __init__(
        self,
        collectors: Sequence[Collector],
        interval_seconds: float,
        timeout_seconds: float,
        on_snapshot: SnapshotHandler,
    ) -> None:
        self._stages = [
            [c for c in collectors if c.stage == stage] for stage in sorted({c.stage for c in collectors})
        ]
        self._interval_seconds = interval_seconds
        self._timeout_seconds = timeout_seconds
        self._on_snapshot = on_snapshot
        self._executor = ThreadPoolExecutor(
            max_workers=max(4, len(collectors)), thread_name_prefix="collector"
        )
        self._running: dict[str, Future[list[Sample]]] = {}
        self._last_error: dict[str, str | None] = {}
        self._sequence = itertools.count(1)
        self.last_cycle_started_monotonic: float | None = None

    async def run_forever(self) -> None:
        try:
            while True:
                started = time.monotonic()
                await self.run_once()
                elapsed = time.monotonic() - started
                await asyncio.sleep(max(0.0, self._interval_seconds - elapsed))
        finally:
            self._executor.shutdown(wait=False, cancel_futures=True)

    async def run_once(self) -> Snapshot:
        started = time.monotonic()
        self.last_cycle_started_monotonic = started
        collected = SampleIndex()
        health: list[CollectorHealth] = []
        for stage in self._stages:
            outcomes = await asyncio.gather(*(self._run(c, started, collected) for c in stage))
            samples = list(collected)
            for outcome, produced in outcomes:
                health.append(outcome)
                samples.extend(produced)
            collected = SampleIndex(samples)
        finished_wall = time.time()
        sink = SampleSink(started)
        add_self_metrics(sink, tuple(health), finished_wall)
        snapshot = Snapshot(
            sequence=next(self._sequence),
            timestamp_seconds=finished_wall,
            cycle_seconds=time.monotonic() - started,
            samples=SampleIndex([*collected, *sink.samples]),
            health=tuple(health),
        )
        await self._on_snapshot(snapshot)
        return snapshot

    async def _run(
        self, collector: Collector, now_seconds: float, upstream: SampleIndex
    ) -> tuple[CollectorHealth, list[Sample]]:
        started = time.monotonic()
        previous = self._running.get(collector.name)
        if previous is not None and not previous.done():
            return self._outcome(
                collector.name, started, "still running from an earlier cycle", quiet=False
            ), []
        future = self._executor.submit(_collect, collector, SampleSink(now_seconds, upstream))
        self._running[collector.name] = future
        try:
            produced = await asyncio.wait_for(asyncio.wrap_future(future), self._timeout_seconds)
        except TimeoutError:
            return self._outcome(collector.name, started, f"timed out after {self._timeout_seconds:g}s"), []
        except NoDataError as exc:
            return self._outcome(collector.name, started, f"no data: {exc}", quiet=True), []
        except Exception as exc:  # a broken collector must never fail the cycle
            return self._outcome(collector.name, started, f"{type(exc).__name__}: {exc}"), []
        return self._outcome(collector.name, started, None), produced

    def _outcome(self, name: str, started: float, error: str | None, quiet: bool = False) -> CollectorHealth:
        """Health for one run; logs only when a collector's state changes, never every cycle."""
        if error != self._last_error.get(name):
            if error is None and name in self._last_error:
                log.info("collector recovered", extra={"collector": name})
            elif error is not None:
                log.log(
                    logging.INFO if quiet else logging.WARNING,
                    "collector failed",
                    extra={"collector": name, "error": error},
                )
        self._last_error[name] = error
        return CollectorHealth(name, error is None, time.monotonic() - started, error)


def _collect(collector: Collector, sink: SampleSink) -> list[Sample]:
    collector.collect(sink)
    return sink.samples
