"""The packet filter against real peers: Linux kernels in network namespaces, joined by
Debian's vde_plug2tap to a threadnet switch that a filtering stack is on (root; the
tests skip without it).

- ``nmap -sS`` and ``nmap -sU`` from a namespace report each port as the rules say;
- ``reject`` gives the kernel's sockets ECONNREFUSED (a TCP RST, an ICMP port
  unreachable) or EHOSTUNREACH (administratively prohibited) at once, and ``drop`` a
  timeout;
- a reload in the middle of a 32 MiB upload from the namespace keeps it byte-exact while
  new connections obey the new rules;
- ``threadnet stack --filter FILE -M MGMT`` filters from its first packet and its console
  lists, reloads and refuses a broken ruleset with the line and column;
- a forwarding stack filters at the forward hook between two namespaces.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import subprocess
import threading
from types import SimpleNamespace

import pytest

from threadnet import Stack
from threadnet.mgmt.commands import Caller
from threadnet.stack.commands import build_table
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import create_server
from threadnet.switch.server import SwitchServer

from conftest import need_tool, threadnet_cmd, threadnet_env, wait_for

pytestmark = pytest.mark.root

STACK4, PEER4 = "10.60.0.1", "10.60.0.2"
STACK6, PEER6 = "fc00:60::1", "fc00:60::2"

RULES = """
# the stack's ports, as the tests expect nmap to see them
define open_tcp = { 22, 80 }
table inet filter {
    chain input {
        type filter hook input priority filter; policy drop;
        ct state established,related accept
        ct state invalid drop
        iifname "lo" accept
        icmp type echo-request accept
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, echo-request } accept
        tcp dport $open_tcp accept     # listening: open
        tcp dport 23 accept            # nobody listens: closed (the stack's RST)
        tcp dport 24 reject            # closed (the filter's RST)
        tcp dport 25 reject with icmpx type admin-prohibited   # filtered
        tcp dport 9100 accept
        udp dport 7 accept             # an echo server: open
        udp dport 8 accept             # nobody: closed (the stack's port unreachable)
        udp dport 9 reject             # closed (the filter's port unreachable)
        udp dport 10 reject with icmpx type admin-prohibited   # filtered
        counter comment "the rest: dropped"
    }
}
"""


def _tap(netns, procs, sockdir: str, switch_dir: str, name: str, addr4: str, addr6: str,
         gw4: str | None = None) -> str:
    """A namespace with a tap on ``switch_dir`` (vde_plug2tap), addresses, a route."""
    ns = netns.add()
    netns.run(ns, "ip", "tuntap", "add", "dev", name, "mode", "tap")
    netns.run(ns, "ip", "addr", "add", addr4, "dev", name)
    netns.run(ns, "ip", "addr", "add", addr6, "dev", name, "nodad")
    netns.run(ns, "ip", "link", "set", name, "up")
    if gw4:
        netns.run(ns, "ip", "route", "add", "default", "via", gw4)
    pidfile = os.path.join(sockdir, f"{name}.pid")
    procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", switch_dir, "-d", "-P", pidfile,
                                name), pidfile)
    return ns


def _ping_until(netns, ns: str, addr: str, what: str) -> None:
    wait_for(lambda: netns.run(ns, "ping", "-c", "1", "-W", "1", addr, check=False)
             .returncode == 0, timeout=20, what=what)


@pytest.fixture
def fw(netns, procs, sockdir):
    """A stack (STACK4, STACK6) filtering with RULES, on an in-process switch, and a
    namespace (PEER4, PEER6) on the same switch."""
    need_tool("vde_plug2tap", "ping")
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-filter-netns")
    stack = Stack(f"eth,ip={STACK4}/24,ip={STACK6}/64", link=f"vde://{sw.directory}",
                  runner=runner, name="fw")
    stack.filter_set(RULES, "rules.nft")
    ns = _tap(netns, procs, sockdir, sw.directory, "tnf0", f"{PEER4}/24", f"{PEER6}/64")
    wait_for(lambda: f"{STACK6}/64" in stack.addresses(6), what="DAD")
    _ping_until(netns, ns, STACK4, "the stack answering pings")
    servers = []
    yield SimpleNamespace(stack=stack, ns=ns, sw=sw, servers=servers)
    for s in servers:
        s.close()
    stack.close()
    runner.stop()
    sw.close()


def _listen(fw, port: int, family: int = socket.AF_INET6) -> socket.socket:
    srv = create_server(fw.stack, ("", port), family=family, dualstack_ipv6=True)
    fw.servers.append(srv)

    def accept() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return srv


def _udp_echo(fw, port: int) -> None:
    u = fw.stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    u.bind(("", port))
    fw.servers.append(u)

    def echo() -> None:
        while True:
            try:
                data, addr = u.recvfrom(2048)
                u.sendto(data, addr)
            except OSError:
                return

    threading.Thread(target=echo, daemon=True).start()


def _nmap(netns, ns: str, *args: str) -> dict[int, str]:
    """nmap's verdict for each port: {port: "open" | "closed" | "filtered" | ...}."""
    r = netns.run(ns, "nmap", "-n", "-Pn", "-T4", "--max-retries", "2", "-oG", "-", *args,
                  timeout=300)
    ports = {}
    for line in r.stdout.splitlines():
        if "Ports:" in line:
            for port, state in re.findall(r"(\d+)/([a-z|]+)/(?:tcp|udp)", line):
                ports[int(port)] = state
    assert ports, r.stdout + r.stderr
    return ports


# -- nmap ----------------------------------------------------------------------------------------
def test_nmap_syn_scan_sees_the_rules(fw, netns):
    need_tool("nmap")
    for port in (22, 80, 25, 26):  # 25, 26: listening, but the rules keep nmap out
        _listen(fw, port)
    ports = _nmap(netns, fw.ns, "-sS", "-p", "22,23,24,25,26,80,81", STACK4)
    assert ports == {22: "open", 80: "open",          # listening and accepted
                     23: "closed", 24: "closed",      # no listener; reject's RST
                     25: "filtered",                  # reject with admin-prohibited
                     26: "filtered", 81: "filtered"}  # dropped
    ports6 = _nmap(netns, fw.ns, "-6", "-sS", "-p", "22,23,24,26", STACK6)
    assert ports6 == {22: "open", 23: "closed", 24: "closed", 26: "filtered"}
    assert "counter packets" in fw.stack.filter_list()
    # the dropped and rejected probes left no connection behind
    tracked = {c.original[4] for c in fw.stack.conntrack.connections() if c.proto == 6}
    assert tracked and not tracked & {24, 25, 26, 81}, fw.stack.conntrack.listing(0)


def test_nmap_udp_scan_sees_the_rules(fw, netns):
    """nmap -sU: an answer is open, a port unreachable closed, another ICMP unreachable
    (administratively prohibited) filtered, and silence "open|filtered": nmap cannot
    tell a dropped probe from an open port that does not answer."""
    need_tool("nmap")
    _udp_echo(fw, 7)
    _udp_echo(fw, 11)  # listening, but dropped by the rules
    ports = _nmap(netns, fw.ns, "-sU", "-p", "7,8,9,10,11", STACK4)
    assert ports == {7: "open", 8: "closed", 9: "closed", 10: "filtered",
                     11: "open|filtered"}


# -- reject, as the kernel's sockets see it --------------------------------------------------------
CLIENT = """
import socket, sys, time
family = socket.AF_INET6 if ':' in sys.argv[1] else socket.AF_INET
host, kind, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
t0 = time.monotonic()
try:
    if kind == 'tcp':
        socket.create_connection((host, port), timeout=3).close()
    else:
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((host, port))
        s.send(b'x')
        s.recv(100)
        s.send(b'x')  # (the error may come with the first send or the next call)
        s.recv(100)
    print('ok', round(time.monotonic() - t0, 2))
except OSError as e:
    print(type(e).__name__, e.errno, round(time.monotonic() - t0, 2))
"""


def _client(netns, ns: str, sockdir: str, host: str, kind: str, port: int) -> tuple[str, float]:
    script = os.path.join(sockdir, "client.py")
    with open(script, "w") as f:
        f.write(CLIENT)
    out = netns.run(ns, "python3", script, host, kind, str(port)).stdout.split()
    return " ".join(out[:-1]), float(out[-1])


@pytest.mark.parametrize("host", [STACK4, STACK6])
def test_reject_gives_the_kernel_an_error_not_a_timeout(fw, netns, sockdir, host):
    _udp_echo(fw, 7)
    _listen(fw, 22)
    # administratively prohibited: Linux says EHOSTUNREACH for ICMP, EACCES for ICMPv6
    prohibited = "OSError 113" if host == STACK4 else "PermissionError 13"
    for kind, port, want in (("tcp", 22, "ok"),
                             ("tcp", 23, "ConnectionRefusedError 111"),  # no listener
                             ("tcp", 24, "ConnectionRefusedError 111"),  # reject: RST
                             ("tcp", 25, prohibited),
                             ("udp", 7, "ok"),
                             ("udp", 9, "ConnectionRefusedError 111"),  # port unreachable
                             ("udp", 10, prohibited)):
        got, took = _client(netns, fw.ns, sockdir, host, kind, port)
        assert got == want, (kind, port, got)
        assert took < 2.0, (kind, port, took)  # an answer, not a timeout
    got, took = _client(netns, fw.ns, sockdir, host, "tcp", 81)  # dropped
    assert got in ("TimeoutError None", "timeout None") and took >= 2.9, got


# -- a reload during a transfer ---------------------------------------------------------------
SENDER = """
import hashlib, socket, sys
host, port, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
c = socket.create_connection((host, port), timeout=60)
h = hashlib.sha256()
block = bytes(range(256)) * 256
left = size
while left:
    chunk = block[:min(left, len(block))]
    c.sendall(chunk); h.update(chunk); left -= len(chunk)
c.shutdown(socket.SHUT_WR)
c.recv(1)
print(h.hexdigest(), flush=True)
"""


def test_a_reload_keeps_a_32mib_upload_byte_exact_and_new_connections_obey(fw, netns, procs,
                                                                           sockdir):
    stack = fw.stack
    srv = create_server(stack, ("", 9100))
    fw.servers.append(srv)
    _listen(fw, 9101)
    table = build_table(stack)
    new_rules = os.path.join(sockdir, "new.nft")
    with open(new_rules, "w") as f:
        f.write(RULES.replace("tcp dport 9100 accept", "tcp dport 9101 accept"))
    script = os.path.join(sockdir, "sender.py")
    with open(script, "w") as f:
        f.write(SENDER)
    size = 32 << 20
    sender = procs.popen(netns.exec_cmd(fw.ns, "python3", script, STACK4, "9100", str(size)),
                         stdout=subprocess.PIPE, text=True)
    conn, _ = srv.accept()
    h = hashlib.sha256()
    got = 0
    reloaded_at = None
    conn.settimeout(60)
    while data := conn.recv(1 << 16):
        h.update(data)
        got += len(data)
        if reloaded_at is None and got >= size // 4:
            err, out, _ = table.run(f"filter/load {new_rules}", Caller.service())
            assert err == 0, out
            reloaded_at = got
    conn.close()
    out, _ = sender.communicate(timeout=60)
    assert got == size and out.strip() == h.hexdigest(), "sha256 mismatch"
    assert reloaded_at is not None and reloaded_at < size // 2
    assert "tcp dport 9101 accept" in stack.filter_list()
    # new connections obey the new rules: 9100 is dropped now, 9101 accepted
    assert _client(netns, fw.ns, sockdir, STACK4, "tcp", 9100)[0] in (
        "TimeoutError None", "timeout None")
    assert _client(netns, fw.ns, sockdir, STACK4, "tcp", 9101)[0] == "ok"


# -- the service: threadnet stack --filter, and its console ----------------------------------------
def test_threadnet_stack_with_filter_file_and_console(netns, procs, sockdir):
    need_tool("vde_plug2tap")
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    try:
        bad = os.path.join(sockdir, "bad.nft")
        with open(bad, "w") as f:
            f.write(RULES.replace("tcp dport 23 accept", "tcp dport 23 acept"))
        path, mgmt = os.path.join(sockdir, "st"), os.path.join(sockdir, "st.mgmt")
        base = threadnet_cmd("stack", path, "--link", f"vde://{sw.directory}", "--config",
                             f"eth,ip={STACK4}/24", "-M", mgmt)
        r = subprocess.run(base + ["--filter", bad], env=threadnet_env(), capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 1
        assert f"{bad}:13:22: unknown statement 'acept' (did you mean 'accept'?)" in r.stderr
        good = os.path.join(sockdir, "good.nft")
        with open(good, "w") as f:
            f.write(RULES)
        pidfile = os.path.join(sockdir, "st.pid")
        procs.daemon(base + ["--filter", good, "-d", "-p", pidfile], pidfile,
                     env=threadnet_env())
        ns = _tap(netns, procs, sockdir, sw.directory, "tnf1", f"{PEER4}/24", f"{PEER6}/64")
        _ping_until(netns, ns, STACK4, "the service answering pings")
        got, took = _client(netns, ns, sockdir, STACK4, "tcp", 24)
        assert got == "ConnectionRefusedError 111" and took < 2

        def console(*cmd: str) -> subprocess.CompletedProcess:
            return subprocess.run(threadnet_cmd("console", mgmt, *cmd), env=threadnet_env(),
                                  capture_output=True, text=True, timeout=30)

        listing = console("filter/list")
        assert listing.returncode == 0 and "table inet filter {" in listing.stdout
        assert "\t\ttcp dport 24 reject\n" in listing.stdout
        r = console("filter/load", bad)
        assert r.returncode != 0 and "13:22: unknown statement 'acept'" in r.stdout + r.stderr
        assert "ct state established,related accept" in console("filter/list").stdout
        r = console("filter/set", "table ip t { chain c { type filter hook input priority 0; "
                    "tcp dport 24 drop; } }")
        assert r.returncode == 0, r.stdout + r.stderr
        got, took = _client(netns, ns, sockdir, STACK4, "tcp", 24)
        assert got in ("TimeoutError None", "timeout None")  # now dropped
        r = console("ct/stats")
        assert r.returncode == 0 and "tracking off" in r.stdout  # (the new rules: no ct)
    finally:
        sw.close()


# -- forwarding ------------------------------------------------------------------------------------
FORWARD = """
table inet filter {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        icmp type echo-request accept
        iifname "eth0" oifname "eth1" tcp dport 8080 accept
        iifname "eth0" oifname "eth1" tcp dport 8082 reject
        counter
    }
}
"""

SERVER = """
import socket, sys, threading
for port in (8080, 8081):
    s = socket.create_server(('', port))
    def loop(s=s):
        while True:
            c, a = s.accept()
            c.sendall(b'hello from ' + str(s.getsockname()[1]).encode()); c.close()
    threading.Thread(target=loop, daemon=True).start()
print('ready', flush=True)
sys.stdin.read()
"""


def test_a_forwarding_stack_filters_between_two_namespaces(netns, procs, sockdir):
    need_tool("vde_plug2tap", "ping", "nmap")
    sw1 = SwitchServer(os.path.join(sockdir, "sw1")).start()
    sw2 = SwitchServer(os.path.join(sockdir, "sw2")).start()
    runner = StackRunner("test-filter-fwd")
    router = Stack(name="router", forwarding=True, runner=runner)
    try:
        router.filter_set(FORWARD, "forward.nft")
        router.add_interface(f"vde://{sw1.directory}")
        router.add_interface(f"vde://{sw2.directory}")
        router.configure("iface=eth0,eth,ip=10.61.1.1/24")
        router.configure("iface=eth1,eth,ip=10.61.2.1/24")
        inside = _tap(netns, procs, sockdir, sw1.directory, "tnfa", "10.61.1.2/24",
                      "fc00:61:1::2/64", gw4="10.61.1.1")
        outside = _tap(netns, procs, sockdir, sw2.directory, "tnfb", "10.61.2.2/24",
                       "fc00:61:2::2/64", gw4="10.61.2.1")
        script = os.path.join(sockdir, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        for ns in (inside, outside):
            server = procs.popen(netns.exec_cmd(ns, "python3", script), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
            assert server.stdout.readline().strip() == "ready"
        _ping_until(netns, inside, "10.61.2.2", "a ping through the router")
        curl = ["python3", "-c", "import socket,sys; c=socket.create_connection((sys.argv[1],"
                " int(sys.argv[2])), timeout=3); print(c.recv(100).decode())"]
        r = netns.run(inside, *curl, "10.61.2.2", "8080", check=False)
        assert r.stdout.strip() == "hello from 8080", r.stderr
        r = netns.run(inside, *curl, "10.61.2.2", "8081", check=False)
        assert r.returncode != 0 and "timed out" in r.stderr  # dropped at forward
        r = netns.run(outside, *curl, "10.61.1.2", "8080", check=False)
        assert r.returncode != 0 and "timed out" in r.stderr  # the other way: dropped
        ports = _nmap(netns, inside, "-sS", "-p", "8080,8081,8082,8083", "10.61.2.2")
        assert ports == {8080: "open", 8081: "filtered", 8082: "closed",
                         8083: "filtered"}
        assert router.stats.get("hook_drop_forward", 0) > 0
        assert "counter packets 0 " not in router.filter_list()  # the rest was counted
    finally:
        router.close()
        runner.stop()
        sw1.close()
        sw2.close()
