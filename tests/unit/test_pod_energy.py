"""GPU energy per pod: exact for whole GPUs, apportioned for time-sliced and MIG GPUs, summing to the GPUs'."""

from __future__ import annotations

import pytest
from simulated_gpus import EVERYTHING, INFER_A, INFER_B, Sharers, simulated_nvml

from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.collectors.pod_energy import GpuShares, PodGpuEnergy, apportion
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.gpu.sim_profile import load_profile
from esnode_agent.podresources.pod_ref import PodRef

TRAINER = PodRef("ml", "trainer-0", "main")
SMALL = PodRef("dev", "notebook", "jupyter")


def test_apportioned_parts_sum_to_the_whole() -> None:
    parts = apportion(1234.5, {TRAINER: 60.0, INFER_A: 32.0, SMALL: 16.0})
    assert sum(parts.values()) == pytest.approx(1234.5)
    assert parts[TRAINER] == pytest.approx(1234.5 * 60 / 108)
    assert apportion(10.0, {INFER_A: 0.0, INFER_B: 0.0}) == {INFER_A: 5.0, INFER_B: 5.0}


def test_first_sight_and_a_driver_reload_add_nothing() -> None:
    energy = PodGpuEnergy()
    energy.update({"GPU-a": GpuShares(1000.0, {TRAINER: 1.0})})
    energy.update({"GPU-a": GpuShares(1500.0, {TRAINER: 1.0})})
    energy.update({"GPU-a": GpuShares(20.0, {TRAINER: 1.0})})  # counter restarted
    energy.update({"GPU-a": GpuShares(70.0, {TRAINER: 1.0})})
    sink = SampleSink(0.0)
    energy.add_to(sink, [TRAINER])
    assert SampleIndex(sink.samples).value("esnode_pod_gpu_energy_joules_total", pod="trainer-0") == 550.0


def run(
    profile: str, sharers: dict[str, tuple[PodRef, ...]], seconds: float
) -> tuple[SampleIndex, SampleIndex]:
    fake, backend, clock = simulated_nvml(load_profile(profile))
    ids = {d.identity.index: d.identity.uuid for d in backend.devices()}
    mig_ids = (
        [
            fake.nvmlDeviceGetUUID(
                fake.nvmlDeviceGetMigDeviceHandleByIndex(fake.nvmlDeviceGetHandleByIndex(0), s)
            )
            for s in range(3)
        ]
        if profile == "h100-mig"
        else []
    )
    resolved = {_resolve(key, ids, mig_ids): pods for key, pods in sharers.items()}
    collector = GpuCollector(backend, EVERYTHING, EVERYTHING, k8s_mode=True, pods=Sharers(resolved))  # type: ignore[arg-type]
    first, last = SampleSink(0.0), SampleSink(1.0)
    collector.collect(first)
    for _ in range(int(seconds)):
        clock.now += 1
        last = SampleSink(clock.now)
        collector.collect(last)
    collector.close()
    return SampleIndex(first.samples), SampleIndex(last.samples)


def _resolve(key: str, ids: dict[int, str], mig_ids: list[str]) -> str:
    kind, number = key.split(":")
    return ids[int(number)] if kind == "gpu" else mig_ids[int(number)]


def pod_joules(samples: SampleIndex) -> dict[str, float]:
    return {s.label("pod"): s.value for s in samples.named("esnode_pod_gpu_energy_joules_total")}


def gpu_increase(first: SampleIndex, last: SampleIndex, gpu: str) -> float:
    before = first.value("esnode_gpu_energy_joules_total", gpu=gpu)
    after = last.value("esnode_gpu_energy_joules_total", gpu=gpu)
    assert before is not None and after is not None
    return after - before


def test_a_whole_gpu_gives_its_holder_exactly_its_energy_and_time_slicing_splits_it() -> None:
    first, last = run("h100x8", {"gpu:0": (TRAINER,), "gpu:1": (TRAINER,), "gpu:2": (INFER_A, INFER_B)}, 30)
    joules = pod_joules(last)
    assert joules["trainer-0"] == pytest.approx(
        gpu_increase(first, last, "0") + gpu_increase(first, last, "1")
    )
    assert joules["infer-a"] == pytest.approx(joules["infer-b"])
    assert joules["infer-a"] + joules["infer-b"] == pytest.approx(gpu_increase(first, last, "2"))
    assert set(joules) == {"trainer-0", "infer-a", "infer-b"}  # unheld GPUs are nobody's
    assert all(s.label("container") for s in last.named("esnode_pod_gpu_energy_joules_total"))


def test_a_mig_gpu_splits_by_instance_size_and_activity_and_sums_to_its_energy() -> None:
    first, last = run(
        "h100-mig", {"mig:0": (TRAINER,), "mig:1": (INFER_A,), "mig:2": (SMALL,), "gpu:1": (INFER_B,)}, 20
    )
    joules = pod_joules(last)
    assert joules["trainer-0"] + joules["infer-a"] + joules["notebook"] == pytest.approx(
        gpu_increase(first, last, "0")
    )
    assert joules["infer-b"] == pytest.approx(gpu_increase(first, last, "1"))


def test_one_cycles_mig_split_follows_sm_count_times_gpm_activity() -> None:
    _, last = run("h100-mig", {"mig:0": (TRAINER,), "mig:2": (SMALL,)}, 1)
    joules = pod_joules(last)
    activity = {
        s.label("profile"): s.value
        for s in last.named("esnode_mig_activity_ratio")
        if s.label("activity") == "graphics_engine"
    }
    expected = (60 * activity["3g.40gb"]) / (16 * activity["1g.10gb"])
    assert joules["trainer-0"] / joules["notebook"] == pytest.approx(expected)
