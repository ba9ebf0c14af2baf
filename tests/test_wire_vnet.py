"""The virtio-net header and the software offloads of wire/vnet.py, with scapy as the oracle.

``segment`` must produce exactly what Linux's tcp_gso_segment makes of a super-segment:
for each output frame scapy builds the expected segment from the same headers (with the
sequence number, flags, IP identification and payload slice the rules give, and every
length and checksum left for scapy to compute), and the bytes must be equal.
``complete_checksum`` is checked against scapy's checksums of the same frames.
"""

from __future__ import annotations

import random
import socket
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scapy.all import (
    IP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
)

from threadnet.errors import FrameError
from threadnet.wire import checksum, vnet

FIN, PSH, CWR = 0x01, 0x08, 0x80
TS_SACK = [("NOP", None), ("NOP", None), ("Timestamp", (123456, 654321)),
           ("NOP", None), ("NOP", None), ("SAck", (1000, 2000, 3000, 4000))]
TS = [("NOP", None), ("NOP", None), ("Timestamp", (1, 2))]
L2 = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")


def payload(n: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(n)


def ip4(**kw) -> IP:
    return IP(src="10.0.0.1", dst="10.0.0.2", **kw)


def ip6(**kw) -> IPv6:
    return IPv6(src="2001:db8::1", dst="fe80::2", **kw)


def check_segments(template, pay: bytes, gso_type: int, gso_size: int, *,
                   garbage_checksums: bool = False, padding: bytes = b"",
                   as_type=bytes) -> list[bytearray]:
    """Segment ``template / pay`` and compare every frame with scapy's rebuild of it.

    ``template`` is the scapy packet without payload; its TCP header's fields are the
    super-segment's. Returns the segments."""
    sup = template.copy() / Raw(pay)
    if garbage_checksums:
        sup[TCP].chksum = 0xDEAD
        if IP in sup:
            sup[IP].chksum = 0xBEEF
    frame = bytes(sup) + padding
    segs = vnet.segment(as_type(frame), gso_type, gso_size)

    count = max(1, -(-len(pay) // gso_size))
    assert len(segs) == count
    tcp0 = template[TCP]
    seq0 = tcp0.seq
    flags0 = int(tcp0.flags)
    joined = b""
    for i, seg in enumerate(segs):
        assert type(seg) is bytearray
        chunk = pay[i * gso_size:(i + 1) * gso_size]
        flags = flags0
        if i < count - 1:
            flags &= ~(FIN | PSH)
        if i > 0:
            flags &= ~CWR
        want = template.copy()
        want[TCP].seq = (seq0 + i * gso_size) & 0xFFFFFFFF
        want[TCP].flags = flags
        want[TCP].chksum = None
        if IP in want:
            want[IP].id = (template[IP].id + i) & 0xFFFF
            want[IP].len = None
            want[IP].chksum = None
        else:
            want[IPv6].plen = None
        want = want / Raw(chunk)
        assert bytes(seg) == bytes(want), f"segment {i} differs from scapy's"

        # and the same from the other side: scapy dissects it, recomputes the checksums
        got = Ether(bytes(seg))
        assert got[TCP].seq == want[TCP].seq and int(got[TCP].flags) == flags
        tcp_sum = got[TCP].chksum
        ip_sum = got[IP].chksum if IP in got else None
        del got[TCP].chksum
        if IP in got:
            del got[IP].chksum
            assert got[IP].id == (template[IP].id + i) & 0xFFFF
        again = Ether(bytes(got))
        assert again[TCP].chksum == tcp_sum
        if ip_sum is not None:
            assert again[IP].chksum == ip_sum
        joined += bytes(got[TCP].payload)
    assert joined == pay
    return segs


# -- the header ----------------------------------------------------------------------
def test_header_layout():
    assert vnet.HEADER.size == vnet.HEADER_LEN == 10
    assert vnet.PLAIN == bytes(10)
    assert vnet.pack_header() == vnet.PLAIN
    # struct virtio_net_hdr: u8 flags, u8 gso_type, then four u16 in host (x86: little) order
    raw = vnet.pack_header(vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4 | vnet.GSO_ECN, 66, 1448, 34, 16)
    assert raw == bytes([1, 0x81, 66, 0, 0xA8, 0x05, 34, 0, 16, 0])
    assert vnet.unpack_header(raw) == (1, 0x81, 66, 1448, 34, 16)
    # a header in front of a frame, read through a view
    buf = memoryview(raw + b"frame")
    assert vnet.unpack_header(buf) == (1, 0x81, 66, 1448, 34, 16)
    assert vnet.unpack_header(bytearray(vnet.PLAIN)) == (0, 0, 0, 0, 0, 0)


@settings(max_examples=200, deadline=None)
@given(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
                 st.integers(0, 0xFFFF), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF)))
def test_header_round_trip(fields):
    assert vnet.unpack_header(vnet.pack_header(*fields)) == fields


@pytest.mark.parametrize("n", [0, 1, 9])
def test_header_short(n):
    with pytest.raises(FrameError, match="shorter than 10"):
        vnet.unpack_header(bytes(n))


# -- segment against scapy -----------------------------------------------------------
def test_segment_ipv4_timestamps_odd_payload():
    t = L2 / ip4(id=4242, flags="DF") / TCP(sport=40000, dport=80, seq=1000, ack=77,
                                            flags="PA", window=512, options=TS)
    check_segments(t, payload(10001), vnet.GSO_TCPV4, 1448)


def test_segment_ipv4_options_sack_fin_psh_cwr():
    t = (L2 / ip4(id=7, tos=0x10, ttl=3, options=[IPOption_RR(routers=["192.0.2.1"])])
         / TCP(sport=1, dport=2, seq=5, ack=6, flags="FPACE", window=0xFFFF,
               options=TS_SACK))
    segs = check_segments(t, payload(7777, 2), vnet.GSO_TCPV4 | vnet.GSO_ECN, 1000)
    assert len(segs) == 8


def test_segment_ipv6_multiple_of_gso_size():
    t = L2 / ip6(tc=0xB8, fl=0x12345, hlim=9) / TCP(sport=443, dport=55555, seq=99,
                                                     flags="FPAC", options=TS)
    segs = check_segments(t, payload(1440 * 5, 3), vnet.GSO_TCPV6, 1440)
    assert [len(s) for s in segs] == [14 + 40 + 32 + 1440] * 5


def test_segment_ipv6_extension_headers():
    t = (L2 / ip6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt()
         / TCP(seq=1, flags="PA", options=TS))
    check_segments(t, payload(3001, 4), vnet.GSO_TCPV6, 1200)


def test_segment_vlan_tagged():
    t = L2 / Dot1Q(vlan=42, prio=5) / ip4(id=1) / TCP(flags="A")
    check_segments(t, payload(4000, 5), vnet.GSO_TCPV4, 1460)
    t = L2 / Dot1Q(vlan=7) / ip6() / TCP(flags="A")
    check_segments(t, payload(4000, 6), vnet.GSO_TCPV6, 1460)


def test_segment_wraps_seq_and_ident():
    t = L2 / ip4(id=0xFFFE) / TCP(seq=0xFFFFFFFF - 1500, flags="PA")
    segs = check_segments(t, payload(6000, 7), vnet.GSO_TCPV4, 1448)
    assert [Ether(bytes(s))[IP].id for s in segs] == [0xFFFE, 0xFFFF, 0, 1, 2]


def test_segment_odd_gso_size_and_garbage_checksums():
    # an odd size puts odd-length payloads in every segment, the super-frame's checksums
    # are nonsense (a partial one, in practice), and the frame carries padding
    t = L2 / ip4() / TCP(flags="FA", options=TS)
    check_segments(t, payload(5000, 8), vnet.GSO_TCPV4, 999, garbage_checksums=True,
                   padding=b"\xAA" * 7)
    t = L2 / ip6() / TCP(flags="FA")
    check_segments(t, payload(5000, 9), vnet.GSO_TCPV6, 999, garbage_checksums=True,
                   padding=b"\x55" * 3)


@pytest.mark.parametrize("n", [0, 1, 1447, 1448])
def test_segment_one_frame(n):
    # nothing to split: one frame, flags as they were, lengths and checksums made right
    t = L2 / ip4(id=3) / TCP(flags="FPAC", options=TS)
    [seg] = check_segments(t, payload(n, n), vnet.GSO_TCPV4, 1448, garbage_checksums=True)
    assert int(Ether(bytes(seg))[TCP].flags) == int(t[TCP].flags)


@pytest.mark.parametrize("gso_size", [1, 2, 3])
def test_segment_tiny_gso_size(gso_size):
    t = L2 / ip6() / TCP(seq=10, flags="FPAC")
    check_segments(t, b"abcdefg", vnet.GSO_TCPV6, gso_size)


@pytest.mark.parametrize("as_type", [bytes, bytearray, memoryview])
def test_segment_64k(as_type):
    # the largest super-segment the kernel makes: an IPv4 total length of 65535
    t = L2 / ip4(id=100) / TCP(seq=12345, flags="PA", options=TS)
    pay = payload(65535 - 20 - 32, 10)
    segs = check_segments(t, pay, vnet.GSO_TCPV4, 1448, as_type=as_type)
    assert len(segs) == 46


def test_segment_leaves_input_alone():
    t = L2 / ip4() / TCP(flags="PA")
    frame = bytearray(bytes(t / Raw(payload(3000))))
    before = bytes(frame)
    vnet.segment(frame, vnet.GSO_TCPV4, 1000)
    assert frame == before


# -- complete_checksum ---------------------------------------------------------------
def pseudo_sum(pkt) -> int:
    """The uncomplemented pseudo-header sum Linux leaves in a CHECKSUM_PARTIAL field."""
    pkt = Ether(bytes(pkt))  # every length and next header filled in
    if IP in pkt:
        ip = pkt[IP]
        l4 = bytes(ip.payload)[:ip.len - ip.ihl * 4]
        ph = (socket.inet_aton(ip.src) + socket.inet_aton(ip.dst)
              + struct.pack("!BBH", 0, ip.proto, len(l4)))
    else:
        ip = pkt[IPv6]
        l4 = bytes(ip.payload)
        ph = (socket.inet_pton(socket.AF_INET6, ip.src)
              + socket.inet_pton(socket.AF_INET6, ip.dst)
              + struct.pack("!IxxxB", len(l4), ip.nh))
    s = sum(struct.unpack(f"!{len(ph) // 2}H", ph))
    while s > 0xFFFF:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def partial(pkt, l4) -> tuple[bytearray, int, int]:
    """``pkt`` as Linux hands a CHECKSUM_PARTIAL frame to a tap reader: the transport
    checksum replaced by the pseudo-header sum. Returns (frame, csum_start, csum_offset)."""
    frame = bytearray(bytes(pkt))
    start = len(frame) - len(bytes(pkt[l4]))
    offset = 16 if l4 is TCP else 6
    struct.pack_into("!H", frame, start + offset, pseudo_sum(pkt))
    return frame, start, offset


@pytest.mark.parametrize("pkt", [
    L2 / ip4() / TCP(flags="PA", options=TS) / Raw(payload(1001)),
    L2 / ip4() / TCP(flags="PA", options=TS) / Raw(payload(1000)),
    L2 / ip4(options=[IPOption_RR(routers=["192.0.2.1"])]) / UDP(sport=5, dport=53)
    / Raw(b"q" * 33),
    L2 / ip6() / TCP(flags="S", options=[("MSS", 1440)]),
    L2 / ip6() / UDP(sport=1, dport=2) / Raw(payload(65000)),
    L2 / Dot1Q(vlan=5) / ip4() / UDP() / Raw(b"x"),
], ids=["tcp4-odd", "tcp4-even", "udp4-options", "tcp6-syn", "udp6-64k", "udp4-vlan"])
def test_complete_checksum_matches_scapy(pkt):
    l4 = TCP if TCP in pkt else UDP
    want = bytes(pkt)  # scapy fills in the right checksum
    frame, start, offset = partial(pkt, l4)
    assert bytes(frame) != want
    vnet.complete_checksum(frame, start, offset)
    assert bytes(frame) == want


def test_complete_checksum_through_a_view():
    # a tap reader's buffer: the virtio-net header, then the frame
    pkt = L2 / ip4() / TCP(flags="A") / Raw(payload(301))
    frame, start, offset = partial(pkt, TCP)
    buf = bytearray(vnet.pack_header(vnet.F_NEEDS_CSUM, csum_start=start,
                                     csum_offset=offset)) + frame
    flags, _, _, _, cs, co = vnet.unpack_header(buf)
    assert flags == vnet.F_NEEDS_CSUM
    vnet.complete_checksum(memoryview(buf)[vnet.HEADER_LEN:], cs, co)
    assert bytes(buf[vnet.HEADER_LEN:]) == bytes(pkt)


@pytest.mark.parametrize("l4", [UDP, TCP])
def test_complete_checksum_zero_result_is_ffff(l4):
    # choose two payload bytes so that the checksum comes out 0: Linux stores 0xffff
    # (CSUM_MANGLED_0), which UDP requires (RFC 768) and which means the same for TCP
    hdr = UDP(sport=7, dport=9) if l4 is UDP else TCP(flags="A")
    probe = L2 / ip4() / hdr / Raw(b"\0\0" + b"abc")
    fix = Ether(bytes(probe))[l4].chksum  # the word that takes the sum to 0xffff
    pkt = L2 / ip4() / hdr / Raw(struct.pack("!H", fix) + b"abc")
    frame, start, offset = partial(pkt, l4)
    vnet.complete_checksum(frame, start, offset)
    assert frame[start + offset:start + offset + 2] == b"\xff\xff"
    if l4 is UDP:
        assert bytes(frame) == bytes(pkt)  # scapy sends 0xffff as well
    else:
        assert Ether(bytes(pkt))[TCP].chksum == 0
    assert checksum.verify(bytes(frame[start:]), pseudo_sum(pkt))


def test_complete_checksum_all_zero():
    frame = bytearray(8)
    vnet.complete_checksum(frame, 0, 6)
    assert frame == bytes(6) + b"\xff\xff"


@pytest.mark.parametrize("n,start,offset", [(0, 0, 0), (17, 0, 16), (20, 10, 9), (20, 19, 0),
                                            (20, -1, 16), (20, 2, -2), (20, 25, 0)])
def test_complete_checksum_field_outside(n, start, offset):
    frame = bytearray(n)
    with pytest.raises(FrameError, match="beyond the"):
        vnet.complete_checksum(frame, start, offset)
    assert frame == bytes(n)


# -- bad input -----------------------------------------------------------------------
def good4(pay: bytes = b"x" * 100, **kw) -> bytearray:
    return bytearray(bytes(L2 / ip4(**kw) / TCP(flags="A") / Raw(pay)))


def good6(*ext, pay: bytes = b"x" * 100) -> bytearray:
    pkt = ip6()
    for e in ext:
        pkt = pkt / e
    return bytearray(bytes(L2 / pkt / TCP(flags="A") / Raw(pay)))


def poke(frame: bytearray, fmt: str, offset: int, *values) -> bytearray:
    struct.pack_into(fmt, frame, offset, *values)
    return frame


def v6_ext_truncated() -> bytearray:
    # a Destination Options header that names another one as next, and a payload
    # length that ends right after the first (the TCP header is left as padding)
    frame = poke(good6(IPv6ExtHdrDestOpt()), "!B", 54, 60)
    return poke(frame, "!H", 18, 8)


V4, V6 = vnet.GSO_TCPV4, vnet.GSO_TCPV6
BAD = [
    ("ethernet", bytes(13), V4, 1448, "shorter than its 14-byte header"),
    ("vlan", bytes(12) + b"\x81\x00\x00", V4, 1448, "shorter than its 18-byte header"),
    ("qinq", bytes(L2 / Dot1Q() / Dot1Q() / ip4() / TCP()), V4, 1448, "second tag"),
    ("arp", bytes(12) + b"\x08\x06" + bytes(28), V4, 1448, "EtherType 0x0806"),
    ("v6 frame, v4 type", good6(), V4, 1448, "EtherType 0x86dd"),
    ("v4 frame, v6 type", good4(), V6, 1448, "EtherType 0x0800"),
    ("none", good4(), vnet.GSO_NONE, 1448, "GSO_NONE"),
    ("udp gso", good4(), vnet.GSO_UDP, 1448, "GSO_UDP"),
    ("unknown gso", good4(), 5, 1448, "unknown GSO type 0x5"),
    ("gso size 0", good4(), V4, 0, "GSO size 0"),
    ("gso size -1", good4(), V4, -1, "GSO size -1"),
    ("v4 short", bytes(good4()[:33]), V4, 1448, "shorter than its 20-byte header"),
    ("v4 version", poke(good4(), "!B", 14, 0x65), V4, 1448, "IP version 6"),
    ("v4 ihl", poke(good4(), "!B", 14, 0x44), V4, 1448, "below the 20-byte minimum"),
    ("v4 mf", poke(good4(), "!H", 20, 0x2000), V4, 1448, "fragment"),
    ("v4 frag offset", poke(good4(), "!H", 20, 0x0001), V4, 1448, "fragment"),
    ("v4 udp", poke(good4(), "!B", 23, 17), V4, 1448, "protocol 17 is not TCP"),
    ("v4 total long", poke(good4(), "!H", 16, 141), V4, 1448, "exceeds the 140 bytes"),
    ("v4 total short", poke(good4(), "!H", 16, 39), V4, 1448, "no room for a TCP header"),
    ("v4 ihl long", poke(good4(b""), "!B", 14, 0x4F), V4, 1448, "no room for a TCP header"),
    ("v6 short", bytes(good6()[:53]), V6, 1448, "shorter than its 40-byte header"),
    ("v6 version", poke(good6(), "!B", 14, 0x40), V6, 1448, "IP version 4"),
    ("v6 plen 0", poke(good6(), "!H", 18, 0), V6, 1448, "payload length 0"),
    ("v6 plen long", poke(good6(), "!H", 18, 121), V6, 1448, "exceeds the 120"),
    ("v6 tcp short", poke(good6(), "!H", 18, 19), V6, 1448, "leaves 19 bytes"),
    ("v6 udp", bytes(L2 / ip6() / UDP() / Raw(b"x" * 30)), V6, 1448, "next header 17"),
    ("v6 routing", good6(IPv6ExtHdrRouting()), V6, 1448, "Routing header"),
    ("v6 fragment", good6(IPv6ExtHdrFragment()), V6, 1448, "fragment"),
    ("v6 ext past", poke(good6(IPv6ExtHdrDestOpt()), "!B", 55, 20), V6, 1448,
     "runs past the payload"),
    ("v6 ext past plen", poke(poke(good6(IPv6ExtHdrDestOpt()), "!B", 55, 2), "!H", 18, 20),
     V6, 1448, "with length 24 runs past the payload"),
    ("v6 ext truncated", v6_ext_truncated(), V6, 1448, "is truncated"),
    ("v6 ext chain", good6(*[IPv6ExtHdrDestOpt() for _ in range(9)]), V6, 1448,
     "more than 8 extension headers"),
    ("tcp doff small", poke(good4(), "!B", 46, 0x40), V4, 1448, "below the 20-byte minimum"),
    ("tcp doff large", poke(good4(pay=b"x" * 20), "!B", 46, 0xF0), V4, 1448,
     "exceeds the 40-byte segment"),
]


@pytest.mark.parametrize("frame,gso_type,gso_size,message", [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_segment_rejects(frame, gso_type, gso_size, message):
    with pytest.raises(FrameError, match=message):
        vnet.segment(frame, gso_type, gso_size)


# -- fuzz ----------------------------------------------------------------------------
def locate_tcp(frame: bytes) -> tuple[int, int, int]:
    """(ip offset, tcp offset, ip end) of a frame ``segment`` accepted; the test's own walk."""
    ip = 18 if frame[12:14] == b"\x81\x00" else 14
    if frame[ip] >> 4 == 4:
        return ip, ip + (frame[ip] & 15) * 4, ip + struct.unpack_from("!H", frame, ip + 2)[0]
    tcp, nh = ip + 40, frame[ip + 6]
    while nh != 6:
        nh, tcp = frame[tcp], tcp + (frame[tcp + 1] + 1) * 8
    return ip, tcp, ip + 40 + struct.unpack_from("!H", frame, ip + 4)[0]


def check_output(segs: list[bytearray], gso_size: int) -> None:
    """What must hold of any output: valid checksums, payloads of at most gso_size."""
    assert segs
    for seg in segs:
        frame = bytes(seg)
        ip, tcp, end = locate_tcp(frame)
        assert end == len(frame)
        assert len(frame) - tcp - (frame[tcp + 12] >> 4) * 4 <= gso_size
        if frame[ip] >> 4 == 4:
            assert checksum.verify(frame[ip:tcp])
            src, dst = frame[ip + 12:ip + 16], frame[ip + 16:ip + 20]
        else:
            src, dst = frame[ip + 8:ip + 24], frame[ip + 24:ip + 40]
        assert checksum.verify(frame[tcp:], checksum.pseudo_header(src, dst, 6, end - tcp))


SEEDS = [
    bytes(L2 / ip4(options=[IPOption_RR(routers=["192.0.2.1"])]) / TCP(flags="FPAC",
                                                                      options=TS_SACK)
          / Raw(payload(3000))),
    bytes(L2 / ip6() / IPv6ExtHdrHopByHop() / TCP(flags="PA", options=TS) / Raw(payload(2001))),
    bytes(L2 / Dot1Q(vlan=3) / ip4() / TCP(flags="A") / Raw(payload(1500))),
    bytes(L2 / ip6() / TCP(flags="A") / Raw(payload(99))),
]
GSO_TYPES = [vnet.GSO_TCPV4, vnet.GSO_TCPV6, vnet.GSO_TCPV4 | vnet.GSO_ECN,
             vnet.GSO_TCPV6 | vnet.GSO_ECN, vnet.GSO_NONE, vnet.GSO_UDP, 2, 0x7F, 0xFF]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    data = bytearray(frame)
    for _ in range(rng.randint(1, 4)):
        what = rng.random()
        if what < 0.6:  # a byte in the headers, where the decisions are
            data[rng.randrange(min(len(data), 110))] = rng.randrange(256)
        elif what < 0.8:
            del data[rng.randrange(len(data) + 1):]
        else:
            data += rng.randbytes(rng.randint(1, 40))
        if not data:
            break
    return bytes(data)


def test_fuzz_segment_mutated():
    rng = random.Random(20240601)
    accepted = 0
    for i in range(4000):
        seed = SEEDS[i % len(SEEDS)]
        frame = mutate(rng, seed) if i % 10 else rng.randbytes(rng.randint(0, 200))
        gso_type = rng.choice(GSO_TYPES) if i % 3 == 0 else (
            vnet.GSO_TCPV4 if frame[12:14] == b"\x08\x00" or frame[16:18] == b"\x08\x00"
            else vnet.GSO_TCPV6)
        gso_size = rng.choice([0, 97, 536, 1448, 65535, rng.randint(-5, 5000)])
        try:
            segs = vnet.segment(frame, gso_type, gso_size)
        except FrameError:
            continue
        accepted += 1
        check_output(segs, gso_size)
    assert accepted > 500  # the mutations must leave plenty of frames that get through


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120), st.integers(0, 0xFF), st.integers(-2, 70000))
def test_fuzz_segment_any_bytes(data, gso_type, gso_size):
    # headers made up by hypothesis, behind a valid Ethernet/IP start half the time
    for frame in (data, SEEDS[0][:34] + data, SEEDS[1][:54] + data):
        try:
            segs = vnet.segment(frame, gso_type, gso_size)
        except FrameError:
            continue
        check_output(segs, gso_size)


def test_fuzz_header_and_checksum():
    rng = random.Random(7)
    for _ in range(3000):
        data = rng.randbytes(rng.randint(0, 24))
        try:
            assert len(vnet.unpack_header(data)) == 6
        except FrameError:
            assert len(data) < 10
        frame = bytearray(rng.randbytes(rng.randint(0, 80)))
        start = rng.randint(-3, 90)
        offset = rng.choice([0, 6, 16, rng.randint(-3, 90)])
        old = frame[start + offset:start + offset + 2] if start >= 0 and offset >= 0 else b""
        try:
            vnet.complete_checksum(frame, start, offset)
        except FrameError:
            assert start < 0 or offset < 0 or start + offset + 2 > len(frame)
            continue
        if offset % 2 == 0:
            # the receiver's check: the data with the pseudo-header sum it stood for
            (pseudo,) = struct.unpack("!H", old)
            assert checksum.verify(bytes(frame[start:]), pseudo)
