"""node_exporter's command line works on esnode: the same effective config as esnode's own flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from esnode_agent.cli import main
from esnode_agent.config.node_exporter_flags import translate
from esnode_agent.config.sources import ConfigError


def effective(argv: list[str], capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """`esnode-agent config ARGS` as key -> value, without the source column."""
    assert main(["config", *argv]) == 0
    lines = capsys.readouterr().out.splitlines()
    return {line.split("=", 1)[0].strip(): line.split("=", 1)[1].rsplit("#", 1)[0].strip() for line in lines}


def test_node_exporter_spellings_give_the_same_config_as_ours(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    theirs = [
        "--web.listen-address=:9101",
        "--web.telemetry-path",
        "/scrape",
        "--path.procfs=/host/proc",
        "--path.sysfs=/host/sys",
        "--path.rootfs=/host/root",
        f"--collector.textfile.directory={tmp_path}",
        "--no-collector.hwmon",
        "--collector.diskstats.device-exclude=^ram",
        "--log.level=warn",
        "--log.format=logfmt",
    ]
    ours = [
        "--listen-address=:9101",
        "--telemetry-path=/scrape",
        "--path-procfs=/host/proc",
        "--path-sysfs=/host/sys",
        "--path-rootfs=/host/root",
        f"--textfile-directory={tmp_path}",
        "--no-enable-power",
        "--disk-device-exclude=^ram",
        "--log-level=warning",
        "--log-format=text",
    ]
    from_theirs = effective(theirs, capsys)
    assert from_theirs == effective(ours, capsys)
    assert from_theirs["listen_address"] == "':9101'"
    assert from_theirs["enable_power"] == "False"


def test_disable_defaults_keeps_only_the_collectors_named() -> None:
    argv = translate(["--collector.disable-defaults", "--collector.cpu", "--collector.gpu"]).argv
    assert sorted(argv) == sorted(
        [
            "--enable-cpu",
            "--enable-gpu",
            "--no-enable-disk",
            "--no-enable-memory",
            "--no-enable-network",
            "--no-enable-power",
        ]
    )


def test_collectors_esnode_lacks_are_ignored_and_reported_unknown_ones_refused() -> None:
    translation = translate(
        [
            "--no-collector.wifi",
            "--collector.filesystem.mount-points-exclude",
            "^/(dev|proc)",
            "--collector.systemd",
        ]
    )
    assert translation.argv == []
    assert translation.ignored == [
        "--no-collector.wifi",
        "--collector.filesystem.mount-points-exclude=^/(dev|proc)",
        "--collector.systemd",
    ]
    with pytest.raises(ConfigError, match="no collector 'nosuch'"):
        translate(["--collector.nosuch"])


def test_our_own_flags_pass_through_unchanged() -> None:
    argv = ["run", "--listen-address", "127.0.0.1:0", "--no-enable-gpu", "--gpu-backend=sim:h100x8"]
    assert translate(argv).argv == argv


def test_an_unknown_collector_exits_2_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "esnode_agent", "--collector.nosuch"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "no collector 'nosuch'" in result.stderr
