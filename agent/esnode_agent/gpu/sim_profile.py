"""Simulated GPU servers: the profile schema, the built-in profiles, and the gpu_backend setting's forms.

``gpu_backend`` is ``nvml`` or ``sim:NAME``, where NAME is a built-in profile (agent/gpu/profiles/
NAME.json) or the path of a JSON file with the same schema.
"""

from __future__ import annotations

from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

BACKEND_NVML = "nvml"
SIM_PREFIX = "sim:"


class SimMigInstance(BaseModel):
    """One MIG device: a compute instance in a GPU instance, as `nvidia-smi mig -lgi/-lci` shows it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    profile: str = Field(pattern=r"^(\d+c\.)?\d+g\.\d+gb(\+[a-z]+)?$", description="e.g. 3g.40gb")
    gpu_instance_id: int = Field(ge=0)
    compute_instance_id: int = Field(0, ge=0)
    sm_count: int = Field(gt=0)
    memory_total_bytes: int = Field(gt=0)


class SimGpuGroup(BaseModel):
    """``count`` identical GPUs; loads differ per GPU (phase from the profile's seed)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    count: int = Field(1, ge=1, le=64)
    model: str
    memory_total_bytes: int = Field(gt=0)
    power_limit_watts: float = Field(gt=0)
    idle_power_watts: float = Field(gt=0)
    power_average_field: bool = Field(
        True, description="Ampere (but GA100) and later average power over 1 s (field POWER_AVERAGE)"
    )
    memory_temperature: bool = Field(True, description="HBM boards report their memory's temperature")
    gpm: bool = Field(True, description="Hopper and later: GPM profiling metrics (NOT_SUPPORTED before)")
    max_sm_clock_mhz: int = Field(gt=0)
    idle_sm_clock_mhz: int = Field(gt=0)
    memory_clock_mhz: int = Field(gt=0)
    load_period_seconds: float = Field(300.0, gt=0, description="Period of the simulated load wave")
    steady_load: float | None = Field(
        None, ge=0, le=1, description="A constant load (a long training job) instead of the wave"
    )
    demand: Literal["wave", "diurnal", "training"] = Field(
        "wave",
        description="The load trace: a sine over load_period_seconds; diurnal inference (a day-long "
        "swell over load_period_seconds with minute ripples); training steps (compute at full load, "
        "then an all-reduce at low load, each step load_period_seconds long)",
    )
    # Power management, in NVML's terms (nvmlDeviceGetPowerManagementLimitConstraints, ...).
    min_power_limit_watts: float | None = Field(
        None, gt=0, description="Lowest settable limit; unset: a third of power_limit_watts"
    )
    max_power_limit_watts: float | None = Field(
        None, gt=0, description="Highest settable limit; unset: power_limit_watts (the default limit)"
    )
    power_limit_control: Literal["allowed", "no_permission", "not_supported"] = Field(
        "allowed",
        description="What nvmlDeviceSetPowerManagementLimit answers: success, NO_PERMISSION (not root) "
        "or NOT_SUPPORTED (and the constraint queries too)",
    )
    cooling_offset_celsius: float = Field(
        0.0, ge=0, le=40, description="Runs this much hotter than its peers (blocked airflow, failed fan)"
    )
    thermal_slowdown_celsius: float = Field(
        87.0, gt=0, description="At or above it the GPU reports thermal slowdown (sw and hw)"
    )
    has_fan: bool = Field(False, description="SXM boards have no fan of their own: fan reads NOT_SUPPORTED")
    energy_counter: bool = Field(True, description="Volta and later count total energy")
    nvlink_links: int = Field(0, ge=0, le=36)
    nvlink_bytes_per_second_per_link: float = Field(25e9, ge=0, description="Each direction, at full load")
    pcie_bytes_per_second: float = Field(50e9, ge=0, description="Each direction, at full load")
    remapped_rows: bool = Field(True, description="Ampere and later remap rows")
    retired_pages: bool = Field(False, description="Before Ampere, pages are retired instead")
    ecc_corrected_errors_per_hour: float = Field(0.0, ge=0)
    process_utilization: bool = Field(
        True, description="Maxwell and later sample per-process utilization (NOT_SUPPORTED before)"
    )
    mig_instances: tuple[SimMigInstance, ...] = ()
    fail_after_seconds: float | None = Field(
        None, ge=0, description="From then on every call on these GPUs raises NVML's GPU_IS_LOST"
    )

    @property
    def limit_range_watts(self) -> tuple[float, float]:
        low = self.min_power_limit_watts or self.power_limit_watts / 3
        return low, self.max_power_limit_watts or self.power_limit_watts

    @model_validator(mode="after")
    def _consistent(self) -> SimGpuGroup:
        if self.idle_power_watts > self.power_limit_watts:
            raise ValueError("idle_power_watts exceeds power_limit_watts")
        low, high = self.limit_range_watts
        if not low <= self.power_limit_watts <= high:
            raise ValueError("power_limit_watts (the default limit) is outside min/max_power_limit_watts")
        if sum(m.memory_total_bytes for m in self.mig_instances) > self.memory_total_bytes:
            raise ValueError("MIG instances hold more memory than the GPU has")
        return self


class SimProcess(BaseModel):
    """A process with a compute context on one GPU, or on one MIG device of a GPU in MIG mode."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gpu: int = Field(ge=0, description="NVML index of its GPU")
    gpu_instance_id: int | None = Field(
        None, ge=0, description="Its MIG device's GPU instance; required on a GPU in MIG mode, else unset"
    )
    pid: int = Field(gt=0, description="Its PID in the host's PID namespace")
    memory_used_bytes: int | None = Field(
        ge=0, description="GPU memory it holds; null: NVML_VALUE_NOT_AVAILABLE (pynvml's None)"
    )
    sm_share: float = Field(1.0, ge=0, le=1, description="Its part of its device's load, in SM utilization")


class SimProfile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = ""
    driver_version: str
    seed: int = 0
    gpus: tuple[SimGpuGroup, ...] = Field(min_length=1)
    driver_state_path: Path | None = Field(
        None,
        description="Where the simulated driver keeps the power limits set on its GPUs (JSON, by "
        "uuid), so that they outlive the process as a real driver's do; unset: in memory",
    )

    processes: tuple[SimProcess, ...] = Field(
        (), description="Compute processes, as nvmlDeviceGetComputeRunningProcesses lists them"
    )

    def expanded(self) -> list[SimGpuGroup]:
        """One entry per GPU, in NVML index order."""
        return [group for group in self.gpus for _ in range(group.count)]

    @model_validator(mode="after")
    def _processes_fit(self) -> SimProfile:
        gpus = self.expanded()
        shares: dict[tuple[int, int | None], float] = {}
        for process in self.processes:
            if process.gpu >= len(gpus):
                raise ValueError(f"process {process.pid} names GPU {process.gpu}; there are {len(gpus)}")
            instances = {m.gpu_instance_id for m in gpus[process.gpu].mig_instances}
            if (process.gpu_instance_id is None) != (not instances) or (
                instances and process.gpu_instance_id not in instances
            ):
                raise ValueError(
                    f"process {process.pid}: gpu_instance_id must name one of GPU {process.gpu}'s MIG "
                    "instances in MIG mode, and be unset otherwise"
                )
            device = (process.gpu, process.gpu_instance_id)
            shares[device] = shares.get(device, 0.0) + process.sm_share
            if shares[device] > 1.0 + 1e-9:
                raise ValueError(f"processes on GPU {process.gpu} share more than all of its SMs")
        return self


def builtin_profiles() -> list[str]:
    return sorted(
        entry.name.removesuffix(".json")
        for entry in _builtin_folder().iterdir()
        if entry.name.endswith(".json")
    )


def _builtin_folder() -> Traversable:
    return resources.files("esnode_agent.gpu").joinpath("profiles")


def load_profile(name: str) -> SimProfile:
    """A built-in profile by name, else a JSON file by path; ValueError says what is wrong."""
    if name in builtin_profiles():
        text = _builtin_folder().joinpath(f"{name}.json").read_text(encoding="utf-8")
    else:
        path = Path(name)
        if not path.is_file():
            raise ValueError(
                f"no built-in GPU profile {name!r} ({', '.join(builtin_profiles())}) and no such file"
            )
        text = path.read_text(encoding="utf-8")
    try:
        return SimProfile.model_validate_json(text)
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ValueError(f"GPU profile {name!r}: {where}: {error['msg']}") from None


def check_backend_spec(spec: str) -> str:
    """``nvml`` or ``sim:PROFILE`` with a profile that loads; raises ValueError naming the problem."""
    if spec == BACKEND_NVML:
        return spec
    if not spec.startswith(SIM_PREFIX) or not spec.removeprefix(SIM_PREFIX):
        raise ValueError(
            f"expected {BACKEND_NVML!r} or '{SIM_PREFIX}PROFILE' (built-in: {', '.join(builtin_profiles())})"
        )
    load_profile(spec.removeprefix(SIM_PREFIX))
    return spec
