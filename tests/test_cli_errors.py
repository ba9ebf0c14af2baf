"""Failures of the command line are one clear line on stderr, never a traceback
(issue 9 f), and a failed start leaves no socket file behind."""

from __future__ import annotations

import errno
import logging
import os
import socket
import subprocess

import pytest

from conftest import run_as, threadnet_cmd, threadnet_env, wait_for

NO_GROUP = "tn-no-such-group"


def run(*args: str, stdin=subprocess.DEVNULL, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(threadnet_cmd(*args), env=threadnet_env(), stdin=stdin,
                          capture_output=True, text=True, timeout=timeout)


def one_line(r: subprocess.CompletedProcess, *needles: str, rc: tuple[int, ...] = (1, 2)) -> str:
    err = r.stderr.strip()
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    assert r.returncode in rc, (r.returncode, err)
    for n in needles:
        assert n in err, err
    return err


@pytest.mark.parametrize("cmd", ["stack", "run"])
def test_config_a_dhcp_server_that_cannot_start(sockdir, cmd):
    """``dhcpd`` on an interface without an IPv4 address: one line naming why."""
    if cmd == "stack":
        r = run("stack", os.path.join(sockdir, "s"), "--link", "null://", "--config", "eth,dhcpd")
    else:
        r = run("run", "--link", "null://", "--config", "eth,dhcpd", "--", "python3", "-c", "1")
    one_line(r, "dhcpd on eth0", "no IPv4 address", rc=(1,))
    assert os.listdir(sockdir) == []


def test_config_dhcp_runs_the_program():
    """``dhcp`` is implemented (issue 10): the program runs while the client asks."""
    r = run("run", "--link", "null://", "--config", "eth,dhcp", "--", "python3", "-c",
            "print('ran')")
    assert r.returncode == 0 and r.stdout.strip() == "ran", r.stderr


def test_stack_unknown_group(sockdir):
    r = run("stack", os.path.join(sockdir, "s"), "--link", "null://", "-g", NO_GROUP)
    one_line(r, NO_GROUP)
    assert os.listdir(sockdir) == []


def test_publish_unknown_group_names_it(sockdir):
    from threadnet import Stack
    from threadnet.errors import UnknownGroupError
    from threadnet.stack.runner import StackRunner

    runner = StackRunner("test-cli-errors")
    s = Stack("eth,ip=10.0.0.1/24", link="null://", runner=runner)
    try:
        with pytest.raises(UnknownGroupError, match=NO_GROUP) as info:
            s.publish(os.path.join(sockdir, "x"), group=NO_GROUP)
        assert isinstance(info.value, ValueError) and isinstance(info.value, LookupError)
    finally:
        s.close()
        runner.stop()
    assert os.listdir(sockdir) == []


@pytest.mark.parametrize("what", ["missing", "file", "dir", "dead", "dgram"])
def test_run_stack_path_that_is_not_a_stack(sockdir, what):
    path = os.path.join(sockdir, "p")
    keep = None
    if what == "file":
        open(path, "w").close()
    elif what == "dir":
        os.mkdir(path)
    elif what in ("dead", "dgram"):
        kind = socket.SOCK_SEQPACKET if what == "dead" else socket.SOCK_DGRAM
        keep = socket.socket(socket.AF_UNIX, kind)
        keep.bind(path)  # bound, not listening (or the wrong type): nobody answers
    try:
        r = run("run", "--stack", path, "--", "python3", "-c", "1")
    finally:
        if keep is not None:
            keep.close()
    err = one_line(r, path)
    assert {"missing": "no stack", "file": "not a stack socket", "dir": "not a stack socket",
            "dead": "no stack is listening", "dgram": "not a stack"}[what] in err


def test_run_stack_without_permission(sockdir, unpriv):
    """A stack the user may not use: the path and the reason, in one line."""
    path = os.path.join(sockdir, "st")
    os.chmod(sockdir, 0o755)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(path)
    srv.listen()
    os.chmod(path, 0o600)
    try:
        r = run_as(unpriv, [unpriv["python"], "-m", "threadnet", "run", "--stack", path, "--",
                            "python3", "-c", "1"],
                   stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60)
    finally:
        srv.close()
    one_line(r, path, "permission")


@pytest.mark.parametrize("what", ["missing", "dead"])
def test_console_names_the_path(sockdir, what):
    path = os.path.join(sockdir, "c.mgmt")
    keep = None
    if what == "dead":
        keep = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        keep.bind(path)
    try:
        r = run("console", path, "help")
    finally:
        if keep is not None:
            keep.close()
    one_line(r, path)


@pytest.mark.parametrize("stdin", ["devnull", "file", "empty-file"])
def test_plug_ends_at_stdin_eof_with_status_0(sockdir, stdin, procs):
    """As vde_plug: EOF on standard input ends the plug, status 0, even when stdin is
    /dev/null or a regular file (which epoll refuses with EPERM)."""
    sw = os.path.join(sockdir, "sw")
    procs.daemon(threadnet_cmd("switch", "-s", sw, "-d", "-p", sw + ".pid"), sw + ".pid",
                 env=threadnet_env())
    if stdin == "devnull":
        f = open(os.devnull, "rb")
    else:
        p = os.path.join(sockdir, "in")
        with open(p, "wb") as w:
            if stdin == "file":  # one whole record: a broadcast frame
                frame = b"\xff" * 6 + b"\x02" + bytes(5) + b"\x88\xb5" + bytes(46)
                w.write(len(frame).to_bytes(2, "big") + frame)
        f = open(p, "rb")
    with f:
        r = run("plug", sw, stdin=f)
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr and "Operation not permitted" not in r.stderr


@pytest.mark.parametrize("cmd", ["switch", "stack"])
def test_failed_mgmtgroup_leaves_nothing(sockdir, cmd):
    base = os.path.join(sockdir, "x")
    if cmd == "switch":
        r = run("switch", "-s", base, "-M", base + ".mgmt", "--mgmtgroup", NO_GROUP,
                "-p", base + ".pid")
    else:
        r = run("stack", base, "--link", "null://", "-M", base + ".mgmt", "--mgmtgroup",
                NO_GROUP, "-p", base + ".pid")
    one_line(r, NO_GROUP)
    assert os.listdir(sockdir) == []


def test_published_stack_internal_error_is_logged_and_reported(sockdir, caplog):
    """A bug in the stack while serving a client: the stack's log has the traceback, the
    client an EIO that names the exception (not a bare ValueError)."""
    from threadnet import Stack
    from threadnet.stack.remote import RemoteStack
    from threadnet.stack.runner import StackRunner

    runner = StackRunner("test-cli-errors")
    s = Stack("eth,ip=10.0.0.1/24", link="null://", runner=runner)
    path = os.path.join(sockdir, "st")
    try:
        s.publish(path)

        def broken() -> str:
            raise RuntimeError("boom in the stack")

        s.gethostname = broken  # type: ignore[method-assign]
        remote = RemoteStack(path)
        try:
            with caplog.at_level(logging.ERROR, logger="threadnet.stack.remote"):
                with pytest.raises(OSError) as info:
                    remote.gethostname()
                wait_for(lambda: caplog.records, what="the log record")
        finally:
            remote.close()
    finally:
        s.close()
        runner.stop()
    assert info.value.errno == errno.EIO
    assert "RuntimeError" in str(info.value) and "boom in the stack" in str(info.value)
    rec = caplog.records[0]
    assert rec.exc_info is not None and rec.exc_info[0] is RuntimeError
