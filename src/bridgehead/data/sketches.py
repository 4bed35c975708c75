"""Mergeable sketches over numpy/Arrow arrays: distinct count (HyperLogLog) and frequent values.

Pure computation (numpy and pyarrow only). Quantiles use Apache DataSketches' KLL sketch, which takes numpy
arrays directly; its HyperLogLog and frequent-items sketches take one value per Python call, which is far too
slow for millions of rows, so the two sketches below work on whole arrays instead. Both merge exactly: two
sketches built on two halves of a column, merged, equal the sketch of the whole column.
"""

from __future__ import annotations

import base64
import math
import threading
import zlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["FrequentValues", "HyperLogLog", "hash_array", "hash_floats"]

_U64 = np.uint64
_M1 = _U64(0xBF58476D1CE4E5B9)
_M2 = _U64(0x94D049BB133111EB)
_GOLDEN = _U64(0x9E3779B97F4A7C15)
# Odd, so that it has an inverse modulo 2**64 (string hashes below divide by its powers).
_P = _U64(0x100000001B3)
_P_INV = _U64(pow(0x100000001B3, -1, 2**64))


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer: spreads every input bit over the whole word (uint64 arithmetic wraps)."""
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> _U64(30))) * _M1
        x = (x ^ (x >> _U64(27))) * _M2
        mixed: np.ndarray = x ^ (x >> _U64(31))
        return mixed


class _Powers:
    """P**i and P**-i modulo 2**64 for i < n, grown on demand. Profiling threads share it: a grown pair
    replaces the old one in one assignment, and readers use the pair they were handed."""

    def __init__(self) -> None:
        self.pair = (np.ones(1, dtype=_U64), np.ones(1, dtype=_U64))
        self.lock = threading.Lock()

    def at_least(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        pair = self.pair
        if n <= len(pair[0]):
            return pair
        with self.lock:
            if n <= len(self.pair[0]):
                return self.pair
            size = max(n, 2 * len(self.pair[0]))
            with np.errstate(over="ignore"):
                forward = np.cumprod(
                    np.concatenate([[_U64(1)], np.full(size - 1, _P, dtype=_U64)]), dtype=_U64
                )
                inverse = np.cumprod(
                    np.concatenate([[_U64(1)], np.full(size - 1, _P_INV, dtype=_U64)]), dtype=_U64
                )
            self.pair = (forward, inverse)
            return self.pair


_POWERS = _Powers()


def _hash_strings(arr: pa.Array) -> np.ndarray:
    """A stable 64-bit hash per string, computed on the Arrow buffers without making Python strings.

    Each string's bytes are summed as a polynomial in an odd constant P (mod 2**64): a running sum over all
    bytes, differenced at the string boundaries and divided by P**start, gives every string's value in a few
    vector passes. The length is mixed in and the result goes through splitmix64. Stable across processes,
    versions and machines, which matters because stored sketches are merged with new ones.
    """
    if pa.types.is_large_string(arr.type) or pa.types.is_large_binary(arr.type):
        offset_type: Any = np.int64
    else:
        offset_type = np.int32
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=_U64)
    buffers = arr.buffers()
    offsets = np.frombuffer(buffers[1], dtype=offset_type)[arr.offset : arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(buffers[2], dtype=np.uint8) if buffers[2] is not None else np.zeros(0, np.uint8)
    first, last = int(offsets[0]), int(offsets[-1])
    size = last - first
    starts = offsets[:-1] - first
    ends = offsets[1:] - first
    forward, inverse = _POWERS.at_least(size + 1)
    with np.errstate(over="ignore"):
        running = np.empty(size + 1, dtype=_U64)
        running[0] = 0
        terms = running[1:]
        np.multiply(data[first:last], forward[:size], out=terms, dtype=_U64, casting="unsafe")
        np.cumsum(terms, out=terms)
        sums = running[ends]
        sums -= running[starts]
        sums *= inverse[starts]
        sums ^= _mix((ends - starts).astype(_U64))
        return _mix(sums)


def hash_floats(values: np.ndarray) -> np.ndarray:
    """Stable 64-bit hashes of float64 values (-0.0 and 0.0 are one value; every NaN is one value)."""
    values = values + 0.0
    values[np.isnan(values)] = np.nan
    return _mix(values.view(_U64))


def hash_array(arr: pa.Array) -> np.ndarray:
    """Stable 64-bit hashes of the non-null values of an Arrow array (strings, numbers, dates, booleans)."""
    arr = pc.drop_null(arr)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    t = arr.type
    if pa.types.is_dictionary(t):
        return hash_array(arr.dictionary_decode())
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
    ):
        return _hash_strings(arr)
    if pa.types.is_string_view(t) or pa.types.is_binary_view(t):
        return _hash_strings(arr.cast(pa.large_string() if pa.types.is_string_view(t) else pa.large_binary()))
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return hash_floats(
            np.asarray(arr.cast(pa.float64()).to_numpy(zero_copy_only=False), dtype=np.float64)
        )
    if pa.types.is_boolean(t):
        return _mix(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=_U64))
    if pa.types.is_integer(t):
        return _mix(np.asarray(arr.to_numpy(zero_copy_only=False)).astype(np.int64).view(_U64))
    if pa.types.is_temporal(t):
        as_int = arr.cast(pa.int64()) if t.bit_width == 64 else arr.cast(pa.int32()).cast(pa.int64())
        return _mix(np.asarray(as_int.to_numpy(zero_copy_only=False), dtype=np.int64).view(_U64))
    raise TypeError(f"cannot hash values of type {t}")


class HyperLogLog:
    """Distinct-count estimate with 2**p one-byte registers (p=14: 16 KiB, about 0.8 % standard error)."""

    def __init__(self, p: int = 14, registers: np.ndarray | None = None) -> None:
        if not 4 <= p <= 16:
            raise ValueError("p must be between 4 and 16")
        self.p = p
        self.registers = np.zeros(1 << p, dtype=np.uint8) if registers is None else registers

    def update_hashes(self, hashes: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        p = _U64(self.p)
        index = (hashes >> (_U64(64) - p)).astype(np.intp)
        rest = (hashes << p) | (_U64(1) << (p - _U64(1)))  # a sentinel bit bounds the rank
        high = (rest >> _U64(32)).astype(np.float64)
        # rank = leading zeros + 1; the high word decides it unless it is 0 (probability 2**-32 per value).
        with np.errstate(divide="ignore"):
            rank = np.where(high > 0, 32.0 - np.floor(np.log2(np.maximum(high, 1.0))), 33.0).astype(np.uint8)
        np.maximum.at(self.registers, index, rank)

    def update(self, arr: pa.Array) -> None:
        self.update_hashes(hash_array(arr))

    def merge(self, other: HyperLogLog) -> None:
        if other.p != self.p:
            raise ValueError("cannot merge HyperLogLog sketches of different precision")
        np.maximum(self.registers, other.registers, out=self.registers)

    def estimate(self) -> float:
        m = float(len(self.registers))
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / float(np.sum(np.ldexp(1.0, -self.registers.astype(np.int64))))
        zeros = int(np.count_nonzero(self.registers == 0))
        if raw <= 2.5 * m and zeros:
            return m * math.log(m / zeros)  # linear counting is exact-ish while registers are still empty
        return raw

    def to_text(self) -> str:
        return base64.b64encode(zlib.compress(self.registers.tobytes(), 6)).decode("ascii")

    @classmethod
    def from_text(cls, text: str, p: int = 14) -> HyperLogLog:
        try:
            raw = zlib.decompress(base64.b64decode(text, validate=True), bufsize=1 << p)
        except (zlib.error, ValueError) as exc:
            raise ValueError(f"HyperLogLog registers are not readable: {exc}") from exc
        if len(raw) != 1 << p:
            raise ValueError("HyperLogLog registers have the wrong size")
        registers = np.frombuffer(raw, dtype=np.uint8).copy()
        if registers.max(initial=0) > 64 - p + 1:
            raise ValueError("HyperLogLog register out of range")
        return cls(p, registers)


class FrequentValues:
    """The most frequent values with counts, kept to a bounded table (a Misra-Gries style summary).

    Counts are lower bounds; ``error`` bounds how much any count (or any value missing from the table) may be
    short by. With few distinct values (categories) nothing is ever dropped and the counts are exact.
    """

    def __init__(self, capacity: int = 100, counts: dict[str, int] | None = None, error: int = 0) -> None:
        self.capacity = capacity
        self.counts: dict[str, int] = counts or {}
        self.error = error

    def update(self, arr: pa.Array) -> None:
        arr = pc.drop_null(arr)
        if len(arr) == 0:
            return
        if pa.types.is_dictionary(arr.type):
            arr = arr.dictionary_decode()
        self.update_counts(pc.value_counts(arr))

    def update_counts(self, counted: pa.StructArray) -> None:
        """Adds the output of ``pyarrow.compute.value_counts`` (values and their counts)."""
        values = counted.field("values")
        counts = np.asarray(counted.field("counts").to_numpy(zero_copy_only=False), dtype=np.int64)
        keep = 2 * self.capacity
        if len(counts) > keep:
            cut = np.argpartition(-counts, keep)
            self.error += int(counts[cut[keep]])  # nothing left out of this batch counted more than this
            chosen = cut[:keep]
            values = values.take(pa.array(chosen))
            counts = counts[chosen]
        self._add(zip(_labels(values), counts.tolist(), strict=True))

    def _add(self, pairs: Any) -> None:
        table = self.counts
        for value, count in pairs:
            table[value] = table.get(value, 0) + int(count)
        if len(table) > self.capacity:
            ordered = sorted(table.items(), key=lambda kv: (-kv[1], kv[0]))
            self.error += ordered[self.capacity][1]
            self.counts = dict(ordered[: self.capacity])

    def merge(self, other: FrequentValues) -> None:
        self.error += other.error
        self._add(other.counts.items())

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        return sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))[:n]


def _labels(values: pa.Array) -> list[str]:
    """Values as the strings a profile shows (numbers and dates in their canonical text form)."""
    t = values.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return [str(v) for v in values.to_pylist()]
    if pa.types.is_boolean(t):
        return ["true" if v else "false" for v in values.to_pylist()]
    if pa.types.is_temporal(t):
        return [v.isoformat() if hasattr(v, "isoformat") else str(v) for v in values.to_pylist()]
    return [str(v) for v in values.to_pylist()]
