"""Collector registry: which collectors a config turns on, built in one place."""

from __future__ import annotations

from esnode_agent.collector import Collector
from esnode_agent.collectors.envelope import EnvelopeCollector
from esnode_agent.collectors.hwmon import HwmonCollector
from esnode_agent.collectors.node_power import NodePowerCollector
from esnode_agent.collectors.rapl import RaplCollector
from esnode_agent.config import AgentConfig


def build_collectors(config: AgentConfig) -> list[Collector]:
    collectors: list[Collector] = []
    if config.enable_power:
        collectors += [
            RaplCollector(config.path_sysfs),
            HwmonCollector(config.path_sysfs),
            NodePowerCollector(config.node_power_sensor),
        ]
    if config.node_power_envelope_watts is not None:
        collectors.append(EnvelopeCollector(config.node_power_envelope_watts))
    return collectors
