"""exporter-toolkit's web configuration file, the one node_exporter and dcgm-exporter take.

    tls_server_config:     cert_file, key_file, client_auth_type, client_ca_file, min_version, max_version
    http_server_config:    headers (added to every response)
    basic_auth_users:      user: bcrypt hash

The file is re-read when it changes, as exporter-toolkit does: a new certificate, CA or password
takes effect on the next connection without a restart. A file that is bad at start is a config
error (exit 2); one that turns bad later is logged and the last good one stays in force.
"""

from __future__ import annotations

import hashlib
import logging
import os
import ssl
import threading
import time
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from esnode_agent.config.sources import ConfigError
from esnode_agent.serve.decision_cache import DecisionCache

log = logging.getLogger(__name__)

# How often a request may stat the file for changes: cheap enough per request, but bounded.
RECHECK_SECONDS = 1.0

_TLS_VERSIONS = {"TLS10": ssl.TLSVersion.TLSv1, "TLS11": ssl.TLSVersion.TLSv1_1,
                 "TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}  # fmt: skip
# exporter-toolkit's client_auth_type values Python's ssl module can honour.
_CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsServerConfig(_Section):
    cert_file: Path
    key_file: Path
    client_auth_type: Literal["NoClientCert", "VerifyClientCertIfGiven", "RequireAndVerifyClientCert"] = (
        "NoClientCert"
    )
    client_ca_file: Path | None = None
    min_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS12"
    max_version: Literal["TLS10", "TLS11", "TLS12", "TLS13"] = "TLS13"


class HttpServerConfig(_Section):
    headers: dict[str, str] = Field(default_factory=dict)
    http2: bool = True  # accepted for compatibility; the agent serves HTTP/1.1


class WebConfig(_Section):
    tls_server_config: TlsServerConfig | None = None
    http_server_config: HttpServerConfig = HttpServerConfig()
    basic_auth_users: dict[str, str] = Field(default_factory=dict)


def load_web_config(path: Path) -> WebConfig:
    """Parse and check the file, certificates included; raises ConfigError with one line."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        config = WebConfig.model_validate(raw)
    except OSError as exc:
        raise ConfigError(f"web_config_file={path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"web_config_file={path}: not YAML: {str(exc).splitlines()[0]}") from None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise ConfigError(f"web_config_file={path}: {where}: {error['msg']}") from None
    for user, hashed in config.basic_auth_users.items():
        if not hashed.startswith(("$2a$", "$2b$", "$2y$")):
            raise ConfigError(f"web_config_file={path}: basic_auth_users.{user}: not a bcrypt hash")
    if config.tls_server_config is not None:
        build_ssl_context(config.tls_server_config, path)  # fail now, not at the first handshake
    return config


def build_ssl_context(tls: TlsServerConfig, source: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    configure_ssl_context(context, tls, source)
    return context


def configure_ssl_context(context: ssl.SSLContext, tls: TlsServerConfig, source: Path) -> None:
    """Loads certificates into ``context``; new handshakes use them, open connections keep theirs."""
    try:
        context.minimum_version = _TLS_VERSIONS[tls.min_version]
        context.maximum_version = _TLS_VERSIONS[tls.max_version]
        context.load_cert_chain(tls.cert_file, tls.key_file)
        context.verify_mode = _CLIENT_AUTH[tls.client_auth_type]
        if tls.client_auth_type != "NoClientCert":
            if tls.client_ca_file is None:
                raise ConfigError(f"web_config_file={source}: {tls.client_auth_type} needs client_ca_file")
            context.load_verify_locations(tls.client_ca_file)
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise ConfigError(f"web_config_file={source}: tls_server_config: {exc}") from None


class WebConfigWatcher:
    """The config in force, re-read when the file (or a certificate it names) changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self.current = load_web_config(path)
        self.ssl_context = (
            build_ssl_context(self.current.tls_server_config, path)
            if self.current.tls_server_config
            else None
        )
        self._stamp = self._files_stamp()
        self._checked_at = time.monotonic()
        # bcrypt costs tens of milliseconds of CPU per check by design, and a scraper sends the same
        # pair every time: outcomes, right and wrong, are remembered (no password kept).
        self._outcomes: DecisionCache[bool] = DecisionCache()

    def password_ok(self, user: str, password: str) -> bool:
        """Blocking (bcrypt) on a cache miss; call it off the event loop."""
        hashed = self.current.basic_auth_users.get(user)
        if hashed is None:
            return False
        key = self._outcomes.key(user, password, hashed)
        outcome = self._outcomes.get(key)
        if outcome is None:
            import bcrypt  # noqa: PLC0415  (the operator reads WebConfig without the agent extra)

            outcome = bcrypt.checkpw(password.encode(), hashed.encode())
            self._outcomes.put(key, outcome)
        return outcome

    def refresh(self) -> WebConfig:
        now = time.monotonic()
        if now - self._checked_at < RECHECK_SECONDS:
            return self.current
        with self._lock:
            self._checked_at = now
            stamp = self._files_stamp()
            if stamp != self._stamp:
                self._stamp = stamp
                self._reload()
        return self.current

    def _reload(self) -> None:
        try:
            config = load_web_config(self._path)
            if config.tls_server_config is not None and self.ssl_context is not None:
                configure_ssl_context(self.ssl_context, config.tls_server_config, self._path)
        except ConfigError as exc:
            log.error("web config not reloaded; the last good one stays", extra={"problem": str(exc)})
            return
        if (config.tls_server_config is None) != (self.ssl_context is None):
            log.error("web config: turning TLS on or off needs a restart; the rest was reloaded")
        self.current = config
        log.info("web config reloaded", extra={"file": str(self._path)})

    def _files_stamp(self) -> str:
        paths = [self._path]
        tls = self.current.tls_server_config
        if tls is not None:
            paths += [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p is not None]
        parts = []
        for path in paths:
            try:
                stat = os.stat(path)
                parts.append(f"{path}:{stat.st_mtime_ns}:{stat.st_size}")
            except OSError:
                parts.append(f"{path}:missing")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()
