"""The IP layer's hook points (stack/ip.py): each sees the packets it should, a DROP at
each drops, and the direct TCP paths (cached output path, direct input, receive
coalescing) never pass a hook by. Stacks joined by in-memory links, on fake time."""

from __future__ import annotations

import ipaddress
import os

import pytest
from scapy.all import IP, UDP, Ether

from test_stack_fastpath import ADDRS, ListLink, _established, _move, _one_way, _pair
from threadnet import Stack
from threadnet.stack.ip import ACCEPT, DROP, HOOK_POINTS
from threadnet.wire import ipv4, ipv6


class Recorder:
    """A hook that keeps (point, family, proto, in, out) of what it sees and answers
    ``verdict``."""

    def __init__(self, verdict: int = ACCEPT, only: int | None = None) -> None:
        self.verdict = verdict
        self.only = only  # answer ``verdict`` for this protocol only, else ACCEPT
        self.seen: list[tuple] = []

    def __call__(self, packet: memoryview, meta) -> int:
        assert packet.readonly
        if meta.family == 4:
            proto = ipv4.parse(packet)[6]
        else:
            proto = ipv6.parse(packet)[3]
        self.seen.append((meta.point, meta.family, proto,
                          meta.iface_in.name if meta.iface_in else None,
                          meta.iface_out.name if meta.iface_out else None, bytes(packet)))
        return self.verdict if self.only in (None, proto) else ACCEPT

    def protos(self, point: str) -> set[int]:
        return {s[2] for s in self.seen if s[0] == point}


def _udp(a: Stack, b: Stack, la, lb, clock, family: int) -> list[bytes]:
    """A sends one UDP datagram to B's port 7; returns what B's handler got."""
    got: list[bytes] = []
    b.udp_bind(7, lambda data, src, dst: got.append(data))
    dst = str(ipaddress.ip_address(ADDRS[family][1]))
    a.udp_send(b"hello", (dst, 7), 5000, now=clock[0])
    _move(a, b, la, lb, clock[0])
    return got


@pytest.mark.parametrize("family", [4, 6])
def test_accepting_hooks_see_the_packets_of_each_point(family: int) -> None:
    a, b, la, lb, clock = _pair()
    ra, rb = Recorder(), Recorder()
    for point in ("output", "postrouting"):
        a.add_hook(point, ra)
    for point in ("prerouting", "input"):
        b.add_hook(point, rb)
    assert _udp(a, b, la, lb, clock, family) == [b"hello"]
    assert 17 in ra.protos("output") and 17 in ra.protos("postrouting")
    assert 17 in rb.protos("prerouting") and 17 in rb.protos("input")
    out = [s for s in ra.seen if s[0] == "output" and s[2] == 17]
    assert out[0][3:5] == (None, "eth0")
    pre = [s for s in rb.seen if s[0] == "prerouting" and s[2] == 17]
    assert pre[0][3:5] == ("eth0", None)
    assert b"hello" in pre[0][5]


@pytest.mark.parametrize("family", [4, 6])
def test_tcp_passes_the_hooks_and_takes_no_direct_path_while_they_exist(family: int) -> None:
    a, b, la, lb, clock, ep, server = _established(family)
    ra, rb = Recorder(), Recorder()
    a.add_hook("output", ra)
    a.add_hook("postrouting", ra)
    b.add_hook("prerouting", rb)
    b.add_hook("input", rb)
    data = os.urandom(50_000)
    _one_way(ep, server, data, clock, (a, b), lambda: _move(a, b, la, lb, clock[0]))
    assert ep.path is None  # no cached path passes the output hooks by
    tcp_out = [s for s in ra.seen if s[0] == "postrouting" and s[2] == 6]
    tcp_in = [s for s in rb.seen if s[0] == "input" and s[2] == 6]
    # every data segment went through the hooks on both sides (GRO and direct input off)
    hdr = 20 if family == 4 else 40
    assert sum(len(s[5]) - hdr - 32 for s in tcp_out) >= len(data)
    assert sum(len(s[5]) - hdr - 32 for s in tcp_in) >= len(data)
    # and without the hooks the direct paths come back
    for point in ("output", "postrouting"):
        a.remove_hook(point, ra)
    _one_way(ep, server, os.urandom(20_000), clock, (a, b),
             lambda: _move(a, b, la, lb, clock[0]))
    assert ep.path is not None


@pytest.mark.parametrize("point", ["output", "postrouting"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_drop_on_output_stops_a_cached_tcp_path_too(family: int, point: str) -> None:
    a, b, la, lb, clock, ep, server = _established(family)
    _one_way(ep, server, os.urandom(20_000), clock, (a, b),
             lambda: _move(a, b, la, lb, clock[0]))
    assert ep.path is not None
    drop = Recorder(DROP)
    a.add_hook(point, drop)
    ep.send(b"x" * 5000)
    sent = _move(a, b, la, lb, clock[0])
    etype = b"\x08\x00" if family == 4 else b"\x86\xdd"
    assert not [f for f in sent if f[12:14] == etype]  # nothing IP went out
    assert a.stats[f"hook_drop_{point}"] >= 1 and not server.conn.recv_queued
    a.remove_hook(point, drop)
    for _ in range(20):  # the retransmission timer, then slow start
        clock[0] += 0.5
        for s in (a, b):
            s.on_timer(clock[0])
        _move(a, b, la, lb, clock[0])
    assert server.conn.recv_queued == 5000


@pytest.mark.parametrize("point", ["output", "postrouting", "prerouting", "input"])
@pytest.mark.parametrize("family", [4, 6])
def test_a_drop_at_each_point_drops(family: int, point: str) -> None:
    a, b, la, lb, clock = _pair()
    hook = Recorder(DROP, only=17)  # (NDP, which passes the hooks too, goes on)
    (a if point in ("output", "postrouting") else b).add_hook(point, hook)
    assert _udp(a, b, la, lb, clock, family) == []
    assert 17 in hook.protos(point)
    who = a if point in ("output", "postrouting") else b
    assert who.stats[f"hook_drop_{point}"] >= 1


def _router():
    l1, l2 = ListLink(), ListLink()
    r = Stack(link=l1, runner=False, forwarding=True)
    r.add_interface(l2)
    for iface, ip in (("eth0", "10.9.0.254/24"), ("eth1", "10.8.0.254/24")):
        r.link_up(iface, 0.0)
        r.addr_add(iface, ip, 0.0)
    frame = bytes(Ether(dst=r.interfaces[2].mac, src="02:00:00:00:00:01")
                  / IP(src="10.9.0.1", dst="10.8.0.5", ttl=9) / UDP(sport=1, dport=2)
                  / b"through")
    return r, l1, l2, frame


@pytest.mark.parametrize("verdict", [ACCEPT, DROP])
def test_forward_hook(verdict: int) -> None:
    r, l1, l2, frame = _router()
    hook = Recorder(verdict)
    r.add_hook("forward", hook)
    l1.sent.clear()
    l2.sent.clear()  # (DAD's solicitations)
    r.input(r.interfaces[2], frame, 1.0)
    assert [s[:4] for s in hook.seen] == [("forward", 4, 17, "eth0")]
    assert hook.seen[0][5][8] == 9  # before the TTL goes down
    if verdict == ACCEPT:
        assert l2.sent  # it goes on: the ARP request for 10.8.0.5
        assert r.stats.get("hook_drop_forward") is None
    else:
        assert not l2.sent and r.stats["hook_drop_forward"] == 1


def test_hook_points_are_checked() -> None:
    s = Stack(runner=False)
    with pytest.raises(ValueError):
        s.add_hook("nat", lambda p, m: ACCEPT)
    with pytest.raises(ValueError):
        s.remove_hook("input", lambda p, m: ACCEPT)
    assert set(HOOK_POINTS) == {"prerouting", "input", "forward", "output", "postrouting"}
    for point in HOOK_POINTS:
        assert getattr(s, f"hooks_{point}") == ()


@pytest.mark.parametrize("family", [4, 6])
def test_loopback_passes_output_then_prerouting_and_input(family: int) -> None:
    s = Stack(runner=False)
    rec = Recorder()
    for point in HOOK_POINTS:
        s.add_hook(point, rec)
    got: list[bytes] = []
    s.udp_bind(7, lambda data, src, dst: got.append(data))
    s.udp_send(b"me", ("127.0.0.1" if family == 4 else "::1", 7), 5000, now=1.0)
    assert got == [b"me"]
    assert [(p, f, proto) for p, f, proto, *_ in rec.seen] == [
        ("output", family, 17), ("prerouting", family, 17), ("input", family, 17)]
    assert rec.seen[0][3:5] == (None, "lo") and rec.seen[1][3:5] == ("lo", None)
