"""Local history: chunks round-trip, retention by age and size, crash safety, export filters."""

from __future__ import annotations

import math
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text
from starlette.testclient import TestClient

from esnode_agent.cli import main
from esnode_agent.config.model import AgentConfig
from esnode_agent.cycle.samples import Sample, SampleIndex, SampleSink, counter, gauge
from esnode_agent.cycle.snapshot import Snapshot
from esnode_agent.history.chunk import DEFLATED, KIND_RAW, ChunkWriter, decode
from esnode_agent.history.export import export
from esnode_agent.history.reader import Query, open_reader, read
from esnode_agent.history.store import HistoryStore, Limits, database_file, default_directory
from esnode_agent.history.writer import HistoryWriter
from esnode_agent.serve.app import create_app
from esnode_agent.serve.publication import Latest

POWER = gauge("esnode_gpu_power_watts", "GPU power.", "gpu")
ENERGY = counter("esnode_gpu_energy_joules_total", "GPU energy.", "gpu")
LOAD = gauge("esnode_load_average", "Load.", "window")
T0 = 1_700_000_000.0
ROOMY = Limits(retention_seconds=10**9, max_disk_bytes=10**12)


def _cycle(index: int, gpus: int = 2) -> list[Sample]:
    sink = SampleSink(0.0)
    for gpu in range(gpus):
        sink.add(POWER, 300.0 + gpu + (index % 7) * 0.125, gpu=str(gpu))
        sink.add(ENERGY, 1000.0 * index + gpu, gpu=str(gpu))
    sink.add(LOAD, 0.5 + index / 100, window="1m")
    return sink.samples


def _store(tmp_path: Path, limits: Limits = ROOMY, chunk_samples: int = 360) -> HistoryStore:
    return HistoryStore(tmp_path / "h.sqlite3", limits, chunk_samples)


def _record(store: HistoryStore, cycles: range, gpus: int = 2) -> None:
    for index in cycles:
        store.append(T0 + index, _cycle(index, gpus))


def _all(
    db: sqlite3.Connection, metrics: tuple[str, ...] = ("esnode_*",)
) -> dict[tuple[str, tuple[str, ...]], list[tuple[int, float]]]:
    query = Query(0, 2**62, metrics)
    return {(s.spec.name, s.label_values): s.samples for s in read(db, query)}


@pytest.mark.parametrize(
    "values",
    [
        [300.0, 301.125, 299.5, 1e12, -4.0, 0.0],
        [0.1 + 0.2, math.nan, math.inf, -1.5e-300],
    ],
    ids=["decimal", "raw"],
)
def test_a_chunk_gives_back_every_timestamp_and_value(values: list[float]) -> None:
    chunk = ChunkWriter.for_value(values[0], 3)  # as a series whose earlier chunk needed 3 digits
    stamps = [1_000, 2_000, 3_005, 3_999, 5_000, 7_000][: len(values)]
    for stamp, value in zip(stamps, values, strict=True):
        assert chunk.accepts(value)
        chunk.append(stamp, value)
    decoded = list(decode(chunk.header(), chunk.body()))
    assert [d[0] for d in decoded] == stamps
    assert [repr(d[1]) for d in decoded] == [repr(v) for v in values]


@pytest.mark.parametrize("second_order", [False, True], ids=["gauge", "counter"])
def test_runs_of_unchanged_values_and_steady_rates_round_trip_in_a_few_bytes(second_order: bool) -> None:
    values = [7.0] * 50 + [7.5, 8.0, 8.5, 9.0] * 10 + [9.0] * 50 + [1e9]
    chunk = ChunkWriter.for_value(values[0], 1, second_order)
    for index, value in enumerate(values):
        chunk.append(1_000 * index, value)
    assert list(decode(chunk.header(), chunk.body())) == [(1_000 * i, v) for i, v in enumerate(values)]
    assert len(chunk.body()) < len(values) * 2  # one byte per timestamp, runs for the rest


def test_a_value_finer_than_the_chunk_starts_a_new_chunk_and_loses_nothing(tmp_path: Path) -> None:
    store = _store(tmp_path)
    spec = gauge("esnode_x", "x.")
    values = [1.0, 2.0, 2.5, 0.1 + 0.2, 3.25, 4.0]
    for index, value in enumerate(values):
        store.append(T0 + index, [Sample(spec, (), value)])
    store.flush(T0 + 10)
    with open_reader(store.path) as db:
        assert [v for _, v in _all(db)[("esnode_x", ())]] == values
        rows = db.execute(
            "SELECT start_ms, header FROM chunks UNION ALL SELECT start_ms, header FROM heads ORDER BY 1"
        )
        kinds = [header & 1 for _, header in rows]
    assert KIND_RAW in kinds and len(kinds) >= 3


def test_retention_by_age_drops_old_chunks_and_keeps_the_window(tmp_path: Path) -> None:
    store = _store(tmp_path, Limits(retention_seconds=30, max_disk_bytes=10**12), chunk_samples=10)
    _record(store, range(100))
    store.flush(T0 + 99)
    with open_reader(store.path) as db:
        power = _all(db)[("esnode_gpu_power_watts", ("0",))]
    stamps = [ms / 1000 - T0 for ms, _ in power]
    assert stamps[0] >= 99 - 30 - 10  # at most one chunk older than the window
    assert stamps == list(range(int(stamps[0]), 100))  # everything inside the window is kept


def test_retention_by_size_keeps_the_newest_within_the_budget(tmp_path: Path) -> None:
    budget = 160 * 1024
    store = _store(tmp_path, Limits(retention_seconds=10**9, max_disk_bytes=budget), chunk_samples=20)
    for start in range(0, 4000, 200):
        _record(store, range(start, start + 200), gpus=8)
        store.flush(T0 + start + 200)
        assert store.used_bytes() <= budget
    store.close()
    assert store.path.stat().st_size <= budget + 16 * 4096  # freed pages go back to the filesystem
    with open_reader(store.path) as db:
        power = _all(db)[("esnode_gpu_power_watts", ("7",))]
    stamps = [ms / 1000 - T0 for ms, _ in power]
    assert stamps[-1] == 3999  # the newest is kept
    assert stamps[0] > 1000  # the oldest went first
    assert stamps == list(range(int(stamps[0]), 4000))  # and what is left has no holes


def test_series_gone_from_the_node_leave_memory_once_on_disk(tmp_path: Path) -> None:
    store = _store(tmp_path)
    _record(store, range(5), gpus=8)
    store.flush(T0 + 5)
    _record(store, range(5, 10), gpus=1)
    store.flush(T0 + 10)
    assert store.series_in_memory == 3  # one GPU's power and energy, and the load average
    with open_reader(store.path) as db:
        assert len(_all(db)[("esnode_gpu_power_watts", ("7",))]) == 5


def test_full_chunks_are_stored_deflated_and_read_back_exactly(tmp_path: Path) -> None:
    store = _store(tmp_path, chunk_samples=100)
    _record(store, range(250))
    store.flush(T0 + 250)
    with open_reader(store.path) as db:
        headers = [row[0] for row in db.execute("SELECT header FROM chunks")]
        energy = _all(db)[("esnode_gpu_energy_joules_total", ("1",))]
    assert any(header & DEFLATED for header in headers)
    assert energy == [(round((T0 + i) * 1000), 1000.0 * i + 1) for i in range(250)]


def test_a_restarted_agent_keeps_what_the_earlier_run_wrote(tmp_path: Path) -> None:
    first = _store(tmp_path)
    _record(first, range(10))
    first.flush(T0 + 10)
    first.close()
    second = _store(tmp_path)
    _record(second, range(10, 20))
    second.flush(T0 + 20)
    with open_reader(second.path) as db:
        stamps = [ms / 1000 - T0 for ms, _ in _all(db)[("esnode_gpu_power_watts", ("1",))]]
    assert stamps == list(range(20))


CRASHING_WRITER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from esnode_agent.cycle.samples import SampleSink, gauge
    from esnode_agent.history.store import HistoryStore, Limits

    specs = [gauge(f"esnode_series_{i}", "x.", "gpu") for i in range(50)]
    store = HistoryStore(Path(sys.argv[1]), Limits(10**9, 10**12), chunk_samples=7)
    cycle = 0
    while True:
        sink = SampleSink(0.0)
        for spec in specs:
            for gpu in range(8):
                sink.add(spec, cycle * 0.5 + gpu, gpu=str(gpu))
        store.append(1_700_000_000 + cycle, sink.samples)
        store.flush(1_700_000_000 + cycle)
        print(cycle, flush=True)
        cycle += 1
    """
)


@pytest.mark.parametrize("kill_after", [3, 40])
def test_kill_9_between_writes_loses_at_most_the_last_cycle(tmp_path: Path, kill_after: int) -> None:
    """The writer commits every cycle here; a SIGKILL at any point keeps every committed cycle."""
    path = tmp_path / "h.sqlite3"
    child = subprocess.Popen(
        [sys.executable, "-c", CRASHING_WRITER, str(path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    for _ in range(kill_after):
        committed = int(child.stdout.readline())
    child.kill()  # SIGKILL: no handler, no flush, maybe mid-transaction
    child.wait()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    series = _all(db)
    assert len(series) == 400
    for samples in series.values():
        cycles = [ms // 1000 - 1_700_000_000 for ms, _ in samples]
        assert cycles == list(range(len(cycles)))  # no holes, nothing half-written
        assert committed <= cycles[-1] <= committed + 1


def test_export_filters_by_range_and_glob_and_keeps_counters_counters(tmp_path: Path) -> None:
    store = _store(tmp_path, chunk_samples=8)
    _record(store, range(60))
    store.flush(T0 + 60)
    query = Query(round((T0 + 10) * 1000), round((T0 + 19.5) * 1000), ("esnode_gpu_*",))
    with open_reader(store.path) as db:
        text = b"".join(export(db, query, openmetrics=False)).decode()
        openmetrics = b"".join(export(db, query, openmetrics=True)).decode()
    families = {f.name: f for f in parse_text(text)}
    assert set(families) == {"esnode_gpu_power_watts", "esnode_gpu_energy_joules"}
    assert families["esnode_gpu_energy_joules"].type == "counter"
    energy = [s for s in families["esnode_gpu_energy_joules"].samples if s.labels["gpu"] == "1"]
    assert [(s.timestamp, s.value) for s in energy] == [(T0 + i, 1000.0 * i + 1) for i in range(10, 20)]
    assert openmetrics.endswith("# EOF\n")
    om = {f.name: f for f in parse_openmetrics(openmetrics)}
    assert om["esnode_gpu_energy_joules"].type == "counter"
    power = [s for s in om["esnode_gpu_power_watts"].samples if s.labels["gpu"] == "0"]
    assert [(float(s.timestamp), s.value) for s in power] == [
        (T0 + i, 300.0 + (i % 7) * 0.125) for i in range(10, 20)
    ]


def _snapshot(sequence: int) -> Snapshot:
    return Snapshot(sequence, T0 + sequence, 0.01, SampleIndex(_cycle(sequence)), ())


def test_writer_thread_flushes_on_stop_and_the_endpoint_serves_it(tmp_path: Path) -> None:
    store = _store(tmp_path)
    writer = HistoryWriter(store, flush_seconds=3600, clock=lambda: T0 + 100)
    writer.start()
    for sequence in range(1, 21):
        writer.offer(_snapshot(sequence))
    writer.stop()  # long before the flush interval: stop must flush
    client = TestClient(create_app(Latest(), lambda: True, history=(store.path, 3600.0)))
    params = {"from": str(T0), "to": "2023-11-14T22:13:40Z", "metrics": "esnode_load_*"}
    response = client.get("/tsdb/export", params=params, headers={"Accept": "application/openmetrics-text"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    samples = next(iter(parse_openmetrics(response.text))).samples
    assert [float(s.timestamp) for s in samples] == [T0 + i for i in range(1, 21)]
    bad = client.get("/tsdb/export", params={"from": "yesterday"})
    assert bad.status_code == 400 and "from='yesterday'" in bad.text
    assert client.get("/tsdb/export", params={"from": "2", "to": "1"}).status_code == 400


def test_export_is_absent_when_history_is_off() -> None:
    assert TestClient(create_app(Latest(), lambda: True)).get("/tsdb/export").status_code == 404


def test_history_export_command_reads_the_file_offline(
    tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    store = _store(tmp_path)
    _record(store, range(5))
    store.flush(T0 + 5)
    store.close()
    args = ["history", "export", "--db", str(store.path), "--from", str(T0), "--to", str(T0 + 2)]
    assert main([*args, "--metrics", "esnode_load_average", "--openmetrics"]) == 0
    out = capsysbinary.readouterr().out.decode()
    assert out.endswith("# EOF\n")
    assert [s.value for s in next(iter(parse_openmetrics(out))).samples] == [0.5, 0.51, 0.52]
    assert main(["history", "export", "--db", str(tmp_path / "missing.sqlite3")]) == 2


def test_history_is_off_by_default_and_defaults_to_the_xdg_data_directory() -> None:
    config = AgentConfig()
    assert not config.enable_local_tsdb
    assert (config.local_tsdb_retention_hours, config.local_tsdb_max_disk_mb) == (48, 2048)
    assert config.local_tsdb_flush_seconds == 30
    assert default_directory({"XDG_DATA_HOME": "/xdg", "HOME": "/home/u"}) == Path("/xdg/esnode/tsdb")
    assert default_directory({"HOME": "/home/u"}) == Path("/home/u/.local/share/esnode/tsdb")
    assert database_file(Path("/var/lib/esnode/tsdb")) == Path("/var/lib/esnode/tsdb/history.sqlite3")


def test_an_unwritable_history_path_is_a_config_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    argv = [
        "--enable-local-tsdb",
        "--local-tsdb-path",
        str(blocker / "tsdb"),
        "--listen-address",
        "127.0.0.1:0",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "esnode_agent", *argv], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "local_tsdb_path=" in result.stderr
