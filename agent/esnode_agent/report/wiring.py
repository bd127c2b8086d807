"""Decides whether this agent reports its node to a cluster, and builds the reporter if so."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from esnode_agent.config.model import AgentConfig
from esnode_agent.report.policy import ReportPolicy
from esnode_agent.report.reporter import Reporter, ReportTarget

if TYPE_CHECKING:
    from kubernetes import client

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def _in_cluster() -> bool:
    return "KUBERNETES_SERVICE_HOST" in os.environ and (SERVICE_ACCOUNT_DIR / "token").is_file()


def api_client(config: AgentConfig) -> client.ApiClient:
    """In a pod its service account; off a cluster, config.kubeconfig."""
    # The kubernetes client adds ~9 MiB of resident memory: loaded only where the agent uses it.
    from kubernetes import client  # noqa: PLC0415
    from kubernetes import config as kube_config  # noqa: PLC0415

    # The kubernetes package ships no type hints for its config loaders.
    if config.kubeconfig is not None:
        api: client.ApiClient = kube_config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=str(config.kubeconfig)
        )
        return api
    kube_config.load_incluster_config()  # type: ignore[no-untyped-call]
    return client.ApiClient()


def _namespace(config: AgentConfig) -> str | None:
    if config.namespace:
        return config.namespace
    path = SERVICE_ACCOUNT_DIR / "namespace"
    return path.read_text().strip() if path.is_file() else None


def build_reporter(
    config: AgentConfig, on_envelope: Callable[[float | None], None] | None = None
) -> Reporter | None:
    if config.kubeconfig is None and not _in_cluster():
        return None
    node_name = config.node_name or os.environ.get("NODE_NAME")
    namespace = _namespace(config)
    missing = [
        k for k, v in (("node_name", node_name), ("fleet", config.fleet), ("namespace", namespace)) if not v
    ]
    if missing:
        log.info("node report off", extra={"missing": ",".join(missing)})
        return None
    assert node_name and config.fleet and namespace
    from esnode_agent.report.kube_writer import KubeStatusWriter  # noqa: PLC0415  (imports kubernetes)

    writer = KubeStatusWriter(api_client(config), namespace, config.fleet_uid)
    policy = ReportPolicy(
        config.report_heartbeat_seconds, config.report_power_step_watts, config.report_min_interval_seconds
    )
    log.info("node report on", extra={"node": node_name, "fleet": config.fleet, "namespace": namespace})
    target = ReportTarget(node_name, config.fleet, config.node_condition, namespace)
    return Reporter(writer, policy, target, on_envelope)
