"""The Internet checksum (RFC 1071) and the pseudo-header sums of TCP, UDP and ICMPv6.

The sum is computed with one big-integer conversion instead of a loop over 16-bit words:
read the whole buffer as one big-endian integer ``v``. Because ``2**16 % 0xffff == 1``,
``v % 0xffff`` equals the sum of its 16-bit words modulo 0xffff, which is the ones'
complement sum except that ones' complement arithmetic has two zeros: a sum of data that
is not all zero is never +0, so a remainder of 0 there means 0xffff (-0). An odd length
is padded with one zero octet (RFC 1071 4.1), which is ``v << 8``.

Partial sums (``initial``, the pseudo-header functions) are ordinary non-negative ints in
0..0xffff; they add to ``v`` before the remainder is taken.

``ones_sum``, ``checksum`` and ``verify`` are the general helpers, and the reference:
the fast paths of the other wire modules (``ipv4.checksum_ok``, ``ipv4.write_eth_headers``,
``tcp.parse_header``, ``tcp.set_checksums``, ``tcp.verify_frames4``, ``udp.parse`` and
``udp.build``) inline the same arithmetic to save a call per packet, and their tests check
them against these and against scapy. ``finish`` turns a sum of words into the value of a
checksum field, and ``update`` changes a checksum for one changed word (RFC 1624).
"""

from __future__ import annotations

Buffer = bytes | bytearray | memoryview


def fold(v: int) -> int:
    """Reduce a non-negative sum of 16-bit words (of any size) to its 16-bit ones'
    complement value: 1..0xffff, or 0 only for ``v == 0``."""
    s = v % 0xFFFF
    return s if s or not v else 0xFFFF


def finish(v: int) -> int:
    """The checksum field for the non-negative sum ``v`` of a header's words (reduced or
    not, its checksum field counted as zero): the ones' complement of ``fold(v)``.

    A sum of -0 (0xffff, or any non-zero multiple of it) gives 0, as ``checksum`` does,
    and only an all-zero sum (``v == 0``) gives 0xffff."""
    s = v % 0xFFFF
    return 0xFFFF - s if s or not v else 0


def update(csum: int, old: int, new: int) -> int:
    """The checksum field ``csum`` after one 16-bit word it covers changed from ``old`` to
    ``new``, without summing the data again: RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m').

    Unlike RFC 1141's HC' = HC + m + ~m', it never gives 0xffff where a recomputation
    gives 0 (RFC 1624 3 and its example in 4): over data that is not all zero it writes
    what ``checksum`` would. A change of several words is one call per word."""
    # ~HC is the sum the old checksum stood for; the new sum is never +0 when that
    # was not (~HC > 0), so ``finish`` gives 0 for -0 as a recomputation would
    return finish((0xFFFF - csum) + (0xFFFF - old) + new)


def _reduce(v: int, n: int) -> int:
    """The words of ``n`` bytes read as the big integer ``v``, summed mod 0xFFFF (an odd
    last byte padded with a zero). Reducing before anything is added matters: adding a
    small number to a 1500-byte integer copies it, which costs about as much as the
    reduction itself (performance-notes)."""
    s = v % 0xFFFF
    return s << 8 if n & 1 else s


def ones_sum(data: Buffer, initial: int = 0) -> int:
    """The 16-bit ones' complement sum of ``data`` plus the partial sum ``initial``.

    Returns 0..0xffff; 0 only when every word and ``initial`` are zero.
    """
    v = int.from_bytes(data, "big")
    s = _reduce(v, len(data)) + initial
    s %= 0xFFFF
    return s if s or not (v or initial) else 0xFFFF


def checksum(data: Buffer, initial: int = 0) -> int:
    """The Internet checksum of ``data`` (with the partial sum ``initial``): the value to
    put in a header's checksum field, which must hold zero while this is computed.

    Returns 0..0xffff. Over data that already holds its correct checksum it returns 0.
    It returns 0 for a computed checksum only when the sum is 0xffff; UDP must send that
    as 0xffff (RFC 768), which is the same value in ones' complement.
    """
    v = int.from_bytes(data, "big")
    s = (_reduce(v, len(data)) + initial) % 0xFFFF
    if s == 0 and (v or initial):
        return 0  # the sum is -0 (0xffff); its complement is 0
    return 0xFFFF - s


def verify(data: Buffer, initial: int = 0) -> bool:
    """True when ``data`` (holding its checksum field) sums with ``initial`` to 0xffff."""
    v = int.from_bytes(data, "big")
    return bool(v or initial) and (_reduce(v, len(data)) + initial) % 0xFFFF == 0


def pseudo_header(src: Buffer, dst: Buffer, proto: int, length: int) -> int:
    """Partial sum of the pseudo-header of TCP, UDP or ICMPv6 for either IP version
    (4- or 16-byte addresses).

    IPv4's (RFC 9293 3.1, RFC 768) is the addresses, a zero, the protocol and a 16-bit
    length; IPv6's (RFC 8200 8.1) is the addresses, a 32-bit length, zeros and the next
    header. The fields differ only in width and order, and a 32-bit length adds as its two
    16-bit halves (``length`` modulo 0xffff), so their sums are equal and one formula
    serves both."""
    return fold(int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length)
