"""A k8s_mode agent on sim:h100x8 whose kubelet (the pod-resources API on a unix socket) has pods
holding GPUs: trainer-0 the whole GPU 0, infer-a and infer-b time-slicing GPU 1. Optionally a host
procfs and container log folder in which sim:h100x8's GPU processes run in those pods."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from agent_process import agent
from fake_kubelet import serving_kubelet
from prometheus_process import query, wait_for_result

from esnode_agent.podresources import api_pb2

GPU_UUID = re.compile(r'esnode_gpu_info\{gpu="(\d+)",uuid="(GPU-[^"]+)"')
NAMESPACE = "ml"
# sim:h100x8's processes: 4100 on GPU 0, 4201 and 4202 time-sliced on GPU 1 (75 % and 25 % of its SM use).
PODS = {  # pid -> (pod UID, container ID, pod, container)
    4100: ("11111111-2222-4333-8444-555555555555", "1" * 64, "trainer-0", "main"),
    4201: ("22222222-3333-4444-8555-666666666666", "2" * 64, "infer-a", "server"),
    4202: ("33333333-4444-4555-8666-777777777777", "3" * 64, "infer-b", "server"),
}
HOST_PROCESS = 4102  # a service on the host (GPU 2), in no pod
# The host collectors would read the fake procfs; only the GPU is under test there.
HOST_COLLECTORS_OFF = (
    "--no-enable-cpu",
    "--no-enable-memory",
    "--no-enable-disk",
    "--no-enable-network",
    "--no-enable-power",
)


def holding(name: str, container: str, device_id: str) -> api_pb2.PodResources:
    devices = api_pb2.ContainerDevices(resource_name="nvidia.com/gpu", device_ids=[device_id])
    return api_pb2.PodResources(
        namespace=NAMESPACE,
        name=name,
        containers=[api_pb2.ContainerResources(name=container, devices=[devices])],
    )


def host_tree(root: Path) -> None:
    """The host's /proc/<pid>/cgroup (cgroup v2, systemd driver, containerd) and container log links."""
    links = root / "var" / "log" / "containers"
    links.mkdir(parents=True)
    for pid, (uid, cid, pod, container) in PODS.items():
        slice_ = f"kubepods-burstable-pod{uid.replace('-', '_')}.slice"
        cgroup = f"0::/kubepods.slice/kubepods-burstable.slice/{slice_}/cri-containerd-{cid}.scope\n"
        (root / "proc" / str(pid)).mkdir(parents=True)
        (root / "proc" / str(pid) / "cgroup").write_text(cgroup)
        (links / f"{pod}_{NAMESPACE}_{container}-{cid}.log").touch()
    (root / "proc" / str(HOST_PROCESS)).mkdir()
    (root / "proc" / str(HOST_PROCESS) / "cgroup").write_text("0::/system.slice/batch.service\n")


@contextmanager
def agent_with_pods(workdir: Path, *flags: str, host: Path | None = None) -> Iterator[str]:
    """Yields the agent's URL once the kubelet names the GPUs' holders.

    ``host``: where to build host_tree(); the agent reads its procfs and log links there, with the
    host collectors off. Without it the agent sees none of the processes' pods.
    """
    socket_path = workdir / "kubelet.sock"
    pod_flags = ("--gpu-backend", "sim:h100x8", "--k8s-mode", "--pod-resources-socket", str(socket_path))
    host_flags: tuple[str, ...] = ()
    if host is not None:
        host_tree(host)
        host_flags = ("--path-procfs", str(host / "proc"), "--path-rootfs", str(host), *HOST_COLLECTORS_OFF)
    with (
        serving_kubelet(socket_path) as servicer,
        agent(
            *pod_flags,
            "--pod-resources-refresh-seconds", "1",
            *host_flags,
            *flags,
            log_path=workdir / "agent.log",
        ) as url,
    ):  # fmt: skip
        uuids = dict(GPU_UUID.findall(httpx.get(f"{url}/metrics", timeout=5).text))
        servicer.pods = [
            holding("trainer-0", "main", uuids["0"]),  # a whole GPU
            holding("infer-a", "server", f"{uuids['1']}::0"),  # one GPU, time-sliced
            holding("infer-b", "server", f"{uuids['1']}::1"),
        ]
        yield url


def pod_gpu_watts(prometheus_url: str, full_window_samples: int) -> dict[str, float]:
    """Each pod's GPU watts over the last 30 s, from its joules, once infer-b's series fills the window.

    rate() divides by the whole window: wait until the pods' series are older than it.
    """
    full = (
        f'count_over_time(esnode_pod_gpu_energy_joules_total{{pod="infer-b"}}[40s]) >= {full_window_samples}'
    )
    assert wait_for_result(prometheus_url, full, 90)
    rates = query(prometheus_url, "sum by (pod) (rate(esnode_pod_gpu_energy_joules_total[30s]))")
    return {r["metric"]["pod"]: float(r["value"][1]) for r in rates}


def held_gpus_watts(prometheus_url: str) -> float:
    """The power of GPUs 0 and 1, the ones the pods hold, over the same 30 s."""
    power = query(prometheus_url, 'sum(avg_over_time(esnode_gpu_power_watts{gpu=~"0|1"}[30s]))')
    return float(power[0]["value"][1])
