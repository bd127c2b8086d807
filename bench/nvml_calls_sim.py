#!/usr/bin/env python3
"""NVML calls per GPU per collection cycle, counted by the simulated NVML.

Runs the GPU collector (the real NVML backend code) on a simulated profile and prints, per
NVML function, the calls it made per GPU per cycle in the steady state (after a first cycle has
cached what the board does not support). The PCIe sampler's background calls are listed apart:
they run every few seconds off the collection path. Needs no GPU.

    python bench/nvml_calls_sim.py [--profile h100x8] [--cycles 20] [--process-top-n 10]

--process-top-n adds the per-process series' calls (the agent's default is 10; 0, the default
here, leaves them out as the figures in docs/gpu.md's batching table do).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.collectors.gpu_processes import GpuProcessWriter
from esnode_agent.cycle.samples import SampleSink
from esnode_agent.gpu.nvml_backend import NvmlBackend, open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import load_profile
from esnode_agent.gpu.visibility import DeviceList

BACKGROUND = frozenset({"nvmlDeviceGetPcieThroughput"})  # the PCIe sampler thread's


def calls_per_gpu_per_cycle(
    profile: str, cycles: int, process_top_n: int = 0
) -> tuple[dict[str, float], int]:
    """(function -> calls per GPU per cycle, number of GPUs) in the steady state."""
    fake = FakeNvml(load_profile(profile))
    backend = open_nvml(fake)
    assert isinstance(backend, NvmlBackend)
    everything = DeviceList(everything=True)
    processes = GpuProcessWriter(process_top_n, Path("/proc"), None) if process_top_n else None
    collector = GpuCollector(backend, everything, everything, processes=processes)
    collector.collect(SampleSink(0.0))  # the first cycle learns what is unsupported
    before = fake.call_counts()
    for cycle in range(cycles):
        collector.collect(SampleSink(float(cycle + 1)))
    spent: Counter[str] = Counter()
    for (gpu, function), count in (fake.call_counts() - before).items():
        if gpu is not None and function not in BACKGROUND:
            spent[function] += count
    gpus = len(backend.devices())
    collector.close()
    return {function: count / gpus / cycles for function, count in sorted(spent.items())}, gpus


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", action="append", help="sim profile(s); default h100x8 and h100-mig")
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--process-top-n", type=int, default=0, help="per-process series per GPU")
    args = parser.parse_args()
    for profile in args.profile or ["h100x8", "h100-mig"]:
        per_function, gpus = calls_per_gpu_per_cycle(profile, args.cycles, args.process_top_n)
        print(f"profile {profile}: {gpus} GPUs, {args.cycles} cycles")
        for function, calls in per_function.items():
            print(f"  {function:<44} {calls:6.2f}")
        print(f"  {'NVML calls per GPU per cycle':<44} {sum(per_function.values()):6.2f}")


if __name__ == "__main__":
    main()
