"""The power capper: each cycle, the limits that hold node power under the envelope; and undoing them.

``advise`` computes and exports the limits it would set; ``enforce`` sets them. Every limit set is
recorded in the state file first (the original, and the value about to be set), so that on close,
on a start after a crash, or on a start with capping off, exactly the limits esnode set are put
back, and a limit someone changed since is left alone. A GPU that refuses (no permission, not
supported, lost) drops out of capping with one log line; the others carry on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from esnode_agent.capping.peak import RecentDraws, at_limit
from esnode_agent.capping.share import GpuPower, Policy, next_limits, node_wanted_watts
from esnode_agent.capping.state_file import CappingState, ChangedLimit, StateFile
from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.gpu.backend import GpuIdentity, PowerLimitError, PowerLimits

log = logging.getLogger(__name__)

Mode = Literal["off", "advise", "enforce"]
ACTION_CUT, ACTION_RAISE, ACTION_RESTORE, ACTION_REFUSED = "cut", "raise", "restore", "refused"
# What the capper is doing, for the state metric, /status and the node report.
STATE_IDLE = "idle"  # no limit of ours below its ceiling
STATE_CAPPING = "capping"  # some GPU held below its ceiling
STATE_AT_FLOOR = "at_floor"  # every GPU at its minimum and the node still over the envelope
STATE_BLIND = "blind"  # no node power this cycle: nothing is changed
STATE_NO_ENVELOPE = "no_envelope"  # none configured, none from the fleet yet: nothing is cut


@runtime_checkable
class PowerLimitDevice(Protocol):
    @property
    def identity(self) -> GpuIdentity: ...

    def power_limits(self) -> PowerLimits: ...

    def set_power_limit_milliwatts(self, milliwatts: int) -> None: ...


@dataclass(slots=True)
class GpuCap:
    """One capped-or-cappable GPU: its constraints and what esnode set (or, advising, would set)."""

    device: PowerLimitDevice
    limits: PowerLimits
    ceiling_watts: float
    esnode_watts: float | None = None


@dataclass(slots=True)
class CapperView:
    """What the metrics, /status and the report show; replaced whole after every step."""

    mode: Mode
    state: str = STATE_IDLE
    gpus: tuple[GpuCap, ...] = ()
    disabled: dict[str, tuple[int, str]] = field(default_factory=dict)  # uuid -> (index, reason)
    actions: Counter[str] = field(default_factory=Counter)
    wanted_watts: float | None = None  # the node power the GPUs' recent peaks need (with an envelope)


def _power_capped(snapshot: Snapshot) -> set[str]:
    """GPUs whose clocks the power cap holds down this cycle (NVML's software power cap reason)."""
    throttled = snapshot.samples.named(GPU.throttle.name)
    return {s.label("uuid") for s in throttled if s.label("reason") == "power" and s.value >= 1}


def restore_recorded(state_file: StateFile, devices: Sequence[PowerLimitDevice]) -> int:
    """Put back every limit the state file says esnode set; returns how many. Used at start."""
    state = state_file.load()
    if not state.gpus:
        return 0
    by_uuid = {d.identity.uuid: d for d in devices}
    restored = 0
    for uuid, changed in list(state.gpus.items()):
        device = by_uuid.get(uuid)
        if device is None:
            continue  # not visible to this run (GPUs off, another device list): kept for a later one
        if _restore_one(device, changed):
            restored += 1
        del state.gpus[uuid]
        state_file.save(state)
    log.info(
        "power limits restored from the state file", extra={"gpus": restored, "path": str(state_file.path)}
    )
    return restored


def _restore_one(device: PowerLimitDevice, changed: ChangedLimit) -> bool:
    index = device.identity.index
    try:
        current = round(device.power_limits().current_watts * 1000)
        if not changed.is_ours(current):
            log.warning(
                "power limit changed by someone else since esnode set it: left alone",
                extra={"gpu": index, "limit_milliwatts": current},
            )
            return False
        if current != changed.original_milliwatts:
            device.set_power_limit_milliwatts(changed.original_milliwatts)
    except PowerLimitError as exc:
        log.warning(
            "cannot restore power limit", extra={"gpu": index, "reason": exc.reason, "error": str(exc)}
        )
        return False
    return True


class PowerCapper:
    def __init__(
        self,
        mode: Mode,
        devices: Sequence[PowerLimitDevice],
        *,
        envelope: Callable[[], float | None],
        hysteresis_watts: float,
        step_watts: float,
        hold_seconds: float,
        state_file: StateFile,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._mode = mode
        self._envelope = envelope  # the envelope in force: configured, else the fleet's (read each step)
        self._hysteresis_watts = hysteresis_watts
        self._step_watts = step_watts
        self._hold_seconds = hold_seconds
        self._state_file = state_file
        self._clock = clock
        self._lock = threading.Lock()  # step runs in a worker thread, close on the event loop's
        self._last_cut: float | None = None
        self._recent = RecentDraws(hold_seconds)  # a GPU keeps room for what it drew this long
        self._closed = False
        self._recorded = CappingState()
        self.view = CapperView(mode)
        restore_recorded(state_file, devices)
        self._gpus = [cap for cap in (self._open(d) for d in devices) if cap is not None]
        self._publish(STATE_IDLE if envelope() is not None else STATE_NO_ENVELOPE)

    def step(self, snapshot: Snapshot) -> None:
        with self._lock:
            if self._closed:
                return
            try:
                self._step(snapshot)
            except Exception:  # a fault here must never stop the collection loop that calls it
                log.exception("power capping step failed")

    def close(self) -> None:
        """Put every limit esnode set back to its original; no step changes anything after this."""
        with self._lock:
            self._closed = True
            restored = len(self._recorded.gpus)
            for cap in self._gpus:
                changed = self._recorded.gpus.get(cap.device.identity.uuid)
                if changed is not None and _restore_one(cap.device, changed):
                    self.view.actions[ACTION_RESTORE] += 1
                cap.esnode_watts = None
            self._recorded.gpus.clear()
            self._state_file.save(self._recorded)
        if restored:
            log.info("power limits restored", extra={"gpus": restored})

    def _open(self, device: PowerLimitDevice) -> GpuCap | None:
        try:
            limits = device.power_limits()
        except PowerLimitError as exc:
            self._disable(device, exc)
            return None
        return GpuCap(device, limits, ceiling_watts=min(limits.current_watts, limits.default_watts))

    def _step(self, snapshot: Snapshot) -> None:
        node_power = snapshot.samples.value(NODE_POWER.name)
        if node_power is None or not self._gpus:
            self._publish(STATE_BLIND if node_power is None else STATE_IDLE)
            return
        draws = snapshot.samples.by_label(GPU.power.name, "uuid")
        now = self._clock()
        # A GPU without a reading counts as drawing nothing: the rest of the node is taken to draw
        # what that GPU does, never less, and the GPU's limit still counts in the sum.
        capped = _power_capped(snapshot)
        powers = [
            self._gpu_power(cap, draws.get(cap.device.identity.uuid, 0.0), capped, now) for cap in self._gpus
        ]
        may_raise = self._last_cut is None or now - self._last_cut >= self._hold_seconds
        policy = Policy(self._envelope(), self._hysteresis_watts, self._step_watts)
        changes = next_limits(powers, node_power, policy, may_raise)
        self._apply_in_order(changes, {power.uuid: power.limit_watts for power in powers}, now)
        wanted = None if policy.envelope_watts is None else node_wanted_watts(powers, node_power)
        self._publish(self._state(node_power, policy.envelope_watts), wanted)

    def _apply_in_order(self, changes: Mapping[str, float], limits: Mapping[str, float], now: float) -> None:
        """Cuts come first and the raises take the room they free: a raise whose room a refused
        cut did not free is skipped, so the limits in force never sum above the envelope's share."""
        by_uuid = {cap.device.identity.uuid: cap for cap in self._gpus}
        cut_refused = False
        for uuid, watts in changes.items():
            if cut_refused and watts > limits[uuid]:
                continue
            kind = self._apply(by_uuid[uuid], watts)
            if kind == ACTION_CUT:
                self._last_cut = now
            cut_refused = cut_refused or (kind is None and watts < limits[uuid])

    def _gpu_power(self, cap: GpuCap, draw_watts: float, power_capped: set[str], now: float) -> GpuPower:
        uuid = cap.device.identity.uuid
        limit = cap.ceiling_watts if cap.esnode_watts is None else cap.esnode_watts
        held_back = uuid in power_capped or at_limit(draw_watts, limit)
        recent = self._recent.add(uuid, now, draw_watts, held_back)
        return GpuPower(
            uuid,
            draw_watts,
            recent.peak_watts,
            recent.held_back,
            limit,
            cap.limits.min_watts,
            cap.ceiling_watts,
        )

    def _apply(self, cap: GpuCap, watts: float) -> str | None:
        """Sets (enforce) or notes (advise) one limit; the kind of action, None when refused."""
        before = cap.ceiling_watts if cap.esnode_watts is None else cap.esnode_watts
        kind = ACTION_CUT if watts < before else ACTION_RAISE
        milliwatts = round(watts * 1000)
        if self._mode == "enforce" and not self._set(cap, milliwatts):
            return None
        cap.esnode_watts = None if milliwatts >= round(cap.ceiling_watts * 1000) else milliwatts / 1000
        self.view.actions[kind] += 1
        return kind

    def _set(self, cap: GpuCap, milliwatts: int) -> bool:
        uuid = cap.device.identity.uuid
        changed = self._recorded.gpus.get(uuid) or ChangedLimit(
            original_milliwatts=round(cap.limits.current_watts * 1000)
        )
        changed.pending_milliwatts = milliwatts
        self._recorded.gpus[uuid] = changed
        try:
            self._state_file.save(self._recorded)  # before the call: a crash after it still knows
        except OSError as exc:  # no record, no change: what cannot be restored is not done
            log.warning(
                "power limit not set: cannot record it",
                extra={"gpu": cap.device.identity.index, "error": str(exc)},
            )
            changed.pending_milliwatts = None
            self.view.actions[ACTION_REFUSED] += 1
            return False
        try:
            cap.device.set_power_limit_milliwatts(milliwatts)
        except PowerLimitError as exc:
            self._disable(cap.device, exc)
            self._gpus.remove(cap)
            self.view.actions[ACTION_REFUSED] += 1
            return False
        changed.set_milliwatts, changed.pending_milliwatts = milliwatts, None
        if milliwatts == changed.original_milliwatts:
            del self._recorded.gpus[uuid]  # back where it was: nothing of ours to restore
        try:
            self._state_file.save(self._recorded)
        except OSError as exc:  # the file still lists this value as pending: a restore still finds it
            log.warning("power capping state not updated", extra={"error": str(exc)})
        return True

    def _disable(self, device: PowerLimitDevice, exc: PowerLimitError) -> None:
        identity = device.identity
        log.warning(
            "power capping off for this GPU",
            extra={"gpu": identity.index, "uuid": identity.uuid, "reason": exc.reason, "error": str(exc)},
        )
        self.view.disabled[identity.uuid] = (identity.index, exc.reason)

    def _state(self, node_power: float, envelope_watts: float | None) -> str:
        capped = [cap for cap in self._gpus if cap.esnode_watts is not None]
        if envelope_watts is None:
            return STATE_NO_ENVELOPE if not capped else STATE_CAPPING
        if not capped:
            return STATE_IDLE
        at_floor = all(cap.esnode_watts == cap.limits.min_watts for cap in self._gpus)
        return STATE_AT_FLOOR if at_floor and node_power > envelope_watts else STATE_CAPPING

    def _publish(self, state: str, wanted_watts: float | None = None) -> None:
        self.view = CapperView(
            self._mode,
            state,
            tuple(GpuCap(c.device, c.limits, c.ceiling_watts, c.esnode_watts) for c in self._gpus),
            dict(self.view.disabled),
            Counter(self.view.actions),
            wanted_watts,
        )
