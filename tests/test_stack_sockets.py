"""Sockets on stacks, used by the standard library: two stacks joined through
``threadnet switch``, over IPv4 and IPv6, and the Linux kernel as a peer."""

from __future__ import annotations

import asyncio
import http.client
import http.server
import os
import selectors
import socket
import ssl
import threading
import time
import urllib.request

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import create_connection, create_server
from threadnet.switch.server import SwitchServer

from conftest import need_tool, wait_for
from stack_helpers import (
    Dumpcap,
    assert_capture_clean,
    kernel_transfer,
    self_signed_cert,
    serve_echo,
    serve_http,
)

ADDRS = {4: ("10.8.0.1", "10.8.0.2"), 6: ("fc00:8::1", "fc00:8::2")}
FAM = {4: socket.AF_INET, 6: socket.AF_INET6}
#: the kernel peer's addresses: its negative-zero checksums are allowed in captures
KERNEL_ADDRS = ("10.8.0.9", "fc00:8::9")


@pytest.fixture
def pair(sockdir):
    """Two stacks, A and B, on one threadnet switch, each with an IPv4 and an IPv6 address."""
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-sockets")
    url = f"vde://{sw.directory}"
    a = Stack("eth,ip=10.8.0.1/24,ip=fc00:8::1/64", link=url, runner=runner, name="A")
    b = Stack("eth,ip=10.8.0.2/24,ip=fc00:8::2/64", link=url, runner=runner, name="B")
    wait_for(lambda: "fc00:8::1/64" in a.addresses(6) and "fc00:8::2/64" in b.addresses(6),
             what="DAD")
    a.switch = b.switch = sw  # type: ignore[attr-defined]
    yield a, b
    a.close()
    b.close()
    runner.stop()
    sw.close()


@pytest.mark.parametrize("v", [4, 6])
def test_tcp_echo_and_udp(pair, v):
    a, b = pair
    srv = create_server(b, ("", 7), family=FAM[v])
    serve_echo(srv)
    with create_connection(a, (ADDRS[v][1], 7), timeout=10) as c:
        assert c.getpeername()[:2] == (ADDRS[v][1], 7)
        payload = os.urandom(1 << 20)
        threading.Thread(target=lambda: (c.sendall(payload), c.shutdown(socket.SHUT_WR)),
                         daemon=True).start()
        got = bytearray()
        while data := c.recv(65536):
            got += data
        assert got == payload
    srv.close()
    u1 = b.socket(FAM[v], socket.SOCK_DGRAM)
    u1.bind(("", 5353))
    u2 = a.socket(FAM[v], socket.SOCK_DGRAM)
    u2.settimeout(5)
    u1.settimeout(5)
    u2.sendto(b"question", (ADDRS[v][1], 5353))
    data, addr = u1.recvfrom(100)
    assert data == b"question" and addr[0] == ADDRS[v][0]
    u1.sendto(b"answer", addr)
    data, addr = u2.recvfrom(100)
    assert data == b"answer" and addr[:2] == (ADDRS[v][1], 5353)
    u1.close()
    u2.close()


def test_errors_use_real_errno(pair):
    a, b = pair
    c = a.socket()
    c.settimeout(5)
    with pytest.raises(ConnectionRefusedError):
        c.connect(("10.8.0.2", 9))
    c.close()
    s1 = create_server(b, ("", 8080))
    with pytest.raises(OSError) as e:
        create_server(b, ("", 8080))
    assert e.value.errno == 98  # EADDRINUSE
    s1.close()
    c = a.socket()
    with pytest.raises(OSError) as e:
        c.connect(("192.0.2.1", 80))
    assert e.value.errno == 101  # ENETUNREACH
    c.close()


def test_http_server_and_urllib(pair):
    a, b = pair

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = f"hello {self.path} from {self.server.server_address[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class StackHTTPServer(http.server.ThreadingHTTPServer):
        def __init__(self, stack, addr):
            self.stack = stack
            super().__init__(addr, Handler, bind_and_activate=False)
            self.socket = stack.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.server_bind()
            self.server_activate()

    httpd = StackHTTPServer(b, ("10.8.0.2", 80))
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    try:
        class StackConnection(http.client.HTTPConnection):
            def connect(self):
                self.sock = create_connection(a, (self.host, self.port), self.timeout)

        class StackHandler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(StackConnection, req)

        opener = urllib.request.build_opener(StackHandler)
        with opener.open("http://10.8.0.2/index", timeout=10) as r:
            assert r.status == 200 and r.read() == b"hello /index from 10.8.0.2"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_ssl_wrapped_connection(pair, sockdir):
    need_tool("openssl")
    a, b = pair
    crt, key = self_signed_cert(sockdir, "10.8.0.2")
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(crt, key)
    srv = create_server(b, ("", 443))

    def serve():
        conn, _ = srv.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            tls.sendall(tls.recv(100).upper())

    threading.Thread(target=serve, daemon=True).start()
    cctx = ssl.create_default_context(cafile=crt)
    with create_connection(a, ("10.8.0.2", 443), timeout=10) as raw:
        with cctx.wrap_socket(raw, server_hostname="10.8.0.2") as tls:
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            tls.sendall(b"secret")
            assert tls.recv(100) == b"SECRET"
    srv.close()


def test_selectors_nonblocking(pair):
    a, b = pair
    srv = create_server(b, ("", 9000))
    srv.setblocking(False)
    sel = selectors.DefaultSelector()
    sel.register(srv, selectors.EVENT_READ)
    c = a.socket(socket.AF_INET6)
    c.setblocking(False)
    with pytest.raises(BlockingIOError):
        c.connect(("::ffff:10.8.0.2", 9000))  # v4-mapped: the hybrid engine
    csel = selectors.DefaultSelector()
    csel.register(c, selectors.EVENT_WRITE)
    assert csel.select(5), "connect never completed"
    assert c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
    assert sel.select(5)
    conn, addr = srv.accept()
    assert addr[0] == "10.8.0.1"
    c.send(b"x" * 1000)
    conn.setblocking(False)
    sel.register(conn, selectors.EVENT_READ)
    got = b""
    deadline = time.monotonic() + 5
    while len(got) < 1000 and time.monotonic() < deadline:
        for key, _ in sel.select(1):
            if key.fileobj is conn:
                got += conn.recv(4096)
    assert got == b"x" * 1000
    for s in (c, conn, srv):
        s.close()


def test_asyncio_echo(pair):
    a, b = pair

    async def main():
        async def handle(reader, writer):
            writer.write(await reader.read(100))
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, sock=create_server(b, ("", 7007)))
        loop = asyncio.get_running_loop()
        sock = a.socket()
        sock.setblocking(False)
        await loop.sock_connect(sock, ("10.8.0.2", 7007))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"async hello")
        await writer.drain()
        data = await reader.read(100)
        writer.close()
        server.close()
        await server.wait_closed()
        return data

    assert asyncio.run(asyncio.wait_for(main(), 20)) == b"async hello"


# -- the kernel as a peer ------------------------------------------------------------------

@pytest.fixture
def kernel(netns, procs, pair, sockdir):
    """A namespace whose tap (KERNEL_ADDRS) is on the pair's switch."""
    need_tool("vde_plug2tap", "curl", "tshark")
    a, b = pair
    ns = netns.add()
    netns.run(ns, "ip", "tuntap", "add", "dev", "tnk0", "mode", "tap")
    netns.run(ns, "ip", "addr", "add", f"{KERNEL_ADDRS[0]}/24", "dev", "tnk0")
    netns.run(ns, "ip", "addr", "add", f"{KERNEL_ADDRS[1]}/64", "dev", "tnk0", "nodad")
    netns.run(ns, "ip", "link", "set", "tnk0", "up")
    sw_dir = os.path.join(sockdir, "sw")
    pidfile = os.path.join(sockdir, "p2t.pid")
    procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", sw_dir, "-d", "-P", pidfile, "tnk0"),
                 pidfile)
    return ns


def test_kernel_pings_and_curls_the_stack_capture_is_clean(kernel, netns, pair, sockdir):
    """ping, ping -6 (also with fragments) and curl over IPv4 and IPv6 from the kernel;
    the switch's capture of all of it decodes in tshark with no malformed frame and no
    bad checksum."""
    a, b = pair
    pcap = os.path.join(sockdir, "kernel.pcap")
    a.switch.set_capture(None, pcap)
    for addr, size in (("10.8.0.1", "56"), ("fc00:8::1", "56"), ("10.8.0.1", "4000"),
                       ("fc00:8::1", "4000")):
        r = netns.run(kernel, "ping", "-c", "2", "-i", "0.2", "-W", "2", "-s", size, addr,
                      check=False)
        assert r.returncode == 0, (addr, size, r.stdout, r.stderr)
    srv = create_server(a, ("", 8000), family=socket.AF_INET6, dualstack_ipv6=True)
    serve_http(srv, b"stack says hi", 2)
    for url in ("http://10.8.0.1:8000/", "http://[fc00:8::1]:8000/"):
        r = netns.run(kernel, "curl", "-s", "-m", "10", url, check=False)
        assert r.returncode == 0 and r.stdout == "stack says hi", (url, r.stderr)
    srv.close()
    a.switch.set_capture(None, None)
    # 4 x 2 echo requests and their replies (the big ones are 3 fragments each way),
    # two HTTP requests and two responses
    report = assert_capture_clean(pcap, icmp=8, icmpv6=8, http=4, minus_zero_from=KERNEL_ADDRS)
    os.remove(pcap)
    print(f"tshark: {report.frames} frames {dict(report.protocols)}, none malformed, "
          "no bad checksum")


@pytest.mark.slow
@pytest.mark.parametrize("direction", ["download", "upload"])
def test_100mb_with_kernel(kernel, netns, procs, pair, sockdir, direction):
    a, b = pair
    size = 100 * 1024 * 1024
    need_tool("dumpcap")
    pcap = os.path.join(sockdir, f"{direction}.pcap")
    # captured at the kernel's tap by dumpcap, in its own process: the switch's capture
    # would run under this process's GIL and halve the transfer rate
    capture = Dumpcap(procs, kernel, "tnk0", pcap)
    rate = kernel_transfer(netns, procs, sockdir, kernel, a, KERNEL_ADDRS[0], direction, size)
    counts = capture.stop()
    print(f"{direction}: 100 MB, sha256 ok, {rate:.0f} Mbit/s (captured: {counts})")
    # the whole transfer, every segment both ways, decodes cleanly in tshark
    t0 = time.monotonic()
    report = assert_capture_clean(pcap, size // 1500, tcp=size // 1500, tcp_data=True,
                                  minus_zero_from=KERNEL_ADDRS)
    print(f"tshark: {report.frames} frames, {os.path.getsize(pcap) >> 20} MiB, none malformed, "
          f"no bad checksum ({time.monotonic() - t0:.1f} s)")
    os.remove(pcap)
