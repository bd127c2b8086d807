"""Builds the capper from the config and the GPU collector's devices; restores leftovers when off.

The capper follows the envelope in force (collectors/envelope.py): the configured one, else the one
the fleet's power budget wrote into this node's EsnodeNode, which needs the node report on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from esnode_agent.capping.controller import PowerCapper, PowerLimitDevice, restore_recorded
from esnode_agent.capping.state_file import StateFile
from esnode_agent.collectors.envelope import EnvelopeCollector, EnvelopeHolder
from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError
from esnode_agent.cycle.collector import Collector

log = logging.getLogger(__name__)


def build_capper(
    config: AgentConfig, collectors: Sequence[Collector], *, reporting: bool
) -> PowerCapper | None:
    """``reporting``: the node report is on, so a fleet envelope can arrive."""
    holder = next((c.holder for c in collectors if isinstance(c, EnvelopeCollector)), None)
    if config.power_capping != "off" and config.node_power_envelope_watts is None and not reporting:
        raise ConfigError(
            f"power_capping={config.power_capping}: no node_power_envelope_watts, and no node report "
            "(kubeconfig, or a pod) for a fleet envelope"
        )
    return capper_for(config, _devices(collectors), holder)


def capper_for(
    config: AgentConfig, devices: Sequence[PowerLimitDevice], holder: EnvelopeHolder | None = None
) -> PowerCapper | None:
    """The capper for advise/enforce, following ``holder``'s envelope (default: the configured one).
    With capping off it only puts back limits an earlier run set (it crashed, or capping was
    switched off since) and returns None."""
    state_file = StateFile(config.power_capping_state_dir)
    if config.power_capping == "off":
        if state_file.path.exists():
            _restore_leftovers(state_file, devices)
        return None
    try:
        state_file.check_writable()
        return _capper(
            config, devices, state_file, holder or EnvelopeHolder(config.node_power_envelope_watts)
        )
    except (ValueError, OSError) as exc:  # the agent stops with one line rather than cap unrecorded
        raise ConfigError(f"power_capping_state_dir={config.power_capping_state_dir}: {exc}") from None


def _restore_leftovers(state_file: StateFile, devices: Sequence[PowerLimitDevice]) -> None:
    """With capping off a bad state file is worth a warning, not a node without metrics."""
    try:
        restore_recorded(state_file, devices)
    except (ValueError, OSError) as exc:
        log.warning("power limits left by an earlier run not restored", extra={"error": str(exc)})


def _capper(
    config: AgentConfig, devices: Sequence[PowerLimitDevice], state_file: StateFile, holder: EnvelopeHolder
) -> PowerCapper:
    capper = PowerCapper(
        config.power_capping,
        devices,
        envelope=lambda: holder.current_watts,
        hysteresis_watts=config.power_capping_hysteresis_watts,
        step_watts=config.power_capping_step_watts,
        hold_seconds=config.power_capping_hold_seconds,
        state_file=state_file,
    )
    log.info(
        "power capping on",
        extra={
            "mode": config.power_capping,
            "gpus": len(capper.view.gpus),
            "envelope": "configured" if holder.static_watts is not None else "fleet",
        },
    )
    return capper


def _devices(collectors: Sequence[Collector]) -> list[PowerLimitDevice]:
    gpu = next((c for c in collectors if isinstance(c, GpuCollector)), None)
    if gpu is None:
        return []
    return [d for d in gpu.devices if isinstance(d, PowerLimitDevice)]
