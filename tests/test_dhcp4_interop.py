"""DHCPv4 against real peers (issue 10's acceptance 1, 3, 5 and 7), in network
namespaces joined to an in-process threadnet switch by Debian's ``vde_plug2tap``:

1. a stack with ``eth,dhcp`` gets its lease from dnsmasq, resolves a name dnsmasq
   serves with the DNS server the lease gave, fetches over HTTP from a server in a
   second namespace reached through the router the lease gave, renews against dnsmasq
   (at the T1 dnsmasq sends: ``--dhcp-option=option:T1``), and its RELEASE on close
   removes the lease from dnsmasq's lease file;
3. a stack's DHCP server leases to busybox ``udhcpc`` and ISC ``dhclient``: each
   configures its address and default route and pings the stack, they get different
   addresses, a reservation is honoured, and a new server stack with the same lease
   file gives each client its address again;
5. 10,000 DISCOVERs from random MACs (raw frames from a namespace) leave the server's
   lease table within its pool, and udhcpc still gets an address;
7. an address a namespace already holds is DECLINEd by a stack's client, which takes
   another.

Needs root (namespaces, taps); skipped otherwise. Every namespace, tap, process and
file is removed at the end, by the fixtures, even on failure.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from threadnet import Stack
from threadnet.stack.dhcp4client import BOUND
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import need_tool, read_pidfile, wait_for

pytestmark = pytest.mark.root

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc's events: configure the interface as its default.script would, and log them
echo "$1 ip=$ip mask=$mask router=$router dns=$dns lease=$lease serverid=$serverid" >> {log}
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${{mask:-24}}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${{router%% *}}" dev "$interface"
    ;;
esac
exit 0
"""

DHCLIENT_SCRIPT = """#!/bin/sh
# dhclient's events (-sf): what dhclient-script does for addresses and routes, logged
echo "$reason ip=$new_ip_address mask=$new_subnet_mask routers=$new_routers dns=$new_domain_name_servers lease=$new_dhcp_lease_time" >> {log}
case "$reason" in
  PREINIT) ip link set "$interface" up ;;
  BOUND|RENEW|REBIND|REBOOT)
    ip addr flush dev "$interface"
    ip addr add "$new_ip_address/$new_subnet_mask" dev "$interface"
    for r in $new_routers; do ip route replace default via "$r" dev "$interface"; break; done
    ;;
  EXPIRE|FAIL|RELEASE|STOP) ip addr flush dev "$interface" ;;
esac
exit 0
"""

#: raw Ethernet frames of DISCOVERs from random MACs, sent from a namespace 50 at a time:
#: a DISCOVER whose OFFER does not come back (a frame lost on a busy machine) is sent
#: again, so the server really gets every one of them
FLOOD = r"""
import random, select, socket, struct, sys, time
iface, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((iface, 0))
rng = random.Random(10)

def csum(b):
    v = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while v >> 16: v = (v & 0xFFFF) + (v >> 16)
    return ~v & 0xFFFF

def frame(i, mac):
    dhcp = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, i, 0, 0, bytes(4), bytes(4),
                       bytes(4), bytes(4), mac, b"", b"") + b"\x63\x82\x53\x63\x35\x01\x01\xff"
    dhcp += bytes(300 - len(dhcp))
    udp = struct.pack("!HHHH", 68, 67, 8 + len(dhcp), 0) + dhcp
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), i & 0xFFFF, 0, 64, 17, 0,
                     bytes(4), b"\xff" * 4)
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp

sent = resent = 0
for start in range(0, count, 50):
    window = {i: frame(i, bytes([2]) + rng.randbytes(5)) for i in range(start, min(start + 50, count))}
    for attempt in range(20):
        for f in window.values():
            s.send(f)
        sent += len(window)
        resent += len(window) if attempt else 0
        deadline = time.monotonic() + 0.5
        while window and time.monotonic() < deadline:
            if not select.select([s], [], [], max(0.0, deadline - time.monotonic()))[0]:
                break
            f = s.recv(2048)
            if len(f) >= 42 + 8 and f[12:14] == b"\x08\x00" and f[23] == 17 \
                    and f[36:38] == b"\x00\x44" and f[42] == 2:
                window.pop(struct.unpack_from("!I", f, 46)[0], None)
        if not window:
            break
    else:
        sys.exit(f"no OFFER for {sorted(window)[:5]}...")
print("offered", count, "sent", sent, "resent", resent, flush=True)
"""


class Lan:
    """An in-process switch, a runner for stacks, and namespaces plugged into the switch
    with a tap each."""

    def __init__(self, netns, procs, sockdir: str) -> None:
        self.netns, self.procs, self.dir = netns, procs, sockdir
        self.switch = SwitchServer(os.path.join(sockdir, "sw")).start()
        self.runner = StackRunner("test-dhcp4-interop")
        self.url = f"vde://{self.switch.directory}"
        self.stacks: list[Stack] = []
        self.taps = 0

    def stack(self, config: str, **kw) -> Stack:
        s = Stack(config, link=self.url, runner=self.runner, **kw)
        self.stacks.append(s)
        return s

    def plug(self, ns: str, mac: str, addr: str | None = None) -> str:
        """A tap in ``ns`` with ``mac`` (and ``addr``), up, joined to the switch; its name."""
        tap = f"tntap{self.taps}"
        self.taps += 1
        self.netns.run(ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
        self.netns.run(ns, "ip", "link", "set", tap, "address", mac)
        if addr is not None:
            self.netns.run(ns, "ip", "addr", "add", addr, "dev", tap)
        self.netns.run(ns, "ip", "link", "set", tap, "up")
        pidfile = os.path.join(self.dir, f"{tap}.pid")
        self.procs.daemon(self.netns.exec_cmd(ns, "vde_plug2tap", "-s", self.switch.directory,
                                              "-d", "-P", pidfile, tap), pidfile)
        return tap

    def write(self, name: str, text: str, mode: int = 0o644) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(text)
        os.chmod(path, mode)
        return path

    def close(self) -> None:
        for s in self.stacks:
            s.close()
        self.runner.stop()
        self.switch.close()


@pytest.fixture
def lan(netns, procs, sockdir):
    need_tool("vde_plug2tap")
    w = Lan(netns, procs, sockdir)
    try:
        yield w
    finally:
        w.close()


def client_of(stack: Stack):
    (agent,) = stack.find_agents("dhcp4")
    return agent


def wait_bound(stack: Stack, timeout: float = 40.0):
    agent = client_of(stack)
    wait_for(lambda: agent.state == BOUND, timeout, what=f"a lease for {stack.name} "
             f"(state {agent.state}, {agent.stats})")
    return agent


# -- 1. a stack's client against dnsmasq ---------------------------------------------------

@pytest.fixture
def dnsmasq(lan):
    """dnsmasq serving DHCP and DNS in namespace ``r`` (10.61.0.1 on the switch), which
    routes to namespace ``web`` (10.62.0.80, an HTTP server)."""
    need_tool("dnsmasq")
    netns = lan.netns
    r, web = netns.add(), netns.add()
    tap = lan.plug(r, "02:61:00:00:00:01", "10.61.0.1/24")
    netns.run(r, "ip", "link", "add", "tnv0", "type", "veth", "peer", "name", "tnv1",
              "netns", web)
    netns.run(r, "ip", "addr", "add", "10.62.0.1/24", "dev", "tnv0")
    netns.run(r, "ip", "link", "set", "tnv0", "up")
    netns.run(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
    netns.run(web, "ip", "addr", "add", "10.62.0.80/24", "dev", "tnv1")
    netns.run(web, "ip", "link", "set", "tnv1", "up")
    netns.run(web, "ip", "route", "add", "default", "via", "10.62.0.1")
    www = os.path.join(lan.dir, "www")
    os.mkdir(www)
    with open(os.path.join(www, "hello.txt"), "w") as f:
        f.write("hello from past the router\n")
    http = lan.procs.popen(netns.exec_cmd(web, "python3", "-u", "-m", "http.server", "--bind",
                                          "10.62.0.80", "--directory", www, "8080"),
                           stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "Serving HTTP" in http.stdout.readline()
    leases = os.path.join(lan.dir, "dnsmasq.leases")
    log = os.path.join(lan.dir, "dnsmasq.log")
    lan.procs.popen(netns.exec_cmd(
        r, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", f"--interface={tap}",
        "--bind-interfaces", "--except-interface=lo", "--no-resolv", "--no-hosts",
        "--user=root", "--dhcp-authoritative", "--dhcp-range=10.61.0.100,10.61.0.150,2m",
        "--dhcp-option=option:router,10.61.0.1", "--dhcp-option=option:dns-server,10.61.0.1",
        # renew early (dnsmasq's shortest lease is 2 minutes): the T1 the server gives
        "--dhcp-option=option:T1,8", "--dhcp-option=option:T2,100",
        "--domain=test.example", "--address=/web.test.example/10.62.0.80",
        f"--dhcp-leasefile={leases}", "--log-dhcp", "--log-queries", f"--log-facility={log}"),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(log) and "DHCP, IP range" in open(log).read(), 10,
             what="dnsmasq")
    return leases, log


def test_a_stack_leases_from_dnsmasq_uses_its_router_and_dns_renews_and_releases(lan, dnsmasq):
    leases, log = dnsmasq
    stack = lan.stack("eth,dhcp", name="dhcp-client")
    mac = ":".join(f"{b:02x}" for b in stack.interfaces[2].mac)
    agent = wait_bound(stack)
    addr = agent.describe()["address"]
    host, plen = addr.split("/")
    assert plen == "24" and 100 <= int(host.split(".")[-1]) <= 150
    routes = [(str(r.gateway), r.proto) for r in stack.routes4 if r.dst.prefixlen == 0]
    assert routes == [("10.61.0.1", "dhcp")]
    assert stack.nameservers == ["10.61.0.1"] and stack.resolver.search == ["test.example"]
    wait_for(lambda: f"{mac} {host}" in open(leases).read(), 5, what="dnsmasq's lease file")
    # a name dnsmasq serves, through the DNS server the lease gave
    assert stack.gethostbyname("web.test.example") == "10.62.0.80"
    assert stack.gethostbyname("web") == "10.62.0.80"  # the search domain it gave
    # and HTTP from past the router the lease gave
    with stack.socket() as s:
        s.settimeout(10)
        s.connect(("web.test.example", 8080))
        s.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: web.test.example\r\n\r\n")
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"hello from past the router\n")
    # renewal at dnsmasq's T1 (8 s): a unicast REQUEST, dnsmasq's ACK extends the lease
    first = agent.expires_at
    wait_for(lambda: agent.stats.get("got_ack", 0) >= 2, 30, what="a renewal")
    assert agent.state == BOUND and agent.expires_at > first
    text = open(log).read()
    assert text.count(f"DHCPACK(tntap0) {host} {mac}") >= 2
    # RELEASE on close: dnsmasq drops the lease
    stack.close()
    wait_for(lambda: f"DHCPRELEASE(tntap0) {host} {mac}" in open(log).read(), 5,
             what="dnsmasq's log of the RELEASE")
    wait_for(lambda: mac not in open(leases).read(), 5, what="the lease gone from the file")


# -- 3. a stack's server for udhcpc and dhclient ------------------------------------------------

def udhcpc(lan, ns: str, tap: str, log: str, timeout: float = 30) -> None:
    script = lan.write(f"udhcpc-{ns}.sh", UDHCPC_SCRIPT.format(log=log), 0o755)
    r = lan.netns.run(ns, "udhcpc", "-f", "-q", "-n", "-t", "5", "-T", "2", "-i", tap,
                      "-s", script, check=False, timeout=timeout)
    assert r.returncode == 0, r.stderr


def dhclient(lan, ns: str, tap: str, log: str, tag: str) -> int:
    """dhclient in ``ns`` until bound (it then goes to the background: its PID)."""
    script = lan.write(f"dhclient-{ns}.sh", DHCLIENT_SCRIPT.format(log=log), 0o755)
    conf = lan.write(f"dhclient-{ns}.conf", "")
    pidfile = os.path.join(lan.dir, f"dhclient-{ns}-{tag}.pid")
    leasefile = os.path.join(lan.dir, f"dhclient-{ns}.leases")
    r = lan.netns.run(ns, "dhclient", "-4", "-1", "-v", "-sf", script, "-cf", conf,
                      "-pf", pidfile, "-lf", leasefile, tap, check=False, timeout=60)
    assert r.returncode == 0, r.stderr
    # (the parent may exit before the daemon writes its PID)
    return lan.procs.adopt(read_pidfile(pidfile))


def configured(lan, ns: str, tap: str) -> tuple[str, str]:
    """(address/prefix on ``tap``, default route's gateway) in ``ns``."""
    import json

    addrs = json.loads(lan.netns.run(ns, "ip", "-j", "-4", "addr", "show", "dev", tap).stdout)
    info = addrs[0]["addr_info"]
    routes = json.loads(lan.netns.run(ns, "ip", "-j", "-4", "route", "show", "default").stdout)
    return (f"{info[0]['local']}/{info[0]['prefixlen']}" if info else "",
            routes[0]["gateway"] if routes else "")


def stop(pid: int) -> None:
    os.kill(pid, 15)
    wait_for(lambda: not os.path.exists(f"/proc/{pid}") or
             open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z", 10,
             what=f"process {pid} to stop")


def test_a_stacks_server_leases_to_udhcpc_and_dhclient_and_keeps_leases_across_a_restart(lan):
    need_tool("udhcpc", "dhclient")
    netns = lan.netns
    leases = os.path.join(lan.dir, "dhcpd.leases")
    server_cfg = ("eth,ip=10.64.0.1/24,dhcpd=10.64.0.100-10.64.0.150,dhcpd.lease=600,"
                  f"dhcpd.host=02:64:00:00:00:0b/10.64.0.42,dhcpd.leases={leases},"
                  "dhcpd.dns=10.64.0.53")
    server = lan.stack(server_cfg, name="dhcp-server")
    a, b, c = netns.add(), netns.add(), netns.add()
    tap_a = lan.plug(a, "02:64:00:00:00:0a")
    tap_b = lan.plug(b, "02:64:00:00:00:0b")  # reserved: 10.64.0.42
    tap_c = lan.plug(c, "02:64:00:00:00:0c")
    log = {ns: os.path.join(lan.dir, f"{ns}.log") for ns in (a, b, c)}
    udhcpc(lan, a, tap_a, log[a])
    pid_c = dhclient(lan, c, tap_c, log[c], "1")
    dhclient(lan, b, tap_b, log[b], "1")
    assert configured(lan, a, tap_a) == ("10.64.0.100/24", "10.64.0.1")  # busybox
    assert configured(lan, c, tap_c) == ("10.64.0.101/24", "10.64.0.1")  # ISC: another
    assert configured(lan, b, tap_b) == ("10.64.0.42/24", "10.64.0.1")  # the reservation
    for ns in (a, b, c):
        assert "dns=10.64.0.53" in open(log[ns]).read()
        r = netns.run(ns, "ping", "-c", "2", "-W", "2", "10.64.0.1", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    (srv,) = server.find_agents("dhcpd")
    with server.locked():
        rows = {row["address"]: row for row in srv.table(server._api_now(None))}
    assert {k: (v["mac"], v["state"]) for k, v in rows.items()} == {
        "10.64.0.100": ("02:64:00:00:00:0a", "bound"),
        "10.64.0.101": ("02:64:00:00:00:0c", "bound"),
        "10.64.0.42": ("02:64:00:00:00:0b", "bound")}
    text = open(leases).read()
    for line in ("02:64:00:00:00:0a 10.64.0.100", "02:64:00:00:00:0c 10.64.0.101",
                 "02:64:00:00:00:0b 10.64.0.42"):
        assert line in text
    # the server restarts: a new stack, the same configuration and lease file
    server.close()
    lan.stacks.remove(server)
    stop(pid_c)
    server2 = lan.stack(server_cfg, name="dhcp-server2")
    (srv2,) = server2.find_agents("dhcpd")
    # a new client first: it gets neither leased address (without the file: .100)
    d = netns.add()
    tap_d = lan.plug(d, "02:64:00:00:00:0d")
    udhcpc(lan, d, tap_d, os.path.join(lan.dir, "d.log"))
    assert configured(lan, d, tap_d) == ("10.64.0.102/24", "10.64.0.1")
    # then the old ones: udhcpc starts over with a DISCOVER, dhclient asks for its
    # lease's address (INIT-REBOOT): each gets its address again
    udhcpc(lan, a, tap_a, log[a])
    dhclient(lan, c, tap_c, log[c], "2")
    assert configured(lan, a, tap_a) == ("10.64.0.100/24", "10.64.0.1")
    assert configured(lan, c, tap_c) == ("10.64.0.101/24", "10.64.0.1")
    assert "REBOOT ip=10.64.0.101" in open(log[c]).read()
    assert srv2.stats.get("discover", 0) >= 2 and srv2.stats.get("request", 0) >= 3
    for ns in (a, c, d):
        assert netns.run(ns, "ping", "-c", "1", "-W", "2", "10.64.0.1",
                         check=False).returncode == 0


# -- 5. a flood of DISCOVERs --------------------------------------------------------------

def test_ten_thousand_discovers_leave_the_table_bounded_and_udhcpc_served(lan):
    need_tool("udhcpc")
    netns = lan.netns
    server = lan.stack("eth,ip=10.65.0.1/24,dhcpd=10.65.0.100-10.65.0.149", name="flooded")
    (srv,) = server.find_agents("dhcpd")
    ns = netns.add()
    tap = lan.plug(ns, "02:65:00:00:00:0a")
    flood = lan.write("flood.py", FLOOD)
    r = netns.run(ns, "python3", flood, tap, "10000", timeout=600, check=False)
    assert r.returncode == 0 and "offered 10000" in r.stdout, r.stdout + r.stderr
    assert srv.stats["discover"] >= 10_000 and srv.stats["sent_offer"] >= 10_000
    with server.locked():
        assert len(srv.leases) <= 50 and len(srv.offers) <= 50 and len(srv.by_client) <= 50
    log = os.path.join(lan.dir, "flood-udhcpc.log")
    udhcpc(lan, ns, tap, log)
    addr, gw = configured(lan, ns, tap)
    assert addr.startswith("10.65.0.1") and gw == "10.65.0.1"
    assert netns.run(ns, "ping", "-c", "1", "-W", "2", "10.65.0.1", check=False).returncode == 0
    with server.locked():
        assert len(srv.leases) <= 50 and srv.describe()["bound"] == 1


# -- 7. an address in use is declined ------------------------------------------------------------

def test_an_address_a_namespace_holds_is_declined_and_another_taken(lan):
    netns = lan.netns
    server = lan.stack("eth,ip=10.66.0.1/24,dhcpd=10.66.0.100-10.66.0.110", name="server")
    ns = netns.add()
    lan.plug(ns, "02:66:00:00:00:0a", "10.66.0.100/24")  # holds the pool's first address
    client = lan.stack("eth,dhcp", name="client")
    agent = wait_bound(client, 60)
    assert agent.describe()["address"] == "10.66.0.101/24"
    assert agent.stats["sent_decline"] == 1
    (srv,) = server.find_agents("dhcpd")
    with server.locked():
        rows = {row["address"]: row["state"] for row in srv.table(server._api_now(None))}
    assert rows == {"10.66.0.100": "declined", "10.66.0.101": "bound"}
    assert "10.66.0.100/24" not in client.addresses(4)
    # and the namespace keeps its address: it still answers from it
    t = time.monotonic()
    assert client.ping("10.66.0.100", count=1, timeout=3)
    assert time.monotonic() - t < 5
