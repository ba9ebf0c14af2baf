"""The DHCPv6 server's lease table (``stack/dhcp6server.py``): a pool of addresses, the
reservations, and the entries: addresses offered to or bound to a client's IA_NA, and
addresses declined by clients (someone else uses them). Sans-IO: times are the stack's,
given by the caller; the lease file's reading and writing is the server's.

Bounded: at most ``max_leases`` entries. When a new one does not fit, the oldest offer
goes, then the oldest declined address; when every entry is a binding there is no room.
When the pool has no free address, the oldest offer gives its address up. Finding a free
address probes at most as many addresses as are taken, plus one, from a place that
depends on the client (the same client gets the same address again after a lease file
is lost). Ends of lifetimes are kept in a heap, rebuilt when renewals have left it more
than four times larger than the table.
"""

from __future__ import annotations

import hashlib
import heapq
import ipaddress
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from threadnet.wire import dhcp6 as d

OFFERED, BOUND, DECLINED = "offered", "bound", "declined"


@dataclass(slots=True)
class Lease:
    """An entry: an address offered or bound to a client's IA, or declined (``duid``
    empty). Times are the stack's."""

    address: int
    duid: bytes
    iaid: int
    state: str
    valid_until: float
    preferred_until: float

    @property
    def key(self) -> tuple[bytes, int]:
        return (self.duid, self.iaid)


def address_text(address: int) -> str:
    return str(ipaddress.IPv6Address(address))


class LeaseTable:
    """The pool ``first``..``last`` (addresses as integers), the reservations ``hosts``
    (a DUID or a MAC -> address) and at most ``max_leases`` entries. ``offer``: seconds an
    offered address stays held. ``stats``: where it counts evictions and expiries."""

    def __init__(self, first: int, last: int, *, hosts: dict[bytes, int], max_leases: int,
                 offer: float, stats: dict[str, int]) -> None:
        self.first, self.last = first, last
        self.hosts = dict(hosts)
        #: reserved address -> its owner (nobody else gets it)
        self.reserved = {a: owner for owner, a in self.hosts.items()}
        self.max_leases, self.offer = max_leases, offer
        self.stats = stats
        self.leases: dict[tuple[bytes, int], Lease] = {}
        self.by_address: dict[int, Lease] = {}
        self.offers: OrderedDict[tuple[bytes, int], None] = OrderedDict()  # oldest first
        self.declined: OrderedDict[int, Lease] = OrderedDict()
        self._expiry: list[tuple[float, int]] = []  # (time, address): a lazy heap

    def __len__(self) -> int:
        return len(self.leases) + len(self.declined)

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def entries(self) -> list[Lease]:
        return sorted([*self.leases.values(), *self.declined.values()], key=lambda x: x.address)

    def next_expiry(self) -> float | None:
        return self._expiry[0][0] if self._expiry else None

    # -- finding an address ----------------------------------------------------------------
    def take(self, duid: bytes, iaid: int, mac: bytes | None, hints: list[int], now: float,
             *, hint_only: bool = False) -> Lease | None:
        """The entry of (duid, iaid), made (offered) if need be: its reservation, its
        entry, a free hint in the pool, a free address of the pool (``hint_only``: not
        that); None if there is none."""
        key = (duid, iaid)
        reserved = self.hosts.get(duid)
        if reserved is None and mac is not None:
            reserved = self.hosts.get(mac)
        lease = self.leases.get(key)
        if reserved is not None:
            if lease is not None and lease.address != reserved:
                self.drop(lease)
                lease = None
            if lease is None:
                holder = self.by_address.get(reserved)
                if holder is not None and holder.state != OFFERED:
                    return None  # declined, or bound before the reservation was made
                if holder is not None:
                    self.drop(holder)
                return self._new(key, reserved, now)
            return lease
        if lease is not None:
            return lease
        for h in hints:
            if self.free(h):
                return self._new(key, h, now)
        if hint_only:
            return None
        address = self.probe(duid, iaid)
        if address is None and self.offers:
            # the pool is full: the oldest offer gives way (a flood only holds offers)
            oldest = self.leases[next(iter(self.offers))]
            address = oldest.address
            self.drop(oldest)
            self._count("offers_evicted")
        return None if address is None else self._new(key, address, now)

    def free(self, address: int) -> bool:
        return self.first <= address <= self.last and address not in self.by_address \
            and address not in self.reserved

    def probe(self, duid: bytes, iaid: int) -> int | None:
        """A free address of the pool, from a place that depends on the client, probing
        onward at most as many addresses as are taken, plus one."""
        size = self.last - self.first + 1
        digest = hashlib.sha256(duid + iaid.to_bytes(4, "big")).digest()
        start = int.from_bytes(digest[:16], "big") % size
        for i in range(min(size, len(self.by_address) + len(self.reserved) + 1)):
            address = self.first + (start + i) % size
            if address not in self.by_address and address not in self.reserved:
                return address
        return None

    def _new(self, key: tuple[bytes, int], address: int, now: float) -> Lease | None:
        if not self._make_room():
            return None
        lease = Lease(address, key[0], key[1], OFFERED, now + self.offer, now + self.offer)
        self.leases[key] = lease
        self.by_address[address] = lease
        self.offers[key] = None
        self._schedule(lease)
        return lease

    def _make_room(self) -> bool:
        """Room for one more entry: the oldest offer goes, then the oldest declined
        address, when the table is full; False when every entry is a binding."""
        if len(self) < self.max_leases:
            return True
        if self.offers:
            self.drop(self.leases[next(iter(self.offers))])
            self._count("offers_evicted")
            return True
        if self.declined:
            self.drop(next(iter(self.declined.values())))
            return True
        self._count("table_full")
        return False

    # -- changing entries ------------------------------------------------------------------
    def hold(self, lease: Lease, valid_until: float, preferred_until: float) -> None:
        lease.valid_until, lease.preferred_until = valid_until, preferred_until
        self._schedule(lease)

    def bind(self, lease: Lease, valid_until: float, preferred_until: float) -> None:
        if lease.state == OFFERED:
            self.offers.pop(lease.key, None)
        lease.state = BOUND
        self.hold(lease, valid_until, preferred_until)

    def decline(self, lease: Lease, until: float) -> None:
        """``lease``'s address is someone else's: nobody gets it until ``until``."""
        self.drop(lease)
        held = Lease(lease.address, b"", 0, DECLINED, until, until)
        self._make_room()  # (there is: the binding just went)
        self.declined[lease.address] = held
        self.by_address[lease.address] = held
        self._schedule(held)

    def drop(self, lease: Lease) -> None:
        if lease.state == DECLINED:
            self.declined.pop(lease.address, None)
        else:
            self.leases.pop(lease.key, None)
            self.offers.pop(lease.key, None)
        if self.by_address.get(lease.address) is lease:
            del self.by_address[lease.address]

    def _schedule(self, lease: Lease) -> None:
        heapq.heappush(self._expiry, (lease.valid_until, lease.address))
        if len(self._expiry) > 4 * len(self.by_address) + 64:  # renewals left stale items
            self._expiry = [(x.valid_until, a) for a, x in self.by_address.items()]
            heapq.heapify(self._expiry)

    def expire(self, now: float) -> bool:
        """Drop the entries whose valid lifetime ended: whether a binding or a declined
        address went (what the lease file holds)."""
        changed = False
        while self._expiry and self._expiry[0][0] <= now:
            _, address = heapq.heappop(self._expiry)
            lease = self.by_address.get(address)
            if lease is not None and lease.valid_until <= now:
                self.drop(lease)
                if lease.state != OFFERED:
                    self._count("expired")
                    changed = True
        return changed

    # -- what a lease file holds -----------------------------------------------------------
    def snapshot(self, now: float, wall: float) -> list[dict[str, Any]]:
        """The bindings and declined addresses, their ends in wall-clock time (``wall``
        is the wall clock at ``now``)."""
        return [{"address": address_text(x.address), "duid": d.duid_text(x.duid),
                 "iaid": x.iaid, "state": x.state,
                 "valid_until": round(wall + x.valid_until - now, 3),
                 "preferred_until": round(wall + x.preferred_until - now, 3)}
                for x in self.entries() if x.state != OFFERED]

    def restore(self, entries: object, now: float, wall: float) -> int:
        """Take back what ``snapshot`` gave (the entries that have not ended, as many as
        fit); returns how many entries were malformed."""
        bad = 0
        for entry in entries if isinstance(entries, list) else []:
            if len(self) >= self.max_leases:
                break
            try:
                address = int(ipaddress.IPv6Address(entry["address"]))
                state = entry["state"]
                valid = now + float(entry["valid_until"]) - wall
                preferred = now + float(entry["preferred_until"]) - wall
                duid = d.parse_duid(entry["duid"]) if state == BOUND else b""
                iaid = int(entry["iaid"]) if state == BOUND else 0
                if state not in (BOUND, DECLINED) or address in self.by_address \
                        or (duid, iaid) in self.leases or not 0 <= iaid <= 0xFFFFFFFF:
                    raise ValueError("bad or repeated entry")
            except (KeyError, TypeError, ValueError):
                bad += 1
                continue
            if valid <= now:
                continue
            lease = Lease(address, duid, iaid, state, valid, min(preferred, valid))
            if state == BOUND:
                self.leases[lease.key] = lease
            else:
                self.declined[address] = lease
            self.by_address[address] = lease
            self._schedule(lease)
        return bad
