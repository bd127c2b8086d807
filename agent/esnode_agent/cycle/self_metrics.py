"""The agent's metrics about itself: per-collector outcome, data age and build identity."""

from __future__ import annotations

import platform

from esnode_agent import __version__
from esnode_agent.cycle.samples import SampleSink, gauge
from esnode_agent.cycle.snapshot import CollectorHealth

COLLECTOR_SUCCESS = gauge(
    "esnode_agent_collector_success", "1 if the collector succeeded in the last cycle, else 0.", "collector"
)
COLLECTOR_DURATION = gauge(
    "esnode_agent_collector_duration_seconds", "Time the collector took in the last cycle.", "collector"
)
LAST_COLLECTION = gauge(
    "esnode_agent_last_collection_timestamp_seconds",
    "Unix time the last collection cycle finished; data age is scrape time minus this.",
)
BUILD_INFO = gauge(
    "esnode_agent_build_info", "esnode agent build identity, value 1.", "version", "python_version"
)


def add_self_metrics(
    sink: SampleSink, health: tuple[CollectorHealth, ...], finished_at_seconds: float
) -> None:
    for outcome in health:
        sink.add(COLLECTOR_SUCCESS, 1.0 if outcome.success else 0.0, collector=outcome.name)
        sink.add(COLLECTOR_DURATION, outcome.duration_seconds, collector=outcome.name)
    sink.add(LAST_COLLECTION, finished_at_seconds)
    sink.add(BUILD_INFO, 1.0, version=__version__, python_version=platform.python_version())
