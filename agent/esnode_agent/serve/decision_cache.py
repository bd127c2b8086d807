"""Remembered decisions about credentials (a password check, a token review), bounded in size and age.

Keys are SHA-256 digests of the credential and what it was checked for, so no credential is kept;
the oldest entry goes first once the bound is reached.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

V = TypeVar("V")

DEFAULT_MAX_ENTRIES = 1024


@dataclass(frozen=True)
class _Entry(Generic[V]):
    value: V
    expires_monotonic: float


class DecisionCache(Generic[V]):
    def __init__(self, ttl_seconds: float = math.inf, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self._ttl = ttl_seconds
        self._max = max_entries
        self._entries: OrderedDict[str, _Entry[V]] = OrderedDict()

    @staticmethod
    def key(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()

    def get(self, key: str) -> V | None:
        found = self._entries.get(key)
        if found is None or found.expires_monotonic < time.monotonic():
            self._entries.pop(key, None)
            return None
        return found.value

    def put(self, key: str, value: V) -> None:
        self._entries[key] = _Entry(value, time.monotonic() + self._ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)
