"""The sans-IO emulated channel: frames in with a timestamp, frames out when they are due.

Nothing here reads a clock, sleeps or touches a socket. The caller passes the current time
(seconds, any monotonic origin) to every call, asks ``next_deadline()`` how long it may
wait, and calls ``pop(now)`` when that time comes. With a seeded ``random.Random`` the
whole behaviour is reproducible.

    >>> f = ImpairedLine(seed=1)
    >>> f.set("delay", "10", now=0.0)
    >>> f.channels["LR"].push(b"frame", 0.0)
    True
    >>> f.channels["LR"].pop(0.010)
    [b'frame']
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass, field, replace
from heapq import heapify, heappop, heappush

from threadnet.wirefilter.values import DIRECTIONS, Value, parse_setting

#: hard bounds on what one channel holds, whatever chanbufsize says (0 = "unlimited")
MAX_QUEUE_FRAMES = 65536
MAX_QUEUE_BYTES = 64 << 20

_NEG_INF = float("-inf")
_VALUE_FIELDS = (
    "loss", "lostburst", "delay", "dup", "bandwidth", "speed", "noise", "mtu", "chanbufsize"
)


@dataclass
class ChannelParams:
    """The settings of one direction. Every number is a wirefilter Value (plain numbers are
    converted); 0 disables the feature (bandwidth, speed, mtu, chanbufsize: unlimited).

    loss and dup are percentages, lostburst the mean length of a loss burst (0: losses are
    independent), delay in milliseconds, bandwidth and speed in bytes/s, noise in damaged
    bits per megabyte, mtu and chanbufsize in bytes.
    """

    loss: Value = field(default_factory=Value)
    lostburst: Value = field(default_factory=Value)
    delay: Value = field(default_factory=Value)
    dup: Value = field(default_factory=Value)
    bandwidth: Value = field(default_factory=Value)
    speed: Value = field(default_factory=Value)
    noise: Value = field(default_factory=Value)
    mtu: Value = field(default_factory=Value)
    chanbufsize: Value = field(default_factory=Value)
    fifo: bool = True

    def __post_init__(self) -> None:
        for name in _VALUE_FIELDS:
            v = getattr(self, name)
            if not isinstance(v, Value):
                setattr(self, name, Value(float(v)))


def _poisson(rng: random.Random, mean: float) -> int:
    """A Poisson sample; exact (Knuth) for small means, normal approximation for large."""
    if mean < 30.0:
        limit = math.exp(-mean)
        k = 0
        p = rng.random()
        while p > limit:
            k += 1
            p *= rng.random()
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


class Channel:
    """One direction of an emulated wire.

    ``push`` decides, in wirefilter's order, whether a frame is dropped (mtu, loss,
    capacity), duplicated and damaged, and when it is due; ``pop`` hands out what is due.
    ``params`` may be replaced or edited at any time; ``set_params`` also lets a lowered
    delay release frames already queued.
    """

    def __init__(
        self,
        params: ChannelParams | None = None,
        rng: random.Random | None = None,
        *,
        max_queue_frames: int = MAX_QUEUE_FRAMES,
        max_queue_bytes: int = MAX_QUEUE_BYTES,
    ) -> None:
        self.params = params if params is not None else ChannelParams()
        self.rng = rng if rng is not None else random.Random()
        self.max_queue_frames = max_queue_frames
        self.max_queue_bytes = max_queue_bytes
        # entries are (due, seq, frame, ready): seq breaks ties so frames are never
        # compared; ready (push time or end of transmission) lets set_params retime.
        self._heap: list[tuple[float, int, bytes, float]] = []
        self._seq = 0
        self._bytes = 0
        self._last_due = _NEG_INF  # latest due time handed out, for fifo ordering
        self._tx_end = _NEG_INF  # when the bandwidth-limited line becomes free
        self._accept_next = _NEG_INF  # when the sender may hand over the next frame
        self._in_burst = False  # Gilbert model state: True while in a loss burst
        self.received = 0
        self.delivered = 0
        self.dropped_loss = 0
        self.dropped_mtu = 0
        self.dropped_buffer = 0
        self.duplicated = 0
        self.corrupted = 0

    # -- per frame -----------------------------------------------------------------
    def push(self, frame: bytes | bytearray | memoryview, now: float) -> bool:
        """Offer one frame at time ``now``; False when it was dropped."""
        if type(frame) is not bytes:
            frame = bytes(frame)
        p = self.params
        rng = self.rng
        n = len(frame)
        self.received += 1

        v = p.speed
        if v.base or v.plus:
            speed = v.sample(rng)
            if speed > 0.0:
                start = self._accept_next if self._accept_next > now else now
                self._accept_next = start + n / speed

        v = p.mtu
        if v.base or v.plus:
            # like wirefilter, the smallest MTU the value allows is the limit
            mtu = v.base - v.plus
            if mtu > 0 and n > mtu:
                self.dropped_mtu += 1
                return False

        v = p.loss
        if v.base or v.plus:
            if self._lose(v.sample(rng) / 100.0):
                self.dropped_loss += 1
                return False
        else:
            self._in_burst = False

        if not self._fits(n):
            self.dropped_buffer += 1
            return False

        copies = 1
        v = p.dup
        if (v.base or v.plus) and rng.random() * 100.0 < v.sample(rng) and self._fits(2 * n):
            copies = 2
            self.duplicated += 1

        v = p.noise
        noisy = v.base or v.plus
        for _ in range(copies):
            out = frame
            if noisy and n:
                k = _poisson(rng, v.sample(rng) * n / 1_048_576)
                if k:
                    out = self._damage(frame, k)
            self._schedule(out, n, now)
        return True

    def _lose(self, fraction: float) -> bool:
        """Decide one loss: independent, or by the Gilbert model when lostburst is set.

        The Gilbert chain leaves a burst with probability 1/lostburst (so bursts last
        lostburst frames on average) and enters one with the probability that makes the
        long-run share of lost frames equal ``fraction``. Short bursts cannot reach every
        loss rate (bursts of length 1 cap it at 50%); the entry probability is then 1.
        """
        if fraction <= 0.0:
            self._in_burst = False
            return False
        if fraction >= 1.0:
            self._in_burst = True
            return True
        rng = self.rng
        v = self.params.lostburst
        burst = v.sample(rng) if (v.base or v.plus) else 0.0
        if burst <= 0.0:
            return rng.random() < fraction
        leave = 1.0 / burst if burst > 1.0 else 1.0
        if self._in_burst:
            if rng.random() < leave:
                self._in_burst = False
        else:
            if rng.random() < fraction * leave / (1.0 - fraction):
                self._in_burst = True
        return self._in_burst

    def _fits(self, n: int) -> bool:
        total = self._bytes + n
        if len(self._heap) >= self.max_queue_frames or total > self.max_queue_bytes:
            return False
        v = self.params.chanbufsize
        if v.base or v.plus:
            cap = v.sample(self.rng)
            if cap > 0.0 and total > cap:
                return False
        return True

    def _damage(self, frame: bytes, k: int) -> bytes:
        """A copy of ``frame`` with ``k`` distinct random bits flipped."""
        nbits = len(frame) * 8
        buf = bytearray(frame)
        for pos in self.rng.sample(range(nbits), min(k, nbits)):
            buf[pos >> 3] ^= 1 << (pos & 7)
        self.corrupted += 1
        return bytes(buf)

    def _schedule(self, frame: bytes, n: int, now: float) -> None:
        p = self.params
        rng = self.rng
        ready = now
        v = p.bandwidth
        if v.base or v.plus:
            bw = v.sample(rng)
            if bw > 0.0:
                # the line sends one frame at a time: wait for it to be free
                start = self._tx_end if self._tx_end > now else now
                ready = self._tx_end = start + n / bw
        v = p.delay
        due = ready + v.sample(rng) / 1000.0 if (v.base or v.plus) else ready
        last = self._last_due
        if due < last:
            if p.fifo:
                due = last
        else:
            self._last_due = due
        heappush(self._heap, (due, self._seq, frame, ready))
        self._seq += 1
        self._bytes += n

    def pop(self, now: float) -> list[bytes]:
        """The frames due at ``now`` (due time <= now), in delivery order."""
        heap = self._heap
        if not heap or heap[0][0] > now:
            return []
        out: list[bytes] = []
        size = 0
        while heap and heap[0][0] <= now:
            frame = heappop(heap)[2]
            size += len(frame)
            out.append(frame)
        self._bytes -= size
        self.delivered += len(out)
        return out

    def next_deadline(self) -> float | None:
        """When the next queued frame is due, or None when nothing is queued."""
        return self._heap[0][0] if self._heap else None

    def accept_at(self, now: float) -> float:
        """The earliest time the sender may hand over its next frame (speed emulation).

        A speed limit does not drop: it holds the sender back, each frame keeping the
        interface busy for len/speed seconds. Without a speed limit this is ``now``.
        """
        v = self.params.speed
        if not (v.base or v.plus):
            return now
        return self._accept_next if self._accept_next > now else now

    # -- settings ------------------------------------------------------------------
    def set_params(self, params: ChannelParams, now: float) -> None:
        """Replace the settings. A lower delay applies to queued frames too, at once:
        each becomes due no later than ``now`` (or the end of its transmission) plus a new
        delay sample, and fifo order is kept when ``params.fifo`` asks for it."""
        old = self.params
        self.params = params
        if not params.speed.enabled:
            self._accept_next = _NEG_INF
        if not params.bandwidth.enabled:
            self._tx_end = _NEG_INF
        od, nd = old.delay, params.delay
        if self._heap and (nd.base < od.base or nd.base + nd.plus < od.base + od.plus):
            self._retime(now)

    def _retime(self, now: float) -> None:
        p = self.params
        rng = self.rng
        fifo = p.fifo
        last = _NEG_INF
        entries = []
        for due, seq, frame, ready in sorted(self._heap, key=lambda e: e[1]):
            new = (ready if ready > now else now) + p.delay.sample(rng) / 1000.0
            if new > due:
                new = due
            if fifo and new < last:
                new = last
            if new > last:
                last = new
            entries.append((new, seq, frame, ready))
        heapify(entries)
        self._heap = entries
        self._last_due = last

    # -- state ---------------------------------------------------------------------
    @property
    def queued_frames(self) -> int:
        """Frames waiting in the channel."""
        return len(self._heap)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the channel."""
        return self._bytes

    def clear(self) -> None:
        """Forget every queued frame (they are not counted as delivered)."""
        self._heap.clear()
        self._bytes = 0
        self._last_due = self._tx_end = _NEG_INF


class ImpairedLine:
    """A pair of channels, ``LR`` and ``RL``, sharing one random generator, set with
    wirefilter's option names and values and reported as wirefilter's ``showinfo`` does."""

    #: option names accepted by ``set``
    OPTIONS = _VALUE_FIELDS + ("fifo",)
    #: wirefilter's other names for some options
    ALIASES = {"band": "bandwidth", "capacity": "chanbufsize"}
    _MULTIPLIED = frozenset({"bandwidth", "speed", "chanbufsize"})

    def __init__(self, seed: int | None = None, params: ChannelParams | None = None) -> None:
        self.rng = random.Random(seed)
        base = params if params is not None else ChannelParams()
        self.channels: dict[str, Channel] = {
            d: Channel(copy.deepcopy(base), self.rng) for d in DIRECTIONS
        }

    def set(self, option: str, text: str, now: float) -> None:
        """Apply one wirefilter setting, e.g. ``set("delay", "LR10+5N", now)``.

        ``fifo`` takes an integer (0: frames may overtake each other) and applies to both
        directions. Raises ValueError for an unknown option or a bad value.
        """
        name = self.ALIASES.get(option, option)
        if name == "fifo":
            try:
                fifo = int(text.strip()) != 0
            except ValueError:
                raise ValueError(f"bad value {text!r} for fifo: expected 0 or 1") from None
            for ch in self.channels.values():
                ch.set_params(replace(ch.params, fifo=fifo), now)
            return
        if name not in _VALUE_FIELDS:
            known = ", ".join(self.OPTIONS)
            raise ValueError(f"unknown wirefilter option {option!r} (known: {known})")
        values = parse_setting(text, multipliers=name in self._MULTIPLIED, name=name)
        if name == "mtu":
            v = next(iter(values.values()))
            if not (v.base.is_integer() and v.plus.is_integer()):
                raise ValueError(f"bad value {text!r} for mtu: expected a whole number of bytes")
        for d, v in values.items():
            ch = self.channels[d]
            ch.set_params(replace(ch.params, **{name: v}), now)

    def next_deadline(self) -> float | None:
        """The earliest due time over both directions, or None."""
        times = [t for t in (ch.next_deadline() for ch in self.channels.values()) if t is not None]
        return min(times) if times else None

    def showinfo_lines(self, bidirectional: bool = True) -> list[str]:
        """The body of wirefilter's ``showinfo`` reply, line for line.

        Not bidirectional ("monodirectional" wirefilter) reports the LR channel only.
        """
        lr, rl = self.channels["LR"], self.channels["RL"]
        a, b = lr.params, rl.params
        rows = (
            ("Loss  ", "loss"), ("Lburst", "lostburst"), ("Delay ", "delay"), ("Dup   ", "dup"),
            ("Bandw ", "bandwidth"), ("Speed ", "speed"), ("Noise ", "noise"),
        )
        if bidirectional:
            lines = ["WireFilter: bidirectional"]
            lines += [f"{label} L->R {getattr(a, f)}   R->L {getattr(b, f)}" for label, f in rows]
            lines.append(f"MTU    L->R {int(a.mtu.base)}     R->L {int(b.mtu.base)}   ")
            lines.append(f"Cap.   L->R {a.chanbufsize}   R->L {b.chanbufsize}")
            lines.append(
                f"Current Delay Queue size:   L->R {lr.queued_frames}      R->L {rl.queued_frames}   "
            )
            waiting = lr.queued_frames + rl.queued_frames
        else:
            lines = ["WireFilter: monodirectional"]
            lines += [f"{label} {getattr(a, f)}" for label, f in rows]
            lines.append(f"MTU    {int(a.mtu.base)}")
            lines.append(f"Cap.   {a.chanbufsize}")
            lines.append(f"Current Delay Queue size:   {lr.queued_frames}")
            waiting = lr.queued_frames
        lines.append("Fifoness TRUE" if a.fifo else "Fifoness FALSE")
        lines.append(f"Waiting packets in delay queues {waiting}")
        return lines
