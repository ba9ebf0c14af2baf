"""The Stack: interfaces on links, ARP/NDP, IPv4/IPv6 with fragmentation, ICMP, UDP.

A Stack is a plain object (thousands can live in one process). Its protocol logic is
sans-IO at the edges: ``input(iface, frame, now)`` takes a frame that arrived,
``on_timer(now)`` runs what is due and ``next_deadline()`` says when to call it again.
Frames go out through each interface's link. A ``Driver`` (``stack/driver.py``) runs
one event loop per process that feeds every stack its frames and its time.

Not here yet (see the project's issues): DHCP, SLAAC from router advertisements, NAT, the filter.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import struct
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from threadnet.errors import FrameError, LinkError
from threadnet.link import Link
from threadnet.stack.acd import ARP_ANNOUNCE, ARP_PROBE, CONFLICT, DEFEND, Acd
from threadnet.stack.config import parse_config
from threadnet.stack.ip import (
    FORWARD,
    HOOK_POINTS,
    INPUT,
    OUTPUT,
    POSTROUTING,
    PREROUTING,
    Hook,
    Path,
    make_path,
    run_hooks,
)
from threadnet.stack.neighbor import INCOMPLETE, PROBE, REACHABLE, Neighbor, NeighborCache
from threadnet.stack.reassembly import Reassembler
from threadnet.stack.resolvconf import ResolverConfig
from threadnet.stack.route import Route, RoutingTable
from threadnet.stack.tcplayer import TcpLayer
from threadnet.wire import arp, icmp4, icmp6, ipv4, ipv6, tcp, udp, vnet
from threadnet.wire.ethernet import ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6, mac_to_str

BROADCAST_MAC = b"\xff" * 6
_ETYPE = struct.Struct("!H")
_ETH_IPV4 = _ETYPE.pack(ETH_P_IPV4)
_ETH_IPV6 = _ETYPE.pack(ETH_P_IPV6)
_ETH_ARP = _ETYPE.pack(ETH_P_ARP)
_FAST4 = ipv4.LEN_FRAG
_GRO = tcp.GRO4
_TS_HEAD = tcp.TS_HEAD
_LOOPBACK6 = bytes(15) + b"\x01"
LIMITED_BROADCAST = b"\xff\xff\xff\xff"
PMTU_EXPIRE = 600.0  # RFC 1191: forget a learned path MTU after 10 minutes (Linux's mtu_expires)
PMTU_MAX_ENTRIES = 4096  # learned path MTUs kept; the oldest goes first
#: Linux's net.ipv4.route.min_pmtu: a smaller advertised MTU sets this one, "locked": the
#: packets to that destination then go without DF, so routers may fragment them
MIN_PMTU4 = 552
DAD_DELAY = 1.0  # RFC 4861 RetransTimer: one NS, then the address is ours
MAX_LOCAL_QUEUE = 1024  # packets looped back to ourselves waiting to be processed
_ident = itertools.count(int.from_bytes(os.urandom(2), "big"))  # ping identifiers
#: IPv4 identification counters (as Linux's ip_idents): a keyed hash of source,
#: destination and protocol picks one of these and an offset, so each destination sees
#: its own sequence and nobody can count our traffic to others (no idle scans)
IP_ID_BUCKETS = 2048


@dataclass(slots=True)
class Address6:
    addr: bytes
    plen: int
    state: str = "tentative"  # tentative -> preferred, or dadfailed (RFC 4862 5.4.5)
    dad_deadline: float = 0.0


class Interface:
    """One network interface of a stack: a link (or loopback), MAC, MTU, addresses."""

    def __init__(self, index: int, name: str, link: Link | None, mac: bytes, mtu: int) -> None:
        self.index = index
        self.name = name
        self.link = link
        self.mac = mac
        self.mtu = mtu
        self.up = False
        self.v4: list[tuple[bytes, int]] = []
        self.v6: list[Address6] = []
        #: IPv4 addresses under conflict detection (RFC 5227, ``acd``): while probing, or
        #: after a conflict, an address is here and not in ``v4``
        self.acd4: dict[bytes, Acd] = {}
        self.arp = NeighborCache()
        self.nd = NeighborCache()
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0
        self.rx_errors = self.tx_dropped = 0
        #: the link takes and gives large TCP segments and partial checksums
        #: (a ``tap://...[offload]``): ``Stack.input`` takes its headers, TCP sends through it
        self.offload = False

    @property
    def loopback(self) -> bool:
        return self.link is None

    def v6_usable(self) -> list[bytes]:
        return [a.addr for a in self.v6 if a.state == "preferred"]


def check_mtu(link: Link | None, mtu: int, name: str = "the interface") -> None:
    """ValueError unless ``mtu`` is 68..65535 and no larger than ``link`` carries."""
    if not 68 <= mtu <= 65535:
        raise ValueError(f"MTU {mtu} for {name}: an MTU must be 68..65535")
    top = None if link is None else link.max_mtu
    if top is not None and mtu > top:
        raise ValueError(f"MTU {mtu} for {name}: its link {link.url or type(link).__name__} "
                         f"carries at most MTU {top}")


def eui64_link_local(mac: bytes) -> bytes:
    """fe80::/64 with an interface identifier from the MAC (RFC 4291 appendix A)."""
    iid = bytes([mac[0] ^ 0x02]) + mac[1:3] + b"\xff\xfe" + mac[3:6]
    return b"\xfe\x80" + bytes(6) + iid


def random_mac() -> bytes:
    """A locally administered unicast MAC."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFC) | 0x02
    return bytes(b)


UdpHandler = Callable[[bytes, tuple[str, int], tuple[str, int]], None]


class Stack:
    """A TCP/IP stack instance (IPv4 and IPv6 in one engine).

    ``clock`` is the time source for calls made outside ``input``/``on_timer`` (socket
    calls, addresses added, links set up); tests that drive the stack on fake time replace
    it. ``acd``: IPv4 addresses go through conflict detection (RFC 5227) before use, unless
    ``addr_add`` says otherwise (the configuration item ``acd`` turns it on too).

        >>> s = Stack("eth,ip=10.0.0.5/24,gw=10.0.0.1", link="vde:///tmp/sw")
        >>> s.addresses()
        ['10.0.0.5/24', ...]

    This is the protocol core: it imports nothing from the socket API. ``threadnet.Stack``
    (``stack/api.py``) is this class plus ``socket``, ``publish``, the name lookups and the
    per-process driver by default; a core Stack runs only under a driver it is given.
    """

    #: what ``resolver`` makes: here the settings only; ``threadnet.Stack`` sets the
    #: lookups' class (``stack/resolver.py``), so the core never imports it
    resolver_class: type[ResolverConfig] = ResolverConfig

    def __init__(self, config: str | None = None, link: Link | str | None = None, *,
                 name: str | None = None, forwarding: bool = False,
                 driver: object | None = None, acd: bool = False) -> None:
        self.name = name or f"stack{id(self):x}"
        self.clock: Callable[[], float] = time.monotonic
        self.acd = acd
        # a driver runs this stack on its clock; without one (None or False) the caller's
        # explicit times are the stack's only time, unless it sets a clock (see _api_now)
        self._on_clock = bool(driver)
        self.interfaces: dict[int, Interface] = {}
        self.routes4 = RoutingTable(4)
        self.routes6 = RoutingTable(6)
        self.reasm4 = Reassembler()
        self.reasm6 = Reassembler(timeout=60.0)
        #: learned path MTUs: destination -> (MTU, expiry time, locked: send without DF),
        #: in expiry order (an update moves its entry to the end)
        self.pmtu: OrderedDict[bytes, tuple[int, float, bool]] = OrderedDict()
        self.forwarding = forwarding
        self.udp: dict[tuple[bytes, int], UdpHandler] = {}
        self.echo_waiters: dict[tuple[int, int], Callable[[bytes, float], None]] = {}
        #: who hears of an error about what they sent (address resolution failed): a
        #: UDP port's owner (error, destination, port) and a ping's (error)
        self.udp_errors: dict[tuple[bytes, int], Callable[[int, bytes, int], None]] = {}
        self.echo_errors: dict[tuple[int, int], Callable[[int], None]] = {}
        self.stats: dict[str, int] = {}
        self._local: deque[tuple[int, bytes]] = deque()
        self.tcp = TcpLayer(self)
        self._ip_ids = [0] * IP_ID_BUCKETS
        self._now = 0.0
        self.driver = None
        self._resolver: ResolverConfig | None = None  # made on first use (resolver_class)
        # bumped by every change of interfaces and addresses: caches of the data path
        # (local address sets, TCP connections' output paths) check it
        self._gen = 0
        self._local4: frozenset[bytes] = frozenset()
        self._local4_gen = -1
        self._local6: dict[Interface, frozenset[bytes]] = {}
        self._local6_gen = -1
        self._batch_ifaces: list[Interface] = []
        # the IP layer's hook points (stack/ip.py): empty tuples cost one test each
        self.hooks_prerouting: tuple[Hook, ...] = ()
        self.hooks_input: tuple[Hook, ...] = ()
        self.hooks_forward: tuple[Hook, ...] = ()
        self.hooks_output: tuple[Hook, ...] = ()
        self.hooks_postrouting: tuple[Hook, ...] = ()
        self._rx_hooked = False  # prerouting or input hooks: the direct input paths are off
        lo = Interface(1, "lo", None, bytes(6), 65536)
        self.interfaces[1] = lo
        self.link_up("lo", 0.0)
        self.addr_add("lo", "127.0.0.1/8", 0.0)
        self.addr_add("lo", "::1/128", 0.0)
        if link is not None:
            self.add_interface(link)
        if config:
            try:
                self.configure(config)
            except BaseException:
                for iface in self.interfaces.values():  # (a refused MTU...): no leak
                    if iface.link is not None and isinstance(link, str):
                        iface.link.close()
                raise
        if driver:
            driver.attach(self)  # type: ignore[attr-defined]

    # -- configuration ---------------------------------------------------------------
    def add_interface(self, link: Link | str, *, name: str | None = None, mac: bytes | None = None,
                      mtu: int | None = None) -> Interface:
        if mtu is not None:
            check_mtu(None, mtu, name or "the new interface")
        if isinstance(link, str):
            from threadnet.link import open_link

            link = open_link(link, description=f"threadnet stack {self.name} pid={os.getpid()}")
            if mtu is not None:
                try:
                    check_mtu(link, mtu, name or "the new interface")
                except ValueError:
                    link.close()  # we opened it
                    raise
        index = max(self.interfaces) + 1
        name = name or f"eth{sum(1 for i in self.interfaces.values() if not i.loopback)}"
        if any(i.name == name for i in self.interfaces.values()):
            raise ValueError(f"interface {name!r} exists")
        if mtu is not None:
            check_mtu(link, mtu, name)  # (a link given open stays the caller's)
        iface = Interface(index, name, link, mac or random_mac(), mtu or link.max_frame - 18)
        if getattr(link, "vnet_hdr", False):
            link.enable_offload()  # type: ignore[attr-defined]
            iface.offload = True
        self.interfaces[index] = iface
        self._gen += 1
        if self.driver is not None:
            self.driver.watch(self, iface)  # type: ignore[attr-defined]
        return iface

    def interface(self, ref: int | str) -> Interface:
        if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
            iface = self.interfaces.get(int(ref))
        else:
            iface = next((i for i in self.interfaces.values() if i.name == ref), None)
        if iface is None:
            raise OSError(errno.ENODEV, f"no interface {ref!r}")
        return iface

    def _api_now(self, now: float | None) -> float:
        """The time of a call from outside ``input``/``on_timer`` that starts a timer (DAD
        of an address, conflict detection): ``now`` when given, else the stack's clock,
        the real time a driver runs it on. A stack without a driver and with the default
        clock knows only the times its caller passed to ``input``/``on_timer``: the last
        of them. (Before, the public API used that last time always: 0.0 for a new stack,
        so the driver's first tick ended the DAD of every configured address.)"""
        if now is not None:
            return now
        if self._on_clock or self.clock is not time.monotonic:
            return self.clock()
        return self._now

    def link_up(self, ref: int | str, now: float | None = None) -> None:
        iface = self.interface(ref)
        if iface.up:
            return
        iface.up = True
        self._gen += 1
        now = self._api_now(now)
        if not iface.loopback and not any(a.addr[:2] == b"\xfe\x80" for a in iface.v6):
            self._add6(iface, eui64_link_local(iface.mac), 64, now)
        for a in iface.v6:
            if a.state == "tentative":
                self._start_dad(iface, a, now)

    def link_down(self, ref: int | str) -> None:
        iface = self.interface(ref)
        iface.up = False
        self._gen += 1

    def set_mac(self, ref: int | str, mac: bytes) -> None:
        """Change an interface's MAC address (connections' cached output paths follow)."""
        if len(mac) != 6 or mac[0] & 1:
            raise ValueError("a MAC address is 6 bytes and not multicast")
        self.interface(ref).mac = bytes(mac)
        self._gen += 1

    def set_mtu(self, ref: int | str, mtu: int) -> None:
        """Set an interface's MTU: 68 up to what its link carries (``Link.max_mtu``, when
        the link knows it), else ValueError. A larger MTU would make TCP send segments
        the link drops, and stall."""
        iface = self.interface(ref)
        check_mtu(iface.link, mtu, iface.name)
        iface.mtu = mtu
        self._gen += 1

    def add_hook(self, point: str, hook: Hook) -> None:
        """Install ``hook(packet, meta) -> ACCEPT | DROP`` at ``point`` (``"prerouting"``,
        ``"input"``, ``"forward"``, ``"output"``, ``"postrouting"``), after the hooks
        there; see ``stack/ip.py``. Cached output paths are dropped, and the direct
        paths stay off while a hook they would pass by is installed."""
        if point not in HOOK_POINTS:
            raise ValueError(f"no hook point {point!r}: one of {', '.join(HOOK_POINTS)}")
        name = f"hooks_{point}"
        setattr(self, name, (*getattr(self, name), hook))
        self._hooks_changed()

    def remove_hook(self, point: str, hook: Hook) -> None:
        """Remove a hook ``add_hook`` installed (ValueError if it is not there)."""
        if point not in HOOK_POINTS:
            raise ValueError(f"no hook point {point!r}: one of {', '.join(HOOK_POINTS)}")
        name = f"hooks_{point}"
        hooks = list(getattr(self, name))
        hooks.remove(hook)
        setattr(self, name, tuple(hooks))
        self._hooks_changed()

    def _hooks_changed(self) -> None:
        self._rx_hooked = bool(self.hooks_prerouting or self.hooks_input)
        self._gen += 1  # cached paths go: output_path says None while hooks need it

    def addr_add(self, ref: int | str, cidr: str, now: float | None = None, *,
                 acd: bool | None = None) -> None:
        """Add an address. An IPv6 one is tentative until duplicate address detection
        (RFC 4862) ends, about a second from now; an IPv4 one is used at once, unless
        ``acd`` (default: the stack's ``acd``) asks for conflict detection first (RFC
        5227, some 5-9 seconds): an address found in use elsewhere stays listed, marked
        ``conflict``, and is never used."""
        iface = self.interface(ref)
        net = ipaddress.ip_interface(cidr)
        now = self._api_now(now)
        self._gen += 1
        if net.version == 4:
            entry = (net.ip.packed, net.network.prefixlen)
            if entry in iface.v4 or net.ip.packed in iface.acd4:
                raise FileExistsError(f"{cidr} is already on {iface.name}")
            if (self.acd if acd is None else acd) and not iface.loopback:
                iface.acd4[entry[0]] = Acd(entry[0], entry[1], now, self.tcp.rng)
                return
            self._bind4(iface, entry)
        else:
            if any(a.addr == net.ip.packed for a in iface.v6):
                raise FileExistsError(f"{cidr} is already on {iface.name}")
            a = self._add6(iface, net.ip.packed, net.network.prefixlen, now)
            if net.network.prefixlen < 128:
                self._kernel_route(self.routes6, net.network, iface)
            if iface.loopback:
                a.state = "preferred"

    def _bind4(self, iface: Interface, entry: tuple[bytes, int]) -> None:
        """Put an IPv4 address in use, with its connected route."""
        iface.v4.append(entry)
        self._gen += 1
        net = ipaddress.ip_interface(entry).network
        if net.prefixlen < 32 or iface.loopback:
            self._kernel_route(self.routes4, net, iface)

    def _kernel_route(self, table: RoutingTable, net: ipaddress.IPv4Network | ipaddress.IPv6Network,
                      iface: Interface) -> None:
        try:
            table.add(Route(net, None, iface.index, proto="kernel"))
        except FileExistsError:
            pass

    def _add6(self, iface: Interface, addr: bytes, plen: int, now: float) -> Address6:
        a = Address6(addr, plen, "preferred" if iface.loopback else "tentative")
        iface.v6.append(a)
        if iface.up and a.state == "tentative":
            self._start_dad(iface, a, now)
        return a

    def addr_del(self, ref: int | str, cidr: str) -> None:
        """Remove an address and, as Linux does, its connected route when no other
        address of the interface is on that network."""
        iface = self.interface(ref)
        net = ipaddress.ip_interface(cidr)
        self._gen += 1
        if net.version == 4:
            entry = (net.ip.packed, net.network.prefixlen)
            pending = iface.acd4.get(entry[0])
            if pending is not None and pending.plen == entry[1]:
                del iface.acd4[entry[0]]
                if entry not in iface.v4:
                    return  # probing or in conflict: never in use
            self._unbind4(iface, entry, cidr)
            return
        match = [a for a in iface.v6 if a.addr == net.ip.packed]
        if not match:
            raise OSError(errno.EADDRNOTAVAIL, f"{cidr} is not on {iface.name}")
        iface.v6.remove(match[0])
        others = [ipaddress.ip_interface((a.addr, a.plen)).network for a in iface.v6]
        self._drop_kernel_route(self.routes6, net.network, others, iface)

    def _unbind4(self, iface: Interface, entry: tuple[bytes, int], cidr: str) -> None:
        """Stop using an IPv4 address; its connected route goes unless another address
        of the interface is on that network."""
        if entry not in iface.v4:
            raise OSError(errno.EADDRNOTAVAIL, f"{cidr} is not on {iface.name}")
        iface.v4.remove(entry)
        self._gen += 1
        others = [ipaddress.ip_interface((a, p)).network for a, p in iface.v4]
        self._drop_kernel_route(self.routes4, ipaddress.ip_interface(entry).network, others,
                                iface)

    def _drop_kernel_route(self, table: RoutingTable, network: Any, others: list[Any],
                           iface: Interface) -> None:
        if network not in others:
            for r in list(table.routes):
                if r.dst == network and r.ifindex == iface.index and r.proto == "kernel":
                    table.delete(r.dst, ifindex=iface.index, metric=r.metric)

    def route_add(self, dst: str, via: str | None = None, dev: int | str | None = None,
                  metric: int = 0) -> None:
        net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=True)
        gw = ipaddress.ip_address(via) if via else None
        if dst == "default" and gw is not None and gw.version == 6:
            net = ipaddress.ip_network("::/0")
        table = self.routes4 if net.version == 4 else self.routes6
        if dev is None:
            if gw is None:
                raise ValueError("a route needs a gateway (via) or a device (dev)")
            route = table.lookup(int(gw))
            if route is None or route.gateway is not None:
                raise OSError(errno.ENETUNREACH, f"gateway {gw} is not on a connected network")
            ifindex = route.ifindex
        else:
            ifindex = self.interface(dev).index
        table.add(Route(net, gw, ifindex, metric))

    def route_del(self, dst: str, via: str | None = None) -> None:
        net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst)
        if dst == "default" and via and ipaddress.ip_address(via).version == 6:
            net = ipaddress.ip_network("::/0")
        table = self.routes4 if net.version == 4 else self.routes6
        table.delete(net, gateway=ipaddress.ip_address(via) if via else None)

    def configure(self, text: str, now: float | None = None) -> None:
        """Apply a libioth-style configuration string, e.g. ``"eth,ip=10.0.0.5/24,gw=10.0.0.1"``."""
        cfg = parse_config(text)
        unsupported = [n for n, v in (("dhcp", cfg.dhcp4), ("dhcp6", cfg.dhcp6), ("rd", cfg.rd),
                                      ("slaac", cfg.slaac)) if v]
        if unsupported:
            raise NotImplementedError(f"{', '.join(unsupported)}: dynamic configuration is not "
                                      "implemented yet; use ip= and gw=")
        links = [i for i in self.interfaces.values() if not i.loopback]
        if cfg.iface is not None:
            iface = self.interface(cfg.iface)
        elif cfg.ifindex is not None:
            iface = self.interface(cfg.ifindex)
        elif links:
            iface = links[0]
        else:
            raise OSError(errno.ENODEV, "no interface to configure: give the stack a link")
        if cfg.mac is not None:
            self.set_mac(iface.index, cfg.mac)
        if cfg.mtu is not None:
            self.set_mtu(iface.index, cfg.mtu)
        if cfg.eth:
            self.link_up(iface.index, now)
        elif cfg.eth is False:
            self.link_down(iface.index)
        for a in cfg.addresses:
            self.addr_add(iface.index, str(a), now, acd=cfg.acd)
        for gw in cfg.gateways:
            self.route_add("default", str(gw))
        if cfg.fqdn is not None:
            self.resolver.set_hostname(cfg.fqdn)
        if cfg.dns:
            self.resolver.nameservers = cfg.dns
        if cfg.domain is not None:
            self.resolver.domain = cfg.domain

    # -- names: stack/resolver.py, with the socket module's semantics ---------------------
    @property
    def resolver(self) -> ResolverConfig:
        """This stack's name resolution: host name, hosts table, DNS settings and cache."""
        if self._resolver is None:
            self._resolver = self.resolver_class(self)
        return self._resolver

    def gethostname(self) -> str:
        """The host name set by ``fqdn=`` or ``set_hostname``, else the stack's name."""
        return self.name if self._resolver is None else self._resolver.gethostname()

    def set_hostname(self, name: str) -> None:
        self.resolver.set_hostname(name)

    sethostname = set_hostname

    @property
    def hosts(self) -> dict[str, list[str]]:
        """The stack's hosts table: name -> addresses, looked up before DNS."""
        return self.resolver.hosts

    def add_host(self, name: str, address: str) -> None:
        self.resolver.add_host(name, address)

    @property
    def nameservers(self) -> list[str]:
        return [] if self._resolver is None else self._resolver.nameservers

    @nameservers.setter
    def nameservers(self, servers: list[str] | str) -> None:
        self.resolver.nameservers = servers

    def resolv_conf(self, text: str | None = None) -> str:
        """Set the DNS settings from resolv.conf text (or "addr,addr"); returns them as
        resolv.conf text (libioth's ioth_resolvconf, iothdns_init_strcfg)."""
        return self.resolver.resolv_conf(text)

    # -- introspection -----------------------------------------------------------------
    def addresses(self, family: int | None = None) -> list[str]:
        out = []
        for iface in self.interfaces.values():
            if family in (None, 4):
                out += [f"{ipaddress.ip_address(a)}/{p}" for a, p in iface.v4]
            if family in (None, 6):
                out += [f"{ipaddress.ip_address(a.addr)}/{a.plen}" for a in iface.v6
                        if a.state == "preferred"]
        return out

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _local4_set(self) -> frozenset[bytes]:
        """Every IPv4 address of every interface (rebuilt after a change)."""
        if self._local4_gen != self._gen:
            self._local4 = frozenset(a for i in self.interfaces.values() for a, _ in i.v4)
            self._local4_gen = self._gen
        return self._local4

    def _is_local4(self, addr: bytes) -> bool:
        return addr in self._local4_set() or addr[0] == 127

    def _local6_sets(self) -> dict[Interface, frozenset[bytes]]:
        """Each interface's preferred IPv6 addresses (rebuilt after a change)."""
        if self._local6_gen != self._gen:
            self._local6 = {i: frozenset(a.addr for a in i.v6 if a.state == "preferred")
                            for i in self.interfaces.values()}
            self._local6_gen = self._gen
        return self._local6

    def _is_local6(self, addr: bytes) -> bool:
        return any(a.addr == addr and a.state == "preferred"
                   for iface in self.interfaces.values() for a in iface.v6)

    # -- input -------------------------------------------------------------------------
    def input(self, iface: Interface, frame: bytes | bytearray | memoryview, now: float,
              header: tuple[int, int, int, int, int, int] | None = None) -> None:
        """Process one Ethernet frame received on ``iface``. Never raises for bad input.

        ``header``: the virtio-net header fields of a frame from an offload link
        (``TapLink.recv_offload``). The frame may then be a TCP segment larger than the
        MTU, and its checksum one the kernel vouches for (``F_DATA_VALID``) or has left
        partial (``F_NEEDS_CSUM``)."""
        self._now = now
        if not iface.up:
            return
        n = len(frame)
        iface.rx_packets += 1
        iface.rx_bytes += n
        try:
            mv = memoryview(frame)
            if header is None:
                if self._rx_hooked or not self._input_direct(iface, mv, n, now, False):
                    self._input_eth(iface, mv, now)
            else:
                self._input_offloaded(iface, mv, n, header, now)
        except FrameError:
            iface.rx_errors += 1
            self._count("rx_malformed")
        if self._local:
            self._drain_local(now)

    def _input_offloaded(self, iface: Interface, mv: memoryview, n: int,
                         header: tuple[int, int, int, int, int, int], now: float) -> None:
        flags, gso_type, _, gso_size, start, offset = header
        vouched = bool(flags & (vnet.F_NEEDS_CSUM | vnet.F_DATA_VALID)) and not self._rx_hooked
        if vouched and self._input_direct(iface, mv, n, now, True):
            return
        if gso_type != vnet.GSO_NONE:
            # not for our TCP fast paths (forwarded...): ordinary frames
            for piece in vnet.segment(mv, gso_type, gso_size):
                pmv = memoryview(piece)
                if self._rx_hooked or not self._input_direct(iface, pmv, len(piece), now, True):
                    self._input_eth(iface, pmv, now)
            return
        if flags & vnet.F_NEEDS_CSUM:
            mv = memoryview(bytearray(mv))
            vnet.complete_checksum(mv, start, offset)
        self._input_eth(iface, mv, now)

    def _input_direct(self, iface: Interface, mv: memoryview, n: int, now: float,
                      csum_ok: bool) -> bool:
        """The direct IPv4 or IPv6 TCP input, when the frame qualifies (see those)."""
        return self._input_fast4(iface, mv, n, now, csum_ok) or (
            n >= 74 and mv[12] == 0x86 and self._input_fast6(iface, mv, n, now, csum_ok))

    def input_many(self, iface: Interface, frames: list[memoryview], now: float) -> None:
        """``input`` for a receive batch, with TCP receive coalescing (Linux's GRO): a run
        of in-order data segments of one connection, alike in everything but their data
        (addresses, ports, ACK, window, timestamps), goes to TCP as one segment once each
        frame's own IPv4 and TCP checksums are checked. Anything else, and any run that
        is not for one of our addresses, takes ``input`` frame by frame."""
        n = len(frames)
        if n < 2 or not iface.up or self._rx_hooked:
            for f in frames:
                self.input(iface, f, now)
            return
        mac = iface.mac
        unpack = _GRO.unpack_from
        i = 0
        while i < n:
            f = frames[i]
            ln = len(f)
            j = i + 1
            if ln > 66:
                (dmac, etype, vihl, total, frag, proto, addrs, ports, seq, ack, offfl, window,
                 opts) = unpack(f)
                if (etype == 0x0800 and vihl == 0x45 and proto == 6 and offfl & 0xF0F7 == 0x8010
                        and total == ln - 14 and not frag & 0x3FFF and dmac == mac
                        and opts[:4] == _TS_HEAD):
                    # a data segment with ACK (and maybe PSH), timestamps, no other option:
                    # find how far the run goes
                    nxt = seq + total - 52
                    while j < n and not offfl & 8:  # a PSH ends a run
                        g = frames[j]
                        lg = len(g)
                        if lg <= 66:
                            break
                        (dmac, etype, vihl, total, frag, proto, a2, p2, seq2, ack2, offfl,
                         window2, opts2) = unpack(g)
                        if (seq2 != nxt & 0xFFFFFFFF or a2 != addrs or p2 != ports
                                or ack2 != ack or window2 != window or opts2 != opts
                                or offfl & 0xF0F7 != 0x8010 or total != lg - 14
                                or etype != 0x0800 or vihl != 0x45 or proto != 6
                                or frag & 0x3FFF or dmac != mac):
                            break
                        nxt = seq2 + total - 52
                        j += 1
            if j - i < 2 or not self._input_run(iface, frames, i, j, now):
                self.input(iface, f, now)
                j = i + 1
            i = j
        if self._local:
            self._drain_local(now)

    def _input_run(self, iface: Interface, frames: list[memoryview], i: int, j: int,
                   now: float) -> bool:
        """TCP input for ``frames[i:j]``, a run ``input_many`` found: returns False, having
        done nothing, unless the first frame's destination is ours and every frame's
        checksums are right (a bad frame then goes its own way and shows up in the
        counters)."""
        f = frames[i]
        dst = f[30:34].tobytes()
        if dst not in (self._local4 if self._local4_gen == self._gen else self._local4_set()) \
                or dst[0] == 127 or f[26] == 127:
            return False
        src = f[26:30].tobytes()
        from_bytes = int.from_bytes
        psum = from_bytes(src, "big") + from_bytes(dst, "big") + 6
        run = frames[i:j]
        nbytes = 0
        for g in run:
            n = len(g)
            if from_bytes(g[14:34], "big") % 0xFFFF:
                return False
            v = from_bytes(g[34:], "big") % 0xFFFF  # reduced first: a sum would copy it
            if n & 1:
                v <<= 8
            if (v + psum + n - 34) % 0xFFFF:
                return False
            nbytes += n
        self._now = now
        iface.rx_packets += j - i
        iface.rx_bytes += nbytes
        # one segment: the first header (the last one's flags, for a PSH) and every payload
        last = run[-1]
        seg = bytearray(f[34:66])
        seg[13] = last[47]
        seg += b"".join([g[66:] for g in run])
        try:
            self.tcp.input(4, src, dst, memoryview(seg), now, True)
        except FrameError:
            iface.rx_errors += 1
            self._count("rx_malformed")
        return True

    def _input_fast4(self, iface: Interface, mv: memoryview, n: int, now: float,
                     csum_ok: bool) -> bool:
        """The common case without the general path's calls: IPv4 without options or
        fragmentation, TCP, unicast to one of our addresses, header checksum right.
        Returns False, having done nothing, for anything else (and for any error, which
        the general path reports). ``csum_ok``: the TCP checksum needs no check."""
        if n >= 54 and mv[12] == 8 and mv[13] == 0 and mv[14] == 0x45 and mv[23] == 6 \
                and mv[:6] == iface.mac:
            total, frag = _FAST4.unpack_from(mv, 16)
            dst = mv[30:34].tobytes()
            if not frag & 0x3FFF and 40 <= total <= n - 14 and (
                    dst in (self._local4 if self._local4_gen == self._gen
                            else self._local4_set())) and dst[0] != 127 and mv[26] != 127 \
                    and not int.from_bytes(mv[14:34], "big") % 0xFFFF:
                self.tcp.input(4, mv[26:30].tobytes(), dst, mv[34:14 + total], now, csum_ok)
                return True
        return False

    def _input_fast6(self, iface: Interface, mv: memoryview, n: int, now: float,
                     csum_ok: bool) -> bool:
        """``_input_fast4`` for IPv6: a packet without extension headers, TCP, to one of
        the preferred addresses of ``iface``. The caller has checked that the frame holds
        74 bytes or more and that its EtherType's first byte is 0x86."""
        if mv[13] == 0xDD and mv[14] >> 4 == 6 and mv[20] == 6 and mv[:6] == iface.mac:
            plen = (mv[18] << 8) | mv[19]
            dst = mv[38:54].tobytes()
            if 20 <= plen <= n - 54 and dst in (
                    self._local6 if self._local6_gen == self._gen
                    else self._local6_sets()).get(iface, ()):
                src = mv[22:38].tobytes()
                if src == _LOOPBACK6:
                    return False  # the general path drops it
                self.tcp.input(6, src, dst, mv[54:54 + plen], now, csum_ok)
                return True
        return False

    def begin_batch(self) -> bool:
        """Start a batch of ``input`` calls (a driver's receive batch): work that can be
        done once for all of them waits for ``end_batch``. Returns False when a batch is
        open already; only the call that opened it ends it."""
        if not self.tcp.begin_batch():
            return False
        # and links that can send a batch of frames with one system call queue them
        links = []
        for iface in self.interfaces.values():
            begin = getattr(iface.link, "begin_tx", None)
            if begin is not None:
                begin()
                links.append(iface)
        self._batch_ifaces = links
        return True

    def end_batch(self) -> None:
        try:
            self.tcp.end_batch()
        finally:
            ifaces, self._batch_ifaces = self._batch_ifaces, []
            for iface in ifaces:
                try:
                    iface.link.end_tx()  # type: ignore[union-attr]
                except LinkError:
                    iface.tx_dropped += 1

    def _input_eth(self, iface: Interface, mv: memoryview, now: float) -> None:
        if len(mv) < 14:
            raise FrameError("runt frame")
        dst = mv[0:6]
        if dst != iface.mac and not dst[0] & 1:
            return  # unicast for someone else
        etype = (mv[12] << 8) | mv[13]
        if etype == ETH_P_IPV4:
            self._input_ip4(iface, mv[14:], now, bytes(mv[6:12]))
        elif etype == ETH_P_IPV6:
            self._input_ip6(iface, mv[14:], now, bytes(mv[6:12]))
        elif etype == ETH_P_ARP:
            self._input_arp(iface, mv[14:], now)

    def _input_arp(self, iface: Interface, mv: memoryview, now: float) -> None:
        op, sha, spa, tha, tpa = arp.parse(mv)
        if sha[0] & 1:
            return  # a multicast sender address is never valid
        if iface.acd4:
            self._acd_arp(iface, op == arp.OP_REQUEST, sha, spa, tpa, now)
        if spa == bytes(4):
            # an ARP probe (RFC 5227): answered if it is for us, no cache entry for 0.0.0.0
            if op == arp.OP_REQUEST and any(a == tpa for a, _ in iface.v4):
                buf = bytearray(28)
                arp.build(buf, arp.OP_REPLY, iface.mac, tpa, sha, spa)
                self._send_eth(iface, sha, _ETH_ARP, buf)
            return
        ours = any(a == tpa for a, _ in iface.v4)
        # RFC 826: update an existing entry; create one only from a request for us (as
        # Linux with arp_accept=0: no entries from unsolicited replies or gratuitous ARP).
        # Only a reply to our own request (the entry is INCOMPLETE or being probed) makes
        # it REACHABLE; unsolicited news of a new MAC leaves it STALE (RFC 4861 7.2.5),
        # to be confirmed by a probe before the direct paths use it.
        e = iface.arp.entries.get(spa)
        solicited = op == arp.OP_REPLY and ours and e is not None and \
            e.state in (INCOMPLETE, PROBE)
        for pkt in iface.arp.confirm(spa, sha, now, solicited=solicited,
                                     create=ours and op == arp.OP_REQUEST):
            self._xmit(iface, sha, pkt)  # type: ignore[arg-type]
        if op == arp.OP_REQUEST and ours:
            buf = bytearray(28)
            arp.build(buf, arp.OP_REPLY, iface.mac, tpa, sha, spa)
            self._send_eth(iface, sha, _ETH_ARP, buf)

    def _input_ip4(self, iface: Interface, mv: memoryview, now: float, src_mac: bytes) -> None:
        (tos, total, ident, flags, frag_off, ttl, proto, src, dst, hlen,
         _opts) = ipv4.parse(mv)
        if (dst[0] == 127 or src[0] == 127) and not iface.loopback:
            # RFC 1122 3.2.1.3: 127/8 never comes from a wire (Linux: a martian)
            self._count("ip4_martian")
            return
        if self.hooks_prerouting and not run_hooks(self, self.hooks_prerouting, PREROUTING, 4,
                                                   mv[:total], iface, None, now):
            return
        payload = mv[hlen:total]
        broadcast = dst == LIMITED_BROADCAST or any(
            dst == _bcast4(a, p) for a, p in iface.v4)
        local = broadcast or self._is_local4(dst) or (iface.loopback and dst[0] == 127)
        if not local:
            if dst[0] >= 224:
                return  # multicast we did not join
            if self.forwarding:
                self._forward4(iface, mv[:total], ttl, dst, now)
            else:
                self._count("ip4_not_for_us")
            return
        if self.hooks_input and not run_hooks(self, self.hooks_input, INPUT, 4, mv[:total],
                                              iface, None, now):
            return
        if flags & ipv4.FLAG_MF or frag_off:
            whole = self.reasm4.add((src, dst, proto, ident), frag_off, bool(flags & ipv4.FLAG_MF),
                                    payload, now, first_header=bytes(mv[:hlen]) if not frag_off else None)
            if whole is None:
                return
            payload = memoryview(whole)
        if proto == ipv4.PROTO_ICMP:
            self._input_icmp4(iface, src, dst, payload, mv[:total], broadcast, now)
        elif proto == ipv4.PROTO_UDP:
            self._input_udp(4, src, dst, payload, mv[:total], broadcast, now)
        elif proto == ipv4.PROTO_TCP:
            self._input_tcp(4, src, dst, payload, mv[:total], now)
        elif not broadcast:
            self._icmp4_error(src, dst, icmp4.DEST_UNREACHABLE, icmp4.UNREACH_PROTOCOL, mv[:total], now)

    def _input_icmp4(self, iface: Interface, src: bytes, dst: bytes, payload: memoryview,
                     packet: memoryview, broadcast: bool, now: float) -> None:
        kind, code, rest, body = icmp4.parse(payload)
        if kind == icmp4.ECHO_REQUEST:
            if broadcast:
                return  # no replies to broadcast pings (Linux's default)
            out = bytearray(len(payload))
            icmp4.build_echo(out, rest >> 16, rest & 0xFFFF, body, reply=True)
            self.send_ip4(dst, src, ipv4.PROTO_ICMP, out, now)
        elif kind == icmp4.ECHO_REPLY:
            waiter = self.echo_waiters.get((4, rest >> 16))
            if waiter is not None:
                waiter(bytes(body), now)
        elif kind == icmp4.DEST_UNREACHABLE and code == icmp4.UNREACH_FRAG_NEEDED:
            # RFC 1191: the quoted header names the destination whose path MTU shrank
            quoted = ipv4.parse(body, quoted=True)
            if quoted[4]:
                return  # a later fragment: no transport header to check it against
            self._icmp_too_big(4, quoted[6], quoted[7], quoted[8], body[quoted[9]:],
                               rest & 0xFFFF, now)

    def _input_udp(self, family: int, src: bytes, dst: bytes, payload: memoryview,
                   packet: memoryview, broadcast: bool, now: float) -> None:
        sport, dport, data = udp.parse(payload, src, dst)
        handler = self.udp.get((dst, dport)) or self.udp.get((b"", dport))
        if handler is None:
            self._count("udp_no_port")
            if not broadcast and not (family == 6 and dst[0] == 0xFF):
                if family == 4:
                    self._icmp4_error(src, dst, icmp4.DEST_UNREACHABLE, icmp4.UNREACH_PORT,
                                      packet, now)
                else:
                    self._icmp6_error(src, dst, icmp6.DEST_UNREACHABLE, icmp6.UNREACH_PORT,
                                      packet, now)
            return
        handler(bytes(data), (_ntop(src), sport), (_ntop(dst), dport))

    def _input_tcp(self, family: int, src: bytes, dst: bytes, payload: memoryview,
                   packet: memoryview, now: float) -> None:
        if dst[0] == 0xFF or (family == 4 and (dst[0] >= 224 or dst == LIMITED_BROADCAST)):
            return  # TCP is unicast only
        self.tcp.input(family, src, dst, payload, now)

    def _input_ip6(self, iface: Interface, mv: memoryview, now: float, src_mac: bytes) -> None:
        tc, flow, plen, nh, hlim, src, dst = ipv6.parse(mv)
        if (dst == _LOOPBACK6 or src == _LOOPBACK6) and not iface.loopback:
            # RFC 4291 2.5.3: a packet to (or from) ::1 received on an interface is dropped
            self._count("ip6_martian")
            return
        end = ipv6.HEADER_LEN + plen
        packet = mv[:end]
        if self.hooks_prerouting and not run_hooks(self, self.hooks_prerouting, PREROUTING, 6,
                                                   packet, iface, None, now):
            return
        multicast = dst[0] == 0xFF
        if multicast:
            local = dst == ipv6.ALL_NODES or any(
                dst == ipv6.solicited_node(a.addr) for a in iface.v6)
        else:
            local = self._is_local6(dst) or any(a.addr == dst for a in iface.v6)
        if not local:
            if multicast:
                return
            if self.forwarding:
                self._forward6(iface, packet, hlim, dst, now)
            return
        if self.hooks_input and not run_hooks(self, self.hooks_input, INPUT, 6, packet, iface,
                                              None, now):
            return
        try:
            proto, off, frag = ipv6.walk(packet, nh)
        except ipv6.ParameterProblem as exc:
            if not multicast or not exc.unicast_only:
                self._icmp6_error(src, dst, icmp6.PARAMETER_PROBLEM, exc.code, packet, now,
                                  rest=exc.pointer)
            return
        payload = packet[off:]
        if frag is not None:
            frag_off, more, ident = frag
            if not frag_off and more and not _whole_chain(payload, proto):
                # RFC 7112 5: a first fragment must hold the whole header chain, up to
                # and with the upper-layer header; drop it, with the parameter problem
                # (code 3) the RFC allows
                self._count("ip6_incomplete_chain")
                if not multicast:
                    self._icmp6_error(src, dst, icmp6.PARAMETER_PROBLEM, 3, packet, now)
                return
            whole = self.reasm6.add((src, dst, ident), frag_off, more, payload, now)
            if whole is None:
                return
            # the reassembled payload starts with the header after the fragment header
            proto, off2, _ = ipv6.walk(memoryview(whole), proto, offset=0)
            payload = memoryview(whole)[off2:]
        if proto == ipv6.PROTO_ICMPV6:
            self._input_icmp6(iface, src, dst, hlim, payload, packet, now, src_mac)
        elif proto == ipv6.PROTO_UDP:
            self._input_udp(6, src, dst, payload, packet, multicast, now)
        elif proto == ipv6.PROTO_TCP:
            self._input_tcp(6, src, dst, payload, packet, now)
        elif proto != ipv6.PROTO_NONE and not multicast:
            self._icmp6_error(src, dst, icmp6.PARAMETER_PROBLEM, 1, packet, now, rest=6)

    def _input_icmp6(self, iface: Interface, src: bytes, dst: bytes, hlim: int,
                     payload: memoryview, packet: memoryview, now: float, src_mac: bytes) -> None:
        kind, code, rest, body = icmp6.parse(payload, src, dst)
        if kind == icmp6.ECHO_REQUEST:
            reply_src = dst if dst[0] != 0xFF else self._source6(src)
            if reply_src is None:
                return
            out = bytearray(len(payload))
            icmp6.build_echo(out, reply_src, src, rest >> 16, rest & 0xFFFF, body, reply=True)
            self.send_ip6(reply_src, src, ipv6.PROTO_ICMPV6, out, now)
        elif kind == icmp6.ECHO_REPLY:
            waiter = self.echo_waiters.get((6, rest >> 16))
            if waiter is not None:
                waiter(bytes(body), now)
        elif kind == icmp6.NEIGHBOR_SOLICITATION:
            if hlim != 255:
                return  # RFC 4861 7.1.1: not from an on-link node
            target, slla = icmp6.parse_ns(payload)
            mine = next((a for a in iface.v6 if a.addr == target), None)
            if mine is None:
                return
            if mine.state != "preferred":
                if mine.state == "tentative" and src == ipv6.UNSPECIFIED:
                    self._dad_failed(mine)  # someone else is doing DAD for it too
                return  # not ours (yet): no answer
            if src != ipv6.UNSPECIFIED and slla is not None:
                for pkt in iface.nd.confirm(src, bytes(slla), now, solicited=False):
                    self._xmit(iface, bytes(slla), pkt)  # type: ignore[arg-type]
            flags = icmp6.NA_OVERRIDE
            to = src
            if src == ipv6.UNSPECIFIED:
                to = ipv6.ALL_NODES
            else:
                flags |= icmp6.NA_SOLICITED
            out = bytearray(32)
            n = icmp6.build_na(out, target, to, target, flags, iface.mac)
            self._send6_direct(iface, target, to, out[:n], src_mac if to == src else None, now)
        elif kind == icmp6.NEIGHBOR_ADVERTISEMENT:
            if hlim != 255:
                return
            flags, target, tlla = icmp6.parse_na(payload)
            mine = next((a for a in iface.v6 if a.addr == target), None)
            if mine is not None and mine.state != "dadfailed":  # (that one is a neighbor's)
                if mine.state == "tentative":
                    self._dad_failed(mine)
                return
            if tlla is not None:
                for pkt in iface.nd.confirm(target, bytes(tlla), now,
                                            solicited=bool(flags & icmp6.NA_SOLICITED),
                                            create=False):
                    self._xmit(iface, bytes(tlla), pkt)  # type: ignore[arg-type]
        elif kind == icmp6.PACKET_TOO_BIG:
            quoted = ipv6.parse(body, quoted=True)
            nh, off = quoted[3], ipv6.HEADER_LEN
            if nh == ipv6.PROTO_FRAGMENT:  # one of our source fragments: the first only
                if len(body) < off + ipv6.FRAGMENT_LEN or \
                        (body[off + 2] << 8 | body[off + 3]) & 0xFFF8:
                    return
                nh, off = body[off], off + ipv6.FRAGMENT_LEN
            self._icmp_too_big(6, nh, quoted[5], quoted[6], body[off:], rest, now)

    # -- path MTU discovery (RFC 1191, RFC 8201) -------------------------------------------
    def _icmp_too_big(self, family: int, proto: int, src: bytes, dst: bytes,
                      transport: memoryview, mtu: int, now: float) -> None:
        """A "fragmentation needed" (IPv4) or "packet too big" (IPv6) about a packet from
        ``src`` to ``dst`` whose transport header starts ``transport``.

        It is believed only when it quotes a packet one of our endpoints could have sent
        (RFC 5927 4): for TCP, a live connection's 4-tuple with a sequence number in
        SND.UNA..SND.NXT; for UDP and ICMP echo (IPv6 only), a bound port or a ping
        waiting for its reply, as Linux accepts them for sockets that exist. IPv4 sends
        only TCP with DF, so a router fragments any other IPv4 packet of ours rather than
        complain: an IPv4 message about UDP or ICMP is forged (or broken) and ignored.
        Anything else is ignored too: with no check, anyone could shrink any path.

        The MTU is clamped as Linux clamps it (IPv4: 552 at least, and then "locked":
        packets go without DF; IPv6: 1280, RFC 8201 4) and only ever lowers the path's
        MTU; entries expire after 10 minutes and the table holds at most
        ``PMTU_MAX_ENTRIES``. The TCP connection it is about shrinks its segments."""
        if len(transport) < 8:
            return  # RFC 792/4443 quote at least 8 bytes: the ports (and TCP's sequence)
        sport, dport = (transport[0] << 8) | transport[1], (transport[2] << 8) | transport[3]
        ep = None
        if family == 4:
            if src not in self._local4_set():
                return
        elif not self._is_local6(src):
            return
        if proto == ipv4.PROTO_TCP:
            ep = self.tcp.icmp_endpoint(family, src, sport, dst, dport,
                                        int.from_bytes(transport[4:8], "big"))
            if ep is None:
                self._count("pmtu_ignored")
                return
        elif family == 6 and proto == ipv6.PROTO_UDP:
            if (src, sport) not in self.udp and (b"", sport) not in self.udp:
                self._count("pmtu_ignored")
                return
        elif family == 6 and proto == ipv6.PROTO_ICMPV6:
            ident = (transport[4] << 8) | transport[5]
            if transport[0] != icmp6.ECHO_REQUEST or (6, ident) not in self.echo_waiters:
                self._count("pmtu_ignored")
                return
        else:
            self._count("pmtu_ignored")
            return
        r = self._route4(dst) if family == 4 else self._route6(dst)
        if r is None:
            return
        current = r[0].mtu
        learned = self.pmtu.get(dst)
        if learned is not None and learned[1] >= now:
            current = min(current, learned[0])
        locked = False
        if family == 4:
            if mtu < MIN_PMTU4:
                mtu, locked = MIN_PMTU4, True
        elif mtu < ipv6.MIN_MTU:
            mtu = ipv6.MIN_MTU
        if mtu < current:
            self._pmtu_learn(dst, mtu, locked, now)
            current = mtu
            self._count("pmtu_learned")
        if ep is not None:
            self.tcp.pmtu_reduced(ep, current)

    def _pmtu_learn(self, dst: bytes, mtu: int, locked: bool, now: float) -> None:
        table = self.pmtu
        self._pmtu_expire(now)
        table.pop(dst, None)
        while len(table) >= PMTU_MAX_ENTRIES:
            table.popitem(last=False)
        table[dst] = (mtu, now + PMTU_EXPIRE, locked)

    def _pmtu_expire(self, now: float) -> None:
        """Forget the learned path MTUs that expired by ``now`` (RFC 1191 6.3, RFC 8201 4):
        the table is in expiry order, so this looks at the expired ones and one more."""
        table = self.pmtu
        while table:
            dst, entry = next(iter(table.items()))
            if entry[1] >= now:
                return
            del table[dst]

    # -- output ------------------------------------------------------------------------
    def _route4(self, dst: bytes) -> tuple[Interface, bytes] | None:
        route = self.routes4.lookup(int.from_bytes(dst, "big"))
        if route is None:
            return None
        iface = self.interfaces.get(route.ifindex)
        if iface is None or not iface.up:
            return None
        return iface, route.gateway.packed if route.gateway is not None else dst

    def _route6(self, dst: bytes) -> tuple[Interface, bytes] | None:
        route = self.routes6.lookup(int.from_bytes(dst, "big"))
        if route is None:
            if dst[:2] == b"\xfe\x80":  # link-local: the first interface that has one
                for iface in self.interfaces.values():
                    if iface.up and not iface.loopback:
                        return iface, dst
            return None
        iface = self.interfaces.get(route.ifindex)
        if iface is None or not iface.up:
            return None
        return iface, route.gateway.packed if route.gateway is not None else dst

    def source4(self, dst: bytes) -> bytes | None:
        """The source address for ``dst``: an address of the outgoing interface."""
        if self._is_local4(dst):
            return dst
        r = self._route4(dst)
        if r is None:
            return None
        iface, nexthop = r
        for a, p in iface.v4:
            if _same_net(a, nexthop, p):
                return a
        return iface.v4[0][0] if iface.v4 else None

    def _no_source(self, family: int, dst: bytes) -> OSError:
        """Why a packet to ``dst`` has no source address: no route (ENETUNREACH), or a
        route whose interface has no usable address yet (EADDRNOTAVAIL, as Linux says
        while every IPv6 address is still tentative, i.e. during DAD)."""
        r = self._route4(dst) if family == 4 else self._route6(dst)
        if r is None:
            return OSError(errno.ENETUNREACH, f"no route to {_ntop(dst)}")
        return OSError(errno.EADDRNOTAVAIL,
                       f"no usable source address for {_ntop(dst)} on {r[0].name} "
                       "(its addresses are still tentative: duplicate address detection "
                       "takes about a second)")

    def _source6(self, dst: bytes) -> bytes | None:
        if self._is_local6(dst):
            return dst
        r = self._route6(dst)
        if r is None:
            return None
        iface = r[0]
        usable = iface.v6_usable()
        if not usable:
            return None
        want_ll = dst[:2] == b"\xfe\x80"
        for a in usable:
            if (a[:2] == b"\xfe\x80") == want_ll:
                return a
        return usable[0]

    def fast_path4(self, src: bytes, dst: bytes, now: float
                   ) -> tuple[Interface, bytes, Neighbor, tuple[int, float] | None, int] | None:
        """For a unicast flow from our ``src`` to ``dst``: (interface, next hop, its
        REACHABLE neighbor entry, the path MTU entry or None, the MTU), which a
        connection may reuse while none of them changes; None when packets to ``dst`` need
        the general output path (no route, a local, broadcast or multicast destination,
        a next hop not known to be reachable, or ``src`` not ours)."""
        if dst[0] >= 224 or self._is_local4(dst) or src not in self._local4_set():
            return None
        r = self._route4(dst)
        if r is None:
            return None
        iface, nexthop = r
        if iface.link is None or any(dst == _bcast4(a, p) for a, p in iface.v4):
            return None
        return self._reachable(iface, iface.arp, nexthop, dst, now)

    def _reachable(self, iface: Interface, cache: NeighborCache, nexthop: bytes, dst: bytes,
                   now: float
                   ) -> tuple[Interface, bytes, Neighbor, tuple[int, float] | None, int] | None:
        """The end of ``fast_path4``/``fast_path6`` for a route through ``iface`` to
        ``nexthop``: its REACHABLE entry in ``cache``, the path MTU entry, the MTU."""
        nb = cache.entries.get(nexthop)
        if nb is None or nb.mac is None or nb.state != REACHABLE or not now < nb.deadline:
            return None
        mtu = iface.mtu
        learned = self.pmtu.get(dst)
        if learned is not None:
            if learned[1] < now:
                return None
            mtu = min(mtu, learned[0])
        return iface, nexthop, nb, learned, mtu

    def fast_path6(self, src: bytes, dst: bytes, now: float
                   ) -> tuple[Interface, bytes, Neighbor, tuple[int, float] | None, int] | None:
        """``fast_path4`` for IPv6: the same answer where ``send_ip6`` would route a packet
        from our preferred ``src`` to a unicast ``dst`` that is not ours through a
        REACHABLE neighbor; None otherwise (multicast, unspecified or local destination,
        no route, a next hop not known to be reachable, ``src`` not a preferred address)."""
        if dst[0] == 0xFF or dst == ipv6.UNSPECIFIED or self._is_local6(dst) \
                or not self._is_local6(src):
            return None
        r = self._route6(dst)
        if r is None:
            return None
        iface, nexthop = r
        if iface.link is None:
            return None
        return self._reachable(iface, iface.nd, nexthop, dst, now)

    def output_path(self, family: int, src: bytes, dst: bytes, proto: int, now: float, *,
                    offload: bool = False) -> Path | None:
        """A cached output path (``stack/ip.py``) for a flow of ``proto`` packets from
        our ``src`` to ``dst``, or None when they need ``send_ip4``/``send_ip6`` (see
        ``fast_path4``; and while output or postrouting hooks are installed, which the
        path would pass by). ``offload``: the flow's transport (TCP) can use the
        segmentation and checksum offloads of an offload link."""
        if self.hooks_output or self.hooks_postrouting:
            return None
        r = (self.fast_path6 if family == 6 else self.fast_path4)(src, dst, now)
        if r is None:
            return None
        return make_path(self, family, src, dst, proto, r, offload)

    def _path(self, family: int, src: bytes | None, dst: bytes, now: float
              ) -> tuple[Interface, bytes, bytes, int]:
        """Route to ``dst``: (interface, next hop, source address, path MTU).

        Raises OSError(ENETUNREACH) without a route, EADDRNOTAVAIL without a source.
        """
        r = self._route4(dst) if family == 4 else self._route6(dst)
        if r is None:
            raise OSError(errno.ENETUNREACH, f"no route to {_ntop(dst)}")
        iface, nexthop = r
        if src is None:
            src = self.source4(dst) if family == 4 else self._source6(dst)
            if src is None:
                raise OSError(errno.EADDRNOTAVAIL, f"no usable IPv{family} address on {iface.name}")
        mtu = iface.mtu
        learned = self.pmtu.get(dst)
        if learned is not None:
            if learned[1] < now:
                del self.pmtu[dst]  # RFC 1191/8201: try the interface MTU again
            else:
                mtu = min(mtu, learned[0])
        return iface, nexthop, src, mtu

    def ip_id_hash(self, src: bytes, dst: bytes, proto: int) -> int:
        """The keyed hash (the TCP layer's secret, as for ISNs) that picks the IP ID
        counter of packets from ``src`` to ``dst`` with ``proto``: a caller may keep it
        (a connection's cached path) and pass it to ``take_ip_ids``."""
        return self.tcp._keyed_hash(src + dst + bytes((proto,)))

    def take_ip_ids(self, h: int, n: int = 1) -> int:
        """The first of ``n`` consecutive IPv4 identifications (mask with 0xFFFF) from
        the counter that the hash ``h`` picks, offset by ``h``."""
        ids = self._ip_ids
        b = h & (IP_ID_BUCKETS - 1)
        v = ids[b]
        ids[b] = (v + n) & 0xFFFF
        return ((h >> 16) + v) & 0xFFFF

    def send_ip4(self, src: bytes | None, dst: bytes, proto: int, payload: bytes | bytearray,
                 now: float | None = None, *, ttl: int = 64, df: bool = False) -> None:
        """Send an IPv4 datagram, fragmenting it to the path MTU unless ``df``.

        Raises OSError(ENETUNREACH) without a route, EMSGSIZE when ``df`` forbids
        fragmenting.
        """
        now = self._now if now is None else now
        if self._is_local4(dst):
            src = src or dst
            packet = bytearray(20 + len(payload))
            ipv4.build(packet, src, dst, proto, len(payload), ttl=ttl,
                       ident=self.take_ip_ids(self.ip_id_hash(src, dst, proto)))
            packet[20:] = payload
            if self.hooks_output and not run_hooks(self, self.hooks_output, OUTPUT, 4, packet,
                                                   None, self.interfaces[1], now):
                return
            self._loop_local(ETH_P_IPV4, bytes(packet))
            return
        iface, nexthop, src, mtu = self._path(4, src, dst, now)
        if df and mtu < iface.mtu and self.pmtu[dst][2]:
            df = False  # a path MTU locked at MIN_PMTU4: as Linux, no DF to this host
        ident = self.take_ip_ids(self.ip_id_hash(src, dst, proto))
        n = len(payload)
        if self.hooks_output:
            # one look at the whole datagram, before it is cut up
            packet = bytearray(20 + n)
            ipv4.build(packet, src, dst, proto, n, ttl=ttl, ident=ident,
                       flags=ipv4.FLAG_DF if df else 0)
            packet[20:] = payload
            if not run_hooks(self, self.hooks_output, OUTPUT, 4, packet, None, iface, now):
                return
        if 20 + n <= mtu:
            packet = bytearray(20 + n)
            ipv4.build(packet, src, dst, proto, n, ttl=ttl, ident=ident,
                       flags=ipv4.FLAG_DF if df else 0)
            packet[20:] = payload
            self._output4(iface, nexthop, dst, packet, now)
            return
        if df:
            raise OSError(errno.EMSGSIZE, f"datagram of {n} bytes exceeds the path MTU {mtu}")
        chunk = (mtu - 20) & ~7
        for off in range(0, n, chunk):
            piece = payload[off:off + chunk]
            more = off + chunk < n
            packet = bytearray(20 + len(piece))
            ipv4.build(packet, src, dst, proto, len(piece), ttl=ttl, ident=ident,
                       flags=ipv4.FLAG_MF if more else 0, frag_offset=off)
            packet[20:] = piece
            self._output4(iface, nexthop, dst, packet, now)

    def _output4(self, iface: Interface, nexthop: bytes, dst: bytes, packet: bytearray,
                 now: float) -> None:
        if self.hooks_postrouting and not run_hooks(self, self.hooks_postrouting, POSTROUTING,
                                                    4, packet, None, iface, now):
            return
        if dst == LIMITED_BROADCAST or any(dst == _bcast4(a, p) for a, p in iface.v4):
            self._send_eth(iface, BROADCAST_MAC, _ETH_IPV4, packet)
            return
        if dst[0] >= 224 and dst[0] < 240:
            mac = b"\x01\x00\x5e" + bytes([dst[1] & 0x7F]) + dst[2:]
            self._send_eth(iface, mac, _ETH_IPV4, packet)
            return
        mac, probe = iface.arp.lookup(nexthop, now)
        if mac is not None:
            if probe:
                self._arp_request(iface, nexthop, mac)
            self._send_eth(iface, mac, _ETH_IPV4, packet)
            return
        send_now, dropped = iface.arp.enqueue(nexthop, (ETH_P_IPV4, bytes(packet)), now)
        iface.tx_dropped += len(dropped)
        if send_now:
            self._arp_request(iface, nexthop, None)

    # -- IPv4 address conflict detection (RFC 5227, stack/acd.py) --------------------------
    def _acd_arp(self, iface: Interface, request: bool, sha: bytes, spa: bytes, tpa: bytes,
                 now: float) -> None:
        for a in list(iface.acd4.values()):
            what = a.on_arp(request, sha, spa, tpa, iface.mac, now)
            if what == DEFEND:
                self._arp_announce(iface, a.addr)
                self._count("acd_defended")
            elif what == CONFLICT:
                self._count("acd_conflict")
                entry = (a.addr, a.plen)
                if entry in iface.v4:
                    self._unbind4(iface, entry, _ntop(a.addr))

    def _acd_timer(self, iface: Interface, now: float) -> None:
        for a in list(iface.acd4.values()):
            if a.deadline is None or now < a.deadline:
                continue
            what = a.on_timer(now)
            if what == ARP_PROBE:
                buf = bytearray(28)
                arp.build(buf, arp.OP_REQUEST, iface.mac, bytes(4), bytes(6), a.addr)
                self._send_eth(iface, BROADCAST_MAC, _ETH_ARP, buf)
            elif what == ARP_ANNOUNCE:
                if a.usable and (a.addr, a.plen) not in iface.v4:
                    self._bind4(iface, (a.addr, a.plen))
                self._arp_announce(iface, a.addr)

    def _arp_announce(self, iface: Interface, addr: bytes) -> None:
        """An ARP announcement: a request with our address as sender and target."""
        buf = bytearray(28)
        arp.build(buf, arp.OP_REQUEST, iface.mac, addr, bytes(6), addr)
        self._send_eth(iface, BROADCAST_MAC, _ETH_ARP, buf)

    def _arp_request(self, iface: Interface, target: bytes, mac: bytes | None) -> None:
        src = next((a for a, p in iface.v4 if _same_net(a, target, p)),
                   iface.v4[0][0] if iface.v4 else bytes(4))
        buf = bytearray(28)
        arp.build(buf, arp.OP_REQUEST, iface.mac, src, bytes(6), target)
        self._send_eth(iface, mac or BROADCAST_MAC, _ETH_ARP, buf)

    def send_ip6(self, src: bytes | None, dst: bytes, next_header: int,
                 payload: bytes | bytearray, now: float | None = None, *,
                 hop_limit: int = 64) -> None:
        """Send an IPv6 packet, with source fragmentation (RFC 8200 4.5) beyond the PMTU."""
        now = self._now if now is None else now
        if self._is_local6(dst):
            packet = bytearray(40 + len(payload))
            ipv6.build(packet, src or dst, dst, next_header, len(payload), hop_limit=hop_limit)
            packet[40:] = payload
            if self.hooks_output and not run_hooks(self, self.hooks_output, OUTPUT, 6, packet,
                                                   None, self.interfaces[1], now):
                return
            self._loop_local(ETH_P_IPV6, bytes(packet))
            return
        iface, nexthop, src, mtu = self._path(6, src, dst, now)
        n = len(payload)
        if self.hooks_output:
            packet = bytearray(40 + n)
            ipv6.build(packet, src, dst, next_header, n, hop_limit=hop_limit)
            packet[40:] = payload
            if not run_hooks(self, self.hooks_output, OUTPUT, 6, packet, None, iface, now):
                return
        if 40 + n <= mtu:
            packet = bytearray(40 + n)
            ipv6.build(packet, src, dst, next_header, n, hop_limit=hop_limit)
            packet[40:] = payload
            self._output6(iface, nexthop, dst, packet, now)
            return
        chunk = (mtu - 48) & ~7
        ident = int.from_bytes(os.urandom(4), "big")
        for off in range(0, n, chunk):
            piece = payload[off:off + chunk]
            more = off + chunk < n
            packet = bytearray(48 + len(piece))
            ipv6.build(packet, src, dst, ipv6.PROTO_FRAGMENT, 8 + len(piece), hop_limit=hop_limit)
            ipv6.build_fragment(packet, next_header, off, more, ident, offset=40)
            packet[48:] = piece
            self._output6(iface, nexthop, dst, packet, now)

    def _output6(self, iface: Interface, nexthop: bytes, dst: bytes, packet: bytearray,
                 now: float) -> None:
        if self.hooks_postrouting and not run_hooks(self, self.hooks_postrouting, POSTROUTING,
                                                    6, packet, None, iface, now):
            return
        if dst[0] == 0xFF:
            self._send_eth(iface, ipv6.multicast_mac(dst), _ETH_IPV6, packet)
            return
        mac, probe = iface.nd.lookup(nexthop, now)
        if mac is not None:
            if probe:
                self._ns(iface, nexthop, mac, now)
            self._send_eth(iface, mac, _ETH_IPV6, packet)
            return
        send_now, dropped = iface.nd.enqueue(nexthop, (ETH_P_IPV6, bytes(packet)), now)
        iface.tx_dropped += len(dropped)
        if send_now:
            self._ns(iface, nexthop, None, now)

    def _ns(self, iface: Interface, target: bytes, mac: bytes | None, now: float,
            src: bytes | None = None) -> None:
        """Neighbor Solicitation: to the solicited-node group, or unicast (a probe)."""
        if src is None:
            usable = iface.v6_usable()
            ll = [a for a in usable if a[:2] == b"\xfe\x80"]
            src = (ll or usable or [None])[0]
            if src is None:
                return
        dst = target if mac is not None else ipv6.solicited_node(target)
        out = bytearray(32)
        n = icmp6.build_ns(out, src, dst, target, iface.mac if src != ipv6.UNSPECIFIED else None)
        self._send6_direct(iface, src, dst, out[:n], mac, now)

    def _send6_direct(self, iface: Interface, src: bytes, dst: bytes, icmp: bytes | bytearray,
                      mac: bytes | None, now: float) -> None:
        """An NDP message: hop limit 255, no routing, to ``mac`` or the multicast MAC."""
        packet = bytearray(40 + len(icmp))
        ipv6.build(packet, src, dst, ipv6.PROTO_ICMPV6, len(icmp), hop_limit=255)
        packet[40:] = icmp
        if mac is None:
            if dst[0] == 0xFF:
                mac = ipv6.multicast_mac(dst)
            else:
                self._output6(iface, dst, dst, packet, now)
                return
        self._send_eth(iface, mac, _ETH_IPV6, packet)

    def _dad_failed(self, a: Address6) -> None:
        """RFC 4862 5.4.5: the address is someone else's. It stays listed (``ip addr``'s
        "dadfailed") and is never used."""
        a.state = "dadfailed"
        a.dad_deadline = 0.0
        self._gen += 1
        self._count("dad_duplicate")

    def _start_dad(self, iface: Interface, a: Address6, now: float) -> None:
        """RFC 4862 5.4: one NS from :: for the tentative address, then wait."""
        a.dad_deadline = now + DAD_DELAY
        self._ns(iface, a.addr, None, now, src=ipv6.UNSPECIFIED)

    def _send_eth(self, iface: Interface, dst_mac: bytes, etype: bytes,
                  payload: bytes | bytearray) -> None:
        link = iface.link
        if link is None or not iface.up:
            return
        frame = dst_mac + iface.mac + etype + payload
        try:
            link.send(frame)
        except LinkError:
            iface.tx_dropped += 1
            return
        iface.tx_packets += 1
        iface.tx_bytes += len(frame)

    def _xmit(self, iface: Interface, mac: bytes, pkt: tuple[int, bytes]) -> None:
        etype, packet = pkt
        self._send_eth(iface, mac, _ETYPE.pack(etype), packet)

    def _loop_local(self, etype: int, packet: bytes) -> None:
        if len(self._local) >= MAX_LOCAL_QUEUE:
            self._count("local_dropped")
            return
        self._local.append((etype, packet))

    def _drain_local(self, now: float) -> None:
        lo = self.interfaces[1]
        while self._local:
            etype, packet = self._local.popleft()
            try:
                if etype == ETH_P_IPV4:
                    self._input_ip4(lo, memoryview(packet), now, bytes(6))
                else:
                    self._input_ip6(lo, memoryview(packet), now, bytes(6))
            except FrameError:
                self._count("rx_malformed")

    # -- ICMP errors and forwarding ------------------------------------------------------
    def _icmp4_error(self, to: bytes, fr: bytes, kind: int, code: int, packet: memoryview,
                     now: float, mtu: int = 0) -> None:
        if to[0] >= 224 or to == LIMITED_BROADCAST or to == bytes(4):
            return  # RFC 1122 3.2.2: never about broadcasts or from unspecified sources
        out = bytearray(8 + min(len(packet), icmp4.MAX_QUOTE))
        if kind == icmp4.DEST_UNREACHABLE:
            icmp4.build_unreachable(out, code, packet, mtu)
        else:
            icmp4.build_time_exceeded(out, code, packet)
        src = fr if self._is_local4(fr) else self.source4(to)
        try:
            self.send_ip4(src, to, ipv4.PROTO_ICMP, out, now)
        except OSError:
            pass

    def _icmp6_error(self, to: bytes, fr: bytes, kind: int, code: int, packet: memoryview,
                     now: float, rest: int = 0) -> None:
        if to[0] == 0xFF or to == ipv6.UNSPECIFIED:
            return
        src = fr if self._is_local6(fr) else self._source6(to)
        if src is None:
            return
        out = bytearray(8 + min(len(packet), icmp6.MAX_QUOTE))
        icmp6.build_error(out, src, to, kind, code, packet, rest)
        try:
            self.send_ip6(src, to, ipv6.PROTO_ICMPV6, out, now)
        except OSError:
            pass

    def _forward4(self, iface: Interface, packet: memoryview, ttl: int, dst: bytes,
                  now: float) -> None:
        if self.hooks_forward and not run_hooks(self, self.hooks_forward, FORWARD, 4, packet,
                                                iface, None, now):
            return
        src = bytes(packet[12:16])
        if ttl <= 1:
            self._icmp4_error(src, self.source4(src) or bytes(4), icmp4.TIME_EXCEEDED,
                              icmp4.TTL_EXCEEDED, packet, now)
            return
        r = self._route4(dst)
        if r is None:
            self._icmp4_error(src, self.source4(src) or bytes(4), icmp4.DEST_UNREACHABLE,
                              icmp4.UNREACH_NET, packet, now)
            return
        out_iface, nexthop = r
        out = bytearray(packet)
        out[8] = ttl - 1
        # RFC 1624 incremental update of the header checksum for the TTL change
        csum = ((out[10] << 8) | out[11]) + 0x0100
        csum = (csum & 0xFFFF) + (csum >> 16)
        out[10], out[11] = csum >> 8, csum & 0xFF
        if len(out) > out_iface.mtu:
            if out[6] & 0x40:  # DF: RFC 1191 fragmentation needed, with our MTU
                self._icmp4_error(src, self.source4(src) or bytes(4), icmp4.DEST_UNREACHABLE,
                                  icmp4.UNREACH_FRAG_NEEDED, packet, now, mtu=out_iface.mtu)
                return
            hlen = (out[0] & 0x0F) * 4
            fields = ipv4.parse(out)
            body = bytes(out[hlen:])
            self._count("ip4_forward_fragmented")
            chunk = (out_iface.mtu - 20) & ~7
            for off in range(0, len(body), chunk):
                piece = body[off:off + chunk]
                more = off + chunk < len(body) or bool(fields[3] & ipv4.FLAG_MF)
                pkt = bytearray(20 + len(piece))
                ipv4.build(pkt, fields[7], fields[8], fields[6], len(piece), ttl=ttl - 1,
                           ident=fields[2], flags=ipv4.FLAG_MF if more else 0,
                           frag_offset=fields[4] + off, tos=fields[0])
                pkt[20:] = piece
                self._output4(out_iface, nexthop, dst, pkt, now)
            return
        self._count("ip4_forwarded")
        self._output4(out_iface, nexthop, dst, out, now)

    def _forward6(self, iface: Interface, packet: memoryview, hlim: int, dst: bytes,
                  now: float) -> None:
        src = bytes(packet[8:24])
        if src[:2] == b"\xfe\x80" or dst[:2] == b"\xfe\x80":
            return  # link-local scope is never forwarded
        if self.hooks_forward and not run_hooks(self, self.hooks_forward, FORWARD, 6, packet,
                                                iface, None, now):
            return
        if hlim <= 1:
            self._icmp6_error(src, bytes(16), icmp6.TIME_EXCEEDED, 0, packet, now)
            return
        r = self._route6(dst)
        if r is None:
            self._icmp6_error(src, bytes(16), icmp6.DEST_UNREACHABLE, icmp6.UNREACH_NO_ROUTE,
                              packet, now)
            return
        out_iface, nexthop = r
        if len(packet) > out_iface.mtu:
            self._icmp6_error(src, bytes(16), icmp6.PACKET_TOO_BIG, 0, packet, now,
                              rest=out_iface.mtu)
            return
        out = bytearray(packet)
        out[7] = hlim - 1
        self._count("ip6_forwarded")
        self._output6(out_iface, nexthop, dst, out, now)

    # -- UDP and ping ------------------------------------------------------------------
    def udp_bind(self, port: int, handler: UdpHandler, addr: str | None = None, *,
                 on_error: Callable[[int, bytes, int], None] | None = None) -> None:
        """Deliver datagrams for ``port`` (on ``addr``, or any address) to ``handler``.
        ``on_error(errno, destination, port)``: a datagram sent from this port could not
        go (EHOSTUNREACH: nobody answered for its next hop)."""
        key = (ipaddress.ip_address(addr).packed if addr else b"", port)
        if key in self.udp:
            raise OSError(errno.EADDRINUSE, f"UDP port {port} is in use")
        self.udp[key] = handler
        if on_error is not None:
            self.udp_errors[key] = on_error

    def udp_unbind(self, port: int, addr: str | None = None) -> None:
        key = (ipaddress.ip_address(addr).packed if addr else b"", port)
        self.udp.pop(key, None)
        self.udp_errors.pop(key, None)

    def udp_send(self, data: bytes, dst: tuple[str, int], sport: int,
                 src: str | None = None, now: float | None = None) -> None:
        addr = ipaddress.ip_address(dst[0])
        d = addr.packed
        s = ipaddress.ip_address(src).packed if src else (
            self.source4(d) if addr.version == 4 else self._source6(d))
        if s is None:
            raise self._no_source(addr.version, d)
        out = bytearray(8 + len(data))
        udp.build(out, s, d, sport, dst[1], data)
        if addr.version == 4:
            self.send_ip4(s, d, ipv4.PROTO_UDP, out, now)
        else:
            self.send_ip6(s, d, ipv6.PROTO_UDP, out, now)
        self._drain_local(self._now if now is None else now)

    def send_echo(self, dst: str, ident: int, seq: int, data: bytes = b"",
                  now: float | None = None) -> None:
        addr = ipaddress.ip_address(dst)
        if addr.version == 4:
            out = bytearray(8 + len(data))
            icmp4.build_echo(out, ident, seq, data)
            self.send_ip4(None, addr.packed, ipv4.PROTO_ICMP, out, now)
        else:
            src = self._source6(addr.packed)
            if src is None:
                raise self._no_source(6, addr.packed)
            out = bytearray(8 + len(data))
            icmp6.build_echo(out, src, addr.packed, ident, seq, data)
            self.send_ip6(src, addr.packed, ipv6.PROTO_ICMPV6, out, now)
        self._drain_local(self._now if now is None else now)

    # -- timers ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        times = [self.reasm4.next_deadline(), self.reasm6.next_deadline(),
                 self.tcp.next_deadline()]
        if self.pmtu:
            times.append(next(iter(self.pmtu.values()))[1])
        for iface in self.interfaces.values():
            times.append(iface.arp.next_deadline())
            times.append(iface.nd.next_deadline())
            times += [a.dad_deadline for a in iface.v6 if a.state == "tentative"]
            if iface.acd4:
                times += [a.deadline for a in iface.acd4.values()]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, now: float) -> None:
        self._now = now
        self.tcp.on_timer(now)
        if self.pmtu:
            self._pmtu_expire(now)
        for key, first in self.reasm4.expire(now):
            if first is not None:  # RFC 792: time exceeded in reassembly, to the sender
                self._icmp4_error(key[0], key[1], icmp4.TIME_EXCEEDED,
                                  icmp4.REASSEMBLY_TIME_EXCEEDED, memoryview(first), now)
        self.reasm6.expire(now)
        for iface in self.interfaces.values():
            requests, failed = iface.arp.on_timer(now)
            for target, mac in requests:
                self._arp_request(iface, target, mac)
            for etype, packet in failed:  # type: ignore[misc]
                self._unreachable(etype, packet, now)
            requests, failed = iface.nd.on_timer(now)
            for target, mac in requests:
                self._ns(iface, target, mac, now)
            for etype, packet in failed:  # type: ignore[misc]
                self._unreachable(etype, packet, now)
            if iface.acd4:
                self._acd_timer(iface, now)
            for a in iface.v6:
                if a.state == "tentative" and a.dad_deadline and now >= a.dad_deadline:
                    a.state = "preferred"
                    self._gen += 1  # the fast input path's address sets change
        self._drain_local(now)

    def _unreachable(self, etype: int, packet: bytes, now: float) -> None:
        """Address resolution failed (the neighbor cache gave the packets back): host
        unreachable to the packet's source if it is not us, else to the packet's owner
        here (``_local_unreachable``), as Linux's ICMP error to itself."""
        mv = memoryview(packet)
        if etype == ETH_P_IPV4:
            src = bytes(mv[12:16])
            if not self._is_local4(src):
                self._icmp4_error(src, bytes(mv[16:20]), icmp4.DEST_UNREACHABLE,
                                  icmp4.UNREACH_HOST, mv, now)
            elif not (mv[6] & 0x1F or mv[7]):  # a first fragment or a whole datagram
                hlen = (mv[0] & 0x0F) * 4
                self._local_unreachable(4, mv[9], src, bytes(mv[16:20]), mv[hlen:])
            self._count("arp_failed")
        else:
            src = bytes(mv[8:24])
            if not self._is_local6(src):
                self._icmp6_error(src, bytes(mv[24:40]), icmp6.DEST_UNREACHABLE,
                                  icmp6.UNREACH_ADDRESS, mv, now)
            else:
                nh, off = mv[6], ipv6.HEADER_LEN
                if nh == ipv6.PROTO_FRAGMENT and len(mv) >= off + 8:  # our own: the first
                    if (mv[off + 2] << 8 | mv[off + 3]) & 0xFFF8:
                        nh = -1
                    else:
                        nh, off = mv[off], off + 8
                self._local_unreachable(6, nh, src, bytes(mv[24:40]), mv[off:])
            self._count("nd_failed")

    def _local_unreachable(self, family: int, proto: int, src: bytes, dst: bytes,
                           transport: memoryview) -> None:
        """EHOSTUNREACH to whoever here sent ``transport``: a connecting TCP socket fails,
        a UDP port's owner and a ping hear of it."""
        if len(transport) < 8:
            return
        sport = (transport[0] << 8) | transport[1]
        dport = (transport[2] << 8) | transport[3]
        if proto == ipv4.PROTO_TCP:
            self.tcp.unreachable(family, src, sport, dst, dport, errno.EHOSTUNREACH)
        elif proto == ipv4.PROTO_UDP:
            fn = self.udp_errors.get((src, sport)) or self.udp_errors.get((b"", sport))
            if fn is not None:
                fn(errno.EHOSTUNREACH, dst, dport)
        elif (family == 4 and proto == ipv4.PROTO_ICMP and transport[0] == icmp4.ECHO_REQUEST) \
                or (family == 6 and proto == ipv6.PROTO_ICMPV6
                    and transport[0] == icmp6.ECHO_REQUEST):
            fn2 = self.echo_errors.get((family, (transport[4] << 8) | transport[5]))
            if fn2 is not None:
                fn2(errno.EHOSTUNREACH)

    def ping(self, dst: str, count: int = 1, timeout: float = 2.0, size: int = 56) -> list[float]:
        """Send ``count`` echo requests to ``dst``; return the round-trip times (seconds)
        of the replies that came back within ``timeout`` each. Blocks the caller.

        Raises OSError(EHOSTUNREACH) when nobody answered the address resolution for
        ``dst`` (about 3 s of ARP or NS) before any reply came: it stops there."""
        import threading
        import time

        family = ipaddress.ip_address(dst).version
        ident = next(_ident) & 0xFFFF
        rtts: list[float] = []
        got = threading.Event()
        sent_at = [0.0]
        expect = [b""]

        def on_reply(body: bytes, now: float) -> None:
            if body == expect[0]:
                rtts.append(time.monotonic() - sent_at[0])
                got.set()

        failed: list[int] = []

        def on_error(err: int) -> None:
            failed.append(err)
            got.set()

        self.echo_waiters[(family, ident)] = on_reply
        self.echo_errors[(family, ident)] = on_error
        try:
            for seq in range(count):
                expect[0] = seq.to_bytes(2, "big") + os.urandom(max(0, size - 2))
                got.clear()
                sent_at[0] = time.monotonic()
                with self.locked():
                    self.send_echo(dst, ident, seq, expect[0], time.monotonic())
                got.wait(timeout)
                if failed and not rtts:
                    raise OSError(failed[0], f"{dst}: {os.strerror(failed[0])}")
        finally:
            self.echo_waiters.pop((family, ident), None)
            self.echo_errors.pop((family, ident), None)
        return rtts

    def locked(self):
        """Hold the stack's lock (the driver's) for calls from application threads; on
        exit the driver re-arms the stack's timers."""
        import contextlib

        @contextlib.contextmanager
        def hold():
            lock = self.driver.lock if self.driver is not None else contextlib.nullcontext()
            with lock:
                yield self
            if self.driver is not None:
                self.driver.touch(self)

        return hold()

    def close(self) -> None:
        """Stop the stack and close its links. Its connections are reset, and the sockets
        on it see that at once (a blocked recv or accept fails instead of hanging)."""
        with self.locked():
            for ep in list(self.tcp.conns.values()):
                ep.abort(errno.ECONNABORTED)
            for listener in list(self.tcp.listeners.values()):
                listener.close()
        if self.driver is not None:
            self.driver.detach(self, close_links=True)  # type: ignore[attr-defined]
        for iface in self.interfaces.values():
            if iface.link is not None and not iface.link.closed:
                iface.link.close()

    def __repr__(self) -> str:
        return f"<Stack {self.name} {' '.join(self.addresses())}>"

    def describe(self) -> list[str]:
        """``ip addr``-like lines, for debugging."""
        lines = []
        for i in self.interfaces.values():
            state = "UP" if i.up else "DOWN"
            lines.append(f"{i.index}: {i.name}: <{state}> mtu {i.mtu} link {mac_to_str(i.mac)}")
            lines += [f"    inet {ipaddress.ip_address(a)}/{p}" for a, p in i.v4]
            lines += [f"    inet {ipaddress.ip_address(a.addr)}/{a.plen} {a.state}"
                      for a in i.acd4.values() if not a.usable]
            lines += [f"    inet6 {ipaddress.ip_address(a.addr)}/{a.plen} {a.state}" for a in i.v6]
        return lines


#: the upper-layer headers a first fragment must hold in full (RFC 7112; as Linux's
#: ipv6frag_thdr_truncated): TCP's and UDP's fixed headers, ICMPv6's type, code, checksum
#: and 4 more bytes
_UPPER_HEADER = {ipv6.PROTO_TCP: 20, ipv6.PROTO_UDP: 8, ipv6.PROTO_ICMPV6: 8}


def _whole_chain(data: memoryview, nh: int) -> bool:
    """Whether ``data`` (a first fragment's data, headers after the Fragment header
    first) holds every extension header and the upper-layer header."""
    try:
        proto, off, _ = ipv6.walk(data, nh, offset=0)
    except ipv6.ParameterProblem:
        return True  # complete enough to be wrong: the reassembled datagram says how
    except FrameError:
        return False
    return len(data) - off >= _UPPER_HEADER.get(proto, 0)


def _bcast4(addr: bytes, plen: int) -> bytes:
    if plen >= 31:
        return b""
    host = (1 << (32 - plen)) - 1
    return (int.from_bytes(addr, "big") | host).to_bytes(4, "big")


def _same_net(a: bytes, b: bytes, plen: int) -> bool:
    if plen == 0:
        return True
    shift = 32 - plen
    return int.from_bytes(a, "big") >> shift == int.from_bytes(b, "big") >> shift


def _ntop(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))
