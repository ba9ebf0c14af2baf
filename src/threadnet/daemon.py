"""Running as a daemon: detach from the terminal, write a pidfile, remove it at exit."""

from __future__ import annotations

import atexit
import errno
import os
import secrets
import stat
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
        try:
            write_pidfile(pidfile)
        except OSError as exc:
            ready(str(exc) if isinstance(exc, PidfileError) else f"pidfile {pidfile}: {exc}")
            raise SystemExit(1) from None
    ready(None)


def detach() -> Callable[[str | None], None]:
    """Go to the background before building state that needs threads (a stack's runner
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


class PidfileError(OSError):
    """The pidfile cannot be written: another instance runs, or the path is unsafe."""

    def __str__(self) -> str:
        return self.strerror or ""


def _read_pid(fd: int) -> int | None:
    try:
        text = os.read(fd, 64).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    """True while ``pid`` runs (an exited process its parent has yet to reap does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # someone else's process
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return True


def _open_existing(name: str, dfd: int, display: str) -> tuple[int, os.stat_result] | None:
    """The pidfile already there, opened without following a link; None if it is gone."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dfd)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise PidfileError(errno.EEXIST, f"pidfile {display} is a symbolic link; "
                                             "not writing through it", display) from None
        raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise PidfileError(errno.EEXIST, f"pidfile {display} exists and is not a regular file",
                           display)
    return fd, st


def write_pidfile(pidfile: str) -> None:
    """Write our pid to ``pidfile`` and remove it at exit, safely (issue 14, S7).

    The pidfile is written in full at a fresh temporary name in the same directory
    (``O_CREAT | O_EXCL | O_NOFOLLOW``) and hard-linked into place, which never replaces
    or follows anything already there. An existing pidfile whose process still runs is
    an error ("already running (pid N)"); a stale one (its process is gone) is removed
    first if it is a regular file of ours; a symbolic link or anything else is refused.
    At exit the pidfile is removed only if it is still a regular file holding our pid, so
    a daemon that exits late does not remove its successor's.
    """
    path = os.path.abspath(pidfile)
    parent, name = os.path.split(path)
    pid = os.getpid()
    dfd = os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        tmp = f".{name}.{pid}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o644, dir_fd=dfd)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(f"{pid}\n")
            for _ in range(8):
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                    break
                except FileExistsError:
                    pass
                _remove_stale(name, dfd, path)
            else:
                raise PidfileError(errno.EEXIST, f"pidfile {path} keeps being recreated", path)
        finally:
            os.unlink(tmp, dir_fd=dfd)
        st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except BaseException:
        os.close(dfd)
        raise

    def remove() -> None:
        # only the process that wrote it removes it (not a forked child), and only while
        # it is still the file we wrote, with our pid in it
        if os.getpid() != pid:
            return
        try:
            found = _open_existing(name, dfd, path)
            if found is not None:
                fd, now = found
                try:
                    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino) and _read_pid(fd) == pid:
                        os.unlink(name, dir_fd=dfd)
                finally:
                    os.close(fd)
        except OSError:
            pass
        finally:
            os.close(dfd)

    atexit.register(remove)


def _remove_stale(name: str, dfd: int, display: str) -> None:
    found = _open_existing(name, dfd, display)
    if found is None:
        return
    fd, st = found
    try:
        other = _read_pid(fd)
    finally:
        os.close(fd)
    if other is not None and other != os.getpid() and _alive(other):
        raise PidfileError(errno.EEXIST, f"already running (pid {other}): pidfile {display}",
                           display)
    if st.st_uid != os.geteuid():
        raise PidfileError(errno.EEXIST, f"stale pidfile {display} belongs to uid {st.st_uid}; "
                                         "not replacing it", display)
    # stale: remove it if it is still the file we looked at
    try:
        now = os.stat(name, dir_fd=dfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if (now.st_dev, now.st_ino) == (st.st_dev, st.st_ino):
        os.unlink(name, dir_fd=dfd)


def _pidfile_dir(pidfile: str) -> tuple[int, str, str]:
    path = os.path.abspath(pidfile)
    parent, name = os.path.split(path)
    return os.open(parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC), name, path


def read_pidfile(pidfile: str) -> int | None:
    """The pid in ``pidfile``, read without following a link; None when there is none.
    Raises PidfileError for a symbolic link or a file that is not regular."""
    dfd, name, path = _pidfile_dir(pidfile)
    try:
        found = _open_existing(name, dfd, path)
        if found is None:
            return None
        fd, _st = found
        try:
            return _read_pid(fd)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def check_pidfile(pidfile: str | None) -> None:
    """Refuse at once a pidfile that ``write_pidfile`` would refuse (a link, not a regular
    file, or a live process's), so that a service fails before it creates its sockets."""
    if not pidfile:
        return
    try:
        other = read_pidfile(pidfile)
    except FileNotFoundError:
        return  # a missing directory: write_pidfile says so later
    if other is not None and other != os.getpid() and _alive(other):
        path = os.path.abspath(pidfile)
        raise PidfileError(errno.EEXIST, f"already running (pid {other}): pidfile {path}", path)


def remove_stale_pidfile(pidfile: str) -> None:
    """Remove ``pidfile`` if its process has gone and it is a regular file of ours."""
    dfd, name, path = _pidfile_dir(pidfile)
    try:
        _remove_stale(name, dfd, path)
    finally:
        os.close(dfd)


def background_or_pidfile(daemon: bool, pidfile: str | None) -> None:
    """What ``-d``/``--daemon`` and ``-p``/``--pidfile`` mean for every threadnet service."""
    if daemon:
        daemonize(pidfile)
    elif pidfile:
        write_pidfile(pidfile)
