"""Per-process GPU use on the simulated NVML: NVML's process calls and errors, pods by cgroup, the top-N bound."""

from __future__ import annotations

import logging
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pynvml  # type: ignore[import-untyped]
import pytest
from simulated_gpus import EVERYTHING, INFER_A, INFER_B, Sharers, simulated_nvml

from esnode_agent.collectors.gpu import GpuCollector
from esnode_agent.collectors.gpu_processes import GpuProcessWriter
from esnode_agent.collectors.pod_energy import sm_weights
from esnode_agent.cycle.samples import SampleIndex, SampleSink
from esnode_agent.gpu.nvml_backend import NvmlBackend
from esnode_agent.gpu.sim_profile import SimProfile, load_profile
from esnode_agent.podresources.container_logs import ContainerLogNames
from esnode_agent.podresources.pod_ref import PodRef
from esnode_agent.serve.exposition import render

GIB = 2**30
UID_A = "0b9a1c2d-3e4f-4a5b-8c6d-7e8f9a0b1c2d"
UID_B = "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
CID_A = "a" * 64
CID_B = "b" * 64


def profile_with(base: str, processes: list[dict[str, Any]], **group: Any) -> SimProfile:
    data = load_profile(base).model_dump()
    data["processes"] = processes
    data["gpus"] = [{**g, **group} for g in data["gpus"]]
    return SimProfile.model_validate(data)


def gpu_uuids(profile: SimProfile) -> list[str]:
    _, backend, _ = simulated_nvml(profile)
    return [d.identity.uuid for d in backend.devices()]


def systemd_cgroup(uid: str, cid: str) -> str:
    return (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}.slice/"
        f"cri-containerd-{cid}.scope\n"
    )


def write_procfs(root: Path, cgroups: dict[int, str]) -> Path:
    for pid, text in cgroups.items():
        (root / "proc" / str(pid)).mkdir(parents=True)
        (root / "proc" / str(pid) / "cgroup").write_text(text)
    return root / "proc"


# NVML's side, as the simulator answers it.


def test_running_processes_are_pynvmls_objects_in_bytes_with_not_available_as_none() -> None:
    profile = profile_with(
        "h100x8",
        [
            {"gpu": 0, "pid": 11, "memory_used_bytes": 3 * GIB, "sm_share": 0.5},
            {"gpu": 0, "pid": 12, "memory_used_bytes": None, "sm_share": 0.5},
        ],
    )
    fake, _, _ = simulated_nvml(profile)
    running = fake.nvmlDeviceGetComputeRunningProcesses(fake.nvmlDeviceGetHandleByIndex(0))
    assert [(p.pid, p.usedGpuMemory) for p in running] == [(11, 3 * GIB), (12, None)]
    assert running[0].gpuInstanceId == 0xFFFFFFFF  # not in MIG
    assert fake.nvmlDeviceGetComputeRunningProcesses(fake.nvmlDeviceGetHandleByIndex(1)) == []


def test_process_samples_are_nvmls_newer_than_the_timestamp_then_not_found() -> None:
    fake, _, clock = simulated_nvml(load_profile("h100x8"))
    handle = fake.nvmlDeviceGetHandleByIndex(7)  # a steady 95 % load
    samples = fake.nvmlDeviceGetProcessUtilization(handle, 0)
    assert {s.pid for s in samples} == {4107}
    assert all(s.smUtil == 95 for s in samples)
    newest = max(s.timeStamp for s in samples)
    with pytest.raises(pynvml.NVMLError_NotFound):
        fake.nvmlDeviceGetProcessUtilization(handle, newest)
    clock.now += 3
    assert len(fake.nvmlDeviceGetProcessUtilization(handle, newest)) == 3  # one per second


def test_per_process_utilization_is_not_supported_where_nvml_lacks_it() -> None:
    fake, _, _ = simulated_nvml(load_profile("h100-mig"))
    gpu0 = fake.nvmlDeviceGetHandleByIndex(0)  # MIG mode
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetProcessUtilization(gpu0, 0)
    mig = fake.nvmlDeviceGetMigDeviceHandleByIndex(gpu0, 0)
    with pytest.raises(pynvml.NVMLError_NotSupported):
        fake.nvmlDeviceGetProcessUtilization(mig, 0)
    assert [p.pid for p in fake.nvmlDeviceGetComputeRunningProcesses(mig)] == [5102]
    assert [p.gpuInstanceId for p in fake.nvmlDeviceGetComputeRunningProcesses(gpu0)] == [2, 3]
    old, _, _ = simulated_nvml(profile_with("h100x8", [], process_utilization=False))
    with pytest.raises(pynvml.NVMLError_NotSupported):
        old.nvmlDeviceGetProcessUtilization(old.nvmlDeviceGetHandleByIndex(0), 0)


def test_a_profile_refuses_processes_that_cannot_be() -> None:
    with pytest.raises(ValueError, match="GPU 9"):
        profile_with("h100x8", [{"gpu": 9, "pid": 1, "memory_used_bytes": 1}])
    with pytest.raises(ValueError, match="gpu_instance_id"):
        profile_with("h100-mig", [{"gpu": 0, "pid": 1, "memory_used_bytes": 1}])  # MIG mode: which device?
    with pytest.raises(ValueError, match="more than all"):
        profile_with(
            "h100x8",
            [
                {"gpu": 0, "pid": 1, "memory_used_bytes": 1, "sm_share": 0.7},
                {"gpu": 0, "pid": 2, "memory_used_bytes": 1, "sm_share": 0.7},
            ],
        )


# The backend's readings.


def test_sm_share_is_the_mean_of_the_cycles_samples_and_zero_without_new_ones() -> None:
    _, backend, clock = simulated_nvml(load_profile("h100x8"))
    gpu1 = backend.devices()[1]  # two time-sliced processes: 75 % and 25 % of the load
    first = {p.pid: p for p in gpu1.processes([])}
    assert first[4201].sm_utilization_ratio == pytest.approx(3 * first[4202].sm_utilization_ratio, abs=0.02)
    assert first[4201].memory_used_bytes == 4 * GIB
    again = {p.pid: p for p in gpu1.processes([])}  # no new sample since: NOT_FOUND
    assert again[4201].sm_utilization_ratio == 0.0
    clock.now += 5
    later = {p.pid: p for p in gpu1.processes([])}
    assert later[4201].sm_utilization_ratio is not None and later[4201].sm_utilization_ratio > 0


def test_mig_processes_are_read_per_mig_device_without_utilization() -> None:
    _, backend, _ = simulated_nvml(load_profile("h100-mig"))
    gpu0 = backend.devices()[0]
    gpu0.read()
    migs = gpu0.mig_instances()
    processes = gpu0.processes(migs)
    assert [(p.pid, p.mig_uuid) for p in processes] == [(5102, migs[0].uuid), (5103, migs[1].uuid)]
    assert all(p.sm_utilization_ratio is None for p in processes)
    assert gpu0.processes(migs[2:]) == []  # only the devices asked about


# The collector's series.


def collect_processes(
    profile: SimProfile,
    procfs: Path,
    *,
    top_n: int = 10,
    rootfs: Path | None = None,
    sharers: dict[str, tuple[PodRef, ...]] | None = None,
    cycles: int = 1,
) -> tuple[SampleIndex, NvmlBackend]:
    _, backend, clock = simulated_nvml(profile)
    logs = ContainerLogNames(rootfs, 10.0) if rootfs else None
    collector = GpuCollector(
        backend,
        EVERYTHING,
        EVERYTHING,
        k8s_mode=sharers is not None,
        pods=Sharers(sharers) if sharers is not None else None,  # type: ignore[arg-type]
        processes=GpuProcessWriter(top_n, procfs, logs),
    )
    sink = SampleSink(0.0)
    for _ in range(cycles):
        clock.now += 5
        sink = SampleSink(clock.now)
        collector.collect(sink)
    collector.close()
    return SampleIndex(sink.samples), backend


def test_pod_and_container_of_each_process_and_none_for_a_host_process(tmp_path: Path) -> None:
    procfs = write_procfs(
        tmp_path,
        {4100: systemd_cgroup(UID_A, CID_A), 4102: "0::/system.slice/trainer.service\n"},
    )
    samples, _ = collect_processes(load_profile("h100x8"), procfs)
    memory = {s.label("pid"): s.labels for s in samples.named("esnode_gpu_process_memory_used_bytes")}
    assert set(memory) == {"4100", "4102"}  # the others' pids are not in this procfs: skipped
    assert memory["4100"]["pod_uid"] == UID_A and memory["4100"]["container_id"] == CID_A
    assert memory["4100"]["gpu"] == "0"
    assert memory["4102"]["pod_uid"] == memory["4102"]["pod"] == ""
    assert samples.value("esnode_gpu_process_memory_used_bytes", pid="4100") == 6 * GIB
    sm = samples.value("esnode_gpu_process_sm_utilization_ratio", pid="4100")
    assert sm is not None and 0 <= sm <= 1


def test_time_sliced_holders_are_told_apart_by_container_id(tmp_path: Path) -> None:
    procfs = write_procfs(tmp_path, {4201: systemd_cgroup(UID_A, CID_A), 4202: systemd_cgroup(UID_B, CID_B)})
    links = tmp_path / "var" / "log" / "containers"
    links.mkdir(parents=True)
    (links / f"infer-a_ml_server-{CID_A}.log").touch()
    (links / f"infer-b_ml_server-{CID_B}.log").touch()
    gpu1 = gpu_uuids(load_profile("h100x8"))[1]
    samples, _ = collect_processes(
        load_profile("h100x8"), procfs, rootfs=tmp_path, sharers={gpu1: (INFER_A, INFER_B)}
    )
    pods = {s.label("pid"): s.label("pod") for s in samples.named("esnode_gpu_process_memory_used_bytes")}
    assert pods == {"4201": "infer-a", "4202": "infer-b"}


def test_without_log_links_a_sole_holder_names_its_process_and_shared_ones_stay_unnamed(
    tmp_path: Path,
) -> None:
    procfs = write_procfs(
        tmp_path,
        {
            4100: systemd_cgroup(UID_A, CID_A),
            4201: systemd_cgroup(UID_A, CID_A),
            4202: systemd_cgroup(UID_B, CID_B),
        },
    )
    uuids = gpu_uuids(load_profile("h100x8"))
    samples, _ = collect_processes(
        load_profile("h100x8"),
        procfs,
        rootfs=tmp_path / "no-such-root",
        sharers={uuids[0]: (INFER_A,), uuids[1]: (INFER_A, INFER_B)},
    )
    by_pid = {s.label("pid"): s.labels for s in samples.named("esnode_gpu_process_memory_used_bytes")}
    assert (by_pid["4100"]["namespace"], by_pid["4100"]["pod"], by_pid["4100"]["container"]) == (
        "ml",
        "infer-a",
        "server",
    )
    assert by_pid["4201"]["pod"] == by_pid["4202"]["pod"] == ""
    assert by_pid["4202"]["pod_uid"] == UID_B  # still joinable with kube_pod_info{uid}


def test_top_n_by_memory_and_the_left_out_counter(tmp_path: Path) -> None:
    processes = [
        {"gpu": 0, "pid": 100 + i, "memory_used_bytes": i * GIB, "sm_share": 0.1} for i in range(1, 6)
    ]
    processes.append({"gpu": 0, "pid": 99, "memory_used_bytes": None, "sm_share": 0.1})
    procfs = write_procfs(tmp_path, {p["pid"]: "0::/\n" for p in processes if p["pid"] != 105})  # 105 exited
    samples, _ = collect_processes(profile_with("h100x8", processes), procfs, top_n=3, cycles=2)
    shown = {
        s.label("pid") for s in samples.named("esnode_gpu_process_memory_used_bytes") if s.label("gpu") == "0"
    }
    assert shown == {"104", "103", "102"}  # the most memory; 105 vanished and is not counted
    assert samples.value("esnode_gpu_processes", gpu="0") == 6
    assert samples.value("esnode_gpu_processes_left_out_total", gpu="0") == 2 * 2  # 101 and 99, two cycles
    assert samples.value("esnode_gpu_processes_left_out_total", gpu="1") == 0


def test_a_process_without_known_memory_still_gets_its_utilization(tmp_path: Path) -> None:
    profile = profile_with("h100x8", [{"gpu": 0, "pid": 99, "memory_used_bytes": None}])
    samples, _ = collect_processes(profile, write_procfs(tmp_path, {99: "0::/\n"}))
    assert samples.named("esnode_gpu_process_memory_used_bytes") == []
    assert samples.value("esnode_gpu_process_sm_utilization_ratio", pid="99") is not None


def test_a_lost_gpu_reports_no_processes_and_the_others_carry_on(tmp_path: Path) -> None:
    fake, backend, _ = simulated_nvml(load_profile("h100x8"))
    fake.fail_gpu(0)
    collector = GpuCollector(
        backend,
        EVERYTHING,
        EVERYTHING,
        processes=GpuProcessWriter(10, write_procfs(tmp_path, {4100: "0::/\n", 4102: "0::/\n"}), None),
    )
    sink = SampleSink(0.0)
    collector.collect(sink)
    collector.close()
    samples = SampleIndex(sink.samples)
    assert samples.value("esnode_gpu_up", gpu="0") == 0
    assert {s.label("pid") for s in samples.named("esnode_gpu_process_memory_used_bytes")} == {"4102"}


def test_a_time_sliced_gpus_energy_follows_its_holders_sm_use_and_sums_to_the_gpus(tmp_path: Path) -> None:
    procfs = write_procfs(tmp_path, {4201: systemd_cgroup(UID_A, CID_A), 4202: systemd_cgroup(UID_B, CID_B)})
    links = tmp_path / "var" / "log" / "containers"
    links.mkdir(parents=True)
    (links / f"infer-a_ml_server-{CID_A}.log").touch()
    (links / f"infer-b_ml_server-{CID_B}.log").touch()
    profile = load_profile("h100x8")
    gpu1 = gpu_uuids(profile)[1]
    _, backend, clock = simulated_nvml(profile)
    collector = GpuCollector(
        backend,
        EVERYTHING,
        EVERYTHING,
        k8s_mode=True,
        pods=Sharers({gpu1: (INFER_A, INFER_B)}),  # type: ignore[arg-type]
        processes=GpuProcessWriter(10, procfs, ContainerLogNames(tmp_path, 10.0)),
    )
    cycles = []
    for _ in range(30):
        clock.now += 5
        sink = SampleSink(clock.now)
        collector.collect(sink)
        cycles.append(SampleIndex(sink.samples))
    collector.close()
    first, last = cycles[0], cycles[-1]
    joules = {s.label("pod"): s.value for s in last.named("esnode_pod_gpu_energy_joules_total")}
    gpu_energy = [c.value("esnode_gpu_energy_joules_total", gpu="1") for c in (first, last)]
    assert gpu_energy[0] is not None and gpu_energy[1] is not None
    assert joules["infer-a"] + joules["infer-b"] == pytest.approx(gpu_energy[1] - gpu_energy[0])
    assert joules["infer-a"] / joules["infer-b"] == pytest.approx(3.0, rel=0.1)  # SM shares 0.75 : 0.25


def test_pynvmls_success_without_samples_reads_as_no_new_samples(caplog: pytest.LogCaptureFixture) -> None:
    # pynvml raises NVMLError(SUCCESS) when the driver answers the sizing call with no samples.
    fake, backend, _ = simulated_nvml(load_profile("h100x8"))

    def no_samples(handle: object, timeStamp: int) -> list[object]:  # noqa: N803
        raise pynvml.NVMLError(pynvml.NVML_SUCCESS)

    fake.nvmlDeviceGetProcessUtilization = no_samples  # type: ignore[method-assign]
    (process,) = backend.devices()[0].processes([])
    assert process.sm_utilization_ratio == 0.0 and process.memory_utilization_ratio == 0.0
    assert "unreadable" not in caplog.text


@pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool not installed (Debian package prometheus)"
)
def test_process_series_pass_promtool(tmp_path: Path) -> None:
    procfs = write_procfs(tmp_path, {4100: systemd_cgroup(UID_A, CID_A), 4201: "0::/\n"})
    samples, _ = collect_processes(load_profile("h100x8"), procfs, top_n=1)
    assert samples.named("esnode_gpu_process_sm_utilization_ratio")
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=render(samples).text.body,
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert result.stderr.decode().strip() == "" and result.returncode == 0


def test_a_mig_gpu_whose_mig_devices_are_not_read_reports_no_process_count(tmp_path: Path) -> None:
    _, backend, _ = simulated_nvml(load_profile("h100-mig"))
    procfs = write_procfs(tmp_path, {5102: "0::/\n", 5201: "0::/\n"})
    collector = GpuCollector(
        backend, EVERYTHING, EVERYTHING, enable_mig=False, processes=GpuProcessWriter(10, procfs, None)
    )
    sink = SampleSink(0.0)
    collector.collect(sink)
    collector.close()
    samples = SampleIndex(sink.samples)
    assert samples.value("esnode_gpu_processes", gpu="0") is None  # unknown, not 0
    assert samples.value("esnode_gpu_processes", gpu="1") == 1
    assert {s.label("pid") for s in samples.named("esnode_gpu_process_memory_used_bytes")} == {"5201"}


def test_sm_weights_split_by_holders_processes_or_fall_back_to_equal() -> None:
    host = PodRef("", "", "")
    assert sm_weights((INFER_A, INFER_B), [(INFER_A, 0.6), (INFER_A, 0.2), (INFER_B, 0.2), (host, 0.9)]) == {
        INFER_A: pytest.approx(0.8),
        INFER_B: pytest.approx(0.2),
    }
    assert sm_weights((INFER_A, INFER_B), [(INFER_A, 0.0), (INFER_B, None)]) is None  # nobody computed
    assert sm_weights((INFER_A, INFER_B), [(host, 0.5)]) is None  # no holder's process named
    assert sm_weights((INFER_A,), [(INFER_A, 0.5)]) is None  # one holder takes it all anyway


def test_a_driver_without_the_v3_call_answers_through_v2() -> None:
    # pynvml's unversioned call raises its own mismatch error (not an NVMLError) on such a driver.
    fake, backend, _ = simulated_nvml(load_profile("h100x8"))

    def v3_missing(handle: object) -> list[object]:
        raise pynvml.NVMLLibraryMismatchError("Unversioned function called")

    fake.nvmlDeviceGetComputeRunningProcesses = v3_missing  # type: ignore[method-assign]
    assert [p.pid for p in backend.devices()[0].processes([])] == [4100]
    assert fake.call_counts()[(0, "nvmlDeviceGetComputeRunningProcesses_v2")] == 1


def test_an_unreadable_cgroup_skips_the_process_and_is_logged_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    procfs = write_procfs(tmp_path, {4102: "0::/\n"})
    (procfs / "4100").mkdir()
    (procfs / "4100" / "cgroup").mkdir()  # reading it fails (IsADirectoryError), as a denied read would
    with caplog.at_level(logging.INFO):
        samples, _ = collect_processes(load_profile("h100x8"), procfs, cycles=2)
    assert {s.label("pid") for s in samples.named("esnode_gpu_process_memory_used_bytes")} == {"4102"}
    assert caplog.text.count("cgroup unreadable") == 1
