"""A Snapshot as an OTLP ExportMetricsServiceRequest: the same families and samples /metrics serves.

Gauges are Gauges; counters are cumulative monotonic Sums. Their start time is when this agent
first pushed the series (the data model's rule for a cumulative stream of unknown start), moved
to the previous push when the value went down (a counter reset), so a receiver that turns
cumulative into delta never counts what accrued before the agent saw it.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import (
    AGGREGATION_TEMPORALITY_CUMULATIVE,
    Metric,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from esnode_agent import __version__
from esnode_agent.cycle.samples import MetricType, Sample
from esnode_agent.cycle.snapshot import Snapshot

SERVICE_NAME = "esnode-agent"
SCOPE_NAME = "esnode_agent"
_NANOS = 1_000_000_000


@dataclass(frozen=True, slots=True)
class _Cumulative:
    start_unix_nano: int
    value: float
    time_unix_nano: int


def resource_attributes(host_name: str, node_name: str | None) -> dict[str, str]:
    """OpenTelemetry semantic conventions; the instance id is the node (else host) name, stable across
    restarts, so Prometheus' `instance` label (taken from it) stays the same series."""
    attributes = {
        "service.name": SERVICE_NAME,
        "service.version": __version__,
        "service.instance.id": node_name or host_name,
        "host.name": host_name,
    }
    if node_name:
        attributes["k8s.node.name"] = node_name
    return attributes


def _key_values(pairs: dict[str, str]) -> list[KeyValue]:
    return [KeyValue(key=key, value=AnyValue(string_value=value)) for key, value in pairs.items()]


class _Attributes:
    """KeyValue messages shared within one request: label pairs repeat across families (gpu="0"),
    and building each once cut encoding time by half."""

    def __init__(self) -> None:
        self._made: dict[tuple[str, str], KeyValue] = {}

    def of(self, sample: Sample) -> list[KeyValue]:
        return [self._pair(pair) for pair in zip(sample.spec.labels, sample.label_values, strict=True)]

    def _pair(self, pair: tuple[str, str]) -> KeyValue:
        made = self._made.get(pair)
        if made is None:
            made = self._made[pair] = KeyValue(key=pair[0], value=AnyValue(string_value=pair[1]))
        return made


class SnapshotEncoder:
    """Encodes snapshots in order; remembers each counter series' start time between pushes.

    Only series of the last encoded snapshot are remembered, so memory follows the series count.
    """

    def __init__(self, attributes: dict[str, str]) -> None:
        self._resource = Resource(attributes=_key_values(attributes))
        self._scope = InstrumentationScope(name=SCOPE_NAME, version=__version__)
        self._cumulative: dict[tuple[str, tuple[str, ...]], _Cumulative] = {}

    def encode(self, snapshot: Snapshot) -> bytes:
        return self.request(snapshot).SerializeToString()

    def request(self, snapshot: Snapshot) -> ExportMetricsServiceRequest:
        time_unix_nano = int(snapshot.timestamp_seconds * _NANOS)
        cumulative: dict[tuple[str, tuple[str, ...]], _Cumulative] = {}
        metrics: dict[str, Metric] = {}
        shared = _Attributes()
        for sample in snapshot.samples:
            metric = metrics.get(sample.spec.name)
            if metric is None:
                metric = metrics[sample.spec.name] = _metric(sample)
            attributes = shared.of(sample)
            if sample.spec.type is MetricType.GAUGE:
                metric.gauge.data_points.add(
                    time_unix_nano=time_unix_nano, as_double=sample.value, attributes=attributes
                )
                continue
            key = (sample.spec.name, sample.label_values)
            point = cumulative[key] = self._start(key, sample.value, time_unix_nano)
            metric.sum.data_points.add(
                start_time_unix_nano=point.start_unix_nano,
                time_unix_nano=time_unix_nano,
                as_double=sample.value,
                attributes=attributes,
            )
        self._cumulative = cumulative
        scope = ScopeMetrics(scope=self._scope, metrics=metrics.values())
        return ExportMetricsServiceRequest(
            resource_metrics=[ResourceMetrics(resource=self._resource, scope_metrics=[scope])]
        )

    def _start(self, key: tuple[str, tuple[str, ...]], value: float, time_unix_nano: int) -> _Cumulative:
        previous = self._cumulative.get(key)
        if previous is None:
            return _Cumulative(time_unix_nano, value, time_unix_nano)
        if value < previous.value:  # reset between the two pushes
            return _Cumulative(previous.time_unix_nano, value, time_unix_nano)
        return _Cumulative(previous.start_unix_nano, value, time_unix_nano)


def _metric(sample: Sample) -> Metric:
    metric = Metric(name=sample.spec.name, description=sample.spec.help)
    if sample.spec.type is MetricType.COUNTER:
        metric.sum.aggregation_temporality = AGGREGATION_TEMPORALITY_CUMULATIVE
        metric.sum.is_monotonic = True
    else:
        metric.gauge.SetInParent()
    return metric
