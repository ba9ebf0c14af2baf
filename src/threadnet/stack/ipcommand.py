"""iproute2's ``ip`` command line on a stack: ``ip [-4|-6] [-j] [-p] OBJECT COMMAND ...``
for the objects ``address``, ``link``, ``route`` and ``neighbour`` (the ``threadnet ip``
command, the stack console's ``ip`` and ``threadnet.ip``).

``parse`` reads a command line (global options, an object, a command and its words,
with iproute2's abbreviations: ``ip a``, ``ip -6 r s``, ``ip n``) into a ``Command``;
``execute`` runs it on a stack at a time and returns a show's data (``stack/iproute.py``)
or [] for a change; ``output`` is what ``ip`` prints for it. The words of each command
are iproute2's, in its order: ``addr add 10.0.0.5/24 dev eth0 valid_lft 3600
preferred_lft 1800``, ``route add default via 10.0.0.1``, ``link set eth0 mtu 1400``.
Errors are ``IpError``: the line iproute2 prints and the exit status it gives (1 for
bad words and unknown devices, 2 for what the kernel refuses, 255 for a bad value),
with the errno behind it. A word iproute2 has and threadnet cannot do (``ip link set
eth0 promisc on``, ``ip route add ... src X``) is refused by name, never ignored.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from threadnet.stack.iproute import (
    FOREVER,
    IpError,
    addr_show,
    interface_named,
    link_show,
    neigh_show,
    render,
    route_metric,
    route_show,
    shown_routes,
)
from threadnet.stack.route import METRIC6_USER, Route
from threadnet.stack.stack import check_mtu
from threadnet.wire.ethernet import mac_from_str

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

#: /etc/iproute2/rt_protos: route protocols by number
PROTOCOLS = {0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated",
             9: "ra", 10: "mrt", 11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp",
             15: "ntk", 16: "dhcp", 17: "mrouted", 18: "keepalived", 42: "babel",
             99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip", 192: "eigrp"}
#: iproute2's objects, in the order its abbreviations resolve (ip/ip.c, cmds[]); the
#: ones threadnet has map to their canonical name, the others to None
OBJECTS = (("address", "address"), ("addrlabel", None), ("maddress", None),
           ("route", "route"), ("rule", None), ("neighbor", "neigh"),
           ("neighbour", "neigh"), ("ntable", None), ("ntbl", None), ("link", "link"),
           ("l2tp", None), ("fou", None), ("ila", None), ("macsec", None), ("tunnel", None),
           ("tunl", None), ("tuntap", None), ("tap", None), ("token", None),
           ("tcpmetrics", None), ("tcp_metrics", None), ("monitor", None), ("xfrm", None),
           ("mroute", None), ("mrule", None), ("netns", None), ("netconf", None),
           ("vrf", None), ("sr", None), ("nexthop", None), ("mptcp", None), ("ioam", None),
           ("help", "help"), ("stats", None))
#: each object's commands, in the order iproute2 tries them (do_ipaddr, do_iproute,
#: do_iplink, do_ipneigh): (word, what it means here or None for not here)
VERBS = {
    "address": (("add", "add"), ("change", "change"), ("replace", "replace"),
                ("delete", "del"), ("list", "show"), ("show", "show"), ("lst", "show"),
                ("flush", "flush"), ("save", None), ("showdump", None), ("restore", None),
                ("help", "help")),
    "route": (("add", "add"), ("change", "change"), ("replace", "replace"),
              ("prepend", None), ("append", None), ("test", None), ("delete", "del"),
              ("list", "show"), ("show", "show"), ("lst", "show"), ("get", None),
              ("flush", "flush"), ("save", None), ("restore", None), ("showdump", None),
              ("help", "help")),
    "link": (("add", "add"), ("set", "set"), ("change", "set"), ("replace", None),
             ("delete", "del"), ("show", "show"), ("lst", "show"), ("list", "show"),
             ("xstats", None), ("afstats", None), ("property", None), ("help", "help")),
    "neigh": (("add", "add"), ("change", "change"), ("replace", "replace"),
              ("delete", "del"), ("get", None), ("show", "show"), ("lst", "show"),
              ("list", "show"), ("flush", "flush"), ("help", "help")),
}
_HELP_NAME = {"address": "address", "route": "route", "link": "link", "neigh": "neigh"}
#: the global options threadnet has, and iproute2's others (refused by name)
_OPTIONS = ("-loops", "-family", "-human", "-human-readable", "-iec", "-stats",
            "-statistics", "-details", "-resolve", "-oneline", "-timestamp", "-tshort",
            "-Version", "-force", "-batch", "-brief", "-json", "-pretty", "-rcvbuf",
            "-help", "-netns", "-Numeric", "-all", "-echo", "-color", "-NUMERIC")
USAGE = """Usage: ip [ OPTIONS ] OBJECT { COMMAND | help }
where  OBJECT := { address | link | route | neighbour }
       OPTIONS := { -4 | -6 | -f[amily] { inet | inet6 } | -j[son] | -p[retty] }
threadnet has: ip address { show | add | change | replace | del | flush },
  ip link { show | set }, ip route { show | add | change | replace | del | flush },
  ip neigh { show | add | change | replace | del | flush }"""


def _kernel(err: int, reason: str | None = None) -> IpError:
    """An error the kernel would answer (exit status 2): ``RTNETLINK answers: File
    exists`` for a bare errno, ``reason`` ("Error: ...") for one with extended
    information."""
    return IpError(reason or f"RTNETLINK answers: {os.strerror(err)}", 2, err)


def _invarg(value: str, what: str) -> IpError:
    return IpError(f'Error: argument "{value}" is wrong: {what}', 255)


def _garbage(key: str, word: str) -> IpError:
    return IpError(f'Error: either "{key}" is duplicate, or "{word}" is a garbage.', 255)


def _unsupported(word: str) -> IpError:
    return IpError(f'Error: "{word}" is not supported by threadnet.', 2, errno.EOPNOTSUPP)


def _matches(word: str, full: str) -> bool:
    """iproute2's ``matches``: ``word`` abbreviates ``full``."""
    return bool(word) and full.startswith(word)


# -- parsing -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Command:
    """One ``ip`` command line, read: ``obj`` "address", "link", "route" or "neigh";
    ``verb`` "show", "add", "change", "replace", "del", "flush" or "set"; ``words`` the
    command's own, in order (checked by ``execute``, which reads them as iproute2's
    words of that command)."""

    obj: str
    verb: str
    words: list[str] = field(default_factory=list)
    family: int | None = None
    json: bool = False
    pretty: bool = False

    @property
    def changes(self) -> bool:
        """Whether it changes the stack (so needs the owner's rights on a published one)."""
        return self.verb != "show"


def parse(argv: Sequence[str] | str) -> Command:
    """Read an ``ip`` command line (without the ``ip``): global options, the object and
    its command, with iproute2's abbreviations (``ip a``, ``ip -6 r s``, ``ip n``).
    IpError for a line iproute2 would refuse or threadnet cannot run."""
    args = shlex.split(argv) if isinstance(argv, str) else list(argv)
    cmd = Command("", "")
    while args and args[0].startswith("-") and args[0] != "-":
        opt = args.pop(0)
        if opt == "--":
            break
        if opt.startswith("--"):
            opt = opt[1:]  # iproute2 takes --json as -json
        if opt == "-4":
            cmd.family = 4
        elif opt == "-6":
            cmd.family = 6
        elif _matches(opt, "-family") and opt != "-":
            if not args:
                raise IpError(f'Option "{opt}" requires an argument')
            cmd.family = _family_word(args.pop(0))
        elif _matches(opt, "-json") and _first_option(opt) == "-json":
            cmd.json = True
        elif _matches(opt, "-pretty") and _first_option(opt) == "-pretty":
            cmd.pretty = True
        elif _first_option(opt) is not None or opt in ("-0", "-M", "-B"):
            raise IpError(f'Option "{opt}" is not supported by threadnet ip.', 255)
        else:
            raise IpError(f'Option "{opt}" is unknown, try "ip -help".', 255)
    if not args:
        raise IpError(USAGE, 255)
    word = args.pop(0)
    obj = next((canon for full, canon in OBJECTS if _matches(word, full)), "?")
    if obj == "?":
        raise IpError(f'Object "{word}" is unknown, try "ip help".')
    full = next(full for full, _ in OBJECTS if _matches(word, full))
    if obj is None:
        raise IpError(f'Object "{full}" is not supported by threadnet ip (it has address, '
                      "link, route and neighbour).")
    if obj == "help":
        raise IpError(USAGE, 255)
    cmd.obj = obj
    if not args:
        cmd.verb = "show"
        return cmd
    word = args.pop(0)
    verb = next(((full, v) for full, v in VERBS[obj] if _matches(word, full)
                 or (word == "chg" and full == "change")), None)
    if verb is None:
        raise IpError(f'Command "{word}" is unknown, try "ip {_HELP_NAME[obj]} help".', 255)
    if verb[1] is None:
        raise IpError(f'Command "{verb[0]}" of "ip {_HELP_NAME[obj]}" is not supported by '
                      "threadnet ip.", 255)
    if verb[1] == "help":
        raise IpError(USAGE, 255)
    cmd.verb = verb[1]
    cmd.words = args
    return cmd


def _first_option(opt: str) -> str | None:
    """The global option ``opt`` abbreviates, trying them in iproute2's order."""
    return next((o for o in _OPTIONS if _matches(opt, o)), None)


def _family_word(word: str) -> int:
    if word in ("inet", "ipv4"):
        return 4
    if word in ("inet6", "ipv6"):
        return 6
    raise IpError(f'Error: argument "{word}" is wrong: invalid protocol family', 255)


class _Words:
    """The words of a command, read one at a time."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = list(words)
        self.i = 0

    def __bool__(self) -> bool:
        return self.i < len(self.words)

    def next(self) -> str:
        word = self.words[self.i]
        self.i += 1
        return word

    def value(self, key: str) -> str:
        """The word after ``key``; iproute2's complaint when there is none."""
        if not self:
            raise IpError('Command line is not complete. Try option "help"', 255)
        return self.next()


def _prefix(text: str, family: int | None, *, address: bool = False) -> Any:
    """An address with an optional /PLEN (``ipaddress`` interface), or a network for a
    route (``address`` False, "default" allowed). iproute2's errors for bad ones."""
    kind = {None: "any valid", 4: "inet", 6: "inet6"}[family]
    try:
        if not address and text in ("default", "all", "any"):
            return ipaddress.ip_network("::/0" if family == 6 else "0.0.0.0/0")
        value = ipaddress.ip_interface(text)
    except ValueError:
        raise IpError(f'Error: {kind} prefix is expected rather than "{text}".') from None
    if family is not None and value.version != family:
        raise IpError(f'Error: {kind} prefix is expected rather than "{text}".')
    if address:
        return value
    if value.ip != value.network.network_address:
        raise _kernel(errno.EINVAL, "Error: Invalid prefix for given prefix length.")
    return value.network


def _address(text: str, family: int | None) -> Any:
    kind = {None: "any valid", 4: "inet", 6: "inet6"}[family]
    try:
        value = ipaddress.ip_address(text)
    except ValueError:
        raise IpError(f'Error: {kind} address is expected rather than "{text}".') from None
    if family is not None and value.version != family:
        raise IpError(f'Error: {kind} address is expected rather than "{text}".')
    return value


def _u32(text: str, what: str) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise _invarg(text, what) from None
    if not 0 <= value <= FOREVER:
        raise _invarg(text, what)
    return value


def _lifetime(text: str, what: str) -> int | None:
    """A ``valid_lft``/``preferred_lft`` value: seconds, or None for forever."""
    if text == "forever":
        return None
    value = _u32(text, f"{what} value")
    return None if value == FOREVER else value


# -- running a command -------------------------------------------------------------------------
def execute(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    """Run ``cmd`` on ``stack`` at ``now`` (call it under ``stack.locked()``): a show's
    data as ``ip -j`` prints it, [] for a change. IpError as iproute2 would fail."""
    handler = _HANDLERS[(cmd.obj, cmd.verb)]
    try:
        return handler(stack, cmd, now)
    except IpError:
        raise
    except OSError as exc:  # what the stack refused: as the kernel would say it
        raise _kernel(exc.errno or errno.EINVAL) from None
    except (ValueError, LookupError) as exc:
        raise _kernel(errno.EINVAL, f"Error: {exc}.") from None


def run(stack: Stack, argv: Sequence[str] | str, now: float | None = None) -> str:
    """What ``ip ARGV`` prints for ``stack`` (text, or JSON with ``-j``); IpError as
    ``ip`` fails. ``now``: the stack's own time by default."""
    cmd = parse(argv)
    with stack.locked():
        data = execute(stack, cmd, stack._api_now(now))
    return output(cmd, data)


def output(cmd: Command, data: list[dict[str, Any]]) -> str:
    """What ``ip`` prints for ``cmd`` given the data ``execute`` returned."""
    if cmd.changes:
        return ""
    return render(cmd.obj, data, json_output=cmd.json, pretty=cmd.pretty)


# address ----------------------------------------------------------------------------------
_ADDR_FLAG_WORDS = ("permanent", "dynamic", "secondary", "primary", "tentative",
                    "deprecated", "dadfailed", "temporary", "mngtmpaddr", "noprefixroute",
                    "home", "nodad", "optimistic", "autojoin", "stable-privacy")


def _addr_filter(cmd: Command) -> dict[str, Any]:
    """The selectors of ``ip address show|flush``."""
    words = _Words(cmd.words)
    sel: dict[str, Any] = {"dev": None, "up": False, "scope": None, "to": None, "flags": []}
    while words:
        word = words.next()
        if word == "dev":
            sel["dev"] = words.value("dev")
        elif word == "up":
            sel["up"] = True
        elif word == "scope":
            sel["scope"] = words.value("scope")
            if sel["scope"] not in ("global", "link", "host", "site", "all"):
                raise _invarg(sel["scope"], "invalid \"scope\"")
        elif word == "to":
            sel["to"] = _prefix(words.value("to"), cmd.family, address=True).network
        elif word.lstrip("-") in _ADDR_FLAG_WORDS:
            sel["flags"].append(word)
        elif word in ("label", "master", "vrf", "type", "nomaster", "group"):
            raise _unsupported(word)
        else:
            if sel["dev"] is not None:
                raise _garbage("dev", word)
            sel["dev"] = word
    return sel


def _addr_show(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    sel = _addr_filter(cmd)
    return addr_show(stack, now, cmd.family, sel["dev"], up=sel["up"], scope=sel["scope"],
                     to=sel["to"], flags=sel["flags"])


def _addr_flush(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    if not cmd.words:
        raise IpError("Flush requires arguments.")
    for info in _addr_show(stack, cmd, now):
        for a in info["addr_info"]:
            stack.addr_del(info["ifindex"], f"{a['local']}/{a['prefixlen']}")
    return []


def _addr_change(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    """``ip address add|change|replace|del ADDR[/PLEN] dev IF [valid_lft N|forever]
    [preferred_lft N|forever] [noprefixroute] [mngtmpaddr] [brd +]``."""
    words = _Words(cmd.words)
    local = dev = None
    plen_given = True
    lifetimes: dict[str, int | None] = {}
    flags: list[str] = []
    while words:
        word = words.next()
        if word == "dev":
            dev = words.value("dev")
        elif _matches(word, "valid_lft") or _matches(word, "preferred_lft"):
            what = "valid_lft" if word[0] == "v" else "preferred_lft"
            lifetimes[what] = _lifetime(words.value(word), what)
        elif word in ("noprefixroute", "mngtmpaddr"):
            flags.append(word)
        elif word in ("broadcast", "brd"):
            value = words.value(word)
            if value not in ("+", "-"):  # the stack's is always the network's (``+``)
                raise _unsupported(f"{word} {value}")
        elif word in ("peer", "remote", "anycast", "label", "scope", "metric", "priority",
                      "home", "nodad", "optimistic", "autojoin", "proto"):
            raise _unsupported(word)
        else:
            if word == "local":
                word = words.value("local")
            if local is not None:
                raise _garbage("local", word)
            local = _prefix(word, cmd.family, address=True)
            plen_given = "/" in word
    if dev is None:
        raise IpError('Not enough information: "dev" argument is required.')
    iface = interface_named(stack, dev)
    if local is None:
        raise _kernel(errno.EOPNOTSUPP)
    valid = lifetimes.get("valid_lft")
    preferred = lifetimes.get("preferred_lft")
    # iproute2 takes a lifetime not given as forever: valid_lft alone is refused here
    if lifetimes and (FOREVER if preferred is None else preferred) > (
            FOREVER if valid is None else valid):
        raise IpError("preferred_lft is greater than valid_lft")
    v6 = local.version == 6
    if "noprefixroute" in flags and not v6:
        raise _unsupported("noprefixroute (on an IPv4 address)")
    if "mngtmpaddr" in flags and not v6:
        raise _kernel(errno.EINVAL, 'Error: "mngtmpaddr" is for IPv6 addresses.')
    # an IPv4 address may be there with several prefix lengths (a delete without /PLEN
    # takes any: iproute2's "wildcard deletion"); an IPv6 one once, and a delete must
    # name its prefix length (128 when not given), as Linux wants
    any_plen = cmd.verb != "del" if v6 else cmd.verb == "del" and not plen_given
    existing = _find_address(iface, local, any_plen=any_plen)
    family = "ipv6" if v6 else "ipv4"
    if cmd.verb == "del":
        if existing is None:
            raise _kernel(errno.EADDRNOTAVAIL,
                          f"Error: {family}: {'a' if v6 else 'A'}ddress not found.")
        stack.addr_del(iface.index, existing)
    elif cmd.verb == "add" or (cmd.verb == "replace" and existing is None):
        if existing is not None:
            raise _kernel(errno.EEXIST,
                          f"Error: {family}: {'a' if v6 else 'A'}ddress already assigned.")
        stack.addr_add(iface.index, f"{local.ip}/{local.network.prefixlen}", now,
                       valid_lft=valid, preferred_lft=preferred,
                       flags=tuple(flags))  # (noprefixroute: no connected route)
    else:  # change, or replace of an address that is there: new lifetimes (forever if none)
        if existing is None:
            raise _kernel(errno.ENOENT)
        stack.addr_set_lifetimes(iface.index, str(local.ip), valid, preferred, now)
    return []


def _find_address(iface: Interface, local: Any, *, any_plen: bool) -> str | None:
    """The CIDR of ``iface``'s address ``local`` with its prefix length (or any), or None."""
    packed = local.ip.packed
    plen = local.network.prefixlen
    if local.version == 4:
        plens = [p for a, p in iface.v4 if a == packed]
        plens += [acd.plen for a, acd in iface.acd4.items() if a == packed]
    else:
        plens = [a.plen for a in iface.v6 if a.addr == packed]
    for p in plens:
        if p == plen or any_plen:
            return f"{local.ip}/{p}"
    return None


# link ---------------------------------------------------------------------------------------
def _link_show(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    words = _Words(cmd.words)
    dev, up = None, False
    while words:
        word = words.next()
        if word == "dev":
            dev = words.value("dev")
        elif word == "up":
            up = True
        elif word in ("group", "master", "vrf", "type", "nomaster"):
            raise _unsupported(word)
        else:
            if dev is not None:
                raise _garbage("dev", word)
            dev = word
    return link_show(stack, now, dev, up=up)


_LINK_UNSUPPORTED = ("arp", "multicast", "allmulticast", "promisc", "trailers",
                     "txqueuelen", "txqlen", "qlen", "name", "alias", "broadcast", "brd",
                     "peer", "netns", "link-netns", "link-netnsid", "group", "master",
                     "nomaster", "vf", "mode", "state", "dynamic", "xdp", "protodown",
                     "addrgenmode", "gso_max_size", "gso_max_segs", "type", "numtxqueues",
                     "numrxqueues", "carrier", "vrf")


def _link_set(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    """``ip link set [dev] IF up|down|mtu N|address MAC``: every word is checked before
    any applies."""
    words = _Words(cmd.words)
    dev: str | None = None
    changes: list[tuple[str, Any]] = []
    while words:
        word = words.next()
        if word in ("up", "down"):
            changes.append((word, None))
        elif word == "mtu":
            value = words.value("mtu")
            try:
                mtu = int(value, 0)
            except ValueError:
                raise _invarg(value, 'Invalid "mtu" value') from None
            changes.append(("mtu", mtu))
        elif _matches(word, "address"):
            value = words.value("address")
            try:
                mac = mac_from_str(value)
            except ValueError:
                raise IpError(f'"{value}" is invalid lladdr.') from None
            changes.append(("address", mac))
        elif word == "dev":
            if dev is not None:
                raise _garbage("dev", word)
            dev = words.value("dev")
        elif word in _LINK_UNSUPPORTED:
            raise _unsupported(word)
        else:
            if dev is not None:
                raise _garbage("dev", word)
            dev = word
    if dev is None:
        raise IpError('Not enough information: "dev" argument is required.')
    iface = interface_named(stack, dev)
    for what, value in changes:
        if what == "mtu":
            try:
                check_mtu(stack.links.get(iface.index), value, iface.name)
            except ValueError:
                raise _kernel(errno.EINVAL, "Error: mtu less than device minimum." if value < 68
                              else "Error: mtu greater than device maximum.") from None
        elif what == "address" and (iface.loopback or value[0] & 1):
            raise _kernel(errno.EADDRNOTAVAIL)
    for what, value in changes:
        if what == "up":
            stack.link_up(iface.index, now)
        elif what == "down":
            stack.link_down(iface.index)
        elif what == "mtu":
            stack.set_mtu(iface.index, value)
        else:
            stack.set_mac(iface.index, value)
    return []


def _link_unsupported(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    raise IpError("Error: threadnet's interfaces come from links: add one with "
                  "Stack.add_interface or 'threadnet stack --link URL'.", 2, errno.EOPNOTSUPP)


# route ---------------------------------------------------------------------------------------
def _route_words(cmd: Command, *, show: bool) -> dict[str, Any]:
    """The words of ``ip route add|del|...`` (or of a show or flush's selectors)."""
    words = _Words(cmd.words)
    spec: dict[str, Any] = {}
    while words:
        word = words.next()
        if word == "via":
            value = words.value("via")
            # the gateway's family: "via inet6 X", or the command's, or the prefix's
            family = cmd.family
            if family is None and spec.get("dst") is not None and spec["dst"].prefixlen:
                family = spec["dst"].version
            if value in ("inet", "inet6"):
                family = 4 if value == "inet" else 6
                value = words.value("via")
            spec["via"] = _address(value, family)
        elif word in ("dev", "oif"):
            spec["dev"] = words.value(word)
        elif word in ("metric", "priority", "preference"):
            spec["metric"] = _u32(words.value(word), '"metric" value is invalid')
        elif word in ("proto", "protocol"):
            spec["proto"] = _proto(words.value(word))
        elif word == "table":
            value = words.value("table")
            if value not in ("main", "254") and not (show and value == "all"):
                raise _unsupported(f"table {value} (threadnet has the main table)")
        elif word == "pref":
            value = words.value("pref")
            if value not in ("low", "medium", "high"):
                raise _invarg(value, '"pref" value is invalid')
            spec["pref"] = value
        elif word == "expires":
            spec["expires"] = _u32(words.value("expires"), '"expires" value is invalid')
        elif word == "scope":
            spec["scope"] = words.value("scope")
        elif word in ("type", "unicast"):
            if word == "type" and words.value("type") != "unicast":
                raise _unsupported("route types other than unicast")
        elif word in ("src", "from", "tos", "dsfield", "mtu", "advmss", "rtt", "rttvar",
                      "reordering", "window", "cwnd", "initcwnd", "initrwnd", "ssthresh",
                      "realms", "onlink", "nexthop", "nhid", "encap", "hoplimit",
                      "features", "quickack", "congctl", "fastopen_no_cookie", "as",
                      "local", "broadcast", "multicast", "throw", "unreachable",
                      "prohibit", "blackhole", "nat", "root", "match", "exact", "vrf",
                      "ttl-propagate", "rto_min", "lock", "weight", "pervasive"):
            raise _unsupported(word)
        else:
            if word == "to":
                word = words.value("to")
            if "dst" in spec:
                raise _garbage("to", word)
            spec["dst"] = _prefix(word, cmd.family)
    return spec


def _proto(word: str) -> str:
    if word.isdigit():
        number = int(word)
        if number > 255:
            raise _invarg(word, '"protocol" value is invalid')
        return PROTOCOLS.get(number, str(number))
    if word not in PROTOCOLS.values():
        raise _invarg(word, '"protocol" value is invalid')
    return word


def _route_family(cmd: Command, spec: dict[str, Any]) -> int:
    if cmd.family is not None:
        return cmd.family
    if spec.get("dst") is not None and spec["dst"].prefixlen:
        return spec["dst"].version
    if spec.get("via") is not None:
        return spec["via"].version
    return spec["dst"].version if spec.get("dst") is not None else 4


def _route_show(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    spec = _route_words(cmd, show=True)
    family = cmd.family or (spec["dst"].version if "dst" in spec else 4)
    for word in ("pref", "expires", "scope"):
        if word in spec:
            raise _unsupported(f"{word} (in a route show)")
    return route_show(stack, now, family, spec.get("dev"), proto=spec.get("proto"),
                      to=spec.get("dst"), via=spec.get("via"), metric=spec.get("metric"))


def _route_matches(stack: Stack, spec: dict[str, Any], family: int) -> list[Route]:
    """The routes a delete or flush selects, in the order ``ip route`` shows them."""
    iface = interface_named(stack, spec["dev"]) if "dev" in spec else None
    out = []
    for r in shown_routes(stack, family):
        table = stack.routes4 if family == 4 else stack.routes6
        if r not in table.routes:
            continue  # a link-local route the stack has without a table entry
        if "dst" in spec and r.dst != spec["dst"]:
            continue
        if "via" in spec and r.gateway != spec["via"]:
            continue
        if iface is not None and r.ifindex != iface.index:
            continue
        if "metric" in spec and route_metric(r) != spec["metric"]:
            continue
        if "proto" in spec and r.proto != spec["proto"]:
            continue
        out.append(r)
    return out


def _route_flush(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    if not cmd.words:
        raise IpError('"ip route flush" requires arguments.')
    spec = _route_words(cmd, show=True)
    family = cmd.family or (spec["dst"].version if "dst" in spec else 4)
    for r in _route_matches(stack, spec, family):
        _delete_route(stack, r)
    return []


def _delete_route(stack: Stack, r: Route) -> None:
    table = stack.routes4 if r.dst.version == 4 else stack.routes6
    table.delete(r.dst, gateway=r.gateway, ifindex=r.ifindex, metric=r.metric)


def _route_change(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    """``ip route add|change|replace|del DST|default [via GW] [dev IF] [metric N]
    [proto P] [pref P] [expires N]``."""
    spec = _route_words(cmd, show=False)
    if "dst" not in spec:
        raise IpError(USAGE, 255)
    family = _route_family(cmd, spec)
    dst = spec["dst"]
    if dst.version != family:
        if dst.prefixlen:
            raise IpError(f'Error: {"inet" if family == 4 else "inet6"} prefix is expected '
                          f'rather than "{dst}".')
        dst = ipaddress.ip_network("::/0" if family == 6 else "0.0.0.0/0")
    via = spec.get("via")
    if via is not None and via.version != family:
        raise _unsupported(f"an IPv{family} route via an IPv{via.version} gateway")
    if cmd.verb == "del":
        spec["dst"] = dst
        found = _route_matches(stack, spec, family)
        if not found:
            raise _kernel(errno.ESRCH)
        _delete_route(stack, found[0])
        return []
    iface = interface_named(stack, spec["dev"]) if "dev" in spec else None
    if iface is None and via is None:
        raise _kernel(errno.ENODEV)
    if iface is None and via is not None and via.is_link_local:
        raise _kernel(errno.EINVAL, "Error: Egress device not specified.")
    if iface is not None and via is not None and not via.is_link_local and not any(
            r.gateway is None and r.ifindex == iface.index and via in r.dst
            for r in (stack.routes4 if family == 4 else stack.routes6).routes):
        raise _kernel(errno.EINVAL, "Error: Nexthop has invalid gateway.")  # not on-link there
    if "scope" in spec and spec["scope"] not in ("link", "global", "universe"):
        raise _unsupported(f"scope {spec['scope']}")
    want = spec.get("metric", 0)
    wanted_metric = want or (METRIC6_USER if family == 6 else 0)
    table = stack.routes4 if family == 4 else stack.routes6
    same = [r for r in table.routes if r.dst == dst and route_metric(r) == wanted_metric
            and (family == 4 or cmd.verb != "add" or r.gateway == via)]
    if cmd.verb == "add" and same:
        raise _kernel(errno.EEXIST)
    if cmd.verb == "change" and not same:
        raise _kernel(errno.ENOENT)
    old = same[0] if same and cmd.verb in ("change", "replace") else None
    if old is not None:
        _delete_route(stack, old)
    try:
        stack.route_add(str(dst),
                        str(via) if via is not None else None,
                        iface.index if iface is not None else None, want,
                        proto=spec.get("proto", "boot"), lifetime=spec.get("expires"),
                        pref=spec.get("pref", "medium"), now=now)
    except OSError as exc:
        if old is not None:
            table.add(old)  # put back what the failed replace took away
        if isinstance(exc, FileExistsError):
            raise _kernel(errno.EEXIST) from None
        raise _kernel(errno.EINVAL, "Error: Nexthop has invalid gateway.") from None
    return []


# neigh ---------------------------------------------------------------------------------------
#: the neighbour states iproute2 names (ip/ipneigh.c, nud_state_a2n), "perm" for short
_NUD_STATES = ("permanent", "perm", "reachable", "stale", "incomplete", "delay", "probe",
               "failed", "noarp", "none", "all", "any")


def _neigh_words(cmd: Command) -> dict[str, Any]:
    words = _Words(cmd.words)
    spec: dict[str, Any] = {}
    while words:
        word = words.next()
        if word == "dev":
            spec["dev"] = words.value("dev")
        elif word == "lladdr":
            value = words.value("lladdr")
            try:
                spec["lladdr"] = mac_from_str(value)
            except ValueError:
                raise IpError(f'"{value}" is invalid lladdr.') from None
        elif word == "nud":
            value = words.value("nud")
            if value not in _NUD_STATES:
                raise _invarg(value, '"nud" state is invalid')
            spec["nud"] = "permanent" if value == "perm" else value
        elif word == "all":
            spec["all"] = True
        elif word in ("proxy", "router", "extern_learn", "use", "managed", "vrf", "protocol",
                      "nomaster", "master", "unused", "proto"):
            raise _unsupported(word)
        else:
            if word == "to":
                word = words.value("to")
            if "to" in spec:
                raise _garbage("to", word)
            spec["to"] = _prefix(word, cmd.family, address=True)
    return spec


def _neigh_show(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    spec = _neigh_words(cmd)
    to = spec["to"].network if "to" in spec else None
    data = neigh_show(stack, now, cmd.family, spec.get("dev"), to=to)
    nud = spec.get("nud", "all")
    return [n for n in data if nud in ("all", "any") or n["state"][0] == nud.upper()]


def _neigh_flush(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    if not cmd.words:
        raise IpError("Flush requires arguments.")
    spec = _neigh_words(cmd)
    to = spec["to"].network if "to" in spec else None
    ifaces = ([interface_named(stack, spec["dev"])] if "dev" in spec
              else list(stack.interfaces.values()))
    nud = spec.get("nud")
    for iface in ifaces:
        for fam, cache in ((4, iface.arp), (6, iface.nd)):
            if cmd.family not in (None, fam):
                continue
            for addr, entry in list(cache.entries.items()):
                if to is not None and ipaddress.ip_address(addr) not in to:
                    continue
                state = "permanent" if entry.static else entry.state.lower()
                if nud is None and entry.static:
                    continue  # without "nud", iproute2 flushes all but permanent entries
                if nud not in (None, "all", "any", state):
                    continue
                cache.remove(addr)
    return []


def _neigh_change(stack: Stack, cmd: Command, now: float) -> list[dict[str, Any]]:
    """``ip neigh add|change|replace|del ADDR [lladdr MAC] dev IF [nud permanent]``."""
    spec = _neigh_words(cmd)
    if "dev" not in spec or "to" not in spec:
        raise IpError("Device and destination are required arguments.")
    iface = interface_named(stack, spec["dev"])
    addr = spec["to"].ip.packed
    cache = iface.arp if len(addr) == 4 else iface.nd
    entry = cache.entries.get(addr)
    if cmd.verb == "del":
        if entry is None:
            raise _kernel(errno.ENOENT)
        cache.remove(addr)
        return []
    if cmd.verb == "add" and entry is not None:
        raise _kernel(errno.EEXIST)
    if cmd.verb == "change" and entry is None:
        raise _kernel(errno.ENOENT)
    if spec.get("nud", "permanent") != "permanent":
        raise _unsupported(f"nud {spec['nud']} (threadnet adds permanent entries)")
    if "lladdr" not in spec:
        raise _kernel(errno.EINVAL, "Error: No link layer address given.")
    cache.add_static(addr, spec["lladdr"])
    return []


_HANDLERS = {
    ("address", "show"): _addr_show, ("address", "flush"): _addr_flush,
    ("address", "add"): _addr_change, ("address", "change"): _addr_change,
    ("address", "replace"): _addr_change, ("address", "del"): _addr_change,
    ("link", "show"): _link_show, ("link", "set"): _link_set,
    ("link", "add"): _link_unsupported, ("link", "del"): _link_unsupported,
    ("route", "show"): _route_show, ("route", "flush"): _route_flush,
    ("route", "add"): _route_change, ("route", "change"): _route_change,
    ("route", "replace"): _route_change, ("route", "del"): _route_change,
    ("neigh", "show"): _neigh_show, ("neigh", "flush"): _neigh_flush,
    ("neigh", "add"): _neigh_change, ("neigh", "change"): _neigh_change,
    ("neigh", "replace"): _neigh_change, ("neigh", "del"): _neigh_change,
}
