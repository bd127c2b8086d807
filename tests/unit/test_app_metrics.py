"""Model-server endpoints over real loopback HTTP: recognised counters, resets, timeouts, dead endpoints."""

from __future__ import annotations

import logging
import socket
import time
from pathlib import Path

import pytest
from collecting import collect
from model_server import ModelServer, exposition

from esnode_agent.collectors.app_counters import CounterNames
from esnode_agent.collectors.app_metrics import AppMetricsCollector, AppTarget
from esnode_agent.collectors.registry import build_collectors
from esnode_agent.config.model import DEFAULT_APP_REQUEST_COUNTERS, DEFAULT_APP_TOKEN_COUNTERS, AgentConfig
from esnode_agent.config.sources import ConfigError, load_config

LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
DEFAULT_NAMES = CounterNames(DEFAULT_APP_TOKEN_COUNTERS, DEFAULT_APP_REQUEST_COUNTERS)
GENERIC_COUNTERS = (
    "llama_serving_tokens", "llama_batch_tokens", "mistral_tokens",
    "llama_ok", "llama_errors", "mistral_ok", "mistral_errors",
)  # fmt: skip


def app_collector(*targets: AppTarget | str, timeout_seconds: float = 1.0) -> AppMetricsCollector:
    resolved = [t if isinstance(t, AppTarget) else AppTarget(t) for t in targets]
    return AppMetricsCollector(resolved, DEFAULT_NAMES, timeout_seconds)


def vllm(prompt: float, generation: float, stopped: float = 0, length: float = 0, aborted: float = 0) -> str:
    return exposition(
        "vllm",
        prompt_tokens=prompt,
        generation_tokens=generation,
        stopped=stopped,
        length=length,
        aborted=aborted,
    )


def generic(**overrides: float) -> str:
    return exposition("generic", **{**dict.fromkeys(GENERIC_COUNTERS, 0.0), **overrides})


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/metrics"


def test_vllm_prompt_and_generated_tokens_and_finished_requests_add_up_per_model() -> None:
    with ModelServer(vllm(1000, 5000, stopped=10, length=2, aborted=1)) as server:
        collector = app_collector(server.url)
        first = collect(collector, time.monotonic())
        server.body = vllm(1100, 5400, stopped=13, length=3, aborted=4)
        second = collect(collector, time.monotonic())

    assert first.value("esnode_app_tokens_total", model=LLAMA_8B) == 0  # the first fetch is the baseline
    assert second.value("esnode_app_tokens_total", model=LLAMA_8B) == 500
    assert second.value("esnode_app_requests_total", model=LLAMA_8B) == 4  # aborted requests are no success
    assert second.value("esnode_app_model_info", model=LLAMA_8B, target=server.url) == 1
    assert second.value("esnode_app_scrape_success", target=server.url) == 1


def test_generic_counters_sum_over_other_labels_and_count_only_successful_requests() -> None:
    with ModelServer(generic()) as server:
        collector = app_collector(server.url)
        collect(collector, time.monotonic())
        tokens = {"llama_serving_tokens": 300, "llama_batch_tokens": 200, "mistral_tokens": 50}
        server.body = generic(**tokens, llama_ok=7, llama_errors=5, mistral_ok=3, mistral_errors=9)
        samples = collect(collector, time.monotonic())

    assert samples.value("esnode_app_tokens_total", model="llama-3-70b") == 500
    assert samples.value("esnode_app_tokens_total", model="mistral-7b") == 50
    assert samples.value("esnode_app_requests_total", model="llama-3-70b") == 7
    assert samples.value("esnode_app_requests_total", model="mistral-7b") == 3


@pytest.mark.parametrize("configured_model", ["tgi-llama-3-70b", None])
def test_tgi_histogram_sum_counts_generated_tokens_under_the_configured_model_or_the_target(
    configured_model: str | None,
) -> None:
    with ModelServer(exposition("tgi", successes=40, generated_tokens=4000)) as server:
        collector = app_collector(AppTarget(server.url, configured_model))
        collect(collector, time.monotonic())
        server.body = exposition("tgi", successes=45, generated_tokens=4600)
        samples = collect(collector, time.monotonic())

    model = configured_model or server.url
    assert samples.value("esnode_app_tokens_total", model=model) == 600
    assert samples.value("esnode_app_requests_total", model=model) == 5


def test_untyped_counter_without_total_suffix_is_recognised() -> None:
    with ModelServer("tgi_request_success 1\n") as server:
        collector = app_collector(AppTarget(server.url, "tgi"))
        collect(collector, time.monotonic())
        server.body = "tgi_request_success 4\n"
        assert collect(collector, time.monotonic()).value("esnode_app_requests_total", model="tgi") == 3


def test_metrics_sharing_a_prefix_with_a_recognised_counter_are_not_counted() -> None:
    body = (
        "model_tokens_total{{model='m'}} {0}\nmodel_tokens_created{{model='m'}} {1}\nmodel_tokens_bucket 9\n"
    )
    with ModelServer(body.format(1, 100).replace("'", '"')) as server:
        collector = app_collector(server.url)
        collect(collector, time.monotonic())
        server.body = body.format(2, 900).replace("'", '"')
        assert collect(collector, time.monotonic()).value("esnode_app_tokens_total", model="m") == 1


def test_counter_reset_counts_the_new_value_and_the_total_never_falls() -> None:
    with ModelServer(vllm(1000, 5000)) as server:
        collector = app_collector(server.url)
        collect(collector, time.monotonic())
        server.body = vllm(1200, 5300)
        before_restart = collect(collector, time.monotonic()).value("esnode_app_tokens_total", model=LLAMA_8B)
        server.body = vllm(30, 70)  # the server restarted: its counters began again from zero
        after_restart = collect(collector, time.monotonic()).value("esnode_app_tokens_total", model=LLAMA_8B)

    assert before_restart == 500
    assert after_restart == 600


def test_one_series_reset_is_not_cancelled_by_another_series_growth() -> None:
    with ModelServer(generic(llama_serving_tokens=1000, llama_batch_tokens=10)) as server:
        collector = app_collector(server.url)
        collect(collector, time.monotonic())
        # Summed, 1010 -> 1010 would look like no change; per series it is a reset (+5) and +995.
        server.body = generic(llama_serving_tokens=5, llama_batch_tokens=1005)
        assert (
            collect(collector, time.monotonic()).value("esnode_app_tokens_total", model="llama-3-70b") == 1000
        )


def test_series_created_after_the_first_fetch_counts_from_zero() -> None:
    """prometheus_client creates a labelled counter on first use: finished_reason=length at 2 is 2 new."""
    first = f'vllm:request_success_total{{finished_reason="stop",model_name="{LLAMA_8B}"}} 10\n'
    added = f'vllm:request_success_total{{finished_reason="length",model_name="{LLAMA_8B}"}} 2\n'
    with ModelServer(first) as server:
        collector = app_collector(server.url)
        collect(collector, time.monotonic())
        server.body = first + added
        assert collect(collector, time.monotonic()).value("esnode_app_requests_total", model=LLAMA_8B) == 2


def test_hung_endpoint_costs_at_most_the_timeout_and_the_healthy_one_still_reports() -> None:
    timeout_seconds = 0.5
    with ModelServer(vllm(1, 1)) as healthy, ModelServer(vllm(1, 1), delay_seconds=10) as hung:
        collector = app_collector(healthy.url, hung.url, timeout_seconds=timeout_seconds)
        durations = []
        for tokens in (100, 200, 300):
            healthy.body = vllm(tokens, 0)
            started = time.monotonic()
            samples = collect(collector, time.monotonic())
            durations.append(time.monotonic() - started)

    assert max(durations) < timeout_seconds + 0.3
    assert samples.value("esnode_app_scrape_success", target=healthy.url) == 1
    assert samples.value("esnode_app_scrape_success", target=hung.url) == 0
    assert samples.value("esnode_app_tokens_total", model=LLAMA_8B) == 200


def test_answer_that_never_ends_is_not_fetched_again_while_outstanding() -> None:
    """Bytes trickling in faster than the read timeout keep a fetch alive; the cycle still moves on."""
    timeout_seconds = 0.5
    with ModelServer(vllm(1, 1), trickle_seconds=0.1) as trickling:
        collector = app_collector(trickling.url, timeout_seconds=timeout_seconds)
        durations = []
        for _ in range(3):
            started = time.monotonic()
            samples = collect(collector, time.monotonic())
            durations.append(time.monotonic() - started)
        requests = trickling.requests

    assert requests == 1
    assert samples.value("esnode_app_scrape_success", target=trickling.url) == 0
    assert durations[0] < timeout_seconds + 0.3
    assert max(durations[1:]) < 0.1  # nothing new to wait for


def test_dead_endpoint_reports_failure_and_is_logged_once_until_it_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = dead_url()
    collector = app_collector(url)
    with caplog.at_level(logging.INFO, logger="esnode_agent.collectors.app_metrics"):
        outcomes = [
            collect(collector, time.monotonic()).value("esnode_app_scrape_success", target=url)
            for _ in range(3)
        ]
        port = int(url.split(":")[2].split("/")[0])
        with ModelServer(vllm(5, 5), port=port):
            outcomes.append(
                collect(collector, time.monotonic()).value("esnode_app_scrape_success", target=url)
            )

    assert outcomes == [0, 0, 0, 1]
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (logging.WARNING, "model server endpoint unavailable"),
        (logging.INFO, "model server endpoint recovered"),
    ]
    assert caplog.records[0].target == url  # type: ignore[attr-defined]


def test_error_status_is_a_failed_fetch_and_adds_nothing() -> None:
    with ModelServer(vllm(100, 100)) as server:
        collector = app_collector(server.url)
        collect(collector, time.monotonic())
        server.status, server.body = 503, vllm(900, 900)
        failed = collect(collector, time.monotonic())

    assert failed.value("esnode_app_scrape_success", target=server.url) == 0
    assert failed.named("esnode_app_tokens_total") == []


def test_configured_counter_list_replaces_the_defaults() -> None:
    with ModelServer(vllm(100, 100)) as server:
        names = CounterNames(["vllm:generation_tokens_total"], [])
        collector = AppMetricsCollector([AppTarget(server.url)], names, 1.0)
        collect(collector, time.monotonic())
        server.body = vllm(150, 180)
        samples = collect(collector, time.monotonic())

    assert samples.value("esnode_app_tokens_total", model=LLAMA_8B) == 80
    assert samples.named("esnode_app_requests_total") == []


# Config: lists come as TOML arrays or as one comma-separated flag or environment value.


def test_flag_and_environment_lists_are_comma_separated(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ESNODE_APP_TOKEN_COUNTERS", "a_total, b_sum")
    flags = {"app_metrics_urls": "http://127.0.0.1:8000/metrics,http://127.0.0.1:8001/metrics"}
    config = load_config(flags, cwd=tmp_path).config

    assert config.app_metrics_urls == ("http://127.0.0.1:8000/metrics", "http://127.0.0.1:8001/metrics")
    assert config.app_token_counters == ("a_total", "b_sum")


def test_toml_lists_and_per_target_settings(tmp_path: Path) -> None:
    (tmp_path / "esnode.toml").write_text(
        'app_metrics_urls = ["http://127.0.0.1:8000/metrics", "http://127.0.0.1:8080/metrics"]\n'
        '[app_model_names]\n"http://127.0.0.1:8080/metrics" = "llama-3-70b"\n'
        '[app_gpu_uuids]\n"http://127.0.0.1:8000/metrics" = ["GPU-a", "GPU-b"]\n'
    )
    config = load_config({}, cwd=tmp_path).config

    assert config.app_model_names == {"http://127.0.0.1:8080/metrics": "llama-3-70b"}
    assert config.app_gpu_uuids == {"http://127.0.0.1:8000/metrics": ("GPU-a", "GPU-b")}


def test_gpu_flag_repeats_a_target_once_per_gpu() -> None:
    url = "http://127.0.0.1:8000/metrics"
    config = AgentConfig.model_validate(
        {"app_metrics_urls": url, "app_gpu_uuids": f"{url}=GPU-a,{url}=GPU-b"}
    )
    assert config.app_gpu_uuids == {url: ("GPU-a", "GPU-b")}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"app_metrics_urls": "127.0.0.1:8000/metrics"}, "not an http(s) URL"),
        ({"app_token_counters": "tokens-total"}, "not a Prometheus metric name"),
        ({"app_model_names": "http://127.0.0.1:1/metrics=tgi"}, "not in app_metrics_urls"),
        (
            {"app_metrics_urls": "http://127.0.0.1:1/metrics", "app_gpu_uuids": "GPU-a"},
            "expected TARGET=VALUE",
        ),
    ],
)
def test_bad_app_settings_are_rejected_by_key(flags: dict[str, str], message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="app_") as raised:
        load_config(flags, cwd=tmp_path)
    assert message in str(raised.value)


def test_fetch_timeout_stays_below_the_collector_timeout() -> None:
    assert AgentConfig().effective_app_metrics_timeout_seconds == 2.0
    assert AgentConfig(scrape_interval_seconds=1).effective_app_metrics_timeout_seconds == 0.75


def test_registered_only_when_endpoints_are_configured() -> None:
    assert not {"app_metrics", "efficiency"} & {c.name for c in build_collectors(AgentConfig())}
    configured = AgentConfig.model_validate({"app_metrics_urls": "http://127.0.0.1:8000/metrics"})
    assert {"app_metrics", "efficiency"} <= {c.name for c in build_collectors(configured)}
