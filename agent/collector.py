"""The collector seam: what the loop runs, and the outcomes it distinguishes."""

from __future__ import annotations

from typing import Protocol

from esnode_agent.samples import SampleSink

# Stages run in order; collectors within one stage run concurrently.
STAGE_READ = 0  # read a source: procfs, sysfs, NVML, model servers
STAGE_DERIVE = 1  # combine stage-0 samples: node power, degradation flags
STAGE_ASSESS = 2  # judge derived values: power envelope, efficiency


class NoDataError(Exception):
    """The source does not exist or cannot be read here: a quiet outcome, not a fault."""


class Collector(Protocol):
    """Reads one source and writes samples; knows nothing of HTTP, Kubernetes or its peers.

    Collectors of one ``stage`` run concurrently; a later stage sees earlier stages' samples
    through ``sink.upstream`` (node power sums what RAPL, hwmon and GPUs reported).
    """

    name: str
    stage: int

    def collect(self, sink: SampleSink) -> None: ...
