"""`esnode-agent status` / `metrics`: read a running agent over HTTP with short timeouts."""

from __future__ import annotations

import json

import httpx

CLIENT_TIMEOUT_SECONDS = 2.0


class AgentUnreachableError(Exception):
    pass


def _get(address: str, path: str) -> httpx.Response:
    base = address if address.startswith(("http://", "https://")) else f"http://{address}"
    try:
        response = httpx.get(base + path, timeout=CLIENT_TIMEOUT_SECONDS)
    except httpx.TimeoutException:
        raise AgentUnreachableError(f"no answer from {base} within {CLIENT_TIMEOUT_SECONDS:g}s") from None
    except httpx.TransportError as exc:
        raise AgentUnreachableError(f"no agent running at {base} ({exc})") from None
    if response.status_code != 200:
        raise AgentUnreachableError(f"{base}{path} answered {response.status_code}: {response.text.strip()}")
    return response


def fetch_status(address: str) -> str:
    return json.dumps(_get(address, "/status").json(), indent=2)


def fetch_metrics(address: str) -> str:
    return _get(address, "/metrics").text
