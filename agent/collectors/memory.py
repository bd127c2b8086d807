"""Memory and swap sizes from ``<procfs>/meminfo``, swap traffic from ``<procfs>/vmstat``."""

from __future__ import annotations

import os
from pathlib import Path

from esnode_agent.collector import STAGE_READ, NoDataError
from esnode_agent.collectors.procfs import read_optional, read_text
from esnode_agent.samples import SampleSink, counter, gauge

KIB = 1024

MEMORY_TOTAL = gauge("esnode_memory_total_bytes", "Usable physical memory (MemTotal).")
MEMORY_AVAILABLE = gauge(
    "esnode_memory_available_bytes",
    "Memory available for new work without swapping, as the kernel estimates it (MemAvailable).",
)
MEMORY_USED = gauge(
    "esnode_memory_used_bytes",
    "Memory in use: total minus available, as free(1) reports used (droppable page cache is not used).",
)
SWAP_TOTAL = gauge("esnode_swap_total_bytes", "Swap space configured (SwapTotal).")
SWAP_USED = gauge("esnode_swap_used_bytes", "Swap space in use (SwapTotal minus SwapFree).")
SWAP_IN = counter("esnode_swap_in_bytes_total", "Bytes read in from swap (pswpin pages times the page size).")
SWAP_OUT = counter(
    "esnode_swap_out_bytes_total", "Bytes written out to swap (pswpout pages times the page size)."
)


def parse_meminfo(text: str) -> dict[str, int]:
    """Fields in bytes; meminfo's "kB" is KiB. Fields without a unit (HugePages_*) are counts."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts:
            fields[key] = int(parts[0]) * (KIB if parts[1:] == ["kB"] else 1)
    return fields


def parse_vmstat(text: str, wanted: frozenset[str]) -> dict[str, int]:
    values: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        if key in wanted:
            values[key] = int(value)
    return values


class MemoryCollector:
    name = "memory"
    stage = STAGE_READ

    def __init__(self, procfs: Path, page_size_bytes: int | None = None) -> None:
        self._procfs = procfs
        self._page_size_bytes = page_size_bytes or os.sysconf("SC_PAGE_SIZE")

    def collect(self, sink: SampleSink) -> None:
        meminfo = parse_meminfo(read_text(self._procfs / "meminfo"))
        if "MemTotal" not in meminfo:
            raise NoDataError(f"{self._procfs / 'meminfo'} has no MemTotal")
        total = meminfo["MemTotal"]
        sink.add(MEMORY_TOTAL, total)
        available = meminfo.get("MemAvailable")  # absent before Linux 3.14: then so are used and available
        if available is not None:
            sink.add(MEMORY_AVAILABLE, available)
            sink.add(MEMORY_USED, total - available)
        if "SwapTotal" in meminfo and "SwapFree" in meminfo:
            sink.add(SWAP_TOTAL, meminfo["SwapTotal"])
            sink.add(SWAP_USED, meminfo["SwapTotal"] - meminfo["SwapFree"])
        self._add_swap_traffic(sink)

    def _add_swap_traffic(self, sink: SampleSink) -> None:
        text = read_optional(self._procfs / "vmstat")
        if text is None:
            return
        pages = parse_vmstat(text, frozenset({"pswpin", "pswpout"}))
        if "pswpin" in pages:
            sink.add(SWAP_IN, pages["pswpin"] * self._page_size_bytes)
        if "pswpout" in pages:
            sink.add(SWAP_OUT, pages["pswpout"] * self._page_size_bytes)
