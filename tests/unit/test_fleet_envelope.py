"""The agent takes the envelope the fleet's budget wrote into its EsnodeNode's spec, without a restart."""

from __future__ import annotations

import asyncio
from typing import Any

from kubernetes import client
from test_node_report import report, snapshot

from esnode_agent.collectors.envelope import EnvelopeCollector, EnvelopeHolder
from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.samples import Sample, SampleIndex, SampleSink
from esnode_agent.report.fleet_envelope import follow_fleet_envelope
from esnode_agent.report.kube_writer import KubeStatusWriter
from esnode_agent.report.model import NodeReport
from esnode_agent.report.policy import ReportPolicy
from esnode_agent.report.reporter import Reporter, ReportTarget


def envelope_of(collector: EnvelopeCollector, node_watts: float = 3000.0) -> float | None:
    sink = SampleSink(0.0, upstream=SampleIndex([Sample(NODE_POWER, (), node_watts)]))
    collector.collect(sink)
    return SampleIndex(sink.samples).value("esnode_node_power_envelope_watts")


def test_the_configured_envelope_wins_over_the_fleets() -> None:
    holder = EnvelopeHolder(2500.0)
    assert holder.offer_fleet(4000.0) is False
    assert holder.current_watts == 2500.0
    fleet_only = EnvelopeHolder(None)
    assert fleet_only.offer_fleet(4000.0) is True
    assert fleet_only.offer_fleet(4000.0) is False  # no change, nothing to log
    assert fleet_only.current_watts == 4000.0
    assert fleet_only.offer_fleet(None) is True and fleet_only.current_watts is None


def test_an_agent_of_a_fleet_reports_the_fleets_envelope_from_the_next_cycle() -> None:
    collectors = build_collectors(AgentConfig(fleet="gpus", enable_gpu=False))
    collector = next(c for c in collectors if isinstance(c, EnvelopeCollector))
    assert envelope_of(collector) is None  # no envelope yet: nothing reported
    follow = follow_fleet_envelope(collectors)
    assert follow is not None
    follow(3500.0)
    assert envelope_of(collector) == 3500.0
    follow(None)  # the budget was turned off
    assert envelope_of(collector) is None
    assert follow_fleet_envelope(build_collectors(AgentConfig(enable_gpu=False))) is None


class SpecObjects:
    """The custom-objects API at the writer's boundary: returns the EsnodeNode as the apiserver would."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    def patch_namespaced_custom_object_status(self, *args: Any, _content_type: str) -> dict[str, Any]:
        return {"spec": self.spec, "status": args[-1]["status"]}


def test_the_writer_returns_the_envelope_in_the_written_objects_spec() -> None:
    writer = KubeStatusWriter(client.ApiClient(), "monitoring", fleet_uid=None)
    writer._objects = SpecObjects({"nodeName": "n", "fleet": "f", "envelopeWatts": 4210})  # type: ignore[assignment]
    assert writer.write_report(report()) == 4210.0
    writer._objects = SpecObjects({"nodeName": "n", "fleet": "f"})  # type: ignore[assignment]
    assert writer.write_report(report()) is None


class EnvelopeWriter:
    def __init__(self, envelopes: list[float | None]) -> None:
        self.envelopes = envelopes

    def write_report(self, _report: NodeReport) -> float | None:
        return self.envelopes.pop(0)


async def test_the_reporter_hands_each_written_objects_envelope_on() -> None:
    seen: list[float | None] = []
    policy = ReportPolicy(heartbeat_seconds=60, power_step_watts=50, min_interval_seconds=0)
    target = ReportTarget("gpu-node-1", "fleet-a", node_condition=False)
    reporter = Reporter(EnvelopeWriter([None, 3800.0]), policy, target, seen.append)  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run_forever())
    for power in (3000.0, 4100.0):
        reporter.offer(snapshot(power=power))
        await asyncio.sleep(0.05)
    task.cancel()
    assert seen == [None, 3800.0]
