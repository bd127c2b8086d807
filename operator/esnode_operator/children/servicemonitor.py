"""The Prometheus Operator ServiceMonitor that scrapes the fleet's Service."""

from __future__ import annotations

from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.names import LABEL_INSTANCE, LABEL_NAME, METRICS_PORT_NAME, child_name, fleet_labels

SERVICEMONITOR_API_VERSION = "monitoring.coreos.com/v1"

# The node a sample came from, as a label: agents on the host network all look alike otherwise.
NODE_RELABELING = {
    "sourceLabels": ["__meta_kubernetes_pod_node_name"],
    "targetLabel": "node",
    "action": "replace",
}


def prometheus_duration(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


def build_servicemonitor(fleet: Fleet) -> dict[str, Any]:
    options = fleet.spec.service_monitor
    endpoint: dict[str, Any] = {
        "port": METRICS_PORT_NAME,
        "path": "/metrics",
        "interval": options.interval or prometheus_duration(fleet.spec.scrape_interval_seconds),
        "relabelings": [NODE_RELABELING, *options.relabelings],
    }
    if options.scrape_timeout is not None:
        endpoint["scrapeTimeout"] = options.scrape_timeout
    labels = fleet_labels(fleet.name)
    return adopted(
        {
            "apiVersion": SERVICEMONITOR_API_VERSION,
            "kind": "ServiceMonitor",
            "metadata": {"name": child_name(fleet.name), "labels": {**options.labels, **labels}},
            "spec": {
                "selector": {"matchLabels": {k: labels[k] for k in (LABEL_NAME, LABEL_INSTANCE)}},
                "namespaceSelector": {"matchNames": [fleet.namespace]},
                "endpoints": [endpoint],
            },
        },
        fleet,
    )
