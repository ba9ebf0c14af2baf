"""A program that closes its stack sockets and exits at once still delivers what it sent
(issue 9 c): the runner thread lingers at interpreter exit until closing connections are
flushed and acknowledged, as the kernel would deliver them; SO_LINGER 0 resets at once."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
import sys
import textwrap

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import create_server
from threadnet.switch.server import SwitchServer

from conftest import threadnet_env

SIZE = 50 * 1024 * 1024
CHILD_TIMEOUT = 300  # only a bound for a hung child; nothing here measures time


@pytest.fixture
def peer(sockdir):
    """A switch and a stack (10.9.0.1) in this process; the child joins the switch."""
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-linger")
    stack = Stack("eth,ip=10.9.0.1/24", link=f"vde://{sw.directory}", runner=runner, name="P")
    yield stack, f"vde://{sw.directory}"
    stack.close()
    runner.stop()
    sw.close()


def _child(body: str, url: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    script = textwrap.dedent("""
        import os, random, socket, struct, sys
        import threadnet
        from threadnet.stack.socket import create_connection
        s = threadnet.Stack("eth,ip=10.9.0.2/24", link=sys.argv[1])
    """) + textwrap.dedent(body)
    return subprocess.Popen([sys.executable, "-c", script, url], env=threadnet_env(env),
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _read_all(conn: socket.socket) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while True:
        data = conn.recv(1 << 20)
        if not data:  # EOF: the child's FIN arrived
            return n, h.hexdigest()
        n += len(data)
        h.update(data)


def _finish(child: subprocess.Popen) -> None:
    if child.stdin is not None:
        child.stdin.close()
        child.stdin = None
    try:
        out, err = child.communicate(timeout=CHILD_TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    assert "Traceback" not in err, err


def test_send_close_exit_delivers_every_byte_and_eof(peer):
    stack, url = peer
    srv = create_server(stack, ("", 5000))
    srv.settimeout(60)
    child = _child("""
        data = random.Random(9).randbytes(%d)
        c = create_connection(s, ("10.9.0.1", 5000), timeout=60)
        c.sendall(data)
        c.close()
        # and the interpreter exits at once
    """ % SIZE, url)
    try:
        conn, _ = srv.accept()
        conn.settimeout(60)
        with conn:
            n, digest = _read_all(conn)
    finally:
        _finish(child)
        srv.close()
    assert n == SIZE
    assert digest == hashlib.sha256(random.Random(9).randbytes(SIZE)).hexdigest()


def test_server_close_exit_peer_sees_eof(peer):
    """A server that answers, closes and exits: the client gets the answer and EOF."""
    stack, url = peer
    child = _child("""
        from threadnet.stack.socket import create_server
        srv = create_server(s, ("", 6000))
        print("listening", flush=True)
        c, _ = srv.accept()
        c.sendall(b"bye" * 1000)
        c.close()
        srv.close()
    """, url)
    try:
        assert child.stdout.readline().strip() == "listening"
        c = stack.socket()
        c.settimeout(60)
        c.connect(("10.9.0.2", 6000))
        with c:
            got = b""
            while True:
                data = c.recv(65536)
                if not data:
                    break
                got += data
    finally:
        _finish(child)
    assert got == b"bye" * 1000


def test_so_linger_zero_resets(peer):
    """SO_LINGER on with a zero timeout: close() resets the connection, as on Linux."""
    stack, url = peer
    srv = create_server(stack, ("", 5001))
    srv.settimeout(60)
    child = _child("""
        c = create_connection(s, ("10.9.0.1", 5001), timeout=60)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        assert struct.unpack("ii", c.getsockopt(socket.SOL_SOCKET, socket.SO_LINGER, 8)) == (1, 0)
        c.sendall(b"x")
        sys.stdin.read()
        c.close()
    """, url)
    try:
        conn, _ = srv.accept()
        conn.settimeout(60)
        with conn:
            assert conn.recv(1) == b"x"
            child.stdin.close()  # the child closes now
            with pytest.raises(ConnectionResetError):
                while conn.recv(65536):
                    pass
    finally:
        _finish(child)
        srv.close()


def test_exit_linger_is_bounded(peer):
    """A peer that never acknowledges cannot keep the program alive past the bound."""
    stack, url = peer
    srv = create_server(stack, ("", 5002))
    srv.settimeout(60)
    child = _child("""
        c = create_connection(s, ("10.9.0.1", 5002), timeout=60)
        print("connected", flush=True)
        sys.stdin.readline()
        c.sendall(b"y" * 100000)
        c.close()
    """, url, env={"THREADNET_EXIT_LINGER": "0.5"})
    try:
        conn, _ = srv.accept()
        assert child.stdout.readline().strip() == "connected"
        stack.link_down("eth0")  # no acknowledgement comes back from here on
        child.stdin.write("go\n")
        child.stdin.close()
        _finish(child)  # it exits (the bound), instead of waiting forever
        conn.close()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        srv.close()
