"""scripts/gpu-check: its parsing of nvidia-smi and /metrics, and a whole run on the simulated backend."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-check"


@pytest.fixture(scope="module")
def gpu_check() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("gpu_check", str(SCRIPT))
    spec = importlib.util.spec_from_loader("gpu_check", loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses resolve annotations through sys.modules
    loader.exec_module(module)
    return module


def test_nvidia_smi_rows_parse_with_not_available_fields(gpu_check: ModuleType) -> None:
    text = "0, GPU-aaa, 37, 1024, 81559, 312.45, 51\n1, GPU-bbb, [N/A], 20480, 81559, [Not Supported], 44\n"
    rows = gpu_check.parse_smi_csv(text)
    assert rows["GPU-aaa"] == {
        "utilization %": 37.0,
        "memory used MiB": 1024.0,
        "memory total MiB": 81559.0,
        "power W": 312.45,
        "temperature C": 51.0,
    }
    assert rows["GPU-bbb"]["utilization %"] is None and rows["GPU-bbb"]["power W"] is None


def test_agent_metrics_parse_into_nvidia_smi_units(gpu_check: ModuleType) -> None:
    text = "\n".join(
        [
            "# HELP esnode_gpu_info GPU identity",
            'esnode_gpu_info{gpu="0",uuid="GPU-aaa",model="NVIDIA H100 80GB HBM3",serial=""} 1.0',
            'esnode_gpu_memory_used_bytes{gpu="0",uuid="GPU-aaa"} 1073741824.0',
            'esnode_gpu_power_watts{gpu="0",uuid="GPU-aaa"} 312.5',
            'esnode_agent_collector_duration_seconds{collector="gpu"} 0.004',
            'esnode_agent_collector_duration_seconds{collector="cpu"} 0.2',
        ]
    )
    scrape = gpu_check.parse_agent_metrics(text)
    assert scrape.values == {"GPU-aaa": {"memory used MiB": 1024.0, "power W": 312.5}}
    assert scrape.names == {"GPU-aaa": "GPU 0 NVIDIA H100 80GB HBM3"}
    assert scrape.collector_seconds == 0.004


def test_a_run_on_the_simulated_backend_reports_every_gpu_and_the_collection_cost(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--backend", "sim:h100-mig", "--duration", "2", "--interval", "1"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.count("NVIDIA H100 80GB HBM3 GPU-") == 4
    assert "ms per GPU per cycle" in out
    assert "in-process backend read()" in out
    assert "no nvidia-smi comparison" in out


def test_process_lists_pair_by_gpu_and_pid(gpu_check: ModuleType) -> None:
    smi = gpu_check.parse_smi_apps_csv(
        "GPU-aaa, 4100, 1394\nGPU-aaa, 4200, [N/A]\nNo running processes found\n"
    )
    assert smi == {("GPU-aaa", 4100): 1394.0, ("GPU-aaa", 4200): None}
    agent = gpu_check.parse_agent_processes(
        'esnode_gpu_process_memory_used_bytes{gpu="0",uuid="GPU-aaa",mig_uuid="",pid="4100",pod_uid="",'
        'container_id="",namespace="",pod="",container=""} 1461714944\n'
    )
    assert agent == {("GPU-aaa", 4100): 1394.0}
    processes: dict[tuple[str, int], object] = {}
    gpu_check._pair_processes(processes, agent, smi)
    lines = gpu_check.process_report({"GPU-aaa": "GPU 0 NVIDIA H200"}, processes)
    assert any("GPU 0, pid 4100" in line and line.endswith("ok") for line in lines)
    assert any("pid 4200" in line and line.endswith("nvidia-smi only") for line in lines)
