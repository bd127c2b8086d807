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

from esnode_agent.collectors.app_counters import CounterNames, CounterTotals, Kind, Reading, read_counters
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


class _Endpoint:
    """One target's HTTP client, its fetch in flight, and whether its failure was logged."""

    def __init__(self, target: AppTarget, timeout_seconds: float) -> None:
        self.target = target
        # Endpoints are local: never route them through a proxy from the environment.
        self.client = httpx.Client(timeout=timeout_seconds, headers={"Accept": TEXT_FORMAT}, trust_env=False)
        self.in_flight: Future[list[Reading]] | None = None
        self.failing = False


class AppMetricsCollector:
    name = "app_metrics"
    stage = STAGE_READ

    def __init__(self, targets: Sequence[AppTarget], names: CounterNames, timeout_seconds: float) -> None:
        self._endpoints = [_Endpoint(target, timeout_seconds) for target in targets]
        self._names = names
        self._timeout_seconds = timeout_seconds
        self._executor = ThreadPoolExecutor(
            max_workers=max(1, len(targets)), thread_name_prefix="app-metrics"
        )
        self._totals = CounterTotals()

    def collect(self, sink: SampleSink) -> None:
        fetches = [(endpoint, self._start(endpoint)) for endpoint in self._endpoints]
        wait([fetch for _, fetch in fetches if fetch is not None], timeout=self._timeout_seconds)
        served: set[tuple[str, str]] = set()  # (model, target)
        for endpoint, fetch in fetches:
            url = endpoint.target.url
            readings, error = self._outcome(fetch)
            self._log_change(endpoint, error)
            sink.add(SCRAPE_SUCCESS, 0 if error else 1, target=url)
            if error is None:
                self._totals.observe(url, readings)
                served.update((reading.model, url) for reading in readings)
        for model, target in sorted(served):
            sink.add(MODEL_INFO, 1, model=model, target=target)
        for model in sorted({model for model, _ in served}):
            for kind, spec in ((Kind.TOKENS, TOKENS), (Kind.REQUESTS, REQUESTS)):
                total = self._totals.total(kind, model)
                if total is not None:
                    sink.add(spec, total, model=model)

    def _start(self, endpoint: _Endpoint) -> Future[list[Reading]] | None:
        if endpoint.in_flight is not None and not endpoint.in_flight.done():
            return None
        endpoint.in_flight = self._executor.submit(self._fetch, endpoint)
        return endpoint.in_flight

    def _fetch(self, endpoint: _Endpoint) -> list[Reading]:
        response = endpoint.client.get(endpoint.target.url)
        response.raise_for_status()
        return read_counters(response.text, self._names, endpoint.target.model or endpoint.target.url)

    def _outcome(self, fetch: Future[list[Reading]] | None) -> tuple[list[Reading], str | None]:
        if fetch is None:
            return [], "the previous fetch has not returned"
        if not fetch.done():
            return [], f"no answer within {self._timeout_seconds:g}s"
        error = fetch.exception()
        if error is not None:
            return [], f"{type(error).__name__}: {error}"
        return fetch.result(), None

    @staticmethod
    def _log_change(endpoint: _Endpoint, error: str | None) -> None:
        url = endpoint.target.url
        if error is not None and not endpoint.failing:
            log.warning("model server endpoint unavailable", extra={"target": url, "error": error})
        elif error is None and endpoint.failing:
            log.info("model server endpoint recovered", extra={"target": url})
        endpoint.failing = error is not None
