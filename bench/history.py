#!/usr/bin/env python3
"""Cost of local history (enable_local_tsdb), measured against the collection cycle in the same run.

1. Records real cycles of the default collectors with sim:h100x8 GPUs, then replays them
   (wrapping) in fast-forward at 5 s spacing for --hours of history: bytes per sample on disk.
2. Write cost: CPU ms of appending one cycle plus its share of a 30 s flush, against the CPU
   ms of the collection cycle itself (the anchor).
3. Export speed (OpenMetrics, samples/s) for the last 1 h and the whole range.
4. Resident memory of two real agent processes, history on and off, after the same cycles.

    python bench/history.py [--hours 48] [--agent-seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.loop import CollectionLoop
from esnode_agent.cycle.samples import Sample
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.history.export import export
from esnode_agent.history.reader import Query, open_reader
from esnode_agent.history.store import CHUNK_SAMPLES, HistoryStore, Limits

INTERVAL_SECONDS = 5.0
FLUSH_SECONDS = 30.0
# More than a chunk holds (CHUNK_SAMPLES): a replay that repeated within one chunk would let
# deflate find the repeat, and flatter the figure.
REAL_CYCLES = CHUNK_SAMPLES + 40
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def _real_cycles(count: int) -> tuple[list[list[Sample]], float]:
    """Cycles of the default collector set, 0.25 s apart so readings move; mean CPU ms per cycle."""
    snapshots: list[Snapshot] = []

    async def keep(snapshot: Snapshot) -> None:
        snapshots.append(snapshot)

    config = AgentConfig(gpu_backend="sim:h100x8", node_power_envelope_watts=4000)
    loop = CollectionLoop(build_collectors(config), 1.0, 1.0, keep)

    async def run() -> float:
        cpu = 0.0
        for _ in range(count):
            started = time.process_time()
            await loop.run_once()
            cpu += time.process_time() - started
            await asyncio.sleep(0.25)
        return cpu

    cpu_seconds = asyncio.run(run())
    return [list(s.samples) for s in snapshots], 1000 * cpu_seconds / count


def _record(path: Path, cycles: list[list[Sample]], hours: float) -> tuple[int, float, float]:
    """Samples written, CPU ms per cycle for append, and per flush."""
    store = HistoryStore(path, Limits(retention_seconds=hours * 3600 + 3600, max_disk_bytes=2048 * 2**20))
    start = time.time() - hours * 3600
    total = int(hours * 3600 / INTERVAL_SECONDS)
    per_flush = int(FLUSH_SECONDS / INTERVAL_SECONDS)
    jitter = random.Random(1)
    append_cpu = flush_cpu = 0.0
    samples = flushes = 0
    for index in range(total):
        batch = cycles[index % len(cycles)]
        stamp = start + index * INTERVAL_SECONDS + jitter.uniform(0, 0.004)
        began = time.process_time()
        store.append(stamp, batch)
        append_cpu += time.process_time() - began
        samples += len(batch)
        if index % per_flush == per_flush - 1:
            began = time.process_time()
            store.flush(stamp)
            flush_cpu += time.process_time() - began
            flushes += 1
    store.flush(start + total * INTERVAL_SECONDS)
    store.close()
    return samples, 1000 * append_cpu / total, 1000 * flush_cpu / max(1, flushes)


def _export_rate(path: Path, seconds_back: float) -> tuple[int, float]:
    now_ms = round(time.time() * 1000)
    query = Query(now_ms - round(seconds_back * 1000), now_ms)
    db = open_reader(path)
    began = time.perf_counter()
    lines = sum(piece.count(b"\n") - piece.count(b"\n#") for piece in export(db, query, openmetrics=True))
    elapsed = time.perf_counter() - began
    db.close()
    return lines, lines / elapsed


def _agent_rss(history: bool, seconds: float, workdir: Path) -> int:
    flags = ["--gpu-backend", "sim:h100x8", "--scrape-interval", "1", "--listen-address", "127.0.0.1:0"]
    if history:
        flags += [
            "--enable-local-tsdb",
            "--local-tsdb-path",
            str(workdir / "tsdb"),
            "--local-tsdb-flush-seconds",
            "5",
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESNODE_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "esnode_agent", *flags],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(seconds)
        return int(Path(f"/proc/{process.pid}/statm").read_text().split()[1]) * PAGE_BYTES
    finally:
        process.terminate()
        process.wait(20)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=48.0)
    parser.add_argument("--agent-seconds", type=float, default=20.0)
    args = parser.parse_args()
    cycles, cycle_cpu_ms = _real_cycles(REAL_CYCLES)
    series = len(cycles[-1])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "history.sqlite3"
        samples, append_ms, flush_ms = _record(path, cycles, args.hours)
        size = path.stat().st_size
        one_hour = _export_rate(path, 3600)
        whole = _export_rate(path, args.hours * 3600 + 60)
        rss_off = _agent_rss(False, args.agent_seconds, Path(tmp))
        rss_on = _agent_rss(True, args.agent_seconds, Path(tmp))
    write_ms = append_ms + flush_ms * INTERVAL_SECONDS / FLUSH_SECONDS
    print(f"series per cycle           {series}")
    print(
        f"history                    {args.hours:g} h at {INTERVAL_SECONDS:g} s: {samples} samples, {size / 2**20:.1f} MiB"
    )
    print(f"bytes per sample on disk   {size / samples:.2f}   (target <= 4)")
    print(
        f"48 h at 5 s would take     {size / samples * series * 48 * 3600 / INTERVAL_SECONDS / 2**20:.0f} MiB of the 2048 MiB default"
    )
    print(f"collection cycle CPU       {cycle_cpu_ms:.2f} ms (anchor)")
    print(
        f"history write CPU / cycle  {write_ms:.2f} ms = append {append_ms:.2f} + flush {flush_ms:.1f} / {FLUSH_SECONDS / INTERVAL_SECONDS:g}"
    )
    print(f"  write / cycle ratio      {write_ms / cycle_cpu_ms:.2f}")
    print(
        f"  write / 5 s interval     {write_ms / (INTERVAL_SECONDS * 1000):.3%} of one core (off the loop, in its thread)"
    )
    print(f"export 1 h                 {one_hour[0]} samples, {one_hour[1]:,.0f} samples/s")
    print(f"export {args.hours:g} h                {whole[0]} samples, {whole[1]:,.0f} samples/s")
    print(
        f"agent RSS history off/on   {rss_off / 2**20:.1f} / {rss_on / 2**20:.1f} MiB (ratio {rss_on / rss_off:.2f})"
    )


if __name__ == "__main__":
    main()
