#!/usr/bin/env python3
"""Cost of one OTLP push of a sim:h100x8 snapshot: esnode's encoder against the OpenTelemetry SDK.

Each way runs in a child process of its own, pushing the same snapshot PUSHES times to a loopback
receiver (a separate process that reads and discards): CPU time per push, and the RSS the way added
over a process that has only built the snapshot (its imports, client, buffers).

- esnode: agent/esnode_agent/otlp (opentelemetry-proto messages, httpx), what the agent runs.
- sdk: opentelemetry-sdk's MeterProvider, one observable instrument per family whose callback
  reads the snapshot, exported by opentelemetry-exporter-otlp-proto-http (requests). Measured when
  --sdk-python names an interpreter that has both the SDK exporter and esnode installed.

    python bench/otlp_push_cost.py [--pushes 50] [--sdk-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psutil

from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.loop import CollectionLoop
from esnode_agent.cycle.samples import MetricType, Sample
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.otlp.encode import SnapshotEncoder, resource_attributes
from esnode_agent.otlp.push import PROTOBUF

PUSHES = 50
BENCH = Path(__file__).resolve()

_RECEIVER = textwrap.dedent(
    """
    import http.server, sys
    class Sink(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Sink)
    print(server.server_address[1], flush=True)
    server.serve_forever()
    """
)


def _rss_bytes() -> int:
    return int(psutil.Process().memory_info().rss)


def _snapshot() -> Snapshot:
    async def ignore(_: Snapshot) -> None:
        return None

    async def two_cycles() -> Snapshot:
        loop = CollectionLoop(build_collectors(AgentConfig(gpu_backend="sim:h100x8")), 5.0, 3.0, ignore)
        await loop.run_once()  # the first cycle has no rates yet
        return await loop.run_once()

    return asyncio.run(two_cycles())


def _esnode_pusher(url: str, snapshot: Snapshot) -> Callable[[], int]:
    encoder = SnapshotEncoder(resource_attributes("bench-host", "bench-node"))
    client = httpx.Client(timeout=10)

    def push() -> int:
        body = encoder.encode(snapshot)
        response = client.post(url, content=body, headers={"Content-Type": PROTOBUF})
        response.raise_for_status()
        return len(body)

    return push


def _sdk_pusher(url: str, snapshot: Snapshot) -> Callable[[], int]:
    # Imported here: only the --sdk-python interpreter has the SDK.
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter  # noqa: PLC0415
    from opentelemetry.metrics import CallbackOptions, Observation  # noqa: PLC0415
    from opentelemetry.sdk.metrics import MeterProvider  # noqa: PLC0415
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader  # noqa: PLC0415
    from opentelemetry.sdk.resources import Resource  # noqa: PLC0415

    reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=url), export_interval_millis=1e9)
    provider = MeterProvider(
        metric_readers=[reader], resource=Resource(resource_attributes("bench-host", "bench-node"))
    )
    meter = provider.get_meter("esnode_agent")
    families: dict[str, list[Sample]] = {}
    for sample in snapshot.samples:
        families.setdefault(sample.spec.name, []).append(sample)

    def observe(samples: list[Sample]) -> Callable[[CallbackOptions], list[Observation]]:
        def callback(_: CallbackOptions) -> list[Observation]:
            return [Observation(s.value, s.labels) for s in samples]

        return callback

    for name, samples in families.items():
        spec = samples[0].spec
        if spec.type is MetricType.COUNTER:
            meter.create_observable_counter(name, callbacks=[observe(samples)], description=spec.help)
        else:
            meter.create_observable_gauge(name, callbacks=[observe(samples)], description=spec.help)

    def push() -> int:
        if not provider.force_flush():
            raise RuntimeError("the SDK's export failed")
        return 0

    return push


def child(way: str, url: str, pushes: int) -> None:
    snapshot = _snapshot()
    baseline = _rss_bytes()
    push = (_esnode_pusher if way == "esnode" else _sdk_pusher)(url, snapshot)
    body_bytes = push()  # warm-up: lazy imports, the connection
    started = time.process_time()
    for _ in range(pushes):
        push()
    cpu = (time.process_time() - started) / pushes
    rss_delta = _rss_bytes() - baseline
    print(
        json.dumps(
            {
                "cpu_seconds": cpu,
                "rss_delta_bytes": rss_delta,
                "series": len(snapshot.samples),
                "body_bytes": body_bytes,
            }
        )
    )


def run_way(python: str, way: str, url: str, pushes: int) -> dict[str, float]:
    out = subprocess.run(
        [python, str(BENCH), "--child", way, "--url", url, "--pushes", str(pushes)],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    if out.returncode != 0:
        raise SystemExit(f"{way} failed:\n{out.stderr}")
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=PUSHES)
    parser.add_argument(
        "--sdk-python", help="interpreter with opentelemetry-exporter-otlp-proto-http and esnode"
    )
    parser.add_argument("--child", choices=("esnode", "sdk"), help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.url, args.pushes)
        return
    receiver = subprocess.Popen([sys.executable, "-c", _RECEIVER], stdout=subprocess.PIPE, text=True)
    try:
        assert receiver.stdout is not None
        url = f"http://127.0.0.1:{receiver.stdout.readline().strip()}/v1/metrics"
        ways = {"esnode": run_way(sys.executable, "esnode", url, args.pushes)}
        if args.sdk_python:
            ways["sdk"] = run_way(args.sdk_python, "sdk", url, args.pushes)
    finally:
        receiver.terminate()
        receiver.wait()
    for way, figures in ways.items():
        print(
            f"{way:<7} {figures['series']:.0f} series: CPU per push {figures['cpu_seconds'] * 1e3:7.2f} ms"
            f"   RSS added {figures['rss_delta_bytes'] / 2**20:6.1f} MiB"
        )
    if "sdk" in ways:
        esnode, sdk = ways["esnode"], ways["sdk"]
        print(
            f"sdk / esnode: CPU per push {sdk['cpu_seconds'] / esnode['cpu_seconds']:.1f}x, "
            f"RSS added {sdk['rss_delta_bytes'] / max(esnode['rss_delta_bytes'], 1):.1f}x"
        )
    else:
        print("(sdk not measured: pass --sdk-python)")


if __name__ == "__main__":
    main()
