"""NETLINK_ROUTE on a stack: what a program's ``socket(AF_NETLINK, SOCK_RAW,
NETLINK_ROUTE)`` would get from Linux, answered from the stack (``getifaddrs()``,
``if_nameindex()``, ``ip addr``, ``ip route``, ``ip link``, ``ip neigh``).

``RtNetlink(stack).handle(request, pid=..., may_change=...)`` is sans-IO: one datagram
the program sent in, the datagrams it would read back out, each at most
``DATAGRAM_SIZE`` bytes (a dump is split as the kernel splits it for a 4 KiB reader,
glibc's). ``stack/rtnlserver.py`` runs it on one end of an AF_UNIX SOCK_SEQPACKET pair
whose other end stands for the program's netlink socket.

The dumps are made from iproute2's view of the stack (``stack/iproute.py``: the data
``ip -j`` prints), so ``ip`` reading them prints what ``threadnet ip`` prints, Linux's
order and flags included; the changes are ``stack/ipcommand.py``'s commands, with
iproute2's checks, answered with the errno the kernel gives.

Answered: RTM_GETLINK (dump, by index, by IFLA_IFNAME; an AF_INET6 dump as
``inet6_fill_ifinfo``), RTM_GETROUTE for one destination (``ip route get``), and
RTM_GETADDR, RTM_GETROUTE and RTM_GETNEIGH dumps (family
AF_UNSPEC for both IP families, AF_INET or AF_INET6; the main table only, as ``ip
route`` asks it with RTA_TABLE); and, when ``may_change``, RTM_NEWADDR/DELADDR,
RTM_NEWROUTE/DELROUTE (main table, unicast, one next hop), RTM_NEWNEIGH/DELNEIGH
(permanent entries) and RTM_NEWLINK/SETLINK on an existing link (up/down, MTU, MAC).
Errors are NLMSG_ERROR as the kernel sends them: EPERM for a change without
``may_change``, EEXIST, ENOENT/ESRCH/EADDRNOTAVAIL, ENODEV, EOPNOTSUPP for what is not
emulated (an attribute threadnet cannot honour is refused, never ignored), EINVAL for
malformed requests. No extended acknowledgements (NETLINK_EXT_ACK): the errno only.

Where this differs from Linux, on purpose:
* a datagram whose first header is too short or claims a wrong length gets EINVAL
  (Linux drops it silently, leaving the program waiting);
* one dump per datagram: a second dump request in the same datagram gets EBUSY (as
  Linux answers a dump started while one is running), which bounds a reply;
* a route dump shows the main table whatever table is asked (RTA_TABLE other than
  main: an empty dump); no ``local`` table, no notifications (multicast groups); a
  route lookup (``ip route get``) is answered for a destination only (not from an
  input interface, a source or a mark), without RTA_UID, and IPv6's for a local
  address is an ordinary one;
* address cache info has the lifetimes; its creation and update stamps are 0.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import struct
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet.stack import iproute
from threadnet.stack.ip import broadcast4
from threadnet.stack.ipcommand import PROTOCOLS, Command, execute
from threadnet.stack.iproute import IpError
from threadnet.stack.route import METRIC6_KERNEL
from threadnet.wire import netlink as nl
from threadnet.wire.ethernet import mac_from_str

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

#: the most a reply datagram holds: what Linux puts in one for a reader with a 4 KiB
#: buffer (NLMSG_GOODSIZE on 4 KiB pages), so glibc's getifaddrs never sees MSG_TRUNC
DATAGRAM_SIZE = 3776

_PROTO_NUMBER = {name: number for number, name in PROTOCOLS.items()}
_SCOPE = {"global": nl.RT_SCOPE_UNIVERSE, "site": nl.RT_SCOPE_SITE, "link": nl.RT_SCOPE_LINK,
          "host": nl.RT_SCOPE_HOST}
_IFA_FLAG = {"secondary": nl.IFA_F_SECONDARY, "temporary": nl.IFA_F_TEMPORARY,
             "nodad": nl.IFA_F_NODAD, "optimistic": nl.IFA_F_OPTIMISTIC,
             "dadfailed": nl.IFA_F_DADFAILED, "home": nl.IFA_F_HOMEADDRESS,
             "deprecated": nl.IFA_F_DEPRECATED, "tentative": nl.IFA_F_TENTATIVE,
             "mngtmpaddr": nl.IFA_F_MANAGETEMPADDR, "noprefixroute": nl.IFA_F_NOPREFIXROUTE,
             "autojoin": nl.IFA_F_MCAUTOJOIN, "stable-privacy": nl.IFA_F_STABLE_PRIVACY}
_IFF = {"UP": nl.IFF_UP, "LOWER_UP": nl.IFF_LOWER_UP | nl.IFF_RUNNING,
        "LOOPBACK": nl.IFF_LOOPBACK, "BROADCAST": nl.IFF_BROADCAST,
        "MULTICAST": nl.IFF_MULTICAST}
_OPERSTATE = {"UP": nl.IF_OPER_UP, "DOWN": nl.IF_OPER_DOWN, "UNKNOWN": nl.IF_OPER_UNKNOWN,
              "LOWERLAYERDOWN": nl.IF_OPER_LOWERLAYERDOWN}
_PREF = {"low": nl.ROUTER_PREF_LOW, "medium": nl.ROUTER_PREF_MEDIUM,
         "high": nl.ROUTER_PREF_HIGH}
_NUD = {"PERMANENT": nl.NUD_PERMANENT, "REACHABLE": nl.NUD_REACHABLE, "STALE": nl.NUD_STALE,
        "DELAY": nl.NUD_DELAY, "PROBE": nl.NUD_PROBE, "INCOMPLETE": nl.NUD_INCOMPLETE,
        "FAILED": nl.NUD_FAILED, "NOARP": nl.NUD_NOARP}
#: USER_HZ: the unit of rta_cacheinfo's expires (clock_t)
_USER_HZ = 100
_GETS = (nl.RTM_GETLINK, nl.RTM_GETADDR, nl.RTM_GETROUTE, nl.RTM_GETNEIGH)


class _Refused(Exception):
    """A request answered with an errno."""

    def __init__(self, err: int) -> None:
        super().__init__(os.strerror(err))
        self.errno = err


def _fam(af: int) -> tuple[int, ...]:
    """The IP versions a dump of address family ``af`` shows (the kernel's rtnl_dump_all
    for AF_UNSPEC starts at the family asked: a family above AF_INET6 shows none)."""
    if af == nl.AF_UNSPEC:
        return (4, 6)
    if af == nl.AF_INET:
        return (4,)
    if af == nl.AF_INET6:
        return (6,)
    return (6,) if af < nl.AF_INET6 else ()


class RtNetlink:
    """NETLINK_ROUTE answered from ``stack`` (see the module's description)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        #: requests that met an unexpected exception (answered EINVAL): a bug if not 0
        self.internal_errors = 0
        self.servers = 0  # sockets stack/rtnlserver.py's open_netlink serves now
        self._servers_lock = threading.Lock()

    # -- the entry point -----------------------------------------------------------------------
    def handle(self, request: bytes | memoryview, *, pid: int, may_change: bool,
               now: float | None = None) -> list[bytes]:
        """The datagrams answering one request datagram. ``pid``: the port id the
        program's socket has (``getsockname``), carried by every reply; ``may_change``:
        whether the sender may change the stack (as CAP_NET_ADMIN). Never raises for
        bad input: it gets an NLMSG_ERROR."""
        out: list[bytes] = []
        first = nl.first_header(request)
        if first is None:
            return out  # nothing to echo, no sequence number: Linux ignores it too
        if first.len < nl.HDRLEN or first.len > len(request):
            return [nl.error(errno.EINVAL, first, b"", pid, capped=True)]
        dumped = False
        with self.stack.locked():
            now = self.stack._api_now(now)
            for hdr, payload in nl.messages(request):
                dump = hdr.type in _GETS and hdr.flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP
                if dump and dumped:
                    out.append(nl.error(errno.EBUSY, hdr, payload, pid))
                    continue
                dumped |= dump
                out += self._one(hdr, payload, pid, may_change, now)
        return out

    def _one(self, hdr: nl.Header, payload: memoryview, pid: int, may_change: bool,
             now: float) -> list[bytes]:
        if not hdr.flags & nl.NLM_F_REQUEST or hdr.type < nl.NLMSG_MIN_TYPE:
            # not a request, or a control message: acknowledged only when asked
            return [nl.error(0, hdr, payload, pid)] if hdr.flags & nl.NLM_F_ACK else []
        try:
            if hdr.type in _GETS:
                if hdr.flags & nl.NLM_F_DUMP == nl.NLM_F_DUMP:
                    return self._dump(hdr, payload, pid, now)
                replies = self._get(hdr, payload, pid, now)
            else:
                handler = self._CHANGES.get(hdr.type)
                if handler is None or hdr.type > nl.RTM_MAX:
                    raise _Refused(errno.EOPNOTSUPP)
                if not may_change:
                    raise _Refused(errno.EPERM)
                handler(self, hdr, payload, now)
                replies = []
        except _Refused as exc:
            return [nl.error(exc.errno, hdr, payload, pid)]
        except nl.NetlinkError as exc:
            return [nl.error(exc.errno, hdr, payload, pid)]
        except IpError as exc:
            return [nl.error(exc.errno or errno.EINVAL, hdr, payload, pid)]
        except (ValueError, LookupError, struct.error, UnicodeError):
            return [nl.error(errno.EINVAL, hdr, payload, pid)]
        except OSError as exc:
            return [nl.error(exc.errno or errno.EINVAL, hdr, payload, pid)]
        except Exception:  # noqa: BLE001 (a bug here must not end the stack's service)
            self.internal_errors += 1
            return [nl.error(errno.EINVAL, hdr, payload, pid)]
        if hdr.flags & nl.NLM_F_ACK:
            replies.append(nl.error(0, hdr, payload, pid))
        return replies

    # -- dumps ---------------------------------------------------------------------------------
    def _dump(self, hdr: nl.Header, payload: memoryview, pid: int, now: float) -> list[bytes]:
        if len(payload) < 1:
            raise nl.NetlinkError("a dump request without its family byte")
        family = payload[0]
        header = nl.FAMILY_HEADER[hdr.type]
        # the attributes after a whole fixed header are filters (strict dumps)
        filters = (nl.attr_map(payload[header.size:]) if len(payload) >= header.size
                   else {})
        fields = header.unpack_from(payload, 0) if len(payload) >= header.size else None
        # a dump a filter narrowed says so in every message, as the kernel's strict dumps
        filtered = False
        if hdr.type == nl.RTM_GETLINK:
            bodies = self._links(family, now)
        elif hdr.type == nl.RTM_GETADDR:
            index = fields[4] if fields is not None else 0
            filtered = bool(index)
            bodies = self._addresses(family, index, now)
        elif hdr.type == nl.RTM_GETROUTE:
            table = nl.get_u32(filters[nl.RTA_TABLE]) if nl.RTA_TABLE in filters else 0
            if not table and fields is not None:
                table = fields[4]
            oif = nl.get_u32(filters[nl.RTA_OIF]) if nl.RTA_OIF in filters else 0
            filtered = bool(table or oif)
            bodies = ([] if table not in (nl.RT_TABLE_UNSPEC, nl.RT_TABLE_MAIN)
                      else self._routes(family, oif, now))
        else:
            index = fields[1] if fields is not None else 0
            filtered = bool(index)
            bodies = self._neighbours(family, index, now)
        flags = nl.NLM_F_MULTI | (nl.NLM_F_DUMP_FILTERED if filtered else 0)
        msgs = [nl.message(t, flags, hdr.seq, pid, body) for t, body in bodies]
        msgs.append(nl.done(hdr.seq, pid, flags))
        return _pack(msgs)

    def _get(self, hdr: nl.Header, payload: memoryview, pid: int, now: float) -> list[bytes]:
        if hdr.type == nl.RTM_GETROUTE:
            return [nl.message(nl.RTM_NEWROUTE, 0, hdr.seq, pid, self._route_get(payload, now))]
        if hdr.type != nl.RTM_GETLINK:
            raise _Refused(errno.EOPNOTSUPP)  # single addresses and neighbours: not here
        (family, _type, index, _flags, _change), rest = nl.fixed_header(nl.IFINFOMSG,
                                                                       payload)
        attrs = nl.attr_map(rest)
        iface = self._link_of(index, attrs)
        body = self._link(iface, iproute.link_show(self.stack, now, iface.name)[0],
                          family == nl.AF_INET6)
        return [nl.message(nl.RTM_NEWLINK, 0, hdr.seq, pid, body)]

    def _link_of(self, index: int, attrs: dict[int, memoryview], *,
                 unnamed: int = errno.EINVAL) -> Interface:
        """The interface a request names: by index, else by IFLA_IFNAME/IFLA_ALT_IFNAME;
        ENODEV for none, ``unnamed`` when it names nothing (a GETLINK's EINVAL; a
        NEWLINK's ENODEV, which iproute2's probe for RTM_NEWLINK expects: EINVAL there
        would send it to the old ioctls)."""
        if index:
            iface = self.stack.interfaces.get(index)
        else:
            name_attr = attrs.get(nl.IFLA_IFNAME, attrs.get(nl.IFLA_ALT_IFNAME))
            if name_attr is None:
                raise _Refused(unnamed)
            name = nl.get_str(name_attr)
            iface = next((i for i in self.stack.interfaces.values() if i.name == name), None)
        if iface is None:
            raise _Refused(errno.ENODEV)
        return iface

    # links
    def _links(self, family: int, now: float) -> list[tuple[int, bytes]]:
        infos = iproute.link_show(self.stack, now)
        return [(nl.RTM_NEWLINK, self._link(self.stack.interfaces[info["ifindex"]], info,
                                            family == nl.AF_INET6)) for info in infos]

    def _link(self, iface: Interface, info: dict[str, Any], inet6: bool) -> bytes:
        """An RTM_NEWLINK body, as rtnl_fill_ifinfo (or, for an AF_INET6 dump,
        inet6_fill_ifinfo) makes it."""
        flags = 0
        for name in info["flags"]:
            flags |= _IFF.get(name, 0)
        kind = nl.ARPHRD_LOOPBACK if iface.loopback else nl.ARPHRD_ETHER
        operstate = _OPERSTATE.get(info["operstate"], nl.IF_OPER_UNKNOWN)
        mac = mac_from_str(info["address"])
        head = nl.IFINFOMSG.pack(nl.AF_INET6 if inet6 else nl.AF_UNSPEC, kind, iface.index,
                                 flags, 0)
        if inet6:
            # inet6_fill_ifinfo's attributes, and IFLA_TXQLEN, which Linux leaves out
            # there: without it ``ip -6 addr`` asks SIOCGIFTXQLEN for each link
            return head + b"".join((nl.attr_str(nl.IFLA_IFNAME, iface.name),
                                    nl.attr(nl.IFLA_ADDRESS, mac),
                                    nl.attr_u32(nl.IFLA_MTU, iface.mtu),
                                    nl.attr_u8(nl.IFLA_OPERSTATE, operstate),
                                    nl.attr_u32(nl.IFLA_TXQLEN, info["txqlen"])))
        link = self.stack.links.get(iface.index)
        carrier = iface.loopback or (link is not None and not link.closed)
        top = getattr(link, "max_mtu", None)
        rx_p, tx_p = iface.rx_packets, iface.tx_packets
        rx_b, tx_b = iface.rx_bytes, iface.tx_bytes
        stats = [rx_p, tx_p, rx_b, tx_b, iface.rx_errors, 0, 0, iface.tx_dropped]
        stats += [0] * 17
        return head + b"".join((
            nl.attr_str(nl.IFLA_IFNAME, iface.name),
            nl.attr_u32(nl.IFLA_TXQLEN, info["txqlen"]),
            nl.attr_u8(nl.IFLA_OPERSTATE, operstate),
            nl.attr_u8(nl.IFLA_LINKMODE, 0),
            nl.attr_u32(nl.IFLA_MTU, iface.mtu),
            nl.attr_u32(nl.IFLA_MIN_MTU, 0 if iface.loopback else 68),
            nl.attr_u32(nl.IFLA_MAX_MTU, 0 if iface.loopback else (top or 65535)),
            nl.attr_u32(nl.IFLA_GROUP, 0),
            nl.attr_u32(nl.IFLA_PROMISCUITY, 0),
            nl.attr_u32(nl.IFLA_NUM_TX_QUEUES, 1),
            nl.attr_u32(nl.IFLA_NUM_RX_QUEUES, 1),
            nl.attr_u8(nl.IFLA_CARRIER, int(bool(carrier))),
            nl.attr(nl.IFLA_ADDRESS, mac),
            nl.attr(nl.IFLA_BROADCAST, mac_from_str(info["broadcast"])),
            nl.attr(nl.IFLA_STATS64, struct.pack("=25Q", *stats)),
            nl.attr(nl.IFLA_STATS, struct.pack("=24I", *(v & 0xFFFFFFFF for v in stats[:24]))),
            nl.attr_str(nl.IFLA_QDISC, info["qdisc"]),
        ))

    # addresses
    def _addresses(self, family: int, index: int, now: float) -> list[tuple[int, bytes]]:
        """Every IPv4 address, then every IPv6 one (the kernel dumps family by family),
        each family interface by interface."""
        out = []
        for version in _fam(family):
            for info in iproute.addr_show(self.stack, now, version):
                if index and info["ifindex"] != index:
                    continue
                for a in info["addr_info"]:
                    out.append((nl.RTM_NEWADDR, self._address(info["ifindex"], a)))
        return out

    @staticmethod
    def _address(index: int, a: dict[str, Any]) -> bytes:
        v6 = a["family"] == "inet6"
        flags = 0 if a.get("dynamic") else nl.IFA_F_PERMANENT
        for name, bit in _IFA_FLAG.items():
            if a.get(name):
                flags |= bit
        local = ipaddress.ip_address(a["local"]).packed
        head = nl.IFADDRMSG.pack(nl.AF_INET6 if v6 else nl.AF_INET, a["prefixlen"],
                                 flags & 0xFF, _SCOPE[a["scope"]], index)
        cache = nl.attr(nl.IFA_CACHEINFO, nl.IFA_CACHEINFO_S.pack(
            a["preferred_life_time"], a["valid_life_time"], 0, 0))
        if v6:
            return head + nl.attr(nl.IFA_ADDRESS, local) + cache + nl.attr_u32(nl.IFA_FLAGS,
                                                                               flags)
        parts = [nl.attr(nl.IFA_ADDRESS, local), nl.attr(nl.IFA_LOCAL, local)]
        if "broadcast" in a:
            parts.append(nl.attr(nl.IFA_BROADCAST, ipaddress.ip_address(a["broadcast"]).packed))
        if a.get("label"):
            parts.append(nl.attr_str(nl.IFA_LABEL, a["label"]))
        parts += [nl.attr_u32(nl.IFA_FLAGS, flags), cache]
        return head + b"".join(parts)

    # routes
    def _routes(self, family: int, oif: int, now: float) -> list[tuple[int, bytes]]:
        out = []
        for version in _fam(family):
            routes = iproute.shown_routes(self.stack, version)
            infos = iproute.route_show(self.stack, now, version)
            for r, info in zip(routes, infos, strict=True):
                if oif and r.ifindex != oif:
                    continue
                out.append((nl.RTM_NEWROUTE, self._route(r, info)))
        return out

    @staticmethod
    def _route(r: Any, info: dict[str, Any]) -> bytes:
        """An RTM_NEWROUTE body, as fib_dump_info (IPv4) or rt6_fill_node (IPv6)."""
        v6 = r.dst.version == 6
        proto = info.get("protocol", "boot")
        proto_n = int(proto) if proto.isdigit() else _PROTO_NUMBER.get(proto, nl.RTPROT_UNSPEC)
        scope = _SCOPE.get(info.get("scope", "global"), nl.RT_SCOPE_UNIVERSE)
        rflags = nl.RTNH_F_LINKDOWN if "linkdown" in info.get("flags", ()) else 0
        plen = r.dst.prefixlen
        head = nl.RTMSG.pack(nl.AF_INET6 if v6 else nl.AF_INET, plen, 0, 0, nl.RT_TABLE_MAIN,
                             proto_n, scope, nl.RTN_UNICAST, rflags)
        parts = [nl.attr_u32(nl.RTA_TABLE, nl.RT_TABLE_MAIN)]
        if plen:
            parts.append(nl.attr(nl.RTA_DST, r.dst.network_address.packed))
        nexthop = []
        if r.gateway is not None:
            nexthop.append(nl.attr(nl.RTA_GATEWAY, r.gateway.packed))
        nexthop.append(nl.attr_u32(nl.RTA_OIF, r.ifindex))
        metric = info.get("metric", 0)
        if not v6:
            if metric:
                parts.append(nl.attr_u32(nl.RTA_PRIORITY, metric))
            if "prefsrc" in info:
                parts.append(nl.attr(nl.RTA_PREFSRC,
                                     ipaddress.ip_address(info["prefsrc"]).packed))
            return head + b"".join(parts + nexthop)
        expires = info.get("expires")
        cache = nl.RTA_CACHEINFO_S.pack(0, 0, 0 if expires is None else expires * _USER_HZ,
                                        0, 0, 0, 0, 0)
        parts += nexthop
        parts += [nl.attr_u32(nl.RTA_PRIORITY, metric), nl.attr(nl.RTA_CACHEINFO, cache),
                  nl.attr_u8(nl.RTA_PREF, _PREF.get(info.get("pref", "medium"), 0))]
        return head + b"".join(parts)

    def _route_get(self, payload: memoryview, now: float) -> bytes:
        """``ip route get DST``: the route the stack takes to DST, as the kernel's
        answer (rt_fill_info, rt6_fill_node): a cloned route to DST/32 (or /128) with
        its device, gateway and source; for a local IPv4 address a ``local`` route
        through ``lo``. ENETUNREACH without a route. (No RTA_UID: the stack does not know
        the asker's uid.)"""
        fields, rest = nl.fixed_header(nl.RTMSG, payload)
        family, dst_len, src_len, tos, _table, _proto, _scope, _kind, rflags = fields
        if family not in (nl.AF_INET, nl.AF_INET6):
            raise _Refused(errno.EOPNOTSUPP)  # no family of that number has a route get
        attrs = nl.attr_map(rest)
        version = _version(family)
        size = 4 if version == 4 else 16
        for unsupported in (nl.RTA_IIF, nl.RTA_SRC, nl.RTA_OIF, nl.RTA_MARK, nl.RTA_UID):
            if unsupported in attrs:
                raise _Refused(errno.EOPNOTSUPP)  # lookups from an input, a source, a mark
        if rflags & nl.RTM_F_FIB_MATCH or src_len or tos:
            raise _Refused(errno.EOPNOTSUPP)
        dst = _packed(attrs[nl.RTA_DST], size) if nl.RTA_DST in attrs else bytes(size)
        stack = self.stack
        full = 8 * size
        cache = nl.attr(nl.RTA_CACHEINFO, nl.RTA_CACHEINFO_S.pack(0, 0, 0, 0, 0, 0, 0, 0))
        if version == 4 and stack._is_local4(dst):
            lo = next((i for i in stack.interfaces.values() if i.loopback), None)
            # (the kernel's answer names the main table, as for any cached route)
            head = nl.RTMSG.pack(nl.AF_INET, full, 0, 0, nl.RT_TABLE_MAIN, 0,
                                 nl.RT_SCOPE_UNIVERSE, nl.RTN_LOCAL,
                                 nl.RTM_F_CLONED | nl.RTCF_LOCAL)
            parts = [nl.attr_u32(nl.RTA_TABLE, nl.RT_TABLE_MAIN), nl.attr(nl.RTA_DST, dst)]
            if lo is not None:
                parts.append(nl.attr_u32(nl.RTA_OIF, lo.index))
            return head + b"".join([*parts, nl.attr(nl.RTA_PREFSRC, dst), cache])
        table = stack.routes4 if version == 4 else stack.routes6
        route = table.lookup(int.from_bytes(dst, "big"))
        found = stack._route4(dst) if version == 4 else stack._route6(dst)
        if found is None:
            raise _Refused(errno.ENETUNREACH)
        iface, _nexthop = found
        src = stack.source(version, dst)
        gateway = route.gateway.packed if route is not None and route.gateway else None
        if version == 4:
            head = nl.RTMSG.pack(nl.AF_INET, full, 0, 0, nl.RT_TABLE_MAIN, 0,
                                 nl.RT_SCOPE_UNIVERSE, nl.RTN_UNICAST, nl.RTM_F_CLONED)
            parts = [nl.attr_u32(nl.RTA_TABLE, nl.RT_TABLE_MAIN), nl.attr(nl.RTA_DST, dst),
                     nl.attr_u32(nl.RTA_OIF, iface.index)]
            if src is not None:
                parts.append(nl.attr(nl.RTA_PREFSRC, src))
            if gateway is not None:
                parts.append(nl.attr(nl.RTA_GATEWAY, gateway))
            return head + b"".join([*parts, cache])
        # IPv6: the route's own protocol, metric and preference, as rt6_fill_node
        info = None
        if route is not None:
            shown = iproute.shown_routes(stack, 6)
            infos = iproute.route_show(stack, now, 6)
            info = next((i for r, i in zip(shown, infos, strict=True) if r == route), None)
        info = info or {"protocol": "kernel", "metric": METRIC6_KERNEL}
        proto = info.get("protocol", "boot")
        # the flow's source, unspecified (ip's "from ::"), as a /128
        head = nl.RTMSG.pack(nl.AF_INET6, full, full, 0, nl.RT_TABLE_MAIN,
                             _PROTO_NUMBER.get(proto, nl.RTPROT_UNSPEC), nl.RT_SCOPE_UNIVERSE,
                             nl.RTN_UNICAST, 0)
        parts = [nl.attr_u32(nl.RTA_TABLE, nl.RT_TABLE_MAIN), nl.attr(nl.RTA_DST, dst),
                 nl.attr(nl.RTA_SRC, bytes(16))]
        if src is not None:
            parts.append(nl.attr(nl.RTA_PREFSRC, src))
        if gateway is not None:
            parts.append(nl.attr(nl.RTA_GATEWAY, gateway))
        parts += [nl.attr_u32(nl.RTA_OIF, iface.index),
                  nl.attr_u32(nl.RTA_PRIORITY, info.get("metric", 0)), cache,
                  nl.attr_u8(nl.RTA_PREF, _PREF.get(info.get("pref", "medium"), 0))]
        return head + b"".join(parts)

    # neighbours
    def _neighbours(self, family: int, index: int, now: float) -> list[tuple[int, bytes]]:
        out = []
        names = {i.name: i.index for i in self.stack.interfaces.values()}
        for version in _fam(family):
            for info in iproute.neigh_show(self.stack, now, version):
                ifindex = names[info["dev"]]
                if index and ifindex != index:
                    continue
                addr = ipaddress.ip_address(info["dst"]).packed
                state = _NUD.get(info["state"][0], 0)
                body = nl.NDMSG.pack(nl.AF_INET6 if version == 6 else nl.AF_INET, ifindex,
                                     state, 0, nl.RTN_UNICAST) + nl.attr(nl.NDA_DST, addr)
                if "lladdr" in info:
                    body += nl.attr(nl.NDA_LLADDR, mac_from_str(info["lladdr"]))
                body += nl.attr(nl.NDA_CACHEINFO, nl.NDA_CACHEINFO_S.pack(0, 0, 0, 0))
                body += nl.attr_u32(nl.NDA_PROBES, 0)
                out.append((nl.RTM_NEWNEIGH, body))
        return out

    # -- changes -------------------------------------------------------------------------------
    def _run(self, obj: str, verb: str, words: list[str], family: int | None,
             now: float) -> None:
        execute(self.stack, Command(obj, verb, words, family), now)

    def _newaddr(self, hdr: nl.Header, payload: memoryview, now: float) -> None:
        (family, plen, flags8, _scope, index), rest = nl.fixed_header(nl.IFADDRMSG, payload)
        attrs = nl.attr_map(rest)
        version = _version(family)
        iface = self._iface(index)
        local = self._ifa_address(attrs, version, plen)
        words = [local, "dev", iface.name]
        delete = hdr.type == nl.RTM_DELADDR
        if not delete:
            flags = nl.get_u32(attrs[nl.IFA_FLAGS]) if nl.IFA_FLAGS in attrs else flags8
            for name, bit in (("noprefixroute", nl.IFA_F_NOPREFIXROUTE),
                              ("mngtmpaddr", nl.IFA_F_MANAGETEMPADDR)):
                if flags & bit:
                    words.append(name)
            if flags & ~(nl.IFA_F_NOPREFIXROUTE | nl.IFA_F_MANAGETEMPADDR
                         | nl.IFA_F_PERMANENT):
                raise _Refused(errno.EOPNOTSUPP)  # nodad, home, optimistic...
            if nl.IFA_CACHEINFO in attrs:
                preferred, valid, _, _ = nl.IFA_CACHEINFO_S.unpack_from(
                    _sized(attrs[nl.IFA_CACHEINFO], nl.IFA_CACHEINFO_S.size))
                if not valid or preferred > valid:
                    raise _Refused(errno.EINVAL)  # as inet_rtm_newaddr
                words += ["valid_lft", str(valid), "preferred_lft", str(preferred)]
            if nl.IFA_BROADCAST in attrs and version == 4:
                brd = _packed(attrs[nl.IFA_BROADCAST], 4)
                if brd != broadcast4(ipaddress.ip_address(local.split("/")[0]).packed, plen):
                    raise _Refused(errno.EOPNOTSUPP)  # the stack's is the network's
        if nl.IFA_LABEL in attrs and nl.get_str(attrs[nl.IFA_LABEL]) != iface.name:
            raise _Refused(errno.EOPNOTSUPP)
        for unsupported in (nl.IFA_ANYCAST, nl.IFA_MULTICAST, nl.IFA_RT_PRIORITY):
            if unsupported in attrs:
                raise _Refused(errno.EOPNOTSUPP)
        if delete:
            self._run("address", "del", words, version, now)
            return
        exists = iproute.addr_show(self.stack, now, version, iface.name,
                                   to=ipaddress.ip_network(local.split("/")[0]))
        there = any(a["prefixlen"] == plen or version == 6 for i in exists
                    for a in i["addr_info"])
        if there:
            # the kernel (inet_rtm_newaddr, inet6_rtm_newaddr) changes an address that
            # is there only for NLM_F_REPLACE without NLM_F_EXCL
            if hdr.flags & nl.NLM_F_EXCL or not hdr.flags & nl.NLM_F_REPLACE:
                raise _Refused(errno.EEXIST)
            self._run("address", "change", words, version, now)
        else:
            self._run("address", "add", words, version, now)  # NLM_F_CREATE or not

    def _ifa_address(self, attrs: dict[int, memoryview], version: int, plen: int) -> str:
        size = 4 if version == 4 else 16
        local = attrs.get(nl.IFA_LOCAL)
        peer = attrs.get(nl.IFA_ADDRESS)
        if local is None:
            local = peer
        elif peer is not None and bytes(peer) != bytes(local):
            raise _Refused(errno.EOPNOTSUPP)  # a point-to-point peer
        if local is None:
            raise _Refused(errno.EINVAL)
        if plen > size * 8:
            raise _Refused(errno.EINVAL)
        text = str(ipaddress.ip_address(_packed(local, size)))
        # IPv4's wildcard deletion: iproute2 leaves IFA_ADDRESS out of "addr del A" without
        # a prefix length, and the kernel then deletes A whatever its prefix length
        if version == 4 and peer is None:
            return text
        return f"{text}/{plen}"

    def _iface(self, index: int) -> Interface:
        iface = self.stack.interfaces.get(index)
        if iface is None:
            raise _Refused(errno.ENODEV)
        return iface

    def _newroute(self, hdr: nl.Header, payload: memoryview, now: float) -> None:
        fields, rest = nl.fixed_header(nl.RTMSG, payload)
        family, dst_len, src_len, tos, table, proto, scope, kind, rflags = fields
        attrs = nl.attr_map(rest)
        version = _version(family)
        size = 4 if version == 4 else 16
        delete = hdr.type == nl.RTM_DELROUTE
        if nl.RTA_TABLE in attrs:
            table = nl.get_u32(attrs[nl.RTA_TABLE])
        if table not in (nl.RT_TABLE_UNSPEC, nl.RT_TABLE_MAIN):
            raise _Refused(errno.EOPNOTSUPP)
        if kind not in (nl.RTN_UNICAST, nl.RTN_UNSPEC) or src_len or tos:
            raise _Refused(errno.EOPNOTSUPP)
        for unsupported in (nl.RTA_SRC, nl.RTA_IIF, nl.RTA_PREFSRC, nl.RTA_MULTIPATH,
                            nl.RTA_FLOW, nl.RTA_VIA, nl.RTA_NEWDST, nl.RTA_ENCAP,
                            nl.RTA_ENCAP_TYPE, nl.RTA_NH_ID, nl.RTA_MARK, nl.RTA_UID):
            if unsupported in attrs:
                raise _Refused(errno.EOPNOTSUPP)
        if nl.RTA_METRICS in attrs and nl.attrs(attrs[nl.RTA_METRICS]):
            raise _Refused(errno.EOPNOTSUPP)  # mtu, advmss, window...
        if dst_len > size * 8:
            raise _Refused(errno.EINVAL)
        if nl.RTA_DST in attrs:
            dst = ipaddress.ip_address(_packed(attrs[nl.RTA_DST], size))
        elif dst_len:
            raise _Refused(errno.EINVAL)
        else:
            dst = ipaddress.ip_address(bytes(size))
        try:
            net = ipaddress.ip_network(f"{dst}/{dst_len}")
        except ValueError:
            raise _Refused(errno.EINVAL) from None  # host bits set
        words = ["default" if not dst_len else str(net)]
        if nl.RTA_GATEWAY in attrs:
            words += ["via", str(ipaddress.ip_address(_packed(attrs[nl.RTA_GATEWAY], size)))]
        if nl.RTA_OIF in attrs:
            words += ["dev", self._iface(nl.get_u32(attrs[nl.RTA_OIF])).name]
        if nl.RTA_PRIORITY in attrs:
            words += ["metric", str(nl.get_u32(attrs[nl.RTA_PRIORITY]))]
        if delete:
            if proto:
                words += ["proto", str(proto)]
            self._run("route", "del", words, version, now)
            return
        if rflags & ~nl.RTNH_F_ONLINK:
            raise _Refused(errno.EOPNOTSUPP)
        words += ["proto", str(proto or nl.RTPROT_BOOT)]
        if scope == nl.RT_SCOPE_LINK:
            words += ["scope", "link"]
        elif scope != nl.RT_SCOPE_UNIVERSE:
            raise _Refused(errno.EOPNOTSUPP)  # host and nowhere routes
        if nl.RTA_PREF in attrs:
            pref = {v: k for k, v in _PREF.items()}.get(nl.get_u8(attrs[nl.RTA_PREF]))
            if pref is None:
                raise _Refused(errno.EINVAL)
            words += ["pref", pref]
        if nl.RTA_EXPIRES in attrs:
            words += ["expires", str(nl.get_u32(attrs[nl.RTA_EXPIRES]))]
        if hdr.flags & nl.NLM_F_REPLACE:
            verb = "replace" if hdr.flags & nl.NLM_F_CREATE else "change"
        elif hdr.flags & nl.NLM_F_CREATE:
            verb = "add"
        else:
            raise _Refused(errno.ENOENT)  # neither create nor replace: nothing to do
        self._run("route", verb, words, version, now)

    def _newneigh(self, hdr: nl.Header, payload: memoryview, now: float) -> None:
        (family, index, state, nflags, _kind), rest = nl.fixed_header(nl.NDMSG, payload)
        attrs = nl.attr_map(rest)
        version = _version(family)
        iface = self._iface(index)
        if nl.NDA_DST not in attrs:
            raise _Refused(errno.EINVAL)
        dst = ipaddress.ip_address(_packed(attrs[nl.NDA_DST], 4 if version == 4 else 16))
        words = [str(dst), "dev", iface.name]
        if hdr.type == nl.RTM_DELNEIGH:
            self._run("neigh", "del", words, version, now)
            return
        if nflags or state not in (nl.NUD_PERMANENT, 0):
            raise _Refused(errno.EOPNOTSUPP)  # proxies, routers, dynamic states
        if nl.NDA_LLADDR in attrs:
            mac = _packed(attrs[nl.NDA_LLADDR], 6)
            words += ["lladdr", ":".join(f"{b:02x}" for b in mac)]
        if hdr.flags & nl.NLM_F_REPLACE:
            verb = "replace" if hdr.flags & nl.NLM_F_CREATE else "change"
        elif hdr.flags & nl.NLM_F_CREATE:
            verb = "add"
        else:
            raise _Refused(errno.ENOENT)
        self._run("neigh", verb, words, version, now)

    def _setlink(self, hdr: nl.Header, payload: memoryview, now: float) -> None:
        (_family, _type, index, flags, change), rest = nl.fixed_header(nl.IFINFOMSG, payload)
        attrs = nl.attr_map(rest)
        if nl.IFLA_LINKINFO in attrs:
            raise _Refused(errno.EOPNOTSUPP)  # creating a link (veth, dummy...)
        iface = self._link_of(index, attrs if not index else {}, unnamed=errno.ENODEV)
        words = ["dev", iface.name]
        for unsupported in (nl.IFLA_BROADCAST, nl.IFLA_LINK, nl.IFLA_QDISC, nl.IFLA_MASTER,
                            nl.IFLA_TXQLEN, nl.IFLA_IFALIAS, nl.IFLA_GROUP, nl.IFLA_AF_SPEC,
                            nl.IFLA_PROTINFO, nl.IFLA_LINKMODE, nl.IFLA_OPERSTATE):
            if unsupported in attrs:
                raise _Refused(errno.EOPNOTSUPP)
        if index and nl.IFLA_IFNAME in attrs and nl.get_str(attrs[nl.IFLA_IFNAME]) != iface.name:
            raise _Refused(errno.EOPNOTSUPP)  # renaming
        # the kernel's rtnl_dev_combine_flags: ifi_change 0 means every flag is given
        mask = (change or 0xFFFFFFFF) & nl.IFF_SETTABLE
        current = nl.IFF_MULTICAST if not iface.loopback else 0
        if iface.up:
            current |= nl.IFF_UP
        if not flags and not change:
            mask = 0  # no flags given (rtnl_setlink changes them only if either is set)
        if (flags ^ current) & mask & ~nl.IFF_UP:
            raise _Refused(errno.EOPNOTSUPP)  # promisc, noarp, allmulti...
        if nl.IFLA_MTU in attrs:
            words += ["mtu", str(nl.get_u32(attrs[nl.IFLA_MTU]))]
        if nl.IFLA_ADDRESS in attrs:
            mac = _packed(attrs[nl.IFLA_ADDRESS], 6)
            words += ["address", ":".join(f"{b:02x}" for b in mac)]
        if mask & nl.IFF_UP and (flags ^ current) & nl.IFF_UP:
            words.append("up" if flags & nl.IFF_UP else "down")
        if len(words) > 2:
            self._run("link", "set", words, None, now)

    def _newlink(self, hdr: nl.Header, payload: memoryview, now: float) -> None:
        if hdr.type == nl.RTM_DELLINK:
            raise _Refused(errno.EOPNOTSUPP)  # a stack's interfaces come from its links
        self._setlink(hdr, payload, now)

    _CHANGES: dict[int, Callable[[RtNetlink, nl.Header, memoryview, float], None]] = {
        nl.RTM_NEWADDR: _newaddr, nl.RTM_DELADDR: _newaddr,
        nl.RTM_NEWROUTE: _newroute, nl.RTM_DELROUTE: _newroute,
        nl.RTM_NEWNEIGH: _newneigh, nl.RTM_DELNEIGH: _newneigh,
        nl.RTM_NEWLINK: _newlink, nl.RTM_SETLINK: _setlink, nl.RTM_DELLINK: _newlink,
    }


def _version(family: int) -> int:
    if family == nl.AF_INET:
        return 4
    if family == nl.AF_INET6:
        return 6
    raise _Refused(errno.EAFNOSUPPORT)


def _packed(value: memoryview, size: int) -> bytes:
    if len(value) != size:
        raise _Refused(errno.EINVAL)
    return bytes(value)


def _sized(value: memoryview, size: int) -> memoryview:
    if len(value) < size:
        raise _Refused(errno.EINVAL)
    return value


def _pack(msgs: list[bytes]) -> list[bytes]:
    """Messages into datagrams of at most DATAGRAM_SIZE bytes (one larger message alone)."""
    out: list[bytes] = []
    cur: list[bytes] = []
    size = 0
    for m in msgs:
        if cur and size + len(m) > DATAGRAM_SIZE:
            out.append(b"".join(cur))
            cur, size = [], 0
        cur.append(m)
        size += len(m)
    if cur:
        out.append(b"".join(cur))
    return out
