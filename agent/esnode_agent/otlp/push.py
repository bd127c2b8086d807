"""The OTLP pusher: a thread fed by the collection loop through a bounded queue.

The loop only hands over a reference to the finished Snapshot (immutable), at most once per
``otlp_interval_seconds``; encoding and sending happen on the pusher's thread, so a slow or failing
receiver costs neither a cycle nor a /metrics response. A full queue drops its oldest snapshot
(counted). A push is retried with exponential backoff on what the OTLP/HTTP spec calls retryable
(429, 502, 503, 504) and on connection errors, waiting at least what Retry-After asks.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

from esnode_agent.cycle.snapshot import Snapshot

if TYPE_CHECKING:  # the protobuf messages load only where a pusher is built (otlp/wiring.py)
    from esnode_agent.otlp.encode import SnapshotEncoder

log = logging.getLogger(__name__)

QUEUE_SNAPSHOTS = 8
RETRYABLE_STATUS = frozenset({429, 502, 503, 504})
MAX_ATTEMPTS = 5
BACKOFF_FIRST_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 30.0
RETRY_AFTER_MAX_SECONDS = 300.0  # a receiver asking for longer is waited on for this long
PROTOBUF = "application/x-protobuf"

# Outcomes of one queued snapshot (esnode_otlp_push_total{result}).
RESULT_SUCCESS = "success"
RESULT_REJECTED = "rejected"  # the receiver refused it for good (4xx but 429): retrying cannot help
RESULT_FAILED = "failed"  # still failing after MAX_ATTEMPTS
RESULT_DROPPED = "dropped"  # pushed out of a full queue by a newer snapshot
RESULTS = (RESULT_SUCCESS, RESULT_REJECTED, RESULT_FAILED, RESULT_DROPPED)


@dataclass(frozen=True, slots=True)
class PushStats:
    """What the pusher did so far; read by its collector once per cycle."""

    results: dict[str, int]
    retries: int
    queued: int
    last_duration_seconds: float | None  # the last finished push, its retries and waits included


@dataclass(frozen=True, slots=True)
class _Attempt:
    result: str | None  # None: retry
    error: str | None = None
    retry_after_seconds: float | None = None


def metrics_url(endpoint: str) -> str:
    """The OTLP/HTTP metrics path: given whole, or appended to a base (OTEL_EXPORTER_OTLP_ENDPOINT's rule)."""
    base = endpoint.rstrip("/")
    return base if base.endswith("/v1/metrics") else f"{base}/v1/metrics"


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Retry-After as delay-seconds or an HTTP date (RFC 9110 10.2.3); None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)


class OtlpPusher:
    def __init__(
        self,
        client: httpx.Client,
        url: str,
        encoder: SnapshotEncoder,
        interval_seconds: float,
        *,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        """``sleep(seconds)`` waits and returns True when the pusher is stopping (tests shorten it)."""
        self._client = client
        self._url = url
        self._encoder = encoder
        self._interval_seconds = interval_seconds
        self._queue: collections.deque[Snapshot] = collections.deque()
        self._ready = threading.Condition()
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._thread = threading.Thread(target=self._run, name="otlp-pusher", daemon=True)
        self._last_offered_seconds: float | None = None
        self._failing: str | None = None
        # Written under self._ready by the pusher thread (and offer, for drops).
        self._results = dict.fromkeys(RESULTS, 0)
        self._retries = 0
        self._last_duration_seconds: float | None = None

    @property
    def stats(self) -> PushStats:
        with self._ready:
            return PushStats(
                dict(self._results), self._retries, len(self._queue), self._last_duration_seconds
            )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stops waiting and retrying; what is still queued is not sent."""
        self._stopping.set()
        with self._ready:
            self._ready.notify_all()
        self._thread.join(timeout=1.0)
        if not self._thread.is_alive():  # else a request is in flight: the daemon thread ends with us
            self._client.close()

    def offer(self, snapshot: Snapshot) -> None:
        """Queue the snapshot when a push is due; called on the event loop, so it only appends."""
        last = self._last_offered_seconds
        # A cycle's jitter must not skip a push: "due" allows a tenth of the interval early.
        if last is not None and snapshot.timestamp_seconds - last < 0.9 * self._interval_seconds:
            return
        self._last_offered_seconds = snapshot.timestamp_seconds
        with self._ready:
            if len(self._queue) >= QUEUE_SNAPSHOTS:
                self._queue.popleft()
                self._results[RESULT_DROPPED] += 1
            self._queue.append(snapshot)
            self._ready.notify()

    def _run(self) -> None:
        while not self._stopping.is_set():
            with self._ready:
                self._ready.wait_for(lambda: bool(self._queue) or self._stopping.is_set())
                if self._stopping.is_set():
                    return
                snapshot = self._queue.popleft()
            try:
                self._push(snapshot)
            except Exception:  # a fault in encoding must cost one push, never the pusher
                log.exception("otlp push failed unexpectedly", extra={"url": self._url})
                with self._ready:
                    self._results[RESULT_FAILED] += 1

    def _push(self, snapshot: Snapshot) -> None:
        started = time.monotonic()
        body = self._encoder.encode(snapshot)
        attempt = _Attempt(None)
        for number in range(1, MAX_ATTEMPTS + 1):
            attempt = self._send(body)
            if attempt.result is not None or number == MAX_ATTEMPTS:
                break
            with self._ready:
                self._retries += 1
            if self._sleep(_backoff_seconds(number, attempt.retry_after_seconds)):
                return
        result = attempt.result or RESULT_FAILED
        with self._ready:
            self._last_duration_seconds = time.monotonic() - started
            self._results[result] += 1
        self._log_transition(result, attempt.error)

    def _send(self, body: bytes) -> _Attempt:
        try:
            response = self._client.post(self._url, content=body, headers={"Content-Type": PROTOBUF})
        except httpx.HTTPError as exc:  # refused, reset, timed out, TLS: all worth another try
            return _Attempt(None, f"{type(exc).__name__}: {exc}")
        if response.is_success:
            return _Attempt(RESULT_SUCCESS)
        error = f"HTTP {response.status_code}"
        if response.status_code in RETRYABLE_STATUS:
            return _Attempt(
                None, error, retry_after_seconds(response.headers.get("Retry-After"), time.time())
            )
        return _Attempt(RESULT_REJECTED, error)

    def _log_transition(self, result: str, error: str | None) -> None:
        """Logs when pushing starts failing, changes how, or recovers; never once per push."""
        # Keyed by the kind of error ("HTTP 503", "ConnectError"), not its text, which may vary.
        failing = None if result == RESULT_SUCCESS else f"{result}: {(error or '').split(':')[0]}"
        if failing == self._failing:
            return
        if failing is None:
            log.info("otlp push recovered", extra={"url": self._url})
        else:
            log.warning("otlp push failing", extra={"url": self._url, "result": result, "error": error})
        self._failing = failing


def _backoff_seconds(attempt: int, retry_after: float | None) -> float:
    """Exponential with full jitter's upper half (no herd of agents retrying in step), at least Retry-After."""
    ceiling = min(BACKOFF_MAX_SECONDS, BACKOFF_FIRST_SECONDS * 2 ** (attempt - 1))
    backoff = random.uniform(ceiling / 2, ceiling)
    return max(backoff, min(retry_after, RETRY_AFTER_MAX_SECONDS)) if retry_after is not None else backoff


def tls_context(
    ca_file: str | None, cert_file: str | None, key_file: str | None, insecure_skip_verify: bool
) -> ssl.SSLContext:
    """Raises OSError or ssl.SSLError for a file that cannot be read or used."""
    context = ssl.create_default_context(cafile=ca_file)
    if cert_file is not None:
        context.load_cert_chain(cert_file, key_file)
    if insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
