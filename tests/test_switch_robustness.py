"""A daemonized ``threadnet switch`` under abuse (issue acceptance 7): malformed control
requests, silent and vanishing clients, bad datagrams, 1000 attach/detach cycles and a
SIGKILLed Debian vde_plug. Afterwards the switch must still serve, hold no more file
descriptors than before and leave no stray sockets behind. Also: bad URLs and bad
command lines fail with one clear message.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

import threadnet
from threadnet.errors import LinkError, URLError
from threadnet.wire import vde as wire

from conftest import need_tool, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import BROADCAST, Console, eth, expect, expect_silence, mac

pytestmark = pytest.mark.usefixtures("stop_daemons_first")

_names = itertools.count()


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def stray_files(d: str) -> list[str]:
    return sorted(n for n in os.listdir(d) if n != "ctl")


def client_socket(d: str) -> tuple[socket.socket, str]:
    """A datagram socket bound where a vde client binds its own (``DIR/.PID-N``)."""
    path = os.path.join(d, ".%05d-t%04d" % (os.getpid() % 100000, next(_names)))
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return s, path


def ctl_connect(d: str) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(3)
    c.connect(os.path.join(d, "ctl"))
    return c


def closed_by_switch(c: socket.socket, timeout: float = 3.0) -> bool:
    """True when the switch closes the connection without answering."""
    c.settimeout(timeout)
    try:
        data = c.recv(4096)
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False
    return data == b""


def send_bad_request(d: str, payload: bytes) -> None:
    c = ctl_connect(d)
    try:
        c.sendall(payload)
        assert closed_by_switch(c), f"switch answered or kept open the request {payload[:24]!r}"
    finally:
        c.close()


def assert_serving(d: str) -> None:
    """A client can still attach, and frames still flow between two clients."""
    with threadnet.open_link(f"vde://{d}", description="probe-1") as one, \
            threadnet.open_link(f"vde://{d}", description="probe-2") as two:
        f = eth(BROADCAST, mac(0x77), b"still serving")
        one.send(f)
        expect(two, f)


@pytest.mark.parametrize("io", ["batched", "no-batch"])
def test_abuse_leaves_the_switch_healthy(procs, threadnet_switch, io):
    need_tool("vde_plug")
    d, mgmt, pid = threadnet_switch(*(["--no-batch"] if io == "no-batch" else []))
    # baseline: after one client came and went
    with threadnet.open_link(f"vde://{d}", description="warm-up") as w:
        w.send(eth(BROADCAST, mac(1)))
    with Console(mgmt) as con:
        # the switch has let go of the warm-up's port (and its descriptors)
        wait_for(lambda: not any("warm-up" in e for p in con.ports().values()
                                 for e in p["endpoints"]), what="the warm-up port to go")
        baseline = fd_count(pid) - 1  # not counting this console session

    # a client that connects and says nothing: must not hold up the others (and is closed
    # after the switch's request timeout, checked at the end)
    silent = ctl_connect(d)
    assert_serving(d)

    # -- malformed requests on DIR/ctl ------------------------------------------------------
    own, own_path = client_socket(d)
    try:
        good = wire.pack_request(own_path, "abuse")
        send_bad_request(d, b"GET / HTTP/1.0\r\n\r\n" + bytes(range(256)))  # garbage
        send_bad_request(d, b"\x00")  # one byte
        send_bad_request(d, good[:7])  # shorter than magic + version
        send_bad_request(d, good[:60])  # truncated inside the sockaddr
        send_bad_request(d, good[:121])  # one byte short of the header
        send_bad_request(d, b"\xff" * 4096)  # oversized garbage
        send_bad_request(d, struct.pack("=I", 0xDEADBEEF) + good[4:])  # bad magic
        send_bad_request(d, good[:4] + struct.pack("=I", 2) + good[8:])  # version 2
        send_bad_request(d, good[:4] + struct.pack("=I", 7) + good[8:])  # v1 layout, type 7
        send_bad_request(d, good[:8] + struct.pack("=I", 5) + good[12:])  # bad type
        send_bad_request(d, good[:8] + struct.pack("=I", 999 << 8) + good[12:])  # port 999
        send_bad_request(d, good[:12] + struct.pack("=H", 2) + good[14:])  # not AF_UNIX
        send_bad_request(d, good[:14] + b"\0" * 108)  # empty path
        missing = os.path.join(d, ".no-such-client")
        send_bad_request(d, wire.pack_request(missing, "ghost"))  # nonexistent client socket
        send_bad_request(d, wire.pack_request(d, "a directory"))  # not a socket
        assert_serving(d)
        # an oversized but well-formed request: vde_switch reads one 256-byte block, takes
        # the description that fits and ignores the rest; so does threadnet
        c = ctl_connect(d)
        c.sendall(wire.pack_request(own_path, "") + b"D" * 2000)
        reply = c.recv(wire.SOCKADDR_UN_LEN)
        assert len(reply) == wire.SOCKADDR_UN_LEN
        port_path = wire.parse_sockaddr_un(reply)
        with Console(mgmt) as con:
            port = int(os.path.basename(port_path).split(".")[0])
            assert con.ports()[port]["endpoints"] == ["D" * (wire.MAX_REQUEST - wire.HEADER_LEN)]
        c.close()
        wait_for(lambda: not os.path.exists(port_path), what="the oversized client's port freed")
    finally:
        own.close()
        os.unlink(own_path)

    # -- bad datagrams on a data socket ---------------------------------------------------------
    with threadnet.open_link(f"vde://{d}", description="bad-frames") as bad, \
            threadnet.open_link(f"vde://{d}", description="watcher") as watcher, \
            Console(mgmt) as con:
        for n in (0, 1, 6, 13):
            bad.send(b"\x01" * n)
        bad.send(eth(BROADCAST, mac(2), b"J" * 1600, pad=False))  # 1616 bytes
        bad.send(eth(BROADCAST, mac(2), b"J" * 1505, pad=False))  # 1519: one byte too long
        bad.send(b"\xff" * 9000)
        expect_silence(watcher, 0.2)
        assert con.ports()[bad.port]["in"] == (0, 0)
        biggest = eth(BROADCAST, mac(2), b"\x55" * 1504, pad=False)  # 1518 = 1500 + 14 + 4
        bad.send(biggest)
        expect(watcher, biggest)
        smallest = eth(BROADCAST, mac(2), b"", pad=False)  # 14 bytes: a bare header
        bad.send(smallest)
        expect(watcher, smallest)
        assert con.ports()[bad.port]["in"] == (2, 1518 + 14)
        assert con.ports()[watcher.port]["out"] == (2, 1518 + 14)

    # -- 1000 attach/detach cycles, some of them abrupt --------------------------------------------
    for i in range(1000):
        if i % 10 == 3:
            # request, then close before reading the answer
            own, own_path = client_socket(d)
            c = ctl_connect(d)
            c.sendall(wire.pack_request(own_path, f"abrupt {i}"))
            c.close()
            own.close()
            os.unlink(own_path)
        elif i % 10 == 7:
            # attached, then the control stream is shut down under the link
            lnk = threadnet.open_link(f"vde://{d}", description=f"cut {i}")
            cut = socket.socket(fileno=os.dup(lnk.ctl_fileno()))
            cut.shutdown(socket.SHUT_RDWR)
            cut.close()
            lnk.close()
        else:
            lnk = threadnet.open_link(f"vde://{d}", description=f"cycle {i}")
            if i % 100 == 0:
                lnk.send(eth(BROADCAST, mac(3), b"cycling"))
            lnk.close()
    assert_serving(d)

    # -- a Debian vde_plug streaming frames, killed with SIGKILL --------------------------------
    with threadnet.open_link(f"vde://{d}", description="sink") as sink, Console(mgmt) as con:
        frame = eth(BROADCAST, mac(4), b"stream")
        record = struct.pack("!H", len(frame)) + frame
        gen = procs.popen([sys.executable, "-c",
                           "import sys\nrec = bytes.fromhex(sys.argv[1])\n"
                           "while True: sys.stdout.buffer.write(rec * 64)",
                           record.hex()], stdout=subprocess.PIPE)
        plug = procs.popen(["vde_plug", "-D", "doomed", f"vde://{d}"], stdin=gen.stdout,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        con.port_of("doomed")
        expect(sink, frame)  # frames are flowing
        os.kill(plug.pid, signal.SIGKILL)
        plug.wait(5)
        wait_for(lambda: not any(e.startswith("doomed") for p in con.ports().values()
                                 for e in p["endpoints"]), what="the killed plug's port freed")

    # -- afterwards ----------------------------------------------------------------------------
    assert closed_by_switch(silent, timeout=8), "the silent connection was never closed"
    silent.close()
    assert_serving(d)
    wait_for(lambda: fd_count(pid) <= baseline, timeout=5,
             what=f"fd count back to {baseline} (now {fd_count(pid)})")
    assert stray_files(d) == []
    with Console(mgmt) as con:
        assert con.ok("port/print") == []
        assert con.ok("port/showinfo")[0] == "Numports=32"


def test_many_silent_connections_do_not_block_clients(threadnet_switch):
    """More silent connections than the switch keeps waiting for a request (128): the
    oldest are dropped, so a real client still gets in at once."""
    d, _, pid = threadnet_switch()
    baseline = fd_count(pid)
    silent = []
    try:
        for _ in range(300):
            c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            c.connect(os.path.join(d, "ctl"))  # blocking: waits while the backlog is full
            silent.append(c)
        t0 = time.monotonic()
        assert_serving(d)
        assert time.monotonic() - t0 < 2
        # the first ones were dropped by the switch
        assert closed_by_switch(silent[0], timeout=2)
    finally:
        for s in silent:
            s.close()
    wait_for(lambda: fd_count(pid) <= baseline, what="pending connections dropped")


# -- bad URLs -----------------------------------------------------------------------------------
def test_bad_urls_raise_clear_errors(sockdir):
    cases = [
        ("nope://x", URLError, "unknown link scheme 'nope'"),
        (f"vde://{sockdir}/no-such-switch", LinkError, "no switch at"),
        (f"vde://{sockdir}", LinkError, "no switch at"),  # a directory, but nobody serves it
        (f"vde://{sockdir}[3", URLError, "unbalanced brackets"),
        (f"vde://{sockdir}]", URLError, "unbalanced brackets"),
        (f"vde://{sockdir}[bogus=1]", URLError, "unknown option 'bogus'"),
        (f"vde://{sockdir}[3/descr=x/colour=red]", URLError, "unknown option 'colour'"),
        (f"vde://{sockdir}[mode=999]", URLError, "mode must be octal"),
        (f"vde://{sockdir}[port=x]", URLError, "port must be a number"),
        ("vde://{inner}", URLError, "takes no nested"),
    ]
    for url, exc, text in cases:
        t0 = time.monotonic()
        with pytest.raises(exc) as info:
            threadnet.open_link(url).close()
        assert text in str(info.value), (url, str(info.value))
        assert time.monotonic() - t0 < 2, url
    assert os.listdir(sockdir) == []  # no client socket left behind


def test_link_error_when_switch_goes_away(procs, threadnet_switch):
    d, _, pid = threadnet_switch()
    lnk = threadnet.open_link(f"vde://{d}")
    try:
        os.kill(pid, signal.SIGTERM)
        with pytest.raises(LinkError):
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                lnk.wait_readable(0.2)
        assert lnk.closed_by_peer
    finally:
        lnk.close()


# -- bad command lines --------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [
    ["switch", "-n", "abc"],
    ["switch", "--bogus"],
    ["switch", "-s", "/tmp", "-m", "999"],
    ["plug", "bad://x"],
    ["plug", "vde:///nonexistent/switch/dir"],
    ["wirefilter", "-l", "xyz", "-v", "a:b"],
    ["wirefilter", "-v", "no-colon"],
])
def test_cli_bad_options_fail_with_one_line(argv):
    r = subprocess.run(threadnet_cmd(*argv), env=threadnet_env(), stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0
    lines = r.stderr.strip().split("\n")
    assert len(lines) == 1 and lines[0], r.stderr
    assert "Traceback" not in r.stderr
    assert lines[0].startswith("threadnet")
    assert r.stdout == ""
