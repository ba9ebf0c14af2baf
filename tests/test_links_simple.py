"""Simple links: null://, pcap://, stream links (stdio/fd/cmd), udp://, ptp://, tap://.

Interop tests use Debian's vde_plug and dpipe (vdeplug4 4.0.1) as the peer.
"""

from __future__ import annotations

import errno
import json
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path

import pytest

import threadnet
from threadnet.errors import LinkError, URLError
from threadnet.link import Link, open_link
from threadnet.link.capture import CaptureLink, capture
from threadnet.link.null import NullLink
from threadnet.link.ptp import PtpLink
from threadnet.link.stream import CmdLink, StreamLink, open_dpipe_alternate
from threadnet.link.udp import UdpLink, parse_udp
from threadnet.wire.pcap import read_pcap
from threadnet.wire.stream import MAX_RECORD

from conftest import wait_blocked

SRC = str(Path(threadnet.__file__).resolve().parent.parent)
HAVE_VDE_PLUG = shutil.which("vde_plug") is not None
HAVE_DPIPE = shutil.which("dpipe") is not None
needs_vde_plug = pytest.mark.skipif(not HAVE_VDE_PLUG, reason="Debian vde_plug is not installed")


def frame(n: int = 60, tag: int = 0) -> bytes:
    """An Ethernet frame of n bytes whose payload says which one it is."""
    head = bytes.fromhex("0200000000bb0200000000aa88b5")
    return (head + bytes([tag]) * (n - len(head)))[:n]


def recv_within(link: Link, timeout: float = 5.0) -> bytes:
    assert link.wait_readable(timeout), f"no frame on {link.url} within {timeout}s"
    return link.recv()


def readable(fd: int, timeout: float = 0.0) -> bool:
    return bool(select.select([fd], [], [], timeout)[0])


def wait_for_path(path: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.01)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def sock_path():
    """A unique socket path under /tmp (short: sun_path is 108 bytes); cleaned up after."""
    path = f"/tmp/tn-{uuid.uuid4().hex[:10]}"
    yield path
    for p in (path, path + "+"):
        try:
            os.unlink(p)
        except FileNotFoundError:
            pass


@pytest.fixture
def links():
    """Collects links and closes them after the test, even when it fails."""
    opened: list[Link] = []
    yield opened
    for link in reversed(opened):
        link.close()


# -- bad URLs --------------------------------------------------------------------------
@pytest.mark.parametrize("url,message", [
    ("udp://", "expected udp://"),
    ("udp://2000", "expected udp://"),
    ("udp://2000->10.0.0.1", "needs a host"),
    ("udp://2000->10.0.0.1:", "bad destination port"),
    ("udp://2000->10.0.0.1:0", "must not be 0"),
    ("udp://2000->10.0.0.1:70000", "bad destination port"),
    ("udp://x->10.0.0.1:2000", "bad source port"),
    ("udp://2000->[::1:3000", "expected \\[ADDRESS\\]:PORT"),
    ("udp://1->2->10.0.0.1:3", "expected udp://"),
    ("udp://2000->no.such.host.invalid:2000", "cannot resolve destination"),
    ("udp://2000->10.0.0.1:2000{null://}", "takes no nested"),
    ("ptp://", "needs a path"),
    ("ptp:///tmp/" + "x" * 120, "too long"),
    ("tap://", "needs an interface name"),
    ("tap://a-name-far-too-long", "bad interface name"),
    ("tap://t0[offload=maybe]", "offload takes on or off"),
    ("tap://t0[bogus]", "unknown option 'bogus'"),
    ("tap://t0[offload", "unbalanced brackets"),
    ("null://something", "takes no arguments"),
    ("stdio://3", "takes no arguments"),
    ("fd://", "expected fd://"),
    ("fd://x", "expected fd://"),
    ("fd://1,2,3", "expected fd://"),
    ("cmd://", "empty command"),
    ("cmd://\"python3", "unterminated quote"),
    ("pcap:///tmp/x.pcap", "needs a nested link"),
    ("pcap://{null://}", "needs a file name"),
])
def test_bad_urls_raise_urlerror(url: str, message: str) -> None:
    with pytest.raises(URLError, match=message) as info:
        open_link(url)
    assert "\n" not in str(info.value)


def test_fd_url_with_closed_descriptor_is_a_link_error() -> None:
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    with pytest.raises(LinkError, match="not open"):
        open_link(f"fd://{r}")


# -- null:// ---------------------------------------------------------------------------
def test_null_discards_and_never_receives() -> None:
    link = open_link("null://")
    assert isinstance(link, NullLink) and link.url == "null://"
    link.send(frame())
    assert link.sent == 1
    assert not readable(link.fileno())
    link.setblocking(False)
    with pytest.raises(BlockingIOError):
        link.recv()
    link.close()
    with pytest.raises(LinkError):
        link.send(frame())


def test_null_blocking_recv_returns_when_closed() -> None:
    link = open_link("null://")
    outcome: list[BaseException] = []

    def receiver() -> None:
        try:
            link.recv()
        except BaseException as exc:  # noqa: BLE001 - the test inspects it
            outcome.append(exc)

    t = threading.Thread(target=receiver)
    t.start()
    wait_blocked(t, what="recv() to block")
    assert t.is_alive() and not outcome
    link.close()
    t.join(5)
    assert not t.is_alive()
    assert isinstance(outcome[0], LinkError)


# -- pcap:// ---------------------------------------------------------------------------
def test_pcap_url_around_null_records_sent_frames(tmp_path) -> None:
    path = tmp_path / "null.pcap"
    link = open_link(f"pcap://{path}{{null://}}")
    assert isinstance(link, CaptureLink) and isinstance(link.inner, NullLink)
    assert link.url == f"pcap://{path}{{null://}}"
    before = time.time()
    sent = [frame(60, 1), frame(1514, 2), frame(14, 3)]
    for f in sent:
        link.send(f)
    link.close()
    assert link.inner.closed
    records = read_pcap(path)
    assert [f for _, f in records] == sent
    assert all(before - 1 <= ts <= time.time() + 1 for ts, _ in records)


def test_pcap_url_quoted_file_name(tmp_path) -> None:
    path = tmp_path / "with space.pcap"
    with open_link(f"pcap://\"{path}\"{{null://}}") as link:
        link.send(frame())
    assert len(read_pcap(path)) == 1


def test_pcap_unwritable_file_closes_inner(tmp_path) -> None:
    with pytest.raises(LinkError, match="cannot create pcap file"):
        open_link(f"pcap://{tmp_path}/no/such/dir/x.pcap{{null://}}")


def test_capture_records_both_directions_of_udp(tmp_path, links) -> None:
    pa, pb = free_udp_port(), free_udp_port()
    a = open_link(f"udp://127.0.0.1:{pa}->127.0.0.1:{pb}")
    links.append(a)
    b = open_link(f"udp://127.0.0.1:{pb}->127.0.0.1:{pa}")
    links.append(b)
    path = tmp_path / "udp.pcap"
    cap = capture(a, path)
    links.insert(0, cap)
    cap.send(frame(100, 1))
    assert recv_within(b) == frame(100, 1)
    b.send(frame(200, 2))
    assert recv_within(cap) == frame(200, 2)
    cap.close()
    assert [f for _, f in read_pcap(path)] == [frame(100, 1), frame(200, 2)]


# -- stream framing --------------------------------------------------------------------
@pytest.fixture
def pipe_link():
    """A StreamLink reading one pipe and writing another; yields (link, feed_fd, drain_fd)."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    link = StreamLink(r1, w2)
    yield link, w1, r2
    link.close()
    for fd in (w1, r2):
        try:
            os.close(fd)
        except OSError:
            pass


def record(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def test_stream_send_writes_one_record(pipe_link) -> None:
    link, _, drain = pipe_link
    link.send(frame(60, 7))
    assert os.read(drain, 1000) == b"\x00\x3c" + frame(60, 7)


def test_stream_reads_exactly_one_record_per_recv(pipe_link) -> None:
    link, feed, _ = pipe_link
    os.write(feed, record(frame(60, 1)) + record(frame(70, 2)) + record(frame(80, 3)))
    assert link.recv() == frame(60, 1)
    # The other records stay in the kernel, so the fd still says "readable".
    assert readable(link.fileno())
    assert link.recv() == frame(70, 2)
    assert readable(link.fileno())
    assert link.recv() == frame(80, 3)
    assert not readable(link.fileno())


def test_stream_skips_zero_length_records(pipe_link) -> None:
    link, feed, _ = pipe_link
    os.write(feed, b"\x00\x00" + record(frame(60, 1)) + b"\x00\x00\x00\x00" + record(frame(61, 2)))
    assert link.recv() == frame(60, 1)
    assert link.recv() == frame(61, 2)


def test_stream_partial_records_nonblocking(pipe_link) -> None:
    link, feed, _ = pipe_link
    link.setblocking(False)
    data = record(frame(100, 9))
    with pytest.raises(BlockingIOError):
        link.recv()
    for i in range(len(data) - 1):
        os.write(feed, data[i:i + 1])
        with pytest.raises(BlockingIOError):
            link.recv()  # the record is not whole yet; what was read is kept
    os.write(feed, data[-1:])
    assert link.recv() == frame(100, 9)


def test_stream_partial_records_blocking(pipe_link) -> None:
    link, feed, _ = pipe_link
    data = record(frame(1514, 4)) + record(frame(60, 5))

    def dribble() -> None:
        for i in range(0, len(data), 333):
            os.write(feed, data[i:i + 333])
            time.sleep(0.01)

    t = threading.Thread(target=dribble)
    t.start()
    assert link.recv() == frame(1514, 4)
    assert link.recv() == frame(60, 5)
    t.join()


def test_stream_oversized_record_closes(pipe_link) -> None:
    link, feed, _ = pipe_link
    os.write(feed, struct.pack("!H", MAX_RECORD + 1) + b"x" * 10)
    with pytest.raises(LinkError, match="framing lost"):
        link.recv()
    assert link.closed_by_peer


@pytest.mark.parametrize("tail,where", [(b"", "closed the stream$"),
                                        (b"\x00\x40abc", "in the middle of a record")])
def test_stream_eof_is_peer_gone(pipe_link, tail, where) -> None:
    link, feed, _ = pipe_link
    os.write(feed, record(frame(60, 1)) + tail)
    os.close(feed)
    assert link.recv() == frame(60, 1)
    with pytest.raises(LinkError, match=where):
        link.recv()
    assert link.closed_by_peer


def test_stream_epipe_is_peer_gone(pipe_link) -> None:
    link, _, drain = pipe_link
    os.close(drain)
    with pytest.raises(LinkError, match="peer closed"):
        link.send(frame())
    assert link.closed_by_peer


def test_stream_full_nonblocking_pipe_drops_whole_frames() -> None:
    r, w = os.pipe()
    os.set_blocking(w, False)
    link = StreamLink(r, w)
    try:
        for _ in range(200):
            link.send(frame(1514))
        assert link.drops > 0
        # Whatever got through is whole records, and nothing else.
        reader = StreamLink(os.dup(r), os.dup(w))
        reader.setblocking(False)
        n = 0
        try:
            while True:
                assert reader.recv() == frame(1514)
                n += 1
        except BlockingIOError:
            pass
        assert n == 200 - link.drops
        reader.close()
    finally:
        link.close()


def test_stream_over_socketpair_both_ways() -> None:
    s1, s2 = socket.socketpair()
    a = open_link(f"fd://{s1.detach()}")
    b = StreamLink(s2.fileno(), s2.fileno(), close_fds=False)
    try:
        sizes = [1, 14, 60, 1514, 9000, MAX_RECORD]
        for i, n in enumerate(sizes):
            a.send(frame(n, i) if n >= 14 else b"z" * n)
        for i, n in enumerate(sizes):
            assert b.recv() == (frame(n, i) if n >= 14 else b"z" * n)
        b.send(frame(99, 1))
        assert recv_within(a) == frame(99, 1)
        a.send(b"y" * (MAX_RECORD + 1))  # a peer would take it as lost framing: dropped
        assert a.drops == 1
    finally:
        a.close()
        b.close()
        s2.close()


def test_fd_url_with_two_descriptors(links) -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    a = open_link(f"fd://{r1},{w2}")
    links.append(a)
    b = open_link(f"fd://{r2},{w1}")
    links.append(b)
    a.send(frame(60, 1))
    assert recv_within(b) == frame(60, 1)
    b.send(frame(61, 2))
    assert recv_within(a) == frame(61, 2)


def test_dpipe_alternate_from_environment(monkeypatch) -> None:
    monkeypatch.delenv("ALTERNATE_STDIN", raising=False)
    monkeypatch.delenv("ALTERNATE_STDOUT", raising=False)
    assert open_dpipe_alternate() is None
    r, w = os.pipe()
    monkeypatch.setenv("ALTERNATE_STDIN", str(r))
    monkeypatch.setenv("ALTERNATE_STDOUT", str(w))
    link = open_dpipe_alternate()
    assert link is not None
    try:
        link.send(frame(60, 3))
        assert recv_within(link) == frame(60, 3)
    finally:
        link.close()


# -- cmd:// ----------------------------------------------------------------------------
ECHO_CHILD = textwrap.dedent("""
    import os, struct, sys
    def read(n):
        buf = b""
        while len(buf) < n:
            chunk = os.read(0, n - len(buf))
            if not chunk:
                sys.exit(0)
            buf += chunk
        return buf
    while True:
        (n,) = struct.unpack("!H", read(2))
        data = read(n)
        # Echo each record split in two writes, plus a zero-length record.
        out = struct.pack("!H", n) + data[::-1]
        os.write(1, out[:3]); os.write(1, out[3:] + b"\\0\\0")
""")


def test_cmd_echo_child(tmp_path) -> None:
    script = tmp_path / "echo.py"
    script.write_text(ECHO_CHILD)
    link = open_link(f"cmd://\"{sys.executable} {script}\"")
    assert isinstance(link, CmdLink)
    try:
        for i, n in enumerate([14, 60, 1514, 9000]):
            link.send(frame(n, i))
            assert recv_within(link) == frame(n, i)[::-1]
        link.setblocking(False)
        with pytest.raises(BlockingIOError):
            link.recv()
    finally:
        link.close()
    assert link.process.returncode == 0  # exited by itself on EOF


def test_cmd_child_exit_is_peer_gone() -> None:
    link = open_link(f"cmd://\"{sys.executable} -c 'import sys; sys.exit(3)'\"")
    try:
        with pytest.raises(LinkError, match="peer closed"):
            recv_within(link)
        assert link.closed_by_peer
    finally:
        link.close()
    assert link.process.returncode == 3


def test_cmd_close_kills_a_stubborn_child() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(60)"
    link = CmdLink([sys.executable, "-c", code], terminate_timeout=0.3)
    try:
        link.wait_readable(5)  # the child has set its handler once it prints
    finally:
        start = time.monotonic()
        link.close()
    assert time.monotonic() - start < 5
    assert link.process.returncode == -signal.SIGKILL


def test_cmd_missing_program() -> None:
    with pytest.raises(LinkError, match="cannot run"):
        open_link("cmd://no-such-program-threadnet")


# -- udp:// ----------------------------------------------------------------------------
@pytest.mark.parametrize("rest,local,remote", [
    ("2000->10.0.0.1:3000", (None, 2000), ("10.0.0.1", 3000)),
    ("10.0.0.2:2000->10.0.0.1:3000", ("10.0.0.2", 2000), ("10.0.0.1", 3000)),
    (":2000->host.example:3000", (None, 2000), ("host.example", 3000)),
    ("[::1]:2000->[fe80::1%eth0]:3000", ("::1", 2000), ("fe80::1%eth0", 3000)),
    ("2000->::1:3000", (None, 2000), ("::1", 3000)),  # vdeplug4's bare form
    ("\"2000->10.0.0.1:3000\"", (None, 2000), ("10.0.0.1", 3000)),
])
def test_udp_url_syntax(rest, local, remote) -> None:
    assert parse_udp("udp://" + rest, rest) == (local, remote)


def test_udp_loopback_pair_and_foreign_senders(links) -> None:
    pa, pb = free_udp_port(), free_udp_port()
    a = open_link(f"udp://127.0.0.1:{pa}->127.0.0.1:{pb}")
    links.append(a)
    # A host name where it resolves to IPv4 first (the link takes the first address).
    first = socket.getaddrinfo("localhost", pa, type=socket.SOCK_DGRAM)[0][0]
    host = "localhost" if first == socket.AF_INET else "127.0.0.1"
    b = open_link(f"udp://{pb}->{host}:{pa}")
    links.append(b)
    assert isinstance(a, UdpLink) and a.local_addr == ("127.0.0.1", pa)
    a.send(frame(60, 1))
    assert recv_within(b) == frame(60, 1)
    b.send(frame(1514, 2))
    assert recv_within(a) == frame(1514, 2)
    # A third party cannot inject frames.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        other.sendto(frame(60, 66), ("127.0.0.1", pa))
    b.send(frame(60, 3))
    assert recv_within(a) == frame(60, 3)
    assert a.foreign == 1
    a.setblocking(False)
    with pytest.raises(BlockingIOError):
        a.recv()


def test_udp_ipv6_loopback(links) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    pa, pb = free_udp_port(), free_udp_port()
    try:
        a = open_link(f"udp://[::1]:{pa}->[::1]:{pb}")
    except LinkError as exc:
        pytest.skip(f"no IPv6 loopback: {exc}")
    links.append(a)
    b = open_link(f"udp://{pb}->::1:{pa}")
    links.append(b)
    a.send(frame(60, 1))
    assert recv_within(b) == frame(60, 1)
    b.send(frame(61, 2))
    assert recv_within(a) == frame(61, 2)


def test_udp_port_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(LinkError, match="cannot bind"):
            open_link(f"udp://127.0.0.1:{port}->127.0.0.1:9")


@needs_vde_plug
def test_udp_interop_with_vde_plug(links) -> None:
    pa, pb = free_udp_port(), free_udp_port()
    ours = open_link(f"udp://127.0.0.1:{pa}->127.0.0.1:{pb}")
    links.append(ours)
    plug = open_link(f"cmd://\"vde_plug udp://127.0.0.1:{pb}->127.0.0.1:{pa}\"")
    links.append(plug)
    # vde_plug binds before its first poll; wait until its port is taken.
    deadline = time.monotonic() + 5
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", pb))
            except OSError:
                break
        assert time.monotonic() < deadline, "vde_plug did not bind its port"
        time.sleep(0.02)
    for i in range(3):
        ours.send(frame(60 + i, i))
        assert recv_within(plug) == frame(60 + i, i)
        plug.send(frame(1514 - i, 10 + i))
        assert recv_within(ours) == frame(1514 - i, 10 + i)


# -- ptp:// ----------------------------------------------------------------------------
def test_ptp_two_ends(sock_path, links) -> None:
    a = open_link(f"ptp://{sock_path}")
    links.append(a)
    assert isinstance(a, PtpLink) and a.role == "first"
    a.send(frame(60, 0))  # nobody there yet: lost, as on an unplugged cable
    assert a.drops == 1
    b = open_link(f"ptp://{sock_path}")
    links.append(b)
    assert b.role == "second"
    assert os.stat(sock_path).st_mode & 0o777 == 0o700
    a.send(frame(60, 1))
    assert recv_within(b) == frame(60, 1)
    b.send(frame(9000, 2))
    assert recv_within(a) == frame(9000, 2)
    with pytest.raises(LinkError, match="already in use") as info:
        open_link(f"ptp://{sock_path}")
    assert info.value.errno == errno.EADDRINUSE
    b.close()
    assert not os.path.exists(sock_path + "+")
    a.close()
    assert not os.path.exists(sock_path)


def test_ptp_reuses_stale_paths(sock_path, links) -> None:
    for p in (sock_path, sock_path + "+"):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        s.bind(p)
        s.close()  # the file stays, nobody listens: stale
    a = open_link(f"ptp://{sock_path}")
    links.append(a)
    assert a.role == "first"
    b = open_link(f"ptp://{sock_path}")
    links.append(b)
    assert b.role == "second"
    b.send(frame(60, 5))
    assert recv_within(a) == frame(60, 5)


def test_ptp_refuses_a_non_socket(sock_path) -> None:
    Path(sock_path).write_text("not a socket")
    with pytest.raises(LinkError, match="not a socket"):
        open_link(f"ptp://{sock_path}")


def test_ptp_drops_foreign_senders_and_survives_peer_restart(sock_path, links) -> None:
    a = open_link(f"ptp://{sock_path}")
    links.append(a)
    b = open_link(f"ptp://{sock_path}")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as intruder:
        intruder.sendto(frame(60, 66), sock_path)
    b.send(frame(60, 1))
    assert recv_within(a) == frame(60, 1)
    assert a.foreign == 1
    b.close()
    b = open_link(f"ptp://{sock_path}")
    links.append(b)
    a.send(frame(60, 2))
    assert recv_within(b) == frame(60, 2)


@needs_vde_plug
@pytest.mark.parametrize("vde_plug_first", [False, True])
def test_ptp_interop_with_vde_plug(sock_path, links, vde_plug_first) -> None:
    plug_url = f"cmd://\"vde_plug ptp://{sock_path}\""
    if vde_plug_first:
        plug = open_link(plug_url)
        links.append(plug)
        wait_for_path(sock_path)
        ours = open_link(f"ptp://{sock_path}")
        links.append(ours)
        assert ours.role == "second"
    else:
        ours = open_link(f"ptp://{sock_path}")
        links.append(ours)
        assert ours.role == "first"
        plug = open_link(plug_url)
        links.append(plug)
        wait_for_path(sock_path + "+")
    for i in range(3):
        ours.send(frame(60 + i, i))
        assert recv_within(plug) == frame(60 + i, i)
        plug.send(frame(1514, 10 + i))
        assert recv_within(ours) == frame(1514, 10 + i)
    assert ours.drops == 0


@needs_vde_plug
def test_ptp_first_end_accepts_a_restarted_vde_plug(sock_path, links) -> None:
    ours = open_link(f"ptp://{sock_path}")
    links.append(ours)
    for i in range(2):
        plug = open_link(f"cmd://\"vde_plug ptp://{sock_path}\"")
        try:
            wait_for_path(sock_path + "+")
            ours.send(frame(60, i))
            assert recv_within(plug) == frame(60, i)
            plug.send(frame(61, i))
            assert recv_within(ours) == frame(61, i)
        finally:
            plug.close()
        assert plug.process.returncode == 0
        assert not os.path.exists(sock_path + "+")


BRIDGE_CHILD = textwrap.dedent("""
    # The middle tool of `dpipe left = this = right`: stdio:// to the left,
    # the ALTERNATE_* descriptors to the right, frames copied both ways.
    import select
    from threadnet.link import open_link
    from threadnet.link.stream import open_dpipe_alternate
    from threadnet.errors import LinkError
    left = open_link("stdio://")
    right = open_dpipe_alternate()
    assert right is not None
    try:
        while True:
            for fd in select.select([left.fileno(), right.fileno()], [], [])[0]:
                src, dst = (left, right) if fd == left.fileno() else (right, left)
                dst.send(src.recv())
    except LinkError:
        pass
""")


@needs_vde_plug
@pytest.mark.skipif(not HAVE_DPIPE, reason="dpipe is not installed")
def test_dpipe_chain_with_stdio_and_alternate(tmp_path, links) -> None:
    """ptp A <-> vde_plug <-dpipe-> python (stdio:// | ALTERNATE_*) <-dpipe-> vde_plug <-> ptp B."""
    tag = uuid.uuid4().hex[:10]
    pa, pb = f"/tmp/tn-{tag}a", f"/tmp/tn-{tag}b"
    script = tmp_path / "bridge.py"
    script.write_text(BRIDGE_CHILD)
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    a = open_link(f"ptp://{pa}")
    links.append(a)
    b = open_link(f"ptp://{pb}")
    links.append(b)
    # Our own process group, so every process dpipe starts can be reaped by it.
    proc = subprocess.Popen(["dpipe", "vde_plug", f"ptp://{pa}", "=", sys.executable, str(script),
                             "=", "vde_plug", f"ptp://{pb}"], env=env, process_group=0)
    try:
        wait_for_path(pa + "+")
        wait_for_path(pb + "+")
        for i in range(3):
            a.send(frame(60, i))
            assert recv_within(b) == frame(60, i)
            b.send(frame(1514, 20 + i))
            assert recv_within(a) == frame(1514, 20 + i)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        for p in (pa + "+", pb + "+"):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass


# -- tap:// ----------------------------------------------------------------------------
def _ip_link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


@pytest.mark.root
def test_tap_create_send_close() -> None:
    if os.geteuid() != 0:
        pytest.skip("tap:// needs root (or CAP_NET_ADMIN) to create an interface")
    if shutil.which("ip") is None or not os.path.exists("/dev/net/tun"):
        pytest.skip("needs iproute2 and /dev/net/tun")
    name = "tntest0"
    if _ip_link_exists(name):
        pytest.skip(f"{name} already exists; not touching it")
    try:
        link = open_link(f"tap://{name}")
        try:
            assert link.ifname == name
            assert _ip_link_exists(name)
            link.send(frame(60, 1))  # interface down: the kernel refuses (EIO), we drop
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
            dropped = link.drops
            link.send(frame(60, 2))
            assert link.drops == dropped
            stats = subprocess.run(["ip", "-s", "-j", "link", "show", name], capture_output=True,
                                   text=True, check=True).stdout
            assert json.loads(stats)[0]["stats64"]["rx"]["packets"] == 1  # the kernel got it
            link.setblocking(False)
            try:
                link.recv()  # nothing, or an IPv6 router solicitation the kernel sent
            except BlockingIOError:
                pass
        finally:
            link.close()
        assert not _ip_link_exists(name)
    finally:
        if _ip_link_exists(name):
            subprocess.run(["ip", "link", "del", name], capture_output=True)


@pytest.mark.root
def test_tap_offload_frames_go_behind_a_virtio_net_header() -> None:
    """``[offload]``: the kernel gets what ``send`` sends (a plain header is added), and
    a reader that is not a stack gets plain frames; ``enable_offload`` turns the tap's TSO
    and checksum features on."""
    if os.geteuid() != 0:
        pytest.skip("tap:// needs root (or CAP_NET_ADMIN) to create an interface")
    name = "tntest1"
    if _ip_link_exists(name):
        pytest.skip(f"{name} already exists; not touching it")
    try:
        link = open_link(f"tap://{name}[offload]")
        try:
            assert link.vnet_hdr and not link.offload
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
            link.send(frame(60, 2))
            stats = subprocess.run(["ip", "-s", "-j", "link", "show", name], capture_output=True,
                                   text=True, check=True).stdout
            assert json.loads(stats)[0]["stats64"]["rx"]["packets"] == 1
            assert link.drops == 0
            link.enable_offload()  # what the kernel then sends: tests/test_stack_offload.py
            assert link.offload
            plain = open_link(f"tap://{name}x")
            try:
                with pytest.raises(LinkError, match="opened without"):
                    plain.enable_offload()
            finally:
                plain.close()
        finally:
            link.close()
    finally:
        for n in (name, name + "x"):
            if _ip_link_exists(n):
                subprocess.run(["ip", "link", "del", n], capture_output=True)


def test_tap_permission_error_message(monkeypatch) -> None:
    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr("threadnet.link.tap.os.open", denied)
    with pytest.raises(LinkError, match=r"tap://x: permission denied opening /dev/net/tun "
                                        r"\(needs root or CAP_NET_ADMIN\)"):
        open_link("tap://x")
