"""The fast spanning tree BPDU, as vde_switch (vde-2 2.3.2, ``-F``) sends and reads it.

An IEEE 802.3 frame (a length, not an EtherType) to 01:80:c2:00:00:00 with an LLC header
(42 42 03) and an RSTP-shaped BPDU (protocol 0, version 2, type 2), 53 bytes in all and
never padded. On a VLAN's tagged port the same BPDU follows an 802.1Q tag: one instance
of the protocol runs per VLAN. The fields as vde_switch fills them:

- flags: bit 0 topology change, bit 1 proposal (set on alternate/backup ports), bits 2-3
  the role (01 root, 10 alternate/backup, 11 designated), bits 4-5 the port state
  (0 discarding, 1 learning, 3 forwarding), bit 6 agreement, bit 7 topology change ack;
- root and bridge ids: 2 bytes of priority (big-endian) then the switch's MAC;
- the root path cost: 32 bits big-endian;
- the port id: ``0x80 | port >> 4`` then ``port & 0xff`` (vde_switch's own formula);
- message age, max age, hello time, forward delay: whole seconds, least significant byte
  first (unlike IEEE 802.1D's 1/256 s big-endian), forward delay always 0;
- the version 1 length byte: 0.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

BPDU_DST = b"\x01\x80\xc2\x00\x00\x00"
LLC = b"\x42\x42\x03"
BPDU_LEN = 53  # untagged; tagged frames are 4 bytes longer
MIN_LEN = 51  # vde_switch accepts a BPDU from 51 bytes (the last two fields may be missing)
ID_LEN = 8

TC = 0x01
PROPOSAL = 0x02
ROLE_MASK = 0x0C
ROLE_ROOT = 0x04
ROLE_ALTERNATE = 0x08
ROLE_DESIGNATED = 0x0C
LEARNING = 0x10
FORWARDING = 0x20
AGREEMENT = 0x40
TC_ACK = 0x80

#: port states as vde_switch keeps them (the flags' bits 4-5)
STATE_DISCARDING = 0
STATE_LEARNING = 1
STATE_FORWARDING = 3

# after the Ethernet header: LLC, protocol, version, type, flags, root, cost, bridge, port,
# then four little-endian 16-bit times and the v1 length
_BODY = struct.Struct("<3sHBBB8sI8s2sHHHHB")
_COST = struct.Struct("!I")


class Bpdu(NamedTuple):
    flags: int
    root: bytes  # 8 bytes: priority + MAC
    cost: int
    bridge: bytes  # 8 bytes
    port: bytes  # 2 bytes, vde_switch's port id
    age: int
    max_age: int
    hello: int
    forward_delay: int


def bridge_id(priority: int, mac: bytes) -> bytes:
    """The 8-byte id: the 16-bit priority then the MAC."""
    if not 0 <= priority <= 0xFFFF:
        raise ValueError(f"FST priority {priority} out of range 0..65535")
    if len(mac) != 6:
        raise ValueError("a MAC is 6 bytes")
    return priority.to_bytes(2, "big") + bytes(mac)


def port_id(port: int) -> bytes:
    """vde_switch's port id: ``0x80 | port >> 4``, then the port's low byte."""
    return bytes([0x80 | ((port >> 4) & 0xFF), port & 0xFF])


def is_bpdu(frame: bytes | memoryview) -> bool:
    return bytes(frame[:6]) == BPDU_DST


def build(src: bytes, bpdu: Bpdu, vlan: int | None = None) -> bytes:
    """The frame vde_switch would send: untagged, or tagged with ``vlan`` (0..4095)."""
    body = bytearray(BPDU_LEN - 14)
    struct.pack_into("<3sHBBB8s", body, 0, LLC, 0, 2, 2, bpdu.flags & 0xFF, bpdu.root)
    _COST.pack_into(body, 16, bpdu.cost & 0xFFFFFFFF)
    struct.pack_into("<8s2sHHHHB", body, 20, bpdu.bridge, bpdu.port,
                     min(max(bpdu.age, 0), 0xFFFF), bpdu.max_age & 0xFFFF,
                     bpdu.hello & 0xFFFF, bpdu.forward_delay & 0xFFFF, 0)
    length = struct.pack("!H", BPDU_LEN - 14)
    if vlan is None:
        return BPDU_DST + bytes(src) + length + bytes(body)
    if not 0 <= vlan <= 0xFFF:
        raise ValueError(f"VLAN {vlan} out of range 0..4095")
    return BPDU_DST + bytes(src) + struct.pack("!HH", 0x8100, vlan) + length + bytes(body)


def parse(frame: bytes | memoryview, tagged: bool) -> Bpdu:
    """The BPDU in ``frame`` (its 802.1Q tag skipped when ``tagged``).

    Raises ValueError for what vde_switch ignores: a frame shorter than 51 bytes (after
    the tag), a version other than 2 or a type other than 2. Like vde_switch, neither
    the length nor the LLC header is checked; missing trailing fields read as 0."""
    mv = memoryview(frame)
    if tagged:
        mv = mv[4:]
    n = len(mv)
    if n < MIN_LEN:
        raise ValueError(f"FST BPDU too short: {n} bytes, at least {MIN_LEN} needed")
    if n < BPDU_LEN:
        mv = memoryview(bytes(mv) + bytes(BPDU_LEN - n))
    (_llc, _proto, version, kind, flags, root, _c, bridge, port, age, max_age, hello,
     fwd, _v1) = _BODY.unpack_from(mv, 14)
    if version != 2 or kind != 2:
        raise ValueError(f"not an FST BPDU: version {version} type {kind} (2 and 2 expected)")
    (cost,) = _COST.unpack_from(mv, 30)
    return Bpdu(flags, root, cost, bridge, port, age, max_age, hello, fwd)


def format_id(ident: bytes) -> str:
    """``80:00:00:ff:...``: how fstp/print shows an 8-byte id."""
    return ":".join(f"{b:02x}" for b in ident)


__all__ = ["Bpdu", "BPDU_DST", "BPDU_LEN", "bridge_id", "port_id", "is_bpdu", "build", "parse",
           "format_id"]
