"""EndpointSlices for Services whose pods have loopback IPs, which the apiserver will not store as IPs.

kube-apiserver refuses loopback addresses in Endpoints and IPv4 EndpointSlices ("may not be in the
loopback range"), so the endpoint-slice controller cannot publish kwok's loopback pod IPs. This
writes what it would have written, for every Service with a selector: one slice per Service with
the Running, ready pods it selects, their node and pod reference, and the Service's ports resolved
against the pods' container ports. The slice's addressType is FQDN (a dotted-quad passes the DNS
name check, and Prometheus's endpointslice discovery joins address and port whatever the type);
its managed-by label keeps the controller's hands off it, and the Service owns it.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

MANAGED_BY = "esnode-test-harness"
SUFFIX = "-loopback"


def _selects(selector: dict[str, str], labels: dict[str, str] | None) -> bool:
    return all((labels or {}).get(key) == value for key, value in selector.items())


def _target_port(service_port: Any, pods: list[Any]) -> int:
    target = service_port.target_port
    if isinstance(target, int) or (isinstance(target, str) and target.isdigit()):
        return int(target)
    for pod in pods:
        for container in pod.spec.containers:
            for port in container.ports or []:
                if port.name == target:
                    return int(port.container_port)
    return int(service_port.port)


def desired_slice(service: Any, pods: list[Any]) -> dict[str, Any]:
    name = service.metadata.name
    ready = [
        p
        for p in pods
        if p.status.phase == "Running" and p.status.pod_ip and not p.metadata.deletion_timestamp
    ]
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}{SUFFIX}",
            "namespace": service.metadata.namespace,
            "labels": {
                "kubernetes.io/service-name": name,
                "endpointslice.kubernetes.io/managed-by": MANAGED_BY,
            },
            "ownerReferences": [
                {"apiVersion": "v1", "kind": "Service", "name": name, "uid": service.metadata.uid}
            ],
        },
        "addressType": "FQDN",
        "ports": [
            {"name": p.name or "", "port": _target_port(p, ready), "protocol": p.protocol or "TCP"}
            for p in service.spec.ports or []
        ],
        "endpoints": [
            {
                "addresses": [pod.status.pod_ip],
                "conditions": {"ready": True, "serving": True, "terminating": False},
                "nodeName": pod.spec.node_name,
                "targetRef": {
                    "kind": "Pod",
                    "name": pod.metadata.name,
                    "namespace": pod.metadata.namespace,
                    "uid": pod.metadata.uid,
                },
            }
            for pod in sorted(ready, key=lambda p: p.metadata.name)
        ],
    }


class LoopbackEndpointSlices:
    """Keeps one slice per selecting Service in step with its pods; call sync() each round."""

    def __init__(self, api_client: Any) -> None:
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self._written: dict[tuple[str, str], dict[str, Any]] = {}

    def sync(self, pods: list[Any]) -> None:
        for service in self.core.list_service_for_all_namespaces().items:
            if not service.spec.selector or service.metadata.namespace == "default":
                continue
            selected = [
                p for p in pods
                if p.metadata.namespace == service.metadata.namespace and _selects(service.spec.selector, p.metadata.labels)
            ]  # fmt: skip
            self._write(desired_slice(service, selected))

    def _write(self, body: dict[str, Any]) -> None:
        key = (body["metadata"]["namespace"], body["metadata"]["name"])
        if self._written.get(key) == body:
            return
        try:
            self._apply(key, body)
        except ApiException as exc:
            # Another test's namespace being deleted: its Service goes with it (a create there is
            # refused as NamespaceTerminating, a replace may find the slice gone).
            if exc.status == 404 or (exc.status == 403 and "NamespaceTerminating" in str(exc.body)):
                return
            raise
        self._written[key] = body

    def _apply(self, key: tuple[str, str], body: dict[str, Any]) -> None:
        try:
            current = self.discovery.read_namespaced_endpoint_slice(key[1], key[0])
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.discovery.create_namespaced_endpoint_slice(key[0], body)
        else:
            body["metadata"]["resourceVersion"] = current.metadata.resource_version
            self.discovery.replace_namespaced_endpoint_slice(key[1], key[0], body)
            del body["metadata"]["resourceVersion"]
