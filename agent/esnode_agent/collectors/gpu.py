"""GPU and MIG metrics from the GPU backend (NVML, simulated NVML, or none).

One series per GPU per field, and one per MIG device: a field the GPU does not support is absent.
A GPU that stops answering reports esnode_gpu_up=0 while the others carry on. In k8s_mode every
series also carries the Kubernetes resource name and the pod holding the device (empty when none
does); the pod map comes from a background refresher, never from the collection path. With
gpu_process_top_n above 0, each GPU's compute processes too (gpu_processes).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from esnode_agent.collectors.gpu_dcgm import DcgmWriter
from esnode_agent.collectors.gpu_processes import GpuProcessWriter, ShownProcess
from esnode_agent.collectors.gpu_specs import K8S, PLAIN
from esnode_agent.collectors.pod_energy import GpuShares, PodGpuEnergy, sm_weights, split_among
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.collector import STAGE_READ, NoDataError
from esnode_agent.cycle.samples import SampleSink
from esnode_agent.gpu.backend import (
    EventsUnsupportedError,
    GpuBackend,
    GpuDevice,
    GpuIdentity,
    GpuLostError,
    GpuProcess,
    GpuReading,
    MigReading,
    NullBackend,
)
from esnode_agent.gpu.events import XidCounter
from esnode_agent.gpu.open_backend import open_backend
from esnode_agent.gpu.visibility import (
    MIG_CONFIG_DEVICES_ENV,
    VISIBLE_DEVICES_ENV,
    DeviceList,
    resolve_device_list,
)
from esnode_agent.podresources.container_logs import ContainerLogNames
from esnode_agent.podresources.pod_ref import PodRef

if TYPE_CHECKING:
    from esnode_agent.podresources.client import PodResourcesRefresher

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
MIG_RESOURCE_PREFIX = "nvidia.com/mig-"
_NO_POD = PodRef("", "", "")


class GpuCollector:
    name = "gpu"
    stage = STAGE_READ  # node power sums esnode_gpu_power_watts and esnode_gpu_energy_joules_total

    def __init__(
        self,
        backend: GpuBackend,
        visible: DeviceList,
        mig_scope: DeviceList,
        *,
        enable_mig: bool = True,
        pods: PodResourcesRefresher | None = None,
        xids: XidCounter | None = None,
        k8s_mode: bool = False,
        dcgm: DcgmWriter | None = None,
        processes: GpuProcessWriter | None = None,
    ) -> None:
        self._backend = backend
        self._visible = visible
        self._mig_scope = mig_scope if enable_mig else DeviceList()
        self._devices = [d for d in backend.devices() if _may_show(visible, d)]
        self._pods = pods
        self._xids = xids
        self._families = K8S if k8s_mode else PLAIN
        self._k8s_mode = k8s_mode
        self._dcgm = dcgm
        self._processes = processes
        self._pod_energy = PodGpuEnergy() if pods is not None else None
        self._lost: dict[str, str] = {}  # uuid -> error, to log each loss once
        self._mig_mode: dict[str, bool | None] = {}  # uuid -> last known, for a lost GPU's info
        self._unknown_checked = False

    def collect(self, sink: SampleSink) -> None:
        reason = self._backend.unavailable_reason
        if reason is not None:
            raise NoDataError(reason)
        if not self._devices:
            raise NoDataError("no visible GPUs")
        holders = self._pods.holders() if self._pods else {}
        xids = self._xids.counts() if self._xids else {}
        seen_migs: list[str] = []
        shares: dict[str, GpuShares] = {}
        for device in self._devices:
            seen_migs += self._collect_device(sink, device, holders, xids, shares=shares)
        if self._pod_energy is not None:
            self._pod_energy.update(shares)
            self._pod_energy.add_to(sink, (pod for gpu in shares.values() for pod in gpu.weights))
        if not self._unknown_checked:
            self._warn_unknown(seen_migs)

    @property
    def devices(self) -> Sequence[GpuDevice]:
        """The GPUs this agent shows; the opt-in power capper acts on these and no others."""
        return self._devices

    def close(self) -> None:
        """Stops the background threads and releases the library (tests, shutdown)."""
        if self._pods:
            self._pods.stop()
        if self._xids:
            self._xids.stop()
        self._backend.close()

    def _collect_device(
        self,
        sink: SampleSink,
        device: GpuDevice,
        holders: Mapping[str, PodRef],
        xids: Mapping[tuple[str, int], int],
        *,
        shares: dict[str, GpuShares],
    ) -> list[str]:
        """Writes one GPU's series and notes its pods' energy shares; returns its MIG devices' UUIDs."""
        identity = device.identity
        whole = self._visible.selects_gpu(identity.index, identity.uuid)
        labels = {
            "gpu": str(identity.index),
            "uuid": identity.uuid,
            **self._k8s(GPU_RESOURCE, holders, identity.uuid, str(identity.index)),
        }
        try:
            reading, migs, shown_migs = self._read(device, whole)
            processes = self._read_processes(device, reading, shown_migs)
        except GpuLostError as exc:
            self._mark_lost(identity.uuid, identity.index, str(exc))
            if whole:
                self._add_identity(sink, device, self._mig_mode.get(identity.uuid), labels, up=False)
                self._add_xids(sink, identity.uuid, xids, labels)
            return []
        if reading is None:
            return [m.uuid for m in migs]
        self._mark_answering(identity.uuid, identity.index)
        self._mig_mode[identity.uuid] = reading.mig_mode_enabled
        self._add_identity(sink, device, reading.mig_mode_enabled, labels, up=True)
        self._add_reading(sink, reading, labels)
        self._add_xids(sink, identity.uuid, xids, labels)
        for mig in shown_migs:
            self._add_mig(sink, mig, labels["gpu"], identity.uuid, holders)
        self._add_dcgm(sink, identity, reading, shown_migs, holders)
        shown = self._add_processes(sink, identity, processes)
        gpu_shares = self._gpu_shares(identity, reading, shown_migs, shown)
        if gpu_shares is not None:
            shares[identity.uuid] = gpu_shares
        return [m.uuid for m in migs]

    def _read_processes(
        self, device: GpuDevice, reading: GpuReading | None, migs: Sequence[MigReading]
    ) -> list[GpuProcess] | None:
        """The GPU's processes; None when not read: series off, or a GPU in MIG mode whose MIG
        devices are not read (its processes are listed per MIG device), rather than a made-up 0."""
        if self._processes is None or reading is None:
            return None
        identity = device.identity
        if reading.mig_mode_enabled and not self._mig_scope.selects_gpu(identity.index, identity.uuid):
            return None
        return device.processes(migs)

    def _add_processes(
        self, sink: SampleSink, identity: GpuIdentity, processes: Sequence[GpuProcess] | None
    ) -> list[ShownProcess]:
        if self._processes is None or processes is None:
            return []
        return self._processes.add(sink, identity, processes, self._pods.sharers() if self._pods else {})

    def _gpu_shares(
        self,
        identity: GpuIdentity,
        reading: GpuReading,
        migs: Sequence[MigReading],
        processes: Sequence[ShownProcess],
    ) -> GpuShares | None:
        """Who gets which weight of this GPU's energy (pod_energy's rule); None without pods or energy."""
        if self._pods is None or reading.energy_joules_total is None:
            return None
        sharers = self._pods.sharers()
        weights: dict[PodRef, float] = {}
        if reading.mig_mode_enabled:
            for mig in migs:
                busy = mig.activity_ratio.get("graphics_engine", 1.0)
                split_among(sharers.get(mig.uuid, ()), (mig.sm_count or 1) * busy, weights)
        else:
            whole = sharers.get(identity.uuid) or sharers.get(str(identity.index), ())
            by_sm = sm_weights(whole, [(p.names, p.process.sm_utilization_ratio) for p in processes])
            if by_sm is None:
                split_among(whole, 1.0, weights)
            else:
                weights.update(by_sm)
        return GpuShares(reading.energy_joules_total, weights)

    def _read(
        self, device: GpuDevice, whole: bool
    ) -> tuple[GpuReading | None, list[MigReading], list[MigReading]]:
        """(reading, its MIG devices, those shown); no reading when nothing of the GPU is shown.

        A GPU not listed itself is read only when one of its MIG devices is listed.
        """
        identity = device.identity
        if whole:
            reading = device.read()
            migs = self._mig_readings(device) if reading.mig_mode_enabled else []
            return reading, migs, migs
        migs = self._mig_readings(device)
        shown = [m for m in migs if self._visible.selects_mig(identity.index, identity.uuid, m.uuid)]
        return (device.read() if shown else None), migs, shown

    def _mig_readings(self, device: GpuDevice) -> list[MigReading]:
        identity = device.identity
        if not self._mig_scope.selects_gpu(identity.index, identity.uuid):
            return []
        return device.mig_instances()

    def _k8s(self, resource: str, holders: Mapping[str, PodRef], *device_ids: str) -> dict[str, str]:
        if not self._k8s_mode:
            return {}
        pod = _holder(holders, *device_ids)
        return {"resource": resource, "namespace": pod.namespace, "pod": pod.pod, "container": pod.container}

    def _add_identity(
        self, sink: SampleSink, device: GpuDevice, mig_mode: bool | None, labels: dict[str, str], *, up: bool
    ) -> None:
        identity = device.identity
        mode = "unsupported" if mig_mode is None else "enabled" if mig_mode else "disabled"
        sink.add(
            self._families.info,
            1,
            model=identity.model,
            pci_bus_id=identity.pci_bus_id,
            driver_version=self._backend.driver_version,
            serial=identity.serial or "",
            mig_mode=mode,
            **labels,
        )
        sink.add(self._families.up, 1 if up else 0, **labels)

    def _add_reading(self, sink: SampleSink, reading: GpuReading, labels: dict[str, str]) -> None:
        f = self._families
        scalars = (
            (f.utilization, reading.utilization_percent),
            (f.memory_used, reading.memory_used_bytes),
            (f.memory_total, reading.memory_total_bytes),
            (f.temperature, reading.temperature_celsius),
            (f.power, reading.power_watts),
            (f.power_limit, reading.power_limit_watts),
            (f.energy, reading.energy_joules_total),
            (f.fan, reading.fan_speed_ratio),
            (f.performance_state, reading.performance_state),
            (f.retired_pages_pending, _number(reading.retired_pages_pending)),
            (f.remapped_rows_pending, _number(reading.remapped_rows_pending)),
            (f.remapped_rows_failed, _number(reading.remapped_rows_failed)),
            (f.memory_temperature, reading.memory_temperature_celsius),
            (f.power_limit_min, reading.power_limit_min_watts),
            (f.power_limit_max, reading.power_limit_max_watts),
            (f.power_limit_default, reading.power_limit_default_watts),
            (f.pcie_replays, reading.pcie_replays_total),
        )
        for spec, value in scalars:
            if value is not None:
                sink.add(spec, value, **labels)
        for clock, hertz in reading.clock_hertz.items():
            sink.add(f.clock, hertz, clock=clock, **labels)
        for reason, active in reading.throttle_reasons.items():
            sink.add(f.throttle, 1 if active else 0, reason=reason, **labels)
        for kind, errors in reading.ecc_errors_total.items():
            sink.add(f.ecc, errors, type=kind, **labels)
        for direction, rate in reading.pcie_bytes_per_second.items():
            sink.add(f.pcie, rate, direction=direction, **labels)
        for link in reading.nvlink:
            sink.add(f.nvlink_rx, link.rx_bytes_total, link=str(link.link), **labels)
            sink.add(f.nvlink_tx, link.tx_bytes_total, link=str(link.link), **labels)
        for cause, pages in reading.retired_pages.items():
            sink.add(f.retired_pages, pages, cause=cause, **labels)
        for kind, rows in reading.remapped_rows.items():
            sink.add(f.remapped_rows, rows, type=kind, **labels)
        for kind, errors in reading.nvlink_errors_total.items():
            sink.add(f.nvlink_errors, errors, type=kind, **labels)
        for activity, ratio in reading.activity_ratio.items():
            sink.add(f.activity, ratio, activity=activity, **labels)

    def _add_dcgm(
        self,
        sink: SampleSink,
        identity: GpuIdentity,
        reading: GpuReading,
        migs: Sequence[MigReading],
        holders: Mapping[str, PodRef],
    ) -> None:
        """The DCGM-named copies of this GPU's and its MIG devices' series (gpu_dcgm_compat)."""
        dcgm = self._dcgm
        if dcgm is None:
            return
        last_xid = self._xids.last().get(identity.uuid, 0) if self._xids else None
        pod = _holder(holders, identity.uuid, str(identity.index))
        dcgm.add_gpu(sink, identity, reading, pod, last_xid)
        for mig in migs:
            dcgm.add_mig(sink, identity, mig, _holder(holders, mig.uuid))

    def _add_xids(
        self, sink: SampleSink, uuid: str, xids: Mapping[tuple[str, int], int], labels: dict[str, str]
    ) -> None:
        for (gpu_uuid, xid), count in sorted(xids.items()):
            if gpu_uuid == uuid:
                sink.add(self._families.xid, count, xid=str(xid), **labels)

    def _add_mig(
        self, sink: SampleSink, mig: MigReading, gpu: str, uuid: str, holders: Mapping[str, PodRef]
    ) -> None:
        f = self._families
        labels = {
            "gpu": gpu,
            "uuid": uuid,
            "mig_uuid": mig.uuid,
            "gi_id": str(mig.gpu_instance_id),
            "profile": mig.profile,
            **self._k8s(MIG_RESOURCE_PREFIX + mig.profile, holders, mig.uuid),
        }
        sink.add(f.mig_info, 1, ci_id=str(mig.compute_instance_id), **labels)
        for spec, value in (
            (f.mig_memory_used, mig.memory_used_bytes),
            (f.mig_memory_total, mig.memory_total_bytes),
            (f.mig_sm_count, mig.sm_count),
        ):
            if value is not None:
                sink.add(spec, value, **labels)
        for activity, ratio in mig.activity_ratio.items():
            sink.add(f.mig_activity, ratio, activity=activity, **labels)

    def _mark_lost(self, uuid: str, index: int, error: str) -> None:
        if self._lost.get(uuid) != error:
            log.warning("GPU lost", extra={"gpu": index, "uuid": uuid, "error": error})
            self._lost[uuid] = error

    def _mark_answering(self, uuid: str, index: int) -> None:
        if self._lost.pop(uuid, None) is not None:
            log.info("GPU answering again", extra={"gpu": index, "uuid": uuid})

    def _warn_unknown(self, mig_uuids: Sequence[str]) -> None:
        gpus = [(d.identity.index, d.identity.uuid) for d in self._backend.devices()]
        for name, device_list in (
            ("gpu_visible_devices", self._visible),
            ("mig_config_devices", self._mig_scope),
        ):
            unknown = device_list.unknown(gpus, mig_uuids)
            if unknown:
                log.warning(
                    "device list names devices not found",
                    extra={"setting": name, "unknown": ",".join(unknown)},
                )
        self._unknown_checked = True


def _holder(holders: Mapping[str, PodRef], *device_ids: str) -> PodRef:
    return next((holders[d] for d in device_ids if d in holders), _NO_POD)


def _may_show(visible: DeviceList, device: GpuDevice) -> bool:
    """Whether the GPU, or one of its MIG devices (known only once read), can be visible."""
    return visible.selects_gpu(device.identity.index, device.identity.uuid) or bool(visible.mig_uuids)


def _number(flag: bool | None) -> float | None:
    return None if flag is None else float(flag)


def build_gpu_collector(config: AgentConfig, environ: Mapping[str, str] = os.environ) -> GpuCollector | None:
    """Opens the configured backend and starts the background threads the settings ask for.

    None where no NVIDIA driver is installed: a CPU-only node has no GPU collector, rather than
    one failing every cycle. A driver that fails to open keeps the collector, reporting success 0.
    """
    backend = open_backend(config.gpu_backend)
    if isinstance(backend, NullBackend) and backend.library_missing:
        return None
    visible = _device_list(config.gpu_visible_devices, environ, VISIBLE_DEVICES_ENV, allow_mig=True)
    mig_scope = _device_list(config.mig_config_devices, environ, MIG_CONFIG_DEVICES_ENV, allow_mig=False)
    pods = None
    if config.k8s_mode:
        # gRPC adds ~10 MiB of resident memory: loaded only where pods are attributed.
        from esnode_agent.podresources.client import PodResourcesRefresher  # noqa: PLC0415

        pods = PodResourcesRefresher(config.pod_resources_socket, config.pod_resources_refresh_seconds)
        pods.start()
    return GpuCollector(
        backend,
        visible,
        mig_scope,
        enable_mig=config.enable_gpu_mig,
        pods=pods,
        xids=_xid_counter(backend, visible) if config.enable_gpu_events else None,
        k8s_mode=config.k8s_mode,
        dcgm=(
            DcgmWriter(_hostname(config, environ), backend.driver_version, k8s_mode=config.k8s_mode)
            if config.gpu_dcgm_compat
            else None
        ),
        processes=_process_writer(config),
    )


def _process_writer(config: AgentConfig) -> GpuProcessWriter | None:
    """Per-process series unless gpu_process_top_n is 0; names from the host's container log links."""
    if config.gpu_process_top_n == 0:
        return None
    logs = ContainerLogNames(config.path_rootfs, config.pod_resources_refresh_seconds)
    return GpuProcessWriter(config.gpu_process_top_n, config.path_procfs, logs)


def _hostname(config: AgentConfig, environ: Mapping[str, str]) -> str:
    """What dcgm-exporter puts in Hostname: the node's name in a pod, else the host name."""
    return config.node_name or environ.get("NODE_NAME") or socket.gethostname()


def _device_list(
    configured: str | None, environ: Mapping[str, str], env_name: str, *, allow_mig: bool
) -> DeviceList:
    try:
        device_list, source = resolve_device_list(configured, environ, env_name, allow_mig=allow_mig)
    except ValueError as exc:  # only the environment can be malformed: the config was validated
        log.warning(
            "ignoring malformed device list; no GPUs selected", extra={"env": env_name, "error": str(exc)}
        )
        return DeviceList()
    log.debug("GPU device list", extra={"env": env_name, "source": source})
    return device_list


def _xid_counter(backend: GpuBackend, visible: DeviceList) -> XidCounter | None:
    devices = [d for d in backend.devices() if _may_show(visible, d)]
    try:
        counter_ = XidCounter(backend.xid_events(devices))
    except EventsUnsupportedError as exc:
        log.info("GPU XID events off", extra={"reason": str(exc)})
        return None
    counter_.start()
    return counter_
