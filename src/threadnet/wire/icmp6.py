"""ICMPv6 (RFC 4443) and the Neighbor Discovery messages (RFC 4861).

Every message starts with type, code, checksum and a 32-bit field whose meaning depends
on the type (``rest``): identifier and sequence number for echo, the MTU for packet too
big, the pointer for parameter problem, flags for neighbor advertisements. The checksum
covers the IPv6 pseudo-header (RFC 4443 2.3), so parsing and building need the addresses.

Neighbor Discovery parsers check what RFC 4861 6.1 and 7.1 ask of the message itself
(code 0, minimum length, options of non-zero length, a target that is not multicast);
the rules that need the IPv6 header (hop limit 255, source address) are the caller's.
Unrecognized options are skipped (RFC 4861 4.6); malformed recognized ones reject the
message.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer, checksum, pseudo_header
from threadnet.wire.checksum import verify as verify_checksum

HEADER_LEN = 8
# RFC 4443 2.4(c): an error quotes as much as fits in a packet of the minimum MTU
MAX_QUOTE = 1280 - 40 - HEADER_LEN
PROTO_ICMPV6 = 58

DEST_UNREACHABLE = 1
PACKET_TOO_BIG = 2
TIME_EXCEEDED = 3
PARAMETER_PROBLEM = 4
ECHO_REQUEST = 128
ECHO_REPLY = 129
ROUTER_SOLICITATION = 133
ROUTER_ADVERTISEMENT = 134
NEIGHBOR_SOLICITATION = 135
NEIGHBOR_ADVERTISEMENT = 136
REDIRECT = 137

# destination unreachable codes (RFC 4443 3.1)
UNREACH_NO_ROUTE = 0
UNREACH_ADMIN_PROHIBITED = 1
UNREACH_BEYOND_SCOPE = 2
UNREACH_ADDRESS = 3
UNREACH_PORT = 4
UNREACH_SOURCE_POLICY = 5
UNREACH_REJECT_ROUTE = 6

# time exceeded codes (RFC 4443 3.3)
HOP_LIMIT_EXCEEDED = 0
REASSEMBLY_TIME_EXCEEDED = 1

# parameter problem codes (RFC 4443 3.4)
PARAM_ERRONEOUS_FIELD = 0
PARAM_UNRECOGNIZED_NEXT_HEADER = 1
PARAM_UNRECOGNIZED_OPTION = 2

# neighbor advertisement flags (the first octet after the checksum, RFC 4861 4.4)
NA_ROUTER = 0x80
NA_SOLICITED = 0x40
NA_OVERRIDE = 0x20

# router advertisement flags (RFC 4861 4.2)
RA_MANAGED = 0x80
RA_OTHER = 0x40

# prefix information flags (RFC 4861 4.6.2)
PREFIX_ON_LINK = 0x80
PREFIX_AUTONOMOUS = 0x40

# NDP option types (RFC 4861 4.6)
OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2
OPT_PREFIX_INFO = 3
OPT_REDIRECTED_HEADER = 4
OPT_MTU = 5

INFINITE_LIFETIME = 0xFFFFFFFF

_HDR = struct.Struct("!BBHI")
_CSUM = struct.Struct("!H")
_TARGET = struct.Struct("!BBHI16s")  # NS/NA: header then target address
_RA = struct.Struct("!BBHBBHII")
_LLA = struct.Struct("!BB6s")
_MTU = struct.Struct("!BBHI")
_PREFIX = struct.Struct("!BBBBIII16s")
_PREFIX_BODY = struct.Struct("!BBIII16s")  # the prefix option after type and length
_U32 = struct.Struct("!I")

NS_LEN = 24
NA_LEN = 24
RS_LEN = 8
RA_LEN = 16


# -- the common header ---------------------------------------------------------------
def parse(data: Buffer, src: bytes, dst: bytes, verify: bool = True
          ) -> tuple[int, int, int, memoryview]:
    """Parse an ICMPv6 message: ``data`` is exactly the upper-layer payload of the packet
    from ``src`` to ``dst``.

    Returns ``(type, code, rest, body)``: ``rest`` is the 32-bit field after the checksum
    (echo: ``rest >> 16`` identifier, ``rest & 0xffff`` sequence; packet too big: the
    MTU; parameter problem: the pointer) and ``body`` a view of what follows.
    Raises FrameError on a message shorter than 8 bytes or a bad checksum.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"ICMPv6 message of {n} bytes is shorter than its 8-byte header")
    if verify and not verify_checksum(data, pseudo_header(src, dst, PROTO_ICMPV6, n)):
        raise FrameError("ICMPv6 checksum mismatch")
    kind, code, _csum, rest = _HDR.unpack_from(data)
    return kind, code, rest, memoryview(data)[HEADER_LEN:]


def _finish(buf: bytearray | memoryview, src: bytes, dst: bytes, offset: int, end: int) -> int:
    n = end - offset
    _CSUM.pack_into(buf, offset + 2, checksum(memoryview(buf)[offset:end],
                                              pseudo_header(src, dst, PROTO_ICMPV6, n)))
    return n


def _room(buf: bytearray | memoryview, end: int) -> None:
    if end > len(buf):
        raise ValueError(f"ICMPv6 message ending at {end} does not fit a {len(buf)}-byte buffer")


def build(buf: bytearray | memoryview, src: bytes, dst: bytes, kind: int, code: int,
          rest: int = 0, payload: Buffer = b"", offset: int = 0) -> int:
    """Write an ICMPv6 message, header then ``payload``, with its checksum for the packet
    from ``src`` to ``dst``, into ``buf`` at ``offset``. Returns the message length."""
    end = offset + HEADER_LEN + len(payload)
    _room(buf, end)
    _HDR.pack_into(buf, offset, kind, code, 0, rest)
    buf[offset + HEADER_LEN:end] = payload
    return _finish(buf, src, dst, offset, end)


def build_echo(buf: bytearray | memoryview, src: bytes, dst: bytes, ident: int, seq: int,
               data: Buffer = b"", reply: bool = False, offset: int = 0) -> int:
    """Write an echo request (or, with ``reply``, an echo reply); returns its length."""
    return build(buf, src, dst, ECHO_REPLY if reply else ECHO_REQUEST, 0,
                 (ident << 16) | seq, data, offset)


def build_error(buf: bytearray | memoryview, src: bytes, dst: bytes, kind: int, code: int,
                quoted: Buffer, rest: int = 0, offset: int = 0) -> int:
    """Write an error message (DEST_UNREACHABLE, PACKET_TOO_BIG with ``rest`` = the MTU,
    TIME_EXCEEDED, PARAMETER_PROBLEM with ``rest`` = the pointer) quoting ``quoted``, the
    offending packet from its IPv6 header, cut to MAX_QUOTE bytes. Returns its length."""
    return build(buf, src, dst, kind, code, rest, quoted[:MAX_QUOTE], offset)


# -- Neighbor Discovery options --------------------------------------------------------
def parse_options(data: Buffer, offset: int = 0) -> tuple[tuple[int, memoryview], ...]:
    """Split the NDP options in ``data[offset:]`` into ``((type, value), ...)``, where
    ``value`` is the option without its type and length octets.

    Raises FrameError on an option of length zero (RFC 4861 4.6) or one that runs past
    the end.
    """
    out = []
    n = len(data)
    view = memoryview(data)
    while offset < n:
        if offset + 2 > n:
            raise FrameError(f"NDP option at offset {offset} is cut short")
        kind = data[offset]
        size = data[offset + 1] << 3
        if size == 0:
            raise FrameError(f"NDP option {kind} at offset {offset} has length zero")
        if offset + size > n:
            raise FrameError(f"NDP option {kind} at offset {offset} of {size} bytes runs past "
                             f"the {n}-byte message")
        out.append((kind, view[offset + 2:offset + size]))
        offset += size
    return tuple(out)


def _ndp_options(data: Buffer, offset: int
                 ) -> tuple[bytes | None, bytes | None, int | None,
                            tuple[tuple[int, int, int, int, bytes], ...]]:
    """Read the options threadnet uses: (source LLA, target LLA, MTU, prefixes)."""
    slla = tlla = mtu = None
    prefixes = []
    for kind, value in parse_options(data, offset):
        size = len(value) + 2
        if kind == OPT_SOURCE_LLADDR or kind == OPT_TARGET_LLADDR:
            if size != 8:  # RFC 2464 8: one 8-byte unit for an Ethernet address
                raise FrameError(f"NDP link-layer address option of {size} bytes is not "
                                 "an Ethernet address")
            if kind == OPT_SOURCE_LLADDR:
                slla = bytes(value)
            else:
                tlla = bytes(value)
        elif kind == OPT_MTU:
            if size != 8:
                raise FrameError(f"NDP MTU option of {size} bytes (expected 8)")
            (mtu,) = _U32.unpack_from(value, 2)
        elif kind == OPT_PREFIX_INFO:
            if size != 32:
                raise FrameError(f"NDP prefix information option of {size} bytes (expected 32)")
            plen, flags, valid, preferred, _res, prefix = _PREFIX_BODY.unpack_from(value)
            if plen > 128:
                raise FrameError(f"NDP prefix length {plen} exceeds 128")
            prefixes.append((plen, flags, valid, preferred, prefix))
    return slla, tlla, mtu, tuple(prefixes)


def _check(data: Buffer, kind: int, minimum: int, name: str) -> None:
    n = len(data)
    if n < minimum:
        raise FrameError(f"{name} of {n} bytes is shorter than {minimum} bytes")
    if data[0] != kind:
        raise FrameError(f"ICMPv6 type {data[0]} is not a {name}")
    if data[1] != 0:
        raise FrameError(f"{name} with code {data[1]} (must be 0)")


def _write_lla(buf: bytearray | memoryview, pos: int, kind: int, lla: bytes) -> int:
    if len(lla) != 6:
        raise ValueError("link-layer addresses must be 6-byte MACs")
    _LLA.pack_into(buf, pos, kind, 1, lla)
    return pos + 8


# -- Neighbor Solicitation / Advertisement ---------------------------------------------
def parse_ns(data: Buffer) -> tuple[bytes, bytes | None]:
    """Parse a Neighbor Solicitation (the whole ICMPv6 message, checksum already checked
    by ``parse``). Returns ``(target, source_lladdr or None)``.

    The caller must also drop it unless the hop limit was 255, and when the source is
    the unspecified address, unless the destination is a solicited-node address and
    there is no source link-layer address (RFC 4861 7.1.1).
    """
    _check(data, NEIGHBOR_SOLICITATION, NS_LEN, "Neighbor Solicitation")
    target = bytes(data[8:24])
    if target[0] == 0xFF:
        raise FrameError("Neighbor Solicitation for a multicast target")
    slla, _tlla, _mtu, _p = _ndp_options(data, NS_LEN)
    return target, slla


def parse_na(data: Buffer) -> tuple[int, bytes, bytes | None]:
    """Parse a Neighbor Advertisement. Returns ``(flags, target, target_lladdr or None)``
    where ``flags`` holds NA_ROUTER, NA_SOLICITED and NA_OVERRIDE.

    The caller must also drop it unless the hop limit was 255, and when it was sent to
    a multicast address with NA_SOLICITED set (RFC 4861 7.1.2).
    """
    _check(data, NEIGHBOR_ADVERTISEMENT, NA_LEN, "Neighbor Advertisement")
    target = bytes(data[8:24])
    if target[0] == 0xFF:
        raise FrameError("Neighbor Advertisement for a multicast target")
    _slla, tlla, _mtu, _p = _ndp_options(data, NA_LEN)
    return data[4] & 0xE0, target, tlla


def build_ns(buf: bytearray | memoryview, src: bytes, dst: bytes, target: bytes,
             slla: bytes | None = None, offset: int = 0) -> int:
    """Write a Neighbor Solicitation for ``target`` with an optional source link-layer
    address option (omit it when ``src`` is unspecified, RFC 4861 4.3). Returns its
    length."""
    end = offset + NS_LEN + (8 if slla is not None else 0)
    _room(buf, end)
    _TARGET.pack_into(buf, offset, NEIGHBOR_SOLICITATION, 0, 0, 0, target)
    if slla is not None:
        _write_lla(buf, offset + NS_LEN, OPT_SOURCE_LLADDR, slla)
    return _finish(buf, src, dst, offset, end)


def build_na(buf: bytearray | memoryview, src: bytes, dst: bytes, target: bytes, flags: int,
             tlla: bytes | None = None, offset: int = 0) -> int:
    """Write a Neighbor Advertisement for ``target`` with ``flags`` (NA_ROUTER,
    NA_SOLICITED, NA_OVERRIDE) and an optional target link-layer address option.
    Returns its length."""
    end = offset + NA_LEN + (8 if tlla is not None else 0)
    _room(buf, end)
    _TARGET.pack_into(buf, offset, NEIGHBOR_ADVERTISEMENT, 0, 0, (flags & 0xE0) << 24, target)
    if tlla is not None:
        _write_lla(buf, offset + NA_LEN, OPT_TARGET_LLADDR, tlla)
    return _finish(buf, src, dst, offset, end)


# -- Router Solicitation / Advertisement -----------------------------------------------
def parse_rs(data: Buffer) -> bytes | None:
    """Parse a Router Solicitation. Returns the source link-layer address or None."""
    _check(data, ROUTER_SOLICITATION, RS_LEN, "Router Solicitation")
    return _ndp_options(data, RS_LEN)[0]


def parse_ra(data: Buffer) -> tuple[int, int, int, int, int, bytes | None, int | None,
                                     tuple[tuple[int, int, int, int, bytes], ...]]:
    """Parse a Router Advertisement.

    Returns ``(cur_hop_limit, flags, router_lifetime, reachable_time, retrans_timer,
    source_lladdr, mtu, prefixes)``: ``flags`` holds RA_MANAGED and RA_OTHER (and the
    other bits of that octet), the lifetime is in seconds and the two timers in
    milliseconds; ``source_lladdr`` and ``mtu`` are None when absent, and ``prefixes``
    is a tuple of ``(prefix_length, flags, valid_lifetime, preferred_lifetime, prefix)``
    with PREFIX_ON_LINK and PREFIX_AUTONOMOUS flags and a 16-byte prefix.

    The caller must also drop it unless the hop limit was 255 and the source is
    link-local (RFC 4861 6.1.2).
    """
    _check(data, ROUTER_ADVERTISEMENT, RA_LEN, "Router Advertisement")
    _t, _c, _cs, hop_limit, flags, lifetime, reachable, retrans = _RA.unpack_from(data)
    slla, _tlla, mtu, prefixes = _ndp_options(data, RA_LEN)
    return hop_limit, flags, lifetime, reachable, retrans, slla, mtu, prefixes


def build_rs(buf: bytearray | memoryview, src: bytes, dst: bytes, slla: bytes | None = None,
             offset: int = 0) -> int:
    """Write a Router Solicitation with an optional source link-layer address option."""
    end = offset + RS_LEN + (8 if slla is not None else 0)
    _room(buf, end)
    _HDR.pack_into(buf, offset, ROUTER_SOLICITATION, 0, 0, 0)
    if slla is not None:
        _write_lla(buf, offset + RS_LEN, OPT_SOURCE_LLADDR, slla)
    return _finish(buf, src, dst, offset, end)


def build_ra(buf: bytearray | memoryview, src: bytes, dst: bytes, *, cur_hop_limit: int = 64,
             flags: int = 0, router_lifetime: int = 1800, reachable_time: int = 0,
             retrans_timer: int = 0, slla: bytes | None = None, mtu: int | None = None,
             prefixes: tuple[tuple[int, int, int, int, bytes], ...] = (),
             offset: int = 0) -> int:
    """Write a Router Advertisement with optional source link-layer address, MTU and
    prefix information options (``prefixes`` as returned by ``parse_ra``)."""
    end = (offset + RA_LEN + (8 if slla is not None else 0) + (8 if mtu is not None else 0)
           + 32 * len(prefixes))
    _room(buf, end)
    _RA.pack_into(buf, offset, ROUTER_ADVERTISEMENT, 0, 0, cur_hop_limit, flags,
                  router_lifetime, reachable_time, retrans_timer)
    pos = offset + RA_LEN
    if slla is not None:
        pos = _write_lla(buf, pos, OPT_SOURCE_LLADDR, slla)
    if mtu is not None:
        _MTU.pack_into(buf, pos, OPT_MTU, 1, 0, mtu)
        pos += 8
    for plen, pflags, valid, preferred, prefix in prefixes:
        if len(prefix) != 16 or not 0 <= plen <= 128:
            raise ValueError("a prefix is 16 bytes with a length of 0..128")
        _PREFIX.pack_into(buf, pos, OPT_PREFIX_INFO, 4, plen, pflags, valid, preferred, 0,
                          prefix)
        pos += 32
    return _finish(buf, src, dst, offset, end)
