#!/usr/bin/env python3
"""1,000 simulated agents report to the test control plane; the operator sums them into one fleet.

Each simulated agent is the agent's own reporting path (esnode_agent.report.reporter.Reporter with its
ReportPolicy and KubeStatusWriter) fed a snapshot every scrape interval, for a Node object of its own
(tainted, so no agent pod lands there: the operator releases reports of nodes that do not exist or
that its fleet does not select, so each report needs its Node). Node power is steady with noise below the report step, so
steady state is heartbeats only, and the fleet's whole-watt total still moves every second: the
worst case for the fleet's status writes. Measured, with the operator running as its console script:

  * start-up: all agents' first reports (create + status) and the fleet showing them all;
  * steady state over --steady-seconds: API writes per second from the apiserver's own
    apiserver_request_total (targets: at most 1 per node per heartbeat, plus 1/s for the fleet),
    cross-checked with the simulators' and the operator's counters;
  * convergence: 10% of the nodes go over their envelope; time until the fleet's status names
    them all (target: 10 s), from the change and from the last agent's write;
  * the operator's CPU seconds and resident memory.

Loopback only. Uses a running `scripts/testenv up` environment, or starts one and stops it afterwards.

    python bench/node_reports_scale.py [--agents 1000] [--steady-seconds 120] [--spread]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
from kubernetes import client, config
from operator_apply_latency import _testenv_module, control_plane, free_port, operator
from prometheus_client.parser import text_string_to_metric_families

from esnode_agent.collectors.envelope import ENVELOPE, EXCEEDED, HEADROOM
from esnode_agent.collectors.gpu import PLAIN as GPU
from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.collectors.node_power import NODE_SOURCE as SOURCE
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.report.kube_writer import KubeStatusWriter
from esnode_agent.report.model import NodeReport
from esnode_agent.report.policy import ReportPolicy
from esnode_agent.report.reporter import Reporter, ReportTarget
from esnode_operator.kube import Kube

REPO = Path(__file__).resolve().parents[1]
CRDS = [REPO / "crds" / "esnodefleet.yaml", REPO / "crds" / "esnodenode.yaml"]
FLEET = "scale"
BENCH_LABEL = "esnode.io/bench"
BENCH_LABEL_VALUE = "sim"
HEARTBEAT_SECONDS = 60.0
POWER_STEP_WATTS = 50.0
MIN_INTERVAL_SECONDS = 5.0
SCRAPE_INTERVAL_SECONDS = 5.0
ENVELOPE_WATTS = 4000.0
BASE_WATTS = 3000.0
NOISE_WATTS = 10.0  # below the report step: heartbeats only
OVER_WATTS = 4600.0
GPUS = 8
CHANGED_SHARE = 0.10
CONVERGE_TARGET_SECONDS = 10.0
WRITE_VERBS = ("POST", "PUT", "PATCH", "APPLY", "DELETE")


def samples(node_watts: float) -> SampleIndex:
    """What the agent's collectors would have produced for the report's fields."""
    sink = SampleSink(0.0)
    sink.add(NODE_POWER, node_watts)
    sink.add(SOURCE, 1, source="rapl+gpu")
    sink.add(ENVELOPE, ENVELOPE_WATTS)
    sink.add(EXCEEDED, 1 if node_watts > ENVELOPE_WATTS else 0)
    sink.add(HEADROOM, ENVELOPE_WATTS - node_watts)
    for index in range(GPUS):
        uuid_ = f"GPU-{index:04d}"
        sink.add(
            GPU.info,
            1,
            gpu=str(index),
            uuid=uuid_,
            model="NVIDIA H100 80GB HBM3",
            pci_bus_id="",
            driver_version="",
            serial="",
            mig_mode="disabled",
        )
        sink.add(GPU.power, 0.8 * node_watts / GPUS, gpu=str(index), uuid=uuid_)
    return SampleIndex(sink.samples)


class CountingWriter(KubeStatusWriter):
    """The agent's writer, counting its requests and noting when an exceeded report went out."""

    def __init__(self, api: client.ApiClient, namespace: str, fleet_uid: str, counts: Counts) -> None:
        super().__init__(api, namespace, fleet_uid)
        self._counts = counts

    def write_report(self, report: NodeReport) -> None:
        super().write_report(report)
        self._counts.reports += 1
        if report.exceeded:
            self._counts.exceeded_written[report.node_name] = time.monotonic()


@dataclass
class Counts:
    reports: int = 0
    exceeded_written: dict[str, float] = field(default_factory=dict)


@dataclass
class SimulatedNode:
    name: str
    reporter: Reporter
    rng: random.Random
    over: bool = False
    sequence: int = 0

    def tick(self) -> None:
        watts = (OVER_WATTS if self.over else BASE_WATTS) + self.rng.uniform(-NOISE_WATTS, NOISE_WATTS)
        self.sequence += 1
        self.reporter.offer(Snapshot(self.sequence, time.time(), 0.0, samples(watts), ()))


async def run_node(node: SimulatedNode, offset_seconds: float) -> None:
    """A scrape loop: a snapshot every interval at a fixed phase, as a separate agent process keeps.

    Absolute deadlines: a busy event loop delays ticks but does not pull 1,000 phases together.
    """
    loop = asyncio.get_running_loop()
    due = loop.time() + offset_seconds
    while True:
        await asyncio.sleep(max(0.0, due - loop.time()))
        node.tick()
        due += SCRAPE_INTERVAL_SECONDS


def node_names(count: int) -> list[str]:
    return [f"sim-node-{i:04d}" for i in range(count)]


def create_nodes(kubeconfig: Path, count: int, threads: int) -> None:
    """A Node per simulated agent, selected by the fleet: the operator releases the reports of nodes
    it does not select or that do not exist. Tainted, and the fleet tolerates nothing, so that no
    agent pod is scheduled on them."""
    api = config.new_client_from_config(config_file=str(kubeconfig))
    core = client.CoreV1Api(api)
    taint = client.V1Taint(key=BENCH_LABEL, value="sim", effect="NoSchedule")

    def create(name: str) -> None:
        metadata = client.V1ObjectMeta(name=name, labels={BENCH_LABEL: BENCH_LABEL_VALUE})
        core.create_node(client.V1Node(metadata=metadata, spec=client.V1NodeSpec(taints=[taint])))

    started = time.monotonic()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(create, node_names(count)))
    print(f"created {count} Nodes in {time.monotonic() - started:.1f} s")
    api.close()


def kubectl(kubeconfig: Path, *args: str, input: str | None = None) -> str:
    binary = Path(_testenv_module().load_state()["bin_dir"]) / "kubectl"
    return subprocess.run(
        [str(binary), f"--kubeconfig={kubeconfig}", *args],
        check=True,
        capture_output=True,
        text=True,
        input=input,
    ).stdout


def api_writes(kubeconfig: Path) -> dict[str, float]:
    """Writes the apiserver has served so far, per resource[/subresource], from its own metrics."""
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(kubectl(kubeconfig, "get", "--raw", "/metrics")):
        if family.name != "apiserver_request":
            continue
        for sample in family.samples:
            labels = sample.labels
            if sample.name != "apiserver_request_total" or labels.get("verb") not in WRITE_VERBS:
                continue
            if labels.get("resource") not in ("esnodenodes", "esnodefleets"):
                continue
            key = labels["resource"] + (f"/{labels['subresource']}" if labels.get("subresource") else "")
            totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def operator_counter(port: int, name: str) -> float:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


def fleet_power(kube: Kube, namespace: str) -> dict[str, Any]:
    fleet = kube.get("esnode.io/v1alpha1", "EsnodeFleet", namespace, FLEET)
    power: dict[str, Any] = (fleet.get("status") or {}).get("power") or {}
    return power


async def wait_for(what: str, predicate: Any, timeout_seconds: float, poll_seconds: float = 0.1) -> float:
    """Seconds until ``predicate()`` (run in a thread) holds."""
    started = time.monotonic()
    while not await asyncio.to_thread(predicate):
        if time.monotonic() - started > timeout_seconds:
            raise SystemExit(f"timed out after {timeout_seconds:.0f} s waiting for {what}")
        await asyncio.sleep(poll_seconds)
    return time.monotonic() - started


def cpu_seconds(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def bench(kubeconfig: Path, namespace: str, uid: str, args: argparse.Namespace) -> None:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    configuration.connection_pool_maxsize = args.threads
    api = client.ApiClient(configuration)
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(args.threads))
    kube = Kube(api)
    counts = Counts()
    policy = ReportPolicy(HEARTBEAT_SECONDS, POWER_STEP_WATTS, MIN_INTERVAL_SECONDS)
    nodes = [
        SimulatedNode(
            name,
            Reporter(CountingWriter(api, namespace, uid, counts), policy, ReportTarget(name, FLEET, False)),
            random.Random(index),
        )
        for index, name in enumerate(node_names(args.agents))
    ]
    port = free_port()
    with operator(kubeconfig, namespace, port) as process:
        cpu_at_start = cpu_seconds(process)
        tasks = [asyncio.create_task(node.reporter.run_forever()) for node in nodes]
        # Started together (a fresh install) their heartbeats stay in step; --spread starts them
        # over one heartbeat instead, so that some node reports every second: the fleet's worst case.
        window = HEARTBEAT_SECONDS if args.spread else SCRAPE_INTERVAL_SECONDS
        tasks += [
            asyncio.create_task(run_node(node, window * i / len(nodes))) for i, node in enumerate(nodes)
        ]
        startup = await wait_for(
            "every node in the fleet's status",
            lambda: fleet_power(kube, namespace).get("nodesReporting") == args.agents,
            timeout_seconds=args.startup_timeout_seconds,
        )
        started_over = f"started over {window:.0f} s"
        print(
            f"start-up: {args.agents} agents ({started_over}) reported, the fleet shows all after {startup:.1f} s"
        )
        await asyncio.sleep(SCRAPE_INTERVAL_SECONDS)  # the first reports are all in: heartbeats from here

        writes_before, reports_before = api_writes(kubeconfig), counts.reports
        fleet_patches_before = operator_counter(port, "esnode_operator_power_status_patches_total")
        cpu_before, started = cpu_seconds(process), time.monotonic()
        await asyncio.sleep(args.steady_seconds)
        elapsed = time.monotonic() - started
        cpu_steady = cpu_seconds(process) - cpu_before
        writes_after = api_writes(kubeconfig)
        delta = {key: writes_after.get(key, 0.0) - writes_before.get(key, 0.0) for key in writes_after}
        node_writes = delta.get("esnodenodes", 0.0) + delta.get("esnodenodes/status", 0.0)
        fleet_writes = delta.get("esnodefleets/status", 0.0)
        fleet_patches = (
            operator_counter(port, "esnode_operator_power_status_patches_total") - fleet_patches_before
        )
        node_target = args.agents / HEARTBEAT_SECONDS
        print(
            f"steady state over {elapsed:.0f} s (apiserver_request_total): EsnodeNode writes "
            f"{node_writes / elapsed:.2f}/s (target <= {node_target:.2f}/s: 1 per node per "
            f"{HEARTBEAT_SECONDS:.0f} s), fleet status writes {fleet_writes / elapsed:.2f}/s (target <= 1/s)"
        )
        print(
            f"  cross-check: simulators wrote {(counts.reports - reports_before) / elapsed:.2f} reports/s, "
            f"the operator counted {fleet_patches / elapsed:.2f} fleet power writes/s"
        )
        print(
            f"  operator: {cpu_steady:.1f} CPU s in {elapsed:.0f} s ({100 * cpu_steady / elapsed:.1f}% of a core), "
            f"RSS {process.memory_info().rss / 2**20:.0f} MiB"
        )

        changed = nodes[:: round(1 / CHANGED_SHARE)]
        counts.exceeded_written.clear()
        changed_at = time.monotonic()
        for node in changed:
            node.over = True
        converged = await wait_for(
            "the fleet to name every node over its envelope",
            lambda: fleet_power(kube, namespace).get("nodesOverEnvelope") == len(changed),
            timeout_seconds=120,
            poll_seconds=0.05,
        )
        last_write = max(counts.exceeded_written.values()) - changed_at
        verdict = "meets" if converged <= CONVERGE_TARGET_SECONDS else "MISSES"
        print(
            f"convergence: {len(changed)} nodes ({CHANGED_SHARE:.0%}) over their envelope -> fleet status "
            f"shows {len(changed)} over after {converged:.1f} s ({verdict} the {CONVERGE_TARGET_SECONDS:.0f} s "
            f"target); the last agent wrote its report {last_write:.1f} s after the change (scrape interval "
            f"{SCRAPE_INTERVAL_SECONDS:.0f} s, edges at most every {MIN_INTERVAL_SECONDS:.0f} s), so the "
            f"operator took {converged - last_write:.1f} s after it"
        )
        print(
            f"operator in total: {cpu_seconds(process) - cpu_at_start:.1f} CPU s, "
            f"RSS {process.memory_info().rss / 2**20:.0f} MiB at the end"
        )
        for task in tasks:
            task.cancel()
        # While the operator runs: it holds a finalizer on the fleet. The reports go with the fleet.
        await asyncio.to_thread(
            kubectl, kubeconfig, "delete", "esnodefleet", FLEET, "-n", namespace, "--wait"
        )
    api.close()  # type: ignore[no-untyped-call]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--agents", type=int, default=1000)
    parser.add_argument("--steady-seconds", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=32, help="simulators' concurrent API requests")
    parser.add_argument("--spread", action="store_true", help="start the agents over one heartbeat")
    parser.add_argument(
        "--startup-timeout-seconds", type=float, default=600.0, help="bound on the first reports' arrival"
    )
    args = parser.parse_args()
    with control_plane() as kubeconfig:
        for crd in CRDS:
            kubectl(kubeconfig, "apply", "--server-side", "--force-conflicts", "-f", str(crd))
        kubectl(
            kubeconfig,
            "wait",
            "--for=condition=Established",
            "crd/esnodefleets.esnode.io",
            "crd/esnodenodes.esnode.io",
        )
        create_nodes(kubeconfig, args.agents, args.threads)
        namespace = f"esnode-bench-{uuid.uuid4().hex[:6]}"
        kubectl(kubeconfig, "create", "namespace", namespace)
        fleet = (
            "apiVersion: esnode.io/v1alpha1\nkind: EsnodeFleet\n"
            f"metadata: {{name: {FLEET}}}\n"
            # No node runs a real agent (the simulators stand in); the heartbeat is the simulators'.
            f"spec: {{nodeSelector: {{{BENCH_LABEL}: {BENCH_LABEL_VALUE}}}, tolerations: [], serviceMonitor: {{enabled: false}},"
            f" report: {{heartbeatSeconds: {HEARTBEAT_SECONDS:.0f}}}}}\n"
        )
        kubectl(kubeconfig, "apply", "-n", namespace, "-f", "-", input=fleet)
        uid = kubectl(
            kubeconfig, "get", "esnodefleet", FLEET, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
        )
        try:
            asyncio.run(bench(kubeconfig, namespace, uid, args))
        finally:
            kubectl_binary = str(Path(_testenv_module().load_state()["bin_dir"]) / "kubectl")
            for what in (["namespace", namespace], ["nodes", "-l", f"{BENCH_LABEL}={BENCH_LABEL_VALUE}"]):
                subprocess.run(
                    [kubectl_binary, f"--kubeconfig={kubeconfig}", "delete", *what, "--wait=false"],
                    check=False,
                    capture_output=True,
                )  # the Nodes too: a second run on the same control plane creates them again
    return 0


if __name__ == "__main__":
    sys.exit(main())
