"""The packet filter on stacks (stack/filter.py), on fake time: two core stacks joined by
in-memory links, B filtering. Verdicts on real TCP, UDP and ICMP exchanges; reject's
answers as the sender's stack sees them; a reload during a transfer; the whole-ruleset
swap; connection tracking's states through the hooks (confirmation, loopback, output);
fragments; the log ring; and floods of mangled frames through a tracking ruleset."""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import random
import struct

import pytest

from test_conntrack import udp4
from test_stack_fastpath import ADDRS, _move, _one_way, _pair, _recv_all
from threadnet import Stack
from threadnet.stack.filter import LOG_RING
from threadnet.stack.nftables import RulesetError
from threadnet.wire import icmp4, icmp6, ipv4, ipv6, tcp, udp

from stack_helpers import ListLink

INPUT = """
table inet filter {
    chain input {
        type filter hook input priority 0; policy drop;
        ct state established,related accept
        ct state invalid counter drop
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
        icmp type echo-request accept
        tcp dport 5000 counter accept
        tcp dport 5001 reject
        udp dport 7 accept
        udp dport 8 reject
        udp dport 9 reject with icmpx type admin-prohibited
        tcp dport 5003 reject with icmp type host-prohibited
    }
}
"""


def _connect(a, b, la, lb, clock, family: int, port: int):
    ep = a.tcp.connect(family, None, 0, ADDRS[family][1], port, clock[0])
    _move(a, b, la, lb, clock[0])
    return ep


def _settle(a, b, la, lb, clock, seconds: float) -> None:
    for _ in range(int(seconds / 0.5)):
        clock[0] += 0.5
        a.on_timer(clock[0])
        b.on_timer(clock[0])
        _move(a, b, la, lb, clock[0])


def _ip(family: int, text: str) -> bytes:
    return ipaddress.ip_address(text).packed


# -- verdicts on real exchanges --------------------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
def test_accept_drop_and_reject_for_tcp(family: int):
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    for port in (5000, 5001, 5002, 5003):
        b.tcp.listen(family, b"", port, 8)
    ok = _connect(a, b, la, lb, clock, family, 5000)
    assert ok.conn.established
    refused = _connect(a, b, la, lb, clock, family, 5001)
    assert refused.conn.error == errno.ECONNREFUSED  # the filter's RST
    dropped = _connect(a, b, la, lb, clock, family, 5002)
    assert not dropped.conn.established and not dropped.conn.error
    # data flows both ways on the accepted one (established through conntrack)
    [server] = [e for e in b.tcp.conns.values() if e.local[1] == 5000 and e.conn.established]
    _one_way(ok, server, os.urandom(200_000), clock, (a, b),
             lambda: _move(a, b, la, lb, clock[0]))
    listing = b.filter_list()
    assert "tcp dport 5000 counter packets 1 bytes" in listing  # the SYN only: then ct
    assert b.packet_filter.stats["rejected"] == 1
    if family == 4:
        prohibited = _connect(a, b, la, lb, clock, family, 5003)
        _settle(a, b, la, lb, clock, 1.0)
        assert not prohibited.conn.established  # (our TCP ignores ICMP: it waits)
        assert b.packet_filter.stats["rejected"] >= 2  # (and its retransmission)


@pytest.mark.parametrize("family", [4, 6])
def test_udp_reject_sends_the_icmp_error_the_rule_names(family: int):
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    got = []
    b.udp_bind(7, lambda data, src, dst: got.append(data))
    b.udp_bind(8, lambda data, src, dst: got.append(data))
    b.udp_bind(9, lambda data, src, dst: got.append(data))
    dst = str(ipaddress.ip_address(ADDRS[family][1]))
    errors = []
    for port in (7, 8, 9, 10):
        a.udp_send(b"hi %d" % port, (dst, port), 4000, now=clock[0])
        frames: list[bytes] = []

        def deliver(stack, iface, frame, now, frames=frames):
            if stack is a:
                frames.append(frame)
            stack.input(iface, frame, now)

        _move(a, b, la, lb, clock[0], deliver)
        for f in frames:
            mv = memoryview(f)[14:]
            if family == 4 and f[12:14] == b"\x08\x00" and mv[9] == 1:
                kind, code, _, _ = icmp4.parse(mv[20:])
                errors.append((port, kind, code))
            if family == 6 and f[12:14] == b"\x86\xdd" and mv[6] == 58 and mv[40] < 128:
                kind, code, _, _ = icmp6.parse(mv[40:], bytes(mv[8:24]), bytes(mv[24:40]))
                errors.append((port, kind, code))
    assert got == [b"hi 7"]
    unreach = 3 if family == 4 else 1
    assert errors == [(8, unreach, 3 if family == 4 else 4),
                      (9, unreach, 13 if family == 4 else 1)]  # 10 is dropped: silence


def test_reject_never_answers_an_icmp_error_or_a_rst():
    a, b, la, lb, clock = _pair()
    b.filter_set("table ip t { chain c { type filter hook input priority 0; policy accept; "
                 "meta l4proto { icmp, tcp } reject } }")
    iface = b.interfaces[2]
    mac_b, mac_a = iface.mac, a.interfaces[2].mac
    src, dst = ADDRS[4]
    err = bytearray(8 + 28)
    icmp4.build_unreachable(err, 3, bytes(28))
    rst = bytearray(20)
    tcp.build(rst, src, dst, 1, 2, 5, 0, tcp.RST, 0)
    lb.sent.clear()
    for proto, payload in ((1, err), (6, rst)):
        pkt = bytearray(20 + len(payload))
        ipv4.build(pkt, src, dst, proto, len(payload))
        pkt[20:] = payload
        b.input(iface, mac_b + mac_a + b"\x08\x00" + bytes(pkt), clock[0])
    assert lb.sent == [] and b.packet_filter.stats["rejected"] == 0


def test_ping_and_related_errors_pass_a_stateful_ruleset():
    a, b, la, lb, clock = _pair()
    a.filter_set("""table inet t { chain input { type filter hook input priority 0;
        policy drop; ct state established,related accept;
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept } }""")
    # A's echo request is new on the way out; B's reply is established on A's input
    session = a.start_ping(str(ipaddress.ip_address(ADDRS[4][1])), count=2, timeout=1.0,
                           now=clock[0])
    _settle(a, b, la, lb, clock, 3.0)
    assert len(session.rtts) == 2
    # a datagram to a closed port of B: B's port unreachable is RELATED on A's input
    a.udp_send(b"?", (str(ipaddress.ip_address(ADDRS[4][1])), 9), 4000, now=clock[0])
    _move(a, b, la, lb, clock[0])
    assert a.stats.get("hook_drop_input", 0) == 0
    assert b.stats["udp_no_port"] == 1
    assert a.conntrack.stats["invalid"] == 0


# -- reloads -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
def test_a_reload_keeps_an_established_transfer_and_new_connections_obey_it(family: int):
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    b.tcp.listen(family, b"", 5000, 8)
    ep = _connect(a, b, la, lb, clock, family, 5000)
    [server] = list(b.tcp.conns.values())
    data = os.urandom(3 << 20)
    got = bytearray()
    sent = 0
    reloaded = False
    for _ in range(10_000):
        if len(got) == len(data):
            break
        sent += ep.send(data[sent:sent + 65536])
        clock[0] += 0.05
        a.on_timer(clock[0])
        b.on_timer(clock[0])
        _move(a, b, la, lb, clock[0])
        got += _recv_all(server)
        if not reloaded and len(got) > len(data) // 3:
            # mid-transfer: port 5000 closes to new connections
            b.filter_set(INPUT.replace("tcp dport 5000 counter accept", "tcp dport 5001 accept"))
            reloaded = True
    assert reloaded and bytes(got) == data
    late = _connect(a, b, la, lb, clock, family, 5000)
    assert not late.conn.established  # dropped: the new rules
    assert "5000" not in b.filter_list()


def test_the_first_ruleset_adopts_the_stacks_own_connections():
    """Tracking starts with the stack's TCP connections in the table, as they are: a
    transfer on a port the new rules do not open survives the first ruleset (a
    router's filter, which knows no connections, would drop its next "new" packet)."""
    a, b, la, lb, clock = _pair()
    b.tcp.listen(4, b"", 5000, 8)
    ep = _connect(a, b, la, lb, clock, 4, 5000)
    half = a.tcp.connect(4, None, 0, ADDRS[4][1], 5999, clock[0])  # SYN-SENT, unanswered
    [server] = [e for e in b.tcp.conns.values() if e.local[1] == 5000]
    closed_port = INPUT.replace("tcp dport 5000 counter accept", "")
    a.filter_set(closed_port)
    b.filter_set(closed_port)
    [conn] = b.conntrack.connections()
    assert conn.original == (ADDRS[4][0], ADDRS[4][1], 6, ep.local[1], 5000)  # A opened it
    assert conn.assured and conn.state == 3  # ESTABLISHED
    states = sorted(c.state for c in a.conntrack.connections())
    assert states == [1, 3]  # and A's unanswered SYN: SYN_SENT, unreplied
    _one_way(ep, server, os.urandom(300_000), clock, (a, b),
             lambda: _move(a, b, la, lb, clock[0]))
    assert half.conn.state != "ESTABLISHED"


def test_a_bad_ruleset_changes_nothing():
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    before = b.filter_list()
    hooks = b.hooks_input
    with pytest.raises(RulesetError, match=r"<ruleset>:9:19: .50000000. is out of range"):
        b.filter_set(INPUT.replace("tcp dport 5000", "tcp dport 50000000"))
    assert b.filter_list() == before and b.hooks_input is hooks


def test_flush_removes_every_hook_and_the_direct_paths_come_back():
    a, b, la, lb, clock = _pair()
    assert not b._rx_hooked
    b.filter_set(INPUT)
    assert b._rx_hooked and b.hooks_output  # (tracking: output is hooked too)
    b.filter_set("table inet t { chain c { type filter hook input priority 0; "
                 "tcp dport 1 drop } }")  # no ct: no output hook, no tracking
    assert b.hooks_input and not b.hooks_output and not b.hooks_prerouting
    assert len(b.conntrack) == 0
    b.filter_flush()
    assert not (b.hooks_prerouting or b.hooks_input or b.hooks_forward or b.hooks_output
                or b.hooks_postrouting)
    assert not b._rx_hooked and b.filter_list() == ""


def test_filter_load_reads_a_file(tmp_path):
    a, b, la, lb, clock = _pair()
    path = tmp_path / "rules.nft"
    path.write_text(INPUT)
    b.filter_load(str(path))
    assert "tcp dport 5001 reject" in b.filter_list()
    path.write_text("table inet t {\n  chain c {\n    tcp dport x accept\n")
    with pytest.raises(RulesetError, match=f"{path}:3:15: "):
        b.filter_load(str(path))
    with pytest.raises(OSError):
        b.filter_load(str(tmp_path))  # a directory


# -- connection tracking through the hooks -----------------------------------------------------
def test_a_dropped_first_packet_leaves_no_connection_behind():
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    for port in range(6000, 6100):  # a scan of dropped ports
        _connect(a, b, la, lb, clock, 4, port)
    assert len(b.conntrack) == 0
    _connect(a, b, la, lb, clock, 4, 5001)  # rejected: gone too
    assert len(b.conntrack) == 0
    b.tcp.listen(4, b"", 5000, 8)
    _connect(a, b, la, lb, clock, 4, 5000)
    [conn] = b.conntrack.connections()
    assert conn.assured and conn.status & 8  # confirmed


def test_output_chain_and_loopback():
    a, b, la, lb, clock = _pair()
    b.filter_set("""table inet t {
        chain output { type filter hook output priority 0; policy accept;
            ct state new tcp dport 25 reject; }
        chain input { type filter hook input priority 0; policy drop;
            ct state established,related accept; iifname "lo" tcp dport 80 accept; } }""")
    b.tcp.listen(4, b"", 80, 8)
    b.tcp.listen(4, b"", 25, 8)
    ok = b.tcp.connect(4, None, 0, bytes([127, 0, 0, 1]), 80, clock[0])
    b.on_timer(clock[0])  # (looped-back packets are processed there)
    assert ok.conn.established  # through loopback: tracked once, at output
    [conn] = [c for c in b.conntrack.connections() if c.original[4] == 80]
    assert conn.assured
    denied = b.tcp.connect(4, None, 0, bytes([127, 0, 0, 1]), 25, clock[0])
    b.on_timer(clock[0])
    assert denied.conn.error == errno.ECONNREFUSED  # the output chain's reject
    # from A to B's port 80 over the link: not from lo, dropped
    late = _connect(a, b, la, lb, clock, 4, 80)
    assert not late.conn.established


def test_prerouting_chain_tracks_there_and_input_sees_the_state():
    a, b, la, lb, clock = _pair()
    b.filter_set("""table inet t {
        chain pre { type filter hook prerouting priority -150; policy accept;
            ip saddr 10.9.0.66 drop; }
        chain input { type filter hook input priority 0; policy drop;
            ct state established accept; ct state new tcp dport 5000 accept;
            meta l4proto ipv6-icmp accept; } }""")
    assert b.packet_filter.roles["prerouting"] == (True, False, True)
    b.tcp.listen(4, b"", 5000, 8)
    ep = _connect(a, b, la, lb, clock, 4, 5000)
    assert ep.conn.established
    [server] = list(b.tcp.conns.values())
    _one_way(ep, server, os.urandom(100_000), clock, (a, b),
             lambda: _move(a, b, la, lb, clock[0]))
    assert b.conntrack.stats["invalid"] == 0


# -- fragments ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", [4, 6])
def test_fragments_follow_their_first_fragment(family: int):
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    got = []
    for port in (7, 11):
        b.udp_bind(port, lambda data, src, dst, port=port: got.append((port, len(data))))
    dst = str(ipaddress.ip_address(ADDRS[family][1]))
    _connect(a, b, la, lb, clock, family, 5000)  # (neighbors resolved)
    for port in (7, 11):  # 7 accepted, 11 dropped by the policy
        a.udp_send(b"z" * 4000, (dst, port), 4000, now=clock[0])
        _move(a, b, la, lb, clock[0])
    assert got == [(7, 4000)]
    assert len(b.packet_filter._frags) == 2  # one verdict per first fragment
    # later fragments alone (their first never came) pass the filter and wait in vain
    frames = []
    a.udp_send(b"q" * 4000, (dst, 7), 4000, now=clock[0])
    frames, la.sent = la.sent, []
    iface = b.interfaces[2]
    for f in frames[1:]:
        b.input(iface, f, clock[0])
    assert got == [(7, 4000)]
    for f in frames[:1]:
        b.input(iface, f, clock[0])
    assert got == [(7, 4000), (7, 4000)]


def test_a_tiny_first_fragment_is_invalid():
    a, b, la, lb, clock = _pair()
    b.filter_set(INPUT)
    src, dst = ADDRS[4]
    iface = b.interfaces[2]
    pkt = bytearray(28)
    ipv4.build(pkt, src, dst, 6, 8, flags=ipv4.FLAG_MF)  # 8 bytes of a TCP header
    b.input(iface, iface.mac + a.interfaces[2].mac + b"\x08\x00" + bytes(pkt), clock[0])
    assert "ct state invalid counter packets 1 bytes 28 drop" in b.filter_list()


# -- the log ring and floods ---------------------------------------------------------------------
def test_log_lines_are_kernel_like_and_the_ring_is_bounded():
    a, b, la, lb, clock = _pair()
    b.filter_set("""table inet t { chain c { type filter hook input priority 0;
        policy accept; tcp dport 5005 log prefix "nope: " drop; } }""")
    _connect(a, b, la, lb, clock, 4, 5005)
    line = b.packet_filter.log[-1]
    assert line.startswith("nope: IN=eth0 OUT= SRC=10.9.0.1 DST=10.9.0.2 LEN=")
    assert "PROTO=TCP SPT=" in line and line.endswith("DPT=5005 SYN")
    iface = b.interfaces[2]
    src, dst = ADDRS[4]
    seg = bytearray(20)
    for i in range(LOG_RING + 500):
        tcp.build(seg, src, dst, i & 0xFFFF, 5005, i, 0, tcp.SYN, 100)
        pkt = bytearray(40)
        ipv4.build(pkt, src, dst, 6, 20)
        pkt[20:] = seg
        b.input(iface, iface.mac + a.interfaces[2].mac + b"\x08\x00" + bytes(pkt), clock[0])
    assert len(b.packet_filter.log) == LOG_RING
    assert b.packet_filter.stats["logged"] == LOG_RING + 501


@pytest.mark.slow
def test_mangled_frames_and_floods_through_a_tracking_ruleset():
    """300,000 frames with plausible headers (valid checksums, random ports, flags,
    fragments, ICMP errors quoting random packets) and random bytes, IPv4 and IPv6, at
    a stack with a stateful input, output and forward ruleset: no exception, the
    connection table stays at its bound, the log ring at its bound, the fragment
    verdicts at theirs."""
    from threadnet.stack import filter as filt

    a, b, la, lb, clock = _pair()
    b.forwarding = True
    b.filter_set("""table inet t {
        chain input { type filter hook input priority 0; policy drop;
            ct state established,related accept; ct state invalid log drop;
            tcp dport { 22, 80 } accept; udp dport 53 accept; meta l4proto ipv6-icmp accept;
            tcp dport 81 reject; udp dport 54 reject; log prefix "in: " }
        chain fwd { type filter hook forward priority 0; policy drop;
            ct state established accept; oifname "eth0" accept }
        chain out { type filter hook output priority 0; policy accept;
            ct state invalid counter } }""")
    b.conntrack.max_entries = 2000
    b.tcp.listen(4, b"", 80, 64)
    b.udp_bind(53, lambda data, src, dst: None)
    rnd = random.Random(11)
    iface = b.interfaces[2]
    head = iface.mac + a.interfaces[2].mac
    src4, dst4 = ADDRS[4]
    src6, dst6 = ADDRS[6]
    others4 = [bytes([10, 9, 0, rnd.randrange(3, 250)]) for _ in range(50)]
    for i in range(300_000):
        now = 200.0 + i * 0.001
        kind = rnd.random()
        v6 = rnd.random() < 0.4
        s = (src6 if v6 else rnd.choice(others4 + [src4]))
        d = dst6 if v6 else (dst4 if rnd.random() < 0.8 else bytes([192, 0, 2, 1]))
        proto = rnd.choice((6, 6, 17, 1 if not v6 else 58))
        if kind < 0.05:
            frame = head + (b"\x86\xdd" if v6 else b"\x08\x00") + rnd.randbytes(
                rnd.randrange(0, 120))
        else:
            if proto == 6:
                body = bytearray(20 + rnd.choice((0, 0, 10, 1400)))
                tcp.build(body, s, d, rnd.randrange(1, 65536), rnd.choice((22, 80, 81, 82)),
                          rnd.getrandbits(32), rnd.getrandbits(32), rnd.getrandbits(8),
                          rnd.getrandbits(16), bytes(len(body) - 20))
            elif proto == 17:
                body = bytearray(8 + rnd.choice((0, 30, 3000)))
                udp.build(body, s, d, rnd.randrange(1, 65536), rnd.choice((53, 54, 55)),
                          bytes(len(body) - 8))
            else:
                quote = rnd.randbytes(rnd.randrange(0, 60))
                body = bytearray(8 + len(quote))
                kind_ = rnd.choice((0, 3, 8, 11)) if not v6 else rnd.choice((1, 128, 129, 135))
                if v6:
                    icmp6.build(body, s, d, kind_, rnd.randrange(0, 5), rnd.getrandbits(32),
                                quote)
                else:
                    icmp4.build(body, kind_, rnd.randrange(0, 5), rnd.getrandbits(32), quote)
            if v6:
                pkt = bytearray(40 + len(body))
                ipv6.build(pkt, s, d, proto, len(body))
                pkt[40:] = body
                frame = head + b"\x86\xdd" + bytes(pkt)
            else:
                pkt = bytearray(20 + len(body))
                ipv4.build(pkt, s, d, proto, len(body), ident=rnd.getrandbits(16),
                           flags=rnd.choice((0, 0, 0, ipv4.FLAG_MF)),
                           frag_offset=rnd.choice((0, 0, 0, 8, 1480)))
                pkt[20:] = body
                frame = head + b"\x08\x00" + bytes(pkt)
        b.input(iface, frame, now)
        if i % 1000 == 0:
            b.on_timer(now)
            lb.sent.clear()
            assert len(b.conntrack) <= 2000
    pf = b.packet_filter
    assert len(b.conntrack) <= 2000 and len(pf.log) <= LOG_RING
    assert len(pf._frags) <= filt.MAX_FRAGMENT_VERDICTS
    assert b.conntrack.stats["early_drop"] > 0 and pf.stats["logged"] > LOG_RING
    # and the stack still serves: a fresh connection from A is accepted
    lb.sent.clear()
    ep = a.tcp.connect(4, None, 0, dst4, 80, now)
    _move(a, b, la, lb, now)
    assert ep.conn.established


def test_the_filter_reads_headers_with_struct_layouts_that_match_the_wire():
    # (guards the parsers the hot path uses against the wire modules' builders)
    from threadnet.stack.conntrack import packet_fields

    s, d = ADDRS[6]
    seg = bytearray(24)
    tcp.build(seg, s, d, 1234, 443, 7, 9, tcp.SYN | tcp.ACK, 100, b"abcd")
    pkt = bytearray(40 + 24)
    ipv6.build(pkt, s, d, 6, 24)
    pkt[40:] = seg
    f = packet_fields(6, memoryview(pkt))
    assert f[:5] == (6, s, d, 1234, 443) and f[7:11] == (tcp.SYN | tcp.ACK, 7, 9, 4)
    s4, d4 = ADDRS[4]
    pkt4 = bytearray(20 + 8)
    ipv4.build(pkt4, s4, d4, 1, 8)
    struct.pack_into("!BBHHH", pkt4, 20, 8, 0, 0, 4242, 1)
    f = packet_fields(4, memoryview(pkt4))
    assert f[:7] == (1, s4, d4, 4242, -1, 8, 0)


def test_the_forward_hook_learns_the_interface_out():
    """oifname can match in the forward chain: the hook
    runs after the route lookup, and a packet with no route reaches it with no
    interface out."""
    seen = []
    router = Stack(forwarding=True, runner=False)
    l1, l2 = ListLink(), ListLink()
    try:
        i1 = router.add_interface(l1)
        router.add_interface(l2)
        router.configure("iface=eth0,eth,ip=10.62.1.1/24", 0.0)
        router.configure("iface=eth1,eth,ip=10.62.2.1/24", 0.0)
        router.add_hook("forward", lambda p, meta: seen.append(
            meta.iface_out.name if meta.iface_out else None) or 1)
        src = bytes([10, 62, 1, 9])
        for dst in (bytes([10, 62, 2, 9]), bytes([192, 0, 2, 1])):
            pkt = bytearray(udp4(src, dst, 1, 2))
            ipv4.build(pkt, src, dst, 17, len(pkt) - 20)  # (with its checksum)
            router.input(i1, i1.mac + bytes.fromhex("020000000009") + b"\x08\x00" + bytes(pkt),
                         1.0)
        assert seen == ["eth1", None]
    finally:
        router.close()


@pytest.mark.slow
def test_a_flood_of_spoofed_flows_through_the_filter_keeps_memory_flat():
    """60,000 SYNs and datagrams from random addresses and ports at a stack whose
    stateful ruleset accepts and logs them (a table of 2,000 connections): the memory
    held after 20,000 and after 60,000 is the same within a small margin, and the stack
    still accepts a real connection."""
    import tracemalloc

    a, b, la, lb, clock = _pair()
    b.filter_set("""table inet t { chain c { type filter hook input priority 0;
        policy drop; ct state established accept; tcp dport 80 log prefix "syn: " accept;
        udp dport 53 accept } }""")
    b.conntrack.max_entries = 2000
    b.tcp.listen(4, b"", 80, 64)
    iface = b.interfaces[2]
    head = iface.mac + a.interfaces[2].mac + b"\x08\x00"
    dst = ADDRS[4][1]
    rnd = random.Random(7)
    seg = bytearray(20)
    dgram = bytearray(9)
    # the log lines go to the ring and to a handler that keeps nothing (pytest's own
    # capture would keep every record)
    logger = logging.getLogger("threadnet.filter")
    null = logging.NullHandler()
    logger.addHandler(null)
    logger.propagate = False
    tracemalloc.start()
    try:
        held = []
        for i in range(60_000):
            now = 300.0 + i * 0.0005
            src = bytes([10, 9, rnd.randrange(1, 255), rnd.randrange(3, 255)])
            if i & 1:
                tcp.build(seg, src, dst, rnd.randrange(1024, 65536), 80, rnd.getrandbits(32), 0,
                          tcp.SYN, 1000)
                body = seg
            else:
                udp.build(dgram, src, dst, rnd.randrange(1024, 65536), 53, b"q")
                body = dgram
            pkt = bytearray(20 + len(body))
            ipv4.build(pkt, src, dst, 6 if i & 1 else 17, len(body))
            pkt[20:] = body
            b.input(iface, head + bytes(pkt), now)
            if i % 2000 == 0:
                lb.sent.clear()
                b.on_timer(now)
            if i in (20_000, 59_999):
                held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
        logger.propagate = True
        logger.removeHandler(null)
    assert len(b.conntrack) <= 2000 and len(b.packet_filter.log) == LOG_RING
    assert held[1] - held[0] < 1 << 20, held  # less than 1 MiB more after 40,000 more
    lb.sent.clear()
    ep = a.tcp.connect(4, None, 0, dst, 80, now)
    _move(a, b, la, lb, now)
    assert ep.conn.established
