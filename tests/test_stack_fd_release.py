"""Closed TCP sockets give their descriptors back at once (issue 14, R2).

A stream socket's pair end is held by the stack's pump. It must be released as soon as
the application has closed the socket: not at the end of TIME-WAIT (protocol state,
which needs no descriptor), and not only when a cyclic garbage collection happens to
run. Every test here counts /proc/self/fd with the garbage collector off.
"""

from __future__ import annotations

import errno
import gc
import os
import socket
import threading
import time

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import StackSocket, create_connection, create_server
from threadnet.switch.server import SwitchServer

from conftest import wait_for

A, B = "10.31.0.1", "10.31.0.2"


def nfds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def pair(sockdir):
    """Stacks A and B on one threadnet switch, one runner; gc is off while the test runs."""
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-fd-release")
    url = f"vde://{sw.directory}"
    a = Stack(f"eth,ip={A}/24", link=url, runner=runner, name="A")
    b = Stack(f"eth,ip={B}/24", link=url, runner=runner, name="B")
    was = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield a, b
    finally:
        if was:
            gc.enable()
        a.close()
        b.close()
        runner.stop()
        sw.close()


def _states(stack: Stack) -> list[str]:
    with stack.locked():
        return [str(ep.conn.state) for ep in stack.tcp.conns.values()]


def _settled(baseline: int, slack: int = 0):
    return lambda: nfds() <= baseline + slack


def _warm_up(a: Stack, srv: socket.socket) -> None:
    """One connection first: ARP, lazily opened descriptors of the runner and the like."""
    done = threading.Event()

    def serve() -> None:
        conn, _ = srv.accept()
        with conn:
            conn.recv(10)
        done.set()

    threading.Thread(target=serve, daemon=True).start()
    with create_connection(a, (B, 80), timeout=10) as c:
        c.sendall(b"x")
    done.wait(10)


def test_server_closes_first_no_descriptor_through_time_wait(pair):
    """HTTP/1.0 style: the server answers and closes first, so its side of every
    connection sits in TIME-WAIT for 60 s; the descriptors must be gone long before."""
    a, b = pair
    srv = create_server(b, ("", 80))
    _warm_up(a, srv)
    baseline = nfds()
    n = 40

    def serve() -> None:
        for _ in range(n):
            conn, _ = srv.accept()
            conn.recv(100)
            conn.sendall(b"answer")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for _ in range(n):
        with create_connection(a, (B, 80), timeout=10) as c:
            c.sendall(b"request")
            got = b""
            while d := c.recv(100):
                got += d
            assert got == b"answer"
    t.join(10)
    wait_for(_settled(baseline), timeout=5, what=f"descriptors back to {baseline} (now {nfds()})")
    # the protocol state is still there, with no descriptor: every connection is in
    # TIME-WAIT, or on its way there (a FIN lost on a loaded machine is retransmitted
    # after the RTO, so the last one may still be in FIN-WAIT)
    closing = ("TIME-WAIT", "FIN-WAIT-1", "FIN-WAIT-2", "CLOSING")
    wait_for(lambda: sum(st in closing for st in _states(b)) >= n, timeout=30,
             what=f"{n} connections closing or in TIME-WAIT ({_states(b)})")
    assert nfds() <= baseline
    srv.close()


def test_peer_closes_first_no_gc_needed(pair):
    """The client closes first; the server reads EOF and closes. The server's endpoint
    stops calling its pump then, which must close its end itself (no gc runs here)."""
    a, b = pair
    srv = create_server(b, ("", 80))
    _warm_up(a, srv)
    baseline = nfds()
    n = 40

    def serve() -> None:
        for _ in range(n):
            conn, _ = srv.accept()
            while conn.recv(100):
                pass
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    for _ in range(n):
        c = create_connection(a, (B, 80), timeout=10)
        c.sendall(b"bye")
        c.close()
    t.join(10)
    wait_for(_settled(baseline), timeout=5, what=f"descriptors back to {baseline} (now {nfds()})")
    wait_for(lambda: not b.tcp.conns and not a.tcp.conns or
             set(_states(a)) <= {"TIME-WAIT"}, timeout=5, what="connections finished")
    srv.close()


def test_half_close_then_close_with_a_silent_peer(pair):
    """The application shuts down writing, then closes; the peer never sends its FIN
    (it keeps its socket open). The descriptor goes anyway, shortly after the close."""
    a, b = pair
    srv = create_server(b, ("", 80))
    _warm_up(a, srv)
    baseline = nfds()
    clients = []
    for _ in range(10):
        c = create_connection(a, (B, 80), timeout=10)
        conn, _ = srv.accept()
        conn.sendall(b"data")
        conn.shutdown(socket.SHUT_WR)
        time.sleep(0.05)  # the pump sees the EOF before the close
        conn.close()
        assert c.recv(10) == b"data" and c.recv(10) == b""
        clients.append(c)  # open: no FIN from this side
    wait_for(_settled(baseline, slack=2 * len(clients)), timeout=10,
             what=f"server descriptors released (now {nfds()}, baseline {baseline})")
    for c in clients:
        c.close()
    wait_for(_settled(baseline), timeout=5, what=f"descriptors back to {baseline}")
    srv.close()


def test_close_with_unread_data_resets_and_releases(pair):
    a, b = pair
    srv = create_server(b, ("", 80))
    _warm_up(a, srv)
    baseline = nfds()
    c = create_connection(a, (B, 80), timeout=10)
    conn, _ = srv.accept()
    c.sendall(b"unread" * 100)
    wait_for(lambda: select_readable(conn), what="data at the server")
    conn.close()  # with data unread: a reset, as Linux sends
    with pytest.raises(ConnectionResetError):
        for _ in range(50):
            if not c.recv(10):
                break
            time.sleep(0.05)
    c.close()
    wait_for(_settled(baseline), timeout=5, what=f"descriptors back to {baseline} (now {nfds()})")
    srv.close()


def select_readable(s: socket.socket) -> bool:
    import select

    return bool(select.select([s], [], [], 0)[0])


def test_closing_a_connecting_socket_aborts_the_connect(pair):
    """A socket closed while its connect is pending (nobody answers the SYN) gives its
    connection up at once and its descriptor back (RFC 9293 3.10.4), instead of sending
    SYNs for two minutes: a published stack's client that dies mid-connect is this case."""
    a, b = pair
    srv = create_server(b, ("", 80))
    _warm_up(a, srv)
    baseline = nfds()
    socks = []
    for _ in range(5):
        c = StackSocket(a, socket.AF_INET, socket.SOCK_STREAM)
        c.setblocking(False)
        assert c.connect_ex(("10.31.0.99", 80)) == errno.EINPROGRESS  # nobody is there
        socks.append(c)
    def connecting() -> int:
        return _states(a).count("SYN-SENT")

    wait_for(lambda: connecting() == 5, what="five connects pending")
    for c in socks:
        c.close()
    wait_for(lambda: connecting() == 0, timeout=5, what=f"connects aborted ({_states(a)})")
    wait_for(_settled(baseline), timeout=5, what=f"descriptors back to {baseline} (now {nfds()})")
    srv.close()
