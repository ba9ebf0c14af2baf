"""`threadnet run` for any program: the seccomp supervisor (threadnet.views; issue 12)."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from threadnet.views import bpf, kernel

from conftest import (
    need_root,
    need_tool,
    read_pidfile,
    run_as,
    threadnet_cmd,
    threadnet_env,
    wait_for,
)

pytestmark = pytest.mark.skipif(kernel.supported() is not None, reason=str(kernel.supported()))


# -- the filter, interpreted -----------------------------------------------------------------------
def test_filter_traps_socket_calls_and_lets_the_data_path_run():
    prog = bpf.build()
    nr = kernel.NR
    notify, allow = kernel.SECCOMP_RET_USER_NOTIF, kernel.SECCOMP_RET_ALLOW
    assert bpf.run(prog, nr["socket"], (2, 1, 0)) == notify  # AF_INET
    assert bpf.run(prog, nr["socket"], (10, 2, 0)) == notify  # AF_INET6
    assert bpf.run(prog, nr["socket"], (16, 3, 0)) == notify  # netlink: the supervisor decides
    assert bpf.run(prog, nr["socket"], (1, 1, 0)) == allow  # AF_UNIX runs as is
    for name in bpf.TRAPPED:
        assert bpf.run(prog, nr[name], (3, 0, 0)) == notify, name
    # send/recv are sendto/recvfrom with a NULL address: not trapped; with one, trapped
    assert bpf.run(prog, nr["sendto"], (3, 0x1000, 10, 0, 0, 0)) == allow
    assert bpf.run(prog, nr["recvfrom"], (3, 0x1000, 10, 0, 0, 0)) == allow
    assert bpf.run(prog, nr["sendto"], (3, 0x1000, 10, 0, 0x7fff00000000, 16)) == notify
    assert bpf.run(prog, nr["recvfrom"], (3, 0x1000, 10, 0, 0x2000, 0x3000)) == notify
    assert bpf.run(prog, nr["ioctl"], (3, 0x8933, 0x1000)) == notify  # SIOCGIFINDEX
    assert bpf.run(prog, nr["ioctl"], (3, 0x89FF)) == notify
    assert bpf.run(prog, nr["ioctl"], (3, 0x890F)) == allow
    assert bpf.run(prog, nr["ioctl"], (3, 0x8A00)) == allow
    assert bpf.run(prog, nr["ioctl"], (3, 0x541B)) == allow  # FIONREAD
    assert bpf.run(prog, 0, (3,)) == allow  # read
    assert bpf.run(prog, 1, (3,)) == allow  # write
    for name in bpf.REFUSED:
        assert bpf.run(prog, nr[name]) == kernel.SECCOMP_RET_ERRNO | errno.ENOSYS
    # another ABI: x32 numbers, or the i386 architecture, kill the process
    assert bpf.run(prog, nr["socket"] | kernel.X32_SYSCALL_BIT) == kernel.SECCOMP_RET_KILL_PROCESS
    assert bpf.run(prog, 0, arch=0x40000003) == kernel.SECCOMP_RET_KILL_PROCESS


# -- real programs on a stack ------------------------------------------------------------------------
@pytest.fixture
def lan(vde_switch, tap_ns, procs):
    """A Debian switch, a kernel namespace on it at 10.31.0.99 running an HTTP server that
    logs its clients."""
    need_root()
    need_tool("curl")
    d, _, _ = vde_switch()
    peer = tap_ns(d, "10.31.0.99")
    return d, peer


def _http_server(netns, procs, peer, sockdir, port=80):
    log = os.path.join(sockdir, "http.log")
    www = os.path.join(sockdir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello from the namespace\n")
    out = open(log, "w")
    procs.popen(netns.exec_cmd(peer.ns, sys.executable, "-m", "http.server", str(port),
                               "--bind", peer.addr, "--directory", www),
                stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: netns.run(peer.ns, "curl", "-s", "-m", "2", f"http://{peer.addr}:{port}/",
                               check=False).returncode == 0, timeout=10, what="http.server")
    return log


def test_curl_fetches_from_a_namespace_through_the_stack(lan, netns, procs, sockdir):
    d, peer = lan
    log = _http_server(netns, procs, peer, sockdir)
    r = subprocess.run(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.5/24", "--", "curl", "-sv", "-m", "10",
                                     "-w", "%{local_ip}\n", f"http://{peer.addr}/"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    # curl's -w local_ip is what getsockname said (this curl's -v does not print it)
    assert r.stdout == "hello from the namespace\n10.31.0.5\n"
    assert "Connected to 10.31.0.99" in r.stderr
    assert "10.31.0.5" in open(log).read()  # the server saw the stack's address


def _run(d, addr, *command, timeout=60, config_extra="", **kw):
    return subprocess.run(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                        f"eth,ip={addr}/24{config_extra}", "--", *command),
                          capture_output=True, text=True, env=threadnet_env(), timeout=timeout,
                          **kw)


def test_busybox_wget_and_a_python_program_with_seccomp(lan, netns, procs, sockdir):
    d, peer = lan
    log = _http_server(netns, procs, peer, sockdir)
    r = _run(d, "10.31.0.6", "busybox", "wget", "-q", "-O", "-", f"http://{peer.addr}/")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from the namespace\n"
    assert "10.31.0.6" in open(log).read()
    # a Python program forced onto the general path: its real sockets are trapped (no hook)
    code = ("import socket, sys, urllib.request\n"
            "assert 'threadnet' not in sys.modules\n"
            f"s = socket.create_connection(('{peer.addr}', 80), timeout=10)\n"
            "print(s.getsockname()[0], s.getpeername()[0], s.family.name, s.type.name)\n"
            f"print(urllib.request.urlopen('http://{peer.addr}/', timeout=10).read().decode())\n")
    r = subprocess.run(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.7/24", "--", sys.executable, "-c", code),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["10.31.0.7 10.31.0.99 AF_INET SOCK_STREAM",
                                     "hello from the namespace", ""]
    assert "10.31.0.7" in open(log).read()


def test_busybox_nc_as_a_client_and_as_a_server(lan, netns, procs, sockdir):
    d, peer = lan
    # nc as a client: a kernel nc listens in the namespace and hears who called
    out = os.path.join(sockdir, "nc.out")
    with open(out, "w") as f:
        server = procs.popen(netns.exec_cmd(peer.ns, "busybox", "nc", "-l", "-p", "7000"),
                             stdout=f, stderr=subprocess.STDOUT)
    time.sleep(0.3)
    r = _run(d, "10.31.0.8", "sh", "-c", f"echo hello kernel | busybox nc -w 5 {peer.addr} 7000")
    assert r.returncode == 0, r.stderr
    server.wait(timeout=10)
    assert open(out).read() == "hello kernel\n"
    # nc -l as a server on the stack: the namespace's nc connects to the stack's address
    srv = procs.popen(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                    "eth,ip=10.31.0.9/24", "--", "busybox", "nc", "-l", "-p",
                                    "7001"),
                      env=threadnet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)

    def sent() -> bool:
        r = netns.run(peer.ns, "sh", "-c", "echo hello stack | busybox nc -w 2 10.31.0.9 7001",
                      check=False, timeout=10)
        return r.returncode == 0

    wait_for(sent, timeout=20, interval=0.5, what="the namespace's nc reaching nc -l")
    stdout, stderr = srv.communicate(timeout=10)
    assert srv.returncode == 0, stderr
    assert stdout == "hello stack\n"


def test_unprivileged_busybox_httpd_serves_port_80_on_a_published_stack(lan, netns, procs, sockdir,
                                                                         unpriv):
    d, peer = lan
    need_tool("busybox")
    path = os.path.join(sockdir, "stack")
    pidfile = os.path.join(sockdir, "stack.pid")
    os.chmod(sockdir, 0o1777)  # like /tmp: sticky, or stacks refuse to publish there
    r = subprocess.run(threadnet_cmd("stack", path, "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.10/24", "-m", "0666", "-d", "-p", pidfile),
                       capture_output=True, text=True, env=threadnet_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    procs.adopt(read_pidfile(pidfile))
    www = os.path.join(sockdir, "www")
    os.mkdir(www)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("busybox without root\n")
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "index.html"), 0o644)
    server = procs.popen(["setpriv", f"--reuid={unpriv['uid']}", f"--regid={unpriv['gid']}",
                          "--clear-groups", "env", "-i", f"PYTHONPATH={unpriv['src']}",
                          "PATH=/usr/bin:/bin", unpriv["python"], "-m", "threadnet", "run",
                          "--stack", path, "--", "busybox", "httpd", "-f", "-p", "80", "-h", www],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def fetch() -> str | None:
        r = netns.run(peer.ns, "curl", "-s", "-m", "3", "http://10.31.0.10/", check=False)
        return r.stdout if r.returncode == 0 else None

    assert wait_for(fetch, timeout=30, interval=0.3, what="busybox httpd on port 80") == \
        "busybox without root\n"
    t0 = time.monotonic()
    for _ in range(5):  # each answer ends when httpd's child exits: its close must reach curl
        assert fetch() == "busybox without root\n"
    assert time.monotonic() - t0 < 10
    # the server is really unprivileged and really on the stack
    with open(f"/proc/{server.pid}/status") as f:
        assert f"Uid:\t{unpriv['uid']}" in f.read()
    server.terminate()
    out = server.communicate(timeout=10)[0]
    assert server.returncode in (0, 143, -15), out
    # the user sees root's stack in the view, but may not change it (as vunet)
    r = run_as(unpriv, [unpriv["python"], "-m", "threadnet", "run", "--stack", path, "--",
                        "sh", "-c", "ip -br -4 addr show dev eth0; ip addr add 10.31.0.40/24 "
                        "dev eth0"], capture_output=True, text=True, timeout=60)
    assert r.stdout.split()[2:] == ["10.31.0.10/24"]
    assert r.returncode == 2 and "Operation not permitted" in r.stderr


def test_children_threads_and_exec_stay_on_the_stack_and_the_status_passes(lan, netns, procs,
                                                                             sockdir):
    d, peer = lan
    need_tool("busybox")
    log = _http_server(netns, procs, peer, sockdir)
    url = f"http://{peer.addr}/"
    r = _run(d, "10.31.0.11", "sh", "-c",
             f"curl -s -m 10 {url} && busybox wget -q -O - {url} && exit 5")
    assert r.returncode == 5, r.stderr
    assert r.stdout == "hello from the namespace\n" * 2
    assert open(log).read().count("10.31.0.11") == 2
    # threads of one process, and a forked child that execs curl
    code = ("import os, threading, urllib.request\n"
            f"def get(): print(urllib.request.urlopen('{url}', timeout=10).read().decode(),"
            " end='', flush=True)\n"
            "ts = [threading.Thread(target=get) for _ in range(4)]\n"
            "[t.start() for t in ts]; [t.join() for t in ts]\n"
            "pid = os.fork()\n"
            f"if pid == 0: os.execvp('curl', ['curl', '-s', '-m', '10', '{url}'])\n"
            "raise SystemExit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) + 20)\n")
    r = subprocess.run(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.12/24", "--", sys.executable, "-c", code),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 20, r.stderr
    assert r.stdout == "hello from the namespace\n" * 5
    assert open(log).read().count("10.31.0.12") == 5


TRAPPER = ("trap 'echo interrupted; exit 42' INT; echo ready; "
           "while :; do sleep 0.1; done")


#: a Python program (run with the in-process hook, not supervised) that says each SIGINT
#: it gets, and lingers after the first so that a second would show
PY_TRAPPER = ("import signal, sys, time\n"
              "got = []\n"
              "signal.signal(signal.SIGINT, lambda s, f: (got.append(s), print('interrupted', "
              "flush=True)))\n"
              "print('ready', flush=True)\n"
              "while not got: time.sleep(0.05)\n"
              "time.sleep(0.5)\n"
              "sys.exit(42)\n")


@pytest.mark.parametrize("program", ["supervised", "hook"])
def test_ctrl_c_reaches_the_program(lan, program):
    """A real Ctrl-C: threadnet run on a pseudo-terminal, ^C typed on it. The terminal
    signals the foreground group (the program included) once; threadnet run does not
    send a second one, on either path."""
    import fcntl
    import pty
    import termios

    d, _ = lan
    master, slave = pty.openpty()

    def controlling_tty() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    argv = ["sh", "-c", TRAPPER] if program == "supervised" else \
        [sys.executable, "-c", PY_TRAPPER]
    proc = subprocess.Popen(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                          "eth,ip=10.31.0.13/24", "--", *argv),
                            env=threadnet_env(), stdin=slave, stdout=slave, stderr=slave,
                            start_new_session=True, preexec_fn=controlling_tty)
    os.close(slave)
    try:
        out = b""
        while b"ready" not in out:
            out += os.read(master, 1024)
        os.write(master, b"\x03")  # ^C
        assert proc.wait(timeout=20) == 42
        out = b""
        while True:
            try:
                chunk = os.read(master, 1024)
            except OSError:  # EIO: every process on the terminal is gone
                break
            if not chunk:
                break
            out += chunk
        assert out.count(b"interrupted") == 1, out
    finally:
        os.close(master)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    # SIGINT sent to threadnet run alone is passed on to the program
    proc = subprocess.Popen(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                          "eth,ip=10.31.0.13/24", "--", *argv),
                            env=threadnet_env(), stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        os.kill(proc.pid, signal.SIGINT)
        assert proc.communicate(timeout=20)[0] == "interrupted\n"
        assert proc.returncode == 42
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


FAIL_CLOSED = r"""
import ctypes, errno, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
def uring():
    params = ctypes.create_string_buffer(120)
    fd = libc.syscall(425, 8, params)
    return "uring " + (errno.errorcode[ctypes.get_errno()] if fd < 0 else "OPEN")
def attempt():
    try:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    except OSError as exc:
        return "socket " + errno.errorcode[exc.errno]
    try:
        s.settimeout(3)
        s.connect((sys.argv[1], 80))
        return "connected " + s.getsockname()[0]
    except OSError as exc:
        return "connect " + errno.errorcode.get(exc.errno, str(exc))
print(uring(), flush=True)
print(attempt(), flush=True)
sys.stdin.readline()  # the supervisor is killed meanwhile
print(attempt(), flush=True)
u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)  # other families still work
print("unix ok", flush=True)
"""


def test_a_program_whose_supervisor_is_killed_fails_closed(lan, netns, procs, sockdir):
    d, peer = lan
    _http_server(netns, procs, peer, sockdir)
    # (TMPDIR: the killed run's stack directory is left in sockdir, which is cleaned up)
    proc = subprocess.Popen(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                          "eth,ip=10.31.0.14/24", "--", sys.executable, "-c",
                                          FAIL_CLOSED, peer.addr),
                            env=threadnet_env({"TMPDIR": sockdir}), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        assert proc.stdout.readline() == "uring ENOSYS\n"  # io_uring would bypass the filter
        assert proc.stdout.readline() == "connected 10.31.0.14\n"
        os.kill(proc.pid, signal.SIGKILL)  # the supervisor (threadnet run) dies
        proc.wait()
        proc.stdin.write("go\n")
        proc.stdin.flush()
        # the program lives on, and no call reaches the host's network
        assert proc.stdout.readline() == "socket ENOSYS\n"
        assert proc.stdout.readline() == "unix ok\n"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_a_refused_connect_and_its_error(lan, netns, procs, sockdir):
    d, peer = lan
    # curl's non-blocking connect: SO_ERROR says ECONNREFUSED (the namespace sends a RST)
    r = _run(d, "10.31.0.15", "curl", "-sS", "-m", "10", f"http://{peer.addr}:81/")
    assert r.returncode == 7, r.stderr  # "Failed to connect"
    assert "Connection refused" in r.stderr or "Couldn't connect" in r.stderr
    # a blocking connect (Python with --seccomp), getsockopt values, and bind's errors
    code = ("import errno, socket, struct\n"
            "s = socket.socket()\n"
            f"print(s.connect_ex(('{peer.addr}', 81)) == errno.ECONNREFUSED)\n"
            "t = socket.socket(socket.AF_INET6)\n"
            "print(t.getsockopt(socket.SOL_SOCKET, socket.SO_DOMAIN) == socket.AF_INET6,"
            " t.getsockopt(socket.SOL_SOCKET, socket.SO_TYPE) == socket.SOCK_STREAM,"
            " t.getsockopt(socket.SOL_SOCKET, socket.SO_PROTOCOL) == socket.IPPROTO_TCP)\n"
            "u = socket.socket()\n"
            "try: u.bind(('10.31.0.200', 0))\n"
            "except OSError as e: print(errno.errorcode[e.errno])\n"
            "u.bind(('10.31.0.15', 0)); print(u.getsockname()[0], u.getsockname()[1] > 0)\n"
            "u.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n"
            "print(u.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))\n"
            "u.listen(); print(u.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)[0] == 10)\n")
    r = subprocess.run(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.15/24", "--", sys.executable, "-c", code),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["True", "True True True", "EADDRNOTAVAIL", "10.31.0.15 True",
                                    "1", "True", ""]


UDP_ECHO = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 7007))
while True:
    data, addr = s.recvfrom(65535)
    s.sendto(addr[0].encode() + b" " + data, addr)
"""

UDP_CLIENT = r"""
import socket, sys
peer = (sys.argv[1], 7007)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(b"one", peer)
print(s.recv(100, socket.MSG_PEEK).decode())            # peeked, still queued
data, src = s.recvfrom(5)                                # truncated, as UDP does
print(data.decode(), src == peer, s.getsockname()[0], s.getsockname()[1] > 0)  # as Linux
s.sendto(b"two", peer)
data, anc, flags, src = s.recvmsg(100)
print(data.decode(), src == peer, flags)
c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
c.connect(peer)
c.send(b"three")                                         # not trapped: through the pair
print(c.recv(100).decode(), c.getpeername() == peer)
s.sendto(b"four", peer)
print(s.recv(100).decode())            # a plain recv (not trapped): no source asked for
s.sendto(b"five", (sys.argv[1], 7008))
data, src = s.recvfrom(100)
print(data.decode(), src[1])           # the source of this datagram, not of "four"
for i in range(5000):                  # plain reads only: receiving never stops
    s.sendto(b"x%d" % i, peer)
    s.recv(100)
s.sendto(b"six", (sys.argv[1], 7008))
print(s.recvfrom(100)[1][1])
"""


def test_udp_with_addresses_and_connected(lan, netns, procs):
    d, peer = lan
    procs.popen(netns.exec_cmd(peer.ns, sys.executable, "-c", UDP_ECHO, peer.addr))
    procs.popen(netns.exec_cmd(peer.ns, sys.executable, "-c", UDP_ECHO, peer.addr, "7008"))
    time.sleep(0.3)
    r = subprocess.run(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.16/24", "--", sys.executable, "-c",
                                     UDP_CLIENT, peer.addr),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n") == ["10.31.0.16 one", "10.31 True 0.0.0.0 True",
                                    "10.31.0.16 two True 0", "10.31.0.16 three True",
                                    "10.31.0.16 four", "10.31.0.16 five 7008", "7008", ""]


def test_names_busybox_nslookup_and_getent_reach_dnsmasq_through_the_stack(lan, netns, procs, sockdir):
    d, peer = lan
    need_tool("dnsmasq", "busybox")
    log = os.path.join(sockdir, "dnsmasq.log")
    procs.popen(netns.exec_cmd(peer.ns, "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
                               "--bind-interfaces", f"--listen-address={peer.addr}",
                               "--address=/www.views.test/10.31.0.77", "--log-queries",
                               f"--log-facility={log}", f"--pid-file={sockdir}/dnsmasq.pid"))
    wait_for(lambda: os.path.exists(log), timeout=10, what="dnsmasq")
    r = _run(d, "10.31.0.17", "busybox", "nslookup", "-type=a", "www.views.test", peer.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "10.31.0.77" in r.stdout
    assert "from 10.31.0.17" in open(log).read()  # dnsmasq heard the stack's address
    # names: the program's /etc/resolv.conf is the stack's (dns=), so glibc's resolver
    # (getent) asks dnsmasq through the stack
    r = subprocess.run(threadnet_cmd("run", "--link", f"vde://{d}", "--config",
                                     f"eth,ip=10.31.0.18/24,dns={peer.addr}", "--hostname",
                                     "viewed", "--", "sh", "-c", "cat /etc/resolv.conf; hostname;"
                                     " getent ahostsv4 www.views.test"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"nameserver {peer.addr}\nviewed\n" in r.stdout  # and the stack's host name
    assert "10.31.0.77" in r.stdout
    assert "from 10.31.0.18" in open(log).read()
    # the same with a published stack (threadnet stack ... dns=): its settings, read only
    path = os.path.join(sockdir, "named")
    pidfile = path + ".pid"
    r = subprocess.run(threadnet_cmd("stack", path, "--link", f"vde://{d}", "--config",
                                     f"eth,ip=10.31.0.23/24,dns={peer.addr}", "-d", "-p", pidfile),
                       capture_output=True, text=True, env=threadnet_env(), timeout=30)
    assert r.returncode == 0, r.stderr
    procs.adopt(read_pidfile(pidfile))
    r = subprocess.run(threadnet_cmd("run", "--stack", path, "--", "getent", "ahostsv4",
                                     "www.views.test"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "10.31.0.77" in r.stdout
    assert "from 10.31.0.23" in open(log).read()
    from threadnet.stack.remote import RemoteStack

    rs = RemoteStack(path)
    with pytest.raises(PermissionError):
        rs._call("resolv_conf", "nameserver 192.0.2.1")  # a client may not change it
    assert rs.resolv_conf() == f"nameserver {peer.addr}\n"
    rs.close()


SIGNALLED_SERVER = r"""
import asyncio, signal, socket, sys
ticks = 0
def tick(*_):
    global ticks
    ticks += 1
signal.signal(signal.SIGALRM, tick)
signal.setitimer(signal.ITIMER_REAL, 0.01, 0.01)   # blocking calls interrupted all the time
srv = socket.socket()
srv.bind(("", 7100)); srv.listen()
print("listening", flush=True)
for _ in range(3):                                  # a blocking accept, restarted (PEP 475)
    conn, peer = srv.accept()
    conn.sendall(b"blocking " + peer[0].encode() + b"\n")
    conn.close()
signal.setitimer(signal.ITIMER_REAL, 0, 0)
srv.close()

async def main():                                   # non-blocking accept and connect-less I/O
    done = asyncio.Event()
    async def handle(r, w):
        w.write(b"asyncio " + w.get_extra_info("sockname")[0].encode() + b"\n")
        await w.drain(); w.close(); done.set()
    server = await asyncio.start_server(handle, "0.0.0.0", 7101)
    print("asyncio", flush=True)
    await done.wait()
    server.close()
asyncio.run(main())
print("ticks", ticks > 10, flush=True)
"""


def test_signals_interrupt_a_blocking_accept_and_asyncio_serves(lan, netns, procs):
    d, peer = lan
    need_tool("busybox")
    srv = procs.popen(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                    "eth,ip=10.31.0.19/24", "--", sys.executable, "-c",
                                    SIGNALLED_SERVER),
                      env=threadnet_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                      text=True)
    assert srv.stdout.readline() == "listening\n"
    for _ in range(3):
        time.sleep(0.2)  # the accept waits, interrupted by signals, meanwhile
        r = netns.run(peer.ns, "busybox", "nc", "-w", "5", "10.31.0.19", "7100", check=False,
                      timeout=20)
        assert r.stdout == f"blocking {peer.addr}\n", r.stderr
    assert srv.stdout.readline() == "asyncio\n"
    r = netns.run(peer.ns, "busybox", "nc", "-w", "5", "10.31.0.19", "7101", check=False,
                  timeout=20)
    assert r.stdout == "asyncio 10.31.0.19\n", r.stderr
    assert srv.stdout.readline() == "ticks True\n"
    srv.wait(timeout=20)
    assert srv.returncode == 0, srv.stderr.read()


def test_bench_views_runs_side_by_side():
    """The benchmark runs (briefly) and prints both paths; no speed assertion."""
    import json

    need_tool("curl")
    r = subprocess.run(threadnet_cmd("bench", "views", "--repeat", "1", "--mbytes", "2",
                                     "--conns", "5", "--calls", "50", "--json"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=120)
    assert r.returncode == 0, r.stderr
    results = json.loads(r.stdout.strip().splitlines()[-1])["results"]
    assert set(results) == {"bulk", "conn", "call", "http"}
    assert all(v["hook"] > 0 and v["seccomp"] > 0 for v in results.values())


def test_netlink_shows_the_stack_inside_the_view(lan):
    import json

    d, _ = lan
    need_tool("ip")
    r = _run(d, "10.31.0.20", "ip", "-j", "addr", config_extra=",gw=10.31.0.1")
    assert r.returncode == 0, r.stderr
    links = json.loads(r.stdout)
    assert [lk["ifname"] for lk in links] == ["lo", "eth0"]
    v4 = [(a["local"], a["prefixlen"]) for lk in links for a in lk["addr_info"]
          if a["family"] == "inet"]
    assert v4 == [("127.0.0.1", 8), ("10.31.0.20", 24)]
    r = _run(d, "10.31.0.20", "ip", "-j", "route", config_extra=",gw=10.31.0.1")
    assert r.returncode == 0, r.stderr
    routes = {(x["dst"], x.get("gateway")) for x in json.loads(r.stdout)}
    assert routes == {("default", "10.31.0.1"), ("10.31.0.0/24", None)}
    # ip names the route's device by a second netlink socket's RTM_GETLINK; changes go to
    # the stack (its owner runs the program), never to the host
    r = _run(d, "10.31.0.20", "sh", "-c",
             "ip route; ip addr add 10.31.0.30/24 dev eth0 && ip route add 10.99.0.0/16 via "
             "10.31.0.1 && ip link set dev eth0 mtu 1400 && ip -br addr && ip route && "
             "ip link show eth0 && ip route del 10.99.0.0/16 && ip addr del 10.31.0.30/24 "
             "dev eth0 && ip -br -4 addr show dev eth0", config_extra=",gw=10.31.0.1")
    assert r.returncode == 0, r.stderr
    assert "default via 10.31.0.1 dev eth0" in r.stdout
    assert "10.31.0.20/24 10.31.0.30/24" in r.stdout
    assert "10.99.0.0/16 via 10.31.0.1 dev eth0" in r.stdout
    assert "mtu 1400" in r.stdout
    assert r.stdout.splitlines()[-1].split()[2:] == ["10.31.0.20/24"]
    # glibc's if_nameindex (netlink) in a Python program run with --seccomp
    r = subprocess.run(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.21/24", "--", sys.executable, "-c",
                                     "import socket; print(socket.if_nameindex())"),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "[(1, 'lo'), (2, 'eth0')]\n"
    # interface ioctls (glibc asks on an AF_UNIX socket), and busybox ifconfig's
    code = ("import socket; print(socket.if_nametoindex('eth0'), socket.if_indextoname(1))\n"
            "try: socket.if_nametoindex('ifb0')\nexcept OSError as e: print(e)\n")
    r = subprocess.run(threadnet_cmd("run", "--seccomp", "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.31.0.21/24", "--", sys.executable, "-c", code),
                       capture_output=True, text=True, env=threadnet_env(), timeout=60)
    assert r.returncode == 0, r.stderr
    # the host's interfaces are not in the view
    assert r.stdout == "2 lo\nno interface with this name\n"
    r = _run(d, "10.31.0.22", "busybox", "ifconfig", "eth0")
    assert r.returncode == 0, r.stderr
    assert "inet addr:10.31.0.22" in r.stdout and "Mask:255.255.255.0" in r.stdout


def test_ipv6_curl_and_a_v6_server(lan, netns, procs, sockdir):
    d, peer = lan
    netns.run(peer.ns, "ip", "addr", "add", "fd31::99/64", "dev", peer.tap, "nodad")
    log = os.path.join(sockdir, "http6.log")
    www = os.path.join(sockdir, "www6")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello over IPv6\n")
    with open(log, "w") as out:
        procs.popen(netns.exec_cmd(peer.ns, sys.executable, "-m", "http.server", "80",
                                   "--bind", "fd31::99", "--directory", www),
                    stdout=out, stderr=subprocess.STDOUT)
    wait_for(lambda: netns.run(peer.ns, "curl", "-s", "-m", "2", "http://[fd31::99]/",
                               check=False).returncode == 0, timeout=10, what="http.server v6")
    # (the stack's IPv6 address is usable once its DAD is over: a second or so)
    r = _run(d, "10.31.0.24", "sh", "-c", "for i in 1 2 3 4 5 6; do curl -sS -m 10 -w "
             "'%{local_ip}\\n' 'http://[fd31::99]/' 2>/dev/null && exit; sleep 0.5; done; exit 1",
             config_extra=",ip=fd31::24/64")
    assert r.returncode == 0, r.stderr
    assert r.stdout.lstrip("\n") == "hello over IPv6\nfd31::24\n"  # (failed tries: "\n")
    assert "fd31::24" in open(log).read()


class _Listener:
    """A stand-in for the seccomp listener: the first injection fails as it does when
    a signal interrupts the call (ENOENT); the answers are recorded."""

    def __init__(self):
        self.fail_next = True
        self.replies = []

    def valid(self, nid):
        return True

    def addfd(self, nid, srcfd, *, cloexec=False, newfd=None, send=False):
        if self.fail_next:
            self.fail_next = False
            raise OSError(errno.ENOENT, "interrupted")
        self.replies.append(("fd", nid))
        return 7


def test_an_accept_interrupted_while_injecting_keeps_its_connection(sockdir):
    """A signal at the moment of injection cannot be timed from outside: the listener is
    a stand-in here, the stack and its connection are real."""
    import select
    import socket
    from types import SimpleNamespace

    from threadnet.link.pair import open_pair
    from threadnet.stack.api import Stack
    from threadnet.views.supervisor import Supervisor

    la, lb = open_pair()
    a = Stack("eth,ip=10.79.0.1/24", link=la)
    b = Stack("eth,ip=10.79.0.2/24", link=lb)
    path = os.path.join(sockdir, "a")
    a.publish(path, mode=0o600)
    sup = Supervisor(_Listener(), path, os.getpid())
    try:
        vs = sup._open(socket.AF_INET, socket.SOCK_STREAM, 0)
        vs.rpc("bind", addr=["", 7000])
        vs.rpc("listen", backlog=4)
        vs.listening = True
        client = b.socket()
        client.setblocking(False)
        client.connect_ex(("10.79.0.1", 7000))
        assert select.select([vs.dfd], [], [], 5)[0]  # a connection is ready (its token)
        n = SimpleNamespace(id=1, pid=os.getpid(), nr=43, args=[0, 0, 0, 0, 0, 0], memo=None)
        with pytest.raises(kernel.Gone):
            sup._try_accept(n, vs, 0)
        assert len(vs.stash) == 1  # kept, and its token is still on the descriptor
        assert select.select([vs.dfd], [], [], 0)[0]
        n.id = 2  # SA_RESTART: the same accept again, as a new notification
        assert sup._try_accept(n, vs, 0)
        assert sup.listener.replies == [("fd", 2)]
        assert not vs.stash and not select.select([vs.dfd], [], [], 0)[0]
        accepted = [s for s in sup.socks.values() if s is not vs]
        assert len(accepted) == 1 and accepted[0].remote[0] == "10.79.0.2"
        client.close()
    finally:
        sup.close()
        a.close()
        b.close()


def test_ping_through_the_stack(lan, netns):
    """iputils ping (a ping socket, or a raw one: the stack's owner may open both)."""
    d, peer = lan
    need_tool("ping")
    r = _run(d, "10.31.0.25", "ping", "-c", "2", "-i", "0.2", "-W", "5", peer.addr)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "2 received" in r.stdout


# -- sans-IO parts ---------------------------------------------------------------------------------
def test_sockaddr_round_trips_and_errors():
    import socket

    from threadnet.views import sockaddr

    for addr, fam in ((["10.1.2.3", 8080], socket.AF_INET),
                      (["fd00::1", 443, 7, 3], socket.AF_INET6)):
        raw = sockaddr.encode(addr, fam)
        assert len(raw) == sockaddr.SIZE[fam]
        assert sockaddr.decode(raw, fam) == addr
    with pytest.raises(OSError) as e:  # an AF_INET address on an AF_INET6 socket
        sockaddr.decode(sockaddr.encode(["10.1.2.3", 1], socket.AF_INET), socket.AF_INET6)
    assert e.value.errno == errno.EAFNOSUPPORT
    with pytest.raises(OSError) as e:
        sockaddr.decode(b"\x02\x00", socket.AF_INET)
    assert e.value.errno == errno.EINVAL


