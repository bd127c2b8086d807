"""Every endpoint behind the web configuration: basic auth and the configured response headers.

An ASGI middleware around the whole app, so /metrics, /status and /events (Server-Sent Events)
alike are refused without credentials; TLS itself is the listener's (runtime.py).
"""

from __future__ import annotations

import base64
import binascii

import anyio
from starlette.datastructures import Headers, MutableHeaders
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from esnode_agent.serve.web_config import WebConfigWatcher

UNAUTHORIZED_HEADERS = {"WWW-Authenticate": 'Basic realm="esnode"'}


def _credentials(headers: Headers) -> tuple[str, str] | None:
    scheme, _, encoded = headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class WebGuard:
    def __init__(self, app: ASGIApp, watcher: WebConfigWatcher) -> None:
        self._app = app
        self._watcher = watcher

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        config = self._watcher.refresh()
        if config.basic_auth_users and not await self._authorized(Headers(scope=scope)):
            response = PlainTextResponse("unauthorized\n", status_code=401, headers=UNAUTHORIZED_HEADERS)
            await response(scope, receive, send)
            return
        extra = config.http_server_config.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start" and extra:
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers[name] = value
            await send(message)

        await self._app(scope, receive, send_with_headers)

    async def _authorized(self, headers: Headers) -> bool:
        credentials = _credentials(headers)
        if credentials is None:
            return False
        return await anyio.to_thread.run_sync(self._watcher.password_ok, *credentials)
