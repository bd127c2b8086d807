"""Block-device I/O counters from ``<procfs>/diskstats``, one set per whole device."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.collectors.procfs import parse_count, read_text
from esnode_agent.cycle.collector import STAGE_READ
from esnode_agent.cycle.samples import SampleSink, counter

# diskstats counts in 512-byte units whatever the device's own sector size.
SECTOR_BYTES = 512
MS_PER_SECOND = 1000

READ_BYTES = counter("esnode_disk_read_bytes_total", "Bytes read from the device.", "device")
WRITTEN_BYTES = counter("esnode_disk_written_bytes_total", "Bytes written to the device.", "device")
IO_TIME = counter(
    "esnode_disk_io_time_seconds_total", "Seconds the device had at least one I/O in flight.", "device"
)
READS_COMPLETED = counter("esnode_disk_reads_completed_total", "Reads completed by the device.", "device")
WRITES_COMPLETED = counter("esnode_disk_writes_completed_total", "Writes completed by the device.", "device")
READ_TIME = counter(
    "esnode_disk_read_time_seconds_total",
    "Seconds spent on completed reads, summed over all reads.",
    "device",
)
WRITE_TIME = counter(
    "esnode_disk_write_time_seconds_total",
    "Seconds spent on completed writes, summed over all writes.",
    "device",
)


@dataclass(frozen=True, slots=True)
class DiskStats:
    device: str
    reads_completed: int
    read_sectors: int
    read_time_ms: int
    writes_completed: int
    written_sectors: int
    write_time_ms: int
    io_time_ms: int


def parse_diskstats(text: str) -> list[DiskStats]:
    stats = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 14:  # major minor name + the eleven counters every kernel since 2.6 has
            continue
        reads, _, read_sectors, read_ms, writes, _, written_sectors, write_ms, _, io_ms = (
            parse_count(f) for f in fields[3:13]
        )
        stats.append(
            DiskStats(fields[2], reads, read_sectors, read_ms, writes, written_sectors, write_ms, io_ms)
        )
    return stats


class DiskStatsCollector:
    """Skips devices matching ``device_exclude`` (by default partitions, loop and ram devices)."""

    name = "diskstats"
    stage = STAGE_READ

    def __init__(self, procfs: Path, device_exclude: str) -> None:
        self._diskstats_path = procfs / "diskstats"
        self._exclude = re.compile(device_exclude)

    def collect(self, sink: SampleSink) -> None:
        for disk in parse_diskstats(read_text(self._diskstats_path)):
            if self._exclude.search(disk.device):
                continue
            device = disk.device
            sink.add(READ_BYTES, disk.read_sectors * SECTOR_BYTES, device=device)
            sink.add(WRITTEN_BYTES, disk.written_sectors * SECTOR_BYTES, device=device)
            sink.add(IO_TIME, disk.io_time_ms / MS_PER_SECOND, device=device)
            sink.add(READS_COMPLETED, disk.reads_completed, device=device)
            sink.add(WRITES_COMPLETED, disk.writes_completed, device=device)
            sink.add(READ_TIME, disk.read_time_ms / MS_PER_SECOND, device=device)
            sink.add(WRITE_TIME, disk.write_time_ms / MS_PER_SECOND, device=device)
