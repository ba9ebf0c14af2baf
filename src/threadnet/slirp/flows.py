"""slirp's table of UDP and ICMP echo flows, sans-IO: bounded, least recently used first
out, with an idle timeout per flow. The engine (``slirp/gateway.py``) keeps one kernel
socket per flow as its value; this table only decides which flows live.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Any


class FlowTable:
    """Flows by key, each with a value and an idle deadline.

    ``add`` beyond ``limit`` evicts the least recently used flow (returned, so its socket
    can be closed); ``touch`` marks use; ``expire(now)`` returns the flows idle past
    their timeout. Costs O(1) per datagram and O(expired) per expiry."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.flows: OrderedDict[Hashable, list[Any]] = OrderedDict()  # key -> [value, deadline, timeout]
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.flows)

    def get(self, key: Hashable) -> Any:
        entry = self.flows.get(key)
        return None if entry is None else entry[0]

    def add(self, key: Hashable, value: Any, timeout: float, now: float
            ) -> list[tuple[Hashable, Any]]:
        """Add a flow; returns the flows evicted to make room (oldest first)."""
        out = []
        old = self.flows.pop(key, None)
        if old is not None:
            out.append((key, old[0]))
        while len(self.flows) >= self.limit:
            k, e = self.flows.popitem(last=False)
            self.evicted += 1
            out.append((k, e[0]))
        self.flows[key] = [value, now + timeout, timeout]
        return out

    def touch(self, key: Hashable, now: float) -> None:
        entry = self.flows.get(key)
        if entry is not None:
            entry[1] = now + entry[2]
            self.flows.move_to_end(key)

    def remove(self, key: Hashable) -> Any:
        entry = self.flows.pop(key, None)
        return None if entry is None else entry[0]

    def expire(self, now: float) -> list[tuple[Hashable, Any]]:
        """The flows idle past their deadline, removed. Least recently used come first, so
        the scan stops at the first flow still alive."""
        out = []
        flows = self.flows
        while flows:
            k, e = next(iter(flows.items()))
            if e[1] > now:
                break
            del flows[k]
            out.append((k, e[0]))
        return out
