"""GPU energy per pod: each GPU's energy increase apportioned to the containers holding it.

Rule (docs/gpu.md): a whole GPU held by one container gives it the GPU's whole increase; a
time-sliced GPU splits it by the SM utilization of its holders' processes over the cycle (the
per-process series, named through their cgroups), equally where no holder's process has any;
a GPU in MIG mode splits it over its held MIG devices by SM count x GPM graphics-engine activity
(SM count alone where GPM is absent), then equally among each device's holders. Shares of one
cycle sum to that GPU's increase, so the pods' counters sum to the held GPUs' energy. Counters
start at 0 when the agent starts; a GPU's first reading and a driver reload (the counter going
down) add nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from esnode_agent.cycle.samples import SampleSink, counter
from esnode_agent.podresources.pod_ref import PodRef

POD_GPU_ENERGY = counter(
    "esnode_pod_gpu_energy_joules_total",
    "GPU energy used by the container since the agent started, from its GPUs' energy counters; "
    "apportioned for time-sliced and MIG GPUs (docs/gpu.md has the rule). increase() answers "
    "how many joules a workload cost.",
    "namespace",
    "pod",
    "container",
)


@dataclass(frozen=True, slots=True)
class GpuShares:
    """One GPU's energy counter this cycle and the weight of each container holding (part of) it."""

    energy_joules_total: float
    weights: Mapping[PodRef, float]


def apportion(joules: float, weights: Mapping[PodRef, float]) -> dict[PodRef, float]:
    """joules split by weight (equally where the weights sum to 0); the parts sum to joules."""
    total = sum(weights.values())
    if total <= 0:
        return {pod: joules / len(weights) for pod in weights}
    return {pod: joules * weight / total for pod, weight in weights.items()}


def sm_weights(
    holders: Sequence[PodRef], processes: Iterable[tuple[PodRef, float | None]]
) -> dict[PodRef, float] | None:
    """A shared GPU's holders weighted by their processes' summed SM utilization ratios; None
    (split equally) for fewer than two holders or when none of their processes used the SMs."""
    if len(holders) < 2:
        return None
    weights = dict.fromkeys(holders, 0.0)
    for names, sm in processes:
        if names in weights and sm is not None:
            weights[names] += sm
    return weights if sum(weights.values()) > 0 else None


def split_among(holders: Iterable[PodRef], weight: float, into: dict[PodRef, float]) -> None:
    """Adds a device's weight to its holders', equally."""
    pods = tuple(holders)
    for pod in pods:
        into[pod] = into.get(pod, 0.0) + weight / len(pods)


class PodGpuEnergy:
    """The per-container energy counters; fed each cycle by the GPU collector."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}  # GPU UUID -> its energy counter last cycle
        self._totals: dict[PodRef, float] = {}

    def update(self, gpus: Mapping[str, GpuShares]) -> None:
        for uuid, shares in gpus.items():
            previous = self._last.get(uuid)
            self._last[uuid] = shares.energy_joules_total
            if previous is None or shares.energy_joules_total < previous or not shares.weights:
                continue
            for pod, joules in apportion(shares.energy_joules_total - previous, shares.weights).items():
                self._totals[pod] = self._totals.get(pod, 0.0) + joules

    def add_to(self, sink: SampleSink, holding: Iterable[PodRef]) -> None:
        """Series for the containers holding a GPU now; a departed container's series ends."""
        for pod in sorted(set(holding), key=lambda p: (p.namespace, p.pod, p.container)):
            sink.add(
                POD_GPU_ENERGY,
                self._totals.get(pod, 0.0),
                namespace=pod.namespace,
                pod=pod.pod,
                container=pod.container,
            )
