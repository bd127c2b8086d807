"""The agents' ConfigMap: TOML the agent's own loader accepts, carrying what the fleet decided."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

import pytest

from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import CONFIG_FILE_ENV, load_config
from esnode_operator.api.fleet import Fleet
from esnode_operator.api.models import FleetSpec
from esnode_operator.children.agent_config import agent_settings, render_config_toml
from esnode_operator.children.configmap import build_configmap, config_hash
from esnode_operator.children.desired import desired_children
from esnode_operator.children.toml_text import dumps_flat


def fleet(spec: dict[str, Any], name: str = "gpus") -> Fleet:
    body = {
        "apiVersion": "esnode.io/v1alpha1",
        "kind": "EsnodeFleet",
        "metadata": {"name": name, "namespace": "monitoring", "uid": "uid-1", "generation": 1},
        "spec": spec,
    }
    return Fleet.from_body(body)


def load_rendered(text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AgentConfig:
    """Through esnode_agent.config.sources exactly as the agent starts: ESNODE_CONFIG names the file."""
    path = tmp_path / "esnode.toml"
    path.write_text(text)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    for name in [n for n in os.environ if n.startswith("ESNODE_") and n != CONFIG_FILE_ENV]:
        monkeypatch.delenv(name)
    loaded = load_config({}, cwd=tmp_path)
    assert all(source in (str(path), "default") for source in loaded.sources.values())
    return loaded.config


def test_rendered_config_round_trips_through_the_agents_loader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {
        "port": 9200,
        "scrapeIntervalSeconds": 2.5,
        "collectors": {"disk": False, "gpu": False},
        "powerEnvelope": {"defaultWatts": 1200.5},
        "agent": {"logLevel": "debug", "logFormat": "json", "collectorTimeoutSeconds": 1.5},
    }
    configmap = build_configmap(fleet(spec))
    config = load_rendered(configmap["data"]["esnode.toml"], tmp_path, monkeypatch)
    assert config.listen_address == "0.0.0.0:9200"
    assert config.scrape_interval_seconds == 2.5
    assert (config.enable_disk, config.enable_gpu, config.enable_cpu) == (False, False, True)
    assert config.node_power_envelope_watts == 1200.5
    assert (config.log_level, config.log_format, config.collector_timeout_seconds) == ("debug", "json", 1.5)
    assert (str(config.path_procfs), str(config.path_sysfs), str(config.path_rootfs)) == (
        "/host/proc",
        "/host/sys",
        "/host/root",
    )


def test_gpu_options_reach_the_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = {
        "gpu": {
            "visibleDevices": "0,1",
            "mig": False,
            "k8sMode": True,
            "podResourcesSocket": "/run/pr/kubelet.sock",
            "dcgmCompat": True,
        }
    }
    config = load_rendered(render_config_toml(FleetSpec.model_validate(spec), "ns/x"), tmp_path, monkeypatch)
    assert (config.gpu_visible_devices, config.enable_gpu_mig, config.k8s_mode) == ("0,1", False, True)
    assert config.gpu_dcgm_compat is True
    assert str(config.pod_resources_socket) == "/run/pr/kubelet.sock"


def test_power_capping_reaches_the_agent_which_follows_the_fleets_envelope(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = {"powerCapping": {"mode": "enforce", "hysteresisWatts": 30, "holdSeconds": 10, "stepWatts": 20}}
    path = tmp_path / "esnode.toml"
    path.write_text(render_config_toml(FleetSpec.model_validate(spec), "ns/x"))
    for name in [n for n in os.environ if n.startswith("ESNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    monkeypatch.setenv("ESNODE_FLEET", "gpus")  # as the DaemonSet sets it: no envelope needed in the file
    config = load_config({}, cwd=tmp_path).config
    assert (config.power_capping, config.node_power_envelope_watts) == ("enforce", None)
    assert (config.power_capping_hysteresis_watts, config.power_capping_hold_seconds) == (30.0, 10.0)
    assert config.power_capping_step_watts == 20.0
    assert str(config.power_capping_state_dir) == "/var/lib/esnode/capping"  # the DaemonSet's hostPath


def test_an_empty_fleet_renders_a_config_the_agent_accepts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = render_config_toml(FleetSpec(), "monitoring/all")
    config = load_rendered(text, tmp_path, monkeypatch)
    assert config.node_power_envelope_watts is None
    assert config.listen_address == "0.0.0.0:9100"
    assert config.power_capping == "off"  # opt-in


def test_only_the_keys_the_fleet_decides_are_written() -> None:
    """Agent defaults stay the agent's: a newer agent image brings its own, not the operator's copy."""
    written = tomllib.loads(render_config_toml(FleetSpec(), "ns/x"))
    assert set(written) == set(agent_settings(FleetSpec()))
    assert set(written) <= set(AgentConfig.model_fields)
    assert "disk_device_exclude" not in written


def test_configmap_shape_and_owner() -> None:
    configmap = build_configmap(fleet({}))
    assert configmap["metadata"]["name"] == "esnode-gpus-config"
    assert configmap["metadata"]["namespace"] == "monitoring"
    assert configmap["metadata"]["labels"]["app.kubernetes.io/instance"] == "gpus"
    [owner] = configmap["metadata"]["ownerReferences"]
    assert owner == {
        "apiVersion": "esnode.io/v1alpha1",
        "kind": "EsnodeFleet",
        "name": "gpus",
        "uid": "uid-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    assert configmap["data"]["esnode.toml"].startswith(
        "# Rendered by esnode-operator from EsnodeFleet monitoring/gpus"
    )


def test_config_hash_follows_the_config_only() -> None:
    base = config_hash(build_configmap(fleet({"powerEnvelope": {"defaultWatts": 1000}})))
    assert base == config_hash(
        build_configmap(fleet({"powerEnvelope": {"defaultWatts": 1000}, "image": "x:1"}))
    )
    assert base != config_hash(build_configmap(fleet({"powerEnvelope": {"defaultWatts": 1100}})))


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        'quote " and \\ backslash',
        "tab\tnew\nline",
        "control \x01\x1f\x7f",
        "unicode µ 電 🙂",
        r"^(z?ram|loop)\d+$",
        "",
    ],
)
def test_strings_survive_toml(text: str) -> None:
    assert tomllib.loads(dumps_flat({"key": text})) == {"key": text}


@pytest.mark.parametrize("value", [True, False, 0, -3, 5.0, 2.5, 1e-05, 1e16, 1200.125])
def test_scalars_keep_their_type(value: bool | int | float) -> None:
    loaded = tomllib.loads(dumps_flat({"key": value}))["key"]
    assert loaded == value and type(loaded) is type(value)


def test_toml_header_is_a_comment_and_odd_keys_are_quoted() -> None:
    text = dumps_flat({"a.b": 1, "plain_key": 2}, header="line one\nline two")
    assert text.startswith("# line one\n# line two\n")
    assert tomllib.loads(text) == {"a.b": 1, "plain_key": 2}


def test_a_fleets_agents_know_whom_to_report_as_and_how_often(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pod's env (downward API resolved as the kubelet does) over the rendered config file."""
    subject = fleet({"report": {"heartbeatSeconds": 30, "powerStepWatts": 100}, "nodeCondition": True})
    [daemonset] = desired_children(subject).daemonsets
    downward = {"spec.nodeName": "gpu-node-7", "metadata.namespace": "monitoring"}
    path = tmp_path / "esnode.toml"
    path.write_text(build_configmap(subject)["data"]["esnode.toml"])
    for name in [n for n in os.environ if n.startswith("ESNODE_")]:
        monkeypatch.delenv(name)
    for variable in daemonset["spec"]["template"]["spec"]["containers"][0]["env"]:
        value = variable.get("value") or downward.get(
            variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
        )
        if value is not None:
            monkeypatch.setenv(variable["name"], value)
    monkeypatch.setenv(CONFIG_FILE_ENV, str(path))
    config = load_config({}, cwd=tmp_path).config
    assert (config.node_name, config.namespace) == ("gpu-node-7", "monitoring")
    assert (config.fleet, config.fleet_uid) == ("gpus", "uid-1")
    assert (config.report_heartbeat_seconds, config.report_power_step_watts) == (30, 100)
    assert config.node_condition is True
