"""NAT on a routing stack (stack/nat.py), on fake time: an inside LAN (10.0.0.0/24,
fd00::/64) behind router R, an outside one (203.0.113.0/24, 2001:db8::/64) with no route
back to the inside. Every frame on both wires has its checksums checked by scapy, an
independent implementation, after the incremental updates NAT made."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, UDPerror
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from threadnet import Stack
from threadnet.stack import nat as natmod
from threadnet.wire import icmp4, ipv4, tcp, udp

from stack_helpers import ListLink

A, A2, R_IN, R_OUT, B = "10.0.0.9", "10.0.0.5", "10.0.0.1", "203.0.113.1", "203.0.113.7"
A6, R6_OUT, B6 = "fd00::9", "2001:db8::1", "2001:db8::7"
MASQ = """table ip nat {
    chain post { type nat hook postrouting priority srcnat; oifname "eth1" masquerade }
    chain pre { type nat hook prerouting priority dstnat;
        iifname "eth1" tcp dport 8080 dnat to 10.0.0.5:80
        tcp dport 8080 ip daddr 203.0.113.1 dnat to 10.0.0.5:80 }
}
table ip6 nat6 {
    chain post { type nat hook postrouting priority srcnat; oifname "eth1" masquerade }
}
"""


def _p(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


class Net:
    """Inside hosts A and A2 and router R's eth0 on one wire, R's eth1 and outside host
    B on another; ``move`` delivers until quiet, checking every frame's checksums."""

    def __init__(self, ruleset: str = MASQ) -> None:
        self.now = 100.0
        clock = lambda: self.now  # noqa: E731
        self.la, self.la2, self.lr0, self.lr1, self.lb = (ListLink() for _ in range(5))
        self.a = Stack(link=self.la, runner=False, clock=clock)
        self.a.configure("eth,ip=10.0.0.9/24,gw=10.0.0.1,ip=fd00::9/64,gw=fd00::1")
        self.a2 = Stack(link=self.la2, runner=False, clock=clock)
        self.a2.configure("eth,ip=10.0.0.5/24,gw=10.0.0.1")
        self.r = Stack(forwarding=True, runner=False, clock=clock)
        self.r.add_interface(self.lr0)
        self.r.add_interface(self.lr1)
        self.r.configure("iface=eth0,eth,ip=10.0.0.1/24,ip=fd00::1/64", self.now)
        self.r.configure("iface=eth1,eth,ip=203.0.113.1/24,ip=2001:db8::1/64", self.now)
        self.b = Stack(link=self.lb, runner=False, clock=clock)
        self.b.configure("eth,ip=203.0.113.7/24,ip=2001:db8::7/64")  # no route inside
        self.wires = [[(self.a, self.la, 2), (self.a2, self.la2, 2), (self.r, self.lr0, 2)],
                      [(self.r, self.lr1, 3), (self.b, self.lb, 2)]]
        self.frames: list[tuple[int, bytes]] = []  # (wire, frame), everything seen
        self.advance(1.5)  # duplicate address detection
        if ruleset:
            self.r.filter_set(ruleset)

    @property
    def stacks(self) -> list[Stack]:
        return [self.a, self.a2, self.r, self.b]

    def advance(self, dt: float) -> None:
        end = self.now + dt
        while self.now < end:
            self.now = round(self.now + 0.05, 6)
            for s in self.stacks:
                s.on_timer(self.now)
            self.move()

    def move(self) -> None:
        for _ in range(1000):
            busy = False
            for w, wire in enumerate(self.wires):
                for _stack, link, _idx in wire:
                    frames, link.sent = link.sent, []
                    for f in frames:
                        busy = True
                        self.frames.append((w, f))
                        check_checksums(f)
                        for other, olink, idx in wire:
                            if olink is not link:
                                other.input(other.interfaces[idx], f, self.now)
            if not busy:
                return
        raise AssertionError("the wires never went quiet")

    def on_wire(self, w: int) -> list:
        return [Ether(f) for wire, f in self.frames if wire == w]

    def close(self) -> None:
        for s in self.stacks:
            s.close()


@pytest.fixture
def net():
    n = Net()
    yield n
    n.close()


def check_checksums(frame: bytes) -> None:
    """Each checksum in ``frame`` is what scapy computes (a UDP checksum of zero, none,
    stays so); the quoted header of an ICMP error too."""
    p = Ether(frame)
    if IP not in p and IPv6 not in p:
        return
    q = Ether(frame)
    # a fragment's transport checksum covers the whole datagram: the receiver's
    # reassembly checks it (the tests look at what arrives)
    fragment = IP in p and (p[IP].flags.MF or p[IP].frag)
    if IPv6 in p and p.haslayer("IPv6ExtHdrFragment"):
        return  # (IPv6 has no header checksum)
    for layer in (IP,) if fragment else (IP, TCP, UDP, ICMP, IPerror):
        if layer in q and hasattr(q[layer], "chksum"):
            if layer is UDP and q[UDP].chksum == 0 and IP in q:
                continue
            del q[layer].chksum
    for lay in q.layers():
        if lay.__name__.startswith("ICMPv6") and hasattr(q[lay], "cksum"):
            del q[lay].cksum
    rebuilt = bytes(q)
    assert rebuilt == bytes(p), f"a checksum is wrong:\n{p.show(dump=True)}"


def _tcp_connect(net: Net, client: Stack, dst: str, port: int):
    ep = client.tcp.connect(4 if ":" not in dst else 6, None, 0, _p(dst), port, net.now)
    net.advance(0.5)
    return ep


def test_masquerade_tcp_udp_and_ping_reach_the_outside_with_the_router_address(net):
    net.b.tcp.listen(4, b"", 80, 8)
    ep = _tcp_connect(net, net.a, B, 80)
    assert ep.conn.established
    got = []
    net.b.udp_bind(53, lambda data, src, dst: got.append((data, src)))
    net.a.udp_send(b"query", (B, 53), 40000, now=net.now)
    net.advance(0.2)
    assert got and got[0][0] == b"query" and got[0][1][0] in (R_OUT, _p(R_OUT))
    session = net.a.start_ping(B, count=2, timeout=1.0, now=net.now)
    net.advance(3.0)
    assert len(session.rtts) == 2
    outside = net.on_wire(1)
    srcs = {p[IP].src for p in outside if IP in p and p[IP].dst == B}
    assert srcs == {R_OUT}  # nothing leaks the inside address
    # the source port was kept where it was free (RFC 4787 port preservation)
    sports = {p[UDP].sport for p in outside if UDP in p and p[IP].dst == B}
    assert sports == {40000}
    assert net.r.packet_filter.nat.stats["translated"] > 6
    assert net.r.packet_filter.nat.stats["errors"] == 0


def test_nat66_masquerade(net):
    net.advance(1.5)
    net.b.tcp.listen(6, b"", 80, 8)
    ep = _tcp_connect(net, net.a, B6, 80)
    assert ep.conn.established
    srcs = {p[IPv6].src for p in net.on_wire(1) if IPv6 in p and p[IPv6].dst == B6}
    assert srcs == {R6_OUT}


def test_a_port_forward_reaches_the_inside_server(net):
    net.a2.tcp.listen(4, b"", 80, 8)
    ep = _tcp_connect(net, net.b, R_OUT, 8080)
    assert ep.conn.established
    inside = [p for p in net.on_wire(0) if TCP in p and p[TCP].dport == 80]
    assert inside and {p[IP].dst for p in inside} == {A2} and {p[IP].src for p in inside} == {B}


def test_hairpin_an_inside_host_reaches_the_port_forward_by_the_public_address(net):
    net.a2.tcp.listen(4, b"", 80, 8)
    ep = _tcp_connect(net, net.a, R_OUT, 8080)
    assert ep.conn.established
    # the server saw the public address as its client, so it answered through R
    to_server = [p for p in net.on_wire(0) if TCP in p and p[IP].dst == A2]
    assert to_server and {p[IP].src for p in to_server} == {R_OUT}


def test_a_closed_outside_port_comes_back_as_a_translated_port_unreachable(net):
    net.a.udp_bind(40001, lambda data, src, dst: None)
    net.a.udp_send(b"?", (B, 9), 40001, now=net.now)
    net.advance(0.2)
    inside = [p for p in net.on_wire(0) if ICMP in p and p[ICMP].type == 3]
    assert len(inside) == 1
    err = inside[0]
    assert err[IP].dst == A and err[IPerror].src == A and err[UDPerror].sport == 40001
    # the quoted datagram is whole: its own checksums, as rewritten, are right too
    inner = IP(bytes(err[IPerror]))
    again = IP(bytes(err[IPerror]))
    del again.chksum
    del again[UDP].chksum
    assert bytes(IP(bytes(again))) == bytes(inner)


def test_ttl_exceeded_from_the_path_is_translated(net):
    """An error a router on the way sends (here: B itself, as if a hop) about a
    masqueraded datagram reaches the inside host with the quoted header translated."""
    net.a.udp_send(b"x", (B, 53), 41000, now=net.now)
    net.advance(0.2)
    sent = [p for p in net.on_wire(1) if UDP in p and p[UDP].dport == 53][0]
    quoted = bytes(sent[IP])[:28]
    body = bytearray(8 + len(quoted))
    icmp4.build(body, 11, 0, 0, quoted)
    pkt = bytearray(20 + len(body))
    ipv4.build(pkt, _p(B), _p(R_OUT), 1, len(body))
    pkt[20:] = body
    r_eth1 = net.r.interfaces[3]
    net.r.input(r_eth1, r_eth1.mac + net.b.interfaces[2].mac + b"\x08\x00" + bytes(pkt),
                net.now)
    net.move()
    got = [p for p in net.on_wire(0) if ICMP in p and p[ICMP].type == 11]
    assert len(got) == 1 and got[0][IP].dst == A and got[0][IPerror].src == A
    assert got[0][UDPerror].sport == 41000


def test_port_clash_two_inside_hosts_same_source_port(net):
    """A and A2 both send from port 5000 to B:53: the second one gets another port, and
    each reply goes back to its sender."""
    got_b, got_a, got_a2 = [], [], []
    net.b.udp_bind(53, lambda data, src, dst: got_b.append(src))
    net.a.udp_bind(5000, lambda data, src, dst: got_a.append(data))
    net.a2.udp_bind(5000, lambda data, src, dst: got_a2.append(data))
    net.a.udp_send(b"1", (B, 53), 5000, now=net.now)
    net.a2.udp_send(b"2", (B, 53), 5000, now=net.now)
    net.advance(0.2)
    assert len(got_b) == 2
    ports = sorted(p for _, p in got_b)
    assert ports[0] != ports[1] and 5000 in ports
    for _, port in got_b:
        net.b.udp_send(b"r%d" % port, (R_OUT, port), 53, now=net.now)
    net.advance(0.2)
    assert len(got_a) == 1 and len(got_a2) == 1


def test_udp_mapping_is_endpoint_independent(net):
    """RFC 4787 REQ-1: one inside endpoint keeps its outside port for every destination
    (even when its own port was taken by another host first)."""
    net.b.udp_bind(53, lambda data, src, dst: None)
    net.b.udp_bind(54, lambda data, src, dst: None)
    net.a2.udp_send(b"x", (B, 53), 6000, now=net.now)  # takes R:6000
    net.advance(0.1)
    net.a.udp_send(b"y", (B, 53), 6000, now=net.now)
    net.a.udp_send(b"z", (B, 54), 6000, now=net.now)
    net.advance(0.1)
    from_a = {p[UDP].sport for p in net.on_wire(1)
              if UDP in p and p[IP].dst == B and bytes(p[UDP].payload) in (b"y", b"z")}
    assert len(from_a) == 1 and from_a != {6000}


def test_snat_to_a_port_range_and_a_zero_udp_checksum_stays_zero():
    net = Net("""table ip nat { chain post { type nat hook postrouting priority 100;
        ip saddr 10.0.0.0/24 snat to 203.0.113.1:2000-2001 } }""")
    try:
        got = []
        net.b.udp_bind(53, lambda data, src, dst: got.append(src))
        # a datagram without a checksum (0: none, IPv4), built by hand
        d = bytearray(9)
        udp.build(d, _p(A), _p(B), 7000, 53, b"q")
        d[6:8] = b"\0\0"
        net.a.send_ip4(_p(A), _p(B), 17, bytes(d), net.now)
        net.advance(0.2)
        out = [p for p in net.on_wire(1) if UDP in p and p[IP].dst == B]
        assert out[0][UDP].sport in (2000, 2001) and out[0][UDP].chksum == 0
        # two more flows use the range up; a fourth finds no port and is dropped
        for sport in (7001, 7002, 7003):
            net.a.udp_send(b"q", (B, 53), sport, now=net.now)
        net.advance(0.2)
        assert net.r.packet_filter.nat.stats["no_port"] >= 1
        assert len(got) == 2
    finally:
        net.close()


def test_dnat_on_output_sends_the_routers_own_connection_inside():
    net = Net("""table ip nat { chain out { type nat hook output priority -100;
        ip daddr 203.0.113.7 tcp dport 8080 dnat to 10.0.0.5:80 } }""")
    try:
        net.a2.tcp.listen(4, b"", 80, 8)
        ep = _tcp_connect(net, net.r, B, 8080)
        assert ep.conn.established
    finally:
        net.close()


def test_the_table_stays_bounded_and_entries_expire(net):
    table = net.r.conntrack
    table.max_entries = 200
    rnd = random.Random(3)
    r_eth0 = net.r.interfaces[2]
    head = r_eth0.mac + net.a.interfaces[2].mac + b"\x08\x00"
    for i in range(3000):
        src = bytes([10, 0, 0, rnd.randrange(2, 250)])
        d = bytearray(9)
        udp.build(d, src, _p(B), rnd.randrange(1024, 65536), 53, b"x")
        pkt = bytearray(29)
        ipv4.build(pkt, src, _p(B), 17, 9)
        pkt[20:] = d
        net.r.input(r_eth0, head + bytes(pkt), net.now + i * 0.001)
        net.lr1.sent.clear()
        net.lr0.sent.clear()
    assert len(table) <= 200
    assert len(net.r.packet_filter.nat.mappings) <= natmod.MAX_MAPPINGS
    net.now += 40  # nf_conntrack's UDP timeout (30 s): unreplied flows go
    net.r.on_timer(net.now)
    table.expire(net.now)
    assert len(table) == 0
    net.b.tcp.listen(4, b"", 80, 8)
    assert _tcp_connect(net, net.a, B, 80).conn.established


def test_filter_list_shows_the_nat_chains(net):
    text = net.r.filter_list()
    assert "type nat hook postrouting priority srcnat; policy accept;" in text
    assert 'oifname "eth1" masquerade' in text and "dnat to 10.0.0.5:80" in text


def test_mangled_frames_through_nat_raise_nothing(net):
    rnd = random.Random(5)
    table = net.r.conntrack
    table.max_entries = 500
    ifaces = (net.r.interfaces[2], net.r.interfaces[3])
    for i in range(20000):
        iface = rnd.choice(ifaces)
        head = iface.mac + bytes.fromhex("020000000001") + b"\x08\x00"
        src = _p(A) if iface.index == 2 else _p(B)
        dst = _p(B) if iface.index == 2 else _p(R_OUT)
        proto = rnd.choice((1, 6, 17))
        if proto == 6:
            body = bytearray(20 + rnd.choice((0, 8)))
            tcp.build(body, src, dst, rnd.randrange(1, 65536), rnd.choice((80, 8080)),
                      rnd.getrandbits(32), rnd.getrandbits(32), rnd.getrandbits(8), 1000,
                      bytes(len(body) - 20))
        elif proto == 17:
            body = bytearray(8 + rnd.randrange(0, 20))
            udp.build(body, src, dst, rnd.randrange(1, 65536), 53, bytes(len(body) - 8))
        else:
            quote = rnd.randbytes(rnd.randrange(0, 48))
            if rnd.random() < 0.5 and quote[:1]:
                quote = bytes([0x45]) + quote[1:]
            body = bytearray(8 + len(quote))
            icmp4.build(body, rnd.choice((0, 3, 8, 11)), 3, rnd.getrandbits(32), quote)
        if rnd.random() < 0.2:  # cut short, or bytes flipped
            body = body[:rnd.randrange(0, len(body) + 1)]
        pkt = bytearray(20 + len(body))
        ipv4.build(pkt, src, dst, proto, len(body),
                   flags=rnd.choice((0, 0, ipv4.FLAG_MF)), frag_offset=rnd.choice((0, 0, 8)))
        pkt[20:] = body
        if rnd.random() < 0.05:
            j = rnd.randrange(len(pkt))
            pkt[j] ^= 0xFF
        net.r.input(iface, head + bytes(pkt), net.now + i * 0.001)
        net.lr0.sent.clear()
        net.lr1.sent.clear()
    assert len(table) <= 500
    assert len(net.r.packet_filter.nat._frags) <= natmod.MAX_FRAGMENTS
    net.now += 20
    net.b.tcp.listen(4, b"", 80, 8)
    assert _tcp_connect(net, net.a, B, 80).conn.established


def test_checksum_adjustment_matches_a_recomputation():
    """RFC 1624 on random data: the adjusted checksum equals the recomputed one."""
    from threadnet.wire.checksum import checksum

    rnd = random.Random(1)
    for _ in range(2000):
        data = bytearray(rnd.randbytes(40))
        data[10:12] = b"\0\0"
        struct.pack_into("!H", data, 10, checksum(data))
        new = rnd.randbytes(6)
        old = bytes(data[12:18])
        data[12:18] = new
        natmod._adjust(data, 10, old, new)
        c = struct.unpack_from("!H", data, 10)[0]
        data[10:12] = b"\0\0"
        assert c == checksum(data)


def test_nptv6_translates_prefixes_checksum_neutrally_both_ways():
    """RFC 6296: the inside prefix fd00::/48 is 2001:db8:1::/48 outside, one address for
    one address, and no transport checksum changes (the sum of the address's words is
    the same); the outside reaches an inside host by its translated address."""
    net = Net("""table ip6 npt {
        chain post { type nat hook postrouting priority srcnat;
            oifname "eth1" ip6 saddr fd00::/48 snat ip6 prefix to 2001:db8:1::/48 }
        chain pre { type nat hook prerouting priority dstnat;
            iifname "eth1" ip6 daddr 2001:db8:1::/48 dnat ip6 prefix to fd00::/48 } }""")
    try:
        net.advance(1.5)
        net.b.route_add("2001:db8:1::/48", "2001:db8::1", now=net.now)
        assert "snat ip6 prefix to 2001:db8:1::/48" in net.r.filter_list()
        net.b.tcp.listen(6, b"", 80, 8)
        ep = _tcp_connect(net, net.a, B6, 80)
        assert ep.conn.established
        out = [p for p in net.on_wire(1) if TCP in p and p[IPv6].dst == B6]
        inside = [p for p in net.on_wire(0) if TCP in p and p[IPv6].dst == B6]
        mapped = natmod.map_prefix(_p(A6), int(ipaddress.ip_address("2001:db8:1::")), 48)
        assert {p[IPv6].src for p in out} == {str(ipaddress.ip_address(mapped))}
        # checksum-neutral: the TCP checksum of the SYN is the same on both sides
        assert out[0][TCP].chksum == inside[0][TCP].chksum
        # and the other way: B connects to A's outside address
        net.a.tcp.listen(6, b"", 22, 8)
        ep = _tcp_connect(net, net.b, str(ipaddress.ip_address(mapped)), 22)
        assert ep.conn.established
    finally:
        net.close()


def test_a_lapsed_udp_mapping_frees_its_port(net):
    """Once the connections of A2's mapping expired, A may keep the same port."""
    net.b.udp_bind(53, lambda data, src, dst: None)
    net.a2.udp_send(b"x", (B, 53), 6100, now=net.now)
    net.advance(0.1)
    net.advance(31.0)  # nf_conntrack's UDP timeout
    net.a.udp_send(b"y", (B, 53), 6100, now=net.now)
    net.advance(0.1)
    ports = [p[UDP].sport for p in net.on_wire(1)
             if UDP in p and p[IP].dst == B and bytes(p[UDP].payload) == b"y"]
    assert ports == [6100]


def test_nat_rules_print_back_as_they_parse():
    from threadnet.stack.nftables import parse

    text = parse(MASQ).text() + parse("""table inet n { chain c {
        type nat hook postrouting priority 100; snat ip to 192.0.2.1-192.0.2.9:1000-2000; masquerade to :4000-5000
        snat ip6 prefix to 2001:db8:9::/48 } }""").text()
    assert parse(text).text() == text
    assert "snat ip to 192.0.2.1-192.0.2.9:1000-2000" in text
    assert "masquerade to :4000-5000" in text


def test_nat66_ping_and_an_icmpv6_error_are_translated(net):
    net.advance(1.5)
    session = net.a.start_ping(B6, count=2, timeout=1.0, now=net.now)
    net.advance(3.0)
    assert len(session.rtts) == 2
    net.a.udp_bind(40002, lambda data, src, dst: None)
    net.a.udp_send(b"?", (B6, 9), 40002, now=net.now)
    net.advance(0.3)
    errs = [p for p in net.on_wire(0) if IPv6 in p and p[IPv6].dst == A6
            and p.haslayer("ICMPv6DestUnreach")]
    assert len(errs) == 1
    quoted = errs[0]["ICMPv6DestUnreach"].payload
    assert quoted.src == A6 and quoted.payload.sport == 40002


@pytest.mark.slow
def test_a_flood_of_100000_spoofed_flows_through_nat_stays_bounded():
    """100,000 datagrams and SYNs from random inside addresses and ports, masqueraded:
    the table stays at its bound, the memory held after 30,000 and after 100,000 is the
    same within a small margin, and a real connection still goes through."""
    import tracemalloc

    net = Net()
    try:
        net.r.conntrack.max_entries = 2000
        rnd = random.Random(9)
        r_eth0 = net.r.interfaces[2]
        head = r_eth0.mac + net.a.interfaces[2].mac + b"\x08\x00"
        seg, dgram = bytearray(20), bytearray(9)
        held = []
        tracemalloc.start()
        try:
            for i in range(100_000):
                now = net.now + i * 0.0005
                src = bytes([10, 0, rnd.randrange(0, 256), rnd.randrange(2, 255)])
                if i & 1:
                    tcp.build(seg, src, _p(B), rnd.randrange(1024, 65536), 80,
                              rnd.getrandbits(32), 0, tcp.SYN, 1000)
                    body = seg
                else:
                    udp.build(dgram, src, _p(B), rnd.randrange(1024, 65536), 53, b"q")
                    body = dgram
                pkt = bytearray(20 + len(body))
                ipv4.build(pkt, src, _p(B), 6 if i & 1 else 17, len(body))
                pkt[20:] = body
                net.r.input(r_eth0, head + bytes(pkt), now)
                if i % 1000 == 0:
                    net.lr0.sent.clear()
                    net.lr1.sent.clear()
                    net.r.on_timer(now)
                if i in (30_000, 99_999):
                    held.append(tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        net.lr0.sent.clear()
        net.lr1.sent.clear()
        assert len(net.r.conntrack) <= 2000
        assert held[1] - held[0] < 1 << 20, held
        nat = net.r.packet_filter.nat
        assert nat.stats["translated"] > 10_000 and nat.stats["errors"] == 0
        net.now += 60
        net.b.tcp.listen(4, b"", 80, 8)
        assert _tcp_connect(net, net.a, B, 80).conn.established
    finally:
        net.close()


def test_fragmented_datagrams_are_translated_both_ways(net):
    """A 4000-byte datagram leaves A in fragments: the first is translated with the
    datagram's UDP checksum, the later ones get its address; B reassembles it with a
    valid checksum, and its fragmented answer comes back to A whole."""
    got_b, got_a = [], []

    def answer(data, src, dst):
        got_b.append((data, src))
        net.b.udp_send(data[::-1], (R_OUT, 42000), 53, now=net.now)

    net.b.udp_bind(53, answer)
    net.a.udp_bind(42000, lambda data, src, dst: got_a.append(data))
    payload = bytes(range(256)) * 16
    net.a.udp_send(payload, (B, 53), 42000, now=net.now)
    net.advance(0.5)
    frags = [p for p in net.on_wire(1) if IP in p and p[IP].src == R_OUT and p[IP].dst == B
             and (p[IP].flags.MF or p[IP].frag)]
    assert len(frags) >= 3
    # scapy reassembles what left the router: the datagram's UDP checksum is right
    from scapy.layers.inet import defragment

    whole = [p for p in defragment([f[IP] for f in frags]) if UDP in p]
    assert len(whole) == 1
    again = IP(bytes(whole[0]))
    del again[UDP].chksum
    assert IP(bytes(again))[UDP].chksum == whole[0][UDP].chksum
    assert got_b and got_b[0][0] == payload
    assert got_a == [payload[::-1]]


def test_mangled_ipv6_frames_and_errors_quoting_translated_flows_raise_nothing(net):
    """NAT66: random TCP, UDP, ICMPv6 echo and errors whose quoted packet is a real
    translated flow's, cut at every length, or random bytes."""
    from threadnet.wire import icmp6, ipv6

    net.advance(1.5)
    net.b.udp_bind(53, lambda data, src, dst: None)
    net.a.udp_send(b"x", (B6, 53), 43000, now=net.now)
    net.advance(0.2)
    sent = [f for w, f in net.frames if w == 1 and Ether(f).haslayer(UDP)
            and Ether(f)[UDP].sport == 43000][0]
    quoted_real = sent[14:]
    rnd = random.Random(8)
    r_eth1 = net.r.interfaces[3]
    head = r_eth1.mac + net.b.interfaces[2].mac + b"\x86\xdd"
    src, dst = _p(B6), _p(R6_OUT)
    # one intact error first, delivered: R learns A's link address, so the errors it
    # translates next go straight onto the inside wire
    body = bytearray(8 + len(quoted_real))
    icmp6.build(body, src, dst, 1, 4, 0, quoted_real)
    pkt = bytearray(40 + len(body))
    ipv6.build(pkt, src, dst, 58, len(body))
    pkt[40:] = body
    net.r.input(r_eth1, head + bytes(pkt), net.now)
    net.move()
    checked = 0
    for _ in range(5000):
        kind = rnd.random()
        flipped = True
        if kind < 0.5:
            quote = quoted_real[:rnd.randrange(0, len(quoted_real) + 1)]
            flipped = rnd.random() < 0.3
            if flipped:
                q = bytearray(quote)
                if q:
                    q[rnd.randrange(len(q))] ^= 0xFF
                quote = bytes(q)
            body = bytearray(8 + len(quote))
            icmp6.build(body, src, dst, rnd.choice((1, 2, 3, 4)), 4, 0, quote)
            proto = 58
        elif kind < 0.8:
            body = bytearray(8 + rnd.randrange(0, 30))
            udp.build(body, src, dst, 53, rnd.choice((43000, rnd.randrange(1, 65536))),
                      bytes(len(body) - 8))
            proto = 17
        else:
            body = bytearray(rnd.randbytes(rnd.randrange(0, 40)))
            proto = rnd.choice((6, 17, 58, 44, 0))
        pkt = bytearray(40 + len(body))
        ipv6.build(pkt, src, dst, proto, len(body))
        pkt[40:] = body
        net.r.input(r_eth1, head + bytes(pkt), net.now)
        if not flipped:  # what NAT made of an intact error: every checksum right
            for f in net.lr0.sent:
                check_checksums(f)
                checked += 1
        net.lr0.sent.clear()
        net.lr1.sent.clear()
    nat = net.r.packet_filter.nat
    assert nat.stats["translated"] > 100 and checked > 100


def test_an_output_dnat_to_the_lan_is_no_hairpin():
    """The router's own connection, sent by an output dnat to a LAN server from its LAN
    address, keeps its source (it is no client on that LAN to hairpin for)."""
    net = Net("""table ip nat { chain out { type nat hook output priority -100;
        ip daddr 10.0.0.200 tcp dport 8080 dnat to 10.0.0.5:80 } }""")
    try:
        net.a2.tcp.listen(4, b"", 80, 8)
        ep = _tcp_connect(net, net.r, "10.0.0.200", 8080)
        assert ep.conn.established
        srcs = {p[IP].src for p in net.on_wire(0) if TCP in p and p[IP].dst == A2}
        assert srcs == {R_IN}
    finally:
        net.close()


def test_tcp_port_clash_moves_the_second_connection_and_both_work(net):
    net.b.tcp.listen(4, b"", 80, 8)
    ep1 = net.a.tcp.connect(4, None, 7777, _p(B), 80, net.now)
    ep2 = net.a2.tcp.connect(4, None, 7777, _p(B), 80, net.now)
    net.advance(0.5)
    assert ep1.conn.established and ep2.conn.established
    sports = {p[TCP].sport for p in net.on_wire(1) if TCP in p and p[IP].dst == B}
    assert 7777 in sports and len(sports) == 2
    assert all(p >= 1024 for p in sports)  # (Linux's class for a port of 1024 and up)


def test_two_inside_pings_with_one_identifier_both_get_their_replies(net):
    """ICMP echo identifiers are ports to NAT (RFC 5508 3.1): the second of two inside
    hosts with the same identifier gets another one outside, and each host its replies."""
    s1 = net.a.start_ping(B, count=2, timeout=1.0, now=net.now, ident=4242)
    s2 = net.a2.start_ping(B, count=2, timeout=1.0, now=net.now, ident=4242)
    net.advance(3.0)
    assert len(s1.rtts) == 2 and len(s2.rtts) == 2
    ids = {p[ICMP].id for p in net.on_wire(1) if ICMP in p and p[ICMP].type == 8}
    assert 4242 in ids and len(ids) == 2


def test_fragmented_ipv6_datagrams_are_translated_both_ways(net):
    net.advance(1.5)
    got_b, got_a = [], []

    def answer(data, src, dst):
        got_b.append((data, src))
        net.b.udp_send(data[::-1], (R6_OUT, 42001), 53, now=net.now)

    net.b.udp_bind(53, answer)
    net.a.udp_bind(42001, lambda data, src, dst: got_a.append(data))
    payload = bytes(range(256)) * 16
    net.a.udp_send(payload, (B6, 53), 42001, now=net.now)
    net.advance(0.5)
    frags = [p for p in net.on_wire(1) if IPv6 in p and p[IPv6].dst == B6
             and p.haslayer("IPv6ExtHdrFragment")]
    assert len(frags) >= 3 and {p[IPv6].src for p in frags} == {R6_OUT}
    assert got_b and got_b[0][0] == payload
    assert got_a == [payload[::-1]]
