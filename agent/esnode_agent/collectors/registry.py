"""Collector registry: which collectors a config turns on, built in one place."""

from __future__ import annotations

from esnode_agent.collectors.cpu import CpuCollector
from esnode_agent.collectors.degradation import DegradationCollector, Thresholds
from esnode_agent.collectors.diskstats import DiskStatsCollector
from esnode_agent.collectors.efficiency import efficiency_collectors
from esnode_agent.collectors.envelope import EnvelopeCollector, EnvelopeHolder
from esnode_agent.collectors.filesystem import FilesystemCollector
from esnode_agent.collectors.gpu import build_gpu_collector
from esnode_agent.collectors.hwmon import HwmonCollector
from esnode_agent.collectors.memory import MemoryCollector
from esnode_agent.collectors.network import NetworkCollector
from esnode_agent.collectors.node_info import NodeInfoCollector
from esnode_agent.collectors.node_power import NodePowerCollector
from esnode_agent.collectors.rapl import RaplCollector
from esnode_agent.collectors.textfile import TextfileCollector
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.collector import Collector


def build_collectors(config: AgentConfig) -> list[Collector]:
    collectors: list[Collector] = []
    if config.enable_power:
        collectors += [
            RaplCollector(config.path_sysfs),
            HwmonCollector(config.path_sysfs),
            NodePowerCollector(config.node_power_sensor),
        ]
    if config.node_power_envelope_watts is not None or config.fleet:  # a fleet may give an envelope
        collectors.append(EnvelopeCollector(EnvelopeHolder(config.node_power_envelope_watts)))
    procfs = config.path_procfs
    if config.enable_cpu:
        collectors.append(CpuCollector(procfs))
    if config.enable_memory:
        collectors.append(MemoryCollector(procfs))
    if config.enable_disk:
        collectors.append(DiskStatsCollector(procfs, config.disk_device_exclude))
        collectors.append(
            FilesystemCollector(
                procfs,
                config.path_rootfs,
                config.filesystem_fstype_exclude,
                statvfs_timeout_seconds=config.effective_collector_timeout_seconds / 2,
            )
        )
    if config.enable_network:
        collectors.append(NetworkCollector(procfs, config.network_device_exclude))
    gpu = build_gpu_collector(config) if config.enable_gpu else None
    if gpu is not None:
        collectors.append(gpu)
    collectors.append(DegradationCollector(Thresholds.from_config(config)))
    collectors.append(NodeInfoCollector(config.node_name))
    if config.textfile_directory is not None:
        collectors.append(TextfileCollector(config.textfile_directory))
    if config.app_metrics_urls:
        collectors += efficiency_collectors(config)
    return collectors
