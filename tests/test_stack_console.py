"""The console of a running stack (``threadnet stack PATH -M MGMT``, stack/commands.py).

The table is tested on in-process stacks (every command's output and errors), then the
service: ``threadnet stack`` as a daemon on a ``threadnet switch``, driven through
``threadnet console`` and Debian's ``unixterm``, with a peer stack in this process.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import threading
from types import SimpleNamespace

import pytest

import threadnet
from threadnet import Stack
from threadnet.mgmt.client import ConsoleClient
from threadnet.mgmt.console import format_reply
from threadnet.stack.commands import build_table
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import _gone, need_tool, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import unixterm


# -- the table, on in-process stacks -------------------------------------------------------------
@pytest.fixture
def two(sockdir):
    """Two stacks (10.30.0.1 with a console table, 10.30.0.2) on an in-process switch."""
    sw = SwitchServer(os.path.join(sockdir, "sw"), numports=8).start()
    runner = StackRunner("test-stack-console")
    a = Stack("eth,ip=10.30.0.1/24,ip=fc00:30::1/64,gw=10.30.0.254", link=f"vde://{sw.directory}",
              runner=runner, name="alpha")
    b = Stack("eth,ip=10.30.0.2/24,ip=fc00:30::2/64", link=f"vde://{sw.directory}",
              runner=runner, name="beta")
    stopped = []
    table = build_table(a, path="/run/alpha", on_shutdown=lambda: stopped.append(1))

    def run(line: str) -> tuple[int, list[str] | None]:
        err, out, _ = table.run(line)
        return err, out

    yield SimpleNamespace(a=a, b=b, table=table, run=run, stopped=stopped)
    a.close()
    b.close()
    runner.stop()
    sw.close()


def ok(t, line: str) -> list[str]:
    err, out = t.run(line)
    assert err == 0, (line, os.strerror(err))
    return out if out is not None else []


def fails(t, line: str, err: int) -> None:
    got, _ = t.run(line)
    assert got == err, (line, os.strerror(got), os.strerror(err))


def test_help_showinfo_stats_hostname(two):
    help_ = ok(two, "help")
    for cmd in ("showinfo", "link/print", "link/set", "addr/print", "addr/add", "addr/del",
                "route/print", "route/add", "route/del", "neigh/print", "tcp/print", "udp/print",
                "stats", "config", "dns/print", "dns/set", "hostname", "shutdown"):
        assert any(line.split()[0] == cmd for line in help_[2:]), cmd
    assert all(line.startswith("route") for line in ok(two, "help route")[2:])
    info = ok(two, "showinfo")
    assert info[:3] == ["threadnet stack alpha", "hostname alpha", info[2]]
    assert info[2].startswith(f"pid {os.getpid()} uptime ")
    assert "published /run/alpha" in info
    assert "interfaces 2 (2 up)" in info
    assert any(line.startswith("addresses ") and "10.30.0.1/24" in line for line in info)
    assert two.b.ping("10.30.0.1", timeout=5)
    stats = ok(two, "stats")
    eth0 = next(line.split() for line in stats if line.startswith("eth0 "))
    assert int(eth0[eth0.index("rx_packets") + 1]) > 0 and int(eth0[eth0.index("tx_packets") + 1]) > 0
    assert ok(two, "hostname") == ["alpha"]
    assert ok(two, "hostname box.example.org") == ["box.example.org"]
    assert two.a.gethostname() == "box.example.org"
    assert ok(two, "showinfo")[1] == "hostname box.example.org"
    fails(two, "nosuchcommand", errno.ENOSYS)
    ok(two, "shutdown")
    assert two.stopped == [1]


def test_link_print_and_set(two):
    lines = ok(two, "link/print")
    assert lines[0] == "1: lo: <LOOPBACK,UP> mtu 65536 state UP"
    assert lines[2].startswith("2: eth0: <BROADCAST,MULTICAST,UP> mtu ")
    eth0 = two.a.interface("eth0")
    assert lines[3] == f"    link/ether {':'.join(f'{x:02x}' for x in eth0.mac)} url {two.a.links[eth0.index].url}"
    ok(two, "link/set eth0 mtu 1400 mac 02:00:00:00:30:01")
    assert eth0.mtu == 1400 and eth0.mac == bytes.fromhex("020000003001")
    assert "2: eth0: <BROADCAST,MULTICAST,UP> mtu 1400 state UP" in ok(two, "link/print eth0")
    assert two.b.ping("10.30.0.1", timeout=5)  # ARP learns the new MAC
    assert two.b.interface("eth0").arp.entries[bytes([10, 30, 0, 1])].mac == eth0.mac
    ok(two, "link/set 2 down")
    assert not eth0.up and "state DOWN" in ok(two, "link/print eth0")[0]
    assert two.b.ping("10.30.0.1", timeout=0.5) == []
    ok(two, "link/set eth0 up")
    assert eth0.up and two.b.ping("10.30.0.1", timeout=5)
    fails(two, "link/set eth7 up", errno.ENODEV)
    fails(two, "link/print eth7", errno.ENODEV)
    for bad in ("link/set", "link/set eth0", "link/set eth0 sideways", "link/set eth0 mtu",
                "link/set eth0 mtu 20", "link/set eth0 mtu many", "link/set eth0 mac zz",
                "link/set eth0 mac 01:00:5e:00:00:01", "link/set lo mac 02:00:00:00:00:01",
                "link/set eth0 down mtu 9"):
        fails(two, bad, errno.EINVAL)
    assert eth0.up and eth0.mtu == 1400  # a bad word changed nothing


def test_addr_add_del_print(two):
    assert two.b.ping("10.30.0.9", timeout=0.5) == []
    ok(two, "addr/add eth0 10.30.0.9/24")
    assert "    inet 10.30.0.9/24" in ok(two, "addr/print eth0")
    assert two.b.ping("10.30.0.9", timeout=5)
    fails(two, "addr/add eth0 10.30.0.9/24", errno.EEXIST)
    ok(two, "addr/del eth0 10.30.0.9/24")
    assert "    inet 10.30.0.9/24" not in ok(two, "addr/print")
    fails(two, "addr/del eth0 10.30.0.9/24", errno.EADDRNOTAVAIL)
    fails(two, "addr/add eth5 10.30.0.9/24", errno.ENODEV)
    for bad in ("addr/add", "addr/add eth0", "addr/add eth0 10.300.0.1/24", "addr/add eth0 x/y",
                "addr/add eth0 10.0.0.1/24 extra", "addr/del eth0 nonsense"):
        fails(two, bad, errno.EINVAL)
    lo = ok(two, "addr/print lo")
    assert lo[0].startswith("1: lo: ") and "    inet 127.0.0.1/8" in lo and len(lo) == 3
    ok(two, "addr/add eth0 fc00:31::1/64")
    assert "    inet6 fc00:31::1/64 tentative" in ok(two, "addr/print eth0")


def test_route_add_del_print(two):
    routes = ok(two, "route/print")
    assert "ipv4 default via 10.30.0.254 dev eth0 proto static" in routes
    assert "ipv4 10.30.0.0/24 dev eth0 proto kernel" in routes
    assert "ipv6 fc00:30::/64 dev eth0 proto kernel" in routes
    ok(two, "route/add 192.168.7.0/24 via 10.30.0.2")
    ok(two, "route/add fd00:7::/48 via fc00:30::2 metric 10")
    ok(two, "route/add 10.99.0.0/16 dev eth0")
    assert "192.168.7.0/24 via 10.30.0.2 dev eth0 proto static" in ok(two, "route/print -4")
    six = ok(two, "route/print -6")
    assert "fd00:7::/48 via fc00:30::2 dev eth0 proto static metric 10" in six
    assert not any(" via 10.30" in line for line in six)
    # the route is used: beta answers pings from alpha's new on-link network
    ok(two, "addr/add eth0 10.99.0.1/16")
    two.b.route_add("10.99.0.0/16", dev="eth0")
    assert two.b.ping("10.99.0.1", timeout=5)
    fails(two, "route/add 192.168.7.0/24 via 10.30.0.2", errno.EEXIST)
    fails(two, "route/add 172.16.0.0/12 via 10.77.0.1", errno.ENETUNREACH)
    fails(two, "route/add 172.16.0.0/12 dev eth3", errno.ENODEV)
    for bad in ("route/add", "route/add 10.1.2.3/8 dev eth0", "route/add 172.16.0.0/12",
                "route/add 172.16.0.0/12 via", "route/add 172.16.0.0/12 via nowhere",
                "route/add 172.16.0.0/12 dev eth0 metric x", "route/add 172.16.0.0/12 by eth0",
                "route/del", "route/del 10.0.0.0/33", "route/print -5"):
        fails(two, bad, errno.EINVAL)
    ok(two, "route/del 192.168.7.0/24 via 10.30.0.2")
    fails(two, "route/del 192.168.7.0/24", errno.ESRCH)
    fails(two, "route/del fd00:7::/48 via fc00:30::9", errno.ESRCH)
    ok(two, "route/del fd00:7::/48")
    assert not any("192.168.7.0" in r or "fd00:7::" in r for r in ok(two, "route/print"))


def test_neigh_tcp_udp_print(two):
    assert two.b.ping("10.30.0.1", timeout=5)
    wait_for(lambda: "fc00:30::1/64" in two.a.addresses(6), what="DAD")
    assert two.b.ping("fc00:30::1", timeout=5)
    neigh = ok(two, "neigh/print")
    b_mac = ":".join(f"{x:02x}" for x in two.b.interface("eth0").mac)
    assert any(line.startswith(f"10.30.0.2 dev eth0 lladdr {b_mac} ") for line in neigh), neigh
    assert any(line.startswith(f"fc00:30::2 dev eth0 lladdr {b_mac} ") for line in neigh), neigh
    assert ok(two, "neigh/print lo") == []
    fails(two, "neigh/print eth4", errno.ENODEV)
    # a listener and a connection, both ways
    srv = two.a.socket(socket.AF_INET6, socket.SOCK_STREAM)
    srv.bind(("::", 8080))
    srv.listen(5)
    c = two.b.socket()
    c.settimeout(10)
    c.connect(("10.30.0.1", 8080))
    conn, _ = srv.accept()
    conn.settimeout(10)
    out = ok(two, "tcp/print")
    assert out[0].split() == ["State", "Recv-Q", "Send-Q", "Local", "Address:Port", "Peer",
                              "Address:Port"]
    rows = [line.split() for line in out[1:]]
    assert ["LISTEN", "0", "5", "[::]:8080", "*:*"] in rows
    port = c.getsockname()[1]
    est = [r for r in rows if r[0] == "ESTAB"]
    assert len(est) == 1 and est[0][3:] == ["10.30.0.1:8080", f"10.30.0.2:{port}"], rows
    c.sendall(b"x" * 100)
    assert conn.recv(100) == b"x" * 100
    c.close()
    conn.close()
    srv.close()
    wait_for(lambda: not any(line.startswith("LISTEN") for line in ok(two, "tcp/print")),
             what="listener gone")
    u = two.a.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("10.30.0.1", 5353))
    v = two.a.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    v.bind(("::", 5354))
    rows = [line.split() for line in ok(two, "udp/print")[1:]]
    assert ["UNCONN", "0", "0", "10.30.0.1:5353", "*:*"] in rows
    assert ["UNCONN", "0", "0", "*:5354", "*:*"] in rows
    u.close()
    v.close()


def test_config_and_dns(two, monkeypatch):
    ok(two, "config iface=eth0,ip=10.31.0.1/24,dns=10.30.0.53,domain=example.org")
    assert "10.31.0.1/24" in two.a.addresses(4)
    assert ok(two, "dns/print") == ["search example.org", "nameserver 10.30.0.53"]
    ok(two, r"dns/set nameserver 10.30.0.2\nnameserver fc00:30::2\nsearch a.test b.test")
    assert ok(two, "dns/print") == ["search a.test b.test", "nameserver 10.30.0.2",
                                    "nameserver fc00:30::2"]
    assert two.a.nameservers == ["10.30.0.2", "fc00:30::2"]
    ok(two, "dns/set 10.30.0.3,10.30.0.4")
    assert two.a.nameservers == ["10.30.0.3", "10.30.0.4"]
    fails(two, "dns/set nameserver not-an-address", errno.EINVAL)
    fails(two, "dns/set", errno.EINVAL)
    fails(two, "config", errno.EINVAL)
    fails(two, "config iface=eth0,bogus=1", errno.EINVAL)
    fails(two, "config iface=eth9,ip=10.0.0.1/24", errno.ENODEV)
    fails(two, "config iface=eth0,ip=10.31.0.1/24", errno.EEXIST)
    from threadnet.stack import autoconf

    ok(two, "config iface=eth0,dhcpd=10.30.0.100-10.30.0.109")
    assert ok(two, "dhcpd/print eth0")[0].startswith("eth0: 10.30.0.1/24 pool 10.30.0.100-")
    monkeypatch.setattr(autoconf, "CLIENTS", {})  # a method threadnet has no agent for
    fails(two, "config iface=eth0,dhcp", errno.EOPNOTSUPP)
    fails(two, "hostname " + "x" * 300, errno.EINVAL)


# -- the service: threadnet stack -M, threadnet console, unixterm ---------------------------------
@pytest.fixture
def service(threadnet_switch, procs, sockdir):
    """``threadnet stack`` (10.32.0.1) with a console, daemonized on a ``threadnet switch``;
    a peer stack (10.32.0.2) in this process on the same switch."""
    d, _, _ = threadnet_switch()
    path = os.path.join(sockdir, "st")
    mgmt = os.path.join(sockdir, "st.mgmt")
    pidfile = os.path.join(sockdir, "st.pid")
    pid = procs.daemon(threadnet_cmd("stack", path, "--link", f"vde://{d}", "--config",
                                     "eth,ip=10.32.0.1/24", "-M", mgmt, "-d", "-p", pidfile),
                       pidfile, env=threadnet_env())
    runner = StackRunner("test-stack-service")
    peer = Stack("eth,ip=10.32.0.2/24", link=f"vde://{d}", runner=runner, name="peer")
    yield SimpleNamespace(path=path, mgmt=mgmt, pidfile=pidfile, pid=pid, peer=peer)
    peer.close()
    runner.stop()


def console(mgmt: str, *command: str) -> subprocess.CompletedProcess:
    return subprocess.run(threadnet_cmd("console", mgmt, *command), env=threadnet_env(),
                          capture_output=True, text=True, timeout=30)


def test_service_console(service):
    s = service
    assert stat.S_IMODE(os.stat(s.mgmt).st_mode) == 0o600
    r = console(s.mgmt, "showinfo")
    assert r.returncode == 0, r.stderr
    info = r.stdout.splitlines()
    assert info[0] == "threadnet stack st" and info[2].startswith(f"pid {s.pid} ")
    assert f"published {s.path}" in info and f"mgmt {s.mgmt} perm 0600" in info
    # an address added live is reachable from the peer
    assert s.peer.ping("10.32.0.9", timeout=0.5) == []
    r = console(s.mgmt, "addr/add", "eth0", "10.32.0.9/24")
    assert r.returncode == 0 and r.stdout == "", r.stderr
    assert "    inet 10.32.0.9/24" in console(s.mgmt, "addr/print").stdout.splitlines()
    assert s.peer.ping("10.32.0.9", timeout=5)
    # a connection opened through msocket(PATH) shows in tcp/print, from the new address
    srv = s.peer.socket()
    srv.bind(("", 7))
    srv.listen()
    accepted = []
    t = threading.Thread(target=lambda: accepted.append(srv.accept()[0]), daemon=True)
    t.start()
    c = threadnet.msocket(s.path, socket.AF_INET, socket.SOCK_STREAM)
    c.settimeout(10)
    c.bind(("10.32.0.9", 0))
    c.connect(("10.32.0.2", 7))
    lst = threadnet.msocket(s.path, socket.AF_INET, socket.SOCK_STREAM)
    lst.bind(("", 8081))
    lst.listen(3)
    rows = [line.split() for line in console(s.mgmt, "tcp/print").stdout.splitlines()[1:]]
    port = c.getsockname()[1]
    assert ["ESTAB", "0", "0", f"10.32.0.9:{port}", "10.32.0.2:7"] in rows, rows
    assert ["LISTEN", "0", "3", "0.0.0.0:8081", "*:*"] in rows, rows
    t.join(10)
    c.close()
    lst.close()
    accepted[0].close()
    srv.close()
    # bad commands get errors, and the service keeps running
    for bad, text in ((["bogus"], "Function not implemented"),
                      (["addr/add", "eth9", "10.0.0.1/24"], "No such device"),
                      (["addr/add", "eth0", "10.32.0.9/24"], "File exists"),
                      (["link/set", "eth0", "mtu", "x"], "Invalid argument"),
                      (["route/del", "10.200.0.0/16"], "No such process")):
        r = console(s.mgmt, *bad)
        assert r.returncode == 1 and text in r.stderr, (bad, r.stderr)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:  # junk on the wire
        raw.connect(s.mgmt)
        raw.sendall(b"\xff\xfe\x00" * 500 + b"\nroute/add\x00 x\n" + b"A" * 5000)
    r = console(s.mgmt, "route/print")
    assert r.returncode == 0 and "10.32.0.0/24 dev eth0 proto kernel" in r.stdout
    assert not _gone(s.pid)


def test_unixterm_and_shutdown(service, procs):
    need_tool("unixterm")
    s = service
    out = unixterm(procs, s.mgmt, ["link/print", "link/set eth0 mtu 1300", "link/print eth0",
                                   "frobnicate", "logout"], timeout=10.0, prompt=b"stack$ ")
    assert out.startswith("threadnet stack st\n")
    replies = out.split("\nstack$ ")[1:]
    first = replies[0].strip("\n").split("\n")
    assert first[0] == "0000 DATA END WITH '.'" and first[-2:] == [".", "1000 Success"]
    assert first[1] == "1: lo: <LOOPBACK,UP> mtu 65536 state UP"
    assert first[4].startswith("    link/ether ") and first[4].endswith(" url vde://" +
                                                                        first[4].split("vde://")[1])
    assert replies[1].strip("\n") == "1000 Success"
    assert "2: eth0: <BROADCAST,MULTICAST,UP> mtu 1300 state UP" in replies[2]
    assert replies[3].strip("\n") == "1038 Function not implemented"
    assert "9999 END OF SESSION" in replies[4]
    # the format is the one format_reply makes for the switch
    with ConsoleClient(s.mgmt) as client:
        err, lines, _ = client.run("hostname")
        assert (err, lines) == (0, ["st"])
        assert format_reply(0, lines) == "0000 DATA END WITH '.'\nst\n.\n1000 Success\n"
    # shutdown ends the service and removes PATH, the console socket and the pidfile
    r = console(s.mgmt, "shutdown")
    assert r.returncode == 0, r.stderr
    wait_for(lambda: _gone(s.pid), timeout=10, what="the stack service to exit")
    for p in (s.path, s.mgmt, s.pidfile):
        assert not os.path.exists(p), p


def test_logout_reply_comes_before_the_hang_up(sockdir):
    """Debian's unixterm tests POLLHUP before POLLIN and quits: a console that closed at
    once after ``9999 END OF SESSION`` could lose that line. The console shuts its side
    first, so a client that polls only after the reply is out sees it readable without a
    hang-up, and the hang-up comes after the grace time."""
    import select
    import time

    from threadnet.loop import EventLoop
    from threadnet.mgmt.commands import CommandTable
    from threadnet.mgmt.console import END_GRACE, ConsoleServer

    loop = EventLoop()
    path = os.path.join(sockdir, "c.mgmt")
    server = ConsoleServer(loop, path, CommandTable(), "banner\n", "x$ ")
    t = threading.Thread(target=loop.run, daemon=True)
    t.start()
    try:
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.connect(path)
        c.settimeout(5)
        got = b""
        while not got.endswith(b"x$ "):
            got += c.recv(1024)
        c.sendall(b"logout\n")
        time.sleep(END_GRACE / 4)  # the reply is out; the server has not closed yet
        p = select.poll()
        p.register(c, select.POLLIN | select.POLLHUP)
        [(_, events)] = p.poll(1000)
        assert events & select.POLLIN and not events & select.POLLHUP
        assert c.recv(1024) == b"9999 END OF SESSION"
        time.sleep(END_GRACE * 2)
        [(_, events)] = p.poll(1000)
        assert events & select.POLLHUP  # and then the session is closed
        c.close()
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        t.join(5)
