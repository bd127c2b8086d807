"""The JSON status view of a Snapshot, for /status, /v1/status, /events and `esnode-agent status`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from esnode_agent.cycle.samples import Sample, SampleIndex
from esnode_agent.cycle.snapshot import Snapshot


@dataclass(frozen=True, slots=True)
class RenderedStatus:
    """The view serialised once per cycle, off the event loop; only its data age is per request
    (/status took 6.5 s at 3,000 models when the view was built per request on the loop)."""

    timestamp_seconds: float
    members_after_age: bytes  # the JSON object's other members, each preceded by ", "

    def at(self, now_seconds: float) -> bytes:
        age = round(max(0.0, now_seconds - self.timestamp_seconds), 3)
        return b'{"data_age_seconds": ' + json.dumps(age).encode() + self.members_after_age


def render_status(snapshot: Snapshot) -> RenderedStatus:
    view = status_view(snapshot, snapshot.timestamp_seconds)
    del view["data_age_seconds"]
    members = json.dumps(view).encode()[1:]  # drops "{"; a view always has members
    return RenderedStatus(snapshot.timestamp_seconds, b", " + members)


def status_view(snapshot: Snapshot, now_seconds: float) -> dict[str, Any]:
    samples = snapshot.samples
    return {
        "sequence": snapshot.sequence,
        "timestamp_seconds": snapshot.timestamp_seconds,
        "data_age_seconds": round(max(0.0, now_seconds - snapshot.timestamp_seconds), 3),
        "cycle_seconds": round(snapshot.cycle_seconds, 6),
        "collectors": {
            h.name: {"success": h.success, "duration_seconds": round(h.duration_seconds, 6), "error": h.error}
            for h in snapshot.health
        },
        "host": _host(samples),
        "power": _power(samples),
        "envelope": _envelope(samples),
        "degradation": _degradation(samples),
        "gpus": _gpus(samples),
        "efficiency": _efficiency(samples),
    }


def _by_label(samples: SampleIndex, name: str, label: str) -> dict[str, float]:
    return {s.label(label): s.value for s in samples.named(name)}


def _host(samples: SampleIndex) -> dict[str, Any]:
    per_cpu = samples.named("esnode_cpu_usage_percent")
    return {
        "cpu_usage_percent": round(sum(s.value for s in per_cpu) / len(per_cpu), 2) if per_cpu else None,
        "cpu_count": len({s.label("cpu") for s in samples.named("esnode_cpu_seconds_total")}) or None,
        "load_average": _by_label(samples, "esnode_load_average", "window"),
        "memory": {
            "total_bytes": samples.value("esnode_memory_total_bytes"),
            "used_bytes": samples.value("esnode_memory_used_bytes"),
            "available_bytes": samples.value("esnode_memory_available_bytes"),
        },
        "swap": {
            "total_bytes": samples.value("esnode_swap_total_bytes"),
            "used_bytes": samples.value("esnode_swap_used_bytes"),
        },
        "filesystems": [
            {
                **s.labels,
                "total_bytes": s.value,
                "used_bytes": samples.value("esnode_disk_used_bytes", **s.labels),
            }
            for s in samples.named("esnode_disk_total_bytes")
        ],
    }


def _power(samples: SampleIndex) -> dict[str, Any]:
    sources = samples.named("esnode_node_power_source_info")
    return {
        "node_power_watts": samples.value("esnode_node_power_watts"),
        "node_energy_joules_total": samples.value("esnode_node_energy_joules_total"),
        "source": sources[0].label("source") if sources else None,
        "cpu_package_power_watts": _by_label(samples, "esnode_cpu_package_power_watts", "package"),
        "gpu_power_watts": samples.total("esnode_gpu_power_watts"),
    }


def _envelope(samples: SampleIndex) -> dict[str, Any]:
    exceeded = samples.value("esnode_node_power_envelope_exceeded")
    return {
        "envelope_watts": samples.value("esnode_node_power_envelope_watts"),
        "exceeded": None if exceeded is None else exceeded >= 1,
        "headroom_watts": samples.value("esnode_node_power_headroom_watts"),
    }


def _degradation(samples: SampleIndex) -> dict[str, Any]:
    return {
        "score": samples.value("esnode_degradation_score"),
        "flags": {k: v >= 1 for k, v in _by_label(samples, "esnode_degradation_flag", "kind").items()},
    }


def _gpus(samples: SampleIndex) -> list[dict[str, Any]]:
    gpus = []
    for info in samples.named("esnode_gpu_info"):
        key = {"gpu": info.label("gpu"), "uuid": info.label("uuid")}
        gpus.append(
            {
                **info.labels,
                "utilization_percent": samples.value("esnode_gpu_utilization_percent", **key),
                "memory_used_bytes": samples.value("esnode_gpu_memory_used_bytes", **key),
                "memory_total_bytes": samples.value("esnode_gpu_memory_total_bytes", **key),
                "temperature_celsius": samples.value("esnode_gpu_temperature_celsius", **key),
                "power_watts": samples.value("esnode_gpu_power_watts", **key),
                "power_limit_watts": samples.value("esnode_gpu_power_limit_watts", **key),
                "up": samples.value("esnode_gpu_up", **key) != 0,  # a lost GPU reports 0
                "mig": [
                    _mig(samples, mig)
                    for mig in samples.named("esnode_mig_info")
                    if mig.label("uuid") == key["uuid"]
                ],
            }
        )
    return gpus


def _mig(samples: SampleIndex, info: Sample) -> dict[str, Any]:
    key = {"mig_uuid": info.label("mig_uuid")}
    return {
        **info.labels,
        "memory_used_bytes": samples.value("esnode_mig_memory_used_bytes", **key),
        "memory_total_bytes": samples.value("esnode_mig_memory_total_bytes", **key),
        "sm_count": samples.value("esnode_mig_sm_count", **key),
    }


def _efficiency(samples: SampleIndex) -> dict[str, Any]:
    """Per model: its totals and the windowed figures of the efficiency collector (docs/efficiency.md)."""
    figures = {
        "tokens_total": "esnode_app_tokens_total",
        "requests_total": "esnode_app_requests_total",
        "tokens_per_second": "esnode_app_tokens_per_second",
        "tokens_per_joule": "esnode_app_tokens_per_joule",
        "requests_per_joule": "esnode_app_requests_per_joule",
        "gpu_tokens_per_joule": "esnode_app_gpu_tokens_per_joule",
        "gpu_requests_per_joule": "esnode_app_gpu_requests_per_joule",
    }
    models = sorted({s.label("model") for s in samples.named("esnode_app_model_info")})
    return {
        "targets": {s.label("target"): s.value >= 1 for s in samples.named("esnode_app_scrape_success")},
        "models": {m: {key: samples.value(name, model=m) for key, name in figures.items()} for m in models},
    }
