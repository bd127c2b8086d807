"""The few Kubernetes API calls the operator makes, on plain dicts, over the official client.

Synchronous (the official client blocks): async callers go through ``asyncio.to_thread``.
Server-side apply is a PATCH with ``application/apply-patch+yaml`` (JSON is valid YAML), for
objects and for status alike.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import urllib3
from kubernetes import client, config

from esnode_operator.names import API_VERSION, FIELD_MANAGER, KIND, NODE_KIND, NODE_PLURAL, PLURAL

REQUEST_TIMEOUT_SECONDS = (5.0, 30.0)  # connect, read
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

# (apiVersion, kind) -> (plural, namespaced)
_RESOURCES: dict[tuple[str, str], tuple[str, bool]] = {
    ("v1", "ConfigMap"): ("configmaps", True),
    ("v1", "ServiceAccount"): ("serviceaccounts", True),
    ("v1", "Service"): ("services", True),
    ("v1", "Pod"): ("pods", True),
    ("v1", "Node"): ("nodes", False),
    ("apps/v1", "DaemonSet"): ("daemonsets", True),
    ("rbac.authorization.k8s.io/v1", "Role"): ("roles", True),
    ("rbac.authorization.k8s.io/v1", "RoleBinding"): ("rolebindings", True),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"): ("clusterrolebindings", False),
    ("v1", "Event"): ("events", True),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("servicemonitors", True),
    (API_VERSION, KIND): (PLURAL, True),
    (API_VERSION, NODE_KIND): (NODE_PLURAL, True),
}


@dataclass
class KubeError(Exception):
    """A response other than 2xx: the HTTP status and the apiserver's own explanation.

    Status 0 is no response at all (connection refused or reset, timeout): NETWORK_ERROR.
    """

    status: int
    reason: str
    message: str
    causes: list[dict[str, Any]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.reason}: {self.message}"


NETWORK_ERROR = 0


def resource_path(api_version: str, kind: str, namespace: str | None = None, name: str | None = None) -> str:
    plural, namespaced = _RESOURCES[(api_version, kind)]
    root = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    parts = [root]
    if namespaced and namespace is not None:
        parts += ["namespaces", namespace]
    parts.append(plural)
    if name is not None:
        parts.append(name)
    return "/".join(parts)


def object_path(obj: Mapping[str, Any]) -> str:
    metadata = obj["metadata"]
    return resource_path(obj["apiVersion"], obj["kind"], metadata.get("namespace"), metadata["name"])


def new_api_client() -> client.ApiClient:
    """In a pod: its ServiceAccount; elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    except config.ConfigException:
        config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


class Kube:
    def __init__(self, api_client: client.ApiClient) -> None:
        self._api = api_client

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        accept: str = "application/json",
    ) -> dict[str, Any]:
        serialized = self._api.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Content-Type": content_type, "Accept": accept},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = self._api.call_api(*serialized, _request_timeout=REQUEST_TIMEOUT_SECONDS)
        except urllib3.exceptions.HTTPError as exc:  # no answer: the callers retry like a 5xx
            raise KubeError(NETWORK_ERROR, type(exc).__name__, str(exc)[:500]) from exc
        data: bytes = response.read() or b"{}"  # type: ignore[no-untyped-call]
        if not 200 <= response.status <= 299:
            raise _error(response.status, data)
        parsed: dict[str, Any] = json.loads(data)
        return parsed

    def apply(self, obj: Mapping[str, Any], *, dry_run: bool = False) -> dict[str, Any]:
        """Server-side apply as the operator's field manager, taking over conflicting fields."""
        query = {"fieldManager": FIELD_MANAGER, "force": "true"}
        if dry_run:
            query["dryRun"] = "All"
        return self.request(
            "PATCH", object_path(obj), query=query, body=obj, content_type="application/apply-patch+yaml"
        )

    def get(self, api_version: str, kind: str, namespace: str | None, name: str) -> dict[str, Any]:
        return self.request("GET", resource_path(api_version, kind, namespace, name))

    def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        metadata_only: bool = False,
    ) -> list[dict[str, Any]]:
        """``metadata_only``: each item's metadata alone (PartialObjectMetadata), for names and labels."""
        query = {}
        if label_selector:
            query["labelSelector"] = label_selector
        if field_selector:
            query["fieldSelector"] = field_selector
        if limit is not None:
            query["limit"] = str(limit)
        accept = METADATA_ONLY if metadata_only else "application/json"
        path = resource_path(api_version, kind, namespace)
        items: list[dict[str, Any]] = self.request("GET", path, query=query, accept=accept).get("items") or []
        for item in items:  # a list's items leave out what the list's own kind implies
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def delete(self, obj: Mapping[str, Any], propagation: str = "Background") -> None:
        """Delete exactly this object (uid precondition), its dependents in the background (or, with
        Foreground, before the object itself goes)."""
        body = {"propagationPolicy": propagation, "preconditions": {"uid": obj["metadata"]["uid"]}}
        self.request("DELETE", object_path(obj), body=body)

    def apply_status(
        self, obj: Mapping[str, Any], status: Mapping[str, Any], field_manager: str = FIELD_MANAGER
    ) -> dict[str, Any]:
        """Server-side apply of the status fields ``field_manager`` owns; others' fields stay.

        Conditions are a list keyed by type, so each manager's conditions survive the other's apply.
        """
        metadata = obj["metadata"]
        body = {
            "apiVersion": obj["apiVersion"],
            "kind": obj["kind"],
            "metadata": {"name": metadata["name"], "namespace": metadata["namespace"]},
            "status": status,
        }
        return self.request(
            "PATCH",
            object_path(obj) + "/status",
            query={"fieldManager": field_manager, "force": "true"},
            body=body,
            content_type="application/apply-patch+yaml",
        )


def _error(status: int, data: bytes) -> KubeError:
    try:
        parsed = json.loads(data)
    except ValueError:
        return KubeError(status, "", data.decode(errors="replace")[:500])
    if not isinstance(parsed, dict):
        return KubeError(status, "", str(parsed)[:500])
    causes = (parsed.get("details") or {}).get("causes") or []
    return KubeError(status, parsed.get("reason", ""), parsed.get("message", ""), causes)
