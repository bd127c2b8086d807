"""The fleet power summary: node reports in, totals, stale and over-envelope nodes, a condition out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, cast

import kopf
import pytest

from esnode_operator.api.models import FleetStatus
from esnode_operator.handlers import node_reports
from esnode_operator.kube import KubeError
from esnode_operator.metrics import OperatorMetrics
from esnode_operator.power.fleet_loop import PowerStatus, keep_power_status
from esnode_operator.power.summary import NodeEntry, envelope_condition, node_entry, power_status, summarize
from esnode_operator.reconcile.fleet_status import build_status, observe_daemonsets, status_differs
from esnode_operator.reconcile.node_status_access import NodeStatusAccess

NOW = 1_800_000_000.0
T0, T1 = "2027-01-15T08:00:00Z", "2027-01-15T08:05:00Z"


def report_body(
    node: str,
    *,
    age_seconds: float = 1.0,
    power: float | None = 1000.4,
    exceeded: bool = False,
    gpus: int = 8,
    gpu_power: float | None = 700.0,
    heartbeat_seconds: float = 5.0,
) -> dict[str, Any]:
    """An EsnodeNode as the apiserver returns it (what the agent's NodeReport serializes to)."""
    status: dict[str, Any] = {
        "nodeName": node,
        "fleet": "gpus",
        "exceeded": exceeded,
        "gpuCount": gpus,
        "agentVersion": "0.1.0",
        "lastReportTime": datetime.fromtimestamp(NOW - age_seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "heartbeatSeconds": heartbeat_seconds,
        "degradationFlags": ["gpu_throttle"],
        "gpus": [{"index": 0, "uuid": "GPU-1"}],
    }
    if power is not None:
        status["nodePowerWatts"] = power
    if gpu_power is not None:
        status["gpuPowerWatts"] = gpu_power
    return {
        "apiVersion": "esnode.io/v1alpha1",
        "kind": "EsnodeNode",
        "metadata": {"name": node, "namespace": "monitoring"},
        "spec": {"nodeName": node, "fleet": "gpus"},
        "status": status,
    }


def entry(node: str, **kwargs: Any) -> NodeEntry:
    parsed = node_entry(report_body(node, **kwargs))
    assert parsed is not None
    return parsed


def test_a_report_is_parsed_and_one_without_a_status_is_not_counted() -> None:
    parsed = entry("n1")
    assert (parsed.node, parsed.fleet, parsed.node_power_watts, parsed.gpu_count) == ("n1", "gpus", 1000.4, 8)
    created_only = report_body("n2")
    del created_only["status"]
    assert node_entry(created_only) is None


def test_the_index_files_each_report_under_its_namespace_and_fleet() -> None:
    body = report_body("n1")
    filed = asyncio.run(node_reports(body=kopf.Body(cast(kopf.RawBody, body))))
    assert filed == {("monitoring", "gpus"): entry("n1")}
    del body["status"]
    assert asyncio.run(node_reports(body=kopf.Body(cast(kopf.RawBody, body)))) is None


def test_totals_count_only_fresh_reports() -> None:
    summary = summarize(
        [
            entry("n1", power=1000.4),
            entry("n2", power=2000.4, gpus=4, gpu_power=None),
            entry("n3", power=5000.0, age_seconds=16.0),  # 3 heartbeats of 5 s ago: stale
            entry("n4", power=None, gpus=0, gpu_power=None),  # reports, but measures no power
        ],
        NOW,
    )
    assert (summary.nodes_reporting, summary.nodes_stale, summary.stale_nodes) == (3, 1, ["n3"])
    assert summary.total_power_watts == 3001.0  # whole watts
    assert (summary.total_gpus, summary.total_gpu_power_watts) == (12, 700.0)


def test_the_stale_rule_follows_each_agents_own_heartbeat() -> None:
    assert entry("slow", age_seconds=170.0, heartbeat_seconds=60.0).fresh(NOW)
    assert not entry("slow", age_seconds=181.0, heartbeat_seconds=60.0).fresh(NOW)


def test_without_power_readings_the_total_is_absent_not_zero() -> None:
    summary = summarize([entry("n1", power=None, gpu_power=None)], NOW)
    assert summary.total_power_watts is None and summary.total_gpu_power_watts is None
    assert "totalPowerWatts" not in power_status(summary, [], T0)["power"]


def test_nodes_over_the_envelope_are_counted_and_the_first_few_named() -> None:
    entries = [entry(f"n{i:02d}", exceeded=True) for i in range(12)] + [entry("ok")]
    summary = summarize(entries, NOW)
    assert summary.nodes_over_envelope == 12
    assert summary.over_envelope_nodes == [f"n{i:02d}" for i in range(10)]
    condition = envelope_condition(summary)
    assert (condition["status"], condition["reason"]) == ("True", "NodesOverEnvelope")
    assert condition["message"].startswith("12 node(s) over their power envelope: n00, n01")
    assert condition["message"].endswith("n09 and 2 more")
    FleetStatus.model_validate({"power": summary.model_dump(mode="json")})  # what the CRD accepts


def test_a_stale_report_of_an_exceeded_envelope_no_longer_counts() -> None:
    summary = summarize([entry("gone", exceeded=True, age_seconds=60.0), entry("ok")], NOW)
    assert summary.nodes_over_envelope == 0
    assert envelope_condition(summary)["status"] == "False"


def test_the_condition_is_unknown_while_no_agent_reports() -> None:
    condition = envelope_condition(summarize([entry("gone", age_seconds=60.0)], NOW))
    assert (condition["status"], condition["reason"]) == ("Unknown", "NoReports")
    assert "(1 stale)" in condition["message"]


def test_the_transition_time_moves_only_when_the_condition_status_does() -> None:
    over = summarize([entry("n1", exceeded=True)], NOW)
    first = power_status(over, [], T0)
    again = power_status(over, first["conditions"], T1)
    assert again["conditions"][0]["lastTransitionTime"] == T0
    cleared = power_status(summarize([entry("n1")], NOW), again["conditions"], T1)
    assert cleared["conditions"][0]["lastTransitionTime"] == T1


def test_the_reconciler_and_the_power_summary_ignore_each_others_conditions() -> None:
    fleet_status = build_status(1, observe_daemonsets([]), [], {}, T0)
    power = power_status(summarize([entry("n1")], NOW), [], T0)
    shared = {**fleet_status, **power, "conditions": [*fleet_status["conditions"], *power["conditions"]]}
    assert not status_differs(shared, fleet_status)
    assert not status_differs(shared, power)
    moved = power_status(summarize([entry("n1", power=1500.0)], NOW), power["conditions"], T1)
    assert status_differs(shared, moved)


def test_a_summary_is_written_only_when_it_changed() -> None:
    status = PowerStatus({})
    entries = [entry("n1"), entry("n2")]
    first = status.update(entries, NOW, T0)
    assert first is not None and first["power"]["nodesReporting"] == 2
    status.written(first)
    assert status.update(entries, NOW + 1, T1) is None  # nothing moved: no write
    assert status.update([entry("n1", power=1000.9), entry("n2")], NOW + 1, T1) is None  # < 0.5 W
    moved = status.update([entry("n1", power=1400.0), entry("n2")], NOW + 1, T1)
    assert moved is not None and moved["power"]["totalPowerWatts"] == 2400.0


def test_a_restarted_operator_does_not_rewrite_a_current_summary() -> None:
    entries = [entry("n1")]
    written = power_status(summarize(entries, NOW), [], T0)
    assert PowerStatus({"readyText": "1/1", **written}).update(entries, NOW, T1) is None


class FakeKube:
    """Records status applies; fails the first ``failures`` of them like an unreachable apiserver."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.applied: list[Mapping[str, Any]] = []

    def apply_status(self, _fleet: Mapping[str, Any], status: Mapping[str, Any], _manager: str) -> None:
        if self.failures:
            self.failures -= 1
            raise KubeError(503, "ServiceUnavailable", "apiserver restarting")
        self.applied.append(status)


async def run_loop(kube: FakeKube, reports: list[list[NodeEntry]]) -> OperatorMetrics:
    """One loop period per element of ``reports`` (what the index holds during that period)."""
    metrics = OperatorMetrics()
    remaining = list(reports)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)

    fleet = {
        "apiVersion": "esnode.io/v1alpha1",
        "kind": "EsnodeFleet",
        "metadata": {"namespace": "m", "name": "f"},
    }
    await keep_power_status(
        kube,  # type: ignore[arg-type]
        metrics,
        fleet,
        entries=lambda: remaining.pop(0),
        stopped=lambda: not remaining,
        pause=pause,
    )
    assert pauses == [1.0] * len(reports)  # never more than one write per second
    return metrics


def test_the_loop_writes_once_per_change_and_retries_after_a_failure() -> None:
    one, two = [entry("n1")], [entry("n1"), entry("n2")]
    kube = FakeKube(failures=1)
    metrics = asyncio.run(run_loop(kube, [one, one, one, two, two]))
    # period 1 fails, period 2 writes `one`, period 3 has nothing new, period 4 writes `two`
    assert [status["power"]["nodesReporting"] for status in kube.applied] == [1, 2]
    assert metrics.power_status_patches._value.get() == 2


class FakeBindingKube:
    """The shared ClusterRoleBinding; the first patch loses a race to another fleet's edit."""

    def __init__(self, subjects: list[dict[str, str]], races: int = 0) -> None:
        self.subjects = subjects
        self.races = races
        self.version = 1

    def get(self, *_: Any) -> dict[str, Any]:
        return {"metadata": {"resourceVersion": str(self.version)}, "subjects": list(self.subjects)}

    def request(self, _method: str, _path: str, *, body: dict[str, Any], content_type: str) -> dict[str, Any]:
        if self.races:
            self.races -= 1
            self.subjects.append({"kind": "ServiceAccount", "name": "esnode-other", "namespace": "x"})
            self.version += 1
        if body["metadata"]["resourceVersion"] != str(self.version):
            raise KubeError(409, "Conflict", "the object has been modified")
        self.subjects = body["subjects"]
        self.version += 1
        return {}


def test_granting_node_status_rereads_the_binding_after_a_concurrent_edit() -> None:
    kube = FakeBindingKube([], races=1)
    assert NodeStatusAccess(kube).grant("monitoring", "gpus", granted=True) is None  # type: ignore[arg-type]
    assert kube.subjects == [
        {"kind": "ServiceAccount", "name": "esnode-other", "namespace": "x"},
        {"kind": "ServiceAccount", "name": "esnode-gpus", "namespace": "monitoring"},
    ]
    NodeStatusAccess(kube).grant("monitoring", "gpus", granted=False)  # type: ignore[arg-type]
    assert kube.subjects == [{"kind": "ServiceAccount", "name": "esnode-other", "namespace": "x"}]


class MissingBindingKube:
    def get(self, *_: Any) -> dict[str, Any]:
        raise KubeError(404, "NotFound", "clusterrolebindings not found")


@pytest.mark.parametrize(("granted", "problem"), [(True, "AgentRBACMissing"), (False, None)])
def test_a_missing_binding_is_a_problem_only_for_a_fleet_that_wants_the_condition(
    granted: bool, problem: str | None
) -> None:
    found = NodeStatusAccess(MissingBindingKube()).grant("m", "f", granted=granted)  # type: ignore[arg-type]
    assert (found.reason if found else None) == problem
    if found:
        assert "rbac/agents.yaml" in found.message
