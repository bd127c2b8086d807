"""Degradation flags: judgements over one collection interval of the host and GPU counters.

Reads what the read stage produced (``sink.upstream``) and keeps the previous cycle's counters.
Every flag is always exported: 0 means "not seen", including when its inputs are absent or when
it needs a previous cycle that does not exist yet. See docs/degradation.md.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from esnode_agent.collectors import diskstats, memory, network
from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.collector import STAGE_DERIVE
from esnode_agent.cycle.samples import SampleIndex, SampleSink, gauge

# Below this many segments sent in an interval a handful of retransmits says nothing.
MIN_TCP_SEGMENTS_SENT = 100
GPU_THROTTLE_REASONS = frozenset({"thermal", "hw_slowdown", "sw_thermal", "power_brake"})

FLAG = gauge(
    "esnode_degradation_flag", "1 if this kind of degradation was seen in the last interval.", "kind"
)
SCORE = gauge("esnode_degradation_score", "Number of degradation flags set.")

# Counters compared between cycles: metric name -> the label that tells its series apart.
_WATCHED = {
    diskstats.READS_COMPLETED.name: "device",
    diskstats.WRITES_COMPLETED.name: "device",
    diskstats.READ_TIME.name: "device",
    diskstats.WRITE_TIME.name: "device",
    diskstats.IO_TIME.name: "device",
    network.RX_DROPPED.name: "interface",
    network.TX_DROPPED.name: "interface",
    network.TCP_SEGMENTS_SENT.name: "",
    network.TCP_SEGMENTS_RETRANSMITTED.name: "",
    memory.SWAP_IN.name: "",
}
_NO_KEY = ""

Series = dict[str, float]


@dataclass(frozen=True, slots=True)
class Thresholds:
    disk_latency_seconds: float
    disk_busy_ratio: float
    network_drops_per_second: float
    network_retrans_ratio: float
    swap_in_bytes_per_second: float

    @classmethod
    def from_config(cls, config: AgentConfig) -> Thresholds:
        return cls(
            disk_latency_seconds=config.degradation_disk_latency_seconds,
            disk_busy_ratio=config.degradation_disk_busy_ratio,
            network_drops_per_second=config.degradation_network_drops_per_second,
            network_retrans_ratio=config.degradation_network_retrans_ratio,
            swap_in_bytes_per_second=config.degradation_swap_in_bytes_per_second,
        )


@dataclass(frozen=True, slots=True)
class Reading:
    """One cycle's inputs: counters by metric name then series key, and the GPU throttle state."""

    at_seconds: float
    counters: dict[str, Series]
    gpu_throttled: bool


def take_reading(upstream: SampleIndex, at_seconds: float) -> Reading:
    counters = {
        name: {(s.label(key) if key else _NO_KEY): s.value for s in upstream.named(name)}
        for name, key in _WATCHED.items()
    }
    counters[GPU.ecc.name] = {
        s.label("uuid"): s.value for s in upstream.named(GPU.ecc.name) if s.label("type") == "uncorrected"
    }
    throttled = any(
        s.value >= 1 and s.label("reason") in GPU_THROTTLE_REASONS for s in upstream.named(GPU.throttle.name)
    )
    return Reading(at_seconds, counters, throttled)


class Change:
    """How counters moved between two readings; series absent from either, or reset, are left out."""

    def __init__(self, previous: Reading, current: Reading) -> None:
        self.seconds = current.at_seconds - previous.at_seconds
        self._previous = previous.counters
        self._current = current.counters

    def deltas(self, name: str) -> Series:
        before = self._previous.get(name, {})
        moved = {
            key: value - before[key] for key, value in self._current.get(name, {}).items() if key in before
        }
        return {key: delta for key, delta in moved.items() if delta >= 0}

    def total(self, name: str) -> float | None:
        """Delta of an unlabelled counter, or None when it is absent or was reset."""
        return self.deltas(name).get(_NO_KEY)


def disk_latency(change: Change, limits: Thresholds) -> bool:
    reads = change.deltas(diskstats.READS_COMPLETED.name)
    writes = change.deltas(diskstats.WRITES_COMPLETED.name)
    read_time = change.deltas(diskstats.READ_TIME.name)
    write_time = change.deltas(diskstats.WRITE_TIME.name)
    for device in reads.keys() & writes.keys() & read_time.keys() & write_time.keys():
        completed = reads[device] + writes[device]
        if (
            completed > 0
            and (read_time[device] + write_time[device]) / completed > limits.disk_latency_seconds
        ):
            return True
    return False


def disk_busy(change: Change, limits: Thresholds) -> bool:
    busy = change.deltas(diskstats.IO_TIME.name).values()
    return any(seconds / change.seconds > limits.disk_busy_ratio for seconds in busy)


def network_drops(change: Change, limits: Thresholds) -> bool:
    dropped = sum(change.deltas(network.RX_DROPPED.name).values()) + sum(
        change.deltas(network.TX_DROPPED.name).values()
    )
    return dropped / change.seconds > limits.network_drops_per_second


def network_retrans(change: Change, limits: Thresholds) -> bool:
    sent = change.total(network.TCP_SEGMENTS_SENT.name)
    retransmitted = change.total(network.TCP_SEGMENTS_RETRANSMITTED.name)
    if sent is None or retransmitted is None or sent < MIN_TCP_SEGMENTS_SENT:
        return False
    return retransmitted / sent > limits.network_retrans_ratio


def swap_spike(change: Change, limits: Thresholds) -> bool:
    swapped_in = change.total(memory.SWAP_IN.name)
    return swapped_in is not None and swapped_in / change.seconds > limits.swap_in_bytes_per_second


def gpu_ecc(change: Change, _limits: Thresholds) -> bool:
    return any(errors > 0 for errors in change.deltas(GPU.ecc.name).values())


INTERVAL_FLAGS: dict[str, Callable[[Change, Thresholds], bool]] = {
    "disk_latency": disk_latency,
    "disk_busy": disk_busy,
    "network_drops": network_drops,
    "network_retrans": network_retrans,
    "swap_spike": swap_spike,
    "gpu_ecc": gpu_ecc,
}
# Judged on the current reading alone, so it needs no earlier cycle.
GPU_THROTTLE = "gpu_throttle"
KINDS = (*INTERVAL_FLAGS, GPU_THROTTLE)


def assess(previous: Reading | None, current: Reading, limits: Thresholds) -> dict[str, bool]:
    """Every kind's flag; interval flags stay unset without an earlier reading to compare with."""
    flags = dict.fromkeys(KINDS, False)
    flags[GPU_THROTTLE] = current.gpu_throttled
    if previous is not None and current.at_seconds > previous.at_seconds:
        change = Change(previous, current)
        flags.update({kind: judge(change, limits) for kind, judge in INTERVAL_FLAGS.items()})
    return flags


class DegradationCollector:
    name = "degradation"
    stage = STAGE_DERIVE

    def __init__(self, limits: Thresholds) -> None:
        self._limits = limits
        self._previous: Reading | None = None

    def collect(self, sink: SampleSink) -> None:
        current = take_reading(sink.upstream, sink.now_seconds)
        flags = assess(self._previous, current, self._limits)
        self._previous = current
        for kind, raised in flags.items():
            sink.add(FLAG, 1.0 if raised else 0.0, kind=kind)
        sink.add(SCORE, sum(flags.values()))
