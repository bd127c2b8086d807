"""``esnode-operator uninstall``: delete the fleets the operator serves and wait until they are gone.

Run by the chart's pre-delete hook while the operator still runs: its finalizer releases each
fleet (its subjects in the node-status and auth-delegator bindings, the Node conditions) and the
garbage collector takes the children. Deleted in the foreground, a fleet goes only after its DaemonSets, their pods, its
ConfigMap, Service, ServiceAccount, Role, RoleBinding and ServiceMonitor have gone; its EsnodeNodes
(which do not block their owner) are waited for too. Only then does Helm delete the operator and
its RBAC, so no privileged DaemonSet is left behind with nobody to remove it. Exit 1 when anything
remains at the deadline: the hook fails, `helm uninstall` stops, and the operator keeps running.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from esnode_operator.kube import Kube, KubeError
from esnode_operator.names import API_VERSION, KIND, NODE_KIND

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0


def _listed(kube: Kube, kind: str, namespaces: Sequence[str]) -> list[dict[str, Any]]:
    """Every object of the kind in the namespaces (all of them when none is named)."""
    if not namespaces:
        return kube.list(API_VERSION, kind)
    return [obj for namespace in namespaces for obj in kube.list(API_VERSION, kind, namespace)]


def _ref(obj: dict[str, Any]) -> str:
    return f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _owned(obj: dict[str, Any], uids: set[str]) -> bool:
    return any(ref.get("uid") in uids for ref in obj["metadata"].get("ownerReferences") or [])


class Uninstall:
    def __init__(
        self,
        kube: Kube,
        namespaces: Sequence[str],
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._kube = kube
        self._namespaces = namespaces
        self._clock = clock
        self._sleep = sleep
        self._uids: set[str] = set()  # the fleets deleted, whose EsnodeNodes are waited for

    def run(self, wait_seconds: float) -> list[str]:
        """Delete and wait; what is still there at the deadline (empty: everything is gone)."""
        deadline = self._clock() + wait_seconds
        remaining: list[str] = []
        while True:
            try:
                remaining = self._round()
            except KubeError as exc:  # an apiserver hiccup is no verdict: again, until the deadline
                if exc.status not in (0, 429) and exc.status < 500:
                    raise
                log.warning("fleets not listed or deleted, retrying", extra={"error": str(exc)})
            else:
                if not remaining:
                    return []
            if self._clock() >= deadline:
                return remaining
            self._sleep(POLL_SECONDS)

    def _round(self) -> list[str]:
        fleets = _listed(self._kube, KIND, self._namespaces)
        for fleet in fleets:
            self._uids.add(fleet["metadata"]["uid"])
            if not fleet["metadata"].get("deletionTimestamp"):
                self._delete(fleet)
        reports = [r for r in _listed(self._kube, NODE_KIND, self._namespaces) if _owned(r, self._uids)]
        return sorted(_ref(obj) for obj in [*fleets, *reports])

    def _delete(self, fleet: dict[str, Any]) -> None:
        try:
            self._kube.delete(fleet, propagation="Foreground")
        except KubeError as exc:
            if exc.status not in (404, 409):  # gone already, or replaced meanwhile (the next round sees it)
                raise
            return
        log.info("fleet deleted, waiting for the operator to release it", extra={"fleet": _ref(fleet)})
