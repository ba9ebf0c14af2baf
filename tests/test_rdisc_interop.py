"""Router discovery, SLAAC and the RA server against real peers (issue 10, acceptance 2,
4 and 7): a stack on a threadnet switch and a Linux network namespace joined to it by
Debian's vde_plug2tap.

* dnsmasq's router advertisements (``--enable-ra``, ``ra-only``) configure a stack with
  ``slaac``: its RFC 7217 address, a default route through dnsmasq's link-local address,
  the DNS server and search domain; the stack and the namespace ping each other.
* the stack's RA server makes the kernel (accept_ra, autoconf) configure an address in the
  advertised prefix, a default route through the stack and the MTU; its last
  advertisement takes the route away again.
* the kernel holds the address the stack derives: the stack's DAD fails, the address is
  marked dadfailed, and the next one (RFC 7217's counter 1) is taken.

Every capture of the switch is decoded by tshark: nothing malformed, no bad checksum.
Needs root (namespaces, taps); namespaces, processes and sockets go at teardown."""

from __future__ import annotations

import ipaddress
import json
import os
import shutil

import pytest

from threadnet import Stack
from threadnet.stack.rdisc import stable_iid, stable_secret
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import need_tool, wait_for
from stack_helpers import assert_capture_clean

pytestmark = pytest.mark.root

SECRET = bytes.fromhex("00112233445566778899aabbccddeeff")
PREFIX = ipaddress.IPv6Network("fd00:77::/64")


@pytest.fixture
def runner():
    r = StackRunner("test-rdisc")
    yield r
    r.stop()


@pytest.fixture
def lan(netns, procs, sockdir):
    """A threadnet switch (captured to sw.pcap) and a namespace with tap ``tnr0`` on it
    (vde_plug2tap); returns (switch, namespace)."""
    need_tool("vde_plug2tap")
    pcap = os.path.join(sockdir, "sw.pcap")
    sw = SwitchServer(os.path.join(sockdir, "sw"), pcap=pcap).start()
    try:
        ns = netns.add()
        netns.run(ns, "ip", "tuntap", "add", "dev", "tnr0", "mode", "tap")
        pidfile = os.path.join(sockdir, "p2t.pid")
        procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", sw.directory, "-d", "-P",
                                    pidfile, "tnr0"), pidfile)
        yield sw, ns
    finally:
        sw.close()


def kernel_ll(netns, ns: str) -> str:
    addrs = json.loads(netns.run(ns, "ip", "-6", "-j", "addr", "show", "dev", "tnr0").stdout)
    return next(a["local"] for a in addrs[0]["addr_info"] if a["local"].startswith("fe80:")
                and "tentative" not in a)


def start_dnsmasq(netns, procs, sockdir, ns: str) -> None:
    """dnsmasq answering router solicitations on tnr0 for fd00:77::/64 (ra-only: SLAAC,
    no DHCPv6), with a DNS server and a search domain; run in the foreground, ended by
    PID at teardown."""
    need_tool("dnsmasq")
    log = os.path.join(sockdir, "dnsmasq.log")
    procs.popen(netns.exec_cmd(
        ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
        "--interface=tnr0", "--bind-interfaces", "--enable-ra",
        "--dhcp-range=fd00:77::,ra-only,64,2h",
        "--dhcp-option=option6:dns-server,[fd00:77::53]",
        "--dhcp-option=option6:domain-search,lan.example",
        f"--dhcp-leasefile={os.path.join(sockdir, 'leases')}",
        f"--pid-file={os.path.join(sockdir, 'dnsmasq.pid')}", f"--log-facility={log}"))
    wait_for(lambda: os.path.exists(log) and "router advertisement" in open(log).read(),
             10, what="dnsmasq's router advertisements")


def stack_on(sw, runner, name: str) -> Stack:
    """A stack with one interface on ``sw``, its RFC 7217 secret set, not configured."""
    s = Stack(link=f"vde://{sw.directory}", runner=runner, name=name)
    with s.locked():
        stable_secret(s, SECRET)
    return s


def expected(counter: int) -> str:
    iid = stable_iid(PREFIX.network_address.packed, "eth0", b"", counter, SECRET)
    return str(ipaddress.IPv6Address(PREFIX.network_address.packed[:8] + iid))


def v6(s: Stack, addr: str):
    return next((a for a in s.interfaces[2].v6 if a.addr == ipaddress.IPv6Address(addr).packed),
                None)


def capture_clean(sw, sockdir: str) -> None:
    if shutil.which("tshark") is None:
        return
    sw.set_capture(None, None)
    assert_capture_clean(os.path.join(sockdir, "sw.pcap"), icmpv6=4)


def test_slaac_from_dnsmasq(lan, netns, procs, sockdir, runner):
    """Acceptance 2 (SLAAC and RD part)."""
    sw, ns = lan
    for cmd in (("ip", "addr", "add", "fd00:77::1/64", "dev", "tnr0", "nodad"),
                ("ip", "link", "set", "tnr0", "up")):
        netns.run(ns, *cmd)
    start_dnsmasq(netns, procs, sockdir, ns)
    s = stack_on(sw, runner, "slaac-dnsmasq")
    try:
        with s.locked():  # (the runner runs it)
            s.configure("eth,slaac")
        mine = expected(0)
        wait_for(lambda: f"{mine}/64" in s.addresses(6), 20, what="the SLAAC address")
        a = v6(s, mine)
        assert (a.origin, a.valid_until - a.preferred_until) == ("ra", 0)  # 2 h both
        router = kernel_ll(netns, ns)
        with s.locked():
            defaults = [r for r in s.routes6 if r.dst.prefixlen == 0]
            onlink = [r for r in s.routes6 if r.dst == PREFIX]
        assert [(str(r.gateway), r.proto) for r in defaults] == [(router, "ra")]
        assert [(r.gateway, r.proto) for r in onlink] == [(None, "ra")]
        assert s.nameservers == ["fd00:77::53"]
        assert s.resolver.learned()["rd:eth0"] == (["fd00:77::53"], ["lan.example"])
        (agent,) = s.find_agents("rd")
        with s.locked():
            d = agent.describe()
        assert d["routers"][0]["address"] == router and not d["managed"]
        assert d["prefixes"][0]["prefix"] == str(PREFIX)
        # the stack and the namespace reach each other over the global addresses
        assert len(s.ping("fd00:77::1", count=2)) == 2
        r = netns.run(ns, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", mine, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        # and beyond the prefix through the router (dnsmasq's host answers for it)
        netns.run(ns, "ip", "addr", "add", "fd00:99::1/128", "dev", "lo")
        assert len(s.ping("fd00:99::1", count=1)) == 1
    finally:
        s.close()
    capture_clean(sw, sockdir)


def test_the_stacks_ra_server_configures_linux(lan, netns, sockdir, runner):
    """Acceptance 4: accept_ra and autoconf in the namespace take the stack's prefix, its
    default route and MTU; the server's last advertisement removes the route."""
    sw, ns = lan
    s = Stack("eth,ip=fd00:88::1/64,ra=fd00:88::/64,ra.rdnss=fd00:88::53,ra.mtu=1400,"
              "ra.interval=5", link=f"vde://{sw.directory}", runner=runner, name="ra-server",
              forwarding=True)
    try:
        for key, value in (("accept_ra", "2"), ("autoconf", "1")):
            netns.run(ns, "sysctl", "-qw", f"net.ipv6.conf.tnr0.{key}={value}")
        netns.run(ns, "ip", "link", "set", "tnr0", "up")

        def kernel_global():
            addrs = json.loads(netns.run(ns, "ip", "-6", "-j", "addr", "show", "dev",
                                         "tnr0").stdout)[0]["addr_info"]
            return [a for a in addrs if ipaddress.IPv6Address(a["local"]) in
                    ipaddress.IPv6Network("fd00:88::/64") and "tentative" not in a]

        (addr,) = wait_for(kernel_global, 20, what="the kernel's SLAAC address")
        assert addr["prefixlen"] == 64 and addr.get("dynamic") is True
        assert addr["valid_life_time"] > 2592000 - 60
        with s.locked():
            ll = next(str(ipaddress.IPv6Address(a.addr)) for a in s.interfaces[2].v6
                      if a.addr[:2] == b"\xfe\x80")
        routes = json.loads(netns.run(ns, "ip", "-6", "-j", "route", "show", "default").stdout)
        assert [(r["gateway"], r["dev"], r["protocol"]) for r in routes] == [(ll, "tnr0", "ra")]
        assert netns.run(ns, "sysctl", "-n", "net.ipv6.conf.tnr0.mtu").stdout.strip() == "1400"
        # the namespace and the stack reach each other
        r = netns.run(ns, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", "fd00:88::1",
                      check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(s.ping(addr["local"], count=2)) == 2
        (server,) = s.find_agents("ra")
        assert server.counters["ra"] >= 1
        # the last advertisement: lifetime 0, the kernel drops its default route
        with s.locked():
            s.configure("-ra")
        wait_for(lambda: not json.loads(netns.run(ns, "ip", "-6", "-j", "route", "show",
                                                  "default").stdout),
                 5, what="the kernel to drop the route through the stack")
    finally:
        s.close()
    capture_clean(sw, sockdir)


def test_a_slaac_address_the_kernel_holds_fails_dad(lan, netns, procs, sockdir, runner):
    """Acceptance 7 (SLAAC part): the namespace already has the address the stack derives
    first; the stack marks it dadfailed and takes the next one."""
    sw, ns = lan
    taken = expected(0)
    for cmd in (("ip", "addr", "add", "fd00:77::1/64", "dev", "tnr0", "nodad"),
                ("ip", "addr", "add", f"{taken}/64", "dev", "tnr0", "nodad"),
                ("ip", "link", "set", "tnr0", "up")):
        netns.run(ns, *cmd)
    start_dnsmasq(netns, procs, sockdir, ns)
    s = stack_on(sw, runner, "slaac-dad")
    try:
        with s.locked():  # (the runner runs it)
            s.configure("eth,slaac")
        wait_for(lambda: (a := v6(s, taken)) is not None and a.state == "dadfailed", 20,
                 what="DAD to fail")
        second = expected(1)
        wait_for(lambda: f"{second}/64" in s.addresses(6), 10, what="the next address")
        assert f"{taken}/64" not in s.addresses(6)
        (agent,) = s.find_agents("rd")
        with s.locked():
            d = agent.describe()
        assert d["counters"]["dad_failed"] == 1 and d["prefixes"][0]["dad_counter"] == 1
        assert [a["dadfailed"] for a in d["addresses"]] == [True, False]
        # the namespace keeps its address, and reaches the stack on the new one
        r = netns.run(ns, "ping", "-6", "-c", "1", "-W", "2", second, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        s.close()
    capture_clean(sw, sockdir)
