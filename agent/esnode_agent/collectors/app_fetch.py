"""One bounded GET of a model server's exposition: a byte cap counted after decoding, a total deadline.

httpx's own gzip decoding inflates each network chunk whole (a 194 KB gzip bomb grew the agent
to 1.6 GB), so the body is read raw and inflated here with ``max_length``: at most the cap plus
one chunk is ever held. httpx's timeout bounds each read; the deadline bounds them all, so a
server trickling a byte at a time cannot hold the fetch past it.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterator

import httpx

ACCEPT_ENCODING = "gzip"
_RAW_CHUNK_BYTES = 64 * 1024


class RefusedAnswerError(ValueError):
    """The endpoint answered, but not with something to read as an exposition."""


def fetch_exposition(client: httpx.Client, url: str, max_bytes: int, deadline_seconds: float) -> str:
    deadline = time.monotonic() + deadline_seconds
    with client.stream("GET", url) as response:
        response.raise_for_status()
        media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type == "text/html":
            raise RefusedAnswerError("the endpoint answered with an HTML page, not an exposition")
        body = bytearray()
        for chunk in _decoded(response, max_bytes):
            body += chunk
            if len(body) > max_bytes:
                raise RefusedAnswerError(f"the exposition exceeds {max_bytes} bytes (counted after decoding)")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no complete answer within {deadline_seconds:g}s")
    return body.decode(response.charset_encoding or "utf-8", errors="replace")


def _decoded(response: httpx.Response, max_bytes: int) -> Iterator[bytes]:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    raw = response.iter_raw(_RAW_CHUNK_BYTES)
    if encoding in ("", "identity"):
        yield from raw
        return
    if encoding != "gzip":
        raise RefusedAnswerError(f"content-encoding {encoding!r} was not asked for")
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    for chunk in raw:
        data = chunk
        while data:
            yield inflater.decompress(data, max_bytes + 1)  # never more than the cap at once
            data = inflater.unconsumed_tail
