"""node_exporter's textfile collector: every ``*.prom`` file in a directory, merged into the exposition.

What cron jobs and scripts (an nvidia-smi loop, a RAID check) already write for node_exporter
works unchanged. Each cycle reads every file again. A file that cannot be read or parsed, a family
that clashes with esnode's own names, a type that disagrees with an earlier file, or a series
written twice is reported (``esnode_textfile_scrape_error{file}`` = 1, one log line when the fault
first appears) and skipped; the rest of the file and every other file still serve.

Families are typed as written: counter and gauge keep their type, untyped ones are exported as
gauges; histograms and summaries are refused (the exposition carries only counters and gauges).
As in node_exporter, samples of one family may be spread over the file after its HELP/TYPE lines,
and missing labels are filled with empty values so every series of a family has the same labels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from esnode_agent.cycle.collector import STAGE_READ
from esnode_agent.cycle.samples import MetricSpec, MetricType, SampleSink, counter, gauge

log = logging.getLogger(__name__)

# A larger file is refused rather than read: a runaway script must not grow the agent.
MAX_FILE_BYTES = 4 * 1024 * 1024
RESERVED_PREFIX = "esnode_"
_TYPES = {"counter": MetricType.COUNTER, "gauge": MetricType.GAUGE, "unknown": MetricType.GAUGE}

MTIME = gauge(
    "esnode_textfile_mtime_seconds", "Modification time of a textfile collector file (Unix time).", "file"
)
SCRAPE_ERROR = gauge(
    "esnode_textfile_scrape_error",
    "1 if the file, or one of its families, could not be used this cycle (see the agent's log), else 0.",
    "file",
)


class TextfileError(ValueError):
    """One fault in one file: the file's error gauge turns 1 and the faulty part is skipped."""


@dataclass
class _Family:
    name: str
    help: str
    type: MetricType
    series: dict[tuple[tuple[str, str], ...], float] = field(default_factory=dict)


@dataclass
class _Merged:
    """Families merged over every file read so far this cycle, in the order first seen."""

    families: dict[str, _Family] = field(default_factory=dict)

    def add_file(self, text: str) -> list[str]:
        """Parse one file into the merge; return its faults (the file's good families still count)."""
        parsed_families = list(text_string_to_metric_families(text))  # a parse error refuses it all
        faults: list[str] = []
        declared: dict[str, tuple[str, str]] = {}  # name -> (type, help) from the TYPE/HELP lines
        for parsed in parsed_families:
            if parsed.type != "unknown" or parsed.documentation:
                declared.setdefault(parsed.name, (parsed.type, parsed.documentation))
            kind, help_text = declared.get(parsed.name, (parsed.type, parsed.documentation))
            for sample in parsed.samples:
                try:
                    self._add_sample(sample.name, kind, help_text, sample.labels, sample.value)
                except TextfileError as exc:
                    if str(exc) not in faults:
                        faults.append(str(exc))
        return faults

    def _add_sample(self, name: str, kind: str, help_text: str, labels: dict[str, str], value: float) -> None:
        if name.startswith(RESERVED_PREFIX):
            raise TextfileError(f"family {name} clashes with esnode's own metrics")
        metric_type = _TYPES.get(kind)
        if metric_type is None:
            raise TextfileError(f"family {name} is a {kind}; only counters, gauges and untyped are merged")
        if metric_type is MetricType.COUNTER and not name.endswith("_total"):
            raise TextfileError(f"counter {name} must end in _total")
        family = self.families.get(name)
        if family is None:
            family = self.families[name] = _Family(name, help_text or f"{name} (textfile)", metric_type)
        elif family.type is not metric_type:
            raise TextfileError(f"family {name} is a {kind} here but a {family.type} in an earlier file")
        key = tuple(sorted(labels.items()))
        if key in family.series:
            raise TextfileError(f"series {name}{dict(key)} is written twice")
        family.series[key] = value

    def write(self, sink: SampleSink) -> None:
        for family in self.families.values():
            names = sorted({label for key in family.series for label, _ in key})
            declare = counter if family.type is MetricType.COUNTER else gauge
            spec: MetricSpec = declare(family.name, family.help, *names)
            for key, value in family.series.items():
                given = dict(key)
                sink.add(spec, value, **{label: given.get(label, "") for label in names})


class TextfileCollector:
    name = "textfile"
    stage = STAGE_READ

    def __init__(self, directory: Path) -> None:
        self._directory = directory
        self._reported: dict[Path, str] = {}  # file -> the fault last logged, to log each once

    def collect(self, sink: SampleSink) -> None:
        merged = _Merged()
        for path in self._files():
            faults = self._read_into(merged, path, sink)
            sink.add(SCRAPE_ERROR, 1.0 if faults else 0.0, file=str(path))
            self._log_change(path, "; ".join(faults))
        merged.write(sink)

    def _files(self) -> Iterable[Path]:
        try:
            return sorted(p for p in self._directory.glob("*.prom") if p.is_file())
        except OSError:
            return []

    def _read_into(self, merged: _Merged, path: Path, sink: SampleSink) -> list[str]:
        try:
            stat = path.stat()
            if stat.st_size > MAX_FILE_BYTES:
                return [f"larger than {MAX_FILE_BYTES} bytes"]
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            return [f"unreadable: {exc}"]
        sink.add(MTIME, stat.st_mtime, file=str(path))
        try:
            return merged.add_file(text)
        except (ValueError, IndexError) as exc:  # the parser refused the whole file: none of it is used
            return [f"not in the Prometheus text format: {exc}"]

    def _log_change(self, path: Path, fault: str) -> None:
        if self._reported.get(path, "") == fault:
            return
        self._reported[path] = fault
        if fault:
            log.warning("textfile skipped in part", extra={"file": str(path), "problem": fault})
