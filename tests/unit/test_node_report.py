"""Node report: built from a snapshot, bounded, and written only when it is worth a write."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from kubernetes import client

from esnode_agent.collectors.degradation import FLAG
from esnode_agent.collectors.envelope import ENVELOPE, EXCEEDED, HEADROOM
from esnode_agent.collectors.gpu import PLAIN as GPU
from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.collectors.node_power import NODE_SOURCE as SOURCE
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.report.kube_writer import KubeStatusWriter
from esnode_agent.report.model import MAX_GPUS_IN_REPORT, NodeReport, build_report, condition_message
from esnode_agent.report.policy import ReportPolicy
from esnode_agent.report.reporter import Reporter, ReportTarget, backoff_seconds

POLICY = ReportPolicy(heartbeat_seconds=60, power_step_watts=50, min_interval_seconds=5)


def snapshot(
    power: float = 3000.0, envelope: float = 4000.0, gpus: int = 2, flags: tuple[str, ...] = ()
) -> Snapshot:
    sink = SampleSink(0.0)
    sink.add(NODE_POWER, power)
    sink.add(SOURCE, 1, source="rapl+gpu")
    sink.add(ENVELOPE, envelope)
    sink.add(EXCEEDED, 1 if power > envelope else 0)
    sink.add(HEADROOM, envelope - power)
    for index in range(gpus):
        uuid = f"GPU-{index:04d}"
        sink.add(
            GPU.info,
            1,
            gpu=str(index),
            uuid=uuid,
            model="H100",
            pci_bus_id="",
            driver_version="",
            serial="",
            mig_mode="disabled",
        )
        sink.add(GPU.power, 300.0 + index, gpu=str(index), uuid=uuid)
        sink.add(GPU.power_limit_min, 200.0, gpu=str(index), uuid=uuid)
        sink.add(GPU.power_limit_max, 700.0, gpu=str(index), uuid=uuid)
        sink.add(GPU.throttle, 1 if index == 0 else 0, gpu=str(index), uuid=uuid, reason="thermal")
        sink.add(GPU.throttle, 1, gpu=str(index), uuid=uuid, reason="idle")
    for kind in ("disk_busy", "swap_spike"):
        sink.add(FLAG, 1 if kind in flags else 0, kind=kind)
    return Snapshot(1, 1_800_000_000.5, 0.01, SampleIndex(sink.samples), ())


def report(**kwargs: Any) -> NodeReport:
    return build_report(snapshot(**kwargs), "gpu-node-1", "fleet-a", heartbeat_seconds=60)


def test_report_carries_power_envelope_gpus_and_degradation() -> None:
    built = report(power=4200.0, flags=("swap_spike",))
    assert built.exceeded is True
    assert built.headroom_watts == -200.0
    assert built.power_source == "rapl+gpu"
    assert built.gpu_count == 2
    assert built.gpu_power_watts == 601.0
    assert built.gpus[0].throttle_reasons == ["thermal"]  # idle is not a slowdown
    assert built.gpus[1].throttle_reasons == []
    assert built.degradation_flags == ["swap_spike"]
    assert built.degradation_score == 1
    status = built.model_dump(mode="json", by_alias=True, exclude_none=True)
    assert status["nodePowerWatts"] == 4200.0
    assert status["lastReportTime"] == "2027-01-15T08:00:00Z"
    assert status["heartbeatSeconds"] == 60  # the operator judges staleness by the agent's own pace


def test_report_size_is_bounded_however_many_gpus() -> None:
    built = report(gpus=40)
    assert built.gpu_count == 40
    # The limit constraints the fleet budget's floor and ceiling come from cover every GPU.
    assert (built.gpu_power_limit_min_watts, built.gpu_power_limit_max_watts) == (8000.0, 28000.0)
    assert report(gpus=0).gpu_power_limit_min_watts is None
    assert len(built.gpus) == MAX_GPUS_IN_REPORT


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"power": 4100.0}, "envelope exceeded"),
        ({"envelope": 3500.0}, "envelope changed"),
        ({"gpus": 1}, "gpu count changed"),
        ({"flags": ("disk_busy",)}, "degradation changed"),
        ({"power": 3060.0}, "power moved"),
    ],
)
def test_edges_are_written_early(change: dict[str, Any], reason: str) -> None:
    assert POLICY.reason_to_write(report(), 100.0, report(**change), 106.0) == reason


def test_a_move_of_what_a_capping_node_wants_is_written_early() -> None:
    wanted = report().model_copy(update={"power_wanted_watts": 3400.0})
    assert POLICY.reason_to_write(wanted, 100.0, report(), 106.0) == "wanted power moved"  # capping off
    moved = wanted.model_copy(update={"power_wanted_watts": 3500.0})
    assert POLICY.reason_to_write(wanted, 100.0, moved, 106.0) == "wanted power moved"
    assert POLICY.reason_to_write(wanted, 100.0, wanted, 106.0) is None


def test_small_moves_wait_for_the_heartbeat() -> None:
    assert POLICY.reason_to_write(report(), 100.0, report(power=3040.0), 130.0) is None
    assert POLICY.reason_to_write(report(), 100.0, report(power=3040.0), 160.0) == "heartbeat"


def test_edges_are_rate_limited() -> None:
    assert POLICY.reason_to_write(report(), 100.0, report(power=4100.0), 102.0) is None


def test_backoff_is_jittered_and_capped() -> None:
    rng = random.Random(7)
    delays = [backoff_seconds(n, rng) for n in range(1, 12)]
    assert all(0 <= d <= 60 for d in delays)
    assert len(set(delays)) == len(delays)


class FlakyWriter:
    """Stands in for the apiserver at the writer boundary: fails first, then accepts."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.reports: list[NodeReport] = []
        self.conditions: list[bool] = []

    def write_report(self, report: NodeReport) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("apiserver unavailable")
        self.reports.append(report)

    def write_node_condition(self, report: NodeReport, _since: object) -> None:
        self.conditions.append(report.exceeded)


async def test_reporter_backs_off_then_reports_and_sets_the_condition_on_flips() -> None:
    writer = FlakyWriter(failures=1)
    policy = ReportPolicy(heartbeat_seconds=60, power_step_watts=50, min_interval_seconds=0)
    reporter = Reporter(writer, policy, ReportTarget("gpu-node-1", "fleet-a", node_condition=True))  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run_forever())
    reporter.offer(snapshot())
    await asyncio.sleep(0.05)
    assert writer.reports == []  # failed, now backing off
    reporter._retry_at_seconds = 0.0  # skip the wait, keep the logic
    for power in (3000.0, 4100.0, 4100.0, 3000.0):
        reporter.offer(snapshot(power=power))
        await asyncio.sleep(0.05)
    task.cancel()
    assert [r.exceeded for r in writer.reports] == [False, True, False]
    assert writer.conditions == [False, True, False]


class MessageWriter(FlakyWriter):
    """Records each condition as the real writer would send it: its message and transition time."""

    def __init__(self) -> None:
        super().__init__(failures=0)
        self.sent: list[tuple[str, object]] = []

    def write_node_condition(self, report: NodeReport, since: object) -> None:
        self.sent.append((condition_message(report, "ml"), since))


async def test_the_condition_message_follows_every_written_report_and_its_time_only_flips() -> None:
    """Issue 19: 'node power unknown power against 4500 W' stayed until the state flipped."""
    writer = MessageWriter()
    policy = ReportPolicy(heartbeat_seconds=60, power_step_watts=50, min_interval_seconds=0)
    target = ReportTarget("gpu-node-1", "fleet-a", node_condition=True, namespace="ml")
    reporter = Reporter(writer, policy, target)  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run_forever())
    for power in (3000.0, 3400.0, 4100.0):
        reporter.offer(snapshot(power=power))
        await asyncio.sleep(0.05)
    task.cancel()
    assert [m for m, _ in writer.sent] == [
        "node power 3000 W against 4000 W (fleet ml/fleet-a)",
        "node power 3400 W against 4000 W (fleet ml/fleet-a)",  # within the envelope still: refreshed
        "node power 4100 W against 4000 W (fleet ml/fleet-a)",
    ]
    times = [t for _, t in writer.sent]
    assert times[0] == times[1] != times[2]  # lastTransitionTime moves on the flip only


async def test_a_refused_node_condition_does_not_hold_back_the_report() -> None:
    """A fleet without nodeCondition grants no nodes/status: the report still goes out, every time."""
    writer = FlakyWriter(failures=0)

    def refuse(_report: NodeReport, _since: object) -> None:
        raise PermissionError("nodes/status is forbidden")

    writer.write_node_condition = refuse  # type: ignore[method-assign]
    policy = ReportPolicy(heartbeat_seconds=60, power_step_watts=50, min_interval_seconds=0)
    reporter = Reporter(writer, policy, ReportTarget("gpu-node-1", "fleet-a", node_condition=True))  # type: ignore[arg-type]
    task = asyncio.create_task(reporter.run_forever())
    for power in (3000.0, 4100.0):
        reporter.offer(snapshot(power=power))
        await asyncio.sleep(0.05)
    task.cancel()
    assert [r.exceeded for r in writer.reports] == [False, True]
    assert reporter._failures == 0  # no backoff: the report itself was fine


class RecordingObjects:
    """The custom-objects API at the writer's boundary: records status patches."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    def patch_namespaced_custom_object_status(self, *args: Any, _content_type: str) -> None:
        assert _content_type == "application/merge-patch+json"
        self.bodies.append(args[-1])


def test_a_value_that_went_away_is_removed_from_the_status() -> None:
    """Merge patch keeps what a patch leaves out, so the writer sends null for what is now unknown."""
    writer = KubeStatusWriter(client.ApiClient(), "monitoring", fleet_uid=None)
    objects = RecordingObjects()
    writer._objects = objects  # type: ignore[assignment]
    without_envelope = report().model_copy(update={"envelope_watts": None, "headroom_watts": None})
    writer.write_report(without_envelope)
    status = objects.bodies[0]["status"]
    assert status["envelopeWatts"] is None and status["headroomWatts"] is None
    assert status["nodePowerWatts"] == 3000.0
