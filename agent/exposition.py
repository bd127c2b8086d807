"""Renders a Snapshot once into every wire format /metrics serves, so a scrape only sends bytes."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import exposition as text_format
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics import exposition as openmetrics_format

from esnode_agent.samples import MetricType, Sample, SampleIndex

# Pinned to 0.0.4: what every Prometheus 2.x parses; client_python now defaults to its 1.0.0 variant.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = openmetrics_format.CONTENT_TYPE_LATEST
GZIP_LEVEL = 6


@dataclass(frozen=True, slots=True)
class Payload:
    body: bytes
    body_gzip: bytes
    content_type: str


@dataclass(frozen=True, slots=True)
class Exposition:
    text: Payload
    openmetrics: Payload


class _Families:
    """Adapts samples to client_python's collector interface, families built fresh each time."""

    def __init__(self, samples: SampleIndex) -> None:
        self._samples = samples

    def collect(self) -> Iterator[Metric]:
        by_name: dict[str, list[Sample]] = {}
        for sample in self._samples:
            by_name.setdefault(sample.spec.name, []).append(sample)
        for name in sorted(by_name):
            yield _family(by_name[name])


def _family(samples: list[Sample]) -> Metric:
    spec = samples[0].spec
    family: GaugeMetricFamily | CounterMetricFamily
    if spec.type is MetricType.COUNTER:
        family = CounterMetricFamily(spec.name, spec.help, labels=spec.labels)
    else:
        family = GaugeMetricFamily(spec.name, spec.help, labels=spec.labels)
    for sample in samples:
        family.add_metric(sample.label_values, sample.value)
    return family


def render(samples: SampleIndex) -> Exposition:
    families = _Families(samples)
    text = text_format.generate_latest(families)  # type: ignore[arg-type]
    openmetrics = openmetrics_format.generate_latest(families)  # type: ignore[arg-type]
    return Exposition(
        text=Payload(text, gzip.compress(text, GZIP_LEVEL), TEXT_CONTENT_TYPE),
        openmetrics=Payload(openmetrics, gzip.compress(openmetrics, GZIP_LEVEL), OPENMETRICS_CONTENT_TYPE),
    )
