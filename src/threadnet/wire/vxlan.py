"""The VXLAN header (RFC 7348, section 5), also the header of vdeplug4's vxvde.

Eight bytes in front of an Ethernet frame (no FCS), carried in one UDP datagram::

    0        1        2        3
    flags    reserved (24 bits)
    VNI (24 bits)              reserved (8 bits)

``flags`` has only the I bit (0x08: "the VNI is valid"); every other bit and both
reserved fields are zero on transmission. RFC 7348 says a receiver ignores them; the
Linux kernel and vdeplug4's vxlan plugin drop a datagram whose flags byte is not exactly
0x08, and vdeplug4's vxvde drops one whose 8 bytes differ in any way from its own header
(``strict``). A datagram of the header alone is vxvde's goodbye (a peer that closes).
"""

from __future__ import annotations

import struct

HEADER_LEN = 8
FLAG_I = 0x08  # the VNI field is valid
VNI_MAX = 0xFFFFFF
DEFAULT_PORT = 4789  # IANA's VXLAN port (vdeplug4's vxlan default)
VXVDE_PORT = 14789  # vdeplug4's vxvde default

_HEADER = struct.Struct("!II")  # flags << 24 | reserved, vni << 8 | reserved


def pack(vni: int) -> bytes:
    """The header of a frame on VXLAN network ``vni`` (0..2**24-1)."""
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} out of range 0-{VNI_MAX}")
    return _HEADER.pack(FLAG_I << 24, vni << 8)


def pack_into(buf: bytearray | memoryview, offset: int, vni: int) -> None:
    """Write the header of network ``vni`` at ``buf[offset:offset + 8]``."""
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} out of range 0-{VNI_MAX}")
    _HEADER.pack_into(buf, offset, FLAG_I << 24, vni << 8)


def parse(buf: bytes | bytearray | memoryview, offset: int = 0) -> tuple[int, int] | None:
    """(flags, vni) of the header at ``offset``, or None when fewer than 8 bytes are there."""
    if len(buf) - offset < HEADER_LEN:
        return None
    word0, word1 = _HEADER.unpack_from(buf, offset)
    return word0 >> 24, word1 >> 8


def vni_of(buf: bytes | bytearray | memoryview, offset: int = 0) -> int | None:
    """The VNI of a valid header as the Linux kernel and vdeplug4's vxlan accept it (flags
    exactly the I bit, the VNI's trailing reserved byte zero; the 24 reserved bits after
    the flags are ignored), or None for a short or invalid header."""
    if len(buf) - offset < HEADER_LEN:
        return None
    word0, word1 = _HEADER.unpack_from(buf, offset)
    if word0 >> 24 != FLAG_I or word1 & 0xFF:
        return None
    return word1 >> 8


def is_exact(buf: bytes | bytearray | memoryview, header: bytes, offset: int = 0) -> bool:
    """vxvde's test: the 8 bytes at ``offset`` are ``header`` (``pack(vni)``) exactly."""
    return bytes(buf[offset:offset + HEADER_LEN]) == header
