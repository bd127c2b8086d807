"""The operator's own metrics, in a registry of its own, served on their own port."""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

DEFAULT_METRICS_PORT = 8080
_DURATION_BUCKETS_SECONDS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class OperatorMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.reconciles = Counter(
            "esnode_operator_reconciles_total",
            "Fleet reconciliations, by what triggered them and how they ended",
            ["trigger", "result"],
            registry=self.registry,
        )
        self.errors = Counter(
            "esnode_operator_reconcile_errors_total",
            "Reconciliations that failed before writing status, by error kind",
            ["kind"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "esnode_operator_reconcile_duration_seconds",
            "Time to reconcile one fleet: read, apply, observe, write status",
            ["trigger"],
            buckets=_DURATION_BUCKETS_SECONDS,
            registry=self.registry,
        )
        self.applies = Counter(
            "esnode_operator_applied_objects_total",
            "Objects server-side applied, by kind",
            ["kind"],
            registry=self.registry,
        )
        self.status_patches = Counter(
            "esnode_operator_status_patches_total",
            "Fleet status writes by the reconciler (only made when something changed)",
            registry=self.registry,
        )
        self.power_status_patches = Counter(
            "esnode_operator_power_status_patches_total",
            "Fleet power summary writes (at most one per fleet per second, only on change)",
            registry=self.registry,
        )

    def serve(self, port: int, address: str = "0.0.0.0") -> tuple[WSGIServer, threading.Thread]:
        """/metrics on ``address:port`` in a daemon thread; shut the server down to stop it."""
        return start_http_server(port, addr=address, registry=self.registry)
