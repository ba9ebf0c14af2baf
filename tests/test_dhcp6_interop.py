"""The DHCPv6 client and server against real peers (issue 10, acceptance 2 and 4, their
DHCPv6 parts), each in a network namespace joined to a threadnet switch by Debian's
``vde_plug2tap``:

* a stack with ``eth,dhcp6,rd`` gets an IA_NA address from dnsmasq's DHCPv6 server, with
  the DNS server and the domain dnsmasq gives, and the on-link prefix from dnsmasq's
  router advertisements (M flag, no autonomous prefix: no SLAAC address); it pings the
  namespace from that address (and is pinged at it), and its RELEASE on close empties
  dnsmasq's lease file;
* the stack's DHCPv6 server (``dhcpd6``) leases an address to ISC ``dhclient -6``,
  which applies it with our script, while the stack's RA server (``ra.managed``) gives
  the namespace the on-link prefix; the namespace pings the stack from the leased
  address, and dhclient's RELEASE frees the lease.

Root only (namespaces, taps). Everything (namespaces, taps, processes, sockets) is removed
by the fixtures, by PID, even on failure. Traffic stays inside the namespaces and the
in-process switch.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer
from threadnet.wire import dhcp6

from conftest import need_tool, wait_for


@pytest.fixture
def lan(netns, procs, sockdir):
    """A threadnet switch in this process, a runner, and a namespace with a tap (no
    address but its link-local one) joined to the switch: (switch dir, runner, ns, tap)."""
    need_tool("vde_plug2tap")
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-dhcp6")
    try:
        ns = netns.add()
        tap = "tn6d0"
        netns.run(ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
        netns.run(ns, "ip", "link", "set", tap, "up")
        pidfile = os.path.join(sockdir, "p2t.pid")
        procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", sw.directory, "-d", "-P", pidfile,
                                    tap), pidfile)
        yield sw.directory, runner, ns, tap
    finally:
        runner.stop()
        sw.close()


def link_local_ready(netns, ns: str, tap: str) -> bool:
    """The tap's link-local address has passed DAD (DHCPv6 speaks from it)."""
    info = json.loads(netns.run(ns, "ip", "-j", "-6", "addr", "show", "dev", tap).stdout)
    return any(a.get("scope") == "link" and not a.get("tentative")
               for i in info for a in i.get("addr_info", []))


def dnsmasq_leases(path: str) -> list[list[str]]:
    """dnsmasq's lease file, its DHCPv6 part: [expiry, iaid, address, name, client-id]."""
    try:
        with open(path) as f:
            lines = [line.split() for line in f]
    except FileNotFoundError:
        return []
    v6, out = False, []
    for words in lines:
        if words and words[0] == "duid":
            v6 = True
        elif v6 and len(words) >= 5:
            out.append(words)
    return out


def test_stack_leases_from_dnsmasq_dhcpv6(lan, netns, procs, sockdir):
    need_tool("dnsmasq", "ping")
    swdir, runner, ns, tap = lan
    netns.run(ns, "ip", "addr", "add", "fd00:6d::1/64", "dev", tap, "nodad")
    leases = os.path.join(sockdir, "dnsmasq.leases")
    log = os.path.join(sockdir, "dnsmasq.log")
    dnsmasq = procs.popen(netns.exec_cmd(
        ns, "dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--port=0", "--user=root",
        f"--interface={tap}", "--bind-interfaces", "--pid-file=",
        "--dhcp-range=fd00:6d::100,fd00:6d::1ff,64,1h", "--enable-ra",
        "--dhcp-option=option6:dns-server,[fd00:6d::53]",
        "--dhcp-option=option6:domain-search,test.example",
        f"--dhcp-leasefile={leases}", f"--log-facility={log}", "--log-dhcp"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: os.path.exists(log) and "DHCPv6" in open(log).read(), 10,
             what="dnsmasq's DHCPv6 service")
    stack = Stack("eth,dhcp6,rd", link=f"vde://{swdir}", runner=runner, name="dhcp6client")
    try:
        (client,) = stack.find_agents("dhcp6")

        def bound() -> bool:
            with stack.locked():
                return client.state == "bound"

        wait_for(bound, 20, what=f"a DHCPv6 lease from dnsmasq ({client.describe()})")
        with stack.locked():
            info = client.describe()
        (leased,) = [a["address"] for a in info["addresses"]]
        assert ipaddress.IPv6Address("fd00:6d::100") <= ipaddress.IPv6Address(leased) \
            <= ipaddress.IPv6Address("fd00:6d::1ff")
        assert info["dns"] == ["fd00:6d::53"] and info["domains"] == ["test.example"]
        assert stack.nameservers == ["fd00:6d::53"]  # (router advertisements may say so too)
        assert stack.resolver.learned()["dhcp6:eth0"] == (["fd00:6d::53"], ["test.example"])
        # dnsmasq's lease: 1 hour, and its T1/T2 (dnsmasq sends half and 7/8 of it)
        assert info["expires_in"] - info["renew_in"] > 1000
        wait_for(lambda: f"{leased}/128" in stack.addresses(6), 5, what="DAD of the lease")
        (entry,) = dnsmasq_leases(leases)
        assert entry[2] == leased and int(entry[1]) == client.iaid
        assert entry[4].replace(":", "") == client.duid.hex()
        # the on-link prefix: from dnsmasq's router advertisements, not from DHCPv6
        def on_link() -> bool:
            with stack.locked():
                return any(str(r.dst) == "fd00:6d::/64" and r.gateway is None
                           for r in stack.routes6)

        wait_for(on_link, 10, what="the on-link prefix from dnsmasq's advertisements")
        with stack.locked():
            assert [a for a in stack.addresses(6) if a.startswith("fd00:6d:")] == \
                [f"{leased}/128"]  # the lease only: the prefix is not autonomous
        assert stack.source(6, ipaddress.IPv6Address("fd00:6d::1").packed) == \
            ipaddress.IPv6Address(leased).packed
        assert len(stack.ping("fd00:6d::1", count=3, timeout=2.0)) == 3
        r = netns.run(ns, "ping", "-6", "-c", "2", "-i", "0.2", "-W", "2", leased, check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        # the echo requests the namespace saw came from the leased address
        neigh = netns.run(ns, "ip", "-6", "neigh", "show", "dev", tap).stdout
        assert leased in neigh
    finally:
        stack.close()  # the client sends its RELEASE
    wait_for(lambda: not dnsmasq_leases(leases), 10, what="dnsmasq to free the released lease")
    with open(log) as f:
        text = f.read()
    assert f"DHCPRELEASE({tap})" in text and f"DHCPREPLY({tap}) {leased}" in text
    assert dnsmasq.poll() is None, dnsmasq.stderr.read()


DHCLIENT_SCRIPT = """#!/bin/sh
# dhclient-script for the test: apply the IA_NA address as dhclient gives it
echo "$reason addr=$new_ip6_address plen=$new_ip6_prefixlen dns=$new_dhcp6_name_servers \
domains=$new_dhcp6_domain_search" >> {log}
case "$reason" in
  BOUND6|RENEW6|REBIND6|REBOOT6)
    if [ -n "$new_ip6_address" ]; then
      ip -6 addr replace "$new_ip6_address/$new_ip6_prefixlen" dev "$interface" \\
        valid_lft "$new_max_life" preferred_lft "$new_preferred_life" nodad
    fi ;;
  EXPIRE6|RELEASE6|STOP6)
    if [ -n "$old_ip6_address" ]; then
      ip -6 addr del "$old_ip6_address/$old_ip6_prefixlen" dev "$interface"
    fi ;;
esac
exit 0
"""


def test_stack_dhcpv6_server_leases_to_isc_dhclient(lan, netns, procs, sockdir):
    need_tool("dhclient", "ping")
    swdir, runner, ns, tap = lan
    d = os.path.join(sockdir, "dhclient")
    os.mkdir(d, 0o700)
    script, log = os.path.join(d, "script"), os.path.join(d, "script.log")
    with open(script, "w") as f:
        f.write(DHCLIENT_SCRIPT.format(log=log))
    os.chmod(script, 0o700)
    conf = os.path.join(d, "dhclient.conf")
    with open(conf, "w") as f:
        f.write("request dhcp6.name-servers, dhcp6.domain-search;\n")
    pidfile, leasefile = os.path.join(d, "pid"), os.path.join(d, "leases")
    server_leases = os.path.join(sockdir, "dhcpd6.leases")
    for key, value in (("accept_ra", "2"), ("autoconf", "0")):  # the prefix, no SLAAC
        netns.run(ns, "sysctl", "-qw", f"net.ipv6.conf.{tap}.{key}={value}")
    stack = Stack("eth,ip=fd00:6e::1/64,ra,ra.managed,ra.interval=4,"
                  "dhcpd6=::100-::1ff,dhcpd6.dns=fd00:6e::53,"
                  f"dhcpd6.domain=test.example,dhcpd6.lease=600,dhcpd6.leasefile={server_leases}",
                  link=f"vde://{swdir}", runner=runner, name="dhcp6server")
    try:
        (server,) = stack.find_agents("dhcpd6")
        wait_for(lambda: "fd00:6e::1/64" in stack.addresses(6)
                 and any(a.startswith("fe80") for a in stack.addresses(6)), 5, what="stack DAD")
        wait_for(lambda: link_local_ready(netns, ns, tap), 10, what="the tap's link-local")
        dhclient = ["dhclient", "-6", "-v", "-cf", conf, "-pf", pidfile, "-lf", leasefile,
                    "-sf", script]
        proc = procs.popen(netns.exec_cmd(ns, *dhclient, "-d", tap),
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        def bound() -> str | None:
            try:
                with open(log) as f:
                    for line in f:
                        if line.startswith("BOUND6 addr=fd00"):
                            return line
            except FileNotFoundError:
                pass
            assert proc.poll() is None, f"dhclient exited: {proc.stderr.read()}"
            return None

        line = wait_for(bound, 30, what="dhclient to bind a lease from the stack")
        fields = dict(w.split("=", 1) for w in line.split()[1:])
        leased = fields["addr"]
        assert ipaddress.IPv6Address("fd00:6e::100") <= ipaddress.IPv6Address(leased) \
            <= ipaddress.IPv6Address("fd00:6e::1ff")
        assert fields["dns"] == "fd00:6e::53" and fields["domains"] == "test.example."
        with stack.locked():
            (lease,) = server.lease_list()
        assert lease["address"] == leased and lease["state"] == "bound"
        addrs = netns.run(ns, "ip", "-6", "addr", "show", "dev", tap).stdout
        assert leased in addrs
        # the on-link prefix comes from the stack's router advertisements
        wait_for(lambda: "fd00:6e::/64" in netns.run(ns, "ip", "-6", "route", "show", "dev",
                                                       tap).stdout, 10,
                 what="the prefix route from the stack's advertisements")
        r = netns.run(ns, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "-I", leased,
                      "fd00:6e::1", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert stack.interfaces[2].nd.entries.get(ipaddress.IPv6Address(leased).packed)
        # dhclient -r releases the lease: the server frees it
        proc.terminate()
        proc.wait(10)
        netns.run(ns, *dhclient, "-r", tap, timeout=30)

        def released() -> bool:
            with stack.locked():
                return not server.lease_list()

        wait_for(released, 10, what="the server to free the released lease")
        assert server.stats.get("released") == 1
    finally:
        stack.close()
    # the server wrote its lease file when it stopped
    with open(server_leases) as f:
        assert json.load(f)["leases"] == []
    assert dhcp6.duid_text(server.duid) in open(server_leases).read()
