"""The switch's learning table (vde-2 hash.c semantics), sans-IO: time is passed in.

Entries are keyed by (MAC, VLAN). An entry expires ``expire`` seconds after the MAC was
last seen; a MAC seen on another port moves only when its entry is older than
``min_persistence`` seconds, so a looped frame cannot steal a live station's entry.
The table is bounded: when it is full, new MACs are not learned (their frames flood),
so a MAC flood cannot grow memory without bound.
"""

from __future__ import annotations

from typing import Any

DEFAULT_MAX_ENTRIES = 32768


def make_key(mac: bytes, vlan: int) -> bytes:
    """The table key: 6 bytes for VLAN 0 (the common case), 8 otherwise."""
    return mac if vlan == 0 else mac + vlan.to_bytes(2, "big")


def split_key(key: bytes) -> tuple[bytes, int]:
    return key[:6], (int.from_bytes(key[6:8], "big") if len(key) == 8 else 0)


class ForwardingTable:
    """MAC learning with aging. ``entries[key] = [port, last_seen]`` (a list, updated in place)."""

    def __init__(self, size: int = 128, gc_interval: float = 2, expire: float = 100,
                 min_persistence: float = 3, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.size = size
        self.gc_interval = gc_interval
        self.expire = expire
        self.min_persistence = min_persistence
        self.max_entries = max_entries
        self.entries: dict[bytes, list[Any]] = {}
        self.full_drops = 0

    def learn(self, mac: bytes, vlan: int, port: Any, now: float) -> None:
        key = make_key(mac, vlan)
        e = self.entries.get(key)
        if e is None:
            if len(self.entries) >= self.max_entries:
                self.full_drops += 1
                return
            self.entries[key] = [port, now]
        elif e[0] is port:
            e[1] = now
        elif now - e[1] >= self.min_persistence:
            e[0] = port
            e[1] = now

    def lookup(self, mac: bytes, vlan: int, now: float | None = None) -> Any:
        e = self.entries.get(make_key(mac, vlan))
        if e is None:
            return None
        if now is not None and now - e[1] > self.expire:
            return None
        return e[0]

    def gc(self, now: float) -> int:
        """Drop expired entries; returns how many."""
        limit = now - self.expire
        dead = [k for k, e in self.entries.items() if e[1] < limit]
        for k in dead:
            del self.entries[k]
        return len(dead)

    def forget_port(self, port: Any) -> None:
        for k in [k for k, e in self.entries.items() if e[0] is port]:
            del self.entries[k]

    def forget_vlan(self, vlan: int) -> None:
        """Flush one VLAN (a spanning tree topology change)."""
        if vlan == 0:
            dead = [k for k in self.entries if len(k) == 6]
        else:
            suffix = vlan.to_bytes(2, "big")
            dead = [k for k in self.entries if len(k) == 8 and k[6:] == suffix]
        for k in dead:
            del self.entries[k]

    def bucket(self, key: bytes) -> int:
        """The bucket a key falls in, for ``hash/print`` (informational only)."""
        h = 0
        for b in key:
            h = (h * 31 + b) & 0xFFFFFFFF
        return h % self.size

    def __len__(self) -> int:
        return len(self.entries)
