"""The neighbor cache behind ARP (RFC 826) and NDP (RFC 4861 7.3), sans-IO.

An address is INCOMPLETE while we ask for it (a request every ``retrans`` seconds, up to
``max_probes``; packets for it wait in a short queue), REACHABLE for ``reachable``
seconds after a confirmation, then STALE: still used, and re-confirmed in the background
(a unicast probe) when traffic uses it. A failed resolution hands the waiting packets
back so the caller can answer with ICMP host unreachable. The table is bounded: at most
``max_entries``, evicting stale entries first, then the oldest.
"""

from __future__ import annotations

from collections import OrderedDict

INCOMPLETE, REACHABLE, STALE, PROBE = "INCOMPLETE", "REACHABLE", "STALE", "PROBE"


class Neighbor:
    __slots__ = ("state", "mac", "deadline", "probes", "queue", "static")

    def __init__(self, state: str, mac: bytes | None, deadline: float) -> None:
        self.state = state
        self.mac = mac
        self.deadline = deadline
        self.probes = 0
        self.queue: list[object] = []
        self.static = False


class NeighborCache:
    def __init__(self, *, reachable: float = 30.0, retrans: float = 1.0, max_probes: int = 3,
                 queue_len: int = 3, max_entries: int = 1024) -> None:
        self.reachable = reachable
        self.retrans = retrans
        self.max_probes = max_probes
        self.queue_len = queue_len
        self.max_entries = max_entries
        self.entries: OrderedDict[bytes, Neighbor] = OrderedDict()

    def lookup(self, addr: bytes, now: float) -> tuple[bytes | None, bool]:
        """(MAC or None, whether to send a probe now). A STALE entry is still used."""
        e = self.entries.get(addr)
        if e is None or e.mac is None:
            return None, False
        if e.state == REACHABLE and now >= e.deadline and not e.static:
            e.state = STALE
        if e.state == STALE:
            # RFC 4861 7.3.3: traffic to a stale neighbor starts re-confirmation
            e.state = PROBE
            e.probes = 1
            e.deadline = now + self.retrans
            return e.mac, True
        return e.mac, False

    def enqueue(self, addr: bytes, packet: object, now: float) -> tuple[bool, list[object]]:
        """Queue a packet for an unresolved address.

        Returns (send a request now?, packets dropped because the queue was full).
        """
        e = self.entries.get(addr)
        dropped: list[object] = []
        if e is None:
            self._make_room()
            e = self.entries[addr] = Neighbor(INCOMPLETE, None, now + self.retrans)
            e.probes = 1
            e.queue.append(packet)
            return True, dropped
        if len(e.queue) >= self.queue_len:
            dropped.append(e.queue.pop(0))
        e.queue.append(packet)
        return False, dropped

    def confirm(self, addr: bytes, mac: bytes, now: float, *, solicited: bool = True,
                create: bool = True) -> list[object]:
        """A reply or a packet from ``addr`` told us its MAC; returns the packets to send now.

        ``solicited`` (an answer to our request) makes the entry REACHABLE; unsolicited
        news only creates or refreshes a STALE entry (RFC 4861 7.2.5).
        """
        e = self.entries.get(addr)
        if e is None:
            if not create:
                return []
            self._make_room()
            e = self.entries[addr] = Neighbor(STALE, mac, now)
        if e.static:
            return []
        changed = e.mac != mac
        e.mac = mac
        if solicited:
            e.state = REACHABLE
            e.deadline = now + self.reachable
            e.probes = 0
        elif e.state == INCOMPLETE or changed:
            e.state = STALE
        self.entries.move_to_end(addr)
        out, e.queue = e.queue, []
        return out

    def add_static(self, addr: bytes, mac: bytes) -> None:
        e = self.entries[addr] = Neighbor(REACHABLE, mac, float("inf"))
        e.static = True

    def remove(self, addr: bytes) -> None:
        self.entries.pop(addr, None)

    def next_deadline(self) -> float | None:
        return min((e.deadline for e in self.entries.values()
                    if e.state in (INCOMPLETE, PROBE)), default=None)

    def on_timer(self, now: float) -> tuple[list[tuple[bytes, bytes | None]], list[object]]:
        """Returns (requests to send as (addr, MAC to unicast to or None), failed packets)."""
        requests: list[tuple[bytes, bytes | None]] = []
        failed: list[object] = []
        for addr, e in list(self.entries.items()):
            if e.state not in (INCOMPLETE, PROBE) or now < e.deadline:
                continue
            if e.probes >= self.max_probes:
                failed.extend(e.queue)
                del self.entries[addr]
                continue
            e.probes += 1
            e.deadline = now + self.retrans
            requests.append((addr, e.mac if e.state == PROBE else None))
        return requests, failed

    def _make_room(self) -> None:
        if len(self.entries) < self.max_entries:
            return
        for addr, e in self.entries.items():
            if e.state == STALE and not e.static:
                del self.entries[addr]
                return
        for addr, e in self.entries.items():
            if not e.static:
                del self.entries[addr]
                return

    def __len__(self) -> int:
        return len(self.entries)
