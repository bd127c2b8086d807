"""The Prometheus Operator ServiceMonitor that scrapes the fleet's Service."""

from __future__ import annotations

from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.names import LABEL_INSTANCE, LABEL_NAME, METRICS_PORT_NAME, child_name, fleet_labels

SERVICEMONITOR_API_VERSION = "monitoring.coreos.com/v1"

# Target relabelings, applied after Prometheus Operator's own (which set namespace, pod and container
# to the agent pod's). GPU series carry the workload's pod, namespace and container; with the agent's
# identity in those target labels too, Prometheus (honor_labels false) would rename the workload's to
# exported_*. So the agent pod's identity moves to agent_pod/agent_namespace and the three target
# labels are dropped: workload labels arrive unchanged, and host series carry no pod at all.
# honorLabels: true would keep the workload's labels too, but stamp the agent pod onto every series
# that has none (host, power, self metrics), indistinguishable from a workload's.
NODE_RELABELING = {  # agents are one per node: the node names the target
    "sourceLabels": ["__meta_kubernetes_pod_node_name"],
    "targetLabel": "node",
    "action": "replace",
}
AGENT_POD_RELABELINGS = (
    {"sourceLabels": ["__meta_kubernetes_pod_name"], "targetLabel": "agent_pod", "action": "replace"},
    {"sourceLabels": ["__meta_kubernetes_namespace"], "targetLabel": "agent_namespace", "action": "replace"},
    {"regex": "pod|namespace|container", "action": "labeldrop"},
)


def prometheus_duration(seconds: float) -> str:
    milliseconds = round(seconds * 1000)
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


# What kube-prometheus scrapes the kubelet with: the Prometheus pod's own ServiceAccount token.
# Deprecated in the ServiceMonitor API in favour of `authorization`, which takes only a Secret.
PROMETHEUS_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def service_dns_name(fleet: Fleet) -> str:
    return f"{child_name(fleet.name)}.{fleet.namespace}.svc"


def _protection(fleet: Fleet) -> dict[str, Any]:
    """The endpoint's scheme, TLS and credentials for the fleet's metricsTLS and metricsAuth."""
    spec = fleet.spec
    fields: dict[str, Any] = {}
    if spec.metrics_tls is not None:
        tls = spec.metrics_tls
        fields["scheme"] = "https"
        fields["tlsConfig"] = {
            "ca": {"secret": {"name": tls.secret_name, "key": tls.ca_key}},
            "serverName": tls.server_name or service_dns_name(fleet),
        }
    if spec.metrics_auth == "kubernetes":
        authorization = spec.service_monitor.authorization
        if authorization is None:
            fields["bearerTokenFile"] = PROMETHEUS_TOKEN_FILE
        else:
            credentials = authorization.credentials
            fields["authorization"] = {
                "type": "Bearer",
                "credentials": {"name": credentials.name, "key": credentials.key},
            }
    return fields


def build_servicemonitor(fleet: Fleet) -> dict[str, Any]:
    options = fleet.spec.service_monitor
    endpoint: dict[str, Any] = {
        "port": METRICS_PORT_NAME,
        "path": "/metrics",
        "interval": options.interval or prometheus_duration(fleet.spec.scrape_interval_seconds),
        "relabelings": [NODE_RELABELING, *AGENT_POD_RELABELINGS, *options.relabelings],
        **_protection(fleet),
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
