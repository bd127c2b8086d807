"""Model servers' Prometheus endpoints on this node: their token and request counters, each cycle.

Endpoints are fetched concurrently, one worker thread and one HTTP client each, and the cycle
waits for them at most the fetch timeout: a slow or dead endpoint is reported failed for the
cycle (logged once until it recovers) while the others' data still arrives. An endpoint whose
previous fetch has not returned is not fetched again, so a hung server holds one thread at most.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass

import httpx

from esnode_agent.collectors.app_counters import (
    CounterNames,
    CounterTotals,
    Dropped,
    Kind,
    ReadCounters,
    read_counters,
)
from esnode_agent.collectors.app_fetch import ACCEPT_ENCODING, fetch_exposition
from esnode_agent.cycle.collector import STAGE_READ
from esnode_agent.cycle.samples import SampleSink, counter, gauge

log = logging.getLogger(__name__)

TEXT_FORMAT = "text/plain;version=0.0.4"

TOKENS = counter(
    "esnode_app_tokens_total",
    "Tokens counted by the model servers on this node since the agent started, summed over the "
    "recognised token counters (app_token_counters); counter resets corrected.",
    "model",
)
REQUESTS = counter(
    "esnode_app_requests_total",
    "Successful requests counted by the model servers on this node since the agent started "
    "(app_request_counters; status ok/success/2xx, vLLM finished_reason other than abort).",
    "model",
)
SCRAPE_SUCCESS = gauge(
    "esnode_app_scrape_success",
    "1 if the model-server endpoint answered with a readable exposition within the timeout this cycle.",
    "target",
)
SAMPLES_DROPPED = counter(
    "esnode_app_samples_dropped_total",
    "Recognised model-server samples left out of the totals since the agent started: not_finite "
    "(NaN, Inf), negative, or over_model_cap (a model beyond app_max_models_per_target).",
    "target",
    "reason",
)
MODELS_FORGOTTEN = counter(
    "esnode_app_models_forgotten_total",
    "Models whose token and request totals were forgotten, least recently seen first, to keep "
    "at most app_max_remembered_models; such a model's totals restart from 0 if it returns.",
)
MODEL_INFO = gauge(
    "esnode_app_model_info",
    "A model whose counters the target endpoint exposed this cycle; value 1.",
    "model",
    "target",
)


@dataclass(frozen=True, slots=True)
class AppTarget:
    url: str
    model: str | None = None  # for servers whose counters carry no model label (TGI)


@dataclass(frozen=True, slots=True)
class AppLimits:
    """What one model server may cost the agent per fetch, and what the agent remembers."""

    max_body_bytes: int = 8 * 2**20
    max_models_per_target: int = 1000
    max_remembered_models: int = 5000


class _Endpoint:
    """One target's HTTP client, its fetch in flight, and whether its failure was logged."""

    def __init__(self, target: AppTarget, timeout_seconds: float) -> None:
        self.target = target
        # Endpoints are local: never route them through a proxy from the environment.
        self.client = httpx.Client(
            timeout=timeout_seconds,
            headers={"Accept": TEXT_FORMAT, "Accept-Encoding": ACCEPT_ENCODING},
            trust_env=False,
        )
        self.in_flight: Future[ReadCounters] | None = None
        self.failing = False
        self.dropped: dict[Dropped, int] = dict.fromkeys(Dropped, 0)


class AppMetricsCollector:
    name = "app_metrics"
    stage = STAGE_READ

    def __init__(
        self,
        targets: Sequence[AppTarget],
        names: CounterNames,
        timeout_seconds: float,
        limits: AppLimits = AppLimits(),
    ) -> None:
        self._endpoints = [_Endpoint(target, timeout_seconds) for target in targets]
        self._names = names
        self._timeout_seconds = timeout_seconds
        self._limits = limits
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(targets)), thread_name_prefix="app-metrics"
        )
        self._totals = CounterTotals(limits.max_remembered_models)

    def collect(self, sink: SampleSink) -> None:
        fetches = [(endpoint, self._start(endpoint)) for endpoint in self._endpoints]
        wait([fetch for _, fetch in fetches if fetch is not None], timeout=self._timeout_seconds)
        served: set[tuple[str, str]] = set()  # (model, target)
        for endpoint, fetch in fetches:
            url = endpoint.target.url
            read, error = self._outcome(fetch)
            self._log_change(endpoint, error)
            sink.add(SCRAPE_SUCCESS, 0 if error else 1, target=url)
            if error is None:
                self._totals.observe(url, read.readings, read.refused_series)
                served.update((reading.model, url) for reading in read.readings)
                for reason, count in read.dropped.items():
                    endpoint.dropped[reason] += count
            for reason, count in endpoint.dropped.items():
                sink.add(SAMPLES_DROPPED, count, target=url, reason=reason)
        sink.add(MODELS_FORGOTTEN, self._totals.forgotten_models)
        for model, target in sorted(served):
            sink.add(MODEL_INFO, 1, model=model, target=target)
        for model in sorted({model for model, _ in served}):
            for kind, spec in ((Kind.TOKENS, TOKENS), (Kind.REQUESTS, REQUESTS)):
                total = self._totals.total(kind, model)
                if total is not None:
                    sink.add(spec, total, model=model)

    def _start(self, endpoint: _Endpoint) -> Future[ReadCounters] | None:
        if endpoint.in_flight is not None and not endpoint.in_flight.done():
            return None
        endpoint.in_flight = self._executor.submit(self._fetch, endpoint)
        return endpoint.in_flight

    def _fetch(self, endpoint: _Endpoint) -> ReadCounters:
        url = endpoint.target.url
        text = fetch_exposition(endpoint.client, url, self._limits.max_body_bytes, self._timeout_seconds)
        default_model = endpoint.target.model or url
        return read_counters(text, self._names, default_model, self._limits.max_models_per_target)

    def _outcome(self, fetch: Future[ReadCounters] | None) -> tuple[ReadCounters, str | None]:
        if fetch is None:
            return ReadCounters(), "the previous fetch has not returned"
        if not fetch.done():
            return ReadCounters(), f"no answer within {self._timeout_seconds:g}s"
        error = fetch.exception()
        if error is not None:
            return ReadCounters(), f"{type(error).__name__}: {error}"
        return fetch.result(), None

    @staticmethod
    def _log_change(endpoint: _Endpoint, error: str | None) -> None:
        url = endpoint.target.url
        if error is not None and not endpoint.failing:
            log.warning("model server endpoint unavailable", extra={"target": url, "error": error})
        elif error is None and endpoint.failing:
            log.info("model server endpoint recovered", extra={"target": url})
        endpoint.failing = error is not None
