"""The agents' configuration, rendered from a fleet spec through the agent's own config model."""

from __future__ import annotations

from typing import Any

from esnode_agent.config.model import AgentConfig
from esnode_operator.api.models import FleetSpec
from esnode_operator.children.agent_web_config import WEB_CONFIG_PATH
from esnode_operator.children.toml_text import Scalar, dumps_flat

# Where the DaemonSet mounts the host's filesystems (read-only) inside the agent container.
HOST_PROC = "/host/proc"
HOST_SYS = "/host/sys"
HOST_ROOT = "/host/root"

# spec.gpu field -> agent config key (they also act on the pod: NVIDIA_VISIBLE_DEVICES, the
# pod-resources mount).
_GPU_CONFIG_KEYS = {
    "visible_devices": "gpu_visible_devices",
    "mig": "enable_gpu_mig",
    "k8s_mode": "k8s_mode",
    "pod_resources_socket": "pod_resources_socket",
    "dcgm_compat": "gpu_dcgm_compat",
}


def agent_settings(spec: FleetSpec) -> dict[str, Any]:
    """The agent config keys a fleet decides; every other key keeps the agent's own default."""
    settings: dict[str, Any] = {
        "listen_address": f"0.0.0.0:{spec.port}",
        "scrape_interval_seconds": spec.scrape_interval_seconds,
        **{f"enable_{name}": enabled for name, enabled in spec.collectors},
        "path_procfs": HOST_PROC,
        "path_sysfs": HOST_SYS,
        "path_rootfs": HOST_ROOT,
        "log_level": spec.agent.log_level,
        "log_format": spec.agent.log_format,
        "report_heartbeat_seconds": spec.report.heartbeat_seconds,
        "report_power_step_watts": spec.report.power_step_watts,
        "node_condition": spec.node_condition,
        "metrics_auth": spec.metrics_auth,
    }
    if spec.metrics_tls is not None:
        settings["web_config_file"] = WEB_CONFIG_PATH
    if spec.agent.collector_timeout_seconds is not None:
        settings["collector_timeout_seconds"] = spec.agent.collector_timeout_seconds
    if spec.power_envelope.default_watts is not None:
        settings["node_power_envelope_watts"] = spec.power_envelope.default_watts
    gpu = dict(spec.gpu)
    settings.update({key: gpu[field] for field, key in _GPU_CONFIG_KEYS.items()})
    return settings


def build_agent_config(spec: FleetSpec) -> AgentConfig:
    """Validated by the agent's model, so the operator never ships a config the agent would refuse."""
    return AgentConfig.model_validate(agent_settings(spec))


def render_config_toml(spec: FleetSpec, source: str) -> str:
    """esnode.toml for the fleet's agents; ``source`` names the fleet in the header comment."""
    decided = agent_settings(spec)
    values: dict[str, Scalar] = build_agent_config(spec).model_dump(mode="json", include=set(decided))
    header = f"Rendered by esnode-operator from EsnodeFleet {source}; edits here are overwritten."
    return dumps_flat(values, header=header)
