"""Memory and swap from meminfo and vmstat: units, absent fields, real /proc against psutil."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import psutil
import pytest
from collecting import collect

from esnode_agent.collectors.memory import MemoryCollector, parse_meminfo, parse_swap_pages
from esnode_agent.cycle.collector import NoDataError

FIXTURE_PROC = Path(__file__).parents[1] / "fixtures" / "host" / "proc"
KIB = 1024


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE_PROC, tmp_path / "proc"))


def test_memory_sizes_are_meminfo_kib_in_bytes() -> None:
    samples = collect(MemoryCollector(FIXTURE_PROC, page_size_bytes=4096))

    assert samples.value("esnode_memory_total_bytes") == 16318480 * KIB
    assert samples.value("esnode_memory_available_bytes") == 8159240 * KIB
    assert samples.value("esnode_memory_used_bytes") == (16318480 - 8159240) * KIB


def test_swap_used_is_total_minus_free() -> None:
    samples = collect(MemoryCollector(FIXTURE_PROC, page_size_bytes=4096))

    assert samples.value("esnode_swap_total_bytes") == 2097148 * KIB
    assert samples.value("esnode_swap_used_bytes") == (2097148 - 1572864) * KIB


def test_swap_traffic_is_vmstat_pages_times_page_size() -> None:
    samples = collect(MemoryCollector(FIXTURE_PROC, page_size_bytes=4096))

    assert samples.value("esnode_swap_in_bytes_total") == 1500 * 4096
    assert samples.value("esnode_swap_out_bytes_total") == 4000 * 4096


def test_without_memavailable_used_and_available_are_absent_not_guessed(proc: Path) -> None:
    lines = (proc / "meminfo").read_text().splitlines(keepends=True)
    (proc / "meminfo").write_text("".join(line for line in lines if not line.startswith("MemAvailable")))
    samples = collect(MemoryCollector(proc, page_size_bytes=4096))

    assert samples.value("esnode_memory_total_bytes") == 16318480 * KIB
    assert samples.named("esnode_memory_available_bytes") == []
    assert samples.named("esnode_memory_used_bytes") == []


def test_missing_vmstat_drops_only_swap_traffic(proc: Path) -> None:
    (proc / "vmstat").unlink()
    samples = collect(MemoryCollector(proc, page_size_bytes=4096))

    assert samples.named("esnode_swap_in_bytes_total") == []
    assert samples.value("esnode_swap_total_bytes") == 2097148 * KIB


def test_missing_meminfo_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError):
        collect(MemoryCollector(tmp_path))


def test_meminfo_without_memtotal_is_no_data(tmp_path: Path) -> None:
    (tmp_path / "meminfo").write_text("MemFree: 10 kB\n")

    with pytest.raises(NoDataError):
        collect(MemoryCollector(tmp_path))


def test_parse_meminfo_reads_whole_lines_only() -> None:
    text = "MemTotal:     100 kB\nSwapTotal:    7 kB\nSwapTotalExtra:    9 kB\nSwapFree: 3 kB\n"

    assert parse_meminfo(text) == {"MemTotal": 100 * KIB, "SwapTotal": 7 * KIB, "SwapFree": 3 * KIB}


def test_real_proc_matches_psutil() -> None:
    samples = collect(MemoryCollector(Path("/proc")))
    virtual = psutil.virtual_memory()

    assert samples.value("esnode_memory_total_bytes") == virtual.total
    used = samples.value("esnode_memory_used_bytes")
    total = samples.value("esnode_memory_total_bytes")
    assert used is not None and total is not None
    assert 0 < used < total
    assert samples.value("esnode_swap_total_bytes") == psutil.swap_memory().total
    assert samples.value("esnode_swap_in_bytes_total") is not None
    assert (samples.value("esnode_swap_in_bytes_total") or 0) % os.sysconf("SC_PAGE_SIZE") == 0


def test_parse_swap_pages_matches_whole_keys_up_to_the_last_line() -> None:
    text = "nr_free_pages 5\npswpin_extra 9\npswpin 7\npswpout 11"

    assert parse_swap_pages(text) == {"pswpin": 7, "pswpout": 11}
