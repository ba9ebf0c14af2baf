"""Routing tables: longest-prefix match over IPv4 or IPv6 routes, with a lookup cache.

Routes are (destination network, gateway or None for on-link, interface index, metric).
Addresses are ints on the hot path (``int.from_bytes`` of the packed address); the cache
maps a destination to its route and is cleared on every change.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Route:
    dst: IPNetwork
    gateway: IPAddress | None
    ifindex: int
    metric: int = 0
    #: who made it, as iproute2 says: "kernel" (adding an address), "static", "dhcp",
    #: "ra" (router discovery)
    proto: str = "static"
    #: when it goes (the stack's clock), or None: a default router's lifetime (RFC 4861)
    expires: float | None = None
    #: an IPv6 router's preference (RFC 4191): "low", "medium" or "high"
    pref: str = "medium"

    def __str__(self) -> str:
        dst = "default" if self.dst.prefixlen == 0 else str(self.dst)
        via = f" via {self.gateway}" if self.gateway is not None else ""
        metric = f" metric {self.metric}" if self.metric else ""
        return f"{dst}{via} dev {{dev}} proto {self.proto}{metric}"


#: an IPv6 router's preference (RFC 4191) breaks a tie between equal routes
_PREF_RANK = {"high": 0, "medium": 1, "low": 2}
#: Linux's IPv6 metrics for a route given none: an address's prefix route, and others
METRIC6_KERNEL, METRIC6_USER = 256, 1024


def effective_metric(route: Route) -> int:
    """A route's metric as Linux has it, and as lookups compare it: an IPv6 route's 0
    means "none given", which is 256 for an address's prefix route (made by adding the
    address, or an on-link prefix of router discovery) and 1024 for others
    (ip6_route_add, addrconf); an IPv4 route's 0 is 0."""
    if route.metric or route.dst.version == 4:
        return route.metric
    if route.proto == "kernel" or (route.proto == "ra" and route.gateway is None):
        return METRIC6_KERNEL
    return METRIC6_USER


class RoutingTable:
    """Routes of one family (4 or 6)."""

    MAX_CACHE = 4096

    def __init__(self, family: int) -> None:
        if family not in (4, 6):
            raise ValueError("family must be 4 or 6")
        self.family = family
        self.bits = 32 if family == 4 else 128
        self.routes: list[Route] = []
        # (prefixlen, mask, network int, route), longest prefix first, then lowest metric
        self._index: list[tuple[int, int, int, Route]] = []
        self._cache: dict[int, Route | None] = {}
        self._next_expiry: float | None = None

    def add(self, route: Route, *, replace: bool = False) -> None:
        if route.dst.version != self.family:
            raise ValueError(f"IPv{route.dst.version} route in the IPv{self.family} table")
        for r in self.routes:
            # IPv6 keeps a route per gateway (as Linux: two routers' default routes)
            if r.dst == route.dst and r.metric == route.metric and (
                    self.family == 4 or r.gateway == route.gateway):
                if not replace:
                    raise FileExistsError(f"route {route.dst} metric {route.metric} exists")
                self.routes.remove(r)
                break
        self.routes.append(route)
        self._rebuild()

    def delete(self, dst: IPNetwork, *, gateway: IPAddress | None = None,
               ifindex: int | None = None, metric: int | None = None) -> Route:
        for r in self.routes:
            if (r.dst == dst and (gateway is None or r.gateway == gateway)
                    and (ifindex is None or r.ifindex == ifindex)
                    and (metric is None or r.metric == metric)):
                self.routes.remove(r)
                self._rebuild()
                return r
        raise LookupError(f"no route to {dst}")

    def next_expiry(self) -> float | None:
        """When the first route with a lifetime goes, or None."""
        return self._next_expiry

    def expire(self, now: float) -> list[Route]:
        """Remove the routes whose lifetime ended by ``now``; returns them."""
        gone = [r for r in self.routes if r.expires is not None and r.expires <= now]
        if gone:
            self.routes = [r for r in self.routes if r not in gone]
            self._rebuild()
        return gone

    def flush_interface(self, ifindex: int) -> None:
        self.routes = [r for r in self.routes if r.ifindex != ifindex]
        self._rebuild()

    def _rebuild(self) -> None:
        full = (1 << self.bits) - 1
        self._index = sorted(
            ((r.dst.prefixlen, full ^ ((1 << (self.bits - r.dst.prefixlen)) - 1),
              int(r.dst.network_address), r) for r in self.routes),
            key=lambda t: (-t[0], effective_metric(t[3]), _PREF_RANK.get(t[3].pref, 1)))
        self._cache.clear()
        self._next_expiry = min((r.expires for r in self.routes if r.expires is not None),
                                default=None)

    def lookup(self, addr: int) -> Route | None:
        """The best route to the address ``addr`` (an int), or None."""
        cache = self._cache
        r = cache.get(addr, False)
        if r is not False:
            return r  # type: ignore[return-value]
        found = None
        for _, mask, net, route in self._index:
            if addr & mask == net:
                found = route
                break
        if len(cache) >= self.MAX_CACHE:
            cache.clear()
        cache[addr] = found
        return found

    def __iter__(self):
        return iter(sorted(self.routes, key=lambda r: (r.dst.prefixlen != 0, int(r.dst.network_address),
                                                       r.dst.prefixlen, r.metric)))

    def __len__(self) -> int:
        return len(self.routes)
