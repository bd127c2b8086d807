"""Opens the GPU backend a gpu_backend setting names: the one place the real NVML library is loaded."""

from __future__ import annotations

import time
from collections.abc import Callable

import pynvml  # type: ignore[import-untyped]

from esnode_agent.gpu.backend import GpuBackend
from esnode_agent.gpu.nvml_backend import open_nvml
from esnode_agent.gpu.sim_backend import FakeNvml
from esnode_agent.gpu.sim_profile import BACKEND_NVML, SIM_PREFIX, check_backend_spec, load_profile


def open_backend(spec: str, clock: Callable[[], float] = time.monotonic) -> GpuBackend:
    """``nvml``: the driver's library (the null backend if it cannot be opened); ``sim:PROFILE``: simulated."""
    check_backend_spec(spec)
    if spec == BACKEND_NVML:
        return open_nvml(pynvml)
    return open_nvml(FakeNvml(load_profile(spec.removeprefix(SIM_PREFIX)), clock))
