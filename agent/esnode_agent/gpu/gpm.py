"""Profiling ratios through NVML GPM (GPU Performance Monitoring, Hopper and later).

GPM metrics are computed by NVML from a pair of samples: each cycle takes one sample (a GPU's
with nvmlGpmSampleGet, a GPU instance's with nvmlGpmMigSampleGet) and asks nvmlGpmMetricsGet for
the metrics between it and the previous cycle's, so a ratio covers exactly one cycle. The first
cycle has no pair and reports nothing. Two samples per reader are allocated once and reused.
"""

from __future__ import annotations

from collections.abc import Callable

import pynvml  # type: ignore[import-untyped]  # structs and constants

from esnode_agent.gpu.nvml_api import GpmSample, NvmlApi

# activity label -> GPM metric (percent 0..100; reported as a ratio 0..1, as DCGM's PROF fields).
GPM_METRICS = {
    "graphics_engine": pynvml.NVML_GPM_METRIC_GRAPHICS_UTIL,
    "sm": pynvml.NVML_GPM_METRIC_SM_UTIL,
    "sm_occupancy": pynvml.NVML_GPM_METRIC_SM_OCCUPANCY,
    "tensor": pynvml.NVML_GPM_METRIC_ANY_TENSOR_UTIL,
    "dram": pynvml.NVML_GPM_METRIC_DRAM_BW_UTIL,
}


class GpmReader:
    """One GPU's or GPU instance's ratios between consecutive samples."""

    def __init__(self, lib: NvmlApi, take: Callable[[GpmSample], object]) -> None:
        self._lib = lib
        self._take = take  # fills a sample: nvmlGpmSampleGet or nvmlGpmMigSampleGet
        self._previous: GpmSample | None = None
        self._spare: GpmSample | None = None

    def read(self) -> dict[str, float]:
        """activity -> ratio over the last cycle; empty on the first. Raises pynvml.NVMLError."""
        current = self._spare if self._spare is not None else self._lib.nvmlGpmSampleAlloc()
        self._spare = None
        self._take(current)
        previous, self._previous = self._previous, current
        if previous is None:
            return {}
        self._spare = previous
        return self._metrics(previous, current)

    def close(self) -> None:
        for sample in (self._previous, self._spare):
            if sample is not None:
                self._lib.nvmlGpmSampleFree(sample)
        self._previous = self._spare = None

    def _metrics(self, first: GpmSample, second: GpmSample) -> dict[str, float]:
        request = pynvml.c_nvmlGpmMetricsGet_t()
        request.version = pynvml.NVML_GPM_METRICS_GET_VERSION
        request.numMetrics = len(GPM_METRICS)
        request.sample1, request.sample2 = first, second
        for slot, metric in enumerate(GPM_METRICS.values()):
            request.metrics[slot].metricId = metric
        self._lib.nvmlGpmMetricsGet(request)
        ratios = {}
        for slot, activity in enumerate(GPM_METRICS):
            metric = request.metrics[slot]
            if metric.nvmlReturn == pynvml.NVML_SUCCESS:
                ratios[activity] = min(max(metric.value / 100, 0.0), 1.0)
        return ratios


def gpm_supported(lib: NvmlApi, handle: object) -> bool:
    """Whether the GPU does GPM; raises pynvml.NVMLError (FUNCTION_NOT_FOUND on older drivers)."""
    return bool(lib.nvmlGpmQueryDeviceSupport(handle).isSupportedDevice)
