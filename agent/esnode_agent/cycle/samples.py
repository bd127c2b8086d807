"""Typed metric samples: what collectors produce and everything downstream reads."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum


class MetricType(StrEnum):
    GAUGE = "gauge"
    COUNTER = "counter"


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One metric family: its exposition name, help text, type and label names.

    Counter names end in ``_total`` exactly as they appear on the wire.
    """

    name: str
    help: str
    type: MetricType
    labels: tuple[str, ...] = ()
    # A name another exporter fixed (dcgm-exporter's counters lack `_total`): kept as it is.
    foreign_name: bool = False

    def __post_init__(self) -> None:
        if self.type is MetricType.COUNTER and not self.name.endswith("_total") and not self.foreign_name:
            raise ValueError(f"counter {self.name} must end in _total")


def gauge(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, help, MetricType.GAUGE, labels)


def counter(name: str, help: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, help, MetricType.COUNTER, labels)


@dataclass(frozen=True, slots=True)
class Sample:
    spec: MetricSpec
    label_values: tuple[str, ...]
    value: float

    def label(self, name: str) -> str:
        return self.label_values[self.spec.labels.index(name)]

    @property
    def labels(self) -> dict[str, str]:
        return dict(zip(self.spec.labels, self.label_values, strict=True))


class SampleIndex:
    """Read-only lookup of samples by metric name, in the order they were added.

    Lookups by labels go through an index built on first use per (name, label names), so a
    cycle that looks up each of n models costs O(n), not O(n^2) (10,000 models took 27.8 s).
    """

    def __init__(self, samples: Iterable[Sample] = ()) -> None:
        self._by_name: dict[str, list[Sample]] = {}
        for sample in samples:
            self._by_name.setdefault(sample.spec.name, []).append(sample)
        self._by_labels: dict[tuple[str, tuple[str, ...]], dict[tuple[str, ...], float]] = {}

    def __iter__(self) -> Iterator[Sample]:
        for samples in self._by_name.values():
            yield from samples

    def __len__(self) -> int:
        return sum(len(s) for s in self._by_name.values())

    def named(self, name: str) -> list[Sample]:
        return self._by_name.get(name, [])

    def value(self, name: str, **labels: str) -> float | None:
        """The value of the first sample of ``name`` whose labels include ``labels``."""
        keys = tuple(sorted(labels))
        index = self._by_labels.get((name, keys))
        if index is None:
            index = {}
            for sample in self.named(name):
                if all(k in sample.spec.labels for k in keys):
                    index.setdefault(tuple(sample.label(k) for k in keys), sample.value)
            self._by_labels[(name, keys)] = index
        return index.get(tuple(labels[k] for k in keys))

    def total(self, name: str) -> float | None:
        samples = self.named(name)
        return sum(s.value for s in samples) if samples else None

    def by_label(self, name: str, label: str) -> dict[str, float]:
        """Each series of ``name`` keyed by one of its labels (GPU series: one per uuid)."""
        return {s.label(label): s.value for s in self.named(name)}


class SampleSink:
    """Where one collector writes its samples for one cycle.

    ``upstream`` holds what earlier stages produced in the same cycle; ``now_seconds`` is the
    cycle's monotonic clock reading, shared by every collector so rates line up.
    """

    def __init__(self, now_seconds: float, upstream: SampleIndex | None = None) -> None:
        self.now_seconds = now_seconds
        self.upstream = upstream if upstream is not None else SampleIndex()
        self.samples: list[Sample] = []

    def add(self, spec: MetricSpec, value: float, **labels: str) -> None:
        if labels.keys() != set(spec.labels):
            raise ValueError(f"{spec.name}: labels {sorted(labels)} != {sorted(spec.labels)}")
        self.samples.append(Sample(spec, tuple(labels[name] for name in spec.labels), float(value)))
