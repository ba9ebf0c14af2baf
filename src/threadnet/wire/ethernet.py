"""Ethernet II and IEEE 802.1Q headers.

Frames here carry no preamble and no FCS: destination MAC, source MAC, EtherType (or
an 802.1Q tag followed by the inner EtherType), then the payload. That is what VDE,
taps and pcap's LINKTYPE_ETHERNET carry.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError

HEADER_LEN = 14
TAG_LEN = 4
MIN_FRAME = 60  # without FCS; shorter frames are padded by real NICs
MAX_FRAME = 1514  # MTU 1500 + header, untagged
MAX_TAGGED_FRAME = 1518  # MTU 1500 + header + one 802.1Q tag

ETH_P_IPV4 = 0x0800
ETH_P_ARP = 0x0806
ETH_P_8021Q = 0x8100
ETH_P_IPV6 = 0x86DD

BROADCAST = b"\xff" * 6

#: the EtherType field
TYPE = struct.Struct("!H")
#: the EtherType field's two bytes of IPv4, IPv6 and ARP, for a header made by
#: concatenation: destination + source + type (the stack's general output)
TYPE_IPV4 = TYPE.pack(ETH_P_IPV4)
TYPE_IPV6 = TYPE.pack(ETH_P_IPV6)
TYPE_ARP = TYPE.pack(ETH_P_ARP)
#: what the direct input (``stack/gro.py``) reads first of a frame, in one call:
#: destination MAC and EtherType (of an untagged frame)
DST_TYPE = struct.Struct("!6s6xH")
_TAG = struct.Struct("!HH")


def mac_to_str(mac: bytes | bytearray | memoryview) -> str:
    """Format a 6-byte MAC as ``aa:bb:cc:dd:ee:ff``."""
    return ":".join(f"{b:02x}" for b in bytes(mac))


def mac_from_str(text: str) -> bytes:
    """Parse ``aa:bb:cc:dd:ee:ff`` (or ``-`` separated) into 6 bytes."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6:
        raise ValueError(f"bad MAC address {text!r}: expected six hex octets")
    try:
        octets = bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"bad MAC address {text!r}: not hexadecimal") from None
    if any(len(p) == 0 or len(p) > 2 for p in parts):
        raise ValueError(f"bad MAC address {text!r}")
    return octets


def is_multicast(mac: bytes | bytearray | memoryview) -> bool:
    """True for group addresses (broadcast included): the I/G bit of the first octet."""
    return bool(mac[0] & 1)


def parse(frame: bytes | bytearray | memoryview) -> tuple[bytes, bytes, int, int, int]:
    """Parse an Ethernet header.

    Returns ``(dst, src, ethertype, vlan, payload_offset)``. ``vlan`` is the 802.1Q VLAN
    id, or -1 for an untagged frame; ``ethertype`` is the inner type of a tagged frame.
    Raises FrameError on a frame too short for its header.
    """
    n = len(frame)
    if n < HEADER_LEN:
        raise FrameError(f"Ethernet frame of {n} bytes is shorter than its 14-byte header")
    (etype,) = TYPE.unpack_from(frame, 12)
    dst = bytes(frame[0:6])
    src = bytes(frame[6:12])
    if etype != ETH_P_8021Q:
        return dst, src, etype, -1, HEADER_LEN
    if n < HEADER_LEN + TAG_LEN:
        raise FrameError(f"802.1Q frame of {n} bytes is shorter than its 18-byte header")
    tci, inner = _TAG.unpack_from(frame, 14)
    return dst, src, inner, tci & 0x0FFF, HEADER_LEN + TAG_LEN


def build(buf: bytearray | memoryview, dst: bytes, src: bytes, ethertype: int,
          vlan: int = -1, pcp: int = 0, offset: int = 0) -> int:
    """Write an Ethernet header (tagged when ``vlan >= 0``) into ``buf`` at ``offset``.

    Returns the header length, so the payload goes at ``offset + length``.
    """
    if len(dst) != 6 or len(src) != 6:
        raise ValueError("MAC addresses must be 6 bytes")
    buf[offset:offset + 6] = dst
    buf[offset + 6:offset + 12] = src
    if vlan < 0:
        TYPE.pack_into(buf, offset + 12, ethertype)
        return HEADER_LEN
    if not 0 <= vlan <= 0xFFF:
        raise ValueError(f"VLAN id {vlan} out of range 0..4095")
    TYPE.pack_into(buf, offset + 12, ETH_P_8021Q)
    _TAG.pack_into(buf, offset + 14, ((pcp & 7) << 13) | vlan, ethertype)
    return HEADER_LEN + TAG_LEN


# the 4-byte 802.1Q tag (TPID, TCI with PCP 0) of each VLAN id, built once: the switch
# tags every frame it forwards to a tagged port, and a lookup beats packing
_TAGS = [_TAG.pack(ETH_P_8021Q, vlan) for vlan in range(4096)]


def add_tag(frame: bytes | bytearray | memoryview, vlan: int, pcp: int = 0) -> bytes:
    """Return a copy of an untagged frame with an 802.1Q tag for ``vlan`` (0..4095) and
    priority ``pcp`` inserted after the MAC addresses."""
    if pcp or vlan < 0 or vlan > 0xFFF:
        if not 0 <= vlan <= 0xFFF:
            raise ValueError(f"VLAN id {vlan} out of range 0..4095")
        tag = _TAG.pack(ETH_P_8021Q, ((pcp & 7) << 13) | vlan)
    else:
        tag = _TAGS[vlan]
    return b"".join((frame[:12], tag, frame[12:]))


def strip_tag(frame: bytes | bytearray | memoryview) -> bytes:
    """Return a copy of a tagged frame without its (outer) 802.1Q tag."""
    return b"".join((frame[:12], frame[16:]))
