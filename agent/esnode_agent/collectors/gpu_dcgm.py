"""dcgm-exporter-compatible GPU series, opt-in with ``gpu_dcgm_compat``.

The families of dcgm-exporter's default counter set (etc/default-counters.csv), with its names,
units (MHz, C, W, mJ, %, MiB) and label names (gpu, UUID, pci_bus_id, device, modelName,
Hostname, DCGM_FI_DRIVER_VERSION; container, namespace, pod in k8s_mode; GPU_I_PROFILE and GPU_I_ID
on MIG series), so its dashboards, alerts and autoscaling rules keep working. Every value comes
from the reading the esnode_* series are written from: no NVML call of its own. docs/gpu.md has
the mapping table and what differs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from esnode_agent.cycle.samples import MetricSpec, MetricType, SampleSink
from esnode_agent.gpu.backend import GpuIdentity, GpuReading, MigReading
from esnode_agent.podresources.pod_ref import PodRef

GPU_LABELS = ("gpu", "UUID", "pci_bus_id", "device", "modelName", "Hostname", "DCGM_FI_DRIVER_VERSION")
MIG_LABELS = ("GPU_I_PROFILE", "GPU_I_ID")  # empty on whole-GPU series, i.e. absent to Prometheus
K8S_LABELS = ("container", "namespace", "pod")
MIB = 2**20
MHZ = 1e6
KIB = 1024

Value = Callable[[GpuReading], float | None]


@dataclass(frozen=True, slots=True)
class DcgmFamily:
    spec: MetricSpec
    value: Value


def _nvlink_kib(reading: GpuReading) -> float | None:
    if not reading.nvlink:
        return None
    return sum(link.rx_bytes_total + link.tx_bytes_total for link in reading.nvlink) / KIB


def _scaled(get: Value, scale: float) -> Value:
    def value(reading: GpuReading) -> float | None:
        raw = get(reading)
        return None if raw is None else raw * scale

    return value


def _flag(get: Callable[[GpuReading], bool | None]) -> Value:
    def value(reading: GpuReading) -> float | None:
        raw = get(reading)
        return None if raw is None else float(raw)

    return value


# (name, type, help as dcgm-exporter's CSV words it, value from the reading)
_TABLE: tuple[tuple[str, MetricType, str, Value], ...] = (
    (
        "DCGM_FI_DEV_SM_CLOCK",
        MetricType.GAUGE,
        "SM clock frequency (in MHz).",
        _scaled(lambda r: r.clock_hertz.get("sm"), 1 / MHZ),
    ),
    (
        "DCGM_FI_DEV_MEM_CLOCK",
        MetricType.GAUGE,
        "Memory clock frequency (in MHz).",
        _scaled(lambda r: r.clock_hertz.get("memory"), 1 / MHZ),
    ),
    (
        "DCGM_FI_DEV_MEMORY_TEMP",
        MetricType.GAUGE,
        "Memory temperature (in C).",
        lambda r: r.memory_temperature_celsius,
    ),
    ("DCGM_FI_DEV_GPU_TEMP", MetricType.GAUGE, "GPU temperature (in C).", lambda r: r.temperature_celsius),
    ("DCGM_FI_DEV_POWER_USAGE", MetricType.GAUGE, "Power draw (in W).", lambda r: r.power_watts),
    (
        "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
        MetricType.COUNTER,
        "Total energy consumption since boot (in mJ).",
        _scaled(lambda r: r.energy_joules_total, 1000),
    ),
    (
        "DCGM_FI_DEV_PCIE_REPLAY_COUNTER",
        MetricType.COUNTER,
        "Total number of PCIe retries.",
        lambda r: r.pcie_replays_total,
    ),
    ("DCGM_FI_DEV_GPU_UTIL", MetricType.GAUGE, "GPU utilization (in %).", lambda r: r.utilization_percent),
    (
        "DCGM_FI_DEV_MEM_COPY_UTIL",
        MetricType.GAUGE,
        "Memory utilization (in %).",
        lambda r: r.memory_utilization_percent,
    ),
    (
        "DCGM_FI_DEV_FB_FREE",
        MetricType.GAUGE,
        "Framebuffer memory free (in MiB).",
        _scaled(lambda r: r.memory_free_bytes, 1 / MIB),
    ),
    (
        "DCGM_FI_DEV_FB_USED",
        MetricType.GAUGE,
        "Framebuffer memory used (in MiB).",
        _scaled(lambda r: r.memory_used_bytes, 1 / MIB),
    ),
    (
        "DCGM_FI_DEV_FB_RESERVED",
        MetricType.GAUGE,
        "Framebuffer memory reserved (in MiB).",
        _scaled(lambda r: r.memory_reserved_bytes, 1 / MIB),
    ),
    (
        "DCGM_FI_DEV_NVLINK_BANDWIDTH_TOTAL",
        MetricType.COUNTER,
        "Total number of NVLink bandwidth counters for all lanes (KiB received and sent).",
        _nvlink_kib,
    ),
    (
        "DCGM_FI_DEV_UNCORRECTABLE_REMAPPED_ROWS",
        MetricType.COUNTER,
        "Number of remapped rows for uncorrectable errors",
        lambda r: r.remapped_rows.get("uncorrected"),
    ),
    (
        "DCGM_FI_DEV_CORRECTABLE_REMAPPED_ROWS",
        MetricType.COUNTER,
        "Number of remapped rows for correctable errors",
        lambda r: r.remapped_rows.get("corrected"),
    ),
    (
        "DCGM_FI_DEV_ROW_REMAP_FAILURE",
        MetricType.GAUGE,
        "Whether remapping of rows has failed",
        _flag(lambda r: r.remapped_rows_failed),
    ),
)
# DCGM's profiling fields, from GPM: esnode activity -> (name, help as DCGM words it).
_PROF = {
    "graphics_engine": ("DCGM_FI_PROF_GR_ENGINE_ACTIVE", "Ratio of time the graphics engine is active."),
    "sm": ("DCGM_FI_PROF_SM_ACTIVE", "The ratio of cycles an SM has at least 1 warp assigned."),
    "sm_occupancy": ("DCGM_FI_PROF_SM_OCCUPANCY", "The ratio of number of warps resident on an SM."),
    "tensor": ("DCGM_FI_PROF_PIPE_TENSOR_ACTIVE", "Ratio of cycles the tensor (HMMA) pipe is active."),
    "dram": (
        "DCGM_FI_PROF_DRAM_ACTIVE",
        "Ratio of cycles the device memory interface is active sending or receiving data.",
    ),
}
_XID = ("DCGM_FI_DEV_XID_ERRORS", "Value of the last XID error encountered.")
_MIG_MEMORY = ("DCGM_FI_DEV_FB_FREE", "DCGM_FI_DEV_FB_USED")


@dataclass(frozen=True, slots=True)
class DcgmFamilies:
    gpu: tuple[DcgmFamily, ...]
    xid: MetricSpec
    prof: Mapping[str, MetricSpec]  # esnode activity -> DCGM_FI_PROF_* family
    by_name: Mapping[str, MetricSpec]


def dcgm_families(k8s_mode: bool) -> DcgmFamilies:
    labels = (*GPU_LABELS, *MIG_LABELS, *(K8S_LABELS if k8s_mode else ()))
    gpu = tuple(
        DcgmFamily(MetricSpec(name, text, kind, labels, foreign_name=True), value)
        for name, kind, text, value in _TABLE
    )
    xid = MetricSpec(_XID[0], _XID[1], MetricType.GAUGE, labels)
    prof = {
        activity: MetricSpec(name, text, MetricType.GAUGE, labels) for activity, (name, text) in _PROF.items()
    }
    return DcgmFamilies(gpu, xid, prof, {f.spec.name: f.spec for f in gpu})


class DcgmWriter:
    """Writes one GPU's (or MIG device's) DCGM-named series from its esnode reading."""

    def __init__(self, hostname: str, driver_version: str, *, k8s_mode: bool) -> None:
        self._families = dcgm_families(k8s_mode)
        self._hostname = hostname
        self._driver_version = driver_version
        self._k8s_mode = k8s_mode

    def add_gpu(
        self,
        sink: SampleSink,
        identity: GpuIdentity,
        reading: GpuReading,
        pod: PodRef,
        last_xid: int | None,
    ) -> None:
        labels = self._labels(identity, pod)
        for family in self._families.gpu:
            value = family.value(reading)
            if value is not None:
                sink.add(family.spec, value, **labels)
        if last_xid is not None:
            sink.add(self._families.xid, last_xid, **labels)
        self._add_prof(sink, reading.activity_ratio, labels)

    def add_mig(self, sink: SampleSink, identity: GpuIdentity, mig: MigReading, pod: PodRef) -> None:
        labels = self._labels(identity, pod, mig)
        used, total = mig.memory_used_bytes, mig.memory_total_bytes
        free = None if used is None or total is None else total - used
        for name, value in zip(_MIG_MEMORY, (free, used), strict=True):
            if value is not None:
                sink.add(self._families.by_name[name], value / MIB, **labels)
        self._add_prof(sink, mig.activity_ratio, labels)

    def _add_prof(self, sink: SampleSink, activity: Mapping[str, float], labels: dict[str, str]) -> None:
        for name, ratio in activity.items():
            sink.add(self._families.prof[name], ratio, **labels)

    def _labels(self, identity: GpuIdentity, pod: PodRef, mig: MigReading | None = None) -> dict[str, str]:
        labels = {
            "gpu": str(identity.index),
            "UUID": identity.uuid,
            "pci_bus_id": identity.pci_bus_id,
            "device": f"nvidia{identity.index}",
            "modelName": identity.model,
            "Hostname": self._hostname,
            "DCGM_FI_DRIVER_VERSION": self._driver_version,
            "GPU_I_PROFILE": mig.profile if mig else "",
            "GPU_I_ID": str(mig.gpu_instance_id) if mig else "",
        }
        if self._k8s_mode:
            labels.update(container=pod.container, namespace=pod.namespace, pod=pod.pod)
        return labels
