"""The used-by chain on real parts: Helm install beside node-exporter, Prometheus Operator scraping.

One environment for the module (used_by_chain.py): the chart with default values (plus simulated
GPUs and pod attribution) installed on kwok nodes that already run a node-exporter DaemonSet on
host port 9100; real agent and operator processes behind the pods; Prometheus Operator's generated
configuration run by a real Prometheus that discovers the agents through their Service's
endpoints. The tests run in file order: the last one upgrades and uninstalls the release.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from test_operator import free_port
from used_by_chain import (
    AGENT_JOB,
    AGENT_SELECTOR,
    ESNODE_NAMESPACE,
    MONITORING_NAMESPACE,
    RELEASE,
    WORKLOAD_NAMESPACE,
    WORKLOADS,
    Chain,
    all_running,
    chain_running,
    pods,
    uninstall,
    wait_for,
)

pytestmark = pytest.mark.k8s

Env = Any  # conftest.TestEnv
REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "rules" / "esnode-rules.yaml"
OPERATOR_JOB = f"{RELEASE}-operator"  # the chart's operator Service (release "esnode" names it so)


@pytest.fixture(scope="module")
def chain(testenv: Env, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with chain_running(
        testenv.api_client,
        testenv.bin_dir,
        testenv.kubeconfig,
        tmp_path_factory.mktemp("chain"),
        prometheus_port=free_port(),
        operator_port=free_port(),
    ) as running:
        yield running


def wait_agents_up(chain: Chain, timeout: float = 90.0) -> None:
    wait_for(
        f"{len(chain.kwok_nodes)} agent targets up",
        lambda: chain.agents_up() == len(chain.kwok_nodes),
        timeout,
    )


def test_every_agent_is_scheduled_beside_node_exporter_and_prometheus_scrapes_each(chain: Chain) -> None:
    exporters = pods(
        chain.api_client, MONITORING_NAMESPACE, "app.kubernetes.io/name=prometheus-node-exporter"
    )
    assert sorted(p.spec.node_name for p in exporters) == chain.kwok_nodes
    assert all(p.spec.host_network and p.status.phase == "Running" for p in exporters)
    # The operator creates the DaemonSet after `helm install --wait` returns.
    agents_running = all_running(chain.api_client, ESNODE_NAMESPACE, AGENT_SELECTOR, len(chain.kwok_nodes))
    with contextlib.suppress(TimeoutError):  # the assertions below say what is wrong
        wait_for("an agent Running on every node", agents_running, timeout=60)
    agents = chain.agent_pods()
    assert sorted(p.spec.node_name for p in agents) == chain.kwok_nodes  # one per node, none Pending
    for pod in agents:
        assert pod.status.phase == "Running", (pod.metadata.name, pod.status.conditions)
        scheduled = next(c for c in pod.status.conditions if c.type == "PodScheduled")
        assert scheduled.status == "True"

    wait_agents_up(chain)
    targets = chain.agent_targets()
    assert sorted(t["labels"]["node"] for t in targets) == chain.kwok_nodes
    addresses = {p.status.pod_ip for p in agents}
    assert {t["discoveredLabels"]["__address__"].rsplit(":", 1)[0] for t in targets} == addresses
    wait_for(
        "the operator's target up",
        lambda: (
            [t["health"] for t in chain.prometheus.targets() if t["labels"].get("job") == OPERATOR_JOB]
            == ["up"]
        ),
    )


def test_gpu_series_carry_the_workload_pods_unrenamed_and_host_series_no_pod(chain: Chain) -> None:
    wait_agents_up(chain)
    workloads = {p.metadata.name: p.spec.node_name for p in pods(chain.api_client, WORKLOAD_NAMESPACE)}
    expected = sorted(
        (name, container, workloads[name]) for name, container, gpus in WORKLOADS for _ in range(gpus)
    )

    def attributed() -> list[tuple[str, str, str]]:
        series = chain.prometheus.query(f'esnode_gpu_power_watts{{namespace="{WORKLOAD_NAMESPACE}"}}')
        return sorted((s["metric"]["pod"], s["metric"]["container"], s["metric"]["node"]) for s in series)

    wait_for("GPU power attributed to the workload pods", lambda: attributed() == expected, timeout=60)
    every_series = chain.prometheus.query(f'{{job=~"{AGENT_JOB}|{OPERATOR_JOB}"}}')
    assert len(every_series) > 100
    renamed = sorted({label for s in every_series for label in s["metric"] if label.startswith("exported_")})
    assert renamed == []
    host = chain.prometheus.query('esnode_cpu_seconds_total{mode="user"}')
    assert sorted({s["metric"]["node"] for s in host}) == chain.kwok_nodes
    assert [s["metric"] for s in host if s["metric"].get("pod")] == []
    unattributed_gpus = chain.prometheus.query('esnode_gpu_power_watts{pod=""}')
    assert len(unattributed_gpus) == 8 * len(chain.kwok_nodes) - len(expected)


def test_the_fleets_rules_are_loaded_and_evaluate_without_errors(chain: Chain) -> None:
    shipped = {
        rule.get("alert") or rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"]
        for rule in group["rules"]
    }  # fmt: skip

    def loaded() -> list[dict[str, Any]]:
        groups = chain.prometheus.api("rules")["groups"]
        return [rule for group in groups for rule in group["rules"]]

    wait_for("the PrometheusRule in Prometheus", lambda: {r["name"] for r in loaded()} == shipped)
    interval = 2.0  # prometheus_object's evaluationInterval
    time.sleep(2 * interval + 0.5)
    rules = loaded()
    assert [(r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"] == []
    assert all(r["lastEvaluation"] > "2000" for r in rules)


def test_a_fleet_spec_change_reaches_the_running_prometheus_config(chain: Chain) -> None:
    custom = client.CustomObjectsApi(chain.api_client)
    custom.patch_namespaced_custom_object(
        "esnode.io", "v1alpha1", ESNODE_NAMESPACE, "esnodefleets", "default",
        {"spec": {"scrapeIntervalSeconds": 2}},
    )  # fmt: skip

    def monitor_interval() -> str:
        monitor = custom.get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", ESNODE_NAMESPACE, "servicemonitors", AGENT_JOB
        )
        return str(monitor["spec"]["endpoints"][0].get("interval"))  # type: ignore[index]

    wait_for("the ServiceMonitor's interval", lambda: monitor_interval() == "2s")

    def scrape_interval() -> str | None:
        jobs = chain.prometheus.loaded_config()["scrape_configs"]
        job = next(
            (j for j in jobs if j["job_name"] == f"serviceMonitor/{ESNODE_NAMESPACE}/{AGENT_JOB}/0"), {}
        )
        interval: str | None = job.get("scrape_interval")
        return interval

    wait_for("Prometheus's loaded scrape interval", lambda: scrape_interval() == "2s")
    assert chain.prometheus.reloads >= 1


def test_upgrade_keeps_scraping_and_uninstall_leaves_only_the_crds(chain: Chain) -> None:
    chain.helm_install("--set", "fleet.spec.powerEnvelope.defaultWatts=9000", "--wait", "--timeout=120s")
    wait_for(
        "the upgraded fleet's envelope",
        lambda: chain.prometheus.query("esnode_node_power_envelope_watts == 9000") != [],
        timeout=60,
    )
    wait_agents_up(chain)

    assert chain.agent_pods() and chain.tools.run(
        "kubectl", "get", "esnodefleets", "-n", ESNODE_NAMESPACE, "-o", "name"
    )
    seconds = uninstall(chain.tools)  # the operator is running: the hook deletes the fleet first
    print(f"helm uninstall with the operator running: {seconds:.1f} s")
    remaining = chain.tools.run(
        "kubectl", "get", "all,configmaps,secrets,serviceaccounts,roles,rolebindings,servicemonitors,"
        "prometheusrules,esnodefleets,esnodenodes,kopfpeerings", "-n", ESNODE_NAMESPACE, "-o", "name",
    ).split()  # fmt: skip
    assert sorted(remaining) == ["configmap/kube-root-ca.crt", "serviceaccount/default"]
    cluster_scoped = chain.tools.run(
        "kubectl", "get", "clusterroles,clusterrolebindings,validatingadmissionpolicies,"
        "validatingadmissionpolicybindings,clusterkopfpeerings", "-o", "name",
    ).split()  # fmt: skip
    assert [name for name in cluster_scoped if "esnode" in name] == []
    crds = chain.tools.run("kubectl", "get", "crds", "-o", "name").split()
    assert {c for c in crds if c.endswith(".esnode.io")} == {
        "customresourcedefinition.apiextensions.k8s.io/esnodefleets.esnode.io",
        "customresourcedefinition.apiextensions.k8s.io/esnodenodes.esnode.io",
    }
    wait_for("the agents' processes stopped", lambda: chain.processes.running == {})
