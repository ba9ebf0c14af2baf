"""The stack console's handlers one by one, called directly on an in-process stack with no
runner (a pair link, nothing delivered unless a test says so). The table around them, the
console and the service are tested in test_stack_console.py."""

from __future__ import annotations

import errno
import functools
import os
import socket

import pytest

from threadnet import Stack
from threadnet.link.pair import open_pair
from threadnet.mgmt.commands import CommandError, table_from_entries
from threadnet.stack import commands as c

MAC_A = bytes.fromhex("020000004001")
MAC_B = bytes.fromhex("020000004002")


@pytest.fixture
def m():
    """alpha (10.40.0.1, fc00:40::1) on a pair link that carries MTU 1500, under management."""
    la, lb = open_pair(1518, "cmds")
    stack = Stack("eth,ip=10.40.0.1/24,ip=fc00:40::1/64,gw=10.40.0.254,mac=02:00:00:00:40:01",
                  link=la, runner=False, name="alpha")
    managed = c.ManagedStack(stack, published_path="/run/alpha",
                             console_path="/run/alpha.mgmt", console_mode=0o640)
    managed.table = table_from_entries(c.COMMANDS, managed)
    yield managed
    stack.close()
    lb.close()


def run(m, handler, args: str = ""):
    """``handler`` as the console runs it: under the stack's lock, errors as errnos."""
    return c._under_lock(m, functools.partial(handler, m), 0)(args)


def fails(code: int, m, handler, args: str = "") -> None:
    with pytest.raises(CommandError) as info:
        run(m, handler, args)
    assert info.value.errno == code, (args, os.strerror(info.value.errno))


def test_every_entry_is_a_module_level_function_called_here():
    source = open(__file__).read()
    for path, _, _, handler, _ in c.COMMANDS:
        if handler is not None and handler.__module__ == c.__name__:  # (filter/: its own)
            assert handler is getattr(c, handler.__name__), path
            assert f"c.{handler.__name__}" in source, path


def test_help(m):
    lines = c.help_(m, "route")
    assert lines[:2] == ["COMMAND PATH       SYNTAX          HELP",
                         "------------       --------------  ------------"]
    assert [line.split()[0] for line in lines[2:]] == ["route", "route/print", "route/add",
                                                       "route/del"]
    assert len(c.help_(m, "")) == 2 + len(c.COMMANDS)


def test_logout(m):
    assert c.logout(m, "") is None


def test_shutdown(m):
    stopped = []
    m.on_shutdown = lambda: stopped.append(1)
    c.shutdown(m, "")
    assert stopped == [1]
    m.on_shutdown = None  # a table built without on_shutdown: not supported
    with pytest.raises(CommandError) as info:
        c.shutdown(m, "")
    assert info.value.errno == errno.EOPNOTSUPP


def test_showinfo(m):
    lines = c.showinfo(m, "")
    assert lines[0] == "threadnet stack alpha" and lines[1] == "hostname alpha"
    assert lines[2].startswith(f"pid {os.getpid()} uptime ")
    assert lines[3:] == [
        "published /run/alpha", "mgmt /run/alpha.mgmt perm 0640", "interfaces 2 (2 up)",
        "addresses 127.0.0.1/8 ::1/128 10.40.0.1/24", "routes 3 ipv4 1 ipv6",
        "tcp 0 connections 0 listeners, udp 0 ports",
        lines[-1]]
    assert lines[-1].startswith("rx 0 packets 0 bytes, tx ")
    m.published_path = m.console_path = None
    assert not any(line.startswith(("published", "mgmt")) for line in c.showinfo(m, ""))


def test_stats(m):
    lines = c.stats(m, "")
    assert lines[-2].startswith("lo rx_packets 0 rx_bytes 0 rx_errors 0 tx_packets 0 ")
    assert lines[-1].startswith("eth0 rx_packets 0 rx_bytes 0 rx_errors 0 tx_packets ")
    assert all(len(line.split()) == 2 for line in lines[:-2])


def test_config(m, monkeypatch):
    run(m, c.config, "ip=10.40.0.77/24")
    assert "10.40.0.77/24" in m.stack.addresses()
    fails(errno.EINVAL, m, c.config, "")
    fails(errno.EINVAL, m, c.config, "nonsense=1")
    from threadnet.stack import autoconf

    monkeypatch.setattr(autoconf, "CLIENTS", {})  # a method threadnet has no agent for
    fails(errno.EOPNOTSUPP, m, c.config, "dhcp")
    fails(errno.ENODEV, m, c.config, "iface=eth7,ip=10.1.0.1/24")


def test_hostname(m):
    assert c.hostname(m, "") == ["alpha"]
    assert c.hostname(m, "box.example.org") == ["box.example.org"]
    assert m.stack.gethostname() == "box.example.org"


def test_ip(m):
    """iproute2's ip (its outputs and errors: tests/test_iproute.py)."""
    assert run(m, c.ip, "-4 addr show dev eth0")[1] == \
        "    inet 10.40.0.1/24 brd 10.40.0.255 scope global eth0"
    assert run(m, c.ip, "route add 10.41.0.0/16 via 10.40.0.254") == []
    fails(errno.EEXIST, m, c.ip, "route add 10.41.0.0/16 via 10.40.0.254")
    fails(errno.ENODEV, m, c.ip, "link set eth7 up")
    fails(errno.EINVAL, m, c.ip, "bogus")


def test_link_print(m):
    url = m.stack.links[m.stack.interface("eth0").index].url
    assert c.link_print(m, "") == [
        "1: lo: <LOOPBACK,UP> mtu 65536 state UP", "    link/loopback 00:00:00:00:00:00",
        "2: eth0: <BROADCAST,MULTICAST,UP> mtu 1500 state UP",
        f"    link/ether 02:00:00:00:40:01 url {url}"]
    assert c.link_print(m, "2") == c.link_print(m, "eth0") == c.link_print(m, "")[2:]
    fails(errno.ENODEV, m, c.link_print, "eth7")


def test_link_set(m):
    eth0 = m.stack.interface("eth0")
    c.link_set(m, "eth0 mtu 1400 mac 02:00:00:00:40:09 down")
    assert (eth0.mtu, eth0.mac, eth0.up) == (1400, bytes.fromhex("020000004009"), False)
    c.link_set(m, "2 up address 02:00:00:00:40:01 mtu 1500")
    assert (eth0.mtu, eth0.mac, eth0.up) == (1500, MAC_A, True)
    c.link_set(m, "lo mtu 65535")  # no link, no limit beyond IP's
    fails(errno.ENODEV, m, c.link_set, "eth7 up")
    for bad in ("", "eth0", "eth0 sideways", "eth0 mtu", "eth0 mtu 67", "eth0 mtu 65536",
                "eth0 mtu many", "eth0 mac zz", "eth0 mac 01:00:5e:00:00:01",
                "lo mac 02:00:00:00:00:01", "eth0 down mac", "lo mtu 70000"):
        fails(errno.EINVAL, m, c.link_set, bad)
    # the link carries MTU 1500: 1501 is refused before any word is applied
    with pytest.raises(CommandError, match="at most MTU 1500") as info:
        c.link_set(m, "eth0 down mtu 1501")
    assert info.value.errno == errno.EINVAL
    assert (eth0.mtu, eth0.up) == (1500, True)


def test_addr_print(m):
    assert c.addr_print(m, "") == m.stack.describe()
    eth0 = c.addr_print(m, "eth0")
    assert eth0[0] == "2: eth0: <UP> mtu 1500 link 02:00:00:00:40:01"
    assert "    inet 10.40.0.1/24" in eth0 and "    inet 127.0.0.1/8" not in eth0
    assert c.addr_print(m, "1") == ["1: lo: <UP> mtu 65536 link 00:00:00:00:00:00",
                                    "    inet 127.0.0.1/8", "    inet6 ::1/128 preferred"]
    fails(errno.ENODEV, m, c.addr_print, "eth9")


def test_addr_add_and_del(m):
    c.addr_add(m, "eth0 10.40.0.9/24")
    assert "10.40.0.9/24" in m.stack.addresses()
    fails(errno.EEXIST, m, c.addr_add, "eth0 10.40.0.9/24")
    c.addr_del(m, "eth0 10.40.0.9/24")
    assert "10.40.0.9/24" not in m.stack.addresses()
    fails(errno.EADDRNOTAVAIL, m, c.addr_del, "eth0 10.40.0.9/24")
    for handler in (c.addr_add, c.addr_del):
        fails(errno.ENODEV, m, handler, "eth5 10.40.0.9/24")
        for bad in ("", "eth0", "eth0 x/y", "eth0 10.400.0.1/24", "eth0 10.0.0.1/24 extra"):
            fails(errno.EINVAL, m, handler, bad)


def test_route_print(m):
    m.stack.route_add("fd00:7::/48", "fc00:40::2", None, 10)
    assert c.route_print(m, "") == [
        "ipv4 default via 10.40.0.254 dev eth0 proto static",
        "ipv4 10.40.0.0/24 dev eth0 proto kernel", "ipv4 127.0.0.0/8 dev lo proto kernel",
        "ipv6 fc00:40::/64 dev eth0 proto kernel",
        "ipv6 fd00:7::/48 via fc00:40::2 dev eth0 proto static metric 10"]
    assert c.route_print(m, "-4") == c.route_print(m, "4") == [
        line[5:] for line in c.route_print(m, "") if line.startswith("ipv4 ")]
    assert c.route_print(m, "6") == ["fc00:40::/64 dev eth0 proto kernel",
                                     "fd00:7::/48 via fc00:40::2 dev eth0 proto static metric 10"]
    fails(errno.EINVAL, m, c.route_print, "-5")


def test_route_add(m):
    c.route_add(m, "192.168.7.0/24 via 10.40.0.2")
    c.route_add(m, "10.99.0.0/16 dev eth0 metric 5")
    assert {"192.168.7.0/24 via 10.40.0.2 dev eth0 proto static",
            "10.99.0.0/16 dev eth0 proto static metric 5"} <= set(c.route_print(m, "-4"))
    fails(errno.EEXIST, m, c.route_add, "192.168.7.0/24 via 10.40.0.2")
    fails(errno.ENETUNREACH, m, c.route_add, "172.16.0.0/12 via 10.77.0.1")
    fails(errno.ENODEV, m, c.route_add, "172.16.0.0/12 dev eth3")
    for bad in ("", "10.1.2.3/8 dev eth0", "172.16.0.0/12", "172.16.0.0/12 via",
                "172.16.0.0/12 via nowhere", "172.16.0.0/12 dev eth0 metric x",
                "172.16.0.0/12 dev eth0 metric -1", "172.16.0.0/12 by eth0",
                "172.16.0.0/12 dev eth0 dev eth0"):
        fails(errno.EINVAL, m, c.route_add, bad)


def test_route_del(m):
    c.route_add(m, "192.168.7.0/24 via 10.40.0.2")
    fails(errno.ESRCH, m, c.route_del, "192.168.7.0/24 via 10.40.0.3")
    c.route_del(m, "192.168.7.0/24 via 10.40.0.2")
    fails(errno.ESRCH, m, c.route_del, "192.168.7.0/24")
    for bad in ("", "10.0.0.0/33", "10.0.0.0/8 dev eth0", "10.0.0.0/8 via"):
        fails(errno.EINVAL, m, c.route_del, bad)


def test_neigh_print(m):
    assert c.neigh_print(m, "") == []
    eth0 = m.stack.interface("eth0")
    eth0.arp.add_static(bytes([10, 40, 0, 2]), MAC_B)
    eth0.nd.add_static(socket.inet_pton(socket.AF_INET6, "fc00:40::2"), MAC_B)
    expected = ["10.40.0.2 dev eth0 lladdr 02:00:00:00:40:02 PERMANENT",
                "fc00:40::2 dev eth0 lladdr 02:00:00:00:40:02 PERMANENT"]
    assert c.neigh_print(m, "") == c.neigh_print(m, "eth0") == expected
    assert c.neigh_print(m, "lo") == []
    fails(errno.ENODEV, m, c.neigh_print, "eth4")


def test_tcp_print(m):
    header = "State       Recv-Q  Send-Q Local Address:Port                        Peer Address:Port"
    assert c.tcp_print(m, "") == [header]
    tcp = m.stack.tcp
    tcp.listen(6, b"", 8080, 5)
    tcp.listen(4, bytes([10, 40, 0, 1]), 8081, 3)
    tcp.connect(4, None, 40000, bytes([10, 40, 0, 2]), 80, 0.0)
    assert c.tcp_print(m, "") == [
        header,
        "LISTEN           0       5 [::]:8080                                 *:*",
        "LISTEN           0       3 10.40.0.1:8081                            *:*",
        "SYN-SENT         0       0 10.40.0.1:40000                           10.40.0.2:80"]


def test_udp_print(m):
    header = "State       Recv-Q  Send-Q Local Address:Port                        Peer Address:Port"
    assert c.udp_print(m, "") == [header]
    m.stack.udp_bind(5353, lambda *a: None)
    m.stack.udp_bind(5354, lambda *a: None, "fc00:40::1")
    m.stack.udp_bind(5355, lambda *a: None, "10.40.0.1")
    assert c.udp_print(m, "") == [
        header,
        "UNCONN           0       0 *:5353                                    *:*",
        "UNCONN           0       0 [fc00:40::1]:5354                         *:*",
        "UNCONN           0       0 10.40.0.1:5355                            *:*"]


def test_dns_print_and_set(m):
    assert c.dns_print(m, "") == []
    c.dns_set(m, r"nameserver 10.40.0.53\nsearch example.org")
    assert c.dns_print(m, "") == ["search example.org", "nameserver 10.40.0.53"]
    c.dns_set(m, "10.40.0.53,fc00:40::53")
    assert c.dns_print(m, "") == ["nameserver 10.40.0.53", "nameserver fc00:40::53"]
    fails(errno.EINVAL, m, c.dns_set, "")


def test_rd_print(m):
    from threadnet.stack.rdisc import RouterDiscovery
    from threadnet.wire import icmp6, ipv6

    assert run(m, c.rd_print) == []
    stack = m.stack
    agent = stack.add_agent(RouterDiscovery(2, slaac=True, secret=bytes(16)), now=0.0)
    router = socket.inet_pton(socket.AF_INET6, "fe80::1")
    ra = icmp6.RouterAdvert(
        router_lifetime=1800, flags=icmp6.RA_OTHER,
        prefixes=(icmp6.PrefixInfo(socket.inet_pton(socket.AF_INET6, "fc00:41::"), 64, 0xC0,
                                   600, 300),),
        rdnss=(icmp6.DnsServers(900, (socket.inet_pton(socket.AF_INET6, "fc00:41::53"),)),),
        dnssl=(icmp6.SearchList(900, ("lan.example",)),))
    msg = bytearray(icmp6.router_advert_size(ra))
    icmp6.build_router_advert(msg, router, ipv6.ALL_NODES, ra)
    agent.on_icmp6(stack, stack.interfaces[2], router, ipv6.ALL_NODES, 255, memoryview(msg),
                   0.0)
    (addr,) = [a["address"] for a in agent.describe()["addresses"]]
    assert run(m, c.rd_print, "eth0") == [
        "eth0: rd slaac managed 0 other 1 hoplimit 64 mtu - solicitations 0",
        "    router fe80::1 lifetime 1800sec pref medium",
        "    prefix fc00:41::/64 onlink 600sec autonomous valid_lft 600sec preferred_lft 300sec",
        f"    address {addr} stable valid_lft 600sec preferred_lft 300sec",
        "    dns fc00:41::53 lifetime 900sec",
        "    search lan.example lifetime 900sec",
        "    counters ra 1"]
    assert run(m, c.rd_print) == run(m, c.rd_print, "eth0")
    assert run(m, c.rd_print, "lo") == []
    fails(errno.ENODEV, m, c.rd_print, "eth9")


def test_ra_print(m):
    from threadnet.stack.raserver import RaServer

    assert run(m, c.ra_print) == []
    m.stack.add_agent(RaServer(2, ["fc00:42::/64"], rdnss=["fc00:42::53"], dnssl=["lan.example"],
                               managed=True, mtu=1400), now=0.0)
    assert run(m, c.ra_print, "eth0") == [
        "eth0: ra lifetime 1800 pref medium interval 198-600 next 0sec managed 1 other 0 "
        "hoplimit 64 mtu 1400 forwarding off",
        "    prefix fc00:42::/64 onlink autonomous valid 2592000 preferred 604800",
        "    rdnss fc00:42::53 lifetime 1800",
        "    dnssl lan.example lifetime 1800"]
    m.stack.forwarding = True
    m.stack.configure("ra")  # without a prefix: the interface's own
    assert run(m, c.ra_print) == [
        "eth0: ra lifetime 1800 pref medium interval 198-600 next 0sec managed 0 other 0 "
        "hoplimit 64 mtu - forwarding on",
        "    prefix fc00:40::/64 onlink autonomous valid 2592000 preferred 604800"]
    fails(errno.ENODEV, m, c.ra_print, "eth9")


def test_under_lock_turns_exceptions_into_errnos(m, capsys):
    cases = [(FileExistsError("x"), errno.EEXIST), (OSError(errno.ENETDOWN, "x"), errno.ENETDOWN),
             (OSError("no errno"), errno.EINVAL), (KeyError("x"), errno.ESRCH),
             (NotImplementedError("x"), errno.EOPNOTSUPP), (ValueError("x"), errno.EINVAL),
             (TypeError("x"), errno.EINVAL), (CommandError(errno.EPERM), errno.EPERM),
             (ZeroDivisionError("a bug"), errno.EIO)]
    for exc, code in cases:
        def boom(managed, args, exc=exc):
            raise exc
        fails(code, m, boom)
    assert "ZeroDivisionError: a bug" in capsys.readouterr().err  # a bug is reported
    # help, logout and shutdown run as they are: no lock, no translation
    plain = functools.partial(c.shutdown, m)
    assert c._under_lock(m, plain, c.UNLOCKED) is plain


def test_build_table_runs_the_handlers_under_the_stacks_lock():
    held = []

    class Spy(Stack):
        def locked(self):
            held.append(True)
            return super().locked()

    stack = Spy(runner=False, name="spy")
    try:
        table = c.build_table(stack, path="/run/spy")
        assert table.run("hostname")[:2] == (0, ["spy"]) and held == [True]
        assert table.run("help link")[0] == 0 and held == [True]
        assert table.run("shutdown")[0] == errno.EOPNOTSUPP and held == [True]
        assert table.run("link/print eth0")[:2] == (errno.ENODEV, [])
        assert held == [True, True]
    finally:
        stack.close()


# -- DHCPv6 (issue 10) ----------------------------------------------------------------------

def test_dhcpd6_start_print_forget_stop(m):
    from threadnet.wire import dhcp6

    run(m, c.dhcpd6_start, "eth0 ::100-::1ff lease=600 dns=fc00:40::53 domain=lan rapid")
    (srv,) = m.stack.find_agents("dhcpd6")
    assert srv.describe()["pool"] == "fc00:40::100-fc00:40::1ff" and srv.rapid_commit
    client = dhcp6.duid_ll(MAC_B)
    reply = srv.answer(dhcp6.Message(dhcp6.SOLICIT, 1, client_id=client, rapid_commit=True,
                                     ia_na=[dhcp6.IaNa(1)]), 0.0)
    leased = reply.ia_na[0].addresses[0].address
    duid = srv.duid.hex(":")
    assert c.dhcpd6_print(m, "eth0") == [
        f"eth0: dhcpd6 pool fc00:40::100-fc00:40::1ff lease 600 preferred 600 leases 1/4096 "
        f"duid {duid}", "    dns fc00:40::53 domains lan",
        f"    {leased} bound duid {client.hex(':')} iaid 1 valid_lft 600sec"]
    assert c.dhcpd6_print(m, "") == c.dhcpd6_print(m, "eth0")
    assert c.dhcpd6_print(m, "lo") == []
    run(m, c.dhcpd6_forget, f"eth0 {leased}")
    assert not srv.table.leases
    fails(errno.EADDRNOTAVAIL, m, c.dhcpd6_forget, f"eth0 {leased}")
    fails(errno.EINVAL, m, c.dhcpd6_forget, "eth0")
    fails(errno.EINVAL, m, c.dhcpd6_start, "eth0 lese=5")  # unknown option
    fails(errno.EINVAL, m, c.dhcpd6_start, "eth0 dns=a,b")
    fails(errno.EINVAL, m, c.dhcpd6_start, "")
    fails(errno.ENODEV, m, c.dhcpd6_start, "eth7")
    assert m.stack.find_agents("dhcpd6") == [srv]  # refused: the server runs on
    run(m, c.dhcpd6_start, "eth0")  # restarted with the defaults
    (srv2,) = m.stack.find_agents("dhcpd6")
    assert srv2 is not srv and srv2.describe()["pool"] == "fc00:40::1000-fc00:40::1fff"
    run(m, c.dhcpd6_stop, "eth0")
    assert not m.stack.find_agents("dhcpd6")
    fails(errno.ESRCH, m, c.dhcpd6_stop, "eth0")
    fails(errno.ESRCH, m, c.dhcpd6_forget, f"eth0 {leased}")


def test_dhcp6_print(m):
    from threadnet.stack.dhcp6client import Dhcp6Client

    assert c.dhcp6_print(m, "") == []
    client = Dhcp6Client(2, MAC_A)
    m.stack.add_agent(client, 0.0)
    duid = "00:03:00:01:02:00:00:00:40:01"
    assert c.dhcp6_print(m, "eth0") == [f"eth0: dhcp6 init iaid {0x00004001} duid {duid}"]
    # a lease, as a REPLY leaves it
    client.state, client.server = "bound", bytes.fromhex("000300010200000040ff")
    client.addresses = {"fc00:40::123": (7200.0, 3600.0)}
    client.renew_at, client.rebind_at = 1800.0, 2880.0
    client.dns, client.domains = ["fc00:40::53"], ["lan"]
    assert c.dhcp6_print(m, "") == [
        f"eth0: dhcp6 bound server 00:03:00:01:02:00:00:00:40:ff iaid {0x4001} duid {duid}",
        "    t1 1800sec t2 2880sec",
        "    inet6 fc00:40::123/128 valid_lft 7200sec preferred_lft 3600sec",
        "    dns fc00:40::53 domains lan"]
    fails(errno.ENODEV, m, c.dhcp6_print, "eth7")


def test_dhcpd_start_print_set_and_stop(m, tmp_path):
    leases = tmp_path / "leases"
    run(m, c.dhcpd_start, f"eth0 10.40.0.50-10.40.0.59 lease=600 domain=lan.example "
                          f"host=02:00:00:00:00:0b/10.40.0.7 leases={leases}")
    (server,) = m.stack.find_agents("dhcpd")
    lines = run(m, c.dhcpd_print, "")
    assert lines[0] == ("eth0: 10.40.0.1/24 pool 10.40.0.50-10.40.0.59 lease 600s router own "
                        "dns stack domain lan.example mtu -")
    assert lines[1:] == ["  host 02:00:00:00:00:0b 10.40.0.7", f"  leases {leases}"]
    run(m, c.dhcpd_set, "eth0 dns 10.40.0.53")
    run(m, c.dhcpd_set, "eth0 pool 10.40.0.60-10.40.0.69")
    assert "dns 10.40.0.53" in run(m, c.dhcpd_print, "eth0")[0]
    assert "pool 10.40.0.60-10.40.0.69" in run(m, c.dhcpd_print, "eth0")[0]
    # a lease shows in the table
    from threadnet.wire import dhcp4
    from threadnet.wire.dhcp4 import DhcpMessage

    iface = m.stack.interfaces[2]
    for kind in (dhcp4.DISCOVER, dhcp4.REQUEST):
        opts = {53: bytes([kind])}
        if kind == dhcp4.REQUEST:
            opts.update({50: bytes([10, 40, 0, 60]), 54: bytes([10, 40, 0, 1]), 12: b"beta"})
        server.on_udp(m.stack, iface, 4, bytes(4), 68, b"\xff" * 4, 67,
                      dhcp4.to_bytes(DhcpMessage(xid=1, chaddr=MAC_B, options=opts)),
                      m.stack._api_now(None))
    assert run(m, c.dhcpd_print, "")[-1] == "  10.40.0.60 02:00:00:00:40:02 bound 600s beta"
    fails(errno.EINVAL, m, c.dhcpd_set, "eth0 lease")
    fails(errno.EINVAL, m, c.dhcpd_set, "eth0 lease never")
    fails(errno.EINVAL, m, c.dhcpd_set, "eth0 color blue")
    fails(errno.EINVAL, m, c.dhcpd_start, "eth0 bogus=1")
    fails(errno.EINVAL, m, c.dhcpd_start, "")
    fails(errno.ENODEV, m, c.dhcpd_start, "eth9")
    run(m, c.dhcpd_stop, "eth0")
    assert m.stack.find_agents("dhcpd") == [] and run(m, c.dhcpd_print, "") == []
    fails(errno.ESRCH, m, c.dhcpd_stop, "eth0")
    fails(errno.ESRCH, m, c.dhcpd_set, "eth0 lease 60")


def test_dhcp_print(m):
    from threadnet.stack.dhcp4client import Dhcp4Client

    assert run(m, c.dhcp_print, "") == []
    now = m.stack._api_now(None)
    agent = m.stack.add_agent(Dhcp4Client(2, init_delay=0.0), now)
    assert run(m, c.dhcp_print, "eth0") == ["eth0: INIT next in 0s"]
    # as if bound: the lease's times show as seconds from now
    agent.state, agent.address, agent.plen = "BOUND", bytes([10, 40, 0, 9]), 24
    agent.server, agent._router, agent.lease = bytes([10, 40, 0, 1]), "10.40.0.1", 600.0
    agent.t1_at, agent.t2_at, agent.expires_at = now + 300, now + 525, now + 600
    assert run(m, c.dhcp_print, "") == [
        "eth0: BOUND 10.40.0.9/24 server 10.40.0.1 router 10.40.0.1 lease 600s "
        "renew in 300s rebind in 525s expires in 600s"]
    fails(errno.ENODEV, m, c.dhcp_print, "eth7")
