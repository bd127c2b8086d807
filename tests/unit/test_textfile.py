"""The textfile collector: node_exporter's *.prom files, merged; faults reported per file and skipped."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from collecting import collect
from prometheus_client.parser import text_string_to_metric_families

from esnode_agent.collectors.textfile import MAX_FILE_BYTES, TextfileCollector
from esnode_agent.cycle.samples import MetricType, SampleIndex
from esnode_agent.serve.exposition import render

# The exact output of seed 003's nvidia-smi script: every HELP/TYPE first, the samples after.
SEED_FILE = Path(__file__).resolve().parents[1] / "fixtures" / "textfile" / "gpu_metrics.prom"


def errors(samples: SampleIndex) -> dict[str, float]:
    return {Path(k).name: v for k, v in samples.by_label("esnode_textfile_scrape_error", "file").items()}


def test_the_seed_scripts_file_is_served_unchanged(tmp_path: Path) -> None:
    shutil.copy(SEED_FILE, tmp_path)
    samples = collect(TextfileCollector(tmp_path))
    assert errors(samples) == {"gpu_metrics.prom": 0.0}
    assert samples.by_label("node_gpu_power_draw_watts", "gpu") == {"0": 71.23, "1": 69.8}
    assert samples.named("node_gpu_memory_total_bytes")[0].spec.type is MetricType.GAUGE
    assert samples.named("node_gpu_memory_total_bytes")[0].spec.help == "Total GPU memory in bytes"
    mtime = samples.value("esnode_textfile_mtime_seconds", file=str(tmp_path / "gpu_metrics.prom"))
    assert mtime == pytest.approx((tmp_path / "gpu_metrics.prom").stat().st_mtime)


def test_merged_families_render_as_valid_exposition_for_promtool(tmp_path: Path) -> None:
    shutil.copy(SEED_FILE, tmp_path)
    (tmp_path / "jobs.prom").write_text(
        '# TYPE backup_runs_total counter\nbackup_runs_total{job="db"} 3\nbackup_runs_total 1\n'
    )
    text = render(collect(TextfileCollector(tmp_path))).text.body.decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert families["backup_runs"].type == "counter"
    # missing labels are filled with empty values so the family has one label set
    assert {tuple(sorted(s.labels.items())) for s in families["backup_runs"].samples} == {
        (("job", "db"),),
        (("job", ""),),
    }
    promtool = shutil.which("promtool")
    if promtool:
        check = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, text=True)
        assert check.returncode == 0, check.stdout + check.stderr


def test_a_malformed_file_is_skipped_whole_and_the_others_still_serve(tmp_path: Path) -> None:
    shutil.copy(SEED_FILE, tmp_path)
    (tmp_path / "broken.prom").write_text("good_metric 1\nthis is { not exposition\n")
    samples = collect(TextfileCollector(tmp_path))
    assert errors(samples) == {"broken.prom": 1.0, "gpu_metrics.prom": 0.0}
    assert samples.named("good_metric") == []
    assert len(samples.named("node_gpu_temperature_celsius")) == 2


def test_a_family_that_clashes_with_esnode_is_skipped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "clash.prom").write_text("esnode_gpu_power_watts 5\nmine 1\n")
    samples = collect(TextfileCollector(tmp_path))
    assert errors(samples) == {"clash.prom": 1.0}
    assert samples.value("mine") == 1.0
    assert samples.named("esnode_gpu_power_watts") == []


def test_types_that_disagree_between_files_keep_the_first(tmp_path: Path) -> None:
    (tmp_path / "a.prom").write_text('# TYPE shared_total counter\nshared_total{f="a"} 1\n')
    (tmp_path / "b.prom").write_text('# TYPE shared_total gauge\nshared_total{f="b"} 2\n')
    samples = collect(TextfileCollector(tmp_path))
    assert errors(samples) == {"a.prom": 0.0, "b.prom": 1.0}
    assert samples.by_label("shared_total", "f") == {"a": 1.0}


def test_a_series_written_twice_and_unsupported_types_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a.prom").write_text('dup{x="1"} 1\n')
    (tmp_path / "b.prom").write_text(
        'dup{x="1"} 2\n# TYPE latency histogram\nlatency_bucket{le="+Inf"} 1\nlatency_count 1\nlatency_sum 2\n'
    )
    samples = collect(TextfileCollector(tmp_path))
    assert errors(samples) == {"a.prom": 0.0, "b.prom": 1.0}
    assert samples.value("dup", x="1") == 1.0
    assert samples.named("latency_bucket") == []


def test_untyped_families_are_gauges_and_oversized_files_are_refused(tmp_path: Path) -> None:
    (tmp_path / "plain.prom").write_text("plain_value 7\n")
    (tmp_path / "huge.prom").write_text("x 1\n" + "#" * MAX_FILE_BYTES)
    samples = collect(TextfileCollector(tmp_path))
    assert samples.named("plain_value")[0].spec.type is MetricType.GAUGE
    assert errors(samples) == {"huge.prom": 1.0, "plain.prom": 0.0}


def test_a_missing_directory_serves_nothing_and_fails_nothing(tmp_path: Path) -> None:
    assert len(collect(TextfileCollector(tmp_path / "absent"))) == 0
