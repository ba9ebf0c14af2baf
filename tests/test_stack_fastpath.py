"""The stack's direct TCP paths over IPv4 and IPv6 (whole-frame output from a cached
path, direct input) on stacks joined by in-memory links, without a runner: the frames
they build must be valid on the wire, the cached path must follow neighbor, MTU, route
and path MTU changes, and a stack that uses them must work with one that does not."""

from __future__ import annotations

import ipaddress
import os

import pytest

from threadnet import Stack
from threadnet.link import Link
from threadnet.wire import ipv4, ipv6, tcp

IP_A, IP_B = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
IP6_A, IP6_B = ipaddress.ip_address("fc00:9::1").packed, ipaddress.ip_address("fc00:9::2").packed
ADDRS = {4: (IP_A, IP_B), 6: (IP6_A, IP6_B)}


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


def _pair():
    la, lb = ListLink(), ListLink()
    clock = [100.0]
    a = Stack(link=la, runner=False, clock=lambda: clock[0])
    b = Stack(link=lb, runner=False, clock=lambda: clock[0])
    a.configure("eth,ip=10.9.0.1/24,ip=fc00:9::1/64")
    b.configure("eth,ip=10.9.0.2/24,ip=fc00:9::2/64")
    _dad(clock, a, b)
    return a, b, la, lb, clock


def _dad(clock: list[float], *stacks: Stack) -> None:
    """Let duplicate address detection end: the IPv6 addresses become preferred."""
    clock[0] += 1.5
    for s in stacks:
        s.on_timer(clock[0])


def _move(a: Stack, b: Stack, la: ListLink, lb: ListLink, now: float, deliver=None) -> list:
    """Deliver everything queued both ways (in batches) until quiet; returns a->b frames.
    ``deliver(stack, iface, item, now)`` hands over one item of a link's ``sent`` list
    (default: ``stack.input``)."""
    seen = []
    while la.sent or lb.sent:
        for src, dst, link in ((la, b, b.interfaces[2]), (lb, a, a.interfaces[2])):
            frames, src.sent = src.sent, []
            if src is la:
                seen += frames
            opened = dst.begin_batch()
            for f in frames:
                if deliver is None:
                    dst.input(link, f, now)
                else:
                    deliver(dst, link, f, now)
            if opened:
                dst.end_batch()
    return seen


def _settle(a: Stack, b: Stack, la: ListLink, lb: ListLink, clock: list[float],
            rounds: int = 5) -> list[bytes]:
    """Let ``rounds`` x 50 ms of fake time pass (timers run, frames move); returns the
    frames a sent."""
    seen = []
    for _ in range(rounds):
        clock[0] += 0.05
        for s in (a, b):
            s.on_timer(clock[0])
        seen += _move(a, b, la, lb, clock[0])
    return seen


def _established(family: int = 4, **options: object):
    a, b, la, lb, clock = _pair()
    b.tcp.listen(family, b"", 5000, 8)
    ep = a.tcp.connect(family, None, 0, ADDRS[family][1], 5000, clock[0], **options)
    _move(a, b, la, lb, clock[0])
    assert ep.conn.established
    [server] = [e for e in b.tcp.conns.values()]
    return a, b, la, lb, clock, ep, server


def _check_frame(f: bytes, dst_mac: bytes, src_mac: bytes, family: int = 4,
                 hops: int = 64, src_ip: bytes | None = None, dst_ip: bytes | None = None
                 ) -> tuple:
    """Check one TCP frame A sent (IP header, TCP checksum); returns the TCP fields."""
    assert f[:6] == dst_mac and f[6:12] == src_mac
    if family == 6:
        assert f[12:14] == b"\x86\xdd"
        tc, flow, plen, nh, hlim, src, dst = ipv6.parse(memoryview(f)[14:])
        assert len(f) == 54 + plen
        assert (tc, flow, nh, hlim, src, dst) == (0, 0, 6, hops, src_ip or IP6_A,
                                                  dst_ip or IP6_B)
        return tcp.parse(memoryview(f)[54:], src, dst)  # verifies the checksum
    assert f[12:14] == b"\x08\x00"
    fields = ipv4.parse(memoryview(f)[14:])  # verifies the header checksum
    tos, total, ident, flags, frag, ttl, proto, src, dst, hl, _ = fields
    assert (proto, ttl, flags & ipv4.FLAG_DF, src, dst) == (6, 64, ipv4.FLAG_DF, IP_A, IP_B)
    return tcp.parse(memoryview(f)[14 + hl:14 + total], src, dst)  # verifies the checksum


def _recv_all(server) -> bytes:
    got = bytearray()
    while server.conn.recv_queued:
        got += server.recv(1 << 20)
    return bytes(got)


def _one_way(ep, server, data: bytes, clock: list[float], stacks, move,
             step: int = 65536) -> list:
    """Send ``data`` from ``ep`` to ``server``, 50 ms of fake time a round (timers, then
    ``move()`` delivers and returns what went out); checks it arrived; returns the frames
    ``move`` returned."""
    got = bytearray()
    sent = 0
    frames: list = []
    for _ in range(10_000):
        if len(got) == len(data):
            break
        sent += ep.send(data[sent:sent + step])
        clock[0] += 0.05  # delayed ACKs and other timers come due
        for s in stacks:
            s.on_timer(clock[0])
        frames += move()
        got += _recv_all(server)
    assert bytes(got) == data
    return frames


def _exchange(ep, server, size: int, clock: list[float], stacks, move) -> bytes:
    """``size`` random bytes each way between ``ep`` and ``server`` at once, 50 ms of fake
    time a round (timers, then ``move()`` delivers); checks both; returns what went down."""
    up, down = os.urandom(size), os.urandom(size)
    got_up, got_down = bytearray(), bytearray()
    sent_up = sent_down = 0
    for _ in range(2000):
        if len(got_up) == len(up) and len(got_down) == len(down):
            break
        sent_up += ep.send(up[sent_up:sent_up + 65536])
        sent_down += server.send(down[sent_down:sent_down + 65536])
        clock[0] += 0.05
        for s in stacks:
            s.on_timer(clock[0])
        move()
        got_up += _recv_all(server)
        got_down += _recv_all(ep)
    assert bytes(got_up) == up and bytes(got_down) == down
    return down


def _count_fast_input(stack: Stack, family: int) -> list[int]:
    """Count the frames ``stack`` takes through its direct input path from now on."""
    name = f"_input_fast{family}"
    direct = getattr(stack, name)
    hits = [0]

    def counted(*args) -> bool:
        took = direct(*args)
        hits[0] += took
        return took

    setattr(stack, name, counted)
    return hits


@pytest.mark.parametrize("timestamps", [True, False], ids=["ts", "no-ts"])
@pytest.mark.parametrize("family", [4, 6])
def test_fast_frames_are_valid_and_carry_the_data(family: int, timestamps: bool) -> None:
    a, b, la, lb, clock, ep, server = _established(family, timestamps=timestamps)
    assert ep.conn.ts_ok == timestamps  # frames with and without the timestamps option
    a_hits, b_hits = _count_fast_input(a, family), _count_fast_input(b, family)
    assert ep.path is None or ep.path.mac == b.interfaces[2].mac
    data = os.urandom(200_000) + b"x"  # odd length: the last segment pads its checksum
    frames = _one_way(ep, server, data, clock, (a, b), lambda: _move(a, b, la, lb, clock[0]))
    assert ep.path is not None  # the direct output path was used
    assert ep.path.v6 == (family == 6)
    lengths = 0
    for f in frames:
        fields = _check_frame(f, b.interfaces[2].mac, a.interfaces[2].mac, family)
        lengths += len(f) - 14 - (20 if family == 4 else 40) - fields[4]
    assert lengths == len(data)
    assert b.interfaces[2].rx_errors == 0 and a.interfaces[2].rx_errors == 0
    # and every frame went through the direct input path (the ACKs too)
    assert b_hits[0] == len(frames) and a_hits[0] > 0


def test_cached_path_follows_a_new_neighbor_mac_and_mtu() -> None:
    a, b, la, lb, clock, ep, server = _established()
    ep.send(b"first")
    frames = _move(a, b, la, lb, clock[0])
    assert frames[0][:6] == b.interfaces[2].mac
    _settle(a, b, la, lb, clock)  # the delayed ACK: nothing in flight (Nagle)
    new_mac = b"\x02\x00\x00\x00\x00\x99"
    a.interfaces[2].arp.add_static(IP_B, new_mac)
    ep.send(b"second")
    assert la.sent and all(f[:6] == new_mac for f in la.sent)
    _check_frame(la.sent[-1], new_mac, a.interfaces[2].mac)
    la.sent.clear()
    a.interfaces[2].arp.add_static(IP_B, b.interfaces[2].mac)
    _settle(a, b, la, lb, clock)
    # a smaller MTU: no frame beyond it leaves (the general path refuses with EMSGSIZE)
    a.set_mtu(2, 576)
    ep.send(os.urandom(5000))
    clock[0] += 0.5
    a.tcp.flush(ep, clock[0])
    assert all(len(f) - 14 <= 576 for f in la.sent)
    # and back: full-sized frames again, through a path resolved anew
    # (the segments the smaller MTU refused are retransmitted after timeouts)
    a.set_mtu(2, 1500)
    data = os.urandom(5000)
    ep.send(data)
    frames = la.sent + _settle(a, b, la, lb, clock, rounds=400)
    assert any(len(f) - 14 > 576 for f in frames)
    got = bytearray()
    while server.conn.recv_queued:
        got += server.recv(1 << 20)
    assert got.endswith(data) and ep.conn.snd_una == ep.conn.snd_max


def test_cached_ipv6_path_follows_neighbor_mtu_route_and_address_changes() -> None:
    a, b, la, lb, clock, ep, server = _established(6)
    mac_a, mac_b = a.interfaces[2].mac, b.interfaces[2].mac
    ep.send(b"first")
    frames = _move(a, b, la, lb, clock[0])
    _check_frame(frames[0], mac_b, mac_a, 6)
    assert ep.path is not None and ep.path.nexthop == IP6_B
    _settle(a, b, la, lb, clock)
    # a new MAC for the neighbor
    new_mac = b"\x02\x00\x00\x00\x00\x99"
    a.interfaces[2].nd.add_static(IP6_B, new_mac)
    ep.send(b"second")
    assert la.sent and all(f[:6] == new_mac for f in la.sent)
    _check_frame(la.sent[-1], new_mac, mac_a, 6)
    la.sent.clear()
    a.interfaces[2].nd.add_static(IP6_B, mac_b)
    _settle(a, b, la, lb, clock, rounds=40)  # "second" is resent and ACKed
    got = bytearray(_recv_all(server))
    assert got == b"firstsecond" and ep.conn.snd_una == ep.conn.snd_max
    # a route through a gateway: the frames go to the gateway's MAC
    gw, gw_mac = ipaddress.ip_address("fc00:9::fe").packed, b"\x02\x00\x00\x00\x00\xfe"
    a.interfaces[2].nd.add_static(gw, gw_mac)
    a.route_add("fc00:9::2/128", via="fc00:9::fe")
    ep.send(b"third")
    assert la.sent and all(f[:6] == gw_mac for f in la.sent)
    _check_frame(la.sent[-1], gw_mac, mac_a, 6)
    assert ep.path is not None and ep.path.nexthop == gw
    la.sent.clear()  # lost at the gateway: retransmitted below
    a.route_del("fc00:9::2/128")
    # a smaller MTU: segments larger than it leave as IPv6 fragments (the general path)
    a.set_mtu(2, 1280)
    data = os.urandom(5000)
    ep.send(data)
    frames = la.sent + _settle(a, b, la, lb, clock, rounds=100)
    assert frames and all(len(f) - 14 <= 1280 for f in frames)
    assert any(f[20] == ipv6.PROTO_FRAGMENT for f in frames)
    assert ep.path is not None and ep.path.mtu == 1280
    got += _recv_all(server)
    assert got == b"firstsecondthird" + data
    # and back: full-sized frames again, through a path resolved anew
    a.set_mtu(2, 1500)
    data = os.urandom(5000)
    ep.send(data)
    frames = la.sent + _settle(a, b, la, lb, clock)
    assert any(len(f) - 14 > 1280 for f in frames)
    for f in frames:
        _check_frame(f, mac_b, mac_a, 6)
    assert _recv_all(server) == data and ep.conn.snd_una == ep.conn.snd_max
    # the source address removed: no direct path (the general one has no answer either)
    a.addr_del(2, "fc00:9::1/64")
    assert a.tcp._path(ep, clock[0]) is None and ep.path is None


def test_a_learned_ipv6_path_mtu_limits_the_direct_path_through_a_router() -> None:
    """A -- R -- B, R's link to B with MTU 1280: R's Packet Too Big makes A's path use
    the smaller MTU (TCP's segments shrink to fit it), frames from A go to R's MAC, both
    ways byte-exact."""
    la, lr0, lr1, lb = ListLink(), ListLink(), ListLink(), ListLink()
    clock = [100.0]
    a = Stack(link=la, runner=False, clock=lambda: clock[0])
    b = Stack(link=lb, runner=False, clock=lambda: clock[0])
    r = Stack(link=lr0, runner=False, forwarding=True, clock=lambda: clock[0])
    r.add_interface(lr1, mtu=1280)
    a.configure("eth,ip=fc00:9::1/64,gw=fc00:9::fe")
    r.configure("eth,iface=eth0,ip=fc00:9::fe/64")
    r.configure("eth,iface=eth1,ip=fc00:10::fe/64")
    b.configure("eth,ip=fc00:10::2/64,gw=fc00:10::fe")
    wires = [(la, r, r.interfaces[2]), (lr0, a, a.interfaces[2]),
             (lr1, b, b.interfaces[2]), (lb, r, r.interfaces[3])]
    seen: list[bytes] = []

    def move() -> None:
        while any(link.sent for link, _, _ in wires):
            for link, stack, iface in wires:
                frames, link.sent = link.sent, []
                if link is la:
                    seen.extend(frames)
                opened = stack.begin_batch()
                for f in frames:
                    stack.input(iface, f, clock[0])
                if opened:
                    stack.end_batch()

    _dad(clock, a, b, r)
    move()
    far = ipaddress.ip_address("fc00:10::2").packed
    b.tcp.listen(6, b"", 5000, 8)
    ep = a.tcp.connect(6, None, 0, far, 5000, clock[0])
    move()
    assert ep.conn.established
    [server] = list(b.tcp.conns.values())
    _exchange(ep, server, 100_000, clock, (a, b, r), move)
    assert r.stats.get("ip6_forwarded", 0) > 0
    # A learned R's MTU and its direct path uses it: whole segments never left A again
    assert a.pmtu[far][0] == 1280
    assert ep.path is not None and ep.path.mtu == 1280
    assert ep.path.nexthop == ipaddress.ip_address("fc00:9::fe").packed
    mac_r = r.interfaces[2].mac
    tcp_frames = [f for f in seen if f[12:14] == b"\x86\xdd" and f[20] == 6]
    assert tcp_frames
    for f in tcp_frames:
        _check_frame(f, mac_r, a.interfaces[2].mac, 6, src_ip=IP6_A, dst_ip=far)
    # the segments A sent before the first Packet Too Big came back were too large; after
    # it, every segment fits (none needs fragments)
    big = [i for i, f in enumerate(tcp_frames) if len(f) - 14 > 1280]
    assert big and big == list(range(big[0], big[0] + len(big)))
    assert len(big) < len(tcp_frames) // 2
    assert not any(f[20] == ipv6.PROTO_FRAGMENT for f in seen)


def test_ipv6_direct_paths_work_with_a_stack_without_them() -> None:
    """B takes the general input and output paths only (its direct ones turned off): A's
    direct frames reach it, and B's general ones reach A's direct input, both ways."""
    a, b, la, lb, clock = _pair()
    b.fast_path6 = lambda src, dst, now: None  # type: ignore[method-assign]
    b._input_fast6 = lambda *args: False  # type: ignore[method-assign]
    b.tcp.listen(6, b"", 5000, 8)
    ep = a.tcp.connect(6, None, 0, IP6_B, 5000, clock[0])
    _move(a, b, la, lb, clock[0])
    assert ep.conn.established
    [server] = list(b.tcp.conns.values())
    a_hits = _count_fast_input(a, 6)
    down = _exchange(ep, server, 150_001, clock, (a, b), lambda: _move(a, b, la, lb, clock[0]))
    assert ep.path is not None and server.path is None
    assert a_hits[0] > len(down) // 1500
    assert a.interfaces[2].rx_errors == 0 and b.interfaces[2].rx_errors == 0


def test_ipv6_direct_input_leaves_odd_frames_to_the_general_path() -> None:
    """Frames the direct input path must not take (a payload length beyond the frame, an
    extension header, another destination, a runt) get the general path's answer; a bad
    TCP checksum is an error there as here. Nothing raises."""
    a, b, la, lb, clock, ep, server = _established(6)
    ep.send(b"hello")
    [frame] = la.sent
    la.sent.clear()
    iface = b.interfaces[2]
    hits = _count_fast_input(b, 6)

    def variant(f: bytes | bytearray) -> None:
        b.input(iface, bytes(f), clock[0])

    long = bytearray(frame)
    long[18:20] = (len(frame) - 54 + 1).to_bytes(2, "big")
    variant(long)  # payload length beyond the frame: malformed
    bad = bytearray(frame)
    bad[-1] ^= 0xFF
    variant(bad)  # TCP checksum: malformed
    variant(frame[:60])  # a runt: malformed
    other = bytearray(frame)
    other[53] ^= 0x01  # to an address that is not ours: ignored (not forwarding)
    variant(other)
    assert iface.rx_errors == 3 and b.stats["rx_malformed"] == 3
    assert hits[0] == 0 and not server.conn.recv_queued
    # a Destination Options header (PadN) before TCP: the general path walks it
    ext = bytearray(frame[:54]) + bytes([6, 0, 1, 4, 0, 0, 0, 0]) + frame[54:]
    ext[20] = ipv6.PROTO_DSTOPTS
    ext[18:20] = (len(frame) - 54 + 8).to_bytes(2, "big")
    variant(ext)
    assert hits[0] == 0 and server.recv(100) == b"hello"
    assert iface.rx_errors == 3
