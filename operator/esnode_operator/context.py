"""What the handlers share, built once at startup: one typed object in kopf's memo."""

from __future__ import annotations

from dataclasses import dataclass
from wsgiref.simple_server import WSGIServer

import kopf
from kubernetes import client

from esnode_operator.kube import Kube
from esnode_operator.metrics import DEFAULT_METRICS_PORT, OperatorMetrics
from esnode_operator.reconcile.auth_delegation import DEFAULT_AUTH_DELEGATOR_BINDING
from esnode_operator.reconcile.node_status_access import DEFAULT_NODE_STATUS_BINDING
from esnode_operator.reconcile.reconciler import Reconciler


@dataclass(frozen=True)
class OperatorOptions:
    """What the command line decides beyond kopf's own options; put in the memo by cli.main."""

    metrics_port: int = DEFAULT_METRICS_PORT  # 0: no metrics endpoint
    metrics_address: str = "0.0.0.0"
    node_status_binding: str = DEFAULT_NODE_STATUS_BINDING
    # kopf's watch of namespaces and CRDs (cluster-scoped reads): needed only for namespace globs.
    cluster_scanning: bool = True
    auth_delegator_binding: str = DEFAULT_AUTH_DELEGATOR_BINDING


@dataclass(frozen=True)
class OperatorContext:
    api_client: client.ApiClient
    kube: Kube
    metrics: OperatorMetrics
    reconciler: Reconciler
    metrics_server: WSGIServer | None


def options_of(memo: kopf.Memo) -> OperatorOptions:
    options = memo.get("options")
    return options if isinstance(options, OperatorOptions) else OperatorOptions()


def context_of(memo: kopf.Memo) -> OperatorContext:
    context = memo.get("context")
    if not isinstance(context, OperatorContext):
        raise kopf.TemporaryError("the operator has not finished starting", delay=1)
    return context
