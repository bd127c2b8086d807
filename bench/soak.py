#!/usr/bin/env python3
"""Soak: the agent's memory, file descriptors and threads stay flat under steady load.

Runs a real agent process on simulated GPUs (sim:h100x8) with a loopback model server whose
counters advance, scrapes /metrics once a second (gzip, as Prometheus asks), keeps a few
Server-Sent Events clients on /events, and samples RSS, open fds, threads and CPU every
--sample-seconds. After the warm-up it prints the least-squares slope of RSS as a percentage of
the mean post-warm-up RSS per hour (the anchor, measured in the same run), and the fd and thread
ranges. Targets: |RSS slope| <= 2 %/h after warm-up, fds and threads constant.

    python bench/soak.py [--duration-seconds 300] [--sse-clients 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

from agent_process import free_port, growing_model_server, running  # noqa: E402 - after the path to the helpers

MODELS = ("meta-llama/Llama-3.1-8B-Instruct", "mistralai/Mistral-7B-Instruct-v0.3", "Qwen/Qwen2.5-7B")
RSS_SLOPE_TARGET_PERCENT_PER_HOUR = 2.0


def _vllm_exposition(elapsed_seconds: float) -> str:
    """vLLM-shaped /metrics: token and request counters advancing with wall time."""
    lines = []
    for family, per_second in (("prompt_tokens", 900.0), ("generation_tokens", 300.0)):
        lines.append(f"# TYPE vllm:{family}_total counter")
        lines += [
            f'vllm:{family}_total{{model_name="{m}"}} {per_second * elapsed_seconds:.0f}' for m in MODELS
        ]
    lines.append("# TYPE vllm:request_success_total counter")
    lines += [f'vllm:request_success_total{{model_name="{m}"}} {2.0 * elapsed_seconds:.0f}' for m in MODELS]
    return "\n".join(lines) + "\n"


@dataclass
class _Load:
    """The scraper and the event clients, counting what they got."""

    url: str
    sse_clients: int
    scrapes: int = 0
    scrape_failures: int = 0
    events: int = 0
    event_reconnects: int = 0

    def __post_init__(self) -> None:
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._scrape, daemon=True)] + [
            threading.Thread(target=self._follow_events, daemon=True) for _ in range(self.sse_clients)
        ]

    def _scrape(self) -> None:
        with httpx.Client(timeout=5, headers={"Accept-Encoding": "gzip"}) as client:
            while not self.stop.wait(1.0):
                try:
                    ok = client.get(f"{self.url}/metrics").status_code == 200
                except httpx.HTTPError:
                    ok = False
                self.scrapes += 1
                self.scrape_failures += not ok

    def _follow_events(self) -> None:
        with httpx.Client(timeout=httpx.Timeout(5, read=30)) as client:
            while not self.stop.is_set():
                try:
                    with client.stream("GET", f"{self.url}/events") as response:
                        for line in response.iter_lines():
                            self.events += line.startswith("data:")
                            if self.stop.is_set():
                                return
                except httpx.HTTPError:
                    pass
                self.event_reconnects += 1
                self.stop.wait(1.0)

    def __enter__(self) -> _Load:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=35)


@dataclass(frozen=True)
class _Sample:
    at_seconds: float
    rss_bytes: int
    fds: int
    threads: int
    cpu_seconds: float


def _sample(process: psutil.Process, started: float) -> _Sample:
    cpu = process.cpu_times()
    return _Sample(
        time.monotonic() - started,
        process.memory_info().rss,
        process.num_fds(),
        process.num_threads(),
        cpu.user + cpu.system,
    )


def _slope_percent_per_hour(samples: list[_Sample]) -> float:
    times = [s.at_seconds for s in samples]
    rss = [float(s.rss_bytes) for s in samples]
    slope_bytes_per_second = statistics.linear_regression(times, rss).slope
    return 100.0 * slope_bytes_per_second * 3600 / statistics.fmean(rss)


def _report(samples: list[_Sample], warmup_seconds: float, load: _Load) -> int:
    steady = [s for s in samples if s.at_seconds >= warmup_seconds]
    if len(steady) < 3:
        print("too few samples after warm-up: run longer", file=sys.stderr)
        return 1
    mib = 2**20
    slope = _slope_percent_per_hour(steady)
    fds = [s.fds for s in steady]
    threads = [s.threads for s in steady]
    span = steady[-1].at_seconds - steady[0].at_seconds
    cpu_percent = 100 * (steady[-1].cpu_seconds - steady[0].cpu_seconds) / span
    print(f"{'t_s':>7} {'rss_MiB':>8} {'fds':>4} {'threads':>7} {'cpu_s':>7}")
    for s in samples:
        print(f"{s.at_seconds:7.0f} {s.rss_bytes / mib:8.2f} {s.fds:4d} {s.threads:7d} {s.cpu_seconds:7.2f}")
    print(f"warm-up {warmup_seconds:.0f} s; {len(steady)} samples over {span:.0f} s after it")
    print(
        f"RSS after warm-up: {steady[0].rss_bytes / mib:.2f} -> {steady[-1].rss_bytes / mib:.2f} MiB, "
        f"max {max(s.rss_bytes for s in steady) / mib:.2f} MiB; slope {slope:+.2f} %/h of its mean "
        f"(target within +-{RSS_SLOPE_TARGET_PERCENT_PER_HOUR:g})"
    )
    print(f"fds min/max {min(fds)}/{max(fds)}; threads min/max {min(threads)}/{max(threads)}")
    print(f"agent CPU {cpu_percent:.2f} % of one core")
    print(
        f"scrapes {load.scrapes} (failed {load.scrape_failures}); events received {load.events}, "
        f"event reconnects {load.event_reconnects}"
    )
    flat = (
        abs(slope) <= RSS_SLOPE_TARGET_PERCENT_PER_HOUR
        and min(fds) == max(fds)
        and min(threads) == max(threads)
    )
    print("targets met" if flat and load.scrape_failures == 0 else "targets NOT met")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration-seconds", type=float, default=300.0)
    parser.add_argument("--warmup-seconds", type=float, help="default: a fifth of the run, at most 300 s")
    parser.add_argument("--sample-seconds", type=float, default=30.0)
    parser.add_argument("--sse-clients", type=int, default=3)
    parser.add_argument("--scrape-interval", type=float, default=1.0, help="the agent's collection period")
    args = parser.parse_args()
    warmup = args.warmup_seconds if args.warmup_seconds is not None else min(300.0, args.duration_seconds / 5)

    port = free_port()
    with growing_model_server(_vllm_exposition) as model_url, tempfile.TemporaryDirectory() as logs:
        command = [
            sys.executable, "-m", "esnode_agent", "--listen-address", f"127.0.0.1:{port}",
            "--gpu-backend", "sim:h100x8", "--scrape-interval", str(args.scrape_interval),
            "--app-metrics-urls", model_url, "--node-power-envelope-watts", "6000",
        ]  # fmt: skip
        log_path = Path(logs) / "agent.log"
        url = f"http://127.0.0.1:{port}"
        with running(command, f"{url}/readyz", log_path) as agent:
            process = psutil.Process(agent.pid)
            samples: list[_Sample] = []
            started = time.monotonic()
            with _Load(url, args.sse_clients) as load:
                while True:
                    samples.append(_sample(process, started))
                    print(f"sample {samples[-1]}", file=sys.stderr, flush=True)
                    if samples[-1].at_seconds >= args.duration_seconds:
                        break
                    time.sleep(
                        min(args.sample_seconds, args.duration_seconds - samples[-1].at_seconds + 0.01)
                    )
        warnings = [
            line for line in log_path.read_text(errors="replace").splitlines() if "level=warning" in line
        ]
    code = _report(samples, warmup, load)
    print(f"agent log warnings: {len(warnings)}" + (f" (first: {warnings[0][:200]})" if warnings else ""))
    return code


if __name__ == "__main__":
    sys.exit(main())
