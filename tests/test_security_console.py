"""Issue 14 in the consoles: console commands open paths with the rights of the console's
peer (S2), a console that does not read its replies cannot stall the switch (R3), and
pipelined commands run whole and in order (R5).

The S2 tests need root (an unprivileged user in ``--mgmtgroup`` of a root switch); every
process is ended by PID and every file lives in ``sockdir``.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import textwrap
import threading
import time

import pytest

import threadnet
from threadnet.mgmt.client import ConsoleClient
from threadnet.mgmt.commands import CommandTable, add_load_command

from conftest import run_as, wait_for
from switch_helpers import BROADCAST, eth, mac

SECRET = b"root's secret, not a capture\n"


def _read_prompt(s: socket.socket, prompt: bytes = b"vde$ ") -> bytes:
    got = b""
    while not got.endswith(prompt):
        chunk = s.recv(65536)
        assert chunk, f"console closed; got {got!r}"
        got += chunk
    return got


def _connect(path: str, timeout: float = 5.0) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(path)
    except BaseException:
        s.close()
        raise
    return s


def _read_to_eof(s: socket.socket, limit: float = 5.0) -> bytes:
    out = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            return out
        if not chunk:
            return out
        out += chunk
    raise AssertionError(f"no end of session within {limit}s ({len(out)} bytes read)")


@pytest.fixture
def root_only(sockdir):
    """A 0600 root file in a 0700 root directory: (directory, file)."""
    d = os.path.join(sockdir, "rootonly")
    os.mkdir(d, 0o700)
    path = os.path.join(d, "secret")
    with open(path, "wb") as f:
        f.write(SECRET)
    os.chmod(path, 0o600)
    return d, path


@pytest.fixture
def user_dir(unpriv, sockdir):
    d = os.path.join(sockdir, "mine")
    os.mkdir(d, 0o755)
    os.chown(d, unpriv["uid"], unpriv["gid"])
    return d


def _as_user_console(unpriv: dict, mgmt: str, *commands: str) -> list[tuple[int, str]]:
    """Run console commands as the unprivileged user; returns (errno, text) for each."""
    code = textwrap.dedent("""
        import sys
        from threadnet.mgmt.client import ConsoleClient
        with ConsoleClient(sys.argv[1], timeout=10) as c:
            for line in sys.argv[2:]:
                err, _, text = c.run(line)
                print(f"{err}\\t{text}")
    """)
    r = run_as(unpriv, [unpriv["python"], "-c", code, mgmt, *commands],
               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out = []
    for line in r.stdout.splitlines():
        err, _, text = line.partition("\t")
        out.append((int(err), text))
    return out


# -- S2: file-opening commands act with the peer's rights ------------------------------------
def test_switch_console_user_cannot_capture_or_load_as_root(unpriv, threadnet_switch, root_only,
                                                            user_dir, sockdir):
    """A member of a root switch's --mgmtgroup asks for a capture into root's 0600 file and
    for ``load`` of a root-only script: both refused (EACCES), the file untouched, the
    script's commands not run. A capture into the user's own directory works and the file
    is the user's."""
    rdir, secret = root_only
    script = os.path.join(rdir, "vlans.rc")
    with open(script, "w") as f:
        f.write("vlan/create 77\n")
    os.chmod(script, 0o644)  # readable, but its directory is not traversable by the user
    d, mgmt, _ = threadnet_switch("--mgmtmode", "0660", "--mgmtgroup", unpriv["group"])
    wait_for(lambda: os.path.exists(mgmt), what="console socket")
    mine = os.path.join(user_dir, "cap.pcap")
    replies = _as_user_console(unpriv, mgmt, f"port/capture all {secret}", f"load {script}",
                               f"port/capture all {mine}", "port/capture all")
    assert replies[0] == (errno.EACCES, "Permission denied")
    assert replies[1] == (errno.EACCES, "Permission denied")
    assert replies[2] == (0, "Success")
    assert replies[3] == (0, "Success")
    with open(secret, "rb") as f:
        assert f.read() == SECRET
    st = os.stat(secret)
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o600)
    st = os.stat(mine)
    assert (st.st_uid, st.st_gid) == (unpriv["uid"], unpriv["gid"])
    with open(mine, "rb") as f:
        assert f.read(4) == b"\xd4\xc3\xb2\xa1"  # a pcap file, written through the fd
    with ConsoleClient(mgmt) as c:  # the script did not run; root itself may load it
        assert "VLAN 0077" not in "\n".join(c.run("vlan/print")[1])
        assert c.run(f"load {script}")[0] == 0
        assert "VLAN 0077" in "\n".join(c.run("vlan/print")[1])
        # root's own capture still works with root's rights
        assert c.run(f"port/capture all {os.path.join(rdir, 'root.pcap')}")[0] == 0
        assert os.stat(os.path.join(rdir, "root.pcap")).st_uid == 0
        assert c.run("port/capture all")[0] == 0


def test_capture_refuses_fifos_and_keeps_no_stale_hook(sockdir):
    """A capture must be a regular file (a FIFO could block the loop); a refused capture
    leaves the switch without a hook on the closed old writer (frames still flow)."""
    from threadnet.switch.server import SwitchServer

    fifo = os.path.join(sockdir, "cap.fifo")
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # so that the open for writing succeeds
    sw = SwitchServer(os.path.join(sockdir, "sw"), mgmt=os.path.join(sockdir, "sw.mgmt")).start()
    links = []
    try:
        with ConsoleClient(sw.mgmt_path) as c:
            assert c.run(f"port/capture all {os.path.join(sockdir, 'a.pcap')}")[0] == 0
            assert c.run(f"port/capture all {fifo}")[0] == errno.EINVAL
        a = threadnet.open_link(f"vde://{sw.directory}")
        links.append(a)
        b = threadnet.open_link(f"vde://{sw.directory}")
        links.append(b)
        a.send(eth(BROADCAST, mac(1), b"after a refused capture"))
        b.setblocking(True)
        assert b.wait_readable(3)
        assert b.recv()[:6] == BROADCAST
        assert sw._thread is not None and sw._thread.is_alive()
    finally:
        for link in links:
            link.close()
        sw.close()
        os.close(reader)


def test_table_without_caller_refuses_file_commands():
    """Code that runs a table without saying who asked cannot open files through it."""
    t = CommandTable()
    add_load_command(t)
    assert t.run("load /etc/hostname")[0] == errno.EACCES


def test_wirefilter_load_acts_as_the_peer(unpriv, root_only, user_dir):
    """The wirefilter's ``load`` (its one command that opens a path), in-process with the
    unprivileged user as the caller of a root service: root's script is refused, the
    user's own is run."""
    from threadnet.mgmt.commands import Caller
    from threadnet.peer import PeerCred
    from threadnet.wirefilter.app import WireFilter

    rdir, secret = root_only
    peer = Caller(PeerCred(12345, unpriv["uid"], unpriv["gid"]))
    theirs = os.path.join(user_dir, "wf.rc")
    with open(theirs, "w") as f:
        f.write("delay 30\n")
    os.chown(theirs, unpriv["uid"], unpriv["gid"])
    os.chmod(theirs, 0o600)  # only the user (and root) may read it
    wf = WireFilter(threadnet.open_link("null://"), threadnet.open_link("null://"))
    try:
        assert wf.table.run(f"load {secret}", peer)[0] == errno.EACCES
        assert wf.table.run(f"load {theirs}", peer)[0] == 0
        assert any("Delay  L->R 30" in ln for ln in wf.filter.showinfo_lines())
    finally:
        wf.close()


def test_console_handlers_see_the_sessions_peer(unpriv, sockdir):
    """The console (switch, wirefilter and stack all serve tables through ConsoleServer)
    hands each session's SO_PEERCRED credentials to handlers that ask for the caller."""
    from threadnet.loop import EventLoop
    from threadnet.mgmt.console import ConsoleServer

    t = CommandTable()
    t.add("whoami", "", "", lambda a, caller: [f"{caller.cred.uid} {caller.cred.gid}"],
          output=True, with_caller=True)
    loop = EventLoop()
    path = os.path.join(sockdir, "who.mgmt")
    server = ConsoleServer(loop, path, t, "banner\n", "vde$ ", mode=0o666)
    th = threading.Thread(target=loop.run, daemon=True)
    th.start()
    try:
        code = ("import sys\nfrom threadnet.mgmt.client import ConsoleClient\n"
                "print(ConsoleClient(sys.argv[1]).run('whoami')[1][0])")
        r = run_as(unpriv, [unpriv["python"], "-c", code, path], capture_output=True,
                   text=True, timeout=30)
        assert r.stdout.strip() == f"{unpriv['uid']} {unpriv['gid']}", r.stderr
        with ConsoleClient(path) as c:
            assert c.run("whoami")[1] == [f"{os.geteuid()} {os.getegid()}"]
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        th.join(5)
        loop.close()


def test_closing_console_leaves_a_successors_socket(sockdir):
    """A console that stops removes its socket path only while it is still its own: a
    successor's socket (or anything else) that took the path meanwhile stays."""
    from threadnet.loop import EventLoop
    from threadnet.mgmt.console import ConsoleServer

    loop = EventLoop()
    path = os.path.join(sockdir, "c.mgmt")
    first = ConsoleServer(loop, path, CommandTable(), "banner\n", "vde$ ")
    os.unlink(path)  # say, removed by hand while the first one hangs on
    second = ConsoleServer(loop, path, CommandTable(), "banner\n", "vde$ ")
    try:
        first.close()
        assert stat.S_ISSOCK(os.stat(path).st_mode), "the successor's socket was removed"
    finally:
        second.close()
        loop.close()
    assert not os.path.exists(path)


# -- R3: consoles that do not read cannot stall the switch -----------------------------------
def test_unread_consoles_do_not_stall_the_switch(threadnet_switch):
    """20 sessions ask for much output and never read, while frames flow through the
    switch: every frame gets through in time, and those sessions are dropped."""
    d, mgmt, _ = threadnet_switch()
    wait_for(lambda: os.path.exists(mgmt), what="console socket")
    a = threadnet.open_link(f"vde://{d}")
    b = threadnet.open_link(f"vde://{d}")
    hogs: list[socket.socket] = []
    try:
        b.setblocking(False)
        for _ in range(20):
            s = _connect(mgmt)
            hogs.append(s)
            s.sendall(b"help\n" * 2000)  # about 4 MB of replies, none of them read
        sent = 300
        got = 0
        deadline = time.monotonic() + 8
        for i in range(sent):
            a.send(eth(BROADCAST, mac(1), i.to_bytes(4, "big")))
            if i % 10 == 9:
                time.sleep(0.01)
        while got < sent and time.monotonic() < deadline:
            try:
                b.recv()
                got += 1
            except BlockingIOError:
                b.wait_readable(max(0.0, deadline - time.monotonic()))
        assert got == sent, f"{got} of {sent} frames forwarded"
        for s in hogs:  # each was dropped: its end of session came, not 4 MB of replies
            assert len(_read_to_eof(s)) < 4_000_000
        with ConsoleClient(mgmt) as c:  # and the console still serves
            assert c.run("port/showinfo")[0] == 0
    finally:
        for s in hogs:
            s.close()
        a.close()
        b.close()


def test_load_reads_bounded_regular_files_only(threadnet_switch, sockdir):
    """``load`` of a FIFO, /dev/zero, a directory or a file over 1 MiB is refused at once
    (the FIFO once froze the switch, /dev/zero grew it by 330 MB/s); a script that loads
    itself stops at the nesting limit."""
    d, mgmt, _ = threadnet_switch()
    wait_for(lambda: os.path.exists(mgmt), what="console socket")
    fifo = os.path.join(sockdir, "rc.fifo")
    os.mkfifo(fifo)
    big = os.path.join(sockdir, "big.rc")
    with open(big, "w") as f:
        f.write(("# " + "x" * 61 + "\n") * (17 * 1024))  # 1.06 MiB of comments
    loop_rc = os.path.join(sockdir, "loop.rc")
    with open(loop_rc, "w") as f:
        f.write(f"vlan/create 9\nload {loop_rc}\n")
    with ConsoleClient(mgmt, timeout=5) as c:
        started = time.monotonic()
        assert c.run(f"load {fifo}")[0] == errno.EINVAL
        assert c.run("load /dev/zero")[0] == errno.EINVAL
        assert c.run(f"load {sockdir}")[0] == errno.EISDIR
        assert c.run(f"load {big}")[0] == errno.EFBIG
        assert time.monotonic() - started < 3
        assert c.run(f"load {loop_rc}")[0] == errno.EINVAL  # the innermost load failed
        assert "VLAN 0009" in c.run("vlan/print")[1]
        assert c.run("port/showinfo")[0] == 0


def test_own_rc_file_may_be_a_pipe_but_is_bounded(sockdir):
    """The service's own ``-f`` at start may be a pipe (``-f <(...)``), read at most 1 MiB;
    only the console's ``load`` insists on regular files."""
    from threadnet.switch.server import SwitchServer

    r, w = os.pipe()
    try:
        os.write(w, b"vlan/create 4\n")
        os.close(w)
        w = -1
        sw = SwitchServer(os.path.join(sockdir, "sw"), rcfile=f"/proc/self/fd/{r}")
        try:
            assert 4 in sw.switch.vlans
        finally:
            sw.close()
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


# -- R5: input is taken in whole lines ---------------------------------------------------------
def test_pipelined_commands_all_run_whole_and_in_order(threadnet_switch):
    """3,000 ``vlan/create N`` in one sendall: every one runs (reads cut a command in two
    before), each gets its reply in order."""
    d, mgmt, _ = threadnet_switch()
    wait_for(lambda: os.path.exists(mgmt), what="console socket")
    n = 3000
    s = _connect(mgmt, timeout=10)
    try:
        _read_prompt(s)
        s.sendall(b"".join(b"vlan/create %d\n" % v for v in range(1, n + 1)))
        got = b""
        while got.count(b"vde$ ") < n:
            chunk = s.recv(65536)
            assert chunk, "console closed"
            got += chunk
        assert got == b"1000 Success\n\nvde$ " * n
        s.sendall(b"vlan/create 3001\nvlan/create 3001\n")  # the order of replies holds
        got = b""
        while got.count(b"vde$ ") < 2:
            got += s.recv(65536)
        assert got == b"1000 Success\n\nvde$ 1017 File exists\n\nvde$ "
    finally:
        s.close()
    with ConsoleClient(mgmt) as c:
        vlans = [ln for ln in c.run("vlan/print")[1] if ln.startswith("VLAN ")]
    assert vlans == [f"VLAN {v:04d}" for v in range(n + 2)]


def test_overlong_line_ends_the_session(threadnet_switch):
    d, mgmt, _ = threadnet_switch()
    wait_for(lambda: os.path.exists(mgmt), what="console socket")
    s = _connect(mgmt)
    try:
        _read_prompt(s)
        try:
            s.sendall(b"x" * (70 * 1024))
        except (BrokenPipeError, ConnectionResetError):
            pass
        assert _read_to_eof(s) == b"1007 Argument list too long\n"
    finally:
        s.close()
    with ConsoleClient(mgmt) as c:
        assert c.run("port/showinfo")[0] == 0


@pytest.mark.parametrize("kind", ["threadnet", "debian"])
def test_last_line_without_newline_runs_at_end_of_input(kind, threadnet_switch, vde_switch):
    """A client that shuts its side after a command without a newline gets it run, as
    Debian's vde_switch runs it."""
    d, mgmt, _ = (threadnet_switch if kind == "threadnet" else vde_switch)()
    s = wait_for(lambda: _try_connect(mgmt), what="console")
    try:
        _read_prompt(s)
        s.sendall(b"vlan/create 5")
        s.shutdown(socket.SHUT_WR)
        assert _read_to_eof(s).startswith(b"1000 Success\n")
    finally:
        s.close()
    with ConsoleClient(mgmt) as c:
        assert "VLAN 0005" in c.run("vlan/print")[1]


def _try_connect(path: str) -> socket.socket | None:
    try:
        return _connect(path)
    except (FileNotFoundError, ConnectionRefusedError):
        return None
