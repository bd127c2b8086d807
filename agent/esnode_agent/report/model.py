"""The node report: what an agent tells the cluster about its node's power. Public model.

It is the status of the node's EsnodeNode object; the operator reads it to build the fleet's
power summary. Built from a Snapshot; bounded in size however many GPUs a node has.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

from esnode_agent import __version__
from esnode_agent.capping import collector as capping
from esnode_agent.collectors import degradation, envelope, node_power
from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.cycle.samples import SampleIndex
from esnode_agent.cycle.snapshot import Snapshot

MAX_GPUS_IN_REPORT = 16
# Beyond this many heartbeats without a report, a node's report is stale (the operator's rule).
STALE_AFTER_HEARTBEATS = 3
# Reasons that mean the GPU is slowed by heat or power, not merely idle or capped by settings.
SLOWDOWN_REASONS = frozenset({"thermal", "sw_thermal", "hw_slowdown", "power_brake", "power"})


Word = Annotated[str, StringConstraints(max_length=64)]


class _Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, frozen=True, extra="forbid")


class GpuSummary(_Model):
    index: int = Field(ge=0, description="NVML index")
    uuid: Word
    power_watts: float | None = Field(None, ge=0)
    temperature_celsius: float | None = None
    throttle_reasons: list[Word] = Field(
        default_factory=list, max_length=16, description="Active slowdown reasons (thermal, power, ...)"
    )


class NodeReport(_Model):
    node_name: str = Field(min_length=1, max_length=253)
    fleet: str = Field(min_length=1, max_length=253)
    node_power_watts: float | None = Field(None, ge=0, description="Node power from power_source")
    power_source: Word | None = Field(None, description="bmc, hwmon, rapl+gpu, rapl or gpu")
    envelope_watts: float | None = Field(None, gt=0)
    exceeded: bool = Field(False, description="Node power above the envelope")
    headroom_watts: float | None = Field(
        None, description="Envelope minus node power; negative when exceeded"
    )
    gpu_count: int = Field(0, ge=0)
    gpu_power_watts: float | None = Field(None, ge=0, description="Sum over the node's GPUs")
    gpus: list[GpuSummary] = Field(
        default_factory=list,
        max_length=MAX_GPUS_IN_REPORT,
        description=f"The first {MAX_GPUS_IN_REPORT} GPUs",
    )
    # Power capping (opt-in): what the agent's capper is doing to this node's GPU limits.
    power_capping: Word | None = Field(
        None,
        description="The capper's state (idle, capping, at_floor, blind, no_envelope); unset while capping is off",
    )
    capped_gpus: int = Field(0, ge=0, description="GPUs held under their own limit by esnode")
    power_wanted_watts: float | None = Field(
        None,
        ge=0,
        description="Node power the GPUs' recent peaks (each at least its minimum limit) and the rest need; "
        "unset without capping under an envelope",
    )
    # The GPUs' power-limit constraints, summed: the fleet budget's floor and ceiling for this node.
    gpu_power_limit_min_watts: float | None = Field(
        None, ge=0, description="Sum of the GPUs' minimum power limits (the least they can be capped to)"
    )
    gpu_power_limit_max_watts: float | None = Field(
        None, ge=0, description="Sum of the GPUs' maximum power limits (the most they can be set to draw)"
    )
    degradation_score: int = Field(0, ge=0)
    degradation_flags: list[Word] = Field(default_factory=list, max_length=32)
    agent_version: Word
    last_report_time: datetime = Field(description="When the agent took these readings (its clock)")
    heartbeat_seconds: float = Field(
        gt=0,
        description=f"The agent reports at least this often; stale after {STALE_AFTER_HEARTBEATS} of them",
    )


def _gpu_summaries(samples: SampleIndex) -> list[GpuSummary]:
    summaries = []
    for info in samples.named(GPU.info.name)[:MAX_GPUS_IN_REPORT]:
        key = {"gpu": info.label("gpu"), "uuid": info.label("uuid")}
        reasons = sorted(
            s.label("reason")
            for s in samples.named(GPU.throttle.name)
            if s.value >= 1 and s.label("reason") in SLOWDOWN_REASONS and s.label("uuid") == key["uuid"]
        )
        summaries.append(
            GpuSummary(
                index=int(key["gpu"]),
                uuid=key["uuid"],
                power_watts=_watts(samples.value(GPU.power.name, uuid=key["uuid"])),
                temperature_celsius=samples.value(GPU.temperature.name, uuid=key["uuid"]),
                throttle_reasons=reasons,
            )
        )
    return summaries


def _watts(value: float | None) -> float | None:
    """Tenths of a watt: finer digits are float noise and only make the status churn."""
    return None if value is None else round(value, 1)


def _summed(samples: SampleIndex, name: str) -> float | None:
    """Over all the node's GPUs (not only the first MAX_GPUS_IN_REPORT); None when none reports it."""
    values = samples.by_label(name, "uuid")
    return _watts(sum(values.values())) if values else None


def _capping_state(samples: SampleIndex) -> str | None:
    return next((s.label("state") for s in samples.named(capping.CAPPING_STATE.name) if s.value >= 1), None)


def build_report(snapshot: Snapshot, node_name: str, fleet: str, heartbeat_seconds: float) -> NodeReport:
    samples = snapshot.samples
    sources = samples.named(node_power.NODE_SOURCE.name)
    gpu_power = samples.by_label(GPU.power.name, "uuid")
    flags = sorted(s.label("kind") for s in samples.named(degradation.FLAG.name) if s.value >= 1)
    return NodeReport(
        node_name=node_name,
        fleet=fleet,
        node_power_watts=_watts(samples.value(node_power.NODE_POWER.name)),
        power_source=sources[0].label("source") if sources else None,
        envelope_watts=samples.value(envelope.ENVELOPE.name),
        exceeded=(samples.value(envelope.EXCEEDED.name) or 0) >= 1,
        headroom_watts=_watts(samples.value(envelope.HEADROOM.name)),
        gpu_count=len(samples.named(GPU.info.name)),
        gpu_power_watts=_watts(sum(gpu_power.values())) if gpu_power else None,
        gpus=_gpu_summaries(samples),
        power_capping=_capping_state(samples),
        capped_gpus=len({s.label("uuid") for s in samples.named(capping.LIMIT_ESNODE.name)}),
        power_wanted_watts=_watts(samples.value(capping.WANTED.name)),
        gpu_power_limit_min_watts=_summed(samples, GPU.power_limit_min.name),
        gpu_power_limit_max_watts=_summed(samples, GPU.power_limit_max.name),
        degradation_score=len(flags),
        degradation_flags=flags,
        agent_version=__version__,
        last_report_time=datetime.fromtimestamp(snapshot.timestamp_seconds, UTC).replace(microsecond=0),
        heartbeat_seconds=heartbeat_seconds,
    )


def condition_message(report: NodeReport, namespace: str) -> str:
    """The Node condition's message; it names the fleet as namespace/name, which the operator
    matches to take the condition away when the node leaves the fleet or the fleet goes."""
    envelope = f"{report.envelope_watts:g} W" if report.envelope_watts is not None else "no envelope"
    power = f"{report.node_power_watts:.0f} W" if report.node_power_watts is not None else "unknown power"
    return f"node power {power} against {envelope} (fleet {namespace}/{report.fleet})"
