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
from dataclasses import dataclass
from typing import Any

import kopf

from esnode_operator.kube import Kube, KubeError, new_api_client
from esnode_operator.metrics import DEFAULT_METRICS_PORT, OperatorMetrics
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
from esnode_operator.reconcile.node_status_access import DEFAULT_NODE_STATUS_BINDING, NodeStatusAccess
from esnode_operator.reconcile.reconciler import FleetKey, Reconciler

log = logging.getLogger(__name__)

RESYNC_INTERVAL_SECONDS = 60.0
RETRY_DELAY_SECONDS = 10.0
CHILD_LABELS = {LABEL_MANAGED_BY: FIELD_MANAGER}


@dataclass(frozen=True)
class OperatorOptions:
    """What the command line decides beyond kopf's own options; put in the memo by cli.main."""

    metrics_port: int = DEFAULT_METRICS_PORT  # 0: no metrics endpoint
    node_status_binding: str = DEFAULT_NODE_STATUS_BINDING


def _reconciler(memo: kopf.Memo) -> Reconciler:
    reconciler = memo.get("reconciler")
    if not isinstance(reconciler, Reconciler):
        raise kopf.TemporaryError("the operator has not finished starting", delay=1)
    return reconciler


@kopf.on.startup()
def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Handler progress in annotations: the status schema is strict, and status is ours to write.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING  # Events only for trouble, not every handler run
    options = memo.get("options") or OperatorOptions()
    api_client = new_api_client()
    metrics = OperatorMetrics()
    kube = Kube(api_client)
    memo["api_client"] = api_client
    memo["kube"] = kube
    memo["metrics"] = metrics
    memo["reconciler"] = Reconciler(
        kube, metrics, node_status=NodeStatusAccess(kube, options.node_status_binding)
    )
    if options.metrics_port:
        memo["metrics_server"], _thread = metrics.serve(options.metrics_port)
        log.info("serving operator metrics", extra={"port": options.metrics_port})


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()
    api_client = memo.get("api_client")
    if api_client is not None:
        api_client.close()


async def _reconcile(memo: kopf.Memo, body: Mapping[str, Any], trigger: str) -> None:
    snapshot = copy.deepcopy(dict(body))  # the thread must not see kopf update the body under it
    try:
        await asyncio.to_thread(_reconciler(memo).reconcile, snapshot, trigger=trigger)
    except KubeError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=RETRY_DELAY_SECONDS) from exc


@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def fleet_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(memo, body, trigger="fleet")


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def fleet_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    metadata = body["metadata"]
    try:
        await asyncio.to_thread(_reconciler(memo).release, metadata["namespace"], metadata["name"])
    except KubeError as exc:
        raise kopf.TemporaryError(f"Kubernetes API: {exc}", delay=RETRY_DELAY_SECONDS) from exc


@kopf.timer(GROUP, VERSION, PLURAL, interval=RESYNC_INTERVAL_SECONDS, initial_delay=RESYNC_INTERVAL_SECONDS)
async def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    await _reconcile(memo, body, trigger="timer")


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
    await asyncio.to_thread(_reconciler(memo).reconcile_named, namespace, name, trigger=trigger, full=full)


@kopf.on.event("apps", "v1", "daemonsets", labels=CHILD_LABELS)
async def daemonset_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type is None:  # the initial listing: resume handlers cover it
        return
    full = type == "DELETED" or edited_by_others(body)
    await _reconcile_owner(memo, body, trigger="daemonset", full=full)


@kopf.on.event("", "v1", "configmaps", labels=CHILD_LABELS)
async def configmap_event(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if type == "DELETED" or (type == "MODIFIED" and edited_by_others(body)):
        await _reconcile_owner(memo, body, trigger="configmap", full=True)


@kopf.index(GROUP, VERSION, NODE_PLURAL)
async def node_reports(body: kopf.Body, **_: Any) -> dict[FleetKey, NodeEntry] | None:
    """Each EsnodeNode with a report, under its fleet; kopf drops an object's entry when it goes."""
    entry = node_entry(body)
    return None if entry is None else {(body["metadata"]["namespace"], entry.fleet): entry}


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def power_summary(stopped: kopf.DaemonStopped, body: kopf.Body, memo: kopf.Memo, **kwargs: Any) -> None:
    reports: kopf.Index[FleetKey, NodeEntry] = kwargs["node_reports"]  # the index above, by its name
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    await keep_power_status(
        memo["kube"],
        memo["metrics"],
        copy.deepcopy(dict(body)),
        entries=lambda: list(reports.get(key, ())),
        stopped=lambda: bool(stopped),
        pause=stopped.wait,
        spec=lambda: body.get("spec") or {},  # live: a budget change applies without a restart
    )
