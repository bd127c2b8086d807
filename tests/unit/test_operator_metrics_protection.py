"""spec.metricsAuth and spec.metricsTLS rendered into the agents' ConfigMap, pods and ServiceMonitor.

What the operator renders is read back with the agent's own loaders (config file, web config file
with real certificates placed where the pod's volume puts them), so a fleet never ships a
configuration its agents refuse or a certificate path that points nowhere.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from fleet_children import children
from kubelet_view import kubelet_writes
from pydantic import ValidationError
from tls_material import make_tls_material

from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import CONFIG_FILE_ENV, load_config
from esnode_agent.serve.kube_auth import PROBE_PATHS
from esnode_agent.serve.web_config import load_web_config
from esnode_operator.api.models import FleetSpec
from esnode_operator.children.desired import Children
from esnode_operator.kube import KubeError
from esnode_operator.names import CONFIG_FILE_NAME, CONFIG_MOUNT_PATH
from esnode_operator.reconcile.auth_delegation import AuthDelegation

TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
PROTECTION_FIELDS = {"scheme", "tlsConfig", "bearerTokenFile", "authorization", "basicAuth"}


def endpoint(rendered: Children) -> dict[str, Any]:
    assert rendered.servicemonitor is not None
    [only] = rendered.servicemonitor["spec"]["endpoints"]
    return dict(only)


def agent_container(rendered: Children) -> dict[str, Any]:
    [daemonset] = rendered.daemonsets
    [container] = daemonset["spec"]["template"]["spec"]["containers"]
    return dict(container)


def config_volume(rendered: Children) -> dict[str, Any]:
    [daemonset] = rendered.daemonsets
    volumes = {v["name"]: v for v in daemonset["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["name"]: m["mountPath"] for m in agent_container(rendered)["volumeMounts"]}
    assert mounts["config"] == CONFIG_MOUNT_PATH
    return dict(volumes["config"])


def agent_config(rendered: Children, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentConfig:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text(rendered.configmap["data"][CONFIG_FILE_NAME])
    for name in [n for n in os.environ if n.startswith("ESNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    return load_config({}, cwd=tmp_path).config


def test_by_default_agents_serve_plain_http_to_anyone_and_prometheus_scrapes_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = children({})
    config = agent_config(rendered, tmp_path, monkeypatch)
    assert (config.metrics_auth, config.web_config_file) == ("none", None)
    assert list(rendered.configmap["data"]) == [CONFIG_FILE_NAME]
    assert "configMap" in config_volume(rendered)
    assert PROTECTION_FIELDS.isdisjoint(endpoint(rendered))
    assert "scheme" not in agent_container(rendered)["readinessProbe"]["httpGet"]


def test_metrics_auth_has_agents_review_tokens_and_prometheus_send_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = children({"metricsAuth": "kubernetes"})
    assert agent_config(rendered, tmp_path, monkeypatch).metrics_auth == "kubernetes"
    scrape = endpoint(rendered)
    assert scrape["bearerTokenFile"] == TOKEN_FILE  # as kube-prometheus scrapes the kubelet
    assert PROTECTION_FIELDS & set(scrape) == {"bearerTokenFile"}  # plain HTTP: no TLS asked for
    container = agent_container(rendered)
    probed = {container[p]["httpGet"]["path"] for p in ("readinessProbe", "livenessProbe")}
    assert probed <= PROBE_PATHS  # the kubelet sends no token: these stay open in the agent
    [daemonset] = rendered.daemonsets
    assert daemonset["spec"]["template"]["spec"]["automountServiceAccountToken"] is True  # for the reviews


def test_a_token_from_a_secret_replaces_prometheus_own() -> None:
    credentials = {"name": "scraper-token", "key": "token"}
    scrape = endpoint(
        children(
            {"metricsAuth": "kubernetes", "serviceMonitor": {"authorization": {"credentials": credentials}}}
        )
    )
    assert scrape["authorization"] == {"type": "Bearer", "credentials": credentials}
    assert "bearerTokenFile" not in scrape


def test_a_token_from_a_secret_without_metrics_auth_is_refused() -> None:
    spec = {"serviceMonitor": {"authorization": {"credentials": {"name": "t", "key": "token"}}}}
    with pytest.raises(ValidationError, match="needs metricsAuth kubernetes"):
        FleetSpec.model_validate(spec)


def test_metrics_tls_puts_the_secrets_certificate_where_the_rendered_web_config_reads_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = children({"metricsTLS": {"secretName": "agent-certs"}, "metricsAuth": "kubernetes"})
    config = agent_config(rendered, tmp_path, monkeypatch)
    assert config.web_config_file == Path(CONFIG_MOUNT_PATH) / "web-config.yml"

    volume = config_volume(rendered)
    [secret_source] = [s["secret"] for s in volume["projected"]["sources"] if "secret" in s]
    assert secret_source["name"] == "agent-certs"
    tls = make_tls_material(tmp_path / "certs")
    pod_root = tmp_path / "etc-esnode"
    pod_root.mkdir()
    kubelet_writes(
        volume, rendered.configmap, {"tls.crt": tls.server_cert, "tls.key": tls.server_key}, pod_root
    )
    web_config_here = pod_root / config.web_config_file.relative_to(CONFIG_MOUNT_PATH)
    web_config_here.write_text(web_config_here.read_text().replace(CONFIG_MOUNT_PATH, str(pod_root)))
    loaded = load_web_config(web_config_here)  # loads the certificate and key, or raises
    assert loaded.tls_server_config is not None and loaded.basic_auth_users == {}

    for probe in ("readinessProbe", "livenessProbe"):
        assert agent_container(rendered)[probe]["httpGet"]["scheme"] == "HTTPS"
    scrape = endpoint(rendered)
    assert scrape["scheme"] == "https"
    assert scrape["tlsConfig"] == {
        "ca": {"secret": {"name": "agent-certs", "key": "ca.crt"}},
        "serverName": "esnode-gpus.monitoring.svc",  # the Service: what a cert-manager Certificate names
    }
    assert scrape["bearerTokenFile"] == TOKEN_FILE


def test_metrics_tls_options_name_the_ca_key_and_the_certificates_name() -> None:
    spec = {"metricsTLS": {"secretName": "certs", "caKey": "root.pem", "serverName": "agents.example.org"}}
    scrape = endpoint(children(spec))
    assert scrape["tlsConfig"] == {
        "ca": {"secret": {"name": "certs", "key": "root.pem"}},
        "serverName": "agents.example.org",
    }
    assert "bearerTokenFile" not in scrape  # TLS alone: encrypted, open to any scraper


class BindingKube:
    def __init__(self, exists: bool = True) -> None:
        self.exists = exists
        self.subjects: list[dict[str, str]] = []

    def get(self, _api: str, kind: str, _ns: str | None, name: str) -> dict[str, Any]:
        assert (kind, name) == ("ClusterRoleBinding", "esnode-agent-auth-delegator")
        if not self.exists:
            raise KubeError(404, "NotFound", "clusterrolebindings not found")
        return {"metadata": {"resourceVersion": "1"}, "subjects": list(self.subjects)}

    def request(self, _method: str, _path: str, *, body: dict[str, Any], content_type: str) -> dict[str, Any]:
        self.subjects = body["subjects"]
        return {}


def test_the_fleets_agents_are_listed_in_the_auth_delegator_binding_while_metrics_auth_is_on() -> None:
    kube = BindingKube()
    delegation = AuthDelegation(kube)  # type: ignore[arg-type]
    assert delegation.grant("monitoring", "gpus", granted=True) is None
    assert kube.subjects == [{"kind": "ServiceAccount", "name": "esnode-gpus", "namespace": "monitoring"}]
    delegation.grant("monitoring", "gpus", granted=False)
    assert kube.subjects == []


def test_a_missing_auth_delegator_binding_says_what_the_agents_do_meanwhile() -> None:
    problem = AuthDelegation(BindingKube(exists=False)).grant("m", "f", granted=True)  # type: ignore[arg-type]
    assert problem is not None and problem.reason == "AgentRBACMissing"
    assert "spec.metricsAuth is kubernetes" in problem.message and "401" in problem.message
    assert AuthDelegation(BindingKube(exists=False)).grant("m", "f", granted=False) is None  # type: ignore[arg-type]
