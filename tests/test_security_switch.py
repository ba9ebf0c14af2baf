"""Issue 14 (S1, S3, S4, S7): a root switch, its console and its pidfile against another
local user (docs/security.md).

The attacker is the unprivileged test user (``unpriv``/``run_as``); the switch is a
``threadnet switch`` run by root. "User A", whose sockets and ports the attacker goes
after, is ``nobody``. Every process is ended by PID and every file lives in ``sockdir``.
"""

from __future__ import annotations

import os
import pwd
import re
import socket
import stat
import subprocess
import textwrap
import types

import pytest

import threadnet
from threadnet.wire import vde as wire

from conftest import kill_pid, read_pidfile, run_as, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import BROADCAST, Console, eth, mac

NOBODY = pwd.getpwnam("nobody")


def sticky_dir(sockdir: str) -> str:
    """A /tmp-like directory (root's, mode 1777) where the attacker may create entries."""
    t = os.path.join(sockdir, "t")
    os.mkdir(t)
    os.chmod(t, 0o1777)
    return t


def victim_file(sockdir: str, mode: int = 0o644) -> str:
    """A file of root's that nothing should change."""
    v = os.path.join(sockdir, "victim")
    with open(v, "w") as f:
        f.write("precious\n")
    os.chmod(v, mode)
    return v


def assert_untouched(victim: str, mode: int = 0o644) -> None:
    st = os.stat(victim)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode)
    with open(victim) as f:
        assert f.read() == "precious\n"


def run_switch(procs, *args: str, pidfile: str | None = None) -> subprocess.CompletedProcess:
    """``threadnet switch ARGS -d`` as root; a daemon it started anyway is ended later."""
    r = subprocess.run(threadnet_cmd("switch", *args, "-d", *(["-p", pidfile] if pidfile else [])),
                       env=threadnet_env(), stdin=subprocess.DEVNULL, capture_output=True,
                       text=True, timeout=30)
    if r.returncode == 0 and pidfile:
        procs.adopt(read_pidfile(pidfile))
    return r


# -- the path checker --------------------------------------------------------------------
def test_path_checker_rules(sockdir):
    from threadnet import fsafe

    root = os.path.join(sockdir, "c")
    os.mkdir(root, 0o755)
    # a sticky world-writable ancestor is fine, a plain world- or group-writable one is not
    t = os.path.join(root, "sticky")
    os.mkdir(t)
    os.chmod(t, 0o1777)
    assert fsafe.check_dir_chain(t) == t
    for mode in (0o777, 0o775):
        os.chmod(root, mode)
        with pytest.raises(fsafe.UnsafePathError, match="writable by"):
            fsafe.check_dir_chain(t)
    os.chown(root, -1, 12345)
    assert fsafe.check_dir_chain(t, group_ok={12345}) == t  # writable only by a given group
    with pytest.raises(fsafe.UnsafePathError, match="writable by"):
        fsafe.check_dir_chain(t, group_ok={12346})
    os.chmod(root, 0o755)
    # someone else's directory, or someone else's symbolic link, on the way
    theirs = os.path.join(t, "theirs")
    os.mkdir(theirs)
    os.chown(theirs, NOBODY.pw_uid, -1)
    with pytest.raises(fsafe.UnsafePathError, match=f"owned by uid {NOBODY.pw_uid}"):
        fsafe.check_dir_chain(os.path.join(theirs, "."))
    link = os.path.join(t, "link")
    os.symlink(root, link)
    assert fsafe.check_dir_chain(os.path.join(link, "sticky")) == t  # root's link: followed
    os.chown(link, NOBODY.pw_uid, -1, follow_symlinks=False)
    with pytest.raises(fsafe.UnsafePathError, match="symbolic link owned by uid"):
        fsafe.check_dir_chain(os.path.join(link, "sticky"))

    # the service's own directory: ours, not a link, group-writable only for a given group
    fd, made = fsafe.open_private_dir(os.path.join(t, "mine"))
    os.close(fd)
    assert made
    fd, made = fsafe.open_private_dir(os.path.join(t, "mine"))
    os.close(fd)
    assert not made
    with pytest.raises(fsafe.UnsafePathError, match="belongs to uid"):
        fsafe.open_private_dir(theirs)
    os.symlink(t, os.path.join(root, "sticky-link"))
    with pytest.raises(fsafe.UnsafePathError, match="is a symbolic link"):
        fsafe.open_private_dir(os.path.join(root, "sticky-link"))
    shared = os.path.join(t, "shared")
    os.mkdir(shared)
    os.chmod(shared, 0o2770)
    os.chown(shared, -1, 12345)
    with pytest.raises(fsafe.UnsafePathError, match="writable by its group"):
        fsafe.open_private_dir(shared)
    os.close(fsafe.open_private_dir(shared, group_ok={12345})[0])
    os.chmod(shared, 0o1777)
    with pytest.raises(fsafe.UnsafePathError, match="writable by others"):
        fsafe.open_private_dir(shared, group_ok={12345})  # sticky is no excuse for our own dir

    # only a stale socket of ours is removed before binding
    dfd = fsafe.open_dir(root)
    try:
        def put(name: str, make) -> str:
            p = os.path.join(root, name)
            make(p)
            return p

        plain = put("plain", lambda p: open(p, "w").close())
        sym = put("sym", lambda p: os.symlink(plain, p))
        for p in (plain, sym):
            with pytest.raises(FileExistsError, match="not replacing it"):
                fsafe.remove_stale_socket(os.path.basename(p), dfd, p, socket.SOCK_STREAM)
            assert os.path.lexists(p)
        live = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with live, stale, other:
            live.bind(os.path.join(root, "live"))
            live.listen(1)
            stale.bind(os.path.join(root, "stale"))
            other.bind(os.path.join(root, "other"))
            os.chown(os.path.join(root, "other"), NOBODY.pw_uid, -1)
            with pytest.raises(OSError, match="in use by a running server"):
                fsafe.remove_stale_socket("live", dfd, "live", socket.SOCK_STREAM)
            with pytest.raises(fsafe.UnsafePathError, match="not ours"):
                fsafe.remove_stale_socket("other", dfd, "other", socket.SOCK_STREAM)
            fsafe.remove_stale_socket("stale", dfd, "stale", socket.SOCK_STREAM)
            assert not os.path.lexists(os.path.join(root, "stale"))
            assert os.path.exists(os.path.join(root, "live"))
            assert os.path.exists(os.path.join(root, "other"))
    finally:
        os.close(dfd)


# -- S1: the control directory and the console path -------------------------------------
def test_switch_refuses_a_directory_another_user_made(unpriv, sockdir, procs):
    t = sticky_dir(sockdir)
    d = os.path.join(t, "sw")
    run_as(unpriv, ["mkdir", "-m", "0777", d], check=True)
    r = run_switch(procs, "-s", d, pidfile=os.path.join(sockdir, "sw.pid"))
    assert r.returncode == 1, r.stderr
    assert f"unsafe path: {d} belongs to uid {unpriv['uid']}" in r.stderr
    assert os.listdir(d) == []  # no ctl for the attacker to take over
    # the attacker's symbolic link to a directory of root's is no better
    target = os.path.join(sockdir, "rootdir")
    os.mkdir(target, 0o700)
    run_as(unpriv, ["ln", "-s", target, os.path.join(t, "sw2")], check=True)
    r = run_switch(procs, "-s", os.path.join(t, "sw2"), pidfile=os.path.join(sockdir, "sw2.pid"))
    assert r.returncode == 1 and "is a symbolic link" in r.stderr, r.stderr
    assert os.listdir(target) == []
    # a sticky world-writable parent is fine: the switch makes its own directory there
    r = run_switch(procs, "-s", os.path.join(t, "sw3"), pidfile=os.path.join(sockdir, "sw3.pid"))
    assert r.returncode == 0, r.stderr
    st = os.stat(os.path.join(t, "sw3"))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o2700)


def test_console_path_never_removes_or_follows_another_users_file(unpriv, sockdir, procs):
    t = sticky_dir(sockdir)
    victim = victim_file(sockdir, 0o600)
    link = os.path.join(t, "sw.mgmt")
    plain = os.path.join(t, "x.mgmt")
    run_as(unpriv, ["ln", "-s", victim, link], check=True)
    run_as(unpriv, ["touch", plain], check=True)
    for i, mgmt in enumerate((link, plain)):
        r = run_switch(procs, "-s", os.path.join(sockdir, f"sw{i}"), "-M", mgmt,
                       pidfile=os.path.join(sockdir, f"sw{i}.pid"))
        assert r.returncode == 1, r.stderr
        assert f"{mgmt} exists and is" in r.stderr and "not replacing it" in r.stderr
        assert os.lstat(mgmt).st_uid == unpriv["uid"]  # still there, still theirs
    assert stat.S_ISLNK(os.lstat(link).st_mode)
    assert_untouched(victim, 0o600)


def test_port_socket_mode_is_never_set_through_a_link(sockdir, monkeypatch):
    """The attacker swaps a symbolic link in for a port socket between bind and chmod
    (possible in a group-writable switch directory, or one they made): the switch must
    not change the link's target. Made deterministic by doing the swap in bind()."""
    from threadnet.switch import datasock
    from threadnet.switch.server import SwitchServer

    victim = victim_file(sockdir)

    class Swapped(socket.socket):
        def bind(self, addr):  # type: ignore[override]
            super().bind(addr)
            if isinstance(addr, str) and re.fullmatch(r"\d{3}\.\d+", os.path.basename(addr)):
                os.unlink(addr)
                os.symlink(victim, addr)

    shim = types.ModuleType("socket")
    shim.__dict__.update(vars(socket))
    shim.socket = Swapped  # type: ignore[attr-defined]
    monkeypatch.setattr(datasock, "socket", shim)
    d = os.path.join(sockdir, "sw")
    client_path = os.path.join(sockdir, "client")
    with SwitchServer(d, batched=False).start(), \
            socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as client, \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ctl:
        client.bind(client_path)
        os.chown(client_path, NOBODY.pw_uid, -1)  # the switch would chown to its owner
        ctl.settimeout(5)
        ctl.connect(os.path.join(d, "ctl"))
        ctl.sendall(wire.pack_request(client_path, "swapped"))
        answer = ctl.recv(256)
    assert_untouched(victim)
    assert answer == b""  # refused: the port socket is not a socket any more


# -- S3 and S4: who the client is, and whose socket it names ------------------------------
ATTACH = """
    import os, socket, sys
    from threadnet.wire import vde as wire
    d, target, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if target == "own":
        own = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        target = os.path.join(d, ".attacker%d" % os.getpid())
        own.bind(target)
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(5)
    c.connect(os.path.join(d, "ctl"))
    c.sendall(wire.pack_request(target, "attacker", port))
    print("attached" if c.recv(256) else "refused", flush=True)
    sys.stdin.read()  # hold the port until the test is done
    if target.startswith(d):
        os.unlink(target)
"""


class Attacker:
    """The unprivileged user asking the switch for a port, naming ``target``'s socket."""

    def __init__(self, procs, unpriv: dict, d: str, target: str, port: int = 0) -> None:
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": unpriv["src"],
               "HOME": "/tmp"}
        self.proc = procs.popen([unpriv["python"], "-c", textwrap.dedent(ATTACH), d, target,
                                 str(port)], user=unpriv["uid"], group=unpriv["gid"],
                                extra_groups=[], env=env, stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)
        self.answer = self.proc.stdout.readline().strip()

    def done(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(10)


def socket_of_user_a(sockdir: str, mode: int) -> socket.socket:
    """A datagram socket of user A's (nobody) in a directory of A's."""
    home = os.path.join(sockdir, "a")
    os.mkdir(home, 0o711)
    os.chown(home, NOBODY.pw_uid, NOBODY.pw_gid)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = os.path.join(home, "a.sock")
    s.bind(path)
    os.chown(path, NOBODY.pw_uid, NOBODY.pw_gid)
    os.chmod(path, mode)
    s.setblocking(False)
    return s


def assert_nothing_delivered(d: str, sock: socket.socket) -> None:
    with threadnet.open_link(f"vde://{d}", description="root-sender") as lnk:
        lnk.send(eth(BROADCAST, mac(7), b"for the ports of this switch"))
        lnk.send(eth(BROADCAST, mac(7), b"tagged?"))
        import select

        assert select.select([sock], [], [], 0.5)[0] == [], "a frame reached user A's socket"


def test_port_acl_uses_the_connection_not_the_path(unpriv, fg_switch, sockdir, procs):
    d, mgmt, _ = fg_switch("threadnet", "-m", "0660", "-g", unpriv["group"])
    with Console(mgmt) as con:
        con.ok("port/create 5")
        con.ok(f"port/setuser 5 {NOBODY.pw_name}")
    a = socket_of_user_a(sockdir, 0o666)
    with a:
        # naming A's socket makes the attacker no more A than naming their own does
        for target in (a.getsockname(), "own"):
            att = Attacker(procs, unpriv, d, target, 5)
            try:
                assert att.answer == "refused", (target, att.answer)
                with Console(mgmt) as con:
                    assert con.ports().get(5, {"endpoints": []})["endpoints"] == []
                assert_nothing_delivered(d, a)
            finally:
                att.done()
        # with a port of no ACL and a socket of their own, the same user gets in
        att = Attacker(procs, unpriv, d, "own", 6)
        try:
            assert att.answer == "attached"
            with Console(mgmt) as con:
                assert con.ports()[6]["endpoints"] == ["attacker"]
        finally:
            att.done()


def test_root_switch_will_not_connect_to_another_users_socket(unpriv, fg_switch, sockdir,
                                                              procs):
    d, mgmt, _ = fg_switch("threadnet", "-m", "0660", "-g", unpriv["group"])
    a = socket_of_user_a(sockdir, 0o600)  # private: only A (and root) may send to it
    with a:
        att = Attacker(procs, unpriv, d, a.getsockname())
        try:
            assert att.answer == "refused"
            with Console(mgmt) as con:
                assert all(p["endpoints"] == [] for p in con.ports().values())
            assert_nothing_delivered(d, a)
        finally:
            att.done()
        # a root client may name any socket (vde_plug2tap and friends run as root)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as ctl:
            ctl.settimeout(5)
            ctl.connect(os.path.join(d, "ctl"))
            ctl.sendall(wire.pack_request(a.getsockname(), "root for A"))
            assert ctl.recv(256) != b""
            with threadnet.open_link(f"vde://{d}", description="root-sender") as lnk:
                frame = eth(BROADCAST, mac(8), b"to A, on root's say-so")
                lnk.send(frame)
                a.setblocking(True)
                a.settimeout(3)
                assert a.recv(2048) == frame


# -- S7: pidfiles -------------------------------------------------------------------------
def test_pidfile_symlink_is_not_followed(unpriv, sockdir, procs):
    t = sticky_dir(sockdir)
    victim = victim_file(sockdir)
    pidfile = os.path.join(t, "sw.pid")
    run_as(unpriv, ["ln", "-s", victim, pidfile], check=True)
    r = run_switch(procs, "-s", os.path.join(sockdir, "sw"), pidfile=pidfile)
    if r.returncode == 0:  # the old code wrote through the link: end that daemon too
        procs.adopt(read_pidfile(victim))
    assert r.returncode == 1
    assert f"pidfile {pidfile} is a symbolic link" in r.stderr
    assert_untouched(victim)
    assert os.readlink(pidfile) == victim
    assert not os.path.exists(os.path.join(sockdir, "sw")), "refused before making the switch"
    # `threadnet down` reads it without following the link, and leaves both alone
    r = subprocess.run(threadnet_cmd("down", "-s", os.path.join(t, "sw")), capture_output=True,
                       text=True, env=threadnet_env(), timeout=30)
    assert r.returncode == 1
    assert "symbolic link" in r.stderr
    assert_untouched(victim)
    assert os.readlink(pidfile) == victim


def test_pidfile_of_a_running_daemon_is_kept(threadnet_switch, sockdir, procs):
    d, _, pid = threadnet_switch()
    pidfile = d + ".pid"
    r = run_switch(procs, "-s", os.path.join(sockdir, "second"), pidfile=pidfile)
    assert r.returncode == 1
    assert f"already running (pid {pid})" in r.stderr
    assert read_pidfile(pidfile) == pid
    assert not os.path.exists(os.path.join(sockdir, "second")), "refused before making the switch"


def test_a_late_exit_keeps_the_successors_pidfile(threadnet_switch, sockdir, procs):
    d, _, first = threadnet_switch()
    pidfile = d + ".pid"
    os.unlink(pidfile)  # say, removed by hand while the first one hangs on
    r = run_switch(procs, "-s", os.path.join(sockdir, "second"), pidfile=pidfile)
    assert r.returncode == 0, r.stderr
    second = read_pidfile(pidfile)
    assert second != first
    kill_pid(first)  # returns once it has exited (atexit handlers done)
    assert read_pidfile(pidfile, timeout=0.5) == second
    # and a stale pidfile (its process gone) is replaced without fuss
    kill_pid(second)
    wait_for(lambda: not os.path.exists(pidfile), what="the second switch's pidfile removed")
    with open(pidfile, "w") as f:
        f.write(f"{second}\n")
    r = run_switch(procs, "-s", os.path.join(sockdir, "third"), pidfile=pidfile)
    assert r.returncode == 0, r.stderr
    assert read_pidfile(pidfile) not in (first, second)


def test_published_stack_path_is_bound_safely(unpriv, sockdir):
    """``_bind_listener`` (``threadnet stack PATH``, ``stack.publish``) refuses a parent
    another user can change, and never replaces or follows what another user put there."""
    from threadnet.fsafe import UnsafePathError
    from threadnet.stack.publication import _bind_listener

    hostile = os.path.join(sockdir, "h")
    os.mkdir(hostile)
    os.chmod(hostile, 0o777)  # anyone could swap a link in for the temporary socket
    with pytest.raises(UnsafePathError, match="writable by group and others"):
        _bind_listener(os.path.join(hostile, "stack"), 0o660, None)
    assert os.listdir(hostile) == []
    t = sticky_dir(sockdir)
    victim = victim_file(sockdir)
    link = os.path.join(t, "link")
    run_as(unpriv, ["ln", "-s", victim, link], check=True)
    with pytest.raises(FileExistsError, match="is a symbolic link; not replacing it"):
        _bind_listener(link, 0o660, None)
    assert os.readlink(link) == victim
    assert_untouched(victim)
    path = os.path.join(t, "stack")
    s = _bind_listener(path, 0o640, unpriv["gid"])
    with s:
        st = os.lstat(path)
        assert (stat.S_ISSOCK(st.st_mode), stat.S_IMODE(st.st_mode), st.st_gid) == (
            True, 0o640, unpriv["gid"])
        assert sorted(os.listdir(t)) == ["link", "stack"]  # no temporary name left behind
        with pytest.raises(OSError, match="already published|in use"):
            _bind_listener(path, 0o640, None)
    _bind_listener(path, 0o600, None).close()  # a stale socket of ours is replaced
