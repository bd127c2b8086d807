#!/usr/bin/env python3
"""Time from creating an EsnodeFleet to its DaemonSet existing, on the test control plane.

Starts the operator (`esnode-operator run --namespace <bench ns> --standalone`), then creates the
fleets one after another, each waiting for its DaemonSet before the next, and polls for each
DaemonSet every 10 ms. Prints the median (target: at most 1 s), p90 and max. Fleets select a
label no node has, so no agents are scheduled: the measurement is the operator's own path
(kopf's event, finalizer, node and peer checks, dry runs, applies). Uses a running
`scripts/testenv up` environment, or starts one and stops it afterwards.

    python bench/operator_apply_latency.py [--fleets 20]
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import psutil
from kubernetes import client, config

from esnode_operator.kube import Kube, KubeError

REPO = Path(__file__).resolve().parents[1]
TESTENV = REPO / "scripts" / "testenv"
OPERATOR = Path(sys.executable).parent / "esnode-operator"
FLEET_CRD = REPO / "crds" / "esnodefleet.yaml"
TARGET_SECONDS = 1.0
POLL_SECONDS = 0.01


def _testenv_module() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("esnode_testenv", str(TESTENV))
    spec = importlib.util.spec_from_loader("esnode_testenv", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


@contextmanager
def control_plane() -> Iterator[Path]:
    """The kubeconfig of a healthy environment; one started here is stopped afterwards."""
    script = _testenv_module()
    started = not script.healthy(script.load_state())
    if started:
        subprocess.run([str(TESTENV), "up"], check=True, timeout=300)
    try:
        yield Path(script.load_state()["kubeconfig"])
    finally:
        if started:
            subprocess.run([str(TESTENV), "down"], check=False, timeout=120)


def new_api_client(kubeconfig: Path) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)  # type: ignore[no-untyped-call]
    return client.ApiClient(configuration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def operator(kubeconfig: Path, namespace: str, port: int | None = None) -> Iterator[psutil.Process]:
    """`esnode-operator run` for one namespace, once its metrics port answers."""
    port = port or free_port()
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    command = [str(OPERATOR), "run", "--namespace", namespace, "--standalone", "--metrics-port", str(port)]
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 30
            while not _serving(port):
                if process.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise SystemExit(f"the operator did not start:\n{log.read().decode()[-3000:]}")
                time.sleep(0.2)
            yield psutil.Process(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=15)


def _serving(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def fleet(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "esnode.io/v1alpha1",
        "kind": "EsnodeFleet",
        "metadata": {"name": name},
        "spec": {"nodeSelector": {"esnode.io/bench": name}, "serviceMonitor": {"enabled": False}},
    }


def measure(kube: Kube, namespace: str, count: int) -> list[float]:
    """Create the fleets one by one; poll (every 10 ms) for each one's DaemonSet before the next."""
    latencies = []
    for index in range(count):
        name = f"bench-{index}"
        started = time.monotonic()
        kube.request(
            "POST", f"/apis/esnode.io/v1alpha1/namespaces/{namespace}/esnodefleets", body=fleet(name)
        )
        while not _exists(kube, namespace, f"esnode-{name}"):
            if time.monotonic() - started > 30:
                raise SystemExit(f"no DaemonSet for {name} after 30 s")
            time.sleep(POLL_SECONDS)
        latencies.append(time.monotonic() - started)
    return latencies


def _exists(kube: Kube, namespace: str, daemonset: str) -> bool:
    try:
        kube.get("apps/v1", "DaemonSet", namespace, daemonset)
    except KubeError as exc:
        if exc.status == 404:
            return False
        raise
    return True


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--fleets", type=int, default=20)
    args = parser.parse_args()
    with control_plane() as kubeconfig:
        kubectl = [
            str(Path(_testenv_module().load_state()["bin_dir"]) / "kubectl"),
            f"--kubeconfig={kubeconfig}",
        ]
        subprocess.run(
            [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(FLEET_CRD)], check=True
        )
        subprocess.run(
            [*kubectl, "wait", "--for=condition=Established", "crd/esnodefleets.esnode.io"], check=True
        )
        namespace = f"esnode-bench-{uuid.uuid4().hex[:6]}"
        subprocess.run([*kubectl, "create", "namespace", namespace], check=True, capture_output=True)
        api = new_api_client(kubeconfig)
        try:
            with operator(kubeconfig, namespace):
                latencies = measure(Kube(api), namespace, args.fleets)
                subprocess.run(
                    [*kubectl, "delete", "esnodefleets", "--all", "-n", namespace, "--wait"],
                    check=False,
                    capture_output=True,
                )
        finally:
            subprocess.run(
                [*kubectl, "delete", "namespace", namespace, "--wait=false"], check=False, capture_output=True
            )
            api.close()  # type: ignore[no-untyped-call]
    latencies.sort()
    median = statistics.median(latencies)
    p90 = latencies[max(0, round(0.9 * len(latencies)) - 1)]
    verdict = "meets" if median <= TARGET_SECONDS else "MISSES"
    print(
        f"EsnodeFleet create -> DaemonSet created, {len(latencies)} fleets: median {median * 1000:.0f} ms, "
        f"p90 {p90 * 1000:.0f} ms, max {latencies[-1] * 1000:.0f} ms ({verdict} the {TARGET_SECONDS:.0f} s target)"
    )
    return 0 if median <= TARGET_SECONDS else 1


if __name__ == "__main__":
    sys.exit(main())
