"""``seqpacket://FD``: one Ethernet frame per message on an inherited AF_UNIX SOCK_SEQPACKET socket.

vdeplug4 4.0.1's seqpacket plugin: ``FD`` is the number of a descriptor the process
already has (read with C's ``strtol(FD, NULL, 0)``: decimal, ``0x`` hex or ``0`` octal),
usually one end of a ``socketpair(AF_UNIX, SOCK_SEQPACKET)`` made by a parent that runs
a program on each end. It opens nothing and has no server or client role: both ends are
the same. No header, no handshake; a zero-length message is never sent. The link owns
the descriptor from then on and closes it on close.

A seqpacket socket keeps message boundaries, and its writability follows the peer's
receive queue, so a frame the peer has no room for waits in the link's bounded transmit
backlog (``link/backlog.py``). The peer closing its end is a LinkError on ``recv`` or
``send``: a read of nothing with the peer hung up (a zero-length message alone, which
vdeplug4 ignores too, is skipped).
"""

from __future__ import annotations

import errno
import os
import re
import select
import socket

from threadnet.errors import LinkError, URLError
from threadnet.link import Link, require_no_inner, unquote
from threadnet.link.batch import DatagramSender
from threadnet.wire import stream as wire_stream

RECV_BUF = 65536
# strtol(s, NULL, 0) forms, without its leniencies (signs, blanks, trailing junk)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")
_HUNG_UP = select.POLLHUP | getattr(select, "POLLRDHUP", 0)


class SeqpacketLink(DatagramSender, Link):
    """Frames as messages on a connected AF_UNIX SOCK_SEQPACKET socket."""

    # what vdeplug4 peers read into their buffer
    max_frame = wire_stream.MAX_RECORD
    max_frame_known = True

    def __init__(self, sock: socket.socket, *, url: str = "") -> None:
        super().__init__()
        self.url = url or f"seqpacket://{sock.fileno()}"
        self.drops = 0
        self._sock = sock
        sock.setblocking(False)

    def fileno(self) -> int:
        return self._sock.fileno()

    # what the datagram sender needs: a full peer queue waits; a frame too big for the
    # socket is lost alone; anything else (EPIPE, ECONNRESET) means the peer is gone
    def _lost(self, err: int) -> bool:
        return err == errno.EMSGSIZE

    def _gone(self, exc: OSError) -> LinkError:
        return LinkError(exc.errno, f"{self.url}: the peer is gone: {exc.strerror}")

    def _dgram_socket(self) -> socket.socket:
        return self._sock

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        if len(frame):  # (vdeplug4 never sends a zero-length message: it reads as EOF)
            self._send_frame(frame)

    def _recv(self) -> bytes:
        try:
            frame = self._sock.recv(RECV_BUF)
        except BlockingIOError:
            raise
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: the peer is gone: {exc.strerror}") from exc
        if not frame and self._hung_up():
            self.closed_by_peer = True
            raise LinkError(errno.ECONNRESET, f"{self.url}: the peer closed its end")
        return frame

    def _hung_up(self) -> bool:
        p = select.poll()
        p.register(self._sock.fileno(), select.POLLIN | _HUNG_UP)
        return any(ev & _HUNG_UP for _, ev in p.poll(0))

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.close()


def parse_fd(url: str, rest: str) -> int:
    """The descriptor number of ``seqpacket://FD``."""
    text = unquote(rest).strip()
    if not _NUMBER.fullmatch(text):
        raise URLError(f"{url!r}: expected seqpacket://FD, the number of an inherited "
                       "AF_UNIX SOCK_SEQPACKET socket (e.g. seqpacket://3)")
    if text[:2] in ("0x", "0X"):
        return int(text, 16)
    if text.startswith("0") and len(text) > 1:
        return int(text, 8)
    return int(text)


def open_seqpacket(url: str, rest: str, inner: str | None) -> SeqpacketLink:
    """``seqpacket://FD``."""
    require_no_inner(url, inner)
    fd = parse_fd(url, rest)
    try:
        os.fstat(fd)
    except OSError:
        raise LinkError(errno.EBADF, f"{url}: descriptor {fd} is not open") from None
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        raise LinkError(errno.ENOTSOCK, f"{url}: descriptor {fd} is not a socket") from None
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            raise LinkError(errno.EPROTOTYPE, f"{url}: descriptor {fd} is not an AF_UNIX "
                            f"SOCK_SEQPACKET socket ({sock.family.name}, {sock.type.name})")
        if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise LinkError(errno.EINVAL, f"{url}: descriptor {fd} is a listening socket, "
                            "not a connected one")
    except BaseException:
        sock.detach()  # not ours: the descriptor stays open for whoever owns it
        raise
    return SeqpacketLink(sock, url=url)
