"""Sequence-number arithmetic modulo 2**32 (RFC 9293 3.4).

Comparisons treat the space as a circle: ``a`` is before ``b`` when the distance from
``a`` forward to ``b`` is less than half the space. The connection core keeps its own
numbers *unwrapped* (plain Python ints that keep growing past 2**32) and converts at the
edge with ``seq_unwrap``, so its hot path compares ordinary ints.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000
SPACE = 0x100000000


def seq_add(a: int, n: int) -> int:
    """``a + n`` in sequence space."""
    return (a + n) & MASK


def seq_diff(a: int, b: int) -> int:
    """The signed distance ``a - b``, in [-2**31, 2**31)."""
    d = (a - b) & MASK
    return d - SPACE if d >= HALF else d


def seq_lt(a: int, b: int) -> bool:
    """``a`` comes before ``b``."""
    return (a - b) & MASK >= HALF


def seq_le(a: int, b: int) -> bool:
    """``a`` comes before ``b`` or equals it."""
    return a == b or (a - b) & MASK >= HALF


def seq_gt(a: int, b: int) -> bool:
    """``a`` comes after ``b``."""
    return (b - a) & MASK >= HALF


def seq_ge(a: int, b: int) -> bool:
    """``a`` comes after ``b`` or equals it."""
    return a == b or (b - a) & MASK >= HALF


def seq_in_window(x: int, left: int, size: int) -> bool:
    """``left <= x < left + size`` in sequence space (False for an empty window)."""
    return (x - left) & MASK < size


def seq_unwrap(wire: int, ref: int) -> int:
    """The unwrapped number nearest to ``ref`` whose low 32 bits are ``wire``.

    ``ref`` is an unwrapped number (it may exceed 2**32); the result is within 2**31 of it.
    """
    d = (wire - ref) & MASK
    if d >= HALF:
        d -= SPACE
    return ref + d
