"""The GPU and MIG metric families: declared here, apart from the collector, so that readers of
GPU series (node power, degradation, the status view, node reports) import no GPU library.
"""

from __future__ import annotations

from dataclasses import dataclass

from esnode_agent.cycle.samples import MetricSpec, counter, gauge

# Extra labels on every GPU and MIG series in k8s_mode.
K8S_LABELS = ("resource", "namespace", "pod", "container")


@dataclass(frozen=True, slots=True)
class GpuFamilies:
    """Every GPU and MIG metric family, for one set of extra labels (none, or K8S_LABELS)."""

    info: MetricSpec
    up: MetricSpec
    utilization: MetricSpec
    memory_used: MetricSpec
    memory_total: MetricSpec
    temperature: MetricSpec
    power: MetricSpec
    power_limit: MetricSpec
    energy: MetricSpec
    clock: MetricSpec
    fan: MetricSpec
    performance_state: MetricSpec
    throttle: MetricSpec
    ecc: MetricSpec
    pcie: MetricSpec
    nvlink_rx: MetricSpec
    nvlink_tx: MetricSpec
    retired_pages: MetricSpec
    retired_pages_pending: MetricSpec
    remapped_rows: MetricSpec
    remapped_rows_pending: MetricSpec
    remapped_rows_failed: MetricSpec
    xid: MetricSpec
    mig_info: MetricSpec
    mig_memory_used: MetricSpec
    mig_memory_total: MetricSpec
    mig_sm_count: MetricSpec
    # GPM activity, power limit range, memory temperature, PCIe replays, NVLink errors.
    activity: MetricSpec
    mig_activity: MetricSpec
    memory_temperature: MetricSpec
    power_limit_min: MetricSpec
    power_limit_max: MetricSpec
    power_limit_default: MetricSpec
    pcie_replays: MetricSpec
    nvlink_errors: MetricSpec


def families(extra: tuple[str, ...]) -> GpuFamilies:
    def g(name: str, text: str, *labels: str) -> MetricSpec:
        return gauge(name, text, "gpu", "uuid", *labels, *extra)

    def c(name: str, text: str, *labels: str) -> MetricSpec:
        return counter(name, text, "gpu", "uuid", *labels, *extra)

    def mig(name: str, text: str, *labels: str) -> MetricSpec:
        return gauge(name, text, "gpu", "uuid", "mig_uuid", "gi_id", *labels, "profile", *extra)

    return GpuFamilies(
        info=g(
            "esnode_gpu_info",
            "GPU identity from NVML, value 1; join on uuid. mig_mode is enabled, disabled "
            "or unsupported; serial is empty where the board has none.",
            "model",
            "pci_bus_id",
            "driver_version",
            "serial",
            "mig_mode",
        ),
        up=g(
            "esnode_gpu_up",
            "1 if the GPU answered NVML this cycle; 0 if it is lost (fell off the bus, needs a "
            "reset), when its other series are absent.",
        ),
        utilization=g(
            "esnode_gpu_utilization_percent",
            "Percent of the last sample period in which a kernel ran "
            "(NVML utilization.gpu, 0..100); absent in MIG mode, where NVML does not measure it.",
        ),
        memory_used=g(
            "esnode_gpu_memory_used_bytes",
            "Framebuffer memory in use, without driver-reserved memory (as nvidia-smi's memory.used).",
        ),
        memory_total=g("esnode_gpu_memory_total_bytes", "Framebuffer memory size."),
        temperature=g("esnode_gpu_temperature_celsius", "GPU die temperature."),
        power=g(
            "esnode_gpu_power_watts",
            "Power draw from NVML (a 1 s average on Ampere and later). For averages "
            "use rate(esnode_gpu_energy_joules_total[5m]) or avg_over_time() of this gauge.",
        ),
        power_limit=g(
            "esnode_gpu_power_limit_watts", "Enforced power limit (the lowest of all limits in force)."
        ),
        energy=c(
            "esnode_gpu_energy_joules_total",
            "Energy since the driver loaded, from NVML's total energy counter "
            "(Volta and later); absent where unsupported, never integrated from power.",
        ),
        clock=g("esnode_gpu_clock_hertz", "Current clock frequency.", "clock"),
        fan=g(
            "esnode_gpu_fan_speed_ratio",
            "Intended fan speed as a fraction of its maximum; absent on boards "
            "without a fan of their own (SXM).",
        ),
        performance_state=g(
            "esnode_gpu_performance_state", "Performance state: 0 (P0, maximum) to 15 (minimum)."
        ),
        throttle=g(
            "esnode_gpu_throttle_reason",
            "1 while the reason holds clocks down (NVML clock event reasons), "
            "else 0. thermal is the hardware thermal slowdown, power the software power cap.",
            "reason",
        ),
        ecc=c(
            "esnode_gpu_ecc_errors_total",
            "ECC memory errors since the driver loaded (NVML volatile counters: "
            "they restart at a driver reload or GPU reset); absent when ECC is off.",
            "type",
        ),
        pcie=g(
            "esnode_gpu_pcie_throughput_bytes_per_second",
            "PCIe throughput over NVML's 20 ms sample.",
            "direction",
        ),
        nvlink_rx=c(
            "esnode_gpu_nvlink_rx_bytes_total",
            "Data received over the NVLink link since the driver loaded, without protocol overhead.",
            "link",
        ),
        nvlink_tx=c(
            "esnode_gpu_nvlink_tx_bytes_total",
            "Data sent over the NVLink link since the driver loaded, without protocol overhead.",
            "link",
        ),
        retired_pages=g(
            "esnode_gpu_retired_pages", "Memory pages retired for this cause (GPUs before Ampere).", "cause"
        ),
        retired_pages_pending=g(
            "esnode_gpu_retired_pages_pending",
            "1 if a page retirement waits for the next driver reload, else 0 (GPUs before Ampere).",
        ),
        remapped_rows=g(
            "esnode_gpu_remapped_rows",
            "Memory rows remapped after errors of this type (Ampere and later).",
            "type",
        ),
        remapped_rows_pending=g(
            "esnode_gpu_remapped_rows_pending", "1 if a row remapping waits for a GPU reset, else 0."
        ),
        remapped_rows_failed=g(
            "esnode_gpu_remapped_rows_failed", "1 if a row remapping failed (the GPU needs service), else 0."
        ),
        xid=c(
            "esnode_gpu_xid_errors_total",
            "XID critical errors the agent's NVML event loop saw since it started; "
            "best effort, a burst can lose events.",
            "xid",
        ),
        mig_info=mig(
            "esnode_mig_info", "MIG device identity, value 1; gpu and uuid name the parent GPU.", "ci_id"
        ),
        mig_memory_used=mig(
            "esnode_mig_memory_used_bytes", "Memory in use in the MIG device's GPU instance."
        ),
        mig_memory_total=mig("esnode_mig_memory_total_bytes", "Memory of the MIG device's GPU instance."),
        mig_sm_count=mig("esnode_mig_sm_count", "Streaming multiprocessors (SMs) of the MIG device."),
        activity=g(
            "esnode_gpu_activity_ratio",
            "Fraction of the last collection cycle the GPU's engine was active, from NVML GPM (Hopper "
            "and later): graphics_engine, sm (SMs with a warp), sm_occupancy (resident warps of the "
            "maximum), tensor (tensor pipes), dram (memory bandwidth of the maximum).",
            "activity",
        ),
        mig_activity=mig(
            "esnode_mig_activity_ratio",
            "The MIG device's GPU instance's GPM activity over the last cycle (see esnode_gpu_activity_ratio).",
            "activity",
        ),
        memory_temperature=g("esnode_gpu_memory_temperature_celsius", "GPU memory (HBM) temperature."),
        power_limit_min=g("esnode_gpu_power_limit_min_watts", "Lowest power limit the GPU accepts."),
        power_limit_max=g("esnode_gpu_power_limit_max_watts", "Highest power limit the GPU accepts."),
        power_limit_default=g("esnode_gpu_power_limit_default_watts", "The GPU's default power limit."),
        pcie_replays=c(
            "esnode_gpu_pcie_replays_total",
            "PCIe packets the GPU resent after link errors (NVML replay counter).",
        ),
        nvlink_errors=c(
            "esnode_gpu_nvlink_errors_total",
            "NVLink errors over all links since the driver loaded: crc (data CRC), replay, recovery.",
            "type",
        ),
    )


# Both sets share names and differ in labels: lookups by name (SampleIndex) serve either.
PLAIN = families(())
K8S = families(K8S_LABELS)
