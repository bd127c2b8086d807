"""Every metric family the agent can export, found where the collectors declare them.

Used to write docs/metrics.md and to check the code against the metrics contract.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import fields, is_dataclass

import esnode_agent
from esnode_agent.cycle.samples import MetricSpec

# Modules that run something when imported, or are generated gRPC code.
_SKIPPED_SUFFIXES = ("__main__", "_pb2", "_pb2_grpc")


def metric_families() -> list[MetricSpec]:
    """One spec per name, sorted; where a family has k8s variants, the plain one."""
    found: dict[str, MetricSpec] = {}
    for module_info in pkgutil.walk_packages(esnode_agent.__path__, "esnode_agent."):
        if module_info.name.endswith(_SKIPPED_SUFFIXES):
            continue
        for value in vars(importlib.import_module(module_info.name)).values():
            for spec in _specs_in(value):
                current = found.get(spec.name)
                if current is None or len(spec.labels) < len(current.labels):
                    found[spec.name] = spec
    return [found[name] for name in sorted(found)]


def _specs_in(value: object) -> list[MetricSpec]:
    if isinstance(value, MetricSpec):
        return [value]
    if is_dataclass(value) and not isinstance(value, type):  # a bundle of families (GPU)
        return [v for v in (getattr(value, f.name) for f in fields(value)) if isinstance(v, MetricSpec)]
    return []


def render_markdown(families: list[MetricSpec]) -> str:
    lines = [
        "# Metrics",
        "",
        "Every family the agent can export, generated from the code by `scripts/gen-metrics-doc`",
        "(a test fails when this file is stale). A family whose source this machine lacks is absent.",
        "",
        "| name | type | labels | help |",
        "|---|---|---|---|",
    ]
    for spec in families:
        labels = ", ".join(spec.labels)
        help_text = spec.help.replace("|", "\\|")
        lines.append(f"| `{spec.name}` | {spec.type} | {labels} | {help_text} |")
    return "\n".join(lines) + "\n"
