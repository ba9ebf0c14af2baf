"""What the stack accepts from the wire (issue 14): forged ICMP "too big" messages, fragment
floods, probes of listening ports, unsolicited ARP, IP identification. Two stacks joined by
in-memory links on fake time; scapy crafts the hostile frames as an independent oracle."""

from __future__ import annotations

import ipaddress
import os
import random

import pytest

pytest.importorskip("scapy")
from scapy.layers.inet import ICMP, IP, TCP, UDP  # noqa: E402
from scapy.layers.inet6 import ICMPv6PacketTooBig, IPv6  # noqa: E402
from scapy.layers.l2 import Ether  # noqa: E402

from threadnet.link import Link  # noqa: E402
from threadnet.stack import stack as stack_mod  # noqa: E402
from threadnet.stack.stack import Stack  # noqa: E402
from threadnet.wire import ipv4  # noqa: E402

IP_A, IP_B = "10.9.0.1", "10.9.0.2"
IP6_A, IP6_B = "fc00:9::1", "fc00:9::2"
B4 = ipaddress.ip_address(IP_B).packed
B6 = ipaddress.ip_address(IP6_B).packed


class ListLink(Link):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []

    def fileno(self) -> int:
        return -1

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self.sent.append(bytes(frame))

    def _recv(self) -> bytes:
        raise BlockingIOError


class Pair:
    """Stacks A and B on one in-memory wire, fake time."""

    def __init__(self) -> None:
        self.la, self.lb = ListLink(), ListLink()
        self.a = Stack(link=self.la, driver=False)
        self.b = Stack(link=self.lb, driver=False)
        self.a.configure(f"eth,ip={IP_A}/24,ip={IP6_A}/64")
        self.b.configure(f"eth,ip={IP_B}/24,ip={IP6_B}/64")
        self.now = 100.0
        self.a.clock = self.b.clock = lambda: self.now
        self.tick(1.5)  # duplicate address detection ends
        self.ia, self.ib = self.a.interfaces[2], self.b.interfaces[2]

    def tick(self, dt: float) -> None:
        self.now += dt
        for s in (self.a, self.b):
            s.on_timer(self.now)

    def move(self, drop=None) -> list[bytes]:
        """Deliver both ways until quiet; returns A's frames. ``drop(frame)``: A's frames
        for which it is true are lost on the way."""
        seen = []
        while self.la.sent or self.lb.sent:
            frames, self.la.sent = self.la.sent, []
            seen += frames
            for f in frames:
                if drop is None or not drop(f):
                    self.b.input(self.ib, f, self.now)
            frames, self.lb.sent = self.lb.sent, []
            for f in frames:
                self.a.input(self.ia, f, self.now)
        return seen

    def to_a(self, pkt) -> None:
        """Give A a frame from B's MAC (scapy packet above Ethernet)."""
        frame = bytes(Ether(dst=self.ia.mac, src=self.ib.mac) / pkt)
        self.a.input(self.ia, frame, self.now)

    def connect(self, family: int = 4):
        self.b.tcp.listen(family, b"", 5000, 8)
        ep = self.a.tcp.connect(family, None, 0, B4 if family == 4 else B6, 5000, self.now)
        self.move()
        assert ep.conn.established
        [server] = list(self.b.tcp.conns.values())
        return ep, server

    def transfer(self, ep, server, data: bytes, drop=None, rounds: int = 2000,
                 queued: bytes = b"") -> list[bytes]:
        """Send ``data`` from ``ep``; ``server`` receives ``queued`` (sent before) and
        it."""
        got = bytearray()
        data_in = data
        data = queued + data
        sent = 0
        seen = []
        for _ in range(rounds):
            if len(got) == len(data):
                break
            sent += ep.send(data_in[sent:sent + 65536])
            self.tick(0.05)
            seen += self.move(drop)
            while server.conn.recv_queued:
                got += server.recv(1 << 20)
        assert bytes(got) == data
        return seen


def _tcp_frames(frames: list[bytes], family: int = 4) -> list[bytes]:
    if family == 4:
        return [f for f in frames if f[12:14] == b"\x08\x00" and f[23] == 6]
    return [f for f in frames if f[12:14] == b"\x86\xdd"]


# -- S6: path MTU from ICMP ---------------------------------------------------------------
def _in_flight(p: Pair, ep, family: int = 4) -> tuple[bytes, bytes]:
    """Queue data at A: (the first data frame A sent, not delivered yet, the data)."""
    data = os.urandom(20_000)
    assert ep.send(data) == len(data)
    etype = b"\x08\x00" if family == 4 else b"\x86\xdd"
    frames = [f for f in p.la.sent if f[12:14] == etype and len(f) > 500]
    assert frames
    return frames[0], data


def test_forged_frag_needed_is_ignored_and_leaves_no_entries() -> None:
    """Fragmentation needed with a tiny MTU quoting segments no connection sent (random
    destinations, a wrong sequence number, wrong ports, UDP) changes nothing: no path
    MTU entry, and TCP to B still delivers at full size."""
    p = Pair()
    ep, server = p.connect()
    rng = random.Random(14)
    sport = ep.local[1]
    for i in range(3000):
        dst = ipaddress.ip_address(rng.getrandbits(32)).compressed
        quoted = IP(src=IP_A, dst=dst, flags="DF") / TCP(sport=sport, dport=5000,
                                                         seq=rng.getrandbits(32))
        p.to_a(IP(src="192.0.2.1", dst=IP_A) / ICMP(type=3, code=4, nexthopmtu=68 + i % 333)
               / bytes(quoted)[:28])
    una = ep.conn.snd_una & 0xFFFFFFFF
    # the right 4-tuple, but nothing in flight: SND.UNA..SND.NXT is empty
    for quoted in (IP(src=IP_A, dst=IP_B) / TCP(sport=sport, dport=5000, seq=una),
                   IP(src=IP_A, dst=IP_B) / TCP(sport=sport, dport=5001, seq=una),
                   IP(src=IP_A, dst=IP_B) / UDP(sport=sport, dport=5000)):
        p.to_a(IP(src=IP_B, dst=IP_A) / ICMP(type=3, code=4, nexthopmtu=300)
               / bytes(quoted)[:28])
    assert len(p.a.pmtu) == 0
    assert p.a.stats["pmtu_ignored"] == 3003
    seen = _tcp_frames(p.transfer(ep, server, os.urandom(100_000)))
    assert max(len(f) for f in seen) == 14 + 1500


def test_frag_needed_for_a_segment_in_flight_is_clamped_and_tcp_still_delivers() -> None:
    """A genuine message (the connection's 4-tuple, a sequence number in flight) with MTU
    300 sets the path MTU to 552, locked as Linux locks it: the segments shrink to fit 552
    bytes and go without DF; the lost ones go again and everything arrives."""
    p = Pair()
    ep, server = p.connect()
    frame, queued = _in_flight(p, ep)
    p.la.sent.clear()  # lost at the router
    p.to_a(IP(src="192.0.2.1", dst=IP_A) / ICMP(type=3, code=4, nexthopmtu=300)
           / bytes(IP(frame[14:]))[:28])
    mtu, expires, locked = p.a.pmtu[B4]
    assert (mtu, expires, locked) == (552, pytest.approx(p.now + 600), True)
    # the router drops what is larger than 552 bytes
    seen = _tcp_frames(p.transfer(ep, server, os.urandom(50_000), queued=queued,
                                  drop=lambda f: len(f) - 14 > 552))
    assert seen and all(len(f) - 14 <= 552 for f in seen)
    assert all(not ipv4.parse(memoryview(f)[14:])[3] & ipv4.FLAG_DF for f in seen)
    # a larger MTU later never raises it again; a smaller one is clamped to the same 552
    frame, _ = _in_flight(p, ep)
    p.to_a(IP(src=IP_B, dst=IP_A) / ICMP(type=3, code=4, nexthopmtu=1400)
           / bytes(IP(frame[14:]))[:28])
    assert p.a.pmtu[B4][0] == 552


def test_frag_needed_within_limits_shrinks_segments_without_losing_df() -> None:
    """MTU 1000 from a router: taken as it is, DF stays, segments fit."""
    p = Pair()
    ep, server = p.connect()
    frame, queued = _in_flight(p, ep)
    p.la.sent.clear()
    p.to_a(IP(src="192.0.2.1", dst=IP_A) / ICMP(type=3, code=4, nexthopmtu=1000)
           / bytes(IP(frame[14:]))[:28])
    assert p.a.pmtu[B4][0::2] == (1000, False)
    seen = _tcp_frames(p.transfer(ep, server, os.urandom(50_000), queued=queued,
                                  drop=lambda f: len(f) - 14 > 1000))
    assert all(len(f) - 14 <= 1000 for f in seen)
    assert all(ipv4.parse(memoryview(f)[14:])[3] & ipv4.FLAG_DF for f in seen)


def test_packet_too_big_is_validated_and_clamped_to_1280() -> None:
    """ICMPv6: a forged message (unknown port) is ignored; one about a segment in flight
    with MTU 600 sets 1280 (RFC 8201: never below the IPv6 minimum)."""
    p = Pair()
    ep, server = p.connect(6)
    frame, queued = _in_flight(p, ep, 6)
    p.la.sent.clear()
    quoted = IPv6(frame[14:])
    forged = IPv6(src=IP6_A, dst=IP6_B) / UDP(sport=4444, dport=53)
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=600) / bytes(forged))
    assert len(p.a.pmtu) == 0
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=600) / bytes(quoted)[:1000])
    assert p.a.pmtu[B6][0] == 1280
    seen = _tcp_frames(p.transfer(ep, server, os.urandom(50_000), queued=queued,
                                  drop=lambda f: len(f) - 14 > 1280), 6)
    assert all(len(f) - 14 <= 1280 for f in seen)
    # UDP: accepted for a port that is bound
    p.a.udp_bind(4444, lambda *a: None)
    p.a.route_add("fc00:77::/64", via=IP6_B)
    forged = IPv6(src=IP6_A, dst="fc00:77::1") / UDP(sport=4444, dport=53)
    p.to_a(IPv6(src=IP6_B, dst=IP6_A) / ICMPv6PacketTooBig(mtu=1300) / bytes(forged))
    assert p.a.pmtu[ipaddress.ip_address("fc00:77::1").packed][0] == 1300


def test_path_mtu_table_is_bounded_and_expires() -> None:
    """At most PMTU_MAX_ENTRIES entries (the oldest go), and on_timer forgets expired
    ones on the time it is given."""
    p = Pair()
    a = p.a
    n = stack_mod.PMTU_MAX_ENTRIES + 500
    for i in range(n):
        a._pmtu_learn(i.to_bytes(4, "big"), 1000, False, p.now + i * 0.01)
    assert len(a.pmtu) == stack_mod.PMTU_MAX_ENTRIES
    assert (0).to_bytes(4, "big") not in a.pmtu and (n - 1).to_bytes(4, "big") in a.pmtu
    first = next(iter(a.pmtu.values()))[1]
    assert a.next_deadline() <= first
    a.on_timer(p.now + 599.0 + n * 0.01 - 1.0)
    assert 0 < len(a.pmtu) < stack_mod.PMTU_MAX_ENTRIES
    a.on_timer(p.now + 601.0 + n * 0.01)
    assert len(a.pmtu) == 0


# -- R4: fragment reassembly ---------------------------------------------------------------
def test_tiny_fragment_flood_keeps_pieces_and_real_memory_bounded() -> None:
    """8-byte fragments, many datagrams: no datagram ever holds more than 64 pieces (so
    adding one is bounded work: no quadratic scans), a datagram that would need more is
    dropped whole, and the budget counts what the pieces really cost (tracemalloc sees no
    more than the reassembler charges, so its bound bounds the process's memory)."""
    import tracemalloc

    from threadnet.stack.reassembly import MAX_PIECES, Reassembler

    r = Reassembler(max_bytes=1 << 20)
    rnd = random.Random(4)
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        most = 0
        peak_ratio = 0.0
        for i in range(60_000):
            key = (b"\x0a\x00\x00\x02", b"\x0a\x00\x00\x01", 17, i % 3000)
            r.add(key, rnd.randrange(0, 65000, 8), True, b"12345678", 0.0)
            if i % 500 == 499:
                most = max(most, max(len(d.pieces) for d in r._pending.values()))
                held = tracemalloc.get_traced_memory()[0] - base
                peak_ratio = max(peak_ratio, held / r.buffered)
                assert r.buffered <= r.max_bytes
    finally:
        tracemalloc.stop()
    assert most <= MAX_PIECES
    assert r.buffered <= r.max_bytes
    assert r.evicted > 0
    # what the process holds for the fragments is within what was charged for them
    assert peak_ratio < 1.25, peak_ratio
    # one datagram in 8-byte pieces: the 65th piece drops it whole, and what comes next
    # starts over (never more than 64 pieces: linear work for any number of fragments)
    r = Reassembler()
    for off in range(0, 8 * 1000, 8):
        r.add(("k",), off, True, b"x" * 8, 0.0)
        assert len(r) <= 1 and all(len(d.pieces) <= MAX_PIECES for d in r._pending.values())
    assert r.dropped_pieces == 1000 // (MAX_PIECES + 1)


def test_fragment_flood_through_the_stack_leaves_real_datagrams_working() -> None:
    """A flood of tiny IPv4 fragments (scapy) stays within the bound; a UDP datagram in
    three real fragments still arrives."""
    from scapy.layers.inet import fragment

    p = Pair()
    got = []
    p.b.udp_bind(7000, lambda data, src, dst: got.append(data))
    rnd = random.Random(5)
    for i in range(5000):
        pkt = IP(src=IP_A, dst=IP_B, id=i % 20, proto=17, flags="MF",
                 frag=rnd.randrange(1, 8000)) / bytes(8)
        p.b.input(p.ib, bytes(Ether(dst=p.ib.mac, src=p.ia.mac) / pkt), p.now)
    r = p.b.reasm4
    assert r.buffered <= r.max_bytes
    assert all(len(d.pieces) <= 64 for d in r._pending.values())
    data = os.urandom(3000)
    for frag in fragment(IP(src=IP_A, dst=IP_B, id=9999) / UDP(sport=1, dport=7000) / data,
                         fragsize=1200):
        p.b.input(p.ib, bytes(Ether(dst=p.ib.mac, src=p.ia.mac) / frag), p.now)
    assert got == [data]
