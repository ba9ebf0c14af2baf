"""Running as a daemon: detach from the terminal, write a pidfile, remove it at exit."""

from __future__ import annotations

import atexit
import os
import sys
from collections.abc import Callable


def daemonize(pidfile: str | None = None) -> None:
    """Double fork, new session, stdio on /dev/null. The original process exits 0 once
    the daemon has written its pidfile, so the caller may read it at once.

    Call it after the sockets are set up, so that set-up errors reach the caller's
    terminal and a zero exit means the service is ready.
    """
    ready = detach()
    if pidfile:
        write_pidfile(pidfile)
    ready(None)


def detach() -> Callable[[str | None], None]:
    """Go to the background before building state that needs threads (a stack's driver
    does not survive a fork). Returns ``ready(error)``: the original process waits for it,
    then exits 0, or prints ``error`` to its stderr and exits 1."""
    sys.stdout.flush()
    sys.stderr.flush()
    ready_r, ready_w = os.pipe()
    if os.fork() > 0:
        os.close(ready_w)
        chunks = []
        while chunk := os.read(ready_r, 4096):
            chunks.append(chunk)
        answer = b"".join(chunks)
        if answer == b"1":
            os._exit(0)
        os.write(2, (answer or b"the daemon died before it was ready").rstrip(b"\n") + b"\n")
        os._exit(1)
    os.close(ready_r)
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if devnull > 2:
        os.close(devnull)

    def ready(error: str | None = None) -> None:
        os.write(ready_w, b"1" if error is None else error.encode(errors="replace") or b"?")
        os.close(ready_w)

    return ready


def write_pidfile(pidfile: str) -> None:
    path = os.path.abspath(pidfile)
    with open(path, "w") as f:
        f.write(f"{os.getpid()}\n")
    pid = os.getpid()

    def remove() -> None:
        # only the process that wrote it removes it (not a forked child)
        if os.getpid() == pid:
            try:
                os.unlink(path)
            except OSError:
                pass

    atexit.register(remove)


def background_or_pidfile(daemon: bool, pidfile: str | None) -> None:
    """What ``-d``/``--daemon`` and ``-p``/``--pidfile`` mean for every threadnet service."""
    if daemon:
        daemonize(pidfile)
    elif pidfile:
        write_pidfile(pidfile)
