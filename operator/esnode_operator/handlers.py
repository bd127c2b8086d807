"""kopf handlers: thin, each hands one fleet to the Reconciler (in a thread: the client blocks).

Triggers: the fleet itself (create, update, resume, delete), a timer (drift nobody announced), and
the fleet's DaemonSets and ConfigMap (deleted or edited by someone else: restored; a DaemonSet's
status moved: status refreshed without re-applying).

The agents' node reports (EsnodeNode objects) are indexed in memory by (namespace, fleet); one
daemon per fleet turns its part of the index into the fleet's power summary (fleet_power.py).
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Mapping
from typing import Any, cast

import kopf

from esnode_operator.context import OperatorContext, context_of, options_of
from esnode_operator.kube import Kube, KubeError, new_api_client
from esnode_operator.metrics import OperatorMetrics
from esnode_operator.names import (
    FIELD_MANAGER,
    GROUP,
    KIND,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    NODE_PLURAL,
    PLURAL,
    VERSION,
)
from esnode_operator.power.fleet_loop import keep_power_status
from esnode_operator.power.summary import NodeEntry, node_entry
from esnode_operator.reconcile.auth_delegation import AuthDelegation
from esnode_operator.reconcile.node_status_access import NodeStatusAccess
from esnode_operator.reconcile.reconciler import FleetKey, Outcome, Reconciler
from esnode_operator.retry import configure_retries, retry_delay_seconds

log = logging.getLogger(__name__)

RESYNC_INTERVAL_SECONDS = 60.0
CHILD_LABELS = {LABEL_MANAGED_BY: FIELD_MANAGER}


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress in annotations: the status schema is strict, and status is ours to write.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events only for trouble, not every handler run
    configure_retries(settings)  # the operator's 10 s schedule, not kopf's 60 s
    options = options_of(memo)
    settings.scanning.disabled = not options.cluster_scanning
    api_client = new_api_client()
    metrics = OperatorMetrics()
    kube = Kube(api_client)
    server = metrics.serve(options.metrics_port, options.metrics_address)[0] if options.metrics_port else None
    if server is not None:
        log.info(
            "serving operator metrics",
            extra={"address": options.metrics_address, "port": options.metrics_port},
        )
    memo["context"] = OperatorContext(
        api_client=api_client,
        kube=kube,
        metrics=metrics,
        reconciler=Reconciler(
            kube,
            metrics,
            node_status=NodeStatusAccess(kube, options.node_status_binding),
            auth_delegation=AuthDelegation(kube, options.auth_delegator_binding),
        ),
        metrics_server=server,
    )


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    context = memo.get("context")
    if not isinstance(context, OperatorContext):
        return
    if context.metrics_server is not None:
        context.metrics_server.shutdown()
    context.api_client.close()  # type: ignore[no-untyped-call]


def _announce(outcome: Outcome | None, retry: int) -> None:
    """An Event when the fleet turned Degraded or changed why; a retry on the operator's schedule."""
    if outcome is None:
        return
    body = kopf.Body(cast(kopf.RawBody, dict(outcome.fleet)))
    for edit in outcome.reverted:
        kopf.warn(body, reason="EditReverted", message=edit[:1024])
    degraded = next(c for c in outcome.status["conditions"] if c["type"] == "Degraded")
    if outcome.patched and degraded["status"] == "True":
        kopf.warn(
            body,
            reason=degraded["reason"],
            message=degraded["message"][:1024],
        )
    if outcome.retry:
        raise kopf.TemporaryError(degraded["message"], delay=retry_delay_seconds(retry))


def _api_fault(exc: KubeError, retry: int) -> kopf.TemporaryError:
    return kopf.TemporaryError(f"Kubernetes API: {exc}", delay=retry_delay_seconds(retry))


async def _reconcile(memo: kopf.Memo, body: Mapping[str, Any], trigger: str, retry: int) -> None:
    snapshot = copy.deepcopy(dict(body))  # the thread must not see kopf update the body under it
    try:
        outcome = await asyncio.to_thread(context_of(memo).reconciler.reconcile, snapshot, trigger=trigger)
    except KubeError as exc:
        raise _api_fault(exc, retry) from exc
    _announce(outcome, retry)


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def fleet_changed(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    await _reconcile(memo, body, trigger="fleet", retry=retry)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def fleet_deleted(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    metadata = body["metadata"]
    try:
        await asyncio.to_thread(context_of(memo).reconciler.release, metadata["namespace"], metadata["name"])
    except KubeError as exc:
        raise _api_fault(exc, retry) from exc


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_INTERVAL_SECONDS, initial_delay=RESYNC_INTERVAL_SECONDS)
async def resync(body: kopf.Body, memo: kopf.Memo, retry: int = 0, **_: Any) -> None:
    await _reconcile(memo, body, trigger="timer", retry=retry)


def owner_fleet(body: Mapping[str, Any]) -> str | None:
    """The name of the EsnodeFleet controlling a child, if any."""
    for ref in body["metadata"].get("ownerReferences") or []:
        if (
            ref.get("kind") == KIND
            and ref.get("apiVersion", "").startswith(f"{GROUP}/")
            and ref.get("controller")
        ):
            return str(ref["name"])
    return None


def edited_by_others(body: Mapping[str, Any]) -> bool:
    """Whether anyone but the operator (and controllers writing status) has written the object."""
    return any(
        entry.get("manager") != FIELD_MANAGER and entry.get("subresource") != "status"
        for entry in body["metadata"].get("managedFields") or []
    )


async def _reconcile_owner(memo: kopf.Memo, body: Mapping[str, Any], trigger: str, full: bool) -> None:
    name = owner_fleet(body)
    if name is None or body["metadata"]["labels"].get(LABEL_INSTANCE) != name:
        return
    namespace = body["metadata"]["namespace"]
    reconciler = context_of(memo).reconciler
    try:
        outcome = await asyncio.to_thread(
            reconciler.reconcile_named, namespace, name, trigger=trigger, full=full
        )
        _announce(outcome, retry=0)
    except (KubeError, kopf.TemporaryError) as exc:
        # Event handlers are not retried by kopf: the fleet's own retry or the resync timer catches up.
        log.warning("fleet not reconciled", extra={"fleet": f"{namespace}/{name}", "error": str(exc)})


@kopf.on.event("apps", "v1", "daemonsets", labels=CHILD_LABELS)
async def daemonset_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type is None:  # the initial listing: resume handlers cover it
        return
    full = type == "DELETED" or edited_by_others(body)
    await _reconcile_owner(memo, body, trigger="daemonset", full=full)


# The other children are watched too, so that a hand deletion or edit is undone at once rather
# than at the next resync (60 s); only others' writes and deletions trigger a pass.
@kopf.on.event("", "v1", "configmaps", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "services", labels=CHILD_LABELS)
@kopf.on.event("", "v1", "serviceaccounts", labels=CHILD_LABELS)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "roles", labels=CHILD_LABELS)
@kopf.on.event("rbac.authorization.k8s.io", "v1", "rolebindings", labels=CHILD_LABELS)
async def child_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED" or (type == "MODIFIED" and edited_by_others(body)):
        await _reconcile_owner(memo, body, trigger=str(body["kind"]).lower(), full=True)


@kopf.index(GROUP, VERSION, NODE_PLURAL)
async def node_reports(body: kopf.Body, **_: Any) -> dict[FleetKey, NodeEntry] | None:
    """Each EsnodeNode with a report, under its fleet; kopf drops an object's entry when it goes."""
    entry = node_entry(body)
    return None if entry is None else {(body["metadata"]["namespace"], entry.fleet): entry}


# kopf's DaemonFn protocol has no place for indexes, which kopf passes by their handler's name.
@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)  # type: ignore[arg-type]
async def power_summary(
    stopped: kopf.DaemonStopped,
    body: kopf.Body,
    memo: kopf.Memo,
    node_reports: kopf.Index[FleetKey, NodeEntry],  # the index above, passed by its name
    **_: Any,
) -> None:
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    context = context_of(memo)
    await keep_power_status(
        context.kube,
        context.metrics,
        copy.deepcopy(dict(body)),
        entries=lambda: list(node_reports.get(key, ())),
        stopped=lambda: bool(stopped),
        pause=stopped.wait,
        spec=lambda: body.get("spec") or {},  # live: a budget change applies without a restart
    )
