"""ARP (RFC 826) for IPv4 over Ethernet, the only combination threadnet speaks.

The packet is 28 bytes; frames carrying it are usually padded to the 60-byte Ethernet
minimum, so bytes after the 28th are ignored.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError
from threadnet.wire.checksum import Buffer

PACKET_LEN = 28

HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800

OP_REQUEST = 1
OP_REPLY = 2

_ARP = struct.Struct("!HHBBH6s4s6s4s")
_ETH_IPV4 = (HTYPE_ETHERNET, PTYPE_IPV4, 6, 4)


def parse(data: Buffer) -> tuple[int, bytes, bytes, bytes, bytes]:
    """Parse an Ethernet/IPv4 ARP packet.

    Returns ``(op, sha, spa, tha, tpa)``: the operation (OP_REQUEST, OP_REPLY or any
    other value, which the caller ignores), sender and target hardware addresses
    (6 bytes) and protocol addresses (4 bytes). Raises FrameError on a short packet or
    on any hardware/protocol type or address length other than Ethernet/IPv4.
    """
    n = len(data)
    if n < PACKET_LEN:
        raise FrameError(f"ARP packet of {n} bytes is shorter than 28 bytes")
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(data)
    if (htype, ptype, hlen, plen) != _ETH_IPV4:
        raise FrameError(f"ARP packet is not Ethernet/IPv4: hardware type {htype}, protocol "
                         f"type 0x{ptype:04x}, address lengths {hlen}/{plen}")
    return op, sha, spa, tha, tpa


def build(buf: bytearray | memoryview, op: int, sha: bytes, spa: bytes, tha: bytes,
          tpa: bytes, offset: int = 0) -> int:
    """Write an Ethernet/IPv4 ARP packet into ``buf`` at ``offset``; returns 28.

    For a request, ``tha`` is conventionally all zeros (RFC 826 leaves it unspecified).
    """
    if len(sha) != 6 or len(tha) != 6 or len(spa) != 4 or len(tpa) != 4:
        raise ValueError("ARP needs 6-byte hardware and 4-byte protocol addresses")
    _ARP.pack_into(buf, offset, HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, op, sha, spa, tha, tpa)
    return PACKET_LEN
