"""Configuration: precedence of sources, provenance, and one-line errors for bad input."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from esnode_agent.config.model import AgentConfig
from esnode_agent.config.sources import ConfigError, load_config

AGENT = [sys.executable, "-m", "esnode_agent"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("ESNODE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_match_the_documented_values(tmp_path: Path) -> None:
    loaded = load_config({}, cwd=tmp_path)
    config = loaded.config
    assert config.listen_address == "0.0.0.0:9100"
    assert config.scrape_interval_seconds == 5
    assert all(getattr(config, f"enable_{c}") for c in ("cpu", "memory", "disk", "network", "power", "gpu"))
    assert config.node_power_envelope_watts is None
    assert set(loaded.sources.values()) == {"default"}


def test_precedence_flag_over_env_over_named_file_over_local_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "esnode.toml").write_text(
        "scrape_interval_seconds = 2\nlog_level = 'debug'\nenable_disk = false\nlog_format = 'json'\n"
    )
    named = tmp_path / "named.toml"
    named.write_text("scrape_interval_seconds = 3\nlog_level = 'warning'\nenable_disk = true\n")
    monkeypatch.setenv("ESNODE_CONFIG", str(named))
    monkeypatch.setenv("ESNODE_SCRAPE_INTERVAL_SECONDS", "4")
    monkeypatch.setenv("ESNODE_LOG_LEVEL", "error")

    loaded = load_config({"scrape_interval_seconds": "7"}, cwd=tmp_path)

    assert loaded.config.scrape_interval_seconds == 7
    assert loaded.sources["scrape_interval_seconds"] == "flag --scrape-interval"
    assert loaded.config.log_level == "error"
    assert loaded.sources["log_level"] == "env ESNODE_LOG_LEVEL"
    assert loaded.config.enable_disk is True
    assert loaded.sources["enable_disk"] == str(named)
    assert loaded.config.log_format == "json"
    assert loaded.sources["log_format"] == str(tmp_path / "esnode.toml")


def test_collector_timeout_follows_a_short_interval(tmp_path: Path) -> None:
    config = load_config({"scrape_interval_seconds": "1"}, cwd=tmp_path).config
    assert config.effective_collector_timeout_seconds == 1


@pytest.mark.parametrize(
    ("flags", "toml", "expected"),
    [
        (
            {"scrape_interval_seconds": "-1"},
            None,
            "invalid config: scrape_interval_seconds='-1' from flag --scrape-interval: Input should be greater than or equal to 0.1",
        ),
        ({}, "scrape_intervall_seconds = 5\n", "unknown config key 'scrape_intervall_seconds' in "),
        ({}, "enable_gpu = 'sometimes'\n", "invalid config: enable_gpu='sometimes' from "),
        ({}, "listen_address = 'nowhere'\n", "listen_address='nowhere'"),
        ({}, "this is not toml", "cannot parse config file "),
        ({"node_power_envelope_watts": "-300"}, None, "node_power_envelope_watts='-300' from flag"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, flags: dict[str, str], toml: str | None, expected: str
) -> None:
    if toml is not None:
        (tmp_path / "esnode.toml").write_text(toml)
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(flags, cwd=tmp_path)
    assert expected in str(caught.value)
    assert "\n" not in str(caught.value)


def test_unreadable_config_file_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "esnode.toml").mkdir()  # root reads through chmod 000; a directory is unreadable to anyone
    with pytest.raises(ConfigError, match=r"cannot read config file .*esnode.toml: Is a directory"):
        load_config({}, cwd=tmp_path)


def test_named_config_file_must_exist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESNODE_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match=r"ESNODE_CONFIG=.*missing.toml: no such file"):
        load_config({}, cwd=tmp_path)


def _run_agent(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*AGENT, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=30, check=False
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


@pytest.mark.parametrize(
    ("args", "toml", "expected"),
    [
        (["--scrape-interval", "-5"], None, "scrape_interval_seconds='-5' from flag --scrape-interval"),
        (["--scrape-interval", "often"], None, "scrape_interval_seconds='often' from flag --scrape-interval"),
        ([], "bogus_key = 1\n", "unknown config key 'bogus_key'"),
        (["--no-such-flag"], None, "unrecognized arguments: --no-such-flag"),
    ],
)
def test_bad_config_exits_2_with_one_line(
    tmp_path: Path, args: list[str], toml: str | None, expected: str
) -> None:
    if toml is not None:
        (tmp_path / "esnode.toml").write_text(toml)
    result = _run_agent(*args, cwd=tmp_path)
    assert result.returncode == 2
    line = _one_line(result)
    assert line.startswith("esnode-agent: ")
    assert expected in line


def test_unreadable_file_exits_2(tmp_path: Path) -> None:
    (tmp_path / "esnode.toml").mkdir()
    result = _run_agent(cwd=tmp_path)
    assert result.returncode == 2
    assert "cannot read config file" in _one_line(result)


def test_port_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = _run_agent("--listen-address", f"127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2
    assert f"listen_address=127.0.0.1:{port}: Address already in use" in _one_line(result)


def test_config_command_prints_each_value_with_its_source(tmp_path: Path) -> None:
    (tmp_path / "esnode.toml").write_text("node_power_envelope_watts = 1200\n")
    env = {**__import__("os").environ, "ESNODE_LOG_FORMAT": "json"}
    result = _run_agent("config", "--scrape-interval", "10", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr
    lines = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert set(lines) == set(AgentConfig.model_fields)
    assert lines["scrape_interval_seconds"].endswith("# flag --scrape-interval")
    assert lines["log_format"].endswith("# env ESNODE_LOG_FORMAT")
    assert "1200" in lines["node_power_envelope_watts"]
    assert lines["node_power_envelope_watts"].endswith("esnode.toml")
    assert lines["listen_address"].endswith("# default")


def test_capping_for_a_fleet_it_cannot_report_to_exits_2(tmp_path: Path) -> None:
    """No configured envelope and no way to get the fleet's: capping would never have one."""
    flags = (
        "--power-capping",
        "enforce",
        "--fleet",
        "gpus",
        "--power-capping-state-dir",
        str(tmp_path / "s"),
    )
    result = _run_agent("--listen-address", "127.0.0.1:0", "--no-enable-gpu", *flags, cwd=tmp_path)
    assert result.returncode == 2
    assert "power_capping=enforce: no node_power_envelope_watts, and no node report" in _one_line(result)
