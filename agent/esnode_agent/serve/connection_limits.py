"""uvicorn's h11 protocol with a request-read deadline and a cap on open connections.

uvicorn bounds the silence between keep-alive requests (`timeout_keep_alive`) but not the time a
request takes to arrive: any byte cancels that timer, and a fresh connection has none, so a client
sending one header byte a second (slowloris) held its connection, and a file descriptor, for ever.
Its `limit_concurrency` counts open connections as well as requests, but only ever answers 503 to
a finished request: idle connections are never closed, and once enough of them are open every
probe gets 503. Here a request (head and any body) must arrive within a deadline from its first
byte (from the connect, for a connection's first request), and past the cap a new connection
closes the one that has waited longest for a request (idle, or its request still arriving), so
slow or idle clients cannot lock out quick ones (a probe finishes its head in microseconds).
"""

from __future__ import annotations

import asyncio
import logging

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)

# h11 states in which the client has no more of this request to send.
_REQUEST_RECEIVED = (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR)


class BoundedH11Protocol(H11Protocol):
    """Set the two limits with `bounded_h11_protocol`; uvicorn builds one of these per connection."""

    request_timeout_seconds = 10.0
    max_connections = 512

    _request_timer: asyncio.TimerHandle | None = None
    _waiting_since: float = 0.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_request_timer()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_request_timer()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        self._waiting_since = self.loop.time()  # idle from now: first to go when room is needed
        super().on_response_complete()

    def handle_events(self) -> None:
        super().handle_events()
        if self.conn.their_state in _REQUEST_RECEIVED or self.transport.is_closing():
            self._cancel_request_timer()
        elif self._request_timer is None and self._has_partial_request():
            self._arm_request_timer()  # a keep-alive connection started its next request

    def _is_waiting(self) -> bool:
        """No request being answered: idle, or its request still arriving (an SSE stream is busy)."""
        return self.conn.their_state is h11.IDLE or self._request_timer is not None

    def _has_partial_request(self) -> bool:
        # Bytes h11 holds without an event yet, or a body still arriving. While a keep-alive
        # connection is silent, uvicorn's own timer (timeout_keep_alive) is the bound instead.
        return self.conn.their_state is not h11.IDLE or bool(self.conn.trailing_data[0])

    def _arm_request_timer(self) -> None:
        self._cancel_request_timer()
        self._waiting_since = self.loop.time()
        self._request_timer = self.loop.call_later(self.request_timeout_seconds, self._request_too_slow)

    def _cancel_request_timer(self) -> None:
        if self._request_timer is not None:
            self._request_timer.cancel()
            self._request_timer = None

    def _request_too_slow(self) -> None:
        self._request_timer = None
        log.warning(
            "connection closed: request not received in time",
            extra={"client": _peer(self), "timeout_seconds": self.request_timeout_seconds},
        )
        self.transport.close()

    def _make_room(self) -> None:
        waiting = [c for c in self.connections if isinstance(c, BoundedH11Protocol) and c._is_waiting()]
        oldest = min(waiting, key=lambda c: c._waiting_since)  # never empty: this one is waiting
        log.warning(
            "connection closed: too many open connections",
            extra={"client": _peer(oldest), "max_connections": self.max_connections},
        )
        oldest._cancel_request_timer()
        oldest.transport.close()
        # uvicorn drops it from the set only in connection_lost, a loop turn later; a burst of
        # connects must not count it again.
        self.connections.discard(oldest)


def _peer(protocol: H11Protocol) -> str:
    if protocol.client is None:
        return "unknown"
    host, port = protocol.client
    return f"{host}:{port}"


def bounded_h11_protocol(request_timeout_seconds: float, max_connections: int) -> type[BoundedH11Protocol]:
    """A protocol class for `uvicorn.Config(http=...)`, which takes a class, not an instance."""
    return type(
        "ConfiguredH11Protocol",
        (BoundedH11Protocol,),
        {"request_timeout_seconds": request_timeout_seconds, "max_connections": max_connections},
    )
