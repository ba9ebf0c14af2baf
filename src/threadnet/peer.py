"""Acting with a local peer's rights: who is at the other end of a Unix socket, and the file
and socket operations done on that peer's behalf.

A threadnet service (a switch, a wirefilter, a published stack, a console) may run as root
or be shared with other users. When a peer asks it to open a path, the service must not lend
it its own rights (the confused deputy). The peer's identity comes from the connection
(SO_PEERCRED), never from a path that can change between a check and its use.

- ``peer_credentials(sock)``: the pid, uid and gid of a connected Unix socket's peer.
- ``open_as(cred, path, flags)``: open a file with the peer's rights. The service's own user
  opens directly; root opens in a forked child that takes the peer's uid, gid and groups
  and hands the descriptor back; any other service refuses (it cannot take the
  peer's rights, and must not use its own).
- ``connect_to_socket_of(cred, path, type)``: connect to a Unix socket that belongs to the
  peer. The socket file is pinned with ``O_PATH | O_NOFOLLOW``, its owner checked on the
  pinned inode, and the connection made through ``/proc/self/fd``, so a rename or a symlink
  swapped in after the check cannot redirect it.
"""

from __future__ import annotations

import errno
import os
import pwd
import socket
import stat
import struct
import warnings
from typing import NamedTuple

_UCRED = struct.Struct("3i")


class PeerCred(NamedTuple):
    """The credentials of a local peer (``struct ucred``)."""

    pid: int
    uid: int
    gid: int


def own_credentials() -> PeerCred:
    """This process's own credentials, for operations asked for by the service itself."""
    return PeerCred(os.getpid(), os.geteuid(), os.getegid())


def peer_credentials(sock: socket.socket) -> PeerCred:
    """The peer of a connected AF_UNIX stream or seqpacket socket, from SO_PEERCRED."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
    return PeerCred(*_UCRED.unpack(raw))


def is_privileged(cred: PeerCred) -> bool:
    """True for a peer that has at least the service's own rights (the same user, or root)."""
    return cred.uid == 0 or cred.uid == os.geteuid()


def _groups_of(uid: int, gid: int) -> list[int]:
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        return []
    try:
        return os.getgrouplist(name, gid)
    except OSError:
        return []


def open_as(cred: PeerCred, path: str, flags: int, mode: int = 0o644) -> int:
    """Open ``path`` as the peer ``cred`` would: returns a descriptor, or raises OSError
    (PermissionError when the peer may not, or when this service cannot act as the peer).
    The open itself never blocks (a FIFO without a writer, a device); the descriptor is
    blocking afterwards unless ``flags`` has O_NONBLOCK. Callers that want a regular file
    check ``os.fstat`` on the result."""
    fd = _open_as(cred, path, flags | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY, mode)
    if not flags & os.O_NONBLOCK:
        os.set_blocking(fd, True)
    return fd


def _open_as(cred: PeerCred, path: str, flags: int, mode: int) -> int:
    # Always opened non-blocking: a FIFO or a device named by a peer must not hang the
    # service (or the child) in open(2).
    euid = os.geteuid()
    if cred.uid == euid:
        return os.open(path, flags, mode)
    if euid != 0:
        raise PermissionError(
            errno.EPERM,
            f"only the service's owner (uid {euid}) may open files through it; "
            f"the peer is uid {cred.uid}", path)
    if cred.uid == 0:
        return os.open(path, flags, mode)
    groups = _groups_of(cred.uid, cred.gid)  # NSS look-ups stay in the parent
    path = os.path.abspath(path)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        with warnings.catch_warnings():
            # The child only makes system calls and exits: no lock of another thread is
            # needed there (Python 3.12 warns about any fork in a process with threads).
            warnings.simplefilter("ignore", DeprecationWarning)
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.setgroups(groups)
                os.setresgid(cred.gid, cred.gid, cred.gid)
                os.setresuid(cred.uid, cred.uid, cred.uid)
                fd = os.open(path, flags, mode)
                socket.send_fds(theirs, [b"K"], [fd])
            except OSError as e:
                theirs.send(b"E%d" % e.errno)
            finally:
                os._exit(0)
        theirs.close()
        try:
            msg, fds, _flags, _addr = socket.recv_fds(ours, 64, 1)
        finally:
            os.waitpid(pid, 0)
        if msg == b"K" and len(fds) == 1:
            return fds[0]
        for fd in fds:
            os.close(fd)
        if msg.startswith(b"E") and msg[1:].isdigit():
            code = int(msg[1:])
            raise OSError(code, os.strerror(code), path)
        raise OSError(errno.EIO, "opening a file as the peer failed", path)
    finally:
        theirs.close()
        ours.close()


def connect_to_socket_of(cred: PeerCred, path: str, type: int = socket.SOCK_DGRAM,
                         sock: socket.socket | None = None) -> socket.socket:
    """Connect to the Unix socket at ``path``, which must belong to the peer ``cred``
    (a root peer may name any socket). Returns the connected socket
    (``sock`` if given). Raises PermissionError when it belongs to someone else."""
    try:
        pin = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise PermissionError(errno.EPERM, "the socket path is a symbolic link", path) from None
        raise
    try:
        st = os.fstat(pin)
        if stat.S_ISLNK(st.st_mode):  # O_PATH|O_NOFOLLOW pins the link itself
            raise PermissionError(errno.EPERM, "the socket path is a symbolic link", path)
        if not stat.S_ISSOCK(st.st_mode):
            raise OSError(errno.ENOTSOCK, "not a socket", path)
        if not (cred.uid == 0 or st.st_uid == cred.uid):
            raise PermissionError(
                errno.EPERM,
                f"the socket belongs to uid {st.st_uid}, not to the peer (uid {cred.uid})", path)
        own = sock is None
        s = socket.socket(socket.AF_UNIX, type) if own else sock
        try:
            s.connect(f"/proc/self/fd/{pin}")
        except BaseException:
            if own:
                s.close()
            raise
        return s
    finally:
        os.close(pin)
