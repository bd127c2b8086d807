"""Credentials in endpoint URLs are refused at config time, and never echoed while refusing them.

Refusing rather than redacting: a URL reaches the ``target`` label, /status, logs and httpx's
error messages, and one missed place leaks the secret. Model servers' /metrics on the node need
neither user info nor a query string, and a query may carry a token we cannot tell apart.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s'\"@]*@")
_QUERY = re.compile(r"(?i)(\bhttps?://[^\s'\"?#]*)[?#][^\s'\",)\]]*")


def redact_url(text: str) -> str:
    """``text`` with the user info and query of every http(s) URL in it replaced by ``***``."""
    return _QUERY.sub(r"\1?***", _USERINFO.sub(r"\1***@", text))


def refuse_url_credentials(url: str) -> None:
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise ValueError(
            f"{redact_url(url)!r} carries credentials (user info); endpoints on the node need none"
        )
    if parts.query or parts.fragment:
        raise ValueError(
            f"{redact_url(url)!r} has a query string, which may carry a token; give the bare path"
        )
