"""One finished collection cycle: samples plus how each collector fared. Immutable once built."""

from __future__ import annotations

from dataclasses import dataclass

from esnode_agent.cycle.samples import SampleIndex


@dataclass(frozen=True, slots=True)
class CollectorHealth:
    name: str
    success: bool
    duration_seconds: float
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Snapshot:
    sequence: int
    timestamp_seconds: float  # wall clock when the cycle finished
    cycle_seconds: float  # how long the whole cycle took
    samples: SampleIndex
    health: tuple[CollectorHealth, ...]
