"""The wire helpers the stack runs on its hot and slow paths, against scapy.

Every parse, build and checksum helper of ``wire/`` that ``stack/`` calls is here (or in
test_wire_stack.py, for the general ``parse``/``build`` of each protocol): scapy builds
packets that the helper must read, and reads the bytes that the helper writes, checksums
included. The incremental checksum update (RFC 1624) is checked against full
recomputation, scapy's, and the RFC's own example of the negative zero.
"""

from __future__ import annotations

import socket
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import (
    ICMP,
    IP,
    TCP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
)
from scapy.layers.l2 import getmacbyip

from threadnet.errors import FrameError
from threadnet.wire import checksum, ethernet, icmp4, icmp6, ipv4, ipv6, tcp, udp, vnet
from threadnet.wire.ethernet import mac_to_str

ORACLE = settings(max_examples=40, deadline=None,
                  suppress_health_check=[HealthCheck.too_slow])
FAST = settings(max_examples=300, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
addr4 = st.binary(min_size=4, max_size=4)
addr6 = st.binary(min_size=16, max_size=16)
#: payloads as the stack sees them: random, odd and even, empty, and all zeros (the
#: benchmarks send zeros, which make the checksum's integer 0)
payloads = st.one_of(st.binary(max_size=200), st.integers(0, 200).map(bytes))
timestamps = st.one_of(st.none(), st.tuples(u32, u32))

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")
#: scapy fills in no MAC address by itself (it would resolve the destination's)
ETHER = Ether(dst=mac_to_str(MAC_B), src=mac_to_str(MAC_A))
A4, B4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
A6 = socket.inet_pton(socket.AF_INET6, "fc00::1")
B6 = socket.inet_pton(socket.AF_INET6, "fc00::2")


def ntop(a: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(a) == 16 else socket.AF_INET, a)


def ref_fold(v: int) -> int:
    """RFC 1071's end-around carry, the slow way."""
    while v >> 16:
        v = (v & 0xFFFF) + (v >> 16)
    return v


def ref_checksum(words: list[int]) -> int:
    return ~ref_fold(sum(words)) & 0xFFFF


def scapy_rechecksummed(raw: bytes | bytearray) -> bytes:
    """An IPv4 header (and what follows) as scapy writes it, its checksum recomputed."""
    pkt = IP(bytes(raw))
    del pkt.chksum
    return bytes(pkt)


def ts_options(ts: tuple[int, int] | None) -> list:
    return [] if ts is None else [("NOP", None), ("NOP", None), ("Timestamp", ts)]


def scapy_frame(v6: bool, payload: bytes, *, seq: int = 1000, ack: int = 77,
                flags: str | int = "A", ts: tuple[int, int] | None = (5, 6), window: int = 512,
                ident: int = 9, ttl: int = 64, src: bytes | None = None,
                dst: bytes | None = None):
    """A TCP frame as the stack's output path makes them: no IP options, DF, TTL 64."""
    if v6:
        ip = IPv6(src=ntop(src or A6), dst=ntop(dst or B6), hlim=ttl)
    else:
        ip = IP(src=ntop(src or A4), dst=ntop(dst or B4), id=ident, flags="DF", ttl=ttl)
    return (Ether(dst=mac_to_str(MAC_B), src=mac_to_str(MAC_A)) / ip
            / TCP(sport=40000, dport=80, seq=seq, ack=ack, flags=flags, window=window,
                  options=ts_options(ts)) / Raw(payload))


# -- checksum: fold, finish, update (RFC 1624) ------------------------------------------
@FAST
@given(st.integers(0, 1 << 200))
def test_fold_and_finish_match_end_around_carry(v):
    assert checksum.fold(v) == ref_fold(v)
    assert checksum.finish(v) == ~ref_fold(v) & 0xFFFF


def test_fold_and_finish_zeros():
    assert (checksum.fold(0), checksum.finish(0)) == (0, 0xFFFF)  # +0: all zero
    for v in (0xFFFF, 2 * 0xFFFF, 0xFFFF << 64):  # -0: not all zero
        assert (checksum.fold(v), checksum.finish(v)) == (0xFFFF, 0)


@FAST
@given(st.integers(1, 0xFFFF), st.lists(u16, min_size=1, max_size=30), st.data())
def test_update_equals_recomputation(first, words, data):
    """A header whose first word is not zero (IPv4's version): changing any other word
    with ``update`` gives what summing it all again gives, the negative zero included."""
    words = [first, *words]
    i = data.draw(st.integers(1, len(words) - 1))
    new = data.draw(u16)
    before = checksum.checksum(struct.pack(f"!{len(words)}H", *words))
    assert before == ref_checksum(words)
    changed = words[:i] + [new] + words[i + 1:]
    assert checksum.update(before, words[i], new) == ref_checksum(changed)


def test_update_rfc1624_example():
    """RFC 1624 4: the other words sum to 0xCD7A, m = 0x5555 becomes 0x3285. The checksum
    goes from 0xDD2F to 0x0000; RFC 1141's HC + m + ~m' would write 0xFFFF."""
    assert ref_checksum([0xCD7A, 0x5555]) == 0xDD2F
    assert ref_checksum([0xCD7A, 0x3285]) == 0x0000
    assert checksum.update(0xDD2F, 0x5555, 0x3285) == 0x0000
    assert ref_fold(0xDD2F + 0x5555 + (~0x3285 & 0xFFFF)) == 0xFFFF  # RFC 1141's answer
    # and back, from the zero
    assert checksum.update(0x0000, 0x3285, 0x5555) == 0xDD2F
    # a non-canonical 0xffff in the field (a router using RFC 1141) is read as -0 too
    assert checksum.update(0xFFFF, 0x3285, 0x5555) == 0xDD2F
    assert checksum.update(0x1234, 0xABCD, 0xABCD) == 0x1234  # no change, no change


# -- IPv4: the fixed header, decrement_ttl, write_eth_headers ---------------------------
def _ip_with_checksum(csum_target: int, ttl: int) -> bytes:
    """An IPv4 header with TTL ``ttl`` whose identification makes its checksum
    ``csum_target`` (0 or 0xffff-free values): the edge a TTL decrement must get right."""
    hdr = bytearray(bytes(IP(src="10.1.2.3", dst="10.3.2.1", ttl=ttl, id=0, proto=17))[:20])
    hdr[10:12] = b"\0\0"
    s = ref_fold(sum(struct.unpack("!10H", hdr)))
    # the checksum is ~(s + id): choose id so that s + id folds to ~csum_target
    ident = ((~csum_target & 0xFFFF) - s) % 0xFFFF
    struct.pack_into("!H", hdr, 4, ident)
    struct.pack_into("!H", hdr, 10, checksum.checksum(hdr))
    return bytes(hdr)


@ORACLE
@given(st.integers(1, 255), u16, addr4, addr4, u8, st.booleans(), st.binary(max_size=30))
def test_decrement_ttl_against_scapy(ttl, ident, src, dst, tos, with_option, payload):
    options = [] if not with_option else b"\x94\x04\x00\x00"  # router alert
    pkt = IP(src=ntop(src), dst=ntop(dst), ttl=ttl, id=ident, tos=tos, options=options,
             proto=17) / Raw(payload)
    buf = bytearray(bytes(pkt))
    assert ipv4.decrement_ttl(buf) == ttl - 1
    want = IP(src=ntop(src), dst=ntop(dst), ttl=ttl - 1, id=ident, tos=tos, options=options,
              proto=17) / Raw(payload)
    assert bytes(buf) == bytes(want)  # scapy recomputes the checksum in full
    assert ipv4.parse(buf)[5] == ttl - 1
    # at an offset, behind an Ethernet header
    frame = bytearray(14) + bytes(pkt)
    ipv4.decrement_ttl(frame, 14)
    assert frame[14:] == bytes(want)


@pytest.mark.parametrize("ttl", [2, 64, 255])
def test_decrement_ttl_writes_zero_not_negative_zero(ttl):
    """After the decrement the right checksum is 0x0000 (the words sum to -0): RFC 1624
    writes that, as scapy and a full recomputation do; RFC 1141 would write 0xffff."""
    before = _ip_with_checksum(0xFEFF, ttl)  # + 0x0100 for the TTL: 0xFFFF, -0
    after = bytearray(before)
    ipv4.decrement_ttl(after)
    assert after[10:12] == b"\0\0"
    assert bytes(after) == scapy_rechecksummed(after)
    assert ipv4.checksum_ok(after)
    rfc1141 = ref_fold(0xFEFF + 0x0100)
    assert rfc1141 == 0xFFFF  # what the old increment wrote: valid, but not canonical
    # a header holding 0xffff for its zero still verifies, and updates from it are right
    odd = bytearray(after)
    odd[10:12] = b"\xff\xff"
    assert ipv4.checksum_ok(odd)
    ipv4.decrement_ttl(odd)
    assert bytes(odd) == scapy_rechecksummed(odd)


@ORACLE
@given(st.integers(0, 2), u16, u8, addr4, addr4, st.binary(max_size=40))
def test_ipv4_checksum_ok_against_scapy(flags, ident, ttl, src, dst, payload):
    raw = bytearray(bytes(ETHER / IP(src=ntop(src), dst=ntop(dst), flags=flags, id=ident,
                                       ttl=ttl, proto=6) / Raw(payload)))
    assert ipv4.checksum_ok(raw, 14)
    assert ipv4.checksum_ok(raw[14:])
    for bit in range(0, 160, 7):  # one flipped bit anywhere in the header is caught
        bad = bytearray(raw)
        bad[14 + bit // 8] ^= 1 << (bit % 8)
        assert not ipv4.checksum_ok(bad, 14)


@ORACLE
@given(st.booleans(), st.sampled_from([0, 0x4000]), u8, u8, addr4, addr4, st.data())
def test_write_eth_headers_against_scapy(v6, df, ttl, proto, src, dst, data):
    """The output path's Ethernet + IP headers for a batch, identifications wrapping at
    65536, byte for byte what scapy builds (with its checksums)."""
    lengths = data.draw(st.lists(st.integers(0, 100), min_size=1, max_size=5))
    if v6:
        src, dst = data.draw(addr6), data.draw(addr6)
        frames = [bytearray(54) + bytes([i]) * n for i, n in enumerate(lengths)]
        ipv6.write_eth_headers(frames, MAC_B, MAC_A, proto, ttl, src, dst)
        for i, f in enumerate(frames):
            want = Ether(dst=mac_to_str(MAC_B), src=mac_to_str(MAC_A)) / IPv6(
                src=ntop(src), dst=ntop(dst), nh=proto, hlim=ttl) / Raw(bytes([i]) * lengths[i])
            assert bytes(f) == bytes(want)
            assert ipv6.parse(memoryview(f)[14:])[2:] == (lengths[i], proto, ttl, src, dst)
        return
    ident = data.draw(st.sampled_from([0, 1, 0xFFFE, 0xFFFF, 12345]))
    frames = [bytearray(34) + bytes([i]) * n for i, n in enumerate(lengths)]
    ipv4.write_eth_headers(frames, MAC_B, MAC_A, ident, df, ttl, proto, src, dst,
                           ipv4.header_sum(df, ttl, proto, src, dst))
    for i, f in enumerate(frames):
        want = Ether(dst=mac_to_str(MAC_B), src=mac_to_str(MAC_A)) / IP(
            src=ntop(src), dst=ntop(dst), id=(ident + i) & 0xFFFF, flags=df >> 13, ttl=ttl,
            proto=proto) / Raw(bytes([i]) * lengths[i])
        assert bytes(f) == bytes(want)
        assert ipv4.parse(memoryview(f)[14:])[:3] == (0, 20 + lengths[i], (ident + i) & 0xFFFF)


@ORACLE
@given(u16, st.sampled_from([0, 1, 2, 3]), st.integers(0, 100), u8, addr4, addr4,
       st.binary(max_size=30))
def test_ipv4_fields_against_scapy(ident, flags, frag, proto, src, dst, payload):
    """What the direct input reads of an IPv4 header (``FIELDS``), and how it tells a
    fragment (``FRAGMENT_BITS``: MF or an offset; DF is not one)."""
    raw = bytes(ETHER / IP(src=ntop(src), dst=ntop(dst), id=ident, flags=flags, frag=frag,
                             proto=proto) / Raw(payload))
    vihl, total, frag_word, proto2, src2, dst2 = ipv4.FIELDS.unpack_from(raw, 14)
    assert (vihl, total, proto2, src2, dst2) == (ipv4.VIHL, 20 + len(payload), proto, src, dst)
    assert frag_word == (flags << 13) | frag
    assert bool(frag_word & ipv4.FRAGMENT_BITS) == bool(frag or flags & 1)
    with_options = bytes(IP(src=ntop(src), dst=ntop(dst), options=b"\x94\x04\x00\x00"))
    assert ipv4.FIELDS.unpack_from(with_options)[0] != ipv4.VIHL


def test_ipv4_multicast_mac_against_scapy():
    for addr in ("224.0.0.1", "224.0.0.251", "239.255.255.250", "238.129.2.3", "225.200.1.1"):
        packed = socket.inet_aton(addr)
        assert mac_to_str(ipv4.multicast_mac(packed)) == getmacbyip(addr)


# -- IPv6: FIELDS, parse_fragment, decrement_hop_limit ----------------------------------
@ORACLE
@given(addr6, addr6, u8, st.integers(0, 0xFFFFF), u8, st.integers(1, 255),
       st.binary(max_size=40))
def test_ipv6_fields_and_hop_limit_against_scapy(src, dst, tc, fl, nh, hlim, payload):
    raw = bytearray(bytes(ETHER / IPv6(src=ntop(src), dst=ntop(dst), tc=tc, fl=fl, nh=nh,
                                         hlim=hlim) / Raw(payload)))
    vtf, plen, nh2, src2, dst2 = ipv6.FIELDS.unpack_from(raw, 14)
    assert (vtf >> 28, (vtf >> 20) & 0xFF, vtf & 0xFFFFF) == (6, tc, fl)
    assert (plen, nh2, src2, dst2) == (len(payload), nh, src, dst)
    assert ipv6.decrement_hop_limit(raw, 14) == hlim - 1
    assert bytes(raw) == bytes(ETHER / IPv6(src=ntop(src), dst=ntop(dst), tc=tc, fl=fl,
                                              nh=nh, hlim=hlim - 1) / Raw(payload))


@ORACLE
@given(st.integers(0, 8191), st.booleans(), u32, u8, st.binary(max_size=24))
def test_ipv6_parse_fragment_against_scapy(offset, more, ident, nh, payload):
    raw = bytes(IPv6(src="fc00::1", dst="fc00::2") / IPv6ExtHdrFragment(
        nh=nh, offset=offset, m=int(more), id=ident) / Raw(payload))
    assert ipv6.parse_fragment(raw, 40) == (nh, offset * 8, more, ident)
    assert ipv6.parse_fragment(memoryview(raw)[40:]) == (nh, offset * 8, more, ident)
    buf = bytearray(8)
    ipv6.build_fragment(buf, nh, offset * 8, more, ident)
    assert bytes(buf) == raw[40:48]
    with pytest.raises(FrameError, match="truncated"):
        ipv6.parse_fragment(raw[:47], 40)


# -- Ethernet --------------------------------------------------------------------------
@ORACLE
@given(st.sampled_from([0x0800, 0x86DD, 0x0806, 0x88CC]), st.one_of(st.none(),
       st.integers(0, 4095)), st.binary(max_size=20))
def test_ethernet_parse_and_dst_type_against_scapy(etype, vlan, payload):
    if vlan is None:
        pkt = Ether(dst=mac_to_str(MAC_B), src=mac_to_str(MAC_A), type=etype) / Raw(payload)
    else:
        pkt = Ether(dst=mac_to_str(MAC_B), src=mac_to_str(MAC_A)) / Dot1Q(
            vlan=vlan, type=etype) / Raw(payload)
    raw = bytes(pkt)
    dst, src, etype2, vlan2, off = ethernet.parse(raw)
    assert (dst, src, etype2) == (MAC_B, MAC_A, etype)
    assert (vlan2, off) == ((-1, 14) if vlan is None else (vlan, 18))
    assert raw[off:] == payload
    assert ethernet.DST_TYPE.unpack_from(raw) == (
        MAC_B, etype if vlan is None else ethernet.ETH_P_8021Q)


def test_ethertype_bytes_against_scapy():
    for value, field in ((0x0800, ethernet.TYPE_IPV4), (0x86DD, ethernet.TYPE_IPV6),
                         (0x0806, ethernet.TYPE_ARP)):
        assert bytes(Ether(type=value))[12:14] == field == ethernet.TYPE.pack(value)


# -- TCP: parse_header, parse_quoted ----------------------------------------------------
@ORACLE
@given(st.booleans(), u32, u32, st.sampled_from(["S", "SA", "A", "PA", "FA", "R", "RA",
                                                 "FSRPAUEC"]), u16, timestamps, payloads)
def test_tcp_parse_header_against_scapy(v6, seq, ack, flags, window, ts, payload):
    raw = bytes(scapy_frame(v6, payload, seq=seq, ack=ack, flags=flags, ts=ts, window=window))
    th = 54 if v6 else 34
    src, dst = (A6, B6) if v6 else (A4, B4)
    seg = memoryview(raw)[th:]
    want = TCP(raw[th:])
    hl = 20 if ts is None else 32
    got = tcp.parse_header(seg, src, dst)
    assert got == (40000, 80, seq, ack, hl, int(want.flags), window)
    assert tcp.parse(seg, src, dst)[:7] == got  # the general parser is built on it
    assert bytes(seg[hl:]) == payload
    if ts is not None:  # what the stack reads of the options of an established segment
        assert tcp.TS_OPTION.unpack_from(seg, 20) == (tcp.NOP_NOP_TS, *ts)
        assert seg[20:24] == tcp.TS_HEAD
    # a wrong checksum, whatever the data; unless the caller vouches for it
    bad = bytearray(seg)
    bad[16] ^= 0x01
    with pytest.raises(FrameError, match="checksum"):
        tcp.parse_header(bad, src, dst)
    assert tcp.parse_header(bad, src, dst, verify=False) == got
    with pytest.raises(FrameError, match="checksum"):
        tcp.parse_header(seg, dst, src[:-1] + bytes([src[-1] ^ 1]))  # another pseudo-header


def test_tcp_parse_header_strictness():
    raw = bytes(scapy_frame(False, b"abc"))[34:]
    for n in range(20):
        with pytest.raises(FrameError, match="shorter"):
            tcp.parse_header(raw[:n], A4, B4)
    for doff, what in ((4, "below"), (15, "exceeds")):
        bad = bytearray(raw)
        bad[12] = (doff << 4) | (bad[12] & 0x0F)
        with pytest.raises(FrameError, match=what):
            tcp.parse_header(bad, A4, B4, verify=False)


@ORACLE
@given(u16, u16, u32, st.integers(8, 40))
def test_parse_quoted_against_scapy(sport, dport, seq, cut):
    """What the stack reads of the transport header an ICMP error quotes (8 bytes at
    least, RFC 792 and RFC 4443): TCP's ports and sequence number, UDP's ports, an echo
    request's type and identifier."""
    seg = bytes(TCP(sport=sport, dport=dport, seq=seq))[:cut]
    assert tcp.parse_quoted(seg) == (sport, dport, seq)
    dgram = bytes(UDP(sport=sport, dport=dport) / Raw(bytes(40)))[:cut]
    assert udp.parse_quoted(dgram) == (sport, dport)
    echo = bytes(ICMPv6EchoRequest(id=sport, seq=dport, data=bytes(40)))[:cut]
    kind, _, rest, _ = icmp6.parse(echo, A6, B6, verify=False)
    assert (kind, rest >> 16, rest & 0xFFFF) == (icmp6.ECHO_REQUEST, sport, dport)
    echo4 = bytes(ICMP(id=sport, seq=dport) / Raw(bytes(40)))[:cut]
    kind, _, rest, _ = icmp4.parse(echo4, verify=False)
    assert (kind, rest >> 16, rest & 0xFFFF) == (icmp4.ECHO_REQUEST, sport, dport)
    for short in (seg[:7], b""):
        with pytest.raises(FrameError, match="shorter"):
            tcp.parse_quoted(short)
        with pytest.raises(FrameError, match="shorter"):
            udp.parse_quoted(short)


# -- TCP output: HEADER/HEADER_TS, set_checksums, set_partial_checksums, tso_header -----
def stack_frame(v6: bool, seq: int, ack: int, flags: int, window: int,
                ts: tuple[int, int] | None, payload: bytes) -> bytearray:
    """A frame as ``TcpLayer._xmit_path`` writes one (headroom, TCP header, data), with
    its checksum field still zero."""
    th = 54 if v6 else 34
    hl = 20 if ts is None else 32
    frame = bytearray(th + hl + len(payload))
    if ts is None:
        tcp.HEADER.pack_into(frame, th, 40000, 80, seq, ack, tcp.HEADER_OFFSET | flags,
                             window, 0, 0)
    else:
        tcp.HEADER_TS.pack_into(frame, th, 40000, 80, seq, ack, tcp.HEADER_TS_OFFSET | flags,
                                window, 0, 0, tcp.NOP_NOP_TS, *ts)
    frame[th + hl:] = payload
    return frame


@ORACLE
@given(st.booleans(), st.lists(st.tuples(u32, timestamps, payloads), min_size=1, max_size=4),
       u32, u16, u16)
def test_output_path_frames_against_scapy(v6, segs, ack, window, ident):
    """The stack's whole output of established connections: TCP headers, then the batch's
    checksums (``set_checksums``), then the Ethernet and IP headers
    (``write_eth_headers``): every frame byte for byte what scapy builds."""
    src, dst = (A6, B6) if v6 else (A4, B4)
    th = 54 if v6 else 34
    frames = [stack_frame(v6, seq, ack, tcp.ACK | tcp.PSH, window, ts, payload)
              for seq, ts, payload in segs]
    payloads = [memoryview(payload) for _, _, payload in segs]  # as a send buffer's views
    tcp.set_checksums(frames, payloads, th,
                      checksum.pseudo_header(src, dst, tcp.PROTO_TCP, 0))
    if v6:
        ipv6.write_eth_headers(frames, MAC_B, MAC_A, 6, 64, src, dst)
    else:
        ipv4.write_eth_headers(frames, MAC_B, MAC_A, ident, 0x4000, 64, 6, src, dst,
                               ipv4.header_sum(0x4000, 64, 6, src, dst))
    for i, (frame, (seq, ts, payload)) in enumerate(zip(frames, segs, strict=True)):
        want = scapy_frame(v6, payload, seq=seq, ack=ack, flags="PA", ts=ts, window=window,
                           ident=(ident + i) & 0xFFFF)
        assert bytes(frame) == bytes(want)
        assert tcp.parse_header(memoryview(frame)[th:], src, dst)[2] == seq


@ORACLE
@given(st.booleans(), st.lists(st.tuples(u32, timestamps, payloads), min_size=1, max_size=3))
def test_partial_checksums_and_tso_header(v6, segs):
    """For an offload link: the pseudo-header's sum in the field, which the kernel (here
    ``vnet.complete_checksum``) finishes into scapy's checksum; the virtio-net header
    asks for segmentation only when the data is larger than the MSS."""
    src, dst = (A6, B6) if v6 else (A4, B4)
    th = 54 if v6 else 34
    frames = [stack_frame(v6, seq, 1, tcp.ACK, 100, ts, payload) for seq, ts, payload in segs]
    tcp.set_partial_checksums(frames, th, checksum.pseudo_header(src, dst, tcp.PROTO_TCP, 0))
    gso_type = vnet.GSO_TCPV6 if v6 else vnet.GSO_TCPV4
    for frame, (seq, ts, payload) in zip(frames, segs, strict=True):
        hl = 20 if ts is None else 32
        plen = len(frame) - th
        field = frame[th + 16:th + 18]
        assert int.from_bytes(field, "big") == checksum.pseudo_header(
            src, dst, tcp.PROTO_TCP, plen) % 0xFFFF
        for mss in (1, 100, 1448):
            hdr = vnet.unpack_header(vnet.tso_header(frame, th, gso_type, mss))
            if len(payload) > mss:
                assert hdr == (vnet.F_NEEDS_CSUM, gso_type, th + hl, mss, th, 16)
            else:
                assert hdr == (vnet.F_NEEDS_CSUM, vnet.GSO_NONE, th + hl, 0, th, 16)
        done = bytearray(frame)
        vnet.complete_checksum(done, th, 16)
        want = TCP(bytes(scapy_frame(v6, payload, seq=seq, ack=1, flags="A", ts=ts,
                                     window=100))[th:])
        assert done[th:] == bytes(want)


def test_set_checksums_of_zeros_odd_and_empty():
    """The data summed apart from the header: zeros (the integer 0), an odd length (the
    last byte padded), no data at all."""
    for payload in (b"", bytes(1), bytes(1447), bytes(1448), b"\xff" * 1447, b"\x01"):
        for v6 in (False, True):
            src, dst = (A6, B6) if v6 else (A4, B4)
            th = 54 if v6 else 34
            frame = stack_frame(v6, 7, 8, tcp.ACK, 9, (1, 2), payload)
            tcp.set_checksums([frame], [payload], th, checksum.pseudo_header(src, dst, 6, 0))
            assert frame[th + 16:th + 18] == bytes(scapy_frame(v6, payload, seq=7, ack=8,
                                                               ts=(1, 2), window=9))[th + 16:th + 18]
            assert checksum.verify(memoryview(frame)[th:],
                                   checksum.pseudo_header(src, dst, 6, len(frame) - th))


# -- receive coalescing: GRO4, verify_frames4, coalesce4 --------------------------------
def gro_run(sizes: list[int], seq: int, last_flags: str = "PA",
            ts: tuple[int, int] = (11, 22)) -> tuple[list[memoryview], bytes]:
    data = bytes((i * 7 + 3) & 0xFF for i in range(sum(sizes)))
    frames, off = [], 0
    for k, n in enumerate(sizes):
        flags = last_flags if k == len(sizes) - 1 else "A"
        raw = bytes(scapy_frame(False, data[off:off + n], seq=(seq + off) & 0xFFFFFFFF,
                                flags=flags, ts=ts, ident=k))
        frames.append(memoryview(raw))
        off += n
    return frames, data


@ORACLE
@given(st.lists(st.integers(1, 200), min_size=1, max_size=5), u32,
       st.sampled_from(["A", "PA"]))
def test_gro4_against_scapy(sizes, seq, last_flags):
    frames, data = gro_run(sizes, seq, last_flags)
    off = 0
    for f, n in zip(frames, sizes, strict=True):
        (dmac, etype, vihl, total, frag, proto, addrs, ports, seq2, ack, offfl, window,
         opts) = tcp.GRO4.unpack_from(f)
        assert (dmac, etype, vihl, total, frag & ipv4.FRAGMENT_BITS, proto) == (
            MAC_B, ethernet.ETH_P_IPV4, ipv4.VIHL, 20 + 32 + n, 0, 6)
        assert (addrs, ports, seq2, ack, window) == (A4 + B4, struct.pack("!HH", 40000, 80),
                                                    (seq + off) & 0xFFFFFFFF, 77, 512)
        assert offfl & tcp.GRO4_MERGEABLE_MASK == tcp.GRO4_MERGEABLE
        assert opts[:4] == tcp.TS_HEAD and len(f) - tcp.GRO4_HEADERS_LEN == n
        off += n
    assert tcp.verify_frames4(frames, A4, B4)
    merged = tcp.coalesce4(frames)
    want = bytearray(bytes(TCP(sport=40000, dport=80, seq=seq, ack=77, flags=last_flags,
                               window=512, options=ts_options((11, 22))) / Raw(data)))
    assert merged[:16] + merged[18:] == want[:16] + want[18:]  # all but the checksum
    assert merged[16:18] == frames[0][50:52]  # the first frame's, which was checked
    assert tcp.parse_header(merged, A4, B4, verify=False) == (
        40000, 80, seq, 77, 32, int(want[13]), 512)


def test_gro4_mergeable_flags():
    """Only ACK with or without PSH, and a 32-byte header, merge."""
    for flags, ok in (("A", True), ("PA", True), ("FA", False), ("SA", False), ("RA", False),
                      ("UA", False), ("EA", False), ("CA", False), ("", False)):
        f = bytes(scapy_frame(False, b"x", flags=flags))
        assert (tcp.GRO4.unpack_from(f)[10] & tcp.GRO4_MERGEABLE_MASK
                == tcp.GRO4_MERGEABLE) is ok, flags
    no_ts = bytes(scapy_frame(False, b"x" * 20, ts=None))
    assert tcp.GRO4.unpack_from(no_ts)[10] & tcp.GRO4_MERGEABLE_MASK != tcp.GRO4_MERGEABLE


def test_verify_frames4_catches_each_bad_frame():
    frames, _ = gro_run([100, 101, 1, 50], 4000)
    assert tcp.verify_frames4(frames, A4, B4)
    assert not tcp.verify_frames4(frames, A4, A4)  # another pseudo-header
    for k in range(len(frames)):
        for at in (14 + 8, 14 + 10, 34 + 4, 34 + 16, len(frames[k]) - 1):  # IP, TCP, data
            bad = [bytearray(f) for f in frames]
            bad[k][at] ^= 0x20
            assert not tcp.verify_frames4([memoryview(b) for b in bad], A4, B4), (k, at)
