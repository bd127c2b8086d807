"""The operator's own retry schedule for API faults (5xx, timeouts, connection errors).

kopf's default for an unexpected error is 60 s; a fleet created during a short apiserver stall
would then wait a minute after the apiserver is back. Doubling from 1 s, capped at 10 s, keeps
a healthy apiserver unloaded and converges within 10 s of its return.
"""

from __future__ import annotations

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0


def retry_delay_seconds(retry: int) -> float:
    """Delay before attempt ``retry + 1`` (kopf counts retries from 0)."""
    return min(FIRST_RETRY_SECONDS * 2.0 ** max(retry, 0), MAX_RETRY_SECONDS)
