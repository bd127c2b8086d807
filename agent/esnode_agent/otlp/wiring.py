"""Builds the OTLP pusher a config asks for, or none."""

from __future__ import annotations

import os
import socket
import ssl

import httpx

from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError
from esnode_agent.otlp.push import OtlpPusher, metrics_url, tls_context


def build_pusher(config: AgentConfig) -> OtlpPusher | None:
    """Fails with ConfigError, before anything starts, on a TLS file that cannot be used."""
    if config.otlp_endpoint is None:
        return None
    # ~4 MiB of protobuf descriptors: loaded only when the push is on.
    from esnode_agent.otlp.encode import SnapshotEncoder, resource_attributes  # noqa: PLC0415

    try:
        context = tls_context(
            _name(config.otlp_ca_file),
            _name(config.otlp_cert_file),
            _name(config.otlp_key_file),
            config.otlp_insecure_skip_verify,
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"otlp TLS files: {exc}") from None
    client = httpx.Client(
        verify=context,
        timeout=config.otlp_timeout_seconds,
        headers={name: value.get_secret_value() for name, value in config.otlp_headers.items()},
        follow_redirects=False,  # a redirect could carry the headers' secrets elsewhere
    )
    node_name = config.node_name or os.environ.get("NODE_NAME")
    encoder = SnapshotEncoder(resource_attributes(socket.gethostname(), node_name))
    return OtlpPusher(client, metrics_url(config.otlp_endpoint), encoder, config.otlp_interval_seconds)


def _name(path: os.PathLike[str] | None) -> str | None:
    return None if path is None else os.fspath(path)
