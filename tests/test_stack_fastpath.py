"""The stack's direct IPv4/TCP paths (whole-frame output from a cached path, direct
input) on two stacks joined by an in-memory link, without a driver: the frames they
build must be valid on the wire, and the cached path must follow neighbor and MTU
changes."""

from __future__ import annotations

import os

from threadnet.link import Link
from threadnet.stack.stack import Stack
from threadnet.wire import ipv4, tcp

IP_A, IP_B = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])


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
    a, b = Stack(link=la, driver=False), Stack(link=lb, driver=False)
    a.configure("eth,ip=10.9.0.1/24")
    b.configure("eth,ip=10.9.0.2/24")
    clock = [100.0]
    a.clock = b.clock = lambda: clock[0]
    return a, b, la, lb, clock


def _move(a: Stack, b: Stack, la: ListLink, lb: ListLink, now: float) -> list[bytes]:
    """Deliver everything queued both ways (in batches) until quiet; returns a->b frames."""
    seen = []
    while la.sent or lb.sent:
        for src, dst, link in ((la, b, b.interfaces[2]), (lb, a, a.interfaces[2])):
            frames, src.sent = src.sent, []
            if src is la:
                seen += frames
            opened = dst.begin_batch()
            for f in frames:
                dst.input(link, f, now)
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


def _established():
    a, b, la, lb, clock = _pair()
    b.tcp.listen(4, b"", 5000, 8)
    ep = a.tcp.connect(4, None, 0, IP_B, 5000, clock[0])
    _move(a, b, la, lb, clock[0])
    assert ep.conn.established
    [server] = [e for e in b.tcp.conns.values()]
    return a, b, la, lb, clock, ep, server


def _check_frame(f: bytes, dst_mac: bytes, src_mac: bytes) -> tuple:
    assert f[:6] == dst_mac and f[6:12] == src_mac and f[12:14] == b"\x08\x00"
    fields = ipv4.parse(memoryview(f)[14:])  # verifies the header checksum
    tos, total, ident, flags, frag, ttl, proto, src, dst, hl, _ = fields
    assert (proto, ttl, flags & ipv4.FLAG_DF, src, dst) == (6, 64, ipv4.FLAG_DF, IP_A, IP_B)
    return tcp.parse(memoryview(f)[14 + hl:14 + total], src, dst)  # verifies the checksum


def test_fast_frames_are_valid_and_carry_the_data() -> None:
    a, b, la, lb, clock, ep, server = _established()
    assert ep.path is None or ep.path.mac == b.interfaces[2].mac
    data = os.urandom(200_000) + b"x"  # odd length: the last segment pads its checksum
    got = bytearray()
    sent = 0
    frames = []
    for _ in range(10_000):
        if len(got) == len(data):
            break
        sent += ep.send(data[sent:sent + 65536])
        clock[0] += 0.05  # delayed ACKs and other timers come due
        for s in (a, b):
            s.on_timer(clock[0])
        frames += _move(a, b, la, lb, clock[0])
        while server.conn.recv_queued:
            got += server.recv(1 << 20)
    assert bytes(got) == data
    assert ep.path is not None  # the direct output path was used
    lengths = 0
    for f in frames:
        fields = _check_frame(f, b.interfaces[2].mac, a.interfaces[2].mac)
        lengths += len(f) - 14 - 20 - fields[4]
    assert lengths == len(data)
    assert b.interfaces[2].rx_errors == 0 and a.interfaces[2].rx_errors == 0


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
    a.tcp.flush(ep)
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
