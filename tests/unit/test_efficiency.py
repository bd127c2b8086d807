"""Tokens and requests per joule: model-server counters over loopback HTTP joined with energy counters."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping

import pytest
from model_server import ModelServer, exposition

from esnode_agent.collectors.app_counters import CounterNames
from esnode_agent.collectors.app_metrics import AppMetricsCollector, AppTarget
from esnode_agent.collectors.efficiency import EfficiencyCollector
from esnode_agent.collectors.node_power import NODE_ENERGY
from esnode_agent.config.model import DEFAULT_APP_REQUEST_COUNTERS, DEFAULT_APP_TOKEN_COUNTERS
from esnode_agent.cycle.collector import STAGE_DERIVE, Collector
from esnode_agent.cycle.loop import CollectionLoop
from esnode_agent.cycle.samples import Sample, SampleIndex, SampleSink, counter
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.serve.status_view import status_view

# The GPU collector's energy counter as the metrics contract defines it (NVML total energy, in joules).
GPU_ENERGY = counter("esnode_gpu_energy_joules_total", "GPU energy.", "gpu", "uuid")
LLAMA_8B = "meta-llama/Llama-3.1-8B-Instruct"
INTERVAL_SECONDS = 5.0
NAMES = CounterNames(DEFAULT_APP_TOKEN_COUNTERS, DEFAULT_APP_REQUEST_COUNTERS)


def vllm(prompt: float, generation: float, stopped: float = 0, length: float = 0) -> str:
    return exposition(
        "vllm", prompt_tokens=prompt, generation_tokens=generation, stopped=stopped, length=length, aborted=0
    )


class Pipeline:
    """The app collector and the efficiency collector, with node and GPU energy the test supplies."""

    def __init__(
        self, *targets: AppTarget, window_seconds: float = 60.0, gpu_uuids: Mapping[str, Iterable[str]] = {}
    ) -> None:
        self.app = AppMetricsCollector(targets, NAMES, timeout_seconds=1.0)
        self.efficiency = EfficiencyCollector(window_seconds, gpu_uuids)
        self.now_seconds = 1000.0

    def cycle(self, node_joules: float | None, gpu_joules: Mapping[str, float] = {}) -> SampleIndex:
        self.now_seconds += INTERVAL_SECONDS
        read = SampleSink(self.now_seconds)
        self.app.collect(read)
        energy = [] if node_joules is None else [Sample(NODE_ENERGY, (), node_joules)]
        energy += [Sample(GPU_ENERGY, (str(i), uuid), j) for i, (uuid, j) in enumerate(gpu_joules.items())]
        assess = SampleSink(self.now_seconds, SampleIndex([*read.samples, *energy]))
        self.efficiency.collect(assess)
        return SampleIndex(assess.samples)


def test_tokens_and_requests_per_joule_match_the_counters_and_energy_within_one_percent() -> None:
    tokens_per_cycle = [900, 1100, 1000, 950, 1050]
    joules_per_cycle = [1900.0, 2100.0, 2050.0, 1950.0, 2000.0]
    with ModelServer(vllm(5000, 20000)) as server:
        pipeline = Pipeline(AppTarget(server.url))
        prompt, generation, requests, node_joules = 5000.0, 20000.0, 0.0, 123456.0
        pipeline.cycle(node_joules)
        for tokens, joules in zip(tokens_per_cycle, joules_per_cycle, strict=True):
            prompt, generation = prompt + tokens * 0.2, generation + tokens * 0.8
            requests, node_joules = requests + 4, node_joules + joules
            server.body = vllm(prompt, generation, stopped=requests * 0.75, length=requests * 0.25)
            samples = pipeline.cycle(node_joules)

    expected_tokens_per_joule = sum(tokens_per_cycle) / sum(joules_per_cycle)
    assert samples.value("esnode_app_tokens_per_joule", model=LLAMA_8B) == pytest.approx(
        expected_tokens_per_joule, rel=0.01
    )
    assert samples.value("esnode_app_requests_per_joule", model=LLAMA_8B) == pytest.approx(
        20 / sum(joules_per_cycle), rel=0.01
    )
    assert samples.value("esnode_app_tokens_per_second", model=LLAMA_8B) == pytest.approx(
        sum(tokens_per_cycle) / (5 * INTERVAL_SECONDS), rel=0.01
    )


def test_figures_cover_only_the_window() -> None:
    """A 20 s window holds four 5 s steps: after four steps at a new rate, the old rate is gone."""
    with ModelServer(vllm(0, 0)) as server:
        pipeline = Pipeline(AppTarget(server.url), window_seconds=20)
        tokens, joules = 0.0, 0.0
        pipeline.cycle(joules)
        figures = []
        for tokens_step, joules_step in [(1000, 2000)] * 4 + [(3000, 2000)] * 4:
            tokens, joules = tokens + tokens_step, joules + joules_step
            server.body = vllm(0, tokens)
            figures.append(pipeline.cycle(joules).value("esnode_app_tokens_per_joule", model=LLAMA_8B))

    assert figures[3] == pytest.approx(0.5)
    assert figures[5] == pytest.approx((2 * 1000 + 2 * 3000) / 8000)
    assert figures[7] == pytest.approx(1.5)


def test_model_server_restart_never_gives_a_negative_figure() -> None:
    with ModelServer(vllm(4000, 16000)) as server:
        pipeline = Pipeline(AppTarget(server.url))
        pipeline.cycle(0.0)
        server.body = vllm(4200, 16800)
        pipeline.cycle(2000.0)
        server.body = vllm(100, 300)  # restarted: 400 tokens since the restart
        samples = pipeline.cycle(4000.0)

    assert samples.value("esnode_app_tokens_per_joule", model=LLAMA_8B) == pytest.approx((1000 + 400) / 4000)
    assert samples.value("esnode_app_tokens_total", model=LLAMA_8B) is None  # the app collector's, not ours


def test_without_node_energy_per_joule_figures_are_absent_and_a_gap_leaves_the_rest_intact() -> None:
    with ModelServer(vllm(0, 0)) as server:
        pipeline = Pipeline(AppTarget(server.url))
        pipeline.cycle(None)
        server.body = vllm(0, 1000)
        no_energy = pipeline.cycle(None)
        server.body = vllm(0, 2000)
        pipeline.cycle(500.0)
        server.body = vllm(0, 3000)
        pipeline.cycle(None)  # the node power source vanished for one cycle
        server.body = vllm(0, 4000)
        pipeline.cycle(2500.0)
        server.body = vllm(0, 5000)
        with_gap = pipeline.cycle(4500.0)

    assert no_energy.named("esnode_app_tokens_per_joule") == []
    assert no_energy.value("esnode_app_tokens_per_second", model=LLAMA_8B) == pytest.approx(1000 / 5)
    # Only the last step has node energy at both ends: 1000 tokens over 2000 J.
    assert with_gap.value("esnode_app_tokens_per_joule", model=LLAMA_8B) == pytest.approx(0.5)


def test_models_sharing_the_node_are_each_measured_against_all_of_its_energy() -> None:
    def generic(llama: float, mistral: float) -> str:
        zero = dict.fromkeys(
            ("llama_ok", "llama_errors", "mistral_ok", "mistral_errors", "llama_batch_tokens"), 0
        )
        return exposition("generic", llama_serving_tokens=llama, mistral_tokens=mistral, **zero)

    with ModelServer(generic(0, 0)) as server:
        pipeline = Pipeline(AppTarget(server.url))
        pipeline.cycle(0.0)
        server.body = generic(3000, 1000)
        samples = pipeline.cycle(2000.0)

    assert samples.value("esnode_app_tokens_per_joule", model="llama-3-70b") == pytest.approx(1.5)
    assert samples.value("esnode_app_tokens_per_joule", model="mistral-7b") == pytest.approx(0.5)


def test_gpu_energy_of_the_configured_gpus_only_with_resets_corrected() -> None:
    with ModelServer(vllm(0, 0)) as server:
        pipeline = Pipeline(AppTarget(server.url), gpu_uuids={server.url: ["GPU-a", "GPU-b"]})
        pipeline.cycle(0.0, {"GPU-a": 100.0, "GPU-b": 200.0, "GPU-other": 0.0})
        server.body = vllm(0, 900)
        pipeline.cycle(2000.0, {"GPU-a": 400.0, "GPU-b": 500.0, "GPU-other": 5000.0})
        server.body = vllm(0, 1800)
        # GPU-b's counter restarted (driver reload): 300 J since then.
        samples = pipeline.cycle(4000.0, {"GPU-a": 700.0, "GPU-b": 300.0, "GPU-other": 9000.0})

    assert samples.value("esnode_app_gpu_tokens_per_joule", model=LLAMA_8B) == pytest.approx(1800 / 1200)
    assert samples.value("esnode_app_tokens_per_joule", model=LLAMA_8B) == pytest.approx(1800 / 4000)


def test_gpu_figures_are_absent_without_a_gpu_mapping_or_when_a_mapped_gpu_is_unread() -> None:
    with ModelServer(vllm(0, 0)) as server:
        unmapped = Pipeline(AppTarget(server.url))
        mapped = Pipeline(AppTarget(server.url), gpu_uuids={server.url: ["GPU-a", "GPU-missing"]})
        for pipeline in (unmapped, mapped):
            server.body = vllm(0, 0)
            pipeline.cycle(0.0, {"GPU-a": 0.0})
            server.body = vllm(0, 100)
            samples = pipeline.cycle(100.0, {"GPU-a": 50.0})
            assert samples.named("esnode_app_gpu_tokens_per_joule") == []
            assert samples.value("esnode_app_tokens_per_joule", model=LLAMA_8B) == pytest.approx(1.0)


class SteadyNodeEnergy:
    """Stands in for node power (its own tests cover it): 400 W, as an energy counter."""

    name = "node_power"
    stage = STAGE_DERIVE

    def collect(self, sink: SampleSink) -> None:
        sink.add(NODE_ENERGY, 400.0 * sink.now_seconds)


async def test_in_the_loop_a_hung_endpoint_delays_no_cycle_and_status_shows_the_figures() -> None:
    fetch_timeout_seconds = 0.4
    snapshots: list[Snapshot] = []

    async def keep(snapshot: Snapshot) -> None:
        snapshots.append(snapshot)

    with ModelServer(vllm(0, 0)) as healthy, ModelServer(vllm(0, 0), delay_seconds=10) as hung:
        app = AppMetricsCollector([AppTarget(healthy.url), AppTarget(hung.url)], NAMES, fetch_timeout_seconds)
        collectors: list[Collector] = [app, SteadyNodeEnergy(), EfficiencyCollector(60.0, {})]
        loop = CollectionLoop(collectors, interval_seconds=1.0, timeout_seconds=1.0, on_snapshot=keep)
        for tokens in (0, 1000, 2000):
            healthy.body = vllm(0, tokens)
            await loop.run_once()
            await asyncio.sleep(0.05)  # some node energy between cycles

    assert max(s.cycle_seconds for s in snapshots) < fetch_timeout_seconds + 0.3
    assert all(h.success for s in snapshots for h in s.health)
    efficiency = status_view(snapshots[-1], time.time())["efficiency"]
    assert efficiency["targets"] == {healthy.url: True, hung.url: False}
    figures = efficiency["models"][LLAMA_8B]
    assert figures["tokens_total"] == 2000
    assert figures["tokens_per_joule"] > 0
    assert figures["tokens_per_second"] > 0
    assert figures["gpu_tokens_per_joule"] is None
