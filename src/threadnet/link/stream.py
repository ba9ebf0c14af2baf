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
"""

from __future__ import annotations

import errno
import os
import select
import shlex
import subprocess
import threading

from threadnet.errors import FrameError, LinkError, URLError
from threadnet.link import Link, require_no_inner, unquote
from threadnet.wire import stream as wire

#: How long ``CmdLink.close`` lets a command exit by itself on EOF, then after SIGTERM.
EXIT_GRACE = 0.2
TERMINATE_TIMEOUT = 2.0


class StreamLink(Link):
    """A link over a read descriptor and a write descriptor carrying length records.

    The descriptors may be pipes, sockets or ttys, in blocking or non-blocking mode;
    their mode is left as it is because fds such as 0 and 1 are often shared with
    other processes. With ``close_fds`` the link closes them on ``close``.

    ``drops`` counts frames not sent: the write side was full (non-blocking fd) or the
    frame was longer than ``max_frame`` (a peer would take it as lost framing).
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
        self._write_lock = threading.Lock()
        # A regular file or /dev/null cannot be watched by epoll (EPERM): a thread copies
        # it into a pipe, so that its records are read, and its end is EOF, like a pipe's
        self._relay_fd = -1
        if not _pollable(read_fd):
            self.read_fd = self._relay_fd = _relay(read_fd)
        self._fd_nonblocking = not os.get_blocking(self.read_fd)

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
                # A blocking fd would block in read(); ask select first instead.
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
                self.closed_by_peer = True
                raise LinkError(exc.errno, f"{self.url}: read failed: {exc.strerror}") from exc
            if not chunk:
                self.closed_by_peer = True
                where = " in the middle of a record" if self._decoder.buffered else ""
                raise LinkError(errno.ECONNRESET, f"{self.url}: peer closed the stream{where}")
            return chunk

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        if len(frame) > self.max_frame:
            self.drops += 1
            return
        try:
            record = wire.encode(frame)
        except FrameError:  # pragma: no cover - max_frame is below 0xffff
            self.drops += 1
            return
        view = memoryview(record)
        fd = self.write_fd
        with self._write_lock:  # two threads must not interleave partial records
            done = 0
            while done < len(record):
                try:
                    done += os.write(fd, view[done:])
                except BlockingIOError:
                    if done == 0:
                        self.drops += 1  # full pipe: drop the frame, as a wire would
                        return
                    # Half a record is out: the rest must follow or the stream desyncs.
                    select.select([], [fd], [])
                except OSError as exc:
                    if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                        self.closed_by_peer = True
                        raise LinkError(exc.errno, f"{self.url}: peer closed the stream") from exc
                    raise LinkError(exc.errno, f"{self.url}: write failed: {exc.strerror}") from exc

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
