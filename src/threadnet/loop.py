"""A small event loop: readiness callbacks on descriptors plus timers on the monotonic clock.

One loop drives a whole switch or wirefilter. Protocol cores never read the clock; the
loop passes ``now`` to them. ``stop()`` is safe to call from signal handlers and other
threads (it writes to a wake-up socket).
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import signal
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

monotonic = time.monotonic
EVENT_READ = selectors.EVENT_READ
EVENT_WRITE = selectors.EVENT_WRITE


class Timer:
    """A scheduled call; ``cancel()`` removes it."""

    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback: Callable[[], Any]) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    def __init__(self) -> None:
        self._sel = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._running = False
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._sel.register(self._wake_r, selectors.EVENT_READ, [self._drain_wakeup, None])
        self._old_signals: dict[int, Any] = {}
        self._soon: deque[Callable[[], Any]] = deque()
        # None: a failing callback ends run() (a switch should not limp on); a loop that
        # serves many independent parties (the stack runner) reports and continues.
        self.on_error: Callable[[BaseException], None] | None = None

    # -- descriptors ---------------------------------------------------------------
    # Each registration's data is [reader, writer]; either may be None.
    def _set(self, fileobj: Any, index: int, callback: Callable[[], Any] | None) -> None:
        try:
            key = self._sel.get_key(fileobj)
        except (KeyError, ValueError):
            if callback is None:
                return
            cbs = [None, None]
            cbs[index] = callback
            self._sel.register(fileobj, selectors.EVENT_READ if index == 0 else selectors.EVENT_WRITE, cbs)
            return
        cbs = key.data  # changed in place, so a dispatch in progress sees the change
        cbs[index] = callback
        events = (selectors.EVENT_READ if cbs[0] else 0) | (selectors.EVENT_WRITE if cbs[1] else 0)
        if events:
            if events != key.events:
                self._sel.modify(fileobj, events, cbs)
        else:
            self._sel.unregister(fileobj)

    def add_reader(self, fileobj: Any, callback: Callable[[], Any]) -> None:
        self._set(fileobj, 0, callback)

    def remove_reader(self, fileobj: Any) -> None:
        self._set(fileobj, 0, None)

    def add_writer(self, fileobj: Any, callback: Callable[[], Any]) -> None:
        self._set(fileobj, 1, callback)

    def remove_writer(self, fileobj: Any) -> None:
        self._set(fileobj, 1, None)

    def has_reader(self, fileobj: Any) -> bool:
        try:
            return self._sel.get_key(fileobj).data[0] is not None
        except (KeyError, ValueError):
            return False

    # -- timers --------------------------------------------------------------------
    def call_at(self, when: float, callback: Callable[[], Any]) -> Timer:
        t = Timer(when, callback)
        heapq.heappush(self._timers, (when, next(self._seq), t))
        return t

    def call_later(self, delay: float, callback: Callable[[], Any]) -> Timer:
        return self.call_at(monotonic() + delay, callback)

    def call_every(self, interval: float, callback: Callable[[], Any]) -> Timer:
        """Call ``callback`` every ``interval`` seconds; cancel the returned handle to stop."""
        handle = Timer(0.0, callback)

        def tick() -> None:
            if handle.cancelled:
                return
            callback()
            if not handle.cancelled:
                handle.when = monotonic() + interval
                heapq.heappush(self._timers, (handle.when, next(self._seq), inner))

        inner = Timer(0.0, tick)
        handle.when = monotonic() + interval
        heapq.heappush(self._timers, (handle.when, next(self._seq), inner))
        return handle

    # -- running -------------------------------------------------------------------
    def stop(self) -> None:
        self._running = False
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def call_soon_threadsafe(self, callback: Callable[[], Any]) -> None:
        """Run ``callback`` on the loop's thread at its next turn (from any thread)."""
        self._soon.append(callback)
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass

    def _drain_wakeup(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except OSError:
            pass
        while self._soon:
            self._soon.popleft()()

    def stop_on_signals(self, *signums: int) -> None:
        """Stop cleanly on these signals (main thread only)."""
        if threading.current_thread() is not threading.main_thread():
            return
        for s in signums or (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            self._old_signals[s] = signal.signal(s, lambda *_: self.stop())

    def run(self) -> None:
        self._running = True
        sel = self._sel
        timers = self._timers
        while self._running:
            timeout = None
            if timers:
                timeout = max(0.0, timers[0][0] - monotonic())
            for key, mask in sel.select(timeout):
                cbs = key.data
                try:
                    if mask & EVENT_READ and cbs[0] is not None:
                        cbs[0]()
                    # (the reader may have removed the writer meanwhile: look again)
                    if mask & EVENT_WRITE and cbs[1] is not None:
                        cbs[1]()
                except Exception as exc:
                    if self.on_error is None:
                        raise
                    self.on_error(exc)
                if not self._running:
                    break
            if timers:
                now = monotonic()
                while timers and timers[0][0] <= now:
                    _, _, t = heapq.heappop(timers)
                    if not t.cancelled:
                        try:
                            t.callback()
                        except Exception as exc:
                            if self.on_error is None:
                                raise
                            self.on_error(exc)

    def close(self) -> None:
        for s, old in self._old_signals.items():
            signal.signal(s, old)
        self._old_signals.clear()
        self._sel.close()
        self._wake_r.close()
        self._wake_w.close()
