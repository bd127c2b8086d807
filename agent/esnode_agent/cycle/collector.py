"""The collector seam: what the loop runs, and the outcomes it distinguishes."""

from __future__ import annotations

from typing import Protocol

from esnode_agent.cycle.samples import SampleSink

# Stages run in order; only readers do I/O, so only they get threads and timeouts.
STAGE_READ = 0  # read a source: procfs, sysfs, NVML, model servers
STAGE_DERIVE = 1  # combine stage-0 samples: node power, degradation flags
STAGE_ASSESS = 2  # judge derived values: power envelope, efficiency


class NoDataError(Exception):
    """The source does not exist or cannot be read here: a quiet outcome, not a fault."""


class Collector(Protocol):
    """Reads one source and writes samples; knows nothing of HTTP, Kubernetes or its peers.

    Readers (STAGE_READ) run concurrently, each in a worker thread under a timeout; later stages
    compute over earlier stages' samples (``sink.upstream``: node power sums what RAPL, hwmon and
    GPUs reported) and run in order on the loop, doing no I/O.
    """

    name: str
    stage: int

    def collect(self, sink: SampleSink) -> None: ...
