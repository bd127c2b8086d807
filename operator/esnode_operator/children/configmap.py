"""The ConfigMap holding the agents' esnode.toml (and web-config.yml when they serve TLS)."""

from __future__ import annotations

import hashlib
from typing import Any

from esnode_operator.api.fleet import Fleet, adopted
from esnode_operator.children.agent_config import render_config_toml
from esnode_operator.children.agent_web_config import WEB_CONFIG_FILE_NAME, render_web_config
from esnode_operator.names import CONFIG_FILE_NAME, configmap_name, fleet_labels


def build_configmap(fleet: Fleet) -> dict[str, Any]:
    data = {CONFIG_FILE_NAME: render_config_toml(fleet.spec, fleet.ref)}
    if fleet.spec.metrics_tls is not None:
        data[WEB_CONFIG_FILE_NAME] = render_web_config()
    return adopted(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": configmap_name(fleet.name), "labels": fleet_labels(fleet.name)},
            "data": data,
        },
        fleet,
    )


def config_hash(configmap: dict[str, Any]) -> str:
    """Digest of the ConfigMap's data; on the pod template, so a config change rolls the agents."""
    data = configmap["data"]
    text = "\0".join(f"{key}\0{data[key]}" for key in sorted(data))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
