"""The JSON status view of a Snapshot, for /status, /v1/status, /events and `esnode-agent status`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from esnode_agent.capping import collector as capping
from esnode_agent.collectors import (
    app_metrics,
    cpu,
    degradation,
    efficiency,
    envelope,
    filesystem,
    memory,
    node_power,
    rapl,
)
from esnode_agent.collectors.gpu_specs import PLAIN as GPU
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
        "power_capping": _power_capping(samples),
        "degradation": _degradation(samples),
        "gpus": _gpus(samples),
        "efficiency": _efficiency(samples),
    }


def _host(samples: SampleIndex) -> dict[str, Any]:
    per_cpu = samples.named(cpu.CPU_USAGE.name)
    return {
        "cpu_usage_percent": round(sum(s.value for s in per_cpu) / len(per_cpu), 2) if per_cpu else None,
        "cpu_count": len({s.label("cpu") for s in samples.named(cpu.CPU_SECONDS.name)}) or None,
        "load_average": samples.by_label(cpu.LOAD_AVERAGE.name, "window"),
        "memory": {
            "total_bytes": samples.value(memory.MEMORY_TOTAL.name),
            "used_bytes": samples.value(memory.MEMORY_USED.name),
            "available_bytes": samples.value(memory.MEMORY_AVAILABLE.name),
        },
        "swap": {
            "total_bytes": samples.value(memory.SWAP_TOTAL.name),
            "used_bytes": samples.value(memory.SWAP_USED.name),
        },
        "filesystems": [
            {
                **s.labels,
                "total_bytes": s.value,
                "used_bytes": samples.value(filesystem.DISK_USED.name, **s.labels),
            }
            for s in samples.named(filesystem.DISK_TOTAL.name)
        ],
    }


def _power(samples: SampleIndex) -> dict[str, Any]:
    sources = samples.named(node_power.NODE_SOURCE.name)
    return {
        "node_power_watts": samples.value(node_power.NODE_POWER.name),
        "node_energy_joules_total": samples.value(node_power.NODE_ENERGY.name),
        "source": sources[0].label("source") if sources else None,
        "cpu_package_power_watts": samples.by_label(rapl.PACKAGE_POWER.name, "package"),
        "gpu_power_watts": samples.total(GPU.power.name),
    }


def _envelope(samples: SampleIndex) -> dict[str, Any]:
    exceeded = samples.value(envelope.EXCEEDED.name)
    return {
        "envelope_watts": samples.value(envelope.ENVELOPE.name),
        "exceeded": None if exceeded is None else exceeded >= 1,
        "headroom_watts": samples.value(envelope.HEADROOM.name),
    }


def _power_capping(samples: SampleIndex) -> dict[str, Any] | None:
    """The opt-in capper (docs/power.md): None when it is off."""
    states = [s for s in samples.named(capping.CAPPING_STATE.name) if s.value >= 1]
    if not states:
        return None
    return {
        "mode": states[0].label("mode"),
        "state": states[0].label("state"),
        "actions_total": samples.by_label(capping.CAPPING_ACTIONS.name, "kind"),
        "esnode_limit_watts": samples.by_label(capping.LIMIT_ESNODE.name, "uuid"),
        "disabled": {
            s.label("uuid"): s.label("reason") for s in samples.named(capping.CAPPING_DISABLED.name)
        },
    }


def _degradation(samples: SampleIndex) -> dict[str, Any]:
    return {
        "score": samples.value(degradation.SCORE.name),
        "flags": {k: v >= 1 for k, v in samples.by_label(degradation.FLAG.name, "kind").items()},
    }


def _gpus(samples: SampleIndex) -> list[dict[str, Any]]:
    gpus = []
    for info in samples.named(GPU.info.name):
        key = {"gpu": info.label("gpu"), "uuid": info.label("uuid")}
        gpus.append(
            {
                **info.labels,
                "utilization_percent": samples.value(GPU.utilization.name, **key),
                "memory_used_bytes": samples.value(GPU.memory_used.name, **key),
                "memory_total_bytes": samples.value(GPU.memory_total.name, **key),
                "temperature_celsius": samples.value(GPU.temperature.name, **key),
                "power_watts": samples.value(GPU.power.name, **key),
                "power_limit_watts": samples.value(GPU.power_limit.name, **key),
                "up": samples.value(GPU.up.name, **key) != 0,  # a lost GPU reports 0
                "mig": [
                    _mig(samples, mig)
                    for mig in samples.named(GPU.mig_info.name)
                    if mig.label("uuid") == key["uuid"]
                ],
            }
        )
    return gpus


def _mig(samples: SampleIndex, info: Sample) -> dict[str, Any]:
    key = {"mig_uuid": info.label("mig_uuid")}
    return {
        **info.labels,
        "memory_used_bytes": samples.value(GPU.mig_memory_used.name, **key),
        "memory_total_bytes": samples.value(GPU.mig_memory_total.name, **key),
        "sm_count": samples.value(GPU.mig_sm_count.name, **key),
    }


def _efficiency(samples: SampleIndex) -> dict[str, Any]:
    """Per model: its totals and the windowed figures of the efficiency collector (docs/efficiency.md)."""
    figures = {
        "tokens_total": app_metrics.TOKENS.name,
        "requests_total": app_metrics.REQUESTS.name,
        "tokens_per_second": efficiency.TOKENS_PER_SECOND.name,
        "tokens_per_joule": efficiency.TOKENS_PER_JOULE.name,
        "requests_per_joule": efficiency.REQUESTS_PER_JOULE.name,
        "gpu_tokens_per_joule": efficiency.GPU_TOKENS_PER_JOULE.name,
        "gpu_requests_per_joule": efficiency.GPU_REQUESTS_PER_JOULE.name,
    }
    models = sorted({s.label("model") for s in samples.named(app_metrics.MODEL_INFO.name)})
    return {
        "targets": {s.label("target"): s.value >= 1 for s in samples.named(app_metrics.SCRAPE_SUCCESS.name)},
        "models": {m: {key: samples.value(name, model=m) for key, name in figures.items()} for m in models},
    }
