"""TCP on stacks under abuse and at scale: SYN floods, vanished peers, a thousand
connections on one stack. Transfers through impaired links are in test_stack_impaired.py."""

from __future__ import annotations

import os
import random
import selectors
import socket
import threading
import time

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import create_connection, create_server
from threadnet.stack.tcplayer import SYN_BACKLOG
from threadnet.switch.server import SwitchServer
from threadnet.wire import ipv4, tcp

from stack_helpers import ListLink

MAC = bytes.fromhex("020000000001")
PEER_MAC = bytes.fromhex("020000000002")




def tcp_frame(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"") -> bytes:
    seg = bytearray(20 + len(payload))
    tcp.build(seg, src, dst, sport, dport, seq, ack, flags, 65535, payload)
    ip = bytearray(20)
    ipv4.build(ip, src, dst, ipv4.PROTO_TCP, len(seg))
    return MAC + PEER_MAC + b"\x08\x00" + bytes(ip) + bytes(seg)


def test_syn_flood_memory_bounded_and_real_client_connects():
    s = Stack(runner=False)
    link = ListLink()
    iface = s.add_interface(link, mac=MAC)
    s.configure("eth,ip=10.1.0.1/16", 0.0)
    me = bytes([10, 1, 0, 1])
    # the flood's "sources" are on-link: give them static neighbors so replies go out
    rnd = random.Random(3)
    srv = s.tcp.listen(4, b"", 80, 128)
    import resource

    now = 1.0
    rss_after_warmup = 0
    for i in range(100_000):
        if i == 10_000:
            rss_after_warmup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        src = bytes([10, 1, rnd.randrange(1, 255), rnd.randrange(1, 255)])
        s.input(iface, tcp_frame(src, me, rnd.randrange(1024, 65535), 80,
                                 rnd.getrandbits(32), 0, tcp.SYN), now)
        if i % 1000 == 0:
            link.sent.clear()
            now += 0.01
            s.on_timer(now)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_after_warmup
    assert len(srv.half_open) <= SYN_BACKLOG
    assert len(s.tcp.conns) <= SYN_BACKLOG
    assert len(s.tcp.timers) <= 4 * SYN_BACKLOG + 64
    assert len(iface.arp) <= iface.arp.max_entries
    # 90,000 more SYNs after the warm-up must not grow the process noticeably
    assert grown_kib < 32 * 1024, f"memory grew by {grown_kib} KiB under the flood"
    # a real client: SYN, then the ACK of our SYN-ACK
    client = bytes([10, 1, 200, 200])
    s.interfaces[iface.index].arp.add_static(client, PEER_MAC)
    link.sent.clear()
    s.input(iface, tcp_frame(client, me, 40000, 80, 1000, 0, tcp.SYN), now)
    synack = [f for f in link.sent if f[12:14] == b"\x08\x00" and f[14 + 9] == 6]
    assert synack, "no SYN-ACK for the real client"
    seg = memoryview(synack[-1])[34:]
    _, _, seq, ack, _, flags, *_ = tcp.parse(seg, me, client)
    assert flags & (tcp.SYN | tcp.ACK) == tcp.SYN | tcp.ACK and ack == 1001
    s.input(iface, tcp_frame(client, me, 40000, 80, 1001, (seq + 1) & 0xFFFFFFFF, tcp.ACK), now)
    ep = srv.accept()
    assert ep is not None and ep.remote == (client, 40000)
    link.close()


@pytest.fixture
def pair(sockdir):
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-robust")
    url = f"vde://{sw.directory}"
    a = Stack("eth,ip=10.11.0.1/24", link=url, runner=runner, name="A")
    b = Stack("eth,ip=10.11.0.2/24", link=url, runner=runner, name="B")
    yield a, b
    a.close()
    b.close()
    runner.stop()
    sw.close()


def test_vanished_peer_never_hangs_past_timeout(pair):
    a, b = pair
    srv = create_server(b, ("", 80))
    c = create_connection(a, ("10.11.0.2", 80), timeout=5)
    conn, _ = srv.accept()
    # the peer's network disappears: its link goes down, nothing answers any more
    b.interfaces[2].up = False
    c.settimeout(1.0)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError):
        c.recv(100)
    assert time.monotonic() - t0 < 2.5
    # data pending for a vanished peer: close returns at once
    c.sendall(b"x" * 100_000)
    t0 = time.monotonic()
    c.close()
    assert time.monotonic() - t0 < 0.5
    conn.close()
    srv.close()


def test_reset_reaches_the_application(pair):
    a, b = pair
    srv = create_server(b, ("", 81))
    c = create_connection(a, ("10.11.0.2", 81), timeout=5)
    conn, _ = srv.accept()
    with b.locked():  # the server aborts: RST
        ep = next(iter(e for e in b.tcp.conns.values() if e.local[1] == 81))
        ep.abort()
    c.settimeout(5)
    with pytest.raises(ConnectionResetError):
        while c.recv(100):
            pass
    c.close()
    conn.close()
    srv.close()


def test_a_thousand_connections_on_one_stack(pair):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8192:
        pytest.skip(f"needs 8192 file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    a, b = pair
    srv = create_server(b, ("", 7), backlog=1024)
    accepted: list[socket.socket] = []

    def acceptor():
        while len(accepted) < 1000:
            conn, _ = srv.accept()
            accepted.append(conn)

    t = threading.Thread(target=acceptor, daemon=True)
    t.start()
    clients = [create_connection(a, ("10.11.0.2", 7), timeout=10) for _ in range(1000)]
    t.join(30)
    assert len(accepted) == 1000
    assert len(b.tcp.conns) >= 1000
    # data on every connection: each client sends its number, the server side echoes
    for i, c in enumerate(clients):
        c.sendall(f"{i:04d}".encode())
    sel = selectors.DefaultSelector()
    for conn in accepted:
        conn.setblocking(False)
        sel.register(conn, selectors.EVENT_READ)
    echoed = 0
    deadline = time.monotonic() + 30
    while echoed < 1000 and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            data = key.fileobj.recv(16)
            if data:
                key.fileobj.setblocking(True)
                key.fileobj.sendall(data)
                sel.unregister(key.fileobj)
                echoed += 1
    assert echoed == 1000
    for i, c in enumerate(clients):
        assert c.recv(4) == f"{i:04d}".encode()
    for s in clients + accepted:
        s.close()
    srv.close()


# -- a new connection over one in TIME-WAIT (RFC 6191) --------------------------------------

@pytest.mark.parametrize("timestamps", [True, False])
def test_a_reconnect_from_the_same_port_ends_time_wait_at_once(timestamps: bool) -> None:
    """The server closes first and keeps TIME-WAIT; the client connects again from the
    same port. The new SYN is a new incarnation (its timestamp, or without timestamps
    its ISN, is past the old connection's), so the server takes it at once, with no
    challenge ACK, no RST and no SYN retransmission (which would cost 1 s)."""
    from test_stack_fastpath import IP_B, _move, _pair

    a, b, la, lb, clock = _pair()
    b.tcp.listen(4, b"", 80, 8)
    for round_ in range(3):
        ep = a.tcp.connect(4, None, 40000, IP_B, 80, clock[0], timestamps=timestamps)
        _move(a, b, la, lb, clock[0])
        assert ep.conn.established, round_
        [srv] = [e for e in b.tcp.conns.values() if e.conn.state.name == "ESTABLISHED"]
        srv.send(b"bye")
        srv.close()
        _move(a, b, la, lb, clock[0])
        assert ep.recv(10) == b"bye"
        ep.close()
        _move(a, b, la, lb, clock[0])
        assert srv.conn.state.name == "TIME_WAIT"
        clock[0] += 0.01  # well within 2 MSL
    assert a.tcp.rst_sent == b.tcp.rst_sent == 0
    assert ep.conn.stats.retransmits == 0


def test_a_syn_from_an_old_incarnation_does_not_end_time_wait() -> None:
    """A SYN whose timestamp is older than the last one seen (a stray from the past) gets
    the RFC 5961 challenge ACK and leaves TIME-WAIT in place."""
    from test_stack_fastpath import IP_A, IP_B, _move, _pair

    a, b, la, lb, clock = _pair()
    b.tcp.listen(4, b"", 80, 8)
    ep = a.tcp.connect(4, None, 40001, IP_B, 80, clock[0])
    _move(a, b, la, lb, clock[0])
    [srv] = list(b.tcp.conns.values())
    srv.close()
    _move(a, b, la, lb, clock[0])
    ep.close()
    _move(a, b, la, lb, clock[0])
    assert srv.conn.state.name == "TIME_WAIT"
    old_ts = (srv.conn.ts_recent - 1000) & 0xFFFFFFFF
    seg = bytearray(32)
    tcp.build(seg, IP_A, IP_B, 40001, 80, 12345, 0, tcp.SYN, 65535, ts=(old_ts, 0))
    ip = bytearray(20)
    ipv4.build(ip, IP_A, IP_B, ipv4.PROTO_TCP, len(seg))
    frame = b.interfaces[2].mac + a.interfaces[2].mac + b"\x08\x00" + bytes(ip) + bytes(seg)
    b.input(b.interfaces[2], frame, clock[0])
    assert srv.conn.state.name == "TIME_WAIT"
    assert b.tcp.conns[(IP_B, 80, IP_A, 40001)] is srv
    [answer] = lb.sent
    assert tcp.parse(memoryview(answer)[34:], IP_B, IP_A)[5] == tcp.ACK  # the challenge ACK
