"""Router discovery and stateless address autoconfiguration: an agent on one interface,
kind ``rd`` (``stack/agents.py``), behind the configuration words ``rd``/``rd6``,
``auto``/``auto6`` and ``slaac``.

It solicits routers when it starts (RFC 4861 6.3.7: up to 3 solicitations 4 s apart, the
first after a random delay of up to 1 s, sent once the link-local address has passed
DAD) and reads their advertisements (6.3.4): each router with a non-zero lifetime becomes
a default route (proto ``ra``, metric 1024 as Linux gives it, with the router's lifetime
and preference, RFC 4191 2.2), each on-link prefix (L flag) a connected route with the
prefix's valid lifetime, each route information option (RFC 4191 2.3, not the ::/0 one)
a route through the router; the MTU option sets the interface's MTU when it is 1280 or
more and the link carries it; RDNSS and DNSSL (RFC 8106) go to the resolver
(``resolver.learn``) until their lifetimes end; a router's link-layer address goes in the
neighbor cache. The cur hop limit, reachable time,
retransmission timer and the M and O flags are recorded (``describe``); no DHCPv6 client
is started on M.

With ``slaac`` it also makes an address in each autonomous /64 prefix (A flag; RFC 4862
5.5.3), with the 2-hour rule for lifetimes it is told later (5.5.3 e). The interface
identifier is stable and opaque (RFC 7217): the first 64 bits of

    SHA-256(prefix[:8] | len(ifname) | ifname | len(net_id) | net_id | counter (4 bytes,
            big-endian) | secret)

where the secret is the stack's (``stable_secret``, made once per stack) and ``counter``
starts at 0 and goes up after a DAD failure (a new address 1 s later, at most 3 times,
RFC 7217 6) or for a reserved identifier (RFC 5453). With ``temporary`` it also makes a
temporary address per prefix (RFC 8981): random identifier, lifetimes capped at
TEMP_VALID_LIFETIME and TEMP_PREFERRED_LIFETIME less a random DESYNC_FACTOR, a new one
REGEN_ADVANCE seconds before the old one is deprecated (which then lives out its valid
lifetime); its addresses are flagged ``temporary`` and the stable ones ``mngtmpaddr``, as
Linux flags them. Addresses are added without a connected route (``prefix_route=False``,
shown without ``noprefixroute`` as Linux shows them): their on-link route comes from the
L flag alone (an A-only prefix is not on-link, RFC 5942).

Bounds: 16 routers, 16 prefixes, 64 routes, 8 DNS servers and 8 search domains (a new
one replaces the one that would expire first, RFC 8106 5.3.1); beyond, advertisements
are counted (``describe()["counters"]``) and their extra items ignored. RAs are read on a
forwarding stack too (Linux's accept_ra=2). ``stop`` removes every address, route and
DNS setting it made and restores the MTU.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import random
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError
from threadnet.stack.agents import DADFAILED, EXPIRED, INFINITY, Agent, SystemRng
from threadnet.wire import icmp6, ipv6

if TYPE_CHECKING:
    from threadnet.stack.config import Config
    from threadnet.stack.stack import Address6, Interface, Stack

# RFC 4861 10: host constants
MAX_RTR_SOLICITATION_DELAY = 1.0
RTR_SOLICITATION_INTERVAL = 4.0
MAX_RTR_SOLICITATIONS = 3
MIN_LINK_MTU = 1280  # RFC 8200 5
#: RFC 4862 5.5.3 e: a valid lifetime shorter than this is believed only if it lengthens
TWO_HOURS = 7200.0
#: RFC 7217 7: new stable addresses after DAD failures, and the pause before each
IDGEN_RETRIES = 3
IDGEN_DELAY = 1.0
# RFC 8981 3.8
TEMP_VALID_LIFETIME = 2 * 86400.0
TEMP_PREFERRED_LIFETIME = 86400.0
TEMP_IDGEN_RETRIES = 3
#: 2 + TEMP_IDGEN_RETRIES * DupAddrDetectTransmits (1) * RetransTimer (the stack's DAD
#: wait, 1 s)
REGEN_ADVANCE = 2 + TEMP_IDGEN_RETRIES * 1 * 1.0
MAX_DESYNC_FACTOR = 0.4  # of the temporary preferred lifetime

#: Linux's metric for routes from router advertisements (static ones, metric 0, win)
RA_METRIC = 1024
MAX_ROUTERS = 16
MAX_PREFIXES = 16
MAX_ROUTES = 64
MAX_DNS_SERVERS = 8
MAX_DNS_DOMAINS = 8

_SECRETS: weakref.WeakKeyDictionary[Any, bytes] = weakref.WeakKeyDictionary()


def stable_secret(stack: Stack, secret: bytes | None = None) -> bytes:
    """The stack's RFC 7217 secret key: random, made on first use, the same for every
    interface and for every router discovery agent the stack runs. ``secret`` sets it
    (as Linux's ``stable_secret``), so that a stack makes the same addresses across
    restarts."""
    if secret is not None:
        if len(secret) < 16:
            raise ValueError("an RFC 7217 secret is at least 128 bits")
        _SECRETS[stack] = bytes(secret)
    elif stack not in _SECRETS:
        _SECRETS[stack] = os.urandom(16)
    return _SECRETS[stack]


def stable_iid(prefix: bytes, ifname: str, network_id: bytes, counter: int,
               secret: bytes) -> bytes:
    """The RFC 7217 interface identifier (8 bytes) for ``prefix`` (see the module's notes
    for the exact input)."""
    name = ifname.encode()
    data = (bytes(prefix[:8]) + bytes([len(name)]) + name + bytes([len(network_id)])
            + network_id + counter.to_bytes(4, "big") + secret)
    return hashlib.sha256(data).digest()[:8]


def reserved_iid(iid: bytes) -> bool:
    """RFC 5453 and IANA's registry: the subnet-router anycast identifier, the ones from
    IANA's Ethernet block (0200:5eff:fe00:0-0200:5eff:feff:ffff) and the subnet anycast
    ones (fdff:ffff:ffff:ff80-ffff)."""
    v = int.from_bytes(iid, "big")
    return (v == 0 or 0x02005EFFFE000000 <= v <= 0x02005EFFFEFFFFFF
            or v >= 0xFDFFFFFFFFFFFF80 and v >> 8 == 0xFDFFFFFFFFFFFF)


def _ntop(addr: bytes) -> str:
    return str(ipaddress.IPv6Address(addr))


def _lifetime(value: int) -> float:
    return INFINITY if value == icmp6.INFINITE_LIFETIME else float(value)


def _left(until: float, now: float) -> float | None:
    """Seconds from ``now`` to ``until`` for a stack call: None for forever."""
    return None if until == INFINITY else max(0.0, until - now)


def _mask(prefix: bytes, plen: int) -> bytes:
    v = int.from_bytes(prefix, "big")
    return (v & ~((1 << (128 - plen)) - 1) & ((1 << 128) - 1)).to_bytes(16, "big")


def _net(prefix: bytes, plen: int) -> str:
    return f"{_ntop(prefix)}/{plen}"


@dataclass
class Router:
    """A default router: its link-local address and when its lifetime ends."""

    addr: bytes
    until: float
    pref: str
    mac: bytes | None = None


@dataclass
class Made:
    """An address it made: ``kind`` "stable" or "temporary", the lifetimes it last gave
    it, and whether DAD found it in use."""

    kind: str
    plen: int
    valid_until: float
    preferred_until: float
    dadfailed: bool = False


@dataclass
class Temporary:
    """A temporary address (RFC 8981) and when to make its successor."""

    addr: bytes
    created: float
    desync: float
    regen_at: float | None


@dataclass
class Prefix:
    """A prefix some router advertised: on-link until ``onlink_until`` (None: not on-link),
    and for SLAAC its advertised lifetimes and the addresses made in it."""

    prefix: bytes
    plen: int
    onlink_until: float | None = None
    autonomous: bool = False
    valid_until: float = 0.0
    preferred_until: float = 0.0
    stable: bytes | None = None  # the stable address in use (tentative or preferred)
    dad_counter: int = 0
    retry_at: float | None = None  # a new stable address after a DAD failure (RFC 7217)
    gave_up: bool = False
    temps: list[Temporary] = field(default_factory=list)
    temp_failures: int = 0


class RouterDiscovery(Agent):
    """Router discovery (RFC 4861) and, with ``slaac``, SLAAC (RFC 4862, RFC 7217; with
    ``temporary``, RFC 8981) on interface ``ifindex``; see the module's notes.

        >>> stack.add_agent(RouterDiscovery(iface.index, slaac=True, temporary=True))

    ``secret`` (default: the stack's, ``stable_secret``) and ``network_id`` feed the
    stable identifiers; ``rng`` the random delays and temporary identifiers (default: the
    system's CSPRNG); ``temp_valid``/``temp_preferred`` the temporary addresses'
    lifetimes (RFC 8981's TEMP_VALID_LIFETIME and TEMP_PREFERRED_LIFETIME)."""

    kind = "rd"
    icmp6_types = (icmp6.ROUTER_ADVERTISEMENT,)

    def __init__(self, ifindex: int, *, slaac: bool = False, temporary: bool = False,
                 secret: bytes | None = None, network_id: bytes = b"",
                 rng: random.Random | None = None,
                 temp_valid: float = TEMP_VALID_LIFETIME,
                 temp_preferred: float = TEMP_PREFERRED_LIFETIME,
                 solicitations: int = MAX_RTR_SOLICITATIONS) -> None:
        super().__init__(ifindex)
        if temp_preferred * (1 - MAX_DESYNC_FACTOR) <= REGEN_ADVANCE:
            raise ValueError(f"a temporary preferred lifetime of {temp_preferred} s leaves "
                             f"no time before regeneration ({REGEN_ADVANCE} s ahead)")
        self.slaac = slaac
        self.temporary = temporary
        self.secret = secret
        self.network_id = network_id
        self.rng = rng if rng is not None else SystemRng()
        self.temp_valid = temp_valid
        self.temp_preferred = temp_preferred
        self.max_solicitations = solicitations
        self.solicit_at: float | None = None
        self.solicitations = 0
        self.routers: dict[bytes, Router] = {}
        self.prefixes: dict[tuple[bytes, int], Prefix] = {}
        #: route information (RFC 4191): (prefix, plen, router) -> (until, preference)
        self.routes: dict[tuple[bytes, int, bytes], tuple[float, str]] = {}
        self.dns_servers: dict[str, float] = {}
        self.dns_domains: dict[str, float] = {}
        #: every address it made, until it goes (a dadfailed one too)
        self.made: dict[bytes, Made] = {}
        self.managed = self.other = False
        self.hop_limit = self.reachable_time = self.retrans_timer = 0
        self.mtu: int | None = None  # the MTU an advertisement set
        self._mtu_before: int | None = None
        self._now = 0.0
        self._source = ""
        self.counters: dict[str, int] = {}

    @classmethod
    def from_config(cls, stack: Stack, iface: Interface, cfg: Config) -> RouterDiscovery:
        """The agent ``rd``, ``auto6`` and ``slaac`` start (``autoconf.CLIENTS["rd"]``)."""
        return cls(iface.index, slaac=bool(cfg.slaac))

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- the agent's life ------------------------------------------------------------------
    def start(self, stack: Stack, now: float) -> None:
        iface = stack.interfaces[self.ifindex]
        if self.secret is None:
            self.secret = stable_secret(stack)
        self._source = f"rd:{iface.name}"
        self._now = now
        self.solicit_at = now + self.rng.uniform(0, MAX_RTR_SOLICITATION_DELAY)

    def stop(self, stack: Stack, now: float) -> None:
        iface = stack.interfaces.get(self.ifindex)
        self.solicit_at = None
        if iface is None:
            return
        for addr in list(self.made):
            a = self._address(iface, addr)
            if a is not None:
                stack.addr_del(iface.index, f"{_ntop(addr)}/{a.plen}")
        self.made.clear()
        for router in list(self.routers):
            self._drop_route(stack, "::/0", router)
        for key, p in list(self.prefixes.items()):
            if p.onlink_until is not None:
                self._drop_route(stack, _net(*key), None)
        for prefix, plen, router in list(self.routes):
            self._drop_route(stack, _net(prefix, plen), router)
        self.routers.clear()
        self.prefixes.clear()
        self.routes.clear()
        self.dns_servers.clear()
        self.dns_domains.clear()
        stack.resolver.forget(self._source)
        if self.mtu is not None and self._mtu_before is not None and iface.mtu == self.mtu:
            stack.set_mtu(iface.index, self._mtu_before)
        self.mtu = None

    def next_deadline(self) -> float | None:
        times = [t for t in (self.solicit_at,) if t is not None]
        times += [r.until for r in self.routers.values()]
        for p in self.prefixes.values():
            if p.onlink_until is not None:
                times.append(p.onlink_until)
            if p.autonomous:
                times.append(p.valid_until)
            if p.retry_at is not None:
                times.append(p.retry_at)
            times += [t.regen_at for t in p.temps if t.regen_at is not None]
        times += [until for until, _pref in self.routes.values()]
        times += self.dns_servers.values()
        times += self.dns_domains.values()
        best = min(times, default=INFINITY)
        return None if best == INFINITY else best

    def on_timer(self, stack: Stack, now: float) -> None:
        self._now = now
        iface = stack.interfaces[self.ifindex]
        if self.solicit_at is not None and now >= self.solicit_at:
            self._solicit(stack, iface, now)
        # the stack ends the routes and addresses themselves; here the records go
        for addr, r in list(self.routers.items()):
            if r.until <= now:
                del self.routers[addr]
        for key, (until, _pref) in list(self.routes.items()):
            if until <= now:
                del self.routes[key]
        for key, p in list(self.prefixes.items()):
            if p.onlink_until is not None and p.onlink_until <= now:
                p.onlink_until = None
            if p.autonomous and p.valid_until <= now:
                p.autonomous, p.retry_at = False, None
                p.temps.clear()
            if p.retry_at is not None and now >= p.retry_at:
                p.retry_at = None
                self._make_stable(stack, iface, p, now)
            for t in list(p.temps):
                if t.regen_at is not None and now >= t.regen_at:
                    t.regen_at = None
                    p.temp_failures = 0  # (the retries are per new address)
                    self._make_temporary(stack, iface, p, now)
            if p.onlink_until is None and not p.autonomous:
                del self.prefixes[key]
        dns = len(self.dns_servers) + len(self.dns_domains)
        for table in (self.dns_servers, self.dns_domains):
            for name, until in list(table.items()):
                if until <= now:
                    del table[name]
        if len(self.dns_servers) + len(self.dns_domains) != dns:
            self._push_dns(stack)

    def on_address(self, stack: Stack, iface: Interface, addr: bytes, event: str,
                   now: float) -> None:
        made = self.made.get(addr)
        if made is None:
            return
        self._now = now
        if event == EXPIRED:
            del self.made[addr]
            for p in self.prefixes.values():
                if p.stable == addr:
                    p.stable = None
                p.temps = [t for t in p.temps if t.addr != addr]
            return
        if event != DADFAILED:
            return
        self._count("dad_failed")
        made.dadfailed = True
        for p in self.prefixes.values():
            if p.stable == addr:
                # RFC 7217 6: another identifier, from the next counter, after IDGEN_DELAY
                p.stable = None
                if p.dad_counter < IDGEN_RETRIES:
                    p.dad_counter += 1
                    p.retry_at = now + IDGEN_DELAY
                else:
                    p.gave_up = True
                    self._count("slaac_gave_up")
            elif any(t.addr == addr for t in p.temps):
                # RFC 8981 3.3.1: a new random identifier, up to TEMP_IDGEN_RETRIES times
                p.temps = [t for t in p.temps if t.addr != addr]
                p.temp_failures += 1
                if p.temp_failures <= TEMP_IDGEN_RETRIES:
                    self._make_temporary(stack, iface, p, now)

    def configured(self, stack: Stack) -> bool:
        """A router answered and, with SLAAC, its addresses passed DAD; or the last
        solicitation went unanswered (RFC 4861 6.3.7: then there is no router)."""
        if not self.routers:
            return self.solicit_at is None and self.solicitations >= self.max_solicitations
        if not self.slaac:
            return True
        iface = stack.interfaces.get(self.ifindex)
        mine = [a for a in iface.v6 if a.origin == "ra"] if iface is not None else []
        return not any(a.state == "tentative" for a in mine)

    # -- router solicitation -------------------------------------------------------------
    def _solicit(self, stack: Stack, iface: Interface, now: float) -> None:
        """RFC 4861 6.3.7: from the link-local address once DAD has passed (with our
        link-layer address), or from :: without one when there is none to use. While
        the link is down none goes, and none is counted."""
        if not iface.up:
            self.solicit_at = now + RTR_SOLICITATION_INTERVAL
            return
        lls = [a for a in iface.v6 if a.addr[:2] == b"\xfe\x80"]
        tentative = [a for a in lls if a.state == "tentative" and a.dad_deadline]
        ready = [a for a in lls if a.state == "preferred"]
        if not ready and tentative:
            self.solicit_at = max(now, min(a.dad_deadline for a in tentative))
            return
        src = ready[0].addr if ready else ipv6.UNSPECIFIED
        out = bytearray(16)
        n = icmp6.build_rs(out, src, ipv6.ALL_ROUTERS, iface.mac if ready else None)
        stack.send_icmp6_on(iface, src, ipv6.ALL_ROUTERS, out[:n])
        self.solicitations += 1
        self.solicit_at = (now + RTR_SOLICITATION_INTERVAL
                           if self.solicitations < self.max_solicitations else None)

    # -- router advertisements -------------------------------------------------------------
    def on_icmp6(self, stack: Stack, iface: Interface, src: bytes, dst: bytes, hlim: int,
                 message: memoryview, now: float) -> None:
        if message[0] != icmp6.ROUTER_ADVERTISEMENT:
            return
        self._now = now
        # RFC 4861 6.1.2: from a link-local source, hop limit 255 (the checksum and the
        # message itself are checked by the stack and by the parser)
        if hlim != 255 or src[0] != 0xFE or src[1] & 0xC0 != 0x80:
            self._count("ra_invalid")
            return
        if any(a.addr == src for a in iface.v6):
            return  # our own (an RA server on the same interface)
        try:
            ra = icmp6.parse_router_advert(message)
        except FrameError:
            self._count("ra_malformed")
            return
        self._count("ra")
        self._advert(stack, iface, src, ra, now)

    def _advert(self, stack: Stack, iface: Interface, src: bytes, ra: icmp6.RouterAdvert,
                now: float) -> None:
        if ra.cur_hop_limit:
            self.hop_limit = ra.cur_hop_limit
        if ra.reachable_time:
            self.reachable_time = ra.reachable_time
        if ra.retrans_timer:
            self.retrans_timer = ra.retrans_timer
        self.managed, self.other = ra.managed, ra.other
        if ra.slla is not None and not ra.slla[0] & 1:
            # RFC 4861 6.3.4: the router's link-layer address goes in the neighbor cache
            # (STALE, or as it was if unchanged), and packets waiting for it go
            for pkt in iface.nd.confirm(src, ra.slla, now, solicited=False):
                stack._xmit(iface, ra.slla, pkt)  # type: ignore[arg-type]
        self._router(stack, iface, src, ra, now)
        if ra.router_lifetime:
            self.solicit_at = None  # RFC 4861 6.3.7: a router answered
        if ra.mtu is not None:
            self._set_mtu(stack, iface, ra.mtu)
        for p in ra.prefixes:
            self._prefix(stack, iface, p, now)
        for r in ra.routes:
            self._route_info(stack, iface, src, r, now)
        if ra.rdnss or ra.dnssl:
            for d in ra.rdnss:
                for server in d.servers:
                    self._dns_server(iface, server, d.lifetime, now)
            for sl in ra.dnssl:
                for domain in sl.domains:
                    self._dns_entry(self.dns_domains, MAX_DNS_DOMAINS, domain.lower(),
                                    sl.lifetime, now)
            self._push_dns(stack)

    def _router(self, stack: Stack, iface: Interface, src: bytes, ra: icmp6.RouterAdvert,
                now: float) -> None:
        """RFC 4861 6.3.4: a default router for the advertised lifetime (0: no longer)."""
        if ra.router_lifetime == 0:
            if self.routers.pop(src, None) is not None:
                self._drop_route(stack, "::/0", src)
            return
        if src not in self.routers and len(self.routers) >= MAX_ROUTERS:
            self._count("routers_full")
            return
        pref = icmp6.PREF_NAMES[ra.preference]
        stack.route_add("default", _ntop(src), iface.index, RA_METRIC, proto="ra",
                        lifetime=ra.router_lifetime, pref=pref, replace=True, now=now)
        self.routers[src] = Router(src, now + ra.router_lifetime, pref, ra.slla)

    def _set_mtu(self, stack: Stack, iface: Interface, mtu: int) -> None:
        """RFC 4861 6.3.4: the link MTU, if at least the IPv6 minimum and no more than the
        link carries."""
        if mtu == iface.mtu:
            return
        link = stack.links.get(iface.index)
        top = None if link is None else link.max_mtu
        if mtu < MIN_LINK_MTU or mtu > 65535 or (top is not None and mtu > top):
            self._count("mtu_ignored")
            return
        if self._mtu_before is None:
            self._mtu_before = iface.mtu
        stack.set_mtu(iface.index, mtu)
        self.mtu = mtu

    def _route_info(self, stack: Stack, iface: Interface, src: bytes, r: icmp6.RouteInfo,
                    now: float) -> None:
        """RFC 4191 3.1 (a type C host): a route through the router; a reserved preference
        voids the option. A ::/0 one (a second default route) is not kept."""
        if r.pref == icmp6.PREF_RESERVED or r.plen == 0:
            self._count("route_info_ignored")
            return
        prefix = _mask(r.prefix, r.plen)
        key = (prefix, r.plen, src)
        if r.lifetime == 0:
            if self.routes.pop(key, None) is not None:
                self._drop_route(stack, _net(prefix, r.plen), src)
            return
        if key not in self.routes and len(self.routes) >= MAX_ROUTES:
            self._count("routes_full")
            return
        life = _lifetime(r.lifetime)
        pref = icmp6.PREF_NAMES[r.pref]
        stack.route_add(_net(prefix, r.plen), _ntop(src), iface.index, RA_METRIC, proto="ra",
                        lifetime=None if life == INFINITY else life, pref=pref, replace=True,
                        now=now)
        self.routes[key] = (now + life, pref)

    def _prefix(self, stack: Stack, iface: Interface, info: icmp6.PrefixInfo,
                now: float) -> None:
        plen = info.plen
        prefix = _mask(info.prefix, plen)
        if prefix[0] == 0xFE and prefix[1] & 0xC0 == 0x80:
            return  # RFC 4861 6.3.4, RFC 4862 5.5.3 b: never the link-local prefix
        valid, preferred = _lifetime(info.valid), _lifetime(info.preferred)
        key = (prefix, plen)
        p = self.prefixes.get(key)
        wants_slaac = info.autonomous and self.slaac and preferred <= valid
        if p is None:
            if valid == 0 or not (info.on_link or wants_slaac):
                return
            if len(self.prefixes) >= MAX_PREFIXES:
                self._count("prefixes_full")
                return
            p = self.prefixes[key] = Prefix(prefix, plen)
        if info.on_link:
            self._on_link(stack, iface, p, valid, now)
        if info.autonomous and self.slaac:
            # RFC 4862 5.5.3 c: a preferred lifetime beyond the valid one voids it
            if preferred > valid:
                self._count("prefix_lifetimes_bad")
            elif plen != 64:
                self._count("prefix_not_64")  # 5.5.3 d: 64 + our 64-bit identifier
            else:
                self._autoconf(stack, iface, p, valid, preferred, now)
        if p.onlink_until is None and not p.autonomous:
            del self.prefixes[key]

    def _on_link(self, stack: Stack, iface: Interface, p: Prefix, valid: float,
                 now: float) -> None:
        """RFC 4861 6.3.4: on-link for the valid lifetime; 0 ends it at once. A prefix the
        interface has a route for already (a static address in it) is left to that."""
        net = _net(p.prefix, p.plen)
        if valid == 0:
            if p.onlink_until is not None:
                p.onlink_until = None
                self._drop_route(stack, net, None)
            return
        dst = ipaddress.IPv6Network(net)
        if p.onlink_until is None and any(
                r.dst == dst and r.ifindex == iface.index and r.gateway is None
                and r.proto != "ra" for r in stack.routes6.routes):
            return
        stack.route_add(net, None, iface.index, proto="ra",
                        lifetime=None if valid == INFINITY else valid, replace=True, now=now)
        p.onlink_until = now + valid

    # -- SLAAC ---------------------------------------------------------------------------
    def _autoconf(self, stack: Stack, iface: Interface, p: Prefix, valid: float,
                  preferred: float, now: float) -> None:
        """RFC 4862 5.5.3 d and e, and RFC 8981 3.4 for the temporary addresses."""
        current = self._address(iface, p.stable) if p.stable is not None else None
        if current is None:
            p.stable = None  # (gone: expired, or removed by hand)
            if valid == 0:
                return
            p.autonomous = True
            p.valid_until, p.preferred_until = now + valid, now + preferred
            if p.stable is None and p.retry_at is None and not p.gave_up:
                self._make_stable(stack, iface, p, now)
        else:
            remaining = current.valid_until - now
            if valid > TWO_HOURS or valid > remaining:
                new_valid = valid
            elif remaining <= TWO_HOURS:
                new_valid = remaining  # ignore: a short lifetime would let anyone end it
            else:
                new_valid = TWO_HOURS
            p.valid_until, p.preferred_until = now + new_valid, now + preferred
            # the preferred lifetime is always reset to the advertised one
            self._set_lifetimes(stack, iface, current.addr, p.valid_until, p.preferred_until,
                                now)
        if not self.temporary:
            return
        live = False
        for t in p.temps:
            a = self._address(iface, t.addr)
            if a is None or a.state == "dadfailed":
                continue
            # RFC 8981 3.4: never longer than the prefix's, nor past the temporary caps
            age = now - t.created
            tv = min(p.valid_until - now, self.temp_valid - age)
            tp = min(p.preferred_until - now, self.temp_preferred - t.desync - age)
            self._set_lifetimes(stack, iface, t.addr, now + max(0.0, tv),
                                now + max(0.0, min(tp, tv)), now)
            if t.regen_at is not None:
                t.regen_at = max(now, now + tp - REGEN_ADVANCE)
            live = live or t.regen_at is not None
        if not live and p.valid_until > now:
            self._make_temporary(stack, iface, p, now)

    def _make_stable(self, stack: Stack, iface: Interface, p: Prefix, now: float) -> None:
        assert self.secret is not None
        if p.valid_until <= now:
            return
        for _ in range(IDGEN_RETRIES + 1):
            iid = stable_iid(p.prefix, iface.name, self.network_id, p.dad_counter,
                             self.secret)
            addr = p.prefix[:8] + iid
            if not reserved_iid(iid) and self._address(iface, addr) is None:
                break
            p.dad_counter += 1  # RFC 7217 5: a reserved or taken one counts as a collision
        else:
            p.gave_up = True
            self._count("slaac_gave_up")
            return
        stack.addr_add(iface.index, f"{_ntop(addr)}/{p.plen}", now,
                       valid_lft=_left(p.valid_until, now),
                       preferred_lft=_left(p.preferred_until, now), origin="ra",
                       flags=("mngtmpaddr",) if self.temporary else (), prefix_route=False)
        p.stable = addr
        self.made[addr] = Made("stable", p.plen, p.valid_until,
                               min(p.preferred_until, p.valid_until))

    def _make_temporary(self, stack: Stack, iface: Interface, p: Prefix, now: float) -> None:
        """RFC 8981 3.3: a random identifier, lifetimes no longer than the prefix's and
        the temporary caps; none when it would be preferred for REGEN_ADVANCE or less."""
        desync = self.rng.uniform(0, MAX_DESYNC_FACTOR * self.temp_preferred)
        tv = min(p.valid_until - now, self.temp_valid)
        tp = min(p.preferred_until - now, self.temp_preferred - desync, tv)
        if tp <= REGEN_ADVANCE:
            return
        for _ in range(16):
            iid = self.rng.getrandbits(64).to_bytes(8, "big")
            addr = p.prefix[:8] + iid
            if not reserved_iid(iid) and self._address(iface, addr) is None:
                break
        else:
            return
        stack.addr_add(iface.index, f"{_ntop(addr)}/{p.plen}", now, valid_lft=tv,
                       preferred_lft=tp, origin="ra", flags=("temporary",),
                       prefix_route=False)
        p.temps.append(Temporary(addr, now, desync, now + tp - REGEN_ADVANCE))
        self.made[addr] = Made("temporary", p.plen, now + tv, now + tp)

    # -- DNS -----------------------------------------------------------------------------
    def _dns_server(self, iface: Interface, server: bytes, lifetime: int, now: float) -> None:
        a = ipaddress.IPv6Address(server)
        if a.is_multicast or a.is_unspecified or a.is_loopback:
            self._count("rdnss_ignored")
            return
        text = str(a) + (f"%{iface.name}" if a.is_link_local else "")
        self._dns_entry(self.dns_servers, MAX_DNS_SERVERS, text, lifetime, now)

    def _dns_entry(self, table: dict[str, float], bound: int, key: str, lifetime: int,
                   now: float) -> None:
        """RFC 8106 5.3.1: lifetime 0 removes; a new entry in a full table replaces the
        one that would expire first."""
        if lifetime == 0:
            table.pop(key, None)
            return
        if key not in table and len(table) >= bound:
            del table[min(table, key=table.__getitem__)]
            self._count("dns_replaced")
        table[key] = now + _lifetime(lifetime)

    def _push_dns(self, stack: Stack) -> None:
        if self.dns_servers or self.dns_domains:
            stack.resolver.learn(self._source, list(self.dns_servers), list(self.dns_domains))
        else:
            stack.resolver.forget(self._source)

    # -- helpers -------------------------------------------------------------------------
    def _set_lifetimes(self, stack: Stack, iface: Interface, addr: bytes, valid_until: float,
                       preferred_until: float, now: float) -> None:
        stack.addr_set_lifetimes(iface.index, _ntop(addr), _left(valid_until, now),
                                 _left(preferred_until, now), now)
        made = self.made.get(addr)
        if made is not None:
            made.valid_until, made.preferred_until = valid_until, min(preferred_until,
                                                                      valid_until)

    def _address(self, iface: Interface, addr: bytes | None) -> Address6 | None:
        return next((a for a in iface.v6 if a.addr == addr), None)

    def _drop_route(self, stack: Stack, net: str, via: bytes | None) -> None:
        """Remove a route it made, if it is still there."""
        dst = ipaddress.IPv6Network(net)
        gw = None if via is None else ipaddress.IPv6Address(via)
        for r in stack.routes6.routes:
            if (r.dst == dst and r.gateway == gw and r.ifindex == self.ifindex
                    and r.proto == "ra"):
                stack.routes6.delete(r.dst, gateway=r.gateway, ifindex=r.ifindex,
                                     metric=r.metric)
                return

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """Routers, prefixes, addresses, DNS settings and lifetimes left in seconds (at
        ``now``, default: the last time the stack called it; None: forever)."""
        now = self._now if now is None else now

        def left(until: float | None) -> float | None:
            return None if until is None or until == INFINITY else max(0.0, until - now)

        return {
            "kind": self.kind, "ifindex": self.ifindex, "slaac": self.slaac,
            "temporary": self.temporary, "managed": self.managed, "other": self.other,
            "hop_limit": self.hop_limit, "reachable_time": self.reachable_time,
            "retrans_timer": self.retrans_timer, "mtu": self.mtu,
            "solicitations": self.solicitations,
            "routers": [{"address": _ntop(r.addr), "lifetime": left(r.until),
                         "preference": r.pref} for r in self.routers.values()],
            "prefixes": [{"prefix": _net(p.prefix, p.plen),
                          "onlink": p.onlink_until is not None,
                          "onlink_lifetime": left(p.onlink_until),
                          "autonomous": p.autonomous,
                          "valid_lft": left(p.valid_until) if p.autonomous else None,
                          "preferred_lft": left(p.preferred_until) if p.autonomous else None,
                          "dad_counter": p.dad_counter}
                         for p in self.prefixes.values()],
            "routes": [{"dst": _net(prefix, plen), "via": _ntop(router),
                        "lifetime": left(until), "preference": pref}
                       for (prefix, plen, router), (until, pref) in self.routes.items()],
            "addresses": [{"address": f"{_ntop(a)}/{m.plen}", "kind": m.kind,
                           "valid_lft": left(m.valid_until),
                           "preferred_lft": left(m.preferred_until),
                           "dadfailed": m.dadfailed} for a, m in self.made.items()],
            "dns": [{"server": s, "lifetime": left(u)} for s, u in self.dns_servers.items()],
            "search": [{"domain": d, "lifetime": left(u)} for d, u in self.dns_domains.items()],
            "counters": dict(self.counters),
        }
