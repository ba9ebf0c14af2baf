"""A running stack's management commands (iproute2-flavoured), and the console that serves them.

``threadnet stack PATH ... -M MGMT`` serves this table on a vde_switch-style console socket
(mgmt/console.py), so ``threadnet console MGMT CMD`` and Debian's ``unixterm MGMT`` work on
it as they do on a switch. The console has its own event loop and thread, so a slow console
client never stalls the stack's runner.

Each handler is a module-level function of a ``ManagedStack`` (the stack and what its
console tells about it) and the argument text; ``COMMANDS`` lists them in help order.
``build_table`` runs every handler under ``stack.locked()`` and turns the stack API's
exceptions into a CommandError with the errno iproute2 would report: ENODEV for an unknown
interface, EINVAL for bad syntax, EEXIST for an address or route that is already there,
EADDRNOTAVAIL for an address that is not, ESRCH for a route that is not. ``help``,
``logout`` and ``shutdown`` (flag ``UNLOCKED``) run as they are, without the lock.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from threadnet.loop import EventLoop
from threadnet.mgmt.commands import (
    OUTPUT,
    CommandError,
    CommandTable,
    Entry,
    Handler,
    parse_int,
    split_args,
    table_from_entries,
)
from threadnet.mgmt.console import ConsoleServer
from threadnet.stack import ipcommand
from threadnet.stack.filtercommands import FILTER_COMMANDS
from threadnet.stack.stack import check_mtu
from threadnet.wire.ethernet import mac_from_str, mac_to_str

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

PROMPT = "\nstack$ "

#: this table's own entry flag, beside mgmt's OUTPUT and CALLER (which it leaves alone):
#: the handler runs without the stack's lock and without error translation
UNLOCKED = 1 << 8

#: ``ss``'s names for the TCP states
_SS_STATE_NAMES = {"ESTABLISHED": "ESTAB", "SYN-RECEIVED": "SYN-RECV"}
#: ``ss``'s header line, for tcp/print and udp/print
_SS_HEADER = (f"{'State':<11}{'Recv-Q':>7} {'Send-Q':>7} {'Local Address:Port':<42}"
              "Peer Address:Port")


@dataclass(slots=True)
class ManagedStack:
    """What the console's commands act on: the stack, the table they are in (for
    ``help``), where the stack is published and its console socket (for ``showinfo``), and
    what ``shutdown`` calls (None: ``shutdown`` is not supported)."""

    stack: Stack
    published_path: str | None = None
    console_path: str | None = None
    console_mode: int = 0o600
    on_shutdown: Callable[[], None] | None = None
    table: CommandTable = field(default_factory=CommandTable)
    started: float = field(default_factory=time.monotonic)


def _command_error(exc: BaseException) -> CommandError:
    """The CommandError for an exception from the stack's API."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, FileExistsError):
        return CommandError(errno.EEXIST, str(exc))
    if isinstance(exc, OSError):
        return CommandError(exc.errno or errno.EINVAL, str(exc))
    if isinstance(exc, LookupError):
        return CommandError(errno.ESRCH, str(exc))
    if isinstance(exc, NotImplementedError):
        return CommandError(errno.EOPNOTSUPP, str(exc))
    if isinstance(exc, (ValueError, TypeError)):
        return CommandError(errno.EINVAL, str(exc))
    # a bug, not bad input: report it, keep serving
    traceback.print_exception(exc, file=sys.stderr)
    return CommandError(errno.EIO, str(exc))


def _ip_text(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def _ss_address(addr: bytes, port: int, family: int) -> str:
    """``ss``'s address:port (IPv6 in brackets, the wildcard as 0.0.0.0 or [::])."""
    if not addr or addr == b"::" or addr == bytes(16):
        host = "0.0.0.0" if family == 4 and not addr else "[::]"
    elif len(addr) == 16:
        host = f"[{_ip_text(addr)}]"
    else:
        host = _ip_text(addr)
    return f"{host}:{port}"


def _ss_line(state: str, recv_q: int, send_q: int, local: str, peer: str) -> str:
    return f"{state:<11}{recv_q:>7} {send_q:>7} {local:<42}{peer}"


def _link_flags(iface: Interface) -> str:
    flags = ["LOOPBACK"] if iface.loopback else ["BROADCAST", "MULTICAST"]
    if iface.up:
        flags.append("UP")
    return ",".join(flags)


def _interface(stack: Stack, name: str) -> Interface:
    """The interface called (or numbered) ``name``: EINVAL when missing, ENODEV when unknown."""
    if not name:
        raise CommandError(errno.EINVAL)
    try:
        return stack.interface(name)
    except OSError:
        raise CommandError(errno.ENODEV, f"no interface {name!r}") from None


# -- general ------------------------------------------------------------------------------
def help_(managed: ManagedStack, args: str) -> list[str]:
    return managed.table.help_lines(args.strip())


def logout(managed: ManagedStack, args: str) -> None:
    return None  # the console ends the session


def shutdown(managed: ManagedStack, args: str) -> None:
    if managed.on_shutdown is None:
        raise CommandError(errno.EOPNOTSUPP)
    managed.on_shutdown()


def showinfo(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    tcp = stack.tcp
    lines = [f"threadnet stack {stack.name}", f"hostname {stack.gethostname()}",
             f"pid {os.getpid()} uptime {int(time.monotonic() - managed.started)}"]
    if managed.published_path:
        lines.append(f"published {managed.published_path}")
    if managed.console_path:
        lines.append(f"mgmt {managed.console_path} perm {managed.console_mode:04o}")
    ifaces = stack.interfaces.values()
    lines += [
        f"interfaces {len(stack.interfaces)} ({sum(1 for i in ifaces if i.up)} up)",
        f"addresses {' '.join(stack.addresses())}",
        f"routes {len(stack.routes4)} ipv4 {len(stack.routes6)} ipv6",
        f"tcp {len(tcp.conns)} connections {len(tcp.listeners)} listeners, "
        f"udp {len(stack.udp)} ports",
        f"rx {sum(i.rx_packets for i in ifaces)} packets {sum(i.rx_bytes for i in ifaces)} "
        f"bytes, tx {sum(i.tx_packets for i in ifaces)} packets "
        f"{sum(i.tx_bytes for i in ifaces)} bytes",
    ]
    return lines


def stats(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    lines = [f"{k} {v}" for k, v in sorted(stack.stats.items())]
    for iface in stack.interfaces.values():
        lines.append(f"{iface.name} rx_packets {iface.rx_packets} rx_bytes {iface.rx_bytes} "
                     f"rx_errors {iface.rx_errors} tx_packets {iface.tx_packets} "
                     f"tx_bytes {iface.tx_bytes} tx_dropped {iface.tx_dropped}")
    return lines


def config(managed: ManagedStack, args: str) -> None:
    if not args:
        raise CommandError(errno.EINVAL)
    managed.stack.configure(args)


def hostname(managed: ManagedStack, args: str) -> list[str]:
    if args:
        managed.stack.set_hostname(args)
    return [managed.stack.gethostname()]


def ip(managed: ManagedStack, args: str) -> list[str]:
    """iproute2's ``ip`` (``stack/ipcommand.py``): what it prints, or its errno."""
    try:
        cmd = ipcommand.parse(args)
        data = ipcommand.execute(managed.stack, cmd, managed.stack._api_now(None))
    except ipcommand.IpError as exc:
        raise CommandError(exc.errno, exc.message) from None
    return ipcommand.output(cmd, data).splitlines()


# -- link ---------------------------------------------------------------------------------
def link_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    chosen = [_interface(stack, args)] if args else list(stack.interfaces.values())
    lines = []
    for iface in chosen:
        lines.append(f"{iface.index}: {iface.name}: <{_link_flags(iface)}> mtu {iface.mtu} "
                     f"state {'UP' if iface.up else 'DOWN'}")
        kind = "loopback" if iface.loopback else "ether"
        link = stack.links.get(iface.index)
        url = "" if link is None else f" url {getattr(link, 'url', '?')}"
        lines.append(f"    link/{kind} {mac_to_str(iface.mac)}{url}")
    return lines


def link_set(managed: ManagedStack, args: str) -> None:
    stack = managed.stack
    words = args.split()
    if len(words) < 2:
        raise CommandError(errno.EINVAL)
    iface = _interface(stack, words[0])
    # check every word first, then apply: a bad word changes nothing
    changes: list[tuple[str, object]] = []
    rest = words[1:]
    while rest:
        word = rest.pop(0)
        if word in ("up", "down"):
            changes.append((word, None))
        elif word in ("mtu", "mac", "address") and rest:
            value = rest.pop(0)
            if word == "mtu":
                mtu = parse_int(value, "mtu")
                try:  # 68..65535 and what the link carries, refused before any word applies
                    check_mtu(stack.links.get(iface.index), mtu, iface.name)
                except ValueError as exc:
                    raise CommandError(errno.EINVAL, str(exc)) from None
                changes.append(("mtu", mtu))
            else:
                try:
                    mac = mac_from_str(value)
                except ValueError:
                    raise CommandError(errno.EINVAL, f"bad MAC {value!r}") from None
                if iface.loopback or mac[0] & 1:
                    raise CommandError(errno.EINVAL, "not a unicast MAC for an Ethernet")
                changes.append(("mac", mac))
        else:
            raise CommandError(errno.EINVAL, f"link/set: bad word {word!r}")
    for what, value in changes:
        if what == "up":
            stack.link_up(iface.index)
        elif what == "down":
            stack.link_down(iface.index)
        elif what == "mtu":
            stack.set_mtu(iface.index, value)  # type: ignore[arg-type]
        else:
            stack.set_mac(iface.index, value)  # type: ignore[arg-type]


# -- addr ---------------------------------------------------------------------------------
def addr_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    if not args:
        return stack.describe()
    name = _interface(stack, args).name
    lines, keep = [], False
    for line in stack.describe():
        if not line.startswith(" "):  # an interface's first line: "N: NAME: ..."
            keep = line.split(":", 2)[1].strip() == name
        if keep:
            lines.append(line)
    return lines


def _index_and_cidr(stack: Stack, args: str) -> tuple[int, str]:
    name, cidr = split_args(args, 2)
    iface = _interface(stack, name)
    try:
        ipaddress.ip_interface(cidr)
    except ValueError:
        raise CommandError(errno.EINVAL, f"bad address {cidr!r}") from None
    return iface.index, cidr


def addr_add(managed: ManagedStack, args: str) -> None:
    managed.stack.addr_add(*_index_and_cidr(managed.stack, args))


def addr_del(managed: ManagedStack, args: str) -> None:
    managed.stack.addr_del(*_index_and_cidr(managed.stack, args))


# -- route --------------------------------------------------------------------------------
def route_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    if args and args not in ("-4", "-6", "4", "6"):
        raise CommandError(errno.EINVAL)
    lines = []
    for family, routes in ((4, stack.routes4), (6, stack.routes6)):
        if args and args.lstrip("-") != str(family):
            continue
        for route in routes:
            dev = stack.interfaces.get(route.ifindex)
            line = str(route).replace("{dev}", dev.name if dev else str(route.ifindex))
            lines.append(line if args else f"ipv{family} {line}")
    return lines


def _route_words(args: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """DST and its ``KEY VALUE`` options (each of ``allowed`` at most once)."""
    words = args.split()
    if not words or len(words) % 2 == 0:
        raise CommandError(errno.EINVAL)
    opts: dict[str, str] = {}
    for key, value in zip(words[1::2], words[2::2], strict=True):
        if key not in allowed or key in opts:
            raise CommandError(errno.EINVAL, f"bad word {key!r}")
        opts[key] = value
    return words[0], opts


def route_add(managed: ManagedStack, args: str) -> None:
    stack = managed.stack
    dst, opts = _route_words(args, ("via", "dev", "metric"))
    dev = _interface(stack, opts["dev"]).index if "dev" in opts else None
    metric = parse_int(opts["metric"], "metric", 0, 2**32 - 1) if "metric" in opts else 0
    stack.route_add(dst, opts.get("via"), dev, metric)


def route_del(managed: ManagedStack, args: str) -> None:
    dst, opts = _route_words(args, ("via",))
    managed.stack.route_del(dst, opts.get("via"))


# -- neighbors ----------------------------------------------------------------------------
def neigh_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    chosen = [_interface(stack, args)] if args else list(stack.interfaces.values())
    lines = []
    for iface in chosen:
        for cache in (iface.arp, iface.nd):
            for addr, entry in cache.entries.items():
                mac = f" lladdr {mac_to_str(entry.mac)}" if entry.mac is not None else ""
                state = "PERMANENT" if entry.static else entry.state
                lines.append(f"{_ip_text(addr)} dev {iface.name}{mac} {state}")
    return lines


# -- sockets ------------------------------------------------------------------------------
def tcp_print(managed: ManagedStack, args: str) -> list[str]:
    tcp = managed.stack.tcp
    lines = [_SS_HEADER]
    for listener in sorted(tcp.listeners.values(), key=lambda ls: (ls.port, ls.family)):
        lines.append(_ss_line("LISTEN", len(listener.ready), listener.backlog,
                              _ss_address(listener.addr, listener.port, listener.family), "*:*"))
    for endpoint in sorted(tcp.conns.values(), key=lambda ep: (ep.local[1], ep.remote[1])):
        conn = endpoint.conn
        state = str(conn.state)
        lines.append(_ss_line(_SS_STATE_NAMES.get(state, state), conn.recv_queued, conn.send_queued,
                              _ss_address(endpoint.local[0], endpoint.local[1], endpoint.family),
                              _ss_address(endpoint.remote[0], endpoint.remote[1], endpoint.family)))
    return lines


def udp_print(managed: ManagedStack, args: str) -> list[str]:
    lines = [_SS_HEADER]
    for addr, port in sorted(managed.stack.udp, key=lambda k: (k[1], k[0])):
        local = f"*:{port}" if not addr else _ss_address(addr, port, 4 if len(addr) == 4 else 6)
        lines.append(_ss_line("UNCONN", 0, 0, local, "*:*"))
    return lines


# -- names --------------------------------------------------------------------------------
def dns_print(managed: ManagedStack, args: str) -> list[str]:
    return managed.stack.resolv_conf().splitlines()


def dns_set(managed: ManagedStack, args: str) -> None:
    if not args:
        raise CommandError(errno.EINVAL)
    managed.stack.resolv_conf(args.replace("\\n", "\n"))


# -- router discovery and advertisements -------------------------------------------------
def _lft(seconds: float | None) -> str:
    """iproute2's way with a lifetime: whole seconds, or forever."""
    return "forever" if seconds is None else f"{int(seconds)}sec"


def _agents_of(stack: Stack, kind: str, args: str) -> list:
    ifindex = _interface(stack, args).index if args else None
    return stack.find_agents(kind, ifindex)


def rd_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    now = stack._api_now(None)
    lines = []
    for agent in _agents_of(stack, "rd", args):
        d = agent.describe(now)
        modes = " slaac" * d["slaac"] + " temporary" * d["temporary"]
        lines.append(f"{stack.interfaces[d['ifindex']].name}: rd{modes} managed "
                     f"{int(d['managed'])} other {int(d['other'])} hoplimit {d['hop_limit']}"
                     f" mtu {d['mtu'] or '-'} solicitations {d['solicitations']}")
        lines += [f"    router {r['address']} lifetime {_lft(r['lifetime'])} pref "
                  f"{r['preference']}" for r in d["routers"]]
        for p in d["prefixes"]:
            words = [f"    prefix {p['prefix']}"]
            if p["onlink"]:
                words.append(f"onlink {_lft(p['onlink_lifetime'])}")
            if p["autonomous"]:
                words.append(f"autonomous valid_lft {_lft(p['valid_lft'])} preferred_lft "
                             f"{_lft(p['preferred_lft'])}")
            lines.append(" ".join(words))
        lines += [f"    address {a['address']} {a['kind']} valid_lft {_lft(a['valid_lft'])} "
                  f"preferred_lft {_lft(a['preferred_lft'])}" + " dadfailed" * a["dadfailed"]
                  for a in d["addresses"]]
        lines += [f"    route {r['dst']} via {r['via']} lifetime {_lft(r['lifetime'])} pref "
                  f"{r['preference']}" for r in d["routes"]]
        lines += [f"    dns {x['server']} lifetime {_lft(x['lifetime'])}" for x in d["dns"]]
        lines += [f"    search {x['domain']} lifetime {_lft(x['lifetime'])}"
                  for x in d["search"]]
        lines += _counters(d["counters"])
    return lines


def _counters(counters: dict[str, int]) -> list[str]:
    """An agent's counters as one ``counters NAME N ...`` line (none when all are 0)."""
    if not counters:
        return []
    return ["    counters " + " ".join(f"{k} {v}" for k, v in sorted(counters.items()))]


def ra_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    now = stack._api_now(None)
    lines = []
    for agent in _agents_of(stack, "ra", args):
        d = agent.describe(now)
        iface = stack.interfaces[d["ifindex"]]
        nxt = "-" if d["next_ra"] is None else f"{d['next_ra']:.0f}sec"
        lines.append(f"{iface.name}: ra lifetime {d['router_lifetime']} pref {d['preference']} "
                     f"interval {d['min_interval']:g}-{d['interval']:g} next {nxt} managed "
                     f"{int(d['managed'])} other {int(d['other'])} hoplimit {d['hop_limit']} "
                     f"mtu {d['mtu'] or '-'} forwarding {'on' if stack.forwarding else 'off'}")
        for p in agent.advertised_prefixes(iface):
            flags = " onlink" * p.on_link + " autonomous" * p.autonomous
            lines.append(f"    prefix {ipaddress.ip_address(p.prefix)}/{p.plen}{flags} valid "
                         f"{p.valid} preferred {p.preferred}")
        lines += [f"    rdnss {a} lifetime {d['dns_lifetime']}" for a in d["rdnss"]]
        lines += [f"    dnssl {n} lifetime {d['dns_lifetime']}" for n in d["dnssl"]]
        lines += _counters(d["counters"])
    return lines


# -- DHCPv6 -------------------------------------------------------------------------------
def _dns_line(info: dict) -> list[str]:
    """A DHCPv6 client's or server's DNS servers and domains as one line (none if neither)."""
    if not info["dns"] and not info["domains"]:
        return []
    return [f"    dns {' '.join(info['dns']) or '-'} domains {' '.join(info['domains']) or '-'}"]


def dhcp6_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    now = stack._api_now(None)
    lines = []
    for agent in _agents_of(stack, "dhcp6", args):
        info = agent.describe(now)
        name = stack.interfaces[agent.ifindex].name
        server = f" server {info['server']}" if info["server"] else ""
        lines.append(f"{name}: dhcp6 {info['state']}{server} iaid {info['iaid']} "
                     f"duid {info['duid']}")
        if info["addresses"]:
            lines.append(f"    t1 {_lft(info['renew_in'])} t2 {_lft(info['rebind_in'])}")
        lines += [f"    inet6 {a['address']}/128 valid_lft {_lft(a['valid_lft'])} "
                  f"preferred_lft {_lft(a['preferred_lft'])}" for a in info["addresses"]]
        lines += _dns_line(info)
    return lines


def dhcpd6_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    now = stack._api_now(None)
    lines = []
    for agent in _agents_of(stack, "dhcpd6", args):
        info = agent.describe(now)
        name = stack.interfaces[agent.ifindex].name
        lines.append(f"{name}: dhcpd6 pool {info['pool']} lease {info['lease']} preferred "
                     f"{info['preferred']} leases {len(info['leases'])}/{info['max']} "
                     f"duid {info['duid']}")
        lines += _dns_line(info)
        if info["leasefile"]:
            problem = f" ({info['leasefile_error']})" if info["leasefile_error"] else ""
            lines.append(f"    leasefile {info['leasefile']}{problem}")
        lines += [f"    {x['address']} {x['state']} duid {x['duid']} iaid {x['iaid']} "
                  f"valid_lft {_lft(x['valid_lft'])}" for x in info["leases"]]
    return lines


def dhcpd6_start(managed: ManagedStack, args: str) -> None:
    words = args.split()
    if not words:
        raise CommandError(errno.EINVAL)
    iface = _interface(managed.stack, words[0])
    items = [f"iface={iface.name}"]
    for word in words[1:]:
        if "," in word:
            raise CommandError(errno.EINVAL, f"dhcpd6/start: bad word {word!r}")
        if "=" in word or not any(c in word for c in ":-"):
            items.append(f"dhcpd6.{word}")  # OPTION=VALUE, or a flag (rapid)
        else:
            items.append(f"dhcpd6={word}")
    if len(items) == 1:
        items.append("dhcpd6")
    managed.stack.configure(",".join(items))


def dhcpd6_stop(managed: ManagedStack, args: str) -> None:
    iface = _interface(managed.stack, args)
    if not managed.stack.find_agents("dhcpd6", iface.index):
        raise CommandError(errno.ESRCH, f"no DHCPv6 server on {iface.name}")
    managed.stack.configure(f"iface={iface.name},-dhcpd6")


def dhcpd6_forget(managed: ManagedStack, args: str) -> None:
    name, address = split_args(args, 2)
    stack = managed.stack
    agents = _agents_of(stack, "dhcpd6", name)
    if not agents:
        raise CommandError(errno.ESRCH, f"no DHCPv6 server on {name}")
    if not agents[0].forget(address, stack._api_now(None)):
        raise CommandError(errno.EADDRNOTAVAIL, f"no lease of {address}")


# -- DHCPv4 (stack/dhcp4client.py, stack/dhcp4server.py) -----------------------------------
def _in(seconds: float | None) -> str:
    return "never" if seconds is None else f"{max(0, int(seconds))}s"


def dhcp_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    now = stack._api_now(None)  # the time the stack's agents count in
    lines = []
    for agent in _agents_of(stack, "dhcp4", args):
        d = agent.describe()
        name = stack.interfaces[agent.ifindex].name
        line = f"{name}: {d['state']}"
        if d["address"] is not None:
            line += (f" {d['address']} server {d['server']} router {d['router'] or '-'} "
                     f"lease {_in(d['lease'])}")
            for key, word in (("t1", "renew"), ("t2", "rebind"), ("expires", "expires")):
                if d[key] is not None:
                    line += f" {word} in {_in(d[key] - now)}"
        elif d["next"] is not None:
            line += f" next in {_in(d['next'] - now)}"
        lines.append(line)
    return lines


def dhcpd_print(managed: ManagedStack, args: str) -> list[str]:
    stack = managed.stack
    now = stack._api_now(None)  # the time the stack's agents count in
    lines = []
    for server in _agents_of(stack, "dhcpd", args):
        d = server.describe()
        name = stack.interfaces[server.ifindex].name

        def words(v: list[str] | None, default: str) -> str:
            return default if v is None else (" ".join(v) or "none")

        lines.append(f"{name}: {d['address']} pool {d['pool']} lease {_in(d['lease'])} "
                     f"router {words(d['routers'], 'own')} dns {words(d['dns'], 'stack')} "
                     f"domain {d['domain'] or '-'} mtu {d['mtu'] or '-'}")
        lines += [f"  host {mac} {addr}" for mac, addr in d["hosts"].items()]
        if d["leases_file"]:
            lines.append(f"  leases {d['leases_file']}")
        for row in server.table(now):  # type: ignore[attr-defined]
            lines.append(f"  {row['address']} {row['mac']} {row['state']} "
                         f"{_in(row['remaining'])} {row['hostname'] or '*'}")
    return lines


def dhcpd_start(managed: ManagedStack, args: str) -> None:
    words = args.split()
    if not words:
        raise CommandError(errno.EINVAL)
    iface = _interface(managed.stack, words[0])
    items = [f"iface={iface.name}", "dhcpd"]
    for word in words[1:]:
        name, eq, value = word.partition("=")
        if not eq:
            items[1] = f"dhcpd={word}"  # the pool
        elif not name or "," in value:
            raise CommandError(errno.EINVAL, f"dhcpd/start: bad word {word!r}")
        else:
            items.append(f"dhcpd.{name}={value}")
    managed.stack.configure(",".join(items))


def dhcpd_stop(managed: ManagedStack, args: str) -> None:
    iface = _interface(managed.stack, args)
    if not managed.stack.find_agents("dhcpd", iface.index):
        raise CommandError(errno.ESRCH, f"no DHCP server on {iface.name}")
    managed.stack.configure(f"iface={iface.name},-dhcpd")


def dhcpd_set(managed: ManagedStack, args: str) -> None:
    words = args.split()
    if len(words) < 3:
        raise CommandError(errno.EINVAL)
    iface = _interface(managed.stack, words[0])
    servers = managed.stack.find_agents("dhcpd", iface.index)
    if not servers:
        raise CommandError(errno.ESRCH, f"no DHCP server on {iface.name}")
    servers[0].set_option(managed.stack, words[1], words[2:])  # type: ignore[attr-defined]


#: the stack's commands, in help order
COMMANDS: tuple[Entry, ...] = (
    ("help", "[arg]", "Help (limited to arg when specified)", help_, OUTPUT | UNLOCKED),
    ("logout", "", "logout from this mgmt terminal", logout, UNLOCKED),
    ("shutdown", "", "stop the stack service (removes PATH)", shutdown, UNLOCKED),
    ("showinfo", "", "show the stack's name, host name, pid and counters", showinfo, OUTPUT),
    ("stats", "", "the stack's counters and each interface's", stats, OUTPUT),
    ("config", "CFG", 'apply a configuration string ("eth,ip=10.0.0.5/24,gw=...")', config, 0),
    ("hostname", "[NAME]", "show or set the host name", hostname, OUTPUT),
    ("ip", "[-4|-6] [-j] OBJECT CMD ...", "iproute2's ip: addr, link, route, neigh", ip,
     OUTPUT),
    ("link", "", "LINK MENU", None, 0),
    ("link/print", "[IFACE]", "interfaces: index, name, state, MTU, MAC, link URL",
     link_print, OUTPUT),
    ("link/set", "IFACE up|down|mtu N|mac M", "change an interface (words may repeat)",
     link_set, 0),
    ("addr", "", "ADDRESS MENU", None, 0),
    ("addr/print", "[IFACE]", "addresses of every interface (or one)", addr_print, OUTPUT),
    ("addr/add", "IFACE CIDR", "add an address (10.0.0.5/24, fc00::5/64)", addr_add, 0),
    ("addr/del", "IFACE CIDR", "remove an address", addr_del, 0),
    ("route", "", "ROUTE MENU", None, 0),
    ("route/print", "[-4|-6]", "the IPv4 and IPv6 routing tables", route_print, OUTPUT),
    ("route/add", "DST [via GW] [dev IFACE] [metric N]",
     "add a route (DST: default or a network)", route_add, 0),
    ("route/del", "DST [via GW]", "remove a route", route_del, 0),
    ("neigh", "", "NEIGHBOR MENU", None, 0),
    ("neigh/print", "[IFACE]", "the ARP and NDP caches", neigh_print, OUTPUT),
    ("tcp", "", "TCP MENU", None, 0),
    ("tcp/print", "", "TCP connections and listeners (like ss -tan)", tcp_print, OUTPUT),
    ("udp", "", "UDP MENU", None, 0),
    ("udp/print", "", "bound UDP ports (like ss -uan)", udp_print, OUTPUT),
    ("dns", "", "NAME RESOLUTION MENU", None, 0),
    ("dns/print", "", "the DNS settings, as resolv.conf", dns_print, OUTPUT),
    ("dns/set", "TEXT", r"resolv.conf text (lines split by \n) or ADDR,ADDR", dns_set, 0),
    ("rd", "", "ROUTER DISCOVERY MENU", None, 0),
    ("rd/print", "[IFACE]", "routers, prefixes, SLAAC addresses and DNS from advertisements",
     rd_print, OUTPUT),
    ("ra", "", "ROUTER ADVERTISEMENT SERVER MENU", None, 0),
    ("ra/print", "[IFACE]", "what the RA server advertises (start it: config ra=PREFIX/LEN)",
     ra_print, OUTPUT),
    ("dhcp6", "", "DHCPV6 CLIENT MENU", None, 0),
    ("dhcp6/print", "[IFACE]", "DHCPv6 clients: state, server, addresses, T1/T2, DNS",
     dhcp6_print, OUTPUT),
    ("dhcpd6", "", "DHCPV6 SERVER MENU", None, 0),
    ("dhcpd6/print", "[IFACE]", "DHCPv6 servers and their leases", dhcpd6_print, OUTPUT),
    ("dhcpd6/start", "IFACE [FIRST-LAST] [OPT=VAL...]",
     "start or restart a DHCPv6 server (options: the dhcpd6.OPT items)", dhcpd6_start, 0),
    ("dhcpd6/stop", "IFACE", "stop the DHCPv6 server of an interface", dhcpd6_stop, 0),
    ("dhcpd6/forget", "IFACE ADDRESS", "drop a DHCPv6 lease", dhcpd6_forget, 0),
    ("dhcp", "", "DHCPv4 CLIENT MENU", None, 0),
    ("dhcp/print", "[IFACE]", "DHCPv4 clients: state, address, server, lease times",
     dhcp_print, OUTPUT),
    ("dhcpd", "", "DHCPv4 SERVER MENU", None, 0),
    ("dhcpd/print", "[IFACE]", "DHCPv4 servers: options and leases", dhcpd_print, OUTPUT),
    ("dhcpd/start", "IFACE [FIRST-LAST] [OPTION=VALUE...]",
     "start (or restart) a DHCPv4 server (options: lease router dns domain mtu host leases)",
     dhcpd_start, 0),
    ("dhcpd/stop", "IFACE", "stop the DHCPv4 server of an interface", dhcpd_stop, 0),
    ("dhcpd/set", "IFACE OPTION VALUE...",
     "change a running server: pool lease router dns domain mtu host", dhcpd_set, 0),
) + FILTER_COMMANDS  # filter/..., ct/... (stack/filtercommands.py)


def _under_lock(managed: ManagedStack, handler: Handler, flags: int) -> Handler:
    """``handler`` run under the stack's lock, the stack API's exceptions turned into
    CommandError (bad input gets an errno, never ends the service); UNLOCKED ones as
    they are."""
    if flags & UNLOCKED:
        return handler

    def run(args: str) -> list[str] | None:
        try:
            with managed.stack.locked():
                return handler(args)
        except Exception as exc:
            raise _command_error(exc) from None

    return run


def build_table(stack: Stack, *, path: str | None = None, mgmt: str | None = None,
                mgmtmode: int = 0o600, on_shutdown: Callable[[], None] | None = None
                ) -> CommandTable:
    """The command table of ``stack`` (published at ``path``, console at ``mgmt``)."""
    managed = ManagedStack(stack, published_path=path, console_path=mgmt,
                           console_mode=mgmtmode, on_shutdown=on_shutdown)
    managed.table = table_from_entries(COMMANDS, managed,
                                       wrap=functools.partial(_under_lock, managed))
    return managed.table


class StackConsole:
    """A stack's console socket, served on its own event loop thread.

        >>> con = StackConsole(stack, "/tmp/st.mgmt", on_shutdown=stop_event.set)
        >>> ...  # threadnet console /tmp/st.mgmt route/print
        >>> con.close()
    """

    def __init__(self, stack: Stack, mgmt: str, *, mode: int = 0o600, group: str | None = None,
                 path: str | None = None, on_shutdown: Callable[[], None] | None = None) -> None:
        self.path = os.path.abspath(mgmt)
        self.loop = EventLoop()
        self.loop.on_error = lambda exc: traceback.print_exception(exc, file=sys.stderr)
        self.table = build_table(stack, path=path, mgmt=self.path, mgmtmode=mode,
                                 on_shutdown=on_shutdown)
        banner = f"threadnet stack {stack.name}\n(C) threadnet - the Internet of Threads in Python\n"
        try:
            self.server = ConsoleServer(self.loop, self.path, self.table, banner, PROMPT,
                                        mode=mode, group=group, on_shutdown=on_shutdown)
        except BaseException:
            self.loop.close()
            raise
        self._thread = threading.Thread(target=self.loop.run, name=f"console {self.path}",
                                        daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and remove the socket file."""
        done = threading.Event()

        def stop() -> None:
            self.server.close()
            self.loop.stop()
            done.set()

        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(stop)
            done.wait(5)
            self._thread.join(5)
        else:
            self.server.close()
        self.loop.close()
