"""Which pod and container a host process runs in, from its ``/proc/<pid>/cgroup``.

The kubelet puts every container in a cgroup under its pod's, named after the pod's UID; the
runtime names the container's cgroup after the container ID. The shapes (cgroup v1 and v2 alike):

- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice/
  cri-containerd-<id>.scope`` (``crio-<id>.scope`` for CRI-O, ``docker-<id>.scope``), the UID's
  dashes written as underscores; guaranteed pods have no QoS level (``kubepods-pod<uid>.slice``);
- cgroupfs driver: ``/kubepods/burstable/pod<uid>/<id>`` (``crio-<id>`` for CRI-O);
- containerd's systemd form below a service: ``...kubepods-besteffort-pod<uid>.slice:cri-containerd:<id>``.

A cgroup v1 file has a line per hierarchy, v2 one ``0::`` line; the first line naming a pod wins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# A pod UID: an RFC 4122 UUID (dashes, or underscores in systemd unit names), or 32 hex digits
# (static pods' UID is a hash of their manifest).
_UID = r"[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32}"
_POD = re.compile(rf"(?:^|[/-])pod({_UID})(?:\.slice)?(?=/|:|$)")
# The container's cgroup below the pod's (a process may sit in a sub-cgroup of it); conmon's
# (crio-conmon-<id>) is not the container.
_CONTAINER = re.compile(
    r"(?:/(?:cri-containerd-|crio-|docker-)?|:cri-containerd:|:crio:|:docker:)([0-9a-f]{64})(?:\.scope)?(?=/|$)"
)


@dataclass(frozen=True, slots=True)
class PodContainer:
    """Where a process runs: its pod's UID (with dashes) and its container's runtime ID (64 hex
    digits; empty for a process in the pod's own cgroup)."""

    pod_uid: str
    container_id: str


def pod_container(cgroup_text: str) -> PodContainer | None:
    """The pod and container of a ``/proc/<pid>/cgroup`` file's text; None for a process in no pod."""
    for line in cgroup_text.splitlines():
        _, _, path = _fields(line)
        found = _POD.search(path)
        if found is None:
            continue
        container = _CONTAINER.search(path, found.end())
        return PodContainer(
            pod_uid=found.group(1).replace("_", "-"), container_id=container.group(1) if container else ""
        )
    return None


def _fields(line: str) -> tuple[str, str, str]:
    """``hierarchy-ID:controllers:path``; the path may itself hold colons (containerd's form)."""
    hierarchy, _, rest = line.partition(":")
    controllers, _, path = rest.partition(":")
    return hierarchy, controllers, path.strip()


def read_pod_container(procfs: Path, pid: int) -> PodContainer | None:
    """The process's pod and container; None for a host process. Raises ProcessLookupError when the
    process is not in this procfs (it exited, or the agent does not see the host's PIDs)."""
    try:
        text = (procfs / str(pid) / "cgroup").read_text(encoding="utf-8", errors="replace")
    except (FileNotFoundError, ProcessLookupError) as exc:
        raise ProcessLookupError(pid) from exc
    return pod_container(text)
