"""IPv4 and IPv6 fragment reassembly (RFC 791, RFC 8200 4.5), sans-IO and bounded.

Fragments are keyed by (src, dst, protocol, identification). A datagram completes when
its pieces cover [0, total) with no gaps. Overlapping fragments drop the whole datagram
(RFC 5722 for IPv6; we apply the same rule to IPv4, as Linux does for IPv6 and as
defences against overlap attacks recommend), and so does a datagram that would exceed
65535 bytes of payload. Memory is bounded: at most ``max_bytes`` buffered in total and
``max_datagrams`` in progress; when full, the oldest incomplete datagram is evicted.
Incomplete datagrams expire after ``timeout`` seconds (the caller may send ICMP time
exceeded for those whose first fragment arrived: ``expire`` returns them).
"""

from __future__ import annotations

from collections import OrderedDict

MAX_PAYLOAD = 65535


class _Datagram:
    __slots__ = ("pieces", "total", "size", "deadline", "first")

    def __init__(self, deadline: float) -> None:
        self.pieces: list[tuple[int, bytes]] = []
        self.total = -1  # known once the last fragment (MF=0) arrives
        self.size = 0  # bytes buffered
        self.deadline = deadline
        self.first: bytes | None = None  # header info of the offset-0 fragment, for ICMP


class Reassembler:
    """Collects fragments; ``add`` returns the whole payload when a datagram completes."""

    def __init__(self, timeout: float = 30.0, max_bytes: int = 4 * 1024 * 1024,
                 max_datagrams: int = 1024) -> None:
        self.timeout = timeout
        self.max_bytes = max_bytes
        self.max_datagrams = max_datagrams
        self._pending: OrderedDict[tuple, _Datagram] = OrderedDict()
        self.buffered = 0
        self.dropped_overlap = 0
        self.dropped_oversize = 0
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
            self._make_room(n)
            d = self._pending[key] = _Datagram(now + self.timeout)
        # overlap check against what we have; exact duplicates are tolerated
        for start, piece in d.pieces:
            p_end = start + len(piece)
            if start < end and offset < p_end:
                if start == offset and p_end == end and bytes(piece) == bytes(data):
                    return None  # a retransmitted duplicate
                self._drop(key)
                self.dropped_overlap += 1
                return None
        if not more:
            if d.total >= 0 and d.total != end:
                self._drop(key)
                self.dropped_overlap += 1
                return None
            d.total = end
        if d.total >= 0 and end > d.total:
            self._drop(key)
            self.dropped_overlap += 1
            return None
        if self.buffered + n > self.max_bytes:
            self._make_room(n, keep=key)
            if self.buffered + n > self.max_bytes:
                self._drop(key)
                self.evicted += 1
                return None
        d.pieces.append((offset, bytes(data)))
        d.size += n
        self.buffered += n
        if offset == 0 and first_header is not None:
            d.first = first_header
        if d.total < 0 or d.size != d.total:
            return None
        d.pieces.sort()
        pos = 0
        for start, piece in d.pieces:
            if start != pos:
                return None  # a gap remains (sizes add up only by overlap, which we refused)
            pos += len(piece)
        self._drop(key)
        return b"".join(piece for _, piece in d.pieces)

    def _drop(self, key: tuple) -> None:
        d = self._pending.pop(key, None)
        if d is not None:
            self.buffered -= d.size

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
