"""The socket API, call by call, on a local StackSocket and on a RemoteSocket (a stack
opened by path): both must behave like the stdlib's sockets."""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest

from threadnet import Stack, msocket
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import need_tool, wait_for
from stack_helpers import self_signed_cert, serve_echo


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    d = tmp_path_factory.mktemp("api")
    sw = SwitchServer(str(d / "sw")).start()
    runner = StackRunner("test-api")
    url = f"vde://{sw.directory}"
    a = Stack("eth,ip=10.30.0.1/24,ip=fc00:30::1/64", link=url, runner=runner, name="A")
    b = Stack("eth,ip=10.30.0.2/24,ip=fc00:30::2/64", link=url, runner=runner, name="B")
    wait_for(lambda: "fc00:30::1/64" in a.addresses(6) and "fc00:30::2/64" in b.addresses(6),
             what="DAD")
    path = str(d / "stackA")
    a.publish(path)
    echo = b.socket()
    echo.bind(("", 7))
    echo.listen()

    serve_echo(echo)
    yield a, b, path
    echo.close()
    a.close()
    b.close()
    runner.stop()
    sw.close()


@pytest.fixture(params=["local", "remote"])
def opener(request, net):
    a, _, path = net
    if request.param == "local":
        return lambda fam=socket.AF_INET, kind=socket.SOCK_STREAM: a.socket(fam, kind)
    return lambda fam=socket.AF_INET, kind=socket.SOCK_STREAM: msocket(path, fam, kind)


def test_makefile_lines_both_ways(opener):
    with opener() as s:
        s.settimeout(10)
        s.connect(("10.30.0.2", 7))
        with s.makefile("rwb") as f:
            for i in range(100):
                f.write(b"line %d\n" % i)
            f.flush()
            assert [f.readline() for _ in range(100)] == [b"line %d\n" % i for i in range(100)]
        with s.makefile("r", encoding="utf-8", newline="") as r, s.makefile("w") as w:
            w.write("text ünïcode\n")
            w.flush()
            assert r.readline() == "text ünïcode\n"
    assert s.fileno() == -1


def test_shutdown_write_then_read_the_rest(opener):
    with opener() as s:
        s.settimeout(10)
        s.connect(("10.30.0.2", 7))
        payload = os.urandom(300_000)
        got = bytearray()
        t = threading.Thread(target=lambda: got.extend(_read_all(s)))
        t.start()
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)
        t.join(20)
        assert bytes(got) == payload  # the echo saw EOF, closed, and we read everything


def _read_all(s: socket.socket) -> bytes:
    out = bytearray()
    while chunk := s.recv(65536):
        out.extend(chunk)
    return bytes(out)


def test_timeouts_and_nonblocking(opener):
    with opener() as s:
        s.settimeout(10)
        s.connect(("10.30.0.2", 7))
        s.settimeout(0.3)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            s.recv(10)
        assert 0.25 < time.monotonic() - t0 < 2
        s.setblocking(False)
        with pytest.raises(BlockingIOError):
            s.recv(10)
        buf = bytearray(10)
        s.setblocking(True)
        s.sendall(b"abc")
        assert s.recv_into(buf, 3) == 3 and bytes(buf[:3]) == b"abc"


def test_names_and_options(opener):
    with opener() as s:
        with pytest.raises(OSError) as e:
            s.getpeername()
        assert e.value.errno == errno.ENOTCONN
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 131072)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 536  # as Linux, unconnected
        s.settimeout(10)
        s.connect(("10.30.0.2", 7))
        # the segment size in use: 1500 - 20 - 20 - 12 (timestamps), as Linux reports it
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG) == 1448
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 131072
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM
        assert s.getsockname()[0] == "10.30.0.1" and s.getpeername() == ("10.30.0.2", 7)
        assert s.family == socket.AF_INET and s.type == socket.SOCK_STREAM
        assert s.proto == socket.IPPROTO_TCP
        with pytest.raises(OSError) as e:
            s.connect(("10.30.0.2", 7))
        assert e.value.errno == errno.EISCONN


def test_reuseaddr_and_addrinuse(opener):
    first = opener()
    first.bind(("10.30.0.1", 6000))
    first.listen()
    second = opener()
    with pytest.raises(OSError) as e:
        second.bind(("10.30.0.1", 6000))
    assert e.value.errno == errno.EADDRINUSE
    with pytest.raises(OSError) as e:
        second.bind(("10.30.0.99", 6001))
    assert e.value.errno == errno.EADDRNOTAVAIL
    first.close()
    second.close()
    third = opener()
    third.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    third.bind(("10.30.0.1", 6000))
    third.listen()
    third.close()


def test_real_errno_values(opener, net):
    _, b, _ = net
    with opener() as s, pytest.raises(ConnectionRefusedError):
        s.settimeout(10)
        s.connect(("10.30.0.2", 1))
    with opener() as s:
        s.settimeout(10)
        assert s.connect_ex(("10.30.0.2", 1)) == errno.ECONNREFUSED
    with opener() as s, pytest.raises(OSError) as e:
        s.connect(("192.0.2.1", 80))  # no route: the stack has no gateway
    assert e.value.errno == errno.ENETUNREACH
    with opener() as s, pytest.raises(OSError) as e:
        s.accept()
    assert e.value.errno == errno.EINVAL


def test_close_with_pending_data_returns_at_once(opener, net):
    _, b, _ = net
    sink = b.socket()
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # the other run's TIME_WAIT
    sink.bind(("", 6100))
    sink.listen()
    s = opener()
    s.settimeout(10)
    s.connect(("10.30.0.2", 6100))
    conn, _ = sink.accept()  # never reads: the window closes
    s.setblocking(False)
    sent = 0
    try:
        while True:
            sent += s.send(bytes(65536))
    except BlockingIOError:
        pass
    assert sent > 0
    t0 = time.monotonic()
    s.close()
    assert time.monotonic() - t0 < 0.5
    conn.close()
    sink.close()


@pytest.mark.parametrize("fam,here,there", [(socket.AF_INET, "10.30.0.1", "10.30.0.2"),
                                            (socket.AF_INET6, "fc00:30::1", "fc00:30::2")])
def test_udp_calls(opener, net, fam, here, there):
    _, b, _ = net
    peer = b.socket(fam, socket.SOCK_DGRAM)
    peer.bind((there, 0))
    port = peer.getsockname()[1]
    u = opener(fam, socket.SOCK_DGRAM)
    u.settimeout(10)
    u.connect((there, port))
    u.send(b"one")
    data, src = peer.recvfrom(100)
    assert data == b"one" and src[:2] == u.getsockname()[:2]
    assert u.getsockname()[1] != 0
    peer.sendto(b"two", src)
    buf = bytearray(100)
    n, addr = u.recvfrom_into(buf)
    assert bytes(buf[:n]) == b"two" and addr[:2] == (there, port)
    peer.sendto(b"three", src)
    assert u.recv_into(buf) == 5 and bytes(buf[:5]) == b"three"
    peer.sendto(b"x" * 100, src)
    assert u.recv(10) == b"x" * 10  # a short read truncates the datagram, as UDP does
    # a burst larger than the kernel's max_dgram_qlen (10 here) is queued, not lost
    for i in range(50):
        peer.sendto(b"%d" % i, src)
    assert [u.recv(10) for _ in range(50)] == [b"%d" % i for i in range(50)]
    with pytest.raises(OSError) as e:
        u.sendto(b"y" * 70000, (there, port))
    assert e.value.errno == errno.EMSGSIZE
    u.close()
    peer.close()


def test_wildcard_listeners_per_family(net):
    """As on Linux: an IPv4 and an IPV6_V6ONLY wildcard listener share a port; a dual-stack
    IPv6 wildcard and an IPv4 one do not. Each family reaches its own listener."""
    a, b, _ = net
    v4, v6 = a.socket(socket.AF_INET), a.socket(socket.AF_INET6)
    v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # no SO_REUSEADDR needed
    v4.bind(("0.0.0.0", 6200))
    v6.bind(("::", 6200))
    v4.listen()
    v6.listen()
    for fam, dst, listener in ((socket.AF_INET, "10.30.0.1", v4),
                               (socket.AF_INET6, "fc00:30::1", v6)):
        with b.socket(fam) as c:
            c.settimeout(10)
            c.connect((dst, 6200))
            listener.settimeout(10)
            conn, peer = listener.accept()
            assert conn.family == fam
            conn.close()
    v6.close()
    dual = a.socket(socket.AF_INET6)
    dual.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    with pytest.raises(OSError) as e:
        dual.bind(("::", 6200))  # it would take IPv4's port 6200 too
    assert e.value.errno == errno.EADDRINUSE
    dual.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    dual.bind(("::", 6200))
    with pytest.raises(OSError) as e:
        dual.listen()
    assert e.value.errno == errno.EADDRINUSE
    dual.close()
    v4.close()


def test_closing_a_stack_fails_its_blocked_sockets_at_once():
    from threadnet.link.pair import open_pair

    la, lb = open_pair()
    runner = StackRunner("test-close")
    a = Stack("eth,ip=10.31.0.1/24", link=la, runner=runner)
    b = Stack("eth,ip=10.31.0.2/24", link=lb, runner=runner)
    try:
        listener = b.socket()
        listener.bind(("", 80))
        listener.listen()
        c = a.socket()
        c.settimeout(10)
        c.connect(("10.31.0.2", 80))
        s, _ = listener.accept()
        outcome: dict[str, str] = {}

        def blocked(name: str, fn) -> threading.Thread:
            def run() -> None:
                try:
                    fn()
                    outcome[name] = "returned"
                except OSError as exc:
                    outcome[name] = errno.errorcode.get(exc.errno or 0, "?")

            t = threading.Thread(target=run)
            t.start()
            return t

        threads = [blocked("recv", lambda: s.recv(10)), blocked("accept", listener.accept),
                   blocked("peer", lambda: c.recv(10))]
        time.sleep(0.3)
        t0 = time.monotonic()
        b.close()
        for t in threads:
            t.join(5)
        assert time.monotonic() - t0 < 2
        assert outcome == {"recv": "ECONNABORTED", "accept": "EBADF", "peer": "ECONNRESET"}
        for sock in (s, listener, c):
            sock.close()
    finally:
        a.close()
        b.close()
        runner.stop()


def test_buffer_sizes_apply_to_a_live_connection(net):
    a, b, _ = net
    with a.socket() as s:
        s.settimeout(10)
        s.connect(("10.30.0.2", 7))
        conn = s._pump.ep.conn
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8192)
        assert conn.sndbuf == 8192 and conn.writable_space <= 8192
        before = conn.rcvbuf
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, before * 2)
        assert conn.rcvbuf == min(before * 2, 0xFFFF << conn.rcv_wscale)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        assert conn.rcvbuf >= before  # never shrinks the window already offered
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == conn.rcvbuf
        assert s.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF) == 8192
        _roundtrip_small(s)


def _roundtrip_small(s: socket.socket) -> None:
    payload = os.urandom(100_000)
    got = bytearray()
    t = threading.Thread(target=lambda: [got.extend(s.recv(65536)) for _ in iter(
        lambda: len(got) < len(payload), False)])
    t.start()
    s.sendall(payload)
    t.join(20)
    assert bytes(got) == payload


def test_control_channel_survives_random_requests(net, capfd):
    """Broken and hostile control messages get error replies; the published stack keeps
    serving, and nothing escapes on its runner thread."""
    import json
    import random

    _, _, path = net
    rng = random.Random(1234)
    ops = ["socket", "bind", "listen", "connect", "accept", "abort", "status", "getsockopt",
           "setsockopt", "sendto", "call", "nope", None, 7]

    def value(depth: int = 0):
        kind = rng.randrange(8 if depth < 2 else 5)
        return [lambda: rng.randint(-2**40, 2**40), lambda: rng.choice(["", "::", "10.30.0.2",
                "x" * rng.randrange(300), "0.0.0.0", "fc00:30::2", "\udcff"]),
                lambda: None, lambda: rng.random(), lambda: rng.choice([True, False]),
                lambda: [value(depth + 1) for _ in range(rng.randrange(4))],
                lambda: {str(value(depth + 1))[:10]: value(depth + 1) for _ in range(3)},
                lambda: [rng.choice(["10.30.0.2", "::1", ""]), rng.randint(-5, 70000)]][kind]()

    conns = []
    kinds = {True: 0, False: 0}
    for _ in range(1500):
        if not conns or rng.random() < 0.05:
            c = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            c.connect(path)
            c.settimeout(10)
            conns.append(c)
        c = rng.choice(conns)
        req = {"op": rng.choice(ops)}
        for key in rng.sample(["family", "type", "proto", "addr", "backlog", "level", "name",
                               "value", "args"], rng.randrange(5)):
            req[key] = value()
        if req["op"] == "socket" and rng.random() < 0.5:
            req.update(family=rng.choice([2, 10]), type=rng.choice([1, 2]), proto=0)
        msg = json.dumps(req, default=str).encode(errors="surrogatepass")
        if rng.random() < 0.1:
            msg = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))
        if rng.random() < 0.1:
            msg += b"\0" + os.urandom(rng.randrange(2000))
        if rng.random() < 0.02:  # descriptors from a client are never taken
            socket.send_fds(c, [msg], [c.fileno()])
        else:
            c.send(msg)
        reply, fds, _, _ = socket.recv_fds(c, 70000, 4)
        for fd in fds:
            os.close(fd)
        assert reply, "the stack closed a control connection on a bad request"
        kinds[b'"raise"' in reply] += 1
        if rng.random() < 0.03:
            conns.remove(c)
            c.close()
    for c in conns:
        c.close()
    assert kinds[True] > 1000 and kinds[False] > 20, kinds  # mostly refused, some served
    # still serving, and the runner reported nothing
    with msocket(path, socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(("10.30.0.2", 7))
        s.sendall(b"still here")
        assert s.recv(100) == b"still here"
    assert "threadnet runner" not in capfd.readouterr().err


def test_ssl_wrapping(opener, net, tmp_path):
    import ssl

    need_tool("openssl")
    _, b, _ = net
    crt, key = self_signed_cert(str(tmp_path), "10.30.0.2")
    sctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    sctx.load_cert_chain(crt, key)
    srv = b.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("", 443))
    srv.listen()

    def serve() -> None:
        conn, _ = srv.accept()
        with sctx.wrap_socket(conn, server_side=True) as tls:
            while data := tls.recv(65536):
                tls.sendall(data.upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    raw = opener()
    raw.settimeout(10)
    raw.connect(("10.30.0.2", 443))
    with ssl.create_default_context(cafile=crt).wrap_socket(raw, server_hostname="10.30.0.2") as tls:
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        for size in (1, 1000, 100_000):
            tls.sendall(b"s" * size)
            got = b""
            while len(got) < size:
                got += tls.recv(65536)
            assert got == b"S" * size
    t.join(10)
    srv.close()


def test_asyncio_on_given_sockets(opener, net):
    """asyncio's loop.sock_* calls and streams on sockets made by the opener."""
    import asyncio

    _, b, _ = net

    async def main() -> None:
        loop = asyncio.get_running_loop()
        # a non-blocking connect completes through asyncio's writability wait
        s = opener()
        s.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(s, ("10.30.0.2", 7)), 10)
        await loop.sock_sendall(s, b"x" * 50_000)
        got = b""
        while len(got) < 50_000:
            got += await asyncio.wait_for(loop.sock_recv(s, 65536), 10)
        assert got == b"x" * 50_000
        s.close()
        # a server on a listening socket from the opener, a client from the peer stack
        lst = opener()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind(("10.30.0.1", 6300))
        lst.listen()

        async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            w.write((await r.readline()).upper())
            await w.drain()
            w.close()

        server = await asyncio.start_server(handle, sock=lst)
        c = b.socket()
        c.setblocking(False)
        await loop.sock_connect(c, ("10.30.0.1", 6300))
        reader, writer = await asyncio.open_connection(sock=c)
        writer.write(b"hello asyncio\n")
        assert await asyncio.wait_for(reader.readline(), 10) == b"HELLO ASYNCIO\n"
        writer.close()
        server.close()
        await server.wait_closed()

    asyncio.run(main())
