"""A fleet's power summary from its agents' node reports (EsnodeNode objects). Pure functions.

A report is fresh while its age is within STALE_AFTER_HEARTBEATS of the heartbeat its agent
declares; only fresh reports count towards the totals and the envelope condition, and the age
is judged by the report's own lastReportTime (the node's clock, NTP-synced in any real fleet).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic.alias_generators import to_camel

from esnode_agent.report.model import STALE_AFTER_HEARTBEATS
from esnode_operator.api.models import MAX_NAMED_NODES, PowerSummary
from esnode_operator.conditions import condition, stamp_transition

ENVELOPE_CONDITION = "EnvelopeExceeded"


class NodeEntry(BaseModel):
    """What the summary needs of one EsnodeNode; fields the operator does not use are ignored."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, extra="ignore", frozen=True)

    node: str
    fleet: str
    node_power_watts: float | None = None
    exceeded: bool = False
    gpu_count: int = 0
    gpu_power_watts: float | None = None
    last_report_time: datetime
    heartbeat_seconds: float
    # Fleet power budget: the envelope the node holds, the one the operator wrote, GPUs capped.
    envelope_watts: float | None = None
    spec_envelope_watts: float | None = None
    capped_gpus: int = 0
    power_wanted_watts: float | None = None  # what the node's capper needs: the budget shares by it
    # The node's floor and ceiling under a budget: its GPUs' limit constraints, summed.
    gpu_power_limit_min_watts: float | None = None
    gpu_power_limit_max_watts: float | None = None

    def fresh(self, now_seconds: float) -> bool:
        age_seconds = now_seconds - self.last_report_time.timestamp()
        return age_seconds <= STALE_AFTER_HEARTBEATS * self.heartbeat_seconds


def node_entry(body: Mapping[str, Any]) -> NodeEntry | None:
    """None for an object its agent has not reported into yet (created, status not yet written)."""
    status = body.get("status") or {}
    spec = body.get("spec") or {}
    if not status.get("lastReportTime") or not spec.get("fleet"):
        return None
    try:
        return NodeEntry.model_validate(
            {
                **status,
                "node": body["metadata"]["name"],
                "fleet": spec["fleet"],
                "specEnvelopeWatts": spec.get("envelopeWatts"),
            }
        )
    except ValidationError:
        return None  # the apiserver checked it against the same schema: only a foreign writer gets here


def summarize(entries: Iterable[NodeEntry], now_seconds: float) -> PowerSummary:
    fresh: list[NodeEntry] = []
    stale: list[str] = []
    for entry in entries:
        if entry.fresh(now_seconds):
            fresh.append(entry)
        else:
            stale.append(entry.node)
    over = sorted(entry.node for entry in fresh if entry.exceeded)
    return PowerSummary(
        nodes_reporting=len(fresh),
        nodes_stale=len(stale),
        stale_nodes=sorted(stale)[:MAX_NAMED_NODES],
        nodes_over_envelope=len(over),
        over_envelope_nodes=over[:MAX_NAMED_NODES],
        total_power_watts=_total(entry.node_power_watts for entry in fresh),
        total_gpus=sum(entry.gpu_count for entry in fresh),
        total_gpu_power_watts=_total(entry.gpu_power_watts for entry in fresh),
    )


def _total(values: Iterable[float | None]) -> float | None:
    """Whole watts: finer would rewrite the fleet's status for noise. None when nothing measures it."""
    known = [value for value in values if value is not None]
    return float(round(sum(known))) if known else None


def envelope_condition(summary: PowerSummary) -> dict[str, Any]:
    """EnvelopeExceeded: True naming the nodes over; Unknown while no node reports; else False."""
    if summary.nodes_over_envelope:
        return condition(
            ENVELOPE_CONDITION,
            True,
            "NodesOverEnvelope",
            f"{summary.nodes_over_envelope} node(s) over their power envelope: "
            + _named(summary.over_envelope_nodes, summary.nodes_over_envelope),
        )
    if not summary.nodes_reporting:
        stale = f" ({summary.nodes_stale} stale)" if summary.nodes_stale else ""
        return condition(
            ENVELOPE_CONDITION,
            None,
            "NoReports",
            f"no agent of this fleet reported within {STALE_AFTER_HEARTBEATS} heartbeats{stale}",
        )
    return condition(
        ENVELOPE_CONDITION,
        False,
        "WithinEnvelope",
        f"none of the {summary.nodes_reporting} reporting nodes is over its power envelope",
    )


def _named(names: Sequence[str], count: int) -> str:
    return ", ".join(names) + (f" and {count - len(names)} more" if count > len(names) else "")


def power_status(
    summary: PowerSummary,
    previous_conditions: Iterable[Mapping[str, Any]],
    now: str,
    budget: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The status fields the power summary owns: ``power``, EnvelopeExceeded and, with a budget,
    its BudgetInsufficient condition."""
    conditions = [envelope_condition(summary), *([dict(budget)] if budget is not None else [])]
    previous = list(previous_conditions)
    stamped = [stamp_transition(condition, previous, now) for condition in conditions]
    return {"power": summary.model_dump(mode="json", exclude_none=True), "conditions": stamped}
