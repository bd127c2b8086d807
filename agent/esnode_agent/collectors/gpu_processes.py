"""Per-process GPU use: each GPU's compute processes, with the pod and container each runs in.

Bounded cardinality: the ``top_n`` processes per GPU holding the most memory get series; the rest
are counted in esnode_gpu_processes_left_out_total. A process's pod UID and container ID come from
its cgroup (the agent runs in the host's PID namespace); its names from the kubelet's container
log links by container ID, else, for a process in a pod on a device held by one container only,
that holder (pod-resources). A process whose cgroup cannot be read (it exited) is skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.cycle.samples import SampleSink, counter, gauge
from esnode_agent.gpu.backend import GpuIdentity, GpuProcess
from esnode_agent.podresources.container_logs import ContainerLogNames
from esnode_agent.podresources.pod_ref import PodRef
from esnode_agent.podresources.process_cgroup import PodContainer, read_pod_container

log = logging.getLogger(__name__)

PROCESS_LABELS = (
    "gpu",
    "uuid",
    "mig_uuid",
    "pid",
    "pod_uid",
    "container_id",
    "namespace",
    "pod",
    "container",
)
PROCESS_MEMORY_USED = gauge(
    "esnode_gpu_process_memory_used_bytes",
    "GPU memory the process holds (NVML's compute running processes); absent where the driver "
    "cannot say. mig_uuid names its MIG device (empty on a whole GPU); pod_uid and container_id "
    "come from its cgroup, namespace, pod and container are empty where unknown.",
    *PROCESS_LABELS,
)
PROCESS_SM_UTILIZATION = gauge(
    "esnode_gpu_process_sm_utilization_ratio",
    "Fraction of the time the process's kernels ran on the GPU's SMs: the mean of NVML's process "
    "samples since the last cycle, 0 when it left none; absent in MIG mode and where unsupported.",
    *PROCESS_LABELS,
)
PROCESS_MEMORY_UTILIZATION = gauge(
    "esnode_gpu_process_memory_utilization_ratio",
    "Fraction of the time the process read or wrote GPU memory, sampled as "
    "esnode_gpu_process_sm_utilization_ratio is.",
    *PROCESS_LABELS,
)
PROCESSES = gauge(
    "esnode_gpu_processes",
    "Compute processes on the GPU (on its MIG devices, in MIG mode), shown or left out.",
    "gpu",
    "uuid",
)
PROCESSES_LEFT_OUT = counter(
    "esnode_gpu_processes_left_out_total",
    "Processes beyond gpu_process_top_n (ranked by memory) that got no per-process series, added "
    "up over collection cycles; rising means the bound bites.",
    "gpu",
    "uuid",
)
_NO_POD = PodRef("", "", "")


@dataclass(frozen=True, slots=True)
class ShownProcess:
    """A process with series this cycle, and whose it is."""

    process: GpuProcess
    place: PodContainer | None  # None: a host process, in no pod
    names: PodRef


class GpuProcessWriter:
    """Writes the per-process series of each GPU, at most ``top_n`` processes per GPU."""

    def __init__(self, top_n: int, procfs: Path, logs: ContainerLogNames | None) -> None:
        self._top_n = top_n
        self._procfs = procfs
        self._logs = logs
        self._left_out: dict[str, float] = {}  # GPU UUID -> processes left out so far
        self._skip_logged = False

    def add(
        self,
        sink: SampleSink,
        identity: GpuIdentity,
        processes: Sequence[GpuProcess],
        sharers: Mapping[str, tuple[PodRef, ...]],
    ) -> list[ShownProcess]:
        """The GPU's series; returns the processes shown."""
        gpu_labels = {"gpu": str(identity.index), "uuid": identity.uuid}
        shown, examined = self._top(identity, processes, sharers)
        left_out = self._left_out.get(identity.uuid, 0.0) + len(processes) - examined
        self._left_out[identity.uuid] = left_out
        sink.add(PROCESSES, len(processes), **gpu_labels)
        sink.add(PROCESSES_LEFT_OUT, left_out, **gpu_labels)
        for entry in shown:
            self._add_process(sink, entry, gpu_labels)
        return shown

    def _top(
        self,
        identity: GpuIdentity,
        processes: Sequence[GpuProcess],
        sharers: Mapping[str, tuple[PodRef, ...]],
    ) -> tuple[list[ShownProcess], int]:
        """The top processes by memory whose cgroup could be read, and how many were looked at."""
        ranked = sorted(processes, key=lambda p: (-(p.memory_used_bytes or -1.0), p.pid, p.mig_uuid))
        shown: list[ShownProcess] = []
        examined = 0
        for process in ranked:
            if len(shown) == self._top_n:
                break
            examined += 1
            try:
                place = read_pod_container(self._procfs, process.pid)
            except OSError as exc:  # ProcessLookupError: it exited; else unreadable
                self._log_skipped(process.pid, exc)
                continue
            holders = _device_holders(identity, process, sharers)
            shown.append(ShownProcess(process, place, self._names(place, holders)))
        return shown, examined

    def _names(self, place: PodContainer | None, holders: tuple[PodRef, ...]) -> PodRef:
        if place is None:
            return _NO_POD
        if place.container_id and self._logs is not None:
            named = self._logs.lookup(place.container_id)
            if named is not None:
                return named
        return holders[0] if len(holders) == 1 else _NO_POD

    def _add_process(self, sink: SampleSink, entry: ShownProcess, gpu_labels: dict[str, str]) -> None:
        process, place, names = entry.process, entry.place, entry.names
        labels = {
            **gpu_labels,
            "mig_uuid": process.mig_uuid,
            "pid": str(process.pid),
            "pod_uid": place.pod_uid if place else "",
            "container_id": place.container_id if place else "",
            "namespace": names.namespace,
            "pod": names.pod,
            "container": names.container,
        }
        for spec, value in (
            (PROCESS_MEMORY_USED, process.memory_used_bytes),
            (PROCESS_SM_UTILIZATION, process.sm_utilization_ratio),
            (PROCESS_MEMORY_UTILIZATION, process.memory_utilization_ratio),
        ):
            if value is not None:
                sink.add(spec, value, **labels)

    def _log_skipped(self, pid: int, error: OSError) -> None:
        if not self._skip_logged:
            log.info(
                "GPU process's cgroup unreadable, skipped (it exited, or the agent does not share "
                "the host's PID namespace)",
                extra={"pid": pid, "procfs": str(self._procfs), "error": repr(error)},
            )
            self._skip_logged = True


def _device_holders(
    identity: GpuIdentity, process: GpuProcess, sharers: Mapping[str, tuple[PodRef, ...]]
) -> tuple[PodRef, ...]:
    if process.mig_uuid:
        return sharers.get(process.mig_uuid, ())
    return sharers.get(identity.uuid) or sharers.get(str(identity.index), ())
