"""IPv4 and IPv6 fragment reassembly (RFC 791, RFC 8200 4.5), sans-IO and bounded.

Fragments are keyed by (src, dst, protocol, identification). A datagram completes when
its pieces cover [0, total) with no gaps. Overlapping fragments drop the whole datagram
(RFC 5722 for IPv6; we apply the same rule to IPv4, as Linux does for IPv6 and as
defences against overlap attacks recommend), and so does a datagram that would exceed
65535 bytes of payload or ``max_pieces`` fragments (64: a flood of tiny fragments can
make no datagram expensive; 64 pieces carry a whole 64 KiB datagram over any MTU of
1100 bytes or more). A fragment finds its place by binary search, so each costs
O(log n) to add and a datagram O(n log n) to collect.

Memory is bounded: at most ``max_bytes`` buffered in total and ``max_datagrams`` in
progress; when full, the oldest incomplete datagram is evicted. What counts is what the
buffers really cost the process, not only their payload: each piece is charged its
bytes plus ``PIECE_OVERHEAD`` (the objects that hold it) and each datagram
``DATAGRAM_OVERHEAD``, so a flood of 8-byte fragments fills the budget with as much
memory as a flood of large ones. Incomplete datagrams expire after ``timeout`` seconds
(the caller may send ICMP time exceeded for those whose first fragment arrived:
``expire`` returns them).
"""

from __future__ import annotations

import sys
from bisect import bisect_right
from collections import OrderedDict

MAX_PAYLOAD = 65535
MAX_PIECES = 64
#: what holding one piece costs beyond its payload: the bytes object's header, its
#: offset (an int), and a slot in each of two lists (counted twice for over-allocation)
PIECE_OVERHEAD = sys.getsizeof(b"") + sys.getsizeof(MAX_PAYLOAD) + 2 * 2 * 8
#: what one datagram in progress costs with no pieces: its record, its two lists, its
#: key (a tuple of two addresses and two ints) and its entry in the ordered table
DATAGRAM_OVERHEAD = 512


class _Datagram:
    __slots__ = ("starts", "pieces", "total", "size", "cost", "deadline", "first")

    def __init__(self, deadline: float) -> None:
        self.starts: list[int] = []  # sorted offsets of the pieces
        self.pieces: list[bytes] = []  # the pieces, in the same order
        self.total = -1  # known once the last fragment (MF=0) arrives
        self.size = 0  # payload bytes buffered
        self.cost = DATAGRAM_OVERHEAD  # memory charged to the reassembler's budget
        self.deadline = deadline
        self.first: bytes | None = None  # header info of the offset-0 fragment, for ICMP


class Reassembler:
    """Collects fragments; ``add`` returns the whole payload when a datagram completes."""

    def __init__(self, timeout: float = 30.0, max_bytes: int = 4 * 1024 * 1024,
                 max_datagrams: int = 1024, max_pieces: int = MAX_PIECES) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self.max_pieces = max_pieces
        self._pending: OrderedDict[tuple, _Datagram] = OrderedDict()
        #: memory charged for everything held (payload and overheads), at most max_bytes
        self.buffered = 0
        self.dropped_overlap = 0
        self.dropped_oversize = 0
        self.dropped_pieces = 0
        self.evicted = 0
        self.expired = 0

    def add(self, key: tuple, offset: int, more: bool, data: bytes | memoryview, now: float,
            first_header: bytes | None = None) -> bytes | None:
        """Add one fragment: ``offset`` in bytes, ``more`` = the MF flag.

        Returns the reassembled payload, or None while incomplete or when dropped.
        """
        n = len(data)
        end = offset + n
        if end > MAX_PAYLOAD or (more and n % 8):
            # non-final fragments carry multiples of 8 bytes (RFC 791, RFC 8200)
            self._drop(key)
            self.dropped_oversize += 1
            return None
        d = self._pending.get(key)
        if d is None:
            if n == 0 and more:
                return None
            self._make_room(DATAGRAM_OVERHEAD + PIECE_OVERHEAD + n)
            d = self._pending[key] = _Datagram(now + self.timeout)
            self.buffered += DATAGRAM_OVERHEAD
        # overlap check against the neighbours in offset order; exact duplicates are
        # tolerated
        starts = d.starts
        i = bisect_right(starts, offset)
        if i:
            prev = d.pieces[i - 1]
            p_start = starts[i - 1]
            if p_start + len(prev) > offset:
                if p_start == offset and len(prev) == n and prev == bytes(data):
                    return None  # a retransmitted duplicate
                return self._refuse(key)
        if i < len(starts) and starts[i] < end:
            return self._refuse(key)
        if not more:
            if d.total >= 0 and d.total != end:
                return self._refuse(key)
            if starts and starts[-1] + len(d.pieces[-1]) > end:
                return self._refuse(key)  # a piece we hold lies beyond the end
            d.total = end
        if d.total >= 0 and end > d.total:
            return self._refuse(key)
        if len(starts) >= self.max_pieces:
            self._drop(key)
            self.dropped_pieces += 1
            return None
        cost = PIECE_OVERHEAD + n
        if offset == 0 and first_header is not None and d.first is None:
            cost += PIECE_OVERHEAD + len(first_header)
        if self.buffered + cost > self.max_bytes:
            self._make_room(cost, keep=key)
            if self.buffered + cost > self.max_bytes:
                self._drop(key)
                self.evicted += 1
                return None
        starts.insert(i, offset)
        d.pieces.insert(i, bytes(data))
        d.size += n
        d.cost += cost
        self.buffered += cost
        if offset == 0 and first_header is not None and d.first is None:
            d.first = first_header
        if d.total < 0 or d.size != d.total:
            return None
        # no two pieces overlap and all lie within [0, total): their sizes add up to the
        # total only when they cover it
        self._drop(key)
        return b"".join(d.pieces)

    def _refuse(self, key: tuple) -> None:
        """An overlap or a contradiction: the whole datagram goes (RFC 5722)."""
        self._drop(key)
        self.dropped_overlap += 1
        return None

    def _drop(self, key: tuple) -> None:
        d = self._pending.pop(key, None)
        if d is not None:
            self.buffered -= d.cost

    def _make_room(self, n: int, keep: tuple | None = None) -> None:
        while self._pending and (len(self._pending) >= self.max_datagrams
                                 or self.buffered + n > self.max_bytes):
            oldest = next(iter(self._pending))
            if oldest == keep:
                if len(self._pending) == 1:
                    return
                self._pending.move_to_end(oldest)
                continue
            self._drop(oldest)
            self.evicted += 1

    def expire(self, now: float) -> list[tuple[tuple, bytes | None]]:
        """Drop timed-out datagrams; returns (key, first fragment header or None) for each."""
        out = []
        for key in [k for k, d in self._pending.items() if d.deadline <= now]:
            out.append((key, self._pending[key].first))
            self._drop(key)
            self.expired += 1
        return out

    def next_deadline(self) -> float | None:
        return min((d.deadline for d in self._pending.values()), default=None)

    def __len__(self) -> int:
        return len(self._pending)
