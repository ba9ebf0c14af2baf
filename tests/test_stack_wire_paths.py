"""The stack's slow paths that read and write headers with wire/ helpers (issue 9, "wire/
is what runs"): forwarding (``ipv4.decrement_ttl``, ``ipv6.decrement_hop_limit``,
fragmentation), Ethernet input (``ethernet.parse``: 802.1Q frames are not ours), and
ICMPv6 "packet too big" about an echo request or a source fragment
(``icmp6.parse``, ``ipv6.parse_fragment``, ``udp.parse_quoted``). scapy builds what goes
in and checks what comes out. Stacks on in-memory links and fake time."""

from __future__ import annotations

import ipaddress

import pytest
from scapy.all import (
    ICMP,
    IP,
    UDP,
    Dot1Q,
    Ether,
    ICMPv6EchoRequest,
    ICMPv6PacketTooBig,
    IPv6,
    IPv6ExtHdrFragment,
    Raw,
)

from test_stack_fastpath import ListLink
from test_stack_wire_security import IP6_A, IP6_B, IP_A, IP_B, Pair
from threadnet import Stack
from threadnet.wire.ethernet import mac_to_str

HOST_MAC = "02:00:00:00:00:01"
FAR_MAC = "02:00:00:00:00:05"


def _router(mtu_out: int = 1500):
    """R forwards between eth0 (10.9.0.0/24, fc00:9::/64, a host at .1 / ::1) and eth1
    (10.8.0.0/24, fc00:8::/64, a host at .5 / ::5, MTU ``mtu_out``), both neighbors
    known."""
    l1, l2 = ListLink(), ListLink()
    r = Stack(link=l1, runner=False, forwarding=True, clock=lambda: 0.0)
    r.add_interface(l2)
    for name, v4, v6 in (("eth0", "10.9.0.254/24", "fc00:9::fe/64"),
                         ("eth1", "10.8.0.254/24", "fc00:8::fe/64")):
        r.link_up(name, 0.0)
        r.addr_add(name, v4, 0.0)
        r.addr_add(name, v6, 0.0)
    r.on_timer(2.0)  # duplicate address detection ends
    in_, out = r.interfaces[2], r.interfaces[3]
    out.mtu = mtu_out
    in_.arp.add_static(ipaddress.ip_address("10.9.0.1").packed, bytes.fromhex("020000000001"))
    out.arp.add_static(ipaddress.ip_address("10.8.0.5").packed, bytes.fromhex("020000000005"))
    in_.nd.add_static(ipaddress.ip_address("fc00:9::1").packed, bytes.fromhex("020000000001"))
    out.nd.add_static(ipaddress.ip_address("fc00:8::5").packed, bytes.fromhex("020000000005"))
    l1.sent.clear()
    l2.sent.clear()
    return r, in_, l1, l2


def _rechecksummed(pkt: IP) -> bytes:
    pkt = pkt.copy()
    del pkt.chksum
    return bytes(pkt)


@pytest.mark.parametrize("ttl", [2, 9, 64, 255])
def test_forwarded_ipv4_has_its_ttl_and_checksum_as_scapy_writes_them(ttl: int) -> None:
    r, in_, l1, l2 = _router()
    body = UDP(sport=1, dport=2) / Raw(b"through")
    # an identification that makes the forwarded header's checksum 0 (its words then
    # sum to -0): written as 0, as a full recomputation does, never as 0xffff
    zero_id = IP(bytes(IP(src="10.9.0.1", dst="10.8.0.5", ttl=ttl - 1, id=0) / body)).chksum
    for ident in (0, 1, 0xBEEF, zero_id):
        pkt = IP(src="10.9.0.1", dst="10.8.0.5", ttl=ttl, id=ident) / body
        r.input(in_, bytes(Ether(dst=mac_to_str(in_.mac), src=HOST_MAC) / pkt), 1.0)
        [out] = l2.sent
        l2.sent.clear()
        assert out[:6] == bytes.fromhex("020000000005")
        want = IP(src="10.9.0.1", dst="10.8.0.5", ttl=ttl - 1, id=ident) / body
        assert out[14:] == _rechecksummed(want)
        if ident == zero_id:
            assert out[24:26] == b"\0\0"
    assert r.stats["ip4_forwarded"] == 4


def test_forwarded_ipv4_is_fragmented_or_refused_by_df() -> None:
    r, in_, l1, l2 = _router(mtu_out=600)
    data = bytes(range(256)) * 5
    # without DF: fragments that scapy reads back into the datagram
    pkt = IP(src="10.9.0.1", dst="10.8.0.5", ttl=30, id=777) / UDP(sport=1, dport=2) / data
    r.input(in_, bytes(Ether(dst=mac_to_str(in_.mac), src=HOST_MAC) / pkt), 1.0)
    assert len(l2.sent) == 3 and r.stats["ip4_forward_fragmented"] == 1
    whole = b""
    for f in l2.sent:
        frag = IP(f[14:])
        assert len(f) - 14 <= 600 and frag.ttl == 29 and frag.id == 777
        assert f[14:34] == _rechecksummed(frag)[:20]
        assert frag.frag * 8 == len(whole)
        whole += bytes(frag.payload)
    assert whole == bytes(UDP(bytes(pkt[UDP])))
    # with DF: fragmentation needed, with the next hop's MTU (RFC 1191), to the sender
    l2.sent.clear()
    pkt = IP(src="10.9.0.1", dst="10.8.0.5", flags="DF") / UDP(sport=1, dport=2) / data
    r.input(in_, bytes(Ether(dst=mac_to_str(in_.mac), src=HOST_MAC) / pkt), 1.0)
    assert not l2.sent
    [err] = l1.sent
    icmp = Ether(err)[ICMP]
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, 600)
    # TTL 1: time exceeded
    l1.sent.clear()
    pkt = IP(src="10.9.0.1", dst="10.8.0.5", ttl=1) / UDP(sport=1, dport=2) / b"x"
    r.input(in_, bytes(Ether(dst=mac_to_str(in_.mac), src=HOST_MAC) / pkt), 1.0)
    assert not l2.sent
    [err] = l1.sent
    assert (Ether(err)[ICMP].type, Ether(err)[ICMP].code) == (11, 0)


def test_forwarded_ipv6_has_its_hop_limit_minus_one() -> None:
    r, in_, l1, l2 = _router()
    pkt = IPv6(src="fc00:9::1", dst="fc00:8::5", hlim=17) / UDP(sport=1, dport=2) / b"six"
    r.input(in_, bytes(Ether(dst=mac_to_str(in_.mac), src=HOST_MAC) / pkt), 1.0)
    [out] = l2.sent
    want = IPv6(src="fc00:9::1", dst="fc00:8::5", hlim=16) / UDP(sport=1, dport=2) / b"six"
    assert out[:6] == bytes.fromhex("020000000005") and out[14:] == bytes(want)
    assert r.stats["ip6_forwarded"] == 1


def test_tagged_frames_are_not_for_the_stack() -> None:
    """An interface is on one untagged LAN: an 802.1Q frame, even one to our MAC with
    an echo request in it, gets no answer (as before ``ethernet.parse`` read them)."""
    p = Pair()
    ping = IP(src=IP_B, dst=IP_A) / ICMP(id=5, seq=1) / b"hello"
    p.la.sent.clear()
    p.a.input(p.ia, bytes(Ether(dst=mac_to_str(p.ia.mac), src=mac_to_str(p.ib.mac))
                          / Dot1Q(vlan=0) / ping), p.now)
    p.a.input(p.ia, bytes(Ether(dst=mac_to_str(p.ia.mac), src=mac_to_str(p.ib.mac))
                          / Dot1Q(vlan=7) / ping), p.now)
    assert p.la.sent == []
    p.to_a(ping)  # untagged: answered (once B answers A's ARP request)
    replies = [f for f in p.move() if ICMP in Ether(f)]
    assert [Ether(f)[ICMP].type for f in replies] == [0]


def test_packet_too_big_about_an_echo_request_of_a_ping_in_progress() -> None:
    """ICMPv6 "packet too big" quoting one of our echo requests is believed only while
    that ping waits for its reply (RFC 5927 4): its identifier is read with
    ``icmp6.parse`` from the quote."""
    p = Pair()
    b6 = ipaddress.ip_address(IP6_B).packed
    p.a.start_ping(IP6_B, count=1, timeout=5.0, size=1400, now=p.now, ident=0x4242)

    def is_echo(f: bytes) -> bool:
        return ICMPv6EchoRequest in Ether(f)

    [req] = [f for f in p.move(drop=is_echo) if is_echo(f)]  # lost on the way: no reply
    quoted = bytes(IPv6(req[14:]))[:1000]
    assert IPv6(quoted)[ICMPv6EchoRequest].id == 0x4242
    forged = bytes(IPv6(src=IP6_A, dst=IP6_B) / ICMPv6EchoRequest(id=0x4343, seq=1) / bytes(8))
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=1300) / forged)
    assert b6 not in p.a.pmtu and p.a.stats["pmtu_ignored"] == 1
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=1300) / quoted)
    assert p.a.pmtu[b6][0] == 1300


def test_packet_too_big_about_a_source_fragment() -> None:
    """A quoted packet with a Fragment header (one of our source fragments): the first
    fragment's transport header is read (``ipv6.parse_fragment``, then
    ``udp.parse_quoted``); a later fragment has none, and is ignored."""
    p = Pair()
    p.a.udp_bind(4444, lambda *a: None)
    far = "fc00:77::1"
    p.a.route_add("fc00:77::/64", via=IP6_B)
    far_packed = ipaddress.ip_address(far).packed

    def quote(offset: int) -> bytes:
        return bytes(IPv6(src=IP6_A, dst=far) / IPv6ExtHdrFragment(
            nh=17, offset=offset, m=1, id=9) / UDP(sport=4444, dport=53) / bytes(32))

    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=1300) / quote(100))
    assert far_packed not in p.a.pmtu
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=1300) / quote(0))
    assert p.a.pmtu[far_packed][0] == 1300
    # a quote cut inside the Fragment header: nothing to go on
    cut = quote(0)[:44]
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=1290) / cut)
    assert p.a.pmtu[far_packed][0] == 1300


def test_unreachable_own_packets_reach_their_owner() -> None:
    """Address resolution fails for a next hop: A's own UDP datagram (read back with
    ``ipv4.parse`` and ``udp.parse_quoted``) tells its port's owner EHOSTUNREACH."""
    p = Pair()
    errors: list[tuple] = []
    p.a.udp_bind(4444, lambda *a: None, on_error=lambda *e: errors.append(e))
    p.a.udp_send(b"x", ("10.9.0.77", 53), 4444, now=p.now)
    for _ in range(10):
        p.tick(1.0)
    assert errors == [(113, ipaddress.ip_address("10.9.0.77").packed, 53)]
    assert p.a.stats["arp_failed"] >= 1
