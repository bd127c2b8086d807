"""spec.otlp: the fleet's agents push to a receiver with headers from Secrets and TLS from a Secret.

The rendered ConfigMap, pod environment and projected files are turned into what the kubelet
gives the agent (kubelet_view), and the agent starts from them through its own loader.
"""

from __future__ import annotations

import os
import re
import ssl
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
from fleet_children import children
from kubelet_view import kubelet_env, kubelet_writes
from otlp_receiver import receiving
from pydantic import ValidationError
from tls_material import TlsMaterial, make_tls_material

from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import load_config
from esnode_agent.cycle.samples import Sample, SampleIndex
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.otlp.wiring import build_pusher
from esnode_operator.api.crd import fleet_crd
from esnode_operator.api.models import FleetSpec
from esnode_operator.children.configmap import config_hash
from esnode_operator.children.desired import Children
from esnode_operator.names import CONFIG_FILE_NAME, CONFIG_MOUNT_PATH
from esnode_operator.reconcile.reconciler import describe_validation

SECRETS = {"otlp-auth": {"token": "Bearer s3cret", "tenant": "team-a"}}
DOWNWARD = {"spec.nodeName": "gpu-node-7", "metadata.namespace": "monitoring"}


def pod_spec(rendered: Children) -> dict[str, Any]:
    [daemonset] = rendered.daemonsets
    return dict(daemonset["spec"]["template"]["spec"])


def config_volume(rendered: Children) -> dict[str, Any]:
    pod = pod_spec(rendered)
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "config"]
    assert (mount["mountPath"], mount["readOnly"]) == (CONFIG_MOUNT_PATH, True)
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    return dict(volume)


def start_agent(
    rendered: Children, tls: TlsMaterial | None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AgentConfig:
    """The agent's config as it starts in the pod: the volume's files, the pod's environment."""
    pod_root = tmp_path / "etc-esnode"
    pod_root.mkdir()
    files = (
        {} if tls is None else {"ca.crt": tls.ca_cert, "tls.crt": tls.client_cert, "tls.key": tls.client_key}
    )
    kubelet_writes(config_volume(rendered), rendered.configmap, files, pod_root)
    config_file = pod_root / CONFIG_FILE_NAME
    config_file.write_text(config_file.read_text().replace(CONFIG_MOUNT_PATH, str(pod_root)))
    for name in [n for n in os.environ if n.startswith("ESNODE_")]:
        monkeypatch.delenv(name)
    env = kubelet_env(pod_spec(rendered)["containers"][0]["env"], SECRETS, DOWNWARD)
    for name, value in env.items():
        monkeypatch.setenv(name, value.replace(CONFIG_MOUNT_PATH, str(pod_root)))
    return load_config({}, cwd=tmp_path).config


def test_without_otlp_the_agents_push_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rendered = children({})
    config = start_agent(rendered, None, tmp_path, monkeypatch)
    assert (config.otlp_endpoint, config.otlp_headers) == (None, {})
    assert not any(
        key.startswith("otlp") for key in tomllib.loads(rendered.configmap["data"][CONFIG_FILE_NAME])
    )
    assert "configMap" in config_volume(rendered)


def test_endpoint_interval_and_timeout_reach_the_agent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {
        "otlp": {
            "endpoint": "http://otel-collector.monitoring:4318",
            "intervalSeconds": 15,
            "timeoutSeconds": 3,
        }
    }
    config = start_agent(children(spec), None, tmp_path, monkeypatch)
    assert config.otlp_endpoint == "http://otel-collector.monitoring:4318"
    assert (config.otlp_interval_seconds, config.otlp_timeout_seconds) == (15.0, 3.0)
    assert (config.otlp_ca_file, config.otlp_cert_file, config.otlp_insecure_skip_verify) == (
        None,
        None,
        False,
    )
    assert config.otlp_headers == {}


def test_headers_come_from_secrets_through_the_pods_env_never_the_configmap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = [
        {"name": "Authorization", "secretKeyRef": {"name": "otlp-auth", "key": "token"}},
        {"name": "X-Scope-OrgID", "secretKeyRef": {"name": "otlp-auth", "key": "tenant"}},
        # $ is a token character; unescaped, the kubelet would turn $$ into one $
        {"name": "X-$$Cost", "secretKeyRef": {"name": "otlp-auth", "key": "tenant"}},
    ]
    rendered = children({"otlp": {"endpoint": "https://otlp.example.com", "headers": headers}})
    config = start_agent(rendered, None, tmp_path, monkeypatch)
    assert {name: value.get_secret_value() for name, value in config.otlp_headers.items()} == {
        "Authorization": "Bearer s3cret",
        "X-Scope-OrgID": "team-a",
        "X-$$Cost": "team-a",
    }
    configmap_text = "".join(rendered.configmap["data"].values())
    assert "otlp_headers" not in configmap_text and "otlp-auth" not in configmap_text
    env = pod_spec(rendered)["containers"][0]["env"]
    assert not any("s3cret" in str(variable) for variable in env)


def test_a_change_of_spec_otlp_rolls_the_agents_through_the_config_hash() -> None:
    def hashed(spec: dict[str, Any]) -> str:
        return config_hash(children(spec).configmap)

    pushing = hashed({"otlp": {"endpoint": "http://c:4318"}})
    assert pushing != hashed({})
    assert pushing != hashed({"otlp": {"endpoint": "http://c:4318", "intervalSeconds": 30}})


def test_the_tls_secret_is_projected_read_only_and_names_only_the_ca_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rendered = children({"otlp": {"endpoint": "https://c:4318", "tlsSecret": {"name": "otlp-tls"}}})
    [secret] = [s["secret"] for s in config_volume(rendered)["projected"]["sources"] if "secret" in s]
    assert secret == {"name": "otlp-tls", "items": [{"key": "ca.crt", "path": "otlp/ca.crt"}]}
    config = start_agent(rendered, make_tls_material(tmp_path / "certs"), tmp_path, monkeypatch)
    assert config.otlp_ca_file == tmp_path / "etc-esnode" / "otlp" / "ca.crt"
    assert (config.otlp_cert_file, config.otlp_key_file) == (None, None)


def test_metrics_tls_and_otlp_tls_project_their_secrets_side_by_side() -> None:
    spec = {
        "metricsTLS": {"secretName": "agent-tls"},
        "otlp": {"endpoint": "https://c:4318", "tlsSecret": {"name": "agent-tls", "clientCertificate": True}},
    }
    sources = config_volume(children(spec))["projected"]["sources"]
    assert [s["secret"] for s in sources if "secret" in s] == [
        {"name": "agent-tls", "items": [{"key": k, "path": f"tls/{k}"} for k in ("tls.crt", "tls.key")]},
        {
            "name": "agent-tls",
            "items": [{"key": k, "path": f"otlp/{k}"} for k in ("ca.crt", "tls.crt", "tls.key")],
        },
    ]


def _requiring_client_certificates(tls: TlsMaterial) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.server_cert, tls.server_key)
    context.load_verify_locations(tls.ca_cert)
    context.verify_mode = ssl.CERT_REQUIRED
    return context


def test_an_agent_of_the_fleet_pushes_over_mutual_tls_with_the_secret_headers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tls = make_tls_material(tmp_path / "certs")
    with receiving([], _requiring_client_certificates(tls)) as receiver:
        otlp = {
            "endpoint": receiver.url,
            "tlsSecret": {"name": "otlp-tls", "clientCertificate": True},
            "headers": [{"name": "Authorization", "secretKeyRef": {"name": "otlp-auth", "key": "token"}}],
        }
        pusher = build_pusher(start_agent(children({"otlp": otlp}), tls, tmp_path, monkeypatch))
        assert pusher is not None
        pusher.start()
        pusher.offer(
            Snapshot(1, 1000.0, 0.01, SampleIndex([Sample(GPU.power, ("0", "GPU-aaaa"), 300.0)]), ())
        )
        for _ in range(500):
            if pusher.stats.results["success"]:
                break
            time.sleep(0.01)
        pusher.stop()
    assert pusher.stats.results["success"] == 1, pusher.stats
    assert receiver.headers[0]["Authorization"] == "Bearer s3cret"
    assert receiver.client_names == ["prometheus"]  # tls_material's client certificate


@pytest.mark.parametrize(
    ("otlp", "says"),
    [
        ({"endpoint": "https://user:pw@otlp.example.com"}, "carries credentials"),
        ({"endpoint": "http://otlp.example.com/v1/metrics?token=x"}, "has a query string"),
        ({"endpoint": "otlp.example.com:4318"}, "is not an http(s) URL with a host"),
        (
            {
                "endpoint": "http://c:4318",
                "headers": [
                    {"name": "Authorization", "secretKeyRef": {"name": "a", "key": "k"}},
                    {"name": "authorization", "secretKeyRef": {"name": "b", "key": "k"}},
                ],
            },
            "names a header twice",
        ),
        ({"endpoint": "http://c:4318", "intervalSeconds": 0}, "greater than or equal to 0.1"),
    ],
)
def test_a_malformed_otlp_spec_is_refused_naming_the_field_without_echoing_secrets(
    otlp: dict[str, Any], says: str
) -> None:
    """What the CRD schema lets through is refused by the models: the fleet is held with InvalidSpec."""
    with pytest.raises(ValidationError) as refused:
        FleetSpec.model_validate({"otlp": otlp})
    message = describe_validation(refused.value)
    assert message.startswith("spec.otlp") and says in message
    assert "pw" not in message and "token=x" not in message


def _endpoint_shape() -> re.Pattern[str]:
    """The CRD's CEL check of otlp.endpoint, as a Python regex."""
    otlp = fleet_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"][
        "properties"
    ]["otlp"]
    [rule] = otlp["properties"]["endpoint"]["x-kubernetes-validations"]
    literal = re.fullmatch(r"self\.matches\('(.*)'\)", rule["rule"])
    assert literal is not None
    return re.compile(literal.group(1).replace("\\\\", "\\"))


@pytest.mark.parametrize(
    "endpoint",
    [
        "http://otel-collector.monitoring:4318",
        "https://otlp.example.com/v1/metrics",
        "http://prometheus.monitoring.svc:9090/api/v1/otlp",
        "HTTPS://[fd00::1]:4318/",
        "http://127.0.0.1:4318/a@b",  # an @ in the path is no user info
    ],
)
def test_the_apiservers_check_accepts_every_endpoint_the_agent_accepts(endpoint: str) -> None:
    AgentConfig(otlp_endpoint=endpoint)
    assert _endpoint_shape().match(endpoint)


@pytest.mark.parametrize(
    "endpoint",
    ["ftp://c", "c:4318", "http://u@c", "http://c/?q=1", "http://c/#top", "http:///path"],
)
def test_the_apiserver_refuses_endpoints_the_agent_refuses(endpoint: str) -> None:
    assert not _endpoint_shape().match(endpoint)
    with pytest.raises(ValidationError):
        AgentConfig(otlp_endpoint=endpoint)
