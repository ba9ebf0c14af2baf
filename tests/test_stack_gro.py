"""Receive coalescing (``Stack.input_many``, Linux's GRO): a run of in-order data
segments of one connection goes to TCP as one segment, once every frame's checksums are
checked; everything else goes frame by frame. Driven on fake time with in-memory links."""

from __future__ import annotations

import os
import random

from test_stack_fastpath import IP_B, ListLink, _pair
from threadnet import Stack
from threadnet.wire import ipv4, tcp


def _deliver(dst: Stack, frames: list[bytes], now: float) -> None:
    opened = dst.begin_batch()
    dst.input_many(dst.interfaces[2], [memoryview(f) for f in frames], now)
    if opened:
        dst.end_batch()


def _connect(a: Stack, b: Stack, la: ListLink, lb: ListLink, clock: list[float], port=5000):
    b.tcp.listen(4, b"", port, 8)
    ep = a.tcp.connect(4, None, 0, IP_B, port, clock[0])
    for _ in range(3):
        _deliver(b, la.sent, clock[0])
        la.sent = []
        _deliver(a, lb.sent, clock[0])
        lb.sent = []
    assert ep.conn.established
    [server] = [e for e in b.tcp.conns.values() if e.local[1] == port]
    return ep, server


def _run(mangle, size: int = 400_000, seed: int = 1):
    """Send ``size`` random bytes a -> b; ``mangle(frames, rng)`` may reorder, drop,
    corrupt or add to each batch a sends before b takes it with input_many. Returns
    (data, what b got, b)."""
    rng = random.Random(seed)
    a, b, la, lb, clock = _pair()
    ep, server = _connect(a, b, la, lb, clock)
    data = os.urandom(size)
    got = bytearray()
    sent = 0
    for _ in range(20_000):
        if len(got) == size:
            break
        if sent < size:
            sent += ep.send(data[sent:sent + 65536])
        clock[0] += 0.01
        for s in (a, b):
            s.on_timer(clock[0])
        while la.sent or lb.sent:
            frames, la.sent = la.sent, []
            _deliver(b, mangle(frames, rng), clock[0])
            acks, lb.sent = lb.sent, []
            _deliver(a, acks, clock[0])
        while server.conn.recv_queued:
            got += server.recv(1 << 20)
    return data, bytes(got), b, ep


def test_runs_are_coalesced_and_the_data_is_exact() -> None:
    data, got, b, ep = _run(lambda frames, rng: frames)
    assert got == data
    iface = b.interfaces[2]
    # every frame counted, but TCP saw far fewer segments than frames
    assert iface.rx_packets >= len(data) // 1448
    [server] = list(b.tcp.conns.values())
    assert server.conn.stats.segments_in < iface.rx_packets // 4
    assert ep.conn.stats.retransmits == 0


def test_reordering_loss_and_duplicates_break_runs_but_not_the_data() -> None:
    def mangle(frames, rng):
        frames = list(frames)
        rng.shuffle(frames) if rng.random() < 0.3 else None
        frames = [f for f in frames if rng.random() > 0.03]
        if frames and rng.random() < 0.3:
            frames.insert(rng.randrange(len(frames)), rng.choice(frames))
        return frames

    data, got, b, ep = _run(mangle, seed=7)
    assert got == data
    assert ep.conn.stats.retransmits > 0  # the losses happened


def test_a_corrupted_frame_in_a_run_is_dropped_alone() -> None:
    """A frame with a bad TCP checksum (or IPv4 header checksum) is never merged: it goes
    its own way, is counted as an error, and TCP resends it."""
    hits = [0, 0]

    def mangle(frames, rng):
        out = []
        for f in frames:
            if len(f) > 100 and rng.random() < 0.05:
                bad = bytearray(f)
                if rng.random() < 0.5:
                    bad[rng.randrange(66, len(bad))] ^= 0x40  # in the data
                    hits[0] += 1
                else:
                    bad[22] ^= 0x01  # the TTL: the header checksum no longer holds
                    hits[1] += 1
                f = bytes(bad)
            out.append(f)
        return out

    data, got, b, ep = _run(mangle, seed=3)
    assert got == data
    assert hits[0] and hits[1]
    assert b.interfaces[2].rx_errors >= sum(hits)


def test_two_connections_interleaved_and_frames_for_others() -> None:
    """Frames of two connections alternating in a batch, and frames that are not for the
    stack, each reach the right place."""
    a, b, la, lb, clock = _pair()
    ep1, s1 = _connect(a, b, la, lb, clock, 5001)
    ep2, s2 = _connect(a, b, la, lb, clock, 5002)
    d1, d2 = os.urandom(100_000), os.urandom(100_000)
    g1, g2 = bytearray(), bytearray()
    n1 = n2 = 0
    for _ in range(5000):
        if len(g1) == len(d1) and len(g2) == len(d2):
            break
        n1 += ep1.send(d1[n1:n1 + 30_000])
        n2 += ep2.send(d2[n2:n2 + 30_000])
        clock[0] += 0.01
        for s in (a, b):
            s.on_timer(clock[0])
        while la.sent or lb.sent:
            frames, la.sent = la.sent, []
            f1 = [f for f in frames if f[34:36] == ep1.local[1].to_bytes(2, "big")]
            f2 = [f for f in frames if f[34:36] != ep1.local[1].to_bytes(2, "big")]
            mixed = [f for pair in zip(f1, f2, strict=False) for f in pair]
            mixed += f1[len(f2):] + f2[len(f1):]
            if mixed:
                # a copy of one to a MAC that is not b's, in the middle: dropped, not merged
                other = bytearray(mixed[0])
                other[0:6] = b"\x02\x00\x00\x00\x00\x99"
                mixed.insert(len(mixed) // 2, bytes(other))
            _deliver(b, mixed, clock[0])
            acks, lb.sent = lb.sent, []
            _deliver(a, acks, clock[0])
        while s1.conn.recv_queued:
            g1 += s1.recv(1 << 20)
        while s2.conn.recv_queued:
            g2 += s2.recv(1 << 20)
    assert bytes(g1) == d1 and bytes(g2) == d2


def test_frames_for_another_host_are_forwarded_one_by_one() -> None:
    """A forwarding stack gets a run of segments for another host: it does not merge them
    (it is not their end), each is forwarded as it came."""
    la, lout = ListLink(), ListLink()
    now = 100.0
    r = Stack(link=la, runner=False, forwarding=True, clock=lambda: now)
    r.add_interface(lout)
    r.configure("eth,iface=eth0,ip=10.9.0.1/24")
    r.configure("eth,iface=eth1,ip=10.10.0.1/24")
    # learn the far host's MAC from its ARP request for the router
    from threadnet.wire import arp, ethernet

    far_mac = b"\x02\x00\x00\x00\x00\x0a"
    req = bytearray(42)
    ethernet.build(req, b"\xff" * 6, far_mac, ethernet.ETH_P_ARP)
    arp.build(memoryview(req)[14:], arp.OP_REQUEST, far_mac, bytes([10, 10, 0, 9]),
              bytes(6), bytes([10, 10, 0, 1]))
    r.input(r.interfaces[3], bytes(req), now)
    lout.sent.clear()
    frames = []
    seq = 1000
    for _ in range(10):
        payload = os.urandom(1448)
        seg = bytearray(32 + len(payload))
        tcp.build(seg, bytes([10, 9, 0, 9]), bytes([10, 10, 0, 9]), 4000, 80, seq, 1,
                  tcp.ACK, 100, payload, ts=(5, 6))
        pkt = bytearray(20 + len(seg))
        ipv4.build(pkt, bytes([10, 9, 0, 9]), bytes([10, 10, 0, 9]), 6, len(seg), ttl=64,
                   flags=ipv4.FLAG_DF)
        pkt[20:] = seg
        frame = bytearray(14) + pkt
        ethernet.build(frame, r.interfaces[2].mac, b"\x02\x00\x00\x00\x00\x09",
                       ethernet.ETH_P_IPV4)
        frames.append(bytes(frame))
        seq += len(payload)
    r.input_many(r.interfaces[2], [memoryview(f) for f in frames], now)
    out = [f for f in lout.sent if f[12:14] == b"\x08\x00"]
    assert len(out) == 10
    assert [f[34 + 4:34 + 8] for f in out] == [f[34 + 4:34 + 8] for f in frames]


def test_mangled_batches_and_offload_headers_never_raise() -> None:
    """Batches of a real connection's frames, mangled (bytes flipped, cut short, grown,
    reordered, duplicated, made larger than the MTU), go through ``input_many``; single
    frames go through ``input`` with random virtio-net headers (any flags, GSO type and
    size, checksum offsets). Nothing may escape, and the stack's memory stays bounded."""
    rng = random.Random(11)
    a, b, la, lb, clock = _pair()
    ep, server = _connect(a, b, la, lb, clock)
    iface = b.interfaces[2]
    frames: list[bytes] = []
    for _ in range(30):
        ep.send(os.urandom(60_000))
        frames += la.sent
        _deliver(b, la.sent, clock[0])
        la.sent = []
        _deliver(a, lb.sent, clock[0])
        lb.sent = []
        while server.conn.recv_queued:
            server.recv(1 << 20)
    assert len(frames) > 1000
    gso_types = [0, 1, 3, 4, 0x81, 0x84, 2, 255]
    for i in range(4000):
        batch = []
        for _ in range(rng.randrange(1, 40)):
            f = bytearray(rng.choice(frames))
            r = rng.random()
            if r < 0.3:
                for _ in range(rng.randrange(1, 4)):
                    f[rng.randrange(len(f))] ^= 1 << rng.randrange(8)
            elif r < 0.4:
                del f[rng.randrange(len(f)):]
            elif r < 0.5:
                f += rng.randbytes(rng.randrange(1, 3000))
            batch.append(bytes(f))
        if rng.random() < 0.3:
            rng.shuffle(batch)
        b.input_many(iface, [memoryview(f) for f in batch], clock[0])
        f = rng.choice(batch)
        header = (rng.randrange(4), rng.choice(gso_types), rng.randrange(0, 200),
                  rng.choice([0, 1, 7, 536, 1448, rng.randrange(65536)]),
                  rng.choice([34, 54, rng.randrange(0, 2000)]),
                  rng.choice([6, 16, rng.randrange(0, 70)]))
        b.input(iface, f, clock[0], header)
        if i % 200 == 0:
            clock[0] += 0.05
            b.on_timer(clock[0])
            lb.sent.clear()
            while server.conn.recv_queued:
                server.recv(1 << 20)
    assert len(b.tcp.conns) <= 2
    assert b.reasm4.buffered <= b.reasm4.max_bytes
