"""Size and use of each mounted filesystem: mounts from procfs, figures from statvfs under the rootfs."""

from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.collectors.procfs import host_view, read_first
from esnode_agent.cycle.collector import STAGE_READ
from esnode_agent.cycle.samples import SampleSink, gauge

log = logging.getLogger(__name__)

# statvfs on a dead network mount blocks in the kernel; a few threads keep one such mount from
# holding up the rest.
STATVFS_WORKERS = 4
_OCTAL_ESCAPE = re.compile(r"\\([0-7]{3})")

DISK_TOTAL = gauge(
    "esnode_disk_total_bytes",
    "Size of the filesystem (blocks times fragment size).",
    "mount",
    "device",
    "fstype",
)
DISK_USED = gauge(
    "esnode_disk_used_bytes",
    "Space in use on the filesystem: size minus free blocks, including blocks reserved for root.",
    "mount",
    "device",
    "fstype",
)

Statvfs = Callable[[str], os.statvfs_result]


@dataclass(frozen=True, slots=True)
class Mount:
    device: str
    mount_point: str
    fstype: str


def _unescape(field: str) -> str:
    """mounts writes space, tab, newline and backslash as three-digit octal escapes."""
    if "\\" not in field:
        return field
    return _OCTAL_ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 3:
            mounts.append(Mount(_unescape(fields[0]), _unescape(fields[1]), fields[2]))
    return mounts


def select_mounts(mounts: list[Mount], fstype_exclude: re.Pattern[str]) -> list[Mount]:
    """Real filesystems, each reported once.

    A later mount on the same path hides the earlier one. A block device mounted again elsewhere
    (bind mounts, e.g. one per Kubernetes volume) shows the same figures, so only its first mount
    is kept: for the root device that is ``/``.
    """
    by_path: dict[str, Mount] = {}
    for mount in mounts:
        if not fstype_exclude.search(mount.fstype):
            by_path[mount.mount_point] = mount
    selected = []
    seen_devices: set[str] = set()
    for mount in by_path.values():
        if mount.device.startswith("/"):
            if mount.device in seen_devices:
                continue
            seen_devices.add(mount.device)
        selected.append(mount)
    return selected


class FilesystemCollector:
    """statvfs for each selected mount, in worker threads with a deadline.

    A mount whose statvfs outlives the deadline is skipped, and skipped again each cycle until that
    call returns, so a hung mount costs one worker thread and never the other mounts.
    """

    name = "filesystem"
    stage = STAGE_READ

    def __init__(
        self,
        procfs: Path,
        rootfs: Path,
        fstype_exclude: str,
        statvfs_timeout_seconds: float,
        statvfs: Statvfs = os.statvfs,
    ) -> None:
        self._mounts_paths = host_view(procfs, "mounts")
        self._rootfs = rootfs
        self._exclude = re.compile(fstype_exclude)
        self._timeout_seconds = statvfs_timeout_seconds
        self._statvfs = statvfs
        self._pool = ThreadPoolExecutor(max_workers=STATVFS_WORKERS, thread_name_prefix="statvfs")
        self._in_flight: dict[str, Future[os.statvfs_result]] = {}
        self._mounts_text = ""
        self._mounts: list[Mount] = []

    def collect(self, sink: SampleSink) -> None:
        mounts = self._selected_mounts()
        self._in_flight = {path: f for path, f in self._in_flight.items() if not f.done()}
        calls = {mount: self._start(mount) for mount in mounts if mount.mount_point not in self._in_flight}
        deadline = time.monotonic() + self._timeout_seconds
        for mount, call in calls.items():
            result = self._finish(mount, call, deadline)
            if result is not None:
                labels = {"mount": mount.mount_point, "device": mount.device, "fstype": mount.fstype}
                sink.add(DISK_TOTAL, result.f_blocks * result.f_frsize, **labels)
                sink.add(DISK_USED, (result.f_blocks - result.f_bfree) * result.f_frsize, **labels)

    def _selected_mounts(self) -> list[Mount]:
        """Parsed again only when the mount table changed, which on most nodes is rare."""
        text = self._read_mounts()
        if text != self._mounts_text:
            self._mounts = select_mounts(parse_mounts(text), self._exclude)
            self._mounts_text = text
        return self._mounts

    def _read_mounts(self) -> str:
        return read_first(self._mounts_paths)

    def _start(self, mount: Mount) -> Future[os.statvfs_result]:
        path = self._rootfs / mount.mount_point.lstrip("/")
        call = self._pool.submit(self._statvfs, str(path))
        self._in_flight[mount.mount_point] = call
        return call

    def _finish(
        self, mount: Mount, call: Future[os.statvfs_result], deadline: float
    ) -> os.statvfs_result | None:
        try:
            return call.result(timeout=max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            log.warning(
                "statvfs timed out; skipping the mount until it returns",
                extra={"mount": mount.mount_point, "device": mount.device},
            )
        except OSError as exc:
            log.debug("statvfs failed", extra={"mount": mount.mount_point, "error": str(exc)})
        return None
