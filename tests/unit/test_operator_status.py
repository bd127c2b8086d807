"""Fleet status from observations: counters, conditions with reasons, transitions, pod troubles."""

from __future__ import annotations

from typing import Any

from esnode_operator.api.models import FleetStatus
from esnode_operator.reconcile.fleet_status import (
    APPLY_REJECTED,
    NO_MATCHING_NODES,
    SERVICE_MONITOR_CRD_MISSING,
    Observation,
    Problem,
    build_status,
    observe_daemonsets,
    pod_problems,
    status_differs,
)

T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:05:00Z"


def daemonset(generation: int = 2, observed: int = 2, **status: int) -> dict[str, Any]:
    fields = {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 2}
    fields |= {"updatedNumberScheduled": 2, "numberAvailable": 2, "numberUnavailable": 0}
    fields |= status
    return {
        "metadata": {"name": "esnode-x", "generation": generation},
        "status": {**fields, "observedGeneration": observed},
    }


def conditions(status: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}


def test_counters_are_summed_over_the_envelope_groups() -> None:
    observation = observe_daemonsets([daemonset(), daemonset(desiredNumberScheduled=1, numberReady=1)])
    assert observation.counts.desired == 3 and observation.counts.ready == 3
    assert observation.daemonsets == 2


def test_rollout_is_complete_only_when_observed_updated_and_available() -> None:
    assert observe_daemonsets([daemonset()]).rolled_out
    assert not observe_daemonsets([daemonset(generation=3, observed=2)]).rolled_out
    assert not observe_daemonsets([daemonset(updatedNumberScheduled=1)]).rolled_out
    assert not observe_daemonsets([daemonset(numberAvailable=1, numberUnavailable=1)]).rolled_out
    assert not observe_daemonsets([]).rolled_out and not observe_daemonsets([]).settled


def test_ready_fleet() -> None:
    status = build_status(4, observe_daemonsets([daemonset()]), [], {}, T0)
    assert conditions(status) == {
        "Ready": ("True", "AgentsReady"),
        "Progressing": ("False", "RolloutComplete"),
        "Degraded": ("False", "AsExpected"),
    }
    assert (status["state"], status["readyText"], status["observedGeneration"]) == ("Ready", "2/2", 4)
    assert status["daemonSet"] == {
        "desired": 2,
        "current": 2,
        "ready": 2,
        "updated": 2,
        "available": 2,
        "unavailable": 0,
    }
    assert all(c["observedGeneration"] == 4 and c["lastTransitionTime"] == T0 for c in status["conditions"])
    FleetStatus.model_validate(status)  # what the CRD's status schema accepts


def test_rolling_fleet_is_progressing() -> None:
    observation = observe_daemonsets(
        [daemonset(updatedNumberScheduled=1, numberAvailable=1, numberUnavailable=1, numberReady=1)]
    )
    status = build_status(2, observation, [], {}, T0)
    assert conditions(status)["Progressing"] == ("True", "RollingOut")
    assert conditions(status)["Ready"][0] == "False"
    assert (status["state"], status["readyText"]) == ("Progressing", "1/2")


def test_transition_time_moves_only_when_the_status_does() -> None:
    first = build_status(1, observe_daemonsets([daemonset()]), [], {}, T0)
    again = build_status(1, observe_daemonsets([daemonset()]), [], first, T1)
    assert not status_differs(first, again)
    degraded = build_status(
        1, observe_daemonsets([daemonset()]), [Problem(SERVICE_MONITOR_CRD_MISSING, "m")], first, T1
    )
    times = {c["type"]: c["lastTransitionTime"] for c in degraded["conditions"]}
    assert times == {"Ready": T0, "Progressing": T0, "Degraded": T1}
    assert status_differs(first, degraded)


def test_a_missing_monitor_crd_degrades_a_fleet_whose_agents_are_ready() -> None:
    status = build_status(
        1, observe_daemonsets([daemonset()]), [Problem(SERVICE_MONITOR_CRD_MISSING, "install it")], {}, T0
    )
    assert conditions(status)["Ready"] == ("True", "AgentsReady")
    assert conditions(status)["Degraded"] == ("True", SERVICE_MONITOR_CRD_MISSING)
    assert status["state"] == "Degraded"


def test_a_held_fleet_is_not_ready_and_not_progressing_and_names_the_cause() -> None:
    held = Problem(APPLY_REJECTED, "the apiserver refused DaemonSet esnode-x: bad", holds=True)
    status = build_status(5, observe_daemonsets([daemonset()]), [held], {}, T0)
    assert conditions(status) == {
        "Ready": ("False", APPLY_REJECTED),
        "Progressing": ("False", APPLY_REJECTED),
        "Degraded": ("True", APPLY_REJECTED),
    }
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert "refused DaemonSet esnode-x" in degraded["message"]
    assert status["readyText"] == "2/2"  # the agents it had keep running


def test_no_nodes() -> None:
    observation = observe_daemonsets(
        [
            daemonset(
                desiredNumberScheduled=0,
                currentNumberScheduled=0,
                numberReady=0,
                updatedNumberScheduled=0,
                numberAvailable=0,
            )
        ]
    )
    status = build_status(
        1, observation, [Problem(NO_MATCHING_NODES, "spec.nodeSelector a=b matches no node")], {}, T0
    )
    assert conditions(status)["Ready"] == ("False", NO_MATCHING_NODES)
    assert conditions(status)["Progressing"] == ("False", "RolloutComplete")
    assert conditions(status)["Degraded"] == ("True", NO_MATCHING_NODES)
    assert status["readyText"] == "0/0"


def test_the_most_telling_problem_names_degraded_and_all_are_in_the_message() -> None:
    problems = [Problem(SERVICE_MONITOR_CRD_MISSING, "no monitor"), Problem("ImagePullBackOff", "bad image")]
    status = build_status(
        1, Observation(observe_daemonsets([daemonset()]).counts, 1, True, False), problems, {}, T0
    )
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "ImagePullBackOff"
    assert degraded["message"] == "bad image; no monitor"


def agent_pod(
    name: str, node: str, waiting: dict[str, str] | None = None, unschedulable: str | None = None
) -> dict[str, Any]:
    status: dict[str, Any] = {
        "containerStatuses": [
            {"name": "agent", "state": {"waiting": waiting} if waiting else {"running": {}}}
        ]
    }
    if unschedulable:
        status["conditions"] = [
            {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": unschedulable}
        ]
    return {"metadata": {"name": name, "namespace": "mon"}, "spec": {"nodeName": node}, "status": status}


def test_image_pull_trouble_is_named_with_the_pod_node_and_what_to_check() -> None:
    pods = [
        agent_pod(
            "esnode-x-a", "n1", {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "nope:1"'}
        ),
        agent_pod("esnode-x-b", "n2", {"reason": "ImagePullBackOff"}),
        agent_pod("esnode-x-c", "n3"),
        agent_pod("esnode-x-d", "n4", {"reason": "ContainerCreating"}),
    ]
    [problem] = pod_problems(pods)
    assert problem.reason == "ImagePullBackOff" and not problem.holds
    assert problem.message.startswith(
        "2 agent pod(s) ImagePullBackOff: esnode-x-a on n1: Back-off pulling image"
    )
    assert "spec.image" in problem.message and "esnode-x-c" not in problem.message


def test_crash_loops_and_unschedulable_pods() -> None:
    pods = [
        agent_pod("esnode-x-a", "n1", {"reason": "CrashLoopBackOff", "message": "back-off 5m0s"}),
        agent_pod(
            "esnode-x-b", "", unschedulable="0/3 nodes are available: 1 node(s) didn't have free ports"
        ),
    ]
    reasons = {p.reason: p.message for p in pod_problems(pods)}
    assert "kubectl logs -n mon esnode-x-a" in reasons["CrashLoopBackOff"]
    assert "didn't have free ports" in reasons["Unschedulable"]


def test_many_pods_are_summarised() -> None:
    pods = [agent_pod(f"p{i}", f"n{i}", {"reason": "ErrImagePull"}) for i in range(10)]
    [problem] = pod_problems(pods)
    assert problem.message.count(" on n") == 3 and "and 7 more" in problem.message
