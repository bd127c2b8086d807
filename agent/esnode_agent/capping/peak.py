"""What each GPU drew over a recent window: what the capping rule shares the envelope by.

A sample is a single instant; a training job's GPU swings between compute and all-reduce faster than
the agent's cycle, so its want is the most it drew over the window, not its last reading. A GPU that
reached its limit at any time in the window (the caller says: its draw at the limit, or the power cap
holding its clocks) was held back by it: what it would draw is unknown.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

# A draw this close under its limit is the limit holding it (the firmware settles just below it).
AT_LIMIT_WATTS = 5.0


def at_limit(draw_watts: float, limit_watts: float) -> bool:
    return draw_watts >= limit_watts - AT_LIMIT_WATTS


@dataclass(frozen=True, slots=True)
class Recent:
    peak_watts: float
    held_back: bool  # it reached its limit within the window


class RecentDraws:
    def __init__(self, window_seconds: float) -> None:
        self._window_seconds = window_seconds
        self._samples: dict[str, deque[tuple[float, float, bool]]] = {}

    def add(self, uuid: str, now_seconds: float, draw_watts: float, held_back: bool) -> Recent:
        """Records a draw, and whether the GPU's limit held it back; returns the window ending with it."""
        samples = self._samples.setdefault(uuid, deque())
        samples.append((now_seconds, draw_watts, held_back))
        while samples[0][0] < now_seconds - self._window_seconds:
            samples.popleft()
        return Recent(max(s[1] for s in samples), any(s[2] for s in samples))
