"""Raw IP sockets, ping sockets and packet sockets on a stack (issue 11, acceptance 3).

Two stacks on a pair link check Linux's semantics (raw(7), icmp(7)'s ping sockets,
packet(7)) without root; with root, a stack pings a kernel namespace with a SOCK_RAW
ping and a ping socket over IPv4 and IPv6 and an AF_PACKET socket sees a stdlib HTTP
exchange with it, in the stack's own process (through the hook) and from another process
through a published stack (``threadnet run --stack``), where a user who is neither the
stack's owner nor root gets EPERM for raw and packet sockets and may still ping.
"""

from __future__ import annotations

import errno
import json
import os
import random
import socket
import struct
import subprocess
import sys

import pytest

import threadnet
from threadnet.link.pair import open_pair
from threadnet.stack.stack import Stack as CoreStack
from threadnet.switch.server import SwitchServer

from conftest import need_tool, run_as, threadnet_cmd, threadnet_env, wait_for
from stack_helpers import ListLink

A4, B4 = "10.77.0.1", "10.77.0.2"
A6, B6 = "fc00:77::1", "fc00:77::2"


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def _echo(family: int, ident: int, seq: int, data: bytes = b"threadnet") -> bytes:
    kind = 8 if family == 4 else 128
    msg = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + data
    if family == 4:  # ICMPv6's checksum is the stack's (raw(7), IPV6_CHECKSUM)
        msg = msg[:2] + _csum(msg).to_bytes(2, "big") + msg[4:]
    return msg


@pytest.fixture
def pair():
    a_link, b_link = open_pair()
    a = threadnet.Stack(f"eth,ip={A4}/24,ip={A6}/64", a_link, name="rawA")
    b = threadnet.Stack(f"eth,ip={B4}/24,ip={B6}/64", b_link, name="rawB")
    try:
        a.settle()
        b.settle()
        yield a, b
    finally:
        a.close()
        b.close()


def _recv_type(sock: socket.socket, kind: int, offset: int = 0) -> tuple[bytes, tuple]:
    while True:
        data, addr = sock.recvfrom(4096)
        if len(data) > offset and data[offset] == kind:
            return data, addr


@pytest.mark.parametrize("family", [4, 6])
def test_a_raw_socket_pings_and_sees_ip_packets_as_linux_gives_them(pair, family):
    a, _ = pair
    af, proto, peer = ((socket.AF_INET, socket.IPPROTO_ICMP, B4) if family == 4
                       else (socket.AF_INET6, socket.IPPROTO_ICMPV6, B6))
    with a.socket(af, socket.SOCK_RAW, proto) as s:
        s.settimeout(5)
        assert (s.family, s.type, s.proto) == (af, socket.SOCK_RAW, proto)
        s.sendto(_echo(family, 0x4242, 7), (peer, 0))
        if family == 4:
            data, addr = _recv_type(s, 0, offset=20)
            assert data[0] == 0x45 and data[9] == 1  # IPv4: the header comes too
            assert socket.inet_ntoa(data[12:16]) == B4 and _csum(data[:20]) == 0
            icmp = data[20:]
        else:
            icmp, addr = _recv_type(s, 129)  # IPv6: no header (raw(7))
        assert addr[0] == peer and addr[1] == 0
        assert struct.unpack("!HH", icmp[4:8]) == (0x4242, 7) and icmp.endswith(b"threadnet")
        if family == 4:
            assert _csum(icmp) == 0


@pytest.mark.parametrize("family", [4, 6])
def test_a_ping_socket_sets_its_id_and_hears_only_its_replies(pair, family):
    a, _ = pair
    af, proto, peer = ((socket.AF_INET, socket.IPPROTO_ICMP, B4) if family == 4
                       else (socket.AF_INET6, socket.IPPROTO_ICMPV6, B6))
    one = a.socket(af, socket.SOCK_DGRAM, proto)
    two = a.socket(af, socket.SOCK_DGRAM, proto)
    try:
        one.settimeout(5)
        two.bind(("", 40001))
        assert two.getsockname()[1] == 40001
        with pytest.raises(OSError) as e:  # an identifier is one socket's
            a.socket(af, socket.SOCK_DGRAM, proto).bind(("", 40001))
        assert e.value.errno == errno.EADDRINUSE
        one.sendto(_echo(family, 1, 1, b"one"), (peer, 0))  # (any id: the stack writes its own)
        data, addr = one.recvfrom(100)
        assert addr[0] == peer and addr[1] == 0
        assert data[0] == (0 if family == 4 else 129) and data.endswith(b"one")
        assert int.from_bytes(data[4:6], "big") == one.getsockname()[1] != 1
        two.setblocking(False)
        with pytest.raises(BlockingIOError):
            two.recv(100)  # the other socket's reply was not for it
        with pytest.raises(OSError) as e:
            one.sendto(b"\x00" * 8, (peer, 0))  # echo requests only
        assert e.value.errno == errno.EINVAL
    finally:
        one.close()
        two.close()


def test_a_connected_ping_socket_gets_ehostunreach_from_an_unreachable(pair):
    """Linux's ping_err without IP_RECVERR: a destination unreachable that quotes the
    connected socket's request is its next call's error."""
    a, b = pair
    sniff = b.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    p = a.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    forge = b.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    try:
        sniff.settimeout(5)
        p.settimeout(5)
        p.connect((B4, 0))
        p.send(_echo(4, 0, 1))
        request, _ = _recv_type(sniff, 8, offset=20)
        quoted = request[:28]
        icmp = bytearray(struct.pack("!BBHI", 3, 1, 0, 0) + quoted)
        icmp[2:4] = _csum(bytes(icmp)).to_bytes(2, "big")
        # IP_HDRINCL: length, identification and checksum left for the stack to fill
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 0, 0, 0, 64, 1, 0,
                             socket.inet_aton(B4), socket.inet_aton(A4))
        forge.sendto(header + bytes(icmp), (A4, 0))
        # the echo reply came first; then the error
        assert p.recv(100)[0] == 0
        with pytest.raises(OSError) as e:
            p.recv(100)
        assert e.value.errno == errno.EHOSTUNREACH
    finally:
        for s in (sniff, p, forge):
            s.close()


@pytest.mark.parametrize("family", [4, 6])
def test_a_connected_ping_socket_hears_that_nobody_answered_for_its_neighbor(pair, family):
    """Linux sends itself a host unreachable when address resolution fails: a connected
    ping socket's next call raises EHOSTUNREACH."""
    a, _ = pair
    af, proto, nobody = ((socket.AF_INET, socket.IPPROTO_ICMP, "10.77.0.99") if family == 4
                         else (socket.AF_INET6, socket.IPPROTO_ICMPV6, "fc00:77::99"))
    with a.socket(af, socket.SOCK_DGRAM, proto) as p:
        p.settimeout(15)
        p.connect((nobody, 0))
        p.send(_echo(family, 0, 1))
        with pytest.raises(OSError) as e:
            p.recv(100)
        assert e.value.errno == errno.EHOSTUNREACH


def test_ip_hdrincl_takes_the_callers_header_and_fills_what_linux_fills(pair):
    a, b = pair
    listen = b.socket(socket.AF_INET, socket.SOCK_RAW, 253)  # RFC 3692's experimental number
    send = a.socket(socket.AF_INET, socket.SOCK_RAW, 253)
    try:
        listen.settimeout(5)
        send.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
        header = struct.pack("!BBHHHBBH4s4s", 0x45, 0x10, 0, 0, 0, 33, 253, 0xBEEF,
                             bytes(4), socket.inet_aton(B4))
        send.sendto(header + b"payload", (B4, 0))
        data, addr = listen.recvfrom(200)
        assert addr == (A4, 0)
        tos, total, ident, ttl, proto = data[1], *struct.unpack("!HH", data[2:6]), data[8], data[9]
        assert (tos, total, ttl, proto) == (0x10, 27, 33, 253) and ident != 0
        assert data[12:16] == socket.inet_aton(A4) and _csum(data[:20]) == 0
        assert data[20:] == b"payload"
        # without IP_HDRINCL the stack builds the header; bind filters on the destination
        listen.bind((B4, 0))
        send.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 0)
        send.sendto(b"built", (B4, 0))
        data, _ = listen.recvfrom(200)
        assert data[9] == 253 and data[20:] == b"built"
    finally:
        listen.close()
        send.close()


def test_icmpv6_checksum_is_the_stacks(pair):
    a, b = pair
    r = b.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    s = a.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    try:
        r.settimeout(5)
        s.sendto(_echo(6, 9, 9, b"sum"), (B6, 0))
        data, addr = _recv_type(r, 128)
        assert addr[0] == A6
        pseudo = (socket.inet_pton(socket.AF_INET6, A6) + socket.inet_pton(socket.AF_INET6, B6)
                  + struct.pack("!I3xB", len(data), 58))
        assert _csum(pseudo + data) == 0
        with pytest.raises(OSError):
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_CHECKSUM, 4)  # ICMPv6: always
        # ICMPV6_FILTER blocks echo requests (type 128): the next one is not seen
        r.setsockopt(socket.IPPROTO_ICMPV6, 1, (1 << 128).to_bytes(32, "little"))
        s.sendto(_echo(6, 9, 10, b"blocked"), (B6, 0))
        s.sendto(struct.pack("!BBHHH", 129, 0, 0, 9, 10) + b"marker", (B6, 0))
        kinds = []
        while not kinds or kinds[-1] != 129:  # the marker comes after the blocked one
            kinds.append(r.recvfrom(200)[0][0])
        assert 128 not in kinds, kinds
        r.setsockopt(socket.IPPROTO_ICMPV6, 1, bytes(32))
        s.sendto(_echo(6, 9, 11, b"seen"), (B6, 0))
        data, _ = _recv_type(r, 128)
        assert data.endswith(b"seen")
    finally:
        r.close()
        s.close()


def test_packet_sockets_see_frames_in_and_out_and_send(pair):
    a, b = pair
    every = a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))  # ETH_P_ALL
    ip_only = a.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    arp_b = b.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0806))
    try:
        every.bind(("eth0", 3))
        ip_only.bind(("eth0", 0x0800))
        arp_b.bind(("eth0", 0x0806))
        for s in (every, ip_only, arp_b):
            s.settimeout(5)
        mac_a = a.interface("eth0").mac
        assert every.getsockname() == ("eth0", 3, 0, 1, mac_a)
        assert len(a.ping(B4, count=1)) == 1
        seen = []
        while len(seen) < 2:  # (ARP may come first: an ETH_P_ALL socket sees it too)
            frame, addr = every.recvfrom(2000)
            if frame[12:14] == b"\x08\x00":
                seen.append((frame, addr))
        assert [addr[2] for _, addr in seen] == [4, 0]  # PACKET_OUTGOING, PACKET_HOST
        assert seen[0][1][4] == mac_a and seen[0][0][6:12] == mac_a
        data, addr = ip_only.recvfrom(2000)  # a specific EtherType: incoming only
        assert addr[:4] == ("eth0", 0x0800, 0, 1) and data[0] == 0x45 and data[20] == 0
        # SOCK_DGRAM sends with the header built from the address
        ip_only.sendto(b"\x00" * 28, ("eth0", 0x0806, 0, 0, b"\xff" * 6))
        data, addr = arp_b.recvfrom(2000)
        while data != b"\x00" * 28:  # (after the ARP of the ping)
            data, addr = arp_b.recvfrom(2000)
        assert addr[1:3] == (0x0806, 1) and addr[4] == mac_a
        with pytest.raises(OSError) as e:
            every.bind(("eth9", 3))
        assert e.value.errno == errno.ENODEV
        with pytest.raises(OSError) as e:
            every.send(b"short")
        assert e.value.errno == errno.EINVAL
    finally:
        for s in (every, ip_only, arp_b):
            s.close()
    assert a.packet_taps == {} and a.raw_taps == ()


def test_through_a_published_stack(pair, sockdir):
    """A RemoteStack's raw, ping and packet sockets: the same datagrams on the same kind
    of descriptor, addresses (AF_PACKET's bytes too) through the control connection."""
    from threadnet.stack.remote import RemoteStack

    a, _ = pair
    path = os.path.join(sockdir, "a.stack")
    a.publish(path)
    remote = RemoteStack(path)
    k = remote.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(0x0800))
    p = remote.socket(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6)
    r = remote.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    try:
        k.bind(("eth0", 0x0800))
        assert k.getsockname() == ("eth0", 0x0800, 0, 1, a.interface("eth0").mac)
        for s in (k, p, r):
            s.settimeout(5)
        p.sendto(_echo(6, 0, 3, b"far"), (B6, 0))
        data, addr = p.recvfrom(100)
        assert addr[0] == B6 and data[0] == 129 and data.endswith(b"far")
        r.sendto(_echo(4, 0x77, 1), (B4, 0))
        data, addr = _recv_type(r, 0, offset=20)
        assert addr == (B4, 0) and data[0] == 0x45
        frame, addr = k.recvfrom(2000)
        assert addr[:4] == ("eth0", 0x0800, 0, 1) and frame[0] == 0x45
    finally:
        for s in (k, p, r):
            s.close()
        remote.close()


def test_a_packet_socket_opened_mid_connection_sees_its_segments(pair):
    """A connection's cached output path (and the direct input) give way to the tap."""
    a, b = pair
    server = a.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind((A4, 8080))
    server.listen()
    client = b.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.settimeout(5)
    client.connect((A4, 8080))
    conn, _ = server.accept()
    conn.settimeout(5)
    try:
        for _ in range(20):  # the paths are cached and warm
            client.sendall(b"x" * 1000)
            conn.sendall(conn.recv(1000))
            client.recv(1000)
        tap = a.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))
        tap.bind(("eth0", 3))
        tap.settimeout(5)
        client.sendall(b"in!")
        assert conn.recv(10) == b"in!"
        conn.sendall(b"out")
        assert client.recv(10) == b"out"
        seen = set()
        while seen != {(0, b"in!"), (4, b"out")}:
            packet, addr = tap.recvfrom(2000)
            if packet[9] == 6:
                payload = packet[20 + (packet[32] >> 4) * 4:]
                if payload in (b"in!", b"out"):
                    seen.add((addr[2], payload))
        tap.close()
    finally:
        for s in (client, conn, server):
            s.close()


def test_taps_cost_nothing_until_needed(pair):
    """No socket: empty taps (one truthiness test on the data path) and the direct TCP
    paths on; a ping socket keeps them on; a packet socket turns them off until closed."""
    a, _ = pair
    assert a.raw_taps == () and a.packet_taps == {} and not a._rx_hooked
    with a.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP):
        assert len(a.raw_taps) == 1 and not a._rx_hooked
    assert a.raw_taps == ()
    with a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)):
        assert a._rx_hooked
        assert a.output_path(4, bytes([10, 77, 0, 1]), bytes([10, 77, 0, 2]), 6, a.clock()) is None
    assert not a._rx_hooked and a.packet_taps == {}


def test_unsupported_kinds_are_refused_as_linux_does(pair):
    a, _ = pair
    for args, err in (((socket.AF_INET, socket.SOCK_RAW, 0), errno.EPROTONOSUPPORT),
                      ((socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMPV6),
                       errno.EPROTONOSUPPORT),
                      ((socket.AF_PACKET, socket.SOCK_STREAM, 0), errno.ESOCKTNOSUPPORT),
                      ((socket.AF_UNIX, socket.SOCK_DGRAM, 0), errno.EAFNOSUPPORT)):
        with pytest.raises(OSError) as e:
            a.socket(*args)
        assert e.value.errno == err, args


def test_garbage_written_to_raw_and_packet_sockets_raises_nothing_in_the_stack(pair):
    """Random bytes to every kind: the caller may get an OSError (as from Linux), the
    stack raises nothing and keeps answering."""
    a, b = pair
    rnd = random.Random(11)
    socks = [a.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
             a.socket(socket.AF_INET, socket.SOCK_RAW, 17),
             a.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
             a.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW),
             a.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP),
             a.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3)),
             a.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.htons(3))]
    socks[5].bind(("eth0", 3))
    watch = b.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    watch.bind(("eth0", 3))
    try:
        for i in range(600):
            s = socks[i % len(socks)]
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.choice((0, 1, 8, 14, 20, 40, 60, 300))))
            if i % 3 == 0 and len(data) >= 20:  # sometimes a plausible header
                data = bytes([0x45 if s.family != socket.AF_INET6 else 0x60]) + data[1:]
            to = ((B4, 0) if s.family == socket.AF_INET else (B6, 0) if s.family == socket.AF_INET6
                  else ("eth0", rnd.getrandbits(16), 0, 0, bytes(rnd.getrandbits(8) for _ in range(6))))
            try:
                s.sendto(data, to)
            except (OSError, ValueError, TypeError):
                pass
        assert len(a.ping(B4, count=1)) == 1 and len(b.ping(A6, count=1)) == 1
    finally:
        for s in (*socks, watch):
            s.close()


def test_mangled_frames_into_a_stack_with_taps_raise_nothing():
    s = CoreStack(runner=False)
    link = ListLink()
    s.add_interface(link)
    s.configure("eth,ip=10.9.9.1/24,ip=fc00::1/64", 0.0)
    taps = []

    class Tap:
        family, proto, outgoing = 4, 253, True

        def on_ip(self, *args):
            taps.append(args)

        def on_frame(self, *args):
            taps.append(args)

    from threadnet.stack import raw

    raw.add_tap(s, Tap())
    raw.add_tap(s, Tap(), 2)
    iface = s.interface("eth0")
    rnd = random.Random(5)
    head = iface.mac + bytes(6)
    for i in range(3000):
        body = bytes(rnd.getrandbits(8) for _ in range(rnd.randrange(0, 120)))
        if i % 2:
            body = b"\x08\x00\x45" + body
        s.input(iface, head + body, 1.0 + i / 1000)
    assert taps
    link.close()


# -- against the kernel: a namespace on a switch --------------------------------------------------
#: run in the stack's process under the hook, and by ``threadnet run --stack``
CLIENT = r'''
import json, socket, struct, sys, time, urllib.request

def csum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF

def echo(kind, ident, seq):
    m = struct.pack("!BBHHH", kind, 0, 0, ident, seq) + b"ping"
    return m[:2] + (csum(m) if kind == 8 else 0).to_bytes(2, "big") + m[4:]

def reply(sock, want, offset, ident=None):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            data, addr = sock.recvfrom(4096)
        except TimeoutError:
            return None
        icmp = data[offset:]
        if icmp and icmp[0] == want and (ident is None or icmp[4:6] == ident.to_bytes(2, "big")):
            return data, addr
    return None

def ping_until(sock, msg, dst, want, offset, ident=None):
    for _ in range(10):  # the first may wait for DAD (EADDRNOTAVAIL) or neighbors
        try:
            sock.sendto(msg, (dst, 0))
        except OSError:
            time.sleep(0.5)
            continue
        got = reply(sock, want, offset, ident)
        if got is not None:
            return got
    raise SystemExit("no reply from " + dst)

def main(peer4, peer6, port):
    out = {}
    r4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    r4.settimeout(1)
    data, addr = ping_until(r4, echo(8, 0x5151, 1), peer4, 0, 20, 0x5151)
    out["raw4"] = [addr[0], data[0] >> 4, socket.inet_ntoa(data[12:16])]
    r6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
    r6.settimeout(1)
    data, addr = ping_until(r6, echo(128, 0x5252, 1), peer6, 129, 0, 0x5252)
    out["raw6"] = [addr[0], data[0]]
    for fam, proto, peer, kind in ((socket.AF_INET, socket.IPPROTO_ICMP, peer4, 8),
                                   (socket.AF_INET6, socket.IPPROTO_ICMPV6, peer6, 128)):
        p = socket.socket(fam, socket.SOCK_DGRAM, proto)
        p.settimeout(1)
        data, addr = ping_until(p, echo(kind, 1, 2), peer, kind + 1 if kind == 128 else 0, 0)
        out["ping%d" % (4 if fam == socket.AF_INET else 6)] = [
            addr[0], int.from_bytes(data[4:6], "big") == p.getsockname()[1]]
        p.close()
    k = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    k.bind(("eth0", 3))
    body = urllib.request.urlopen("http://%s:%s/hello.txt" % (peer4, port), timeout=10).read()
    out["http"] = body.decode()
    time.sleep(0.3)
    k.setblocking(False)
    tcp = []
    while True:
        try:
            frame, addr = k.recvfrom(65536)
        except BlockingIOError:
            break
        if frame[12:14] == b"\x08\x00" and frame[23] == 6:
            ihl = (frame[14] & 15) * 4
            t = frame[14 + ihl:]
            sport, dport = struct.unpack("!HH", t[:4])
            if int(port) in (sport, dport):
                flags = t[13]
                payload = t[(t[12] >> 4) * 4:]
                tcp.append([addr[2], flags, payload[:16].decode("latin-1")])
    out["tcp"] = tcp
    for s in (r4, r6, k):
        s.close()
    return out

if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:])))
'''

#: for the user who is neither the stack's owner nor root
UNPRIV = r'''
import socket, struct, sys
from threadnet.stack.remote import RemoteStack
st = RemoteStack(sys.argv[1])
for args in ((socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
             (socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6),
             (socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))):
    try:
        st.socket(*args)
    except PermissionError as e:
        print("EPERM", e.errno)
p = st.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
p.settimeout(5)
m = struct.pack("!BBHHH", 8, 0, 0, 0, 1)
p.sendto(m[:2] + b"\xf7\xfe" + m[4:], (sys.argv[2], 0))
print("ping", p.recvfrom(100)[0][0])
'''


def _check(out: dict, peer4: str, peer6: str, stack4: str) -> None:
    assert out["raw4"] == [peer4, 4, peer4]
    assert out["raw6"] == [peer6, 129]
    assert out["ping4"] == [peer4, True] and out["ping6"] == [peer6, True]
    assert out["http"] == "hello from the namespace\n"
    tcp = out["tcp"]
    # SYN out, SYN-ACK in, the request out, the response in: both directions seen
    assert [4, 0x02, ""] in tcp and [0, 0x12, ""] in tcp, tcp
    assert any(d == 4 and p.startswith("GET /hello.txt") for d, _, p in tcp), tcp
    assert any(d == 0 and p.startswith("HTTP/1.") for d, _, p in tcp), tcp


@pytest.fixture
def kernel_peer(netns, procs, sockdir):
    """A switch, and a namespace on it by vde_plug2tap (10.78.0.1, fc00:78::1) serving
    HTTP on port 8078."""
    need_tool("vde_plug2tap")
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    try:
        ns = netns.add()
        netns.run(ns, "ip", "tuntap", "add", "dev", "tnr0", "mode", "tap")
        netns.run(ns, "ip", "addr", "add", "10.78.0.1/24", "dev", "tnr0")
        netns.run(ns, "ip", "addr", "add", "fc00:78::1/64", "dev", "tnr0", "nodad")
        netns.run(ns, "ip", "link", "set", "tnr0", "up")
        pidfile = os.path.join(sockdir, "p2t.pid")
        procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", sw.directory, "-d", "-P", pidfile,
                                    "tnr0"), pidfile)
        www = os.path.join(sockdir, "www")
        os.mkdir(www)
        with open(os.path.join(www, "hello.txt"), "w") as f:
            f.write("hello from the namespace\n")
        procs.popen(netns.exec_cmd(ns, sys.executable, "-m", "http.server", "8078", "--bind",
                                   "10.78.0.1", "--directory", www),
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        yield sw, ns
    finally:
        sw.close()


def test_raw_ping_and_packet_sockets_against_a_namespace(kernel_peer):
    sw, _ = kernel_peer
    stack = threadnet.Stack("eth,ip=10.78.0.2/24,ip=fc00:78::2/64", f"vde://{sw.directory}")
    try:
        stack.settle()
        env: dict = {"__name__": "client"}
        exec(compile(CLIENT, "client", "exec"), env)
        with threadnet.use(stack):
            wait_for(lambda: _port_open(stack), timeout=10, what="the namespace's HTTP server")
            out = env["main"]("10.78.0.1", "fc00:78::1", "8078")
        _check(out, "10.78.0.1", "fc00:78::1", "10.78.0.2")
    finally:
        stack.close()


def _port_open(stack) -> bool:
    s = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(2)
    try:
        return s.connect_ex(("10.78.0.1", 8078)) == 0
    finally:
        s.close()


def test_the_same_from_another_process_and_eperm_for_another_user(kernel_peer, procs, sockdir,
                                                                    unpriv):
    sw, _ = kernel_peer
    path, pidfile = os.path.join(sockdir, "st"), os.path.join(sockdir, "st.pid")
    procs.daemon(threadnet_cmd("stack", path, "--link", f"vde://{sw.directory}", "--config",
                               "eth,ip=10.78.0.3/24,ip=fc00:78::3/64", "-m", "0666", "-d",
                               "-p", pidfile), pidfile, env=threadnet_env())
    client = os.path.join(sockdir, "client.py")
    with open(client, "w") as f:
        f.write(CLIENT)
    os.chmod(client, 0o644)
    r = subprocess.run(threadnet_cmd("run", "--stack", path, "--", sys.executable, client,
                                     "10.78.0.1", "fc00:78::1", "8078"),
                       env=threadnet_env(), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    _check(json.loads(r.stdout.strip().splitlines()[-1]), "10.78.0.1", "fc00:78::1", "10.78.0.3")
    r = run_as(unpriv, [unpriv["python"], "-c", UNPRIV, path, "10.78.0.1"],
               capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split("\n")[:4] == [f"EPERM {errno.EPERM}"] * 3 + ["ping 0"], r.stdout


def test_a_packet_socket_nobody_reads_holds_its_buffer_and_no_more(pair):
    """Frames beyond what the socket pair holds are dropped (as a full receive queue on
    Linux); the stack goes on."""
    a, b = pair
    idle = b.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
    idle.bind(("eth0", 3))
    sender = a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for _ in range(3000):  # about 4 MiB
            sender.sendto(b"z" * 1400, (B4, 9))
        assert len(b.ping(A4, count=1)) == 1
        idle.setblocking(False)
        got = 0
        while True:
            try:
                got += len(idle.recv(65536))
            except BlockingIOError:
                break
        assert 0 < got <= 2 * 512 * 1024
    finally:
        idle.close()
        sender.close()
