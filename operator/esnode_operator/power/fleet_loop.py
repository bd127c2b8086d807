"""Keeps one fleet's power summary current: recomputed every second, applied only when it changed.

Why a clock and not only the watch: a node going quiet sends no event, yet it must turn stale
after 3 heartbeats. One loop per fleet (a kopf daemon) reads the in-memory index of the fleet's
EsnodeNode reports and writes at most once per period, however many nodes report in between; in
steady state nothing is written unless the summary (whole watts, counts, names) moved.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from esnode_operator.conditions import utc_now
from esnode_operator.kube import Kube
from esnode_operator.metrics import OperatorMetrics
from esnode_operator.names import POWER_FIELD_MANAGER
from esnode_operator.power.summary import NodeEntry, power_status, summarize
from esnode_operator.reconcile.fleet_status import status_differs

log = logging.getLogger(__name__)

PERIOD_SECONDS = 1.0


class PowerStatus:
    """What this fleet's power status says; decides whether a new summary is worth a write."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self._status = status  # as last read or written; only our fields are compared

    def update(
        self, entries: Iterable[NodeEntry], now_seconds: float, now_text: str
    ) -> dict[str, Any] | None:
        """The status fragment to apply, or None when the fleet's status already says it."""
        fragment = power_status(
            summarize(entries, now_seconds), self._status.get("conditions") or [], now_text
        )
        return fragment if status_differs(self._status, fragment) else None

    def written(self, fragment: Mapping[str, Any]) -> None:
        self._status = fragment


async def keep_power_status(
    kube: Kube,
    metrics: OperatorMetrics,
    fleet: Mapping[str, Any],
    *,
    entries: Callable[[], Iterable[NodeEntry]],
    stopped: Callable[[], bool],
    pause: Callable[[float], Any],
) -> None:
    """Loop until ``stopped()``: summarize ``entries()``, apply on change, ``await pause(PERIOD)``."""
    metadata = fleet["metadata"]
    ref = f"{metadata['namespace']}/{metadata['name']}"
    status = PowerStatus(fleet.get("status") or {})
    while not stopped():
        fragment = status.update(entries(), time.time(), utc_now())
        if fragment is not None:
            try:
                await asyncio.to_thread(kube.apply_status, fleet, fragment, POWER_FIELD_MANAGER)
            except Exception as exc:  # API or network fault: the next period tries again
                log.warning("fleet power status not written", extra={"fleet": ref, "error": str(exc)})
            else:
                status.written(fragment)
                metrics.power_status_patches.inc()
        await pause(PERIOD_SECONDS)
