"""XID error counting: a thread waits on the backend's event source, the collector reads the counts.

Best-effort by nature: NVML queues a bounded number of events, so a burst can lose some. The wait
has a short timeout so the thread notices a stop request; collection never waits on it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from esnode_agent.gpu.backend import XidEventSource

log = logging.getLogger(__name__)

WAIT_TIMEOUT_SECONDS = 0.5


class XidCounter:
    """Counts XID events by (GPU UUID, XID) since the agent started."""

    def __init__(self, source: XidEventSource, wait_timeout_seconds: float = WAIT_TIMEOUT_SECONDS) -> None:
        self._source = source
        self._wait_timeout_seconds = wait_timeout_seconds
        self._counts: dict[tuple[str, int], int] = {}
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-xid-events", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self._wait_timeout_seconds * 4)
        self._source.close()

    def counts(self) -> Mapping[tuple[str, int], int]:
        with self._lock:
            return dict(self._counts)

    def last(self) -> Mapping[str, int]:
        """GPU UUID -> the XID of its latest event (dcgm-exporter's DCGM_FI_DEV_XID_ERRORS)."""
        with self._lock:
            return dict(self._last)

    def _run(self) -> None:
        last_error: str | None = None
        while not self._stop.is_set():
            try:
                event = self._source.wait(self._wait_timeout_seconds)
            except Exception as exc:  # a lost GPU or a driver fault must not end the thread
                if str(exc) != last_error:
                    log.warning("XID event wait failed", extra={"error": f"{type(exc).__name__}: {exc}"})
                    last_error = str(exc)
                self._stop.wait(self._wait_timeout_seconds)
                continue
            last_error = None
            if event is not None:
                log.warning("GPU XID error", extra={"uuid": event.gpu_uuid, "xid": event.xid})
                with self._lock:
                    key = (event.gpu_uuid, event.xid)
                    self._counts[key] = self._counts.get(key, 0) + 1
                    self._last[event.gpu_uuid] = event.xid
