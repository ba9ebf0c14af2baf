"""Published stacks under load and abuse (issue 14: S5, R1).

* R1: ``accept`` through a published stack works for every connection, not just the
  first (it used to send its reply twice, so each later call read the previous reply).
* S5: one client cannot starve the others: per-uid quotas on sockets and pending
  resolver calls, with EMFILE/EAGAIN answers instead of silence; resolver calls are
  scheduled fairly between clients and cancelled when their client goes away.
"""

from __future__ import annotations

import json
import os
import pwd
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from types import SimpleNamespace

import pytest

import threadnet
from threadnet import Stack
from threadnet.hook import uninstall_hook
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import need_root, run_as, threadnet_cmd, threadnet_env, wait_for
from stack_helpers import serve_echo

HERE, PEER = "10.33.0.1", "10.33.0.2"


@pytest.fixture
def lan(sockdir):
    """Stack P (published by this process at ``path``) and a peer stack on one switch."""
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-published")
    p = Stack(f"eth,ip={HERE}/24", link=f"vde://{sw.directory}", runner=runner, name="P")
    peer = Stack(f"eth,ip={PEER}/24", link=f"vde://{sw.directory}", runner=runner, name="peer")
    path = os.path.join(sockdir, "P")
    try:
        yield SimpleNamespace(stack=p, peer=peer, path=path, runner=runner, dir=sw.directory)
    finally:
        p.close()
        peer.close()
        runner.stop()
        sw.close()
        uninstall_hook()
        threadnet.set_default_stack(None, scope="process")


# -- R1 ------------------------------------------------------------------------------------------
def _echo_roundtrip(peer: Stack, port: int, payload: bytes) -> bytes:
    from threadnet.stack.socket import create_connection

    with create_connection(peer, (HERE, port), timeout=10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        got = b""
        while d := c.recv(65536):
            got += d
        return got


def test_accept_many_connections_through_a_published_stack(lan):
    lan.stack.publish(lan.path, mode=0o600)
    lst = threadnet.msocket(lan.path, socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("", 8000))
    lst.listen(64)
    lst.settimeout(10)
    serve_echo(lst)  # one accept loop, a thread per connection
    # 50 in sequence: every accept gets its own connection (it used to get the previous
    # reply: the second accept already failed)
    for i in range(50):
        msg = f"sequential {i}".encode()
        assert _echo_roundtrip(lan.peer, 8000, msg) == msg
    # 40 at once, from 8 threads
    errors: list[BaseException] = []

    def client(k: int) -> None:
        try:
            for j in range(5):
                msg = f"concurrent {k}.{j}".encode() * 100
                assert _echo_roundtrip(lan.peer, 8000, msg) == msg
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    lst.close()


def test_threadnet_run_http_server_answers_every_request(lan, procs, sockdir):
    """``threadnet run --stack P -- python -m http.server``: 20 of 20 requests answered
    (it used to answer 1)."""
    lan.stack.publish(lan.path, mode=0o600)
    www = os.path.join(sockdir, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("every time\n")
    procs.popen(threadnet_cmd("run", "--stack", lan.path, "--", sys.executable, "-m",
                              "http.server", "8080", "--directory", www),
                env=threadnet_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def fetch() -> bytes | None:
        with threadnet.use(lan.peer):
            try:
                with urllib.request.urlopen(f"http://{HERE}:8080/", timeout=5) as resp:
                    return resp.read()
            except OSError:
                return None

    assert wait_for(fetch, timeout=30, interval=0.3, what="http.server up") == b"every time\n"
    answered = sum(fetch() == b"every time\n" for _ in range(20))
    assert answered == 20


# -- S5 ------------------------------------------------------------------------------------------
SECOND_USER = "tnuser2"


@pytest.fixture(scope="module")
def two_users(unpriv):
    """The conftest's unprivileged user and a second one (created if missing, and left,
    as the conftest leaves its own)."""
    need_root("creating a second unprivileged test user")
    try:
        pw = pwd.getpwnam(SECOND_USER)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", SECOND_USER],
                       check=True)
        pw = pwd.getpwnam(SECOND_USER)
    second = dict(unpriv, user=pw.pw_name, uid=pw.pw_uid, gid=pw.pw_gid)
    return unpriv, second


#: run as user A: open sockets until the stack says no, then flood its resolver with slow
#: calls on one raw control connection (pipelined, as a misbehaving client would), report,
#: and hold everything open until its stdin closes
ABUSER = r"""
import errno, json, socket, sys, threading, threadnet
path, n_calls = sys.argv[1], int(sys.argv[2])
socks, err = [], None
for _ in range(300):
    try:
        socks.append(threadnet.msocket(path, socket.AF_INET, socket.SOCK_STREAM))
    except OSError as exc:
        err = exc.errno
        break
for s in socks[len(socks) // 2:]:
    s.close()  # room for the control connection below
del socks[len(socks) // 2:]
ctl = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
ctl.connect(path)
req = json.dumps({"op": "call", "name": "getaddrinfo",
                  "args": ["slow.example", 80, 0, 1, 0, 0]}).encode()
replies = []
def read():
    ctl.settimeout(3)
    try:
        while True:
            replies.append(json.loads(ctl.recv(70000)))
    except OSError:
        pass
reader = threading.Thread(target=read)
reader.start()
for _ in range(n_calls):
    ctl.send(req)
reader.join()
eagain = sum(1 for r in replies if r.get("errno") == errno.EAGAIN)
print(json.dumps({"opened": len(socks) * 2, "err": err, "replies": len(replies),
                  "eagain": eagain}), flush=True)
sys.stdin.read()
"""

#: run as user B while A misbehaves: a resolver call, then sockets that work
VICTIM = r"""
import json, socket, sys, time, threadnet
path, peer = sys.argv[1], sys.argv[2]
from threadnet.stack.remote import RemoteStack
stack = RemoteStack(path)
t0 = time.monotonic()
addrs = stack.getaddrinfo("localhost", 80, socket.AF_INET, socket.SOCK_STREAM)
resolved = time.monotonic() - t0
echoed = 0
socks = []
for i in range(10):
    s = threadnet.msocket(path, socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(10)
    s.connect((peer, 7))
    s.sendall(b"hello %d" % i)
    if s.recv(100) == b"hello %d" % i:
        echoed += 1
    socks.append(s)
print(json.dumps({"resolved": resolved, "addr": addrs[0][4][0], "echoed": echoed}), flush=True)
"""


def test_one_client_cannot_starve_another(lan, two_users, procs, sockdir):
    need_root()
    user_a, user_b = two_users
    stack, peer = lan.stack, lan.peer
    # DNS goes to the peer, where a socket takes the queries and never answers: every
    # lookup of a name that is not local waits 30 s
    sink = peer.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("", 53))
    stack.resolver.resolv_conf(f"nameserver {PEER}\noptions timeout:30 attempts:1\n")
    echo = peer.socket()
    echo.bind(("", 7))
    echo.listen(64)
    serve_echo(echo)
    threads_before = threading.active_count()
    pub = stack.publish(lan.path, mode=0o666, max_sockets=40, max_pending=4)
    os.chmod(sockdir, 0o755)
    scripts = {}
    for name, code in (("abuser", ABUSER), ("victim", VICTIM)):
        scripts[name] = os.path.join(sockdir, f"{name}.py")
        with open(scripts[name], "w") as f:
            f.write(textwrap.dedent(code))
        os.chmod(scripts[name], 0o644)
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "PYTHONPATH": user_a["src"], "HOME": "/tmp"}
    abuser = procs.popen([user_a["python"], scripts["abuser"], lan.path, "400"],
                         user=user_a["uid"], group=user_a["gid"], extra_groups=[], env=env,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    line = abuser.stdout.readline()
    assert line, "the abusing client died"
    a = json.loads(line)
    usage = pub.usage().get(user_a["uid"], {})
    # B, another user, is served as if A were not there
    t0 = time.monotonic()
    r = run_as(user_b, [user_b["python"], scripts["victim"], lan.path, PEER],
               stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=40)
    assert r.returncode == 0, r.stderr
    b = json.loads(r.stdout)
    assert b["addr"] == "127.0.0.1" and b["resolved"] < 5, b
    assert b["echoed"] == 10, b
    assert time.monotonic() - t0 < 30
    # A hit its socket quota with a clear EMFILE, and 4 calls were queued: the rest of
    # the 400 were refused with EAGAIN at once (not queued without limit)
    assert a["err"] == 24 and a["opened"] <= 40, a  # EMFILE
    assert a["eagain"] >= 390, a
    assert usage.get("pending") == 4, usage
    # A goes away: its queued calls are dropped and its running ones cancelled (they do
    # not wait out their 30 s), its sockets closed; the worker threads end
    abuser.stdin.close()
    abuser.wait(10)
    wait_for(lambda: not pub.usage(), timeout=5, what=f"A's work and sockets gone: {pub.usage()}")
    wait_for(lambda: threading.active_count() <= threads_before, timeout=5,
             what="worker threads ended")
    sink.close()
    echo.close()


def test_quota_errors_are_clear_for_one_process(lan, sockdir):
    """Same uid, in-process: the socket quota gives EMFILE, and closing gives the room
    back; a stack publishes with sane defaults."""
    pub = lan.stack.publish(lan.path, mode=0o600, max_sockets=5)
    socks = [threadnet.msocket(lan.path, socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5)]
    with pytest.raises(OSError) as info:
        threadnet.msocket(lan.path, socket.AF_INET, socket.SOCK_DGRAM)
    assert info.value.errno == 24 and "max_sockets=5" in str(info.value)
    socks.pop().close()
    wait_for(lambda: pub.usage()[os.getuid()]["sockets"] == 4, what="the socket's quota back")
    socks.append(threadnet.msocket(lan.path, socket.AF_INET, socket.SOCK_DGRAM))
    for s in socks:
        s.close()
    wait_for(lambda: not pub.usage(), what="every socket closed")
    with pytest.raises(ValueError):
        lan.stack.publish(lan.path + "2", max_pending=0)
    pub2 = lan.stack.publish(lan.path + "3")
    assert 16 <= pub2.max_sockets <= 1024 and pub2.max_pending == 16


def test_threadnet_stack_quota_options(lan, procs, sockdir):
    path = os.path.join(sockdir, "svc")
    pidfile = os.path.join(sockdir, "svc.pid")
    procs.daemon(threadnet_cmd("stack", path, "--link", f"vde://{lan.dir}", "--config",
                               "eth,ip=10.33.0.5/24", "--max-sockets", "3", "--max-pending", "2",
                               "-d", "-p", pidfile), pidfile, env=threadnet_env())
    socks = [threadnet.msocket(path, socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    with pytest.raises(OSError) as info:
        threadnet.msocket(path, socket.AF_INET, socket.SOCK_DGRAM)
    assert info.value.errno == 24 and "max_sockets=3" in str(info.value)
    for s in socks:
        s.close()
    r = subprocess.run(threadnet_cmd("stack", path + "x", "--link", f"vde://{lan.dir}",
                                     "--max-pending", "0"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=30)
    assert r.returncode == 2 and "must be 1 or more" in r.stderr
