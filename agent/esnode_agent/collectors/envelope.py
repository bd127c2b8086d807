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


class EnvelopeHolder:
    """The envelope in force: the configured one wins; else the one the fleet's budget gave this node
    (from its EsnodeNode's spec.envelopeWatts, handed in by the node reporter)."""

    def __init__(self, static_watts: float | None) -> None:
        self.static_watts = static_watts
        self._fleet_watts: float | None = None

    @property
    def current_watts(self) -> float | None:
        return self.static_watts if self.static_watts is not None else self._fleet_watts

    def offer_fleet(self, watts: float | None) -> bool:
        """Take the fleet's envelope (None: none); True when the envelope in force changed."""
        before = self.current_watts
        self._fleet_watts = watts
        return self.current_watts != before


class EnvelopeCollector:
    """Registered when an envelope is configured or may come from the fleet; without one it reports
    nothing, without node power it reports the budget alone."""

    name = "envelope"
    stage = STAGE_ASSESS

    def __init__(self, envelope: EnvelopeHolder | float) -> None:
        self.holder = envelope if isinstance(envelope, EnvelopeHolder) else EnvelopeHolder(envelope)

    def collect(self, sink: SampleSink) -> None:
        envelope_watts = self.holder.current_watts
        if envelope_watts is None:
            return
        sink.add(ENVELOPE, envelope_watts)
        power_watts = sink.upstream.value(NODE_POWER.name)
        if power_watts is not None:
            sink.add(EXCEEDED, 1 if power_watts > envelope_watts else 0)
            sink.add(HEADROOM, envelope_watts - power_watts)
