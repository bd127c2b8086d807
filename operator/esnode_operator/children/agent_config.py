"""The agents' configuration, rendered from a fleet spec through the agent's own config model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource, SettingsError

from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ENV_PREFIX
from esnode_operator.api.models import FleetSpec
from esnode_operator.children.agent_otlp import otlp_settings
from esnode_operator.children.agent_web_config import WEB_CONFIG_PATH
from esnode_operator.children.toml_text import Scalar, dumps_flat

# Where the DaemonSet mounts the host's filesystems (read-only) inside the agent container.
HOST_PROC = "/host/proc"
HOST_SYS = "/host/sys"
HOST_ROOT = "/host/root"
# The power capper's state (what it set, to restore): a host folder, so it outlives the pod.
CAPPING_STATE_DIR = "/var/lib/esnode/capping"
# The DaemonSet names every agent's fleet (ESNODE_FLEET); the config is checked as the agent reads it.
FLEET_SET_BY_THE_DAEMONSET = "set-by-the-daemonset"

# spec.gpu field -> agent config key (they also act on the pod: NVIDIA_VISIBLE_DEVICES, the
# pod-resources mount).
_GPU_CONFIG_KEYS = {
    "visible_devices": "gpu_visible_devices",
    "mig": "enable_gpu_mig",
    "k8s_mode": "k8s_mode",
    "pod_resources_socket": "pod_resources_socket",
    "dcgm_compat": "gpu_dcgm_compat",
    "process_top_n": "gpu_process_top_n",
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
        "power_capping": spec.power_capping.mode,
        "power_capping_hysteresis_watts": spec.power_capping.hysteresis_watts,
        "power_capping_hold_seconds": spec.power_capping.hold_seconds,
        "power_capping_step_watts": spec.power_capping.step_watts,
        "power_capping_state_dir": CAPPING_STATE_DIR,
        "metrics_auth": spec.metrics_auth,
    }
    if spec.metrics_tls is not None:
        settings["web_config_file"] = WEB_CONFIG_PATH
    if spec.agent.collector_timeout_seconds is not None:
        settings["collector_timeout_seconds"] = spec.agent.collector_timeout_seconds
    if spec.otlp is not None:
        settings.update(otlp_settings(spec.otlp))
    if spec.power_envelope.default_watts is not None:
        settings["node_power_envelope_watts"] = spec.power_envelope.default_watts
    gpu = dict(spec.gpu)
    settings.update({key: gpu[field] for field, key in _GPU_CONFIG_KEYS.items()})
    return settings


def build_agent_config(spec: FleetSpec) -> AgentConfig:
    """Validated by the agent's model, so the operator never ships a config the agent would refuse."""
    return AgentConfig.model_validate({**agent_settings(spec), "fleet": FLEET_SET_BY_THE_DAEMONSET})


def render_config_toml(spec: FleetSpec, source: str) -> str:
    """esnode.toml for the fleet's agents; ``source`` names the fleet in the header comment."""
    decided = agent_settings(spec)
    values: dict[str, Scalar] = build_agent_config(spec).model_dump(mode="json", include=set(decided))
    header = f"Rendered by esnode-operator from EsnodeFleet {source}; edits here are overwritten."
    return dumps_flat(values, header=header)


class AgentEnvError(ValueError):
    """spec.env sets an agent key (ESNODE_<KEY>) to a value the agent refuses: it would exit 2."""


class _SpecEnv(EnvSettingsSource):
    """The agent's own env layer (config/sources.py), reading the fleet's spec.env, not os.environ."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._spec_env = {name.lower(): value for name, value in env.items()}
        super().__init__(AgentConfig, env_prefix=ENV_PREFIX, case_sensitive=False)  # type: ignore[arg-type]

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return self._spec_env


def check_agent_env(spec: FleetSpec) -> None:
    """Validate the rendered settings with spec.env's ESNODE_* values over them, as the agent will.

    Only literal values: a valueFrom is read on the node. Raises AgentEnvError naming the variable.
    """
    env = {e.name: e.value for e in spec.env if e.value is not None and e.name.upper().startswith(ENV_PREFIX)}
    if not env:
        return
    try:
        overrides = _SpecEnv(env)()
    except SettingsError as exc:  # a list or table key whose value is not JSON
        raise AgentEnvError(f"spec.env: {exc}; the agent would exit 2 on it") from None
    try:
        AgentConfig.model_validate({**agent_settings(spec), **overrides})
    except ValidationError as exc:
        error = exc.errors()[0]
        key = str(error["loc"][0]) if error["loc"] else ""
        name = next((n for n in env if n.upper() == f"{ENV_PREFIX}{key.upper()}"), "")
        shown = [name] if name else sorted(env)  # a rule across keys: every variable is a suspect
        what = "spec.env " + ", ".join(f"{n}={env[n]!r}" for n in shown)
        message = str(error["msg"]).removeprefix("Value error, ")
        raise AgentEnvError(f"{what}: {message}; the agent would exit 2 on it") from None
