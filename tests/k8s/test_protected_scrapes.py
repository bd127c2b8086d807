"""spec.metricsAuth and spec.metricsTLS on real parts, from the chart to Prometheus' targets.

The chart installed (used_by_chain.py) with `metricsAuth: kubernetes`, `metricsTLS` from a
kubernetes.io/tls Secret holding a CA-signed certificate, and its metrics-reader ClusterRole bound
to Prometheus' ServiceAccount through `rbac.metricsReader.serviceAccounts`. The operator (a real
process with the chart's RBAC) lists the agents in the auth-delegator binding; the agents (real
processes, from the operator's ConfigMap and the projected Secret) review each token with the API
server; Prometheus Operator's configuration, run by a real Prometheus with its ServiceAccount's
token, scrapes them over HTTPS. Tokens without the role get 403, no token 401; probes stay open.
"""

from __future__ import annotations

import base64
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client
from test_operator import free_port
from tls_material import TlsMaterial, make_tls_material
from used_by_chain import (
    AGENT_JOB,
    ESNODE_NAMESPACE,
    MONITORING_NAMESPACE,
    Chain,
    chain_running,
    wait_for,
)

pytestmark = pytest.mark.k8s

Env = Any  # conftest.TestEnv
TLS_SECRET = "esnode-agent-tls"
PROMETHEUS_ACCOUNT = "prometheus-k8s"  # kube-prometheus' name
STRANGER = "stranger"  # an account without the metrics-reader role
SERVER_NAME = "localhost"  # in tls_material's server certificate
# rbac/agents.yaml's esnode-agent-auth-delegator, renamed <fullname>-<namespace>-agent-... (release "esnode")
AUTH_DELEGATOR_BINDING = f"esnode-{ESNODE_NAMESPACE}-agent-auth-delegator"
FLEET = "default"


def _objects(tls: TlsMaterial) -> list[dict[str, Any]]:
    def encoded(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    secret = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/tls",
        "metadata": {"name": TLS_SECRET, "namespace": ESNODE_NAMESPACE},
        # what cert-manager writes for a Certificate
        "data": {
            "tls.crt": encoded(tls.server_cert),
            "tls.key": encoded(tls.server_key),
            "ca.crt": encoded(tls.ca_cert),
        },
    }
    accounts = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name, "namespace": namespace}}
        for name, namespace in ((PROMETHEUS_ACCOUNT, MONITORING_NAMESPACE), (STRANGER, MONITORING_NAMESPACE))
    ]
    return [secret, *accounts]


CHART_ARGS = [
    "--set", "fleet.spec.metricsAuth=kubernetes",
    "--set", f"fleet.spec.metricsTLS.secretName={TLS_SECRET}",
    "--set", f"fleet.spec.metricsTLS.serverName={SERVER_NAME}",
    "--set-json", f'rbac.metricsReader.serviceAccounts=[{{"name": "{PROMETHEUS_ACCOUNT}", "namespace": "{MONITORING_NAMESPACE}"}}]',
]  # fmt: skip


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def chain(testenv: Env, tls: TlsMaterial, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    with chain_running(
        testenv.api_client,
        testenv.bin_dir,
        testenv.kubeconfig,
        tmp_path_factory.mktemp("https"),  # short: the kubelet sockets beneath must fit 107 bytes
        prometheus_port=free_port(),
        operator_port=free_port(),
        chart_args=CHART_ARGS,
        objects=_objects(tls),
        prometheus_spec={"serviceAccountName": PROMETHEUS_ACCOUNT},
    ) as running:
        yield running


def token(chain: Chain, account: str) -> str:
    request = client.AuthenticationV1TokenRequest(
        spec=client.V1TokenRequestSpec(audiences=[], expiration_seconds=3600)
    )
    created = client.CoreV1Api(chain.api_client).create_namespaced_service_account_token(
        account, MONITORING_NAMESPACE, request
    )
    return str(created.status.token)


def test_prometheus_scrapes_every_agent_over_https_with_its_own_token(chain: Chain) -> None:
    wait_for(
        f"{len(chain.kwok_nodes)} agent targets up",
        lambda: chain.agents_up() == len(chain.kwok_nodes),
        timeout=120,
    )
    targets = chain.agent_targets()
    assert sorted(t["labels"]["node"] for t in targets) == chain.kwok_nodes
    assert all(t["scrapeUrl"].startswith("https://") for t in targets), targets
    up = chain.prometheus.query(f'up{{job="{AGENT_JOB}"}}')
    assert sorted((s["metric"]["node"], s["value"][1]) for s in up) == [(n, "1") for n in chain.kwok_nodes]
    assert chain.prometheus.query(f'count(esnode_gpu_power_watts{{job="{AGENT_JOB}"}})')[0]["value"][
        1
    ] == str(8 * len(chain.kwok_nodes))


def test_the_operator_lists_the_agents_in_the_auth_delegator_binding(chain: Chain) -> None:
    binding = client.RbacAuthorizationV1Api(chain.api_client).read_cluster_role_binding(
        AUTH_DELEGATOR_BINDING
    )
    assert binding.role_ref.name == "system:auth-delegator"
    assert [(s.kind, s.name, s.namespace) for s in binding.subjects or []] == [
        ("ServiceAccount", f"esnode-{FLEET}", ESNODE_NAMESPACE)
    ]


def test_a_token_without_the_role_gets_403_and_none_401_and_probes_stay_open(
    chain: Chain, tls: TlsMaterial
) -> None:
    wait_for("an agent target", lambda: chain.agent_targets() != [])
    url = chain.agent_targets()[0]["scrapeUrl"]  # https://<pod IP>:<port>/metrics
    base = url.removesuffix("/metrics")
    verified = ssl.create_default_context(cafile=str(tls.ca_cert))

    def get(path: str, bearer: str | None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
        with httpx.Client(verify=verified, timeout=10) as http:  # checks the certificate names localhost
            return http.get(base + path, headers=headers, extensions={"sni_hostname": SERVER_NAME})

    assert get("/metrics", token(chain, PROMETHEUS_ACCOUNT)).status_code == 200
    assert get("/metrics", token(chain, STRANGER)).status_code == 403
    missing = get("/metrics", None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert get("/readyz", None).status_code == 200  # the kubelet's probes carry no token
    with pytest.raises(httpx.TransportError):  # plain HTTP gets no answer: the handshake fails
        httpx.get(base.replace("https://", "http://") + "/readyz", timeout=5)


def test_turning_metrics_auth_off_takes_the_agents_out_of_the_binding(chain: Chain) -> None:
    client.CustomObjectsApi(chain.api_client).patch_namespaced_custom_object(
        "esnode.io", "v1alpha1", ESNODE_NAMESPACE, "esnodefleets", FLEET, {"spec": {"metricsAuth": "none"}}
    )
    rbac = client.RbacAuthorizationV1Api(chain.api_client)
    wait_for(
        "the agents unlisted from the auth-delegator binding",
        lambda: not rbac.read_cluster_role_binding(AUTH_DELEGATOR_BINDING).subjects,
        timeout=60,
    )

    def endpoint() -> dict[str, Any]:
        monitor = client.CustomObjectsApi(chain.api_client).get_namespaced_custom_object(
            "monitoring.coreos.com", "v1", ESNODE_NAMESPACE, "servicemonitors", AGENT_JOB
        )
        return dict(monitor["spec"]["endpoints"][0])  # type: ignore[index]

    wait_for("the ServiceMonitor without a token", lambda: "bearerTokenFile" not in endpoint())
    assert endpoint()["scheme"] == "https"  # metricsTLS stays
