"""The vde_switch management console protocol (vde-2 consmgmt.c, interop.md 1.5).

On connect the server writes a banner and the prompt. Each command line gets either
``1000 Success`` or ``1<errno> <strerror>``, preceded, for commands that print, by
``0000 DATA END WITH '.'``, the lines and a lone ``.``. ``logout`` answers
``9999 END OF SESSION`` and closes: our side once the reply is out, the socket ``END_GRACE``
later, so that a client polling for both sees the reply before the hang-up. Other commands
are followed by the prompt again.

A console never blocks the loop it shares with a switch or a wirefilter (issue 14, R3, R5):

- Input: each session keeps what it has read and runs complete lines only, in order, so a
  command split across two reads runs whole. A line longer than ``MAX_LINE`` ends the
  session (``1007 Argument list too long``). At end of input a last line without a newline
  still runs, as Debian's vde_switch runs it (it takes every read as a command). Unlike
  vde_switch, a client that sends a command without a newline and waits gets its reply
  only when it sends the newline or shuts its side.
- Output: the socket is non-blocking; replies wait in a per-session buffer, written when
  the socket is writable. A session whose pending output would pass ``MAX_OUTPUT`` (one
  reply may be larger, if nothing else waits), or whose pending output has not moved for
  ``WRITE_TIMEOUT`` seconds, is dropped.
- Commands run with the rights of the session's peer (SO_PEERCRED, ``Caller``): ``load``
  and captures open paths as that user, not as the service.
"""

from __future__ import annotations

import errno
import grp
import os
import socket
from collections.abc import Callable

from threadnet.loop import EventLoop, Timer, monotonic
from threadnet.mgmt.commands import Caller, CommandTable, run_script
from threadnet.peer import peer_credentials

__all__ = ["ConsoleServer", "create_unix_listener", "format_reply", "resolve_group",
           "run_script"]

#: the longest command line (a longer one ends the session)
MAX_LINE = 64 * 1024
MAX_SESSIONS = 64
#: pending output per session beyond which the session is dropped
MAX_OUTPUT = 1 << 20
#: a session whose pending output has not moved for this long is dropped
WRITE_TIMEOUT = 10.0
#: how long a session whose last reply is out stays open for the client to read it
END_GRACE = 0.2
_RECV = 65536


def format_reply(err: int, out: list[str] | None) -> str:
    parts = []
    if out is not None:
        parts.append("0000 DATA END WITH '.'\n")
        parts.extend(line + "\n" for line in out)
        parts.append(".\n")
    parts.append("1000 Success\n" if err == 0 else f"1{err:03d} {os.strerror(err)}\n")
    return "".join(parts)


def create_unix_listener(path: str, mode: int, group: str | None, backlog: int = 32, *,
                         dir_fd: int | None = None) -> socket.socket:
    """Bind a SOCK_STREAM listener at ``path`` with the given mode and group.

    The directories above ``path`` must be safe (owned by root or us, not writable by
    others unless sticky; ``threadnet.fsafe``), unless ``dir_fd`` is given: a descriptor
    of ``path``'s directory that the caller has checked. A stale socket of ours (nobody
    listening) is replaced; a live one, another user's socket, a symbolic link or any
    other file is an error and is left in place. Symbolic links are never followed.
    """
    from threadnet.fsafe import bind_unix_listener

    gid = resolve_group(group) if group is not None else -1
    return bind_unix_listener(path, socket.SOCK_STREAM, mode, gid, backlog, dir_fd=dir_fd)


def resolve_group(group: str | int) -> int:
    """A group name or number -> gid; UnknownGroupError (a ValueError and LookupError)
    naming the group when it is unknown."""
    from threadnet.errors import UnknownGroupError

    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise UnknownGroupError(group) from None


class _Session:
    __slots__ = ("sock", "fd", "caller", "inbuf", "out", "ending", "closed", "stall",
                 "moved")

    def __init__(self, sock: socket.socket, caller: Caller) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.caller = caller
        self.inbuf = bytearray()  # read, not yet a complete line
        self.out = bytearray()  # replies not yet written
        self.ending = False  # no more commands; end once ``out`` is written
        self.closed = False
        self.stall: Timer | None = None  # watches pending output
        self.moved = 0.0  # when output last went out


def _file_id(path: str) -> tuple[int, int]:
    st = os.stat(path, follow_symlinks=False)
    return st.st_dev, st.st_ino


class ConsoleServer:
    """Serve a CommandTable on a unix socket with the vde console framing."""

    def __init__(self, loop: EventLoop, path: str, table: CommandTable, banner: str,
                 prompt: str, *, mode: int = 0o600, group: str | None = None,
                 on_shutdown: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.path = path
        self.table = table
        self.banner = banner
        self.prompt = prompt
        self.mode = mode
        self.on_shutdown = on_shutdown
        self.sessions: dict[int, _Session] = {}
        self.listener = create_unix_listener(path, mode, group)
        # close() removes the path only while it is still this socket (not a successor's)
        self._ident = _file_id(path)
        loop.add_reader(self.listener, self._accept)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        if len(self.sessions) >= MAX_SESSIONS:
            sock.close()
            return
        try:
            caller = Caller(peer_credentials(sock))
        except OSError:
            sock.close()
            return
        sock.setblocking(False)
        sess = _Session(sock, caller)
        self.sessions[sess.fd] = sess
        self.loop.add_reader(sock, lambda: self._readable(sess))
        self._write(sess, self.banner + self.prompt)

    # -- output --------------------------------------------------------------------
    def _write(self, sess: _Session, text: str, flush: bool = True) -> bool:
        """Queue ``text`` for the session and (``flush``) write what the socket takes now.
        False when the session is gone (closed, or dropped because its client does not
        read its replies)."""
        if sess.closed:
            return False
        data = text.encode()
        if sess.out and len(sess.out) + len(data) > MAX_OUTPUT:
            self._close(sess)  # the client does not read its replies: drop it, not the loop
            return False
        sess.out += data
        return self._flush(sess) if flush else True

    def _flush(self, sess: _Session) -> bool:
        out = sess.out
        while out:
            try:
                n = sess.sock.send(out)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self._close(sess)
                return False
            del out[:n]
            sess.moved = monotonic()
        if out:
            if sess.stall is None:
                sess.moved = monotonic()
                self.loop.add_writer(sess.sock, lambda: self._writable(sess))
                sess.stall = self.loop.call_later(WRITE_TIMEOUT, lambda: self._check_stall(sess))
            return True
        if sess.stall is not None:
            sess.stall.cancel()
            sess.stall = None
            self.loop.remove_writer(sess.sock)
        if sess.ending:
            self._end(sess)
        return True

    def _writable(self, sess: _Session) -> None:
        if not sess.closed:
            self._flush(sess)

    def _check_stall(self, sess: _Session) -> None:
        if sess.closed or sess.stall is None:
            return
        idle = monotonic() - sess.moved
        if idle >= WRITE_TIMEOUT:
            self._close(sess)
        else:
            sess.stall = self.loop.call_later(WRITE_TIMEOUT - idle,
                                              lambda: self._check_stall(sess))

    def _finish(self, sess: _Session, text: str | None = None) -> None:
        """Take no more commands; end the session once ``text`` and the rest are out."""
        sess.ending = True
        self.loop.remove_reader(sess.sock)
        if text is not None:
            self._write(sess, text)
        else:
            self._flush(sess)

    def _close(self, sess: _Session) -> None:
        if sess.closed:
            return
        sess.closed = True
        if sess.stall is not None:
            sess.stall.cancel()
            sess.stall = None
        if sess.sock.fileno() >= 0:
            self.loop.remove_reader(sess.sock)
            self.loop.remove_writer(sess.sock)
        if self.sessions.get(sess.fd) is sess:
            del self.sessions[sess.fd]
        sess.sock.close()

    def _end(self, sess: _Session) -> None:
        """End a session after its last reply. Our side is shut first and the socket closed
        a moment later (or when the client closes): a client that sees the reply and the
        hang-up in one poll may quit before it prints the reply, as Debian's unixterm
        does (it tests POLLHUP before POLLIN)."""
        try:
            sess.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(sess)
            return
        self.loop.call_later(END_GRACE, lambda: self._close(sess))

    # -- input ---------------------------------------------------------------------
    def _readable(self, sess: _Session) -> None:
        if sess.closed or sess.ending:
            return
        try:
            data = sess.sock.recv(_RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(sess)
            return
        if not data:
            # end of input: a last line without a newline still runs (as vde_switch,
            # which takes each read as a command, ran it), then the session ends once
            # its replies are out
            self.loop.remove_reader(sess.sock)
            tail = bytes(sess.inbuf)
            sess.inbuf.clear()
            if tail.strip() and not self.handle_line(sess, tail.decode(errors="replace")):
                return
            if not sess.out:
                self._close(sess)
            else:
                sess.ending = True
            return
        buf = sess.inbuf
        buf += data
        start = 0
        while not sess.closed and not sess.ending:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            if nl - start > MAX_LINE:
                break
            line = buf[start:nl].decode(errors="replace")
            start = nl + 1
            if not self.handle_line(sess, line, flush=False):
                return
        if sess.closed or sess.ending:
            return
        del buf[:start]
        if not self._flush(sess):  # the replies to this read's lines, in one write
            return
        if len(buf) > MAX_LINE:
            self._finish(sess, format_reply(errno.E2BIG, None))

    def handle_line(self, sess: _Session, line: str, flush: bool = True) -> bool:
        """Run one line for a session; False when the session ended."""
        line = line.strip()
        if not line or line.startswith("#"):
            return self._write(sess, self.prompt, flush)
        if line == "logout":
            self._finish(sess, "9999 END OF SESSION")
            return False
        if line == "shutdown":
            self._finish(sess, "1000 Success\n")
            if self.on_shutdown is not None:
                self.on_shutdown()
            return False
        err, out, _ = self.table.run(line, sess.caller)
        return self._write(sess, format_reply(err, out) + self.prompt, flush)

    def close(self) -> None:
        for sess in list(self.sessions.values()):
            self._close(sess)
        self.loop.remove_reader(self.listener)
        self.listener.close()
        try:
            if _file_id(self.path) == self._ident:
                os.unlink(self.path)
        except OSError:
            pass
