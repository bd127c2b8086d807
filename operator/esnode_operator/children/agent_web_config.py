"""The agents' web config file (exporter-toolkit's format) when the fleet serves them over TLS.

It lies in the agents' ConfigMap beside esnode.toml; the certificate and key come from the
fleet's Secret, projected into the same folder (daemonset.py), so a renewed certificate reaches
the agents without a rollout and the agent picks it up on its next handshake.
"""

from __future__ import annotations

import yaml

from esnode_agent.serve.web_config import WebConfig
from esnode_operator.names import CONFIG_MOUNT_PATH

WEB_CONFIG_FILE_NAME = "web-config.yml"
WEB_CONFIG_PATH = f"{CONFIG_MOUNT_PATH}/{WEB_CONFIG_FILE_NAME}"
TLS_FOLDER = "tls"  # under CONFIG_MOUNT_PATH
# The Secret's keys (kubernetes.io/tls and cert-manager's) -> the file names in TLS_FOLDER.
TLS_KEYS = ("tls.crt", "tls.key")


def render_web_config() -> str:
    """Checked against the agent's own model, so the operator never ships a file the agent refuses."""
    cert_file, key_file = (f"{CONFIG_MOUNT_PATH}/{TLS_FOLDER}/{key}" for key in TLS_KEYS)
    config = WebConfig.model_validate({"tls_server_config": {"cert_file": cert_file, "key_file": key_file}})
    return str(
        yaml.safe_dump(
            config.model_dump(mode="json", include={"tls_server_config"}, exclude_none=True), sort_keys=False
        )
    )
