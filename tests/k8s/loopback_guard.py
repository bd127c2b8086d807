"""Network safety: every address a Prometheus could discover must be loopback (127.0.0.0/8).

kwok's default pod range is 10.0.0.0/24, a range that must never be a traffic target here;
scripts/testenv gives nodes and pods loopback addresses, and this check refuses to let a
Prometheus start (or keep running) if anything it could scrape says otherwise.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kubernetes import client

LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
# Node addresses that name an IP (Hostname and InternalDNS name, they do not address).
_IP_ADDRESS_TYPES = {"InternalIP", "ExternalIP"}


def _outside(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address) not in LOOPBACK
    except ValueError:
        return True  # not an IP at all: nothing to trust


def non_loopback_addresses(api_client: Any) -> list[str]:
    """'<what>: <address>' for each pod, node or endpoint address outside 127.0.0.0/8."""
    core = client.CoreV1Api(api_client)
    found: list[str] = []
    for pod in core.list_pod_for_all_namespaces().items:
        status = pod.status
        where = f"pod {pod.metadata.namespace}/{pod.metadata.name}"
        addresses = [status.pod_ip, status.host_ip]
        addresses += [ip.ip for ip in status.pod_ips or []] + [ip.ip for ip in status.host_ips or []]
        found += [f"{where}: {a}" for a in addresses if _outside(a)]
    for node in core.list_node().items:
        for address in node.status.addresses or []:
            if address.type in _IP_ADDRESS_TYPES and _outside(address.address):
                found.append(f"node {node.metadata.name}: {address.address}")
    slices = client.DiscoveryV1Api(api_client).list_endpoint_slice_for_all_namespaces().items
    for endpoint_slice in slices:
        where = f"endpointslice {endpoint_slice.metadata.namespace}/{endpoint_slice.metadata.name}"
        for endpoint in endpoint_slice.endpoints or []:
            found += [f"{where}: {a}" for a in endpoint.addresses or [] if _outside(a)]
    return found


class NotLoopbackError(RuntimeError):
    """Something a Prometheus would discover lies outside 127.0.0.0/8."""


def require_loopback(api_client: Any) -> None:
    found = non_loopback_addresses(api_client)
    if found:
        raise NotLoopbackError("refusing to run Prometheus: " + "; ".join(found[:10]))
