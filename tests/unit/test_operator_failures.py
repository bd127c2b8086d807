"""How the operator treats API faults: its retry schedule, no answer as a KubeError, the
DaemonSet controller's FailedCreate Events as problems, and the one condition transition rule."""

from __future__ import annotations

import socket

import kopf
import pytest
from kubernetes import client

from esnode_operator.conditions import condition, stamp_transition
from esnode_operator.kube import NETWORK_ERROR, Kube, KubeError
from esnode_operator.reconcile.fleet_status import FAILED_CREATE, controller_problems
from esnode_operator.retry import MAX_RETRY_SECONDS, configure_retries, retry_delay_seconds


def test_retries_double_from_one_second_and_stop_growing_at_ten() -> None:
    assert [retry_delay_seconds(n) for n in range(6)] == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0]
    assert retry_delay_seconds(100) == MAX_RETRY_SECONDS  # kopf's default would be 60 s


def test_no_answer_from_the_apiserver_is_a_kube_error_with_status_zero() -> None:
    with socket.socket() as sock:  # a loopback port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    configuration = client.Configuration()
    configuration.host = f"http://127.0.0.1:{port}"
    configuration.retries = False
    with pytest.raises(KubeError) as raised:
        Kube(client.ApiClient(configuration)).get("v1", "ConfigMap", "default", "x")
    assert raised.value.status == NETWORK_ERROR
    assert "refused" in raised.value.message.lower()


def _event(uid: str, reason: str, message: str, when: str) -> dict[str, object]:
    return {"involvedObject": {"uid": uid}, "reason": reason, "message": message, "lastTimestamp": when}


def test_the_newest_failed_create_of_each_own_daemonset_becomes_a_problem() -> None:
    daemonsets = [{"metadata": {"uid": "u1", "name": "esnode-a"}}]
    events = [
        _event("u1", FAILED_CREATE, "old news", "2026-01-01T00:00:00Z"),
        _event("u1", FAILED_CREATE, 'no PriorityClass with name "gold" was found', "2026-01-01T00:01:00Z"),
        _event("u1", "SuccessfulCreate", "created pod", "2026-01-01T00:02:00Z"),
        _event("other", FAILED_CREATE, "someone else's", "2026-01-01T00:03:00Z"),
    ]
    [problem] = controller_problems(events, daemonsets)
    assert problem.reason == FAILED_CREATE
    assert (
        problem.message
        == 'DaemonSet esnode-a cannot create its pods: no PriorityClass with name "gold" was found'
    )
    assert controller_problems(events[2:], daemonsets) == []


def test_a_transition_time_moves_only_with_the_status() -> None:
    before = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    kept = stamp_transition(
        condition("Ready", True, "AgentsReady", "new text"), before, "2026-02-02T00:00:00Z"
    )
    moved = stamp_transition(condition("Ready", False, "AgentsNotReady", "x"), before, "2026-02-02T00:00:00Z")
    assert kept["lastTransitionTime"] == "2026-01-01T00:00:00Z" and kept["message"] == "new text"
    assert moved["lastTransitionTime"] == "2026-02-02T00:00:00Z"


def test_kopfs_own_retries_follow_the_operators_schedule() -> None:
    """Issue 19: timeouts and connection errors got kopf's 60 s (and throttling up to 610 s)."""
    settings = kopf.OperatorSettings()
    configure_retries(settings)
    assert tuple(settings.networking.error_backoffs) == (1.0, 2.0, 4.0, 8.0, 10.0)
    assert tuple(settings.queueing.error_delays) == (1.0, 2.0, 4.0, 8.0, 10.0)  # kopf repeats the last
    assert settings.execution.default_backoff == MAX_RETRY_SECONDS
    assert settings.networking.request_timeout == 30.0 and settings.networking.connect_timeout == 5.0
