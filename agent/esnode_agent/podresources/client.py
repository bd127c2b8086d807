"""Which pod holds which GPU, refreshed in the background from the kubelet's pod-resources API.

A thread calls ``v1.PodResourcesLister/List`` every ``refresh_seconds`` and swaps in a new
immutable device -> holder map; collectors read the latest map and never wait on the kubelet.
A missing socket turns attribution off with one log line; it turns back on when the socket appears.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import grpc  # type: ignore[import-untyped]

from esnode_agent.podresources import api_pb2, api_pb2_grpc
from esnode_agent.podresources.pod_ref import PodRef

log = logging.getLogger(__name__)

NVIDIA_RESOURCE_PREFIX = "nvidia.com/"
RPC_TIMEOUT_SECONDS = 5.0
MAX_MESSAGE_BYTES = 16 * 2**20  # the kubelet's own limit for this API
_REPLICA_SUFFIX = re.compile(r"::\d+$")  # time-sliced GPUs are advertised as GPU-<uuid>::<replica>


def sharers_from_response(response: api_pb2.ListPodResourcesResponse) -> dict[str, tuple[PodRef, ...]]:
    """Device ID (GPU or MIG UUID, or index) -> every container holding it, sorted (several for a
    time-sliced GPU), for NVIDIA resources only."""
    holders: dict[str, set[tuple[str, str, str]]] = {}
    for pod in response.pod_resources:
        for container in pod.containers:
            for devices in container.devices:
                if not devices.resource_name.startswith(NVIDIA_RESOURCE_PREFIX):
                    continue
                for device_id in devices.device_ids:
                    key = _REPLICA_SUFFIX.sub("", device_id)
                    holders.setdefault(key, set()).add((pod.namespace, pod.name, container.name))
    return {device: tuple(PodRef(*ref) for ref in sorted(refs)) for device, refs in holders.items()}


def holders_from_response(response: api_pb2.ListPodResourcesResponse) -> dict[str, PodRef]:
    """Device ID -> its holder; a shared device's holders joined with commas in each field."""
    return {device: _joined(refs) for device, refs in sharers_from_response(response).items()}


def _joined(refs: tuple[PodRef, ...]) -> PodRef:
    fields = ((ref.namespace, ref.pod, ref.container) for ref in refs)
    return PodRef(*(",".join(parts) for parts in zip(*fields, strict=True)))


class PodResourcesRefresher:
    """Keeps the latest device -> holder map; its thread is the only caller of the kubelet."""

    def __init__(self, socket_path: Path, refresh_seconds: float) -> None:
        self._socket_path = socket_path
        self._refresh_seconds = refresh_seconds
        self._holders: Mapping[str, PodRef] = MappingProxyType({})
        self._sharers: Mapping[str, tuple[PodRef, ...]] = MappingProxyType({})
        self._channel: Any = None
        self._state: str | None = None  # "absent", "failing" or "on": logged only when it changes
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-resources", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=RPC_TIMEOUT_SECONDS + 1)
        self._close_channel()

    def holders(self) -> Mapping[str, PodRef]:
        return self._holders

    def sharers(self) -> Mapping[str, tuple[PodRef, ...]]:
        """Device ID -> each container holding it, for apportioning a shared GPU's energy."""
        return self._sharers

    def refresh(self) -> bool:
        """One List call; True when the map was replaced. The last good map stays on failure."""
        if not self._socket_path.exists():
            self._close_channel()
            self._set_state("absent", logging.INFO, "pod-resources socket absent; pod attribution off")
            return False
        try:
            response = self._stub().List(api_pb2.ListPodResourcesRequest(), timeout=RPC_TIMEOUT_SECONDS)
        except grpc.RpcError as exc:
            self._close_channel()
            self._set_state("failing", logging.WARNING, "pod-resources List failed", error=str(exc.code()))
            return False
        sharers = sharers_from_response(response)
        self._holders = MappingProxyType({device: _joined(refs) for device, refs in sharers.items()})
        self._sharers = MappingProxyType(sharers)
        self._set_state("on", logging.INFO, "pod attribution on", devices=len(self._holders))
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self.refresh()
            self._stop.wait(self._refresh_seconds)

    def _stub(self) -> Any:
        if self._channel is None:
            self._channel = grpc.insecure_channel(
                f"unix://{self._socket_path.absolute()}",
                options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)],
            )
        return api_pb2_grpc.PodResourcesListerStub(self._channel)  # type: ignore[no-untyped-call]

    def _close_channel(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def _set_state(self, state: str, level: int, message: str, **fields: object) -> None:
        if state != self._state:
            log.log(level, message, extra={"socket": str(self._socket_path), **fields})
            self._state = state
