"""ICMP for IPv4 (RFC 792): echo, destination unreachable, time exceeded.

Every message starts with type, code, checksum and a 32-bit field whose meaning depends
on the type (``rest``): identifier and sequence number for echo, the next-hop MTU in its
low 16 bits for "fragmentation needed" (RFC 1191), the pointer in its top 8 bits for
parameter problem. Error messages then quote the offending datagram's IP header and at
least its first 8 payload bytes; ``ipv4.parse(body, quoted=True)`` reads that header.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer, checksum
from threadnet.wire.checksum import verify as verify_checksum

HEADER_LEN = 8
# RFC 1812 4.3.2.3: an error quotes as much as fits in a 576-byte datagram
MAX_QUOTE = 576 - 20 - HEADER_LEN

ECHO_REPLY = 0
DEST_UNREACHABLE = 3
REDIRECT = 5
ECHO_REQUEST = 8
TIME_EXCEEDED = 11
PARAMETER_PROBLEM = 12

# destination unreachable codes (RFC 792, RFC 1122 3.2.2.1, RFC 1812 5.2.7.1)
UNREACH_NET = 0
UNREACH_HOST = 1
UNREACH_PROTOCOL = 2
UNREACH_PORT = 3
UNREACH_FRAG_NEEDED = 4  # with the next-hop MTU (RFC 1191)
UNREACH_SOURCE_ROUTE_FAILED = 5
UNREACH_NET_UNKNOWN = 6
UNREACH_HOST_UNKNOWN = 7
UNREACH_ADMIN_PROHIBITED = 13

# time exceeded codes
TTL_EXCEEDED = 0
REASSEMBLY_TIME_EXCEEDED = 1

ERROR_TYPES = frozenset({DEST_UNREACHABLE, REDIRECT, TIME_EXCEEDED, PARAMETER_PROBLEM})

_HDR = struct.Struct("!BBHI")
_CSUM = struct.Struct("!H")


def parse(data: Buffer, verify: bool = True) -> tuple[int, int, int, memoryview]:
    """Parse an ICMP message: ``data`` is exactly the IPv4 payload.

    Returns ``(type, code, rest, body)``: ``rest`` is the 32-bit field after the checksum
    (echo: ``rest >> 16`` is the identifier and ``rest & 0xffff`` the sequence number;
    fragmentation needed: ``rest & 0xffff`` is the next-hop MTU) and ``body`` a view of
    what follows (echo data, or the quoted datagram of an error).
    Raises FrameError on a message shorter than 8 bytes or a bad checksum.
    """
    n = len(data)
    if n < HEADER_LEN:
        raise FrameError(f"ICMP message of {n} bytes is shorter than its 8-byte header")
    if verify and not verify_checksum(data):
        raise FrameError("ICMP checksum mismatch")
    kind, code, _csum, rest = _HDR.unpack_from(data)
    return kind, code, rest, memoryview(data)[HEADER_LEN:]


def build(buf: bytearray | memoryview, kind: int, code: int, rest: int = 0,
          payload: Buffer = b"", offset: int = 0) -> int:
    """Write an ICMP message, header then ``payload``, with its checksum, into ``buf`` at
    ``offset``. Returns the message length."""
    end = offset + HEADER_LEN + len(payload)
    if end > len(buf):
        raise ValueError(f"ICMP message of {end - offset} bytes does not fit the buffer")
    _HDR.pack_into(buf, offset, kind, code, 0, rest)
    buf[offset + HEADER_LEN:end] = payload
    _CSUM.pack_into(buf, offset + 2, checksum(memoryview(buf)[offset:end]))
    return end - offset


def build_echo(buf: bytearray | memoryview, ident: int, seq: int, data: Buffer = b"",
               reply: bool = False, offset: int = 0) -> int:
    """Write an echo request (or, with ``reply``, an echo reply); returns its length."""
    return build(buf, ECHO_REPLY if reply else ECHO_REQUEST, 0, (ident << 16) | seq, data,
                 offset)


def build_unreachable(buf: bytearray | memoryview, code: int, quoted: Buffer, mtu: int = 0,
                      offset: int = 0) -> int:
    """Write a destination unreachable quoting ``quoted`` (the offending datagram from its
    IP header, cut to MAX_QUOTE bytes). ``mtu`` is the next-hop MTU of UNREACH_FRAG_NEEDED
    (RFC 1191 4). Returns the message length."""
    return build(buf, DEST_UNREACHABLE, code, mtu & 0xFFFF, quoted[:MAX_QUOTE], offset)


def build_time_exceeded(buf: bytearray | memoryview, code: int, quoted: Buffer,
                        offset: int = 0) -> int:
    """Write a time exceeded (TTL_EXCEEDED or REASSEMBLY_TIME_EXCEEDED) quoting ``quoted``
    (cut to MAX_QUOTE bytes). Returns the message length."""
    return build(buf, TIME_EXCEEDED, code, 0, quoted[:MAX_QUOTE], offset)


def build_parameter_problem(buf: bytearray | memoryview, pointer: int, quoted: Buffer,
                            offset: int = 0) -> int:
    """Write a parameter problem pointing at octet ``pointer`` of the quoted header."""
    return build(buf, PARAMETER_PROBLEM, 0, (pointer & 0xFF) << 24, quoted[:MAX_QUOTE], offset)
