"""The IPv4 header (RFC 791).

``parse`` reads a header from the start of a buffer and checks what a receiver must
(RFC 1122 3.2.1.1-3.2.1.2): version 4, a header length within the packet, a total length
within the buffer and a correct header checksum. Frames may carry Ethernet padding after
the datagram, so the payload is ``data[header_len:total_length]``, not ``data[header_len:]``.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer, update

HEADER_LEN = 20
MAX_HEADER_LEN = 60
MAX_PACKET = 65535
MIN_MTU = 576  # RFC 791: every host must accept datagrams of 576 bytes

# IP protocol numbers (IANA), shared with IPv6's next-header values
PROTO_HOPOPTS = 0
PROTO_ICMP = 1
PROTO_IGMP = 2
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_IPV6 = 41
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_GRE = 47
PROTO_ESP = 50
PROTO_AH = 51
PROTO_ICMPV6 = 58
PROTO_NONE = 59
PROTO_DSTOPTS = 60
PROTO_SCTP = 132

# the 3-bit flags field
FLAG_RESERVED = 0x4
FLAG_DF = 0x2  # don't fragment
FLAG_MF = 0x1  # more fragments

# option types (RFC 791 3.1)
OPT_EOL = 0
OPT_NOP = 1

#: the hot path's Ethernet + IPv4 header (no options) in one call (``write_eth_headers``):
#: destination MAC, source MAC, EtherType, version/IHL, TOS, total length,
#: identification, flags + fragment offset, TTL, protocol, header checksum, addresses
ETH_HEADER = struct.Struct("!6s6sHBBHHHBBH4s4s")
#: what the direct TCP input (``stack/gro.py``) reads of an IPv4 header, in one call:
#: version/IHL, total length, flags + fragment offset, protocol, source, destination.
#: Its checksum is ``checksum_ok``'s to check.
FIELDS = struct.Struct("!BxH2xHxB2x4s4s")
#: the flags + fragment offset word's bits of a fragment: MF, or any offset
FRAGMENT_BITS = 0x3FFF
#: the version/IHL octet of a header without options
VIHL = 0x45
_HDR = struct.Struct("!BBHHHBBH4s4s")
_CSUM = struct.Struct("!H")
_ETH_P_IPV4 = 0x0800


def parse(data: Buffer, verify: bool = True, quoted: bool = False
          ) -> tuple[int, int, int, int, int, int, int, bytes, bytes, int, bytes]:
    """Parse the IPv4 header at the start of ``data``.

    Returns ``(tos, total_length, ident, flags, frag_offset, ttl, proto, src, dst,
    header_len, options)``: ``flags`` is the 3-bit field (FLAG_DF, FLAG_MF),
    ``frag_offset`` is in bytes (the field times 8), ``src``/``dst`` are 4 bytes,
    ``options`` the raw option bytes (``b""`` when there are none).

    ``verify=False`` skips the header checksum (for a NIC that checked it already).
    ``quoted=True`` parses the header that an ICMP error quotes: the datagram after it
    may be cut short, and its checksum is not checked.
    Raises FrameError on a short, truncated or inconsistent header or a bad checksum.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"IPv4 packet of {n} bytes is shorter than its 20-byte header")
    vihl, tos, total, ident, frag, ttl, proto, _csum, src, dst = _HDR.unpack_from(data)
    if vihl >> 4 != 4:
        raise FrameError(f"IPv4 header has version {vihl >> 4}")
    hl = (vihl & 0xF) << 2
    if hl < HEADER_LEN:
        raise FrameError(f"IPv4 header length {hl} is below the 20-byte minimum")
    if hl > n:
        raise FrameError(f"IPv4 header length {hl} exceeds the {n} bytes received")
    if total < hl:
        raise FrameError(f"IPv4 total length {total} is smaller than the header length {hl}")
    if quoted:
        verify = False
    elif total > n:
        raise FrameError(f"IPv4 total length {total} exceeds the {n} bytes received")
    if verify and not checksum_ok(data, 0, hl):
        raise FrameError("IPv4 header checksum mismatch")
    frag_offset = (frag & 0x1FFF) << 3
    if frag_offset and frag_offset + total - hl > MAX_PACKET - HEADER_LEN:
        # RFC 791: a datagram is at most 65535 bytes; fragments past that are hostile
        raise FrameError(f"IPv4 fragment at offset {frag_offset} with {total - hl} bytes "
                         "ends beyond the 65535-byte datagram limit")
    options = bytes(data[HEADER_LEN:hl]) if hl > HEADER_LEN else b""
    return tos, total, ident, frag >> 13, frag_offset, ttl, proto, src, dst, hl, options


def parse_options(options: Buffer) -> tuple[tuple[int, bytes], ...]:
    """Split IPv4 options into ``((type, value), ...)`` (RFC 791 3.1), without NOPs.

    Stops at End of Option List. Raises FrameError on an option whose length byte is
    missing, below 2 or runs past the options area.
    """
    out = []
    i = 0
    n = len(options)
    while i < n:
        kind = options[i]
        if kind == OPT_EOL:
            break
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n:
            raise FrameError(f"IPv4 option {kind} at offset {i} has no length byte")
        length = options[i + 1]
        if length < 2 or i + length > n:
            raise FrameError(f"IPv4 option {kind} at offset {i} has bad length {length}")
        out.append((kind, bytes(options[i + 2:i + length])))
        i += length
    return tuple(out)


def build(buf: bytearray | memoryview, src: bytes, dst: bytes, proto: int, payload_len: int,
          *, ttl: int = 64, tos: int = 0, ident: int = 0, flags: int = 0,
          frag_offset: int = 0, options: bytes = b"", offset: int = 0) -> int:
    """Write an IPv4 header, with its checksum, into ``buf`` at ``offset``.

    ``payload_len`` is the length of what follows the header (the total length is
    computed); ``frag_offset`` is in bytes and must be a multiple of 8; ``options`` are
    padded with zeros (End of Option List) to a multiple of 4 bytes.
    Returns the header length, so the payload goes at ``offset + length``.
    """
    if len(src) != 4 or len(dst) != 4:
        raise ValueError("IPv4 addresses must be 4 bytes")
    hl = HEADER_LEN
    opt_sum = 0
    if options:
        pad = -len(options) % 4
        if len(options) + pad > MAX_HEADER_LEN - HEADER_LEN:
            raise ValueError(f"IPv4 options of {len(options)} bytes exceed 40 bytes")
        if pad:
            options = bytes(options) + bytes(pad)
        hl += len(options)
        buf[offset + HEADER_LEN:offset + hl] = options
        opt_sum = int.from_bytes(options, "big")
    total = hl + payload_len
    if total > MAX_PACKET or payload_len < 0:
        raise ValueError(f"IPv4 total length {total} out of range")
    if frag_offset & 7 or not 0 <= frag_offset <= 0xFFF8:
        raise ValueError(f"IPv4 fragment offset {frag_offset} is not a multiple of 8 below 65536")
    vihl = 0x40 | (hl >> 2)
    frag = ((flags & 7) << 13) | (frag_offset >> 3)
    _HDR.pack_into(buf, offset, vihl, tos, total, ident, frag, ttl, proto, 0, src, dst)
    # the checksum from the field values, without reading the header back
    s = (((vihl << 8) | tos) + total + ident + frag + ((ttl << 8) | proto)
         + int.from_bytes(src, "big") + int.from_bytes(dst, "big") + opt_sum) % 0xFFFF
    _CSUM.pack_into(buf, offset + 10, 0xFFFF - s if s else 0)  # header is never all zero
    return hl


def checksum_ok(data: Buffer, offset: int = 0, header_len: int = HEADER_LEN) -> bool:
    """Whether the IPv4 header of ``header_len`` bytes at ``offset`` in ``data`` has a
    right checksum: its words sum to 0xffff (RFC 1071). Any header is non-zero (version
    4), so a remainder of 0 modulo 0xffff can only mean -0, and 0xffff in the checksum
    field is accepted as 0 is (RFC 1624 3). The caller has checked that the bytes are
    there."""
    return not int.from_bytes(data[offset:offset + header_len], "big") % 0xFFFF


def header_sum(flags_frag: int, ttl: int, proto: int, src: bytes, dst: bytes,
               tos: int = 0) -> int:
    """The sum of the words of a header without options that a flow's packets share,
    all but the total length, the identification and the checksum: version/IHL and
    ``tos``, ``flags_frag`` (the 16-bit flags + fragment offset word: 0x4000 for DF),
    ``ttl`` and ``proto``, the addresses. ``write_eth_headers`` adds the other two and
    finishes it into each packet's checksum."""
    return (((VIHL << 8) | tos) + flags_frag + ((ttl << 8) | proto)
            + int.from_bytes(src, "big") + int.from_bytes(dst, "big"))


def write_eth_headers(frames: list[bytearray], dmac: bytes, smac: bytes, ident: int,
                      flags_frag: int, ttl: int, proto: int, src: bytes, dst: bytes,
                      hsum: int) -> None:
    """Write the Ethernet and IPv4 headers (no options) of a batch of one flow's frames:
    each of ``frames`` holds 34 free bytes, then the IP payload, to its end. The
    identifications are ``ident``, ``ident + 1``, ... (mod 65536); ``hsum`` is
    ``header_sum(flags_frag, ttl, proto, src, dst)`` (TOS 0), from which each checksum
    is finished without reading the header back. The output path's fast helper: one
    call per batch."""
    pack = ETH_HEADER.pack_into
    for frame in frames:
        total = len(frame) - 14
        s = (hsum + total + ident) % 0xFFFF  # never 0 with 0 words: version 4
        pack(frame, 0, dmac, smac, _ETH_P_IPV4, VIHL, 0, total, ident, flags_frag, ttl, proto,
             0xFFFF - s if s else 0, src, dst)
        ident = (ident + 1) & 0xFFFF


def decrement_ttl(buf: bytearray | memoryview, offset: int = 0) -> int:
    """Decrement the TTL of the IPv4 header at ``offset`` in ``buf`` (a router's step,
    RFC 1812 5.3.1) and update its checksum for it (RFC 1624), without summing the
    header again. The TTL must be at least 1. Returns the new TTL."""
    ttl = buf[offset + 8]
    proto = buf[offset + 9]
    (csum,) = _CSUM.unpack_from(buf, offset + 10)
    buf[offset + 8] = ttl - 1
    _CSUM.pack_into(buf, offset + 10, update(csum, (ttl << 8) | proto, ((ttl - 1) << 8) | proto))
    return ttl - 1


def multicast_mac(addr: Buffer) -> bytes:
    """The Ethernet address an IPv4 multicast address maps to (RFC 1112 6.4): 01:00:5e
    and the address's low 23 bits."""
    return b"\x01\x00\x5e" + bytes((addr[1] & 0x7F, addr[2], addr[3]))
