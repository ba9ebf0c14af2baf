"""The vde_switch management console protocol (vde-2 consmgmt.c, interop.md 1.5).

On connect the server writes a banner and the prompt. Each command line gets either
``1000 Success`` or ``1<errno> <strerror>``, preceded, for commands that print, by
``0000 DATA END WITH '.'``, the lines and a lone ``.``. ``logout`` answers
``9999 END OF SESSION`` and closes: our side at once, the socket ``END_GRACE`` later, so
that a client polling for both sees the reply before the hang-up. Other commands are
followed by the prompt again.

vde_switch treats every read() as one command; we split on newlines (so a client that
pipelines still gets one answer per line) and also take a read without a newline as a
whole command, as vde_switch does.
"""

from __future__ import annotations

import grp
import os
import socket
from collections.abc import Callable

from threadnet.loop import EventLoop
from threadnet.mgmt.commands import CommandTable

MAX_LINE = 1024
MAX_SESSIONS = 64
WRITE_TIMEOUT = 2.0
#: how long a session whose last reply is out stays open for the client to read it
END_GRACE = 0.2


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
    """A group name or number -> gid; ValueError with a clear message when unknown."""
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise ValueError(f"unknown group {group!r}") from None


class _Session:
    __slots__ = ("sock", "buf")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = b""


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
        loop.add_reader(self.listener, self._accept)

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except OSError:
            return
        if len(self.sessions) >= MAX_SESSIONS:
            sock.close()
            return
        sock.settimeout(WRITE_TIMEOUT)
        sess = _Session(sock)
        self.sessions[sock.fileno()] = sess
        self.loop.add_reader(sock, lambda: self._readable(sess))
        self._write(sess, self.banner + self.prompt)

    def _write(self, sess: _Session, text: str) -> bool:
        try:
            sess.sock.sendall(text.encode())
            return True
        except OSError:
            self._close(sess)
            return False

    def _close(self, sess: _Session) -> None:
        fd = sess.sock.fileno()
        if fd < 0:
            return  # closed already (by the client, before the grace timer)
        self.loop.remove_reader(sess.sock)
        self.sessions.pop(fd, None)
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

    def _readable(self, sess: _Session) -> None:
        try:
            data = sess.sock.recv(4096)
        except (BlockingIOError, TimeoutError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(sess)
            return
        sess.buf += data
        lines = sess.buf.split(b"\n")
        sess.buf = b""
        if lines[-1] == b"":
            lines.pop()
        elif len(lines[-1]) > MAX_LINE:
            lines[-1] = lines[-1][:MAX_LINE]
        for raw in lines:
            if not self.handle_line(sess, raw.decode(errors="replace")):
                return

    def handle_line(self, sess: _Session, line: str) -> bool:
        """Run one line for a session; False when the session ended."""
        line = line.strip()
        if not line or line.startswith("#"):
            return self._write(sess, self.prompt)
        if line == "logout":
            if self._write(sess, "9999 END OF SESSION"):
                self._end(sess)
            return False
        if line == "shutdown":
            if self._write(sess, "1000 Success\n"):
                self._end(sess)
            if self.on_shutdown is not None:
                self.on_shutdown()
            return False
        err, out, _ = self.table.run(line)
        return self._write(sess, format_reply(err, out) + self.prompt)

    def close(self) -> None:
        for sess in list(self.sessions.values()):
            self._close(sess)
        self.loop.remove_reader(self.listener)
        self.listener.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


def run_script(table: CommandTable, path: str) -> list[str]:
    """Run an rc file (the ``load`` command and ``-f``): one command a line, ``#`` comments.

    Returns error lines for failing commands; raises OSError when the file cannot be read.
    """
    errors = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            err, _, _ = table.run(line)
            if err:
                errors.append(f"{path}:{n}: {line}: {os.strerror(err)}")
    return errors
