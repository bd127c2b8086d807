"""Simulated GPUs for collector tests: NVML's simulator on a clock the test moves, and the pods the
kubelet says hold each device, fixed by the test."""

from __future__ import annotations

from esnode_agent.gpu.nvml_backend import NvmlBackend, open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import SimProfile
from esnode_agent.gpu.visibility import DeviceList
from esnode_agent.podresources.pod_ref import PodRef

EVERYTHING = DeviceList(everything=True)
INFER_A = PodRef("ml", "infer-a", "server")
INFER_B = PodRef("ml", "infer-b", "server")


class Clock:
    """The simulator's time in seconds; the test moves ``now``."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Sharers:
    """The pod-resources refresher's two maps, fixed: device ID -> the pods sharing it."""

    def __init__(self, sharers: dict[str, tuple[PodRef, ...]]) -> None:
        self._sharers = sharers

    def holders(self) -> dict[str, PodRef]:
        return {}

    def sharers(self) -> dict[str, tuple[PodRef, ...]]:
        return self._sharers

    def stop(self) -> None:
        return None


def simulated_nvml(profile: SimProfile) -> tuple[FakeNvml, NvmlBackend, Clock]:
    """The simulator, the agent's backend over it, and the simulator's clock."""
    clock = Clock()
    fake = FakeNvml(profile, clock)
    backend = open_nvml(fake)
    assert isinstance(backend, NvmlBackend)
    return fake, backend, clock
