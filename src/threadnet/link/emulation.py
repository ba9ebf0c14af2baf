"""Link emulation on any link: ``wirefilter://OPTIONS{URL}`` or ``emulate(link, ...)``.

The same sans-IO channel as ``threadnet wirefilter`` (``wirefilter.core``) sits in each
direction: ``LR`` for frames we send, ``RL`` for frames we receive. Options and values are
wirefilter's: ``loss``, ``lostburst``, ``delay``, ``dup``, ``bandwidth``, ``speed``,
``noise``, ``mtu``, ``chanbufsize``, ``fifo``, each with an optional ``LR``/``RL`` prefix
and jitter ``A+B[U|N]``, e.g. ``wirefilter://loss=5/delay=LR20+5/seed=7{vde:///tmp/sw}``.

Sending never blocks and never sleeps (a stack calls ``send`` under its lock). A frame
goes into the ``LR`` channel, or, while a ``speed`` limit keeps the line busy, into a
bounded transmit queue (as a NIC's, ``TXQUEUE_FRAMES``; what overflows it is dropped and
counted in ``drops``) from which it enters the channel at the time the line frees up.

Due outgoing frames go to the wrapped link, and due incoming frames go into a socket
pair whose read end is this link's ``fileno()``, so select/poll see exactly the frames
that are ready. Who does that on time:

- a loop (the stack runner) that ``attach_timer`` hands to the link: it calls
  ``on_timer(now)`` at ``next_deadline()`` and ``on_inner_readable(now)`` when the wrapped
  link's ``inner_fileno()`` is readable. A speed limit on incoming frames then holds them
  in a bounded receive queue (as the transmit queue does), not in the kernel's buffer;
- otherwise (standalone use) a pacing thread of the link's own (started again in a forked
  child: `threadnet plug -d` opens its links before it daemonizes).

A sender wakes either one only when its frame makes the next deadline earlier than the
one it is armed for.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable

from threadnet.errors import LinkError, URLError
from threadnet.link import (
    Link,
    open_link,
    pass_on_writable,
    pass_tx_attach,
    pass_tx_fileno,
    require_inner,
    unquote,
)
from threadnet.wirefilter.core import ImpairedLine

_INNER_BUDGET = 64
#: the transmit queue in front of a speed-limited line: Linux's default txqueuelen, and
#: at most this many bytes (frames may be up to 64 KiB)
TXQUEUE_FRAMES = 1000
TXQUEUE_BYTES = 4 << 20
_NEVER = float("inf")


class EmulatedLink(Link):
    """``inner`` seen through an emulated channel in each direction."""

    def __init__(self, inner: Link, settings: list[tuple[str, str]] | None = None, *,
                 seed: int | None = None) -> None:
        super().__init__()
        self.inner = inner
        self.url = inner.url
        self.max_frame = inner.max_frame
        self.max_frame_known = inner.max_frame_known
        self.filter = ImpairedLine(seed)
        self._lock = threading.Lock()
        now = time.monotonic()
        for option, value in settings or []:
            self.filter.set(option, value, now)
        self._rx_r, self._rx_w = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._rx_r.setblocking(False)
        self._rx_w.setblocking(False)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._rx_paused_until = 0.0
        # frames a busy speed-limited line has not accepted yet: (frame, time sent)
        self._txq: deque[tuple[bytes, float]] = deque()
        self._txq_bytes = 0
        # the deadline the pacing thread sleeps until (under _lock): a sender whose frame
        # is due earlier wakes it, any other sender does not
        self._sleeping_until = 0.0
        # driven by a loop: incoming frames a busy speed-limited line holds back
        self._rxq: deque[tuple[bytes, float]] = deque()
        self._rxq_bytes = 0
        self.drops = 0
        inner.setblocking(False)
        self._stop = False
        self._error: LinkError | None = None
        #: the loop's wake(link) while a loop runs our timers, else None (our own thread)
        self._loop_wake: Callable[[Link], None] | None = None
        self._thread: threading.Thread | None = None
        self._start_thread()

    def _start_thread(self) -> None:
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=f"emulation {self.url}", daemon=True)
        self._thread.start()
        _PACED.add(self)

    def _after_fork(self) -> None:
        """In a forked child (``threadnet plug -d`` opens its links, then daemonizes) the
        pacing thread is gone: start another, with a fresh lock in case the old thread
        held it at the fork."""
        if self._thread is not None and not self.closed:
            self._lock = threading.Lock()
            self._start_thread()

    def _stop_thread(self) -> None:
        _PACED.discard(self)
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop = True
        self._wake_thread()
        if thread is not threading.current_thread():
            thread.join(2)
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass

    def set(self, option: str, value: str) -> None:
        """Change one setting live, as wirefilter's console does (ValueError if bad)."""
        with self._lock:
            self.filter.set(option, value, time.monotonic())
            self._sleeping_until = 0.0  # (a loop re-arms from next_deadline)
        self._wake()

    # -- Link interface ------------------------------------------------------------
    def fileno(self) -> int:
        return self._rx_r.fileno()

    def ctl_fileno(self) -> int | None:
        return self.inner.ctl_fileno()

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        if self._error is not None:
            raise self._error
        ch = self.filter.channels["LR"]
        data = bytes(frame)
        with self._lock:
            now = time.monotonic()
            txq = self._txq
            if txq or ch.accept_at(now) > now:
                # "speed": the line is busy; wait in the queue, not in this call
                if len(txq) >= TXQUEUE_FRAMES or self._txq_bytes + len(data) > TXQUEUE_BYTES:
                    self.drops += 1
                    return
                txq.append((data, now))
                self._txq_bytes += len(data)
            else:
                ch.push(data, now)
            due = self._next_due()
            wake = due is not None and due < self._sleeping_until
            if wake:
                self._sleeping_until = due  # one wake-up for a burst of senders
        if wake:
            self._wake()

    def _next_due(self) -> float | None:
        """When the pacing has work next (under _lock): a due frame, or the time a busy
        line accepts the head of the transmit (or receive) queue."""
        due = self.filter.next_deadline()
        for q, direction in ((self._txq, "LR"), (self._rxq, "RL")):
            if q:
                at = self.filter.channels[direction].accept_at(q[0][1])
                if due is None or at < due:
                    due = at
        return due

    def _release(self, now: float) -> None:
        """Frames of the transmit (and receive) queue whose turn on the line has come
        enter the channel, each at the time it would have been accepted (so pacing does
        not drift with the wake-up latency). Under _lock."""
        self._txq_bytes = _release(self.filter.channels["LR"], self._txq, self._txq_bytes, now)
        if self._rxq:
            self._rxq_bytes = _release(self.filter.channels["RL"], self._rxq, self._rxq_bytes,
                                       now)

    # -- driven by a loop ----------------------------------------------------------
    def attach_timer(self, wake: Callable[[Link], None] | None) -> bool:
        """A loop runs our pacing (``next_deadline``, ``on_timer``, ``inner_fileno``,
        ``on_inner_readable``) instead of our thread; None gives it back to the thread."""
        if wake is not None:
            self._stop_thread()
            with self._lock:
                self._loop_wake = wake
                self._sleeping_until = 0.0  # nothing armed yet: the loop reads next_deadline
            return True
        if self._loop_wake is not None:
            with self._lock:
                self._loop_wake = None
                rxq, self._rxq = self._rxq, deque()
                self._rxq_bytes = 0
                now = time.monotonic()
                for data, _ in rxq:
                    self.filter.channels["RL"].push(data, now)
            if not self.closed:
                self._start_thread()
        return True

    def next_deadline(self) -> float | None:
        """When ``on_timer`` has work next; the loop arms its timer for it (and a sender
        wakes the loop only for an earlier frame)."""
        with self._lock:
            due = self._next_due()
            self._sleeping_until = _NEVER if due is None else due
        return due

    def on_timer(self, now: float) -> None:
        """Deliver what is due: outgoing frames to the wrapped link, incoming ones to
        our ``fileno()``."""
        if self._error is not None or self.closed:
            return
        lr, rl = self.filter.channels["LR"], self.filter.channels["RL"]
        try:
            self._deliver(lr, rl)
        except LinkError as exc:
            self._fail(exc)

    def inner_fileno(self) -> int:
        """The wrapped link's descriptor: readable when a frame arrives to be paced."""
        return self.inner.fileno()

    def on_inner_readable(self, now: float) -> None:
        """Take what arrived on the wrapped link into the receiving channel (or, while a
        speed limit keeps that line busy, into the bounded receive queue), then deliver
        what is due at once."""
        if self._error is not None or self.closed:
            return
        rl = self.filter.channels["RL"]
        try:
            for _ in range(_INNER_BUDGET):
                try:
                    frame = self.inner.recv()
                except BlockingIOError:
                    break
                with self._lock:
                    rxq = self._rxq
                    if rxq or rl.accept_at(now) > now:
                        if len(rxq) >= TXQUEUE_FRAMES or self._rxq_bytes + len(frame) > TXQUEUE_BYTES:
                            self.drops += 1
                            continue
                        rxq.append((frame, now))
                        self._rxq_bytes += len(frame)
                    else:
                        rl.push(frame, now)
            self._deliver(self.filter.channels["LR"], rl)
        except LinkError as exc:
            self._fail(exc)

    def _fail(self, exc: LinkError) -> None:
        """The wrapped link is gone: readers of ``fileno()`` see EOF, then the error."""
        if self._error is None:
            self._error = exc
            self.closed_by_peer = self.inner.closed_by_peer
            self._rx_w.close()

    # the wrapped link's transmit backlog, when it has one, drains on the same loop
    attach_tx = pass_tx_attach
    tx_fileno = pass_tx_fileno
    on_writable = pass_on_writable

    def _recv(self) -> bytes:
        try:
            data = self._rx_r.recv(65536)
            if not data and self._error is not None:
                raise self._error  # the pacing thread closed our pair: the peer is gone
            return data
        except BlockingIOError:
            if self._error is not None:
                raise self._error from None
            raise
        except OSError:
            if self._error is not None:
                raise self._error from None
            raise

    def wait_readable(self, timeout: float | None) -> bool:
        r, _, _ = select.select([self._rx_r], [], [], timeout)
        return bool(r)

    # -- the pacing thread -----------------------------------------------------------
    def _wake(self) -> None:
        wake = self._loop_wake
        if wake is not None:
            wake(self)
        else:
            self._wake_thread()

    def _wake_thread(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except BlockingIOError:
            pass
        except OSError:
            pass

    def _run(self) -> None:
        lr, rl = self.filter.channels["LR"], self.filter.channels["RL"]
        inner = self.inner
        try:
            while not self._stop:
                self._deliver(lr, rl)
                with self._lock:
                    due = self._next_due()
                    self._sleeping_until = _NEVER if due is None else due
                now = time.monotonic()
                timeout = None if due is None else max(0.0, due - now)
                fds = [self._wake_r]
                if now >= self._rx_paused_until:
                    fds.append(inner.fileno())
                elif timeout is None or self._rx_paused_until - now < timeout:
                    timeout = self._rx_paused_until - now
                r, _, _ = select.select(fds, [], [], timeout)
                if self._stop:
                    return
                if self._wake_r in r:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except BlockingIOError:
                        pass
                if inner.fileno() in r:
                    self._take_inner(rl)
        except LinkError as exc:
            self._fail(exc)  # wakes readers; recv then raises the error

    def _take_inner(self, rl) -> None:
        for _ in range(_INNER_BUDGET):
            try:
                frame = self.inner.recv()
            except BlockingIOError:
                return
            with self._lock:
                now = time.monotonic()
                rl.push(frame, now)
                ready = rl.accept_at(now)
            if ready > now:
                self._rx_paused_until = ready
                return

    def _deliver(self, lr, rl) -> None:
        now = time.monotonic()
        with self._lock:
            self._release(now)
            out = lr.pop(now)
            incoming = rl.pop(now)
        for frame in out:
            self.inner.send(frame)
        for frame in incoming:
            try:
                self._rx_w.send(frame)
            except BlockingIOError:
                self.drops += 1  # nobody reads us: drop, like a full socket

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._stop_thread()
        for s in (self._rx_r, self._rx_w, self._wake_r, self._wake_w):
            s.close()
        self.inner.close()


def _release(ch, q: deque[tuple[bytes, float]], nbytes: int, now: float) -> int:
    """Move the head of ``q`` into channel ``ch`` while the line accepts it by ``now``;
    returns the bytes left in ``q``."""
    while q:
        data, sent = q[0]
        at = ch.accept_at(sent)
        if at > now:
            break
        q.popleft()
        nbytes -= len(data)
        ch.push(data, at)
    return nbytes


def emulate(link: Link, *, seed: int | None = None, **settings: str | float) -> EmulatedLink:
    """Wrap ``link``: ``emulate(open_link(url), loss=5, delay="20+5", seed=1)``."""
    return EmulatedLink(link, [(k, str(v)) for k, v in settings.items()], seed=seed)


def parse_settings(text: str, url: str) -> tuple[list[tuple[str, str]], int | None]:
    """``loss=5/delay=LR20+5/seed=3`` -> ([("loss","5"), ("delay","LR20+5")], 3)."""
    settings: list[tuple[str, str]] = []
    seed = None
    known = ImpairedLine.OPTIONS + tuple(ImpairedLine.ALIASES)
    for item in text.split("/"):
        if not item:
            continue
        key, eq, value = item.partition("=")
        value = unquote(value)
        if key == "seed":
            if not value.isdigit():
                raise URLError(f"{url!r}: seed must be a number")
            seed = int(value)
            continue
        matches = [k for k in known if k.startswith(key)] if key not in known else [key]
        if len(matches) != 1 or not eq:
            raise URLError(f"{url!r}: bad option {item!r} (known: {', '.join(known)}, seed)")
        settings.append((matches[0], value))
    probe = ImpairedLine()
    for option, value in settings:
        try:
            probe.set(option, value, 0.0)
        except ValueError as exc:
            raise URLError(f"{url!r}: {exc}") from None
    return settings, seed


def open_wirefilter(url: str, rest: str, inner: str | None) -> EmulatedLink:
    settings, seed = parse_settings(rest, url)
    link = open_link(require_inner(url, inner))
    try:
        return EmulatedLink(link, settings, seed=seed)
    except BaseException:
        link.close()
        raise


__all__ = ["EmulatedLink", "emulate", "open_wirefilter"]


#: links whose pacing runs on a thread of their own, restarted in a forked child
_PACED: weakref.WeakSet[EmulatedLink] = weakref.WeakSet()


def _restart_paced_after_fork() -> None:
    for link in list(_PACED):
        link._after_fork()


os.register_at_fork(after_in_child=_restart_paced_after_fork)

