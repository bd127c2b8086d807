"""Hostile model-server answers and config: bounded reads, refused samples, refused credentials."""

from __future__ import annotations

import time

import pytest
from model_server import ModelServer

from esnode_agent.collectors.app_counters import CounterNames
from esnode_agent.collectors.app_metrics import AppLimits, AppMetricsCollector, AppTarget
from esnode_agent.config.sources import ConfigError, load_config
from esnode_agent.cycle.samples import SampleIndex, SampleSink

NAMES = CounterNames(["model_tokens_total"], ["model_requests_total"])


def collect(collector: AppMetricsCollector) -> SampleIndex:
    sink = SampleSink(time.monotonic())
    collector.collect(sink)
    return SampleIndex(sink.samples)


def tokens(value: str, model: str = "m") -> str:
    return f'# TYPE model_tokens counter\nmodel_tokens_total{{model="{model}"}} {value}\n'


def test_nan_inf_and_negative_samples_are_refused_and_counted_not_added() -> None:
    with ModelServer(tokens("10")) as server:
        collector = AppMetricsCollector([AppTarget(server.url)], NAMES, 1.0)
        collect(collector)
        for bad in ("NaN", "+Inf", "-5"):
            server.body = tokens(bad)
            collect(collector)
        server.body = tokens("15")
        last = collect(collector)
    assert last.value("esnode_app_tokens_total", model="m") == 5
    assert last.value("esnode_app_samples_dropped_total", target=server.url, reason="not_finite") == 2
    assert last.value("esnode_app_samples_dropped_total", target=server.url, reason="negative") == 1


def test_a_body_over_the_cap_fails_the_scrape_and_html_or_comments_never_succeed() -> None:
    with ModelServer(tokens("1") + "# pad\n" * 2000) as server:
        collector = AppMetricsCollector([AppTarget(server.url)], NAMES, 1.0, AppLimits(max_body_bytes=4096))
        assert collect(collector).value("esnode_app_scrape_success", target=server.url) == 0
        server.body = "# only comments\n"
        assert collect(collector).value("esnode_app_scrape_success", target=server.url) == 0


def test_models_beyond_the_per_target_cap_are_dropped_and_counted() -> None:
    body = "".join(f'model_tokens_total{{model="m{i}"}} 1\n' for i in range(50))
    with ModelServer(body) as server:
        limits = AppLimits(max_models_per_target=10)
        samples = collect(AppMetricsCollector([AppTarget(server.url)], NAMES, 1.0, limits))
    assert len(samples.named("esnode_app_model_info")) == 10
    assert samples.value("esnode_app_samples_dropped_total", target=server.url, reason="over_model_cap") == 40


@pytest.mark.parametrize(
    "url", ["http://user:s3cret@127.0.0.1:8000/metrics", "http://127.0.0.1/m?token=s3cret"]
)
def test_credentials_in_endpoint_urls_are_refused_without_echoing_them(url: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config({"app_metrics_urls": url})
    assert "s3cret" not in str(caught.value)
    assert "app_metrics_urls" in str(caught.value)
