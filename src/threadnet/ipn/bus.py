"""The bus directory: what makes a path an IPN bus, and who may use it.

A bus is a directory made by ``create_bus``::

    PATH/            drwxrws--T  owner:group   (sticky: a member removes only its own files;
                                               setgid: every member's socket gets the group)
    PATH/bus         -rw-r-----  the bus's settings, written once by its owner
    PATH/m.PID.TAG   srw-rw----  one member's datagram socket (its receive queue)
    PATH/s.PID.TAG   -rw-r-----  that member's counters (``show`` reads them)

The mode given at creation (``--mode``, default 0660) says who may join: a class of
users (owner, group, others) with read and write in it may join, and then sends to and
receives from every other member; a class with neither may not even enter the directory.
The kernel enforces all of it (search permission on the directory, write permission on
each member's socket); nothing here grants access.

A member trusts a bus directory only when it is a real directory (never a symbolic
link), its parents pass ``fsafe.check_dir_chain`` (for the member's own uid, or the bus
owner's), it is not writable by group or others unless it is sticky, and its ``bus``
file is a regular file of the directory's owner that nobody else may write.
"""

from __future__ import annotations

import errno
import grp
import os
import secrets
import stat
from dataclasses import dataclass

from threadnet.errors import ThreadnetError, UnknownGroupError
from threadnet.fsafe import UnsafePathError, check_dir_chain, open_dir

MAGIC = "threadnet-ipn 1"
SETTINGS = "bus"
MEMBER_PREFIX = "m."
STATS_PREFIX = "s."
POLICIES = ("broadcast", "switch")
#: how many messages one member may hold back for another whose queue is full (a stack's
#: sends never wait: see ``link/ipn.py``); the kernel's own queue of each socket is
#: net.unix.max_dgram_qlen + 1 datagrams (11 by default)
DEFAULT_QUEUE = 128
MAX_QUEUE = 65536
#: a bus has at most this many members (each costs every sender one datagram per message)
MAX_MEMBERS = 1024
#: sun_path is 108 bytes with its NUL; a member's name is up to 20 more
MAX_PATH = 107 - 21
_SETTINGS_LIMIT = 4096


class IpnError(ThreadnetError, OSError):
    """A bus that cannot be made, opened or used (with the errno that says why)."""

    def __str__(self) -> str:
        return self.strerror or super().__str__()


@dataclass(frozen=True)
class BusConfig:
    policy: str = "broadcast"
    lossless: bool = True
    queue: int = DEFAULT_QUEUE
    mode: int = 0o660

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown IPN policy {self.policy!r} (known: {', '.join(POLICIES)})")
        if not 1 <= self.queue <= MAX_QUEUE:
            raise ValueError(f"IPN queue must be 1..{MAX_QUEUE}, not {self.queue}")
        check_mode(self.mode)

    @property
    def delivery(self) -> str:
        return "lossless" if self.lossless else "lossy"

    def format(self) -> bytes:
        return (f"{MAGIC}\npolicy={self.policy}\ndelivery={self.delivery}\n"
                f"queue={self.queue}\nmode={self.mode:04o}\n").encode()

    @classmethod
    def parse(cls, data: bytes, where: str = "bus settings") -> BusConfig:
        """Read what ``format`` wrote; anything else is IpnError(EINVAL) naming the line."""
        try:
            text = data.decode("ascii")
        except UnicodeDecodeError:
            raise IpnError(errno.EINVAL, f"{where}: not ASCII text") from None
        lines = text.splitlines()
        if not lines or lines[0] != MAGIC:
            raise IpnError(errno.EINVAL, f"{where}: not an IPN bus (first line is not {MAGIC!r})")
        values: dict[str, str] = {}
        for line in lines[1:]:
            key, sep, value = line.partition("=")
            if not sep or key not in ("policy", "delivery", "queue", "mode") or key in values:
                raise IpnError(errno.EINVAL, f"{where}: bad line {line[:60]!r}")
            values[key] = value
        try:
            delivery = values.get("delivery", "lossless")
            if delivery not in ("lossless", "lossy"):
                raise ValueError(f"unknown delivery {delivery!r}")
            queue = values.get("queue", str(DEFAULT_QUEUE))
            mode = values.get("mode", "0660")
            if not queue.isdigit() or not mode.isdigit():
                raise ValueError("queue and mode must be numbers")
            return cls(policy=values.get("policy", "broadcast"), lossless=delivery == "lossless",
                       queue=int(queue), mode=int(mode, 8))
        except ValueError as exc:
            raise IpnError(errno.EINVAL, f"{where}: {exc}") from None


def check_mode(mode: int) -> None:
    """A bus mode gives each class read and write together, or nothing (a member both
    sends and receives): 0600, 0660, 0666, 0606."""
    if mode & ~0o666 or not mode & 0o600:
        raise ValueError(f"IPN mode {mode:04o}: only read/write bits, and the owner's set "
                         "(e.g. 0660)")
    for shift, who in ((6, "owner"), (3, "group"), (0, "others")):
        bits = (mode >> shift) & 0o6
        if bits not in (0, 0o6):
            raise ValueError(f"IPN mode {mode:04o}: {who} must have read and write together, "
                             "or neither (members both send and receive)")


def dir_mode(mode: int) -> int:
    """The bus directory's mode for a bus mode: rwx for every class that may join, sticky
    and setgid."""
    out = stat.S_ISVTX | stat.S_ISGID | 0o700
    if mode & 0o060:
        out |= 0o070
    if mode & 0o006:
        out |= 0o007
    return out


def resolve_group(group: str | int | None) -> int:
    if group is None:
        return -1
    if isinstance(group, int) or str(group).isdigit():
        return int(group)
    try:
        return grp.getgrnam(str(group)).gr_gid
    except KeyError:
        raise UnknownGroupError(group) from None


def _split(path: str) -> tuple[str, str, str]:
    if not isinstance(path, str) or not path or "\0" in path:
        raise IpnError(errno.EINVAL, f"bad IPN bus path {path!r}")
    absolute = os.path.abspath(path)
    parent, name = os.path.split(absolute.rstrip("/") or "/")
    if not name:
        raise IpnError(errno.EINVAL, "the root directory cannot be a bus")
    return absolute, parent, name


def _checked_parent(parent: str, owner: int | None) -> str:
    """``check_dir_chain`` for us, or else for the bus's owner (whom a member trusts for
    the bus anyway); returns the resolved parent."""
    try:
        return check_dir_chain(parent)
    except UnsafePathError:
        if owner is None or owner == os.geteuid():
            raise
        return check_dir_chain(parent, owner)


def create_bus(path: str, config: BusConfig | None = None, group: str | int | None = None) -> str:
    """Make the bus directory ``path`` (which must not exist) with ``config``; returns its
    resolved path. ``group``: the group whose members may join (mode 0660)."""
    config = config or BusConfig()
    absolute, parent, name = _split(path)
    gid = resolve_group(group)
    real = os.path.join(_checked_parent(parent, None), name)
    if len(real.encode()) > MAX_PATH:
        raise IpnError(errno.ENAMETOOLONG, f"IPN bus path {real} is longer than {MAX_PATH} "
                       "bytes (a unix socket's path in it would not fit)")
    try:
        os.mkdir(real, 0o700)
    except FileExistsError:
        raise IpnError(errno.EEXIST, f"{absolute} exists (remove it with 'threadnet ipn rm')") \
            from None
    try:
        dfd = open_dir(real)
        try:
            if gid != -1:
                try:
                    os.fchown(dfd, -1, gid)
                except PermissionError:
                    raise IpnError(errno.EPERM, f"cannot give {absolute} the group {group!r}: "
                                   "only a member of that group (or root) may") from None
            tmp = f".{SETTINGS}.{secrets.token_hex(4)}"
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600, dir_fd=dfd)
            try:
                os.write(fd, config.format())
                if gid != -1:
                    os.fchown(fd, -1, gid)
                os.fchmod(fd, 0o600 | (config.mode & 0o044))
            finally:
                os.close(fd)
            os.rename(tmp, SETTINGS, src_dir_fd=dfd, dst_dir_fd=dfd)
            os.fchmod(dfd, dir_mode(config.mode))
        finally:
            os.close(dfd)
    except BaseException:
        _remove_tree(real)
        raise
    return real


def _remove_tree(real: str) -> None:
    try:
        dfd = open_dir(real)
    except OSError:
        return
    try:
        for name in os.listdir(dfd):
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
    finally:
        os.close(dfd)
    try:
        os.rmdir(real)
    except OSError:
        pass


@dataclass
class OpenBus:
    """A checked bus directory: its resolved path, a descriptor, its settings."""

    path: str
    dfd: int
    config: BusConfig
    owner: int
    gid: int

    def close(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1


def open_bus(path: str) -> OpenBus:
    """Open and check the bus at ``path`` (see the module's notes). Raises IpnError."""
    absolute, parent, name = _split(path)
    try:
        owner = os.lstat(absolute).st_uid
    except FileNotFoundError:
        raise IpnError(errno.ENOENT, f"no IPN bus at {absolute} (make one with "
                       "'threadnet ipn create')") from None
    except OSError as exc:
        raise IpnError(exc.errno, f"IPN bus {absolute}: {exc.strerror}") from None
    try:
        real = os.path.join(_checked_parent(parent, owner), name)
        dfd = open_dir(real)
    except UnsafePathError as exc:
        raise IpnError(errno.EPERM, str(exc)) from None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise IpnError(errno.ENOTDIR, f"{absolute} is not an IPN bus directory (a symbolic "
                           "link or another file)") from None
        if exc.errno == errno.EACCES:
            raise IpnError(errno.EACCES, f"permission denied: the IPN bus {absolute} is not "
                           "open to this user") from None
        raise IpnError(exc.errno, f"IPN bus {absolute}: {exc.strerror}") from None
    try:
        st = os.fstat(dfd)
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid not in (0, owner):
            raise IpnError(errno.EPERM, f"{absolute} changed owner while opened")
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise IpnError(errno.EPERM, f"unsafe IPN bus: {absolute} is writable by others "
                           f"(mode {mode:04o}) and not sticky: members could replace each "
                           "other's sockets")
        config = BusConfig.parse(_read_settings(dfd, st.st_uid, absolute), f"{absolute}/{SETTINGS}")
        if len(real.encode()) > MAX_PATH:
            raise IpnError(errno.ENAMETOOLONG, f"IPN bus path {real} is too long")
        return OpenBus(real, dfd, config, st.st_uid, st.st_gid)
    except BaseException:
        os.close(dfd)
        raise


def _read_settings(dfd: int, owner: int, display: str) -> bytes:
    try:
        fd = os.open(SETTINGS, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     dir_fd=dfd)
    except FileNotFoundError:
        raise IpnError(errno.EINVAL, f"{display} is not an IPN bus (no '{SETTINGS}' file)") \
            from None
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IpnError(errno.EPERM, f"{display}/{SETTINGS} is a symbolic link") from None
        if exc.errno == errno.EACCES:
            raise IpnError(errno.EACCES, f"permission denied: cannot read {display}/{SETTINGS}") \
                from None
        raise IpnError(exc.errno, f"{display}/{SETTINGS}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise IpnError(errno.EINVAL, f"{display}/{SETTINGS} is not a regular file")
        if st.st_uid != owner or st.st_mode & 0o022:
            raise IpnError(errno.EPERM, f"unsafe IPN bus: {display}/{SETTINGS} is not the bus "
                           "owner's alone")
        data = os.read(fd, _SETTINGS_LIMIT + 1)
        if len(data) > _SETTINGS_LIMIT:
            raise IpnError(errno.EINVAL, f"{display}/{SETTINGS} is too large")
        return data
    finally:
        os.close(fd)


def remove_bus(path: str) -> int:
    """Remove the bus at ``path``: its members' sockets and counters, its settings, the
    directory. Only its owner (or root) may. Returns how many member sockets were there
    (members still running lose the bus: nobody can reach them any more)."""
    bus = open_bus(path)
    try:
        if os.geteuid() not in (0, bus.owner):
            raise IpnError(errno.EPERM, f"only the owner (uid {bus.owner}) may remove {bus.path}")
        members = 0
        for name in os.listdir(bus.dfd):
            if name.startswith((MEMBER_PREFIX, STATS_PREFIX, f".{SETTINGS}.")):
                members += name.startswith(MEMBER_PREFIX)
                try:
                    os.unlink(name, dir_fd=bus.dfd)
                except FileNotFoundError:
                    pass
        os.unlink(SETTINGS, dir_fd=bus.dfd)
    finally:
        bus.close()
    try:
        os.rmdir(bus.path)
    except OSError as exc:
        raise IpnError(exc.errno, f"{bus.path}: {exc.strerror} (files that are not the bus's "
                       "are left in it)") from None
    return members
