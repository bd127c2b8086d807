"""The simulated power controller of one GPU: its limit, and a draw that follows it.

A real board's power controller reacts to a new limit within a few hundred milliseconds (POLCA and
NVIDIA's own figures), not at once: here the effective cap moves from where it was towards the new
limit as a first-order lag with POWER_RESPONSE_SECONDS, starting from the draw at the time, and the draw is min(demand, effective cap).
Energy is the demand's closed-form integral less what the cap clipped, integrated in small steps
only while the cap can clip at all.
"""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from esnode_agent.capping.state_file import write_atomically

POWER_RESPONSE_SECONDS = 0.3
_STEP_SECONDS = 0.05  # integration step while the cap clips: 1/6 of the response time


@dataclass(slots=True)
class PowerController:
    """One GPU's limit (W) since ``set_at``; ``demand_watts`` is the draw the load asks for."""

    demand_watts: Callable[[float], float]
    peak_demand_watts: float
    limit_watts: float
    set_at: float = 0.0
    cap_at_set_watts: float = math.inf  # the effective cap when the limit was set
    clipped_joules: float = 0.0
    clipped_until: float = 0.0

    def cap_watts(self, t: float) -> float:
        if math.isinf(self.cap_at_set_watts):
            return self.limit_watts
        decay = math.exp(-max(0.0, t - self.set_at) / POWER_RESPONSE_SECONDS)
        return self.limit_watts + (self.cap_at_set_watts - self.limit_watts) * decay

    def draw_watts(self, t: float) -> float:
        return min(self.demand_watts(t), self.cap_watts(t))

    def set_limit(self, t: float, limit_watts: float) -> None:
        self.advance(t)
        self.cap_at_set_watts = self.draw_watts(t)  # the controller works from the power it measures
        self.limit_watts, self.set_at = limit_watts, t

    def advance(self, t: float) -> float:
        """Joules the cap has clipped from the demand up to t (midpoint rule)."""
        start = self.clipped_until
        if t <= start:
            return self.clipped_joules
        if max(self.cap_watts(start), self.limit_watts) >= self.peak_demand_watts:
            self.clipped_until = t  # the cap is above anything the load can ask: nothing clipped
            return self.clipped_joules
        steps = max(1, math.ceil((t - start) / _STEP_SECONDS))
        width = (t - start) / steps
        for step in range(steps):
            middle = start + (step + 0.5) * width
            self.clipped_joules += max(0.0, self.demand_watts(middle) - self.cap_watts(middle)) * width
        self.clipped_until = t
        return self.clipped_joules


class DriverState:
    """The limits set on a simulated server's GPUs (mW by uuid), kept where a test can read them.

    A real driver keeps a limit until it is set again or the driver unloads, whatever happens to
    the process that set it; with a path, so does the simulator, across agent processes.
    """

    def __init__(self, path: Path | None) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._limits_milliwatts: dict[str, int] = dict(read_driver_state(path)) if path else {}

    def limit_milliwatts(self, uuid: str) -> int | None:
        return self._limits_milliwatts.get(uuid)

    def record(self, uuid: str, milliwatts: int) -> None:
        with self._lock:
            self._limits_milliwatts[uuid] = milliwatts
            if self._path is not None:
                write_atomically(self._path, json.dumps(self._limits_milliwatts, sort_keys=True))


def read_driver_state(path: Path) -> Mapping[str, int]:
    """The limits a simulated driver holds, mW by GPU uuid; empty before any was set."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    return {str(uuid): int(mw) for uuid, mw in json.loads(text).items()}
