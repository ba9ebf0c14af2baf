"""Path safety for the files a threadnet service creates (issue 14, S1 and S7).

A service that may run as root creates sockets, directories and pidfiles at paths its
user names, often under ``/tmp``. Another local user must not be able to make it act on a
file of their choosing, so:

- every directory on the way to such a file (``check_dir_chain``) must be owned by root
  or the service's user and not writable by group or others, unless it is sticky (like
  ``/tmp``: there nobody else can rename or remove our entries) or only writable by the
  group given to the service (``-g``, e.g. Debian's ``/run/vde2``, 2775
  root:vde2-net); every symbolic link on
  the way must be owned by root or the service's user (someone else's link can be
  pointed elsewhere at any time). This is OpenSSH's ``safe_path`` rule, with sticky
  directories allowed as ancestors;
- a directory the service keeps its files in (``open_private_dir``) must be a real
  directory (not a symbolic link), owned by the service's user, not writable by others,
  and group-writable only for a group the service was given; it is then used through
  a descriptor, so later renames of its path do not matter;
- files are made and changed without following symbolic links: sockets are bound at a
  fresh random name in the trusted directory and hard-linked into place (which fails if
  anything is there: nothing is replaced); modes and owners are set through a
  descriptor pinned with ``O_PATH | O_NOFOLLOW`` (``/proc/self/fd/N``);
- an existing file at a socket's path is removed only when it is a socket owned by the
  service's user that nobody listens on (a stale socket of ours).
"""

from __future__ import annotations

import errno
import os
import secrets
import socket
import stat

_MAX_LINKS = 40  # like the kernel's limit on symbolic links in one lookup


class UnsafePathError(PermissionError):
    """A path a service would create files in could be changed by another user."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(errno.EPERM, f"unsafe path: {path} {why}")
        self.filename = path

    def __str__(self) -> str:
        return self.strerror or ""


class FileInTheWayError(FileExistsError):
    """Something that is not a stale socket of ours is where a socket would go."""

    def __str__(self) -> str:
        return self.strerror or ""


def _who(mode: int) -> str:
    both = mode & 0o022 == 0o022
    return "group and others" if both else ("others" if mode & 0o002 else "its group")


def check_ancestor(path: str, st: os.stat_result, uid: int,
                   group_ok: frozenset[int] | set[int] = frozenset()) -> None:
    """The rule for a directory above a service's files: owned by root or ``uid``, not
    writable by group or others unless sticky (group-writable is fine for a group in
    ``group_ok``: the group given to the service, whose members it trusts anyway)."""
    if not stat.S_ISDIR(st.st_mode):
        raise NotADirectoryError(errno.ENOTDIR, "not a directory", path)
    if st.st_uid not in (0, uid):
        raise UnsafePathError(path, f"is owned by uid {st.st_uid}, not by root or uid {uid}")
    writable = st.st_mode & (0o002 if st.st_gid in group_ok else 0o022)
    if writable and not st.st_mode & stat.S_ISVTX:
        raise UnsafePathError(
            path, f"is writable by {_who(st.st_mode)} (mode {stat.S_IMODE(st.st_mode):04o}) "
                  "and not sticky")


def check_dir_chain(path: str, uid: int | None = None,
                    group_ok: frozenset[int] | set[int] = frozenset()) -> str:
    """Resolve the directory ``path`` one component at a time, checking every directory
    passed through (``path`` itself included) with ``check_ancestor`` and every symbolic
    link's owner. Returns the resolved path (no symbolic links left in it).

    Raises UnsafePathError, or OSError when a component is missing or not a directory.
    """
    uid = os.geteuid() if uid is None else uid
    budget = [_MAX_LINKS]

    def walk(start: str, rest: str) -> str:
        cur = start
        for name in rest.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                cur = os.path.dirname(cur)  # cur has no symbolic links left
                continue
            nxt = os.path.join(cur, name)
            st = os.lstat(nxt)
            if stat.S_ISLNK(st.st_mode):
                if st.st_uid not in (0, uid):
                    raise UnsafePathError(
                        nxt, f"is a symbolic link owned by uid {st.st_uid}, not by root or "
                             f"uid {uid}")
                budget[0] -= 1
                if budget[0] < 0:
                    raise OSError(errno.ELOOP, "too many symbolic links", path)
                target = os.readlink(nxt)
                cur = walk("/" if target.startswith("/") else cur, target)
                continue
            check_ancestor(nxt, st, uid, group_ok)
            cur = nxt
        return cur

    absolute = os.path.abspath(path)
    check_ancestor("/", os.lstat("/"), uid, group_ok)
    return walk("/", absolute)


def open_dir(path: str) -> int:
    """A descriptor for the directory ``path`` (whose last component is not followed if it
    is a symbolic link)."""
    return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def open_private_dir(path: str, *, create_mode: int = 0o700, uid: int | None = None,
                     group_ok: frozenset[int] | set[int] = frozenset(),
                     parent_group_ok: frozenset[int] | set[int] = frozenset()
                     ) -> tuple[int, bool]:
    """Open (making it if missing) the directory where a service keeps its own files.

    Its parents must pass ``check_dir_chain``; the directory itself must not be a
    symbolic link, must be owned by ``uid`` (the service's user) and not be writable by
    others; group-writable only when its group is in ``group_ok`` (its parents: in
    ``parent_group_ok``, see ``check_ancestor``). Returns the directory's
    descriptor and whether it was made here. Raises UnsafePathError or OSError.
    """
    uid = os.geteuid() if uid is None else uid
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute.rstrip("/") or "/")
    if not name:
        raise UnsafePathError(absolute, "is the root directory")
    real = os.path.join(check_dir_chain(parent, uid, parent_group_ok), name)
    made = False
    try:
        os.mkdir(real, create_mode)
        made = True
    except FileExistsError:
        pass
    try:
        fd = open_dir(real)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            st = os.lstat(real)
            if stat.S_ISLNK(st.st_mode):
                raise UnsafePathError(absolute, "is a symbolic link; give the directory itself"
                                      ) from None
            raise NotADirectoryError(errno.ENOTDIR, f"{absolute} exists and is not a directory",
                                     absolute) from None
        raise
    try:
        st = os.fstat(fd)
        if st.st_uid != uid:
            raise UnsafePathError(
                absolute, f"belongs to uid {st.st_uid}, not to uid {uid} (this service's user): "
                          "another user may have made it; remove it or choose another path")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o002:
            raise UnsafePathError(absolute, f"is writable by others (mode {mode:04o})")
        if mode & 0o020 and st.st_gid not in group_ok:
            raise UnsafePathError(
                absolute, f"is writable by its group (gid {st.st_gid}, mode {mode:04o}), which is "
                          "not the group given to this service")
    except BaseException:
        os.close(fd)
        if made:
            os.rmdir(real)
        raise
    return fd, made


def pin(name: str, dir_fd: int) -> int:
    """An ``O_PATH`` descriptor for ``name`` in ``dir_fd``, never following a symbolic link."""
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def set_socket_file(name: str, dir_fd: int, mode: int, uid: int = -1, gid: int = -1) -> None:
    """Set the mode (and owner) of the socket file ``name`` in ``dir_fd``: acted on through
    a pinned descriptor, so a symbolic link or other file swapped in is never changed.
    Raises OSError when ``name`` is not a socket."""
    fd = pin(name, dir_fd)
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise OSError(errno.ENOTSOCK, "not a socket (replaced?)", name)
        node = f"/proc/self/fd/{fd}"
        if uid != -1 or gid != -1:
            os.chown(node, uid, gid)
        os.chmod(node, mode)
    finally:
        os.close(fd)


def remove_stale_socket(name: str, dir_fd: int, display: str, sock_type: int,
                        uid: int | None = None) -> None:
    """Make room at ``name`` in ``dir_fd`` for a new socket of ours. Nothing there: fine.
    A socket of ``uid``'s that nobody listens on: removed. A live one: EADDRINUSE.
    Anything else (another user's socket, a symbolic link, a file): left alone, with an
    error that says why."""
    uid = os.geteuid() if uid is None else uid
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a socket"
        raise FileInTheWayError(errno.EEXIST, f"{display} exists and is {kind}; not replacing it",
                                display)
    if st.st_uid != uid:
        raise UnsafePathError(display, f"is a socket of uid {st.st_uid}, not ours (uid {uid}); "
                                       "not replacing it")
    fd = pin(name, dir_fd)
    probe = socket.socket(socket.AF_UNIX, sock_type)
    try:
        if (os.fstat(fd).st_ino, os.fstat(fd).st_dev) != (st.st_ino, st.st_dev):
            raise OSError(errno.EAGAIN, "changed while checked", display)
        try:
            probe.connect(f"/proc/self/fd/{fd}")
        except OSError:
            pass
        else:
            raise OSError(errno.EADDRINUSE, f"{display} is in use by a running server")
    finally:
        probe.close()
        os.close(fd)
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def bind_unix_listener(path: str, sock_type: int, mode: int, gid: int = -1, backlog: int = 128,
                       *, dir_fd: int | None = None) -> socket.socket:
    """A listening AF_UNIX socket at ``path``, made safely (see the module's notes).

    The parents of ``path`` must pass ``check_dir_chain``, unless ``dir_fd`` is given: a
    descriptor of the directory ``path`` is in, which the caller has checked (a parent
    writable by the group ``gid`` is accepted, see ``check_ancestor``). A stale
    socket of ours at ``path`` is replaced; anything else there is an error. The socket is
    bound at a random name, given its mode and group, made to listen and then hard-linked
    at ``path``, so it is never reachable at ``path`` with another mode, and nothing
    created at ``path`` meanwhile is replaced.
    """
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    own_fd = dir_fd is None
    group_ok = {gid} if gid != -1 else set()
    if dir_fd is None:  # O_PATH: a directory we may search and write but not list will do
        dfd = os.open(check_dir_chain(parent, group_ok=group_ok),
                      os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    else:
        dfd = dir_fd
    try:
        remove_stale_socket(name, dfd, absolute, sock_type)
        s = socket.socket(socket.AF_UNIX, sock_type)
        tmp = ""
        try:
            for _ in range(16):
                tmp = f".tn-{secrets.token_hex(6)}.tmp"
                try:
                    s.bind(f"/proc/self/fd/{dfd}/{tmp}")
                    break
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:
                        raise
            else:
                raise OSError(errno.EADDRINUSE, "no free temporary name", absolute)
            try:
                set_socket_file(tmp, dfd, mode, -1, gid)
                s.listen(backlog)
                try:
                    os.link(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd, follow_symlinks=False)
                except FileExistsError:
                    raise OSError(errno.EADDRINUSE,
                                  f"{absolute} was made by someone else while binding") from None
            finally:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
        except BaseException:
            s.close()
            raise
        s.setblocking(False)
        return s
    finally:
        if own_fd:
            os.close(dfd)


def _open_parent(path: str, uid: int | None) -> tuple[int, str, str]:
    """(descriptor of the checked directory ``path`` is in, ``path``'s last component, the
    absolute path for messages)."""
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute)
    if not name:
        raise IsADirectoryError(errno.EISDIR, "a directory, not a file", absolute)
    return open_dir(check_dir_chain(parent, uid)), name, absolute


def read_file(path: str, limit: int, uid: int | None = None) -> bytes | None:
    """The contents of the regular file ``path`` that a service keeps (a lease file); None
    when there is none. Its directories must pass ``check_dir_chain``; a symbolic link
    at ``path`` is refused (UnsafePathError), not followed, and so is anything that is
    not a regular file; one larger than ``limit`` bytes is OSError(EFBIG)."""
    dfd, name, absolute = _open_parent(path, uid)
    try:
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(absolute, "is a symbolic link; not following it") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise OSError(errno.EINVAL, "not a regular file", absolute)
            chunks, size = [], 0
            while chunk := os.read(fd, 1 << 16):
                chunks.append(chunk)
                size += len(chunk)
                if size > limit:
                    raise OSError(errno.EFBIG, f"larger than {limit} bytes", absolute)
            return b"".join(chunks)
        finally:
            os.close(fd)
    finally:
        os.close(dfd)


def write_file_atomic(path: str, data: bytes, mode: int = 0o600, uid: int | None = None) -> None:
    """Replace the file ``path`` with ``data`` as one step: written to a fresh file
    (O_EXCL, O_NOFOLLOW) in the same checked directory, synced, then renamed over
    ``path``. A reader sees the old contents or the new, never a part; a crash leaves the
    old file; a symbolic link at ``path`` is replaced, never followed."""
    dfd, name, absolute = _open_parent(path, uid)
    try:
        for _ in range(16):
            tmp = f".{name}.{secrets.token_hex(6)}.tmp"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, mode, dir_fd=dfd)
                break
            except FileExistsError:
                continue
        else:
            raise OSError(errno.EEXIST, "no free temporary name", absolute)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    finally:
        os.close(dfd)
