"""Connection tracking (stack/conntrack.py) on fake time, packet by packet: every TCP
state transition and timeout as Linux's nf_conntrack has them, UDP, ICMP and ICMPv6
(echo, errors as RELATED, neighbor discovery untracked), the bounded table's early drop
under a flood, expiry in time order, NAT's reply tuple."""

from __future__ import annotations

import random
import struct

import pytest

from threadnet.stack import conntrack as ct
from threadnet.stack.conntrack import (
    CLOSE,
    CLOSE_WAIT,
    ESTABLISHED,
    ESTABLISHED_,
    FIN_WAIT,
    INVALID,
    LAST_ACK,
    NEW,
    RELATED,
    SEEN_REPLY,
    SYN_RECV,
    SYN_SENT,
    SYN_SENT2,
    TIME_WAIT,
    TIMEOUTS,
    UNTRACKED,
    Conntrack,
)

C4, S4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
C6, S6 = bytes.fromhex("fc00" + "00" * 13 + "01"), bytes.fromhex("fc00" + "00" * 13 + "02")
FIN, SYN, RST, PSH, ACK, URG = 1, 2, 4, 8, 16, 32


# -- packets (checksums do not matter to the tracker) -------------------------------------------
def ip4(src: bytes, dst: bytes, proto: int, payload: bytes, frag: int = 0,
        ident: int = 1) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident, frag, 64, proto,
                       0, src, dst) + payload


def ip6(src: bytes, dst: bytes, nh: int, payload: bytes) -> bytes:
    return struct.pack("!IHBB16s16s", 0x60000000, len(payload), nh, 64, src, dst) + payload


def tcp_seg(sport: int, dport: int, seq: int, ack: int, flags: int, data: bytes = b"") -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, seq, ack, 5 << 4, flags, 65535, 0, 0) + data


def tcp4(src, dst, sport, dport, seq, ack, flags, data=b""):
    return ip4(src, dst, 6, tcp_seg(sport, dport, seq, ack, flags, data))


def udp4(src, dst, sport, dport, data=b"x"):
    return ip4(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def udp6(src, dst, sport, dport, data=b"x"):
    return ip6(src, dst, 17, struct.pack("!HHHH", sport, dport, 8 + len(data), 0) + data)


def icmp4(src, dst, kind, code=0, ident=0, seq=0, body=b""):
    return ip4(src, dst, 1, struct.pack("!BBHHH", kind, code, 0, ident, seq) + body)


def icmp6(src, dst, kind, code=0, ident=0, seq=0, body=b""):
    return ip6(src, dst, 58, struct.pack("!BBHHH", kind, code, 0, ident, seq) + body)


class Flow:
    """A TCP connection between C4:40000 (client) and S4:80 (server), driven segment by
    segment through a tracker on a fake clock."""

    def __init__(self, table: Conntrack | None = None, now: float = 1000.0) -> None:
        self.t = Conntrack() if table is None else table
        self.now = now
        self.cseq, self.sseq = 1000, 5000

    def c(self, flags: int, data: bytes = b"", seq: int | None = None, ack: int | None = None):
        """The client sends; returns (connection, direction, ct state)."""
        pkt = tcp4(C4, S4, 40000, 80, self.cseq if seq is None else seq,
                   self.sseq if ack is None else ack, flags, data)
        r = self.t.track_packet(4, memoryview(pkt), self.now)
        if seq is None and r[2] != INVALID:
            self.cseq += len(data) + (1 if flags & (SYN | FIN) else 0)
        return r

    def s(self, flags: int, data: bytes = b"", seq: int | None = None, ack: int | None = None):
        pkt = tcp4(S4, C4, 80, 40000, self.sseq if seq is None else seq,
                   self.cseq if ack is None else ack, flags, data)
        r = self.t.track_packet(4, memoryview(pkt), self.now)
        if seq is None and r[2] != INVALID:
            self.sseq += len(data) + (1 if flags & (SYN | FIN) else 0)
        return r

    def conn(self):
        hit = self.t.find((C4, S4, 6, 40000, 80))
        return None if hit is None else hit[0]

    def remaining(self) -> float:
        return self.conn().deadline - self.now

    def handshake(self) -> None:
        assert self.c(SYN)[2] == NEW
        assert self.s(SYN | ACK)[2] == ESTABLISHED
        assert self.c(ACK)[2] == ESTABLISHED


# -- TCP: the state machine --------------------------------------------------------------------
def test_tcp_handshake_states_timeouts_and_assured():
    f = Flow()
    conn, d, state = f.c(SYN)
    assert (d, state, conn.state) == (ct.ORIGINAL, NEW, SYN_SENT)
    assert f.remaining() == TIMEOUTS["tcp_syn_sent"] == 120
    assert f.c(SYN, seq=f.cseq - 1)[2] == NEW  # a retransmitted SYN: still new
    conn, d, state = f.s(SYN | ACK)
    assert (d, state, conn.state) == (ct.REPLY, ESTABLISHED, SYN_RECV)
    assert f.remaining() == 60 and conn.status & SEEN_REPLY and not conn.assured
    conn, d, state = f.c(ACK)
    assert (state, conn.state) == (ESTABLISHED, ESTABLISHED_) and conn.assured
    assert f.remaining() == 432000
    assert f.t.listing(f.now) == [
        "tcp      6 432000 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 "
        "src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED]"]


def test_tcp_unacknowledged_data_shortens_the_established_timeout():
    f = Flow()
    f.handshake()
    f.c(ACK | PSH, b"x" * 100)  # data the server has not acknowledged yet
    assert f.remaining() == TIMEOUTS["tcp_unacknowledged"] == 300
    f.s(ACK)  # acknowledged: back to five days
    assert f.remaining() == 432000


def test_tcp_three_retransmissions_shorten_the_timeout():
    f = Flow()
    f.handshake()
    f.s(ACK)
    seq = f.cseq
    f.c(ACK | PSH, b"y" * 10)
    for _ in range(3):
        f.c(ACK | PSH, b"y" * 10, seq=seq)
    assert f.conn().tcp.retrans == 3
    assert f.remaining() == TIMEOUTS["tcp_max_retrans"] == 300


def test_tcp_orderly_close_fin_wait_close_wait_last_ack_time_wait():
    f = Flow()
    f.handshake()
    conn = f.conn()
    f.c(FIN | ACK)
    assert conn.state == FIN_WAIT and f.remaining() == 120
    f.s(ACK)
    assert conn.state == CLOSE_WAIT and f.remaining() == 60
    f.s(FIN | ACK)
    assert conn.state == LAST_ACK and f.remaining() == 30
    f.c(ACK)
    assert conn.state == TIME_WAIT and f.remaining() == 120
    assert f.c(ACK, seq=f.cseq - 0)[2] == ESTABLISHED  # a retransmitted last ACK
    assert conn.state == TIME_WAIT


def test_tcp_simultaneous_close_fin_both_ways():
    f = Flow()
    f.handshake()
    conn = f.conn()
    f.c(FIN | ACK)
    f.s(FIN | ACK)  # FIN_WAIT -> LAST_ACK: FINs both ways
    assert conn.state == LAST_ACK
    f.c(ACK)
    assert conn.state == TIME_WAIT


def test_tcp_rst_closes_with_the_close_timeout():
    f = Flow()
    f.handshake()
    conn = f.conn()
    f.s(RST)
    assert conn.state == CLOSE and f.remaining() == TIMEOUTS["tcp_close"] == 10
    f.now += 10.5
    f.t.expire(f.now)
    assert f.conn() is None and len(f.t) == 0


def test_tcp_rst_to_a_syn_forgets_the_connection_at_once():
    f = Flow()
    f.c(SYN)
    conn, d, state = f.s(RST | ACK, ack=f.cseq)
    assert state == ESTABLISHED and conn.state == CLOSE
    assert f.conn() is None  # the only answer was a RST: nothing to keep


def test_tcp_rst_to_a_syn_must_acknowledge_it():
    f = Flow()
    f.c(SYN)
    assert f.s(RST | ACK, ack=f.cseq + 12345)[2] == INVALID  # a blind RST
    assert f.s(RST)[2] == INVALID  # no ACK at all
    assert f.conn().state == SYN_SENT


def test_tcp_invalid_segments():
    f = Flow()
    # no connection: a SYN-ACK, a FIN, a RST, no flags start nothing
    for flags in (SYN | ACK, FIN | ACK, RST, 0):
        assert f.c(flags)[2] == INVALID
    assert len(f.t) == 0
    # meaningless flag sets (nmap's -sF -sX -sN scans, SYN+FIN)
    for flags in (FIN, FIN | PSH | URG, SYN | FIN, SYN | RST):
        assert f.c(flags)[2] == INVALID
    f.c(SYN)
    assert f.c(ACK)[2] == INVALID  # an ACK before any SYN-ACK
    assert f.c(SYN | ACK)[2] == INVALID  # a client cannot answer its own SYN
    assert f.c(FIN | ACK)[2] == INVALID  # nor close before the answer
    assert f.conn().state == SYN_SENT
    assert f.t.stats["invalid"] >= 11


def test_tcp_loose_pickup_of_a_running_connection():
    f = Flow()
    conn, d, state = f.c(ACK | PSH, b"mid-stream")
    assert state == NEW and conn.state == ESTABLISHED_ and not conn.assured
    assert f.s(ACK)[2] == ESTABLISHED
    assert not f.conn().assured  # (the reply's own packet does not assure it)
    f.c(ACK)
    assert f.conn().assured
    strict = Flow(Conntrack(loose=False))
    assert strict.c(ACK)[2] == INVALID and len(strict.t) == 0


def test_tcp_simultaneous_open_syn_sent2():
    f = Flow()
    f.c(SYN)
    conn, d, state = f.s(SYN)  # the server's own SYN, not an answer
    assert conn.state == SYN_SENT2 and d == ct.REPLY
    assert f.remaining() == TIMEOUTS["tcp_syn_sent2"] == 120
    f.c(SYN | ACK)
    assert conn.state == SYN_RECV
    f.s(SYN | ACK, seq=f.sseq - 1)  # the server's SYN-ACK: it passes, nothing moves
    f.s(ACK)
    assert conn.state == SYN_RECV  # (an ACK from that side may answer a late SYN)
    f.c(ACK)
    assert conn.state == ESTABLISHED_


def test_tcp_syn_in_time_wait_reopens_the_connection():
    f = Flow()
    f.handshake()
    f.c(FIN | ACK)
    f.s(FIN | ACK)
    f.c(ACK)
    old = f.conn()
    assert old.state == TIME_WAIT
    f.cseq += 100000
    conn, d, state = f.c(SYN)  # the same ports again: a new connection
    assert state == NEW and conn is not old and conn.state == SYN_SENT
    assert len(f.t) == 1


def test_tcp_syn_on_an_established_entry_is_ignored_then_resyncs():
    """A SYN on an entry we believe established passes as IGNORED; the server's
    SYN-ACK that acknowledges it puts the tracker back in sync (SYN_RECV)."""
    f = Flow()
    f.handshake()
    conn = f.conn()
    f.cseq = 777
    assert f.c(SYN)[2] == ESTABLISHED  # passes: maybe the old connection is gone
    assert conn.state == ESTABLISHED_ and f.t.stats["ignore"] == 1
    f.sseq = 9999
    f.s(SYN | ACK)
    assert conn.state == SYN_RECV
    f.c(ACK)
    assert conn.state == ESTABLISHED_


def test_tcp_over_ipv6():
    t = Conntrack()
    syn = ip6(C6, S6, 6, tcp_seg(1234, 22, 1, 0, SYN))
    synack = ip6(S6, C6, 6, tcp_seg(22, 1234, 50, 2, SYN | ACK))
    assert t.track_packet(6, memoryview(syn), 0.0)[2] == NEW
    conn, d, state = t.track_packet(6, memoryview(synack), 0.0)
    assert (state, conn.state, d) == (ESTABLISHED, SYN_RECV, ct.REPLY)
    assert "src=fc00::1 dst=fc00::2 sport=1234 dport=22" in t.listing(0.0)[0]


# -- UDP, ICMP, others ------------------------------------------------------------------------
def test_udp_unreplied_then_stream_after_two_seconds():
    t = Conntrack()
    conn, d, state = t.track_packet(4, memoryview(udp4(C4, S4, 5000, 53)), 0.0)
    assert state == NEW and conn.deadline == 30
    assert t.track_packet(4, memoryview(udp4(C4, S4, 5000, 53)), 1.0)[2] == NEW
    assert t.track_packet(4, memoryview(udp4(S4, C4, 53, 5000)), 1.0)[2] == ESTABLISHED
    assert conn.deadline == 31 and not conn.assured  # replied, but not yet a stream
    assert t.track_packet(4, memoryview(udp4(C4, S4, 5000, 53)), 1.5)[2] == ESTABLISHED
    assert conn.deadline == 31.5 and not conn.assured
    t.track_packet(4, memoryview(udp4(C4, S4, 5000, 53)), 2.5)
    assert conn.assured and conn.deadline == 2.5 + TIMEOUTS["udp_stream"]


def test_udp_unreplied_expires_after_30_seconds():
    t = Conntrack()
    t.track_packet(4, memoryview(udp4(C4, S4, 5000, 53)), 0.0)
    t.expire(29.9)
    assert len(t) == 1
    t.expire(30.0)
    assert len(t) == 0 and t.stats["expired"] == 1


def test_icmp_echo_by_identifier_and_timeout():
    t = Conntrack()
    conn, d, state = t.track_packet(4, memoryview(icmp4(C4, S4, 8, ident=77)), 0.0)
    assert state == NEW and conn.deadline == 30
    assert t.track_packet(4, memoryview(icmp4(S4, C4, 0, ident=77)), 1.0)[2] == ESTABLISHED
    assert t.track_packet(4, memoryview(icmp4(S4, C4, 0, ident=78)), 1.0)[2] == INVALID
    assert t.track_packet(4, memoryview(icmp4(C4, S4, 0, ident=79)), 1.0)[2] == INVALID
    assert "type=8 code=0 id=77" in t.listing(1.0)[0]
    t.expire(31.0)
    assert len(t) == 0
    # ICMPv6 echo
    assert t.track_packet(6, memoryview(icmp6(C6, S6, 128, ident=5)), 0.0)[2] == NEW
    assert t.track_packet(6, memoryview(icmp6(S6, C6, 129, ident=5)), 0.0)[2] == ESTABLISHED


def test_icmp_errors_about_tracked_flows_are_related():
    t = Conntrack()
    probe = udp4(C4, S4, 5000, 9)
    t.track_packet(4, memoryview(probe), 0.0)
    err = icmp4(S4, C4, 3, 3, body=probe[:28])  # port unreachable, quoting the probe
    conn, d, state = t.track_packet(4, memoryview(err), 0.0)
    assert state == RELATED and conn is not None
    other = icmp4(S4, C4, 3, 3, body=udp4(C4, S4, 5001, 9)[:28])
    assert t.track_packet(4, memoryview(other), 0.0)[2] == INVALID
    # an error about a TCP flow, and a time exceeded about an echo request
    f = Flow(t, 0.0)
    f.c(SYN)
    syn = tcp4(C4, S4, 40000, 80, f.cseq - 1, f.sseq, SYN)
    assert t.track_packet(4, memoryview(icmp4(S4, C4, 3, 13, body=syn[:28])), 0.0)[2] == RELATED
    echo = icmp4(C4, S4, 8, ident=9)
    t.track_packet(4, memoryview(echo), 0.0)
    assert t.track_packet(4, memoryview(icmp4(S4, C4, 11, body=echo[:28])), 0.0)[2] == RELATED
    # IPv6: a port unreachable quoting a tracked datagram
    probe6 = udp6(C6, S6, 5000, 9)
    t.track_packet(6, memoryview(probe6), 0.0)
    assert t.track_packet(6, memoryview(icmp6(S6, C6, 1, 4, body=probe6)), 0.0)[2] == RELATED
    # errors quote too little: invalid, never an exception
    assert t.track_packet(4, memoryview(icmp4(S4, C4, 3, 3, body=probe[:10])), 0.0)[2] == INVALID
    assert t.track_packet(6, memoryview(icmp6(S6, C6, 1, 4, body=b"\x60")), 0.0)[2] == INVALID


def test_neighbor_discovery_is_untracked_and_other_icmp_is_invalid():
    t = Conntrack()
    for kind in (133, 134, 135, 136, 137, 143):
        assert t.track_packet(6, memoryview(icmp6(C6, S6, kind)), 0.0)[2] == UNTRACKED
    assert t.track_packet(4, memoryview(icmp4(C4, S4, 9)), 0.0)[2] == INVALID  # router adv.
    assert len(t) == 0


def test_other_protocols_are_tracked_by_address_pair_for_600_seconds():
    t = Conntrack()
    gre = ip4(C4, S4, 47, b"\x00" * 8)
    conn, d, state = t.track_packet(4, memoryview(gre), 0.0)
    assert state == NEW and conn.deadline == 600
    assert t.track_packet(4, memoryview(ip4(S4, C4, 47, b"\x00" * 8)), 5.0)[2] == ESTABLISHED


def test_truncated_and_fragmented_packets():
    t = Conntrack()
    tiny = ip4(C4, S4, 6, b"\x00" * 8, frag=0x2000)  # first fragment: 8 bytes of TCP
    assert t.track_packet(4, memoryview(tiny), 0.0)[2] == INVALID
    later = ip4(C4, S4, 17, b"\x00" * 8, frag=0x0001)
    assert t.track_packet(4, memoryview(later), 0.0)[2] == INVALID  # (the filter's job)
    first = udp4(C4, S4, 1, 2, b"z" * 100)
    first = first[:6] + b"\x20\x00" + first[8:]
    assert t.track_packet(4, memoryview(first), 0.0)[2] == NEW
    assert len(t) == 1


def test_update_false_classifies_without_changing_anything():
    t = Conntrack()
    syn = memoryview(tcp4(C4, S4, 1, 2, 0, 0, SYN))
    assert t.track_packet(4, syn, 0.0, update=False)[2] == NEW and len(t) == 0
    t.track_packet(4, syn, 0.0)
    conn = t.find((C4, S4, 6, 1, 2))[0]
    synack = memoryview(tcp4(S4, C4, 2, 1, 0, 1, SYN | ACK))
    assert t.track_packet(4, synack, 5.0, update=False)[2] == ESTABLISHED
    assert conn.state == SYN_SENT and conn.deadline == 120


# -- the table: confirm, discard, NAT, bounds ---------------------------------------------------
def test_discard_forgets_only_unconfirmed_connections():
    t = Conntrack()
    a, _, _ = t.track_packet(4, memoryview(udp4(C4, S4, 1, 2)), 0.0)
    b, _, _ = t.track_packet(4, memoryview(udp4(C4, S4, 3, 4)), 0.0)
    t.confirm(a)
    t.discard(a)
    t.discard(b)
    assert len(t) == 1 and t.find((C4, S4, 17, 1, 2))[0] is a
    assert t.find((C4, S4, 17, 3, 4)) is None


def test_alter_reply_moves_the_reply_tuple_and_refuses_a_clash():
    t = Conntrack()
    a, _, _ = t.track_packet(4, memoryview(udp4(C4, S4, 1, 2)), 0.0)
    b, _, _ = t.track_packet(4, memoryview(udp4(C4, S4, 3, 4)), 0.0)
    nat = (S4, bytes([192, 0, 2, 1]), 17, 2, 61000)  # as masquerade would rewrite it
    assert t.alter_reply(a, nat)
    assert t.find(nat) == (a, ct.REPLY) and t.find((S4, C4, 17, 2, 1)) is None
    assert t.track_packet(4, memoryview(udp4(S4, bytes([192, 0, 2, 1]), 2, 61000)), 0.0)[2] \
        == ESTABLISHED
    assert not t.alter_reply(b, nat) and t.stats["insert_failed"] == 1


def test_a_flood_of_new_flows_keeps_the_table_bounded_by_early_drop():
    t = Conntrack(max_entries=1000)
    f = Flow(t, 0.0)
    f.handshake()  # an assured connection: never early-dropped
    rnd = random.Random(1)
    for i in range(20000):
        src = rnd.getrandbits(32).to_bytes(4, "big")
        syn = tcp4(src, S4, rnd.getrandbits(16), 80, rnd.getrandbits(32), 0, SYN)
        assert t.track_packet(4, memoryview(syn), i * 0.001)[2] == NEW
        assert len(t) <= 1000 and len(t.table) <= 2000
    assert t.stats["early_drop"] >= 19000 - 1 and t.stats["drop"] == 0
    assert f.conn() is not None  # the assured one survived
    # the oldest half-open ones went first
    assert min(c.created for c in t.connections() if not c.assured) > 20.0 - 1.1


def test_a_table_full_of_assured_connections_drops_new_packets():
    t = Conntrack(max_entries=3)
    for port in (1, 2, 3):
        f = Flow(t, 0.0)
        f.cseq = port * 1000
        pkt = lambda s, d, sp, dp, fl, seq, ack: tcp4(s, d, sp, dp, seq, ack, fl)  # noqa: E731
        t.track_packet(4, memoryview(pkt(C4, S4, port, 80, SYN, 1, 0)), 0.0)
        t.track_packet(4, memoryview(pkt(S4, C4, 80, port, SYN | ACK, 9, 2)), 0.0)
        t.track_packet(4, memoryview(pkt(C4, S4, port, 80, ACK, 2, 10)), 0.0)
    assert all(c.assured for c in t.connections())
    assert t.track_packet(4, memoryview(udp4(C4, S4, 9, 9)), 0.0)[2] == ct.DROP
    assert t.stats["drop"] == 1 and len(t) == 3


def test_expiry_follows_time_order_across_timeouts_and_refreshes():
    t = Conntrack()
    # UDP (30 s) and ICMP (30 s) share a queue; generic has 600 s; TCP SYN_SENT 120 s
    t.track_packet(4, memoryview(udp4(C4, S4, 1, 1)), 0.0)
    t.track_packet(4, memoryview(icmp4(C4, S4, 8, ident=1)), 10.0)
    t.track_packet(4, memoryview(tcp4(C4, S4, 1, 1, 0, 0, SYN)), 20.0)
    t.track_packet(4, memoryview(ip4(C4, S4, 47, b"")), 0.0)
    assert t.next_deadline() == 30.0
    t.track_packet(4, memoryview(udp4(C4, S4, 1, 1)), 25.0)  # refreshed: now due at 55
    assert t.next_deadline() == 40.0
    assert t.expire(45.0) == 1  # the echo
    assert t.expire(56.0) == 1  # the datagram
    assert t.expire(140.0) == 1  # the SYN
    assert t.expire(599.0) == 0 and t.expire(600.0) == 1
    assert len(t) == 0 and t.next_deadline() is None


def test_timeouts_are_configurable_and_checked():
    t = Conntrack(timeouts={"udp": 5})
    conn, _, _ = t.track_packet(4, memoryview(udp4(C4, S4, 1, 1)), 0.0)
    assert conn.deadline == 5
    with pytest.raises(ValueError):
        Conntrack(timeouts={"udp_timeout": 5})
    with pytest.raises(ValueError):
        Conntrack(max_entries=0)


def test_random_packets_never_raise_and_stay_bounded():
    t = Conntrack(max_entries=500)
    rnd = random.Random(3)
    for i in range(30000):
        fam = rnd.choice((4, 6))
        n = rnd.randrange(0, 80)
        body = bytes(rnd.getrandbits(8) for _ in range(n))
        proto = rnd.choice((1, 6, 17, 58, 47, 0, 44, 60))
        pkt = ip4(C4, S4, proto, body, frag=rnd.choice((0, 0, 0x2000, 1))) if fam == 4 \
            else ip6(C6, S6, proto, body)
        t.track_packet(fam, memoryview(pkt), i * 0.01)
        assert len(t) <= 500
