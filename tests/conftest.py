"""Shared fixtures: temporary socket dirs, processes ended by PID, real peers, namespaces.

Everything a test creates (namespaces, taps, processes, socket files) is removed in the
fixture's teardown, even when the test fails.
"""

from __future__ import annotations

import grp
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = str(Path(__file__).resolve().parent.parent / "src")
IS_ROOT = os.geteuid() == 0
_ns_counter = itertools.count()


def threadnet_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for child processes that run threadnet from this checkout."""
    env = dict(os.environ)
    env["PYTHONPATH"] = SRC + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    if extra:
        env.update(extra)
    return env


def threadnet_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "threadnet", *args]


def need_tool(*names: str) -> None:
    for name in names:
        if shutil.which(name) is None:
            pytest.skip(f"{name} is not installed (the README test command installs it)")


def need_root(why: str = "taps and namespaces") -> None:
    if not IS_ROOT:
        pytest.skip(f"needs root for {why}; CI runs the suite as root")


def wait_for(predicate, timeout: float = 5.0, interval: float = 0.02, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def wait_blocked(thread, timeout: float = 5.0, what: str = "the thread to block") -> None:
    """Wait until ``thread`` sleeps in the kernel (a blocking call) with Python code of its
    own on its stack: the condition a short sleep only hopes for."""
    def blocked() -> bool:
        frame = sys._current_frames().get(thread.ident)
        if frame is None or thread.native_id is None:
            return False
        try:
            with open(f"/proc/self/task/{thread.native_id}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        return state == "S"

    wait_for(blocked, timeout, what=what)


def _gone(pid: int) -> bool:
    """True when the process has exited (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def kill_pid(pid: int, timeout: float = 5.0) -> None:
    """End one process by PID: SIGTERM, wait, then SIGKILL."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done == pid:
                return
        except ChildProcessError:
            if _gone(pid):
                return
        time.sleep(0.02)
    try:
        os.kill(pid, signal.SIGKILL)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    except ProcessLookupError:
        pass


def read_pidfile(path: str, timeout: float = 5.0) -> int:
    def get():
        try:
            with open(path) as f:
                text = f.read().strip()
            return int(text) if text else None
        except (OSError, ValueError):
            return None

    return wait_for(get, timeout, what=f"pidfile {path}")


class Processes:
    """Processes started by a test; all are ended by PID at teardown."""

    def __init__(self) -> None:
        self.pids: list[int] = []
        self.popens: list[subprocess.Popen] = []

    def popen(self, cmd: list[str], **kw) -> subprocess.Popen:
        kw.setdefault("stdin", subprocess.DEVNULL)
        p = subprocess.Popen(cmd, **kw)
        self.popens.append(p)
        return p

    def adopt(self, pid: int) -> int:
        self.pids.append(pid)
        return pid

    def daemon(self, cmd: list[str], pidfile: str, env: dict[str, str] | None = None,
               timeout: float = 10.0) -> int:
        """Run a command that daemonizes and writes ``pidfile``; returns the daemon's PID."""
        r = subprocess.run(cmd, env=env, stdin=subprocess.DEVNULL, capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode != 0:
            raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stderr.strip()}")
        return self.adopt(read_pidfile(pidfile))

    def cleanup(self) -> None:
        for p in self.popens:
            if p.poll() is None:
                kill_pid(p.pid)
            for s in (p.stdin, p.stdout, p.stderr):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass
        for pid in self.pids:
            kill_pid(pid)


@pytest.fixture
def procs() -> Iterator[Processes]:
    p = Processes()
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture
def sockdir() -> Iterator[str]:
    """A short temporary directory (unix socket paths must stay under 108 bytes)."""
    d = tempfile.mkdtemp(prefix="tn-", dir="/tmp")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def threadnet_switch(procs: Processes, sockdir: str):
    """Start ``threadnet switch`` (the real CLI, daemonized); returns (dir, mgmt, pid)."""
    n = itertools.count()

    def start(*extra: str, name: str | None = None, env: dict[str, str] | None = None):
        name = name or f"tsw{next(n)}"
        d = os.path.join(sockdir, name)
        mgmt = d + ".mgmt"
        pidfile = d + ".pid"
        pid = procs.daemon(threadnet_cmd("switch", "-s", d, "-M", mgmt, "-d", "-p", pidfile, *extra),
                           pidfile, env=env or threadnet_env())
        return d, mgmt, pid

    return start


@pytest.fixture
def vde_switch(procs: Processes, sockdir: str):
    """Start Debian's ``vde_switch`` daemonized; returns (dir, mgmt, pid)."""
    need_tool("vde_switch")
    n = itertools.count()

    def start(*extra: str, name: str | None = None):
        name = name or f"vsw{next(n)}"
        d = os.path.join(sockdir, name)
        mgmt = d + ".mgmt"
        pidfile = d + ".pid"
        pid = procs.daemon(["vde_switch", "-s", d, "-M", mgmt, "-d", "-p", pidfile, *extra], pidfile)
        wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="vde_switch ctl")
        return d, mgmt, pid

    return start


class Namespaces:
    """Network namespaces made by a test (``ip netns add``), deleted at teardown."""

    def __init__(self) -> None:
        self.names: list[str] = []

    def add(self) -> str:
        name = f"tn{os.getpid()}x{next(_ns_counter)}"
        subprocess.run(["ip", "netns", "add", name], check=True)
        self.names.append(name)
        self.run(name, "ip", "link", "set", "lo", "up")
        return name

    @staticmethod
    def run(ns: str, *cmd: str, check: bool = True, timeout: float = 60, **kw):
        return subprocess.run(["ip", "netns", "exec", ns, *cmd], check=check, timeout=timeout,
                              capture_output=True, text=True, **kw)

    @staticmethod
    def exec_cmd(ns: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", ns, *cmd]

    def cleanup(self) -> None:
        for name in self.names:
            # end whatever still runs inside, by PID, then delete the namespace
            r = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True)
            for line in r.stdout.split():
                if line.isdigit():
                    kill_pid(int(line), timeout=2)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def netns() -> Iterator[Namespaces]:
    need_root("network namespaces")
    need_tool("ip")
    ns = Namespaces()
    try:
        yield ns
    finally:
        ns.cleanup()


UNPRIV_USER = "tnuser"


@pytest.fixture(scope="session")
def unpriv() -> Iterator[dict]:
    """An unprivileged user and a world-readable copy of the source tree for it.

    Returns {"user", "uid", "gid", "group", "src", "python"}. Needs root to create the user.
    """
    need_root("creating an unprivileged test user")
    try:
        pw = pwd.getpwnam(UNPRIV_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", UNPRIV_USER], check=True)
        pw = pwd.getpwnam(UNPRIV_USER)
    src = tempfile.mkdtemp(prefix="tn-src-", dir="/tmp")
    shutil.copytree(SRC, os.path.join(src, "src"), dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    for root, _dirs, files in os.walk(src):
        os.chmod(root, 0o755)
        for f in files:
            os.chmod(os.path.join(root, f), 0o644)
    # Debian's interpreter is readable by everyone (the pyenv one may live under /root).
    python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
    try:
        yield {"user": pw.pw_name, "uid": pw.pw_uid, "gid": pw.pw_gid,
               "group": grp.getgrgid(pw.pw_gid).gr_name, "src": os.path.join(src, "src"),
               "python": python}
    finally:
        shutil.rmtree(src, ignore_errors=True)


def run_as(user: dict, cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """Run ``cmd`` as the unprivileged user, with threadnet from its readable copy."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": user["src"], "HOME": "/tmp"}
    env.update(kw.pop("env", {}))
    return subprocess.run(cmd, user=user["uid"], group=user["gid"], extra_groups=[],
                          env=env, **kw)


class TapNs:
    """A namespace whose tap is joined to a switch by Debian's vde_plug2tap."""

    def __init__(self, ns: str, tap: str, addr: str, mac: str, pid: int) -> None:
        self.ns, self.tap, self.addr, self.mac, self.pid = ns, tap, addr, mac, pid

    def __repr__(self) -> str:
        return f"<TapNs {self.ns} {self.tap} {self.addr} {self.mac} vde_plug2tap={self.pid}>"


@pytest.fixture
def tap_ns(netns: Namespaces, procs: Processes, sockdir: str):
    """Make a namespace with a tap (``addr``/24, up) joined to ``switch_dir`` by Debian's
    ``vde_plug2tap -d -P PIDFILE`` run inside it; returns a TapNs.

    Waits until the switch's console (``switch_dir + ".mgmt"``, both switch fixtures use
    that name) lists the vde_plug2tap endpoint. The tap goes with its namespace; the
    plug is ended by PID (procs) and by the netns fixture.
    """
    import json

    need_tool("vde_plug2tap")
    n = itertools.count()

    def make(switch_dir: str, addr: str, prefix: int = 24) -> TapNs:
        i = next(n)
        ns = netns.add()
        tap = f"tntap{i}"
        netns.run(ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
        netns.run(ns, "ip", "addr", "add", f"{addr}/{prefix}", "dev", tap)
        netns.run(ns, "ip", "link", "set", tap, "up")
        pidfile = os.path.join(sockdir, f"{ns}-p2t.pid")
        pid = procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", switch_dir, "-d", "-P", pidfile,
                                          tap), pidfile)
        info = json.loads(netns.run(ns, "ip", "-j", "link", "show", "dev", tap).stdout)
        mac = info[0]["address"].lower()
        mgmt = switch_dir.rstrip("/") + ".mgmt"
        if os.path.exists(mgmt):
            from threadnet.mgmt.client import ConsoleClient

            def attached() -> bool:
                with ConsoleClient(mgmt) as c:
                    return any(f"pid={pid}" in line for line in c.run("port/print")[1])

            wait_for(attached, what=f"vde_plug2tap pid {pid} on {switch_dir}")
        return TapNs(ns, tap, addr, mac, pid)

    return make


def _not_running(pid: int) -> bool:
    """True when ``pid`` is gone or a zombie (its parent, often PID 1, has yet to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state in ("Z", "X")


@pytest.fixture
def stop_daemons_first(procs: Processes) -> Iterator[Processes]:
    """Request this after the other fixtures: at teardown it ends every daemon of ``procs``
    at once (SIGTERM, then SIGKILL after 5 s), before ``procs``/``netns`` end them one by
    one. Daemons are reparented to PID 1, which reaps them late; ending them in parallel
    turns a second or so per process into about a second in all."""
    yield procs
    pids = list(procs.pids)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not all(_not_running(p) for p in pids):
        time.sleep(0.02)
    for pid in pids:
        if not _not_running(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:  # let PID 1 reap them, so procs' kill_pid returns at once
        if all(not os.path.exists(f"/proc/{p}") for p in pids):
            break
        time.sleep(0.02)


@pytest.fixture
def fg_switch(procs: Processes, sockdir: str):
    """Start ``threadnet switch`` or Debian's ``vde_switch`` in the foreground, as a child of
    the test: ``start("threadnet" | "debian", *extra)`` returns (dir, mgmt, pid).

    Ending a child takes milliseconds, while a daemon waits a second or two for PID 1 to
    reap it; use this where the test is not about daemon mode. stdin is a pipe that stays
    open (vde_switch reads its console there and exits on EOF). Returns once the control
    and console sockets both accept connections.
    """
    import socket

    n = itertools.count()

    def start(kind: str, *extra: str):
        name = f"fg{next(n)}"
        d = os.path.join(sockdir, name)
        mgmt = d + ".mgmt"
        if kind == "threadnet":
            cmd, env = threadnet_cmd("switch", "-s", d, "-M", mgmt, *extra), threadnet_env()
        elif kind == "debian":
            need_tool("vde_switch")
            cmd, env = ["vde_switch", "-s", d, "-M", mgmt, *extra], None
        else:
            raise ValueError(f"unknown switch kind {kind!r}")
        errpath = d + ".stderr"
        with open(errpath, "w") as err:
            p = procs.popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                            env=env)

        def ready() -> bool:
            if p.poll() is not None:
                with open(errpath) as f:
                    raise AssertionError(f"{cmd} exited with {p.returncode}: {f.read().strip()}")
            for path in (os.path.join(d, "ctl"), mgmt):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(path)
                except OSError:
                    return False
                finally:
                    s.close()
            return True

        wait_for(ready, 10, what=f"{kind} switch at {d}")
        return d, mgmt, p.pid

    return start
