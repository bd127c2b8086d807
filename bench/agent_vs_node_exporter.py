#!/usr/bin/env python3
"""Scrape cost of the esnode agent against node_exporter, measured in the same run.

Both serve on loopback; wrk drives each with the same load (1 connection, then 10), bounded in
time. Prints per side p50/p99 latency, scrapes/s, CPU seconds per scrape, RSS and payload size,
then agent/node_exporter ratios beside the targets. Needs: wrk, prometheus-node-exporter.
With --tls both serve HTTPS from the same exporter-toolkit web-config file (a self-signed P-256
certificate made with openssl in a temp dir); wrk keeps its connections, so handshakes are few.

    python bench/agent_vs_node_exporter.py [--seconds 10] [--tls]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
HEADERS = ("-H", "Accept-Encoding: gzip")  # what Prometheus sends
AGENT_INTERVAL_SECONDS = 5.0
IDLE_CYCLES = 6


@dataclass(frozen=True)
class Load:
    connections: int
    requests: int
    seconds: float
    p50_seconds: float
    p99_seconds: float
    cpu_seconds: float

    @property
    def scrapes_per_second(self) -> float:
        return self.requests / self.seconds


@dataclass(frozen=True)
class Side:
    name: str
    sequential: Load
    concurrent: Load
    rss_bytes: int
    payload_bytes: int
    payload_gzip_bytes: int
    cpu_per_scrape_seconds: float
    cpu_per_cycle_seconds: float | None = None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """CPU time of every thread, in nanoseconds from schedstat (/proc/PID/stat counts 10 ms ticks)."""
    total_ns = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total_ns += int((task / "schedstat").read_text().split()[0])
        except (FileNotFoundError, ProcessLookupError):
            continue  # a thread that ended between listing and reading
    return total_ns / 1e9


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE_BYTES


def web_config(directory: Path) -> Path:
    """A web-config file serving TLS with a fresh self-signed certificate for 127.0.0.1."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    config = directory / "web-config.yml"
    config.write_text(f"tls_server_config:\n  cert_file: {cert}\n  key_file: {key}\n")
    return config


def wait_ready(url: str, verify: str | bool) -> None:
    """``verify``: the CA file the bench's own requests check the certificate with (--tls)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1, verify=verify).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} never became ready")


def _duration_seconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"unexpected wrk duration {text!r}")
    return float(match.group(1)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[match.group(2)]


def _field(pattern: str, out: str) -> str:
    match = re.search(pattern, out, re.MULTILINE)
    if match is None:
        raise SystemExit(f"cannot read {pattern!r} from wrk's output:\n{out}")
    return match.group(1)


def run_wrk(url: str, connections: int, seconds: int, pid: int) -> Load:
    threads = min(connections, 2)
    before = cpu_seconds(pid)
    started = time.monotonic()
    out = subprocess.run(
        [
            "wrk",
            "--latency",
            f"-t{threads}",
            f"-c{connections}",
            f"-d{seconds}s",
            "--timeout",
            "5s",
            *HEADERS,
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    elapsed = time.monotonic() - started
    cpu = cpu_seconds(pid) - before
    requests = int(_field(r"(\d+) requests in", out))
    p50 = _duration_seconds(_field(r"^\s+50%\s+(\S+)$", out))
    p99 = _duration_seconds(_field(r"^\s+99%\s+(\S+)$", out))
    return Load(connections, requests, elapsed, p50, p99, cpu)


def payload_sizes(url: str, verify: str | bool) -> tuple[int, int]:
    plain = httpx.get(url, headers={"Accept-Encoding": "identity"}, timeout=10, verify=verify).content
    with httpx.stream("GET", url, headers={"Accept-Encoding": "gzip"}, timeout=10, verify=verify) as response:
        zipped = b"".join(response.iter_raw())
    return len(plain), len(zipped)


def measure(
    name: str, url: str, pid: int, seconds: int, cycle_cpu: float | None, *, verify: str | bool
) -> Side:
    run_wrk(url, 1, 2, pid)  # warm-up: imports, connection pools, page cache
    sequential = run_wrk(url, 1, seconds, pid)
    concurrent = run_wrk(url, 10, seconds, pid)
    requests = sequential.requests + concurrent.requests
    load_cpu = sequential.cpu_seconds + concurrent.cpu_seconds
    if cycle_cpu is not None:  # the agent keeps collecting in the background; count that apart
        load_cpu -= cycle_cpu * (sequential.seconds + concurrent.seconds) / AGENT_INTERVAL_SECONDS
    plain, zipped = payload_sizes(url, verify)
    return Side(
        name, sequential, concurrent, rss_bytes(pid), plain, zipped, max(load_cpu, 0.0) / requests, cycle_cpu
    )


def agent_cycle_cpu(pid: int) -> float:
    """CPU per collection cycle in steady state: an idle agent does nothing but collect."""
    time.sleep(AGENT_INTERVAL_SECONDS)  # past start-up work (first reads, lazy imports)
    before = cpu_seconds(pid)
    time.sleep(IDLE_CYCLES * AGENT_INTERVAL_SECONDS)
    return (cpu_seconds(pid) - before) / IDLE_CYCLES


def print_side(side: Side) -> None:
    print(f"\n{side.name}")
    for load in (side.sequential, side.concurrent):
        print(
            f"  c={load.connections:<2} p50 {load.p50_seconds * 1e3:8.2f} ms  p99 {load.p99_seconds * 1e3:8.2f} ms"
            f"  {load.scrapes_per_second:9.1f} scrapes/s  ({load.requests} in {load.seconds:.1f}s)"
        )
    print(
        f"  CPU per scrape {side.cpu_per_scrape_seconds * 1e3:.3f} ms   RSS {side.rss_bytes / 2**20:.1f} MiB"
        f"   payload {side.payload_bytes} B ({side.payload_gzip_bytes} B gzip)"
    )
    if side.cpu_per_cycle_seconds is not None:
        print(f"  CPU per collection cycle {side.cpu_per_cycle_seconds * 1e3:.2f} ms")


def print_ratios(agent: Side, anchor: Side) -> None:
    rows = [
        (
            "p99 latency, 10 connections",
            agent.concurrent.p99_seconds / anchor.concurrent.p99_seconds,
            "<= 0.2",
        ),
        ("p99 latency, 1 connection", agent.sequential.p99_seconds / anchor.sequential.p99_seconds, ""),
        (
            "scrapes/s, 10 connections",
            agent.concurrent.scrapes_per_second / anchor.concurrent.scrapes_per_second,
            ">= 5",
        ),
        ("CPU per scrape", agent.cpu_per_scrape_seconds / anchor.cpu_per_scrape_seconds, "<= 0.1"),
        (
            "CPU per agent cycle / node_exporter CPU per scrape",
            (agent.cpu_per_cycle_seconds or 0.0) / anchor.cpu_per_scrape_seconds,
            "<= 1",
        ),
        ("RSS", agent.rss_bytes / anchor.rss_bytes, f"agent <= 64 MiB: {agent.rss_bytes / 2**20:.1f} MiB"),
        ("payload bytes", agent.payload_bytes / anchor.payload_bytes, ""),
    ]
    print("\nagent / node_exporter")
    for label, ratio, target in rows:
        print(f"  {label:<52} {ratio:8.3f}  {target}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="length of each load phase")
    parser.add_argument(
        "--agent-flags", default="", help="extra flags for esnode-agent, e.g. '--gpu-backend sim:h100x8'"
    )
    parser.add_argument("--tls", action="store_true", help="both over HTTPS, from one web-config file")
    args = parser.parse_args()
    for tool in ("wrk", "prometheus-node-exporter", *(("openssl",) if args.tls else ())):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is required (apt-get install wrk prometheus-node-exporter openssl)")
    with tempfile.TemporaryDirectory(prefix="esnode-bench-") as tmp:
        return run(args, web_config(Path(tmp)) if args.tls else None)


def run(args: argparse.Namespace, web_config_file: Path | None) -> int:
    scheme = "https" if web_config_file is not None else "http"
    web_flags = [f"--web.config.file={web_config_file}"] if web_config_file is not None else []
    verify: str | bool = str(web_config_file.parent / "cert.pem") if web_config_file is not None else True

    agent_port, exporter_port = free_port(), free_port()
    agent_cmd = [
        sys.executable,
        "-m",
        "esnode_agent",
        "--listen-address",
        f"127.0.0.1:{agent_port}",
        "--scrape-interval",
        str(AGENT_INTERVAL_SECONDS),
        "--log-level",
        "warning",
        *web_flags,
        *args.agent_flags.split(),
    ]
    exporter_cmd = ["prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{exporter_port}", *web_flags]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ESNODE_")}
    agent = subprocess.Popen(agent_cmd, env=env)
    exporter = subprocess.Popen(exporter_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_ready(f"{scheme}://127.0.0.1:{agent_port}/readyz", verify)
        wait_ready(f"{scheme}://127.0.0.1:{exporter_port}/metrics", verify)
        cycle_cpu = agent_cycle_cpu(agent.pid)
        anchor = measure(
            "node_exporter 1.5 (Debian)",
            f"{scheme}://127.0.0.1:{exporter_port}/metrics",
            exporter.pid,
            args.seconds,
            None,
            verify=verify,
        )
        measured = measure(
            "esnode-agent",
            f"{scheme}://127.0.0.1:{agent_port}/metrics",
            agent.pid,
            args.seconds,
            cycle_cpu,
            verify=verify,
        )
    finally:
        for process in (agent, exporter):
            process.terminate()
            process.wait(10)
    print(
        f"{os.cpu_count()} CPUs; agent interval {AGENT_INTERVAL_SECONDS:g}s; load phases {args.seconds}s each;"
        f" {scheme.upper()}; load average {os.getloadavg()[0]:.1f} at the end"
    )
    print_side(anchor)
    print_side(measured)
    print_ratios(measured, anchor)
    return 0


if __name__ == "__main__":
    sys.exit(main())
