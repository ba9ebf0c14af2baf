"""The virtio-net header of Linux tun/tap offloads (IFF_VNET_HDR) and software GSO.

A tap opened with IFF_VNET_HDR prefixes every frame with ``struct virtio_net_hdr``
(virtio 1.x 5.1.6, legacy layout without ``num_buffers``: 10 bytes). Once offloads are
enabled (TUNSETOFFLOAD) the kernel hands the reader TCP "super-segments" of up to 64 KiB
with ``gso_type``/``gso_size`` set, and frames whose checksum is only partial
(``F_NEEDS_CSUM``: the field holds the pseudo-header sum, the reader must finish it over
``frame[csum_start:]``). A stack can take both as they are; a consumer that needs ordinary
frames (a switch port, a capture, a VDE peer) uses ``complete_checksum`` and ``segment``,
which do what the kernel's ``skb_checksum_help`` and ``tcp_gso_segment`` would have done.

The header's 16-bit fields are in the host's byte order for a legacy header (tun's
default; TUNSETVNETLE/BE can change it). ``HEADER`` is little-endian, which is the native
order on x86 and arm64 Linux, the only hosts this is meant for.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer

HEADER_LEN = 10  # struct virtio_net_hdr (legacy, no num_buffers)

# flags
F_NEEDS_CSUM = 1  # the checksum at csum_start + csum_offset is partial: finish it
F_DATA_VALID = 2  # the checksum was already checked (receive direction)

# gso_type
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_UDP = 3  # UFO; Linux no longer produces it
GSO_TCPV6 = 4
GSO_ECN = 0x80  # the super-segment has CWR set: only the first segment keeps it

# flags, gso_type, hdr_len, gso_size, csum_start, csum_offset; little-endian = native on x86
HEADER = struct.Struct("<BBHHHH")
PLAIN = bytes(HEADER_LEN)  # the header of an ordinary frame: no offload

_ETH_HEADER_LEN = 14
_ETH_P_IPV4 = 0x0800
_ETH_P_IPV6 = 0x86DD
_ETH_P_8021Q = 0x8100
_PROTO_TCP = 6
_IPV6_HOPOPTS = 0
_IPV6_ROUTING = 43
_IPV6_FRAGMENT = 44
_IPV6_DSTOPTS = 60
_MAX_EXTENSION_HEADERS = 8

# TCP flag bits within the 16-bit data-offset/flags word
_FIN = 0x01
_PSH = 0x08
_CWR = 0x80

_U16 = struct.Struct("!H")
_TYPE = struct.Struct("!H")
_IPV4_LEN_ID = struct.Struct("!HH")  # total length, identification (IPv4 header offset 2)
_TCP_SEQ = struct.Struct("!I")  # TCP header offset 4
_TCP_FLAGS = struct.Struct("!H")  # data offset and flags, TCP header offset 12


def pack_header(flags: int = 0, gso_type: int = GSO_NONE, hdr_len: int = 0, gso_size: int = 0,
                csum_start: int = 0, csum_offset: int = 0) -> bytes:
    """The 10-byte virtio-net header with these fields."""
    return HEADER.pack(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def unpack_header(buf: Buffer) -> tuple[int, int, int, int, int, int]:
    """Read the virtio-net header at the start of ``buf``.

    Returns ``(flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)``.
    Raises FrameError when ``buf`` is shorter than 10 bytes.
    """
    if len(buf) < HEADER_LEN:
        raise FrameError(f"virtio-net header of {len(buf)} bytes is shorter than 10 bytes")
    return HEADER.unpack_from(buf)


def tso_header(frame: Buffer, csum_start: int, gso_type: int, gso_size: int) -> bytes:
    """The virtio-net header to send ``frame``, a TCP segment at ``csum_start`` (after
    its Ethernet and IP headers) whose checksum field holds the pseudo-header's sum
    (``tcp.set_partial_checksums``): ``F_NEEDS_CSUM`` over the segment, and when it
    carries more than ``gso_size`` bytes of data, ``gso_type`` (GSO_TCPV4 or GSO_TCPV6)
    so that the kernel cuts it into segments of ``gso_size``. ``hdr_len`` covers every
    header, TCP's options included (its data offset)."""
    hdr_len = csum_start + ((frame[csum_start + 12] >> 4) << 2)
    if len(frame) - hdr_len > gso_size:
        return HEADER.pack(F_NEEDS_CSUM, gso_type, hdr_len, gso_size, csum_start, 16)
    return HEADER.pack(F_NEEDS_CSUM, GSO_NONE, hdr_len, 0, csum_start, 16)


def complete_checksum(frame: bytearray | memoryview, csum_start: int, csum_offset: int) -> None:
    """Finish a partial checksum in place (``F_NEEDS_CSUM``, Linux's CHECKSUM_PARTIAL).

    The 16-bit field at ``csum_start + csum_offset`` holds the uncomplemented
    pseudo-header sum; the ones' complement sum of ``frame[csum_start:]`` (that field
    included, as it is) is complemented and stored there, big-endian. A result of 0 is
    stored as 0xffff, which means the same in ones' complement and is what UDP needs
    (RFC 768); Linux's ``skb_checksum_help`` does the same (CSUM_MANGLED_0).
    Raises FrameError when the field does not lie within the frame.
    """
    field = csum_start + csum_offset
    if csum_start < 0 or csum_offset < 0 or field + 2 > len(frame):
        raise FrameError(f"checksum field at {csum_start}+{csum_offset} lies beyond the "
                         f"{len(frame)}-byte frame")
    view = memoryview(frame)[csum_start:]
    v = int.from_bytes(view, "big")
    if len(view) & 1:
        v <<= 8  # RFC 1071 4.1: an odd last byte is padded to a word
    s = v % 0xFFFF
    # s == 0: the sum is +0 (all zero) or -0 (0xffff); the complement is 0xffff or 0,
    # and 0 is stored as 0xffff: either way 0xffff
    _U16.pack_into(frame, field, 0xFFFF - s if s else 0xFFFF)


def segment(frame: Buffer, gso_type: int, gso_size: int) -> list[bytearray]:
    """Split a TCP super-segment into ordinary Ethernet frames (software GSO).

    ``frame`` is an Ethernet frame (optionally with one 802.1Q tag) carrying IPv4
    (``gso_type`` GSO_TCPV4) or IPv6 (GSO_TCPV6, with Hop-by-Hop or Destination Options
    headers allowed) and TCP; its IP length covers a payload that may be far larger
    than ``gso_size``. Returns frames that each carry at most ``gso_size`` bytes of it,
    as Linux's ``tcp_gso_segment`` makes them: every header (IP and TCP options too)
    copied, the sequence number advanced by the payload before it, FIN and PSH only on
    the last segment and CWR only on the first, IPv4 identification incremented per
    segment with the header checksum recomputed, and a complete TCP checksum computed
    from the pseudo-header (whatever the super-segment's checksum field held). A payload
    that fits in one segment gives one frame. Bytes after the IP datagram are ignored.

    Raises FrameError on anything it cannot segment: a short or inconsistent frame, a
    frame that is not TCP over the IP version of ``gso_type``, an IPv4 fragment, an IPv6
    Routing or Fragment header, or a ``gso_size`` below 1.
    """
    n = len(frame)
    kind = gso_type & ~GSO_ECN
    if kind == GSO_TCPV4:
        want_etype = _ETH_P_IPV4
    elif kind == GSO_TCPV6:
        want_etype = _ETH_P_IPV6
    elif kind == GSO_NONE:
        raise FrameError("GSO_NONE frame: nothing to segment")
    elif kind == GSO_UDP:
        raise FrameError("GSO_UDP (UDP fragmentation offload) is not supported")
    else:
        raise FrameError(f"unknown GSO type {gso_type:#x}")
    if gso_size < 1:
        raise FrameError(f"GSO size {gso_size} is below 1")
    if n < _ETH_HEADER_LEN:
        raise FrameError(f"Ethernet frame of {n} bytes is shorter than its 14-byte header")
    (etype,) = _TYPE.unpack_from(frame, 12)
    ip = _ETH_HEADER_LEN
    if etype == _ETH_P_8021Q:
        if n < _ETH_HEADER_LEN + 4:
            raise FrameError(f"802.1Q frame of {n} bytes is shorter than its 18-byte header")
        (etype,) = _TYPE.unpack_from(frame, 16)
        ip += 4
        if etype == _ETH_P_8021Q:
            raise FrameError("802.1Q frame with a second tag (QinQ) is not supported")
    if etype != want_etype:
        raise FrameError(f"GSO type {gso_type:#x} on a frame of EtherType {etype:#06x}")

    if kind == GSO_TCPV4:
        if n < ip + 20:
            raise FrameError(f"IPv4 packet of {n - ip} bytes is shorter than its 20-byte header")
        vihl = frame[ip]
        if vihl >> 4 != 4:
            raise FrameError(f"IPv4 EtherType with IP version {vihl >> 4}")
        ip_hl = (vihl & 0xF) << 2
        if ip_hl < 20:
            raise FrameError(f"IPv4 header length {ip_hl} is below the 20-byte minimum")
        total, ident = _IPV4_LEN_ID.unpack_from(frame, ip + 2)
        (frag,) = _U16.unpack_from(frame, ip + 6)
        if frag & 0x3FFF:  # MF or a fragment offset
            raise FrameError("IPv4 fragment cannot be segmented")
        if frame[ip + 9] != _PROTO_TCP:
            raise FrameError(f"IPv4 protocol {frame[ip + 9]} is not TCP")
        if total > n - ip:
            raise FrameError(f"IPv4 total length {total} exceeds the {n - ip} bytes received")
        if total < ip_hl + 20:
            raise FrameError(f"IPv4 total length {total} leaves no room for a TCP header "
                             f"after the {ip_hl}-byte IP header")
        tcp = ip + ip_hl
        end = ip + total
        pseudo = (int.from_bytes(frame[ip + 12:ip + 16], "big")
                  + int.from_bytes(frame[ip + 16:ip + 20], "big") + _PROTO_TCP)
        # the IP header's sum without its length, identification and checksum fields,
        # which change per segment
        hdr = bytearray(frame[ip:tcp])
        hdr[2:6] = bytes(4)
        hdr[10:12] = bytes(2)
        ip_base = int.from_bytes(hdr, "big") % 0xFFFF
    else:
        if n < ip + 40:
            raise FrameError(f"IPv6 packet of {n - ip} bytes is shorter than its 40-byte header")
        if frame[ip] >> 4 != 6:
            raise FrameError(f"IPv6 EtherType with IP version {frame[ip] >> 4}")
        (plen,) = _U16.unpack_from(frame, ip + 4)
        if plen == 0:
            raise FrameError("IPv6 payload length 0 (a jumbogram or no payload)")
        if plen > n - ip - 40:
            raise FrameError(f"IPv6 payload length {plen} exceeds the {n - ip - 40} "
                             "bytes received")
        end = ip + 40 + plen
        nh = frame[ip + 6]
        tcp = ip + 40
        n_ext = 0
        while nh != _PROTO_TCP:
            if nh == _IPV6_HOPOPTS or nh == _IPV6_DSTOPTS:
                n_ext += 1
                if n_ext > _MAX_EXTENSION_HEADERS:
                    raise FrameError(f"IPv6 packet with more than {_MAX_EXTENSION_HEADERS} "
                                     "extension headers")
                if tcp + 8 > end:
                    raise FrameError(f"IPv6 extension header {nh} at offset {tcp - ip} "
                                     "is truncated")
                size = (frame[tcp + 1] + 1) << 3
                if tcp + size > end:
                    raise FrameError(f"IPv6 extension header {nh} at offset {tcp - ip} with "
                                     f"length {size} runs past the payload")
                nh = frame[tcp]
                tcp += size
            elif nh == _IPV6_ROUTING:
                # the TCP checksum would cover the final destination (RFC 8200 8.1)
                raise FrameError("IPv6 Routing header in a GSO frame is not supported")
            elif nh == _IPV6_FRAGMENT:
                raise FrameError("IPv6 fragment cannot be segmented")
            else:
                raise FrameError(f"IPv6 next header {nh} is not TCP")
        if end - tcp < 20:
            raise FrameError(f"IPv6 payload leaves {end - tcp} bytes for a TCP header")
        pseudo = int.from_bytes(frame[ip + 8:ip + 40], "big") + _PROTO_TCP
        ip_base = 0

    (off_flags,) = _TCP_FLAGS.unpack_from(frame, tcp + 12)
    tcp_hl = (off_flags >> 12) << 2
    if tcp_hl < 20:
        raise FrameError(f"TCP data offset {tcp_hl} is below the 20-byte minimum")
    if tcp + tcp_hl > end:
        raise FrameError(f"TCP data offset {tcp_hl} exceeds the {end - tcp}-byte segment")
    data = tcp + tcp_hl
    (seq,) = _TCP_SEQ.unpack_from(frame, tcp + 4)

    # one template of every header; per segment only lengths, ids, seq, flags, checksums
    template = bytearray(frame[:data])
    template[tcp + 4:tcp + 8] = bytes(4)  # seq
    template[tcp + 12:tcp + 14] = bytes(2)  # data offset and flags
    template[tcp + 16:tcp + 18] = bytes(2)  # checksum
    # the TCP header's sum with seq, flags and checksum zero: each adds in per segment
    # (a 32-bit value adds as its two words, since 2**16 % 0xffff == 1)
    tcp_base = (int.from_bytes(template[tcp:data], "big") + pseudo) % 0xFFFF
    template = bytes(template)

    view = memoryview(frame)
    total_payload = end - data
    count = max(1, -(-total_payload // gso_size))
    first_flags = off_flags & ~(_FIN | _PSH)
    mid_flags = first_flags & ~_CWR
    last_flags = off_flags & ~_CWR
    pack_u16 = _U16.pack_into
    pack_seq = _TCP_SEQ.pack_into
    pack_flags = _TCP_FLAGS.pack_into
    pack_len_id = _IPV4_LEN_ID.pack_into
    v4 = kind == GSO_TCPV4
    out: list[bytearray] = []
    pos = data
    for i in range(count):
        stop = min(pos + gso_size, end)
        size = stop - pos
        chunk = view[pos:stop]
        seg = bytearray(template)
        seg += chunk
        if count == 1:
            flags = off_flags
        elif i == 0:
            flags = first_flags
        elif i == count - 1:
            flags = last_flags
        else:
            flags = mid_flags
        s_seq = (seq + pos - data) & 0xFFFFFFFF
        pack_seq(seg, tcp + 4, s_seq)
        pack_flags(seg, tcp + 12, flags)
        tcp_len = tcp_hl + size
        # reduce the payload's big int first: any arithmetic on it would copy it
        s = int.from_bytes(chunk, "big") % 0xFFFF
        if size & 1:
            s <<= 8  # RFC 1071 4.1: an odd last byte is padded to a word
        s = (s + tcp_base + s_seq + flags + tcp_len) % 0xFFFF  # the sum is never 0: proto 6
        pack_u16(seg, tcp + 16, 0xFFFF - s if s else 0)
        if v4:
            ip_len = tcp - ip + tcp_len
            s_id = (ident + i) & 0xFFFF
            pack_len_id(seg, ip + 2, ip_len, s_id)
            s = (ip_base + ip_len + s_id) % 0xFFFF  # never all zero: version 4
            pack_u16(seg, ip + 10, 0xFFFF - s if s else 0)
        else:
            pack_u16(seg, ip + 4, tcp - ip - 40 + tcp_len)
        out.append(seg)
        pos = stop
    return out
