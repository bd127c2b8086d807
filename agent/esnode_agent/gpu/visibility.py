"""Which GPUs and MIG devices the agent reads, in NVIDIA_VISIBLE_DEVICES' own language.

A device list is ``all``, ``none`` or ``void`` (nothing), or a comma-separated list of NVML indices,
GPU UUIDs (``GPU-...``) and MIG device UUIDs (``MIG-...``). Listing a MIG device shows it and its
parent GPU's GPU-wide series, but not the parent's other MIG devices. An empty list means nothing,
as the NVIDIA container toolkit reads an empty NVIDIA_VISIBLE_DEVICES.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

VISIBLE_DEVICES_ENV = "NVIDIA_VISIBLE_DEVICES"
MIG_CONFIG_DEVICES_ENV = "NVIDIA_MIG_CONFIG_DEVICES"

_GPU_UUID = re.compile(r"^GPU-[0-9A-Fa-f-]+$")
_MIG_UUID = re.compile(r"^MIG-[0-9A-Za-z/-]+$")  # MIG-<uuid>, or the older MIG-GPU-<uuid>/<gi>/<ci>


@dataclass(frozen=True, slots=True)
class DeviceList:
    everything: bool = False
    indices: frozenset[int] = frozenset()
    gpu_uuids: frozenset[str] = frozenset()  # lower case
    mig_uuids: frozenset[str] = frozenset()  # lower case

    def selects_gpu(self, index: int, uuid: str) -> bool:
        """The GPU itself is listed (or everything is), so all its MIG devices are too."""
        return self.everything or index in self.indices or uuid.lower() in self.gpu_uuids

    def selects_mig(self, parent_index: int, parent_uuid: str, mig_uuid: str) -> bool:
        return self.selects_gpu(parent_index, parent_uuid) or mig_uuid.lower() in self.mig_uuids

    def unknown(self, gpus: Iterable[tuple[int, str]], mig_uuids: Iterable[str]) -> list[str]:
        """Entries that name no device found, for a warning."""
        gpu_list = list(gpus)
        known_uuids = {uuid.lower() for _, uuid in gpu_list} | {uuid.lower() for uuid in mig_uuids}
        known_indices = {index for index, _ in gpu_list}
        missing = [str(i) for i in sorted(self.indices - known_indices)]
        return missing + sorted((self.gpu_uuids | self.mig_uuids) - known_uuids)


def parse_device_list(text: str, *, allow_mig: bool = True) -> DeviceList:
    """Parse a device list; ValueError names the entry that is neither an index nor a UUID."""
    words = [word.strip() for word in text.split(",")]
    if [word.lower() for word in words] == ["all"]:
        return DeviceList(everything=True)
    if words in ([""], ["none"], ["void"]):
        return DeviceList()
    indices: set[int] = set()
    gpu_uuids: set[str] = set()
    mig_uuids: set[str] = set()
    for word in words:
        if word.isdigit():
            indices.add(int(word))
        elif _GPU_UUID.match(word):
            gpu_uuids.add(word.lower())
        elif allow_mig and _MIG_UUID.match(word):
            mig_uuids.add(word.lower())
        else:
            kinds = "an index, GPU-UUID or MIG-UUID" if allow_mig else "an index or GPU-UUID"
            raise ValueError(f"{word!r} is not {kinds} (lists are all, none, void or CSV)")
    return DeviceList(False, frozenset(indices), frozenset(gpu_uuids), frozenset(mig_uuids))


def resolve_device_list(
    configured: str | None, environ: Mapping[str, str], env_name: str, *, allow_mig: bool = True
) -> tuple[DeviceList, str]:
    """The configured list, else the NVIDIA variable, else everything; with where it came from."""
    if configured is not None:
        return parse_device_list(configured, allow_mig=allow_mig), "config"
    if env_name in environ:
        return parse_device_list(environ[env_name], allow_mig=allow_mig), f"env {env_name}"
    return DeviceList(everything=True), "default"
