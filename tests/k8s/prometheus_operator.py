"""The real Prometheus Operator (tests/testenv/prometheus-operator, pinned) against the test apiserver.

It runs as its binary on loopback with the admin client certificate, watches every namespace, and
turns a `Prometheus` object into the configuration Secret and rule ConfigMaps a cluster would have;
the StatefulSet it creates runs as a kwok pod (operator_prometheus.py runs the real server).
Its kubelet-endpoints controller is off (no --kubelet-service) and no admission webhook is needed.
"""

from __future__ import annotations

import base64
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import child_process
import yaml

REPO = Path(__file__).resolve().parents[2]
CRD_DIR = REPO / "tests" / "testenv" / "crds"
# What Prometheus Operator's Prometheus controller watches; all copied unmodified from v0.85.0.
CRDS = ("prometheuses", "servicemonitors", "podmonitors", "probes", "prometheusrules", "scrapeconfigs")
GROUP = "monitoring.coreos.com"
STARTUP_TIMEOUT_SECONDS = 60.0


def crd_files() -> list[Path]:
    return [CRD_DIR / f"{GROUP}_{name}.yaml" for name in CRDS]


def crd_names() -> list[str]:
    return [f"{name}.{GROUP}" for name in CRDS]


@dataclass(frozen=True)
class ClientCerts:
    """The kubeconfig's cluster CA and client certificate as files (the operator's --*-file flags)."""

    server: str
    ca_file: Path
    cert_file: Path
    key_file: Path


def client_certs(kubeconfig: Path, workdir: Path) -> ClientCerts:
    config = yaml.safe_load(kubeconfig.read_text())
    cluster, user = config["clusters"][0]["cluster"], config["users"][0]["user"]
    files = {
        "ca.crt": cluster["certificate-authority-data"],
        "client.crt": user["client-certificate-data"],
        "client.key": user["client-key-data"],
    }
    workdir.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = workdir / name
        path.write_bytes(base64.b64decode(data))
        path.chmod(0o600)
    return ClientCerts(cluster["server"], workdir / "ca.crt", workdir / "client.crt", workdir / "client.key")


def prometheus_object(name: str, version: str, evaluation_interval: str = "2s") -> dict[str, Any]:
    """A Prometheus selecting every ServiceMonitor and PrometheusRule, as kube-prometheus-stack's
    does with `...SelectorNilUsesHelmValues: false`; `version` is the server that will run it."""
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Prometheus",
        "metadata": {"name": name},
        "spec": {
            "version": version,
            "replicas": 1,
            "serviceMonitorSelector": {},
            "serviceMonitorNamespaceSelector": {},
            "ruleSelector": {},
            "ruleNamespaceSelector": {},
            "evaluationInterval": evaluation_interval,
            # loopback_endpointslices.py publishes the agents as EndpointSlices only
            "serviceDiscoveryRole": "EndpointSlice",
        },
    }


def prometheus_version(binary: Path) -> str:
    """The version of the Prometheus that will run the config, so the operator renders for it."""
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True)
    return "v" + out.stdout.split()[2]


@contextmanager
def prometheus_operator(binary: Path, kubeconfig: Path, workdir: Path, port: int) -> Iterator[str]:
    """The operator running until the block ends; yields its base URL (metrics on loopback)."""
    certs = client_certs(kubeconfig, workdir / "certs")
    args = [
        str(binary),
        f"--apiserver={certs.server}",
        f"--ca-file={certs.ca_file}",
        f"--cert-file={certs.cert_file}",
        f"--key-file={certs.key_file}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--log-level=info",
    ]
    url = f"http://127.0.0.1:{port}"
    process = child_process.start(args, workdir / "prometheus-operator.log")
    try:
        child_process.wait_ok(process, f"{url}/healthz", STARTUP_TIMEOUT_SECONDS)
        yield url
    finally:
        child_process.stop(process)
