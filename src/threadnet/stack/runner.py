"""One event loop per process drives every stack and link in it.

The runner's thread waits on all interfaces' links and all stacks' timers. Each stack's
state is protected by the stack's own lock (``Stack.lock``, lwIP's "core locking"): the
runner holds it while it feeds that stack, and application threads hold it while they
call into it, so a call runs inline in the caller's thread instead of handing work to
the runner's thread (a hand-off costs ~100 us here, see shared/docs/performance-notes.md).
Stacks on one runner never wait for each other's locks, and nothing under a stack's lock
blocks: links queue what they cannot send at once (bounded) instead of waiting.

Lock order: a stack's lock, then a link's own small lock (emulation, backlogs). No code
holds two stacks' locks. The loop's timers and registrations belong to the runner's
thread; the deadline each stack's timer is armed for (``_due``) is read and written
under that stack's lock, which is how an application thread decides, without waking the
loop, whether its call moved the stack's next deadline earlier (``rearm``).

Time: each stack runs on its own clock (``Stack.clock``, ``time.monotonic`` unless the
stack was given another): the runner reads it for the ``now`` of the frames and timers it
feeds the stack, and a stack's deadlines, on that clock, become the loop's (monotonic)
by their distance from that clock's now. A test may so pass a fake clock to a stack
on a runner; its timers fire once the fake time has reached them and the runner looks
again (``touch``). Links' own pacing (emulated lines) stays on the loop's clock.

A thousand stacks are a thousand sets of descriptors on one loop, not a thousand threads.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet import mmsg
from threadnet.errors import LinkError
from threadnet.link.batch import frames as batch_frames
from threadnet.loop import EventLoop, Timer, monotonic

if TYPE_CHECKING:
    from threadnet.link import Link
    from threadnet.stack.stack import Interface, Stack

RX_BUDGET = 64  # frames taken from one link before serving the others


def _env_linger() -> float:
    try:
        return max(0.0, float(os.environ.get("THREADNET_EXIT_LINGER", "10")))
    except ValueError:
        return 10.0


#: At interpreter exit, how long (seconds) the runners keep running so that connections
#: the program has closed still deliver their data and FIN, as the kernel would after a
#: process exits. Set it here or with the environment variable THREADNET_EXIT_LINGER;
#: 0 turns the wait off.
EXIT_LINGER = _env_linger()
_running: weakref.WeakSet[StackRunner] = weakref.WeakSet()
_atexit_registered = False


def _linger_at_exit() -> None:
    """Run by atexit: daemon threads (the runners') still run then, and stop for good
    right after, so this is the last moment to let closing connections finish."""
    deadline = monotonic() + EXIT_LINGER
    for runner in list(_running):
        if not runner.linger(deadline):
            break


#: ``linger_check(endpoint)``: has the application closed this connection while data or
#: the FIN it owes the peer are unacknowledged? The socket API sets it (it knows its
#: socket pairs); the runner, a layer below, only waits on it at interpreter exit.
linger_check: Callable[[Any], bool] | None = None


class StackRunner:
    """Runs the event loop thread that drives stacks. Start it lazily, stop it explicitly."""

    def __init__(self, name: str = "threadnet-runner") -> None:
        self.name = name
        self.loop = EventLoop()
        self.loop.on_error = self._loop_error
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: dict[int, Timer] = {}
        #: per stack, the deadline its loop timer is armed for or about to be (an _arm is
        #: queued); read and written under that stack's lock only
        self._due: dict[int, float] = {}
        self._stacks: dict[int, Stack] = {}
        #: timers armed for links' own deadlines (emulated lines), by id(link)
        self._link_timers: dict[int, Timer] = {}
        self._thread: threading.Thread | None = None
        self._started = threading.Lock()
        # receive slots shared by every link of this runner (one _rx runs at a time, and a
        # stack copies what it keeps of a frame), by slot size
        self._rbs: dict[int, mmsg.RecvBatch] = {}

    # -- cross-thread calls -----------------------------------------------------------
    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the runner's thread (for changing the loop's registrations)."""
        if threading.current_thread() is self._thread:
            fn()
            return
        self._calls.append(fn)
        self._ensure_started()
        self.loop.call_soon_threadsafe(self._run_calls)

    def _run_calls(self) -> None:
        while self._calls:
            self._calls.popleft()()

    def _ensure_started(self) -> None:
        global _atexit_registered
        with self._started:
            if self._thread is None:
                self._thread = threading.Thread(target=self.loop.run, name=self.name, daemon=True)
                self._thread.start()
                _running.add(self)
                if not _atexit_registered:
                    _atexit_registered = True
                    atexit.register(_linger_at_exit)

    def linger(self, deadline: float) -> bool:
        """Wait until no connection that the application has closed still has data or a
        FIN unacknowledged, or until ``deadline`` (monotonic); False if it passed."""
        unfinished = linger_check
        if unfinished is None:
            return True
        while True:
            thread = self._thread
            if thread is None or not thread.is_alive():
                return True
            busy = False
            for stack in list(self._stacks.values()):
                with stack.lock:
                    busy = any(unfinished(ep) for ep in list(stack.tcp.conns.values()))
                if busy:
                    break
            if not busy:
                return True
            if monotonic() >= deadline:
                return False
            time.sleep(0.01)

    # -- stacks ------------------------------------------------------------------------
    def attach(self, stack: Stack) -> None:
        stack.runner = self
        stack._on_clock = True
        self._stacks[id(stack)] = stack
        for index in list(stack.links):
            self.watch(stack, stack.interfaces[index])
        self.touch(stack)

    def detach(self, stack: Stack, *, close_links: bool = False) -> None:
        """Stop driving ``stack``; with ``close_links`` also close its links.

        Both happen on the runner's thread, and the caller waits for them: a link closed
        before its descriptor leaves the selector would leave a stale registration that
        silently swallows the next descriptor to reuse the number.
        """
        self._stacks.pop(id(stack), None)
        links = list(stack.links.values())
        done = threading.Event()

        def unregister() -> None:
            try:
                for link in links:
                    link.attach_tx(None)
                    t = self._link_timers.pop(id(link), None)
                    if t is not None:
                        t.cancel()
                    if not link.closed:
                        self.loop.remove_reader(link.fileno())
                        self.loop.remove_writer(link.tx_fileno())
                        inner_fd = link.inner_fileno()
                        if inner_fd is not None:
                            self.loop.remove_reader(inner_fd)
                        if close_links:
                            link.close()
                        else:
                            link.attach_timer(None)  # standalone again: its own thread
                t = self._timers.pop(id(stack), None)
                if t is not None:
                    t.cancel()
                self._due.pop(id(stack), None)
            finally:
                done.set()

        stack.runner = None
        if self._thread is None or not self._thread.is_alive():
            unregister()
            return
        self.call_soon(unregister)
        if threading.current_thread() is not self._thread:
            done.wait(5)

    def watch(self, stack: Stack, iface: Interface) -> None:
        link = stack.links[iface.index]
        link.setblocking(False)
        self.call_soon(lambda: self.loop.add_reader(
            link.fileno(), lambda: self._rx(stack, iface, link)))
        link.attach_tx(self._tx_wake)
        if link.attach_timer(self._link_wake):
            self.call_soon(lambda: self._watch_link_timers(link))

    # -- links' timers (an emulated line's pacing) --------------------------------------
    def _watch_link_timers(self, link: Link) -> None:
        if link.closed:
            return
        fd = link.inner_fileno()
        if fd is not None:
            self.loop.add_reader(fd, lambda: self._link_in(link, fd))
        self._arm_link(link)

    def _link_wake(self, link: Link) -> None:
        """A link's next deadline moved earlier (any thread, maybe under a stack's lock)."""
        self.call_soon(lambda: self._arm_link(link))

    def _arm_link(self, link: Link) -> None:
        key = id(link)
        old = self._link_timers.pop(key, None)
        if old is not None:
            old.cancel()
        if link.closed:
            return
        due = link.next_deadline()
        if due is not None:
            self._link_timers[key] = self.loop.call_at(due, lambda: self._link_fire(link))

    def _link_fire(self, link: Link) -> None:
        """Pacing runs under the link's own lock, not a stack's: no stack waits for it."""
        self._link_timers.pop(id(link), None)
        if link.closed:
            return
        try:
            link.on_timer(monotonic())
        except Exception as exc:  # a bug must not stop every stack in the process
            self._loop_error(exc)
        self._arm_link(link)

    def _link_in(self, link: Link, fd: int) -> None:
        if link.closed:
            self.loop.remove_reader(fd)
            return
        try:
            link.on_inner_readable(monotonic())
        except Exception as exc:  # a bug must not stop every stack in the process
            self._loop_error(exc)
        if link.closed_by_peer:
            self.loop.remove_reader(fd)
        self._arm_link(link)

    # -- links' transmit backlogs ------------------------------------------------------
    def _tx_wake(self, link: Link) -> None:
        """A link's backlog started to fill (any thread, maybe under a stack's lock):
        watch its socket for room. The link calls this once until ``on_writable`` has
        emptied the backlog."""
        self.call_soon(lambda: self._watch_tx(link))

    def _watch_tx(self, link: Link) -> None:
        if link.closed:
            return
        fd = link.tx_fileno()
        self.loop.add_writer(fd, lambda: self._tx_ready(link, fd))

    def _tx_ready(self, link: Link, fd: int) -> None:
        """The link's socket has room: the backlog drains under the link's own lock only,
        so no stack waits for it."""
        more = False
        if not link.closed:
            try:
                more = link.on_writable()
            except Exception as exc:  # a bug must not stop every stack in the process
                self._loop_error(exc)
        if not more:
            self.loop.remove_writer(fd)

    def touch(self, stack: Stack) -> None:
        """The stack's next deadline may have changed: (re)arm its timer (wakes the loop)."""
        self.call_soon(lambda: self._arm(stack))

    def rearm(self, stack: Stack) -> None:
        """Called with ``stack``'s lock held, after an application thread's call into it:
        wake the loop only if the stack's next deadline is now earlier than the timer
        armed for it. A later deadline needs nothing: the armed timer fires early, finds
        nothing due and arms again."""
        due = stack.next_deadline()
        if due is None:
            return
        key = id(stack)
        armed = self._due.get(key)
        if armed is not None and armed <= due:
            return
        self._due[key] = due
        self.call_soon(lambda: self._arm(stack))

    def _arm(self, stack: Stack) -> None:
        key = id(stack)
        with stack.lock:
            due = stack.next_deadline() if key in self._stacks else None
            if due is None:
                self._due.pop(key, None)
            else:
                self._due[key] = due
            clock = stack.clock
            if due is not None and clock is not monotonic:
                # the stack's deadline on its own clock, as the loop's time
                when = monotonic() + max(0.0, due - clock())
            else:
                when = due  # type: ignore[assignment]
        old = self._timers.get(key)
        if old is not None:
            if due is not None and old.when == when and not old.cancelled:
                return
            old.cancel()
            del self._timers[key]
        if due is not None and key in self._stacks:
            self._timers[key] = self.loop.call_at(when, lambda: self._fire(stack))

    def _fire(self, stack: Stack) -> None:
        self._timers.pop(id(stack), None)
        with stack.lock:
            try:
                stack.on_timer(stack.clock())
            except Exception as exc:  # a bug must not stop every stack in the process
                self._report(stack, exc)
        self._arm(stack)

    def _loop_error(self, exc: BaseException) -> None:
        import sys
        import traceback

        print(f"threadnet runner: {exc!r}", file=sys.stderr)
        traceback.print_exception(exc)

    def _report(self, stack: Stack, exc: BaseException) -> None:
        import sys
        import traceback

        stack._count("runner_errors")
        if stack.stats["runner_errors"] <= 3:
            print(f"threadnet: error in {stack.name}: {exc!r}", file=sys.stderr)
            traceback.print_exc()

    def _rx(self, stack: Stack, iface: Interface, link: Link) -> None:
        with stack.lock:
            now = stack.clock()
            # one batch: TCP answers (ACKs, the data they release) and socket wake-ups
            # once per connection at the end, not once per frame
            opened = stack.begin_batch()
            try:
                recv_many = getattr(link, "recv_many", None)
                if recv_many is not None and mmsg.available():
                    self._rx_many(stack, iface, link, recv_many, now)
                    return
                offload = iface.offload
                recv = link.recv_offload if offload else link.recv  # type: ignore[attr-defined]
                frames: list[memoryview] = []
                for _ in range(RX_BUDGET):
                    try:
                        got = recv()
                    except BlockingIOError:
                        break
                    except LinkError:
                        self.loop.remove_reader(link.fileno())
                        iface.up = False
                        break
                    if not offload:
                        # taken as a batch below, as recvmmsg's are (receive coalescing)
                        frames.append(memoryview(got))
                        continue
                    try:
                        stack.input(iface, got[0], now, got[1])
                    except Exception as exc:  # a bug must not stop every stack in the process
                        self._report(stack, exc)
                if frames:
                    try:
                        stack.input_many(iface, frames, now)
                    except Exception as exc:  # a bug must not stop every stack in the process
                        self._report(stack, exc)
            finally:
                if opened:
                    try:
                        stack.end_batch()
                    except Exception as exc:
                        self._report(stack, exc)
                self._arm(stack)

    def _rx_many(self, stack: Stack, iface: Interface, link: object,
                 recv_many: Callable[[mmsg.RecvBatch], int], now: float) -> None:
        """One recvmmsg, then every frame into the stack (lock held, batch open)."""
        # room for the largest frame the interface may receive (a raised MTU included)
        slot = max(link.rx_slot, (iface.mtu + 82 + 2047) & ~2047)  # type: ignore[attr-defined]
        rb = self._rbs.get(slot)
        if rb is None:
            rb = self._rbs[slot] = mmsg.RecvBatch(RX_BUDGET, slot)
        try:
            n = recv_many(rb)
        except LinkError:
            self.loop.remove_reader(link.fileno())  # type: ignore[attr-defined]
            iface.up = False
            return
        try:
            stack.input_many(iface, batch_frames(rb, n), now)
        except Exception as exc:  # a bug must not stop every stack in the process
            self._report(stack, exc)

    def stop(self) -> None:
        self.loop.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)


_default: StackRunner | None = None
_default_lock = threading.Lock()


def default_runner() -> StackRunner:
    """The process's runner (created on first use)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = StackRunner()
        return _default
