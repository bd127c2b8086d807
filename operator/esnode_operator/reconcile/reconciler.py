"""One reconciliation of one fleet: apply its children (or hold them), observe, write status.

Synchronous, one fleet at a time per fleet (a lock each); handlers run it in a thread. A full
pass checks the spec and node conflicts, dry-runs every child and applies them only if the
apiserver accepts all of them (nothing half-applied), prunes DaemonSets of envelope groups that
no longer exist, then observes. A held fleet keeps the children it had: nothing that was working
is deleted because of a bad update. A full pass also lists (or unlists) the fleet's agents in the
shared node-status binding (node_status_access.py), and those of fleets with metricsAuth in the
auth-delegator binding (auth_delegation.py). A full pass, or one that finds the DaemonSets
wanting another number of pods, deletes the fleet's node reports of nodes it no longer selects, so
that the node's new fleet can file its own (report_handover.py). An observe-only pass (a DaemonSet's status moved) reuses the
last full pass's findings for the same generation.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from esnode_operator.api.fleet import Fleet
from esnode_operator.children.agent_config import AgentEnvError
from esnode_operator.children.desired import Children, desired_children
from esnode_operator.children.placement import PlacementError
from esnode_operator.children.servicemonitor import SERVICEMONITOR_API_VERSION
from esnode_operator.conditions import utc_now
from esnode_operator.kube import Kube, KubeError, object_path
from esnode_operator.metrics import OperatorMetrics
from esnode_operator.names import API_VERSION, KIND, child_name, fleet_selector
from esnode_operator.reconcile.auth_delegation import AuthDelegation
from esnode_operator.reconcile.fleet_status import (
    APPLY_FAILED,
    APPLY_REJECTED,
    INVALID_SPEC,
    NO_MATCHING_NODES,
    NODE_CONFLICT,
    SERVICE_MONITOR_CRD_MISSING,
    Observation,
    Problem,
    build_status,
    controller_problems,
    observe_daemonsets,
    pod_problems,
    status_differs,
)
from esnode_operator.reconcile.foreign_fields import additions, adoption_patch, describe
from esnode_operator.reconcile.node_conditions import NodeConditions, selects
from esnode_operator.reconcile.node_status_access import NodeStatusAccess
from esnode_operator.reconcile.report_handover import ReportHandover

log = logging.getLogger(__name__)

FleetKey = tuple[str, str]  # namespace, name
_REFUSALS = (400, 403, 422)  # the apiserver will not take this object as it is


@dataclass(frozen=True)
class Outcome:
    fleet: Mapping[str, Any]  # the body reconciled: what an Event is about
    status: dict[str, Any]
    patched: bool
    problems: tuple[Problem, ...]
    reverted: tuple[str, ...] = ()  # others' additions to children, removed in this pass

    @property
    def retry(self) -> bool:
        """A fault that may heal (5xx, no answer): the handler retries on the operator's schedule."""
        return any(p.reason == APPLY_FAILED for p in self.problems)


def owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    references = obj["metadata"].get("ownerReferences") or []
    return any(ref.get("uid") == uid and ref.get("controller") for ref in references)


def selector_text(labels: Mapping[str, str]) -> str:
    return ",".join(f"{key}={value}" for key, value in sorted(labels.items()))


def describe_validation(exc: ValidationError, prefix: str = "spec") -> str:
    parts = []
    for error in exc.errors()[:3]:
        where = ".".join([prefix, *(str(part) for part in error["loc"])])
        parts.append(f"{where}: {str(error['msg']).removeprefix('Value error, ')}")
    more = f" (and {exc.error_count() - 3} more)" if exc.error_count() > 3 else ""
    return "; ".join(parts) + more


class Reconciler:
    def __init__(
        self,
        kube: Kube,
        metrics: OperatorMetrics,
        clock: Callable[[], str] = utc_now,
        node_status: NodeStatusAccess | None = None,
        auth_delegation: AuthDelegation | None = None,
    ) -> None:
        self._kube = kube
        self._metrics = metrics
        self._node_status = node_status or NodeStatusAccess(kube)
        self._handover = ReportHandover(kube)
        self._node_conditions = NodeConditions(kube)
        self._auth_delegation = auth_delegation or AuthDelegation(kube)
        self._clock = clock
        self._guard = threading.Lock()
        self._locks: dict[FleetKey, threading.Lock] = {}
        self._findings: dict[FleetKey, tuple[int, tuple[Problem, ...]]] = {}

    def reconcile(self, body: Mapping[str, Any], *, trigger: str, full: bool = True) -> Outcome | None:
        """Bring the fleet's children and status in line with its spec; None for a fleet being deleted."""
        metadata = body["metadata"]
        key = (metadata["namespace"], metadata["name"])
        started = time.perf_counter()
        try:
            with self._lock(key):
                outcome = self._reconcile(key, body, full)
        except KubeError as exc:
            self._failed(trigger, f"http_{exc.status}")
            raise
        except Exception as exc:
            self._failed(trigger, type(exc).__name__)
            raise
        finally:
            self._metrics.duration.labels(trigger=trigger).observe(time.perf_counter() - started)
        self._metrics.reconciles.labels(trigger=trigger, result="skipped" if outcome is None else "ok").inc()
        return outcome

    def reconcile_named(self, namespace: str, name: str, *, trigger: str, full: bool) -> Outcome | None:
        """Reconcile a fleet read fresh from the apiserver; None when it is gone."""
        try:
            body = self._kube.get(API_VERSION, KIND, namespace, name)
        except KubeError as exc:
            if exc.status == 404:
                self.forget((namespace, name))
                return None
            raise
        return self.reconcile(body, trigger=trigger, full=full)

    def release(self, namespace: str, name: str) -> None:
        """A fleet is being deleted: take back what its children cannot take with them."""
        self._node_conditions.withdraw(namespace, name, keep=lambda _node: False)
        self._node_status.grant(namespace, name, granted=False)
        self._auth_delegation.grant(namespace, name, granted=False)
        self.forget((namespace, name))

    def forget(self, key: FleetKey) -> None:
        with self._guard:
            self._locks.pop(key, None)
            self._findings.pop(key, None)

    def _lock(self, key: FleetKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def _failed(self, trigger: str, kind: str) -> None:
        self._metrics.errors.labels(kind=kind).inc()
        self._metrics.reconciles.labels(trigger=trigger, result="error").inc()

    def _reconcile(self, key: FleetKey, body: Mapping[str, Any], full: bool) -> Outcome | None:
        metadata = body["metadata"]
        if metadata.get("deletionTimestamp"):
            return None  # the garbage collector is taking the children; re-applying would fight it
        generation = int(metadata.get("generation") or 0)
        cached = self._findings.get(key)
        reverted: list[str] = []
        if full or cached is None or cached[0] != generation:
            findings = self._apply_phase(body, reverted)
            self._findings[key] = (generation, findings)
        else:
            findings = cached[1]
        observation, observed = self._observe(body, findings)
        problems = (*findings, *observed)
        previous = body.get("status") or {}
        # A node left the fleet (its DaemonSets want fewer pods) or a full pass: hand its reports on.
        moved = observation.counts.desired != (previous.get("daemonSet") or {}).get("desired")
        if (full or moved) and not any(p.holds for p in findings):
            self._handover.release_unselected(
                key[0], key[1], (body.get("spec") or {}).get("nodeSelector") or {}
            )
        if full or moved:
            self._withdraw_node_conditions(body)
        status = build_status(generation, observation, problems, previous, self._clock())
        patched = status_differs(previous, status)
        if patched:
            self._kube.apply_status(body, status)
            self._metrics.status_patches.inc()
            log.info(
                "fleet status changed",
                extra={"fleet": f"{key[0]}/{key[1]}", "state": status["state"], "ready": status["readyText"]},
            )
        return Outcome(body, status, patched, problems, tuple(reverted))

    def _withdraw_node_conditions(self, body: Mapping[str, Any]) -> None:
        """Nodes that left the fleet's nodeSelector (or a fleet that stopped setting the condition)."""
        spec = body.get("spec") or {}
        selector = spec.get("nodeSelector") or {}
        covered = selects(selector if isinstance(selector, dict) else {})
        keep = covered if spec.get("nodeCondition") else (lambda _node: False)
        self._node_conditions.withdraw(body["metadata"]["namespace"], body["metadata"]["name"], keep)

    # ------------------------------------------------------------------------------- apply

    def _apply_phase(self, body: Mapping[str, Any], reverted: list[str]) -> tuple[Problem, ...]:
        try:
            fleet = Fleet.from_body(body)
        except ValidationError as exc:
            return (Problem(INVALID_SPEC, describe_validation(exc), holds=True),)
        conflict = self._node_conflict(fleet)
        if conflict is not None:
            return (conflict,)
        try:
            children = desired_children(fleet)
        except (PlacementError, AgentEnvError) as exc:
            return (Problem(INVALID_SPEC, str(exc), holds=True),)
        except ValidationError as exc:  # the agent's own config model refused the rendering
            return (Problem(INVALID_SPEC, "agent config: " + describe_validation(exc, "agent"), holds=True),)
        problems = self._apply(fleet, children, reverted)
        if any(p.holds for p in problems):
            return problems
        access = self._node_status.grant(fleet.namespace, fleet.name, fleet.spec.node_condition)
        reviews = self._auth_delegation.grant(
            fleet.namespace, fleet.name, fleet.spec.metrics_auth == "kubernetes"
        )
        return (*problems, *(p for p in (access, reviews) if p))

    def _node_conflict(self, fleet: Fleet) -> Problem | None:
        """Nodes an older fleet in the namespace also selects (judged by nodeSelector)."""
        peers = self._kube.list(API_VERSION, KIND, fleet.namespace)
        mine = (fleet.created, fleet.name)
        for peer in sorted(
            peers, key=lambda p: (p["metadata"].get("creationTimestamp", ""), p["metadata"]["name"])
        ):
            meta = peer["metadata"]
            if (meta.get("creationTimestamp", ""), meta["name"]) >= mine or meta.get("deletionTimestamp"):
                continue
            other = (peer.get("spec") or {}).get("nodeSelector") or {}
            merged = _merged_selector(fleet.spec.node_selector, other)
            if merged is None:
                continue
            nodes = self._kube.list("v1", "Node", label_selector=selector_text(merged), limit=4)
            if nodes:
                names = ", ".join(n["metadata"]["name"] for n in nodes[:3]) + (
                    " and more" if len(nodes) > 3 else ""
                )
                return Problem(
                    NODE_CONFLICT,
                    f"nodes {names} are also selected by EsnodeFleet {meta['name']}, which is older; "
                    "this fleet is held (its agents stay as they were) until spec.nodeSelector of the two "
                    "fleets select disjoint nodes",
                    holds=True,
                )
        return None

    def _apply(self, fleet: Fleet, children: Children, reverted: list[str]) -> tuple[Problem, ...]:
        monitor = children.servicemonitor
        monitor_missing = False
        refused: list[str] = []
        for obj in [*children.core, *([monitor] if monitor else [])]:
            # The agents' Role grants nothing until bound, and the dry run of its RoleBinding reads
            # it (RBAC checks the operator holds what it binds), so the Role is applied for real.
            try:
                self._kube.apply(obj, dry_run=obj is not children.role)
            except KubeError as exc:
                if obj is monitor and exc.status == 404:
                    monitor_missing = True
                elif exc.status in _REFUSALS:
                    refused.append(f"{obj['kind']} {obj['metadata']['name']}: {exc.message}")
                else:
                    return (_apply_failed(obj, exc, "dry run"),)
        if refused:
            message = "the apiserver refused " + "; ".join(refused) + "; nothing was changed"
            return (Problem(APPLY_REJECTED, message, holds=True),)
        for obj in [*children.core, *([monitor] if monitor and not monitor_missing else [])]:
            try:
                live = self._kube.apply(obj)
                edit = self._take_back(fleet, obj, live)
            except KubeError as exc:
                return (_apply_failed(obj, exc, "apply"),)
            self._metrics.applies.labels(kind=obj["kind"]).inc()
            if edit:
                reverted.append(edit)
        self._prune(fleet, children)
        if monitor_missing:
            return (
                Problem(
                    SERVICE_MONITOR_CRD_MISSING,
                    "spec.serviceMonitor.enabled is true but the cluster serves no ServiceMonitor "
                    "(monitoring.coreos.com/v1): install the Prometheus Operator CRDs, or set "
                    "spec.serviceMonitor.enabled to false; the agents are deployed regardless",
                ),
            )
        return ()

    def _take_back(self, fleet: Fleet, obj: Mapping[str, Any], live: Mapping[str, Any]) -> str | None:
        """Remove what others added to a child (foreign_fields.py); what was removed, if anything."""
        patch = adoption_patch(live)
        if patch is None:
            return None
        managers, paths = additions(live)
        try:
            self._kube.request(
                "PATCH", object_path(obj), body=patch, content_type="application/merge-patch+json"
            )
        except KubeError as exc:
            if exc.status == 409:  # written meanwhile: that write's event starts a new pass
                return None
            raise
        self._kube.apply(obj)
        if not paths:  # others only co-owned the operator's own values
            return None
        edit = describe(obj["kind"], obj["metadata"]["name"], managers, paths)
        log.info(
            "reverted an edit of a child",
            extra={"fleet": fleet.ref, "kind": obj["kind"], "child": obj["metadata"]["name"],
                   "managers": ",".join(managers), "fields": ",".join(paths[:20])},
        )  # fmt: skip
        return edit

    def _prune(self, fleet: Fleet, children: Children) -> None:
        """Delete what the fleet owns but no longer wants: DaemonSets of old envelope groups, a monitor."""
        wanted = {ds["metadata"]["name"] for ds in children.daemonsets}
        existing = self._kube.list(
            "apps/v1", "DaemonSet", fleet.namespace, label_selector=fleet_selector(fleet.name)
        )
        stale = [ds for ds in existing if owned_by(ds, fleet.uid) and ds["metadata"]["name"] not in wanted]
        if children.servicemonitor is None:
            stale += self._owned_monitor(fleet)
        for obj in stale:
            self._delete(obj)
            # not extra["name"]: LogRecord reserves it (logging raises KeyError)
            log.info(
                "deleted", extra={"fleet": fleet.ref, "kind": obj["kind"], "child": obj["metadata"]["name"]}
            )

    def _owned_monitor(self, fleet: Fleet) -> list[dict[str, Any]]:
        try:
            monitor = self._kube.get(
                SERVICEMONITOR_API_VERSION, "ServiceMonitor", fleet.namespace, child_name(fleet.name)
            )
        except KubeError as exc:
            if exc.status == 404:  # none, or no such resource type
                return []
            raise
        return [monitor] if owned_by(monitor, fleet.uid) else []

    def _delete(self, obj: Mapping[str, Any]) -> None:
        try:
            self._kube.delete(obj)
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced by another object
                raise

    # ----------------------------------------------------------------------------- observe

    def _observe(
        self, body: Mapping[str, Any], findings: tuple[Problem, ...]
    ) -> tuple[Observation, list[Problem]]:
        metadata = body["metadata"]
        namespace, name, uid = metadata["namespace"], metadata["name"], metadata["uid"]
        selector = fleet_selector(name)
        daemonsets = [
            ds
            for ds in self._kube.list("apps/v1", "DaemonSet", namespace, label_selector=selector)
            if owned_by(ds, uid)
        ]
        observation = observe_daemonsets(daemonsets)
        problems: list[Problem] = []
        if daemonsets and (not observation.rolled_out or observation.counts.unavailable):
            problems += pod_problems(self._kube.list("v1", "Pod", namespace, label_selector=selector))
        if observation.counts.current < observation.counts.desired:  # pods the controller could not create
            problems += controller_problems(self._kube.list("v1", "Event", namespace), daemonsets)
        if observation.settled and observation.counts.desired == 0 and not any(p.holds for p in findings):
            problems.append(self._no_agents(body))
        return observation, problems

    def _no_agents(self, body: Mapping[str, Any]) -> Problem:
        node_selector = (body.get("spec") or {}).get("nodeSelector") or {}
        matching = self._kube.list("v1", "Node", label_selector=selector_text(node_selector), limit=1)
        shown = selector_text(node_selector) or "(empty: all nodes)"
        if not matching:
            return Problem(
                NO_MATCHING_NODES,
                f"spec.nodeSelector {shown} matches no node: label the nodes that should run an agent, "
                "or change spec.nodeSelector",
            )
        return Problem(
            NO_MATCHING_NODES,
            f"nodes match spec.nodeSelector {shown} but none can run an agent: check spec.affinity, "
            "and spec.tolerations against the nodes' taints",
        )


def _apply_failed(obj: Mapping[str, Any], exc: KubeError, step: str) -> Problem:
    """A fault that is no verdict on the object (5xx, no answer): held, and retried with backoff."""
    answer = f"HTTP {exc.status} {exc.reason}" if exc.status else f"no answer ({exc.reason})"
    return Problem(
        APPLY_FAILED,
        f"{step} of {obj['kind']} {obj['metadata']['name']} failed: {answer}: {exc.message}; "
        "nothing more was changed, retrying",
        holds=True,
    )


def _merged_selector(mine: Mapping[str, str], other: Any) -> dict[str, str] | None:
    """Both selectors at once; None when they cannot select the same node (one key, two values)."""
    if not isinstance(other, dict) or not all(isinstance(v, str) for v in other.values()):
        return None
    merged = dict(mine)
    for key, value in other.items():
        if merged.setdefault(key, value) != value:
            return None
    return merged
