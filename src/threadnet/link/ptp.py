"""``ptp://PATH``: a point-to-point cable over AF_UNIX datagram sockets.

The protocol of vdeplug4 4.0.1's ptp plugin, as Debian's ``vde_plug ptp://PATH`` does it
(checked with strace, interop.md 2.2):

* The first end binds PATH and sends to ``PATH+``. If PATH exists but nobody answers
  a connect (ECONNREFUSED: a stale file), it is unlinked and reused.
* The second end finds PATH live (a probe connect succeeds, or fails with EPERM
  because the first end is tied to someone else) and binds ``PATH+`` (again
  unlinking a stale ``PATH+``), sending to PATH. A third end gets EADDRINUSE.
* Sockets get mode 0700; each end unlinks its own file on close.

vde_plug sends on a connected socket (the first end connects to ``PATH+`` on its first
send). A connected datagram socket refuses connects and datagrams from anyone but its
peer (EPERM), and stays tied to a dead peer until its next send fails with
ECONNREFUSED. So when one end restarts, vde_plug's other end locks the new one out
until it sends, and loses that frame. We send with ``sendto`` on an unconnected
socket instead, so a restarted peer can always reach us, and drop datagrams from any
sender but the peer's path (the filter a connection would give).

When the peer's queue is full (it has not read ``net.unix.max_dgram_qlen`` datagrams,
10 by default), ``sendto`` fails with EAGAIN, and an unconnected socket has no way to
learn when there is room again: poll calls it writable at once. So only while frames
wait for the peer is our socket connected to it, which makes its writability follow the
peer's queue; it is disconnected again (AF_UNSPEC) as soon as the backlog is empty.
(Meanwhile a restarted peer is refused, as vde_plug's connected socket refuses it.)
"""

from __future__ import annotations

import errno
import os
import socket
import stat

from threadnet import mmsg
from threadnet.errors import LinkError, URLError
from threadnet.link import Link, require_no_inner, unquote
from threadnet.link.batch import DatagramSender
from threadnet.wire import stream as wire_stream

RECV_BUF = 65536
SUN_PATH_MAX = 107  # sockaddr_un.sun_path is 108 bytes including the NUL


class PtpLink(DatagramSender, Link):
    """One end of a ``ptp://`` cable. ``role`` is "first" (bound PATH) or "second".

    ``drops`` counts frames sent while no peer could take them (none there, or the
    backlog full); ``foreign`` counts datagrams from senders other than the peer, which
    are dropped. A frame the peer's full queue does not take waits in the backlog of a
    link driven by a loop, or briefly with no loop (see ``link/backlog.py``).
    """

    max_frame = wire_stream.MAX_RECORD  # what vdeplug4 reads into its buffer
    max_frame_known = True

    def __init__(self, path: str, *, mode: int = 0o700, url: str = "") -> None:
        super().__init__()
        self.url = url or f"ptp://{path}"
        if len(os.fsencode(path)) + 1 > SUN_PATH_MAX:
            raise URLError(f"{self.url}: path too long for a unix socket (max {SUN_PATH_MAX - 1} bytes)")
        if not path:
            raise URLError(f"{self.url}: ptp:// needs a path, e.g. ptp:///tmp/cable")
        self.path = path
        self.drops = 0
        self.foreign = 0
        self._peer_aliases: set[str] = set()
        self._own_ino: int | None = None
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            if self._claim(sock, path):
                self.role = "first"
                self.own_path, self.peer_path = path, path + "+"
            else:
                # PATH belongs to a live first end: take PATH+.
                if not self._claim(sock, path + "+"):
                    raise LinkError(errno.EADDRINUSE, f"{self.url}: both ends of the cable are "
                                    "already in use")
                self.role = "second"
                self.own_path, self.peer_path = path + "+", path
            os.chmod(self.own_path, mode)
            self._own_ino = os.stat(self.own_path).st_ino
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._dest = self.peer_path
        #: connected to the peer while frames wait for room in its queue
        self._connected = False

    def _claim(self, sock: socket.socket, path: str) -> bool:
        """Bind ``path``, replacing a stale socket file. False if a live socket holds it."""
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        except OSError as exc:
            raise LinkError(exc.errno, f"{self.url}: cannot use {path}: {exc.strerror}") from exc
        if st is not None:
            if not stat.S_ISSOCK(st.st_mode):
                raise LinkError(errno.EEXIST, f"{self.url}: {path} exists and is not a socket")
            if _alive(path):
                return False
            try:
                os.unlink(path)  # stale: its owner died without cleaning up
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise LinkError(exc.errno, f"{self.url}: cannot remove stale {path}: "
                                f"{exc.strerror}") from exc
        try:
            sock.bind(path)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False  # somebody bound it between our check and our bind
            raise LinkError(exc.errno, f"{self.url}: cannot bind {path}: {exc.strerror}") from exc
        return True

    # -- Link interface ------------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno()

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self._send_frame(frame)

    # -- what the datagram sender needs ---------------------------------------------
    def _dgram_socket(self) -> socket.socket:
        return self._sock

    def _lost(self, err: int) -> bool:
        # No peer yet (ENOENT/ECONNREFUSED), or a vde_plug peer still connected to our
        # previous incarnation (EPERM): the frame is lost, as on a wire.
        return err not in (errno.EBADF, errno.ENOTSOCK)

    def _gone(self, exc: OSError) -> LinkError:
        return LinkError(exc.errno, f"{self.url}: socket is gone")

    def _on_full(self) -> None:
        """The peer's queue is full: connect, so that poll says when it has room."""
        if self._connected or self.closed or not mmsg.available():
            return  # (without a way to disconnect again, stay unconnected)
        try:
            self._sock.connect(self.peer_path)
        except OSError:
            return  # the peer just went: the next sends fail and count as lost
        self._connected = True

    def _on_drained(self) -> None:
        if self._connected and not self.closed:
            mmsg.disconnect(self._sock.fileno())
        self._connected = False

    def _recv(self) -> bytes:
        try:
            frame, sender = self._sock.recvfrom(RECV_BUF)
        except BlockingIOError:
            raise
        except OSError as exc:
            raise LinkError(exc.errno, f"{self.url}: receive failed: {exc.strerror}") from exc
        if sender != self.peer_path and not self._is_peer(sender):
            self.foreign += 1
            return b""
        return frame  # (zero-length datagrams carry no frame: recv() skips them)

    def _is_peer(self, sender: str | None) -> bool:
        """Does ``sender`` name the peer's socket under another spelling (/var/run vs /run)?"""
        if not sender:
            return False  # unbound socket: not the peer, which is always bound
        if sender in self._peer_aliases:
            return True
        try:
            a, b = os.stat(sender), os.stat(self.peer_path)
        except OSError:
            return False
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            return False
        if len(self._peer_aliases) < 16:
            self._peer_aliases.add(sender)
        return True

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        self._sock.close()
        # Unlink only the file we bound, not one a later end put in its place.
        try:
            if os.stat(self.own_path).st_ino == self._own_ino:
                os.unlink(self.own_path)
        except OSError:
            pass


def _alive(path: str) -> bool:
    """Is a process listening on the datagram socket at ``path``?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        probe.connect(path)
        return True
    except ConnectionRefusedError:
        return False
    except FileNotFoundError:
        return False
    except OSError:
        # EPERM: a vde_plug end connected to another socket; EACCES: somebody else's
        # socket. Both are alive: never remove them.
        return True
    finally:
        probe.close()


def open_ptp(url: str, rest: str, inner: str | None) -> PtpLink:
    """``ptp://PATH``: a two-ended cable between two processes on this host."""
    require_no_inner(url, inner)
    path = unquote(rest)
    if not path:
        raise URLError(f"{url!r}: ptp:// needs a path, e.g. ptp:///tmp/cable")
    return PtpLink(path, url=url)
