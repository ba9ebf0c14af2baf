"""The kernel interfaces a supervisor needs, through ctypes (x86-64 Linux, 5.14 or later).

seccomp(2) with a user-notification listener, its ioctls (RECV, SEND, ID_VALID, ADDFD),
pidfd_open/pidfd_getfd, process_vm_readv/writev and prctl. Structures are laid out as
<linux/seccomp.h> has them; ``check_sizes`` compares them with what the running kernel
reports (SECCOMP_GET_NOTIF_SIZES) before a supervisor trusts them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

# -- system call numbers (x86-64) -----------------------------------------------------------
NR = {
    "ioctl": 16, "socket": 41, "connect": 42, "accept": 43, "sendto": 44, "recvfrom": 45,
    "sendmsg": 46, "recvmsg": 47, "bind": 49, "listen": 50, "getsockname": 51,
    "getpeername": 52, "socketpair": 53, "setsockopt": 54, "getsockopt": 55,
    "accept4": 288, "recvmmsg": 299, "sendmmsg": 307,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427,
}
NAMES = {v: k for k, v in NR.items()}
_SYS_SECCOMP = 317
_SYS_PIDFD_OPEN = 434
_SYS_PIDFD_GETFD = 438

AUDIT_ARCH_X86_64 = 0xC000003E
X32_SYSCALL_BIT = 0x40000000

PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36

SECCOMP_SET_MODE_FILTER = 1
SECCOMP_GET_NOTIF_SIZES = 3
SECCOMP_FILTER_FLAG_NEW_LISTENER = 1 << 3

SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ALLOW = 0x7FFF0000

SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1
SECCOMP_ADDFD_FLAG_SETFD = 1
SECCOMP_ADDFD_FLAG_SEND = 2


def _iowr(nr: int, size: int, read: bool = True) -> int:
    direction = 3 if read else 1  # _IOC_READ|_IOC_WRITE, or _IOC_WRITE
    return (direction << 30) | (size << 16) | (ord("!") << 8) | nr


#: struct seccomp_data: nr, arch, instruction_pointer, args[6]
DATA = struct.Struct("=iIQ6Q")
#: struct seccomp_notif: id, pid, flags, data
NOTIF = struct.Struct("=QII" + "iIQ6Q")
#: struct seccomp_notif_resp: id, val, error, flags
RESP = struct.Struct("=QqiI")
#: struct seccomp_notif_addfd: id, flags, srcfd, newfd, newfd_flags
ADDFD = struct.Struct("=QIIII")

IOCTL_NOTIF_RECV = _iowr(0, NOTIF.size)
IOCTL_NOTIF_SEND = _iowr(1, RESP.size)
IOCTL_NOTIF_ID_VALID = _iowr(2, 8, read=False)
IOCTL_NOTIF_ADDFD = _iowr(3, ADDFD.size, read=False)

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_ioctl = _libc.ioctl
_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_ioctl.restype = ctypes.c_int
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_prctl.restype = ctypes.c_int


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_vm_readv = _libc.process_vm_readv
_vm_writev = _libc.process_vm_writev
for _f in (_vm_readv, _vm_writev):
    _f.argtypes = (ctypes.c_int, ctypes.POINTER(_Iovec), ctypes.c_ulong,
                   ctypes.POINTER(_Iovec), ctypes.c_ulong, ctypes.c_ulong)
    _f.restype = ctypes.c_ssize_t


def _fail(what: str) -> OSError:
    err = ctypes.get_errno()
    return OSError(err, f"{what}: {os.strerror(err)}")


def supported() -> str | None:
    """None if this machine can run supervised programs, else why not."""
    if platform.machine() != "x86_64":
        return f"seccomp supervision is written for x86-64, not {platform.machine()}"
    rel = platform.release().split("-")[0].split(".")
    try:
        major, minor = int(rel[0]), int(rel[1])
    except (IndexError, ValueError):
        return None
    if (major, minor) < (5, 14):
        return f"Linux {platform.release()} is older than 5.14 (SECCOMP_ADDFD_FLAG_SEND)"
    return None


def check_sizes() -> None:
    """Compare our structures with the kernel's (SECCOMP_GET_NOTIF_SIZES)."""
    sizes = (ctypes.c_uint16 * 3)()
    if _syscall(_SYS_SECCOMP, SECCOMP_GET_NOTIF_SIZES, 0, ctypes.byref(sizes)) < 0:
        raise _fail("seccomp(SECCOMP_GET_NOTIF_SIZES)")
    notif, resp, data = sizes
    if data != DATA.size or notif < NOTIF.size or resp < RESP.size:
        raise OSError(errno.ENOSYS, f"unexpected seccomp structure sizes {tuple(sizes)}")


def no_new_privs() -> None:
    if _prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_NO_NEW_PRIVS)")


def set_child_subreaper() -> None:
    if _prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise _fail("prctl(PR_SET_CHILD_SUBREAPER)")


def install_filter(program: bytes) -> int:
    """Install a classic-BPF filter (8-byte instructions) on the calling thread and
    return the user-notification listener's descriptor (close-on-exec)."""
    count = len(program) // 8
    buf = ctypes.create_string_buffer(program, len(program))

    class _Fprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = _Fprog(count, ctypes.cast(buf, ctypes.c_void_p))
    fd = _syscall(_SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER,
                  ctypes.byref(prog))
    if fd < 0:
        raise _fail("seccomp(SECCOMP_SET_MODE_FILTER)")
    return fd


def pidfd_open(pid: int) -> int:
    fd = _syscall(_SYS_PIDFD_OPEN, pid, 0)
    if fd < 0:
        raise _fail(f"pidfd_open({pid})")
    return fd


def pidfd_getfd(pidfd: int, targetfd: int) -> int:
    fd = _syscall(_SYS_PIDFD_GETFD, pidfd, targetfd, 0)
    if fd < 0:
        raise _fail(f"pidfd_getfd({targetfd})")
    return fd


class Gone(Exception):
    """The notification went away (its thread was interrupted by a signal, or died)."""


class Notification:
    """One received notification: ``id``, ``pid`` (the calling thread), ``nr``, ``args``."""

    __slots__ = ("id", "pid", "nr", "arch", "args", "memo")

    def __init__(self, raw: bytes) -> None:
        nid, pid, _flags, nr, arch, _ip, *args = NOTIF.unpack_from(raw)
        self.id = nid
        self.pid = pid
        self.nr = nr
        self.arch = arch
        self.args = args
        self.memo: object = None  # the supervisor's lookup of args[0], once

    def __repr__(self) -> str:
        return f"<Notification {NAMES.get(self.nr, self.nr)} pid={self.pid} args={self.args}>"


class Listener:
    """A seccomp user-notification listener descriptor."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    def recv(self) -> Notification:
        """The next notification (blocks). OSError ENOENT if it went away meanwhile."""
        buf = ctypes.create_string_buffer(NOTIF.size + 64)  # zeroed, as the kernel wants
        if _ioctl(self.fd, IOCTL_NOTIF_RECV, buf) < 0:
            raise _fail("SECCOMP_IOCTL_NOTIF_RECV")
        return Notification(buf.raw)

    def valid(self, nid: int) -> bool:
        """Is the notification still waiting (its thread alive and not interrupted)?"""
        buf = ctypes.c_uint64(nid)
        return _ioctl(self.fd, IOCTL_NOTIF_ID_VALID, ctypes.byref(buf)) == 0

    def _send(self, nid: int, val: int, error: int, flags: int) -> bool:
        buf = ctypes.create_string_buffer(RESP.pack(nid, val, error, flags), RESP.size)
        if _ioctl(self.fd, IOCTL_NOTIF_SEND, buf) < 0:
            if ctypes.get_errno() == errno.ENOENT:
                return False  # interrupted (a signal) or the thread is gone
            raise _fail("SECCOMP_IOCTL_NOTIF_SEND")
        return True

    def reply(self, nid: int, val: int) -> bool:
        """The call returns ``val``. False if the notification no longer exists."""
        return self._send(nid, val, 0, 0)

    def fail(self, nid: int, err: int) -> bool:
        """The call fails with errno ``err``."""
        return self._send(nid, 0, -abs(err), 0)

    def cont(self, nid: int) -> bool:
        """The kernel runs the call as if it had not been intercepted."""
        return self._send(nid, 0, 0, SECCOMP_USER_NOTIF_FLAG_CONTINUE)

    def addfd(self, nid: int, srcfd: int, *, cloexec: bool = False, newfd: int | None = None,
              send: bool = False) -> int:
        """Put a copy of ``srcfd`` into the calling process (at ``newfd`` if given, SETFD);
        with ``send`` the call returns the new number at once (atomically). Returns the
        number; OSError ENOENT if the notification went away."""
        flags = (SECCOMP_ADDFD_FLAG_SEND if send else 0) | \
            (SECCOMP_ADDFD_FLAG_SETFD if newfd is not None else 0)
        fdflags = os.O_CLOEXEC if cloexec else 0
        buf = ctypes.create_string_buffer(
            ADDFD.pack(nid, flags, srcfd, newfd or 0, fdflags), ADDFD.size)
        n = _ioctl(self.fd, IOCTL_NOTIF_ADDFD, buf)
        if n < 0:
            raise _fail("SECCOMP_IOCTL_NOTIF_ADDFD")
        return n

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def read_memory(pid: int, addr: int, size: int) -> bytes:
    """``size`` bytes at ``addr`` in process ``pid`` (a thread id works too)."""
    if size <= 0:
        return b""
    buf = ctypes.create_string_buffer(size)
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), size)
    remote = _Iovec(addr, size)
    n = _vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        raise _fail("process_vm_readv")
    if n != size:
        raise OSError(errno.EFAULT, "Bad address")
    return buf.raw


def write_memory(pid: int, addr: int, data: bytes) -> None:
    if not data:
        return
    buf = ctypes.create_string_buffer(data, len(data))
    local = _Iovec(ctypes.cast(buf, ctypes.c_void_p), len(data))
    remote = _Iovec(addr, len(data))
    n = _vm_writev(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    if n < 0:
        raise _fail("process_vm_writev")
    if n != len(data):
        raise OSError(errno.EFAULT, "Bad address")
