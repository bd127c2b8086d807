"""The fleet's copies of agent settings refuse what the agent refuses, and default to what it does.

A bound the CRD lacks would let `kubectl apply` accept a fleet whose agents then exit 2; a default
that drifted would make a fleet's agents differ from an agent run by hand.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import annotated_types as at
import pytest
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from esnode_agent.config.model import AgentConfig
from esnode_operator.api.models import (
    AgentSettings,
    FleetSpec,
    GpuOptions,
    OtlpPush,
    PowerCapping,
    ReportSettings,
)
from esnode_operator.children.agent_config import agent_settings

# (fleet model, its field) -> the agent config key it sets (children/agent_config.py).
PAIRS: list[tuple[type[BaseModel], str, str]] = [
    (FleetSpec, "scrape_interval_seconds", "scrape_interval_seconds"),
    (AgentSettings, "collector_timeout_seconds", "collector_timeout_seconds"),
    (AgentSettings, "log_level", "log_level"),
    (AgentSettings, "log_format", "log_format"),
    (ReportSettings, "heartbeat_seconds", "report_heartbeat_seconds"),
    (ReportSettings, "power_step_watts", "report_power_step_watts"),
    (GpuOptions, "pod_resources_socket", "pod_resources_socket"),
    (GpuOptions, "mig", "enable_gpu_mig"),
    (GpuOptions, "dcgm_compat", "gpu_dcgm_compat"),
    (GpuOptions, "process_top_n", "gpu_process_top_n"),
    (PowerCapping, "mode", "power_capping"),
    (PowerCapping, "hysteresis_watts", "power_capping_hysteresis_watts"),
    (PowerCapping, "hold_seconds", "power_capping_hold_seconds"),
    (PowerCapping, "step_watts", "power_capping_step_watts"),
    (FleetSpec, "metrics_auth", "metrics_auth"),
    (OtlpPush, "interval_seconds", "otlp_interval_seconds"),
    (OtlpPush, "timeout_seconds", "otlp_timeout_seconds"),
    (OtlpPush, "insecure_skip_verify", "otlp_insecure_skip_verify"),
]
# Every optional section on, so that the keys each renders are checked too.
ALL_ON = FleetSpec.model_validate(
    {"otlp": {"endpoint": "https://c:4318", "tlsSecret": {"name": "s", "clientCertificate": True}}}
)


def _interval(field: FieldInfo) -> tuple[float, bool, float, bool]:
    """(low, low inclusive, high, high inclusive) from the field's numeric constraints."""
    low, low_in, high, high_in = -math.inf, True, math.inf, True
    for item in field.metadata:
        if isinstance(item, at.Gt):
            low, low_in = float(item.gt), False  # type: ignore[arg-type]
        elif isinstance(item, at.Ge):
            low, low_in = float(item.ge), True  # type: ignore[arg-type]
        elif isinstance(item, at.Lt):
            high, high_in = float(item.lt), False  # type: ignore[arg-type]
        elif isinstance(item, at.Le):
            high, high_in = float(item.le), True  # type: ignore[arg-type]
    return low, low_in, high, high_in


def _choices(annotation: Any) -> set[Any] | None:
    for arg in (annotation, *get_args(annotation)):
        if get_origin(arg) is Literal:
            return set(get_args(arg))
    return None


@pytest.mark.parametrize(("model", "field", "key"), PAIRS, ids=[p[2] for p in PAIRS])
def test_the_fleet_is_no_looser_than_the_agent_and_defaults_alike(
    model: type[BaseModel], field: str, key: str
) -> None:
    theirs, ours = model.model_fields[field], AgentConfig.model_fields[key]
    f_low, f_low_in, f_high, f_high_in = _interval(theirs)
    a_low, a_low_in, a_high, a_high_in = _interval(ours)
    assert (f_low, not f_low_in) >= (a_low, not a_low_in), f"{field} accepts below what {key} accepts"
    assert (f_high, f_high_in) <= (a_high, a_high_in), f"{field} accepts above what {key} accepts"
    fleet_choices, agent_choices = _choices(theirs.annotation), _choices(ours.annotation)
    assert (fleet_choices is None) == (agent_choices is None)
    if fleet_choices is not None and agent_choices is not None:
        assert fleet_choices <= agent_choices
    agent_default = ours.default
    fleet_default = theirs.default
    if isinstance(agent_default, Path):
        fleet_default = Path(fleet_default)
    assert fleet_default == agent_default


def test_every_fleet_setting_the_operator_renders_is_held_here() -> None:
    rendered = set(agent_settings(FleetSpec())) | set(agent_settings(ALL_ON))
    held = {key for _, _, key in PAIRS}
    fixed_by_the_operator = {"listen_address", "path_procfs", "path_sysfs", "path_rootfs", "node_condition"}
    # The fleet says "all" where an agent run by hand reads NVIDIA_VISIBLE_DEVICES; the agent's own
    # check (parse_device_list) validates what the operator renders (build_agent_config).
    fixed_by_the_operator.add("gpu_visible_devices")
    # Pod attribution is on in a fleet (there is a kubelet) and off for an agent run by hand.
    fixed_by_the_operator.add("k8s_mode")
    # The capper's state lives in a host folder the DaemonSet mounts (children/daemonset.py).
    fixed_by_the_operator.add("power_capping_state_dir")
    # With spec.metricsTLS, the web config the operator renders beside esnode.toml.
    fixed_by_the_operator.add("web_config_file")
    # spec.otlp.tlsSecret's files, projected into the config volume (children/agent_otlp.py).
    fixed_by_the_operator |= {"otlp_ca_file", "otlp_cert_file", "otlp_key_file"}
    # Required in the fleet (no default to agree on), checked by the agent's own OtlpEndpoint type.
    fixed_by_the_operator.add("otlp_endpoint")
    collector_switches = {key for key in rendered if key.startswith("enable_") and key != "enable_gpu_mig"}
    assert rendered - held - fixed_by_the_operator - collector_switches == set()
