"""Block-device counters from /proc/diskstats: units, device exclusion, real /proc against psutil."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
from collecting import collect

from esnode_agent.collectors.diskstats import DiskStatsCollector, parse_diskstats
from esnode_agent.config.model import DEFAULT_DISK_DEVICE_EXCLUDE
from esnode_agent.cycle.collector import NoDataError
from esnode_agent.cycle.samples import SampleIndex

FIXTURE_PROC = Path(__file__).parents[1] / "fixtures" / "host" / "proc"


def devices(samples: SampleIndex) -> set[str]:
    return {s.label("device") for s in samples.named("esnode_disk_read_bytes_total")}


def test_default_exclusion_keeps_whole_disks_and_drops_partitions_loop_and_zram() -> None:
    samples = collect(DiskStatsCollector(FIXTURE_PROC, DEFAULT_DISK_DEVICE_EXCLUDE))

    assert devices(samples) == {"nvme0n1", "sda", "dm-0"}


def test_bytes_are_512_byte_sectors_whatever_the_device() -> None:
    samples = collect(DiskStatsCollector(FIXTURE_PROC, DEFAULT_DISK_DEVICE_EXCLUDE))

    assert samples.value("esnode_disk_read_bytes_total", device="nvme0n1") == 9600000 * 512
    assert samples.value("esnode_disk_written_bytes_total", device="nvme0n1") == 12800000 * 512


def test_times_are_milliseconds_in_seconds_and_operations_are_counts() -> None:
    samples = collect(DiskStatsCollector(FIXTURE_PROC, DEFAULT_DISK_DEVICE_EXCLUDE))

    assert samples.value("esnode_disk_io_time_seconds_total", device="nvme0n1") == 150.0
    assert samples.value("esnode_disk_read_time_seconds_total", device="nvme0n1") == 60.0
    assert samples.value("esnode_disk_write_time_seconds_total", device="nvme0n1") == 240.0
    assert samples.value("esnode_disk_reads_completed_total", device="nvme0n1") == 120000
    assert samples.value("esnode_disk_writes_completed_total", device="nvme0n1") == 80000


def test_the_short_pre_4_18_line_format_is_read() -> None:
    samples = collect(DiskStatsCollector(FIXTURE_PROC, DEFAULT_DISK_DEVICE_EXCLUDE))

    assert samples.value("esnode_disk_io_time_seconds_total", device="sda") == 9.0
    assert samples.value("esnode_disk_written_bytes_total", device="sda") == 160000 * 512


def test_exclusion_is_the_configured_regex() -> None:
    samples = collect(DiskStatsCollector(FIXTURE_PROC, r"^(dm-|sd)"))

    assert devices(samples) == {"loop0", "nvme0n1", "nvme0n1p1", "zram0"}


def test_truncated_lines_are_skipped() -> None:
    assert parse_diskstats("   8 0 sda 1 2 3\n") == []


def test_missing_diskstats_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError):
        collect(DiskStatsCollector(tmp_path, DEFAULT_DISK_DEVICE_EXCLUDE))


def test_real_proc_devices_are_psutils_whole_disks() -> None:
    samples = collect(DiskStatsCollector(Path("/proc"), DEFAULT_DISK_DEVICE_EXCLUDE))
    after = psutil.disk_io_counters(perdisk=True)

    assert devices(samples) <= set(after)
    for device in devices(samples):
        read = samples.value("esnode_disk_read_bytes_total", device=device)
        assert read is not None
        assert 0 <= read <= after[device].read_bytes
