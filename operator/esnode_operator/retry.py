"""The operator's own retry schedule for API faults (5xx, timeouts, connection errors).

kopf's default for an unexpected error is 60 s; a fleet created during a short apiserver stall
would then wait a minute after the apiserver is back. Doubling from 1 s, capped at 10 s, keeps
a healthy apiserver unloaded and converges within 10 s of its return.
"""

from __future__ import annotations

import kopf

FIRST_RETRY_SECONDS = 1.0
MAX_RETRY_SECONDS = 10.0
API_REQUEST_TIMEOUT_SECONDS = 30.0  # kopf's own default is 300 s: a stalled call would hold a fleet that long
API_CONNECT_TIMEOUT_SECONDS = 5.0


def retry_delay_seconds(retry: int) -> float:
    """Delay before attempt ``retry + 1`` (kopf counts retries from 0)."""
    return min(FIRST_RETRY_SECONDS * 2.0 ** max(retry, 0), MAX_RETRY_SECONDS)


def schedule_seconds() -> tuple[float, ...]:
    """The delays in order until the cap (1, 2, 4, 8, 10): kopf repeats the last one after."""
    delays = [retry_delay_seconds(0)]
    while delays[-1] < MAX_RETRY_SECONDS:
        delays.append(retry_delay_seconds(len(delays)))
    return tuple(delays)


def configure_retries(settings: kopf.OperatorSettings) -> None:
    """kopf's own retries on the same schedule: its API calls (watches, finalizer and progress
    patches), its throttling after an unexpected error (default 1 s growing to 610 s: 30 s into an
    apiserver stall the next try was 21 s away), and a handler's unexpected error (default 60 s)."""
    settings.networking.error_backoffs = schedule_seconds()
    settings.networking.request_timeout = API_REQUEST_TIMEOUT_SECONDS
    settings.networking.connect_timeout = API_CONNECT_TIMEOUT_SECONDS
    settings.watching.connect_timeout = API_CONNECT_TIMEOUT_SECONDS
    settings.queueing.error_delays = schedule_seconds()
    settings.execution.default_backoff = MAX_RETRY_SECONDS
