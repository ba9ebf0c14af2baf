"""Stream links: frames as 2-byte big-endian length records over a byte stream.

This is the framing of ``vde_plug`` on stdin/stdout, ``dpipe``, ``wirefilter`` and
vdeplug4's ``cmd://`` (interop.md 1.6):

* ``stdio://`` uses fds 0 and 1, so a Python program can sit on either side of
  ``dpipe`` or be run by ``vde_plug URL = python3 prog.py`` / ``cmd://``;
* ``fd://R[,W]`` uses inherited descriptors (W defaults to R, e.g. a socket);
* ``cmd://"command args"`` runs a coprocess and talks to its stdin/stdout.

``recv`` reads exactly one record from the descriptor (header, then body), never
more, so ``fileno()`` stays readable while whole records wait in the kernel and a
select/poll loop never misses a frame buffered on our side.

Sending never leaves half a record: a write the descriptor took only part of keeps its
unwritten tail, which goes out before anything else (a lost tail would desync the
stream). Driven by a loop, a link never waits, even on a blocking descriptor (stdio's,
shared with other processes, keeps its mode: such writes use ``RWF_NOWAIT``): what the
descriptor does not take now (a tail, whole records) waits in the bounded backlog, which
the loop writes, many records per ``writev``, when ``tx_fileno()`` (the write
descriptor) is writable. With no loop, a record begun is finished, waiting as long as
it takes; a blocking descriptor waits as it always did; a non-blocking one waits up to
``FLUSH_WAIT`` for room for a new record, then drops it (see ``link/backlog.py``).
"""

from __future__ import annotations

import errno
import itertools
import os
import select
import shlex
import stat
import subprocess
import threading
import time

from threadnet.errors import FrameError, LinkError, URLError
from threadnet.link import Link, require_no_inner, unquote
from threadnet.link.backlog import FLUSH_WAIT, BackloggedLink, Frame, TxBacklog
from threadnet.wire import stream as wire

#: How long ``CmdLink.close`` lets a command exit by itself on EOF, then after SIGTERM.
EXIT_GRACE = 0.2
TERMINATE_TIMEOUT = 2.0
#: records handed to one ``writev`` when the backlog drains
WRITEV_BATCH = 64

# How a write that must not block is made on the write descriptor
_NONBLOCKING = "non-blocking"  # the descriptor is: plain writev
_NOWAIT = "nowait"  # a blocking pipe or socket: pwritev with RWF_NOWAIT
_POLL = "poll"  # anything else (a tty): write one record when select says there is room


def _write_mode(fd: int) -> str:
    if not os.get_blocking(fd):
        return _NONBLOCKING
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        return _POLL  # the first write reports it
    if (stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)) and hasattr(os, "RWF_NOWAIT"):
        return _NOWAIT
    return _POLL


class StreamLink(BackloggedLink, Link):
    """A link over a read descriptor and a write descriptor carrying length records.

    The descriptors may be pipes, sockets or ttys, in blocking or non-blocking mode;
    their mode is left as it is because fds such as 0 and 1 are often shared with
    other processes. With ``close_fds`` the link closes them on ``close``.

    ``drops`` counts frames not sent: the write side stayed full (a non-blocking fd with
    no loop) or the backlog had no room, or the frame was longer than ``max_frame`` (a
    peer would take it as lost framing).
    """

    max_frame = wire.MAX_RECORD
    max_frame_known = True

    def __init__(self, read_fd: int, write_fd: int, *, close_fds: bool = True,
                 url: str = "") -> None:
        super().__init__()
        self.url = url or f"fd://{read_fd},{write_fd}"
        self.read_fd = self._orig_read_fd = read_fd
        self.write_fd = write_fd
        self.drops = 0
        self._close_fds = close_fds
        # The record being read (header, then body) survives a BlockingIOError in the
        # decoder, so that a non-blocking recv never loses its place in the stream.
        self._decoder = wire.Decoder()
        # the backlog's lock also keeps two threads from interleaving their records
        self._backlog = TxBacklog()
        self._write_mode = _write_mode(write_fd)
        # A regular file or /dev/null cannot be watched by epoll (EPERM): a thread copies
        # it into a pipe, so that its records are read, and its end is EOF, like a pipe's
        self._relay_fd = -1
        if not _pollable(read_fd):
            self.read_fd = self._relay_fd = _relay(read_fd)
        self._fd_nonblocking = not os.get_blocking(self.read_fd)
        self._read_nowait = _write_mode(self.read_fd) == _NOWAIT  # (a blocking pipe or socket)

    # -- Link interface ------------------------------------------------------------
    def fileno(self) -> int:
        return self.read_fd

    def _recv(self) -> bytes:
        # Read only what the decoder wants, never past the end of one record.
        decoder = self._decoder
        while True:
            chunk = self._read(decoder.wanted)
            try:
                frames = decoder.feed(chunk)
            except FrameError as exc:
                self.closed_by_peer = True
                raise LinkError(errno.EPROTO, f"{self.url}: {exc}") from None
            if frames:  # zero-length records are padding; the decoder skips them as vde_plug does
                return frames[0]

    def _read(self, size: int) -> bytes:
        """Read at most ``size`` bytes (at least one), raising BlockingIOError rather than
        block in a non-blocking recv."""
        fd = self.read_fd
        while True:
            if not self._fd_nonblocking and not self._blocking:
                # A blocking fd would block in read(): on a pipe or a socket one
                # preadv with RWF_NOWAIT reads only what is there; elsewhere (a tty, an
                # older kernel) select says first
                if self._read_nowait:
                    chunk = self._read_now(fd, size)
                    if chunk is not None:
                        return chunk
                    continue
                r, _, _ = select.select([fd], [], [], 0)
                if not r:
                    raise BlockingIOError(errno.EAGAIN, "no whole record waiting")
            try:
                chunk = os.read(fd, size)
            except BlockingIOError:
                if not self._blocking:
                    raise
                select.select([fd], [], [])
                continue
            except OSError as exc:
                raise self._read_failed(exc) from exc
            if not chunk:
                raise self._read_failed(None)
            return chunk

    def _read_failed(self, exc: OSError | None) -> LinkError:
        """The error a failed read (``exc``) or the end of the stream (None) raises."""
        self.closed_by_peer = True
        if exc is not None:
            return LinkError(exc.errno, f"{self.url}: read failed: {exc.strerror}")
        where = " in the middle of a record" if self._decoder.buffered else ""
        return LinkError(errno.ECONNRESET, f"{self.url}: peer closed the stream{where}")

    def _read_now(self, fd: int, size: int) -> bytes | None:
        """One non-blocking read of a blocking pipe or socket; None: RWF_NOWAIT is not
        supported here after all (select is asked from now on)."""
        buf = bytearray(size)
        try:
            n = os.preadv(fd, (buf,), -1, os.RWF_NOWAIT)
        except BlockingIOError:
            raise BlockingIOError(errno.EAGAIN, "no whole record waiting") from None
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ESPIPE):
                self._read_nowait = False
                return None
            raise self._read_failed(exc) from exc
        if not n:
            raise self._read_failed(None)
        return bytes(buf) if n == size else bytes(buf[:n])

    def tx_fileno(self) -> int:
        return self.write_fd

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        if len(frame) > self.max_frame:
            self.drops += 1
            return
        try:
            record = wire.encode(frame)
        except FrameError:  # pragma: no cover - max_frame is below 0xffff
            self.drops += 1
            return
        bl = self._backlog
        assert bl is not None
        with bl.lock:
            if bl.wake is None:
                self._send_standalone(bl, record)
                return
            if not bl.frames:
                n = self._write_some([record])
                if n == len(record):
                    return
                if n:
                    record = memoryview(record)[n:]  # the tail must follow: queue it
            wake = self._queue(bl, (record,))
        if wake is not None:
            wake(self)

    def _write_some(self, bufs: list[Frame]) -> int:
        """Write what the descriptor takes now from ``bufs``, without waiting; returns
        how many bytes (0 when it is full). LinkError when the peer has gone."""
        fd = self.write_fd
        try:
            if self._write_mode == _NOWAIT:
                try:
                    return os.pwritev(fd, bufs, -1, os.RWF_NOWAIT)
                except BlockingIOError:
                    return 0
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ESPIPE):
                        raise
                    self._write_mode = _POLL  # an older kernel: ask select instead
            if self._write_mode == _POLL:
                if not select.select([], [fd], [], 0)[1]:
                    return 0
                bufs = bufs[:1]  # one record where select said there is room
            return os.writev(fd, bufs)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                self.closed_by_peer = True
                raise LinkError(exc.errno, f"{self.url}: peer closed the stream") from exc
            raise LinkError(exc.errno, f"{self.url}: write failed: {exc.strerror}") from exc

    def _write_all(self, data: Frame) -> None:
        """Write all of ``data``, waiting as long as it takes (a record begun)."""
        view = memoryview(data)
        while view:
            n = self._write_some([view])
            if n:
                view = view[n:]
            else:
                select.select([], [self.write_fd], [])

    def _send_standalone(self, bl: TxBacklog, record: bytes) -> None:
        """No loop (lock held): what a detached loop left goes first, whole; then the
        record, whole, or (a non-blocking descriptor that stays full) not at all."""
        while bl.frames:
            self._write_all(bl.frames[0])
            bl.pop()
        if self._write_mode != _NONBLOCKING:
            self._write_all(record)  # a blocking descriptor waits, as it always did
            return
        n = self._write_some([record])
        deadline = time.monotonic() + FLUSH_WAIT
        while not n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.drops += 1  # still full: the record is lost whole, as on a wire
                return
            select.select([], [self.write_fd], [], left)
            n = self._write_some([record])
        if n < len(record):
            self._write_all(memoryview(record)[n:])

    def _drain(self, bl: TxBacklog) -> bool:
        """Many records per ``writev``; a record written in part keeps its tail first."""
        frames = bl.frames
        while frames:
            n = self._write_some(list(itertools.islice(frames, WRITEV_BATCH)))
            if not n:
                return True
            while n:
                head = frames[0]
                k = len(head)
                if n < k:
                    frames[0] = memoryview(head)[n:]
                    bl.bytes -= n
                    break
                bl.pop()
                n -= k
        return False

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._relay_fd >= 0:
            os.close(self._relay_fd)  # the relay thread's next write fails, and it ends
            self._relay_fd = -1
        if self._close_fds:
            self._close_descriptors()

    def _close_descriptors(self) -> None:
        for fd in {self._orig_read_fd, self.write_fd}:
            try:
                os.close(fd)
            except OSError:
                pass


def _pollable(fd: int) -> bool:
    """Can epoll watch ``fd``? (Not a regular file or /dev/null: EPERM.)"""
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
    except PermissionError:
        return False
    except OSError:
        return True  # a closed or odd descriptor: let the first read report it
    finally:
        ep.close()
    return True


def _relay(fd: int) -> int:
    """A pipe fed from ``fd`` by a thread (closed at ``fd``'s EOF); its read end."""
    r, w = os.pipe()

    def copy() -> None:
        try:
            while True:
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                view = memoryview(chunk)
                while view:
                    view = view[os.write(w, view):]
        except OSError:
            pass  # a read error ends the stream like EOF; a closed pipe: the link is gone
        finally:
            os.close(w)

    threading.Thread(target=copy, name=f"threadnet-relay-fd{fd}", daemon=True).start()
    return r


class StdioLink(StreamLink):
    """``stdio://``: records on fds 0 (in) and 1 (out).

    Nothing else in the process may write to stdout while the link is open. ``close``
    puts /dev/null on fds 0 and 1, so the peer sees EOF but the numbers stay taken and
    later ``open`` calls cannot land on them.
    """

    def __init__(self, url: str = "stdio://") -> None:
        super().__init__(0, 1, close_fds=False, url=url)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        try:
            null = os.open(os.devnull, os.O_RDWR)
        except OSError:  # pragma: no cover
            return
        try:
            os.dup2(null, 0)
            os.dup2(null, 1)
        finally:
            os.close(null)


class CmdLink(StreamLink):
    """``cmd://``: a coprocess whose stdin/stdout carry the records.

    Its stderr is inherited. ``close`` closes the pipes, gives the command a moment to
    exit on EOF, then sends SIGTERM, waits ``terminate_timeout`` and sends SIGKILL.
    """

    def __init__(self, argv: list[str], *, url: str = "",
                 terminate_timeout: float = TERMINATE_TIMEOUT) -> None:
        if not argv:
            raise URLError(f"{url or 'cmd://'}: empty command")
        try:
            process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                       bufsize=0, close_fds=True)
        except OSError as exc:
            raise LinkError(exc.errno or errno.ENOENT,
                            f"{url or 'cmd://'}: cannot run {argv[0]!r}: {exc.strerror or exc}") from exc
        assert process.stdin is not None and process.stdout is not None
        # Our pipe ends are ours alone, so they can be non-blocking: a stuck command then
        # costs dropped frames instead of a blocked sender.
        os.set_blocking(process.stdin.fileno(), False)
        os.set_blocking(process.stdout.fileno(), False)
        super().__init__(process.stdout.fileno(), process.stdin.fileno(), close_fds=False,
                         url=url or "cmd://" + shlex.join(argv))
        self.process = process
        self.pid = process.pid
        self.terminate_timeout = terminate_timeout

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        process = self.process
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                try:
                    pipe.close()
                except OSError:
                    pass
        try:
            process.wait(EXIT_GRACE)
            return
        except subprocess.TimeoutExpired:
            pass
        process.terminate()
        try:
            process.wait(self.terminate_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- URL factories ---------------------------------------------------------------------
def open_stdio(url: str, rest: str, inner: str | None) -> StdioLink:
    """``stdio://``: records on stdin/stdout."""
    require_no_inner(url, inner)
    if rest.strip():
        raise URLError(f"{url!r}: stdio:// takes no arguments")
    return StdioLink(url)


def open_fd(url: str, rest: str, inner: str | None) -> StreamLink:
    """``fd://R[,W]``: records on inherited descriptors; W defaults to R."""
    require_no_inner(url, inner)
    parts = unquote(rest).split(",")
    if len(parts) > 2 or not all(p.strip().isdigit() for p in parts):
        raise URLError(f"{url!r}: expected fd://READFD[,WRITEFD], e.g. fd://3,4")
    read_fd = int(parts[0])
    write_fd = int(parts[-1])
    for fd in {read_fd, write_fd}:
        try:
            os.fstat(fd)
        except OSError:
            raise LinkError(errno.EBADF, f"{url}: descriptor {fd} is not open") from None
    return StreamLink(read_fd, write_fd, url=url)


def open_cmd(url: str, rest: str, inner: str | None) -> CmdLink:
    """``cmd://"command args"``: run a command and exchange records on its stdin/stdout."""
    require_no_inner(url, inner)
    try:
        argv = shlex.split(unquote(rest))
    except ValueError as exc:
        raise URLError(f"{url!r}: bad command: {exc}") from None
    if not argv:
        raise URLError(f"{url!r}: empty command, e.g. cmd://\"vde_plug /tmp/sw\"")
    return CmdLink(argv, url=url)


def open_dpipe_alternate() -> StreamLink | None:
    """The "alternate" side of a middle tool in ``dpipe a = tool = b``.

    dpipe connects a middle tool's stdin/stdout to the tool on its left and passes the
    descriptors towards the tool on its right in the environment variables
    ``ALTERNATE_STDIN`` and ``ALTERNATE_STDOUT`` (usually 3 and 4). This returns a
    StreamLink on those descriptors, or None when they are not set (the program is
    not a middle tool; use ``stdio://`` alone).
    """
    rin = os.environ.get("ALTERNATE_STDIN")
    rout = os.environ.get("ALTERNATE_STDOUT")
    if rin is None or rout is None:
        return None
    if not (rin.isdigit() and rout.isdigit()):
        raise LinkError(errno.EBADF, f"bad ALTERNATE_STDIN/ALTERNATE_STDOUT: {rin!r}, {rout!r}")
    return StreamLink(int(rin), int(rout), url=f"fd://{rin},{rout}")
