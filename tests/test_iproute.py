"""``threadnet ip``: iproute2's ``ip`` on a stack (stack/iproute.py, stack/ipcommand.py,
threadnet/ipcli.py).

First on core stacks on fake time (``FakeLan``): every show's data and text, every
command and its errors. Then iproute2 6.1's own output, captured from ``ip`` in a
namespace, against ours for the same loopback. Then published stacks: in this process
(paging, ``threadnet.ip`` by path), ``threadnet stack`` and ``threadnet ip --stack`` as
processes, and who may change a stack. Last, side by side with iproute2 (root): the same
``ip`` command lines on a namespace's veth and on a stack, and the outputs compared:
keys, shapes, the values that must agree, the text's layout and the errors.
"""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import time

import pytest

import threadnet
from threadnet.stack import ipcommand
from threadnet.stack.commands import build_table
from threadnet.stack.ipcommand import IpError

from conftest import need_tool, run_as, threadnet_cmd, threadnet_env, wait_for
from stack_helpers import FakeLan, ListLink

FOREVER = 4294967295
MAC_A, MAC_B = "02:00:00:00:00:05", "02:00:00:00:00:01"


@pytest.fixture
def lan():
    """Stack A (10.0.0.5, fc00::5, default via 10.0.0.1) and B (10.0.0.1, fc00::1) on
    one wire, on fake time; DAD over."""
    lan = FakeLan(f"eth,mac={MAC_A},ip=10.0.0.5/24,ip=fc00::5/64,gw=10.0.0.1",
                  f"eth,mac={MAC_B},ip=10.0.0.1/24,ip=fc00::1/64")
    settle(lan)
    yield lan
    lan.close()


def settle(lan: FakeLan) -> None:
    lan.run_until(lambda: all(a.state != "tentative" for s in lan.stacks
                              for i in s.interfaces.values() for a in i.v6), 5)


def dollar(block: str) -> str:
    """Expected output written as ``cat -A`` shows it: each line ends in ``$``, so the
    trailing spaces iproute2 prints are visible (and survive editors)."""
    lines = block.splitlines()
    assert all(line.endswith("$") for line in lines), block
    return "".join(line[:-1] + "\n" for line in lines)


def ip(stack, line: str) -> str:
    return ipcommand.run(stack, line)


def data(stack, line: str):
    return json.loads(ipcommand.run(stack, "-j " + line))


def fails(stack, line: str) -> IpError:
    with pytest.raises(IpError) as info:
        ipcommand.run(stack, line)
    return info.value


# -- shows: data and text --------------------------------------------------------------------------
def test_addr_show_is_ip_j_addr(lan):
    a = lan.stacks[0]
    ip(a, "addr add 10.0.1.7/24 dev eth0 valid_lft 86400 preferred_lft 14400")
    ip(a, "addr add 10.0.0.6/24 dev eth0")  # the same network: a secondary
    ip(a, "addr add fc00:1::5/64 dev eth0 valid_lft 3600 preferred_lft 1800")
    ip(a, "addr add fc00:7::5/64 dev eth0 mngtmpaddr noprefixroute")
    settle(lan)
    lan.now += 10.0  # lifetimes count down on the stack's clock
    eth0 = data(a, "addr show dev eth0")
    ll = "fe80::ff:fe00:5"
    assert eth0 == [{
        "ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"],
        "mtu": 1500, "qdisc": "noqueue", "operstate": "UP", "group": "default", "txqlen": 1000,
        "link_type": "ether", "address": MAC_A, "broadcast": "ff:ff:ff:ff:ff:ff",
        "addr_info": [
            {"family": "inet", "local": "10.0.0.5", "prefixlen": 24, "broadcast": "10.0.0.255",
             "scope": "global", "label": "eth0", "valid_life_time": FOREVER,
             "preferred_life_time": FOREVER},
            {"family": "inet", "local": "10.0.1.7", "prefixlen": 24, "broadcast": "10.0.1.255",
             "scope": "global", "dynamic": True, "label": "eth0", "valid_life_time": 86389,
             "preferred_life_time": 14389},
            {"family": "inet", "local": "10.0.0.6", "prefixlen": 24, "broadcast": "10.0.0.255",
             "scope": "global", "secondary": True, "label": "eth0",
             "valid_life_time": FOREVER, "preferred_life_time": FOREVER},
            # IPv6: widest scope first, newest first within one (as Linux lists them)
            {"family": "inet6", "local": "fc00:7::5", "prefixlen": 64, "scope": "global",
             "mngtmpaddr": True, "noprefixroute": True, "valid_life_time": FOREVER,
             "preferred_life_time": FOREVER},
            {"family": "inet6", "local": "fc00:1::5", "prefixlen": 64, "scope": "global",
             "dynamic": True, "valid_life_time": 3589, "preferred_life_time": 1789},
            {"family": "inet6", "local": "fc00::5", "prefixlen": 64, "scope": "global",
             "valid_life_time": FOREVER, "preferred_life_time": FOREVER},
            {"family": "inet6", "local": ll, "prefixlen": 64, "scope": "link",
             "valid_life_time": FOREVER, "preferred_life_time": FOREVER}]}]
    assert ip(a, "addr show dev eth0") == dollar(f"""\
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP group default qlen 1000$
    link/ether {MAC_A} brd ff:ff:ff:ff:ff:ff$
    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0$
       valid_lft forever preferred_lft forever$
    inet 10.0.1.7/24 brd 10.0.1.255 scope global dynamic eth0$
       valid_lft 86389sec preferred_lft 14389sec$
    inet 10.0.0.6/24 brd 10.0.0.255 scope global secondary eth0$
       valid_lft forever preferred_lft forever$
    inet6 fc00:7::5/64 scope global mngtmpaddr noprefixroute $
       valid_lft forever preferred_lft forever$
    inet6 fc00:1::5/64 scope global dynamic $
       valid_lft 3589sec preferred_lft 1789sec$
    inet6 fc00::5/64 scope global $
       valid_lft forever preferred_lft forever$
    inet6 {ll}/64 scope link $
       valid_lft forever preferred_lft forever$
""")
    # noprefixroute: no fc00:7::/64 route; the prefix route of fc00:1:: expires with it
    six = {r["dst"]: r for r in data(a, "-6 route")}
    assert "fc00:7::/64" not in six and six["fc00:1::/64"]["expires"] == 3589


def test_family_filters_and_selectors(lan):
    a = lan.stacks[0]
    four = data(a, "-4 addr")
    assert [i["ifname"] for i in four] == ["lo", "eth0"]
    assert all("link_type" not in i and "address" not in i for i in four)  # as ip -4
    assert [x["local"] for i in four for x in i["addr_info"]] == ["127.0.0.1", "10.0.0.5"]
    a.add_interface(ListLink())
    assert [i["ifname"] for i in data(a, "-4 addr")] == ["lo", "eth0"]  # eth1: no IPv4
    assert [i["ifname"] for i in data(a, "addr")] == ["lo", "eth0", "eth1"]
    assert [i["ifname"] for i in data(a, "addr show up")] == ["lo", "eth0"]
    assert [x["local"] for x in data(a, "-6 addr show dev eth0 scope link")[0]["addr_info"]] \
        == ["fe80::ff:fe00:5"]
    assert [x["local"] for i in data(a, "addr show to 10.0.0.0/8") for x in i["addr_info"]] \
        == ["10.0.0.5"]
    ip(a, "addr add 10.0.2.5/24 dev eth0 valid_lft 100 preferred_lft 100")
    dyn = [x["local"] for i in data(a, "addr show dynamic") for x in i["addr_info"]]
    perm = [x["local"] for i in data(a, "-4 addr show dev eth0 permanent") for x in i["addr_info"]]
    assert dyn == ["10.0.2.5"] and perm == ["10.0.0.5"]
    # ip -6 addr (no dev): Linux's IPv6 view of the links, without qdisc and group
    assert [list(i) for i in data(a, "-6 addr")] == [
        ["ifindex", "ifname", "flags", "mtu", "operstate", "txqlen", "addr_info"]] * 2
    assert ip(a, "-6 addr").startswith(
        "1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 state UNKNOWN qlen 1000\n")
    assert ip(a, "-6 addr show dev lo") == dollar("""\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000$
    inet6 ::1/128 scope host $
       valid_lft forever preferred_lft forever$
""")


def test_tentative_dadfailed_deprecated_and_expiry(lan):
    a, b = lan.stacks
    ip(b, "addr add fc00::5/64 dev eth0")  # A has it: DAD fails on B
    ip(b, "addr add fc00:2::1/64 dev eth0 valid_lft 30 preferred_lft 10")
    info = {x["local"]: x for x in data(b, "-6 addr show dev eth0")[0]["addr_info"]}
    assert info["fc00::5"].get("tentative") and info["fc00:2::1"].get("tentative")
    assert "tentative \n" in ip(b, "-6 addr show dev eth0")
    settle(lan)
    lan.run_until(lambda: lan.now > 112, 20)
    info = {x["local"]: x for x in data(b, "-6 addr show dev eth0")[0]["addr_info"]}
    assert info["fc00::5"]["dadfailed"] and info["fc00::5"]["tentative"]
    assert list(info["fc00::5"])[4:6] == ["dadfailed", "tentative"]  # iproute2's order
    assert "scope global dadfailed tentative \n" in ip(b, "-6 addr show dev eth0")
    assert info["fc00:2::1"]["deprecated"] and info["fc00:2::1"]["preferred_life_time"] == 0
    assert "scope global deprecated dynamic \n" in ip(b, "-6 addr show dev eth0")
    # IPv4 under conflict detection (RFC 5227): tentative, then dadfailed when in use
    b.addr_add("eth0", "10.0.0.5/24", acd=True)
    assert "10.0.0.5/24 brd 10.0.0.255 scope global tentative eth0" in ip(b, "-4 addr")
    lan.run_until(lambda: "dadfailed" in ip(b, "-4 addr"), 15)
    assert "10.0.0.5/24 brd 10.0.0.255 scope global dadfailed tentative eth0" in ip(b, "-4 addr")
    lan.run_until(lambda: lan.now > 135, 30)  # fc00:2::1's valid lifetime ends: it goes
    assert "fc00:2::1" not in ip(b, "-6 addr") and "fc00:2::/64" not in ip(b, "-6 route")


def test_link_show(lan):
    a = lan.stacks[0]
    assert ip(a, "link") == dollar(f"""\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000$
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00$
2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP mode DEFAULT group default qlen 1000$
    link/ether {MAC_A} brd ff:ff:ff:ff:ff:ff$
""")
    assert list(data(a, "link show eth0")[0]) == [
        "ifindex", "ifname", "flags", "mtu", "qdisc", "operstate", "linkmode", "group",
        "txqlen", "link_type", "address", "broadcast"]
    ip(a, "link set eth0 down")
    assert data(a, "link show dev eth0")[0]["flags"] == ["BROADCAST", "MULTICAST"]
    assert data(a, "link show eth0")[0]["operstate"] == "DOWN"
    assert data(a, "link show up") == data(a, "link show lo")
    ip(a, "link set eth0 up")
    lan.links[0].close()  # the link went away: no carrier
    eth0 = data(a, "link show eth0")[0]
    assert eth0["flags"] == ["NO-CARRIER", "BROADCAST", "MULTICAST", "UP"]
    assert eth0["operstate"] == "DOWN"


def test_route_show(lan):
    a = lan.stacks[0]
    ip(a, "route add 192.168.0.0/16 via 10.0.0.254 metric 50 proto dhcp")
    ip(a, "route add 10.20.0.0/16 dev eth0")
    ip(a, "route add 10.0.0.0/16 dev eth0 metric 3")
    ip(a, "-6 route add default via fc00::1")
    ip(a, "-6 route add fd00::/16 via fc00::2 metric 5")
    ip(a, "-6 route add fd00::/16 via fe80::1 dev eth0 pref high expires 600")
    assert data(a, "route") == [
        {"dst": "default", "gateway": "10.0.0.1", "dev": "eth0", "protocol": "static",
         "flags": []},
        {"dst": "10.0.0.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link",
         "prefsrc": "10.0.0.5", "flags": []},
        {"dst": "10.0.0.0/16", "dev": "eth0", "scope": "link", "metric": 3, "flags": []},
        {"dst": "10.20.0.0/16", "dev": "eth0", "scope": "link", "flags": []},
        {"dst": "192.168.0.0/16", "gateway": "10.0.0.254", "dev": "eth0", "protocol": "dhcp",
         "metric": 50, "flags": []}]
    assert ip(a, "route") == dollar("""\
default via 10.0.0.1 dev eth0 proto static $
10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.5 $
10.0.0.0/16 dev eth0 scope link metric 3 $
10.20.0.0/16 dev eth0 scope link $
192.168.0.0/16 via 10.0.0.254 dev eth0 proto dhcp metric 50 $
""")
    # IPv6: Linux's metrics (256 for an address's prefix, 1024 when none is given), the
    # link-local route of every interface, the default routes last
    assert ip(a, "-6 route") == dollar("""\
fc00::/64 dev eth0 proto kernel metric 256 pref medium$
fd00::/16 via fc00::2 dev eth0 metric 5 pref medium$
fd00::/16 via fe80::1 dev eth0 metric 1024 expires 600sec pref high$
fe80::/64 dev eth0 proto kernel metric 256 pref medium$
default via fc00::1 dev eth0 metric 1024 pref medium$
""")
    assert data(a, "-6 route show fd00::/16")[1] == {
        "dst": "fd00::/16", "gateway": "fe80::1", "dev": "eth0", "metric": 1024, "flags": [],
        "expires": 600, "pref": "high"}
    # dev, proto, via, metric: those routes, without the key they fix (as iproute2)
    assert data(a, "route show dev eth0 proto dhcp") == [
        {"dst": "192.168.0.0/16", "gateway": "10.0.0.254", "metric": 50, "flags": []}]
    assert data(a, "route show via 10.0.0.254 metric 50") == [
        {"dst": "192.168.0.0/16", "dev": "eth0", "protocol": "dhcp", "flags": []}]
    assert "127.0.0.0/8" not in ip(a, "route")  # Linux's local table: not shown
    ip(a, "link set eth0 down")
    assert all(r["flags"] == ["linkdown"] for r in data(a, "route"))
    assert ip(a, "route").splitlines()[0] == "default via 10.0.0.1 dev eth0 proto static linkdown "


def test_router_discoverys_routes_show_as_linux_shows_them(lan):
    """An advertised on-link prefix is the kernel's on Linux (metric 256, with expires);
    the router's default route is proto ra, metric 1024."""
    a = lan.stacks[0]
    a.route_add("fd00:7::/64", dev="eth0", proto="ra", lifetime=600, now=lan.now)
    a.route_add("default", "fe80::1", dev="eth0", metric=1024, proto="ra", lifetime=1800,
                now=lan.now)
    text = ip(a, "-6 route")
    assert "fd00:7::/64 dev eth0 proto kernel metric 256 expires 600sec pref medium" in text
    assert "default via fe80::1 dev eth0 proto ra metric 1024 expires 1800sec pref medium" in text
    assert [r["dst"] for r in data(a, "-6 route show proto kernel")] == [
        "fc00::/64", "fd00:7::/64", "fe80::/64"]


def test_neigh_show(lan):
    a, b = lan.stacks
    a.start_ping("10.0.0.1", 1, now=lan.now)
    a.start_ping("fc00::1", 1, now=lan.now)
    for _ in range(30):
        lan.step()
    assert data(a, "neigh show to 10.0.0.1") == [
        {"dst": "10.0.0.1", "dev": "eth0", "lladdr": MAC_B, "state": ["REACHABLE"]}]
    assert f"fc00::1 dev eth0 lladdr {MAC_B} REACHABLE \n" in ip(a, "neigh")
    assert ip(a, "-4 neigh show dev eth0") == f"10.0.0.1 lladdr {MAC_B} REACHABLE \n"
    lan.now += 60  # reachable time over: stale until used
    assert data(a, "-4 neigh")[0]["state"] == ["STALE"]
    ip(a, "neigh add 10.0.0.88 lladdr 02:00:00:00:00:88 dev eth0")
    assert data(a, "neigh show nud permanent") == [
        {"dst": "10.0.0.88", "dev": "eth0", "lladdr": "02:00:00:00:00:88",
         "state": ["PERMANENT"]}]
    assert [n["dst"] for n in data(a, "-4 neigh")] == ["10.0.0.88", "10.0.0.1"]  # newest first


def test_pretty_json_layout(lan):
    a = lan.stacks[0]
    assert ip(a, "-j -p neigh") == "[ ]\n"
    assert ip(a, "-j neigh") == "[]\n"
    assert ip(a, "-j -p route show dev eth0 proto kernel") == dollar("""\
[ {$
        "dst": "10.0.0.0/24",$
        "scope": "link",$
        "prefsrc": "10.0.0.5",$
        "flags": [ ]$
    } ]$
""")


# iproute2 6.1's output for a namespace's loopback (`ip -n NS ...` on Debian 12), which a
# stack's loopback matches field for field
IPROUTE2_LO_ADDR = dollar("""\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN group default qlen 1000$
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00$
    inet 127.0.0.1/8 scope host lo$
       valid_lft forever preferred_lft forever$
    inet6 ::1/128 scope host $
       valid_lft forever preferred_lft forever$
""")
IPROUTE2_LO_ADDR_J = (
    '[{"ifindex":1,"ifname":"lo","flags":["LOOPBACK","UP","LOWER_UP"],"mtu":65536,'
    '"qdisc":"noqueue","operstate":"UNKNOWN","group":"default","txqlen":1000,'
    '"link_type":"loopback","address":"00:00:00:00:00:00","broadcast":"00:00:00:00:00:00",'
    '"addr_info":[{"family":"inet","local":"127.0.0.1","prefixlen":8,"scope":"host",'
    '"label":"lo","valid_life_time":4294967295,"preferred_life_time":4294967295},'
    '{"family":"inet6","local":"::1","prefixlen":128,"scope":"host",'
    '"valid_life_time":4294967295,"preferred_life_time":4294967295}]}]\n')
IPROUTE2_LO_ADDR_JP = dollar("""\
[ {$
        "ifindex": 1,$
        "ifname": "lo",$
        "flags": [ "LOOPBACK","UP","LOWER_UP" ],$
        "mtu": 65536,$
        "qdisc": "noqueue",$
        "operstate": "UNKNOWN",$
        "group": "default",$
        "txqlen": 1000,$
        "link_type": "loopback",$
        "address": "00:00:00:00:00:00",$
        "broadcast": "00:00:00:00:00:00",$
        "addr_info": [ {$
                "family": "inet",$
                "local": "127.0.0.1",$
                "prefixlen": 8,$
                "scope": "host",$
                "label": "lo",$
                "valid_life_time": 4294967295,$
                "preferred_life_time": 4294967295$
            },{$
                "family": "inet6",$
                "local": "::1",$
                "prefixlen": 128,$
                "scope": "host",$
                "valid_life_time": 4294967295,$
                "preferred_life_time": 4294967295$
            } ]$
    } ]$
""")
IPROUTE2_LO_LINK = dollar("""\
1: lo: <LOOPBACK,UP,LOWER_UP> mtu 65536 qdisc noqueue state UNKNOWN mode DEFAULT group default qlen 1000$
    link/loopback 00:00:00:00:00:00 brd 00:00:00:00:00:00$
""")
IPROUTE2_LO_LINK_JP = dollar("""\
[ {$
        "ifindex": 1,$
        "ifname": "lo",$
        "flags": [ "LOOPBACK","UP","LOWER_UP" ],$
        "mtu": 65536,$
        "qdisc": "noqueue",$
        "operstate": "UNKNOWN",$
        "linkmode": "DEFAULT",$
        "group": "default",$
        "txqlen": 1000,$
        "link_type": "loopback",$
        "address": "00:00:00:00:00:00",$
        "broadcast": "00:00:00:00:00:00"$
    } ]$
""")


def test_loopback_output_is_iproute2s_byte_for_byte(lan):
    a = lan.stacks[0]
    assert ip(a, "addr show dev lo") == IPROUTE2_LO_ADDR
    assert ip(a, "-j addr show dev lo") == IPROUTE2_LO_ADDR_J
    assert ip(a, "-j -p addr show dev lo") == IPROUTE2_LO_ADDR_JP
    assert ip(a, "link show lo") == IPROUTE2_LO_LINK
    assert ip(a, "-p -j link show lo") == IPROUTE2_LO_LINK_JP
    assert ip(a, "-4 addr show dev lo") == "".join(
        line + "\n" for line in IPROUTE2_LO_ADDR.splitlines()[:1] + IPROUTE2_LO_ADDR.splitlines()[2:4])


# -- parsing -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("line,obj,verb", [
    ("a", "address", "show"), ("ad", "address", "show"), ("addr s", "address", "show"),
    ("address list", "address", "show"), ("a a 10.0.0.9/24 dev eth0", "address", "add"),
    ("a d 10.0.0.9/24 dev eth0", "address", "del"), ("a chg 1.2.3.4 dev eth0", "address", "change"),
    ("a f dev eth0", "address", "flush"), ("r", "route", "show"), ("ro sh", "route", "show"),
    ("r del default", "route", "del"), ("r repl default via 1.2.3.4", "route", "replace"),
    ("n", "neigh", "show"), ("neighbour", "neigh", "show"), ("neighbor fl all", "neigh", "flush"),
    ("l", "link", "show"), ("li set eth0 up", "link", "set"), ("link change eth0 up", "link", "set"),
])
def test_abbreviations(line, obj, verb):
    cmd = ipcommand.parse(line)
    assert (cmd.obj, cmd.verb) == (obj, verb)
    assert cmd.changes == (verb != "show")


def test_global_options():
    assert ipcommand.parse("-4 a").family == 4
    assert ipcommand.parse(["-6", "r"]).family == 6
    assert ipcommand.parse("-f inet6 r").family == 6
    assert ipcommand.parse("-family inet r").family == 4
    cmd = ipcommand.parse("-j -p a")
    assert cmd.json and cmd.pretty
    cmd = ipcommand.parse("-json -pretty a")
    assert cmd.json and cmd.pretty
    assert ipcommand.parse("--json a").json  # iproute2 takes -- as -


@pytest.mark.parametrize("line,status,message", [
    ("foo", 1, 'Object "foo" is unknown, try "ip help".'),
    ("rule", 1, 'Object "rule" is not supported by threadnet ip (it has address, link, '
                "route and neighbour)."),
    ("a foo", 255, 'Command "foo" is unknown, try "ip address help".'),
    ("r get 1.2.3.4", 255, 'Command "get" of "ip route" is not supported by threadnet ip.'),
    ("-x a", 255, 'Option "-x" is unknown, try "ip -help".'),
    ("-s a", 255, 'Option "-s" is not supported by threadnet ip.'),
    ("-f ipx a", 255, 'Error: argument "ipx" is wrong: invalid protocol family'),
])
def test_parse_errors(line, status, message):
    with pytest.raises(IpError) as info:
        ipcommand.parse(line)
    assert (info.value.status, info.value.message) == (status, message)


def test_help_and_empty_line_print_usage():
    for line in ("", "help", "a help", "route help"):
        with pytest.raises(IpError) as info:
            ipcommand.parse(line)
        assert info.value.status == 255 and info.value.message.startswith("Usage: ip")


# -- changes ----------------------------------------------------------------------------------------
def test_addr_add_change_replace_del_flush(lan):
    a = lan.stacks[0]
    ip(a, "addr add 10.0.9.5/24 dev eth0 valid_lft 100 preferred_lft 50")
    assert ip(a, "-4 addr show dev eth0 dynamic").count("valid_lft 100sec preferred_lft 50sec") == 1
    ip(a, "addr change 10.0.9.5/24 dev eth0 valid_lft 300 preferred_lft 200")
    assert "valid_lft 300sec preferred_lft 200sec" in ip(a, "-4 addr")
    ip(a, "addr replace 10.0.9.5/24 dev eth0")  # no lifetimes: forever, as iproute2
    assert "dynamic" not in ip(a, "-4 addr")
    ip(a, "addr replace 10.0.10.5/24 dev eth0")  # not there: added
    ip(a, "addr add 10.0.11.5 dev eth0")  # no /PLEN: a host address
    assert "inet 10.0.11.5/32 scope global eth0" in ip(a, "-4 addr")
    ip(a, "addr del 10.0.10.5 dev eth0")  # IPv4 without /PLEN: any prefix length
    ip(a, "a d 10.0.11.5/32 dev eth0")
    ip(a, "addr add fc00:9::5/64 dev eth0 preferred_lft 0")
    assert "fc00:9::5/64 scope global deprecated tentative \n" in ip(a, "-6 addr")
    settle(lan)
    assert "fc00:9::5/64 scope global deprecated \n" in ip(a, "-6 addr")
    ip(a, "addr add 10.0.12.5/24 brd + dev eth0")
    ip(a, "addr add local 10.0.13.5/24 dev eth0")
    assert {"10.0.12.0/24", "10.0.13.0/24"} <= {r["dst"] for r in data(a, "route")}
    ip(a, "addr flush dev eth0 to 10.0.12.0/24")
    assert "10.0.12.5" not in ip(a, "addr") and "10.0.13.5" in ip(a, "addr")
    ip(a, "-6 addr flush dev eth0 scope global")
    assert [x["local"] for x in data(a, "-6 addr show dev eth0")[0]["addr_info"]] == \
        ["fe80::ff:fe00:5"]
    ip(a, "-4 addr flush dev eth0")
    assert data(a, "-4 addr show dev eth0") == []
    assert "10.0.0.0/24" not in ip(a, "route")  # its connected route went with it


def test_addr_errors(lan):
    a = lan.stacks[0]
    cases = [
        ("addr add 10.0.0.5/24 dev eth0", 2, "Error: ipv4: Address already assigned.",
         errno.EEXIST),
        ("addr add fc00::5/64 dev eth0", 2, "Error: ipv6: address already assigned.",
         errno.EEXIST),
        ("addr del 10.99.0.5/24 dev eth0", 2, "Error: ipv4: Address not found.",
         errno.EADDRNOTAVAIL),
        ("addr del 10.0.0.5/25 dev eth0", 2, "Error: ipv4: Address not found.",
         errno.EADDRNOTAVAIL),
        ("addr del fc00::5 dev eth0", 2, "Error: ipv6: address not found.",
         errno.EADDRNOTAVAIL),  # IPv6: /128 when not given, as Linux wants it
        ("addr change 10.9.9.9/24 dev eth0", 2, "RTNETLINK answers: No such file or directory",
         errno.ENOENT),
        ("addr add 10.0.0.9/24 dev nosuch", 1, 'Cannot find device "nosuch"', errno.ENODEV),
        ("addr add bogus dev eth0", 1, 'Error: any valid prefix is expected rather than "bogus".',
         errno.EINVAL),
        ("addr add 10.0.0.9/33 dev eth0", 1,
         'Error: any valid prefix is expected rather than "10.0.0.9/33".', errno.EINVAL),
        ("-6 addr add 10.0.0.9/24 dev eth0", 1,
         'Error: inet6 prefix is expected rather than "10.0.0.9/24".', errno.EINVAL),
        ("addr add 10.0.0.9/24", 1, 'Not enough information: "dev" argument is required.',
         errno.EINVAL),
        ("addr add dev eth0", 2, "RTNETLINK answers: Operation not supported", errno.EOPNOTSUPP),
        ("addr add 10.0.0.9/24 dev eth0 valid_lft 100", 1,
         "preferred_lft is greater than valid_lft", errno.EINVAL),
        ("addr add 10.0.0.9/24 dev eth0 valid_lft abc", 255,
         'Error: argument "abc" is wrong: valid_lft value', errno.EINVAL),
        ("addr add 10.0.0.9/24 10.0.0.8/24 dev eth0", 255,
         'Error: either "local" is duplicate, or "10.0.0.8/24" is a garbage.', errno.EINVAL),
        ("addr add 10.0.0.9/24 dev eth0 label eth0:1", 2,
         'Error: "label" is not supported by threadnet.', errno.EOPNOTSUPP),
        ("addr add 10.0.0.9/24 dev eth0 noprefixroute", 2,
         'Error: "noprefixroute (on an IPv4 address)" is not supported by threadnet.',
         errno.EOPNOTSUPP),
        ("addr add 10.0.0.9/24 dev", 255, 'Command line is not complete. Try option "help"',
         errno.EINVAL),
        ("addr flush", 1, "Flush requires arguments.", errno.EINVAL),
        ("addr show dev nosuch", 1, 'Device "nosuch" does not exist.', errno.ENODEV),
        ("addr show eth0 eth1", 255, 'Error: either "dev" is duplicate, or "eth1" is a garbage.',
         errno.EINVAL),
    ]
    before = ip(a, "addr")
    for line, status, message, err in cases:
        exc = fails(a, line)
        assert (exc.status, exc.message, exc.errno) == (status, message, err), line
    assert ip(a, "addr") == before  # nothing changed


def test_route_add_del_replace_change_flush(lan):
    a = lan.stacks[0]
    ip(a, "route add 10.20.0.0/16 via 10.0.0.1 metric 5 proto 200")
    assert "10.20.0.0/16 via 10.0.0.1 dev eth0 proto 200 metric 5 \n" in ip(a, "route")
    ip(a, "route add 10.20.0.0/16 dev eth0")  # another metric: both stay
    ip(a, "route replace 10.20.0.0/16 via 10.0.0.2 metric 5")
    ip(a, "route change 10.20.0.0/16 dev eth0 proto static")
    assert [line for line in ip(a, "route").splitlines() if "10.20." in line] == [
        "10.20.0.0/16 dev eth0 proto static scope link ",
        "10.20.0.0/16 via 10.0.0.2 dev eth0 metric 5 "]
    ip(a, "route del 10.20.0.0/16 metric 5")
    assert [line for line in ip(a, "route").splitlines() if "10.20." in line] == [
        "10.20.0.0/16 dev eth0 proto static scope link "]
    ip(a, "route add 10.30.0.1 dev eth0")  # a host route
    assert "10.30.0.1 dev eth0 scope link \n" in ip(a, "route")
    ip(a, "-6 route add default via fc00::1")
    ip(a, "route add default via fc00::2 metric 7")  # the family from the gateway
    ip(a, "-6 route add fd00::/16 dev eth0")
    ip(a, "-6 route del fd00::/16 metric 1024")  # Linux's metric for "none given"
    assert [r["gateway"] for r in data(a, "-6 route show default")] == ["fc00::2", "fc00::1"]
    ip(a, "route del default via fc00::1")
    ip(a, "route flush proto static")
    assert ip(a, "route") == ("10.0.0.0/24 dev eth0 proto kernel scope link src 10.0.0.5 \n"
                              "10.30.0.1 dev eth0 scope link \n")
    ip(a, "route flush dev eth0")
    assert ip(a, "route") == ""
    assert data(a, "-6 route")[-1]["dst"] == "default"


def test_route_errors(lan):
    a = lan.stacks[0]
    ip(a, "-6 route add fd00::/16 via fc00::1")
    cases = [
        ("route add 10.0.0.0/24 dev eth0", 2, "RTNETLINK answers: File exists", errno.EEXIST),
        ("route add default via 10.0.0.2", 2, "RTNETLINK answers: File exists", errno.EEXIST),
        ("-6 route add fd00::/16 via fc00::1", 2, "RTNETLINK answers: File exists", errno.EEXIST),
        ("route del 10.77.0.0/16", 2, "RTNETLINK answers: No such process", errno.ESRCH),
        ("route del default via 10.0.0.9", 2, "RTNETLINK answers: No such process", errno.ESRCH),
        ("route change 10.77.0.0/16 dev eth0", 2, "RTNETLINK answers: No such file or directory",
         errno.ENOENT),
        ("route add 10.77.0.0/16", 2, "RTNETLINK answers: No such device", errno.ENODEV),
        ("route add 10.78.0.0/16 via 172.31.0.1", 2, "Error: Nexthop has invalid gateway.",
         errno.EINVAL),
        ("route add 10.78.0.0/16 via 172.31.0.1 dev eth0", 2,
         "Error: Nexthop has invalid gateway.", errno.EINVAL),
        ("-6 route add fd99::/16 via fe80::1", 2, "Error: Egress device not specified.",
         errno.EINVAL),
        ("route add 10.0.0.1/24 dev eth0", 2, "Error: Invalid prefix for given prefix length.",
         errno.EINVAL),
        ("-6 route add 10.1.0.0/16 dev eth0", 1,
         'Error: inet6 prefix is expected rather than "10.1.0.0/16".', errno.EINVAL),
        ("route add 10.1.0.0/16 via bogus", 1,
         'Error: inet address is expected rather than "bogus".', errno.EINVAL),
        ("route add 10.1.0.0/16 via fc00::1", 1,
         'Error: inet address is expected rather than "fc00::1".', errno.EINVAL),
        ("route add 10.1.0.0/16 dev eth0 metric abc", 255,
         'Error: argument "abc" is wrong: "metric" value is invalid', errno.EINVAL),
        ("route add 10.1.0.0/16 dev eth0 proto bogus", 255,
         'Error: argument "bogus" is wrong: "protocol" value is invalid', errno.EINVAL),
        ("-6 route add fd77::/16 dev eth0 pref bogus", 255,
         'Error: argument "bogus" is wrong: "pref" value is invalid', errno.EINVAL),
        ("route add 10.1.0.0/16 dev nosuch", 1, 'Cannot find device "nosuch"', errno.ENODEV),
        ("route show dev nosuch", 1, 'Cannot find device "nosuch"', errno.ENODEV),
        ("route add 10.1.0.0/16 dev eth0 src 10.0.0.5", 2,
         'Error: "src" is not supported by threadnet.', errno.EOPNOTSUPP),
        ("route add 10.1.0.0/16 dev eth0 table 7", 2,
         'Error: "table 7 (threadnet has the main table)" is not supported by threadnet.',
         errno.EOPNOTSUPP),
        ("route add 10.1.0.0/16 via inet6 fc00::1", 2,
         'Error: "an IPv4 route via an IPv6 gateway" is not supported by threadnet.',
         errno.EOPNOTSUPP),
        ("route flush", 1, '"ip route flush" requires arguments.', errno.EINVAL),
    ]
    before = ip(a, "route") + ip(a, "-6 route")
    for line, status, message, err in cases:
        exc = fails(a, line)
        assert (exc.status, exc.message, exc.errno) == (status, message, err), line
    assert ip(a, "route") + ip(a, "-6 route") == before
    assert fails(a, "route add").status == 255  # iproute2's usage


def test_link_set(lan):
    a = lan.stacks[0]
    ip(a, "link set dev eth0 mtu 1400 address 02:00:00:00:00:99")
    eth0 = data(a, "link show eth0")[0]
    assert (eth0["mtu"], eth0["address"]) == (1400, "02:00:00:00:00:99")
    ip(a, "link set eth0 down")
    assert not a.interface("eth0").up
    ip(a, "l s eth0 up")
    assert a.interface("eth0").up
    cases = [
        ("link set nosuch up", 1, 'Cannot find device "nosuch"', errno.ENODEV),
        ("link set up", 1, 'Not enough information: "dev" argument is required.', errno.EINVAL),
        ("link set eth0 mtu 10", 2, "Error: mtu less than device minimum.", errno.EINVAL),
        ("link set eth0 mtu 70000", 2, "Error: mtu greater than device maximum.", errno.EINVAL),
        ("link set eth0 mtu abc", 255, 'Error: argument "abc" is wrong: Invalid "mtu" value',
         errno.EINVAL),
        ("link set eth0 address zz", 1, '"zz" is invalid lladdr.', errno.EINVAL),
        ("link set eth0 address 01:02:03:04:05:06", 2,
         "RTNETLINK answers: Cannot assign requested address", errno.EADDRNOTAVAIL),
        ("link set eth0 promisc on", 2, 'Error: "promisc" is not supported by threadnet.',
         errno.EOPNOTSUPP),
        ("link set eth0 bogus", 255, 'Error: either "dev" is duplicate, or "bogus" is a garbage.',
         errno.EINVAL),
        ("link show nosuch", 1, 'Device "nosuch" does not exist.', errno.ENODEV),
    ]
    for line, status, message, err in cases:
        exc = fails(a, line)
        assert (exc.status, exc.message, exc.errno) == (status, message, err), line
    # a bad word changes nothing, even after good ones
    fails(a, "link set eth0 down mtu 10")
    assert a.interface("eth0").up and a.interface("eth0").mtu == 1400
    assert fails(a, "link add eth9 type veth").errno == errno.EOPNOTSUPP


def test_neigh_add_del_flush(lan):
    a = lan.stacks[0]
    a.start_ping("10.0.0.1", 1, now=lan.now)
    for _ in range(30):
        lan.step()
    ip(a, "neigh add 10.0.0.88 lladdr 02:00:00:00:00:88 dev eth0")
    ip(a, "neigh replace fc00::88 lladdr 02:00:00:00:00:89 dev eth0 nud permanent")
    ip(a, "neigh change fc00::88 lladdr 02:00:00:00:00:88 dev eth0")
    assert [(n["dst"], n["lladdr"]) for n in data(a, "neigh show nud permanent")] == [
        ("10.0.0.88", "02:00:00:00:00:88"), ("fc00::88", "02:00:00:00:00:88")]
    ip(a, "neigh flush dev eth0")  # all but the permanent ones
    assert [n["dst"] for n in data(a, "neigh")] == ["10.0.0.88", "fc00::88"]
    ip(a, "-6 neigh flush all nud permanent")
    ip(a, "neigh del 10.0.0.88 dev eth0")
    assert data(a, "neigh") == []
    cases = [
        ("neigh del 10.0.0.99 dev eth0", 2, "RTNETLINK answers: No such file or directory",
         errno.ENOENT),
        ("neigh add 10.0.0.99 dev eth0", 2, "Error: No link layer address given.", errno.EINVAL),
        ("neigh add 10.0.0.99 lladdr 02:00:00:00:00:99", 1,
         "Device and destination are required arguments.", errno.EINVAL),
        ("neigh add 10.0.0.99 lladdr 02:00:00:00:00:99 dev eth0 nud reachable", 2,
         'Error: "nud reachable (threadnet adds permanent entries)" is not supported by '
         "threadnet.", errno.EOPNOTSUPP),
        ("neigh show nosuch", 1, 'Error: any valid prefix is expected rather than "nosuch".',
         errno.EINVAL),
        ("neigh show dev nosuch", 1, 'Cannot find device "nosuch"', errno.ENODEV),
        ("neigh flush", 1, "Flush requires arguments.", errno.EINVAL),
    ]
    for line, status, message, err in cases:
        exc = fails(a, line)
        assert (exc.status, exc.message, exc.errno) == (status, message, err), line
    ip(a, "neigh add 10.0.0.99 lladdr 02:00:00:00:00:99 dev eth0")
    assert fails(a, "neigh add 10.0.0.99 lladdr 02:00:00:00:00:99 dev eth0").message == \
        "RTNETLINK answers: File exists"


def test_console_ip_command(lan):
    a = lan.stacks[0]
    table = build_table(a)
    err, out, _ = table.run("ip -4 addr show dev eth0")
    assert err == 0 and out == ip(a, "-4 addr show dev eth0").splitlines()
    err, out, _ = table.run("ip route add 10.40.0.0/16 via 10.0.0.1")
    assert err == 0 and "10.40.0.0/16 via 10.0.0.1 dev eth0 " in ip(a, "route")
    assert table.run("ip route add 10.40.0.0/16 via 10.0.0.1")[0] == errno.EEXIST
    assert table.run("ip addr show dev nosuch")[0] == errno.ENODEV
    assert table.run("ip -j link show lo")[1] == [ip(a, "-j link show lo").strip()]
    assert any(line.split()[0] == "ip" for line in table.help_lines("")[2:])


# -- threadnet.ip and published stacks ----------------------------------------------------------------
def test_threadnet_ip_on_a_stack_and_by_path(sockdir):
    s = threadnet.Stack("eth,ip=10.0.0.5/24,ip=fc00::5/64,gw=10.0.0.1", link="null://")
    try:
        s.settle()
        assert threadnet.ip(s, "-4 addr")[1]["addr_info"][0]["local"] == "10.0.0.5"
        assert s.ip(["-6", "route"]) == threadnet.ip(s, "-6 route")
        assert threadnet.ip(s, "route", text=True).startswith("default via 10.0.0.1 dev eth0 ")
        assert threadnet.ip(s, "-j route", text=True).startswith('[{"dst":"default"')
        assert threadnet.ip(s, "route add 10.9.0.0/16 via 10.0.0.1") == []
        path = os.path.join(sockdir, "s")
        s.publish(path)
        assert threadnet.ip(path, "-4 addr") == threadnet.ip(s, "-4 addr")
        assert threadnet.ip(threadnet.RemoteStack(path), "link show eth0", text=True) == \
            threadnet.ip(s, "link show eth0", text=True)
        threadnet.ip(path, "route del 10.9.0.0/16")  # the owner may change it
        assert "10.9.0.0/16" not in threadnet.ip(s, "route", text=True)
        with pytest.raises(IpError) as info:
            threadnet.ip(path, "route del 10.9.0.0/16")
        assert (info.value.status, info.value.message) == (2, "RTNETLINK answers: No such process")
        # a reply larger than a packet comes in pages
        with s.locked():
            for n in range(3000):
                s.route_add(f"172.{16 + n // 256}.{n % 256}.0/24", "10.0.0.1")
        routes = threadnet.ip(path, "route")
        assert len(routes) == 3002 and len(json.dumps(routes)) > 10 * 30000
        assert routes == threadnet.ip(s, "route")
    finally:
        s.close()


@pytest.fixture
def published(procs, sockdir):
    """``threadnet stack`` as a daemon (on a null:// link), published at PATH (0666)."""
    path = os.path.join(sockdir, "st")
    procs.daemon(threadnet_cmd("stack", path, "--link", "null://", "--config",
                               "eth,ip=10.0.0.5/24,ip=fc00::5/64,gw=10.0.0.1", "-m", "0666",
                               "-d", "-p", path + ".pid"), path + ".pid", env=threadnet_env())
    wait_for(lambda: "tentative" not in threadnet.ip(path, "addr", text=True), 10,
             what="DAD on the published stack")
    return path


def tip(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(threadnet_cmd("ip", *args), env=env or threadnet_env(),
                          capture_output=True, text=True, timeout=60)


def test_threadnet_ip_cli_on_a_published_stack(published):
    r = tip("--stack", published, "addr", "show", "dev", "eth0")
    assert r.returncode == 0, r.stderr
    assert re.match(r"2: eth0: <BROADCAST,MULTICAST,UP,LOWER_UP> mtu 1500 qdisc noqueue state UP "
                    r"group default qlen 1000\n    link/ether \S+ brd ff:ff:ff:ff:ff:ff\n"
                    r"    inet 10.0.0.5/24 brd 10.0.0.255 scope global eth0\n", r.stdout)
    r = tip("-j", "--stack", published, "-6", "route")
    assert r.returncode == 0 and json.loads(r.stdout)[0] == {
        "dst": "fc00::/64", "dev": "eth0", "protocol": "kernel", "metric": 256, "flags": [],
        "pref": "medium"}
    assert tip("--stack", published, "-j", "-p", "link", "show", "lo").stdout == \
        IPROUTE2_LO_LINK_JP
    r = tip("--stack", published, "route", "add", "10.9.0.0/16", "via", "10.0.0.1", "metric", "7")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert "10.9.0.0/16 via 10.0.0.1 dev eth0 metric 7 \n" in tip("--stack", published, "r").stdout
    r = tip("--stack", published, "route", "add", "10.9.0.0/16", "via", "10.0.0.1", "metric", "7")
    assert (r.returncode, r.stderr) == (2, "RTNETLINK answers: File exists\n")
    r = tip("--stack", published, "a", "foo")  # refused before the stack is asked
    assert (r.returncode, r.stderr) == (255, 'Command "foo" is unknown, try "ip address help".\n')
    # without --stack: the stack of a `threadnet run --stack` child, else a clear error
    r = tip("-4", "a", "show", "dev", "eth0", env=threadnet_env({"THREADNET_STACK": published}))
    assert r.returncode == 0 and "inet 10.0.0.5/24" in r.stdout
    env = threadnet_env()
    env.pop("THREADNET_STACK", None)
    r = tip("addr", env=env)
    assert r.returncode == 2 and "which stack? Give --stack PATH" in r.stderr
    r = tip("--stack", published + ".nothing", "addr")
    assert r.returncode == 1 and "no stack at" in r.stderr
    r = tip("--help")
    assert r.returncode == 0 and "usage: threadnet ip [--stack PATH]" in r.stdout


def test_only_the_owner_and_root_change_a_published_stack(published, unpriv):
    """Anyone who may use the stack may read it; changing it takes its owner's rights."""
    cmd = [unpriv["python"], "-m", "threadnet", "ip", "--stack", published]
    r = run_as(unpriv, cmd + ["-4", "addr"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "inet 10.0.0.5/24" in r.stdout, r.stderr
    r = run_as(unpriv, cmd + ["route", "add", "10.9.0.0/16", "via", "10.0.0.1"],
               capture_output=True, text=True, timeout=60)
    assert (r.returncode, r.stderr) == (2, "RTNETLINK answers: Operation not permitted\n")
    r = run_as(unpriv, cmd + ["link", "set", "eth0", "down"], capture_output=True, text=True,
               timeout=60)
    assert r.returncode == 2
    assert "10.9.0.0/16" not in threadnet.ip(published, "route", text=True)
    assert threadnet.ip(published, "link show eth0")[0]["operstate"] == "UP"


# -- side by side with iproute2 ----------------------------------------------------------------------
#: the same ip lines, run on a namespace's veth (eth0) and on a stack's eth0
CONFIG = [
    "link set eth0 up",
    "addr add 10.0.0.5/24 brd + dev eth0",
    "addr add 10.0.1.7/24 brd + dev eth0 valid_lft 86400 preferred_lft 14400",
    "addr add 10.0.0.6/24 brd + dev eth0",
    "addr add 10.0.2.9/31 dev eth0",
    "addr add fc00::5/64 dev eth0",
    "addr add fc00:1::5/64 dev eth0 valid_lft 3600 preferred_lft 1800",
    "addr add fc00:7::5/64 dev eth0 mngtmpaddr",
    "addr add fc00:8::5/64 dev eth0 preferred_lft 0 noprefixroute",
    "route add default via 10.0.0.1 proto static",
    "route add 192.168.0.0/16 via 10.0.0.254 metric 50 proto dhcp",
    "route add 10.20.0.0/16 dev eth0",
    "route add 10.0.0.0/16 dev eth0 metric 3",
    "route add 10.30.0.1 via 10.0.0.1",
    "-6 route add default via fc00::1",
    "-6 route add default via fc00::2 metric 100",
    "-6 route add fd00::/16 via fc00::2 metric 5",
    "-6 route add fd01::/16 dev eth0 expires 600",
    "-6 route add fd02::/16 via fe80::1 dev eth0 pref high",
    "neigh add 10.0.0.88 lladdr 02:00:00:00:00:88 dev eth0",
    "neigh add fc00::88 lladdr 02:00:00:00:00:88 dev eth0",
]
#: lines both must refuse, with the same message and exit status
REFUSED = [
    "addr add 10.0.0.5/24 dev eth0", "addr add fc00::5/64 dev eth0",
    "addr del 10.99.0.5/24 dev eth0", "addr del 10.0.0.5/25 dev eth0",
    "-6 addr del fc00:99::5/64 dev eth0", "addr add 10.0.0.9/24 dev nosuch",
    "addr add bogus dev eth0", "addr add 10.0.0.9/33 dev eth0", "addr add 10.0.0.9/24",
    "addr add 10.0.0.9/24 dev eth0 valid_lft 100", "addr flush", "addr show dev nosuch",
    "route add 10.0.0.0/24 dev eth0", "route add default via 10.0.0.2",
    "route del 10.77.0.0/16", "route del default via 10.0.0.99",
    "route add 10.78.0.0/16 via 172.31.0.1", "-6 route add fd99::/16 via fe80::1",
    "route add 10.0.0.1/24 dev eth0", "-6 route add 10.1.0.0/16 dev eth0",
    "route add 10.1.0.0/16 dev eth0 metric abc", "route add 10.1.0.0/16 dev eth0 proto bogus",
    "-6 route add fd77::/16 dev eth0 pref bogus", "route flush", "route show dev nosuch",
    "link set nosuch up", "link set eth0 mtu 10", "link set eth0 mtu 70000",
    "link set eth0 mtu abc", "link set eth0 address zz",
    "link set eth0 address 01:02:03:04:05:06", "link set eth0 bogus", "link show nosuch",
    "neigh del 10.0.0.99 dev eth0", "neigh add 10.0.0.88 lladdr 02:00:00:00:00:88 dev eth0",
    "neigh show nosuch", "neigh show dev nosuch", "neigh flush", "foo", "a foo",
    "-x addr", "route add 10.1.0.0/16 via bogus", "route add 10.1.0.0/16 via fc00::1",
]
#: keys only Linux has for a veth whose peer is in another namespace
_VETH_KEYS = {"link", "link_index", "link_netnsid"}


class Side:
    """One side of the comparison: ``ip`` in a namespace, or threadnet.ip on a stack."""

    def __init__(self, run) -> None:
        self.run = run

    def text(self, line: str) -> str:
        status, out, err = self.run(line)
        assert status == 0, (line, err)
        return out

    def json(self, line: str):
        return json.loads(self.text("-j " + line))


@pytest.fixture
def sides(netns):
    """(Linux, stack): a namespace with eth0, a veth whose peer is up in another
    namespace, and a stack with eth0 on a null:// link; both configured by CONFIG."""
    need_tool("ip")
    ns, peer_ns = netns.add(), netns.add()
    subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                    "peer0", "netns", peer_ns], check=True)
    subprocess.run(["ip", "-n", peer_ns, "link", "set", "peer0", "up"], check=True)

    def linux(line: str):
        r = subprocess.run(["ip", "-n", ns, *line.split()], capture_output=True, text=True,
                           timeout=30)
        return r.returncode, r.stdout, r.stderr

    stack = threadnet.Stack(link="null://")  # eth0, down until CONFIG sets it up

    def ours(line: str):
        try:
            return 0, threadnet.ip(stack, line, text=True), ""
        except IpError as exc:
            return exc.status, "", exc.message + "\n"

    left, right = Side(linux), Side(ours)
    try:
        for line in CONFIG:
            for side in (left, right):
                status, _, err = side.run(line)
                assert status == 0, (line, err)
        stack.settle()
        wait_for(lambda: "tentative" not in left.text("-6 addr"), 10, what="Linux's DAD")
        yield left, right
    finally:
        stack.close()


def _no_veth_keys(items):
    return [{k: v for k, v in i.items() if k not in _VETH_KEYS} for i in items]


def _close_enough(a, b, key: str) -> None:
    if a == FOREVER or b == FOREVER:
        assert a == b, key
    else:
        assert abs(a - b) <= 5, (key, a, b)


def test_side_by_side_ip_j_addr(sides):
    linux, ours = sides
    theirs, mine = _no_veth_keys(linux.json("addr")), ours.json("addr")
    assert [i["ifname"] for i in theirs] == [i["ifname"] for i in mine] == ["lo", "eth0"]
    for t, m in zip(theirs, mine, strict=True):
        assert list(t) == list(m), t["ifname"]  # the same keys in the same order
        for key in ("ifname", "flags", "mtu", "qdisc", "operstate", "group", "txqlen",
                    "link_type", "broadcast"):
            assert t[key] == m[key], (t["ifname"], key)
        assert len(t["addr_info"]) == len(m["addr_info"]), t["ifname"]
        for ta, ma in zip(t["addr_info"], m["addr_info"], strict=True):
            if ta["family"] == "inet6" and ta["scope"] == "link":
                ta["local"] = ma["local"] = "fe80::"  # from different MACs
            assert list(ta) == list(ma), (ta, ma)
            for key in ta:
                if key.endswith("_life_time"):
                    _close_enough(ta[key], ma[key], key)
                else:
                    assert ta[key] == ma[key], (ta, ma)
    for line in ("-4 addr", "-6 addr", "addr show dev eth0", "-6 addr show dev eth0 scope global"):
        t, m = linux.json(line), ours.json(line)
        for i in t:  # iproute2 6.1 prints {} for each address a selector leaves out
            i["addr_info"] = [x for x in i["addr_info"] if x]
        assert [[list(x) for x in i["addr_info"]] for i in t] == \
            [[list(x) for x in i["addr_info"]] for i in m], line
        assert [sorted(set(i) - _VETH_KEYS) for i in t] == [sorted(i) for i in m], line


def test_side_by_side_ip_j_route(sides):
    linux, ours = sides
    assert linux.json("route") == ours.json("route")
    theirs, mine = linux.json("-6 route"), ours.json("-6 route")
    assert [list(r) for r in theirs] == [list(r) for r in mine]
    for t, m in zip(theirs, mine, strict=True):
        if "expires" in t:
            _close_enough(t.pop("expires"), m.pop("expires"), "expires")
        assert t == m
    for line in ("route show dev eth0", "-6 route show dev eth0", "route show proto kernel",
                 "-6 route show default", "route show via 10.0.0.254",
                 "-6 route show metric 1024", "route show proto dhcp dev eth0"):
        t, m = linux.json(line), ours.json(line)
        assert [list(r) for r in t] == [list(r) for r in m], line


def test_side_by_side_ip_j_link_and_neigh(sides):
    linux, ours = sides
    theirs, mine = _no_veth_keys(linux.json("link")), ours.json("link")
    assert [list(i) for i in theirs] == [list(i) for i in mine]
    for t, m in zip(theirs, mine, strict=True):
        t.pop("ifindex"), m.pop("ifindex")
        if t["ifname"] == "eth0":
            t.pop("address"), m.pop("address")
        assert t == m
    assert linux.json("neigh show nud permanent") == ours.json("neigh show nud permanent")
    assert linux.json("neigh show dev eth0 nud permanent") == \
        ours.json("neigh show dev eth0 nud permanent")


def _layout(text: str) -> str:
    """Text with what differs between two hosts made equal: MACs, interface indexes, a
    veth's @peer, seconds left, link-local addresses."""
    text = re.sub(r"(?m)^\d+: ", "N: ", text)
    text = re.sub(r"@if\d+| link-netns \S+", "", text)
    text = re.sub(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", "MAC", text)
    text = re.sub(r"fe80::[0-9a-f]+:[0-9a-f]+:[0-9a-f]+:[0-9a-f]+", "fe80::X", text)
    return re.sub(r"\d+sec", "Nsec", text)


def test_side_by_side_text_layout(sides):
    linux, ours = sides
    for line in ("addr", "-4 addr", "-6 addr show dev eth0", "link", "route", "-6 route",
                 "neigh show nud permanent", "-j -p addr", "-j -p -6 route", "-p -j link"):
        theirs, mine = _layout(linux.text(line)), _layout(ours.text(line))
        if line.startswith("-j") or line.startswith("-p"):
            # pretty JSON: the same layout line by line; numbers of seconds differ
            theirs = re.sub(r'("(valid|preferred)_life_time": |"expires": |"ifindex": )\d+',
                            r"\1N", theirs)
            mine = re.sub(r'("(valid|preferred)_life_time": |"expires": |"ifindex": )\d+',
                          r"\1N", mine)
            # a veth's keys: a line with its comma, or the comma before a last one
            theirs = re.sub(r'\n *"link(_index|_netnsid)?": [^\n]*,(?=\n)', "", theirs)
            theirs = re.sub(r',\n *"link(_index|_netnsid)?": [^\n,]*(?=\n)', "", theirs)
        assert theirs.splitlines() == mine.splitlines(), line


def test_side_by_side_errors(sides):
    linux, ours = sides
    for line in REFUSED:
        t_status, _, t_err = linux.run(line)
        m_status, _, m_err = ours.run(line)
        assert (t_status, t_err.strip().splitlines()[0]) == \
            (m_status, m_err.strip().splitlines()[0]), line


def test_side_by_side_after_changes(sides):
    """Deleting, replacing and flushing leave both with the same tables."""
    linux, ours = sides
    for line in ("addr del 10.0.0.6/24 dev eth0", "addr replace 10.0.1.7/24 dev eth0",
                 "-6 addr del fc00:7::5/64 dev eth0", "route del 10.20.0.0/16",
                 "route replace 192.168.0.0/16 via 10.0.0.253 metric 50 proto dhcp",
                 "-6 route del default via fc00::2", "route flush proto static",
                 "neigh del 10.0.0.88 dev eth0", "link set eth0 mtu 1400"):
        for side in (linux, ours):
            status, _, err = side.run(line)
            assert status == 0, (line, err)
    assert linux.json("route") == ours.json("route")
    assert [{k: v for k, v in r.items() if k != "expires"} for r in linux.json("-6 route")] == \
        [{k: v for k, v in r.items() if k != "expires"} for r in ours.json("-6 route")]
    assert [(a["local"], a.get("dynamic")) for i in linux.json("-4 addr show dev eth0")
            for a in i["addr_info"]] == \
        [(a["local"], a.get("dynamic")) for i in ours.json("-4 addr show dev eth0")
         for a in i["addr_info"]]
    assert linux.json("link show eth0")[0]["mtu"] == ours.json("link show eth0")[0]["mtu"] == 1400
    assert linux.json("neigh show nud permanent") == ours.json("neigh show nud permanent")


def test_time_is_the_stacks_clock(lan):
    """The lifetimes shown are counted on the stack's clock, not the host's."""
    a = lan.stacks[0]
    ip(a, "addr add 10.0.5.5/24 dev eth0 valid_lft 100 preferred_lft 100")
    start = time.monotonic()
    lan.now += 40
    assert "valid_lft 60sec preferred_lft 60sec" in ip(a, "-4 addr")
    assert time.monotonic() - start < 1
