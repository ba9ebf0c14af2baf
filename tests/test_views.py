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
    kill_pid,
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
