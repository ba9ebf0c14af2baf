"""The transmit backlog: what a link's transport cannot take now, queued instead of waited for.

A link driven by a loop (the stack runner's) must never block: its sends run under a
stack's lock, on the caller's thread or the runner's. When the transport is full (a peer
that has not read its queue, a slow line behind a qdisc), a ``BackloggedLink`` puts the
frame in a bounded ``TxBacklog``, like a NIC's transmit queue (Linux's default
txqueuelen, 1000 frames, and at most 4 MiB; beyond, ``drops`` counts them), and tells the
loop (``attach_tx``'s ``wake``). The loop then calls ``on_writable`` whenever
``tx_fileno()`` is writable, and the link sends what waits, in order, until the transport
is full again or the backlog is empty.

A link with no loop attached waits up to ``FLUSH_WAIT`` for room instead, then drops the
frame: a standalone link (``threadnet plug``'s cable) stays lossless against a peer that
reads in bursts.

Each link says what "full" is and what a failed send means (``_try_send``): the frame
went, was lost alone (no route, too big), or the peer is gone (``LinkError``).
"""

from __future__ import annotations

import select
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable

from threadnet.errors import LinkError

#: how long a send with no loop to drain a backlog waits for room (the peer reads its
#: socket in a tight loop: a full queue empties within microseconds)
FLUSH_WAIT = 0.005
#: a driven link's backlog: Linux's default txqueuelen, and at most this many bytes
BACKLOG_FRAMES = 1000
BACKLOG_BYTES = 4 << 20

Frame = bytes | bytearray | memoryview


class TxBacklog:
    """Frames a full transport has not taken yet, oldest first, bounded like a NIC's
    transmit queue (``max_frames``, ``max_bytes``). ``lock`` guards it: senders hold a
    stack's lock and then this one, the loop's ``on_writable`` only this one."""

    def __init__(self, max_frames: int = BACKLOG_FRAMES, max_bytes: int = BACKLOG_BYTES) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames: deque[Frame] = deque()
        self.bytes = 0
        self.lock = threading.Lock()
        #: the loop's ``wake(link)``, or None when no loop drains this link
        self.wake: Callable | None = None
        #: the loop was woken and watches the transport (set and cleared under ``lock``)
        self.armed = False

    def __len__(self) -> int:
        return len(self.frames)

    def push(self, frame: Frame) -> bool:
        """Queue ``frame`` (kept by reference: pass a copy); False when the backlog is
        full (the caller counts a drop)."""
        n = len(frame)
        if len(self.frames) >= self.max_frames or self.bytes + n > self.max_bytes:
            return False
        self.frames.append(frame)
        self.bytes += n
        return True

    def pop(self) -> None:
        """Forget the oldest frame: it has been sent (or lost)."""
        self.bytes -= len(self.frames.popleft())

    def clear(self) -> int:
        """Forget every frame; returns how many there were."""
        n = len(self.frames)
        self.frames.clear()
        self.bytes = 0
        return n


class BackloggedLink:
    """The transmit backlog a loop drains (``attach_tx``, ``on_writable``), for a link
    class that also derives from ``Link``. The link provides ``_try_send(frame)`` (True:
    the frame went, or was lost alone and counted in ``drops``; False: the transport is
    full; LinkError: the peer is gone), and ``tx_fileno()`` when that is not
    ``fileno()``. It may replace ``_drain`` (a tighter loop, or many frames per system
    call), and ``_on_full``/``_on_drained`` to prepare its transport for waiting (a
    ``ptp://`` socket connects, so that its writability follows the peer's queue)."""

    _backlog: TxBacklog | None = None
    drops: int
    closed: bool
    closed_by_peer: bool

    def _try_send(self, frame: Frame) -> bool:
        raise NotImplementedError

    def tx_fileno(self) -> int:
        return self.fileno()  # type: ignore[attr-defined]

    def _on_full(self) -> None:
        """The transport is full and the link is about to wait for writability."""

    def _on_drained(self) -> None:
        """Nothing waits any more."""

    # -- driven by a loop ------------------------------------------------------------
    def attach_tx(self, wake: Callable | None) -> bool:
        bl = self._backlog
        if bl is None:
            bl = self._backlog = TxBacklog()
        with bl.lock:
            bl.wake = wake
            bl.armed = wake is not None and bool(bl.frames)
            arm = bl.armed
        if arm:
            wake(self)  # type: ignore[misc]
        return True

    @property
    def tx_backlog(self) -> int:
        """Frames waiting for room in the transport."""
        bl = self._backlog
        return 0 if bl is None else len(bl.frames)

    def on_writable(self) -> bool:
        bl = self._backlog
        if bl is None:
            return False
        with bl.lock:
            more = False
            if self.closed:
                bl.clear()
            elif bl.frames:
                try:
                    more = self._drain(bl)
                except LinkError:
                    # the peer is gone: what waits is lost; the next send or recv says so
                    self.drops += bl.clear()
                    self.closed_by_peer = True
            if not more:
                bl.armed = False
                self._on_drained()
            return more

    def _drain(self, bl: TxBacklog) -> bool:
        """Send from the backlog while the transport takes frames (lock held); True while
        frames still wait."""
        frames = bl.frames
        try_send = self._try_send
        while frames:
            if not try_send(frames[0]):
                return True
            bl.pop()
        return False

    @staticmethod
    def _copy(frame: Frame) -> Frame:
        """What the backlog keeps of ``frame``: a copy (the caller reuses its buffer)."""
        return frame if type(frame) is bytes else bytes(frame)

    def _queue(self, bl: TxBacklog, frames: Iterable[Frame]) -> Callable | None:
        """Put copies of ``frames`` in the backlog (lock held), counting those it has no
        room for; returns the loop's ``wake`` when the loop must be told."""
        copy = self._copy
        for frame in frames:
            if not bl.push(copy(frame)):
                self.drops += 1
        if bl.armed or not bl.frames or bl.wake is None:
            return None
        bl.armed = True
        self._on_full()
        return bl.wake

    def _send_or_queue(self, frame: Frame) -> bool:
        """With a loop attached: send ``frame`` now if nothing waits and the transport
        takes it, else queue it; never waits. False when no loop is attached (the caller
        then uses ``_send_waiting``)."""
        bl = self._backlog
        if bl is None or bl.wake is None:
            return False
        with bl.lock:
            if not bl.frames and self._try_send(frame):
                return True
            wake = self._queue(bl, (frame,))
        if wake is not None:
            wake(self)
        return True

    # -- standalone ------------------------------------------------------------------
    def _send_waiting(self, frames: Iterable[Frame]) -> None:
        """No loop drains a backlog: send ``frames`` in order, waiting up to
        ``FLUSH_WAIT`` in all for room, then dropping (counted) what is left. Frames a
        detached loop left in the backlog go first."""
        bl = self._backlog
        waited = False
        if bl is not None and bl.frames:
            with bl.lock:
                pending = list(bl.frames)
                bl.clear()
            frames = [*pending, *frames]
            waited = True  # (the transport was prepared for waiting for them)
        deadline = None
        try:
            for frame in frames:
                while not self._try_send(frame):
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + FLUSH_WAIT
                    if now >= deadline:
                        self.drops += 1
                        break
                    if not waited:
                        waited = True
                        self._on_full()  # (a no-op when it already was)
                    select.select([], [self.tx_fileno()], [], deadline - now)
        finally:
            if waited:
                self._on_drained()
