"""Reports the node to the cluster from its own task: never blocks collection, backs off on errors."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.report.model import NodeReport, build_report, condition_message
from esnode_agent.report.policy import ReportPolicy

if TYPE_CHECKING:
    from esnode_agent.report.kube_writer import KubeStatusWriter

log = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_CAP_SECONDS = 60.0


def backoff_seconds(failures: int, rng: random.Random) -> float:
    """Exponential with full jitter, so a restarted apiserver is not hit by every node at once."""
    return rng.uniform(0, min(BACKOFF_CAP_SECONDS, BACKOFF_BASE_SECONDS * 2 ** (failures - 1)))


@dataclass(frozen=True, slots=True)
class ReportTarget:
    node_name: str
    fleet: str
    node_condition: bool
    namespace: str = ""  # the fleet's, named in the condition's message


class Reporter:
    def __init__(
        self,
        writer: KubeStatusWriter,
        policy: ReportPolicy,
        target: ReportTarget,
        on_envelope: Callable[[float | None], None] | None = None,
    ) -> None:
        self._writer = writer
        self._on_envelope = on_envelope  # gets the fleet's envelope for this node after each write
        self._policy = policy
        self._target = target
        self._pending: Snapshot | None = None
        self._wake = asyncio.Event()
        self._last: NodeReport | None = None
        self._last_written_seconds: float | None = None
        self._condition_exceeded: bool | None = None
        self._condition_message = ""
        self._condition_since = datetime.now(UTC)
        self._failures = 0
        self._retry_at_seconds = 0.0
        self._rng = random.Random()

    def offer(self, snapshot: Snapshot) -> None:
        """Called by the collection loop; keeps only the newest snapshot."""
        self._pending = snapshot
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._pending is not None:
                await self._consider(self._pending)

    async def _consider(self, snapshot: Snapshot) -> None:
        now = time.monotonic()
        if now < self._retry_at_seconds:
            return
        report = build_report(
            snapshot, self._target.node_name, self._target.fleet, self._policy.heartbeat_seconds
        )
        reason = self._policy.reason_to_write(self._last, self._last_written_seconds, report, now)
        if reason is None:
            return
        try:
            envelope_watts = await asyncio.to_thread(self._writer.write_report, report)
        except Exception as exc:  # any API or network fault: retry later, keep collecting
            self._back_off(now, exc)
            return
        if self._failures:
            log.info("node report recovered", extra={"failures": self._failures})
        self._failures = 0
        self._last, self._last_written_seconds = report, now
        if self._on_envelope is not None:
            self._on_envelope(envelope_watts)
        log.debug("node report written", extra={"reason": reason})
        message = condition_message(report, self._target.namespace)
        if self._target.node_condition and (
            report.exceeded != self._condition_exceeded or message != self._condition_message
        ):
            await self._write_condition(report, message)

    def _back_off(self, now: float, exc: Exception) -> None:
        self._failures += 1
        delay = backoff_seconds(self._failures, self._rng)
        self._retry_at_seconds = now + delay
        log.warning(
            "node report failed",
            extra={
                "error": str(exc).splitlines()[0],
                "retry_seconds": round(delay, 1),
                "failures": self._failures,
            },
        )

    async def _write_condition(self, report: NodeReport, message: str) -> None:
        """The Node condition at start and whenever its message changes (power, envelope, state), with
        each written report; lastTransitionTime moves only on a flip. A failure is retried with the next."""
        flipped = self._condition_exceeded is not None and report.exceeded != self._condition_exceeded
        since = datetime.now(UTC) if flipped else self._condition_since
        try:
            await asyncio.to_thread(self._writer.write_node_condition, report, since)
        except Exception as exc:  # e.g. the fleet's nodeCondition is off: no right to patch nodes/status
            log.warning("node condition not set", extra={"error": str(exc).splitlines()[0]})
            return
        self._condition_exceeded, self._condition_since = report.exceeded, since
        self._condition_message = message
