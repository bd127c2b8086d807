"""Device lists in NVIDIA_VISIBLE_DEVICES' language: parsing, selection, and where a list comes from."""

from __future__ import annotations

import pytest

from esnode_agent.gpu.visibility import DeviceList, parse_device_list, resolve_device_list

GPU_A = "GPU-3f2c9c2e-6d3a-4a55-9a52-3c1f0f6f7e01"
MIG_A = "MIG-6a1f0b8e-1f0b-5f0c-8d1e-2b9b1b0c0d11"


def test_all_selects_every_gpu_and_mig_device() -> None:
    devices = parse_device_list("all")
    assert devices.selects_gpu(7, GPU_A)
    assert devices.selects_mig(7, GPU_A, MIG_A)


@pytest.mark.parametrize("text", ["none", "void", ""])
def test_none_void_and_empty_select_nothing(text: str) -> None:
    devices = parse_device_list(text)
    assert not devices.selects_gpu(0, GPU_A)
    assert not devices.selects_mig(0, GPU_A, MIG_A)


def test_a_list_selects_by_index_and_by_uuid_in_any_case() -> None:
    devices = parse_device_list(f" 0 ,{GPU_A.upper()}")
    assert devices.selects_gpu(0, "GPU-other")
    assert devices.selects_gpu(5, GPU_A)
    assert not devices.selects_gpu(1, "GPU-other")


def test_a_mig_uuid_selects_that_mig_device_only() -> None:
    devices = parse_device_list(MIG_A)
    assert devices.selects_mig(0, GPU_A, MIG_A)
    assert not devices.selects_mig(0, GPU_A, "MIG-another")
    assert not devices.selects_gpu(0, GPU_A)


def test_the_older_mig_uuid_form_is_accepted() -> None:
    assert parse_device_list(f"MIG-{GPU_A}/1/0").mig_uuids == {f"mig-{GPU_A}/1/0".lower()}


@pytest.mark.parametrize("text", ["gpu0", "0,,1", "GPU 0", "-1"])
def test_a_malformed_entry_is_named(text: str) -> None:
    with pytest.raises(ValueError, match="is not an index, GPU-UUID or MIG-UUID"):
        parse_device_list(text)


def test_mig_uuids_can_be_refused() -> None:
    with pytest.raises(ValueError, match="is not an index or GPU-UUID"):
        parse_device_list(MIG_A, allow_mig=False)


def test_unknown_entries_are_reported_for_a_warning() -> None:
    devices = parse_device_list(f"0,4,{GPU_A},{MIG_A}")
    assert devices.unknown([(0, "GPU-x")], []) == ["4", GPU_A.lower(), MIG_A.lower()]
    assert devices.unknown([(0, "GPU-x"), (4, GPU_A)], [MIG_A]) == []


def test_the_setting_wins_over_the_nvidia_variable_which_wins_over_the_default() -> None:
    env = {"NVIDIA_VISIBLE_DEVICES": "1"}
    assert resolve_device_list("2", env, "NVIDIA_VISIBLE_DEVICES") == (
        DeviceList(indices=frozenset({2})),
        "config",
    )
    assert resolve_device_list(None, env, "NVIDIA_VISIBLE_DEVICES") == (
        DeviceList(indices=frozenset({1})),
        "env NVIDIA_VISIBLE_DEVICES",
    )
    assert resolve_device_list(None, {}, "NVIDIA_VISIBLE_DEVICES") == (DeviceList(everything=True), "default")
