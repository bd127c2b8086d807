"""The capper's metrics: what esnode set, its state, its actions and the power the node wants.

It reads the capper's last published view (memory only); the limit in force and the GPU's
min/max/default limits are the GPU collector's (esnode_gpu_power_limit_*_watts).
"""

from __future__ import annotations

from esnode_agent.capping.controller import (
    ACTION_CUT,
    ACTION_RAISE,
    ACTION_REFUSED,
    ACTION_RESTORE,
    STATE_AT_FLOOR,
    STATE_BLIND,
    STATE_CAPPING,
    STATE_IDLE,
    STATE_NO_ENVELOPE,
    PowerCapper,
)
from esnode_agent.cycle.collector import STAGE_ASSESS
from esnode_agent.cycle.samples import SampleSink, counter, gauge

LIMIT_ESNODE = gauge(
    "esnode_gpu_power_limit_esnode_watts",
    "The power limit esnode's capper set (enforce) or would set (advise); absent while it leaves the "
    "GPU at its own limit.",
    "gpu",
    "uuid",
)
CAPPING_DISABLED = gauge(
    "esnode_gpu_power_capping_disabled",
    "1 for a GPU the capper gave up on, and why (no_permission, not_supported, out_of_range, gpu_lost, error).",
    "gpu",
    "uuid",
    "reason",
)
CAPPING_STATE = gauge(
    "esnode_power_capping_state",
    "1 for the capper's mode (advise, enforce) and state: idle, capping, at_floor (every GPU at its "
    "minimum, still over), blind (no node power), no_envelope (none configured, none from the fleet yet).",
    "mode",
    "state",
)
CAPPING_ACTIONS = counter(
    "esnode_power_capping_actions_total",
    "Power limit changes by kind: cut, raise, restore, refused (a GPU declined the change).",
    "kind",
)
WANTED = gauge(
    "esnode_power_capping_wanted_watts",
    "The node power the GPUs' recent peak draws (each at least its minimum limit) and the rest of the "
    "node need: what the fleet's power budget should leave the node. Absent without an envelope.",
)
STATES = (STATE_IDLE, STATE_CAPPING, STATE_AT_FLOOR, STATE_BLIND, STATE_NO_ENVELOPE)
ACTIONS = (ACTION_CUT, ACTION_RAISE, ACTION_RESTORE, ACTION_REFUSED)


class PowerCappingCollector:
    name = "power_capping"
    stage = STAGE_ASSESS

    def __init__(self, capper: PowerCapper) -> None:
        self._capper = capper

    def collect(self, sink: SampleSink) -> None:
        view = self._capper.view
        for state in STATES:
            sink.add(CAPPING_STATE, 1 if state == view.state else 0, mode=view.mode, state=state)
        for kind in ACTIONS:
            sink.add(CAPPING_ACTIONS, view.actions[kind], kind=kind)
        for cap in view.gpus:
            labels = {"gpu": str(cap.device.identity.index), "uuid": cap.device.identity.uuid}
            if cap.esnode_watts is not None:
                sink.add(LIMIT_ESNODE, cap.esnode_watts, **labels)
        if view.wanted_watts is not None:
            sink.add(WANTED, view.wanted_watts)
        for uuid, (index, reason) in view.disabled.items():
            sink.add(CAPPING_DISABLED, 1, gpu=str(index), uuid=uuid, reason=reason)
