"""One series' samples over a stretch of time, packed into bytes: the unit history stores.

Timestamps are milliseconds as delta-of-delta zigzag varints: cycles are evenly spaced, so
most take one byte. Values are decimal where they are decimal, as device APIs report them
(NVML's milliwatts, psutil's centiseconds): a chunk picks one power of ten ``scale`` at which
every value is an exact integer and stores the deltas of those integers (for counters, the deltas
of the deltas) as zigzag varints, so an unchanged value or a steady rate takes one byte. A value with no such form (NaN, 0.1 + 0.2) is stored as its
raw eight bytes in a chunk of its own kind. Measured on the sim:h100x8 default metric set this
is measured in bench/history.py.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

MAX_SCALE = 6  # microunits: finer than any source this agent reads
_EXACT_INT = 2**53
KIND_DECIMAL = 0
KIND_RAW = 1
DEFLATED = 1 << 5  # header flag: the body is raw deflate of the encoding above
_RAW = struct.Struct("<d")
_POWERS: tuple[int, ...] = tuple(10**scale for scale in range(MAX_SCALE + 1))


def decimal_scale(value: float, at_least: int = 0) -> int | None:
    """The smallest power of ten >= ``at_least`` at which ``value`` is an exact integer."""
    for scale in range(at_least, MAX_SCALE + 1):
        if _exact_at(value, scale):
            return scale
    return None


def _exact_at(value: float, scale: int) -> bool:
    if not math.isfinite(value):
        return False
    mantissa = round(value * _POWERS[scale])
    return abs(mantissa) < _EXACT_INT and mantissa / _POWERS[scale] == value


def _put_varint(out: bytearray, number: int) -> None:
    while number >= 0x80:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)


def _zigzag(number: int) -> int:
    return (number << 1) if number >= 0 else ((-number) << 1) - 1


def _put_run(out: bytearray, zeros: int) -> None:
    if zeros:
        _put_varint(out, (zeros << 1) | 1)


def _put_signed(out: bytearray, number: int) -> None:
    _put_varint(out, _zigzag(number))


@dataclass(slots=True)
class ChunkWriter:
    """Appends samples of one series; ``accepts`` says when a value needs a new chunk.

    Timestamps and values grow as two byte strings; the stored body is the length of the
    first, then both, so a reader walks each in one tight loop.
    """

    kind: int
    scale: int
    second_order: bool = False  # counters: store the change of the increase, steady rates cost ~1 byte
    start_ms: int = -1
    end_ms: int = -1
    count: int = 0
    _times: bytearray = field(default_factory=bytearray)
    _values: bytearray = field(default_factory=bytearray)
    _delta_ms: int = 0
    _mantissa: int = 0
    _step: int = 0
    _zeros: int = 0  # unchanged values not yet written: a run token holds them

    @classmethod
    def for_value(cls, value: float, scale_hint: int, second_order: bool = False) -> ChunkWriter:
        scale = decimal_scale(value, scale_hint)
        if scale is None:
            scale = decimal_scale(value)
        return cls(KIND_RAW, 0) if scale is None else cls(KIND_DECIMAL, scale, second_order)

    def accepts(self, value: float) -> bool:
        # A raw chunk holds any value: series that alternate (a sum of floats that is sometimes
        # exact) would otherwise cut a chunk per sample, ~40 bytes each.
        return self.kind == KIND_RAW or _exact_at(value, self.scale)

    def append(self, timestamp_ms: int, value: float) -> None:
        if self.count == 0:
            self.start_ms = timestamp_ms
            _put_varint(self._times, timestamp_ms)
        else:
            delta = timestamp_ms - self.end_ms
            _put_signed(self._times, delta - self._delta_ms)
            self._delta_ms = delta
        self.end_ms = timestamp_ms
        self.count += 1
        if self.kind == KIND_RAW:
            self._values += _RAW.pack(value)
            return
        mantissa = round(value * _POWERS[self.scale])
        if self.count == 1:
            _put_varint(self._values, _zigzag(mantissa) << 1)
            self._mantissa = mantissa
            return
        step = mantissa - self._mantissa
        change = step - self._step if self.second_order else step
        self._mantissa, self._step = mantissa, step
        if change == 0:
            self._zeros += 1  # a constant (or a steady rate) costs a byte per run, not per sample
            return
        _put_run(self._values, self._zeros)
        self._zeros = 0
        _put_varint(self._values, _zigzag(change) << 1)

    def header(self) -> int:
        """Kind, order and scale in one small integer, stored beside the body."""
        return self.kind | (self.second_order << 1) | (self.scale << 2)

    def body(self) -> bytes:
        head = bytearray()
        _put_varint(head, len(self._times))
        tail = bytearray()
        _put_run(tail, self._zeros)
        return bytes(head + self._times + self._values + tail)


def _varints(data: bytes, position: int, end: int) -> Iterator[int]:
    number = shift = 0
    while position < end:
        byte = data[position]
        position += 1
        number |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            yield number
            number = shift = 0


def _unzigzag(number: int) -> int:
    return (number >> 1) ^ -(number & 1)


def deflated(header: int, body: bytes) -> tuple[int, bytes]:
    """A full chunk, deflated where that is smaller: millisecond jitter and repeating patterns
    that varints leave at a byte each shrink further (4.17 -> 3.54 B/sample, docs/history.md)."""
    packed = zlib.compress(body, 6, wbits=-15)
    return (header | DEFLATED, packed) if len(packed) < len(body) else (header, body)


def decode(header: int, body: bytes) -> Iterator[tuple[int, float]]:
    """(timestamp_ms, value) of every sample in a chunk, oldest first."""
    if header & DEFLATED:
        header, body = header & ~DEFLATED, zlib.decompress(body, wbits=-15)
    kind, second_order, scale = header & 1, header & 2, header >> 2
    times_length = next(_varints(body, 0, len(body)))
    times_start = _varint_size(times_length)
    times_end = times_start + times_length
    stamps = _varints(body, times_start, times_end)
    timestamp_ms, delta_ms = next(stamps), 0
    times = [timestamp_ms]
    for number in stamps:
        delta_ms += _unzigzag(number)
        timestamp_ms += delta_ms
        times.append(timestamp_ms)
    if kind == KIND_RAW:
        values = [v for (v,) in _RAW.iter_unpack(body[times_end:])]
    else:
        values = _decimal_values(_varints(body, times_end, len(body)), _POWERS[scale], bool(second_order))
    return zip(times, values, strict=True)


def _decimal_values(tokens: Iterator[int], divisor: int, second_order: bool) -> list[float]:
    """Tokens: the first mantissa, then changes (token >> 1) or runs of unchanged (token & 1)."""
    mantissa = _unzigzag(next(tokens) >> 1)
    values, step = [mantissa / divisor], 0
    for token in tokens:
        if token & 1:
            if not second_order:
                values += [mantissa / divisor] * (token >> 1)
                continue
            for _ in range(token >> 1):
                mantissa += step
                values.append(mantissa / divisor)
            continue
        change = _unzigzag(token >> 1)
        step = step + change if second_order else change
        mantissa += step
        values.append(mantissa / divisor)
    return values


def _varint_size(number: int) -> int:
    return max(1, (number.bit_length() + 6) // 7)
