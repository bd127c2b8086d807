"""`esnode-operator uninstall`: every served fleet deleted in the foreground, and waited for."""

from __future__ import annotations

from typing import Any

from esnode_operator.kube import KubeError
from esnode_operator.uninstall import Uninstall


def fleet(namespace: str, name: str, uid: str) -> dict[str, Any]:
    return {"kind": "EsnodeFleet", "metadata": {"namespace": namespace, "name": name, "uid": uid}}


class FleetsKube:
    """The apiserver at the operator's boundary: a fleet goes `rounds` lists after its delete."""

    def __init__(self, fleets: list[dict[str, Any]], rounds: int, faults: int = 0) -> None:
        self.fleets = fleets
        self.reports = [{"kind": "EsnodeNode", "metadata": {"namespace": "ml", "name": "node-1",
                         "ownerReferences": [{"uid": "u1"}]}}]  # fmt: skip
        self.rounds = rounds
        self.faults = faults
        self.deleted: list[tuple[str, str]] = []
        self.countdown: dict[str, int] = {}

    def list(self, api_version: str, kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
        if self.faults:
            self.faults -= 1
            raise KubeError(503, "ServiceUnavailable", "etcd leader changed")
        if kind == "EsnodeNode":
            alive = {f["metadata"]["uid"] for f in self.fleets}  # the garbage collector follows the owner
            return [r for r in self.reports if r["metadata"]["ownerReferences"][0]["uid"] in alive]
        for uid in list(self.countdown):
            self.countdown[uid] -= 1
            if self.countdown[uid] <= 0:
                self.fleets = [f for f in self.fleets if f["metadata"]["uid"] != uid]
        return [f for f in self.fleets if namespace in (None, f["metadata"]["namespace"])]

    def delete(self, obj: dict[str, Any], propagation: str) -> None:
        self.deleted.append((obj["metadata"]["name"], propagation))
        obj["metadata"]["deletionTimestamp"] = "2026-12-02T00:00:00Z"
        self.countdown[obj["metadata"]["uid"]] = self.rounds


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def test_the_served_fleets_are_deleted_in_the_foreground_and_waited_for() -> None:
    kube = FleetsKube([fleet("ml", "a", "u1"), fleet("lab", "b", "u2"), fleet("other", "c", "u3")], rounds=3)
    clock = Clock()
    remaining = Uninstall(kube, ["ml", "lab"], clock, clock.sleep).run(wait_seconds=30)  # type: ignore[arg-type]
    assert remaining == []
    assert sorted(kube.deleted) == [("a", "Foreground"), ("b", "Foreground")]  # one delete each
    assert [f["metadata"]["name"] for f in kube.fleets] == ["c"]  # not served: left alone
    assert clock.now >= 2.0  # it waited for them


def test_an_apiserver_fault_is_retried_and_a_fleet_that_stays_is_named_at_the_deadline() -> None:
    kube = FleetsKube([fleet("ml", "a", "u1")], rounds=1000, faults=2)
    clock = Clock()
    remaining = Uninstall(kube, [], clock, clock.sleep).run(wait_seconds=5)  # type: ignore[arg-type]
    assert remaining == ["EsnodeFleet ml/a", "EsnodeNode ml/node-1"]
    assert kube.deleted == [("a", "Foreground")]
