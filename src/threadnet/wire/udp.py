"""UDP (RFC 768) over IPv4 and IPv6.

The IP version is told by the address length (4 or 16 bytes). Over IPv4 a checksum of
zero means the sender computed none, which a receiver accepts; over IPv6 the checksum is
mandatory (RFC 8200 8.1). A computed checksum of zero is sent as 0xffff (RFC 768).
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer, checksum, pseudo_header

HEADER_LEN = 8
PROTO_UDP = 17

_HDR = struct.Struct("!HHHH")
_CSUM = struct.Struct("!H")
_PORTS = struct.Struct("!HH")


def parse(data: Buffer, src: bytes, dst: bytes, verify: bool = True
          ) -> tuple[int, int, memoryview]:
    """Parse a UDP datagram: ``data`` is the IP payload of the packet from ``src`` to
    ``dst`` (4-byte addresses for IPv4, 16 for IPv6).

    Returns ``(sport, dport, payload)`` with ``payload`` a view of ``data``, cut to the
    UDP length (bytes after it are ignored, as Linux does).
    Raises FrameError on a short datagram, a length field below 8 or beyond the data,
    a zero checksum over IPv6, or a wrong checksum (unless ``verify`` is false).
    """
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"UDP datagram of {n} bytes is shorter than its 8-byte header")
    sport, dport, length, csum = _HDR.unpack_from(data)
    if length < HEADER_LEN or length > n:
        raise FrameError(f"UDP length {length} is not within 8..{n} bytes received")
    if csum == 0:
        if len(src) == 16:
            raise FrameError("UDP over IPv6 without a checksum")
    elif verify:
        view = memoryview(data)[:length]
        v = int.from_bytes(view, "big") % 0xFFFF  # reduced first: a sum would copy it
        if length & 1:
            v <<= 8
        if (v + pseudo_header(src, dst, PROTO_UDP, length)) % 0xFFFF:
            raise FrameError("UDP checksum mismatch")  # the sum is never zero: length >= 8
        return sport, dport, view[HEADER_LEN:]
    return sport, dport, memoryview(data)[HEADER_LEN:length]


def parse_quoted(data: Buffer) -> tuple[int, int]:
    """The ports of a UDP header, nothing else looked at: ``(sport, dport)``. For the
    header that an ICMP error quotes (the first 8 bytes are promised, RFC 792 and
    RFC 4443; the datagram after them may be cut short), and for a datagram whose
    port decides who takes it before ``parse`` checks it. Raises FrameError when fewer
    than 8 bytes are there."""
    if len(data) < HEADER_LEN:
        raise FrameError(f"quoted UDP header of {len(data)} bytes is shorter than 8 bytes")
    return _PORTS.unpack_from(data)


def build_header(buf: bytearray | memoryview, src: bytes, dst: bytes, sport: int, dport: int,
                 payload_len: int, offset: int = 0) -> int:
    """Write a UDP header at ``offset`` for the ``payload_len`` bytes already in ``buf``
    after it, with the checksum over them. Returns the datagram length."""
    length = HEADER_LEN + payload_len
    end = offset + length
    if end > len(buf) or payload_len < 0 or (length > 0xFFFF):
        raise ValueError(f"UDP datagram of {length} bytes does not fit (buffer or 65535)")
    _HDR.pack_into(buf, offset, sport, dport, length, 0)
    csum = checksum(memoryview(buf)[offset:end], pseudo_header(src, dst, PROTO_UDP, length))
    _CSUM.pack_into(buf, offset + 6, csum or 0xFFFF)
    return length


def build(buf: bytearray | memoryview, src: bytes, dst: bytes, sport: int, dport: int,
          payload: Buffer, offset: int = 0) -> int:
    """Write a UDP datagram, header and a copy of ``payload``, into ``buf`` at ``offset``.
    Returns the datagram length."""
    n = len(payload)
    end = offset + HEADER_LEN + n
    if end > len(buf):
        raise ValueError(f"UDP datagram of {HEADER_LEN + n} bytes does not fit the buffer")
    length = HEADER_LEN + n
    if length > 0xFFFF:
        raise ValueError(f"UDP datagram of {length} bytes exceeds 65535")
    buf[offset + HEADER_LEN:end] = payload
    # the header's words and the caller's payload summed apart (as tcp.build does)
    v = int.from_bytes(payload, "big") % 0xFFFF  # reduced first: a sum would copy it
    if n & 1:
        v <<= 8  # RFC 1071: an odd last byte is padded to a word
    v += (sport + dport + length + length  # the header's length and the pseudo-header's
          + int.from_bytes(src, "big") + int.from_bytes(dst, "big") + PROTO_UDP)
    s = v % 0xFFFF
    # a sum of 0xffff gives checksum 0, which RFC 768 sends as 0xffff: so does s == 0
    _HDR.pack_into(buf, offset, sport, dport, length, 0xFFFF - s if s else 0xFFFF)
    return length
