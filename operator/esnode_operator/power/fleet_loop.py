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

from pydantic import ValidationError

from esnode_operator.api.models import PowerBudget
from esnode_operator.conditions import utc_now
from esnode_operator.kube import Kube, resource_path
from esnode_operator.metrics import OperatorMetrics
from esnode_operator.names import API_VERSION, NODE_KIND, POWER_FIELD_MANAGER
from esnode_operator.power.fleet_budget import (
    BudgetStep,
    FleetBudget,
    budget_condition,
    budget_summary,
    envelope_patch,
)
from esnode_operator.power.summary import NodeEntry, power_status, summarize
from esnode_operator.reconcile.fleet_status import status_differs

log = logging.getLogger(__name__)

PERIOD_SECONDS = 1.0


class PowerStatus:
    """What this fleet's power status says; decides whether a new summary is worth a write."""

    def __init__(self, status: Mapping[str, Any]) -> None:
        self._status = status  # as last read or written; only our fields are compared

    def update(
        self,
        entries: Iterable[NodeEntry],
        now_seconds: float,
        now_text: str,
        budget: tuple[PowerBudget, BudgetStep] | None = None,
    ) -> dict[str, Any] | None:
        """The status fragment to apply, or None when the fleet's status already says it."""
        nodes = list(entries)
        summary = summarize(nodes, now_seconds)
        extra = None
        if budget is not None:
            summary = budget_summary(summary, *budget, nodes, now_seconds)
            extra = budget_condition(*budget, len(nodes))
        fragment = power_status(summary, self._status.get("conditions") or [], now_text, extra)
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
    spec: Callable[[], Mapping[str, Any]] | None = None,
) -> None:
    """Loop until ``stopped()``: share the budget of ``spec()`` (the fleet's live spec; default: the
    spec ``fleet`` had), summarize ``entries()``, apply on change, ``await pause(PERIOD)``."""
    metadata = fleet["metadata"]
    ref = f"{metadata['namespace']}/{metadata['name']}"
    status = PowerStatus(fleet.get("status") or {})
    shares = FleetBudget()
    while not stopped():
        nodes, now_seconds = list(entries()), time.time()
        budget = fleet_budget((spec or (lambda: fleet.get("spec") or {}))())
        step = shares.step(budget, nodes, now_seconds)
        await _write_envelopes(
            kube, metadata["namespace"], step, nodes=nodes, shares=shares, now_seconds=now_seconds
        )
        fragment = status.update(nodes, now_seconds, utc_now(), (budget, step))
        if fragment is not None:
            try:
                await asyncio.to_thread(kube.apply_status, fleet, fragment, POWER_FIELD_MANAGER)
            except Exception as exc:  # API or network fault: the next period tries again
                log.warning("fleet power status not written", extra={"fleet": ref, "error": str(exc)})
            else:
                status.written(fragment)
                metrics.power_status_patches.inc()
        await pause(PERIOD_SECONDS)


def fleet_budget(spec: Mapping[str, Any]) -> PowerBudget:
    """The fleet's budget; off for a spec the apiserver should have refused (a foreign writer)."""
    try:
        return PowerBudget.model_validate(spec.get("powerBudget") or {})
    except ValidationError:
        return PowerBudget()


async def _write_envelopes(
    kube: Kube,
    namespace: str,
    step: BudgetStep,
    *,
    nodes: Iterable[NodeEntry],
    shares: FleetBudget,
    now_seconds: float,
) -> None:
    """Write ``step``'s envelopes in order; the first failure stops the rest (a raise never goes
    out after a cut that did not)."""
    previous = {entry.node: entry.spec_envelope_watts for entry in nodes}
    for name, watts in step.writes:
        try:
            await asyncio.to_thread(
                kube.request,
                "PATCH",
                resource_path(API_VERSION, NODE_KIND, namespace, name),
                query={"fieldManager": POWER_FIELD_MANAGER},
                body=envelope_patch(watts),
                content_type="application/merge-patch+json",
            )
        except Exception as exc:  # API or network fault: the next period shares again
            log.warning("node envelope not written", extra={"node": name, "error": str(exc)})
            return
        shares.written(name, watts, previous.get(name), now_seconds)
        log.info("node envelope written", extra={"node": name, "envelope_watts": watts})
