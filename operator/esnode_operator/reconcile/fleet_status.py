"""A fleet's status from what the operator saw: DaemonSet counters, pod troubles, and problems.

Pure functions; the reconciler gathers the inputs. Conditions follow metav1.Condition: a
condition's lastTransitionTime changes only when its status does.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from esnode_operator.api.models import DaemonSetCounts
from esnode_operator.conditions import condition, stamp_transition

# Degraded reasons, most telling first: the first present one names the condition.
INVALID_SPEC = "InvalidSpec"
NODE_CONFLICT = "NodeConflict"
APPLY_REJECTED = "ApplyRejected"
APPLY_FAILED = "ApplyFailed"  # 5xx or no answer during dry run or apply: retried
FAILED_CREATE = "FailedCreate"  # the DaemonSet controller's own Event, e.g. a missing PriorityClass
NO_MATCHING_NODES = "NoMatchingNodes"
SERVICE_MONITOR_CRD_MISSING = "ServiceMonitorCRDMissing"
AGENT_RBAC_MISSING = "AgentRBACMissing"
UNSCHEDULABLE = "Unschedulable"

# Container waiting reasons that do not heal by waiting, and what a person should look at.
_WAITING_HINTS = {
    "ImagePullBackOff": "check spec.image and spec.imagePullSecrets",
    "ErrImagePull": "check spec.image and spec.imagePullSecrets",
    "InvalidImageName": "check spec.image",
    "CrashLoopBackOff": "see the agent's log: kubectl logs -n {namespace} {pod}",
    "CreateContainerConfigError": "check the references in spec.env and spec.otlp.headers",
    "CreateContainerError": "see kubectl describe pod -n {namespace} {pod}",
    "RunContainerError": "see kubectl describe pod -n {namespace} {pod}",
}
_PRIORITY = [
    INVALID_SPEC,
    NODE_CONFLICT,
    APPLY_REJECTED,
    APPLY_FAILED,
    FAILED_CREATE,
    *_WAITING_HINTS,
    UNSCHEDULABLE,
    NO_MATCHING_NODES,
    AGENT_RBAC_MISSING,
    SERVICE_MONITOR_CRD_MISSING,
]


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    holds: bool = False  # the fleet's spec was not applied because of it (its children are untouched)


@dataclass(frozen=True)
class Observation:
    counts: DaemonSetCounts
    daemonsets: int
    settled: bool  # every DaemonSet's controller has seen its current generation
    rolled_out: bool  # settled, every agent runs the current template and is available


def observe_daemonsets(daemonsets: Sequence[Mapping[str, Any]]) -> Observation:
    totals = {"desired": 0, "current": 0, "ready": 0, "updated": 0, "available": 0, "unavailable": 0}
    fields = {
        "desired": "desiredNumberScheduled",
        "current": "currentNumberScheduled",
        "ready": "numberReady",
        "updated": "updatedNumberScheduled",
        "available": "numberAvailable",
        "unavailable": "numberUnavailable",
    }
    settled = rolled_out = True
    for ds in daemonsets:
        status = ds.get("status") or {}
        for name, field in fields.items():
            totals[name] += int(status.get(field) or 0)
        seen = int(status.get("observedGeneration") or 0) >= int(ds["metadata"].get("generation") or 0)
        desired = int(status.get("desiredNumberScheduled") or 0)
        complete = (
            int(status.get("updatedNumberScheduled") or 0) == desired
            and int(status.get("numberAvailable") or 0) == desired
        )
        settled = settled and seen
        rolled_out = rolled_out and seen and complete
    present = bool(daemonsets)
    return Observation(
        DaemonSetCounts(**totals), len(daemonsets), settled and present, rolled_out and present
    )


def pod_problems(pods: Iterable[Mapping[str, Any]]) -> list[Problem]:
    """Agent pods stuck in a way that waiting will not fix, grouped by cause."""
    found: dict[str, list[str]] = {}
    hints: dict[str, str] = {}
    for pod in pods:
        name = pod["metadata"]["name"]
        namespace = pod["metadata"].get("namespace", "")
        node = (pod.get("spec") or {}).get("nodeName") or "no node"
        status = pod.get("status") or {}
        for container in [*status.get("initContainerStatuses", []), *status.get("containerStatuses", [])]:
            waiting = (container.get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "")
            if reason in _WAITING_HINTS:
                detail = waiting.get("message", "").strip()
                found.setdefault(reason, []).append(f"{name} on {node}" + (f": {detail}" if detail else ""))
                hints.setdefault(reason, _WAITING_HINTS[reason].format(namespace=namespace, pod=name))
        for pod_condition in status.get("conditions", []):
            if pod_condition.get("type") == "PodScheduled" and pod_condition.get("reason") == UNSCHEDULABLE:
                found.setdefault(UNSCHEDULABLE, []).append(
                    f"{name}: {pod_condition.get('message', '')}".strip()
                )
                hints.setdefault(UNSCHEDULABLE, "a host port or resources may be taken on those nodes")
    return [_grouped(reason, entries, hints[reason]) for reason, entries in found.items()]


def controller_problems(
    events: Iterable[Mapping[str, Any]], daemonsets: Iterable[Mapping[str, Any]]
) -> list[Problem]:
    """The newest FailedCreate Warning of each DaemonSet (e.g. no such PriorityClass or RuntimeClass)."""
    uids = {ds["metadata"]["uid"]: ds["metadata"]["name"] for ds in daemonsets}
    newest: dict[str, Mapping[str, Any]] = {}
    for event in events:
        involved = event.get("involvedObject") or {}
        if event.get("reason") != FAILED_CREATE or involved.get("uid") not in uids:
            continue
        name = uids[involved["uid"]]
        if _event_time(event) >= _event_time(newest.get(name, {})):
            newest[name] = event
    return [
        Problem(FAILED_CREATE, f"DaemonSet {name} cannot create its pods: {event.get('message', '').strip()}")
        for name, event in sorted(newest.items())
    ]


def _event_time(event: Mapping[str, Any]) -> str:
    return str(event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp") or "")


def _grouped(reason: str, entries: list[str], hint: str) -> Problem:
    shown = "; ".join(entries[:3]) + (f"; and {len(entries) - 3} more" if len(entries) > 3 else "")
    return Problem(reason, f"{len(entries)} agent pod(s) {reason}: {shown} ({hint})")


def ordered(problems: Iterable[Problem]) -> list[Problem]:
    return sorted(
        problems, key=lambda p: _PRIORITY.index(p.reason) if p.reason in _PRIORITY else len(_PRIORITY)
    )


def build_status(
    generation: int,
    observation: Observation,
    problems: Sequence[Problem],
    previous: Mapping[str, Any],
    now: str,
) -> dict[str, Any]:
    """The status fields the operator owns (camelCase), ready to merge-patch."""
    problems = ordered(problems)
    counts = observation.counts
    held = [p for p in problems if p.holds]
    ready = not held and observation.rolled_out and counts.desired > 0 and counts.unavailable == 0
    conditions = [
        _ready(ready, observation, held, problems),
        _progressing(observation, held),
        _degraded(problems),
    ]
    for new in conditions:
        stamp_transition(new, previous.get("conditions") or [], now)
        new["observedGeneration"] = generation
    state = "Degraded" if problems else "Ready" if ready else "Progressing"
    return {
        "observedGeneration": generation,
        "state": state,
        "readyText": f"{counts.ready}/{counts.desired}",
        "conditions": conditions,
        "daemonSet": counts.model_dump(mode="json"),
    }


def _ready(
    ready: bool, observation: Observation, held: list[Problem], problems: list[Problem]
) -> dict[str, Any]:
    counts = observation.counts
    if ready:
        return condition("Ready", True, "AgentsReady", f"{counts.ready} of {counts.desired} agents ready")
    if held:
        return condition("Ready", False, held[0].reason, held[0].message)
    if observation.settled and counts.desired == 0:
        reason = problems[0].reason if problems else NO_MATCHING_NODES
        return condition("Ready", False, reason, "no node runs an agent of this fleet")
    message = f"{counts.ready} of {counts.desired} agents ready, {counts.unavailable} unavailable"
    return condition("Ready", False, "AgentsNotReady", message)


def _progressing(observation: Observation, held: list[Problem]) -> dict[str, Any]:
    counts = observation.counts
    if held:
        return condition("Progressing", False, held[0].reason, "the spec is held; nothing is rolling out")
    if observation.rolled_out or (observation.settled and counts.desired == 0):
        return condition(
            "Progressing", False, "RolloutComplete", f"{counts.updated} agents run the current spec"
        )
    message = (
        f"{counts.updated} of {counts.desired} agents updated, {counts.available} available"
        if observation.daemonsets
        else "creating the DaemonSets"
    )
    return condition("Progressing", True, "RollingOut", message)


def _degraded(problems: list[Problem]) -> dict[str, Any]:
    if not problems:
        return condition("Degraded", False, "AsExpected", "no problem found")
    return condition("Degraded", True, problems[0].reason, "; ".join(p.message for p in problems))


def status_differs(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    """Whether applying ``desired`` would change anything: only its own fields and condition types count.

    Two writers share the status (the reconciler and the power summary), each applying its own
    conditions; a condition of the other's is no reason to write.
    """
    for key, value in desired.items():
        if key == "conditions":
            by_type = {c.get("type"): c for c in current.get("conditions") or []}
            if [by_type.get(c["type"]) for c in value] != value:
                return True
        elif current.get(key) != value:
            return True
    return False
