"""The operator after an apiserver outage: it converges on its own 10 s schedule, not kopf's 60 s.

The operator reaches the apiserver through a relay that goes dark for 30 s (api_outage.py); a
fleet is created meanwhile (directly: the apiserver itself is up). Dark: connections cut and
refused (a restart); stalled: nothing answers (a frozen apiserver). Issue 19: such a fleet
converged 30 s after the apiserver came back.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_operator
from api_outage import ApiOutage
from test_operator import Cluster, gpu_fleet

pytestmark = pytest.mark.k8s

fleet_crd = test_operator.fleet_crd  # test_operator.py's fixture: the CRD
OUTAGE_SECONDS = 30.0
CONVERGED_WITHIN_SECONDS = 20.0  # the 10 s cap, one reconcile, the DaemonSet controller's round


@pytest.fixture
def outage(fleet_crd: test_operator.Env, tmp_path: Path) -> Iterator[ApiOutage]:
    relay = ApiOutage(fleet_crd.kubeconfig)
    relay.start()
    try:
        yield relay
    finally:
        relay.stop()


@pytest.mark.parametrize("kind", ["dark", "stalled"])
def test_a_fleet_created_during_an_outage_converges_soon_after_it(
    fleet_crd: test_operator.Env, namespace: str, tmp_path: Path, outage: ApiOutage, kind: str
) -> None:
    kubeconfig = outage.kubeconfig(tmp_path / "through-relay.kubeconfig")
    with test_operator.operator_running(fleet_crd, namespace, kubeconfig, tmp_path / "operator") as cluster:
        cpu_node = {"kubernetes.io/hostname": "kwok-node-3"}  # apart from the GPU nodes of "during"
        cluster.apply("before", {**gpu_fleet(serviceMonitor={"enabled": False}), "nodeSelector": cpu_node})
        cluster.wait_condition("before", "Ready", "True")
        with outage.dark() if kind == "dark" else outage.stalled():
            time.sleep(OUTAGE_SECONDS / 3)
            cluster.apply("during", gpu_fleet(serviceMonitor={"enabled": False}))
            time.sleep(OUTAGE_SECONDS * 2 / 3)
        back = time.monotonic()
        cluster.wait_condition("during", "Ready", "True", timeout=90)
        converged_s = time.monotonic() - back
        _edit_converges(cluster)
    print(
        f"after a {OUTAGE_SECONDS:.0f} s outage ({kind}): the fleet created meanwhile Ready {converged_s:.1f} s after"
    )
    assert converged_s < CONVERGED_WITHIN_SECONDS


def _edit_converges(cluster: Cluster) -> None:
    """The watches are back too: an edit right after is seen at once."""
    cluster.env.kubectl("delete", "configmap", "-n", cluster.namespace, "esnode-before-config")
    cluster.wait(
        "the ConfigMap recreated", lambda: cluster.get("v1", "ConfigMap", "esnode-before-config") is not None,
        timeout=15,
    )  # fmt: skip
