"""Filesystem size and use: mount selection, statvfs arithmetic, roots, and mounts that fail or hang."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from collecting import collect

from esnode_agent.collectors.filesystem import FilesystemCollector, Mount, parse_mounts, select_mounts
from esnode_agent.config.model import DEFAULT_FSTYPE_EXCLUDE
from esnode_agent.cycle.collector import NoDataError
from esnode_agent.cycle.samples import SampleIndex

FIXTURE_PROC = Path(__file__).parents[1] / "fixtures" / "host" / "proc"
BLOCK = 4096


def fs(blocks: int, bfree: int, bavail: int, frsize: int = BLOCK) -> os.statvfs_result:
    return os.statvfs_result((frsize, frsize, blocks, bfree, bavail, 1000, 500, 500, 0, 255))


class FakeStatvfs:
    """statvfs by path; a path in ``hang`` blocks until ``release`` is set, one in ``fail`` raises."""

    def __init__(self, results: dict[str, os.statvfs_result]) -> None:
        self.results = results
        self.calls: list[str] = []
        self.hang: set[str] = set()
        self.fail: set[str] = set()
        self.release = threading.Event()

    def __call__(self, path: str) -> os.statvfs_result:
        self.calls.append(path)
        if path in self.hang:
            self.release.wait(10)
        if path in self.fail:
            raise PermissionError(13, "Permission denied", path)
        return self.results[path]


@pytest.fixture
def statvfs() -> Iterator[FakeStatvfs]:
    fake = FakeStatvfs(
        {
            "/host": fs(blocks=1000, bfree=250, bavail=200),
            "/host/boot/efi": fs(blocks=100, bfree=90, bavail=90, frsize=512),
            "/host/mnt/fast data": fs(blocks=5000, bfree=5000, bavail=5000),
            "/host/mnt/home": fs(blocks=2000, bfree=1000, bavail=900),
        }
    )
    yield fake
    fake.release.set()


def collector_for(
    statvfs: FakeStatvfs, procfs: Path = FIXTURE_PROC, timeout: float = 1.0
) -> FilesystemCollector:
    return FilesystemCollector(procfs, Path("/host"), DEFAULT_FSTYPE_EXCLUDE, timeout, statvfs=statvfs)


def mounts(samples: SampleIndex) -> set[str]:
    return {s.label("mount") for s in samples.named("esnode_disk_total_bytes")}


def test_real_filesystems_once_each_with_pseudo_and_bind_mounts_left_out(statvfs: FakeStatvfs) -> None:
    samples = collect(collector_for(statvfs))

    # proc, sysfs, devtmpfs, tmpfs, cgroup2 and overlay are excluded by type; the kubelet volume is
    # a second mount of /dev/sda1; /mnt/home was mounted over by /dev/sdb1.
    assert mounts(samples) == {"/", "/boot/efi", "/mnt/fast data", "/mnt/home"}
    assert samples.value("esnode_disk_total_bytes", mount="/mnt/home", device="/dev/sdb1", fstype="ext4") == (
        2000 * BLOCK
    )


def test_used_is_blocks_minus_free_times_fragment_size(statvfs: FakeStatvfs) -> None:
    samples = collect(collector_for(statvfs))

    root = {"mount": "/", "device": "/dev/sda1", "fstype": "ext4"}
    assert samples.value("esnode_disk_total_bytes", **root) == 1000 * BLOCK
    assert samples.value("esnode_disk_used_bytes", **root) == (1000 - 250) * BLOCK
    assert samples.value("esnode_disk_total_bytes", mount="/boot/efi") == 100 * 512
    assert samples.value("esnode_disk_used_bytes", mount="/boot/efi") == 10 * 512


def test_mount_points_are_read_under_the_rootfs_and_labelled_as_the_host_sees_them(
    statvfs: FakeStatvfs,
) -> None:
    samples = collect(collector_for(statvfs))

    assert sorted(statvfs.calls) == ["/host", "/host/boot/efi", "/host/mnt/fast data", "/host/mnt/home"]
    assert samples.value("esnode_disk_used_bytes", mount="/mnt/fast data", fstype="xfs") == 0


def test_falls_back_to_our_own_mounts_without_pid_1(tmp_path: Path, statvfs: FakeStatvfs) -> None:
    (tmp_path / "mounts").write_text((FIXTURE_PROC / "mounts").read_text())
    statvfs.results["/host/etc/hosts"] = fs(blocks=10, bfree=5, bavail=5)
    samples = collect(collector_for(statvfs, procfs=tmp_path))

    assert mounts(samples) == {"/etc/hosts"}


def test_missing_mounts_is_no_data(tmp_path: Path, statvfs: FakeStatvfs) -> None:
    with pytest.raises(NoDataError):
        collect(collector_for(statvfs, procfs=tmp_path))


def test_a_failing_statvfs_skips_only_that_mount(statvfs: FakeStatvfs) -> None:
    statvfs.fail.add("/host/boot/efi")
    samples = collect(collector_for(statvfs))

    assert mounts(samples) == {"/", "/mnt/fast data", "/mnt/home"}


def test_a_hung_statvfs_skips_that_mount_until_it_returns(statvfs: FakeStatvfs) -> None:
    statvfs.hang.add("/host/mnt/home")
    collector = collector_for(statvfs, timeout=0.3)  # ample for the healthy mounts on a loaded machine

    first = collect(collector)
    second = collect(collector)
    assert mounts(first) == mounts(second) == {"/", "/boot/efi", "/mnt/fast data"}
    assert statvfs.calls.count("/host/mnt/home") == 1, "a hung mount is not asked again while it hangs"

    statvfs.hang.clear()
    statvfs.release.set()
    for _ in range(200):
        if "/mnt/home" in mounts(collect(collector)):
            break
        time.sleep(0.01)
    else:
        pytest.fail("the mount did not come back after its statvfs returned")
    assert statvfs.calls.count("/host/mnt/home") == 2


def test_select_mounts_keeps_the_first_mount_of_a_device_and_every_network_share() -> None:
    selected = select_mounts(
        [
            Mount("/dev/sda1", "/", "ext4"),
            Mount("/dev/sda1", "/var/lib/docker", "ext4"),
            Mount("nas:/a", "/mnt/a", "nfs4"),
            Mount("nas:/b", "/mnt/b", "nfs4"),
        ],
        re.compile(DEFAULT_FSTYPE_EXCLUDE),
    )

    assert [m.mount_point for m in selected] == ["/", "/mnt/a", "/mnt/b"]


def test_parse_mounts_decodes_octal_escapes() -> None:
    parsed = parse_mounts("/dev/sdc1 /mnt/a\\040b\\011c\\134d ext4 rw 0 0\n")

    assert parsed == [Mount("/dev/sdc1", "/mnt/a b\tc\\d", "ext4")]


def test_real_root_filesystem_matches_psutil() -> None:
    collector = FilesystemCollector(Path("/proc"), Path("/"), DEFAULT_FSTYPE_EXCLUDE, 2.0)
    samples = collect(collector)

    assert "/" in mounts(samples)
    assert samples.value("esnode_disk_total_bytes", mount="/") == psutil.disk_usage("/").total
    used = samples.value("esnode_disk_used_bytes", mount="/")
    assert used is not None
    assert 0 < used <= psutil.disk_usage("/").total
