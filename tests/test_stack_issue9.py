"""Issue 9 (the stack reshaping issue), defects a, b, d and e: each test here failed on
the code before its fix.

a. TCP over 127.0.0.1 with the loopback's MTU of 65536: segments must fit IPv4.
b. Duplicate address detection through the public API; IPv4 conflict detection.
d. An MTU larger than the link carries is refused.
e. Unanswered address resolution fails connect, connected UDP and ping with
   EHOSTUNREACH.
"""

from __future__ import annotations

import errno
import hashlib
import os
import socket
import threading

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner

from conftest import wait_for


@pytest.fixture
def runner():
    d = StackRunner("test-issue9")
    yield d
    d.stop()


# -- a. the loopback's MTU and IPv4 ------------------------------------------------------
@pytest.mark.parametrize("size", [70_000, 1_000_000])
def test_tcp_over_loopback_both_families(runner, size):
    """70 kB and 1 MB through 127.0.0.1 and ::1 on one stack, both arriving intact. Before
    the fix the IPv4 MSS (65536 - 40) made a segment of total length 65536, which the IP
    layer refused, and the IPv4 transfer stalled after its first segment."""
    s = Stack(runner=runner)
    try:
        for host, fam in (("127.0.0.1", socket.AF_INET), ("::1", socket.AF_INET6)):
            payload = os.urandom(size)
            srv = s.socket(fam)
            srv.bind((host, 0))
            srv.listen()
            got = bytearray()

            def serve(srv=srv, got=got) -> None:
                c, _ = srv.accept()
                with c:
                    c.settimeout(60)
                    while chunk := c.recv(65536):
                        got.extend(chunk)

            t = threading.Thread(target=serve, daemon=True)
            t.start()
            with s.socket(fam) as c:
                c.settimeout(60)
                c.connect((host, srv.getsockname()[1]))
                c.sendall(payload)
            t.join(60)
            srv.close()
            assert len(got) == size, f"{host}: {len(got)} of {size} bytes"
            assert hashlib.sha256(got).digest() == hashlib.sha256(payload).digest(), host
        assert not s.stats.get("runner_errors")
    finally:
        s.close()


# -- b. duplicate address detection through the public API; IPv4 conflict detection --------
@pytest.fixture
def switch(sockdir):
    from threadnet.switch.server import SwitchServer

    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    yield f"vde://{sw.directory}"
    sw.close()


def _state6(stack: Stack, addr: str) -> str:
    packed = socket.inet_pton(socket.AF_INET6, addr)
    return next(a.state for i in stack.interfaces.values() for a in i.v6 if a.addr == packed)


def test_dad_detects_a_duplicate_on_a_switch(switch, runner):
    """The second stack configured (Stack(config)) with an address the first one holds
    marks it dadfailed: listed so, never a source. Before the fix both kept it
    "preferred": the address was added at time 0.0, so the runner's first tick ended DAD
    before the first stack's advertisement came back."""
    a = Stack("eth,ip=fc00:4::1/64", link=switch, runner=runner, name="A")
    b = None
    try:
        wait_for(lambda: "fc00:4::1/64" in a.addresses(6), what="A's DAD")
        b = Stack("eth,ip=fc00:4::1/64,ip=fc00:4::2/64", link=switch, runner=runner, name="B")
        wait_for(lambda: _state6(b, "fc00:4::1") != "tentative"
                 and _state6(b, "fc00:4::2") != "tentative", timeout=10, what="B's DAD")
        assert _state6(b, "fc00:4::1") == "dadfailed"
        assert _state6(b, "fc00:4::2") == "preferred"
        assert "    inet6 fc00:4::1/64 dadfailed" in b.describe()
        assert "fc00:4::1/64" not in b.addresses(6)
        eth = b.interface("eth0")
        assert socket.inet_pton(socket.AF_INET6, "fc00:4::1") not in eth.v6_usable()
        assert _state6(a, "fc00:4::1") == "preferred"
        # B's own traffic goes from its other address, and A still answers for the first
        assert len(b.ping("fc00:4::1", count=1, timeout=5)) == 1
    finally:
        a.close()
        if b is not None:
            b.close()


def test_no_usable_source_during_dad_is_eaddrnotavail_and_settle_waits(switch, runner):
    """While every IPv6 address is tentative, sending says so (EADDRNOTAVAIL, as Linux
    does), not "no route"; ``settle()`` waits for DAD, after which the send goes out."""
    a = Stack("eth,ip=fc00:5::1/64", link=switch, runner=runner, name="A")
    try:
        u = a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        with u:
            if _state6(a, "fc00:5::1") == "tentative":
                with pytest.raises(OSError) as exc:
                    u.sendto(b"x", ("fc00:5::2", 9))
                assert exc.value.errno == errno.EADDRNOTAVAIL
                assert "tentative" in str(exc.value)
            a.settle(timeout=10)
            assert _state6(a, "fc00:5::1") == "preferred"
            u.sendto(b"x", ("fc00:5::2", 9))
            with pytest.raises(OSError) as exc:
                u.sendto(b"x", ("fc00:6::2", 9))
            assert exc.value.errno == errno.ENETUNREACH
    finally:
        a.close()


class _Wire:
    """Stacks on fake time joined by list links: what one sends, the others get."""

    def __init__(self, *configs: str, start: float = 1000.0, **kw) -> None:
        from stack_helpers import ListLink

        self.now = [start]
        self.links = [ListLink() for _ in configs]
        self.stacks = []
        for cfg, link in zip(configs, self.links, strict=True):
            s = Stack(link=link, runner=False, clock=lambda: self.now[0], **kw)
            s.configure(cfg)
            self.stacks.append(s)

    def move(self) -> None:
        while any(link.sent for link in self.links):
            for i, link in enumerate(self.links):
                frames, link.sent = link.sent, []
                for f in frames:
                    for j, s in enumerate(self.stacks):
                        if j != i:
                            s.input(s.interfaces[2], f, self.now[0])

    def run(self, seconds: float, step: float = 0.1) -> None:
        end = self.now[0] + seconds
        while self.now[0] < end:
            self.move()
            self.now[0] += step
            for s in self.stacks:
                s.on_timer(self.now[0])
        self.move()

    def close(self) -> None:
        for s in self.stacks:
            s.close()


def test_dad_runs_on_the_stacks_clock():
    """An address added through the public API starts DAD at the stack's clock (here a
    fake one at 1000 s): it is still tentative half a second later, and a second stack
    with the same address fails DAD when the first one's advertisement arrives."""
    w = _Wire("eth,ip=fc00:7::1/64", "eth")
    a, b = w.stacks
    try:
        w.run(0.5)
        assert _state6(a, "fc00:7::1") == "tentative"
        w.run(1.0)
        assert _state6(a, "fc00:7::1") == "preferred"
        b.addr_add("eth0", "fc00:7::1/64")
        w.run(0.3)
        assert _state6(b, "fc00:7::1") == "dadfailed"
        w.run(2.0)
        assert _state6(b, "fc00:7::1") == "dadfailed"
        assert b.stats.get("dad_duplicate") == 1
    finally:
        w.close()


def _arp_frames(link) -> list[tuple[int, bytes, bytes]]:
    from threadnet.wire import arp

    out = []
    for f in link.sent:
        if f[12:14] == b"\x08\x06":
            op, sha, spa, tha, tpa = arp.parse(memoryview(f)[14:])
            out.append((op, spa, tpa))
    return out


def test_acd_probes_announces_then_uses_the_address():
    """RFC 5227 on fake time: three probes from 0.0.0.0, no use meanwhile, then the
    address is used and announced twice."""
    from stack_helpers import ListLink

    link = ListLink()
    now = [50.0]
    s = Stack(link=link, runner=False, clock=lambda: now[0])
    try:
        s.configure("eth,acd,ip=10.4.2.7/24")
        addr = socket.inet_aton("10.4.2.7")
        assert s.addresses(4) == ["127.0.0.1/8"]
        assert "    inet 10.4.2.7/24 tentative" in s.describe()
        with pytest.raises(OSError):  # no usable source on that network yet
            s.udp_send(b"x", ("10.4.2.9", 9), 1234)
        seen = []
        while now[0] < 62.0:
            now[0] += 0.05
            s.on_timer(now[0])
            if "10.4.2.7/24" not in s.addresses(4):
                assert all(spa == bytes(4) for _, spa, _ in _arp_frames(link))
        seen = _arp_frames(link)
        probes = [f for f in seen if f[1] == bytes(4)]
        announcements = [f for f in seen if f[1] == addr]
        assert probes == [(1, bytes(4), addr)] * 3
        assert announcements == [(1, addr, addr)] * 2
        assert "10.4.2.7/24" in s.addresses(4)
    finally:
        s.close()


def test_acd_conflict_on_fake_time():
    """B probes for an address A uses: A answers, B marks it conflict and never uses it;
    an address nobody has goes into use. A's own, conflict-detecting address defends
    itself once against a gratuitous claim, then gives up on the second."""
    w = _Wire("eth,ip=10.4.3.1/24", "eth,acd,ip=10.4.3.1/24,ip=10.4.3.2/24")
    a, b = w.stacks
    try:
        w.run(12.0)
        assert "    inet 10.4.3.1/24 conflict" in b.describe()
        assert b.addresses(4) == ["127.0.0.1/8", "10.4.3.2/24"]
        assert a.addresses(4) == ["127.0.0.1/8", "10.4.3.1/24"]
        assert b.stats.get("acd_conflict") == 1
        assert b.source4(socket.inet_aton("10.4.3.9")) == socket.inet_aton("10.4.3.2")
        # defending (2.4 b): A claims B's address twice within 10 s
        from threadnet.wire import arp

        eth = a.interface("eth0")
        claim = bytearray(28)
        mine = socket.inet_aton("10.4.3.2")
        arp.build(claim, arp.OP_REQUEST, eth.mac, mine, bytes(6), mine)
        frame = b"\xff" * 6 + eth.mac + b"\x08\x06" + claim
        b.input(b.interfaces[2], frame, w.now[0])
        assert b.stats.get("acd_defended") == 1 and "10.4.3.2/24" in b.addresses(4)
        w.now[0] += 1.0
        b.input(b.interfaces[2], frame, w.now[0])
        assert "10.4.3.2/24" not in b.addresses(4)
        assert "    inet 10.4.3.2/24 conflict" in b.describe()
    finally:
        w.close()


def test_acd_two_stacks_on_a_switch(switch, runner):
    """The configuration item ``acd`` on real stacks: the second stack with A's address
    finds the conflict; its other address goes into use and answers ping."""
    a = Stack("eth,ip=10.4.4.1/24", link=switch, runner=runner, name="A")
    b = Stack("eth,acd,ip=10.4.4.1/24,ip=10.4.4.2/24", link=switch, runner=runner, name="B")
    try:
        wait_for(lambda: "10.4.4.2/24" in b.addresses(4)
                 and "    inet 10.4.4.1/24 conflict" in b.describe(),
                 timeout=30, what="conflict detection")
        assert "10.4.4.1/24" not in b.addresses(4)
        assert len(a.ping("10.4.4.2", count=1, timeout=5)) == 1
        assert len(b.ping("10.4.4.1", count=1, timeout=5)) == 1  # A's, from 10.4.4.2
    finally:
        a.close()
        b.close()


# -- d. an MTU larger than the link carries ----------------------------------------------
def test_links_tell_their_largest_mtu(switch, tmp_path):
    from threadnet.link import open_link
    from threadnet.link.pair import open_pair

    with open_link(switch) as vde:
        assert vde.max_mtu == 1500
    with open_link(f"pcap://{tmp_path / 'c.pcap'}{{{switch}}}") as wrapped:
        assert wrapped.max_mtu == 1500
    with open_link(f"wirefilter://delay=1{{{switch}}}") as emulated:
        assert emulated.max_mtu == 1500
    with open_link("null://") as null:
        assert null.max_mtu is None
    pa, pb = open_pair(9018)
    with pa, pb:
        assert pa.max_mtu == 9000


def test_mtu_beyond_the_link_is_refused(switch, runner):
    """vde:// carries MTU 1500 at most: mtu=9000 in a configuration, set_mtu, add_interface
    and the console's link/set are refused with an error that says so, and the MTU stays.
    Before, each was accepted and TCP then stalled on segments the switch dropped."""
    from threadnet.stack.commands import build_table

    with pytest.raises(ValueError, match="at most MTU 1500"):
        Stack("eth,ip=10.4.5.1/24,mtu=9000", link=switch, runner=False)
    s = Stack("eth,ip=10.4.5.1/24", link=switch, runner=runner)
    try:
        with pytest.raises(ValueError, match="at most MTU 1500"):
            s.set_mtu("eth0", 9000)
        with pytest.raises(ValueError, match="at most MTU 1500"):
            s.add_interface(switch, mtu=1501)
        assert s.interface("eth0").mtu == 1500
        s.set_mtu("eth0", 1500)
        s.set_mtu("eth0", 1400)
        s.set_mtu("lo", 65535)  # no link, no limit beyond IP's
        table = build_table(s, path="/run/x")
        err, _, _ = table.run("link/set eth0 down mtu 9000")
        assert err == errno.EINVAL
        assert s.interface("eth0").mtu == 1400 and s.interface("eth0").up  # nothing applied
        err, _, _ = table.run("link/set eth0 mtu 1500")
        assert err == 0 and s.interface("eth0").mtu == 1500
    finally:
        s.close()


# -- e. nobody answers ARP or NS: EHOSTUNREACH after ~3 s --------------------------------------
def test_neighbor_cache_gives_back_the_waiting_packets_after_three_probes():
    """Sans-IO, on explicit time: a request at once and one a second for 3 in all, then
    the queued packets come back as failed (for the stack to tell their owners)."""
    from threadnet.stack.neighbor import NeighborCache

    nc = NeighborCache()
    assert nc.enqueue(b"A", "p1", 10.0) == (True, [])
    assert nc.enqueue(b"A", "p2", 10.5) == (False, [])
    assert nc.on_timer(10.9) == ([], [])
    assert nc.on_timer(11.0) == ([(b"A", None)], [])
    assert nc.on_timer(12.0) == ([(b"A", None)], [])
    assert nc.next_deadline() == 13.0
    assert nc.on_timer(13.0) == ([], ["p1", "p2"])
    assert len(nc) == 0


def _lone_stack(config: str):
    from stack_helpers import ListLink

    link = ListLink()
    now = [500.0]
    s = Stack(link=link, runner=False, clock=lambda: now[0])
    s.configure(config)
    for _ in range(20):  # DAD ends
        now[0] += 0.1
        s.on_timer(now[0])
    return s, now


def _tick(s: Stack, now: list[float], seconds: float) -> None:
    end = now[0] + seconds
    while now[0] < end:
        now[0] += 0.1
        s.on_timer(now[0])


@pytest.mark.parametrize("family,dst", [(4, "10.4.7.99"), (6, "fc00:47::99")])
def test_tcp_connect_fails_with_ehostunreach_on_fake_time(family, dst):
    """A connect whose SYNs wait for a next hop nobody answers fails with EHOSTUNREACH
    once address resolution gives up (3 probes, 1 s apart), and its owner is told.
    Before, it stayed in SYN-SENT for the whole SYN retransmission schedule (127 s)."""
    import ipaddress

    from threadnet.stack.tcp import TcpState

    s, now = _lone_stack("eth,ip=10.4.7.1/24,ip=fc00:47::1/64")
    try:
        events = []
        ep = s.tcp.connect(family, None, 0, ipaddress.ip_address(dst).packed, 80, now[0])

        class Owner:
            def on_tcp_event(self, e):
                events.append(e.conn.error)

        ep.owner = s.upper.add(Owner())
        _tick(s, now, 2.5)
        assert ep.conn.state is TcpState.SYN_SENT and not any(events)
        _tick(s, now, 1.0)
        assert ep.conn.error == errno.EHOSTUNREACH and ep.conn.closed
        assert events and events[-1] == errno.EHOSTUNREACH
        assert ep.key not in s.tcp.conns
    finally:
        s.close()


@pytest.mark.parametrize("fam,dst", [(socket.AF_INET, "10.4.8.99"), (socket.AF_INET6, "fc00:48::99")])
def test_connected_udp_gets_ehostunreach_once_on_fake_time(fam, dst):
    """A connected UDP socket whose datagram found nobody at its next hop: the next call
    (send, or recv: a blocked one wakes) raises EHOSTUNREACH, once, as on Linux."""
    s, now = _lone_stack("eth,ip=10.4.8.1/24,ip=fc00:48::1/64")
    try:
        with s.socket(fam, socket.SOCK_DGRAM) as u:
            u.connect((dst, 9))
            u.send(b"lost")
            _tick(s, now, 3.5)
            with pytest.raises(OSError) as info:
                u.send(b"again")
            assert info.value.errno == errno.EHOSTUNREACH
            u.settimeout(0.2)
            with pytest.raises(TimeoutError):  # reported once only
                u.recv(100)
            u.send(b"third")  # (the failed send sent nothing, as on Linux)
            _tick(s, now, 3.5)  # "third" failed too: this time recv hears of it
            with pytest.raises(OSError) as info:
                u.recv(100)
            assert info.value.errno == errno.EHOSTUNREACH
            assert u.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
        # an unconnected socket is not told (Linux without IP_RECVERR)
        with s.socket(fam, socket.SOCK_DGRAM) as u:
            u.sendto(b"lost", (dst, 9))
            _tick(s, now, 3.5)
            u.sendto(b"fine", (dst, 9))
    finally:
        s.close()


def test_nobody_at_the_address_real_sockets(switch, runner):
    """On a switch with nobody at the address: TCP connect (IPv4 and IPv6) raises
    EHOSTUNREACH, a connected UDP socket's recv does, and ping reports it. The timeouts
    are generous; only the errno is asserted."""
    s = Stack("eth,ip=10.4.9.1/24,ip=fc00:49::1/64", link=switch, runner=runner)
    try:
        wait_for(lambda: "fc00:49::1/64" in s.addresses(6), what="DAD")
        for fam, dst in ((socket.AF_INET, "10.4.9.99"), (socket.AF_INET6, "fc00:49::99")):
            with s.socket(fam) as c:
                c.settimeout(60)
                with pytest.raises(OSError) as info:
                    c.connect((dst, 80))
                assert info.value.errno == errno.EHOSTUNREACH, (dst, info.value)
            with s.socket(fam, socket.SOCK_DGRAM) as u:
                u.settimeout(60)
                u.connect((dst, 9))
                u.send(b"anyone?")
                with pytest.raises(OSError) as info:
                    u.recv(100)
                assert info.value.errno == errno.EHOSTUNREACH, (dst, info.value)
            with pytest.raises(OSError) as info:
                s.ping(dst, count=2, timeout=30)
            assert info.value.errno == errno.EHOSTUNREACH
    finally:
        s.close()
