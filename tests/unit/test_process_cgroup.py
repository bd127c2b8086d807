"""A host process's pod and container from its /proc/<pid>/cgroup, and container names from the kubelet's log links."""

from __future__ import annotations

from pathlib import Path

import pytest

from esnode_agent.podresources.container_logs import ContainerLogNames, names_from_links
from esnode_agent.podresources.pod_ref import PodRef
from esnode_agent.podresources.process_cgroup import PodContainer, pod_container, read_pod_container

UID = "8d3b4b2e-6d7f-4b0a-9c4e-1f2a3b4c5d6e"
SYSTEMD_UID = UID.replace("-", "_")
STATIC_UID = "6d1c7e5f0b5d6f1d0a2b3c4d5e6f7a8b"  # a static pod's: its manifest's hash
CID = "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"

# What the kernel writes, for the runtimes and cgroup drivers the kubelet supports.
CGROUP_FILES = {
    "v2, systemd driver, containerd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/"
        f"cri-containerd-{CID}.scope\n",
        PodContainer(UID, CID),
    ),
    "v2, systemd driver, CRI-O, guaranteed QoS": (
        f"0::/kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/crio-{CID}.scope\n",
        PodContainer(UID, CID),
    ),
    "v1, cgroupfs driver, containerd": (
        f"12:memory:/kubepods/burstable/pod{UID}/{CID}\n"
        f"11:cpu,cpuacct:/kubepods/burstable/pod{UID}/{CID}\n"
        f"1:name=systemd:/kubepods/burstable/pod{UID}/{CID}\n"
        "0::/\n",
        PodContainer(UID, CID),
    ),
    "v1, systemd driver, CRI-O (hybrid: v2 line first, at the root)": (
        "0::/\n"
        f"13:pids:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice/"
        f"crio-{CID}.scope\n"
        f"4:devices:/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{SYSTEMD_UID}.slice/"
        f"crio-{CID}.scope\n",
        PodContainer(UID, CID),
    ),
    "v2, cgroupfs driver, CRI-O": (
        f"0::/kubepods/besteffort/pod{UID}/crio-{CID}\n",
        PodContainer(UID, CID),
    ),
    "v2, containerd's systemd form below its service (kind)": (
        f"0::/system.slice/containerd.service/kubepods-besteffort-pod{SYSTEMD_UID}.slice:cri-containerd:{CID}\n",
        PodContainer(UID, CID),
    ),
    "v2, a sub-cgroup inside the container": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/"
        f"cri-containerd-{CID}.scope/workers\n",
        PodContainer(UID, CID),
    ),
    "v2, cri-dockerd": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{SYSTEMD_UID}.slice/docker-{CID}.scope\n",
        PodContainer(UID, CID),
    ),
    "v2, a static pod": (
        f"0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC_UID}.slice/"
        f"cri-containerd-{CID}.scope\n",
        PodContainer(STATIC_UID, CID),
    ),
    "v2, CRI-O's conmon: the pod's, no container": (
        f"0::/kubepods.slice/kubepods-pod{SYSTEMD_UID}.slice/crio-conmon-{CID}.scope\n",
        PodContainer(UID, ""),
    ),
    "v2, a host service": ("0::/system.slice/ollama.service\n", None),
    "v1, a login session": ("12:memory:/user.slice/user-1000.slice/session-3.scope\n0::/user.slice\n", None),
}


@pytest.mark.parametrize(("text", "expected"), CGROUP_FILES.values(), ids=list(CGROUP_FILES))
def test_pod_uid_and_container_id_from_each_cgroup_shape(text: str, expected: PodContainer | None) -> None:
    assert pod_container(text) == expected


def test_a_pod_named_like_a_pod_uid_elsewhere_in_the_path_is_not_taken() -> None:
    # A systemd unit merely containing "pod" and hex is not the kubelet's pod cgroup.
    assert pod_container(f"0::/system.slice/mypod{UID}x.service\n") is None


def test_read_from_procfs_and_a_vanished_process(tmp_path: Path) -> None:
    (tmp_path / "4100").mkdir()
    (tmp_path / "4100" / "cgroup").write_text(CGROUP_FILES["v2, systemd driver, containerd"][0])
    assert read_pod_container(tmp_path, 4100) == PodContainer(UID, CID)
    with pytest.raises(ProcessLookupError):
        read_pod_container(tmp_path, 4101)


def test_container_names_from_the_kubelets_log_links() -> None:
    names = names_from_links(
        [
            f"trainer-0_ml-team_main-{CID}.log",
            f"infer-a.v2_ml_model-server-{'a' * 64}.log",  # dots in a pod name, dashes in a container's
            "kube-proxy-x_kube-system_kube-proxy-short.log",  # not a container ID: skipped
            "README",
        ]
    )
    assert names == {
        CID: PodRef("ml-team", "trainer-0", "main"),
        "a" * 64: PodRef("ml", "infer-a.v2", "model-server"),
    }


def test_log_links_are_listed_again_only_on_a_miss_and_at_most_once_per_period(tmp_path: Path) -> None:
    folder = tmp_path / "var" / "log" / "containers"
    now = [0.0]
    logs = ContainerLogNames(tmp_path, relist_seconds=10.0, clock=lambda: now[0])
    assert logs.lookup(CID) is None  # no folder: no names
    folder.mkdir(parents=True)
    (folder / f"trainer-0_ml_main-{CID}.log").touch()
    assert logs.lookup(CID) is None  # listed a moment ago
    now[0] = 10.0
    assert logs.lookup(CID) == PodRef("ml", "trainer-0", "main")
    (folder / f"trainer-0_ml_main-{CID}.log").unlink()
    now[0] = 30.0
    assert logs.lookup(CID) == PodRef("ml", "trainer-0", "main")  # a hit is not listed again
