"""A cable: two links joined on an event loop, frames copied both ways.

``threadnet plug URL1 URL2`` is a cable; ``threadnet wirefilter`` is a cable with an
emulated channel in each direction. A direction's ``filter`` takes ``(frame, now)``; the
default forwards at once.
"""

from __future__ import annotations

from collections.abc import Callable

from threadnet.errors import LinkError
from threadnet.link import Link
from threadnet.loop import EventLoop, monotonic

DRAIN_BUDGET = 64


class Cable:
    """Join ``left`` and ``right``. Stops the loop when either side goes away."""

    def __init__(self, loop: EventLoop, left: Link, right: Link) -> None:
        self.loop = loop
        self.left = left
        self.right = right
        self.ended: str | None = None
        # direction filters: set by wirefilter; default is straight through
        self.lr: Callable[[bytes, float], None] = lambda frame, now: right.send(frame)
        self.rl: Callable[[bytes, float], None] = lambda frame, now: left.send(frame)
        self.paused: dict[str, bool] = {"LR": False, "RL": False}
        for link in (left, right):
            link.setblocking(False)
        self._watch(left, "LR")
        self._watch(right, "RL")

    def _watch(self, link: Link, direction: str) -> None:
        self.loop.add_reader(link.fileno(), lambda: self._pump(link, direction))
        ctl = link.ctl_fileno()
        if ctl is not None:
            self.loop.add_reader(ctl, lambda: self._check(link))

    def pause(self, direction: str, flag: bool) -> None:
        """Stop (or resume) reading one direction's source (wirefilter's speed limit)."""
        if self.paused[direction] == flag:
            return
        self.paused[direction] = flag
        link = self.left if direction == "LR" else self.right
        if flag:
            self.loop.remove_reader(link.fileno())
        else:
            self.loop.add_reader(link.fileno(), lambda: self._pump(link, direction))

    def _check(self, link: Link) -> None:
        try:
            link._check_peer()
        except LinkError as exc:
            self._end(str(exc))

    def _pump(self, link: Link, direction: str) -> None:
        sink = self.lr if direction == "LR" else self.rl
        now = monotonic()
        try:
            for _ in range(DRAIN_BUDGET):
                frame = link.recv()
                sink(frame, now)
                if self.paused[direction]:
                    break
        except BlockingIOError:
            pass
        except LinkError as exc:
            self._end(str(exc))

    def _end(self, reason: str) -> None:
        if self.ended is None:
            self.ended = reason
        self.loop.stop()

    def close(self) -> None:
        for link in (self.left, self.right):
            self.loop.remove_reader(link.fileno())
            ctl = link.ctl_fileno()
            if ctl is not None:
                self.loop.remove_reader(ctl)
            link.close()
