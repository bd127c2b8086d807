"""The node power envelope: budget, exceeded flag and headroom around the boundary."""

from __future__ import annotations

import pytest

from esnode_agent.collectors.envelope import EnvelopeCollector
from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.samples import Sample, SampleIndex, SampleSink


def assess(envelope_watts: float, node_watts: float | None) -> SampleIndex:
    upstream = SampleIndex([] if node_watts is None else [Sample(NODE_POWER, (), node_watts)])
    sink = SampleSink(0.0, upstream=upstream)
    EnvelopeCollector(envelope_watts).collect(sink)
    return SampleIndex(sink.samples)


@pytest.mark.parametrize(
    ("node_watts", "exceeded", "headroom_watts"),
    [(1199.5, 0, 0.5), (1200.0, 0, 0.0), (1200.5, 1, -0.5), (1500.0, 1, -300.0)],
)
def test_exceeded_only_above_the_envelope_and_headroom_goes_negative(
    node_watts: float, exceeded: int, headroom_watts: float
) -> None:
    samples = assess(1200.0, node_watts)

    assert samples.value("esnode_node_power_envelope_watts") == 1200.0
    assert samples.value("esnode_node_power_envelope_exceeded") == exceeded
    assert samples.value("esnode_node_power_headroom_watts") == pytest.approx(headroom_watts)


def test_without_node_power_only_the_budget_is_reported() -> None:
    samples = assess(1200.0, None)

    assert samples.value("esnode_node_power_envelope_watts") == 1200.0
    assert samples.named("esnode_node_power_envelope_exceeded") == []
    assert samples.named("esnode_node_power_headroom_watts") == []


def test_registered_only_when_an_envelope_is_configured() -> None:
    assert "envelope" not in {c.name for c in build_collectors(AgentConfig())}
    configured = AgentConfig(node_power_envelope_watts=1200.0, enable_power=False)
    assert "envelope" in {c.name for c in build_collectors(configured)}
