"""Tap offloads (``tap://IF[offload]``): a stack sends TCP segments of up to 64 KiB with
partial checksums for the kernel to cut up and complete, and takes the same from it.

The first tests drive stacks on fake offload links with fake time, playing the kernel's
part with ``wire/vnet``'s software GSO. The last ones use the Linux kernel itself, in a
network namespace, as the peer (root needed)."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import socket
import subprocess
import threading

import pytest

from test_stack_fastpath import _move as fastpath_move
from test_stack_fastpath import _one_way as one_way
from threadnet import Stack
from threadnet.link import Link, open_link
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import create_server
from threadnet.stack.tcp import TcpConnection
from threadnet.stack.tcp.segment import ACK, CWR, FIN, PSH, Segment
from threadnet.stack.tcplayer import TSO_MAX, _cut
from threadnet.switch.server import SwitchServer
from threadnet.wire import ipv4, ipv6, tcp, vnet

from conftest import need_root, need_tool, wait_for
from stack_helpers import KERNEL_PEER, kernel_transfer, serve_http

IP_A, IP_B = bytes([10, 9, 0, 1]), bytes([10, 9, 0, 2])
IP6_A, IP6_B = ipaddress.ip_address("fc00:9::1").packed, ipaddress.ip_address("fc00:9::2").packed
Header = tuple[int, int, int, int, int, int]
PLAIN = (0, vnet.GSO_NONE, 0, 0, 0, 0)


class OffloadListLink(Link):
    """A fake offload link: records ``send_offload`` calls (header, frame) and plain sends."""

    vnet_hdr = True

    def __init__(self) -> None:
        super().__init__()
        self.offload = False
        self.sent: list[tuple[Header, bytes]] = []

    def enable_offload(self) -> None:
        self.offload = True

    def fileno(self) -> int:
        return -1

    def send_offload(self, header: bytes, frame) -> None:
        self.sent.append((vnet.unpack_header(header), bytes(frame)))

    def _send(self, frame) -> None:
        self.sent.append((PLAIN, bytes(frame)))

    def _recv(self) -> bytes:
        raise BlockingIOError


class PlainListLink(Link):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[tuple[Header, bytes]] = []

    def fileno(self) -> int:
        return -1

    def _send(self, frame) -> None:
        self.sent.append((PLAIN, bytes(frame)))

    def _recv(self) -> bytes:
        raise BlockingIOError


def as_kernel_would_deliver(header: Header, frame: bytes) -> list[bytes]:
    """What a stack's offload send becomes on an ordinary wire: MSS-sized frames with
    complete checksums (the kernel's GSO and checksum help)."""
    flags, gso_type, _, gso_size, start, offset = header
    if gso_type != vnet.GSO_NONE:
        return [bytes(f) for f in vnet.segment(frame, gso_type, gso_size)]
    if flags & vnet.F_NEEDS_CSUM:
        buf = bytearray(frame)
        vnet.complete_checksum(buf, start, offset)
        return [bytes(buf)]
    return [frame]


def _pair(a_offload: bool, b_offload: bool):
    la = OffloadListLink() if a_offload else PlainListLink()
    lb = OffloadListLink() if b_offload else PlainListLink()
    clock = [100.0]
    a = Stack(link=la, runner=False, clock=lambda: clock[0])
    b = Stack(link=lb, runner=False, clock=lambda: clock[0])
    a.configure("eth,ip=10.9.0.1/24,ip=fc00:9::1/64")
    b.configure("eth,ip=10.9.0.2/24,ip=fc00:9::2/64")
    clock[0] += 1.5  # duplicate address detection ends: the IPv6 addresses are usable
    for s in (a, b):
        s.on_timer(clock[0])
    return a, b, la, lb, clock


def _deliver(dst: Stack, link, item: tuple[Header, bytes], now: float) -> None:
    """As a kernel bridge between two taps would: an offload receiver gets the frame as
    sent, with its header; an ordinary one gets ordinary frames."""
    header, frame = item
    if link.offload:
        dst.input(link, frame, now, header)
    else:
        for f in as_kernel_would_deliver(header, frame):
            dst.input(link, f, now)


def _move(a: Stack, b: Stack, la, lb, now: float) -> list[tuple[Header, bytes]]:
    """Deliver everything queued both ways until quiet; returns what a sent."""
    return fastpath_move(a, b, la, lb, now, _deliver)


def _transfer(a_offload: bool, b_offload: bool, size: int = 300_001, family: int = 4):
    a, b, la, lb, clock = _pair(a_offload, b_offload)
    b.tcp.listen(family, b"", 5000, 8)
    ep = a.tcp.connect(family, None, 0, IP_B if family == 4 else IP6_B, 5000, clock[0])
    _move(a, b, la, lb, clock[0])
    assert ep.conn.established
    [server] = list(b.tcp.conns.values())
    frames = one_way(ep, server, os.urandom(size), clock, (a, b),
                     lambda: _move(a, b, la, lb, clock[0]), 256 * 1024)
    return a, b, ep, frames


@pytest.mark.parametrize("b_offload", [True, False], ids=["to-offload", "to-plain"])
@pytest.mark.parametrize("family", [4, 6])
def test_large_segments_carry_the_data_with_right_partial_checksums(family: int,
                                                                    b_offload: bool) -> None:
    a, b, ep, frames = _transfer(True, b_offload, family=family)
    mss = ep.conn.snd_mss
    gso = vnet.GSO_TCPV4 if family == 4 else vnet.GSO_TCPV6
    th = 34 if family == 4 else 54  # where the TCP header starts
    large = [(h, f) for h, f in frames if h[1] == gso]
    assert large, "no large segment was sent"
    assert max(len(f) for _, f in large) > 20 * mss
    checked = 0
    for header, frame in frames:
        flags, gso_type, hdr_len, gso_size, start, offset = header
        if frame[12:14] != (b"\x08\x00" if family == 4 else b"\x86\xdd") or \
                frame[23 if family == 4 else 20] != 6:
            continue
        # every TCP segment leaves its checksum to the kernel: the field holds the
        # pseudo-header's sum, which completed gives the right checksum
        assert flags == vnet.F_NEEDS_CSUM and (start, offset) == (th, 16)
        buf = bytearray(frame)
        vnet.complete_checksum(buf, start, offset)
        if family == 4:
            fields = ipv4.parse(memoryview(buf)[14:])
            hl, total = fields[9], fields[1]
            src, dst = IP_A, IP_B
        else:
            tc, flow, plen, nh, hlim, src, dst = ipv6.parse(memoryview(buf)[14:])
            assert (tc, flow, hlim, src, dst) == (0, 0, 64, IP6_A, IP6_B)
            hl, total = 40, 40 + plen
        assert total == len(frame) - 14 and th == 14 + hl
        doff = tcp.parse(memoryview(buf)[th:14 + total], src, dst)[4]  # verifies
        if gso_type == gso:
            assert gso_size == mss and hdr_len == th + doff
            assert total - hl - doff > mss
        else:
            assert gso_type == vnet.GSO_NONE and total - hl - doff <= mss
        checked += 1
    assert checked == len(frames)
    # the receiver saw frames larger than the MTU only when it is an offload link
    rx = b.interfaces[2]
    assert (rx.rx_bytes / rx.rx_packets > 1514) == b_offload


def test_an_offload_receiver_checks_only_what_the_kernel_does_not_vouch_for() -> None:
    """A frame without F_DATA_VALID or F_NEEDS_CSUM has its checksum checked as always: a
    corrupted one is dropped (and TCP resends it)."""
    a, b, la, lb, clock = _pair(False, True)
    b.tcp.listen(4, b"", 5000, 8)
    ep = a.tcp.connect(4, None, 0, IP_B, 5000, clock[0])
    _move(a, b, la, lb, clock[0])
    [server] = list(b.tcp.conns.values())
    ep.send(b"hello")
    a.tcp.flush(ep, clock[0])
    [(header, frame)] = la.sent
    la.sent = []
    bad = bytearray(frame)
    bad[-1] ^= 0xFF
    iface = b.interfaces[2]
    b.input(iface, bytes(bad), clock[0], header)
    assert not server.conn.recv_queued and iface.rx_errors == 1
    # the same bytes with F_DATA_VALID: the kernel checked it, the stack takes it
    b.input(iface, bytes(frame), clock[0], (vnet.F_DATA_VALID, 0, 0, 0, 0, 0))
    assert server.recv(100) == b"hello"


def test_partial_udp_checksum_is_completed_and_large_frames_for_others_are_cut() -> None:
    """A UDP datagram whose checksum the kernel left partial reaches its socket; a large
    TCP segment for another host is cut to the MTU before it is forwarded."""
    scapy = pytest.importorskip("scapy.all")
    from scapy.layers.inet import IP, TCP, UDP
    from scapy.layers.l2 import ARP, Ether

    off, out = OffloadListLink(), PlainListLink()
    now = 100.0
    r = Stack(link=off, runner=False, forwarding=True, clock=lambda: now)
    r.add_interface(out)
    r.configure("eth,iface=eth0,ip=10.9.0.1/24")
    r.configure("eth,iface=eth1,ip=10.10.0.1/24")
    mac_r0, mac_r1 = r.interfaces[2].mac, r.interfaces[3].mac
    host_mac, other_mac = b"\x02\0\0\0\0\x09", b"\x02\0\0\0\0\x0a"
    got = []
    r.udp_bind(7000, lambda data, src, dst: got.append(bytes(data)))
    # UDP with the pseudo-header sum in its checksum field, as Linux leaves it
    pkt = Ether(dst=mac_r0, src=host_mac) / IP(src="10.9.0.9", dst="10.9.0.1") / \
        UDP(sport=4000, dport=7000) / (b"x" * 999)
    raw = bytearray(bytes(pkt))
    ulen = 8 + 999
    pseudo = (int.from_bytes(bytes([10, 9, 0, 9]), "big") + int.from_bytes(IP_A, "big")
              + 17 + ulen) % 0xFFFF
    raw[40:42] = pseudo.to_bytes(2, "big")
    r.input(r.interfaces[2], bytes(raw), now, (vnet.F_NEEDS_CSUM, 0, 0, 0, 34, 6))
    assert got == [b"x" * 999]
    # make the other host's MAC known (its request for our address: an unsolicited reply
    # would create no entry, as on Linux), then send it a 40 000-byte TCP segment
    arp = Ether(dst=mac_r1, src=other_mac) / ARP(op=1, hwsrc=other_mac, psrc="10.10.0.9",
                                                 pdst="10.10.0.1")
    r.input(r.interfaces[3], bytes(arp), now)
    data = os.urandom(40_000)
    big = Ether(dst=mac_r0, src=host_mac) / IP(src="10.9.0.9", dst="10.10.0.9", flags="DF") / \
        TCP(sport=4001, dport=80, seq=1000, flags="PA") / data
    raw = bytes(big)
    r.input(r.interfaces[2], raw, now, (vnet.F_NEEDS_CSUM, vnet.GSO_TCPV4, 54, 1460, 34, 16))
    tcp_frames = [f for _, f in out.sent if f[12:14] == b"\x08\x00" and f[23] == 6]
    assert len(tcp_frames) == -(-40_000 // 1460)
    joined = bytearray()
    for f in tcp_frames:
        assert len(f) <= 1514 and f[:6] == other_mac
        fields = ipv4.parse(memoryview(f)[14:])
        assert fields[5] == 63  # forwarded: TTL down by one
        seg = scapy.Ether(f)
        chk = seg[TCP].chksum
        del seg[TCP].chksum
        assert scapy.Ether(bytes(seg))[TCP].chksum == chk
        joined += bytes(seg[TCP].payload)
    assert bytes(joined) == data


def test_tso_output_keeps_to_mss_multiples_and_nagle() -> None:
    """With ``tso_max`` a connection sends several MSS in one segment; a small tail that
    Nagle holds back, or that the window cuts off, waits, as in Linux's
    tcp_mss_split_point."""
    a, b, la, lb, clock = _pair(True, True)
    b.tcp.listen(4, b"", 5000, 8)
    ep = a.tcp.connect(4, None, 0, IP_B, 5000, clock[0])
    _move(a, b, la, lb, clock[0])
    conn = ep.conn
    mss = conn.snd_mss
    assert conn.tso_max == TSO_MAX
    conn.cc.cwnd = 100 * mss
    ep.send(b"a")  # one small segment in flight: Nagle now holds small ones back
    a.tcp.flush(ep, clock[0])
    held, la.sent = la.sent, []
    ep.send(os.urandom(5 * mss + 100))
    a.tcp.flush(ep, clock[0])
    assert [len(f) - 66 for _, f in la.sent] == [5 * mss]  # the 100-byte tail waits
    la.sent = held + la.sent
    later = _move(a, b, la, lb, clock[0])  # delivered and ACKed: then the tail goes
    assert [len(f) - 66 for _, f in later if len(f) > 66] == [1, 5 * mss, 100]
    # without Nagle the tail goes with the rest
    conn.nodelay = True
    ep.send(os.urandom(7 * mss + 10))
    a.tcp.flush(ep, clock[0])
    assert [len(f) - 66 for _, f in la.sent] == [7 * mss + 10]
    # a window that ends inside the data cuts at an MSS boundary
    _move(a, b, la, lb, clock[0])
    conn.snd_wnd = 3 * mss + 500
    conn.max_snd_wnd = 3 * mss + 500
    ep.send(os.urandom(10 * mss))
    a.tcp.flush(ep, clock[0])
    assert [len(f) - 66 for _, f in la.sent] == [3 * mss]


def test_cut_gives_mss_sized_segments() -> None:
    payload = memoryview(bytes(range(256)) * 20)  # 5120 bytes
    seg = Segment(0xFFFFFF00, 7, ACK | PSH | FIN | CWR, 100, payload, ts_val=5, ts_ecr=6)
    pieces = _cut([Segment(1, 7, ACK, 100, b"x"), seg], 1448)
    assert len(pieces) == 1 + 4
    assert pieces[0].payload == b"x"
    assert [len(p.payload) for p in pieces[1:]] == [1448, 1448, 1448, 776]
    assert [p.seq for p in pieces[1:]] == [0xFFFFFF00, (0xFFFFFF00 + 1448) & 0xFFFFFFFF,
                                          (0xFFFFFF00 + 2896) & 0xFFFFFFFF,
                                          (0xFFFFFF00 + 4344) & 0xFFFFFFFF]
    assert [p.flags for p in pieces[1:]] == [ACK | CWR, ACK, ACK, ACK | PSH | FIN]
    assert all((p.ts_val, p.ts_ecr) == (5, 6) for p in pieces[1:])
    assert b"".join(bytes(p.payload) for p in pieces[1:]) == bytes(payload)


def test_without_an_offload_link_segments_stay_within_the_mss() -> None:
    conn = TcpConnection(0.0, mss=1460)
    assert conn.tso_max == 0
    a, b, ep, frames = _transfer(False, False, 100_000)
    assert all(len(f) <= 1514 for _, f in frames)


# -- the Linux kernel as the peer -----------------------------------------------------------

def _own_tap(netns, options: str):
    """Stack A on ``tap://IF{options}``, the tap moved into a namespace whose kernel has
    10.12.0.9 and fc00:12::9 on it. Yields (stack, namespace, tap name)."""
    need_root()
    ns = netns.add()
    name = f"tno{os.getpid() % 100000}"
    runner = StackRunner("test-offload")
    a = Stack("eth,ip=10.12.0.1/24,ip=fc00:12::1/64", link=f"tap://{name}{options}",
              runner=runner, name="A")
    try:
        subprocess.run(["ip", "link", "set", name, "netns", ns], check=True)
        netns.run(ns, "ip", "addr", "add", "10.12.0.9/24", "dev", name)
        netns.run(ns, "ip", "addr", "add", "fc00:12::9/64", "dev", name, "nodad")
        netns.run(ns, "ip", "link", "set", name, "up")
        wait_for(lambda: "fc00:12::1/64" in a.addresses(6), what="DAD")
        yield a, ns, name
    finally:
        a.close()
        runner.stop()


@pytest.fixture
def offload_tap(netns):
    yield from _own_tap(netns, "[offload]")


@pytest.fixture
def plain_tap(netns):
    yield from _own_tap(netns, "")


@pytest.mark.parametrize("host", ["10.12.0.9", "fc00:12::9"])
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_kernel_transfers_through_a_plain_tap(plain_tap, netns, procs, sockdir, direction,
                                             host):
    """The same without offloads: a stack on a plain ``tap://`` (whose frames the runner
    takes in batches, with receive coalescing) moves 16 MiB each way, in frames no larger
    than the MTU."""
    a, ns, _ = plain_tap
    iface = a.interfaces[2]
    rate = kernel_transfer(netns, procs, sockdir, ns, a, host, direction, 16 << 20)
    print(f"plain tap, {direction} {host}: 16 MiB, sha256 ok, {rate:.0f} Mbit/s")
    assert iface.rx_bytes <= iface.rx_packets * 1514
    assert iface.tx_bytes <= iface.tx_packets * 1514
    assert iface.rx_errors == 0


@pytest.mark.parametrize("host", ["10.12.0.9", "fc00:12::9"])
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_kernel_transfers_through_an_offload_tap(offload_tap, netns, procs, sockdir,
                                                 direction, host):
    """32 MiB each way over IPv4 and IPv6, sha256-checked. The segments larger than the
    MTU go both ways (TSO out, the kernel's large segments in)."""
    a, ns, _ = offload_tap
    iface = a.interfaces[2]
    rx0, rxb0, tx0, txb0 = iface.rx_packets, iface.rx_bytes, iface.tx_packets, iface.tx_bytes
    rate = kernel_transfer(netns, procs, sockdir, ns, a, host, direction, 32 << 20)
    rx_avg = (iface.rx_bytes - rxb0) / (iface.rx_packets - rx0)
    tx_avg = (iface.tx_bytes - txb0) / (iface.tx_packets - tx0)
    print(f"{direction} {host}: 32 MiB, sha256 ok, {rate:.0f} Mbit/s, average frame "
          f"in {rx_avg:.0f} B, out {tx_avg:.0f} B")
    if direction == "download":
        assert rx_avg > 4000, "the kernel sent no large segments"
    else:
        assert tx_avg > 4000, "the stack sent no large segments"


def test_ping_udp_and_curl_through_an_offload_tap(offload_tap, netns):
    """What the kernel does not offload (ICMP, fragments) and what it leaves with a
    partial checksum (UDP) work as on a plain tap."""
    need_tool("curl")
    a, ns, _ = offload_tap
    for addr, size in (("10.12.0.1", "56"), ("fc00:12::1", "56"), ("10.12.0.1", "4000"),
                       ("fc00:12::1", "4000")):
        r = netns.run(ns, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", size, addr,
                      check=False)
        assert r.returncode == 0, (addr, size, r.stdout, r.stderr)
    for host, family in (("10.12.0.1", socket.AF_INET), ("fc00:12::1", socket.AF_INET6)):
        u = a.socket(family, socket.SOCK_DGRAM)
        u.bind((host, 7000))
        u.settimeout(10)
        r = subprocess.Popen(netns.exec_cmd(ns, "python3", "-c", (
            "import socket, sys\n"
            f"s = socket.socket({int(family)}, socket.SOCK_DGRAM)\n"
            "s.settimeout(10)\n"
            f"s.sendto(b'u' * 3000, ('{host}', 7000))\n"
            "print(s.recvfrom(4000)[0].decode())\n")), stdout=subprocess.PIPE, text=True)
        data, peer = u.recvfrom(4000)
        assert data == b"u" * 3000
        u.sendto(b"echo", peer)
        out, _ = r.communicate(timeout=20)
        assert out.strip() == "echo"
        u.close()
    srv = create_server(a, ("", 8000), family=socket.AF_INET6, dualstack_ipv6=True)
    serve_http(srv, b"o" * 200_000, 2)
    for url in ("http://10.12.0.1:8000/", "http://[fc00:12::1]:8000/"):
        r = netns.run(ns, "curl", "-s", "-m", "10", url, check=False)
        assert r.returncode == 0 and r.stdout == "o" * 200_000, (url, r.stderr)
    srv.close()


def test_a_router_cuts_the_kernels_large_segments_for_an_ordinary_link(
        offload_tap, netns, procs, sockdir, threadnet_switch, tap_ns):
    """Stack A forwards between its offload tap and a threadnet switch, where a second
    kernel sits behind Debian's vde_plug2tap: the large segments the first kernel hands
    A leave it cut to the MTU, both ways byte-exact."""
    a, ns, name = offload_tap
    a.forwarding = True
    sw_dir, _, _ = threadnet_switch()
    a.add_interface(f"vde://{sw_dir}")
    a.configure("eth,iface=eth1,ip=10.13.0.1/24")
    far = tap_ns(sw_dir, "10.13.0.9")
    netns.run(ns, "ip", "route", "add", "10.13.0.0/24", "via", "10.12.0.1")
    netns.run(far.ns, "ip", "route", "add", "10.12.0.0/24", "via", "10.13.0.1")
    script = os.path.join(sockdir, "peer.py")
    with open(script, "w") as f:
        f.write(KERNEL_PEER)
    out_iface = a.interfaces[3]
    for sender, receiver, host in ((ns, far.ns, "10.13.0.9"), (far.ns, ns, "10.12.0.9")):
        tx0, txb0 = out_iface.tx_packets, out_iface.tx_bytes
        srv = procs.popen(netns.exec_cmd(receiver, "python3", script, "recv", host,
                                         str(8 << 20)), stdout=subprocess.PIPE, text=True)
        assert srv.stdout.readline().strip() == "ready"
        cli = netns.run(sender, "python3", "-c", (
            "import hashlib, socket\n"
            f"c = socket.create_connection(('{host}', 9100), timeout=30)\n"
            "h = hashlib.sha256()\n"
            "block = bytes(range(256)) * 256\n"
            "for _ in range(128):\n"
            "    c.sendall(block); h.update(block)\n"
            "c.shutdown(socket.SHUT_WR); c.recv(1)\n"
            "print(h.hexdigest())\n"), timeout=120)
        out, _ = srv.communicate(timeout=60)
        assert out.strip() == cli.stdout.strip(), "sha256 mismatch"
        if sender == ns:
            sent = out_iface.tx_packets - tx0
            assert sent >= (8 << 20) // 1448
            assert (out_iface.tx_bytes - txb0) / sent <= 1514


def test_a_plain_reader_of_an_offload_tap_gets_ordinary_frames(netns, sockdir):
    """A reader that is not a stack (here an in-process bridge to a switch) gets frames
    no larger than the MTU with complete checksums, even with the kernel's offloads on:
    the tap link cuts and completes them. Stack B behind the switch checks every
    checksum."""
    need_root()
    ns = netns.add()
    name = f"tnp{os.getpid() % 100000}"
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-offload-plain")
    tap = open_link(f"tap://{name}[offload]")
    tap.enable_offload()  # type: ignore[attr-defined]
    port = open_link(f"vde://{sw.directory}")
    b = Stack("eth,ip=10.14.0.2/24", link=f"vde://{sw.directory}", runner=runner, name="B")
    stop = threading.Event()
    biggest = [0]

    def pump(src: Link, dst: Link) -> None:
        src.setblocking(False)
        while not stop.is_set():
            if not src.wait_readable(0.1):
                continue
            try:
                while True:
                    frame = src.recv()
                    if src is tap:
                        biggest[0] = max(biggest[0], len(frame))
                    dst.send(frame)
            except BlockingIOError:
                pass

    threads = [threading.Thread(target=pump, args=(tap, port), daemon=True),
               threading.Thread(target=pump, args=(port, tap), daemon=True)]
    try:
        subprocess.run(["ip", "link", "set", name, "netns", ns], check=True)
        netns.run(ns, "ip", "addr", "add", "10.14.0.9/24", "dev", name)
        netns.run(ns, "ip", "link", "set", name, "up")
        for t in threads:
            t.start()
        srv = create_server(b, ("", 9100))
        h = hashlib.sha256()
        got = threading.Event()

        def receive() -> None:
            conn, _ = srv.accept()
            with conn:
                while d := conn.recv(1 << 16):
                    h.update(d)
            got.set()

        threading.Thread(target=receive, daemon=True).start()
        cli = netns.run(ns, "python3", "-c", (
            "import hashlib, socket\n"
            "c = socket.create_connection(('10.14.0.2', 9100), timeout=30)\n"
            "h = hashlib.sha256()\n"
            "block = bytes(range(256)) * 256\n"
            "for _ in range(128):\n"
            "    c.sendall(block); h.update(block)\n"
            "c.close()\n"
            "print(h.hexdigest())\n"), timeout=120)
        assert got.wait(60)
        assert h.hexdigest() == cli.stdout.strip(), "sha256 mismatch"
        assert biggest[0] <= 1514
        assert tap.rx_segmented > 0, "the kernel sent no large segment to cut"  # type: ignore[attr-defined]
        assert b.interfaces[2].rx_errors == 0
        srv.close()
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(2)
        b.close()
        runner.stop()
        tap.close()
        port.close()
        sw.close()
