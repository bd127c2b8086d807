"""Per-CPU time by mode, per-CPU usage over the last interval, and load average, from procfs."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.collectors.procfs import parse_count, read_optional, read_text
from esnode_agent.cycle.collector import STAGE_READ
from esnode_agent.cycle.samples import SampleSink, counter, gauge

# The first eight columns of a cpuN line in /proc/stat. guest and guest_nice follow them but are
# left out, as node_exporter's node_cpu_seconds_total does: the kernel already counts guest time in user.
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
IDLE_INDEXES = (MODES.index("idle"), MODES.index("iowait"))
LOAD_WINDOWS = ("1m", "5m", "15m")

CPU_SECONDS = counter(
    "esnode_cpu_seconds_total",
    "Seconds each logical CPU spent in each mode (node_cpu_seconds_total semantics; guest time is in user).",
    "cpu",
    "mode",
)
CPU_USAGE = gauge(
    "esnode_cpu_usage_percent",
    "Share of the last collection interval each logical CPU was not idle or waiting on I/O, 0..100.",
    "cpu",
)
LOAD_AVERAGE = gauge("esnode_load_average", "System load average over the window.", "window")


@dataclass(frozen=True, slots=True)
class CpuTimes:
    """One CPU's clock ticks per mode, in MODES order."""

    ticks: tuple[int, ...]

    @property
    def total(self) -> int:
        return sum(self.ticks)

    @property
    def idle(self) -> int:
        return sum(self.ticks[i] for i in IDLE_INDEXES)


def parse_stat(text: str) -> dict[str, CpuTimes]:
    """Per-CPU times keyed by CPU number as a string; the aggregate ``cpu`` line is skipped."""
    times: dict[str, CpuTimes] = {}
    for line in text.splitlines():
        if not line.startswith("cpu") or line[3:4] in ("", " "):
            continue  # the aggregate line, or the rest of the file (intr, ctxt, ...)
        name, *fields = line.split()
        if len(fields) >= len(MODES):  # kernels since 2.6.11 have all eight
            times[name[3:]] = CpuTimes(tuple(parse_count(f) for f in fields[: len(MODES)]))
    return times


def usage_percent(previous: CpuTimes, current: CpuTimes) -> float | None:
    """Busy share between two readings; None when no tick elapsed (nothing to divide by)."""
    total = current.total - previous.total
    if total <= 0:
        return None
    busy = 100.0 * (1.0 - (current.idle - previous.idle) / total)
    return min(100.0, max(0.0, busy))  # iowait may step backwards on some kernels


def parse_loadavg(text: str) -> tuple[float, float, float]:
    one, five, fifteen = (float(v) for v in text.split()[:3])
    if not all(0 <= v < math.inf for v in (one, five, fifteen)):  # float() takes nan, inf and signs
        raise ValueError(f"not load averages: {text[:64]!r}")
    return one, five, fifteen


class CpuCollector:
    """Reads ``<procfs>/stat`` and ``<procfs>/loadavg``; keeps the previous reading for usage."""

    name = "cpu"
    stage = STAGE_READ

    def __init__(self, procfs: Path, ticks_per_second: int | None = None) -> None:
        self._stat_path = procfs / "stat"
        self._loadavg_path = procfs / "loadavg"
        self._ticks_per_second = ticks_per_second or os.sysconf("SC_CLK_TCK")  # USER_HZ
        self._previous: dict[str, CpuTimes] = {}

    def collect(self, sink: SampleSink) -> None:
        current = parse_stat(read_text(self._stat_path))
        for cpu, times in current.items():
            for mode, ticks in zip(MODES, times.ticks, strict=True):
                sink.add(CPU_SECONDS, ticks / self._ticks_per_second, cpu=cpu, mode=mode)
            previous = self._previous.get(cpu)
            busy = usage_percent(previous, times) if previous is not None else None
            if busy is not None:
                sink.add(CPU_USAGE, busy, cpu=cpu)
        self._previous = current
        self._add_load(sink)

    def _add_load(self, sink: SampleSink) -> None:
        text = read_optional(self._loadavg_path)
        if text is None:
            return
        for window, value in zip(LOAD_WINDOWS, parse_loadavg(text), strict=True):
            sink.add(LOAD_AVERAGE, value, window=window)
