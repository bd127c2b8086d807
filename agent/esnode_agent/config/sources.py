"""Layering of configuration sources, with where each effective value came from.

Precedence, highest first: command-line flags, ``ESNODE_*`` environment variables, the TOML
file named by ``ESNODE_CONFIG``, ``./esnode.toml``, built-in defaults.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_settings import EnvSettingsSource

from esnode_agent.config.model import SECRET_KEYS, AgentConfig
from esnode_agent.config.url_credentials import redact_url

ENV_PREFIX = "ESNODE_"
CONFIG_FILE_ENV = "ESNODE_CONFIG"
LOCAL_CONFIG_FILE = Path("esnode.toml")
DEFAULT_SOURCE = "default"

# Flags are the field names with dashes; a few read better shorter.
_FLAG_OVERRIDES = {"scrape_interval_seconds": "--scrape-interval"}


class ConfigError(Exception):
    """Configuration that cannot be used; its message is one line naming the key and the problem."""


def flag_name(field: str) -> str:
    return _FLAG_OVERRIDES.get(field, "--" + field.replace("_", "-"))


@dataclass(frozen=True)
class LoadedConfig:
    config: AgentConfig
    sources: Mapping[str, str]  # field name -> where its effective value came from


def load_config(flags: Mapping[str, Any], cwd: Path | None = None) -> LoadedConfig:
    """Merge every source over the defaults and validate once; raise ConfigError on any fault."""
    layers = _layers(flags, cwd or Path.cwd())
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for source, values in layers:
        for key, value in values.items():
            merged[key] = value
            sources[key] = source(key)
    try:
        config = AgentConfig.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(redact_url(_describe(exc, merged, sources))) from None
    effective = {name: sources.get(name, DEFAULT_SOURCE) for name in AgentConfig.model_fields}
    return LoadedConfig(config, effective)


def _layers(flags: Mapping[str, Any], cwd: Path) -> list[tuple[Any, Mapping[str, Any]]]:
    """Sources from lowest to highest precedence, each with a namer for its keys."""
    layers: list[tuple[Any, Mapping[str, Any]]] = []
    local = cwd / LOCAL_CONFIG_FILE
    if local.exists():
        layers.append((lambda _k, p=local: str(p), _read_toml(local)))
    named = os.environ.get(CONFIG_FILE_ENV)
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"{CONFIG_FILE_ENV}={named}: no such file")
        layers.append((lambda _k, p=path: str(p), _read_toml(path)))
    # Typed for BaseSettings, but reads only model_fields: AgentConfig stays a plain model the
    # operator can build without the environment leaking in.
    env = EnvSettingsSource(AgentConfig, env_prefix=ENV_PREFIX, case_sensitive=False)  # type: ignore[arg-type]
    layers.append((lambda k: f"env {ENV_PREFIX}{k.upper()}", env()))
    layers.append((lambda k: f"flag {flag_name(k)}", {k: v for k, v in flags.items() if v is not None}))
    return layers


def _read_toml(path: Path) -> dict[str, Any]:
    # Read directly: pydantic-settings' TOML source treats an unreadable path as empty.
    try:
        with path.open("rb") as file:
            return tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot parse config file {path}: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot parse config file {path}: not UTF-8 at byte {exc.start}") from None


def _describe(exc: ValidationError, values: Mapping[str, Any], sources: Mapping[str, str]) -> str:
    error = exc.errors()[0]
    more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    key = str(error["loc"][0]) if error["loc"] else ""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not key:
        return f"invalid config: {message}{more}"
    where = sources.get(key, DEFAULT_SOURCE)
    if error["type"] == "extra_forbidden":
        return f"unknown config key {key!r} in {where}{more}"
    shown = "(secret)" if key in SECRET_KEYS else repr(values.get(key))
    return f"invalid config: {key}={shown} from {where}: {message}{more}"
