"""Collector registry: which collectors a config turns on, built in one place."""

from __future__ import annotations

from esnode_agent.collector import Collector
from esnode_agent.config import AgentConfig


def build_collectors(config: AgentConfig) -> list[Collector]:
    collectors: list[Collector] = []
    return collectors
