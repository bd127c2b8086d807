"""Memory and swap sizes from ``<procfs>/meminfo``, swap traffic from ``<procfs>/vmstat``."""

from __future__ import annotations

import os
import re
from pathlib import Path

from esnode_agent.collectors.procfs import parse_count, read_optional, read_text
from esnode_agent.cycle.collector import STAGE_READ, NoDataError
from esnode_agent.cycle.samples import SampleSink, counter, gauge

KIB = 1024
_MEMINFO_FIELDS = re.compile(r"^(MemTotal|MemAvailable|SwapTotal|SwapFree):\s+(\d+) kB$", re.MULTILINE)

MEMORY_TOTAL = gauge("esnode_memory_total_bytes", "Usable physical memory (MemTotal).")
MEMORY_AVAILABLE = gauge(
    "esnode_memory_available_bytes",
    "Memory available for new work without swapping, as the kernel estimates it (MemAvailable).",
)
MEMORY_USED = gauge(
    "esnode_memory_used_bytes",
    "Memory in use: total minus available, as free(1) of procps-ng 4 reports used (droppable cache is free).",
)
SWAP_TOTAL = gauge("esnode_swap_total_bytes", "Swap space configured (SwapTotal).")
SWAP_USED = gauge("esnode_swap_used_bytes", "Swap space in use (SwapTotal minus SwapFree).")
SWAP_IN = counter("esnode_swap_in_bytes_total", "Bytes read in from swap (pswpin pages times the page size).")
SWAP_OUT = counter(
    "esnode_swap_out_bytes_total", "Bytes written out to swap (pswpout pages times the page size)."
)


def parse_meminfo(text: str) -> dict[str, int]:
    """The fields reported here, in bytes; meminfo's "kB" is KiB. A regex scan beats splitting every line."""
    return {key: int(kib) * KIB for key, kib in _MEMINFO_FIELDS.findall(text)}


def parse_swap_pages(text: str) -> dict[str, int]:
    """pswpin and pswpout from vmstat: pages swapped in and out since boot.

    Found with str.find: vmstat has some 200 lines and these are two of them.
    """
    pages = {}
    for key in ("pswpin", "pswpout"):
        start = text.find(f"\n{key} ")
        if start >= 0:
            end = text.find("\n", start + 1)
            pages[key] = parse_count(text[start + len(key) + 2 : end if end >= 0 else None])
    return pages


class MemoryCollector:
    name = "memory"
    stage = STAGE_READ

    def __init__(self, procfs: Path, page_size_bytes: int | None = None) -> None:
        self._meminfo_path = procfs / "meminfo"
        self._vmstat_path = procfs / "vmstat"
        self._page_size_bytes = page_size_bytes or os.sysconf("SC_PAGE_SIZE")

    def collect(self, sink: SampleSink) -> None:
        meminfo = parse_meminfo(read_text(self._meminfo_path))
        if "MemTotal" not in meminfo:
            raise NoDataError(f"{self._meminfo_path} has no MemTotal")
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
        text = read_optional(self._vmstat_path)
        if text is None:
            return
        pages = parse_swap_pages(text)
        if "pswpin" in pages:
            sink.add(SWAP_IN, pages["pswpin"] * self._page_size_bytes)
        if "pswpout" in pages:
            sink.add(SWAP_OUT, pages["pswpout"] * self._page_size_bytes)
