"""spec.otlp for the agents: keys in esnode.toml, header values from Secrets, TLS files from a Secret.

Header values never reach the ConfigMap: each is a variable of the agent's pod read from its
Secret key, and ESNODE_OTLP_HEADERS joins them with the kubelet's $(NAME) expansion, which reads
variables defined before it. The TLS Secret is projected into the config volume (daemonset.py)
under otlp/, as spec.metricsTLS's is under tls/.
"""

from __future__ import annotations

from typing import Any

from esnode_agent.config.sources import ENV_PREFIX
from esnode_operator.api.models import OtlpPush, OtlpTLSSecret
from esnode_operator.names import CONFIG_MOUNT_PATH

OTLP_TLS_FOLDER = "otlp"  # under CONFIG_MOUNT_PATH
CA_KEY = "ca.crt"
CLIENT_KEYS = ("tls.crt", "tls.key")  # kubernetes.io/tls and cert-manager's names
HEADERS_ENV = f"{ENV_PREFIX}OTLP_HEADERS"
# Not ESNODE_*: they set no agent key themselves.
HEADER_VALUE_ENV_PREFIX = "OTLP_HEADER_"


def otlp_tls_keys(tls: OtlpTLSSecret) -> tuple[str, ...]:
    """The Secret's keys the agents read, which are also their file names in OTLP_TLS_FOLDER."""
    return (CA_KEY, *(CLIENT_KEYS if tls.client_certificate else ()))


def _tls_path(key: str) -> str:
    return f"{CONFIG_MOUNT_PATH}/{OTLP_TLS_FOLDER}/{key}"


def otlp_settings(otlp: OtlpPush) -> dict[str, Any]:
    """The agent config keys spec.otlp decides, headers aside (they are env: otlp_header_env)."""
    settings: dict[str, Any] = {
        "otlp_endpoint": otlp.endpoint,
        "otlp_interval_seconds": otlp.interval_seconds,
        "otlp_timeout_seconds": otlp.timeout_seconds,
        "otlp_insecure_skip_verify": otlp.insecure_skip_verify,
    }
    if otlp.tls_secret is not None:
        settings["otlp_ca_file"] = _tls_path(CA_KEY)
        if otlp.tls_secret.client_certificate:
            settings["otlp_cert_file"], settings["otlp_key_file"] = map(_tls_path, CLIENT_KEYS)
    return settings


def otlp_header_env(otlp: OtlpPush) -> dict[str, dict[str, Any]]:
    """Variable name -> its source, in the order the pod must define them; empty without headers."""
    if not otlp.headers:
        return {}
    env: dict[str, dict[str, Any]] = {}
    pairs = []
    for index, header in enumerate(otlp.headers):
        name = f"{HEADER_VALUE_ENV_PREFIX}{index}"
        env[name] = {"valueFrom": {"secretKeyRef": header.secret_key_ref.model_dump(mode="json")}}
        escaped = header.name.replace("$", "$$")  # the kubelet reads $$ as a literal $
        pairs.append(f"{escaped}=$({name})")
    env[HEADERS_ENV] = {"value": ",".join(pairs)}
    return env
