"""NETLINK_ROUTE emulated on a stack (stack/rtnetlink.py, stack/rtnlserver.py,
wire/netlink.py).

First the wire format and the emulator on a stack alone: dumps decoded field by field,
changes with and without the right to make them, the kernel's errors, malformed and
truncated requests, a flood, and the socket-pair server. Then the oracle (root): a
network namespace configured like the stack (test_iproute's CONFIG, the same MAC),
dumped through a real AF_NETLINK socket inside it, and:

* the kernel's replies and ours parsed by wire/netlink.py, attribute by attribute;
* both decoded by iproute2 itself: ``ip monitor file`` reads netlink messages from a
  file and prints them as ``ip addr``/``ip route``/``ip link`` do: the real ``ip``
  binary fed by the emulator, no supervisor needed;
* our replies decoded by a small decoder written here the way ``ip -j`` prints, compared
  with ``ip -j addr``/``ip -j route`` of the namespace;
* the same change requests (as iproute2 builds them) sent to the kernel and to the
  emulator: the same errno for each, then the same tables.

The requests are the ones iproute2 6.1 and glibc send (seen with ``strace -e
trace=sendto,sendmsg ip -j addr``, ``hostname -I``, ``ip link set lo mtu N``).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import threadnet
from test_iproute import CONFIG, FOREVER
from threadnet.stack import rtnlserver
from threadnet.stack.rtnetlink import DATAGRAM_SIZE, RtNetlink
from threadnet.stack.rtnlserver import MAX_PENDING, NetlinkServer
from threadnet.wire import netlink as nl

from conftest import need_tool, run_as, threadnet_cmd, threadnet_env, wait_for

MAC = "02:00:00:00:00:05"
PID = 4242
REQ_DUMP = nl.NLM_F_REQUEST | nl.NLM_F_DUMP
ADD = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_EXCL


# -- requests as iproute2 and glibc build them ---------------------------------------------------
def ip_link_dump(seq: int = 1, family: int = 0) -> bytes:
    """``ip -j addr``'s first request (iproute2 6.1): RTM_GETLINK dump, IFLA_EXT_MASK."""
    return nl.message(nl.RTM_GETLINK, REQ_DUMP, seq, 0,
                      nl.IFINFOMSG.pack(family, 0, 0, 0, 0) + nl.attr_u32(nl.IFLA_EXT_MASK, 1))


def ip_addr_dump(seq: int = 2, family: int = 0) -> bytes:
    """``ip -j addr``'s second: RTM_GETADDR dump, in iproute2's zero-padded buffer."""
    return nl.message(nl.RTM_GETADDR, REQ_DUMP, seq, 0, nl.IFADDRMSG.pack(family, 0, 0, 0, 0)
                      ) + bytes(128)


def ip_route_dump(seq: int = 3, family: int = nl.AF_INET) -> bytes:
    """``ip -j route``: RTM_GETROUTE dump asking for the main table."""
    return nl.message(nl.RTM_GETROUTE, REQ_DUMP, seq, 0,
                      nl.RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0)
                      + nl.attr_u32(nl.RTA_TABLE, nl.RT_TABLE_MAIN)) + bytes(120)


def glibc_dump(kind: int, seq: int = 4) -> bytes:
    """What glibc's getifaddrs/if_nameindex send: a bare rtgenmsg, 20 bytes."""
    return nl.message(kind, REQ_DUMP, seq, 0, bytes(4))


def neigh_dump(seq: int = 5) -> bytes:
    return nl.message(nl.RTM_GETNEIGH, REQ_DUMP, seq, 0, nl.NDMSG.pack(0, 0, 0, 0, 0))


def addr_req(kind: int, flags: int, cidr: str, index: int, *, lifetimes=None,
             ifa_flags: int = 0, wildcard: bool = False, seq: int = 9) -> bytes:
    """``ip addr add|del|change|replace CIDR dev IF [valid_lft V preferred_lft P]``."""
    iface = ipaddress.ip_interface(cidr)
    fam = nl.AF_INET if iface.version == 4 else nl.AF_INET6
    body = nl.IFADDRMSG.pack(fam, iface.network.prefixlen, ifa_flags & 0xFF, 0, index)
    body += nl.attr(nl.IFA_LOCAL, iface.ip.packed)
    if not wildcard:
        body += nl.attr(nl.IFA_ADDRESS, iface.ip.packed)
    if ifa_flags > 0xFF:
        body += nl.attr_u32(nl.IFA_FLAGS, ifa_flags)
    if lifetimes is not None:
        valid, preferred = lifetimes
        body += nl.attr(nl.IFA_CACHEINFO, nl.IFA_CACHEINFO_S.pack(preferred, valid, 0, 0))
    return nl.message(kind, flags, seq, 0, body)


def route_req(kind: int, flags: int, dst: str, *, via: str | None = None, oif: int = 0,
              metric: int | None = None, proto: int = nl.RTPROT_BOOT, table: int = 254,
              extra: bytes = b"", seq: int = 10) -> bytes:
    """``ip route add|del|replace|change DST [via GW] [dev IF] [metric N]``."""
    net = ipaddress.ip_network(dst)
    v4 = net.version == 4
    delete = kind == nl.RTM_DELROUTE
    scope = nl.RT_SCOPE_NOWHERE if delete else (
        nl.RT_SCOPE_LINK if v4 and via is None else nl.RT_SCOPE_UNIVERSE)
    body = nl.RTMSG.pack(nl.AF_INET if v4 else nl.AF_INET6, net.prefixlen, 0, 0,
                         table if table < 256 else 252, 0 if delete else proto, scope,
                         0 if delete else nl.RTN_UNICAST, 0)
    if net.prefixlen:
        body += nl.attr(nl.RTA_DST, net.network_address.packed)
    if table >= 256:
        body += nl.attr_u32(nl.RTA_TABLE, table)
    if via is not None:
        body += nl.attr(nl.RTA_GATEWAY, ipaddress.ip_address(via).packed)
    if oif:
        body += nl.attr_u32(nl.RTA_OIF, oif)
    if metric is not None:
        body += nl.attr_u32(nl.RTA_PRIORITY, metric)
    return nl.message(kind, flags, seq, 0, body + extra)


def link_req(index: int, *, up: bool | None = None, mtu: int | None = None,
             flags: int = 0, change: int = 0, name: str | None = None, seq: int = 11) -> bytes:
    """``ip link set IF up|down|mtu N`` (RTM_NEWLINK with an ack, as iproute2 6.1)."""
    if up is not None:
        flags, change = (nl.IFF_UP if up else 0), nl.IFF_UP
    body = nl.IFINFOMSG.pack(0, 0, index, flags, change)
    if mtu is not None:
        body += nl.attr_u32(nl.IFLA_MTU, mtu)
    if name is not None:
        body += nl.attr_str(nl.IFLA_IFNAME, name)
    return nl.message(nl.RTM_NEWLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, seq, 0, body)


# -- reading replies ---------------------------------------------------------------------------------
def flatten(datagrams):
    """(header, payload bytes) of every message in the datagrams."""
    return [(h, bytes(p)) for d in datagrams for h, p in nl.messages(d)]


def errno_of(datagrams) -> int:
    """The errno of the one NLMSG_ERROR answering a change (0 for an ack)."""
    msgs = [(h, p) for h, p in flatten(datagrams) if h.type == nl.NLMSG_ERROR]
    assert len(msgs) == 1, flatten(datagrams)
    err, _ = nl.parse_error(msgs[0][1])
    return -err


def parsed(datagrams):
    """Each message of a dump as (type, fixed header fields, {attr: bytes})."""
    out = []
    for h, p in flatten(datagrams):
        if h.type in (nl.NLMSG_DONE, nl.NLMSG_ERROR):
            continue
        s = nl.FAMILY_HEADER[h.type]
        fields, rest = nl.fixed_header(s, p)
        out.append((h.type, fields, {t: bytes(v) for t, v in nl.attrs(rest)}))
    return out


@pytest.fixture
def stack():
    """A stack configured by test_iproute's CONFIG, with the MAC the namespace gets."""
    s = threadnet.Stack(link="null://")
    threadnet.ip(s, f"link set eth0 address {MAC}")
    for line in CONFIG:
        threadnet.ip(s, line)
    s.settle()
    yield s
    s.close()


@pytest.fixture
def rtnl(stack):
    r = RtNetlink(stack)
    yield r
    assert r.internal_errors == 0


def ask(rtnl, request: bytes, *, may_change: bool = True):
    return rtnl.handle(request, pid=PID, may_change=may_change)


# -- the wire format ---------------------------------------------------------------------------------
def test_message_and_attribute_alignment():
    m = nl.message(nl.RTM_NEWLINK, nl.NLM_F_MULTI, 7, 99, b"abcde")
    assert len(m) == 24 and m[-3:] == bytes(3)
    assert nl.NLMSGHDR.unpack_from(m) == (21, nl.RTM_NEWLINK, nl.NLM_F_MULTI, 7, 99)
    a = nl.attr_str(nl.IFLA_IFNAME, "eth0")
    assert a == struct.pack("=HH", 9, nl.IFLA_IFNAME) + b"eth0\0" + bytes(3)
    nested = nl.attr_nested(nl.IFLA_AF_SPEC, nl.attr_u8(1, 5), nl.attr_u64(2, 1 << 40))
    (t, v), = nl.attrs(nested)
    assert t == nl.IFLA_AF_SPEC  # the NESTED flag is not part of the type
    inner = nl.attrs(v)
    assert [(t, nl.get_u8(x) if t == 1 else nl.get_u64(x)) for t, x in inner] == \
        [(1, 5), (2, 1 << 40)]
    # two messages in a datagram, then iproute2's zero padding: read as the kernel does
    data = m + nl.message(nl.NLMSG_DONE, 0, 8, 99, bytes(4)) + bytes(40)
    assert [(h.type, h.seq) for h, _ in nl.messages(data)] == [(nl.RTM_NEWLINK, 7), (3, 8)]
    assert [bytes(p) for h, p in nl.messages(m)] == [b"abcde"]


def test_malformed_wire_data_is_netlink_error():
    with pytest.raises(nl.NetlinkError) as info:
        nl.attrs(struct.pack("=HH", 40, 3) + b"abcd")  # runs past the data
    assert info.value.errno == errno.EINVAL
    with pytest.raises(nl.NetlinkError):
        nl.attrs(struct.pack("=HH", 2, 3) + b"abcd")  # shorter than its own header
    assert nl.attrs(b"\x01\x02") == []  # fewer than 4 bytes left: ignored
    with pytest.raises(nl.NetlinkError):
        nl.fixed_header(nl.IFADDRMSG, b"\x02\x18")
    with pytest.raises(nl.NetlinkError):
        nl.get_u32(b"\x01")
    assert nl.get_str(b"eth0\0junk") == "eth0"
    # a header claiming more than there is ends the reading
    assert list(nl.messages(struct.pack("=IHHII", 400, 18, 1, 0, 0))) == []


def test_error_echoes_the_request_as_the_kernel_does():
    req = nl.message(nl.RTM_NEWADDR, ADD, 77, 0, bytes(8) + nl.attr_u32(nl.IFA_FLAGS, 1))
    hdr, payload = next(nl.messages(req))
    err = nl.error(errno.EEXIST, hdr, payload, PID)
    (h, p), = list(nl.messages(err))
    assert (h.type, h.flags, h.seq, h.pid) == (nl.NLMSG_ERROR, 0, 77, PID)
    assert bytes(p) == struct.pack("=i", -errno.EEXIST) + req  # the whole request
    ack = nl.error(0, hdr, payload, PID)
    (h, p), = list(nl.messages(ack))
    assert h.flags == nl.NLM_F_CAPPED and len(p) == 4 + 16  # an ack: the header only
    assert nl.parse_error(p) == (0, hdr)


# -- dumps decoded -----------------------------------------------------------------------------------
def test_link_dump(rtnl, stack):
    eth0 = stack.interfaces[2]
    eth0.rx_packets, eth0.rx_bytes, eth0.tx_packets, eth0.tx_bytes = 3, (1 << 33) + 5, 4, 400
    replies = ask(rtnl, ip_link_dump(seq=31))
    heads = [h for h, _ in flatten(replies)]
    assert [h.type for h in heads] == [nl.RTM_NEWLINK, nl.RTM_NEWLINK, nl.NLMSG_DONE]
    assert all(h.seq == 31 and h.pid == PID and h.flags == nl.NLM_F_MULTI for h in heads)
    (_, lo, lo_a), (_, eth, eth_a) = parsed(replies)
    assert lo == (0, nl.ARPHRD_LOOPBACK, 1,
                  nl.IFF_UP | nl.IFF_LOOPBACK | nl.IFF_RUNNING | nl.IFF_LOWER_UP, 0)
    assert eth == (0, nl.ARPHRD_ETHER, 2, nl.IFF_UP | nl.IFF_BROADCAST | nl.IFF_MULTICAST
                   | nl.IFF_RUNNING | nl.IFF_LOWER_UP, 0)
    assert nl.get_str(lo_a[nl.IFLA_IFNAME]) == "lo" and nl.get_u32(lo_a[nl.IFLA_MTU]) == 65536
    assert nl.get_str(eth_a[nl.IFLA_IFNAME]) == "eth0"
    assert eth_a[nl.IFLA_ADDRESS] == bytes.fromhex(MAC.replace(":", ""))
    assert eth_a[nl.IFLA_BROADCAST] == b"\xff" * 6
    assert nl.get_u32(eth_a[nl.IFLA_MTU]) == 1500
    assert nl.get_u8(eth_a[nl.IFLA_OPERSTATE]) == nl.IF_OPER_UP
    assert nl.get_u8(lo_a[nl.IFLA_OPERSTATE]) == nl.IF_OPER_UNKNOWN
    assert nl.get_u32(eth_a[nl.IFLA_TXQLEN]) == 1000
    stats64 = struct.unpack("=25Q", eth_a[nl.IFLA_STATS64])
    assert stats64[:4] == (3, 4, (1 << 33) + 5, 400)
    assert struct.unpack("=24I", eth_a[nl.IFLA_STATS])[:4] == (3, 4, 5, 400)  # 32-bit wrap
    # a link going down loses UP, RUNNING, LOWER_UP
    stack.link_down("eth0")
    (_, _, _), (_, eth, eth_a) = parsed(ask(rtnl, glibc_dump(nl.RTM_GETLINK)))
    assert eth[3] == nl.IFF_BROADCAST | nl.IFF_MULTICAST
    assert nl.get_u8(eth_a[nl.IFLA_OPERSTATE]) == nl.IF_OPER_DOWN


def test_link_by_index_and_by_name(rtnl):
    by_index = nl.message(nl.RTM_GETLINK, nl.NLM_F_REQUEST, 5, 0, nl.IFINFOMSG.pack(0, 0, 2, 0, 0))
    (t, fields, attrs), = parsed(ask(rtnl, by_index))
    assert fields[2] == 2 and nl.get_str(attrs[nl.IFLA_IFNAME]) == "eth0"
    (h, _), = flatten(ask(rtnl, by_index))
    assert h.flags == 0  # not part of a dump
    # iproute2's ll_name_to_index: by IFLA_IFNAME, with IFLA_EXT_MASK; an ack asked for
    by_name = nl.message(nl.RTM_GETLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 6, 0,
                         nl.IFINFOMSG.pack(0, 0, 0, 0, 0) + nl.attr_u32(nl.IFLA_EXT_MASK, 9)
                         + nl.attr_str(nl.IFLA_IFNAME, "lo"))
    replies = ask(rtnl, by_name)
    assert [h.type for h, _ in flatten(replies)] == [nl.RTM_NEWLINK, nl.NLMSG_ERROR]
    assert parsed(replies)[0][1][2] == 1 and errno_of(replies) == 0
    missing = nl.message(nl.RTM_GETLINK, nl.NLM_F_REQUEST, 7, 0,
                         nl.IFINFOMSG.pack(0, 0, 0, 0, 0) + nl.attr_str(nl.IFLA_IFNAME, "eth9"))
    assert errno_of(ask(rtnl, missing)) == errno.ENODEV
    assert errno_of(ask(rtnl, nl.message(nl.RTM_GETLINK, nl.NLM_F_REQUEST, 8, 0,
                                         nl.IFINFOMSG.pack(0, 0, 99, 0, 0)))) == errno.ENODEV


def test_addr_dump(rtnl, stack):
    msgs = parsed(ask(rtnl, ip_addr_dump()))
    v4 = [(f, a) for t, f, a in msgs if f[0] == nl.AF_INET]
    v6 = [(f, a) for t, f, a in msgs if f[0] == nl.AF_INET6]
    assert [f[0] for _, f, _ in msgs] == [nl.AF_INET] * len(v4) + [nl.AF_INET6] * len(v6)
    by_addr = {str(ipaddress.ip_address(a[nl.IFA_ADDRESS])): (f, a) for f, a in v4 + v6}
    f, a = by_addr["10.0.0.5"]
    assert f == (nl.AF_INET, 24, nl.IFA_F_PERMANENT, nl.RT_SCOPE_UNIVERSE, 2)
    assert a[nl.IFA_LOCAL] == a[nl.IFA_ADDRESS]
    assert a[nl.IFA_BROADCAST] == bytes([10, 0, 0, 255])
    assert nl.get_str(a[nl.IFA_LABEL]) == "eth0"
    assert nl.get_u32(a[nl.IFA_FLAGS]) == nl.IFA_F_PERMANENT
    assert nl.IFA_CACHEINFO_S.unpack(a[nl.IFA_CACHEINFO])[:2] == (FOREVER, FOREVER)
    f, a = by_addr["10.0.0.6"]  # the same network: a secondary
    assert f[2] == nl.IFA_F_SECONDARY | nl.IFA_F_PERMANENT
    f, a = by_addr["10.0.1.7"]  # a lifetime: dynamic, not permanent
    assert f[2] == 0
    preferred, valid, _, _ = nl.IFA_CACHEINFO_S.unpack(a[nl.IFA_CACHEINFO])
    assert 14390 <= preferred <= 14400 and 86390 <= valid <= 86400
    assert nl.IFA_BROADCAST not in by_addr["10.0.2.9"][1]  # a /31 has none
    f, a = by_addr["127.0.0.1"]
    assert f[3] == nl.RT_SCOPE_HOST and f[4] == 1
    f, a = by_addr["fc00:7::5"]
    assert nl.IFA_LOCAL not in a and nl.IFA_LABEL not in a
    assert nl.get_u32(a[nl.IFA_FLAGS]) == nl.IFA_F_PERMANENT | nl.IFA_F_MANAGETEMPADDR
    f, a = by_addr["fc00:8::5"]  # preferred_lft 0: deprecated, with noprefixroute
    assert nl.get_u32(a[nl.IFA_FLAGS]) == (nl.IFA_F_PERMANENT | nl.IFA_F_DEPRECATED
                                           | nl.IFA_F_NOPREFIXROUTE)
    link_local = [f for f, a in v6 if a[nl.IFA_ADDRESS][:2] == b"\xfe\x80"]
    assert [f[3] for f in link_local] == [nl.RT_SCOPE_LINK]
    # an address under DAD is tentative
    stack.addr_add("eth0", "fc00:9::5/64")
    a = next(a for _, f, a in parsed(ask(rtnl, ip_addr_dump(family=nl.AF_INET6)))
             if a[nl.IFA_ADDRESS] == ipaddress.ip_address("fc00:9::5").packed)
    assert nl.get_u32(a[nl.IFA_FLAGS]) & nl.IFA_F_TENTATIVE
    # a family, and an interface, keep only theirs
    assert {f[0] for _, f, _ in parsed(ask(rtnl, ip_addr_dump(family=nl.AF_INET)))} == {2}
    only_lo = nl.message(nl.RTM_GETADDR, REQ_DUMP, 1, 0, nl.IFADDRMSG.pack(0, 0, 0, 0, 1))
    assert {f[4] for _, f, _ in parsed(ask(rtnl, only_lo))} == {1}


def test_route_dump(rtnl):
    v4 = parsed(ask(rtnl, ip_route_dump()))
    by_dst = {}
    for _, f, a in v4:
        dst = ipaddress.ip_address(a.get(nl.RTA_DST, bytes(4)))
        by_dst[f"{dst}/{f[1]}"] = (f, a)
    f, a = by_dst["0.0.0.0/0"]
    assert f == (nl.AF_INET, 0, 0, 0, nl.RT_TABLE_MAIN, nl.RTPROT_STATIC, nl.RT_SCOPE_UNIVERSE,
                 nl.RTN_UNICAST, 0)
    assert a[nl.RTA_GATEWAY] == bytes([10, 0, 0, 1]) and nl.get_u32(a[nl.RTA_OIF]) == 2
    assert nl.get_u32(a[nl.RTA_TABLE]) == nl.RT_TABLE_MAIN and nl.RTA_PRIORITY not in a
    f, a = by_dst["10.0.0.0/24"]
    assert (f[5], f[6]) == (nl.RTPROT_KERNEL, nl.RT_SCOPE_LINK)
    assert a[nl.RTA_PREFSRC] == bytes([10, 0, 0, 5])
    f, a = by_dst["192.168.0.0/16"]
    assert f[5] == nl.RTPROT_DHCP and nl.get_u32(a[nl.RTA_PRIORITY]) == 50
    assert by_dst["10.20.0.0/16"][0][5] == nl.RTPROT_BOOT
    v6 = parsed(ask(rtnl, ip_route_dump(family=nl.AF_INET6)))
    assert {f[0] for _, f, _ in v6} == {nl.AF_INET6}
    by_dst6 = {(str(ipaddress.ip_address(a.get(nl.RTA_DST, bytes(16)))), f[1],
                nl.get_u32(a[nl.RTA_PRIORITY])): (f, a) for _, f, a in v6}
    f, a = by_dst6[("fd02::", 16, 1024)]
    assert nl.get_u8(a[nl.RTA_PREF]) == nl.ROUTER_PREF_HIGH
    assert a[nl.RTA_GATEWAY] == ipaddress.ip_address("fe80::1").packed
    f, a = by_dst6[("fd01::", 16, 1024)]
    expires = nl.RTA_CACHEINFO_S.unpack(a[nl.RTA_CACHEINFO])[2]
    assert 590 * 100 <= expires <= 600 * 100  # clock_t, USER_HZ 100
    assert by_dst6[("fc00::", 64, 256)][0][5] == nl.RTPROT_KERNEL
    assert by_dst6[("::", 0, 100)][1][nl.RTA_GATEWAY] == ipaddress.ip_address("fc00::2").packed
    # AF_UNSPEC: both families; another table: none; RTA_OIF filters
    both = parsed(ask(rtnl, ip_route_dump(family=0)))
    assert len(both) == len(v4) + len(v6)
    other = nl.message(nl.RTM_GETROUTE, REQ_DUMP, 1, 0, nl.RTMSG.pack(2, 0, 0, 0, 0, 0, 0, 0, 0)
                       + nl.attr_u32(nl.RTA_TABLE, 100))
    assert parsed(ask(rtnl, other)) == []
    on_lo = nl.message(nl.RTM_GETROUTE, REQ_DUMP, 1, 0, nl.RTMSG.pack(2, 0, 0, 0, 0, 0, 0, 0, 0)
                       + nl.attr_u32(nl.RTA_OIF, 1))
    assert parsed(ask(rtnl, on_lo)) == []


def test_neigh_dump(rtnl):
    msgs = parsed(ask(rtnl, neigh_dump()))
    entries = {(f[0], ipaddress.ip_address(a[nl.NDA_DST]).compressed): (f, a) for _, f, a in msgs}
    f, a = entries[(nl.AF_INET, "10.0.0.88")]
    assert f == (nl.AF_INET, 2, nl.NUD_PERMANENT, 0, nl.RTN_UNICAST)
    assert a[nl.NDA_LLADDR] == bytes.fromhex("020000000088")
    assert entries[(nl.AF_INET6, "fc00::88")][0][2] == nl.NUD_PERMANENT


def test_large_dumps_are_split_for_a_4k_reader(rtnl, stack):
    for i in range(200):
        threadnet.ip(stack, f"route add 10.{100 + i // 250}.{i % 250}.0/24 dev eth0")
    replies = ask(rtnl, ip_route_dump())
    assert len(replies) > 2 and all(len(d) <= DATAGRAM_SIZE for d in replies)
    msgs = flatten(replies)
    assert msgs[-1][0].type == nl.NLMSG_DONE and len(parsed(replies)) > 200


# -- changes ------------------------------------------------------------------------------------------
def test_changes_need_the_right(rtnl, stack):
    before = threadnet.ip(stack, "-j addr")
    for req in (addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2),
                addr_req(nl.RTM_DELADDR, nl.NLM_F_REQUEST | nl.NLM_F_ACK, "10.0.0.5/24", 2),
                route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16", oif=2),
                link_req(2, up=False), link_req(2, mtu=1400)):
        assert errno_of(ask(rtnl, req, may_change=False)) == errno.EPERM
    assert threadnet.ip(stack, "-j addr") == before
    # reading needs no right
    assert parsed(ask(rtnl, ip_link_dump(), may_change=False))


def test_address_changes(rtnl, stack):
    def has(cidr: str) -> bool:
        return cidr in " ".join(f"{a['local']}/{a['prefixlen']}" for i in
                                threadnet.ip(stack, "-j addr") for a in i["addr_info"])

    assert errno_of(ask(rtnl, addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2))) == 0
    assert has("10.9.0.5/24")
    assert errno_of(ask(rtnl, addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2))) == errno.EEXIST
    # replace of one that is there: new lifetimes
    replace = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_REPLACE
    assert errno_of(ask(rtnl, addr_req(nl.RTM_NEWADDR, replace, "10.9.0.5/24", 2,
                                       lifetimes=(600, 300)))) == 0
    info = next(a for i in threadnet.ip(stack, "-j addr") for a in i["addr_info"]
                if a["local"] == "10.9.0.5")
    assert info["dynamic"] and 590 <= info["valid_life_time"] <= 600
    assert errno_of(ask(rtnl, addr_req(nl.RTM_NEWADDR, ADD, "fc00:9::5/64", 2,
                                       ifa_flags=nl.IFA_F_NOPREFIXROUTE))) == 0
    assert has("fc00:9::5/64")
    assert not any(r["dst"] == "fc00:9::/64" for r in threadnet.ip(stack, "-j -6 route"))
    delete = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert errno_of(ask(rtnl, addr_req(nl.RTM_DELADDR, delete, "fc00:9::5/64", 2))) == 0
    assert not has("fc00:9::5/64")
    assert errno_of(ask(rtnl, addr_req(nl.RTM_DELADDR, delete, "10.9.0.5/25", 2))) == \
        errno.EADDRNOTAVAIL
    # iproute2's wildcard deletion (no IFA_ADDRESS): any prefix length
    assert errno_of(ask(rtnl, addr_req(nl.RTM_DELADDR, delete, "10.9.0.5/32", 2,
                                       wildcard=True))) == 0
    assert not has("10.9.0.5/24")
    assert errno_of(ask(rtnl, addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 9))) == errno.ENODEV
    # what the stack cannot do is refused, never ignored
    assert errno_of(ask(rtnl, addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2,
                                       ifa_flags=nl.IFA_F_HOMEADDRESS))) == errno.EOPNOTSUPP
    label = addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2)[:-0 or None]
    hdr, payload = next(nl.messages(label))
    label = nl.message(hdr.type, hdr.flags, 1, 0, bytes(payload) + nl.attr_str(nl.IFA_LABEL,
                                                                               "eth0:1"))
    assert errno_of(ask(rtnl, label)) == errno.EOPNOTSUPP
    assert not has("10.9.0.5/24")


def test_route_changes(rtnl, stack):
    def routes() -> list[str]:
        return [r["dst"] + " " + r.get("gateway", "") for r in threadnet.ip(stack, "-j route")]

    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16",
                                        via="10.0.0.1", metric=7))) == 0
    assert "10.9.0.0/16 10.0.0.1" in routes()
    info = next(r for r in threadnet.ip(stack, "-j route") if r["dst"] == "10.9.0.0/16")
    assert info["metric"] == 7 and "protocol" not in info  # boot, as ip route add
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16",
                                        via="10.0.0.1", metric=7))) == errno.EEXIST
    replace = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_CREATE | nl.NLM_F_REPLACE
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, replace, "10.9.0.0/16",
                                        via="10.0.0.254", metric=7))) == 0
    assert "10.9.0.0/16 10.0.0.254" in routes() and "10.9.0.0/16 10.0.0.1" not in routes()
    change = nl.NLM_F_REQUEST | nl.NLM_F_ACK | nl.NLM_F_REPLACE
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, change, "10.77.0.0/16",
                                        oif=2))) == errno.ENOENT
    delete = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    assert errno_of(ask(rtnl, route_req(nl.RTM_DELROUTE, delete, "10.9.0.0/16"))) == 0
    assert errno_of(ask(rtnl, route_req(nl.RTM_DELROUTE, delete, "10.9.0.0/16"))) == errno.ESRCH
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "fd55::/16", via="fc00::1",
                                        oif=2, proto=nl.RTPROT_STATIC))) == 0
    info = next(r for r in threadnet.ip(stack, "-j -6 route") if r["dst"] == "fd55::/16")
    assert (info["gateway"], info["protocol"], info["metric"]) == ("fc00::1", "static", 1024)
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16", oif=9))) == \
        errno.ENODEV
    # not emulated: another table, a preferred source, metrics
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16", oif=2,
                                        table=100))) == errno.EOPNOTSUPP
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16", oif=2,
                                        extra=nl.attr(nl.RTA_PREFSRC, bytes([10, 0, 0, 5]))))
                    ) == errno.EOPNOTSUPP
    assert errno_of(ask(rtnl, route_req(nl.RTM_NEWROUTE, ADD, "10.9.0.0/16", oif=2, extra=(
        nl.attr_nested(nl.RTA_METRICS, nl.attr_u32(2, 1400)))))) == errno.EOPNOTSUPP
    assert "10.9.0.0/16 " not in routes()


def test_link_changes(rtnl, stack):
    assert errno_of(ask(rtnl, link_req(2, up=False))) == 0
    assert not stack.interfaces[2].up
    assert errno_of(ask(rtnl, link_req(2, up=True))) == 0
    assert stack.interfaces[2].up
    assert errno_of(ask(rtnl, link_req(2, mtu=1400))) == 0  # ifi_flags and ifi_change 0
    assert stack.interfaces[2].mtu == 1400 and stack.interfaces[2].up
    assert errno_of(ask(rtnl, link_req(0, mtu=1300, name="eth0"))) == 0  # by name
    assert stack.interfaces[2].mtu == 1300
    assert errno_of(ask(rtnl, link_req(2, mtu=10))) == errno.EINVAL
    assert errno_of(ask(rtnl, link_req(9, up=True))) == errno.ENODEV
    assert errno_of(ask(rtnl, link_req(2, flags=nl.IFF_PROMISC, change=nl.IFF_PROMISC))) == \
        errno.EOPNOTSUPP
    assert errno_of(ask(rtnl, link_req(2, name="wan0"))) == errno.EOPNOTSUPP  # a rename
    create = nl.message(nl.RTM_NEWLINK, ADD, 1, 0, nl.IFINFOMSG.pack(0, 0, 0, 0, 0)
                        + nl.attr_str(nl.IFLA_IFNAME, "d0")
                        + nl.attr_nested(nl.IFLA_LINKINFO, nl.attr_str(1, "dummy")))
    assert errno_of(ask(rtnl, create)) == errno.EOPNOTSUPP
    delete = nl.message(nl.RTM_DELLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 1, 0,
                        nl.IFINFOMSG.pack(0, 0, 2, 0, 0))
    assert errno_of(ask(rtnl, delete)) == errno.EOPNOTSUPP
    assert 2 in stack.interfaces


def test_neigh_changes(rtnl, stack):
    body = nl.NDMSG.pack(nl.AF_INET, 2, nl.NUD_PERMANENT, 0, 0)
    body += nl.attr(nl.NDA_DST, bytes([10, 0, 0, 99])) + nl.attr(nl.NDA_LLADDR, b"\x02" * 6)
    assert errno_of(ask(rtnl, nl.message(nl.RTM_NEWNEIGH, ADD, 1, 0, body))) == 0
    assert any(n["dst"] == "10.0.0.99" for n in threadnet.ip(stack, "-j neigh"))
    assert errno_of(ask(rtnl, nl.message(nl.RTM_NEWNEIGH, ADD, 1, 0, body))) == errno.EEXIST
    assert errno_of(ask(rtnl, nl.message(nl.RTM_DELNEIGH, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                                         1, 0, body))) == 0
    assert errno_of(ask(rtnl, nl.message(nl.RTM_DELNEIGH, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                                         1, 0, body))) == errno.ENOENT


# -- malformed, unknown, flood ---------------------------------------------------------------------
def test_malformed_requests_get_einval(rtnl):
    # payload shorter than the fixed header
    short = nl.message(nl.RTM_NEWADDR, ADD, 1, 0, b"\x02\x18")
    assert errno_of(ask(rtnl, short)) == errno.EINVAL
    # an attribute running past the message
    bad_attr = nl.message(nl.RTM_NEWADDR, ADD, 2, 0, nl.IFADDRMSG.pack(2, 24, 0, 0, 2)
                          + struct.pack("=HH", 200, nl.IFA_LOCAL) + bytes(4))
    assert errno_of(ask(rtnl, bad_attr)) == errno.EINVAL
    # an address of the wrong size, a prefix too long, host bits in a route
    assert errno_of(ask(rtnl, nl.message(nl.RTM_NEWADDR, ADD, 3, 0, nl.IFADDRMSG.pack(
        2, 24, 0, 0, 2) + nl.attr(nl.IFA_LOCAL, b"\x0a\x00")))) == errno.EINVAL
    assert errno_of(ask(rtnl, nl.message(nl.RTM_NEWADDR, ADD, 3, 0, nl.IFADDRMSG.pack(
        2, 40, 0, 0, 2) + nl.attr(nl.IFA_LOCAL, bytes(4))))) == errno.EINVAL
    host_bits = nl.message(nl.RTM_NEWROUTE, ADD, 4, 0, nl.RTMSG.pack(2, 16, 0, 0, 254, 3, 0, 1, 0)
                           + nl.attr(nl.RTA_DST, bytes([10, 9, 1, 0])) + nl.attr_u32(nl.RTA_OIF, 2))
    assert errno_of(ask(rtnl, host_bits)) == errno.EINVAL
    assert errno_of(ask(rtnl, nl.message(nl.RTM_NEWADDR, ADD, 5, 0, nl.IFADDRMSG.pack(
        7, 24, 0, 0, 2)))) == errno.EAFNOSUPPORT
    # a first header claiming more than came, or less than a header: EINVAL, echoing it
    claim = struct.pack("=IHHII", 500, nl.RTM_GETLINK, REQ_DUMP, 6, 0) + bytes(4)
    (h, p), = flatten(ask(rtnl, claim))
    assert h.type == nl.NLMSG_ERROR and h.seq == 6 and nl.parse_error(p)[0] == -errno.EINVAL
    assert errno_of(ask(rtnl, struct.pack("=IHHII", 3, nl.RTM_GETLINK, 1, 7, 0))) == errno.EINVAL
    assert ask(rtnl, b"\x01\x02\x03") == []  # not even a header: nothing to answer
    # a dump without its family byte
    assert errno_of(ask(rtnl, nl.message(nl.RTM_GETLINK, REQ_DUMP, 8, 0))) == errno.EINVAL
    # a string that is not UTF-8
    assert errno_of(ask(rtnl, nl.message(nl.RTM_GETLINK, nl.NLM_F_REQUEST, 9, 0,
                                         nl.IFINFOMSG.pack(0, 0, 0, 0, 0)
                                         + nl.attr(nl.IFLA_IFNAME, b"\xff\xfe\0")))) == errno.EINVAL


def test_unknown_and_unemulated_requests(rtnl):
    for kind in (nl.RTM_GETROUTE, nl.RTM_GETADDR, 40, 100, 200):  # lookups; unknown types
        req = nl.message(kind, nl.NLM_F_REQUEST, 1, 0, bytes(12))
        assert errno_of(ask(rtnl, req)) == errno.EOPNOTSUPP, kind
    # a control message, or a non-request, is acknowledged only when asked
    assert ask(rtnl, nl.message(nl.NLMSG_NOOP, nl.NLM_F_REQUEST, 1, 0)) == []
    assert errno_of(ask(rtnl, nl.message(nl.NLMSG_NOOP, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 1,
                                         0))) == 0
    assert ask(rtnl, nl.message(nl.RTM_GETLINK, 0, 1, 0, bytes(16))) == []


def test_several_requests_in_one_datagram(rtnl):
    """Answered in turn; a second dump in the same datagram is EBUSY, as a dump started
    while another runs."""
    data = ip_link_dump(seq=1) + nl.message(nl.NLMSG_NOOP, nl.NLM_F_REQUEST | nl.NLM_F_ACK,
                                            2, 0) + glibc_dump(nl.RTM_GETADDR, seq=3)
    msgs = flatten(ask(rtnl, data))
    assert [(h.type, h.seq) for h, _ in msgs] == [
        (nl.RTM_NEWLINK, 1), (nl.RTM_NEWLINK, 1), (nl.NLMSG_DONE, 1), (nl.NLMSG_ERROR, 2),
        (nl.NLMSG_ERROR, 3)]
    assert nl.parse_error(msgs[-1][1])[0] == -errno.EBUSY


def test_a_flood_grows_nothing(stack):
    """A program that sends requests and never reads stalls itself: the server stops
    reading once MAX_PENDING reply bytes wait; reading again resumes it."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server = NetlinkServer(ours, RtNetlink(stack), pid=PID, may_change=False)
    theirs.setblocking(False)
    sent = 0
    try:
        while sent < 20000:
            theirs.send(ip_addr_dump(seq=sent))
            sent += 1
            if sent % 50 == 0:
                server.on_readable()
    except BlockingIOError:
        pass
    server.on_readable()
    assert sent > 100 and server.pending_bytes <= MAX_PENDING + 64 * 1024
    assert not server.wants_read and server.wants_write
    got = 0
    while True:
        try:
            theirs.recv(65536)
            got += 1
        except BlockingIOError:
            if server.wants_write:
                server.on_writable()
                server.on_readable()
                continue
            server.on_readable()
            try:
                theirs.recv(65536)
                got += 1
                continue
            except BlockingIOError:
                break
    assert got == sent and server.pending_bytes == 0  # one datagram a dump
    theirs.close()
    server.on_readable()
    assert server.closed


def test_serve_datagram_in_a_thread(stack):
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    t = threading.Thread(target=rtnlserver.serve_datagram, args=(ours, RtNetlink(stack)),
                         kwargs={"pid": PID}, daemon=True)
    t.start()
    theirs.settimeout(5)
    theirs.send(glibc_dump(nl.RTM_GETLINK, seq=12))
    names, done = [], False
    while not done:
        for h, p in nl.messages(theirs.recv(4096)):  # glibc's buffer
            assert h.pid == PID and h.seq == 12
            if h.type == nl.NLMSG_DONE:
                done = True
            else:
                _, rest = nl.fixed_header(nl.IFINFOMSG, p)
                names.append(nl.get_str(nl.attr_map(rest)[nl.IFLA_IFNAME]))
    assert names == ["lo", "eth0"]
    theirs.send(link_req(2, up=False))  # not allowed here
    assert errno_of([theirs.recv(4096)]) == errno.EPERM
    theirs.close()
    t.join(5)
    assert not t.is_alive() and ours.fileno() == -1


# -- the kernel as the oracle (root) ----------------------------------------------------------------
#: runs in the namespace: each request (hex) on a real NETLINK_ROUTE socket (strict
#: dumps, as iproute2), the reply datagrams (hex) until NLMSG_DONE or NLMSG_ERROR (one
#: datagram for a get without an ack)
KERNEL_SCRIPT = r"""
import json, socket, struct, sys
s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0)
s.bind((0, 0))
if sys.argv[1] == "strict":  # as iproute2; glibc's sockets are not
    s.setsockopt(270, 12, 1)  # SOL_NETLINK, NETLINK_GET_STRICT_CHK
s.settimeout(5)
out = {"pid": s.getsockname()[0], "replies": []}
for req in json.loads(sys.stdin.read()):
    s.send(bytes.fromhex(req))
    flags = struct.unpack_from("=H", bytes.fromhex(req), 6)[0]
    got, end = [], False
    while not end:
        d = s.recv(1 << 16)
        got.append(d.hex())
        off = 0
        while off + 16 <= len(d):
            n, t = struct.unpack_from("=IH", d, off)
            end |= t in (2, 3)
            off += (n + 3) & ~3
        end |= flags & 0x300 != 0x300 and not flags & 4  # a get: one answer
    out["replies"].append(got)
print(json.dumps(out))
"""


class Kernel:
    """A namespace configured by CONFIG: its netlink answers, and ip in it."""

    def __init__(self, netns, ns: str) -> None:
        self.netns, self.ns = netns, ns

    def ask(self, requests: list[bytes], *, strict: bool = True
            ) -> tuple[int, list[list[bytes]]]:
        r = subprocess.run(["ip", "netns", "exec", self.ns, sys.executable, "-c", KERNEL_SCRIPT,
                            "strict" if strict else "lax"],
                           input=json.dumps([q.hex() for q in requests]), capture_output=True,
                           text=True, timeout=30, check=True)
        out = json.loads(r.stdout)
        return out["pid"], [[bytes.fromhex(d) for d in ds] for ds in out["replies"]]

    def ip(self, *args: str) -> str:
        return subprocess.run(["ip", "-n", self.ns, *args], capture_output=True, text=True,
                              timeout=30, check=True).stdout

    def monitor(self, datagrams: list[bytes], tmp_path, name: str) -> str:
        """``ip monitor file`` on the messages: iproute2 decoding them, in the namespace
        (so that indexes name its interfaces)."""
        path = tmp_path / name
        path.write_bytes(b"".join(nl.message(h.type, h.flags, h.seq, h.pid, p)
                                  for h, p in flatten(datagrams)
                                  if h.type not in (nl.NLMSG_DONE, nl.NLMSG_ERROR)))
        return subprocess.run(["ip", "netns", "exec", self.ns, "ip", "monitor", "file",
                               str(path)], capture_output=True, text=True, timeout=30,
                              check=True).stdout


@pytest.fixture
def kernel(netns):
    """A namespace with eth0 (a veth whose peer is up in another namespace), the stack's
    MAC, configured by CONFIG; DAD over."""
    need_tool("ip")
    ns, peer_ns = netns.add(), netns.add()
    subprocess.run(["ip", "-n", ns, "link", "add", "eth0", "type", "veth", "peer", "name",
                    "peer0", "netns", peer_ns], check=True)
    subprocess.run(["ip", "-n", peer_ns, "link", "set", "peer0", "up"], check=True)
    k = Kernel(netns, ns)
    for line in ["link set eth0 address " + MAC, "link set lo up", *CONFIG]:
        subprocess.run(["ip", "-n", ns, *line.split()], check=True)
    wait_for(lambda: "tentative" not in k.ip("-6", "addr"), 10, what="Linux's DAD")
    return k


def _names(msgs, index_of_name=None):
    return {f[2]: nl.get_str(a[nl.IFLA_IFNAME]) for t, f, a in msgs if t == nl.RTM_NEWLINK}


@pytest.mark.root
def test_kernel_and_emulator_dumps_agree_field_by_field(kernel, rtnl):
    requests = [ip_link_dump(seq=1), ip_addr_dump(seq=2), ip_route_dump(seq=3),
                ip_route_dump(seq=4, family=nl.AF_INET6), neigh_dump(seq=5)]
    glibc = [glibc_dump(nl.RTM_GETLINK, seq=6), glibc_dump(nl.RTM_GETADDR, seq=7)]
    pid, theirs = kernel.ask(requests)
    mine = [rtnl.handle(q, pid=pid, may_change=False) for q in requests]
    glibc_pid, glibc_theirs = kernel.ask(glibc, strict=False)
    theirs += glibc_theirs
    mine += [rtnl.handle(q, pid=glibc_pid, may_change=False) for q in glibc]
    requests += glibc
    for t, m, q in zip(theirs, mine, requests, strict=True):
        # the framing: every header's flags, seq and pid; NLMSG_DONE's payload
        th, mh = flatten(t), flatten(m)
        assert {(h.flags, h.seq, h.pid) for h, _ in th} == {(h.flags, h.seq, h.pid)
                                                             for h, _ in mh}, q[:20]
        assert th[-1][0].type == mh[-1][0].type == nl.NLMSG_DONE
        assert th[-1][1] == mh[-1][1]
    k_links, m_links = parsed(theirs[0]), parsed(mine[0])
    k_names, m_names = _names(k_links), _names(m_links)
    assert sorted(k_names.values()) == sorted(m_names.values()) == ["eth0", "lo"]
    k_by_name = {k_names[f[2]]: (f, a) for _, f, a in k_links}
    m_by_name = {m_names[f[2]]: (f, a) for _, f, a in m_links}
    for name in ("lo", "eth0"):
        (kf, ka), (mf, ma) = k_by_name[name], m_by_name[name]
        assert (kf[0], kf[1], kf[3], kf[4]) == (mf[0], mf[1], mf[3], mf[4]), name
        for key in (nl.IFLA_IFNAME, nl.IFLA_ADDRESS, nl.IFLA_BROADCAST, nl.IFLA_MTU,
                    nl.IFLA_OPERSTATE, nl.IFLA_TXQLEN, nl.IFLA_QDISC, nl.IFLA_GROUP,
                    nl.IFLA_LINKMODE, nl.IFLA_CARRIER, nl.IFLA_PROMISCUITY):
            assert ka[key] == ma[key], (name, key)
        assert len(ka[nl.IFLA_STATS64]) == len(ma[nl.IFLA_STATS64])
        assert len(ka[nl.IFLA_STATS]) == len(ma[nl.IFLA_STATS])
    # ``ip -6 addr``'s first request: the links as IPv6 sees them (inet6_fill_ifinfo)
    ip6 = nl.message(nl.RTM_GETLINK, REQ_DUMP, 9, 0, nl.IFINFOMSG.pack(nl.AF_INET6, 0, 0, 0, 0))
    _, (t6,) = kernel.ask([ip6])
    k6 = {nl.get_str(a[nl.IFLA_IFNAME]): (f, a) for _, f, a in parsed(t6)}
    m6 = {nl.get_str(a[nl.IFLA_IFNAME]): (f, a) for _, f, a in parsed(rtnl.handle(
        ip6, pid=1, may_change=False))}
    assert sorted(k6) == sorted(m6) == ["eth0", "lo"]
    for name, (kf, ka) in k6.items():
        mf, ma = m6[name]
        assert (kf[0], kf[1], kf[3]) == (mf[0], mf[1], mf[3]) and kf[0] == nl.AF_INET6
        # no IPv6 devconf here; a queue length Linux leaves out (so ip needs no ioctl)
        assert set(ka) - {nl.IFLA_PROTINFO, nl.IFLA_LINK} == set(ma) - {nl.IFLA_TXQLEN}
        for key in set(ma) - {nl.IFLA_TXQLEN}:
            assert ka[key] == ma[key], (name, key)
    # glibc's bare request gets the same links
    assert sorted(_names(parsed(theirs[5])).values()) == sorted(_names(parsed(mine[5])).values())

    def index_to_name(f_index, names):
        return names[f_index]

    def addr_key(f, a, names):
        return (f[0], names[f[4]], a[nl.IFA_ADDRESS])

    k_addrs = {addr_key(f, a, k_names): (f, a) for _, f, a in parsed(theirs[1])}
    m_addrs = {addr_key(f, a, m_names): (f, a) for _, f, a in parsed(mine[1])}
    assert list(k_addrs) == list(m_addrs)  # the same addresses in the same order
    for key in k_addrs:
        (kf, ka), (mf, ma) = k_addrs[key], m_addrs[key]
        assert kf[:4] == mf[:4], key  # family, prefix length, flags, scope
        assert set(ka) - {nl.IFA_PROTO, nl.IFA_RT_PRIORITY} == set(ma), key
        for attr in set(ma) - {nl.IFA_CACHEINFO}:
            assert ka[attr] == ma[attr], (key, attr)
        kc, mc = (nl.IFA_CACHEINFO_S.unpack(x[nl.IFA_CACHEINFO]) for x in (ka, ma))
        for kv, mv in zip(kc[:2], mc[:2], strict=True):
            assert kv == mv if FOREVER in (kv, mv) else abs(kv - mv) <= 5, key
    assert parsed(theirs[6])[0][1][0] == parsed(mine[6])[0][1][0]
    for i in (2, 3):
        k_routes, m_routes = parsed(theirs[i]), parsed(mine[i])
        assert len(k_routes) == len(m_routes)
        for (_, kf, ka), (_, mf, ma) in zip(k_routes, m_routes, strict=True):
            assert kf == mf, (kf, mf)
            assert set(ka) == set(ma), (kf, ka, ma)
            for attr in ka:
                if attr == nl.RTA_OIF:
                    assert k_names[nl.get_u32(ka[attr])] == m_names[nl.get_u32(ma[attr])]
                elif attr == nl.RTA_CACHEINFO:
                    kx, mx = (nl.RTA_CACHEINFO_S.unpack(x[attr])[2] for x in (ka, ma))
                    assert abs(kx - mx) <= 500
                else:
                    assert ka[attr] == ma[attr], (kf, attr)
    k_neigh = [(f[0], f[2], a[nl.NDA_DST], a.get(nl.NDA_LLADDR))
               for _, f, a in parsed(theirs[4]) if f[2] == nl.NUD_PERMANENT]
    m_neigh = [(f[0], f[2], a[nl.NDA_DST], a.get(nl.NDA_LLADDR)) for _, f, a in parsed(mine[4])]
    assert k_neigh == m_neigh


def _mon_layout(text: str) -> str:
    text = re.sub(r"@\S+?:", ":", text)  # a veth's @peer
    text = re.sub(r",M-DOWN| link-netns \S+", "", text)
    return re.sub(r"\d+sec", "Nsec", text)


@pytest.mark.root
def test_ip_itself_decodes_the_emulator_as_the_kernel(kernel, rtnl, tmp_path):
    """``ip monitor file``: iproute2's own decoding of our dumps and of the kernel's."""
    requests = [ip_link_dump(seq=1), ip_addr_dump(seq=2), ip_route_dump(seq=3),
                ip_route_dump(seq=4, family=nl.AF_INET6), neigh_dump(seq=5)]
    pid, theirs = kernel.ask(requests)
    for i, q in enumerate(requests):
        mine = rtnl.handle(q, pid=pid, may_change=False)
        t = _mon_layout(kernel.monitor(theirs[i], tmp_path, f"k{i}"))
        m = _mon_layout(kernel.monitor(mine, tmp_path, f"m{i}"))
        if i == 4:  # the kernel's own entries (the routers it probed): permanent ones only
            t = "\n".join(line for line in t.splitlines() if "PERMANENT" in line)
            m = "\n".join(line for line in m.splitlines() if "PERMANENT" in line)
        assert t.splitlines() == m.splitlines(), i
        assert m.strip()


# a decoder of our replies that prints what ``ip -j`` prints
_LINK_FLAGS = ((nl.IFF_LOOPBACK, "LOOPBACK"), (nl.IFF_BROADCAST, "BROADCAST"),
               (nl.IFF_POINTOPOINT, "POINTOPOINT"), (nl.IFF_MULTICAST, "MULTICAST"),
               (nl.IFF_NOARP, "NOARP"), (nl.IFF_UP, "UP"), (nl.IFF_LOWER_UP, "LOWER_UP"))
_ADDR_FLAGS = (("secondary", nl.IFA_F_SECONDARY), ("nodad", nl.IFA_F_NODAD),
               ("optimistic", nl.IFA_F_OPTIMISTIC), ("dadfailed", nl.IFA_F_DADFAILED),
               ("home", nl.IFA_F_HOMEADDRESS), ("deprecated", nl.IFA_F_DEPRECATED),
               ("tentative", nl.IFA_F_TENTATIVE), ("dynamic", nl.IFA_F_PERMANENT),
               ("mngtmpaddr", nl.IFA_F_MANAGETEMPADDR),
               ("noprefixroute", nl.IFA_F_NOPREFIXROUTE))
_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}
_OPER = {0: "UNKNOWN", 2: "DOWN", 6: "UP"}
_PROTOS = {2: "kernel", 4: "static", 9: "ra", 16: "dhcp"}
_PREFS = {0: "medium", 1: "high", 3: "low"}


def _mac(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


def ip_j_addr(link_replies, addr_replies):
    out = []
    addrs = parsed(addr_replies)
    for _, (_fam, kind, index, flags, _c), a in parsed(link_replies):
        info = {"ifindex": index, "ifname": nl.get_str(a[nl.IFLA_IFNAME])}
        names = ["NO-CARRIER"] if flags & nl.IFF_UP and not flags & nl.IFF_RUNNING else []
        info["flags"] = names + [n for bit, n in _LINK_FLAGS if flags & bit]
        info["mtu"] = nl.get_u32(a[nl.IFLA_MTU])
        info["qdisc"] = nl.get_str(a[nl.IFLA_QDISC])
        info["operstate"] = _OPER[nl.get_u8(a[nl.IFLA_OPERSTATE])]
        info["group"] = "default" if nl.get_u32(a[nl.IFLA_GROUP]) == 0 else "?"
        info["txqlen"] = nl.get_u32(a[nl.IFLA_TXQLEN])
        info["link_type"] = "loopback" if kind == nl.ARPHRD_LOOPBACK else "ether"
        info["address"] = _mac(a[nl.IFLA_ADDRESS])
        info["broadcast"] = _mac(a[nl.IFLA_BROADCAST])
        infos = []
        for _, (afam, plen, f8, scope, aindex), aa in addrs:
            if aindex != index:
                continue
            f = nl.get_u32(aa[nl.IFA_FLAGS]) if nl.IFA_FLAGS in aa else f8
            x = {"family": "inet" if afam == nl.AF_INET else "inet6",
                 "local": str(ipaddress.ip_address(aa.get(nl.IFA_LOCAL, aa[nl.IFA_ADDRESS]))),
                 "prefixlen": plen}
            if nl.IFA_BROADCAST in aa:
                x["broadcast"] = str(ipaddress.ip_address(aa[nl.IFA_BROADCAST]))
            x["scope"] = _SCOPES[scope]
            for name, bit in _ADDR_FLAGS:
                if (name == "dynamic") != bool(f & bit):
                    x["temporary" if name == "secondary" and afam == nl.AF_INET6
                      else name] = True
            if nl.IFA_LABEL in aa:
                x["label"] = nl.get_str(aa[nl.IFA_LABEL])
            preferred, valid, _, _ = nl.IFA_CACHEINFO_S.unpack(aa[nl.IFA_CACHEINFO])
            x["valid_life_time"], x["preferred_life_time"] = valid, preferred
            infos.append(x)
        info["addr_info"] = infos
        out.append(info)
    return out


def ip_j_route(route_replies, names):
    out = []
    for _, (_fam, dlen, _s, _t, _tb, proto, scope, _k, rflags), a in parsed(route_replies):
        r = {}
        if dlen == 0:
            r["dst"] = "default"
        else:
            dst = ipaddress.ip_address(a[nl.RTA_DST])
            r["dst"] = str(dst) if dlen == dst.max_prefixlen else f"{dst}/{dlen}"
        if nl.RTA_GATEWAY in a:
            r["gateway"] = str(ipaddress.ip_address(a[nl.RTA_GATEWAY]))
        r["dev"] = names[nl.get_u32(a[nl.RTA_OIF])]
        if proto != nl.RTPROT_BOOT:
            r["protocol"] = _PROTOS[proto]
        if scope != 0:
            r["scope"] = _SCOPES[scope]
        if nl.RTA_PREFSRC in a:
            r["prefsrc"] = str(ipaddress.ip_address(a[nl.RTA_PREFSRC]))
        if nl.RTA_PRIORITY in a:
            r["metric"] = nl.get_u32(a[nl.RTA_PRIORITY])
        r["flags"] = ["linkdown"] if rflags & nl.RTNH_F_LINKDOWN else []
        if nl.RTA_CACHEINFO in a:
            expires = nl.RTA_CACHEINFO_S.unpack(a[nl.RTA_CACHEINFO])[2]
            if expires:
                r["expires"] = expires // 100
        if nl.RTA_PREF in a:
            r["pref"] = _PREFS[nl.get_u8(a[nl.RTA_PREF])]
        out.append(r)
    return out


def _close(a, b) -> bool:
    return a == b if FOREVER in (a, b) else abs(a - b) <= 5


@pytest.mark.root
def test_decoded_replies_are_what_ip_j_prints(kernel, rtnl):
    links = rtnl.handle(ip_link_dump(), pid=1, may_change=False)
    mine = ip_j_addr(links, rtnl.handle(ip_addr_dump(), pid=1, may_change=False))
    theirs = json.loads(kernel.ip("-j", "addr"))
    assert [i["ifname"] for i in theirs] == [i["ifname"] for i in mine]
    for t, m in zip(theirs, mine, strict=True):
        for key in ("ifname", "flags", "mtu", "qdisc", "operstate", "group", "txqlen",
                    "link_type", "address", "broadcast"):
            assert t[key] == m[key], (t["ifname"], key)
        assert len(t["addr_info"]) == len(m["addr_info"])
        for ta, ma in zip(t["addr_info"], m["addr_info"], strict=True):
            assert list(ta) == list(ma), (ta, ma)
            for key in ta:
                assert _close(ta[key], ma[key]) if key.endswith("_life_time") else \
                    ta[key] == ma[key], (ta, ma, key)
    names = {i["ifindex"]: i["ifname"] for i in mine}
    assert json.loads(kernel.ip("-j", "route")) == ip_j_route(
        rtnl.handle(ip_route_dump(), pid=1, may_change=False), names)
    theirs6 = json.loads(kernel.ip("-6", "-j", "route"))
    mine6 = ip_j_route(rtnl.handle(ip_route_dump(family=nl.AF_INET6), pid=1, may_change=False),
                       names)
    for t, m in zip(theirs6, mine6, strict=True):
        if "expires" in t:
            assert abs(t.pop("expires") - m.pop("expires")) <= 5
        assert t == m
    assert len(theirs6) == len(mine6)


#: changes as iproute2 sends them, each answered the same by the kernel and the emulator
#: (index 2 is eth0 on both)
def _changes() -> list[bytes]:
    delete = nl.NLM_F_REQUEST | nl.NLM_F_ACK
    replace = delete | nl.NLM_F_CREATE | nl.NLM_F_REPLACE
    return [
        addr_req(nl.RTM_NEWADDR, ADD, "10.0.0.5/24", 2),  # EEXIST
        addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2),
        addr_req(nl.RTM_NEWADDR, ADD, "fc00:9::5/64", 2, lifetimes=(600, 300)),
        addr_req(nl.RTM_NEWADDR, replace, "10.0.1.7/24", 2),
        addr_req(nl.RTM_DELADDR, delete, "10.0.0.6/24", 2),
        addr_req(nl.RTM_DELADDR, delete, "10.99.0.5/24", 2),  # EADDRNOTAVAIL
        addr_req(nl.RTM_DELADDR, delete, "fc00:99::5/64", 2),  # EADDRNOTAVAIL
        addr_req(nl.RTM_DELADDR, delete, "10.0.2.9/32", 2, wildcard=True),
        addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 77),  # ENODEV
        route_req(nl.RTM_NEWROUTE, ADD, "10.40.0.0/16", via="10.0.0.1", oif=2, metric=9),
        route_req(nl.RTM_NEWROUTE, ADD, "10.40.0.0/16", via="10.0.0.1", oif=2, metric=9),
        route_req(nl.RTM_NEWROUTE, ADD, "fd40::/16", via="fc00::1", oif=2),
        route_req(nl.RTM_NEWROUTE, replace, "192.168.0.0/16", via="10.0.0.253", oif=2,
                  metric=50, proto=nl.RTPROT_DHCP),
        route_req(nl.RTM_DELROUTE, delete, "10.20.0.0/16"),
        route_req(nl.RTM_DELROUTE, delete, "10.77.0.0/16"),  # ESRCH
        route_req(nl.RTM_DELROUTE, delete, "::/0", via="fc00::2", metric=100),
        link_req(2, mtu=1400),
        link_req(2, mtu=10),  # EINVAL
        link_req(99, up=True),  # ENODEV
        # iproute2's probe for RTM_NEWLINK (iplink_have_newlink): EINVAL or EOPNOTSUPP
        # would send ``ip link set`` to the old ioctls
        nl.message(nl.RTM_NEWLINK, nl.NLM_F_REQUEST | nl.NLM_F_ACK, 0, 0, bytes(16)),
    ]


@pytest.mark.root
def test_changes_answered_as_the_kernel_answers(kernel, rtnl, stack):
    changes = _changes()
    _, theirs = kernel.ask(changes)
    for q, t in zip(changes, theirs, strict=True):
        m = rtnl.handle(q, pid=1, may_change=True)
        assert errno_of(t) == errno_of(m), (next(nl.messages(q))[0], errno_of(t), errno_of(m))
        # the error echoes the request, the ack its header, as the kernel's
        (th, tp), = flatten(t)
        (mh, mp), = flatten(m)
        assert (th.flags, len(tp)) == (mh.flags, len(mp))
        assert tp[4:] == mp[4:]
    wait_for(lambda: "tentative" not in kernel.ip("-6", "addr"), 10, what="Linux's DAD")
    stack.settle()
    assert json.loads(kernel.ip("-j", "route")) == threadnet.ip(stack, "-j route")
    assert [r["dst"] for r in json.loads(kernel.ip("-6", "-j", "route"))] == \
        [r["dst"] for r in threadnet.ip(stack, "-6 -j route")]
    assert [(a["local"], a["prefixlen"]) for i in json.loads(kernel.ip("-j", "addr"))
            for a in i["addr_info"]] == \
        [(a["local"], a["prefixlen"]) for i in threadnet.ip(stack, "-j addr")
         for a in i["addr_info"]]
    assert stack.interfaces[2].mtu == 1400
    # down and up (last: Linux drops the routes through a link that goes down)
    for q in (link_req(2, up=False), link_req(2, up=True)):
        _, (t,) = kernel.ask([q])
        assert errno_of(t) == errno_of(rtnl.handle(q, pid=1, may_change=True)) == 0
    assert stack.interfaces[2].up and '"UP"' in kernel.ip("-j", "link", "show", "eth0")


# -- on a published stack: what the supervisor injects -------------------------------------------
#: run as a client of a published stack: the emulated socket's link names, and the errno
#: a route change gets
CLIENT_SCRIPT = r"""
import json, socket, sys
from threadnet.stack import remote
from threadnet.wire import netlink as nl
s = socket.socket(fileno=remote.open_netlink(sys.argv[1], 777))
s.settimeout(10)
s.send(nl.message(nl.RTM_GETADDR, nl.NLM_F_REQUEST | nl.NLM_F_DUMP, 1, 0, bytes(4)))
addrs, done = [], False
while not done:
    for h, p in nl.messages(s.recv(4096)):
        assert h.pid == 777, h
        done |= h.type == nl.NLMSG_DONE
        if h.type == nl.RTM_NEWADDR:
            _, rest = nl.fixed_header(nl.IFADDRMSG, p)
            addrs.append(bytes(nl.attr_map(rest)[nl.IFA_ADDRESS]).hex())
body = nl.RTMSG.pack(2, 16, 0, 0, 254, 3, 253, 1, 0) + nl.attr(nl.RTA_DST, bytes([10, 9, 0, 0]))
s.send(nl.message(nl.RTM_NEWROUTE, 0x605, 2, 0, body + nl.attr_u32(nl.RTA_OIF, 2)))
(h, p), = nl.messages(s.recv(4096))
# the same through RemoteStack.netlink: a request in, the reply datagrams out
via_rpc = remote.RemoteStack(sys.argv[1]).netlink(
    nl.message(nl.RTM_NEWROUTE, 0x605, 3, 0, body + nl.attr_u32(nl.RTA_OIF, 2)), 778)
(h2, p2), = nl.messages(via_rpc[0])
print(json.dumps({"addrs": addrs, "route_add": -nl.parse_error(p)[0],
                  "rpc_route_add": -nl.parse_error(p2)[0], "rpc_pid": h2.pid}))
"""


@pytest.fixture
def published(procs, sockdir):
    """``threadnet stack`` as a daemon (on a null:// link), published at PATH (0666)."""
    path = os.path.join(sockdir, "st")
    procs.daemon(threadnet_cmd("stack", path, "--link", "null://", "--config",
                               "eth,ip=10.0.0.5/24,gw=10.0.0.1", "-m", "0666",
                               "-d", "-p", path + ".pid"), path + ".pid", env=threadnet_env())
    return path


def test_a_published_stack_hands_out_netlink_sockets(published):
    r = subprocess.run([sys.executable, "-c", CLIENT_SCRIPT, published], capture_output=True,
                       text=True, timeout=60, env=threadnet_env())
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "0a000005" in out["addrs"] and out["route_add"] == 0  # the owner may change it
    assert (out["rpc_route_add"], out["rpc_pid"]) == (errno.EEXIST, 778)  # added just before
    assert any(x["dst"] == "10.9.0.0/16" for x in threadnet.ip(published, "route"))


def test_only_the_owner_changes_through_netlink(published, unpriv):
    r = run_as(unpriv, [unpriv["python"], "-c", CLIENT_SCRIPT, published], capture_output=True,
               text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert "0a000005" in out["addrs"]  # anyone who may use the stack reads it
    assert out["route_add"] == out["rpc_route_add"] == errno.EPERM
    assert not any(x["dst"] == "10.9.0.0/16" for x in threadnet.ip(published, "route"))


def test_an_oversized_request_and_too_many_sockets(stack, monkeypatch):
    rtnl = RtNetlink(stack)
    end = rtnlserver.open_netlink(rtnl, pid=PID, may_change=False)
    try:
        end.settimeout(5)
        # larger than the server reads: EMSGSIZE, echoing the header only
        big = nl.message(nl.RTM_NEWADDR, ADD, 3, 0, bytes(rtnlserver.MAX_REQUEST))
        end.send(big)
        (h, p), = flatten([end.recv(4096)])
        err, echo = nl.parse_error(p)
        assert (h.type, h.seq, err, echo.type) == (nl.NLMSG_ERROR, 3, -errno.EMSGSIZE,
                                                    nl.RTM_NEWADDR)
        assert len(p) == 20
        monkeypatch.setattr(rtnlserver, "MAX_SERVERS", 1)
        with pytest.raises(OSError) as info:
            rtnlserver.open_netlink(rtnl, pid=PID, may_change=False)
        assert info.value.errno == errno.EMFILE
    finally:
        end.close()
    wait_for(lambda: rtnl.servers == 0, 5, what="the server thread's end")
    rtnlserver.open_netlink(rtnl, pid=PID, may_change=False).close()  # a place again


def test_remote_netlink_pages_a_large_dump(sockdir):
    s = threadnet.Stack("eth,ip=10.0.0.5/24,gw=10.0.0.1", link="null://")
    try:
        path = os.path.join(sockdir, "s")
        s.publish(path)
        with s.locked():
            for n in range(3000):
                s.route_add(f"172.{16 + n // 256}.{n % 256}.0/24", "10.0.0.1")
        datagrams = threadnet.RemoteStack(path).netlink(ip_route_dump(seq=5), 99)
        assert datagrams == RtNetlink(s).handle(ip_route_dump(seq=5), pid=99, may_change=True)
        assert len(parsed(datagrams)) == 3002 and sum(map(len, datagrams)) > 3 * 45000
    finally:
        s.close()


def route_get(dst: str, seq: int = 20) -> bytes:
    """``ip route get DST`` as iproute2 6.1 sends it (RTM_F_LOOKUP_TABLE for IPv4 only:
    the kernel's strict check refuses it for IPv6)."""
    a = ipaddress.ip_address(dst)
    return nl.message(nl.RTM_GETROUTE, nl.NLM_F_REQUEST, seq, 0, nl.RTMSG.pack(
        nl.AF_INET if a.version == 4 else nl.AF_INET6, a.max_prefixlen, 0, 0, 0, 0, 0, 0,
        nl.RTM_F_LOOKUP_TABLE if a.version == 4 else 0) + nl.attr(nl.RTA_DST, a.packed))


#: fc00:1::9: the longest match picks the source (RFC 6724 rule 8); 2001:db8::7: of the
#: two default routes, the one of metric 100 beats the one given none (Linux's 1024)
ROUTE_GETS = ("1.1.1.1", "10.0.0.7", "192.168.5.5", "10.30.0.1", "10.0.0.5", "127.0.0.1",
              "fd00::1", "fc00::7", "fd02::9", "fc00:1::9", "2001:db8::7")
#: destinations whose source address is a tie under RFC 6724 (the same longest match with
#: several of eth0's addresses): the stack's pick and Linux's may differ, both eth0's.
SOURCE_TIES = ("fd00::1", "fd02::9", "2001:db8::7")


def test_route_get(rtnl):
    (_, f, a), = parsed(ask(rtnl, route_get("192.168.5.5")))
    assert f == (nl.AF_INET, 32, 0, 0, nl.RT_TABLE_MAIN, 0, 0, nl.RTN_UNICAST, nl.RTM_F_CLONED)
    assert (a[nl.RTA_DST], a[nl.RTA_GATEWAY], a[nl.RTA_PREFSRC], nl.get_u32(a[nl.RTA_OIF])) \
        == (bytes([192, 168, 5, 5]), bytes([10, 0, 0, 254]), bytes([10, 0, 0, 5]), 2)
    (_, f, a), = parsed(ask(rtnl, route_get("10.0.0.6")))  # a local address: through lo
    assert (f[4], f[7], f[8]) == (nl.RT_TABLE_MAIN, nl.RTN_LOCAL,
                                  nl.RTM_F_CLONED | nl.RTCF_LOCAL)
    assert nl.get_u32(a[nl.RTA_OIF]) == 1 and a[nl.RTA_PREFSRC] == bytes([10, 0, 0, 6])
    s = threadnet.Stack("eth,ip=10.0.0.5/24", link="null://")
    try:
        assert errno_of(RtNetlink(s).handle(route_get("8.8.8.8"), pid=1, may_change=False)) \
            == errno.ENETUNREACH
    finally:
        s.close()


@pytest.mark.root
def test_route_get_answered_as_the_kernel_does(kernel, rtnl):
    requests = [route_get(d, seq=i) for i, d in enumerate(ROUTE_GETS)]
    _, theirs = kernel.ask(requests)
    names = {1: "lo", 2: "eth0"}
    k_names = {}
    for line in kernel.ip("-o", "link").splitlines():
        index, name = line.split(":")[:2]
        k_names[int(index)] = name.strip().split("@")[0]
    for dst, t, q in zip(ROUTE_GETS, theirs, requests, strict=True):
        mine = rtnl.handle(q, pid=1, may_change=False)
        if flatten(t)[0][0].type == nl.NLMSG_ERROR:
            assert errno_of(t) == errno_of(mine), dst
            continue
        (_, kf, ka), = parsed(t)
        (_, mf, ma), = parsed(mine)
        assert kf == mf, (dst, kf, mf)
        assert set(ka) - {nl.RTA_UID} == set(ma), (dst, set(ka), set(ma))
        for attr in ma:
            if attr == nl.RTA_OIF:
                assert k_names[nl.get_u32(ka[attr])] == names[nl.get_u32(ma[attr])], dst
            elif attr == nl.RTA_PREFSRC and dst in SOURCE_TIES:
                assert ma[attr][:2] == ka[attr][:2] == b"\xfc\x00", dst
            elif attr != nl.RTA_CACHEINFO:
                assert ka[attr] == ma[attr], (dst, attr)


def test_fuzzed_requests_never_raise(stack):
    """Random and mutated requests (changes allowed): every answer is well-formed netlink,
    and no request meets an unexpected exception."""
    rtnl = RtNetlink(stack)
    valid = [ip_link_dump(), ip_addr_dump(), ip_route_dump(), neigh_dump(), route_get("1.1.1.1"),
             addr_req(nl.RTM_NEWADDR, ADD, "10.9.0.5/24", 2),
             addr_req(nl.RTM_DELADDR, nl.NLM_F_REQUEST, "10.0.0.5/24", 2),
             route_req(nl.RTM_NEWROUTE, ADD, "10.40.0.0/16", via="10.0.0.1", oif=2),
             route_req(nl.RTM_DELROUTE, nl.NLM_F_REQUEST, "0.0.0.0/0"),
             link_req(2, mtu=1400), link_req(2, up=True)]

    @settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from(valid), st.lists(st.tuples(st.integers(0, 200), st.integers(0, 255)),
                                            max_size=6),
           st.integers(0, 200), st.binary(max_size=64), st.integers(16, 40),
           st.integers(0, 0xFFFF))
    def check(base, flips, cut, tail, kind, flags):
        data = bytearray(base)
        for pos, value in flips:
            if pos < len(data):
                data[pos] = value
        if cut < len(data) and cut % 3 == 0:
            del data[cut:]
        for request in (bytes(data) + tail,
                        nl.message(kind, flags, 1, 0, tail)):
            for d in rtnl.handle(request, pid=PID, may_change=True):
                assert isinstance(d, bytes) and len(d) % 4 == 0
                for h, _ in nl.messages(d):
                    assert h.pid == PID
        assert rtnl.internal_errors == 0

    check()
