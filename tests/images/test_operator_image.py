"""Dockerfile.operator built and run: as its non-root user, against the test control plane."""

from __future__ import annotations

import os
import shutil
import time
import tomllib
from pathlib import Path
from typing import Any

import httpx
import oci_images
import pytest
import yaml
from kubernetes import client

pytestmark = [pytest.mark.images, pytest.mark.k8s, pytest.mark.timeout(1800)]  # a cold build

Env = Any  # tests/k8s/conftest.py's TestEnv
VERSION = tomllib.loads((oci_images.REPO / "pyproject.toml").read_text())["project"]["version"]
FLEET_CRD = oci_images.REPO / "crds" / "esnodefleet.yaml"
NON_ROOT_UID = 65532
KUBECONFIG_IN_IMAGE = "/etc/esnode/kubeconfig"


def test_the_operator_image_prints_its_version(operator_image: oci_images.Built) -> None:
    with oci_images.container(operator_image.name) as ctr:
        result = ctr.run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["esnode-operator", VERSION]


def test_the_operator_image_carries_no_agent_only_dependencies(operator_image: oci_images.Built) -> None:
    with oci_images.mounted(operator_image.name) as root:
        installed = oci_images.installed(root)
    assert {"esnode", "kopf", "kubernetes"} <= installed
    assert installed.isdisjoint({"grpcio", "nvidia_ml_py", "uvicorn", "bcrypt", "pip", "setuptools"})


def uids_of_session(leader: int) -> set[int]:
    """Real uids of the processes buildah started for one container (its session on the host)."""
    uids = set()
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if os.getsid(int(status.parent.name)) != leader:
                continue
            fields = dict(line.split(":", 1) for line in status.read_text().splitlines() if ":" in line)
        except (OSError, ProcessLookupError):
            continue  # exited meanwhile
        uids.add(int(fields["Uid"].split()[0]))
    return uids


def test_the_operator_image_reconciles_a_fleet_on_the_test_control_plane(
    operator_image: oci_images.Built, testenv: Env, namespace: str, tmp_path: Path
) -> None:
    testenv.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(FLEET_CRD))
    testenv.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/esnodefleets.esnode.io")
    kubeconfig = tmp_path / "kubeconfig"
    shutil.copyfile(testenv.kubeconfig, kubeconfig)
    kubeconfig.chmod(0o644)  # readable by the image's uid; the test cluster's throwaway credentials
    metrics_port = oci_images.free_port()
    log = tmp_path / "operator.log"
    with oci_images.container(operator_image.name) as ctr:
        command = ctr.command(
            "run", "--namespace", namespace, "--standalone",
            "--metrics-address", "127.0.0.1", "--metrics-port", str(metrics_port), "--verbose",
            volumes=(f"{kubeconfig}:{KUBECONFIG_IN_IMAGE}:ro",), env=(f"KUBECONFIG={KUBECONFIG_IN_IMAGE}",),
        )  # fmt: skip
        with oci_images.running(command, log) as process:
            testenv.wait_until("the operator's metrics endpoint", lambda: serving(metrics_port, process, log))
            assert uids_of_session(process.pid) - {0} == {NON_ROOT_UID}, "buildah itself runs as root"
            fleet = {"apiVersion": "esnode.io/v1alpha1", "kind": "EsnodeFleet", "metadata": {"name": "img"},
                     "spec": {"serviceMonitor": {"enabled": False}}}  # fmt: skip
            testenv.kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(fleet))
            core = client.CoreV1Api(testenv.api_client)
            testenv.wait_until(
                "the fleet's ConfigMap", lambda: configmap_exists(core, namespace, "esnode-img-config")
            )
            # While the operator still runs: kopf's finalizer must be released.
            testenv.kubectl("delete", "esnodefleets", "--all", "-n", namespace, "--wait", "--timeout=60s")


def serving(port: int, process: Any, log: Path) -> bool:
    assert process.poll() is None, log.read_text()
    try:
        return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200
    except httpx.TransportError:
        time.sleep(0.1)
        return False


def configmap_exists(core: client.CoreV1Api, namespace: str, name: str) -> bool:
    return any(cm.metadata.name == name for cm in core.list_namespaced_config_map(namespace).items)
