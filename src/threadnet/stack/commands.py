"""A running stack's management commands (iproute2-flavoured), and the console that serves them.

``threadnet stack PATH ... -M MGMT`` serves this table on a vde_switch-style console socket
(mgmt/console.py), so ``threadnet console MGMT CMD`` and Debian's ``unixterm MGMT`` work on
it as they do on a switch. Every handler runs under ``stack.locked()``; the console has its
own event loop and thread, so a slow console client never stalls the stack's driver.

Errors are CommandError with the errno iproute2 would report: ENODEV for an unknown
interface, EINVAL for bad syntax, EEXIST for an address or route that is already there,
EADDRNOTAVAIL for an address that is not, ESRCH for a route that is not.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING

from threadnet.loop import EventLoop
from threadnet.mgmt.commands import CommandError, CommandTable, parse_int, split_args
from threadnet.mgmt.console import ConsoleServer
from threadnet.wire.ethernet import mac_from_str, mac_to_str

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

PROMPT = "\nstack$ "

#: ``ss``'s names for the TCP states
_SS_STATE = {"ESTABLISHED": "ESTAB", "SYN-RECEIVED": "SYN-RECV"}


def _fail(exc: BaseException) -> CommandError:
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


def _ip(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))


def _sockaddr(addr: bytes, port: int, family: int) -> str:
    """``ss``'s address:port (IPv6 in brackets, the wildcard as 0.0.0.0 or [::])."""
    if not addr or addr == b"::" or addr == bytes(16):
        host = "0.0.0.0" if family == 4 and not addr else "[::]"
    elif len(addr) == 16:
        host = f"[{_ip(addr)}]"
    else:
        host = _ip(addr)
    return f"{host}:{port}"


def _flags(iface: Interface) -> str:
    flags = ["LOOPBACK"] if iface.loopback else ["BROADCAST", "MULTICAST"]
    if iface.up:
        flags.append("UP")
    return ",".join(flags)


def build_table(stack: Stack, *, path: str | None = None, mgmt: str | None = None,
                mgmtmode: int = 0o600, on_shutdown: Callable[[], None] | None = None
                ) -> CommandTable:
    """The command table of ``stack`` (published at ``path``, console at ``mgmt``)."""
    t = CommandTable()
    started = time.monotonic()

    def add(cmd: str, syntax: str, help: str, fn: Callable[[str], list[str] | None], *,
            output: bool = False) -> None:
        def run(args: str) -> list[str] | None:
            try:
                with stack.locked():
                    return fn(args)
            except Exception as exc:  # bad input gets an errno, never ends the service
                raise _fail(exc) from None

        t.add(cmd, syntax, help, run, output=output)

    def iface_of(name: str) -> Interface:
        if not name:
            raise CommandError(errno.EINVAL)
        try:
            return stack.interface(name)
        except OSError:
            raise CommandError(errno.ENODEV, f"no interface {name!r}") from None

    # -- general ---------------------------------------------------------------------
    t.add("help", "[arg]", "Help (limited to arg when specified)",
          lambda a: t.help_lines(a.strip()), output=True)
    t.add("logout", "", "logout from this mgmt terminal", lambda a: None)

    def shutdown(args: str) -> None:
        if on_shutdown is None:
            raise CommandError(errno.EOPNOTSUPP)
        on_shutdown()

    t.add("shutdown", "", "stop the stack service (removes PATH)", shutdown)

    def showinfo(args: str) -> list[str]:
        tcp = stack.tcp
        lines = [f"threadnet stack {stack.name}", f"hostname {stack.gethostname()}",
                 f"pid {os.getpid()} uptime {int(time.monotonic() - started)}"]
        if path:
            lines.append(f"published {path}")
        if mgmt:
            lines.append(f"mgmt {mgmt} perm {mgmtmode:04o}")
        ifaces = stack.interfaces.values()
        lines += [
            f"interfaces {len(stack.interfaces)} "
            f"({sum(1 for i in ifaces if i.up)} up)",
            f"addresses {' '.join(stack.addresses())}",
            f"routes {len(stack.routes4)} ipv4 {len(stack.routes6)} ipv6",
            f"tcp {len(tcp.conns)} connections {len(tcp.listeners)} listeners, "
            f"udp {len(stack.udp)} ports",
            f"rx {sum(i.rx_packets for i in ifaces)} packets "
            f"{sum(i.rx_bytes for i in ifaces)} bytes, "
            f"tx {sum(i.tx_packets for i in ifaces)} packets "
            f"{sum(i.tx_bytes for i in ifaces)} bytes",
        ]
        return lines

    add("showinfo", "", "show the stack's name, host name, pid and counters", showinfo,
        output=True)

    def stats(args: str) -> list[str]:
        lines = [f"{k} {v}" for k, v in sorted(stack.stats.items())]
        for i in stack.interfaces.values():
            lines.append(f"{i.name} rx_packets {i.rx_packets} rx_bytes {i.rx_bytes} "
                         f"rx_errors {i.rx_errors} tx_packets {i.tx_packets} "
                         f"tx_bytes {i.tx_bytes} tx_dropped {i.tx_dropped}")
        return lines

    add("stats", "", "the stack's counters and each interface's", stats, output=True)

    def config(args: str) -> None:
        if not args:
            raise CommandError(errno.EINVAL)
        stack.configure(args)

    add("config", "CFG", 'apply a configuration string ("eth,ip=10.0.0.5/24,gw=...")', config)

    def hostname(args: str) -> list[str]:
        if args:
            stack.set_hostname(args)
        return [stack.gethostname()]

    add("hostname", "[NAME]", "show or set the host name", hostname, output=True)

    # -- link --------------------------------------------------------------------------
    t.menu("link", "LINK MENU")

    def link_print(args: str) -> list[str]:
        chosen = [iface_of(args)] if args else list(stack.interfaces.values())
        lines = []
        for i in chosen:
            lines.append(f"{i.index}: {i.name}: <{_flags(i)}> mtu {i.mtu} "
                         f"state {'UP' if i.up else 'DOWN'}")
            kind = "loopback" if i.loopback else "ether"
            url = "" if i.link is None else f" url {getattr(i.link, 'url', '?')}"
            lines.append(f"    link/{kind} {mac_to_str(i.mac)}{url}")
        return lines

    add("link/print", "[IFACE]", "interfaces: index, name, state, MTU, MAC, link URL",
        link_print, output=True)

    def link_set(args: str) -> None:
        words = args.split()
        if len(words) < 2:
            raise CommandError(errno.EINVAL)
        iface = iface_of(words[0])
        # check every word first, then apply: a bad word changes nothing
        todo: list[tuple[str, object]] = []
        rest = words[1:]
        while rest:
            word = rest.pop(0)
            if word in ("up", "down"):
                todo.append((word, None))
            elif word in ("mtu", "mac", "address") and rest:
                value = rest.pop(0)
                if word == "mtu":
                    mtu = parse_int(value, "mtu", 68, 65535)
                    top = None if iface.link is None else iface.link.max_mtu
                    if top is not None and mtu > top:  # refused before any word is applied
                        raise CommandError(errno.EINVAL, f"MTU {mtu}: {iface.name}'s link "
                                           f"carries at most MTU {top}")
                    todo.append(("mtu", mtu))
                else:
                    try:
                        mac = mac_from_str(value)
                    except ValueError:
                        raise CommandError(errno.EINVAL, f"bad MAC {value!r}") from None
                    if iface.loopback or mac[0] & 1:
                        raise CommandError(errno.EINVAL, "not a unicast MAC for an Ethernet")
                    todo.append(("mac", mac))
            else:
                raise CommandError(errno.EINVAL, f"link/set: bad word {word!r}")
        for what, value in todo:
            if what == "up":
                stack.link_up(iface.index)
            elif what == "down":
                stack.link_down(iface.index)
            elif what == "mtu":
                stack.set_mtu(iface.index, value)  # type: ignore[arg-type]
            else:
                stack.set_mac(iface.index, value)  # type: ignore[arg-type]

    add("link/set", "IFACE up|down|mtu N|mac M", "change an interface (words may repeat)",
        link_set)

    # -- addr --------------------------------------------------------------------------
    t.menu("addr", "ADDRESS MENU")

    def addr_print(args: str) -> list[str]:
        if args:
            iface_of(args)
            lines, keep = [], False
            for line in stack.describe():
                if not line.startswith(" "):
                    keep = line.split(":", 2)[1].strip() == stack.interface(args).name
                if keep:
                    lines.append(line)
            return lines
        return stack.describe()

    add("addr/print", "[IFACE]", "addresses of every interface (or one)", addr_print,
        output=True)

    def addr_change(fn: Callable[[int, str], None]) -> Callable[[str], None]:
        def run(args: str) -> None:
            name, cidr = split_args(args, 2)
            iface = iface_of(name)
            try:
                ipaddress.ip_interface(cidr)
            except ValueError:
                raise CommandError(errno.EINVAL, f"bad address {cidr!r}") from None
            fn(iface.index, cidr)
        return run

    add("addr/add", "IFACE CIDR", "add an address (10.0.0.5/24, fc00::5/64)",
        addr_change(stack.addr_add))
    add("addr/del", "IFACE CIDR", "remove an address", addr_change(stack.addr_del))

    # -- route -------------------------------------------------------------------------
    t.menu("route", "ROUTE MENU")

    def route_print(args: str) -> list[str]:
        lines = []
        for family, table in ((4, stack.routes4), (6, stack.routes6)):
            if args and args not in ("-4", "-6", "4", "6"):
                raise CommandError(errno.EINVAL)
            if args and args.lstrip("-") != str(family):
                continue
            for r in table:
                dev = stack.interfaces.get(r.ifindex)
                line = str(r).replace("{dev}", dev.name if dev else str(r.ifindex))
                lines.append(line if args else f"ipv{family} {line}")
        return lines

    add("route/print", "[-4|-6]", "the IPv4 and IPv6 routing tables", route_print, output=True)

    def route_words(args: str, allowed: tuple[str, ...]) -> tuple[str, dict[str, str]]:
        words = args.split()
        if not words or len(words) % 2 == 0:
            raise CommandError(errno.EINVAL)
        opts: dict[str, str] = {}
        for key, value in zip(words[1::2], words[2::2], strict=True):
            if key not in allowed or key in opts:
                raise CommandError(errno.EINVAL, f"bad word {key!r}")
            opts[key] = value
        return words[0], opts

    def route_add(args: str) -> None:
        dst, opts = route_words(args, ("via", "dev", "metric"))
        dev = iface_of(opts["dev"]).index if "dev" in opts else None
        metric = parse_int(opts["metric"], "metric", 0, 2**32 - 1) if "metric" in opts else 0
        stack.route_add(dst, opts.get("via"), dev, metric)

    add("route/add", "DST [via GW] [dev IFACE] [metric N]",
        "add a route (DST: default or a network)", route_add)

    def route_del(args: str) -> None:
        dst, opts = route_words(args, ("via",))
        stack.route_del(dst, opts.get("via"))

    add("route/del", "DST [via GW]", "remove a route", route_del)

    # -- neighbors ---------------------------------------------------------------------
    t.menu("neigh", "NEIGHBOR MENU")

    def neigh_print(args: str) -> list[str]:
        chosen = [iface_of(args)] if args else list(stack.interfaces.values())
        lines = []
        for i in chosen:
            for cache in (i.arp, i.nd):
                for addr, e in cache.entries.items():
                    mac = f" lladdr {mac_to_str(e.mac)}" if e.mac is not None else ""
                    state = "PERMANENT" if e.static else e.state
                    lines.append(f"{_ip(addr)} dev {i.name}{mac} {state}")
        return lines

    add("neigh/print", "[IFACE]", "the ARP and NDP caches", neigh_print, output=True)

    # -- sockets -----------------------------------------------------------------------
    t.menu("tcp", "TCP MENU")
    header = f"{'State':<11}{'Recv-Q':>7} {'Send-Q':>7} {'Local Address:Port':<42}Peer Address:Port"

    def sock_line(state: str, rq: int, sq: int, local: str, peer: str) -> str:
        return f"{state:<11}{rq:>7} {sq:>7} {local:<42}{peer}"

    def tcp_print(args: str) -> list[str]:
        tcp = stack.tcp
        lines = [header]
        for ls in sorted(tcp.listeners.values(), key=lambda x: (x.port, x.family)):
            lines.append(sock_line("LISTEN", len(ls.ready), ls.backlog,
                                   _sockaddr(ls.addr, ls.port, ls.family), "*:*"))
        for ep in sorted(tcp.conns.values(), key=lambda e: (e.local[1], e.remote[1])):
            c = ep.conn
            state = str(c.state)
            lines.append(sock_line(_SS_STATE.get(state, state), c.recv_queued, c.send_queued,
                                   _sockaddr(ep.local[0], ep.local[1], ep.family),
                                   _sockaddr(ep.remote[0], ep.remote[1], ep.family)))
        return lines

    add("tcp/print", "", "TCP connections and listeners (like ss -tan)", tcp_print, output=True)

    t.menu("udp", "UDP MENU")

    def udp_print(args: str) -> list[str]:
        lines = [header]
        for addr, port in sorted(stack.udp, key=lambda k: (k[1], k[0])):
            local = f"*:{port}" if not addr else _sockaddr(addr, port, 4 if len(addr) == 4 else 6)
            lines.append(sock_line("UNCONN", 0, 0, local, "*:*"))
        return lines

    add("udp/print", "", "bound UDP ports (like ss -uan)", udp_print, output=True)

    # -- names -------------------------------------------------------------------------
    t.menu("dns", "NAME RESOLUTION MENU")
    add("dns/print", "", "the DNS settings, as resolv.conf",
        lambda a: stack.resolv_conf().splitlines(), output=True)

    def dns_set(args: str) -> None:
        if not args:
            raise CommandError(errno.EINVAL)
        stack.resolv_conf(args.replace("\\n", "\n"))

    add("dns/set", "TEXT", r"resolv.conf text (lines split by \n) or ADDR,ADDR", dns_set)
    return t


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
