"""The collection loop: stages, fault isolation, timeouts and self-metrics."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from esnode_agent.cycle.collector import STAGE_DERIVE, STAGE_READ, NoDataError
from esnode_agent.cycle.loop import CollectionLoop
from esnode_agent.cycle.samples import SampleSink, gauge
from esnode_agent.cycle.snapshot import Snapshot

READING = gauge("esnode_test_reading", "A value read from a source.")
DOUBLED = gauge("esnode_test_doubled", "Twice the reading, derived in a later stage.")


@dataclass
class Reader:
    name: str = "reader"
    stage: int = STAGE_READ
    value: float = 21.0

    def collect(self, sink: SampleSink) -> None:
        sink.add(READING, self.value)


@dataclass
class Doubler:
    name: str = "doubler"
    stage: int = STAGE_DERIVE

    def collect(self, sink: SampleSink) -> None:
        reading = sink.upstream.value(READING.name)
        if reading is None:
            raise NoDataError("nothing to double")
        sink.add(DOUBLED, 2 * reading)


@dataclass
class Broken:
    name: str = "broken"
    stage: int = STAGE_READ

    def collect(self, sink: SampleSink) -> None:
        sink.add(READING, 999.0)  # written before failing: must not leak into the snapshot
        raise RuntimeError("device fell off the bus")


@dataclass
class Hung:
    release: threading.Event = field(default_factory=threading.Event)
    name: str = "hung"
    stage: int = STAGE_READ

    def collect(self, sink: SampleSink) -> None:
        self.release.wait(10)


def _loop(*collectors: object, timeout: float = 1.0) -> tuple[CollectionLoop, list[Snapshot]]:
    published: list[Snapshot] = []

    async def keep(snapshot: Snapshot) -> None:
        published.append(snapshot)

    return CollectionLoop(collectors, 5.0, timeout, keep), published  # type: ignore[arg-type]


def _success(snapshot: Snapshot, name: str) -> float | None:
    return snapshot.samples.value("esnode_agent_collector_success", collector=name)


async def test_later_stage_sees_earlier_samples() -> None:
    loop, published = _loop(Doubler(), Reader())
    snapshot = await loop.run_once()
    assert snapshot.samples.value("esnode_test_doubled") == 42
    assert published == [snapshot]
    assert [h.name for h in snapshot.health] == ["reader", "doubler"]


async def test_a_broken_collector_fails_alone_and_its_samples_are_dropped() -> None:
    loop, _ = _loop(Reader(), Broken())
    snapshot = await loop.run_once()
    assert [s.value for s in snapshot.samples.named(READING.name)] == [21.0]
    assert _success(snapshot, "reader") == 1
    assert _success(snapshot, "broken") == 0
    health = {h.name: h for h in snapshot.health}
    assert health["broken"].error == "RuntimeError: device fell off the bus"


async def test_no_data_is_reported_as_failure_with_reason() -> None:
    loop, _ = _loop(Doubler())
    snapshot = await loop.run_once()
    assert _success(snapshot, "doubler") == 0
    assert snapshot.health[0].error == "no data: nothing to double"


async def test_a_hung_collector_times_out_and_is_not_restarted_while_stuck() -> None:
    hung = Hung()
    loop, _ = _loop(Reader(), hung, timeout=0.2)
    first = await loop.run_once()
    assert first.cycle_seconds < 1.0
    assert _success(first, "hung") == 0
    assert _success(first, "reader") == 1
    second = await loop.run_once()
    assert {h.name: h.error for h in second.health}["hung"] == "still running from an earlier cycle"
    hung.release.set()


async def test_self_metrics_describe_the_cycle() -> None:
    loop, _ = _loop(Reader())
    first = await loop.run_once()
    second = await loop.run_once()
    assert second.sequence == first.sequence + 1
    assert second.samples.value("esnode_agent_last_collection_timestamp_seconds") == second.timestamp_seconds
    duration = second.samples.value("esnode_agent_collector_duration_seconds", collector="reader")
    assert duration is not None and 0 <= duration < 1
    assert len(second.samples.named("esnode_agent_build_info")) == 1
