"""Simulated GPU demand traces: the load a job asks of a GPU over time, 0..1, with its integral.

Each trace is closed form (load and load-seconds), so the simulator's energy counter and its power
gauge never drift apart, however far a test clock jumps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

_LOAD_MEAN, _LOAD_SWING = 0.5, 0.45


class Demand(Protocol):
    def load(self, t: float) -> float: ...

    def integral(self, t: float) -> float:
        """Load-seconds from 0 to t."""
        ...


@dataclass(frozen=True, slots=True)
class Wave:
    """Load mean + swing * sin(2 pi t / period + phase), by default between 0.05 and 0.95; a swing
    of 0 is a steady load."""

    period_seconds: float
    phase: float
    mean: float = _LOAD_MEAN
    swing: float = _LOAD_SWING

    def load(self, t: float) -> float:
        return self.mean + self.swing * math.sin(self._angle(t))

    def integral(self, t: float) -> float:
        omega = 2 * math.pi / self.period_seconds
        return self.mean * t - self.swing / omega * (math.cos(self._angle(t)) - math.cos(self.phase))

    def _angle(self, t: float) -> float:
        return 2 * math.pi * t / self.period_seconds + self.phase


@dataclass(frozen=True, slots=True)
class Diurnal:
    """Inference serving: a day-long swell (0.2 at night to 0.9 at the peak) with a one-minute ripple."""

    day: Wave
    ripple: Wave

    @classmethod
    def starting_at(cls, day_seconds: float, phase: float) -> Diurnal:
        return cls(
            Wave(day_seconds, phase, mean=0.55, swing=0.3), Wave(60.0, 3 * phase, mean=0.0, swing=0.05)
        )

    def load(self, t: float) -> float:
        return self.day.load(t) + self.ripple.load(t)

    def integral(self, t: float) -> float:
        return self.day.integral(t) + self.ripple.integral(t)


@dataclass(frozen=True, slots=True)
class TrainingSteps:
    """Synchronous training: each step computes at high load, then waits in an all-reduce at low load."""

    step_seconds: float
    offset_seconds: float
    compute_share: float = 0.75
    compute_load: float = 0.97
    communicate_load: float = 0.35

    def load(self, t: float) -> float:
        into_step = (t + self.offset_seconds) % self.step_seconds
        return (
            self.compute_load if into_step < self.compute_share * self.step_seconds else self.communicate_load
        )

    def integral(self, t: float) -> float:
        return self._from_zero(t + self.offset_seconds) - self._from_zero(self.offset_seconds)

    def _from_zero(self, t: float) -> float:
        steps, into_step = divmod(t, self.step_seconds)
        compute_seconds = self.compute_share * self.step_seconds
        per_step = self.compute_load * compute_seconds + self.communicate_load * (
            self.step_seconds - compute_seconds
        )
        partial = self.compute_load * min(into_step, compute_seconds) + self.communicate_load * max(
            0.0, into_step - compute_seconds
        )
        return steps * per_step + partial
