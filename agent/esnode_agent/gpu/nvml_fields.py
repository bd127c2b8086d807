"""The NVML field values read in one nvmlDeviceGetFieldValues call per GPU per cycle.

A field is (field ID, scope ID); the power fields are scoped by power domain (the GPU's own).
Units are NVML's: mW for power, mJ for energy, degrees C, counts; the backend converts.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import pynvml  # type: ignore[import-untyped]  # constants only

from esnode_agent.gpu.nvml_api import FieldValue

FieldKey = tuple[int, int]  # (field ID, scope ID)

_GPU_POWER = pynvml.NVML_POWER_SCOPE_GPU
# Ampere (but GA100) and later: a 1 s average, what nvmlDeviceGetPowerUsage returns there too.
POWER = (pynvml.NVML_FI_DEV_POWER_AVERAGE, _GPU_POWER)
POWER_LIMIT = (pynvml.NVML_FI_DEV_POWER_CURRENT_LIMIT, _GPU_POWER)  # the enforced limit
POWER_LIMIT_MIN = (pynvml.NVML_FI_DEV_POWER_MIN_LIMIT, _GPU_POWER)
POWER_LIMIT_MAX = (pynvml.NVML_FI_DEV_POWER_MAX_LIMIT, _GPU_POWER)
POWER_LIMIT_DEFAULT = (pynvml.NVML_FI_DEV_POWER_DEFAULT_LIMIT, _GPU_POWER)
ENERGY = (pynvml.NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, 0)
ECC_CORRECTED = (pynvml.NVML_FI_DEV_ECC_SBE_VOL_TOTAL, 0)  # volatile, as the legacy call is asked
ECC_UNCORRECTED = (pynvml.NVML_FI_DEV_ECC_DBE_VOL_TOTAL, 0)
MEMORY_TEMPERATURE = (pynvml.NVML_FI_DEV_MEMORY_TEMP, 0)
PCIE_REPLAYS = (pynvml.NVML_FI_DEV_PCIE_REPLAY_COUNTER, 0)
NVLINK_ERRORS = {
    "crc": (pynvml.NVML_FI_DEV_NVLINK_CRC_DATA_ERROR_COUNT_TOTAL, 0),
    "replay": (pynvml.NVML_FI_DEV_NVLINK_REPLAY_ERROR_COUNT_TOTAL, 0),
    "recovery": (pynvml.NVML_FI_DEV_NVLINK_RECOVERY_ERROR_COUNT_TOTAL, 0),
}
RETIRED_SBE = (pynvml.NVML_FI_DEV_RETIRED_SBE, 0)
RETIRED_DBE = (pynvml.NVML_FI_DEV_RETIRED_DBE, 0)
RETIRED_PENDING = (pynvml.NVML_FI_DEV_RETIRED_PENDING, 0)
REMAPPED_COR = (pynvml.NVML_FI_DEV_REMAPPED_COR, 0)
REMAPPED_UNC = (pynvml.NVML_FI_DEV_REMAPPED_UNC, 0)
REMAPPED_PENDING = (pynvml.NVML_FI_DEV_REMAPPED_PENDING, 0)
REMAPPED_FAILURE = (pynvml.NVML_FI_DEV_REMAPPED_FAILURE, 0)
NVLINK_RX = pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX  # scoped by link
NVLINK_TX = pynvml.NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX

SCALAR_FIELDS: tuple[FieldKey, ...] = (
    POWER,
    POWER_LIMIT,
    POWER_LIMIT_MIN,
    POWER_LIMIT_MAX,
    POWER_LIMIT_DEFAULT,
    ENERGY,
    ECC_CORRECTED,
    ECC_UNCORRECTED,
    MEMORY_TEMPERATURE,
    PCIE_REPLAYS,
    *NVLINK_ERRORS.values(),
    RETIRED_SBE,
    RETIRED_DBE,
    RETIRED_PENDING,
    REMAPPED_COR,
    REMAPPED_UNC,
    REMAPPED_PENDING,
    REMAPPED_FAILURE,
)


@dataclass(frozen=True, slots=True)
class FieldReadout:
    """One batch's answers. ``failed``: fields that erred this cycle (no fallback call for them)."""

    values: Mapping[FieldKey, float] = field(default_factory=dict)
    failed: Collection[FieldKey] = frozenset()

    def get(self, key: FieldKey) -> float | None:
        return self.values.get(key)


def number(value: FieldValue) -> float:
    """A field's value by its NVML value type."""
    kind = value.valueType
    v = value.value
    if kind == pynvml.NVML_VALUE_TYPE_DOUBLE:
        return float(v.dVal)
    by_type = {
        pynvml.NVML_VALUE_TYPE_UNSIGNED_INT: v.uiVal,
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG: v.ulVal,
        pynvml.NVML_VALUE_TYPE_UNSIGNED_LONG_LONG: v.ullVal,
        pynvml.NVML_VALUE_TYPE_SIGNED_LONG_LONG: v.sllVal,
        pynvml.NVML_VALUE_TYPE_SIGNED_INT: v.siVal,
        pynvml.NVML_VALUE_TYPE_UNSIGNED_SHORT: v.usVal,
    }
    return float(by_type.get(kind, v.ullVal))
