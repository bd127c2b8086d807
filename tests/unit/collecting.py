"""Runs one collector for one cycle, the way the collection loop does, and indexes what it wrote."""

from __future__ import annotations

from collections.abc import Iterable

from esnode_agent.cycle.collector import Collector
from esnode_agent.cycle.samples import Sample, SampleIndex, SampleSink


def collect(collector: Collector, now_seconds: float = 0.0, upstream: Iterable[Sample] = ()) -> SampleIndex:
    sink = SampleSink(now_seconds, upstream=SampleIndex(upstream))
    collector.collect(sink)
    return SampleIndex(sink.samples)
