"""Renders a Snapshot once into every wire format /metrics serves, so a scrape only sends bytes.

The writer is our own: client_python's generic renderer cost ~15 µs per sample per format
here, which at eight GPUs' worth of series would spend more CPU per cycle than node_exporter
spends per scrape. Its parsers still check this output in the tests, and promtool does too.
"""

from __future__ import annotations

import gzip
import math
from collections.abc import Iterable
from dataclasses import dataclass

from esnode_agent.cycle.samples import MetricSpec, MetricType, Sample

# Pinned to 0.0.4: what every Prometheus 2.x parses; client_python now defaults to its 1.0.0 variant.
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
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


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _sample_line(sample: Sample) -> str:
    return f"{series_key(sample.spec, sample.label_values)} {format_value(sample.value)}\n"


def series_key(spec: MetricSpec, label_values: tuple[str, ...]) -> str:
    """``name{label="value",...}``: a sample line up to its value."""
    if not label_values:
        return spec.name
    labels = ",".join(
        f'{name}="{_escape_label(label)}"' for name, label in zip(spec.labels, label_values, strict=True)
    )
    return f"{spec.name}{{{labels}}}"


def family_headers(spec: MetricSpec) -> tuple[str, str]:
    """HELP/TYPE lines for text 0.0.4 and for OpenMetrics (which names counters without `_total`)."""
    help_text = _escape_help(spec.help)
    text = f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} {spec.type}\n"
    if spec.type is MetricType.COUNTER and not spec.name.endswith("_total"):  # a foreign name
        return text, f"# HELP {spec.name} {help_text}\n# TYPE {spec.name} unknown\n"
    if spec.type is MetricType.COUNTER:
        family = spec.name.removesuffix("_total")
        return text, f"# HELP {family} {help_text}\n# TYPE {family} counter\n"
    return text, text


def _group(samples: Iterable[Sample]) -> list[list[Sample]]:
    families: dict[str, list[Sample]] = {}
    for sample in samples:
        families.setdefault(sample.spec.name, []).append(sample)
    return [families[name] for name in sorted(families)]


def render(samples: Iterable[Sample]) -> Exposition:
    text_parts: list[str] = []
    openmetrics_parts: list[str] = []
    for family in _group(samples):
        text_header, openmetrics_header = family_headers(family[0].spec)
        lines = "".join(_sample_line(sample) for sample in family)
        text_parts += (text_header, lines)
        openmetrics_parts += (openmetrics_header, lines)
    openmetrics_parts.append("# EOF\n")
    text = "".join(text_parts).encode()
    openmetrics = "".join(openmetrics_parts).encode()
    return Exposition(
        text=Payload(text, gzip.compress(text, GZIP_LEVEL), TEXT_CONTENT_TYPE),
        openmetrics=Payload(openmetrics, gzip.compress(openmetrics, GZIP_LEVEL), OPENMETRICS_CONTENT_TYPE),
    )
