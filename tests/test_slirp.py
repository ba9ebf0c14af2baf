"""slirp: the stack core's catch-all mode, the flow table, the gateway, and real peers.

Unit tests run the gateway in-process against a guest stack over a socket pair (no
root); the real-peer tests put a kernel namespace on a switch (Debian's vde_plug2tap)
with ``threadnet slirp`` on that switch, and a tap in a namespace as slirp4netns does.
"""

from __future__ import annotations

import http.server
import os
import random
import socket
import subprocess
import sys
import threading
import time

import pytest

import threadnet
from threadnet.errors import URLError
from threadnet.link.pair import open_pair
from threadnet.slirp import Gateway, HostForward, SlirpOptions
from threadnet.slirp.flows import FlowTable
from threadnet.stack.socket import create_connection
from threadnet.stack.tcp import TcpState

from conftest import need_tool, read_pidfile, run_as, threadnet_cmd, threadnet_env, wait_for


# -- sans-IO parts -----------------------------------------------------------------------------
def test_flow_table_is_bounded_and_expires_in_order():
    t = FlowTable(3)
    assert t.add("a", 1, 10, now=0) == []
    t.add("b", 2, 10, now=1)
    t.add("c", 3, 10, now=2)
    t.touch("a", now=3)  # a is now the most recent
    assert t.add("d", 4, 10, now=4) == [("b", 2)]  # the least recently used goes
    assert len(t) == 3 and t.evicted == 1
    assert t.expire(11.5) == []  # c's deadline is 2 + 10
    assert t.expire(12) == [("c", 3)]
    assert t.expire(13.5) == [("a", 1)]


def test_flow_table_expire_returns_due_flows():
    t = FlowTable(100)
    for i in range(10):
        t.add(i, i, 5, now=i)
    assert [k for k, _ in t.expire(7)] == [0, 1, 2]
    assert len(t) == 7
    assert t.remove(5) == 5 and t.get(5) is None


def test_options_are_qemus_defaults_and_parse():
    o = SlirpOptions()
    assert (o.host, o.dns, o.dhcp_start, o.prefix6, o.host6) == (
        "10.0.2.2", "10.0.2.3", "10.0.2.15", "fd00::/64", "fd00::2")
    o = SlirpOptions.parse("net=10.9.0.0/16/nodhcp,restrict,nameserver=127.0.0.1#5353,"
                           "hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::5000-10.9.0.20:53")
    assert (o.net, o.host, o.dns, o.dhcp, o.loopback) == (
        "10.9.0.0/16", "10.9.0.2", "10.9.0.3", False, False)
    assert o.nameservers == [("127.0.0.1", 5353)]
    assert o.hostfwd == [HostForward("tcp", "127.0.0.1", 8080, "10.9.0.15", 80),
                         HostForward("udp", "127.0.0.1", 5000, "10.9.0.20", 53)]
    assert "dhcpd" not in o.config()
    assert "dhcpd=10.0.2.15-10.0.2.30" in SlirpOptions().config()
    for bad, why in (("bogus", "unknown option 'bogus'"), ("hostfwd=tcp:8080", "expected"),
                     ("hostfwd=icmp::1-:2", "icmp"), ("mtu=99", "576..65520"),
                     ("net=x", "bad value in 'net=x'")):
        with pytest.raises(URLError, match=why):
            SlirpOptions.parse(bad)


# -- the catch-all mode of the stack core ----------------------------------------------------------
def _pair_stacks(gw_config="eth,ip=10.0.2.2/24"):
    a, b = open_pair(1518)
    guest = threadnet.Stack("eth,ip=10.0.2.15/24,gw=10.0.2.2", link=a)
    gw = threadnet.Stack(gw_config, link=b)
    return guest, gw


def test_catch_all_listener_takes_any_destination_and_keeps_it():
    guest, gw = _pair_stacks()
    try:
        ls = gw.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        ls.listen(8)
        ls.settimeout(5)
        # off (catch_all None): a packet to an address not ours is not delivered
        c = guest.socket(socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        c.connect_ex(("198.51.100.7", 80))
        wait_for(lambda: gw.stats.get("ip4_not_for_us", 0) > 0, what="a dropped SYN")
        c.close()
        class Owner:  # opens every held SYN at once
            def on_syn(self, key):
                gw.tcp.release_syn(key, 0, gw.clock())

        with gw.locked():
            gw.catch_all = gw.upper.add(Owner())
        c = create_connection(guest, ("198.51.100.7", 80), timeout=5)
        s, peer = ls.accept()
        assert s.getsockname() == ("198.51.100.7", 80)
        assert peer[0] == "10.0.2.15"
        c.sendall(b"ping")
        assert s.recv(10) == b"ping"
        # a port somebody listens on still goes to its own listener
        own = gw.socket(socket.AF_INET, socket.SOCK_STREAM)
        own.bind(("10.0.2.2", 81))
        own.listen(1)
        own.settimeout(5)
        c2 = create_connection(guest, ("10.0.2.2", 81), timeout=5)
        assert own.accept()[0].getsockname() == ("10.0.2.2", 81)
        for x in (c, c2, s, ls, own):
            x.close()
    finally:
        guest.close()
        gw.close()


def _raw_guest_exchange(link, frame, want, timeout=5.0):
    """Send ``frame`` from a raw guest (10.0.2.15) on ``link``, answer the gateway's ARP,
    and return the first frame ``want(frame)`` accepts (scapy), or None."""
    from scapy.layers.l2 import ARP, Ether

    me = "02:00:00:00:00:15"
    link.send(frame)
    link.setblocking(False)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            f = Ether(link.recv())
        except BlockingIOError:
            time.sleep(0.01)
            continue
        if ARP in f and f[ARP].op == 1 and f[ARP].pdst == "10.0.2.15":
            link.send(bytes(Ether(src=me, dst=f.src) / ARP(
                op=2, hwsrc=me, psrc="10.0.2.15", hwdst=f.src, pdst=f[ARP].psrc)))
        elif want(f):
            return f
    return None


def test_held_syn_answered_by_icmp_unreachable_or_reset():
    """The catch-all listener holds a SYN until its owner answers: EHOSTUNREACH gives an
    ICMP host unreachable that quotes the SYN (its sequence number, which the guest's
    kernel checks), ECONNREFUSED a RST."""
    import errno

    from scapy.layers.inet import ICMP, IP, TCP, TCPerror
    from scapy.layers.l2 import Ether

    a, b = open_pair(1518)
    gw = threadnet.Stack("eth,ip=10.0.2.2/24", link=b)
    answers = iter([errno.EHOSTUNREACH, errno.ECONNREFUSED])

    class Owner:
        def on_syn(self, key):
            assert key[:2] == (bytes([198, 51, 100, 1]), 80)
            gw.tcp.release_syn(key, next(answers), gw.clock())

    try:
        ls = gw.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_IP, socket.IP_TRANSPARENT, 1)
        ls.listen(8)
        with gw.locked():
            gw.catch_all = gw.upper.add(Owner())
        gmac = ":".join(f"{x:02x}" for x in gw.interface("eth0").mac)
        syn = Ether(src="02:00:00:00:00:15", dst=gmac) / IP(src="10.0.2.15", dst="198.51.100.1")
        f = _raw_guest_exchange(a, bytes(syn / TCP(sport=5555, dport=80, flags="S",
                                                   seq=123456)),
                                lambda f: ICMP in f or TCP in f)
        assert f is not None and ICMP in f and (f[ICMP].type, f[ICMP].code) == (3, 1)
        assert f[TCPerror].seq == 123456 and f[TCPerror].sport == 5555
        f = _raw_guest_exchange(a, bytes(syn / TCP(sport=5556, dport=80, flags="S", seq=7)),
                                lambda f: TCP in f and ICMP not in f)
        assert f is not None and f[TCP].flags == "RA" and f[TCP].ack == 8
        assert not gw.tcp.held
        ls.close()
    finally:
        a.close()
        gw.close()


# -- the gateway over a socket pair ------------------------------------------------------------------
@pytest.fixture
def http_server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv.server_address[1]
    srv.shutdown()
    srv.server_close()


class _Hello(http.server.BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's name)
        body = b"hello from the host " + self.client_address[0].encode()
        if self.path.startswith("/big"):
            body = bytes(range(256)) * 4096  # 1 MiB
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def slirp_pair():
    made = []

    def make(opts=""):
        a, b = open_pair(1518)
        gw = Gateway(b, SlirpOptions.parse(opts))
        errors = []
        gw.loop.on_error = errors.append
        gw.errors = errors
        gw.start()
        guest = threadnet.Stack("eth,ip=10.0.2.15/24,gw=10.0.2.2,dns=10.0.2.3", link=a)
        made.append((gw, guest))
        return gw, guest

    yield make
    for gw, guest in made:
        guest.close()
        gw.close()
        assert not gw.errors, gw.errors


def _fetch(stack, host, port, path="/"):
    with create_connection(stack, (host, port), timeout=10) as c:
        c.sendall(f"GET {path} HTTP/1.0\r\nHost: x\r\n\r\n".encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    return data


def test_gateway_reaches_host_loopback_and_refuses_closed_ports(slirp_pair, http_server):
    gw, guest = slirp_pair("noipv6")
    data = _fetch(guest, "10.0.2.2", http_server)
    assert data.startswith(b"HTTP/1.0 200") and data.endswith(b"hello from the host 127.0.0.1")
    big = _fetch(guest, "10.0.2.2", http_server, "/big")
    assert big.endswith(bytes(range(256)) * 4096)
    with pytest.raises(ConnectionRefusedError):  # the SYN itself is reset, as libslirp does
        _fetch(guest, "10.0.2.2", 1)
    assert gw.counters["tcp"] == 2 and gw.counters["tcp_refused"] == 1
    wait_for(lambda: not gw.splices, what="splices closed")


def test_gateway_restrict_keeps_the_host_loopback_out(slirp_pair, http_server):
    gw, guest = slirp_pair("noipv6,restrict")
    with pytest.raises(ConnectionRefusedError):
        _fetch(guest, "10.0.2.2", http_server)


def test_gateway_udp_flows_dns_forwarder_and_ping(slirp_pair):
    echo = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    echo.bind(("127.0.0.1", 0))

    def serve():
        while True:
            try:
                d, p = echo.recvfrom(2048)
            except OSError:
                return
            echo.sendto(d.upper(), p)

    threading.Thread(target=serve, daemon=True).start()
    try:
        port = echo.getsockname()[1]
        gw, guest = slirp_pair(f"noipv6,nameserver=127.0.0.1#{port}")
        u = guest.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(5)
        u.sendto(b"hello", ("10.0.2.2", port))
        assert u.recvfrom(100) == (b"HELLO", ("10.0.2.2", port))
        u.sendto(b"again", ("10.0.2.2", port))  # the same flow
        assert u.recvfrom(100)[0] == b"AGAIN"
        # the DNS forwarder: 10.0.2.3:53 -> the nameserver (here the echo), raw
        u.sendto(b"query", ("10.0.2.3", 53))
        assert u.recvfrom(100) == (b"QUERY", ("10.0.2.3", 53))
        assert gw.counters["udp"] == 1 and gw.counters["dns"] == 1 and len(gw.udp) == 2
        assert guest.ping("10.0.2.2", count=1)
    finally:
        echo.close()


def test_udp_to_a_closed_host_port_comes_back_as_port_unreachable():
    """The host's refusal (ECONNREFUSED on the flow's socket) reaches the guest as an
    ICMP port unreachable quoting its datagram's headers (here a raw guest on the link,
    which answers the gateway's ARP)."""
    from scapy.layers.inet import ICMP, IP, UDP, UDPerror
    from scapy.layers.l2 import ARP, Ether

    a, b = open_pair(1518)
    gw = Gateway(b, SlirpOptions.parse("noipv6,nodhcp")).start()
    try:
        me, gmac = "02:00:00:00:00:15", "52:55:0a:00:02:02"
        closed = _free_port(socket.SOCK_DGRAM)
        a.send(bytes(Ether(src=me, dst=gmac) / IP(src="10.0.2.15", dst="10.0.2.2") /
                     UDP(sport=4444, dport=closed) / b"anyone?"))
        a.setblocking(False)
        deadline = time.monotonic() + 5
        got = None
        while got is None and time.monotonic() < deadline:
            try:
                f = Ether(a.recv())
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if ARP in f and f[ARP].op == 1 and f[ARP].pdst == "10.0.2.15":
                a.send(bytes(Ether(src=me, dst=f.src) / ARP(
                    op=2, hwsrc=me, psrc="10.0.2.15", hwdst=f.src, pdst=f[ARP].psrc)))
            elif ICMP in f and f[ICMP].type == 3:
                got = f
        assert got is not None, "no ICMP error"
        assert got[ICMP].code == 3 and got[IP].dst == "10.0.2.15"
        assert got[UDPerror].sport == 4444 and got[UDPerror].dport == closed
    finally:
        a.close()
        gw.close()


def _host_server(handler):
    """A host TCP server on 127.0.0.1 running ``handler(conn)`` per connection."""
    srv = socket.create_server(("127.0.0.1", 0), backlog=512)

    def serve():
        while True:
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv


def _recv_all(s) -> bytes:
    chunks = []
    while chunk := s.recv(1 << 20):
        chunks.append(chunk)
    return b"".join(chunks)


def test_tcp_splice_is_byte_exact_both_ways_with_half_close(slirp_pair):
    """4 MiB from the guest to the host, to the guest's EOF, then 6 MiB back on the same
    connection (its FIN after the guest's), byte for byte; a host reset resets the guest."""
    rnd = random.Random(5)
    up, down = rnd.randbytes(4 << 20), rnd.randbytes(6 << 20)
    got = []

    def handler(c):
        with c:
            got.append(_recv_all(c))  # the guest's data, up to its FIN
            c.sendall(down)

    def resetter(c):
        c.recv(1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
        c.close()

    srv, rsrv = _host_server(handler), _host_server(resetter)
    gw, guest = slirp_pair("noipv6")
    try:
        with create_connection(guest, ("10.0.2.2", srv.getsockname()[1]), timeout=20) as c:
            c.sendall(up)
            c.shutdown(socket.SHUT_WR)
            back = _recv_all(c)
        assert got == [up]
        assert len(back) == len(down) and back == down
        with create_connection(guest, ("10.0.2.2", rsrv.getsockname()[1]), timeout=10) as c:
            c.sendall(b"x")
            with pytest.raises(ConnectionResetError):
                c.settimeout(10)
                while c.recv(100):
                    pass
        wait_for(lambda: not gw.splices, what="splices closed")
    finally:
        srv.close()
        rsrv.close()


def test_tcp_splice_backpressure_from_a_host_that_stops_reading(slirp_pair):
    """A host that does not read: the guest's sends stop (the gateway's window closes,
    its buffers stay bounded); once the host reads, everything arrives, in order."""
    rnd = random.Random(7)
    accepted = []
    srv = _host_server(accepted.append)
    gw, guest = slirp_pair("noipv6")
    try:
        c = create_connection(guest, ("10.0.2.2", srv.getsockname()[1]), timeout=10)
        wait_for(lambda: accepted, what="the host's accept")
        host = accepted[0]
        host.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        c.setblocking(False)
        sent = bytearray()
        stalled_since = None
        while stalled_since is None or time.monotonic() - stalled_since < 1.0:
            chunk = rnd.randbytes(65536)
            try:
                n = c.send(chunk)
            except BlockingIOError:
                stalled_since = stalled_since or time.monotonic()
                time.sleep(0.05)
                continue
            stalled_since = None
            sent += chunk[:n]
            assert len(sent) < 64 << 20, "the guest's sends never stopped"
        st = gw.stack
        with st.locked():
            eps = [ep for ep in st.tcp.conns.values() if ep.owner is not None]
            assert len(eps) == 1
            # (bounded by the window it advertised: the buffer, give or take the window
            # scale's rounding)
            assert eps[0].conn.recv_queued <= eps[0].conn.rcvbuf + 65536
        c.setblocking(True)
        c.shutdown(socket.SHUT_WR)
        host.settimeout(20)
        assert _recv_all(host) == sent
        host.close()
        assert _recv_all(c) == b""
        c.close()
        wait_for(lambda: not gw.splices, what="splice closed")
    finally:
        srv.close()


def _fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_tcp_splice_soak_leaves_no_descriptor_or_entry_behind(slirp_pair):
    """2000 connections (16 bytes each way, then close) through the gateway: its
    descriptors, splices, pending connects, owners and connections are back to where
    they were."""
    def echo(c):
        with c:
            c.sendall(c.recv(16))

    srv = _host_server(echo)
    port = srv.getsockname()[1]
    gw, guest = slirp_pair("noipv6")
    try:
        with create_connection(guest, ("10.0.2.2", port), timeout=10) as c:  # warm up
            c.sendall(b"w" * 16)
            assert c.recv(16) == b"w" * 16
        st = gw.stack
        # (the gateway closes first when the host does: its side waits in TIME-WAIT)
        settled = lambda: not gw.splices and all(  # noqa: E731
            ep.conn.state is TcpState.TIME_WAIT and ep.owner is None
            for ep in list(st.tcp.conns.values()))
        wait_for(settled, timeout=10, what="the first connection gone")
        base_fds, base_owners = _fds(), len(st.upper)
        for i in range(2000):
            msg = i.to_bytes(16, "big")
            with create_connection(guest, ("10.0.2.2", port), timeout=10) as c:
                c.sendall(msg)
                assert c.recv(16) == msg
        assert gw.counters["tcp"] == 2001
        wait_for(settled, timeout=20, what="every spliced connection gone")
        assert not gw.pending and not gw._connecting and not st.tcp.held
        assert len(st.upper) == base_owners
        wait_for(lambda: _fds() <= base_fds, timeout=10, what="descriptors back at baseline")
    finally:
        srv.close()


def test_hostfwd_reaches_a_guest_server(slirp_pair):
    gw, guest = slirp_pair("noipv6,hostfwd=tcp:127.0.0.1:0-:8000")
    ls = guest.socket(socket.AF_INET, socket.SOCK_STREAM)
    ls.bind(("", 8000))
    ls.listen(4)

    def serve():
        s, peer = ls.accept()
        s.sendall(b"guest sees " + peer[0].encode())
        s.close()

    threading.Thread(target=serve, daemon=True).start()
    with socket.create_connection(("127.0.0.1", gw.hostfwd_ports()[0]), timeout=5) as k:
        k.settimeout(5)
        data = b""
        while chunk := k.recv(100):
            data += chunk
    assert data == b"guest sees 10.0.2.2"
    ls.close()


def test_ipv6_by_ra_reaches_the_host_loopback_through_fd00_2(slirp_pair):
    srv = socket.create_server(("::1", 0), family=socket.AF_INET6)
    srv.settimeout(10)

    def serve():
        c, peer = srv.accept()
        c.sendall(b"v6 " + peer[0].encode())
        c.close()

    threading.Thread(target=serve, daemon=True).start()
    a, b = open_pair(1518)
    gw = Gateway(b, SlirpOptions.parse("nodhcp")).start()
    guest = threadnet.Stack("eth,rd,slaac", link=a)
    try:
        # SLAAC from the gateway's RA of fd00::/64, and a default route through it
        wait_for(lambda: any(x.addr[:2] == b"\xfd\x00" and x.state == "preferred"
                             for x in guest.interface("eth0").v6), timeout=10,
                 what="an fd00::/64 address")
        with create_connection(guest, ("fd00::2", srv.getsockname()[1]), timeout=5) as c:
            assert c.recv(100) == b"v6 ::1"
        assert guest.ping("fd00::2")
    finally:
        guest.close()
        gw.close()
        srv.close()


def test_slirp_link_scheme():
    from threadnet.link import open_link

    link = open_link("slirp://noipv6,nodhcp")
    try:
        assert link.gateway.options.dhcp is False
        s = threadnet.Stack("eth,ip=10.0.2.15/24,gw=10.0.2.2", link=link)
        try:
            assert s.ping("10.0.2.2", count=1)
        finally:
            s.close()
    finally:
        link.close()


def test_bad_input_and_floods_stay_bounded(slirp_pair):
    """Mangled frames and floods of flows at the gateway raise nothing, and its tables
    stay within their bounds."""
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.l2 import Ether

    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes datagrams, answers none
    sink.bind(("127.0.0.1", 0))
    sink_port = sink.getsockname()[1]
    a, b = open_pair(1518)
    gw = Gateway(b, SlirpOptions.parse(f"noipv6,maxudp=64,maxtcp=16,"
                                       f"nameserver=127.0.0.1#{sink_port}"))
    errors = []
    gw.loop.on_error = errors.append
    gw.start()
    try:
        gmac = "52:55:0a:00:02:02"
        me = "02:00:00:00:00:15"
        rnd = random.Random(11)
        base = Ether(src=me, dst=gmac) / IP(src="10.0.2.15", dst="127.0.0.9")
        for i in range(3000):
            dst = f"127.1.{i // 250}.{i % 250 + 1}"
            pkt = Ether(src=me, dst=gmac) / IP(src="10.0.2.15", dst=dst) / UDP(
                sport=10000 + i, dport=9) / b"x"
            frame = bytearray(bytes(pkt))
            if i % 3 == 0:  # mangle: cut, flip bits
                frame = frame[:rnd.randrange(14, len(frame))]
            elif i % 3 == 1:
                frame[rnd.randrange(14, len(frame))] ^= 0xFF
            a.send(bytes(frame))
            if i % 200 == 0:
                a.send(bytes(Ether(src=me, dst=gmac) / IP(src="10.0.2.15", dst=dst) /
                             TCP(sport=2000 + i, dport=9, flags="S")))
                a.send(bytes(base / ICMP() / b"p"))
        # and flows to a host port that takes them, and garbage "queries" to the DNS
        # forwarder: every one a new flow
        for i in range(500):
            a.send(bytes(Ether(src=me, dst=gmac) / IP(src="10.0.2.15", dst="10.0.2.2") /
                         UDP(sport=20000 + i, dport=sink_port) / b"y"))
            a.send(bytes(Ether(src=me, dst=gmac) / IP(src="10.0.2.15", dst="10.0.2.3") /
                         UDP(sport=40000 + i, dport=53) / rnd.randbytes(rnd.randrange(0, 600))))
        time.sleep(1.0)
        assert len(gw.udp) <= 64
        assert len(gw.splices) <= 16
        listener = gw.stack.tcp.listeners[(b"*", 0)]
        assert len(listener.half_open) <= 256 and len(gw.stack.tcp.held) <= 256
        assert len(gw.pending) + len(gw._connecting) <= 16
        wait_for(lambda: gw.counters["udp_evicted"] > 0, what="evictions")
        assert gw.counters["dns"] > 64
        # still serves
        guest = threadnet.Stack("eth,ip=10.0.2.16/24,gw=10.0.2.2", link=a)
        try:
            assert guest.ping("10.0.2.2", count=1, timeout=3)
        finally:
            guest.close()
    finally:
        gw.close()
        sink.close()
    assert not errors, errors


# -- real peers ------------------------------------------------------------------------------------
def _dnsmasq(procs, port: int) -> None:
    need_tool("dnsmasq")
    procs.popen(["dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--port={port}",
                 "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
                 "--no-hosts", "--address=/slirp.test/192.0.2.77", "--pid-file="],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)


def _free_port(kind=socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.root
@pytest.mark.slow
def test_namespace_on_a_switch_through_threadnet_slirp(threadnet_switch, tap_ns, netns, procs,
                                                       sockdir, http_server):
    need_tool("udhcpc", "curl", "busybox")
    sw, _mgmt, _ = threadnet_switch()
    dns_port = _free_port(socket.SOCK_DGRAM)
    _dnsmasq(procs, dns_port)
    fwd_port = _free_port()
    pidfile = os.path.join(sockdir, "slirp.pid")
    procs.daemon(threadnet_cmd("slirp", f"vde://{sw}", "--dhcp", "-N", f"127.0.0.1#{dns_port}",
                               "--hostfwd", f"tcp:127.0.0.1:{fwd_port}-:8000",
                               "-d", "-p", pidfile), pidfile, env=threadnet_env())
    g = tap_ns(sw, "10.0.2.200")
    netns.run(g.ns, "ip", "addr", "flush", "dev", g.tap)
    r = netns.run(g.ns, "udhcpc", "-i", g.tap, "-n", "-q", "-t", "5", "-s", "/bin/true",
                  timeout=30, check=False)
    assert "10.0.2.15" in r.stdout + r.stderr, r.stdout + r.stderr
    netns.run(g.ns, "ip", "addr", "add", "10.0.2.15/24", "dev", g.tap)
    netns.run(g.ns, "ip", "route", "add", "default", "via", "10.0.2.2")
    # the host's loopback through the gateway address
    out = netns.run(g.ns, "curl", "-sS", "-m", "10", f"http://10.0.2.2:{http_server}/").stdout
    assert out == "hello from the host 127.0.0.1"
    # a server on another host address (not loopback): the HTTP server on 127.0.0.1 is
    # reached by its own address too, through the catch-all
    host_addr = _host_address()
    if host_addr:
        srv = http.server.ThreadingHTTPServer((host_addr, 0), _Hello)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        try:
            out = netns.run(g.ns, "curl", "-sS", "-m", "10",
                            f"http://{host_addr}:{srv.server_address[1]}/").stdout
            assert out == f"hello from the host {host_addr}"
        finally:
            srv.shutdown()
            srv.server_close()
    # DNS through 10.0.2.3 to a dnsmasq on the host's loopback
    r = netns.run(g.ns, "busybox", "nslookup", "slirp.test", "10.0.2.3", check=False)
    assert "192.0.2.77" in r.stdout, r.stdout + r.stderr
    # ping the gateway
    netns.run(g.ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.2.2")
    # hostfwd: the host's 127.0.0.1:fwd_port reaches the guest's server on 8000
    server = procs.popen(netns.exec_cmd(g.ns, "python3", "-c",
                                        "import socket;s=socket.create_server(('',8000));"
                                        "c,a=s.accept();c.sendall(b'guest:'+a[0].encode());"
                                        "c.close()"))
    time.sleep(0.5)

    def fetched():
        with socket.create_connection(("127.0.0.1", fwd_port), timeout=5) as k:
            return k.recv(100)

    assert wait_for(fetched, what="hostfwd") == b"guest:10.0.2.2"
    server.wait(5)


def _host_address() -> str | None:
    """An address of this host's that is not loopback (the default route's source)."""
    r = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"],
                       capture_output=True, text=True)
    for line in r.stdout.splitlines():
        return line.split()[3].split("/")[0]
    return None


@pytest.mark.root
def test_ping_through_the_hosts_ping_sockets(netns):
    """Where net.ipv4.ping_group_range allows ping sockets (set in a namespace of the
    test's own: the sysctl is per namespace), a guest's ping to a host address goes out
    through one, and the reply comes back from that address."""
    ns = netns.add()
    netns.run(ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
    netns.run(ns, "ip", "addr", "add", "192.0.2.1/32", "dev", "lo")  # a host address
    code = (
        "import threadnet\n"
        "from threadnet.link.pair import open_pair\n"
        "from threadnet.slirp import Gateway, SlirpOptions\n"
        "a, b = open_pair(1518)\n"
        "gw = Gateway(b, SlirpOptions.parse('noipv6,nodhcp')).start()\n"
        "g = threadnet.Stack('eth,ip=10.0.2.15/24,gw=10.0.2.2', link=a)\n"
        "print(len(g.ping('192.0.2.1', count=3, timeout=2)), gw.counters['echo'])\n"
        "print(len(g.ping('192.0.2.99', count=1, timeout=1)))\n"
    )
    r = netns.run(ns, sys.executable, "-c", code, env=threadnet_env(), check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["3", "3", "0"], r.stdout


@pytest.mark.root
@pytest.mark.slow
def test_tap_in_a_namespace_like_slirp4netns(netns, procs, sockdir, http_server):
    need_tool("curl")
    ns = netns.add()
    pidfile = os.path.join(sockdir, "slirp.pid")
    procs.daemon(threadnet_cmd("slirp", "--netns", f"/run/netns/{ns}", "--no-dhcp",
                               "tap://tn0", "-d", "-p", pidfile), pidfile, env=threadnet_env())
    wait_for(lambda: netns.run(ns, "ip", "link", "show", "tn0", check=False).returncode == 0,
             what="the tap in the namespace")
    netns.run(ns, "ip", "addr", "add", "10.0.2.100/24", "dev", "tn0")
    netns.run(ns, "ip", "link", "set", "tn0", "up")
    netns.run(ns, "ip", "route", "add", "default", "via", "10.0.2.2")
    out = netns.run(ns, "curl", "-sS", "-m", "10", f"http://10.0.2.2:{http_server}/").stdout
    assert out == "hello from the host 127.0.0.1"


@pytest.mark.root
def test_unprivileged_slirp_link(unpriv, http_server):
    """No tap, no root: an unprivileged user's stack on slirp:// fetches from the host."""
    code = (
        "import threadnet\n"
        "from threadnet.stack.socket import create_connection\n"
        "s = threadnet.Stack('eth,ip=10.0.2.15/24,gw=10.0.2.2', link='slirp://noipv6')\n"
        f"c = create_connection(s, ('10.0.2.2', {http_server}), timeout=10)\n"
        "c.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n')\n"
        "d = b''\n"
        "while (x := c.recv(4096)): d += x\n"
        "print(d.split(b'\\r\\n\\r\\n')[1].decode())\n"
    )
    r = run_as(unpriv, [unpriv["python"], "-c", code], capture_output=True, text=True,
               timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "hello from the host 127.0.0.1"



_ECHO_PEER = ("import socket,sys\n"
              "s=socket.create_server((sys.argv[1],int(sys.argv[2])))\n"
              "while True:\n"
              " c,a=s.accept();c.recv(4096)\n"
              " b=('peer '+a[0]).encode()\n"
              " c.sendall(b'HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n'%len(b)+b)\n"
              " c.close()\n")


def _far_namespace(netns, procs) -> str:
    """A namespace the host reaches through its own routing (a veth, 198.18.77.0/24),
    with an HTTP server on 198.18.77.2:8080 that answers with its peer's address."""
    far = netns.add()
    host_end = f"tnfar{os.getpid() % 100000}"
    # made with its peer already inside: deleting the namespace deletes both ends
    subprocess.run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "far0",
                    "netns", far], check=True)
    subprocess.run(["ip", "addr", "add", "198.18.77.1/24", "dev", host_end], check=True)
    subprocess.run(["ip", "link", "set", host_end, "up"], check=True)
    netns.run(far, "ip", "addr", "add", "198.18.77.2/24", "dev", "far0")
    netns.run(far, "ip", "link", "set", "far0", "up")
    procs.popen(netns.exec_cmd(far, sys.executable, "-c", _ECHO_PEER, "198.18.77.2", "8080"))
    return far


@pytest.mark.root
@pytest.mark.slow
def test_threadnet_up_as_an_unprivileged_user_is_a_complete_network(unpriv, tap_ns, netns, procs,
                                                                      sockdir, http_server):
    """Issue 11, acceptance 4: a bare ``threadnet up`` run by an unprivileged user (slirp,
    DHCP, RA and DNS are its default), then a root-made namespace on vde_plug2tap: udhcpc
    gets 10.0.2.15, curl reaches the host's loopback and a server in another namespace
    through the host's routing, a name of a dnsmasq on the host resolves through
    10.0.2.3, a host-side curl reaches the guest through a port forward, ping 10.0.2.2."""
    need_tool("udhcpc", "curl", "busybox")
    os.chmod(sockdir, 0o1777)  # the user makes its switch here (sticky, as /tmp)
    sw = os.path.join(sockdir, "up")
    pidfile = os.path.join(sockdir, "up.pid")
    dns_port = _free_port(socket.SOCK_DGRAM)
    _dnsmasq(procs, dns_port)
    fwd_port = _free_port()
    _far_namespace(netns, procs)
    # the options only say where the test's dnsmasq is and add a forward: slirp itself,
    # its DHCP, RA and DNS forwarder are what a bare `threadnet up` runs
    r = run_as(unpriv, [unpriv["python"], "-m", "threadnet", "up", "-s", sw, "-M", sw + ".mgmt",
                        "-d", "-p", pidfile, "--slirp",
                        f"nameserver=127.0.0.1#{dns_port},hostfwd=tcp:127.0.0.1:{fwd_port}-:8000"],
               capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert "slirp:    gateway 10.0.2.2, DNS 10.0.2.3, DHCP from 10.0.2.15" in r.stdout, r.stdout
    pid = procs.adopt(read_pidfile(pidfile))
    assert os.stat(f"/proc/{pid}").st_uid == unpriv["uid"]
    g = tap_ns(sw, "10.0.2.200")
    netns.run(g.ns, "ip", "addr", "flush", "dev", g.tap)
    r = netns.run(g.ns, "udhcpc", "-i", g.tap, "-n", "-q", "-t", "10", "-s", "/bin/true",
                  timeout=40, check=False)
    assert "10.0.2.15" in r.stdout + r.stderr, r.stdout + r.stderr
    netns.run(g.ns, "ip", "addr", "add", "10.0.2.15/24", "dev", g.tap)
    netns.run(g.ns, "ip", "route", "add", "default", "via", "10.0.2.2")
    # the host's loopback through the gateway address
    out = netns.run(g.ns, "curl", "-sS", "-m", "10", f"http://10.0.2.2:{http_server}/").stdout
    assert out == "hello from the host 127.0.0.1"
    # another namespace, through the host's routing: its server sees the host's address
    out = netns.run(g.ns, "curl", "-sS", "-m", "10", "http://198.18.77.2:8080/").stdout
    assert out == "peer 198.18.77.1"
    # a name served by dnsmasq on the host, through 10.0.2.3
    r = netns.run(g.ns, "busybox", "nslookup", "slirp.test", "10.0.2.3", check=False)
    assert "192.0.2.77" in r.stdout, r.stdout + r.stderr
    netns.run(g.ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.2.2")
    # hostfwd: a host-side curl to 127.0.0.1:fwd_port reaches the guest's server on 8000
    procs.popen(netns.exec_cmd(g.ns, sys.executable, "-c", _ECHO_PEER, "0.0.0.0", "8000"))
    out = wait_for(lambda: subprocess.run(
        ["curl", "-sS", "-m", "5", f"http://127.0.0.1:{fwd_port}/"], capture_output=True,
        text=True).stdout, timeout=10, what="the forward to the guest")
    assert out == "peer 10.0.2.2"


@pytest.mark.root
@pytest.mark.slow
def test_threadnet_run_with_dhcp_on_the_default_network(unpriv, procs, sockdir, http_server):
    """Issue 11, acceptance 5: while `threadnet up` runs, `threadnet run --link ""
    --config dhcp -- python -c ...` gets its address from slirp's DHCP server and
    fetches from a server on the host."""
    os.chmod(sockdir, 0o1777)
    home = os.path.join(sockdir, "home")
    os.makedirs(os.path.join(home, ".vdeplug"))
    sw = os.path.join(sockdir, "default-sw")
    with open(os.path.join(home, ".vdeplug", "default"), "w") as f:
        f.write(f"vde://{sw}\n")
    for d in (home, os.path.join(home, ".vdeplug")):
        os.chown(d, unpriv["uid"], unpriv["gid"])
    pidfile = sw + ".pid"
    env = {"HOME": home}
    r = run_as(unpriv, [unpriv["python"], "-m", "threadnet", "up", "-d"], env=env,
               capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    assert f"vde://{sw}" in r.stdout and "slirp:" in r.stdout, r.stdout
    procs.adopt(read_pidfile(pidfile))
    code = ("import socket, urllib.request\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.connect(('10.0.2.2', 9)); print(s.getsockname()[0])\n"
            f"print(urllib.request.urlopen('http://10.0.2.2:{http_server}/', timeout=10)"
            ".read().decode())\n")
    r = run_as(unpriv, [unpriv["python"], "-m", "threadnet", "run", "--link", "",
                        "--config", "dhcp", "--", unpriv["python"], "-c", code], env=env,
               capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["10.0.2.15", "hello from the host 127.0.0.1"], r.stdout
