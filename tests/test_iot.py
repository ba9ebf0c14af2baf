"""The Internet of Threads API: a default stack per thread, stacks named by path,
``threadnet stack`` and ``threadnet run``."""

from __future__ import annotations

import asyncio
import errno
import http.server
import os
import select
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

import threadnet
from threadnet import Stack
from threadnet.hook import hook_installed, uninstall_hook
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import StackSocket
from threadnet.switch.server import SwitchServer

from conftest import (
    SRC,
    need_root,
    need_tool,
    read_pidfile,
    run_as,
    threadnet_cmd,
    threadnet_env,
    wait_blocked,
    wait_for,
)

KERNEL_SOCKET = socket.socket


@pytest.fixture
def lan(sockdir):
    """A threadnet switch (256 ports) and a factory of stacks on it, all run by one runner."""
    sw = SwitchServer(os.path.join(sockdir, "sw"), numports=256, mode=0o666, dirmode=0o777).start()
    runner = StackRunner("test-iot")
    made: list[Stack] = []

    def make(cfg: str, name: str | None = None) -> Stack:
        s = Stack(cfg, link=f"vde://{sw.directory}", runner=runner, name=name)
        made.append(s)
        return s

    yield SimpleNamespace(sw=sw, dir=sw.directory, url=f"vde://{sw.directory}", make=make)
    for s in made:
        s.close()
    runner.stop()
    sw.close()
    uninstall_hook()
    threadnet.set_default_stack(None, scope="process")
    uninstall_hook()


class NameHandler(http.server.BaseHTTPRequestHandler):
    """Answers with the name of the thread that serves the request."""

    def do_GET(self) -> None:  # noqa: N802
        body = threading.current_thread().name.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


# -- the hook itself ------------------------------------------------------------------------------
def test_hook_is_explicit_idempotent_and_reversible(lan):
    uninstall_hook()
    assert socket.socket is KERNEL_SOCKET and not hook_installed()
    a = lan.make("eth,ip=10.20.0.1/24")
    threadnet.install_hook()
    threadnet.install_hook()
    assert hook_installed()
    # without a default, a thread keeps the kernel's sockets
    with socket.socket() as k:
        assert type(k) is KERNEL_SOCKET and isinstance(k, socket.socket)
    with threadnet.use(a):
        with socket.socket() as s:
            assert isinstance(s, StackSocket) and isinstance(s, socket.socket)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as u:
            assert type(u) is KERNEL_SOCKET  # only AF_INET/AF_INET6 move to the stack
        with threadnet.use(None):
            assert threadnet.get_default_stack() is None
        assert threadnet.get_default_stack() is a
        assert threadnet.msocket(None).__class__ is StackSocket
    assert threadnet.get_default_stack() is None
    assert threadnet.msocket(None).__class__ is KERNEL_SOCKET
    uninstall_hook()
    assert socket.socket is KERNEL_SOCKET
    assert socket.getaddrinfo.__module__ == "socket"
    with pytest.raises(ValueError):
        threadnet.set_default_stack(a, scope="galaxy")
    with pytest.raises(TypeError):
        threadnet.set_default_stack(42)


def test_process_default_and_thread_override(lan):
    a = lan.make("eth,ip=10.20.0.1/24")
    b = lan.make("eth,ip=10.20.0.2/24")
    threadnet.set_default_stack(a, scope="process")
    seen = {}

    def other() -> None:
        seen["other"] = threadnet.get_default_stack()
        threadnet.set_default_stack(b)
        seen["mine"] = threadnet.get_default_stack()

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == {"other": a, "mine": b}
    assert threadnet.get_default_stack() is a
    threadnet.set_default_stack(None, scope="process")
    assert threadnet.get_default_stack() is None
    # msocket(2)'s SOCK_DEFAULT: type 0 sets the process default and opens nothing
    assert threadnet.msocket(b, socket.AF_UNSPEC, 0) is None
    assert threadnet.get_default_stack() is b


# -- acceptance 1: 100 threads, 100 stacks, the same port --------------------------------------------
def test_hundred_threads_serve_http_on_port_80_each_on_its_own_stack(lan):
    n = 100
    stacks = [lan.make(f"eth,ip=10.21.0.{i + 1}/16", name=f"s{i}") for i in range(n)]
    client = lan.make("eth,ip=10.21.1.1/16", name="client")
    servers: list[http.server.HTTPServer] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def serve(stack: Stack) -> None:
        try:
            with threadnet.use(stack):
                srv = http.server.HTTPServer(("", 80), NameHandler)
                with lock:
                    servers.append(srv)
                srv.serve_forever(poll_interval=0.5)
                srv.server_close()
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=serve, args=(s,), name=f"server-{i}", daemon=True)
               for i, s in enumerate(stacks)]
    for t in threads:
        t.start()
    wait_for(lambda: len(servers) == n or errors, timeout=30, what="100 servers listening")
    assert not errors, errors
    answers: dict[int, str] = {}

    def fetch_all() -> None:
        with threadnet.use(client):
            for i in range(n):
                with urllib.request.urlopen(f"http://10.21.0.{i + 1}/", timeout=20) as r:
                    answers[i] = r.read().decode()

    try:
        fetcher = threading.Thread(target=fetch_all, name="client")
        fetcher.start()
        fetcher.join(180)
        assert not fetcher.is_alive()
        assert answers == {i: f"server-{i}" for i in range(n)}
        # every server bound port 80 of its own stack
        assert all(srv.server_address == ("0.0.0.0", 80) for srv in servers)
    finally:
        for srv in servers:
            srv.shutdown()
        for t in threads:
            t.join(10)


# -- acceptance 2: one IP per thread, seen by a kernel server --------------------------------------------
def test_twenty_threads_each_with_its_own_address_reach_a_kernel_server(lan, tap_ns, procs, sockdir):
    need_root()
    need_tool("vde_plug2tap")
    peer = tap_ns(lan.dir, "10.22.0.254")
    log = os.path.join(sockdir, "http.log")
    with open(log, "w") as out:
        procs.popen(["ip", "netns", "exec", peer.ns, sys.executable, "-u", "-m", "http.server",
                     "8000", "--bind", "10.22.0.254", "--directory", sockdir],
                    stdout=out, stderr=subprocess.STDOUT)
    stacks = [lan.make(f"eth,ip=10.22.0.{i + 1}/24") for i in range(20)]
    probe = stacks[0]
    wait_for(lambda: _tcp_ok(probe, ("10.22.0.254", 8000)), timeout=20, what="kernel server")
    results: dict[int, tuple[int, bytes]] = {}
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            threadnet.set_default_stack(stacks[i])  # this thread only
            with urllib.request.urlopen("http://10.22.0.254:8000/", timeout=20) as r:
                status = r.status
            with socket.create_connection(("10.22.0.254", 8000), timeout=20) as s:
                assert isinstance(s, StackSocket)
                s.sendall(b"GET /http.log HTTP/1.0\r\n\r\n")
                head = s.recv(12)
            results[i] = (status, head)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert all(r == (200, b"HTTP/1.0 200") for r in results.values()) and len(results) == 20
    # the main thread never had a default: its sockets are still the kernel's
    assert type(socket.socket()) is KERNEL_SOCKET

    def sources() -> set[str]:
        with open(log) as f:
            return {line.split()[0] for line in f if '"GET /' in line}

    try:
        wait_for(lambda: len(sources()) == 20, timeout=10, what="20 source addresses in the log")
    except AssertionError:
        with open(log) as f:
            raise AssertionError(f"sources {sorted(sources())}; log:\n{f.read()}") from None
    assert sources() == {f"10.22.0.{i + 1}" for i in range(20)}


def _tcp_ok(stack: Stack, addr: tuple[str, int]) -> bool:
    s = stack.socket()
    s.settimeout(2)
    try:
        s.connect(addr)
        return True
    except OSError:
        return False
    finally:
        s.close()


# -- acceptance 3: asyncio unchanged ----------------------------------------------------------------------
def test_asyncio_streams_inside_use(lan):
    a = lan.make("eth,ip=10.23.0.1/24,ip=fc00:23::1/64")
    b = lan.make("eth,ip=10.23.0.2/24,ip=fc00:23::2/64")
    wait_for(lambda: "fc00:23::1/64" in a.addresses(6) and "fc00:23::2/64" in b.addresses(6),
             what="DAD")
    started = threading.Event()
    stop: dict[str, object] = {}

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data.upper())
            await writer.drain()
        writer.close()

    def server_thread() -> None:
        async def main() -> None:
            server = await asyncio.start_server(handle, host=None, port=7777)
            stop["loop"] = asyncio.get_running_loop()
            stop["event"] = asyncio.Event()
            stop["names"] = sorted(s.getsockname()[0] for s in server.sockets)
            started.set()
            async with server:
                await stop["event"].wait()  # type: ignore[union-attr]

        with threadnet.use(a):
            asyncio.run(main())

    t = threading.Thread(target=server_thread)
    t.start()
    assert started.wait(10)
    assert stop["names"] == ["0.0.0.0", "::"]

    async def client(host: str) -> bytes:
        reader, writer = await asyncio.open_connection(host, 7777)
        assert isinstance(writer.get_extra_info("socket")._sock, StackSocket)  # type: ignore[attr-defined]
        payload = os.urandom(200_000).hex().encode()
        writer.write(payload)
        await writer.drain()
        writer.write_eof()
        data = await reader.read()
        writer.close()
        await writer.wait_closed()
        assert data == payload.upper()
        return writer.get_extra_info("peername")[0]

    try:
        with threadnet.use(b):
            assert asyncio.run(client("10.23.0.1")) == "10.23.0.1"
            assert asyncio.run(client("fc00:23::1")) == "fc00:23::1"
    finally:
        loop = stop["loop"]
        loop.call_soon_threadsafe(stop["event"].set)  # type: ignore[union-attr]
        t.join(10)


# -- acceptance 4: a stack named by path, used from another process --------------------------------------------
@pytest.fixture
def published(lan, procs, sockdir):
    """``threadnet stack PATH`` as a daemon on the LAN (10.24.0.1), and a peer stack here."""
    path = os.path.join(sockdir, "stackP")
    pidfile = os.path.join(sockdir, "stackP.pid")
    pid = procs.daemon(threadnet_cmd("stack", path, "--link", lan.url, "--config",
                                     "eth,ip=10.24.0.1/24,ip=fc00:24::1/64", "-d", "-p", pidfile),
                       pidfile, env=threadnet_env())
    peer = lan.make("eth,ip=10.24.0.2/24,ip=fc00:24::2/64", name="peer")
    # DAD: the daemon's stack started first, so once the peer's address is usable, so is its
    wait_for(lambda: "fc00:24::2/64" in peer.addresses(6), what="DAD")
    return SimpleNamespace(path=path, pid=pid, pidfile=pidfile, peer=peer)


def _echo_once(listener: socket.socket) -> threading.Thread:
    def run() -> None:
        conn, _ = listener.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _roundtrip(sock: socket.socket, size: int) -> None:
    payload = os.urandom(size)
    got = bytearray()

    def reader() -> None:
        while len(got) < size:
            chunk = sock.recv(65536)
            if not chunk:
                break
            got.extend(chunk)

    t = threading.Thread(target=reader)
    t.start()
    sock.sendall(payload)
    t.join(60)
    assert bytes(got) == payload


def test_published_stack_serves_another_process(published):
    p = published
    assert oct(os.stat(p.path).st_mode & 0o777) == oct(0o660)
    # outgoing TCP: a socket opened by path connects to the peer stack
    srv = p.peer.socket()
    srv.bind(("", 7))
    srv.listen()
    _echo_once(srv)
    c = threadnet.msocket(p.path, socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(10)
    c.connect(("10.24.0.2", 7))
    assert c.getsockname()[0] == "10.24.0.1" and c.getpeername() == ("10.24.0.2", 7)
    _roundtrip(c, 1 << 20)
    c.close()
    # incoming TCP: a listening socket opened by path accepts the peer's connection
    lst = threadnet.msocket(p.path, socket.AF_INET6, socket.SOCK_STREAM)
    lst.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    lst.bind(("::", 8080))
    lst.listen(8)
    lst.settimeout(10)
    out = p.peer.socket()
    out.settimeout(10)
    connector = threading.Thread(target=out.connect, args=(("10.24.0.1", 8080),))
    connector.start()
    conn, addr = lst.accept()
    connector.join()
    assert addr[0] == "::ffff:10.24.0.2" and conn.getsockname()[:2] == ("::ffff:10.24.0.1", 8080)
    conn.sendall(b"from the published stack")
    assert out.recv(100) == b"from the published stack"
    out.sendall(b"to it")
    assert conn.recv(100) == b"to it"
    out.close()
    assert conn.recv(100) == b""
    conn.close()
    # select works on the listening descriptor
    assert select.select([lst], [], [], 0.2)[0] == []
    lst.close()
    # UDP, both ways, IPv4 and IPv6
    for fam, here, there in ((socket.AF_INET, "10.24.0.1", "10.24.0.2"),
                             (socket.AF_INET6, "fc00:24::1", "fc00:24::2")):
        u = threadnet.msocket(p.path, fam, socket.SOCK_DGRAM)
        u.settimeout(10)
        u.bind((here, 5353))
        v = p.peer.socket(fam, socket.SOCK_DGRAM)
        v.settimeout(10)
        v.bind((there, 0))
        v.sendto(b"ping", (here, 5353))
        data, src = u.recvfrom(100)
        assert data == b"ping" and src[:2] == v.getsockname()[:2]
        u.sendto(b"pong", src)
        assert v.recvfrom(100)[0] == b"pong"
        u.close()
        v.close()
    srv.close()


def test_published_stack_errors_and_permissions(published, unpriv):
    p = published
    with pytest.raises(FileNotFoundError):
        threadnet.msocket(p.path + ".nope", socket.AF_INET, socket.SOCK_STREAM)
    code = ("import socket, threadnet\n"
            "try:\n"
            f"    threadnet.msocket({p.path!r}, socket.AF_INET, socket.SOCK_STREAM)\n"
            "except PermissionError as e:\n"
            "    print('PermissionError', e.errno)\n")
    r = run_as(unpriv, [unpriv["python"], "-c", code], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == f"PermissionError {errno.EACCES}", r.stderr
    # a bad request on the control channel gets an error, and the stack keeps serving
    ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    ctl.connect(p.path)
    for junk in (b"\xff\xfe not json", b"[1,2]", b'{"op":"bind","addr":[1]}', b'{"op":"fly"}',
                 b'{"op":"socket","family":99,"type":1,"proto":0}',
                 b'{"op":"socket","family":2,"type":1,"proto":0}',
                 b'{"op":"connect","addr":["example.org",80]}', b'{"op":"bind","addr":"x"}'):
        ctl.send(junk)
        reply = ctl.recv(70000)
        assert b'"raise"' in reply or junk.startswith(b'{"op":"socket","family":2'), (junk, reply)
    ctl.close()
    s = threadnet.msocket(p.path, socket.AF_INET, socket.SOCK_STREAM)
    with pytest.raises(ConnectionRefusedError):
        s.settimeout(5)
        s.connect(("10.24.0.2", 9))  # nothing listens there: the peer stack resets
    s.close()


def test_killing_the_stack_process_fails_blocked_calls_quickly(published, procs):
    p = published
    srv = p.peer.socket()
    srv.bind(("", 7))
    srv.listen()
    c = threadnet.msocket(p.path, socket.AF_INET, socket.SOCK_STREAM)
    c.connect(("10.24.0.2", 7))
    peer_conn, _ = srv.accept()
    lst = threadnet.msocket(p.path)
    lst.bind(("", 9090))
    lst.listen()
    u = threadnet.msocket(p.path, socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("", 5000))
    outcome: dict[str, tuple[str, float]] = {}

    def blocked(name: str, call) -> threading.Thread:
        def run() -> None:
            try:
                call()
                outcome[name] = ("returned", time.monotonic())
            except OSError as exc:
                outcome[name] = (errno.errorcode.get(exc.errno or 0, repr(exc)), time.monotonic())

        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t

    threads = [blocked("recv", lambda: c.recv(10)), blocked("accept", lst.accept),
               blocked("recvfrom", lambda: u.recvfrom(10))]
    for t in threads:
        wait_blocked(t, what="the calls to block")
    assert not outcome
    killed = time.monotonic()
    os.kill(p.pid, 9)
    for t in threads:
        t.join(5)
    assert set(outcome) == {"recv", "accept", "recvfrom"}, outcome
    for name, (what, when) in outcome.items():
        assert what in ("ECONNRESET", "EPIPE"), (name, what)
        assert when - killed < 2.0, (name, when - killed)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        for _ in range(100):
            c.sendall(b"x" * 65536)
    with pytest.raises(ConnectionResetError):
        c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    for s in (c, lst, u, peer_conn, srv):
        s.close()


def test_stack_service_shuts_down_cleanly_on_sigterm(published):
    p = published
    assert os.path.exists(p.path) and os.path.exists(p.pidfile)
    os.kill(p.pid, 15)
    wait_for(lambda: not os.path.exists(p.path) and not os.path.exists(p.pidfile),
             what="stack file and pidfile removed")


def test_stack_command_errors(lan, sockdir):
    env = threadnet_env()
    r = subprocess.run(threadnet_cmd("stack", os.path.join(sockdir, "s"), "--link",
                                     "vde:///nonexistent/sw", "-d"),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1 and "no switch at /nonexistent/sw" in r.stderr
    r = subprocess.run(threadnet_cmd("stack", os.path.join(sockdir, "s")),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and "--link" in r.stderr
    r = subprocess.run(threadnet_cmd("stack", os.path.join(sockdir, "s"), "--link", lan.url,
                                     "--config", "eth,ip=banana"),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1 and "banana" in r.stderr
    r = subprocess.run(threadnet_cmd("run", "--", sys.executable, "-c", "pass"),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 2 and "--stack" in r.stderr
    r = subprocess.run(threadnet_cmd("run", "--stack", os.path.join(sockdir, "none"), "--", "true"),
                       capture_output=True, text=True, env=env, timeout=30)
    assert r.returncode == 1 and "no stack at" in r.stderr


# -- acceptance 5: threadnet run ----------------------------------------------------------------------------
def test_run_http_server_on_a_published_stack_fetched_by_curl(published, tap_ns, procs, lan):
    need_root()
    need_tool("curl")
    p = published
    peer = tap_ns(lan.dir, "10.24.0.99")
    server = procs.popen(threadnet_cmd("run", "--stack", p.path, "--", sys.executable, "-m",
                                       "http.server", "8080", "--directory", SRC),
                         env=threadnet_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)

    def fetched() -> str | None:
        r = subprocess.run(["ip", "netns", "exec", peer.ns, "curl", "-s", "-m", "3",
                            "http://10.24.0.1:8080/threadnet/__init__.py"],
                           capture_output=True, text=True)
        return r.stdout if r.returncode == 0 else None

    body = wait_for(fetched, timeout=30, interval=0.5, what="curl through threadnet run")
    assert body == open(os.path.join(SRC, "threadnet", "__init__.py")).read()
    server.terminate()
    out = server.communicate(timeout=10)[0]
    assert "10.24.0.99" in out  # http.server logged the kernel client's address


def test_run_with_its_own_stack_reaches_a_server_on_another_stack(lan, procs, sockdir):
    other = lan.make("eth,ip=10.25.0.2/24", name="other")
    srv = other.socket()
    srv.bind(("", 4000))
    srv.listen()
    t = _echo_once(srv)
    client = os.path.join(sockdir, "client.py")
    with open(client, "w") as f:
        f.write("import socket\n"
                "with socket.create_connection(('10.25.0.2', 4000), timeout=10) as s:\n"
                "    s.sendall(b'hello from ' + socket.gethostname().encode())\n"
                "    print(s.getsockname()[0], s.recv(100).decode())\n")
    r = subprocess.run(threadnet_cmd("run", "--link", lan.url, "--config", "eth,ip=10.25.0.7/24",
                                     "--hostname", "client7", "--", sys.executable, client),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["10.25.0.7", "hello", "from", "client7"]
    t.join(5)
    srv.close()
    # the exit status of the program is threadnet run's
    r = subprocess.run(threadnet_cmd("run", "--link", lan.url, "--config", "eth,ip=10.25.0.8/24",
                                     "--", sys.executable, "-c", "raise SystemExit(7)"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 7
    # a program that is not Python runs under the seccomp supervisor (tests/test_views.py)
    r = subprocess.run(threadnet_cmd("run", "--link", lan.url, "--config", "eth,ip=10.25.0.9/24",
                                     "--", "sh", "-c", "exit 3"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 3 and r.stderr == ""


def test_run_and_msocket_work_unprivileged(lan, unpriv, sockdir, procs):
    """Nothing here needs root: an unprivileged user runs a stack service and a program on it."""
    other = lan.make("eth,ip=10.26.0.2/24", name="other")
    srv = other.socket()
    srv.bind(("", 4000))
    srv.listen()
    t = _echo_once(srv)
    path = os.path.join(sockdir, "ustack")
    code = ("import socket, sys, threadnet\n"
            "s = threadnet.msocket(sys.argv[1], socket.AF_INET, socket.SOCK_STREAM)\n"
            "s.settimeout(10); s.connect(('10.26.0.2', 4000)); s.sendall(b'unprivileged')\n"
            "print(s.recv(100).decode())\n")
    env = {"PYTHONPATH": unpriv["src"]}
    py = unpriv["python"]
    pidfile = os.path.join(sockdir, "ustack.pid")
    os.chmod(sockdir, 0o1777)  # like /tmp: sticky, or stacks refuse to publish there
    r = run_as(unpriv, [py, "-m", "threadnet", "stack", path, "--link", lan.url, "--config",
                        "eth,ip=10.26.0.1/24", "-d", "-p", pidfile], env=env,
               capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    procs.adopt(read_pidfile(pidfile))
    r = run_as(unpriv, [py, "-c", code, path], env=env, capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "unprivileged", r.stderr
    t.join(5)
    srv.close()
    # threadnet run: an unmodified http.server on port 80 of the stack, without root
    www = os.path.join(sockdir, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("served without root\n")
    os.chmod(www, 0o755)
    server = procs.popen(["setpriv", f"--reuid={unpriv['uid']}", f"--regid={unpriv['gid']}",
                          "--clear-groups", "env", "-i", f"PYTHONPATH={unpriv['src']}",
                          "PATH=/usr/bin:/bin", py, "-m", "threadnet", "run", "--stack", path,
                          "--", py, "-m", "http.server", "80", "--directory", www],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def fetch() -> bytes | None:
        with threadnet.use(other):
            try:
                with urllib.request.urlopen("http://10.26.0.1/", timeout=3) as resp:
                    return resp.read()
            except OSError:
                return None

    assert wait_for(fetch, timeout=30, interval=0.3, what="http.server on port 80") == \
        b"served without root\n"
    server.terminate()
    server.wait(10)


def test_bench_ioth_runs_side_by_side():
    """The benchmark runs (briefly) and prints both paths and their ratio; no speed assertion."""
    import json

    r = subprocess.run(threadnet_cmd("bench", "ioth", "--repeat", "1", "--mbytes", "2", "--rr",
                                     "50", "--conns", "5", "--json"),
                       env=threadnet_env(), capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert "interpreter:" in r.stdout and "ratio" in r.stdout
    result = json.loads(r.stdout.strip().splitlines()[-1])["results"]
    assert set(result) == {"bulk", "rr", "conn"}
    for figures in result.values():
        assert figures["in-process"] > 0 and figures["cross-process"] > 0
