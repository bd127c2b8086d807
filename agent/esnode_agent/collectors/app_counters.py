"""Model servers' token and request counters: which samples count, for which model, and their totals.

A recognised sample is named in the configured token or request lists; names compare without a
trailing ``_total`` because the text parser appends it to counters declared by TYPE while servers
exposing counters without it (TGI) exist. The model comes from the ``model`` label, else
``model_name`` (vLLM), else the name configured for the target, else the target itself.
Requests count only when they succeeded: a ``status`` label, where present, must be ok, success
or 2xx; a ``finished_reason`` label (vLLM) must not be ``abort``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

MODEL_LABELS = ("model", "model_name")
_SUCCESS_STATUS = re.compile(r"^(ok|success|succeeded|2\d\d|2xx)$", re.IGNORECASE)
_ABORTED_REASONS = frozenset({"abort"})


# A counter series: its sample name and sorted labels, stable across fetches.
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


class Kind(StrEnum):
    TOKENS = "tokens"
    REQUESTS = "requests"


@dataclass(frozen=True, slots=True)
class Reading:
    """One counter series of one target at one fetch."""

    kind: Kind
    model: str
    series: SeriesKey
    value: float


def _base(name: str) -> str:
    return name.removesuffix("_total")


class CounterNames:
    """The configured token and request sample names, and a line filter that keeps only theirs."""

    def __init__(self, token_names: Iterable[str], request_names: Iterable[str]) -> None:
        self._kinds = {_base(n): Kind.TOKENS for n in token_names}
        self._kinds.update({_base(n): Kind.REQUESTS for n in request_names})
        names = "|".join(re.escape(base) for base in sorted(self._kinds, key=len, reverse=True)) or "(?!)"
        # Parsing a whole vLLM exposition (hundreds of histogram lines) costs about 20x parsing the
        # few lines we use; comments go too, so counters keep the names their servers gave them.
        self._lines = re.compile(rf"^(?:{names})(?:_total)?[{{ ].*$", re.MULTILINE)

    def kind(self, sample_name: str) -> Kind | None:
        return self._kinds.get(_base(sample_name))

    def relevant_text(self, exposition: str) -> str:
        return "\n".join(self._lines.findall(exposition)) + "\n"


def read_counters(exposition: str, names: CounterNames, default_model: str) -> list[Reading]:
    """The recognised samples in a Prometheus text exposition; raises ValueError when it is not one."""
    readings = []
    for family in text_string_to_metric_families(names.relevant_text(exposition)):
        for sample in family.samples:
            kind = names.kind(sample.name)
            if kind is None or (kind is Kind.REQUESTS and not _succeeded(sample.labels)):
                continue
            model = next((sample.labels[k] for k in MODEL_LABELS if sample.labels.get(k)), default_model)
            series = (sample.name, tuple(sorted(sample.labels.items())))
            readings.append(Reading(kind, model, series, float(sample.value)))
    return readings


def _succeeded(labels: dict[str, str]) -> bool:
    status = labels.get("status")
    if status is not None and not _SUCCESS_STATUS.match(status):
        return False
    return labels.get("finished_reason") not in _ABORTED_REASONS


def counter_increase(previous: float | None, current: float | None) -> float | None:
    """How much a counter grew; a drop is a reset, so the new value is the growth since it."""
    if previous is None or current is None:
        return None
    return current if current < previous else current - previous


class CounterTotals:
    """Per-model running totals of tokens and successful requests since the agent started.

    Each series adds its own growth, so one server's reset never cancels another's growth. A
    target's first fetch sets the baseline; a series that first appears on a target fetched before
    was created since then (clients create labelled counters on first use) and adds its value.
    """

    def __init__(self) -> None:
        self._last: dict[str, dict[SeriesKey, float]] = {}  # by target
        self._totals: dict[tuple[Kind, str], float] = {}

    def observe(self, target: str, readings: Iterable[Reading]) -> None:
        previous = self._last.get(target)
        current: dict[SeriesKey, float] = {}
        for reading in readings:
            current[reading.series] = reading.value
            last = reading.value if previous is None else previous.get(reading.series, 0.0)
            growth = counter_increase(last, reading.value) or 0.0
            key = (reading.kind, reading.model)
            self._totals[key] = self._totals.get(key, 0.0) + growth
        self._last[target] = current  # series gone from the target are forgotten

    def total(self, kind: Kind, model: str) -> float | None:
        return self._totals.get((kind, model))
