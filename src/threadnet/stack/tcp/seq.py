"""Sequence-number space modulo 2**32 (RFC 9293 3.4).

The connection core keeps its numbers *unwrapped* (plain Python ints that keep growing
past 2**32), so its hot path compares ordinary ints; a number is wrapped with ``& MASK``
when a segment is built and unwrapped with ``seq_unwrap`` when one arrives. The few
circular comparisons left (PAWS timestamps, the acceptability test) are inlined there as
``(a - b) & MASK >= HALF``.
"""

from __future__ import annotations

MASK = 0xFFFFFFFF
HALF = 0x80000000
SPACE = 0x100000000


def seq_unwrap(wire: int, ref: int) -> int:
    """The unwrapped number nearest to ``ref`` whose low 32 bits are ``wire``.

    ``ref`` is an unwrapped number (it may exceed 2**32); the result is within 2**31 of it.
    """
    d = (wire - ref) & MASK
    if d >= HALF:
        d -= SPACE
    return ref + d
