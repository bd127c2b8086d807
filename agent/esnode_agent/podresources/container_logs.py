"""Container ID -> namespace, pod and container names, from the kubelet's container log links.

For every container it starts, the kubelet links ``/var/log/containers/<pod>_<namespace>_<container>-
<container ID>.log`` to the container's log (the files log shippers read). Pod, namespace and
container names cannot hold ``_``, and the ID is the runtime's 64 hex digits, the same as in the
container's cgroup, so a name parses without ambiguity. The folder is listed again only when an ID
is missing, at most once per ``relist_seconds``; a missing folder gives no names.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from esnode_agent.podresources.pod_ref import PodRef

log = logging.getLogger(__name__)

CONTAINER_LOG_FOLDER = Path("var/log/containers")  # under the host's root
_LINK_NAME = re.compile(r"^([^_]+)_([^_]+)_([^_]+)-([0-9a-f]{64})\.log$")


def names_from_links(file_names: list[str]) -> dict[str, PodRef]:
    """Container ID -> its names, from the link names (others are skipped)."""
    names = {}
    for file_name in file_names:
        match = _LINK_NAME.match(file_name)
        if match:
            pod, namespace, container, container_id = match.groups()
            names[container_id] = PodRef(namespace, pod, container)
    return names


class ContainerLogNames:
    """The names of containers by runtime ID, listed from the host's container log folder."""

    def __init__(
        self, rootfs: Path, relist_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._folder = rootfs / CONTAINER_LOG_FOLDER
        self._relist_seconds = relist_seconds
        self._clock = clock
        self._names: Mapping[str, PodRef] = {}
        self._listed_at: float | None = None
        self._readable: bool | None = None  # logged when it changes

    def lookup(self, container_id: str) -> PodRef | None:
        names = self._names.get(container_id)
        if names is None and self._may_relist():
            self._relist()
            names = self._names.get(container_id)
        return names

    def _may_relist(self) -> bool:
        return self._listed_at is None or self._clock() - self._listed_at >= self._relist_seconds

    def _relist(self) -> None:
        self._listed_at = self._clock()
        try:
            file_names = os.listdir(self._folder)
        except OSError as exc:
            self._names = {}
            self._note_readable(False, error=str(exc))
            return
        self._names = names_from_links(file_names)
        self._note_readable(True, containers=len(self._names))

    def _note_readable(self, readable: bool, **fields: object) -> None:
        if readable != self._readable:
            message = "container log links read" if readable else "container log links unreadable"
            log.info(message, extra={"folder": str(self._folder), **fields})
            self._readable = readable
