"""What iproute2's ``ip`` shows of a stack: ``ip -j addr``, ``ip -j link``, ``ip -j route``
and ``ip -j neigh`` as data, and ``ip``'s text or JSON made from it.

The show functions (``addr_show``, ``link_show``, ``route_show``, ``neigh_show``) take a
stack and the time and return what ``ip -j`` prints, key for key: iproute2 6.1's keys,
in its order, with its shapes (``addr_info`` lists, ``flags`` lists, lifetimes in whole
seconds with 4294967295 for forever). ``render`` turns that data into ``ip``'s text or
JSON (``-j``, ``-p``): the text is made from the same data as the JSON, so a client of a
published stack renders what the stack sent it. The command line (``ip route add ...``)
is ``stack/ipcommand.py``.

Where the stack and Linux differ, the output says what the stack does, in Linux's words:

* IPv4 addresses always have a broadcast address (the stack accepts subnet-directed
  broadcasts, ``stack/ipinput.py``), as after ``ip addr add ... brd +`` (none for /31
  and /32);
* an IPv4 address still under conflict detection (RFC 5227, ``acd``) is ``tentative``,
  one found in use elsewhere ``dadfailed tentative``, as IPv6 ones under DAD;
* the stack routes fe80::/64 on every interface that has a link-local address
  (``stack/ip.py``); Linux shows that as one ``fe80::/64 proto kernel metric 256``
  route per interface, and so does ``route_show``;
* Linux never keeps IPv6 metric 0 (it means "the default"): a stack route with metric 0
  shows 256 when the kernel made it (an address's prefix) and 1024 otherwise;
* an IPv6 prefix route goes with the last address of its prefix: while all of them have
  a lifetime, it ``expires`` with the longest, as Linux's does;
* routes the stack keeps for its loopback's own addresses (127.0.0.0/8 on ``lo``) are
  Linux's ``local`` table, which ``ip route`` does not show;
* a route through an interface that is down stays in the stack's table, flagged
  ``linkdown`` (Linux removes it).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import math
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from threadnet.stack.acd import CONFLICT
from threadnet.stack.ip import broadcast4
from threadnet.stack.neighbor import REACHABLE, STALE
from threadnet.stack.route import Route, RoutingTable, effective_metric
from threadnet.wire.ethernet import mac_to_str

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

#: iproute2's "forever" (INFINITY_LIFE_TIME)
FOREVER = 0xFFFFFFFF
#: the address flags in the order iproute2 prints them (ip/ipaddress.c, ifa_flag_data);
#: "dynamic" stands where "permanent" is, printed when an address is *not* permanent
ADDRESS_FLAGS = ("secondary", "temporary", "nodad", "optimistic", "dadfailed", "home",
                 "deprecated", "tentative", "dynamic", "mngtmpaddr", "noprefixroute",
                 "autojoin", "stable-privacy")
#: Linux's metrics for IPv6 routes given none (IP6_RT_PRIO_ADDRCONF, IP6_RT_PRIO_USER)


class IpError(Exception):
    """What ``ip`` prints on standard error (``message``), the exit status it gives
    (``status``) and the errno behind it (``errno``: the stack console's reply code)."""

    def __init__(self, message: str, status: int = 1, err: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.errno = err


def _ntop(addr: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6, addr)


def _seconds(until: float, now: float) -> int:
    """A lifetime as iproute2 shows it: whole seconds left, 4294967295 for forever."""
    if math.isinf(until):
        return FOREVER
    return min(FOREVER - 1, max(0, int(until - now)))


# -- what `ip -j` prints ----------------------------------------------------------------------
def _scope4(addr: bytes) -> str:
    return "host" if addr[0] == 127 else "global"


def _scope6(addr: bytes) -> str:
    if addr == bytes(15) + b"\x01":
        return "host"
    if addr[0] == 0xFE and addr[1] & 0xC0 == 0x80:
        return "link"
    if addr[0] == 0xFE and addr[1] & 0xC0 == 0xC0:
        return "site"
    return "global"


#: the order Linux lists IPv6 addresses in: by scope, widest first (ipv6_link_dev_addr)
_SCOPE6_RANK = {"global": 0, "site": 1, "link": 2, "host": 3}


def _link_flags(stack: Stack, iface: Interface) -> list[str]:
    link = stack.links.get(iface.index)
    carrier = iface.loopback or (link is not None and not link.closed)
    flags = [] if not iface.up or carrier else ["NO-CARRIER"]
    flags += ["LOOPBACK"] if iface.loopback else ["BROADCAST", "MULTICAST"]
    if iface.up:
        flags += ["UP", "LOWER_UP"] if carrier else ["UP"]
    return flags


def _link_info(stack: Stack, iface: Interface, *, with_mode: bool,
               with_link: bool) -> dict[str, Any]:
    flags = _link_flags(stack, iface)
    if not iface.up:
        state = "DOWN"
    elif iface.loopback:
        state = "UNKNOWN"  # as Linux's lo: it has no carrier to report
    else:
        state = "UP" if "LOWER_UP" in flags else "DOWN"
    info: dict[str, Any] = {
        "ifindex": iface.index, "ifname": iface.name, "flags": flags, "mtu": iface.mtu,
        "qdisc": "noqueue" if iface.up or not iface.loopback else "noop", "operstate": state}
    if with_mode:
        info["linkmode"] = "DEFAULT"
    # txqlen: a link's backlog holds 1000 frames, as Linux's default txqueuelen
    info.update(group="default", txqlen=1000)
    if with_link:
        info["link_type"] = "loopback" if iface.loopback else "ether"
        info["address"] = mac_to_str(iface.mac)
        info["broadcast"] = mac_to_str(bytes(6) if iface.loopback else b"\xff" * 6)
    return info


def _addr4_infos(iface: Interface, now: float) -> list[dict[str, Any]]:
    """The interface's IPv4 addresses as Linux lists them: primaries in the order they
    came, then secondaries (an address on the network of an earlier one), then those
    still under conflict detection."""
    primary: list[dict[str, Any]] = []
    secondary: list[dict[str, Any]] = []
    nets: set[tuple[int, int]] = set()
    entries = [(a, p, None) for a, p in iface.v4]
    entries += [(a, acd.plen, acd) for a, acd in iface.acd4.items() if (a, acd.plen)
                not in iface.v4]
    for addr, plen, acd in entries:
        flags = set()
        net = (int.from_bytes(addr, "big") >> (32 - plen), plen) if plen else (0, 0)
        if acd is None:
            if net in nets:
                flags.add("secondary")
            nets.add(net)
        else:
            flags.add("tentative")  # RFC 5227 probing: as IPv6 DAD, not in use yet
            if acd.state == CONFLICT:
                flags.add("dadfailed")
        valid, preferred = math.inf, math.inf
        life = iface.v4_life.get(addr)
        if life is not None:
            valid, preferred = life[0], life[1]
        if not math.isinf(valid):
            flags.add("dynamic")
        if preferred <= now:
            flags.add("deprecated")
        info: dict[str, Any] = {"family": "inet", "local": _ntop(addr), "prefixlen": plen}
        brd = broadcast4(addr, plen)
        if brd and not iface.loopback:
            info["broadcast"] = _ntop(brd)
        info["scope"] = _scope4(addr)
        info.update((f, True) for f in ADDRESS_FLAGS if f in flags)
        info["label"] = iface.name
        info["valid_life_time"] = _seconds(valid, now)
        info["preferred_life_time"] = _seconds(preferred, now)
        (secondary if "secondary" in flags else primary).append(info)
    return primary + secondary


def _addr6_infos(iface: Interface, now: float) -> list[dict[str, Any]]:
    """The interface's IPv6 addresses as Linux lists them: by scope, global first, the
    newest first within a scope."""
    out = []
    for a in sorted(reversed(iface.v6), key=lambda a: _SCOPE6_RANK[_scope6(a.addr)]):
        flags = set(a.flags)
        if a.state == "tentative":
            flags.add("tentative")
        elif a.state == "dadfailed":
            flags.update(("dadfailed", "tentative"))  # Linux keeps it tentative
        if a.deprecated or a.preferred_until <= now:
            flags.add("deprecated")
        if not math.isinf(a.valid_until):
            flags.add("dynamic")
        info: dict[str, Any] = {"family": "inet6", "local": _ntop(a.addr),
                                "prefixlen": a.plen, "scope": _scope6(a.addr)}
        info.update((f, True) for f in ADDRESS_FLAGS if f in flags)
        info["valid_life_time"] = _seconds(a.valid_until, now)
        info["preferred_life_time"] = _seconds(a.preferred_until, now)
        out.append(info)
    return out


def _interfaces(stack: Stack, dev: str | None, up: bool = False) -> list[Interface]:
    """The interfaces a show names: all, or ``dev``; IpError for an unknown one."""
    if dev is not None:
        chosen = [interface_named(stack, dev, shown=True)]
    else:
        chosen = list(stack.interfaces.values())
    return [i for i in chosen if i.up or not up]


def interface_named(stack: Stack, name: str, *, shown: bool = False) -> Interface:
    """The interface called ``name``; iproute2's error for an unknown one (a show says
    'Device "X" does not exist.', a change 'Cannot find device "X"')."""
    iface = next((i for i in stack.interfaces.values() if i.name == name), None)
    if iface is None:
        raise IpError(f'Device "{name}" does not exist.' if shown
                      else f'Cannot find device "{name}"', 1, errno.ENODEV)
    return iface


def addr_show(stack: Stack, now: float, family: int | None = None, dev: str | None = None,
              *, up: bool = False, scope: str | None = None, to: Any = None,
              flags: Sequence[str] = ()) -> list[dict[str, Any]]:
    """``ip -j address show``: every interface (or ``dev``) with its ``addr_info``.
    ``family`` (4 or 6) keeps those addresses only, leaves out interfaces without any and
    the ``link/ether`` part, as ``ip -4``/``ip -6`` do. ``up``, ``scope``, ``to`` (an
    ``ipaddress`` network: addresses inside it) and ``flags`` (``"dynamic"``,
    ``"-tentative"``...: an address must have, or not have, each) select addresses as
    iproute2's words of the same names do."""
    out = []
    for iface in _interfaces(stack, dev, up):
        infos = []
        if family in (None, 4):
            infos += _addr4_infos(iface, now)
        if family in (None, 6):
            infos += _addr6_infos(iface, now)
        infos = [i for i in infos if _addr_selected(i, scope, to, flags)]
        if family is not None and not infos:
            continue
        info = _link_info(stack, iface, with_mode=False, with_link=family is None)
        if family == 6 and dev is None:
            # ip -6 addr asks Linux for its IPv6 view of every link (RTM_GETLINK for
            # AF_INET6), which has no qdisc and no group: iproute2 prints none
            del info["qdisc"], info["group"]
        info["addr_info"] = infos
        out.append(info)
    return out


def _addr_selected(info: dict[str, Any], scope: str | None, to: Any,
                   flags: Sequence[str]) -> bool:
    if scope is not None and scope != "all" and info["scope"] != scope:
        return False
    if to is not None:
        addr = ipaddress.ip_address(info["local"])
        if addr.version != to.version or addr not in to:
            return False
    for flag in flags:
        want = not flag.startswith("-")
        name = flag.lstrip("-")
        if name == "permanent":
            have = not info.get("dynamic", False)
        elif name == "primary":
            have = not info.get("secondary", False) and not info.get("temporary", False)
        else:
            have = bool(info.get(name, False) or (name == "secondary" and info.get("temporary")))
        if have != want:
            return False
    return True


def link_show(stack: Stack, now: float, dev: str | None = None, *,
              up: bool = False) -> list[dict[str, Any]]:
    """``ip -j link show``: every interface (or ``dev``)."""
    return [_link_info(stack, i, with_mode=True, with_link=True)
            for i in _interfaces(stack, dev, up)]


def shown_proto(route: Route) -> str:
    """A route's protocol as Linux names it: an on-link prefix from a router
    advertisement (the L flag) is the kernel's there (addrconf_prefix_route), although
    router discovery owns it here (``proto ra``)."""
    if route.proto == "ra" and route.gateway is None and route.dst.version == 6:
        return "kernel"
    return route.proto


def route_metric(route: Route) -> int:
    """A route's metric as Linux has it (``route.effective_metric``)."""
    return effective_metric(route)


def shown_routes(stack: Stack, family: int) -> list[Route]:
    """The routes ``ip route`` shows, in Linux's order: by destination address, the
    longer prefix first, then by metric; IPv6's default routes last."""
    table: RoutingTable = stack.routes4 if family == 4 else stack.routes6
    routes = []
    for r in table.routes:
        iface = stack.interfaces.get(r.ifindex)
        if r.proto == "kernel" and iface is not None and iface.loopback:
            continue  # Linux's local table
        routes.append(r)
    if family == 6:
        # fe80::/64 is on-link on every interface with a link-local address (_route6)
        for iface in stack.interfaces.values():
            if iface.loopback or not any(a.addr[:2] == b"\xfe\x80" for a in iface.v6):
                continue
            ll = ipaddress.ip_network("fe80::/64")
            if not any(r.dst == ll and r.ifindex == iface.index for r in routes):
                routes.append(Route(ll, None, iface.index, 0, "kernel"))
    return sorted(routes, key=lambda r: (family == 6 and r.dst.prefixlen == 0,
                                         int(r.dst.network_address), -r.dst.prefixlen,
                                         route_metric(r)))


def _prefix_expiry(stack: Stack, route: Route) -> float | None:
    """When an IPv6 prefix route made for addresses goes: with the last of them, if
    they all have a lifetime."""
    if route.expires is not None:
        return route.expires
    if route.proto != "kernel" or route.dst.version != 6:
        return None
    iface = stack.interfaces.get(route.ifindex)
    if iface is None:
        return None
    times = [a.valid_until for a in iface.v6 if a.plen == route.dst.prefixlen
             and ipaddress.ip_address(a.addr) in route.dst and "noprefixroute" not in a.flags]
    if not times or any(math.isinf(t) for t in times):
        return None
    return max(times)


def _prefsrc(stack: Stack, route: Route) -> str | None:
    """The source Linux names on an IPv4 connected route: the interface's first
    (primary) address on that network."""
    iface = stack.interfaces.get(route.ifindex)
    if route.proto != "kernel" or iface is None:
        return None
    for a, p in iface.v4:
        if p == route.dst.prefixlen and ipaddress.ip_address(a) in route.dst:
            return _ntop(a)
    return None


def route_show(stack: Stack, now: float, family: int = 4, dev: str | None = None, *,
               proto: str | None = None, to: Any = None, via: Any = None,
               metric: int | None = None) -> list[dict[str, Any]]:
    """``ip -j route show`` (``family`` 4) or ``ip -6 -j route show``: the main table.
    ``dev`` keeps the routes through that interface, ``proto`` those of a protocol,
    ``via`` (an ``ipaddress`` address) those through that gateway, ``metric`` those of
    that metric, and each leaves out the key it fixes, as iproute2 does; ``to`` (an
    ``ipaddress`` network) keeps the routes to exactly that prefix."""
    iface_filter = interface_named(stack, dev) if dev is not None else None
    out = []
    for r in shown_routes(stack, family):
        if iface_filter is not None and r.ifindex != iface_filter.index:
            continue
        if proto is not None and shown_proto(r) != proto:
            continue
        if to is not None and r.dst != to:
            continue
        if via is not None and r.gateway != via:
            continue
        if metric is not None and route_metric(r) != metric:
            continue
        info = _route_info(stack, r, now)
        for key, fixed in (("dev", dev), ("protocol", proto), ("gateway", via),
                           ("metric", metric)):
            if fixed is not None:
                info.pop(key, None)
        out.append(info)
    return out


def _route_info(stack: Stack, r: Route, now: float) -> dict[str, Any]:
    plen = r.dst.prefixlen
    if plen == 0:
        dst = "default"
    elif plen == r.dst.max_prefixlen:
        dst = str(r.dst.network_address)
    else:
        dst = f"{_ntop(r.dst.network_address.packed)}/{plen}"
    info: dict[str, Any] = {"dst": dst}
    if r.gateway is not None:
        info["gateway"] = _ntop(r.gateway.packed)
    iface = stack.interfaces.get(r.ifindex)
    info["dev"] = iface.name if iface is not None else str(r.ifindex)
    if r.proto != "boot":
        info["protocol"] = shown_proto(r)
    if r.dst.version == 4 and r.gateway is None:
        info["scope"] = "link"
    src = _prefsrc(stack, r) if r.dst.version == 4 else None
    if src is not None:
        info["prefsrc"] = src
    m = route_metric(r)
    if m or r.dst.version == 6:
        info["metric"] = m
    info["flags"] = [] if iface is not None and iface.up else ["linkdown"]
    expires = _prefix_expiry(stack, r)
    if expires is not None:
        info["expires"] = max(0, int(expires - now))
    if r.dst.version == 6:
        info["pref"] = r.pref
    return info


def neigh_show(stack: Stack, now: float, family: int | None = None, dev: str | None = None,
               *, to: Any = None) -> list[dict[str, Any]]:
    """``ip -j neigh show``: the ARP caches, then the NDP ones (the kernel's order), each
    newest first; ``dev`` keeps one interface's and leaves out their ``dev`` key."""
    ifaces = [interface_named(stack, dev)] if dev is not None else list(stack.interfaces.values())
    out = []
    for fam in (4, 6):
        if family not in (None, fam):
            continue
        for iface in ifaces:
            if iface.loopback:
                continue
            cache = iface.arp if fam == 4 else iface.nd
            for addr, entry in reversed(cache.entries.items()):
                if to is not None and ipaddress.ip_address(addr) not in to:
                    continue
                info: dict[str, Any] = {"dst": _ntop(addr)}
                if dev is None:
                    info["dev"] = iface.name
                if entry.mac is not None:
                    info["lladdr"] = mac_to_str(entry.mac)
                info["state"] = [_neigh_state(entry, now)]
                out.append(info)
    return out


def _neigh_state(entry: Any, now: float) -> str:
    if entry.static:
        return "PERMANENT"
    if entry.state == REACHABLE and now >= entry.deadline:
        return STALE  # the cache makes it stale when next used; it is stale already
    return entry.state


# -- what `ip` prints ------------------------------------------------------------------------
def render(obj: str, data: list[dict[str, Any]], *, json_output: bool = False,
           pretty: bool = False) -> str:
    """What ``ip`` prints for the data of a show of ``obj`` ("address", "link", "route",
    "neigh"): iproute2's text, or its JSON (``-j``; ``-p`` as iproute2 indents it)."""
    if json_output:
        return (_pretty(data) if pretty else json.dumps(data, separators=(",", ":"))) + "\n"
    lines: list[str] = []
    for info in data:
        if obj in ("address", "link"):
            lines += _link_text(info, link=obj == "link")
        elif obj == "route":
            lines.append(_route_text(info))
        else:
            lines.append(_neigh_text(info))
    return "".join(line + "\n" for line in lines)


def _link_text(info: dict[str, Any], *, link: bool) -> list[str]:
    name = info["ifname"] + (f"@{info['link']}" if "link" in info else "")
    first = f"{info['ifindex']}: {name}: <{','.join(info['flags'])}> mtu {info['mtu']} "
    if "qdisc" in info:
        first += f"qdisc {info['qdisc']} "
    first += f"state {info['operstate']} "
    if link:
        first += f"mode {info['linkmode']} "
    if "group" in info:
        first += f"group {info['group']} "
    lines = [first + f"qlen {info['txqlen']}"]
    if "link_type" in info:
        lines.append(f"    link/{info['link_type']} {info['address']} brd {info['broadcast']}")
    for a in info.get("addr_info", ()):
        text = f"    {a['family']} {a['local']}/{a['prefixlen']} "
        if "broadcast" in a:
            text += f"brd {a['broadcast']} "
        text += f"scope {a['scope']} "
        text += "".join(f"{f} " for f in ADDRESS_FLAGS if a.get(f))
        text += a.get("label", "")
        lines.append(text)
        lines.append(f"       valid_lft {_lft_text(a['valid_life_time'])} "
                     f"preferred_lft {_lft_text(a['preferred_life_time'])}")
    return lines


def _lft_text(seconds: int) -> str:
    return "forever" if seconds == FOREVER else f"{seconds}sec"


def _route_text(info: dict[str, Any]) -> str:
    words = [info["dst"]]
    if "gateway" in info:
        words.append(f"via {info['gateway']}")
    if "dev" in info:
        words.append(f"dev {info['dev']}")
    if "protocol" in info:
        words.append(f"proto {info['protocol']}")
    if "scope" in info:
        words.append(f"scope {info['scope']}")
    if "prefsrc" in info:
        words.append(f"src {info['prefsrc']}")
    if "metric" in info:
        words.append(f"metric {info['metric']}")
    words += info.get("flags", [])
    if "expires" in info:
        words.append(f"expires {info['expires']}sec")
    text = "".join(w + " " for w in words)
    return text + f"pref {info['pref']}" if "pref" in info else text


def _neigh_text(info: dict[str, Any]) -> str:
    words = [info["dst"]]
    if "dev" in info:
        words.append(f"dev {info['dev']}")
    if "lladdr" in info:
        words.append(f"lladdr {info['lladdr']}")
    words += info["state"]
    return "".join(w + " " for w in words)


def _pretty(value: Any) -> str:
    """JSON laid out as iproute2's ``-p`` does (lib/json_writer.c): four spaces a level,
    members on their own lines, ``},{`` between objects, arrays of plain values on one
    line as ``[ "A","B" ]``."""
    out: list[str] = []

    def emit(v: Any, depth: int) -> None:
        if isinstance(v, dict):
            out.append("{")
            for i, (k, item) in enumerate(v.items()):
                out.append(("," if i else "") + "\n" + "    " * (depth + 1))
                out.append(json.dumps(k) + ": ")
                emit(item, depth + 1)
            out.append(("\n" + "    " * depth if v else "") + "}")
        elif isinstance(v, list):
            out.append("[ ")
            for i, item in enumerate(v):
                out.append("," if i else "")
                emit(item, depth + 1)
            out.append(" ]" if v else "]")
        else:
            out.append(json.dumps(v))

    emit(value, 0)
    return "".join(out)
