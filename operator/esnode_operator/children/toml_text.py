"""A flat TOML table as text: what the agent's config file holds (scalars only, no nesting)."""

from __future__ import annotations

import math
from collections.abc import Mapping

Scalar = str | bool | int | float

# TOML basic strings must escape these; every other control character goes as \\uXXXX.
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _string(text: str) -> str:
    out = []
    for char in text:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif ord(char) < 0x20 or ord(char) == 0x7F:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _float(value: float) -> str:
    if math.isnan(value):
        return "nan"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return repr(value)  # always has "." or "e", so TOML reads it back as a float


def _value(value: Scalar) -> str:
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _float(value)
    if isinstance(value, str):
        return _string(value)
    raise TypeError(f"cannot write {type(value).__name__} as a TOML scalar")


def _key(name: str) -> str:
    if name and all(char.isascii() and (char.isalnum() or char in "_-") for char in name):
        return name
    return _string(name)


def dumps_flat(table: Mapping[str, Scalar], header: str = "") -> str:
    """``key = value`` lines in the mapping's order, after an optional ``# header`` comment."""
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    lines += [f"{_key(key)} = {_value(value)}" for key, value in table.items()]
    return "\n".join(lines) + "\n"
