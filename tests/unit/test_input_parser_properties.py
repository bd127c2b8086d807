"""Property tests of every parser of outside input: procfs and sysfs files, mount tables, model-server
expositions, textfiles, the TOML config and node_exporter's flags.

Each property: a well-formed input reads back exactly; any input either parses, with finite values
and counters >= 0, or fails with the parser's documented error (the collector then reports itself
failed, success 0), never another exception. procfs files arrive as bytes decoded as ASCII with
replacement (collectors/procfs.py), so arbitrary input is drawn the same way.
"""

from __future__ import annotations

import contextlib
import math
import string
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from esnode_agent.collectors.app_counters import CounterNames, CounterTotals, read_counters
from esnode_agent.collectors.cpu import MODES, parse_loadavg, parse_stat
from esnode_agent.collectors.diskstats import parse_diskstats
from esnode_agent.collectors.filesystem import parse_mounts
from esnode_agent.collectors.hwmon import HwmonCollector
from esnode_agent.collectors.memory import parse_meminfo, parse_swap_pages
from esnode_agent.collectors.network import parse_net_dev, parse_snmp
from esnode_agent.collectors.rapl import PACKAGE_ENERGY, RaplCollector
from esnode_agent.collectors.textfile import _Merged
from esnode_agent.config.model import DEFAULT_APP_REQUEST_COUNTERS, DEFAULT_APP_TOKEN_COUNTERS
from esnode_agent.config.node_exporter_flags import translate
from esnode_agent.config.sources import CONFIG_FILE_ENV, ConfigError, load_config
from esnode_agent.cycle.collector import NoDataError
from esnode_agent.cycle.samples import SampleSink

# Examples per property: each found its fault (a sign, nan, a 400-digit count) within this many.
EXAMPLES = 60
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Properties that write a sysfs tree per example: fewer, as each costs file-system calls.
SYSFS_PROPERTY = settings(PROPERTY, max_examples=30)

procfs_text = st.binary(max_size=400).map(lambda raw: raw.decode("ascii", errors="replace"))
counts = st.integers(0, 2**64 - 1)
names = st.text(string.ascii_letters + string.digits + "-_.", min_size=1, max_size=12)
# A field of a real line: mostly a count, sometimes anything a corrupt file could hold.
_odd_fields = st.sampled_from(["-1", "+1", "1_0", "nan", "inf", "", "x", "1e3", "9" * 400]) | names
fields = st.integers(0, 4).flatmap(lambda pick: _odd_fields if pick == 0 else counts.map(str))


def _mutated_lines(build: st.SearchStrategy[list[str]]) -> st.SearchStrategy[str]:
    return st.lists(st.one_of(build.map(" ".join), procfs_text), max_size=6).map("\n".join)


def _assert_counts(values: object) -> None:
    for value in values if isinstance(values, (list, tuple)) else [values]:
        assert isinstance(value, int) and value >= 0, value


# /proc/stat, /proc/loadavg


@PROPERTY
@given(st.lists(st.lists(counts, min_size=len(MODES), max_size=len(MODES) + 3), max_size=4))
def test_proc_stat_reads_back(cpus: list[list[int]]) -> None:
    text = "cpu  1 2 3 4 5 6 7 8 0 0\n" + "".join(
        f"cpu{i} {' '.join(map(str, ticks))}\n" for i, ticks in enumerate(cpus)
    )
    times = parse_stat(text + "intr 1 2 3\nctxt 5\n")
    assert {k: list(v.ticks) for k, v in times.items()} == {
        str(i): t[: len(MODES)] for i, t in enumerate(cpus)
    }


@PROPERTY
@example("cpu0 -1 0 0 0 0 0 0 0")  # a sign: a counter that fell
@given(_mutated_lines(st.lists(fields, min_size=9, max_size=11).map(lambda f: ["cpu0", *f])))
def test_proc_stat_counts_or_refuses(text: str) -> None:
    try:
        times = parse_stat(text)
    except ValueError:
        return
    for cpu in times.values():
        _assert_counts(cpu.ticks)


@PROPERTY
@example("nan 1 1")
@example("-1 0 0")
@given(procfs_text | st.lists(fields, min_size=3, max_size=5).map(" ".join))
def test_loadavg_is_finite_and_non_negative_or_refused(text: str) -> None:
    try:
        loads = parse_loadavg(text)
    except ValueError:
        return
    assert all(math.isfinite(v) and v >= 0 for v in loads)


# /proc/meminfo, /proc/vmstat


@PROPERTY
@given(
    st.dictionaries(st.sampled_from(["MemTotal", "MemAvailable", "SwapTotal", "SwapFree", "Other"]), counts)
)
def test_meminfo_reads_back(kib: dict[str, int]) -> None:
    text = "".join(f"{key}:    {value} kB\n" for key, value in kib.items())
    assert parse_meminfo(text) == {k: v * 1024 for k, v in kib.items() if k != "Other"}


@PROPERTY
@given(
    _mutated_lines(
        st.tuples(st.sampled_from(["MemTotal:", "pswpin", "pswpout"]), fields, st.just("kB")).map(list)
    )
)
def test_meminfo_and_vmstat_count_or_refuse(text: str) -> None:
    _assert_counts(list(parse_meminfo(text).values()))
    with contextlib.suppress(ValueError):
        _assert_counts(list(parse_swap_pages(text).values()))


# /proc/diskstats, /proc/net/dev, /proc/net/snmp


@PROPERTY
@given(st.lists(st.tuples(names, st.lists(counts, min_size=11, max_size=17)), max_size=4))
def test_diskstats_reads_back(disks: list[tuple[str, list[int]]]) -> None:
    text = "".join(f"   8  {i} {name} {' '.join(map(str, c))}\n" for i, (name, c) in enumerate(disks))
    stats = parse_diskstats(text)
    assert [s.device for s in stats] == [name for name, _ in disks]
    assert [s.io_time_ms for s in stats] == [c[9] for _, c in disks]


@PROPERTY
@example("8 0 sda -1 0 0 0 0 0 0 0 0 0 0")
@given(_mutated_lines(st.lists(fields, min_size=14, max_size=20)))
def test_diskstats_count_or_refuse(text: str) -> None:
    try:
        stats = parse_diskstats(text)
    except ValueError:
        return
    for disk in stats:
        _assert_counts([disk.reads_completed, disk.read_sectors, disk.written_sectors, disk.io_time_ms])


@PROPERTY
@given(st.lists(st.tuples(names, st.lists(counts, min_size=16, max_size=16)), max_size=4))
def test_net_dev_reads_back(interfaces: list[tuple[str, list[int]]]) -> None:
    text = "Inter-|   Receive\n face |bytes\n" + "".join(
        f"{name:>6}: {' '.join(map(str, c))}\n" for name, c in interfaces
    )
    parsed = parse_net_dev(text)
    assert [(i.interface, i.rx_bytes, i.tx_bytes) for i in parsed] == [(n, c[0], c[8]) for n, c in interfaces]


@PROPERTY
@example("eth0: -1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0")
@given(_mutated_lines(st.lists(fields, min_size=16, max_size=18).map(lambda f: ["eth0:", *f])))
def test_net_dev_counts_or_refuses(text: str) -> None:
    try:
        parsed = parse_net_dev("h\nh\n" + text)
    except ValueError:
        return
    for interface in parsed:
        _assert_counts([interface.rx_bytes, interface.rx_errors, interface.tx_bytes, interface.tx_dropped])


@PROPERTY
@given(procfs_text)
def test_snmp_parses_or_refuses(text: str) -> None:
    with contextlib.suppress(
        ValueError
    ):  # values may be negative (Tcp MaxConn is -1): only the error is checked
        parse_snmp(text, "Tcp")


# /proc/self/mounts

_mount_fields = st.text(string.ascii_letters + string.digits + "/-_.:@ \t\n\\\u00e9", min_size=1, max_size=10)


@PROPERTY
@given(st.lists(st.tuples(_mount_fields, _mount_fields, names), max_size=4))
def test_mount_table_reads_back_escaped_fields(mounts: list[tuple[str, str, str]]) -> None:
    def escape(field: str) -> str:  # as the kernel writes them (fs/proc_namespace.c: " \t\n\\")
        return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in field)

    text = "".join(f"{escape(d)} {escape(m)} {f} rw 0 0\n" for d, m, f in mounts)
    assert [(m.device, m.mount_point, m.fstype) for m in parse_mounts(text)] == mounts


@PROPERTY
@given(procfs_text)
def test_mount_table_never_raises(text: str) -> None:
    parse_mounts(text)


# sysfs: RAPL and hwmon trees with one file set to anything


def _values_by_series(sink: SampleSink) -> dict[tuple[str, tuple[str, ...]], float]:
    return {(sample.spec.name, sample.label_values): sample.value for sample in sink.samples}


@SYSFS_PROPERTY
@example([("1000", "262143328850"), ("2000", "-1")])  # once divided by zero: every zone lost
@given(st.lists(st.tuples(procfs_text | fields, procfs_text | fields), min_size=2, max_size=3))
def test_a_bad_rapl_zone_costs_only_its_own_series(readings: list[tuple[str, str]]) -> None:
    with tempfile.TemporaryDirectory() as root:
        sysfs = Path(root)
        zones = sysfs / "class" / "powercap"
        for package in (0, 1):
            zone = zones / f"intel-rapl:{package}"
            zone.mkdir(parents=True)
            (zone / "name").write_text(f"package-{package}\n")
            (zone / "max_energy_range_uj").write_text("262143328850\n")
        healthy, hostile = zones / "intel-rapl:0", zones / "intel-rapl:1"
        collector = RaplCollector(sysfs)
        last_joules = 0.0
        for cycle, (energy, energy_range) in enumerate(readings):
            (healthy / "energy_uj").write_text(f"{1_000_000 * (cycle + 1)}\n")
            (hostile / "energy_uj").write_text(energy)
            (hostile / "max_energy_range_uj").write_text(energy_range)
            sink = SampleSink(float(cycle))
            collector.collect(sink)
            values = _values_by_series(sink)
            assert all(math.isfinite(v) and v >= 0 for v in values.values())
            joules = values[(PACKAGE_ENERGY.name, ("0",))]
            assert joules >= last_joules
            last_joules = joules


@SYSFS_PROPERTY
@example(["1", "9" * 400])  # once OverflowError: the whole hwmon collector failed
@given(st.lists(procfs_text | fields, min_size=2, max_size=4))
def test_hwmon_values_are_finite_and_energy_never_falls(contents: list[str]) -> None:
    with tempfile.TemporaryDirectory() as root:
        chip = Path(root) / "class" / "hwmon" / "hwmon0"
        chip.mkdir(parents=True)
        (chip / "name").write_text("acpi_power_meter\n")
        collector = HwmonCollector(Path(root))
        totals: dict[str, float] = {}
        for content in contents:
            (chip / "power1_input").write_text(content)
            (chip / "energy1_input").write_text(content)
            sink = SampleSink(0.0)
            try:
                collector.collect(sink)
            except NoDataError:
                continue
            for (name, _), value in _values_by_series(sink).items():
                assert math.isfinite(value)
                if "energy" in name:
                    assert value >= totals.get(name, 0.0)
                    totals[name] = value


# Model-server expositions

_COUNTER_NAMES = CounterNames(DEFAULT_APP_TOKEN_COUNTERS, DEFAULT_APP_REQUEST_COUNTERS)
_values = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(10**30), 10**30).map(str),
    st.sampled_from(["NaN", "+Inf", "-Inf", "1e400", "-0", "0x10", ""]),
)
_label_values = st.text(max_size=8).map(
    lambda v: v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
)
_exposition_lines = st.one_of(
    st.tuples(
        st.sampled_from([*DEFAULT_APP_TOKEN_COUNTERS, *DEFAULT_APP_REQUEST_COUNTERS, "other_total"]),
        _label_values,
        _values,
    ).map(lambda t: f'{t[0]}{{model_name="{t[1]}"}} {t[2]}'),
    st.sampled_from(["# TYPE vllm:prompt_tokens_total counter", "# HELP x y", "<html>", ""]),
    st.text(max_size=30),
)


@PROPERTY
@given(st.lists(st.lists(_exposition_lines, max_size=8).map("\n".join), min_size=1, max_size=4))
def test_model_server_totals_are_finite_non_negative_and_never_fall(fetches: list[str]) -> None:
    totals = CounterTotals(max_models=4)
    seen: dict[tuple[object, str], float] = {}
    for text in fetches:
        try:
            read = read_counters(text, _COUNTER_NAMES, "default", max_models=3)
        except ValueError:
            continue  # not an exposition: the endpoint reports itself down
        assert all(math.isfinite(r.value) and r.value >= 0 for r in read.readings)
        assert len({r.model for r in read.readings}) <= 3
        totals.observe("target", read.readings, read.refused_series)
        for key, value in totals._totals.items():
            assert math.isfinite(value) and value >= seen.get(key, 0.0)
            seen[key] = value


# Textfile collector


@PROPERTY
@given(st.lists(_exposition_lines | st.just("# TYPE other_total gauge"), max_size=10).map("\n".join))
def test_a_textfile_merges_or_is_refused_whole(text: str) -> None:
    try:
        faults = _Merged().add_file(text + "\n")
    except (ValueError, IndexError):  # the collector's documented refusal (textfile.py)
        return
    assert all(isinstance(f, str) for f in faults)


# The TOML config file


@PROPERTY
@given(
    st.binary(max_size=200)
    | st.lists(
        st.tuples(
            st.sampled_from(["scrape_interval_seconds", "listen_address", "enable_gpu", "nope"]), fields
        ),
        max_size=3,
    ).map(lambda kv: "".join(f"{k} = {v}\n" for k, v in kv).encode())
)
def test_any_config_file_loads_or_is_one_line_error(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as root:
        path = Path(root) / "esnode.toml"
        path.write_bytes(content)
        with pytest.MonkeyPatch.context() as env:
            env.setenv(CONFIG_FILE_ENV, str(path))
            try:
                load_config({}, cwd=Path(root))
            except ConfigError as exc:
                assert "\n" not in str(exc) and str(exc)


# node_exporter's flags


_flag_words = st.one_of(
    st.sampled_from(
        [
            "--collector.cpu",
            "--no-collector.diskstats",
            "--collector.disable-defaults",
            "--web.listen-address",
            "--web.listen-address=:9100",
            "--collector.textfile.directory",
            "--collector.filesystem.mount-points-exclude=^/x",
            "--web.max-requests=4",
            "--collector.nope",
            "--path.procfs",
        ]
    ),
    st.text(max_size=12),
)


@PROPERTY
@given(st.lists(_flag_words, max_size=6))
def test_node_exporter_flags_translate_or_are_one_line_errors(argv: list[str]) -> None:
    try:
        translation = translate(argv)
    except ConfigError as exc:
        assert "\n" not in str(exc)
        return
    assert all(isinstance(arg, str) for arg in translation.argv)
