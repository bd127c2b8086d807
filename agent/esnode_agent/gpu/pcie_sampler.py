"""Samples PCIe throughput off the collection path.

NVML measures PCIe throughput over a 20 ms window per direction: measured on an H200 (driver
580), one GPU's two calls took 42 ms of a 46 ms read. A background thread takes those samples
once per interval and devices serve the latest, so a collection costs register reads only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from esnode_agent.gpu.backend import GpuLostError

log = logging.getLogger(__name__)

PCIE_SAMPLE_INTERVAL_SECONDS = 5.0


class PcieSampler:
    """One daemon thread refreshing every device's PCIe sample; stopped with the backend."""

    def __init__(self, refreshers: Sequence[Callable[[], None]], interval_seconds: float) -> None:
        self._refreshers = refreshers
        self._interval_seconds = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gpu-pcie-sampler", daemon=True)

    def start(self) -> None:
        if self._refreshers:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            for refresh in self._refreshers:
                try:
                    refresh()
                except GpuLostError:
                    pass  # the collection path reports a lost GPU; nothing to sample from it
                except Exception:  # a sampler fault must not end sampling for the other GPUs
                    log.exception("PCIe sample failed")
            self._stop.wait(self._interval_seconds)
