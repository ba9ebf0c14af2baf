"""The Stack: interfaces, addresses and routes, name settings, timers; a facade over the
protocol modules.

A Stack is a plain object (thousands can live in one process). Its protocol logic is
sans-IO at the edges: ``input(iface, frame, now)`` takes a frame that arrived,
``on_timer(now)`` runs what is due and ``next_deadline()`` says when to call it again.
Frames go out through each interface's link (``stack.links``, by interface index). A
``StackRunner`` (``stack/runner.py``) runs one event loop per process that feeds every
stack its frames and its time (on the stack's ``clock``).

Its protocol state is plain data: interfaces, addresses, routes, neighbors, UDP ports,
TCP connections with their buffers and timers, pings. None of it holds a thread, lock,
socket, link, file or function: owners above the core are named by handles
(``stack/upper.py``). What runs the state is kept apart, on the Stack object: the lock,
the runner, the links, the owners (``upper``), the clock and installed hooks
(``RUNTIME``). Pickling or copying a Stack takes the state without them.

The class is a facade over one module per concern, each a mixin of it: the IP layer's
output path, routes and hooks (``stack/ip.py``), IP input (``stack/ipinput.py``), direct
TCP input and receive coalescing (``stack/gro.py``), ARP, NDP's solicitations, DAD and
ACD (``stack/nd.py``), ICMP and path MTU discovery (``stack/icmp.py``), forwarding
(``stack/forward.py``), UDP (``stack/udplayer.py``), the packet filter and connection
tracking (``stack/filter.py``); TCP is ``self.tcp`` (``stack/tcplayer.py``).

Not here yet (see the project's issues): NAT (its hook points are in ``stack/ip.py``).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from threadnet.errors import LinkError
from threadnet.link import Link
from threadnet.stack import autoconf
from threadnet.stack.acd import Acd
from threadnet.stack.agents import INFINITY, Agent, Agents
from threadnet.stack.config import parse_config
from threadnet.stack.filter import FilterApi
from threadnet.stack.forward import Forwarding
from threadnet.stack.gro import DirectInput
from threadnet.stack.icmp import MIN_PMTU4 as MIN_PMTU4  # (re-exported: moved there)
from threadnet.stack.icmp import PMTU_EXPIRE as PMTU_EXPIRE
from threadnet.stack.icmp import PMTU_MAX_ENTRIES as PMTU_MAX_ENTRIES
from threadnet.stack.icmp import EchoSession, Icmp
from threadnet.stack.ip import IP_ID_BUCKETS, Hook, IpLayer
from threadnet.stack.ipinput import IpInput
from threadnet.stack.nd import DAD_DELAY as DAD_DELAY
from threadnet.stack.nd import NeighborDiscovery
from threadnet.stack.neighbor import NeighborCache
from threadnet.stack.reassembly import Reassembler
from threadnet.stack.resolvconf import ResolverConfig
from threadnet.stack.route import Route, RoutingTable
from threadnet.stack.tcplayer import TcpLayer
from threadnet.stack.udplayer import Udp
from threadnet.stack.udplayer import UdpHandler as UdpHandler
from threadnet.stack.upper import Owners
from threadnet.wire import icmp4
from threadnet.wire.ethernet import mac_to_str


@dataclass(slots=True)
class Address6:
    addr: bytes
    plen: int
    state: str = "tentative"  # tentative -> preferred, or dadfailed (RFC 4862 5.4.5)
    dad_deadline: float = 0.0
    #: when it goes, and when it stops being preferred (the stack's clock; inf: never)
    valid_until: float = INFINITY
    preferred_until: float = INFINITY
    #: past its preferred lifetime: still ours, never chosen as a source (RFC 4862 5.5.4)
    deprecated: bool = False
    #: who made it, as iproute2 says: "kernel_ll" (link-local), "static", "dhcp", "ra"
    origin: str = "static"
    #: iproute2's address flags beyond the state: "temporary", "mngtmpaddr",
    #: "noprefixroute"
    flags: tuple[str, ...] = ()


class Interface:
    """One network interface of a stack: MAC, MTU, addresses, neighbors (plain data: its
    link, if it is not the loopback, is the stack's ``links[index]``)."""

    def __init__(self, index: int, name: str, mac: bytes, mtu: int, *,
                 loopback: bool = False) -> None:
        self.index = index
        self.name = name
        self.loopback = loopback
        self.mac = mac
        self.mtu = mtu
        self.up = False
        self.v4: list[tuple[bytes, int]] = []
        self.v6: list[Address6] = []
        #: IPv4 addresses under conflict detection (RFC 5227, ``acd``): while probing, or
        #: after a conflict, an address is here and not in ``v4``
        self.acd4: dict[bytes, Acd] = {}
        #: IPv4 addresses with a lifetime (a DHCP lease): address -> (valid until,
        #: preferred until, origin); an address not here is static and forever
        self.v4_life: dict[bytes, tuple[float, float, str]] = {}
        #: IPv6 multicast groups joined beyond all-nodes and the solicited-node ones
        #: (an agent's, e.g. ff02::1:2 for a DHCPv6 server), with a count of joiners
        self.groups6: dict[bytes, int] = {}
        self.arp = NeighborCache()
        self.nd = NeighborCache()
        self.rx_packets = self.rx_bytes = self.tx_packets = self.tx_bytes = 0
        self.rx_errors = self.tx_dropped = 0
        #: the link takes and gives large TCP segments and partial checksums
        #: (a ``tap://...[offload]``): ``Stack.input`` takes its headers, TCP sends through it
        self.offload = False

    def v6_usable(self) -> list[bytes]:
        """The addresses to choose a source from: preferred ones first, then deprecated
        ones (RFC 6724 rule 3: avoid them while there is another)."""
        usable = [a.addr for a in self.v6 if a.state == "preferred" and not a.deprecated]
        return usable + [a.addr for a in self.v6 if a.state == "preferred" and a.deprecated]


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


class Stack(IpLayer, IpInput, DirectInput, NeighborDiscovery, Icmp, Forwarding, Udp, Agents,
            FilterApi):
    """A TCP/IP stack instance (IPv4 and IPv6 in one engine).

    ``clock`` (default ``time.monotonic``) is the time source for calls made outside
    ``input``/``on_timer`` (socket calls, addresses added, links set up, a ping started):
    read only at that boundary (``_api_now``), never inside protocol processing, which
    takes the caller's ``now``. Tests that drive the stack on fake time pass a fake one
    (the ``clock`` attribute may still be replaced after construction). ``acd``: IPv4 addresses go through conflict detection (RFC 5227) before use, unless
    ``addr_add`` says otherwise (the configuration item ``acd`` turns it on too).

        >>> s = Stack("eth,ip=10.0.0.5/24,gw=10.0.0.1", link="vde:///tmp/sw")
        >>> s.addresses()
        ['10.0.0.5/24', ...]

    This is the protocol core: it imports nothing from the socket API. ``threadnet.Stack``
    (``stack/api.py``) is this class plus ``socket``, ``publish``, the name lookups and the
    per-process runner by default; a core Stack runs only under a runner it is given.
    """

    #: what ``resolver`` makes: here the settings only; ``threadnet.Stack`` sets the
    #: lookups' class (``stack/resolver.py``), so the core never imports it
    resolver_class: type[ResolverConfig] = ResolverConfig
    #: the attributes that run the state and are not part of it: left out when a stack
    #: is pickled or copied, and made anew (``_runtime``) when it is restored
    RUNTIME = frozenset({
        "lock", "_held", "runner", "_on_clock", "links", "upper", "clock",
        "hooks_prerouting", "hooks_input", "hooks_forward", "hooks_output",
        "hooks_postrouting", "_rx_hooked", "raw_taps", "packet_taps"})

    def __init__(self, config: str | None = None, link: Link | str | None = None, *,
                 name: str | None = None, forwarding: bool = False,
                 runner: object | None = None, acd: bool = False,
                 clock: Callable[[], float] | None = None) -> None:
        self.name = name or f"stack{id(self):x}"
        self._runtime(clock)
        self.acd = acd
        # a runner runs this stack on its clock; without one (None or False) the caller's
        # explicit times are the stack's only time, unless it sets a clock (see _api_now)
        self._on_clock = bool(runner)
        self.interfaces: dict[int, Interface] = {}
        self.routes4 = RoutingTable(4)
        self.routes6 = RoutingTable(6)
        self.reasm4 = Reassembler()
        self.reasm6 = Reassembler(timeout=60.0)
        #: learned path MTUs: destination -> (MTU, expiry time, locked: send without DF),
        #: in expiry order (an update moves its entry to the end)
        self.pmtu: OrderedDict[bytes, tuple[int, float, bool]] = OrderedDict()
        self.forwarding = forwarding
        #: bound UDP ports: (address or b"", port) -> the owner's handle (``upper``)
        self.udp: dict[tuple[bytes, int], int] = {}
        #: the catch-all (transparent) mode, for user-mode networking (``slirp/``): None,
        #: or the handle of the owner whose ``on_echo`` takes echo requests to addresses
        #: not ours. While set, unicast to any address is delivered as if local: TCP to
        #: a port nobody listens on goes to the listener at ``CATCH_ALL``, UDP to an
        #: unbound port to the port bound at ``CATCH_ALL``; each keeps the original
        #: destination as its local address (Linux's IP_TRANSPARENT with TPROXY)
        self.catch_all: int | None = None
        #: pings under way (``start_ping``), run by ``on_timer``, and by (family,
        #: identifier), for their replies and errors
        self.echo_sessions: list[EchoSession] = []
        self.echo_waiters: dict[tuple[int, int], EchoSession] = {}
        #: the protocol engines on its interfaces (``stack/agents.py``): DHCP, RD, RA
        self.agents: list[Agent] = []
        self.agent_udp: dict[tuple[int, int, int], Agent] = {}
        self.agent_icmp6: dict[tuple[int, int], list[Agent]] = {}
        self.stats: dict[str, int] = {}
        self._local: deque[tuple[int, bytes]] = deque()
        self.tcp = TcpLayer(self)
        self._ip_ids = [0] * IP_ID_BUCKETS
        self._now = 0.0
        self._resolver: ResolverConfig | None = None  # made on first use (resolver_class)
        # bumped by every change of interfaces and addresses: caches of the data path
        # (local address sets, TCP connections' output paths) check it
        self._gen = 0
        self._local4: frozenset[bytes] = frozenset()
        self._local4_gen = -1
        self._local6: dict[Interface, frozenset[bytes]] = {}
        self._local6_gen = -1
        self._batch_ifaces: list[Interface] = []
        lo = Interface(1, "lo", bytes(6), 65536, loopback=True)
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
                if isinstance(link, str):  # (a refused MTU...): no leak
                    for opened in self.links.values():
                        opened.close()
                raise
        if runner:
            runner.attach(self)  # type: ignore[attr-defined]

    def _runtime(self, clock: Callable[[], float] | None = None) -> None:
        """Make what runs the state (``RUNTIME``): a new lock, no runner, no links, no
        owners, no hooks, the clock (default ``time.monotonic``)."""
        self.clock: Callable[[], float] = time.monotonic if clock is None else clock
        self.runner = None
        self._on_clock = False
        #: this stack's state lock (see ``locked``); a runner holds it while it feeds us
        self.lock = threading.RLock()
        self._held = _Held(self)
        #: each interface's link by interface index (the loopback has none)
        self.links: dict[int, Link] = {}
        #: the owners of UDP ports, TCP connections and listeners, pings, by handle
        self.upper = Owners()
        # the IP layer's hook points (stack/ip.py): empty tuples cost one test each
        self.hooks_prerouting: tuple[Hook, ...] = ()
        self.hooks_input: tuple[Hook, ...] = ()
        self.hooks_forward: tuple[Hook, ...] = ()
        self.hooks_output: tuple[Hook, ...] = ()
        self.hooks_postrouting: tuple[Hook, ...] = ()
        self._rx_hooked = False  # prerouting or input hooks: the direct input paths are off
        # raw and packet sockets' taps (stack/raw.py): empty, one test each
        self.raw_taps: tuple[Any, ...] = ()
        self.packet_taps: dict[int, tuple[Any, ...]] = {}

    def __getstate__(self) -> dict[str, Any]:
        """The protocol state, without what runs it (``RUNTIME``): what ``pickle`` and
        ``copy`` take. The owners' next handle goes with it, so handles stay unique."""
        state = {k: v for k, v in self.__dict__.items() if k not in self.RUNTIME}
        state["_next_handle"] = self.upper.next_handle
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A restored stack: its state, with a new lock and no runner, links, owners or
        hooks yet (give it links with ``set_link``, its owners with ``upper.put``)."""
        state = dict(state)
        next_handle = state.pop("_next_handle", 1)
        self.__dict__.update(state)
        self._runtime()
        self.upper.next_handle = next_handle
        self._gen += 1  # cached output paths named the old links

    def set_link(self, ref: int | str, link: Link) -> None:
        """Give an interface without a link (one of a restored stack) its link."""
        iface = self.interface(ref)
        if iface.loopback:
            raise ValueError("the loopback interface has no link")
        if iface.index in self.links:
            raise ValueError(f"interface {iface.name} has a link")
        iface.offload = bool(getattr(link, "vnet_hdr", False))
        if iface.offload:
            link.enable_offload()  # type: ignore[attr-defined]
        self.links[iface.index] = link
        self._gen += 1
        if self.runner is not None:
            self.runner.watch(self, iface)  # type: ignore[attr-defined]

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
        iface = Interface(index, name, mac or random_mac(), mtu or link.max_frame - 18)
        if getattr(link, "vnet_hdr", False):
            link.enable_offload()  # type: ignore[attr-defined]
            iface.offload = True
        self.interfaces[index] = iface
        self.links[index] = link
        self._gen += 1
        if self.runner is not None:
            self.runner.watch(self, iface)  # type: ignore[attr-defined]
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
        """The time of a call from outside ``input``/``on_timer`` (a socket's send or
        close, an address added, a ping started): ``now`` when given, else the stack's
        clock, the real time a runner runs it on. This is the one place the core reads
        its clock, at the boundary with the layers above; protocol processing below it
        takes ``now`` from its caller. A stack without a runner and with the default
        clock knows only the times its caller passed to ``input``/``on_timer``: the last
        of them. (Before, the public API used that last time always: 0.0 for a new stack,
        so the runner's first tick ended the DAD of every configured address.)"""
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
            self._add6(iface, eui64_link_local(iface.mac), 64, now).origin = "kernel_ll"
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
        check_mtu(self.links.get(iface.index), mtu, iface.name)
        iface.mtu = mtu
        self._gen += 1

    def addr_add(self, ref: int | str, cidr: str, now: float | None = None, *,
                 acd: bool | None = None, valid_lft: float | None = None,
                 preferred_lft: float | None = None, origin: str = "static",
                 flags: tuple[str, ...] = (), prefix_route: bool = True) -> None:
        """Add an address. An IPv6 one is tentative until duplicate address detection
        (RFC 4862) ends, about a second from now; an IPv4 one is used at once, unless
        ``acd`` (default: the stack's ``acd``) asks for conflict detection first (RFC
        5227, some 5-9 seconds): an address found in use elsewhere stays listed, marked
        ``conflict``, and is never used.

        ``valid_lft``/``preferred_lft``: seconds from ``now`` until the address goes, and
        until it is deprecated (None: forever). ``origin``: who made it ("static",
        "dhcp", "ra"). ``flags``: iproute2's address flags (``noprefixroute`` also
        means no connected route). ``prefix_route=False``: no connected route either,
        without the flag (SLAAC's addresses, whose on-link route is the router's to
        give, and which Linux shows without it)."""
        iface = self.interface(ref)
        net = ipaddress.ip_interface(cidr)
        now = self._api_now(now)
        valid = INFINITY if valid_lft is None else now + valid_lft
        preferred = valid if preferred_lft is None else min(now + preferred_lft, valid)
        self._gen += 1
        if net.version == 4:
            entry = (net.ip.packed, net.network.prefixlen)
            if entry in iface.v4 or net.ip.packed in iface.acd4:
                raise FileExistsError(f"{cidr} is already on {iface.name}")
            if valid != INFINITY or origin != "static":
                iface.v4_life[entry[0]] = (valid, preferred, origin)
            if (self.acd if acd is None else acd) and not iface.loopback:
                iface.acd4[entry[0]] = Acd(entry[0], entry[1], now, self.tcp.rng)
                return
            self._bind4(iface, entry)
        else:
            if any(a.addr == net.ip.packed for a in iface.v6):
                raise FileExistsError(f"{cidr} is already on {iface.name}")
            a = self._add6(iface, net.ip.packed, net.network.prefixlen, now)
            a.valid_until, a.preferred_until, a.origin = valid, preferred, origin
            a.flags = tuple(flags)
            if net.network.prefixlen < 128 and prefix_route and "noprefixroute" not in a.flags:
                self._kernel_route(self.routes6, net.network, iface)
            if iface.loopback:
                a.state = "preferred"

    def addr_set_lifetimes(self, ref: int | str, addr: str, valid_lft: float | None,
                           preferred_lft: float | None, now: float | None = None) -> None:
        """New lifetimes for an address (a renewed lease, a new router advertisement)."""
        iface = self.interface(ref)
        packed = ipaddress.ip_address(addr).packed
        now = self._api_now(now)
        valid = INFINITY if valid_lft is None else now + valid_lft
        preferred = valid if preferred_lft is None else min(now + preferred_lft, valid)
        self._gen += 1  # (the cached next end of a lifetime)
        if len(packed) == 4:
            if packed not in iface.v4_life and not any(a == packed for a, _ in iface.v4):
                raise OSError(errno.EADDRNOTAVAIL, f"{addr} is not on {iface.name}")
            origin = iface.v4_life.get(packed, (0, 0, "static"))[2]
            iface.v4_life[packed] = (valid, preferred, origin)
            return
        a = next((a for a in iface.v6 if a.addr == packed), None)
        if a is None:
            raise OSError(errno.EADDRNOTAVAIL, f"{addr} is not on {iface.name}")
        a.valid_until, a.preferred_until = valid, preferred
        if a.deprecated and preferred > now:
            a.deprecated = False
            self._gen += 1

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
            iface.v4_life.pop(entry[0], None)
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
                  metric: int = 0, *, proto: str = "static", lifetime: float | None = None,
                  pref: str = "medium", replace: bool = False,
                  now: float | None = None) -> None:
        """Add a route: ``dst`` a network or "default", through gateway ``via`` and/or
        interface ``dev``. ``lifetime``: seconds until it goes (a router's, RFC 4861);
        ``replace``: an existing route to ``dst`` with that metric (and, for IPv6, that
        gateway) is replaced instead of refused with FileExistsError."""
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
        expires = None if lifetime is None else self._api_now(now) + lifetime
        table.add(Route(net, gw, ifindex, metric, proto, expires, pref), replace=replace)
        self._gen += 1

    def route_del(self, dst: str, via: str | None = None) -> None:
        net = ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst)
        if dst == "default" and via and ipaddress.ip_address(via).version == 6:
            net = ipaddress.ip_network("::/0")
        table = self.routes4 if net.version == 4 else self.routes6
        table.delete(net, gateway=ipaddress.ip_address(via) if via else None)

    def configure(self, text: str, now: float | None = None) -> None:
        """Apply a libioth-style configuration string, e.g. ``"eth,ip=10.0.0.5/24,gw=10.0.0.1"``."""
        cfg = parse_config(text)
        autoconf.check(cfg)  # a method threadnet lacks is refused before anything changes
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
        autoconf.apply(self, iface, cfg, self._api_now(now))

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

    def begin_batch(self) -> bool:
        """Start a batch of ``input`` calls (a runner's receive batch): work that can be
        done once for all of them waits for ``end_batch``. Returns False when a batch is
        open already; only the call that opened it ends it."""
        if not self.tcp.begin_batch():
            return False
        # and links that can send a batch of frames with one system call queue them
        batched = []
        for index, link in self.links.items():
            begin = getattr(link, "begin_tx", None)
            if begin is not None:
                begin()
                batched.append(self.interfaces[index])
        self._batch_ifaces = batched
        return True

    def end_batch(self, now: float | None = None) -> None:
        """End the batch: the connections its input touched send, at ``now`` (default:
        the time of the batch's latest segment; no clock is read)."""
        try:
            self.tcp.end_batch(now)
        finally:
            ifaces, self._batch_ifaces = self._batch_ifaces, []
            for iface in ifaces:
                try:
                    self.links[iface.index].end_tx()  # type: ignore[attr-defined]
                except LinkError:
                    iface.tx_dropped += 1

    # -- timers ------------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        """When ``on_timer`` is next due (None: nothing pending). It runs after every
        application call, so what changes only with the addresses (DAD, lifetimes) is
        cached until the next change (``_addresses_deadline``)."""
        times = [self.reasm4.next_deadline(), self.reasm6.next_deadline(),
                 self.tcp.next_deadline(), self._addresses_deadline()]
        if self.echo_sessions:
            times += [p.next_deadline() for p in self.echo_sessions]
        if self.agents:
            times.append(self._agents_deadline())
        if self.pmtu:
            times.append(next(iter(self.pmtu.values()))[1])
        for iface in self.interfaces.values():
            times.append(iface.arp.next_deadline())
            times.append(iface.nd.next_deadline())
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
        for ping in list(self.echo_sessions):
            ping.on_timer(now)
        self._lifetimes_timer(now)
        if self.agents:
            self._agents_timer(now)
        self._drain_local(now)

    def locked(self) -> _Held:
        """Hold the stack's lock for a call from an application thread (``with
        stack.locked():``); reentrant. Leaving it wakes the runner only if the call
        moved the stack's next deadline earlier than its armed timer."""
        return self._held

    def close(self) -> None:
        """Stop the stack and close its links. Its connections are reset, and the sockets
        on it see that at once (a blocked recv or accept fails instead of hanging). Its
        agents stop first (a DHCP client releases its lease)."""
        with self.locked():
            now = self._api_now(None)
            for agent in list(reversed(self.agents)):
                try:
                    self.remove_agent(agent, now)
                except Exception:  # noqa: BLE001 (closing goes on)
                    self._count("agent_errors")
            for ep in list(self.tcp.conns.values()):
                ep.abort(errno.ECONNABORTED, now)
            for listener in list(self.tcp.listeners.values()):
                listener.close(now)
        if self.runner is not None:
            self.runner.detach(self, close_links=True)  # type: ignore[attr-defined]
        for link in self.links.values():
            if not link.closed:
                link.close()

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


class _Held:
    """``Stack.locked()``: one reusable object per stack (a generator-based context
    manager cost microseconds per call). ``depth`` counts the holder's nesting; only it
    changes it, under the lock."""

    __slots__ = ("stack", "depth")

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.depth = 0

    def __enter__(self) -> Stack:
        self.stack.lock.acquire()
        self.depth += 1
        return self.stack

    def __exit__(self, *exc: object) -> None:
        stack = self.stack
        try:
            self.depth -= 1
            runner = stack.runner
            if not self.depth and runner is not None:
                runner.rearm(stack)  # type: ignore[attr-defined]
        finally:
            stack.lock.release()
