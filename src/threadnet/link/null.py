"""``null://``: a link to nowhere, like vdeplug4's null plugin.

Sent frames vanish and no frame ever arrives. Useful as the far side of a wrapper
(``pcap://out.pcap{null://}`` records what a program sends) and in tests.
"""

from __future__ import annotations

import errno
import os
import threading

from threadnet.errors import LinkError, URLError
from threadnet.link import Link, require_no_inner


class NullLink(Link):
    """Discards every frame sent; ``recv`` never returns a frame.

    ``fileno()`` is the read end of a pipe nobody writes to, so select/poll loops can
    include the link. ``close`` closes the write end first, which makes the read end
    readable (EOF) and wakes any loop still waiting on it. A blocking ``recv`` waits
    until the link is closed and then raises LinkError.
    """

    def __init__(self, url: str = "null://") -> None:
        super().__init__()
        self.url = url
        self.sent = 0
        self._rfd, self._wfd = os.pipe()  # not inherited by children (PEP 446)
        os.set_blocking(self._rfd, False)
        self._closed_event = threading.Event()

    def fileno(self) -> int:
        return self._rfd

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self.sent += 1

    def recv(self) -> bytes:
        if self.closed:
            raise LinkError(errno.EBADF, f"{self.url}: link is closed")
        if self._blocking:
            # An Event rather than select on our pipe: close() may free the fd.
            self._closed_event.wait()
            raise LinkError(errno.EBADF, f"{self.url}: link was closed while receiving")
        raise BlockingIOError(errno.EAGAIN, "null:// never receives a frame")

    def _recv(self) -> bytes:  # pragma: no cover - recv() is overridden
        raise BlockingIOError(errno.EAGAIN, "null:// never receives a frame")

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._closed_event.set()
        os.close(self._wfd)
        os.close(self._rfd)


def open_null(url: str, rest: str, inner: str | None) -> NullLink:
    """``null://``: a sink that never delivers a frame."""
    require_no_inner(url, inner)
    if rest.strip():
        raise URLError(f"{url!r}: null:// takes no arguments")
    return NullLink(url)
