"""Destination address selection (RFC 6724): the default policy table, scopes, and the
sort getaddrinfo applies to a name's addresses.
"""

from __future__ import annotations

from threadnet.stack.gai import _ANY6, _LOOP6, _MAPPED

# RFC 6724 2.1 default policy table: (prefix, length, precedence, label), longest first
_POLICY = [(_LOOP6, 128, 50, 0), (_MAPPED, 96, 35, 4), (_ANY6, 96, 1, 3),
           (b"\x20\x01\x00\x00", 32, 5, 5), (b"\x20\x02", 16, 30, 2),
           (b"\x3f\xfe", 16, 1, 12), (b"\xfe\xc0", 10, 1, 11), (b"\xfc", 7, 3, 13),
           (b"", 0, 40, 1)]


def _as6(packed: bytes) -> bytes:
    return _MAPPED + packed if len(packed) == 4 else packed


_POLICY_BITS = [(int.from_bytes(p.ljust(16, b"\0"), "big") >> (128 - n), 128 - n, prec, label)
                for p, n, prec, label in _POLICY]


def _policy(packed: bytes) -> tuple[int, int]:
    """(precedence, label) of an address (IPv4 as IPv4-mapped) in the policy table."""
    a = int.from_bytes(_as6(packed), "big")
    for prefix, shift, prec, label in _POLICY_BITS:
        if a >> shift == prefix:
            return prec, label
    return 40, 1


def _scope(packed: bytes) -> int:
    """RFC 6724 3.1 scope: 2 link-local (loopback too), 5 site-local, 14 global."""
    if len(packed) == 16 and packed[:12] == _MAPPED:
        packed = packed[12:]
    if len(packed) == 4:
        return 2 if packed[0] == 127 or packed[:2] == b"\xa9\xfe" else 14
    if packed[0] == 0xFF:
        return packed[1] & 0x0F
    if packed == _LOOP6 or (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80):
        return 2
    if packed[0] == 0xFE and packed[1] & 0xC0 == 0xC0:
        return 5
    return 14


def _common_prefix(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) * 8 - x.bit_length()



def sort_destinations(addrs: list[tuple[bytes, int]], sources: list[bytes | None]
                      ) -> list[tuple[bytes, int]]:
    """RFC 6724 6, rules 1, 2, 5, 6, 8 and 9 for IPv6: ``addrs`` (packed, scope id) in
    the order to try them, given the source address the stack would use for each
    (None: unreachable, so last)."""

    def rank(i: int) -> tuple:
        dst, src = addrs[i][0], sources[i]
        prec, label = _policy(dst)
        if src is None:
            return (1, 0, 0, -prec, _scope(dst), 0, i)
        return (0, _scope(dst) != _scope(src), _policy(src)[1] != label, -prec,
                _scope(dst), -_common_prefix(src, dst) if len(dst) == 16 else 0, i)

    return [addrs[i] for i in sorted(range(len(addrs)), key=rank)]


def choose_source6(dst: bytes, candidates: list) -> bytes | None:
    """RFC 6724 5: the source address for ``dst`` among ``candidates`` (the outgoing
    interface's preferred addresses: objects with ``addr``, ``plen``, ``deprecated``).
    Rule 1 (the destination itself), rule 2 (the smallest scope that reaches it, else
    the largest), rule 3 (avoid deprecated) and rule 8 (the longest prefix in common
    with it, up to the address's own prefix length, as Linux counts); ties keep the
    interface's order. Rules 4-7 do not apply here (no home or temporary address
    preference by default, one interface, the policy labels of one family)."""
    dscope = _scope(dst)
    best = None
    best_key: tuple = ()
    for a in candidates:
        addr = a.addr
        if addr == dst:
            return addr
        s = _scope(addr)
        common = _common_prefix(addr, dst)
        key = ((0, s) if s >= dscope else (1, -s), a.deprecated,
               -(common if common < a.plen else a.plen))
        if best is None or key < best_key:
            best, best_key = addr, key
    return best

