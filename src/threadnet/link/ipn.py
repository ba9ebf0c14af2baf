"""``ipn://PATH``: a link that is a member of the IPN bus at PATH (``threadnet.ipn``).

A stack on it, or a cable to it (``threadnet plug vde:///tmp/sw ipn:///tmp/bus``), is one
more member of the bus: what it sends reaches the other members by the bus's policy,
with no switch process in between. Each frame is one message.

Sending on a lossless bus: with no loop attached (a cable, a program of its own) a send
waits while a member's queue is full, as the bus promises. Driven by a loop (a stack's
runner), a send never waits: a message for a full member waits in that member's bounded
backlog (the bus's ``queue``; beyond, dropped and counted) and the loop sends it when
``tx_fileno()`` (a socket connected to that member) says there is room.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable

from threadnet.errors import LinkError, URLError
from threadnet.ipn.bus import IpnError
from threadnet.ipn.member import MAX_MESSAGE, Member
from threadnet.link import Link, require_no_inner, split_bracket, unquote


class IpnLink(Link):
    """A member of an IPN bus, as a link."""

    max_frame = MAX_MESSAGE
    max_frame_known = True

    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            self.member = Member(path, blocking=True)
        except IpnError as exc:
            raise LinkError(exc.errno, str(exc)) from None
        self.member.setblocking(False)  # its socket; recv() waits by select when blocking
        self.member.blocking = True  # its sends: wait for room until a loop is attached
        self.url = f"ipn://{self.member.path}"
        self._lock = threading.Lock()
        self._wake: Callable[[Link], None] | None = None
        self._armed = False

    @property
    def drops(self) -> int:
        c = self.member.counters
        return 0 if c is None else c[2]

    def fileno(self) -> int:
        return self.member.fileno()

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        wake = None
        with self._lock:
            try:
                self.member.send(frame)
            except IpnError as exc:
                if exc.errno in (errno.EMSGSIZE, errno.EINVAL):
                    self.member.counters[2] += 1  # type: ignore[index]  # lost alone
                    return
                self.closed_by_peer = True
                raise LinkError(exc.errno, str(exc)) from None
            except OSError as exc:  # (the bus directory's descriptor, our socket)
                self.closed_by_peer = True
                raise LinkError(exc.errno, f"{self.url}: {exc.strerror}") from None
            if self._wake is not None and not self._armed and self.member.pending():
                self._armed = True
                wake = self._wake
        if wake is not None:
            wake(self)

    def _recv(self) -> bytes:
        try:
            return self.member.recv()[0]
        except BlockingIOError:
            raise
        except IpnError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, str(exc)) from None
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: {exc.strerror}") from None

    # -- driven by a loop ------------------------------------------------------------
    def attach_tx(self, wake: Callable[[Link], None] | None) -> bool:
        with self._lock:
            self._wake = wake
            self.member.blocking = wake is None
            arm = wake is not None and not self._armed and bool(self.member.pending())
            self._armed = arm or (self._armed and wake is not None)
        if arm:
            wake(self)  # type: ignore[misc]
        return True

    def tx_fileno(self) -> int:
        with self._lock:
            return self.member.wait_fileno()

    def on_writable(self) -> bool:
        with self._lock:
            if self.closed:
                self._armed = False
                return False
            more = self.member.flush()
            if not more:
                self._armed = False
            return more

    def close(self) -> None:
        if not self.closed:
            super().close()
            with self._lock:
                self.member.close()


def open_ipn(url: str, rest: str, inner: str | None) -> IpnLink:
    """``ipn://PATH``: join the bus at PATH (made by ``threadnet ipn create``)."""
    require_no_inner(url, inner)
    path, opts = split_bracket(rest)
    if opts:
        raise URLError(f"{url!r}: ipn:// takes no options (the bus's settings are its own)")
    path = unquote(path)
    if not path:
        raise URLError(f"{url!r}: ipn:// needs the bus's path, e.g. ipn:///tmp/bus")
    return IpnLink(path)
