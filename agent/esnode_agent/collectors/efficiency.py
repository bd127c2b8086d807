"""Model efficiency: tokens and requests per joule, and tokens per second, per model over a window.

Each cycle adds one step per model: the growth of its token and request totals and of the node's
energy (and of its GPUs' energy, when its targets' GPUs are configured) since the previous
cycle. A ratio sums the steps of the last ``window_seconds`` in which both sides were known, so a
cycle without node energy leaves the others' figures intact. Node energy is the whole node's:
models sharing a node are each measured against all of it, idle power included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from esnode_agent.collectors.app_counters import CounterNames, counter_increase
from esnode_agent.collectors.app_metrics import (
    MODEL_INFO,
    REQUESTS,
    TOKENS,
    AppLimits,
    AppMetricsCollector,
    AppTarget,
)
from esnode_agent.collectors.gpu_specs import PLAIN as GPU
from esnode_agent.collectors.node_power import NODE_ENERGY
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.collector import STAGE_ASSESS, Collector
from esnode_agent.cycle.samples import SampleIndex, SampleSink, gauge

TOKENS_PER_JOULE = gauge(
    "esnode_app_tokens_per_joule",
    "Tokens per joule of node energy over app_efficiency_window_seconds; every model on the node is "
    "measured against the whole node's energy, idle power included.",
    "model",
)
REQUESTS_PER_JOULE = gauge(
    "esnode_app_requests_per_joule",
    "Successful requests per joule of node energy over app_efficiency_window_seconds.",
    "model",
)
TOKENS_PER_SECOND = gauge(
    "esnode_app_tokens_per_second", "Tokens per second over app_efficiency_window_seconds.", "model"
)
GPU_TOKENS_PER_JOULE = gauge(
    "esnode_app_gpu_tokens_per_joule",
    "Tokens per joule of the energy of the GPUs configured for the model's targets (app_gpu_uuids), "
    "over app_efficiency_window_seconds.",
    "model",
)
GPU_REQUESTS_PER_JOULE = gauge(
    "esnode_app_gpu_requests_per_joule",
    "Successful requests per joule of the configured GPUs' energy over app_efficiency_window_seconds.",
    "model",
)


@dataclass(frozen=True, slots=True)
class _Reading:
    """One model's counters and the energy it is measured against, at one cycle."""

    seconds: float
    tokens: float | None
    requests: float | None
    node_joules: float | None
    gpu_joules: Mapping[str, float] | None  # by uuid; None when its GPUs are unknown or unread


@dataclass(frozen=True, slots=True)
class _Step:
    end_seconds: float
    interval_seconds: float
    tokens: float | None
    requests: float | None
    node_joules: float | None
    gpu_joules: float | None


@dataclass(slots=True)
class _ModelWindow:
    previous: _Reading
    steps: deque[_Step] = field(default_factory=deque)


class EfficiencyCollector:
    name = "efficiency"
    stage = STAGE_ASSESS

    def __init__(self, window_seconds: float, gpu_uuids_by_target: Mapping[str, Iterable[str]]) -> None:
        self._window_seconds = window_seconds
        self._gpu_uuids_by_target = {
            target: frozenset(uuids) for target, uuids in gpu_uuids_by_target.items()
        }
        self._models: dict[str, _ModelWindow] = {}

    def collect(self, sink: SampleSink) -> None:
        now = sink.now_seconds
        for model, reading in self._readings(sink.upstream, now).items():
            window = self._models.get(model)
            if window is None:
                self._models[model] = _ModelWindow(reading)
                continue
            window.steps.append(_step(window.previous, reading))
            window.previous = reading
            while len(window.steps) > 1 and window.steps[0].end_seconds <= now - self._window_seconds:
                window.steps.popleft()
            _add_figures(sink, model, window.steps)
        self._forget_models_unseen_for_a_window(now)

    def _readings(self, upstream: SampleIndex, now: float) -> dict[str, _Reading]:
        node_joules = upstream.value(NODE_ENERGY.name)
        gpu_joules = upstream.by_label(GPU.energy.name, "uuid")
        targets: dict[str, set[str]] = {}
        for sample in upstream.named(MODEL_INFO.name):
            targets.setdefault(sample.label("model"), set()).add(sample.label("target"))
        readings = {}
        for model, model_targets in targets.items():
            uuids = frozenset().union(*(self._gpu_uuids_by_target.get(t, frozenset()) for t in model_targets))
            readings[model] = _Reading(
                now,
                upstream.value(TOKENS.name, model=model),
                upstream.value(REQUESTS.name, model=model),
                node_joules,
                {u: gpu_joules[u] for u in uuids} if uuids and uuids <= gpu_joules.keys() else None,
            )
        return readings

    def _forget_models_unseen_for_a_window(self, now: float) -> None:
        for model in [m for m, w in self._models.items() if w.previous.seconds < now - self._window_seconds]:
            del self._models[model]


def _step(previous: _Reading, current: _Reading) -> _Step:
    gpu_joules = None
    if previous.gpu_joules is not None and current.gpu_joules is not None:
        increases = [counter_increase(previous.gpu_joules.get(u), j) for u, j in current.gpu_joules.items()]
        gpu_joules = None if None in increases else sum(i or 0.0 for i in increases)
    return _Step(
        end_seconds=current.seconds,
        interval_seconds=current.seconds - previous.seconds,
        tokens=counter_increase(previous.tokens, current.tokens),
        requests=counter_increase(previous.requests, current.requests),
        node_joules=counter_increase(previous.node_joules, current.node_joules),
        gpu_joules=gpu_joules,
    )


def _ratio(
    steps: Iterable[_Step],
    numerator: Callable[[_Step], float | None],
    denominator: Callable[[_Step], float | None],
) -> float | None:
    """Sum of numerator over sum of denominator, across the steps where both are known."""
    top = bottom = 0.0
    for step in steps:
        above, below = numerator(step), denominator(step)
        if above is not None and below is not None:
            top += above
            bottom += below
    return top / bottom if bottom > 0 else None


def _add_figures(sink: SampleSink, model: str, steps: deque[_Step]) -> None:
    figures = (
        (TOKENS_PER_JOULE, _ratio(steps, lambda s: s.tokens, lambda s: s.node_joules)),
        (REQUESTS_PER_JOULE, _ratio(steps, lambda s: s.requests, lambda s: s.node_joules)),
        (TOKENS_PER_SECOND, _ratio(steps, lambda s: s.tokens, lambda s: s.interval_seconds)),
        (GPU_TOKENS_PER_JOULE, _ratio(steps, lambda s: s.tokens, lambda s: s.gpu_joules)),
        (GPU_REQUESTS_PER_JOULE, _ratio(steps, lambda s: s.requests, lambda s: s.gpu_joules)),
    )
    for spec, value in figures:
        if value is not None:
            sink.add(spec, value, model=model)


def efficiency_collectors(config: AgentConfig) -> list[Collector]:
    """The model-server collector and the efficiency figures built on what it reads."""
    targets = [AppTarget(url, config.app_model_names.get(url)) for url in config.app_metrics_urls]
    names = CounterNames(config.app_token_counters, config.app_request_counters)
    return [
        AppMetricsCollector(
            targets,
            names,
            config.effective_app_metrics_timeout_seconds,
            AppLimits(
                config.app_max_body_bytes, config.app_max_models_per_target, config.app_max_remembered_models
            ),
        ),
        EfficiencyCollector(config.app_efficiency_window_seconds, config.app_gpu_uuids),
    ]
