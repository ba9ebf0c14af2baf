"""threadnet without root (issue acceptance 8): an unprivileged user runs ``threadnet
switch``, links, ``threadnet plug``, ``threadnet wirefilter`` and Debian's ``vde_plug`` on
unix sockets only; socket modes, groups and port ACLs behave as vde_switch's do.

Needs root to create the test user (the ``unpriv`` fixture); every process the user
starts is ended by PID at teardown.
"""

from __future__ import annotations

import os
import stat
import subprocess
import textwrap

import pytest

import threadnet

from conftest import need_tool, read_pidfile, run_as, wait_for
from switch_helpers import BROADCAST, Console, Plug, eth, expect, mac

pytestmark = pytest.mark.usefixtures("stop_daemons_first")


def user_env(unpriv: dict) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": unpriv["src"], "HOME": "/tmp"}


def user_popen_kw(unpriv: dict) -> dict:
    """Popen keywords that run a process as the unprivileged user (like ``run_as``)."""
    return {"user": unpriv["uid"], "group": unpriv["gid"], "extra_groups": [],
            "env": user_env(unpriv)}


def user_tn(unpriv: dict, *args: str) -> list[str]:
    return [unpriv["python"], "-m", "threadnet", *args]


@pytest.fixture
def userdir(unpriv, sockdir):
    """A directory owned by the unprivileged user (its switches live inside)."""
    d = os.path.join(sockdir, "u")
    os.mkdir(d)
    os.chown(d, unpriv["uid"], unpriv["gid"])
    os.chmod(d, 0o755)
    return d


@pytest.fixture
def user_switch(unpriv, userdir, procs):
    """Start ``threadnet switch -d`` as the user; returns (dir, mgmt, pid)."""
    names = iter(range(100))

    def start(*extra: str):
        name = f"usw{next(names)}"
        d, mgmt, pidfile = (os.path.join(userdir, name + s) for s in ("", ".mgmt", ".pid"))
        r = run_as(unpriv, user_tn(unpriv, "switch", "-s", d, "-M", mgmt, "-d", "-p", pidfile,
                                   *extra),
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        pid = procs.adopt(read_pidfile(pidfile))
        assert os.stat(f"/proc/{pid}").st_uid == unpriv["uid"]
        return d, mgmt, pid

    return start


def run_user_python(unpriv: dict, code: str, *args: str) -> subprocess.CompletedProcess:
    r = run_as(unpriv, [unpriv["python"], "-c", textwrap.dedent(code), *args],
               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    return r


def mode_of(path: str) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_user_switch_modes_and_links(unpriv, user_switch):
    d, mgmt, _ = user_switch("-m", "0660", "-g", unpriv["group"])
    st = os.stat(os.path.join(d, "ctl"))
    assert stat.S_ISSOCK(st.st_mode)
    assert (mode_of(os.path.join(d, "ctl")), st.st_uid, st.st_gid) == (
        0o660, unpriv["uid"], unpriv["gid"])
    dst = os.stat(d)
    assert (stat.S_IMODE(dst.st_mode), dst.st_uid, dst.st_gid) == (
        0o2770, unpriv["uid"], unpriv["gid"])
    assert mode_of(mgmt) == 0o600  # the console keeps its default
    assert os.stat(mgmt).st_uid == unpriv["uid"]

    # the user opens two links and exchanges frames both ways
    r = run_user_python(unpriv, """
        import os, sys, threadnet
        d = sys.argv[1]
        a = threadnet.open_link("vde://" + d, description="user-a")
        b = threadnet.open_link("vde://" + d, description="user-b")
        ports = sorted(n for n in os.listdir(d) if n != "ctl")
        modes = [oct(os.stat(os.path.join(d, n)).st_mode & 0o7777) for n in ports]
        f1 = bytes.fromhex("ffffffffffff020000000001") + b"\\x88\\xb5" + b"one".ljust(46, b"\\0")
        f2 = bytes.fromhex("020000000001020000000002") + b"\\x88\\xb5" + b"two".ljust(46, b"\\0")
        a.send(f1)
        assert b.wait_readable(5) and b.recv() == f1
        b.send(f2)
        assert a.wait_readable(5) and a.recv() == f2
        print("ok", a.port, b.port, *modes)
    """, d)
    assert r.returncode == 0, r.stderr
    ok, pa, pb, *modes = r.stdout.split()
    assert ok == "ok" and {int(pa), int(pb)} == {1, 2}
    # the port sockets get the switch's mode and group (the switch is not root)
    assert modes == ["0o660", "0o660"]


def test_user_switch_mgmtmode(unpriv, user_switch):
    d, mgmt, _ = user_switch("--mgmtmode", "0660")
    assert mode_of(mgmt) == 0o660
    assert mode_of(os.path.join(d, "ctl")) == 0o600  # -m not given: the default
    assert mode_of(d) == 0o2700
    with Console(mgmt) as con:  # (root) the console answers
        assert con.ok("ds/showinfo") == [f"ctl dir {d}", "std mode 0600"]


def test_user_runs_threadnet_plug_and_vde_plug(unpriv, user_switch, procs):
    need_tool("vde_plug")
    d, mgmt, _ = user_switch("-m", "0660", "-g", unpriv["group"])
    kw = user_popen_kw(unpriv)
    tplug = Plug(procs, f"vde://{d}", "user-tn-plug", popen_kw=kw,
                 prog=user_tn(unpriv, "plug"))
    vplug = Plug(procs, f"vde://{d}", "user-vde-plug", popen_kw=kw)
    with Console(mgmt) as con:
        con.port_of("user-tn-plug")
        con.port_of("user-vde-plug")
        shown = {e for p in con.ports().values() for e in p["endpoints"]}
        assert f"user-vde-plug user={unpriv['user']} pid={vplug.pid}" in shown
        assert "user-tn-plug" in shown
        users = {ln for ln in con.ok("port/print") if "Current User" in ln}
        assert users == {f" Current User: {unpriv['user']} Access Control: (User: NONE - Group: NONE)"}
    with threadnet.open_link(f"vde://{d}", description="root-link") as root_link:
        f1 = eth(BROADCAST, mac(1), b"from threadnet plug")
        tplug.send(f1)
        vplug.expect(f1)
        expect(root_link, f1)
        f2 = eth(mac(1), mac(2), b"vde_plug answers")
        vplug.send(f2)
        tplug.expect(f2)
        f3 = eth(mac(2), mac(3), b"root to the vde_plug")
        root_link.send(f3)
        vplug.expect(f3)
    for p in (tplug, vplug):
        assert p.proc.poll() is None  # both still running as the user
        assert os.stat(f"/proc/{p.pid}").st_uid == unpriv["uid"]


def test_user_wirefilter_between_user_switches(unpriv, user_switch, userdir, procs):
    d1, _, _ = user_switch()
    d2, _, _ = user_switch()
    pidfile = os.path.join(userdir, "wf.pid")
    r = run_as(unpriv, user_tn(unpriv, "wirefilter", "-v", f"{d1}:{d2}", "--daemon",
                               "--pidfile", pidfile),
               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    wf = procs.adopt(read_pidfile(pidfile))
    assert os.stat(f"/proc/{wf}").st_uid == unpriv["uid"]
    with threadnet.open_link(f"vde://{d1}", description="left") as left, \
            threadnet.open_link(f"vde://{d2}", description="right") as right:
        f1 = eth(BROADCAST, mac(1), b"across the wirefilter")
        left.send(f1)
        expect(right, f1)
        f2 = eth(mac(1), mac(2), b"and back")
        right.send(f2)
        expect(left, f2)


def test_port_acl_refuses_the_user_but_not_root(unpriv, user_switch):
    d, mgmt, _ = user_switch("-m", "0660", "-g", unpriv["group"])
    with Console(mgmt) as con:
        con.ok("port/create 5")
        con.ok("port/setuser 5 root")
    r = run_user_python(unpriv, """
        import sys, threadnet
        from threadnet.errors import LinkError
        try:
            threadnet.open_link("vde://" + sys.argv[1] + "[5]")
        except LinkError as exc:
            print("refused:", exc)
        else:
            print("attached")
        link = threadnet.open_link("vde://" + sys.argv[1])  # any other port is fine
        print("port", link.port)
    """, d)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("refused:") and d in lines[0], r.stdout
    assert lines[1] == "port 1"
    with threadnet.open_link(f"vde://{d}[5]", description="root-on-5") as lnk:
        assert lnk.port == 5
    # and a port of the user's own: set to the user, it may attach
    with Console(mgmt) as con:
        con.ok("port/create 6")
        con.ok(f"port/setuser 6 {unpriv['user']}")
        con.ok("port/create 7")
        con.ok(f"port/setgroup 7 {unpriv['group']}")
    r = run_user_python(unpriv, """
        import sys, threadnet
        print(*(threadnet.open_link("vde://" + sys.argv[1] + f"[{n}]").port for n in (6, 7)))
    """, d)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["6", "7"]


def test_root_switch_is_closed_to_the_user(unpriv, fg_switch):
    d, _, _ = fg_switch("threadnet")  # root's, default mode 0600 (dir 02700)
    assert mode_of(d) == 0o2700 and mode_of(os.path.join(d, "ctl")) == 0o600
    r = run_user_python(unpriv, """
        import sys, threadnet
        try:
            threadnet.open_link("vde://" + sys.argv[1])
        except (PermissionError, OSError) as exc:
            print(type(exc).__name__, exc.errno, exc)
    """, d)
    assert r.returncode == 0, r.stderr
    name, err, *msg = r.stdout.split()
    assert name in ("LinkError", "PermissionError")
    assert int(err) == 13  # EACCES
    assert "permission" in " ".join(msg).lower() and d in " ".join(msg)


def test_root_switch_with_group_mode_admits_the_group(unpriv, fg_switch):
    """``-m 0660 -g GROUP`` on root's switch lets the group's members in."""
    d, mgmt, _ = fg_switch("threadnet", "-m", "0660", "-g", unpriv["group"])
    r = run_user_python(unpriv, """
        import sys, threadnet
        print(threadnet.open_link("vde://" + sys.argv[1], description="guest").port)
    """, d)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    with Console(mgmt) as con:
        wait_for(lambda: con.run("port/print 1")[0] == 6, what="the guest's port freed")
