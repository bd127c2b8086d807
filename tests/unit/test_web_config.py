"""The web config file: refused with one line when bad, re-read when it changes, last good kept."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import bcrypt
import pytest
from tls_material import make_tls_material

from esnode_agent.config.sources import ConfigError
from esnode_agent.serve import web_config
from esnode_agent.serve.web_config import WebConfigWatcher, load_web_config


def hashed(password: str) -> str:
    return bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("tls_server_config: {cert_file: /nope.crt, key_file: /nope.key}\n", "tls_server_config"),
        ("basic_auth_users: {me: plaintext}\n", "not a bcrypt hash"),
        ("tls_server_confg: {}\n", "tls_server_confg: Extra inputs are not permitted"),
        ("basic_auth_users: [\n", "not YAML"),
    ],
)
def test_a_bad_file_is_one_line_naming_the_problem(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_web_config(path)
    assert problem in str(caught.value) and "\n" not in str(caught.value)


def test_the_agent_exits_2_on_a_bad_web_config(tmp_path: Path) -> None:
    path = tmp_path / "web.yml"
    path.write_text("basic_auth_users: {me: plaintext}\n")
    result = subprocess.run(
        [sys.executable, "-m", "esnode_agent", f"--web.config.file={path}", "--listen-address=127.0.0.1:0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "not a bcrypt hash" in result.stderr


def test_changes_are_picked_up_and_a_bad_change_keeps_the_last_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_config, "RECHECK_SECONDS", 0.0)
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users: {{me: '{hashed('one')}'}}\n")
    watcher = WebConfigWatcher(path)
    assert watcher.password_ok("me", "one") and not watcher.password_ok("me", "two")

    path.write_text(f"basic_auth_users: {{me: '{hashed('two')}'}}\n")
    os.utime(path, ns=(1, 10**18))
    watcher.refresh()
    assert watcher.password_ok("me", "two") and not watcher.password_ok("me", "one")

    path.write_text("basic_auth_users: {me: plaintext}\n")
    os.utime(path, ns=(1, 2 * 10**18))
    watcher.refresh()
    assert watcher.password_ok("me", "two")


def test_a_renewed_certificate_is_loaded_into_the_same_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_config, "RECHECK_SECONDS", 0.0)
    tls = make_tls_material(tmp_path / "a")
    path = tmp_path / "web.yml"
    path.write_text(f"tls_server_config: {{cert_file: {tls.server_cert}, key_file: {tls.server_key}}}\n")
    watcher = WebConfigWatcher(path)
    context = watcher.ssl_context
    assert context is not None
    renewed = make_tls_material(tmp_path / "b")
    path.write_text(
        f"tls_server_config: {{cert_file: {renewed.server_cert}, key_file: {renewed.server_key}}}\n"
    )
    os.utime(path, ns=(1, 10**18))
    watcher.refresh()
    assert watcher.ssl_context is context
    assert watcher.current.tls_server_config is not None
    assert watcher.current.tls_server_config.cert_file == renewed.server_cert
