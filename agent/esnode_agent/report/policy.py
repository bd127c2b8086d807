"""When a node report is worth writing: on a change that matters, or as a heartbeat.

Steady state is one write per heartbeat; edges (envelope flips, GPUs appearing or vanishing,
degradation changes, power moving by more than a step) are written at once, but never more
often than ``min_interval_seconds`` so a flapping value cannot flood the apiserver.
"""

from __future__ import annotations

from dataclasses import dataclass

from esnode_agent.report.model import NodeReport


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    heartbeat_seconds: float
    power_step_watts: float
    min_interval_seconds: float

    def reason_to_write(
        self,
        last: NodeReport | None,
        last_written_seconds: float | None,
        current: NodeReport,
        now_seconds: float,
    ) -> str | None:
        """Why ``current`` should be written now, or None to skip it."""
        if last is None or last_written_seconds is None:
            return "first report"
        since = now_seconds - last_written_seconds
        if since >= self.heartbeat_seconds:
            return "heartbeat"
        if since < self.min_interval_seconds:
            return None
        return _edge(last, current, self.power_step_watts)


def _edge(last: NodeReport, current: NodeReport, power_step_watts: float) -> str | None:
    changes = (
        ("envelope exceeded" if current.exceeded else "envelope cleared", current.exceeded != last.exceeded),
        ("envelope changed", current.envelope_watts != last.envelope_watts),
        ("gpu count changed", current.gpu_count != last.gpu_count),
        ("degradation changed", current.degradation_flags != last.degradation_flags),
        ("power moved", _power_moved(last.node_power_watts, current.node_power_watts, power_step_watts)),
        (
            "wanted power moved",  # the fleet's budget shares by it
            _power_moved(last.power_wanted_watts, current.power_wanted_watts, power_step_watts),
        ),
    )
    return next((reason for reason, changed in changes if changed), None)


def _power_moved(last_watts: float | None, current_watts: float | None, step_watts: float) -> bool:
    if last_watts is None or current_watts is None:
        return (last_watts is None) != (current_watts is None)
    return abs(current_watts - last_watts) > step_watts
