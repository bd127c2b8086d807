#!/usr/bin/env python3
"""Wall time of each NVML query the agent makes, per GPU, on a real driver.

Tells which fields dominate the GPU collector's cycle (some NVML calls sample over a window
rather than read a register). Prints the median of several calls, in milliseconds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pynvml

from esnode_agent.gpu.nvml_fields import SCALAR_FIELDS

ROUNDS = 5


def _median_ms(call: Callable[[], Any]) -> str:
    samples = []
    for _ in range(ROUNDS):
        started = time.perf_counter()
        try:
            call()
        except pynvml.NVMLError as exc:
            return f"error: {exc}"
        samples.append(time.perf_counter() - started)
    return f"{1000 * statistics.median(samples):8.3f} ms"


def main() -> None:
    pynvml.nvmlInit()
    print("driver", pynvml.nvmlSystemGetDriverVersion())
    for index in range(pynvml.nvmlDeviceGetCount()):
        h = pynvml.nvmlDeviceGetHandleByIndex(index)
        calls: dict[str, Callable[[], Any]] = {
            "utilization": lambda h=h: pynvml.nvmlDeviceGetUtilizationRates(h),
            "memory": lambda h=h: pynvml.nvmlDeviceGetMemoryInfo(h),
            "temperature": lambda h=h: pynvml.nvmlDeviceGetTemperature(h, pynvml.NVML_TEMPERATURE_GPU),
            "power": lambda h=h: pynvml.nvmlDeviceGetPowerUsage(h),
            "power limit": lambda h=h: pynvml.nvmlDeviceGetEnforcedPowerLimit(h),
            "energy": lambda h=h: pynvml.nvmlDeviceGetTotalEnergyConsumption(h),
            "sm clock": lambda h=h: pynvml.nvmlDeviceGetClockInfo(h, pynvml.NVML_CLOCK_SM),
            "clock reasons": lambda h=h: pynvml.nvmlDeviceGetCurrentClocksEventReasons(h),
            "pstate": lambda h=h: pynvml.nvmlDeviceGetPerformanceState(h),
            "ecc": lambda h=h: pynvml.nvmlDeviceGetTotalEccErrors(
                h, pynvml.NVML_MEMORY_ERROR_TYPE_CORRECTED, pynvml.NVML_VOLATILE_ECC
            ),
            "pcie rx": lambda h=h: pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_RX_BYTES),
            "pcie tx": lambda h=h: pynvml.nvmlDeviceGetPcieThroughput(h, pynvml.NVML_PCIE_UTIL_TX_BYTES),
            "mig mode": lambda h=h: pynvml.nvmlDeviceGetMigMode(h),
            "nvlink state 0": lambda h=h: pynvml.nvmlDeviceGetNvLinkState(h, 0),
            # What the agent reads per cycle instead of power, power limit, energy and ECC above.
            f"field batch ({len(SCALAR_FIELDS)})": lambda h=h: pynvml.nvmlDeviceGetFieldValues(
                h, list(SCALAR_FIELDS)
            ),
        }
        print(f"GPU {index} {pynvml.nvmlDeviceGetName(h)}")
        for name, call in calls.items():
            print(f"  {name:<16} {_median_ms(call)}")
    pynvml.nvmlShutdown()


if __name__ == "__main__":
    main()
