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

from threadnet import Stack  # noqa: E402
from threadnet.link import Link  # noqa: E402
from threadnet.stack import stack as stack_mod  # noqa: E402
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
        self.now = 100.0
        self.a = Stack(link=self.la, runner=False, clock=lambda: self.now)
        self.b = Stack(link=self.lb, runner=False, clock=lambda: self.now)
        self.a.configure(f"eth,ip={IP_A}/24,ip={IP6_A}/64")
        self.b.configure(f"eth,ip={IP_B}/24,ip={IP6_B}/64")
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


# -- R6: listening ports, SYN+FIN, SYN-SENT, IPv6 first fragments, ARP, IP IDs -----------
def _replies(p: Pair) -> list:
    out = [Ether(f) for f in p.la.sent]
    p.la.sent.clear()
    return out


@pytest.mark.parametrize("flags", ["F", "", "FPU", "SF", "SFP"])
def test_listening_port_drops_probes_without_syn_ack_or_rst(flags) -> None:
    """RFC 9293 3.10.7.2: in LISTEN, FIN, NULL and XMAS segments (and SYN+FIN, as Linux)
    get no answer and open nothing; a closed port still resets them (3.10.7.1)."""
    p = Pair()
    p.ia.arp.add_static(B4, p.ib.mac)
    p.a.tcp.listen(4, b"", 80, 8)
    for dport in (80, 81):
        p.to_a(IP(src=IP_B, dst=IP_A) / TCP(sport=4000, dport=dport, flags=flags, seq=1000))
    got = [f for f in _replies(p) if f.haslayer(TCP)]
    assert [f[TCP].dport == 4000 and f[TCP].sport for f in got] == [81]
    assert got[0][TCP].flags & 0x04  # RST from the closed port
    assert not p.a.tcp.conns


def test_listening_port_still_answers_syn_and_resets_ack() -> None:
    p = Pair()
    p.ia.arp.add_static(B4, p.ib.mac)
    p.a.tcp.listen(4, b"", 80, 8)
    p.to_a(IP(src=IP_B, dst=IP_A) / TCP(sport=4000, dport=80, flags="A", seq=1, ack=77))
    p.to_a(IP(src=IP_B, dst=IP_A) / TCP(sport=4001, dport=80, flags="S", seq=1000))
    got = [f[TCP] for f in _replies(p) if f.haslayer(TCP)]
    assert [(t.dport, str(t.flags)) for t in got] == [(4000, "R"), (4001, "SA")]
    assert got[0].seq == 77


def test_closing_or_shutting_a_syn_sent_connection_deletes_it_at_once() -> None:
    """RFC 9293 3.10.4: CLOSE in SYN-SENT deletes the TCB: no more SYNs, no entry (the
    peer never answers here). shutdown_write is the same (Linux's tcp_shutdown)."""
    for how in ("close", "shutdown_write"):
        p = Pair()
        ep = p.a.tcp.connect(4, None, 0, ipaddress.ip_address("10.9.0.99").packed, 80, p.now)
        p.tick(1.5)
        assert ep.conn.state == "SYN-SENT"
        getattr(ep, how)()
        assert ep.conn.closed and not p.a.tcp.conns
        p.la.sent.clear()
        for _ in range(10):
            p.tick(20.0)
        assert not [f for f in p.la.sent if Ether(f).haslayer(TCP)]


def test_ipv6_first_fragment_without_the_upper_layer_header_is_dropped() -> None:
    """RFC 7112: a first fragment that ends inside the header chain (here a Destination
    Options header and then only 8 bytes of TCP) is dropped with a parameter problem
    code 3, and the datagram never completes; a proper first fragment still works."""
    from scapy.layers.inet6 import ICMPv6ParamProblem, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment

    p = Pair()
    p.ia.nd.add_static(B6, p.ib.mac)
    p.a.tcp.listen(6, b"", 80, 8)

    def chain(sport: int, pad: int) -> bytes:
        """Destination Options (8 bytes), then a SYN (checksummed by scapy for the
        whole datagram), then ``pad`` bytes: what the fragments carry."""
        whole = IPv6(bytes(IPv6(src=IP6_B, dst=IP6_A) / IPv6ExtHdrDestOpt(options=[])
                           / TCP(sport=sport, dport=80, flags="S", seq=5) / bytes(pad)))
        return bytes(whole[IPv6ExtHdrDestOpt])

    def frag(ident: int, offset: int, more: int, piece: bytes):
        return (IPv6(src=IP6_B, dst=IP6_A)
                / IPv6ExtHdrFragment(nh=60, offset=offset // 8, m=more, id=ident) / piece)

    data = chain(4000, 0)  # the first fragment ends 8 bytes into the TCP header
    first, rest = frag(7, 0, 1, data[:16]), frag(7, 16, 0, data[16:])
    p.to_a(first)
    p.to_a(rest)
    got = _replies(p)
    pp = [f for f in got if f.haslayer(ICMPv6ParamProblem)]
    assert len(pp) == 1 and pp[0][ICMPv6ParamProblem].code == 3
    assert not [f for f in got if f.haslayer(TCP)] and not p.a.tcp.conns
    assert p.a.stats["ip6_incomplete_chain"] == 1
    # the same datagram cut after the TCP header: reassembled, answered with a SYN-ACK
    data = chain(4001, 8)
    p.to_a(frag(8, 0, 1, data[:32]))
    p.to_a(frag(8, 32, 0, data[32:]))
    tcps = [f[TCP] for f in _replies(p) if f.haslayer(TCP)]
    assert [(t.dport, str(t.flags)) for t in tcps] == [(4001, "SA")]


def test_unsolicited_arp_reply_neither_creates_nor_confirms_entries() -> None:
    """As Linux with arp_accept=0: an ARP reply nobody asked for creates no entry; for
    an existing entry it may change the MAC but leaves it STALE (not REACHABLE), so the
    direct TCP path does not trust it until a probe confirms it. A reply to our own
    request makes the entry REACHABLE."""
    from scapy.layers.l2 import ARP

    from threadnet.stack.neighbor import REACHABLE, STALE

    p = Pair()
    mac_x = "02:00:00:00:00:99"
    ia = p.ia

    def reply(ip: str, mac: str, op: int = 2) -> None:
        p.a.input(ia, bytes(Ether(dst=ia.mac, src=mac)
                            / ARP(op=op, hwsrc=mac, psrc=ip, hwdst=ia.mac, pdst=IP_A)),
                  p.now)

    reply("10.9.0.50", mac_x)
    assert ipaddress.ip_address("10.9.0.50").packed not in ia.arp.entries
    # B becomes known and REACHABLE through a real exchange (our request, its reply)
    ep, server = p.connect()
    e = ia.arp.entries[B4]
    assert e.state == REACHABLE and e.mac == p.ib.mac
    reply(IP_B, mac_x)
    assert e.mac == bytes.fromhex(mac_x.replace(":", "")) and e.state == STALE
    # a request from an unknown host for our address creates a STALE entry (RFC 826)
    reply("10.9.0.51", mac_x, op=1)
    assert ia.arp.entries[ipaddress.ip_address("10.9.0.51").packed].state == STALE
    # the spoofed MAC is re-checked: traffic probes it (unicast, unanswered), the entry
    # fails and a broadcast request finds B again; the data gets through
    ep.send(b"x" * 100)
    for _ in range(100):
        p.tick(0.1)
        p.move()
    e = ia.arp.entries[B4]
    assert e.mac == p.ib.mac and e.state == REACHABLE
    assert server.recv(1000) == b"x" * 100


def test_ip_ids_are_per_destination_and_keyed() -> None:
    """IPv4 identifications come from per-destination counters picked and offset by a
    keyed hash: what one destination sees does not move when we talk to others (no idle
    scan), and two stacks do not share a sequence."""
    p = Pair()
    a = p.a
    for ip in ("10.9.0.3", "10.9.0.4"):
        a.interfaces[2].arp.add_static(ipaddress.ip_address(ip).packed, b"\x02" * 6)

    def ids(dst: str, n: int) -> list[int]:
        p.la.sent.clear()
        for _ in range(n):
            a.udp_send(b"x", (dst, 9), 1000, now=p.now)
        return [IP(f[14:]).id for f in p.la.sent]

    x1 = ids("10.9.0.3", 3)
    others = ids("10.9.0.4", 50)
    x2 = ids("10.9.0.3", 3)
    assert x1 + x2 == [(x1[0] + i) & 0xFFFF for i in range(6)]
    assert others == [(others[0] + i) & 0xFFFF for i in range(50)]
    # keyed: another stack (another secret) picks other counters and offsets
    x, y = B4, ipaddress.ip_address(IP_A).packed
    assert p.a.ip_id_hash(y, x, 17) != p.b.ip_id_hash(y, x, 17)
    # TCP's direct path takes its IDs from the same per-destination counters
    ep, server = p.connect()
    p.la.sent.clear()
    ep.send(os.urandom(30_000))
    tcp_ids = [IP(f[14:]).id for f in p.la.sent if f[12:14] == b"\x08\x00"]
    assert len(tcp_ids) > 5
    assert tcp_ids == [(tcp_ids[0] + i) & 0xFFFF for i in range(len(tcp_ids))]
    before = ids("10.9.0.3", 1)
    p.la.sent.clear()
    ep.send(os.urandom(3000))
    p.move()
    assert ids("10.9.0.3", 1) == [(before[0] + 1) & 0xFFFF]
