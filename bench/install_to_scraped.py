#!/usr/bin/env python3
"""Time from `helm install` of the chart to every agent `up == 1` in Prometheus, on kwok nodes.

The environment of tests/k8s/test_used_by_chain.py (tests/k8s/used_by_chain.py): Prometheus
Operator, the chart with default values, agents and operator as real processes behind kwok's pods,
and Prometheus running the operator's generated config. For each node count it starts a control
plane of its own (scripts/testenv with ESNODE_TESTENV_DIR in a temp dir), then repeats: delete the
fleet and uninstall, wait until no agent runs, `helm install`, and time until Prometheus has one
`up == 1` agent target per node (polled every 0.2 s; bounded by --timeout). Prints the median,
min and max per node count, and, as the anchor measured in the same run, the median time from
install to every agent pod Running (what the control plane alone takes).
Everything stays on loopback and stops by itself.

    python bench/install_to_scraped.py [--nodes 3 20] [--installs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from kubernetes import config

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "k8s"))

from used_by_chain import (  # noqa: E402 - after the path to the harness
    AGENT_SELECTOR,
    ESNODE_NAMESPACE,
    Chain,
    all_running,
    chain_running,
    uninstall,
    wait_for,
)

TESTENV = REPO / "scripts" / "testenv"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def one_install(chain: Chain, timeout: float) -> tuple[float, float]:
    """(seconds to every agent pod Running, seconds to every agent target up) after helm install."""
    nodes = len(chain.kwok_nodes)
    uninstall(chain.tools)
    wait_for("the agents stopped", lambda: not chain.processes.running, timeout)
    wait_for("the agent targets gone", lambda: not chain.agent_targets(), timeout)
    started = time.monotonic()
    chain.helm_install()
    running = all_running(chain.api_client, ESNODE_NAMESPACE, AGENT_SELECTOR, nodes)
    pods_running = None
    deadline = started + timeout
    while chain.agents_up() < nodes:
        if pods_running is None and running():
            pods_running = time.monotonic() - started
        if time.monotonic() > deadline:
            raise TimeoutError(f"{chain.agents_up()}/{nodes} agents up after {timeout:.0f}s")
        time.sleep(0.2)
    scraped = time.monotonic() - started
    return (pods_running if pods_running is not None else scraped), scraped


def measure(nodes: int, installs: int, timeout: float) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory(prefix="esnode-bench-") as tmp:
        env = {**os.environ, "ESNODE_TESTENV_DIR": f"{tmp}/testenv"}
        subprocess.run([str(TESTENV), "up", "--nodes", str(nodes)], check=True, env=env, timeout=300)
        try:
            state = json.loads(Path(f"{tmp}/testenv/state.json").read_text())
            api_client = config.new_client_from_config(config_file=state["kubeconfig"])
            with chain_running(
                api_client,
                Path(state["bin_dir"]),
                Path(state["kubeconfig"]),
                Path(tmp) / "chain",
                prometheus_port=free_port(),
                operator_port=free_port(),
            ) as chain:
                results = [one_install(chain, timeout) for _ in range(installs)]
        finally:
            subprocess.run([str(TESTENV), "down"], check=False, env=env, timeout=120)
    return [r[0] for r in results], [r[1] for r in results]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[3, 20])
    parser.add_argument("--installs", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds allowed per install")
    args = parser.parse_args()
    for nodes in args.nodes:
        running, scraped = measure(nodes, args.installs, args.timeout)
        print(
            f"{nodes:>3} nodes ({nodes - 1} GPU), {args.installs} installs: install -> every agent up "
            f"median {statistics.median(scraped):.1f} s (min {min(scraped):.1f}, max {max(scraped):.1f}); "
            f"anchor install -> every agent pod Running median {statistics.median(running):.1f} s; "
            f"ratio {statistics.median(scraped) / statistics.median(running):.2f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
