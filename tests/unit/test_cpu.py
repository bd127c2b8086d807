"""CPU time, usage over an interval and load average from /proc/stat and /proc/loadavg."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
from collecting import collect

from esnode_agent.collectors.cpu import CpuCollector, parse_stat
from esnode_agent.cycle.collector import NoDataError

FIXTURE_PROC = Path(__file__).parents[1] / "fixtures" / "host" / "proc"
MODES = {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}


@pytest.fixture
def proc(tmp_path: Path) -> Path:
    return Path(shutil.copytree(FIXTURE_PROC, tmp_path / "proc"))


def test_cpu_seconds_are_ticks_over_user_hz_per_cpu_and_mode() -> None:
    samples = collect(CpuCollector(FIXTURE_PROC, ticks_per_second=100))

    seconds = samples.named("esnode_cpu_seconds_total")
    assert {(s.label("cpu"), s.label("mode")) for s in seconds} == {(c, m) for c in ("0", "1") for m in MODES}
    assert samples.value("esnode_cpu_seconds_total", cpu="0", mode="user") == 11.5
    assert samples.value("esnode_cpu_seconds_total", cpu="1", mode="idle") == 50.2
    assert samples.value("esnode_cpu_seconds_total", cpu="1", mode="steal") == 0.07


def test_guest_time_is_not_a_mode_because_user_already_counts_it() -> None:
    samples = collect(CpuCollector(FIXTURE_PROC, ticks_per_second=100))

    modes = {s.label("mode") for s in samples.named("esnode_cpu_seconds_total")}
    assert "guest" not in modes
    assert "guest_nice" not in modes


def test_usage_is_absent_on_the_first_cycle() -> None:
    samples = collect(CpuCollector(FIXTURE_PROC, ticks_per_second=100))

    assert samples.named("esnode_cpu_usage_percent") == []


def test_usage_percent_is_the_busy_share_of_ticks_between_two_readings(proc: Path) -> None:
    collector = CpuCollector(proc, ticks_per_second=100)
    collect(collector, 0.0)
    # cpu0: +200 ticks (user +100, system +50, idle +40, iowait +10) -> 75 % busy.
    # cpu1: +100 ticks, all idle -> 0 % busy.
    (proc / "stat").write_text(
        "cpu  2540 40 660 10160 140 20 45 12 300 0\n"
        "cpu0 1250 25 350 5040 70 10 20 5 150 0\n"
        "cpu1 1140 15 310 5120 70 10 25 7 150 0\n"
    )
    samples = collect(collector, 5.0)

    assert samples.value("esnode_cpu_usage_percent", cpu="0") == 75.0
    assert samples.value("esnode_cpu_usage_percent", cpu="1") == 0.0


def test_usage_is_absent_for_a_cpu_with_no_ticks_in_the_interval(proc: Path) -> None:
    collector = CpuCollector(proc, ticks_per_second=100)
    collect(collector, 0.0)
    samples = collect(collector, 0.001)  # same file: no tick elapsed

    assert samples.named("esnode_cpu_usage_percent") == []


def test_usage_stays_within_0_to_100_when_iowait_steps_backwards(proc: Path) -> None:
    collector = CpuCollector(proc, ticks_per_second=100)
    collect(collector, 0.0)
    # cpu0: user +100, iowait -50 (some kernels do this): 200 % by the formula, reported as 100.
    (proc / "stat").write_text(
        "cpu0 1250 25 300 5000 10 10 20 5 150 0\ncpu1 1140 15 310 5020 70 10 25 7 150 0\n"
    )
    samples = collect(collector, 5.0)

    assert samples.value("esnode_cpu_usage_percent", cpu="0") == 100.0


def test_a_cpu_that_comes_online_gets_usage_from_its_second_reading(proc: Path) -> None:
    collector = CpuCollector(proc, ticks_per_second=100)
    collect(collector, 0.0)
    hotplugged = (proc / "stat").read_text().replace("intr", "cpu2 10 0 0 90 0 0 0 0 0 0\nintr")
    (proc / "stat").write_text(hotplugged)
    samples = collect(collector, 5.0)

    assert samples.value("esnode_cpu_seconds_total", cpu="2", mode="idle") == 0.9
    assert samples.value("esnode_cpu_usage_percent", cpu="2") is None


def test_load_average_per_window() -> None:
    samples = collect(CpuCollector(FIXTURE_PROC, ticks_per_second=100))

    assert samples.value("esnode_load_average", window="1m") == 0.52
    assert samples.value("esnode_load_average", window="5m") == 1.25
    assert samples.value("esnode_load_average", window="15m") == 2.75


def test_missing_loadavg_drops_only_load_average(proc: Path) -> None:
    (proc / "loadavg").unlink()
    samples = collect(CpuCollector(proc, ticks_per_second=100))

    assert samples.named("esnode_load_average") == []
    assert samples.named("esnode_cpu_seconds_total") != []


def test_missing_stat_is_no_data(tmp_path: Path) -> None:
    with pytest.raises(NoDataError):
        collect(CpuCollector(tmp_path))


def test_parse_stat_skips_the_aggregate_line_and_other_keys() -> None:
    text = "cpu  1 2 3 4 5 6 7 8 9 10\ncpu7 1 2 3 4 5 6 7 8\ncpu_extra 1\nctxt 5\n"

    assert set(parse_stat(text)) == {"7"}


def test_real_proc_covers_every_cpu_this_process_may_run_on() -> None:
    collector = CpuCollector(Path("/proc"))
    first = collect(collector, 0.0)
    cpus = {s.label("cpu") for s in first.named("esnode_cpu_seconds_total")}

    assert {str(c) for c in os.sched_getaffinity(0)} <= cpus
    assert len(cpus) <= (os.cpu_count() or 0)
    assert all(s.value >= 0 for s in first.named("esnode_cpu_seconds_total"))
    assert {s.label("window") for s in first.named("esnode_load_average")} == {"1m", "5m", "15m"}

    busy_until = time.monotonic() + 0.05
    while time.monotonic() < busy_until:
        pass
    second = collect(collector, 1.0)
    usage = second.named("esnode_cpu_usage_percent")
    assert usage, "two readings 50 ms apart should see ticks on some CPU"
    assert all(0.0 <= s.value <= 100.0 for s in usage)
