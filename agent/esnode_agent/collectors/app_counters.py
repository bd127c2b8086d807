"""Model servers' token and request counters: which samples count, for which model, and their totals.

A recognised sample is named in the configured token or request lists; names compare without a
trailing ``_total`` because the text parser appends it to counters declared by TYPE while servers
exposing counters without it (TGI) exist. The model comes from the ``model`` label, else
``model_name`` (vLLM), else the name configured for the target, else the target itself.
Requests count only when they succeeded: a ``status`` label, where present, must be ok, success
or 2xx; a ``finished_reason`` label (vLLM) must not be ``abort``.
"""

from __future__ import annotations

import math
import re
from collections import Counter, OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from prometheus_client.parser import text_string_to_metric_families

MODEL_LABELS = ("model", "model_name")
_SUCCESS_STATUS = re.compile(r"^(ok|success|succeeded|2\d\d|2xx)$", re.IGNORECASE)
_ABORTED_REASONS = frozenset({"abort"})
# A sample line: a metric name, then labels or a value. HTML or comments alone have none.
_SAMPLE_LINE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(?:\{|[ \t]+[-+0-9.NI])", re.MULTILINE)


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


class Dropped(StrEnum):
    """Why a recognised sample was left out of the totals."""

    NOT_FINITE = "not_finite"  # NaN or Inf would poison a running total until restart
    NEGATIVE = "negative"  # a counter never goes below 0
    OVER_MODEL_CAP = "over_model_cap"  # its model came after app_max_models_per_target others


@dataclass(slots=True)
class ReadCounters:
    readings: list[Reading] = field(default_factory=list)
    dropped: Counter[Dropped] = field(default_factory=Counter)
    refused_series: set[SeriesKey] = field(default_factory=set)  # their last good value stands


def read_counters(exposition: str, names: CounterNames, default_model: str, max_models: int) -> ReadCounters:
    """The recognised samples in a Prometheus text exposition; raises ValueError when it is not one."""
    if not _SAMPLE_LINE.search(exposition):
        raise ValueError("no sample lines: not a Prometheus exposition")
    read = ReadCounters()
    models: set[str] = set()
    for family in text_string_to_metric_families(names.relevant_text(exposition)):
        for sample in family.samples:
            kind = names.kind(sample.name)
            if kind is None or (kind is Kind.REQUESTS and not _succeeded(sample.labels)):
                continue
            model = next((sample.labels[k] for k in MODEL_LABELS if sample.labels.get(k)), default_model)
            value = float(sample.value)
            series = (sample.name, tuple(sorted(sample.labels.items())))
            refusal = _refusal(value, model in models or len(models) < max_models)
            if refusal is not None:
                read.dropped[refusal] += 1
                read.refused_series.add(series)
                continue
            models.add(model)
            read.readings.append(Reading(kind, model, series, value))
    return read


def _refusal(value: float, model_fits: bool) -> Dropped | None:
    if not math.isfinite(value):
        return Dropped.NOT_FINITE
    if value < 0:
        return Dropped.NEGATIVE
    return None if model_fits else Dropped.OVER_MODEL_CAP


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
    At most ``max_models`` models are remembered: beyond them the least recently seen model's
    totals are forgotten (and counted), so names that change every fetch cannot grow memory.
    """

    def __init__(self, max_models: int) -> None:
        self._last: dict[str, dict[SeriesKey, float]] = {}  # by target
        self._totals: dict[tuple[Kind, str], float] = {}
        self._recent: OrderedDict[str, None] = OrderedDict()  # models, least recently seen first
        self._max_models = max_models
        self.forgotten_models = 0

    def observe(self, target: str, readings: Iterable[Reading], kept: Iterable[SeriesKey] = ()) -> None:
        """``kept``: series refused this fetch, whose last good value stays the baseline."""
        previous = self._last.get(target)
        current: dict[SeriesKey, float] = {}
        if previous is not None:
            current.update((series, previous[series]) for series in kept if series in previous)
        for reading in readings:
            current[reading.series] = reading.value
            last = reading.value if previous is None else previous.get(reading.series, 0.0)
            growth = counter_increase(last, reading.value) or 0.0
            key = (reading.kind, reading.model)
            self._totals[key] = self._totals.get(key, 0.0) + growth
            self._recent[reading.model] = None
            self._recent.move_to_end(reading.model)
        self._last[target] = current  # series gone from the target are forgotten
        while len(self._recent) > self._max_models:
            model, _ = self._recent.popitem(last=False)
            for kind in Kind:
                self._totals.pop((kind, model), None)
            self.forgotten_models += 1

    def total(self, kind: Kind, model: str) -> float | None:
        return self._totals.get((kind, model))
