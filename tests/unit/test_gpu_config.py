"""The GPU settings: defaults, flags generated from the model, and errors that name the key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esnode_agent.cli import main
from esnode_agent.config.sources import ConfigError, load_config


def test_defaults() -> None:
    config = load_config({}, cwd=Path("/nonexistent")).config
    assert config.gpu_backend == "nvml"
    assert config.gpu_visible_devices is None and config.mig_config_devices is None
    assert config.enable_gpu_mig is True and config.enable_gpu_events is False and config.k8s_mode is False
    assert config.pod_resources_socket == Path("/var/lib/kubelet/pod-resources/kubelet.sock")
    assert config.pod_resources_refresh_seconds == 10.0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"gpu_backend": "cuda"},
            "gpu_backend='cuda' from flag --gpu-backend: expected 'nvml' or 'sim:PROFILE'",
        ),
        (
            {"gpu_backend": "sim:h200x4"},
            "gpu_backend='sim:h200x4' from flag --gpu-backend: no built-in GPU profile",
        ),
        (
            {"gpu_visible_devices": "0,gpu1"},
            "gpu_visible_devices='0,gpu1' from flag --gpu-visible-devices: 'gpu1'",
        ),
        ({"mig_config_devices": "MIG-0a1b"}, "mig_config_devices='MIG-0a1b' from flag --mig-config-devices"),
        ({"pod_resources_refresh_seconds": "0"}, "pod_resources_refresh_seconds='0' from flag"),
        ({"k8s_mode": "maybe"}, "k8s_mode='maybe'"),
    ],
)
def test_bad_values_name_the_key(flags: dict[str, str], message: str) -> None:
    with pytest.raises(
        ConfigError, match="invalid config: " + message.replace("(", r"\(").replace(")", r"\)")
    ):
        load_config(flags, cwd=Path("/nonexistent"))


def test_a_profile_file_is_checked_when_the_config_loads(tmp_path: Path) -> None:
    profile = tmp_path / "a10.json"
    profile.write_text(json.dumps({"driver_version": "535.1", "gpus": [{"model": "NVIDIA A10"}]}))
    with pytest.raises(
        ConfigError, match=r"gpu_backend=.*GPU profile .*gpus\.0\.memory_total_bytes: Field required"
    ):
        load_config({"gpu_backend": f"sim:{profile}"}, cwd=tmp_path)


def test_the_cli_offers_a_flag_per_gpu_setting(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            [
                "config",
                "--gpu-backend",
                "sim:h100x8",
                "--k8s-mode",
                "--no-enable-gpu-mig",
                "--gpu-visible-devices",
                "0,1",
                "--pod-resources-refresh-seconds",
                "2.5",
            ]
        )
        == 0
    )
    lines = {line.split("=")[0].strip(): line for line in capsys.readouterr().out.splitlines()}
    assert "'sim:h100x8'" in lines["gpu_backend"] and "flag --gpu-backend" in lines["gpu_backend"]
    assert "True" in lines["k8s_mode"]
    assert "False" in lines["enable_gpu_mig"]
    assert "'0,1'" in lines["gpu_visible_devices"]
    assert "2.5" in lines["pod_resources_refresh_seconds"]


def test_environment_variables_set_gpu_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESNODE_GPU_BACKEND", "sim:h100-mig")
    monkeypatch.setenv("ESNODE_ENABLE_GPU_EVENTS", "true")
    loaded = load_config({}, cwd=Path("/nonexistent"))
    assert loaded.config.gpu_backend == "sim:h100-mig" and loaded.config.enable_gpu_events
    assert loaded.sources["gpu_backend"] == "env ESNODE_GPU_BACKEND"
