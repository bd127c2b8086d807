"""The node power envelope: the configured budget, whether node power exceeds it, and the headroom."""

from __future__ import annotations

from esnode_agent.collectors.node_power import NODE_POWER
from esnode_agent.cycle.collector import STAGE_ASSESS
from esnode_agent.cycle.samples import SampleSink, gauge

ENVELOPE = gauge(
    "esnode_node_power_envelope_watts", "Configured node power budget (node_power_envelope_watts)."
)
EXCEEDED = gauge(
    "esnode_node_power_envelope_exceeded",
    "1 when node power (esnode_node_power_watts) is above the configured envelope, else 0.",
)
HEADROOM = gauge(
    "esnode_node_power_headroom_watts",
    "Configured envelope minus node power; negative while the envelope is exceeded.",
)


class EnvelopeCollector:
    """Registered only when an envelope is configured; without node power it reports the budget alone."""

    name = "envelope"
    stage = STAGE_ASSESS

    def __init__(self, envelope_watts: float) -> None:
        self._envelope_watts = envelope_watts

    def collect(self, sink: SampleSink) -> None:
        sink.add(ENVELOPE, self._envelope_watts)
        power_watts = sink.upstream.value(NODE_POWER.name)
        if power_watts is not None:
            sink.add(EXCEEDED, 1 if power_watts > self._envelope_watts else 0)
            sink.add(HEADROOM, self._envelope_watts - power_watts)
