"""The IPv6 header and its extension headers (RFC 8200).

``parse`` reads the fixed 40-byte header. ``walk`` follows the extension headers that a
host processes (Hop-by-Hop Options, Routing, Fragment, Destination Options) to the
upper-layer header, enforcing the rules of RFC 8200 4 that make a packet invalid and,
where the RFC asks for an ICMPv6 Parameter Problem, raising ParameterProblem (a
FrameError) that carries the code and pointer for it. The walk is bounded so a hostile
chain of tiny headers costs little.
"""

from __future__ import annotations

import struct
from collections.abc import Container

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer

HEADER_LEN = 40
FRAGMENT_LEN = 8
MIN_MTU = 1280  # RFC 8200 5
MAX_EXTENSION_HEADERS = 8

# next-header values (the IP protocol numbers of ipv4.py, with the extension headers)
PROTO_HOPOPTS = 0
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ROUTING = 43
PROTO_FRAGMENT = 44
PROTO_ICMPV6 = 58
PROTO_NONE = 59
PROTO_DSTOPTS = 60

UNSPECIFIED = bytes(16)
ALL_NODES = bytes.fromhex("ff020000000000000000000000000001")
ALL_ROUTERS = bytes.fromhex("ff020000000000000000000000000002")

# ICMPv6 Parameter Problem codes (RFC 4443 3.4; icmp6.PARAM_*)
_PP_ERRONEOUS_FIELD = 0
_PP_UNRECOGNIZED_NEXT_HEADER = 1
_PP_UNRECOGNIZED_OPTION = 2

#: the hot path's Ethernet + IPv6 header (no extension headers) in one call
#: (``write_eth_headers``): destination MAC, source MAC, EtherType,
#: version/class/flow label, payload length, next header, hop limit, addresses
ETH_HEADER = struct.Struct("!6s6sHIHBB16s16s")
#: what the direct TCP input (``stack/gro.py``) reads of an IPv6 header, in one call:
#: version/class/flow label, payload length, next header, source, destination
FIELDS = struct.Struct("!IHBx16s16s")
_ETH_P_IPV6 = 0x86DD
_HDR = struct.Struct("!IHBB16s16s")
_FRAG = struct.Struct("!BBHI")
_EXT = struct.Struct("!BB")

# Options a host recognizes in Hop-by-Hop and Destination Options headers
_OPT_PAD1 = 0
_OPT_PADN = 1
_OPT_ROUTER_ALERT = 5  # RFC 2711; hosts see it on MLD packets
_KNOWN_OPTIONS = frozenset({_OPT_PADN, _OPT_ROUTER_ALERT})


class ParameterProblem(FrameError):
    """An invalid packet for which RFC 8200 asks for an ICMPv6 Parameter Problem.

    ``code`` is the ICMPv6 code (icmp6.PARAM_ERRONEOUS_FIELD, _UNRECOGNIZED_NEXT_HEADER
    or _UNRECOGNIZED_OPTION), ``pointer`` the offset of the offending octet from the
    start of the buffer given to ``walk`` (the IPv6 header, when the whole packet is
    given). When ``unicast_only`` is true the error must not be sent if the packet's
    destination was a multicast address (RFC 8200 4.2, option action 11).
    """

    def __init__(self, message: str, code: int, pointer: int, unicast_only: bool = False):
        super().__init__(message)
        self.code = code
        self.pointer = pointer
        self.unicast_only = unicast_only


def parse(data: Buffer, quoted: bool = False
          ) -> tuple[int, int, int, int, int, bytes, bytes]:
    """Parse the fixed IPv6 header at the start of ``data``.

    Returns ``(traffic_class, flow_label, payload_length, next_header, hop_limit, src,
    dst)`` with 16-byte addresses. The payload is ``data[40:40 + payload_length]``
    (bytes past it are link padding). ``quoted=True`` parses the header that an ICMPv6
    error quotes, whose payload may be cut short.
    Raises FrameError on a short buffer, a version other than 6 or a payload length
    beyond the buffer. Jumbograms (RFC 2675) are not supported: a payload length of
    zero means an empty payload.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"IPv6 packet of {n} bytes is shorter than its 40-byte header")
    vtf, plen, nh, hlim, src, dst = _HDR.unpack_from(data)
    if vtf >> 28 != 6:
        raise FrameError(f"IPv6 header has version {vtf >> 28}")
    if plen > n - HEADER_LEN and not quoted:
        raise FrameError(f"IPv6 payload length {plen} exceeds the {n - HEADER_LEN} bytes received")
    return (vtf >> 20) & 0xFF, vtf & 0xFFFFF, plen, nh, hlim, src, dst


def build(buf: bytearray | memoryview, src: bytes, dst: bytes, next_header: int,
          payload_len: int, *, hop_limit: int = 64, traffic_class: int = 0,
          flow_label: int = 0, offset: int = 0) -> int:
    """Write the fixed IPv6 header into ``buf`` at ``offset``; returns 40."""
    if len(src) != 16 or len(dst) != 16:
        raise ValueError("IPv6 addresses must be 16 bytes")
    if not 0 <= payload_len <= 0xFFFF:
        raise ValueError(f"IPv6 payload length {payload_len} out of range (no jumbograms)")
    vtf = 0x60000000 | ((traffic_class & 0xFF) << 20) | (flow_label & 0xFFFFF)
    _HDR.pack_into(buf, offset, vtf, payload_len, next_header, hop_limit, src, dst)
    return HEADER_LEN


def _check_options(data: Buffer, start: int, end: int) -> None:
    """Check the TLV options of a Hop-by-Hop or Destination Options header (RFC 8200 4.2)."""
    i = start
    while i < end:
        kind = data[i]
        if kind == _OPT_PAD1:
            i += 1
            continue
        if i + 2 > end:
            raise FrameError(f"IPv6 option {kind} at offset {i} has no length byte")
        length = data[i + 1]
        if i + 2 + length > end:
            raise FrameError(f"IPv6 option {kind} at offset {i} with length {length} "
                             "runs past its header")
        if kind not in _KNOWN_OPTIONS:
            action = kind >> 6  # RFC 8200 4.2: the two high bits say what to do
            if action == 1:
                raise FrameError(f"IPv6 packet with unrecognized option {kind} (discard)")
            if action >= 2:
                raise ParameterProblem(f"IPv6 packet with unrecognized option {kind}",
                                       _PP_UNRECOGNIZED_OPTION, i, unicast_only=action == 3)
        i += 2 + length


def walk(data: Buffer, next_header: int, offset: int = HEADER_LEN, end: int = -1,
         max_headers: int = MAX_EXTENSION_HEADERS, known: Container[int] | None = None
         ) -> tuple[int, int, tuple[int, bool, int] | None]:
    """Walk the extension headers from ``offset`` (the first header after the fixed
    header) with ``next_header`` from the fixed header, up to ``end`` (pass
    ``40 + payload_length``; the default, and the limit, is the buffer's end).

    Returns ``(proto, offset, fragment)``: the upper-layer protocol (PROTO_NONE, or
    any value that is not one of the four extension headers) and where it starts, and
    ``fragment`` =
    ``(frag_offset_bytes, more, identification)`` or None. The walk stops after a
    Fragment header: then ``proto``/``offset`` are the fragment header's next header and
    the start of the fragment's data, which reassembly puts back together before the
    walk goes on from there with ``offset=0``.

    Raises ParameterProblem where RFC 8200 asks for one (Hop-by-Hop not first, a Routing
    header with segments left, unrecognized options with action 10/11, a bad fragment
    length or offset, and, when ``known`` is given, an upper-layer protocol not in it,
    RFC 8200 4) and FrameError on any other malformed or too long chain.
    """
    if end < 0 or end > len(data):
        end = len(data)
    start = offset
    nh = next_header
    nh_pointer = 6  # where the current next-header value was read: the fixed header's field
    count = 0
    while True:
        if nh not in (PROTO_HOPOPTS, PROTO_ROUTING, PROTO_FRAGMENT, PROTO_DSTOPTS):
            if known is not None and nh not in known and nh != PROTO_NONE:
                raise ParameterProblem(f"IPv6 packet with unrecognized next header {nh}",
                                       _PP_UNRECOGNIZED_NEXT_HEADER, nh_pointer)
            return nh, offset, None
        count += 1
        if count > max_headers:
            raise FrameError(f"IPv6 packet with more than {max_headers} extension headers")
        if offset + 8 > end:
            raise FrameError(f"IPv6 extension header {nh} at offset {offset} is truncated")
        if nh == PROTO_FRAGMENT:
            nxt, frag_offset, more, ident = parse_fragment(data, offset)
            body = end - offset - FRAGMENT_LEN
            # RFC 8200 4.5: non-final fragments are multiples of 8 octets, and no
            # fragment may reach past 65535 octets of reassembled payload
            if more and body % 8:
                raise ParameterProblem(
                    f"IPv6 fragment of {body} bytes with M set is not a multiple of 8",
                    _PP_ERRONEOUS_FIELD, 4)
            if (offset - start) + frag_offset + body > 0xFFFF:
                raise ParameterProblem(
                    f"IPv6 fragment at offset {frag_offset} with {body} bytes ends beyond "
                    "65535 bytes", _PP_ERRONEOUS_FIELD, offset + 2)
            return nxt, offset + FRAGMENT_LEN, (frag_offset, more, ident)
        nxt, hlen = _EXT.unpack_from(data, offset)
        size = (hlen + 1) << 3
        if offset + size > end:
            raise FrameError(f"IPv6 extension header {nh} at offset {offset} with length "
                             f"{size} runs past the payload")
        if nh == PROTO_HOPOPTS:
            if count != 1 or offset != HEADER_LEN:
                # RFC 8200 4.1: only immediately after the IPv6 header
                raise ParameterProblem("IPv6 Hop-by-Hop Options header is not first",
                                       _PP_UNRECOGNIZED_NEXT_HEADER, nh_pointer)
            _check_options(data, offset + 2, offset + size)
        elif nh == PROTO_DSTOPTS:
            _check_options(data, offset + 2, offset + size)
        elif data[offset + 3]:
            # RFC 8200 4.4: a Routing header with segments left is processed by its type;
            # a host recognizes none (type 0 is deprecated, RFC 5095)
            raise ParameterProblem(f"IPv6 Routing header of type {data[offset + 2]} with "
                                   "segments left", _PP_ERRONEOUS_FIELD, offset + 2)
        nh_pointer = offset
        nh = nxt
        offset += size


def parse_fragment(data: Buffer, offset: int = 0) -> tuple[int, int, bool, int]:
    """Read the Fragment header (RFC 8200 4.5) at ``offset`` in ``data``.

    Returns ``(next_header, frag_offset, more, identification)`` with ``frag_offset`` in
    bytes. Raises FrameError when the 8 bytes are not all there."""
    if offset + FRAGMENT_LEN > len(data):
        raise FrameError(f"IPv6 fragment header at offset {offset} is truncated")
    nxt, _res, off_m, ident = _FRAG.unpack_from(data, offset)
    return nxt, off_m & 0xFFF8, bool(off_m & 1), ident


def build_fragment(buf: bytearray | memoryview, next_header: int, frag_offset: int,
                   more: bool, ident: int, offset: int = 0) -> int:
    """Write a Fragment header (RFC 8200 4.5) into ``buf`` at ``offset``; returns 8.

    ``frag_offset`` is in bytes and must be a multiple of 8.
    """
    if frag_offset & 7 or not 0 <= frag_offset <= 0xFFF8:
        raise ValueError(f"IPv6 fragment offset {frag_offset} is not a multiple of 8 below 65536")
    _FRAG.pack_into(buf, offset, next_header, 0, frag_offset | (1 if more else 0), ident)
    return FRAGMENT_LEN


def is_multicast(addr: Buffer) -> bool:
    """True for ff00::/8."""
    return addr[0] == 0xFF


def solicited_node(addr: Buffer) -> bytes:
    """The solicited-node multicast address of ``addr`` (RFC 4291 2.7.1): ff02::1:ffXX:XXXX."""
    return b"\xff\x02" + bytes(9) + b"\x01\xff" + bytes(addr[13:16])


def multicast_mac(addr: Buffer) -> bytes:
    """The Ethernet address an IPv6 multicast address maps to (RFC 2464 7): 33:33 + last 4."""
    return b"\x33\x33" + bytes(addr[12:16])


def write_eth_headers(frames: list[bytearray], dmac: bytes, smac: bytes, next_header: int,
                      hop_limit: int, src: bytes, dst: bytes) -> None:
    """Write the Ethernet and IPv6 headers (no extension headers, traffic class and flow
    label 0) of a batch of one flow's frames: each of ``frames`` holds 54 free bytes,
    then the payload, to its end. The output path's fast helper: one call per batch."""
    pack = ETH_HEADER.pack_into
    for frame in frames:
        pack(frame, 0, dmac, smac, _ETH_P_IPV6, 0x60000000, len(frame) - 54, next_header,
             hop_limit, src, dst)


def decrement_hop_limit(buf: bytearray | memoryview, offset: int = 0) -> int:
    """Decrement the hop limit of the IPv6 header at ``offset`` in ``buf`` (a router's
    step, RFC 8200 3; there is no header checksum). It must be at least 1. Returns the
    new hop limit."""
    hlim = buf[offset + 7] - 1
    buf[offset + 7] = hlim
    return hlim
