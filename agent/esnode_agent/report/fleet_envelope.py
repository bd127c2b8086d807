"""The envelope the fleet's power budget gives this node, from its EsnodeNode's spec, put in force.

The node reporter reads spec.envelopeWatts from each EsnodeNode it writes back (no watch, no extra
request); the envelope collector reads it from the holder the next cycle. A configured envelope wins.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from esnode_agent.collectors.envelope import EnvelopeCollector
from esnode_agent.cycle.collector import Collector

log = logging.getLogger(__name__)


def follow_fleet_envelope(collectors: Sequence[Collector]) -> Callable[[float | None], None] | None:
    holder = next((c.holder for c in collectors if isinstance(c, EnvelopeCollector)), None)
    if holder is None:
        return None

    def apply(watts: float | None) -> None:
        if holder.offer_fleet(watts):
            log.info("node envelope from the fleet budget", extra={"envelope_watts": holder.current_watts})

    return apply
