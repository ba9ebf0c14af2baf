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

Router advertisements have a plain representation, ``RouterAdvert``, which
``parse_router_advert`` returns and ``build_router_advert`` writes: the options threadnet
reads are the source link-layer address, MTU, prefix information (RFC 4861 4.6), route
information (RFC 4191 2.3), and the DNS servers and search list (RDNSS and DNSSL, RFC
8106 5). Each option also has its own parser (``parse_prefix_info``...), which takes the
option's value without its type and length octets, as ``parse_options`` splits them.
RFC 4191 3.1 and RFC 8106 ask a host to ignore a malformed route information or DNS
option; threadnet rejects the whole advertisement instead, as for the other options (a
router that sends one is broken, and a half-read message is worse than none).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer, checksum, pseudo_header

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
OPT_ROUTE_INFO = 24  # RFC 4191 2.3
OPT_RDNSS = 25  # RFC 8106 5.1
OPT_DNSSL = 31  # RFC 8106 5.2

INFINITE_LIFETIME = 0xFFFFFFFF

# router preference (RFC 4191 2.1): two bits, in the RA's flags octet (RA_PREF_MASK) and in
# a route information option; the reserved value means medium for a default router and
# makes a route information option void
PREF_MEDIUM = 0
PREF_HIGH = 1
PREF_RESERVED = 2
PREF_LOW = 3
RA_PREF_SHIFT = 3
RA_PREF_MASK = 0x18
PREF_NAMES = {PREF_HIGH: "high", PREF_MEDIUM: "medium", PREF_LOW: "low"}

_HDR = struct.Struct("!BBHI")
_CSUM = struct.Struct("!H")
_TARGET = struct.Struct("!BBHI16s")  # NS/NA: header then target address
_RA = struct.Struct("!BBHBBHII")
_LLA = struct.Struct("!BB6s")
_MTU = struct.Struct("!BBHI")
_PREFIX = struct.Struct("!BBBBIII16s")
_PREFIX_BODY = struct.Struct("!BBIII16s")  # the prefix option after type and length
_U32 = struct.Struct("!I")
_DNS_HEAD = struct.Struct("!BBHI")  # RDNSS, DNSSL: type, length, reserved, lifetime
_ROUTE_HEAD = struct.Struct("!BBBBI")  # route information: type, length, plen, flags, lifetime
_ROUTE_BODY = struct.Struct("!BBI")  # the route information option after type and length

MAX_DOMAIN = 255  # RFC 1035 2.3.4: a name's octets on the wire, length octets included
MAX_LABEL = 63
#: what a search-list label may hold (letters, digits, hyphen; underscore, as resolvers allow)
_LABEL_OCTETS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")

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
    if verify:
        v = int.from_bytes(data, "big") % 0xFFFF  # reduced first: a sum would copy it
        if n & 1:
            v <<= 8
        v += pseudo_header(src, dst, PROTO_ICMPV6, n)
        if v % 0xFFFF:  # never zero: the pseudo-header holds the non-zero next header
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
            p = parse_prefix_info(value)
            prefixes.append((p.plen, p.flags, p.valid, p.preferred, p.prefix))
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
@dataclass(frozen=True, slots=True)
class PrefixInfo:
    """A prefix information option (RFC 4861 4.6.2): ``flags`` holds PREFIX_ON_LINK and
    PREFIX_AUTONOMOUS; lifetimes in seconds (INFINITE_LIFETIME: forever). ``prefix`` is
    16 bytes as sent (the bits past ``plen`` are the receiver's to ignore)."""

    prefix: bytes
    plen: int
    flags: int = PREFIX_ON_LINK | PREFIX_AUTONOMOUS
    valid: int = 2592000  # RFC 4861 6.2.1 AdvValidLifetime: 30 days
    preferred: int = 604800  # AdvPreferredLifetime: 7 days

    @property
    def on_link(self) -> bool:
        return bool(self.flags & PREFIX_ON_LINK)

    @property
    def autonomous(self) -> bool:
        return bool(self.flags & PREFIX_AUTONOMOUS)


@dataclass(frozen=True, slots=True)
class RouteInfo:
    """A route information option (RFC 4191 2.3): a more specific route through the
    advertising router, with a preference (PREF_*) and a lifetime in seconds.
    ``prefix`` is 16 bytes, zero past what the option carries."""

    prefix: bytes
    plen: int
    pref: int = PREF_MEDIUM
    lifetime: int = INFINITE_LIFETIME


@dataclass(frozen=True, slots=True)
class DnsServers:
    """A recursive DNS server option (RDNSS, RFC 8106 5.1): 16-byte addresses, usable
    for ``lifetime`` seconds (0: no longer)."""

    lifetime: int
    servers: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class SearchList:
    """A DNS search list option (DNSSL, RFC 8106 5.2): domain names without the final
    dot, usable for ``lifetime`` seconds."""

    lifetime: int
    domains: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class RouterAdvert:
    """A Router Advertisement (RFC 4861 4.2) and the options threadnet reads. ``flags``
    is the octet after the hop limit: RA_MANAGED, RA_OTHER, the router preference
    (RA_PREF_MASK) and the bits threadnet does not read; ``router_lifetime`` in seconds,
    ``reachable_time`` and ``retrans_timer`` in milliseconds (0: unspecified)."""

    cur_hop_limit: int = 64
    flags: int = 0
    router_lifetime: int = 1800
    reachable_time: int = 0
    retrans_timer: int = 0
    slla: bytes | None = None
    mtu: int | None = None
    prefixes: tuple[PrefixInfo, ...] = ()
    routes: tuple[RouteInfo, ...] = ()
    rdnss: tuple[DnsServers, ...] = ()
    dnssl: tuple[SearchList, ...] = ()

    @property
    def managed(self) -> bool:
        return bool(self.flags & RA_MANAGED)

    @property
    def other(self) -> bool:
        return bool(self.flags & RA_OTHER)

    @property
    def preference(self) -> int:
        """The default router preference, PREF_HIGH, PREF_MEDIUM or PREF_LOW: the
        reserved value counts as medium (RFC 4191 2.2)."""
        pref = (self.flags & RA_PREF_MASK) >> RA_PREF_SHIFT
        return PREF_MEDIUM if pref == PREF_RESERVED else pref


def parse_rs(data: Buffer) -> bytes | None:
    """Parse a Router Solicitation. Returns the source link-layer address or None.

    The caller must also drop it unless the hop limit was 255, and when the source is
    the unspecified address, if it carries a source link-layer address (RFC 4861
    6.1.1)."""
    _check(data, ROUTER_SOLICITATION, RS_LEN, "Router Solicitation")
    return _ndp_options(data, RS_LEN)[0]


def parse_prefix_info(value: Buffer) -> PrefixInfo:
    """A prefix information option's value (after type and length)."""
    size = len(value) + 2
    if size != 32:
        raise FrameError(f"NDP prefix information option of {size} bytes (expected 32)")
    plen, flags, valid, preferred, _res, prefix = _PREFIX_BODY.unpack_from(value)
    if plen > 128:
        raise FrameError(f"NDP prefix length {plen} exceeds 128")
    return PrefixInfo(prefix, plen, flags, valid, preferred)


def parse_route_info(value: Buffer) -> RouteInfo:
    """A route information option's value (RFC 4191 2.3): its length is 1, 2 or 3 units,
    enough for the prefix length (more than 64 bits: 3; more than 0: at least 2)."""
    size = len(value) + 2
    if size not in (8, 16, 24):
        raise FrameError(f"route information option of {size} bytes (expected 8, 16 or 24)")
    plen, flags, lifetime = _ROUTE_BODY.unpack_from(value)
    if plen > 128:
        raise FrameError(f"route information prefix length {plen} exceeds 128")
    if (plen > 64 and size < 24) or (plen > 0 and size < 16):
        raise FrameError(f"route information option of {size} bytes is too short for a "
                         f"/{plen} prefix")
    prefix = bytes(value[6:]).ljust(16, b"\0")
    return RouteInfo(prefix, plen, (flags >> 3) & 3, lifetime)


def parse_rdnss(value: Buffer) -> DnsServers:
    """An RDNSS option's value (RFC 8106 5.1): 3 units for one address, 2 more for each
    other."""
    size = len(value) + 2
    if size < 24 or (size - 8) % 16:
        raise FrameError(f"RDNSS option of {size} bytes (expected 8 + 16 per address, "
                         "at least one)")
    (lifetime,) = _U32.unpack_from(value, 2)
    raw = bytes(value[6:])
    return DnsServers(lifetime, tuple(raw[i:i + 16] for i in range(0, len(raw), 16)))


def parse_dnssl(value: Buffer) -> SearchList:
    """A DNSSL option's value (RFC 8106 5.2): uncompressed domain names (RFC 1035 3.1)
    then zero padding to the option's end; at least one name."""
    size = len(value) + 2
    if size < 16:
        raise FrameError(f"DNSSL option of {size} bytes (expected 16 or more)")
    (lifetime,) = _U32.unpack_from(value, 2)
    raw = bytes(value[6:])
    names: list[str] = []
    pos, n = 0, len(raw)
    while pos < n:
        if raw[pos] == 0:  # where a name would start: the padding
            if any(raw[pos:]):
                raise FrameError(f"DNSSL padding at offset {pos} is not all zero")
            break
        start, labels = pos, []
        while True:
            if pos >= n:
                raise FrameError(f"DNSSL name at offset {start} runs past the option")
            length = raw[pos]
            if length == 0:
                pos += 1
                break
            if length > MAX_LABEL:
                raise FrameError(f"DNSSL label of length {length} at offset {pos} (more than "
                                 "63: compressed or broken)")
            label = raw[pos + 1:pos + 1 + length]
            if len(label) < length:
                raise FrameError(f"DNSSL name at offset {start} runs past the option")
            if not _LABEL_OCTETS.issuperset(label):
                raise FrameError(f"DNSSL label at offset {pos} holds octets a host name "
                                 "cannot")
            labels.append(label.decode("ascii"))
            pos += 1 + length
            if pos - start > MAX_DOMAIN - 1:
                raise FrameError(f"DNSSL name at offset {start} is longer than 255 octets")
        names.append(".".join(labels))
    if not names:
        raise FrameError("DNSSL option holds no domain name")
    return SearchList(lifetime, tuple(names))


def parse_router_advert(data: Buffer) -> RouterAdvert:
    """Parse a Router Advertisement (the whole ICMPv6 message, checksum already checked by
    ``parse``) and the options threadnet reads; unknown options are skipped.

    The caller must also drop it unless the hop limit was 255 and the source is
    link-local (RFC 4861 6.1.2).
    """
    _check(data, ROUTER_ADVERTISEMENT, RA_LEN, "Router Advertisement")
    _t, _c, _cs, hop_limit, flags, lifetime, reachable, retrans = _RA.unpack_from(data)
    slla = mtu = None
    prefixes: list[PrefixInfo] = []
    routes: list[RouteInfo] = []
    rdnss: list[DnsServers] = []
    dnssl: list[SearchList] = []
    for kind, value in parse_options(data, RA_LEN):
        if kind == OPT_SOURCE_LLADDR:
            if len(value) != 6:  # RFC 2464 8: one 8-byte unit for an Ethernet address
                raise FrameError(f"NDP link-layer address option of {len(value) + 2} bytes "
                                 "is not an Ethernet address")
            slla = bytes(value)
        elif kind == OPT_MTU:
            if len(value) != 6:
                raise FrameError(f"NDP MTU option of {len(value) + 2} bytes (expected 8)")
            (mtu,) = _U32.unpack_from(value, 2)
        elif kind == OPT_PREFIX_INFO:
            prefixes.append(parse_prefix_info(value))
        elif kind == OPT_ROUTE_INFO:
            routes.append(parse_route_info(value))
        elif kind == OPT_RDNSS:
            rdnss.append(parse_rdnss(value))
        elif kind == OPT_DNSSL:
            dnssl.append(parse_dnssl(value))
    return RouterAdvert(hop_limit, flags, lifetime, reachable, retrans, slla, mtu,
                        tuple(prefixes), tuple(routes), tuple(rdnss), tuple(dnssl))


def parse_ra(data: Buffer) -> tuple[int, int, int, int, int, bytes | None, int | None,
                                     tuple[tuple[int, int, int, int, bytes], ...]]:
    """Parse a Router Advertisement into a tuple (``parse_router_advert`` gives all of it).

    Returns ``(cur_hop_limit, flags, router_lifetime, reachable_time, retrans_timer,
    source_lladdr, mtu, prefixes)``: ``flags`` holds RA_MANAGED and RA_OTHER (and the
    other bits of that octet), the lifetime is in seconds and the two timers in
    milliseconds; ``source_lladdr`` and ``mtu`` are None when absent, and ``prefixes``
    is a tuple of ``(prefix_length, flags, valid_lifetime, preferred_lifetime, prefix)``
    with PREFIX_ON_LINK and PREFIX_AUTONOMOUS flags and a 16-byte prefix.

    The caller must also drop it unless the hop limit was 255 and the source is
    link-local (RFC 4861 6.1.2).
    """
    ra = parse_router_advert(data)
    return (ra.cur_hop_limit, ra.flags, ra.router_lifetime, ra.reachable_time,
            ra.retrans_timer, ra.slla, ra.mtu,
            tuple((p.plen, p.flags, p.valid, p.preferred, p.prefix) for p in ra.prefixes))


def build_rs(buf: bytearray | memoryview, src: bytes, dst: bytes, slla: bytes | None = None,
             offset: int = 0) -> int:
    """Write a Router Solicitation with an optional source link-layer address option."""
    end = offset + RS_LEN + (8 if slla is not None else 0)
    _room(buf, end)
    _HDR.pack_into(buf, offset, ROUTER_SOLICITATION, 0, 0, 0)
    if slla is not None:
        _write_lla(buf, offset + RS_LEN, OPT_SOURCE_LLADDR, slla)
    return _finish(buf, src, dst, offset, end)


def encode_domain(name: str) -> bytes:
    """A domain name in DNS wire form (RFC 1035 3.1), uncompressed; ValueError unless
    every label is 1..63 letters, digits, hyphens or underscores and the name fits 255
    octets."""
    labels = name.rstrip(".").split(".")
    out = bytearray()
    for label in labels:
        raw = label.encode("ascii", "replace")
        if not 0 < len(raw) <= MAX_LABEL or not _LABEL_OCTETS.issuperset(raw):
            raise ValueError(f"bad domain name {name!r}")
        out += bytes([len(raw)]) + raw
    out.append(0)
    if len(out) > MAX_DOMAIN:
        raise ValueError(f"domain name {name!r} is longer than 255 octets")
    return bytes(out)


def _route_info_units(plen: int) -> int:
    return 1 if plen == 0 else 2 if plen <= 64 else 3


def _options_size(ra: RouterAdvert) -> int:
    size = (8 if ra.slla is not None else 0) + (8 if ra.mtu is not None else 0)
    size += 32 * len(ra.prefixes)
    size += sum(8 * _route_info_units(r.plen) for r in ra.routes)
    size += sum(8 + 16 * len(d.servers) for d in ra.rdnss)
    for s in ra.dnssl:
        names = sum(len(encode_domain(d)) for d in s.domains)
        size += 8 + (names + 7) // 8 * 8
    return size


def router_advert_size(ra: RouterAdvert) -> int:
    """The length of ``ra`` as ``build_router_advert`` writes it."""
    return RA_LEN + _options_size(ra)


def build_router_advert(buf: bytearray | memoryview, src: bytes, dst: bytes, ra: RouterAdvert,
                        offset: int = 0) -> int:
    """Write ``ra`` with its checksum into ``buf`` at ``offset``; returns its length. The
    options go in the order source link-layer address, MTU, prefixes, routes, RDNSS,
    DNSSL. ValueError for a field that does not fit its option."""
    for name, value, top in (("hop limit", ra.cur_hop_limit, 255), ("flags", ra.flags, 255),
                             ("router lifetime", ra.router_lifetime, 0xFFFF),
                             ("reachable time", ra.reachable_time, 0xFFFFFFFF),
                             ("retrans timer", ra.retrans_timer, 0xFFFFFFFF),
                             ("MTU", 0 if ra.mtu is None else ra.mtu, 0xFFFFFFFF)):
        if not 0 <= value <= top:
            raise ValueError(f"RA {name} {value} is out of range 0..{top}")
    end = offset + router_advert_size(ra)
    _room(buf, end)
    _RA.pack_into(buf, offset, ROUTER_ADVERTISEMENT, 0, 0, ra.cur_hop_limit, ra.flags,
                  ra.router_lifetime, ra.reachable_time, ra.retrans_timer)
    pos = offset + RA_LEN
    if ra.slla is not None:
        pos = _write_lla(buf, pos, OPT_SOURCE_LLADDR, ra.slla)
    if ra.mtu is not None:
        _MTU.pack_into(buf, pos, OPT_MTU, 1, 0, ra.mtu)
        pos += 8
    for p in ra.prefixes:
        if len(p.prefix) != 16 or not 0 <= p.plen <= 128:
            raise ValueError("a prefix is 16 bytes with a length of 0..128")
        _PREFIX.pack_into(buf, pos, OPT_PREFIX_INFO, 4, p.plen, p.flags, p.valid,
                          p.preferred, 0, p.prefix)
        pos += 32
    for r in ra.routes:
        if len(r.prefix) != 16 or not 0 <= r.plen <= 128 or not 0 <= r.pref <= 3:
            raise ValueError("a route is a 16-byte prefix with a length of 0..128 and a "
                             "preference of 0..3")
        units = _route_info_units(r.plen)
        _ROUTE_HEAD.pack_into(buf, pos, OPT_ROUTE_INFO, units, r.plen, r.pref << 3,
                              r.lifetime)
        buf[pos + 8:pos + 8 * units] = r.prefix[:8 * units - 8]
        pos += 8 * units
    for d in ra.rdnss:
        if not d.servers or any(len(a) != 16 for a in d.servers):
            raise ValueError("an RDNSS option holds one or more 16-byte addresses")
        _DNS_HEAD.pack_into(buf, pos, OPT_RDNSS, 1 + 2 * len(d.servers), 0, d.lifetime)
        buf[pos + 8:pos + 8 + 16 * len(d.servers)] = b"".join(d.servers)
        pos += 8 + 16 * len(d.servers)
    for sl in ra.dnssl:
        if not sl.domains:
            raise ValueError("a DNSSL option holds one or more domain names")
        names = b"".join(encode_domain(d) for d in sl.domains)
        padded = names.ljust((len(names) + 7) // 8 * 8, b"\0")
        _DNS_HEAD.pack_into(buf, pos, OPT_DNSSL, 1 + len(padded) // 8, 0, sl.lifetime)
        buf[pos + 8:pos + 8 + len(padded)] = padded
        pos += 8 + len(padded)
    return _finish(buf, src, dst, offset, end)


def build_ra(buf: bytearray | memoryview, src: bytes, dst: bytes, *, cur_hop_limit: int = 64,
             flags: int = 0, router_lifetime: int = 1800, reachable_time: int = 0,
             retrans_timer: int = 0, slla: bytes | None = None, mtu: int | None = None,
             prefixes: tuple[tuple[int, int, int, int, bytes], ...] = (),
             offset: int = 0) -> int:
    """Write a Router Advertisement with optional source link-layer address, MTU and
    prefix information options (``prefixes`` as returned by ``parse_ra``)."""
    for plen, _f, _v, _p, prefix in prefixes:
        if len(prefix) != 16 or not 0 <= plen <= 128:
            raise ValueError("a prefix is 16 bytes with a length of 0..128")
    ra = RouterAdvert(cur_hop_limit, flags, router_lifetime, reachable_time, retrans_timer,
                      slla, mtu, tuple(PrefixInfo(prefix, plen, pflags, valid, preferred)
                                       for plen, pflags, valid, preferred, prefix in prefixes))
    return build_router_advert(buf, src, dst, ra, offset)
