"""The stack's wire formats: round trips, strictness, fuzzing, and scapy as an oracle.

scapy is an independent implementation: packets it builds must parse here with their
checksums verifying, and packets built here must dissect in scapy with the right fields
and, once scapy recomputes every checksum we wrote, come out byte for byte the same.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import (
    ARP,
    ICMP,
    IP,
    TCP,
    UDP,
    Ether,
    HBHOptUnknown,
    ICMPv6DestUnreach,
    ICMPv6EchoReply,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_RS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptSrcLLAddr,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPerror,
    IPOption_RR,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    Raw,
    RouterAlert,
    UDPerror,
)

from threadnet.errors import FrameError
from threadnet.wire import arp, checksum, ethernet, icmp4, icmp6, ipv4, ipv6, tcp, udp
from threadnet.wire.ethernet import mac_to_str

A4 = bytes([10, 0, 0, 1])
B4 = bytes([10, 0, 0, 2])
A6 = socket.inet_pton(socket.AF_INET6, "fe80::1")
B6 = socket.inet_pton(socket.AF_INET6, "2001:db8::2")
MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")

FAST = settings(max_examples=100, deadline=None)
ORACLE = settings(max_examples=25, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
addr4 = st.binary(min_size=4, max_size=4)
addr6 = st.binary(min_size=16, max_size=16)
unicast6 = addr6.filter(lambda a: a[0] != 0xFF)
macs = st.binary(min_size=6, max_size=6)


def s4(a: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET, a)


def s6(a: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, a)


def rechecksummed(raw: bytes, cls, *layers) -> bytes:
    """Dissect ``raw`` with scapy, drop the checksums of ``layers`` and rebuild: equal
    bytes mean every field survived and scapy computes the checksums we wrote."""
    pkt = cls(raw)
    for layer in layers:
        sub = pkt[layer]
        for name in ("chksum", "cksum"):
            if name in sub.fields:
                delattr(sub, name)
    return bytes(pkt)


def only_frame_error(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except FrameError:
        pass


# -- checksum ------------------------------------------------------------------------
def ref_sum(data: bytes, initial: int = 0) -> int:
    """RFC 1071 the slow way: 16-bit words with end-around carry."""
    if len(data) % 2:
        data += b"\0"
    s = initial
    for i in range(0, len(data), 2):
        s += (data[i] << 8) | data[i + 1]
        s = (s & 0xFFFF) + (s >> 16)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ref_checksum(data: bytes, initial: int = 0) -> int:
    return ~ref_sum(data, initial) & 0xFFFF


@FAST
@given(st.binary(max_size=3000), u16)
def test_checksum_matches_reference(data, initial):
    assert checksum.checksum(data) == ref_checksum(data)
    assert checksum.checksum(data, initial) == ref_checksum(data, initial)
    assert checksum.ones_sum(data, initial) == ref_sum(data, initial)
    assert checksum.checksum(memoryview(data)) == ref_checksum(data)
    assert checksum.checksum(bytearray(data), initial) == ref_checksum(data, initial)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 20, 21, 1499, 1500, 65535])
@pytest.mark.parametrize("fill", [0x00, 0xFF, 0x80, 0x01])
def test_checksum_edges(n, fill):
    data = bytes([fill]) * n
    for initial in (0, 1, 0xFFFE, 0xFFFF):
        assert checksum.checksum(data, initial) == ref_checksum(data, initial)
        assert checksum.ones_sum(data, initial) == ref_sum(data, initial)


def test_checksum_negative_zero():
    # nonzero data summing to 0xffff: the checksum is 0, and the data verifies
    assert checksum.checksum(b"\xff\xff") == 0
    assert checksum.checksum(b"\x12\x34\xed\xcb") == 0
    assert checksum.verify(b"\xff\xff")
    assert not checksum.verify(b"\x00\x00")
    assert not checksum.verify(b"")
    assert checksum.checksum(b"") == 0xFFFF


@FAST
@given(st.binary(max_size=600), st.integers(0, 300), u16, st.integers(0, 7))
def test_checksum_verify(data, at, initial, bit):
    at = min(at, len(data)) & ~1
    buf = bytearray(data[:at] + b"\0\0" + data[at:])
    c = checksum.checksum(buf, initial)
    struct.pack_into("!H", buf, at, c)
    assert checksum.verify(buf, initial)
    assert checksum.checksum(buf, initial) == 0
    buf[at] ^= 1 << bit  # one flipped bit is always caught
    assert not checksum.verify(buf, initial)


@FAST
@given(addr4, addr4, u8, u16, addr6, addr6, u32)
def test_pseudo_headers(s, d, proto, length, s_6, d_6, length6):
    v4 = s + d + bytes([0, proto]) + struct.pack("!H", length)
    assert checksum.pseudo_header(s, d, proto, length) == ref_sum(v4)
    v6 = s_6 + d_6 + struct.pack("!I", length6) + bytes(3) + bytes([proto])
    assert checksum.pseudo_header(s_6, d_6, proto, length6) == ref_sum(v6)
    payload = bytes(range(7))
    assert (checksum.checksum(payload, checksum.pseudo_header(s_6, d_6, proto, length6))
            == ref_checksum(v6 + payload))


# -- ARP -----------------------------------------------------------------------------
@FAST
@given(u16, macs, addr4, macs, addr4, st.integers(0, 40))
def test_arp_round_trip(op, sha, spa, tha, tpa, pad):
    buf = bytearray(arp.PACKET_LEN + pad)
    assert arp.build(buf, op, sha, spa, tha, tpa) == 28
    assert arp.parse(buf) == (op, sha, spa, tha, tpa)
    assert arp.parse(memoryview(buf)) == (op, sha, spa, tha, tpa)


def test_arp_rejects():
    buf = bytearray(28)
    arp.build(buf, arp.OP_REQUEST, MAC_A, A4, bytes(6), B4)
    for n in range(28):
        with pytest.raises(FrameError, match="shorter"):
            arp.parse(buf[:n])
    for i, v in ((0, 9), (2, 0x86), (4, 8), (5, 16)):
        bad = bytearray(buf)
        bad[i] = v
        with pytest.raises(FrameError, match="not Ethernet/IPv4"):
            arp.parse(bad)


@ORACLE
@given(st.sampled_from([1, 2]), macs, addr4, macs, addr4)
def test_arp_against_scapy(op, sha, spa, tha, tpa):
    pkt = Ether(dst="ff:ff:ff:ff:ff:ff", src=mac_to_str(sha)) / ARP(
        op=op, hwsrc=mac_to_str(sha), psrc=s4(spa), hwdst=mac_to_str(tha), pdst=s4(tpa))
    raw = bytes(pkt) + bytes(18)  # padded to the Ethernet minimum
    _, _, etype, _, off = ethernet.parse(raw)
    assert etype == ethernet.ETH_P_ARP
    assert arp.parse(memoryview(raw)[off:]) == (op, sha, spa, tha, tpa)
    buf = bytearray(28)
    arp.build(buf, op, sha, spa, tha, tpa)
    got = ARP(bytes(buf))
    assert (got.op, got.hwsrc, got.psrc, got.hwdst, got.pdst) == (
        op, mac_to_str(sha), s4(spa), mac_to_str(tha), s4(tpa))


# -- IPv4 ----------------------------------------------------------------------------
ipv4_fields = st.fixed_dictionaries({
    "tos": u8, "ident": u16, "flags": st.integers(0, 3),
    "frag_offset": st.integers(0, 0x1FFF).map(lambda x: x * 8), "ttl": u8, "proto": u8,
    "src": addr4, "dst": addr4,
    "options": st.binary(max_size=40).map(lambda o: o[:len(o) - len(o) % 4]),
    "payload_len": st.integers(0, 300), "pad": st.integers(0, 30),
})


@FAST
@given(ipv4_fields)
def test_ipv4_round_trip(f):
    opts = f["options"]
    hl = 20 + len(opts)
    total = hl + f["payload_len"]
    if f["frag_offset"] + f["payload_len"] > 65515:
        f["frag_offset"] = 0
    buf = bytearray(total + f["pad"])
    assert ipv4.build(buf, f["src"], f["dst"], f["proto"], f["payload_len"], ttl=f["ttl"],
                      tos=f["tos"], ident=f["ident"], flags=f["flags"],
                      frag_offset=f["frag_offset"], options=opts) == hl
    assert checksum.checksum(buf[:hl]) == 0
    got = ipv4.parse(memoryview(buf))
    assert got == (f["tos"], total, f["ident"], f["flags"], f["frag_offset"], f["ttl"],
                   f["proto"], f["src"], f["dst"], hl, opts)


def test_ipv4_options_padded_and_parsed():
    buf = bytearray(64)
    rr = bytes([7, 7, 4]) + bytes(4)  # record route with one slot: 7 bytes, padded to 8
    hl = ipv4.build(buf, A4, B4, ipv4.PROTO_UDP, 0, options=rr)
    assert hl == 28
    got = ipv4.parse(buf[:28])
    assert got[10] == rr + b"\0"
    assert ipv4.parse_options(got[10]) == ((7, bytes([4]) + bytes(4)),)
    assert ipv4.parse_options(b"\x01\x01\x94\x04\x00\x00") == ((0x94, b"\0\0"),)
    for bad in (b"\x07", b"\x07\x01", b"\x07\x09\x00", b"\x01\x44\x00"):
        with pytest.raises(FrameError):
            ipv4.parse_options(bad)
    with pytest.raises(ValueError):
        ipv4.build(buf, A4, B4, 6, 0, options=bytes(41))


def _ipv4_packet(payload_len: int = 8, **kw) -> bytearray:
    buf = bytearray(60 + payload_len)
    hl = ipv4.build(buf, A4, B4, ipv4.PROTO_UDP, payload_len, **kw)
    return buf[:hl + payload_len]


def test_ipv4_rejects():
    buf = _ipv4_packet(8)
    for n in range(28):
        with pytest.raises(FrameError):
            ipv4.parse(buf[:n])
    ipv4.parse(buf[:20], quoted=True)  # a quoted header may lose its payload
    bad = bytearray(buf)
    bad[8] ^= 1  # ttl changed, checksum not updated
    with pytest.raises(FrameError, match="checksum"):
        ipv4.parse(bad)
    assert ipv4.parse(bad, verify=False)[5] == 65
    assert ipv4.parse(bad, quoted=True)[5] == 65
    for vihl, msg in ((0x65, "version"), (0x44, "below"), (0x4F, "exceeds")):
        bad = bytearray(buf)
        bad[0] = vihl
        with pytest.raises(FrameError, match=msg):
            ipv4.parse(bad, verify=False)
    bad = bytearray(buf)
    struct.pack_into("!H", bad, 2, 19)
    with pytest.raises(FrameError, match="smaller than the header"):
        ipv4.parse(bad, verify=False)
    # ping of death: a fragment ending past 65535 bytes
    big = _ipv4_packet(16, frag_offset=65512, flags=0)
    with pytest.raises(FrameError, match="65535"):
        ipv4.parse(big)
    ipv4.parse(_ipv4_packet(8, frag_offset=65504))


@ORACLE
@given(u8, u16, st.sampled_from([0, 2, 1]), st.integers(0, 100).map(lambda x: x * 8), u8,
       addr4, addr4, st.binary(max_size=50), st.booleans())
def test_ipv4_against_scapy(tos, ident, flags, frag, ttl, src, dst, payload, with_rr):
    opts = [IPOption_RR(routers=["1.2.3.4"])] if with_rr else []
    pkt = IP(tos=tos, id=ident, flags=flags, frag=frag // 8, ttl=ttl, proto=253, src=s4(src),
             dst=s4(dst), options=opts) / Raw(payload)
    raw = bytes(pkt) + bytes(6)  # link padding
    got = ipv4.parse(raw)
    hl = 20 + len(bytes(pkt)) - 20 - len(payload)
    assert got[:10] == (tos, hl + len(payload), ident, flags, frag, ttl, 253, src, dst, hl)
    assert raw[got[9]:got[1]] == payload
    # ours, read back by scapy
    buf = bytearray(60 + len(payload))
    options = bytes(pkt)[20:hl]
    n = ipv4.build(buf, src, dst, 253, len(payload), ttl=ttl, tos=tos, ident=ident,
                   flags=flags, frag_offset=frag, options=options)
    buf[n:n + len(payload)] = payload
    raw = bytes(buf[:n + len(payload)])
    back = IP(raw)
    assert (back.tos, back.id, int(back.flags), back.frag * 8, back.ttl, back.src,
            back.dst) == (tos, ident, flags, frag, ttl, s4(src), s4(dst))
    assert rechecksummed(raw, IP, IP) == raw


# -- IPv6 ----------------------------------------------------------------------------
@FAST
@given(u8, st.integers(0, 0xFFFFF), st.integers(0, 300), u8, u8, addr6, addr6,
       st.integers(0, 20))
def test_ipv6_round_trip(tc, flow, plen, nh, hlim, src, dst, pad):
    buf = bytearray(40 + plen + pad)
    assert ipv6.build(buf, src, dst, nh, plen, hop_limit=hlim, traffic_class=tc,
                      flow_label=flow) == 40
    assert ipv6.parse(buf) == (tc, flow, plen, nh, hlim, src, dst)
    with pytest.raises(FrameError):
        ipv6.parse(buf[:39 + plen])
    assert ipv6.parse(buf[:40], quoted=True)[2] == plen


@FAST
@given(st.integers(0, 8191).map(lambda x: x * 8), st.booleans(), u32, u8)
def test_ipv6_fragment_round_trip(off, more, ident, nh):
    buf = bytearray(40 + 8 + 16)
    ipv6.build(buf, A6, B6, ipv6.PROTO_FRAGMENT, 24)
    assert ipv6.build_fragment(buf, nh, off, more, ident, offset=40) == 8
    if off + 16 > 0xFFFF:
        with pytest.raises(ipv6.ParameterProblem):
            ipv6.walk(buf, ipv6.PROTO_FRAGMENT)
        return
    assert ipv6.walk(buf, ipv6.PROTO_FRAGMENT) == (nh, 48, (off, more, ident))
    frag = IPv6(bytes(buf))[IPv6ExtHdrFragment]
    assert (frag.nh, frag.offset * 8, frag.m, frag.id) == (nh, off, int(more), ident)


def test_ipv6_walk_against_scapy():
    pkt = (IPv6(src=s6(A6), dst=s6(B6)) / IPv6ExtHdrHopByHop(options=[RouterAlert()])
           / IPv6ExtHdrDestOpt() / IPv6ExtHdrRouting(segleft=0) / IPv6ExtHdrDestOpt()
           / UDP(sport=1, dport=2) / b"x")
    raw = bytes(pkt)
    plen = ipv6.parse(raw)[2]
    proto, off, frag = ipv6.walk(raw, ipv6.parse(raw)[3], end=40 + plen)
    assert (proto, frag) == (ipv6.PROTO_UDP, None)
    assert udp.parse(raw[off:], A6, B6)[:2] == (1, 2)
    # a fragment: the walk stops after it
    pkt = (IPv6(src=s6(A6), dst=s6(B6)) / IPv6ExtHdrDestOpt()
           / IPv6ExtHdrFragment(nh=17, offset=3, m=1, id=0xDEADBEEF) / Raw(bytes(16)))
    raw = bytes(pkt)
    assert ipv6.walk(raw, raw[6]) == (17, 56, (24, True, 0xDEADBEEF))
    # no next header
    raw = bytes(IPv6(src=s6(A6), dst=s6(B6)) / IPv6ExtHdrDestOpt(nh=59))
    assert ipv6.walk(raw, raw[6]) == (ipv6.PROTO_NONE, 48, None)


def _v6(*layers) -> bytes:
    pkt = IPv6(src=s6(A6), dst=s6(B6))
    for layer in layers:
        pkt = pkt / layer
    return bytes(pkt)


def test_ipv6_walk_problems():
    # Hop-by-Hop after another header: code 1, pointing at the previous next-header field
    raw = _v6(IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop(), UDP())
    with pytest.raises(ipv6.ParameterProblem) as e:
        ipv6.walk(raw, raw[6])
    assert (e.value.code, e.value.pointer) == (icmp6.PARAM_UNRECOGNIZED_NEXT_HEADER, 40)
    # an unknown upper layer, when the caller says what it knows: code 1 at its next header
    raw = _v6(IPv6ExtHdrDestOpt(nh=253), Raw(bytes(8)))
    assert ipv6.walk(raw, raw[6]) == (253, 48, None)
    with pytest.raises(ipv6.ParameterProblem) as e:
        ipv6.walk(raw, raw[6], known={6, 17, 58})
    assert (e.value.code, e.value.pointer) == (icmp6.PARAM_UNRECOGNIZED_NEXT_HEADER, 40)
    raw = _v6(Raw(bytes(8)))
    with pytest.raises(ipv6.ParameterProblem) as e:
        ipv6.walk(raw, 253, known={6, 17, 58})
    assert e.value.pointer == 6
    assert ipv6.walk(_v6(IPv6ExtHdrDestOpt(nh=59)), 60, known={6})[0] == ipv6.PROTO_NONE
    # a Routing header with segments left: code 0 at the routing type
    raw = _v6(IPv6ExtHdrRouting(addresses=["2001:db8::9"], segleft=1), UDP())
    with pytest.raises(ipv6.ParameterProblem) as e:
        ipv6.walk(raw, raw[6])
    assert (e.value.code, e.value.pointer) == (icmp6.PARAM_ERRONEOUS_FIELD, 42)
    # unknown options: the two high bits choose skip, drop, or drop and report
    for otype, outcome in ((0x1E, None), (0x5E, "drop"), (0x9E, False), (0xDE, True),
                           (0xC2, True)):
        raw = _v6(IPv6ExtHdrHopByHop(options=[HBHOptUnknown(otype=otype, optdata=b"ab")]),
                  UDP())
        if outcome is None:
            assert ipv6.walk(raw, raw[6])[0] == ipv6.PROTO_UDP
        elif outcome == "drop":
            with pytest.raises(FrameError) as e:
                ipv6.walk(raw, raw[6])
            assert not isinstance(e.value, ipv6.ParameterProblem)
        else:
            with pytest.raises(ipv6.ParameterProblem) as e:
                ipv6.walk(raw, raw[6])
            assert (e.value.code, e.value.pointer, e.value.unicast_only) == (
                icmp6.PARAM_UNRECOGNIZED_OPTION, 42, outcome)
    # a non-final fragment that is not a multiple of 8: code 0 at the payload length
    raw = _v6(IPv6ExtHdrFragment(nh=17, m=1), Raw(bytes(12)))
    with pytest.raises(ipv6.ParameterProblem) as e:
        ipv6.walk(raw, raw[6])
    assert (e.value.code, e.value.pointer) == (0, 4)
    # a fragment reaching past 65535 bytes: code 0 at the fragment offset
    raw = _v6(IPv6ExtHdrFragment(nh=17, m=0, offset=8190), Raw(bytes(64)))
    with pytest.raises(ipv6.ParameterProblem) as e:
        ipv6.walk(raw, raw[6])
    assert (e.value.code, e.value.pointer) == (0, 42)
    # a hostile chain of many small headers is cut off
    raw = _v6(*[IPv6ExtHdrDestOpt() for _ in range(9)], UDP())
    with pytest.raises(FrameError, match="more than 8"):
        ipv6.walk(raw, raw[6])
    assert ipv6.walk(raw, raw[6], max_headers=9)[0] == ipv6.PROTO_UDP
    # after reassembly the walk resumes at 0, where Hop-by-Hop is never allowed
    dst40 = b"\x00\x04\x01\x24" + bytes(36)  # 40 bytes of destination options, then HBH
    hbh = b"\x11\x00\x01\x04" + bytes(4)
    with pytest.raises(ipv6.ParameterProblem):
        ipv6.walk(dst40 + hbh + bytes(8), ipv6.PROTO_DSTOPTS, offset=0)
    ipv6.walk(bytes(40) + hbh + bytes(8), ipv6.PROTO_HOPOPTS)  # where it belongs
    # an end past the buffer (a quoted packet cut short) is clamped
    raw = bytes(40) + b"\x3b\x00" + bytes(6) + bytes(8)
    assert ipv6.walk(raw, ipv6.PROTO_DSTOPTS, end=2000) == (ipv6.PROTO_NONE, 48, None)
    with pytest.raises(FrameError, match="truncated"):
        ipv6.walk(raw[:44], ipv6.PROTO_DSTOPTS, end=2000)
    # truncated chains and options
    raw = _v6(IPv6ExtHdrDestOpt(), UDP())
    for end in range(40, 48):
        with pytest.raises(FrameError):
            ipv6.walk(raw, raw[6], end=end)
    bad = bytearray(_v6(IPv6ExtHdrDestOpt(), UDP()))
    bad[42:44] = b"\x01\x05"  # PadN longer than its header
    with pytest.raises(FrameError, match="runs past"):
        ipv6.walk(bad, bad[6])


def test_ipv6_addresses():
    addr = socket.inet_pton(socket.AF_INET6, "2001:db8::abcd:1234")
    assert ipv6.solicited_node(addr) == socket.inet_pton(socket.AF_INET6, "ff02::1:ffcd:1234")
    assert ipv6.multicast_mac(ipv6.ALL_NODES) == bytes.fromhex("333300000001")
    assert ipv6.is_multicast(ipv6.ALL_ROUTERS) and not ipv6.is_multicast(addr)


# -- ICMPv4 --------------------------------------------------------------------------
@FAST
@given(u16, u16, st.binary(max_size=200), st.booleans())
def test_icmp4_echo_round_trip(ident, seq, data, reply):
    buf = bytearray(8 + len(data))
    assert icmp4.build_echo(buf, ident, seq, data, reply=reply) == 8 + len(data)
    kind, code, rest, body = icmp4.parse(buf)
    assert (kind, code, rest >> 16, rest & 0xFFFF, bytes(body)) == (
        icmp4.ECHO_REPLY if reply else icmp4.ECHO_REQUEST, 0, ident, seq, data)
    back = ICMP(bytes(buf))
    assert (back.type, back.id, back.seq, back.load if data else b"") == (
        0 if reply else 8, ident, seq, data)
    assert rechecksummed(bytes(buf), ICMP, ICMP) == bytes(buf)
    buf[-1] ^= 0x40
    with pytest.raises(FrameError, match="checksum"):
        icmp4.parse(buf)


def test_icmp4_errors_both_ways():
    quoted = bytes(IP(src=s4(A4), dst=s4(B4)) / UDP(sport=5000, dport=53) / b"query")
    # from scapy: fragmentation needed with the next-hop MTU
    raw = bytes(IP(src=s4(B4), dst=s4(A4)) / ICMP(type=3, code=4, nexthopmtu=1400)
                / IPerror(quoted[:28]))
    hl = ipv4.parse(raw)[9]
    kind, code, rest, body = icmp4.parse(raw[hl:])
    assert (kind, code, rest & 0xFFFF) == (icmp4.DEST_UNREACHABLE, icmp4.UNREACH_FRAG_NEEDED,
                                            1400)
    inner = ipv4.parse(body, quoted=True)
    assert (inner[6], inner[7], inner[8]) == (ipv4.PROTO_UDP, A4, B4)
    assert struct.unpack_from("!HH", body, inner[9]) == (5000, 53)
    raw = bytes(IP(src=s4(B4), dst=s4(A4)) / ICMP(type=11, code=0) / IPerror(quoted[:28])
                / UDPerror())
    kind, code, _rest, body = icmp4.parse(raw[20:])
    assert (kind, code) == (icmp4.TIME_EXCEEDED, icmp4.TTL_EXCEEDED)
    # ours, read by scapy
    buf = bytearray(600)
    n = icmp4.build_unreachable(buf, icmp4.UNREACH_FRAG_NEEDED, quoted, mtu=1280)
    back = ICMP(bytes(buf[:n]))
    assert (back.type, back.code, back.nexthopmtu) == (3, 4, 1280)
    assert back[IPerror].src == s4(A4) and back[UDPerror].dport == 53
    assert rechecksummed(bytes(buf[:n]), ICMP, ICMP) == bytes(buf[:n])
    n = icmp4.build_unreachable(buf, icmp4.UNREACH_PORT, quoted)
    assert icmp4.parse(buf[:n])[:3] == (3, 3, 0)
    n = icmp4.build_time_exceeded(buf, icmp4.REASSEMBLY_TIME_EXCEEDED, bytes(1000))
    assert n == 8 + icmp4.MAX_QUOTE  # RFC 1812: the error fits in 576 bytes with its header
    assert ICMP(bytes(buf[:n])).code == 1
    n = icmp4.build_parameter_problem(buf, 9, quoted)
    assert ICMP(bytes(buf[:n])).ptr == 9
    with pytest.raises(ValueError):
        icmp4.build_echo(bytearray(10), 1, 1, bytes(3))


# -- ICMPv6 --------------------------------------------------------------------------
@ORACLE
@given(unicast6, unicast6, u16, u16, st.binary(max_size=100), st.booleans())
def test_icmp6_echo_against_scapy(src, dst, ident, seq, data, reply):
    cls = ICMPv6EchoReply if reply else ICMPv6EchoRequest
    raw = bytes(IPv6(src=s6(src), dst=s6(dst)) / cls(id=ident, seq=seq, data=data))
    kind, code, rest, body = icmp6.parse(raw[40:], src, dst)
    assert (kind, code, rest, bytes(body)) == (129 if reply else 128, 0, (ident << 16) | seq,
                                               data)
    with pytest.raises(FrameError, match="checksum"):
        icmp6.parse(raw[40:], dst, src[:15] + bytes([src[15] ^ 1]))
    buf = bytearray(40 + 8 + len(data))
    n = icmp6.build_echo(buf, src, dst, ident, seq, data, reply=reply, offset=40)
    ipv6.build(buf, src, dst, ipv6.PROTO_ICMPV6, n, hop_limit=64)
    back = IPv6(bytes(buf))
    assert (back[cls].id, back[cls].seq, back[cls].data) == (ident, seq, data)
    assert rechecksummed(bytes(buf), IPv6, cls) == bytes(buf)


def test_icmp6_errors_both_ways():
    quoted = bytes(IPv6(src=s6(A6), dst=s6(B6)) / UDP(sport=7, dport=9) / bytes(1400))
    cases = [
        (ICMPv6PacketTooBig(mtu=1280), icmp6.PACKET_TOO_BIG, 0, 1280),
        (ICMPv6DestUnreach(code=4), icmp6.DEST_UNREACHABLE, icmp6.UNREACH_PORT, 0),
        (ICMPv6TimeExceeded(code=1), icmp6.TIME_EXCEEDED, 1, 0),
        (ICMPv6ParamProblem(code=2, ptr=42), icmp6.PARAMETER_PROBLEM, 2, 42),
    ]
    for layer, kind, code, rest in cases:
        raw = bytes(IPv6(src=s6(B6), dst=s6(A6)) / layer / Raw(quoted[:icmp6.MAX_QUOTE]))
        got = icmp6.parse(raw[40:], B6, A6)
        assert got[:3] == (kind, code, rest)
        inner = ipv6.parse(got[3], quoted=True)
        assert (inner[3], inner[5], inner[6]) == (ipv6.PROTO_UDP, A6, B6)
        buf = bytearray(1280)
        n = icmp6.build_error(buf, B6, A6, kind, code, quoted, rest=rest, offset=40)
        assert n == 8 + icmp6.MAX_QUOTE  # RFC 4443 2.4(c): the error fits in 1280 bytes
        ipv6.build(buf, B6, A6, ipv6.PROTO_ICMPV6, n, hop_limit=64)
        assert bytes(buf) == raw
        assert rechecksummed(raw, IPv6, type(layer)) == raw


def _ndp_check(raw: bytes, src: bytes, dst: bytes) -> memoryview:
    """Verify an NDP packet's checksum through icmp6.parse and return the ICMPv6 message."""
    plen = ipv6.parse(raw)[2]
    icmp6.parse(memoryview(raw)[40:40 + plen], src, dst)
    return memoryview(raw)[40:40 + plen]


@ORACLE
@given(unicast6, unicast6, macs, st.sampled_from([0, 0x80, 0x40, 0x20, 0xE0, 0x60]))
def test_ns_na_against_scapy(src, target, mac, flags):
    dst = ipv6.solicited_node(target)
    raw = bytes(IPv6(src=s6(src), dst=s6(dst), hlim=255) / ICMPv6ND_NS(tgt=s6(target))
                / ICMPv6NDOptSrcLLAddr(lladdr=mac_to_str(mac)))
    assert icmp6.parse_ns(_ndp_check(raw, src, dst)) == (target, mac)
    buf = bytearray(72)
    n = icmp6.build_ns(buf, src, dst, target, slla=mac, offset=40)
    ipv6.build(buf, src, dst, ipv6.PROTO_ICMPV6, n, hop_limit=255)
    assert bytes(buf) == raw
    # unspecified source: no option
    raw = bytes(IPv6(src="::", dst=s6(dst), hlim=255) / ICMPv6ND_NS(tgt=s6(target)))
    assert icmp6.parse_ns(_ndp_check(raw, ipv6.UNSPECIFIED, dst)) == (target, None)
    buf = bytearray(64)
    n = icmp6.build_ns(buf, ipv6.UNSPECIFIED, dst, target, offset=40)
    ipv6.build(buf, ipv6.UNSPECIFIED, dst, ipv6.PROTO_ICMPV6, n, hop_limit=255)
    assert bytes(buf) == raw
    # advertisement
    r, s, o = bool(flags & 0x80), bool(flags & 0x40), bool(flags & 0x20)
    raw = bytes(IPv6(src=s6(target), dst=s6(src), hlim=255)
                / ICMPv6ND_NA(tgt=s6(target), R=r, S=s, O=o)
                / ICMPv6NDOptDstLLAddr(lladdr=mac_to_str(mac)))
    assert icmp6.parse_na(_ndp_check(raw, target, src)) == (flags, target, mac)
    buf = bytearray(72)
    n = icmp6.build_na(buf, target, src, target, flags, tlla=mac, offset=40)
    ipv6.build(buf, target, src, ipv6.PROTO_ICMPV6, n, hop_limit=255)
    assert bytes(buf) == raw
    assert rechecksummed(raw, IPv6, ICMPv6ND_NA) == raw


def test_rs_ra_against_scapy():
    router = socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:1")
    prefix = socket.inet_pton(socket.AF_INET6, "2001:db8:1::")
    raw = bytes(IPv6(src=s6(A6), dst="ff02::2", hlim=255) / ICMPv6ND_RS()
                / ICMPv6NDOptSrcLLAddr(lladdr=mac_to_str(MAC_A)))
    assert icmp6.parse_rs(_ndp_check(raw, A6, ipv6.ALL_ROUTERS)) == MAC_A
    buf = bytearray(len(raw))
    n = icmp6.build_rs(buf, A6, ipv6.ALL_ROUTERS, slla=MAC_A, offset=40)
    ipv6.build(buf, A6, ipv6.ALL_ROUTERS, ipv6.PROTO_ICMPV6, n, hop_limit=255)
    assert bytes(buf) == raw

    raw = bytes(IPv6(src=s6(router), dst="ff02::1", hlim=255)
                / ICMPv6ND_RA(chlim=64, M=1, O=0, prf=0, routerlifetime=1800, reachabletime=30000,
                              retranstimer=1000)
                / ICMPv6NDOptSrcLLAddr(lladdr=mac_to_str(MAC_B)) / ICMPv6NDOptMTU(mtu=1500)
                / ICMPv6NDOptPrefixInfo(prefixlen=64, L=1, A=1, validlifetime=86400,
                                        preferredlifetime=14400, prefix="2001:db8:1::"))
    got = icmp6.parse_ra(_ndp_check(raw, router, ipv6.ALL_NODES))
    assert got == (64, icmp6.RA_MANAGED, 1800, 30000, 1000, MAC_B, 1500,
                   ((64, icmp6.PREFIX_ON_LINK | icmp6.PREFIX_AUTONOMOUS, 86400, 14400,
                     prefix),))
    buf = bytearray(len(raw))
    n = icmp6.build_ra(buf, router, ipv6.ALL_NODES, cur_hop_limit=64, flags=icmp6.RA_MANAGED,
                       router_lifetime=1800, reachable_time=30000, retrans_timer=1000,
                       slla=MAC_B, mtu=1500, prefixes=got[7], offset=40)
    ipv6.build(buf, router, ipv6.ALL_NODES, ipv6.PROTO_ICMPV6, n, hop_limit=255)
    assert bytes(buf) == raw
    assert rechecksummed(raw, IPv6, ICMPv6ND_RA) == raw


def test_ndp_strictness():
    buf = bytearray(32)
    icmp6.build_ns(buf, A6, B6, B6, slla=MAC_A)
    good = bytes(buf)
    assert icmp6.parse_ns(good) == (B6, MAC_A)
    cases = {
        "length zero": good[:25] + b"\x00" + good[26:],
        "runs past": good[:25] + b"\x02" + good[26:],
        "cut short": good + b"\x01",
        "not an Ethernet": good[:24] + b"\x01\x02" + bytes(14),
        "code": good[:1] + b"\x01" + good[2:],
        "shorter": good[:23],
        "multicast target": good[:8] + b"\xff" + good[9:],
        "not a Neighbor Solicitation": b"\x88" + good[1:],
    }
    for match, data in cases.items():
        with pytest.raises(FrameError, match=match):
            icmp6.parse_ns(data)
    # unknown options are skipped; options split strictly
    assert icmp6.parse_ns(good[:24] + b"\x63\x01" + bytes(6) + good[24:]) == (B6, MAC_A)
    assert icmp6.parse_options(good, 24) == ((1, memoryview(MAC_A)),)
    with pytest.raises(FrameError, match="length zero"):
        icmp6.parse_options(b"\x01\x00" + bytes(6))
    ra = bytearray(16 + 8 + 32)
    icmp6.build_ra(ra, A6, B6, mtu=1400, prefixes=((64, 0xC0, 1, 1, bytes(16)),))
    assert icmp6.parse_ra(ra)[6] == 1400
    bad = bytearray(ra)
    bad[26] = 129
    with pytest.raises(FrameError, match="prefix length"):
        icmp6.parse_ra(bad)
    for option, match in ((b"\x05\x02" + bytes(14), "MTU option"),
                          (b"\x03\x03" + bytes(22), "prefix information")):
        with pytest.raises(FrameError, match=match):
            icmp6.parse_ra(bytes(ra[:16]) + option)


# -- UDP -----------------------------------------------------------------------------
@FAST
@given(st.sampled_from([(A4, B4), (A6, B6)]), u16, u16, st.binary(max_size=300))
def test_udp_round_trip(addrs, sport, dport, payload):
    src, dst = addrs
    buf = bytearray(8 + len(payload) + 3)
    assert udp.build(buf, src, dst, sport, dport, payload) == 8 + len(payload)
    got = udp.parse(buf, src, dst)  # trailing bytes past the UDP length are ignored
    assert got[:2] == (sport, dport) and bytes(got[2]) == payload
    with pytest.raises(FrameError, match="checksum"):
        udp.parse(buf, dst, src[:-1] + bytes([src[-1] ^ 0x10]))


@ORACLE
@given(st.booleans(), u16, u16, st.binary(max_size=100))
def test_udp_against_scapy(v6, sport, dport, payload):
    if v6:
        pkt, src, dst, cls = IPv6(src=s6(A6), dst=s6(B6)), A6, B6, IPv6
    else:
        pkt, src, dst, cls = IP(src=s4(A4), dst=s4(B4)), A4, B4, IP
    raw = bytes(pkt / UDP(sport=sport, dport=dport) / Raw(payload))
    hl = 40 if v6 else 20
    got = udp.parse(raw[hl:], src, dst)
    assert got[:2] == (sport, dport) and bytes(got[2]) == payload
    buf = bytearray(hl + 8 + len(payload))
    n = udp.build(buf, src, dst, sport, dport, payload, offset=hl)
    if v6:
        ipv6.build(buf, src, dst, ipv6.PROTO_UDP, n)
    else:
        ipv4.build(buf, src, dst, ipv4.PROTO_UDP, n)
    back = cls(bytes(buf))
    assert (back[UDP].sport, back[UDP].dport, back[UDP].len) == (sport, dport, n)
    assert rechecksummed(bytes(buf), cls, UDP) == bytes(buf)


def test_udp_checksum_rules():
    packet = bytearray(32)
    udp.build(packet, A4, B4, 1, 2, b"\0\0\0\0", offset=20)
    # choose payload so that the computed checksum is 0: it must go out as 0xffff
    c = struct.unpack_from("!H", packet, 26)[0]
    payload = struct.pack("!HH", c, 0)
    udp.build(packet, A4, B4, 1, 2, payload, offset=20)
    ipv4.build(packet, A4, B4, ipv4.PROTO_UDP, 12)
    assert struct.unpack_from("!H", packet, 26)[0] == 0xFFFF
    assert rechecksummed(bytes(packet), IP, UDP) == bytes(packet)  # scapy sends 0xffff too
    buf = packet[20:]
    assert udp.parse(buf, A4, B4)[:2] == (1, 2)
    # zero = no checksum: accepted over IPv4, never over IPv6
    struct.pack_into("!H", buf, 6, 0)
    assert udp.parse(buf, A4, B4)[:2] == (1, 2)
    with pytest.raises(FrameError, match="IPv6 without a checksum"):
        udp.parse(buf, A6, B6)
    for length in (0, 7, 13):
        bad = bytearray(buf)
        struct.pack_into("!H", bad, 4, length)
        with pytest.raises(FrameError, match="UDP length"):
            udp.parse(bad, A4, B4)
    for n in range(8):
        with pytest.raises(FrameError, match="shorter"):
            udp.parse(buf[:n], A4, B4)


@FAST
@given(st.sampled_from([(A4, B4), (A6, B6)]), u16, u16, st.binary(max_size=64),
       st.integers(0, 9))
def test_udp_build_header_in_place(addrs, sport, dport, payload, offset):
    src, dst = addrs
    copied = bytearray(offset + 8 + len(payload))
    udp.build(copied, src, dst, sport, dport, payload, offset=offset)
    in_place = bytearray(offset) + bytes(8) + payload
    assert udp.build_header(in_place, src, dst, sport, dport, len(payload), offset) == (
        8 + len(payload))
    assert in_place == copied
    zero = bytearray(12)  # the payload that makes the computed checksum 0 sends 0xffff
    udp.build(zero, src, dst, sport, dport, bytes(4))
    struct.pack_into("!H", zero, 8, struct.unpack_from("!H", zero, 6)[0])
    udp.build_header(zero, src, dst, sport, dport, 4)
    assert zero[6:8] == b"\xff\xff"
    assert udp.parse(zero, src, dst)[:2] == (sport, dport)


# -- TCP -----------------------------------------------------------------------------
tcp_options = st.fixed_dictionaries({
    "mss": st.none() | u16, "wscale": st.none() | st.integers(0, 14),
    "sack_permitted": st.booleans(),
    "sack_blocks": st.lists(st.tuples(u32, u32), max_size=3).map(tuple),
    "ts": st.none() | st.tuples(u32, u32),
})


def fit_options(opts: dict) -> None:
    """Drop SACK blocks until the options fit in 40 bytes."""
    while tcp.options_length(**opts) > tcp.MAX_OPTIONS_LEN:
        opts["sack_blocks"] = opts["sack_blocks"][:-1]


@FAST
@given(st.sampled_from([(A4, B4), (A6, B6)]), u16, u16, u32, u32, u8, u16, u16, tcp_options,
       st.binary(max_size=200))
def test_tcp_round_trip(addrs, sport, dport, seq, ack, flags, window, urgent, opts, payload):
    src, dst = addrs
    fit_options(opts)
    buf = bytearray(60 + len(payload))
    n = tcp.build(buf, src, dst, sport, dport, seq, ack, flags, window, payload,
                  urgent=urgent, **opts)
    hl = 20 + tcp.options_length(**opts)
    assert n == hl + len(payload) and hl % 4 == 0
    got = tcp.parse(memoryview(buf)[:n], src, dst)
    assert got[:7] == (sport, dport, seq, ack, hl, flags, window) and got[8] == urgent
    assert bytes(buf[hl:n]) == payload
    ts = opts["ts"] or (None, None)
    assert tcp.parse_options(got[9]) == (opts["mss"], opts["wscale"], opts["sack_permitted"],
                                         opts["sack_blocks"], ts[0], ts[1])


@FAST
@given(st.sampled_from([(A4, B4), (A6, B6)]), u32, u8, tcp_options, st.binary(max_size=64),
       st.integers(0, 9))
def test_tcp_build_header_in_place(addrs, seq, flags, opts, payload, offset):
    src, dst = addrs
    fit_options(opts)
    copied = bytearray(offset + 60 + len(payload))
    n = tcp.build(copied, src, dst, 1, 2, seq, 3, flags, 4, payload, offset=offset, **opts)
    hl = 20 + tcp.options_length(**opts)
    in_place = bytearray(offset + hl) + payload
    assert tcp.build_header(in_place, src, dst, 1, 2, seq, 3, flags, 4, len(payload),
                            offset=offset, **opts) == hl
    assert in_place == copied[:offset + n]


@ORACLE
@given(st.booleans(), u16, u16, u32, u32, st.sampled_from([tcp.SYN, tcp.SYN | tcp.ACK,
       tcp.ACK | tcp.PSH, tcp.FIN | tcp.ACK, tcp.RST, 0xFF]), u16, tcp_options,
       st.binary(max_size=100))
def test_tcp_against_scapy(v6, sport, dport, seq, ack, flags, window, opts, payload):
    fit_options(opts)
    if v6:
        ip, src, dst, cls, hl = IPv6(src=s6(A6), dst=s6(B6)), A6, B6, IPv6, 40
    else:
        ip, src, dst, cls, hl = IP(src=s4(A4), dst=s4(B4)), A4, B4, IP, 20
    # ours, read by scapy
    buf = bytearray(hl + 60 + len(payload))
    n = tcp.build(buf, src, dst, sport, dport, seq, ack, flags, window, payload, offset=hl,
                  **opts)
    if v6:
        ipv6.build(buf, src, dst, ipv6.PROTO_TCP, n)
    else:
        ipv4.build(buf, src, dst, ipv4.PROTO_TCP, n)
    raw = bytes(buf[:hl + n])
    seg = cls(raw)[TCP]
    assert (seg.sport, seg.dport, seg.seq, seg.ack, int(seg.flags), seg.window) == (
        sport, dport, seq, ack, flags, window)
    sopts = dict((k, v) for k, v in seg.options if k != "NOP")
    assert sopts.get("MSS") == opts["mss"]
    assert sopts.get("WScale") == opts["wscale"]
    assert ("SAckOK" in sopts) == opts["sack_permitted"]
    assert sopts.get("Timestamp") == opts["ts"]
    assert tuple(zip(sopts.get("SAck", ())[::2], sopts.get("SAck", ())[1::2],
                     strict=True)) == opts["sack_blocks"]
    assert rechecksummed(raw, cls, TCP) == raw
    # scapy's, read by us
    sopts = [("MSS", opts["mss"])] if opts["mss"] is not None else []
    if opts["sack_permitted"]:
        sopts.append(("SAckOK", b""))
    if opts["ts"] is not None:
        sopts.append(("Timestamp", opts["ts"]))
    if opts["wscale"] is not None:
        sopts.append(("WScale", opts["wscale"]))
    if opts["sack_blocks"]:
        sopts.append(("SAck", tuple(x for b in opts["sack_blocks"] for x in b)))
    raw = bytes(ip / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags,
                         window=window, options=sopts) / Raw(payload))
    got = tcp.parse(memoryview(raw)[hl:], src, dst)
    assert got[:3] == (sport, dport, seq) and got[5:7] == (flags, window)
    assert raw[hl + got[4]:] == payload
    ts = opts["ts"] or (None, None)
    assert tcp.parse_options(got[9]) == (opts["mss"], opts["wscale"], opts["sack_permitted"],
                                         opts["sack_blocks"], ts[0], ts[1])


def test_tcp_option_strictness():
    assert tcp.parse_options(b"") == (None, None, False, (), None, None)
    # unknown options are skipped, EOL ends the list, a wscale above 14 reads as 14
    assert tcp.parse_options(b"\x1e\x04ab\x03\x03\x0f\x00\x02") == (
        None, 14, False, (), None, None)
    assert tcp.parse_options(b"\x01\x01\x08\x0a" + bytes(8) + b"\x02\x04\x05\xb4")[0] == 1460
    bad = {
        b"\x02": "no length byte",
        b"\x1e\x01": "bad length",
        b"\x1e\x00": "bad length",
        b"\x02\x04\x05": "bad length",
        b"\x02\x05\x05\xb4\x00": "expected 4",
        b"\x03\x04\x07\x00": "expected 3",
        b"\x04\x03\x00": "expected 2",
        b"\x08\x08" + bytes(6): "expected 10",
        b"\x05\x0b" + bytes(9): "2 \\+ 8n",
        b"\x05\x02": "2 \\+ 8n",
    }
    for data, match in bad.items():
        with pytest.raises(FrameError, match=match):
            tcp.parse_options(data)
    buf = bytearray(40)
    tcp.build(buf, A4, B4, 1, 2, 3, 4, tcp.ACK, 5, ts=(1, 2))
    for n in range(32):
        with pytest.raises(FrameError):
            tcp.parse(buf[:n], A4, B4, verify=False)
    bad_off = bytearray(buf[:32])
    bad_off[12] = 0x40
    with pytest.raises(FrameError, match="below"):
        tcp.parse(bad_off, A4, B4, verify=False)
    bad_sum = bytearray(buf[:32])
    bad_sum[4] ^= 0x80
    with pytest.raises(FrameError, match="checksum"):
        tcp.parse(bad_sum, A4, B4)
    with pytest.raises(ValueError):
        tcp.build(buf, A4, B4, 1, 2, 3, 4, 0, 5, mss=1, ts=(1, 2),
                  sack_blocks=((1, 2),) * 3)
    with pytest.raises(ValueError):
        tcp.build(buf, A4, B4, 1, 2, 3, 4, 0, 5, wscale=15)


# -- fuzzing: only FrameError may escape a parser ------------------------------------
PARSERS = {
    "arp": arp.parse,
    "ipv4": ipv4.parse,
    "ipv4 unverified": lambda d: ipv4.parse(d, verify=False),
    "ipv4 quoted": lambda d: ipv4.parse(d, quoted=True),
    "ipv4 options": ipv4.parse_options,
    "ipv6": ipv6.parse,
    "ipv6 quoted": lambda d: ipv6.parse(d, quoted=True),
    "ipv6 walk": lambda d: ipv6.walk(d, d[0] if d else 0, offset=min(len(d), 1),
                                     end=d[-1] if d else -1, known=(6, 17, 58)),
    "ipv6 walk hbh": lambda d: ipv6.walk(b"\0" * 40 + d, ipv6.PROTO_HOPOPTS),
    "ipv6 walk dst": lambda d: ipv6.walk(b"\0" * 40 + d, ipv6.PROTO_DSTOPTS),
    "ipv6 walk frag": lambda d: ipv6.walk(b"\0" * 40 + d, ipv6.PROTO_FRAGMENT),
    "ipv6 walk routing": lambda d: ipv6.walk(b"\0" * 40 + d, ipv6.PROTO_ROUTING),
    "icmp4": icmp4.parse,
    "icmp4 unverified": lambda d: icmp4.parse(d, verify=False),
    "icmp6": lambda d: icmp6.parse(d, A6, B6),
    "icmp6 unverified": lambda d: icmp6.parse(d, A6, B6, verify=False),
    "ndp options": icmp6.parse_options,
    "ns": lambda d: icmp6.parse_ns(b"\x87\x00" + d),
    "na": lambda d: icmp6.parse_na(b"\x88\x00" + d),
    "rs": lambda d: icmp6.parse_rs(b"\x85\x00" + d),
    "ra": lambda d: icmp6.parse_ra(b"\x86\x00" + d),
    "udp4": lambda d: udp.parse(d, A4, B4),
    "udp4 unverified": lambda d: udp.parse(d, A4, B4, verify=False),
    "udp6": lambda d: udp.parse(d, A6, B6),
    "tcp": lambda d: tcp.parse(d, A4, B4),
    "tcp unverified": lambda d: tcp.parse(d, A6, B6, verify=False),
    "tcp options": tcp.parse_options,
}


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(sorted(PARSERS)), st.binary(max_size=120), st.booleans())
def test_fuzz_random_bytes(name, data, as_view):
    only_frame_error(PARSERS[name], memoryview(data) if as_view else data)


def _seeds() -> list[tuple[str, bytes]]:
    """Valid inputs for each parser, which the mutation fuzzer damages."""
    out = []
    buf = bytearray(28)
    arp.build(buf, 1, MAC_A, A4, MAC_B, B4)
    out.append(("arp", bytes(buf)))
    out.append(("ipv4 unverified", bytes(_ipv4_packet(8, options=bytes([7, 7, 4]) + bytes(5)))))
    out.append(("ipv4 options", bytes([7, 7, 4]) + bytes(4) + b"\x01\x94\x04\0\0\0"))
    ext = _v6(IPv6ExtHdrHopByHop(options=[RouterAlert()]), IPv6ExtHdrDestOpt(),
              IPv6ExtHdrRouting(segleft=0), IPv6ExtHdrFragment(nh=17, m=1), Raw(bytes(8)))
    out.append(("ipv6 quoted", ext))
    out.append(("ipv6 walk hbh", ext[40:]))
    buf = bytearray(64)
    n = icmp4.build_echo(buf, 1, 2, b"abcdefgh")
    out.append(("icmp4 unverified", bytes(buf[:n])))
    n = icmp6.build_ns(buf, A6, B6, B6, slla=MAC_A)
    out.append(("ns", bytes(buf[2:n])))
    n = icmp6.build_na(buf, A6, B6, B6, 0x60, tlla=MAC_A)
    out.append(("na", bytes(buf[2:n])))
    n = icmp6.build_rs(buf, A6, B6, slla=MAC_A)
    out.append(("rs", bytes(buf[2:n])))
    ra = bytearray(80)
    n = icmp6.build_ra(ra, A6, B6, slla=MAC_A, mtu=1500, prefixes=((64, 0xC0, 1, 1, B6),))
    out.append(("ra", bytes(ra[2:n])))
    out.append(("ndp options", bytes(ra[16:n])))
    n = udp.build(buf, A4, B4, 1, 2, b"hello")
    out.append(("udp4 unverified", bytes(buf[:n])))
    n = tcp.build(buf, A6, B6, 1, 2, 3, 4, tcp.SYN, 5, b"x", mss=1460, wscale=7,
                  sack_permitted=True, ts=(1, 2))
    out.append(("tcp unverified", bytes(buf[:n])))
    n = tcp.build(buf, A6, B6, 1, 2, 3, 4, tcp.ACK, 5, mss=1460, sack_blocks=((1, 2), (3, 4)),
                  ts=(1, 2))
    out.append(("tcp options", bytes(buf[20:n])))
    return out


SEEDS = _seeds()


@settings(max_examples=1000, deadline=None)
@given(st.sampled_from(SEEDS), st.lists(st.tuples(st.integers(0, 200), u8), max_size=4),
       st.integers(0, 200))
def test_fuzz_mutated(seed, changes, cut):
    name, data = seed
    buf = bytearray(data)
    for pos, value in changes:
        buf[pos % len(buf)] = value
    only_frame_error(PARSERS[name], bytes(buf[:cut]))
    only_frame_error(PARSERS[name], memoryview(buf))


@pytest.mark.parametrize("name,data", SEEDS, ids=[s[0] for s in SEEDS])
def test_seeds_parse(name, data):
    PARSERS[name](data)  # the mutation fuzzer starts from valid input


def test_bench_runs(capsys):
    from threadnet.bench import wire as bench

    assert bench.main(["--number", "200"]) == 0
    out = capsys.readouterr().out
    assert "µs" in out and "interpreter" in out


# -- the hot path's fixed headers (stack/ip.py's paths, stack/tcplayer.py, receive coalescing)
@settings(max_examples=50, deadline=None)
@given(v6=st.booleans(), seq=st.integers(0, 2**32 - 1), ack=st.integers(0, 2**32 - 1),
       ts=st.one_of(st.none(), st.tuples(st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1))),
       payload=st.binary(max_size=64))
def test_hot_path_headers_against_scapy(v6, seq, ack, ts, payload):
    from scapy.all import IPv6 as IPv6_

    smac, dmac = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
    src, dst = (socket.inet_pton(socket.AF_INET6, "fc00::1"),
                socket.inet_pton(socket.AF_INET6, "fc00::2")) if v6 else (
        bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]))
    th = 54 if v6 else 34
    hl = 20 if ts is None else 32
    frame = bytearray(th + hl + len(payload))
    if ts is None:
        tcp.HEADER.pack_into(frame, th, 1000, 80, seq, ack, 0x5000 | tcp.ACK, 512, 0, 0)
    else:
        tcp.HEADER_TS.pack_into(frame, th, 1000, 80, seq, ack, 0x8000 | tcp.ACK, 512, 0, 0,
                                tcp.NOP_NOP_TS, *ts)
    frame[th + hl:] = payload
    total = len(frame) - 14
    if v6:
        ipv6.ETH_HEADER.pack_into(frame, 0, dmac, smac, 0x86DD, 0x60000000, total - 40, 6, 64,
                                  src, dst)
    else:
        ipv4.ETH_HEADER.pack_into(frame, 0, dmac, smac, 0x0800, 0x45, 0, total, 7, 0x4000, 64,
                                  6, 0, src, dst)
    pkt = Ether(bytes(frame))
    ip = pkt[IPv6_] if v6 else pkt[IP]
    assert (ip.src, ip.dst) == (("fc00::1", "fc00::2") if v6 else ("10.0.0.1", "10.0.0.2"))
    t = pkt[TCP]
    assert (t.sport, t.dport, t.seq, t.ack, t.flags, t.window) == (1000, 80, seq, ack, "A", 512)
    assert bytes(t.payload) == payload
    if ts is not None:
        assert dict((k, v) for k, v in t.options if k == "Timestamp")["Timestamp"] == ts
        assert frame[th + 20:th + 24] == tcp.TS_HEAD
        if not v6:  # what receive coalescing reads of it
            (dm, etype, vihl, tot, frag, proto, addrs, ports, s2, a2, offfl, window,
             opts) = tcp.GRO4.unpack_from(frame)
            assert (dm, etype, vihl, tot, frag, proto, addrs) == (dmac, 0x0800, 0x45, total,
                                                                   0x4000, 6, src + dst)
            assert (ports, s2, a2, offfl & 0xFF, window) == (
                b"\x03\xe8\x00\x50", seq, ack, tcp.ACK, 512)
            assert opts == bytes(frame[th + 20:th + 32])
    if not v6:
        assert ipv4.FIELDS.unpack_from(frame, 14) == (0x45, total, 0x4000, 6, src, dst)
