"""The pusher's metrics: outcomes of its pushes, retries, queue and the last push's duration.

A cycle shows what the pusher had done before it; the push of that cycle is counted in the next.
"""

from __future__ import annotations

from esnode_agent.cycle.collector import STAGE_ASSESS
from esnode_agent.cycle.samples import SampleSink, counter, gauge
from esnode_agent.otlp.push import RESULTS, OtlpPusher

PUSHES = counter(
    "esnode_otlp_push_total",
    "OTLP pushes by outcome: success, rejected (a 4xx other than 429), failed (still failing after the "
    "last retry), dropped (pushed out of the full queue by a newer snapshot).",
    "result",
)
RETRIES = counter("esnode_otlp_push_retries_total", "OTLP push attempts repeated after a retryable failure.")
QUEUED = gauge("esnode_otlp_queue_snapshots", "Snapshots waiting to be pushed.")
PUSH_DURATION = gauge(
    "esnode_otlp_push_duration_seconds",
    "Time the last finished OTLP push took: encoding, every attempt and the waits between them.",
)


class OtlpPushCollector:
    name = "otlp_push"
    stage = STAGE_ASSESS

    def __init__(self, pusher: OtlpPusher) -> None:
        self._pusher = pusher

    def collect(self, sink: SampleSink) -> None:
        stats = self._pusher.stats
        for result in RESULTS:
            sink.add(PUSHES, stats.results[result], result=result)
        sink.add(RETRIES, stats.retries)
        sink.add(QUEUED, stats.queued)
        if stats.last_duration_seconds is not None:
            sink.add(PUSH_DURATION, stats.last_duration_seconds)
