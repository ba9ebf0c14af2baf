"""The router advertisement server: an agent on one interface, kind ``ra``
(``stack/agents.py``), which makes the stack a router that hosts on the link configure
themselves from (RFC 4861 6.2, SLAAC on their side).

It advertises prefixes (on-link and autonomous by default, with valid and preferred
lifetimes), the M and O flags, a router lifetime and preference (RFC 4191 2.2), an MTU,
DNS servers and a search list (RDNSS and DNSSL, RFC 8106), with its link-layer address.
Without prefixes it advertises the interface's own global prefixes (its addresses'
networks; /64 ones autonomous), read each time it sends.

Timing (RFC 4861 6.2.4-6.2.6): unsolicited multicast advertisements at random intervals
between MinRtrAdvInterval and MaxRtrAdvInterval (``interval``, default 600 s; the
minimum is a third of it from 9 s up, else the same), the first 3 no more than 16 s
apart, the first once the link-local address has passed DAD (an advertisement's source
must be link-local). A solicitation is answered by a multicast advertisement after a
random delay of up to 0.5 s, no sooner than 3 s after the previous one (or
MinRtrAdvInterval, when that is shorter, as RFC 6275 7.5 allows). It joins ff02::2.
``stop`` sends a last advertisement with router lifetime 0 (6.2.5), so that hosts drop
their default route through it at once.

A router forwards: give the stack ``forwarding=True`` for hosts to reach beyond it. A
server on a stack that does not forward is allowed (hosts then get addresses and reach
the stack itself, but what they send through it to elsewhere is dropped); with
``lifetime=0`` it advertises prefixes and DNS without offering itself as a default
router.

Configuration items (``Config.servers["ra"]``): ``ra[=PREFIX/LEN]`` (repeatable),
``ra.managed``, ``ra.other``, ``ra.rdnss=ADDR`` and ``ra.dnssl=NAME`` (repeatable),
``ra.lifetime=SECS`` (router lifetime, 0..9000; default 3 * interval),
``ra.interval=SECS`` (MaxRtrAdvInterval; under 4 s for tests), ``ra.mtu=N``,
``ra.valid=SECS`` and ``ra.preferred=SECS`` (the prefixes' lifetimes; ``infinity``),
``ra.hoplimit=N``, ``ra.pref=high|medium|low``.
"""

from __future__ import annotations

import ipaddress
import math
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError
from threadnet.stack.agents import Agent, SystemRng
from threadnet.wire import icmp6, ipv6

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

# RFC 4861 10: router constants
MAX_INITIAL_RTR_ADVERT_INTERVAL = 16.0
MAX_INITIAL_RTR_ADVERTISEMENTS = 3
MIN_DELAY_BETWEEN_RAS = 3.0
MAX_RA_DELAY_TIME = 0.5
# RFC 4861 6.2.1: the defaults of a router's variables
MAX_RTR_ADV_INTERVAL = 600.0
VALID_LIFETIME = 2592000  # 30 days
PREFERRED_LIFETIME = 604800  # 7 days
MAX_ROUTER_LIFETIME = 9000
#: an advertisement must fit the IPv6 minimum MTU (1280) after its 40-byte header
MAX_ADVERT = 1280 - 40

#: the options ``ra.OPTION`` may name
OPTIONS = ("managed", "other", "rdnss", "dnssl", "lifetime", "interval", "mtu", "valid",
           "preferred", "hoplimit", "pref")
_PREFS = {"high": icmp6.PREF_HIGH, "medium": icmp6.PREF_MEDIUM, "low": icmp6.PREF_LOW}


def _ntop(addr: bytes) -> str:
    return str(ipaddress.IPv6Address(addr))


class RaServer(Agent):
    """Router advertisements on interface ``ifindex`` (see the module's notes).

        >>> stack = Stack("eth,ip=fd00:1::1/64", link=..., forwarding=True)
        >>> stack.add_agent(RaServer(stack.interface("eth0").index, ["fd00:1::/64"],
        ...                          rdnss=["fd00:1::53"], dnssl=["lan.example"]))

    ``prefixes``: networks as text (on-link, autonomous, with ``valid`` and
    ``preferred`` lifetimes) or ``icmp6.PrefixInfo`` for other flags; empty: the
    interface's own. ``router_lifetime`` (seconds; default 3 * ``interval``, at most
    9000; 0: not a default router), ``dns_lifetime`` (default 3 * ``interval``, RFC 8106
    5.1), ``rng`` for the random delays. ValueError for a setting RFC 4861 forbids or an
    advertisement larger than the IPv6 minimum MTU carries."""

    kind = "ra"
    icmp6_types = (icmp6.ROUTER_SOLICITATION,)
    groups6 = (ipv6.ALL_ROUTERS,)

    def __init__(self, ifindex: int, prefixes: Iterable[str | icmp6.PrefixInfo] = (), *,
                 managed: bool = False, other: bool = False, rdnss: Iterable[str] = (),
                 dnssl: Iterable[str] = (), router_lifetime: int | None = None,
                 interval: float = MAX_RTR_ADV_INTERVAL, mtu: int | None = None,
                 valid: int = VALID_LIFETIME, preferred: int = PREFERRED_LIFETIME,
                 hop_limit: int = 64, preference: str = "medium",
                 dns_lifetime: int | None = None, rng: random.Random | None = None) -> None:
        super().__init__(ifindex)
        if not 0 < interval <= 1800:
            raise ValueError(f"RA interval {interval}: MaxRtrAdvInterval is at most 1800 s")
        if not 0 <= preferred <= valid <= icmp6.INFINITE_LIFETIME:
            raise ValueError(f"prefix lifetimes: preferred {preferred} must not exceed "
                             f"valid {valid}")
        if preference not in _PREFS:
            raise ValueError(f"router preference {preference!r}: high, medium or low")
        if not 0 <= hop_limit <= 255:
            raise ValueError(f"hop limit {hop_limit}: 0..255")
        if mtu is not None and not 1280 <= mtu <= 65535:
            raise ValueError(f"MTU {mtu}: an IPv6 link's MTU is 1280..65535")
        self.interval = float(interval)
        # RFC 4861 6.2.1: MinRtrAdvInterval defaults to a third of the maximum from 9 s up
        self.min_interval = 0.33 * self.interval if self.interval >= 9 else self.interval
        lifetime = max(1, math.ceil(3 * self.interval))
        self.router_lifetime = (min(lifetime, MAX_ROUTER_LIFETIME) if router_lifetime is None
                                else router_lifetime)
        if not 0 <= self.router_lifetime <= MAX_ROUTER_LIFETIME:
            raise ValueError(f"router lifetime {self.router_lifetime}: 0..9000 s")
        self.prefixes: list[icmp6.PrefixInfo] = []
        for p in prefixes:
            if isinstance(p, icmp6.PrefixInfo):
                self.prefixes.append(p)
                continue
            net = ipaddress.IPv6Network(p, strict=True)
            if net.is_link_local:
                raise ValueError(f"prefix {p}: hosts ignore the link-local prefix")
            self.prefixes.append(icmp6.PrefixInfo(net.network_address.packed, net.prefixlen,
                                                  icmp6.PREFIX_ON_LINK
                                                  | icmp6.PREFIX_AUTONOMOUS, valid, preferred))
        self.valid, self.preferred = valid, preferred
        self.managed, self.other = managed, other
        self.rdnss = [ipaddress.IPv6Address(a).packed for a in rdnss]
        self.dnssl = [d.rstrip(".") for d in dnssl]
        for d in self.dnssl:
            icmp6.encode_domain(d)  # ValueError for a name no DNSSL option can hold
        self.dns_lifetime = (max(1, math.ceil(3 * self.interval)) if dns_lifetime is None
                             else dns_lifetime)
        self.mtu = mtu
        self.hop_limit = hop_limit
        self.preference = preference
        self.rng = rng if rng is not None else SystemRng()
        size = icmp6.router_advert_size(self._advert(None, self.prefixes))
        if size > MAX_ADVERT:
            raise ValueError(f"a {size}-byte advertisement does not fit the IPv6 minimum "
                             f"MTU (at most {MAX_ADVERT} bytes)")
        self.next_ra: float | None = None
        self.reply_at: float | None = None
        self.last_multicast = -math.inf
        self.initial_left = MAX_INITIAL_RTR_ADVERTISEMENTS
        self.counters: dict[str, int] = {}
        self._now = 0.0

    @classmethod
    def from_options(cls, stack: Stack, iface: Interface,
                     options: dict[str, list[str]]) -> RaServer:
        """The server ``ra=...`` items start (``autoconf.SERVERS["ra"]``); ConfigError
        naming a bad item."""
        from threadnet.stack import autoconf
        from threadnet.stack.config import ConfigError

        def last(name: str) -> str | None:
            values = autoconf.option(options, name, "ra", OPTIONS)
            return values[-1] if values else None

        def number(name: str, low: int, high: int) -> int | None:
            text = last(name)
            if text is None:
                return None
            try:
                value = (icmp6.INFINITE_LIFETIME if text.lower() in ("infinity", "forever")
                         and name in ("valid", "preferred") else int(text))
            except ValueError:
                raise ConfigError(f"bad ra.{name}={text!r}: not a number") from None
            if not low <= value <= high:
                raise ConfigError(f"bad ra.{name}={text}: {low}..{high}")
            return value

        def flag(name: str) -> bool:
            text = last(name)
            if text is None:
                return False
            if text.lower() in ("", "1", "yes", "on", "true"):
                return True
            if text.lower() in ("0", "no", "off", "false"):
                return False
            raise ConfigError(f"bad ra.{name}={text!r}: a flag is on (ra.{name}) or 0/1")

        last("")  # every option known
        interval_text = last("interval")
        try:
            interval = MAX_RTR_ADV_INTERVAL if interval_text is None else float(interval_text)
        except ValueError:
            raise ConfigError(f"bad ra.interval={interval_text!r}: not a number") from None
        kw: dict[str, Any] = {"managed": flag("managed"), "other": flag("other"),
                              "interval": interval}
        for name, key, low, high in (("lifetime", "router_lifetime", 0, MAX_ROUTER_LIFETIME),
                                     ("mtu", "mtu", 1280, 65535),
                                     ("valid", "valid", 0, icmp6.INFINITE_LIFETIME),
                                     ("preferred", "preferred", 0, icmp6.INFINITE_LIFETIME),
                                     ("hoplimit", "hop_limit", 0, 255)):
            value = number(name, low, high)
            if value is not None:
                kw[key] = value
        if "valid" in kw and "preferred" not in kw:
            kw["preferred"] = min(kw["valid"], PREFERRED_LIFETIME)
        link = stack.links.get(iface.index)
        top = None if link is None else link.max_mtu
        if kw.get("mtu") is not None and top is not None and kw["mtu"] > top:
            raise ConfigError(f"bad ra.mtu={kw['mtu']}: the link carries at most MTU {top}")
        pref = last("pref")
        if pref is not None:
            kw["preference"] = pref.lower()
        try:
            return cls(iface.index, options.get("", []), rdnss=options.get("rdnss", []),
                       dnssl=options.get("dnssl", []), **kw)
        except ValueError as exc:
            raise ConfigError(f"ra: {exc}") from None

    def _count(self, what: str) -> None:
        self.counters[what] = self.counters.get(what, 0) + 1

    # -- the agent's life ------------------------------------------------------------------
    def start(self, stack: Stack, now: float) -> None:
        self._now = now
        self.next_ra = now  # (once the link-local address is ready: _send)

    def stop(self, stack: Stack, now: float) -> None:
        """RFC 4861 6.2.5: a last advertisement with router lifetime 0."""
        iface = stack.interfaces.get(self.ifindex)
        if iface is not None and iface.up and self.router_lifetime:
            src = self._source(iface)
            if isinstance(src, bytes):
                self._send(stack, iface, src, now, final=True)
        self.next_ra = self.reply_at = None

    def next_deadline(self) -> float | None:
        times = [t for t in (self.next_ra, self.reply_at) if t is not None]
        return min(times, default=None)

    def on_timer(self, stack: Stack, now: float) -> None:
        self._now = now
        due = [t for t in (self.next_ra, self.reply_at) if t is not None and t <= now]
        if not due:
            return
        iface = stack.interfaces[self.ifindex]
        src = self._source(iface)
        if isinstance(src, float):  # the link-local address is still under DAD
            self.next_ra = max(src, self.next_ra or src)
            if self.reply_at is not None:
                self.reply_at = max(src, self.reply_at)
            return
        if src is None:
            # no usable link-local address (DAD failed): nothing a host would accept
            self._count("no_link_local")
            self.reply_at = None
            self.next_ra = now + self.interval
            return
        self._send(stack, iface, src, now)
        self.reply_at = None
        # RFC 4861 6.2.4: a random interval; the first few no longer than 16 s
        wait = self.rng.uniform(self.min_interval, self.interval)
        if self.initial_left > 0:
            self.initial_left -= 1
            wait = min(wait, MAX_INITIAL_RTR_ADVERT_INTERVAL)
        self.next_ra = now + wait

    def on_icmp6(self, stack: Stack, iface: Interface, src: bytes, dst: bytes, hlim: int,
                 message: memoryview, now: float) -> None:
        if message[0] != icmp6.ROUTER_SOLICITATION:
            return
        self._now = now
        if hlim != 255:
            self._count("rs_invalid")  # RFC 4861 6.1.1: not from the link
            return
        try:
            slla = icmp6.parse_rs(message)
        except FrameError:
            self._count("rs_invalid")
            return
        if src == ipv6.UNSPECIFIED and slla is not None:
            self._count("rs_invalid")  # 6.1.1
            return
        self._count("rs")
        # RFC 4861 6.2.6: a multicast answer after a random delay, rate limited
        at = now + self.rng.uniform(0, MAX_RA_DELAY_TIME)
        at = max(at, self.last_multicast + min(MIN_DELAY_BETWEEN_RAS, self.min_interval))
        if self.next_ra is not None and self.next_ra <= at:
            return  # the next unsolicited one comes first and answers it
        if self.reply_at is None or at < self.reply_at:
            self.reply_at = at

    # -- advertisements ------------------------------------------------------------------
    def _source(self, iface: Interface) -> bytes | float | None:
        """The link-local address to send from; the end of its DAD while tentative."""
        lls = [a for a in iface.v6 if a.addr[:2] == b"\xfe\x80"]
        ready = [a for a in lls if a.state == "preferred"]
        if ready:
            return ready[0].addr
        tentative = [a.dad_deadline for a in lls if a.state == "tentative" and a.dad_deadline]
        return min(tentative) if tentative else None

    def advertised_prefixes(self, iface: Interface) -> list[icmp6.PrefixInfo]:
        """The prefixes it advertises on ``iface``: the ones set, else the interface's."""
        if self.prefixes:
            return self.prefixes
        out: list[icmp6.PrefixInfo] = []
        for a in iface.v6:
            if a.addr[:2] == b"\xfe\x80" or a.state == "dadfailed" or a.plen > 64 \
                    or a.origin == "ra":
                continue  # (addresses made from someone else's advertisement are theirs)
            net = ipaddress.IPv6Network((a.addr, a.plen), strict=False)
            flags = icmp6.PREFIX_ON_LINK | (icmp6.PREFIX_AUTONOMOUS if a.plen == 64 else 0)
            info = icmp6.PrefixInfo(net.network_address.packed, a.plen, flags, self.valid,
                                    self.preferred)
            if info not in out and len(out) < 16:
                out.append(info)
        return out

    def _advert(self, iface: Interface | None, prefixes: list[icmp6.PrefixInfo],
                final: bool = False) -> icmp6.RouterAdvert:
        lifetime = 0 if final else self.router_lifetime
        flags = (icmp6.RA_MANAGED if self.managed else 0) | (icmp6.RA_OTHER if self.other else 0)
        if lifetime:  # RFC 4191 2.2: a router that is not a default one sends medium
            flags |= _PREFS[self.preference] << icmp6.RA_PREF_SHIFT
        return icmp6.RouterAdvert(
            self.hop_limit, flags, lifetime, 0, 0,
            iface.mac if iface is not None else bytes(6), self.mtu, tuple(prefixes), (),
            (icmp6.DnsServers(self.dns_lifetime, tuple(self.rdnss)),) if self.rdnss else (),
            (icmp6.SearchList(self.dns_lifetime, tuple(self.dnssl)),) if self.dnssl else ())

    def _send(self, stack: Stack, iface: Interface, src: bytes, now: float,
              final: bool = False) -> None:
        ra = self._advert(iface, self.advertised_prefixes(iface), final)
        out = bytearray(icmp6.router_advert_size(ra))
        icmp6.build_router_advert(out, src, ipv6.ALL_NODES, ra)
        stack.send_icmp6_on(iface, src, ipv6.ALL_NODES, out)
        self.last_multicast = now
        self._count("ra_final" if final else "ra")

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """The settings and what it sent; ``next_ra`` in seconds from ``now`` (default:
        the last time the stack called it)."""
        now = self._now if now is None else now
        return {
            "kind": self.kind, "ifindex": self.ifindex,
            "prefixes": [{"prefix": f"{_ntop(p.prefix)}/{p.plen}", "onlink": p.on_link,
                          "autonomous": p.autonomous, "valid": p.valid,
                          "preferred": p.preferred} for p in self.prefixes],
            "prefixes_from_interface": not self.prefixes,
            "managed": self.managed, "other": self.other,
            "router_lifetime": self.router_lifetime, "preference": self.preference,
            "interval": self.interval, "min_interval": self.min_interval, "mtu": self.mtu,
            "hop_limit": self.hop_limit, "rdnss": [_ntop(a) for a in self.rdnss],
            "dnssl": list(self.dnssl), "dns_lifetime": self.dns_lifetime,
            "next_ra": None if self.next_ra is None else max(0.0, self.next_ra - now),
            "counters": dict(self.counters),
        }
