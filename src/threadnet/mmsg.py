"""recvmmsg/sendmmsg through ctypes: many datagrams per system call.

A Python loop of ``recv_into`` + ``send`` pays the interpreter's call overhead and one
system call per frame in each direction. Here one ``recvmmsg`` fills up to ``nslots``
fixed slots, and each destination's frames are queued as iovecs that point into those
slots (no copy) and go out with one ``sendmmsg`` per destination per batch.

Only for 64-bit little-endian Linux (the struct layouts below); ``available()`` says
whether it can be used, and callers fall back to plain socket calls otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import struct
import sys

MSG_DONTWAIT = 0x40
MSG_WAITFORONE = 0x10000
_MSGHDR = 56  # struct msghdr on x86_64/aarch64
_MMSGHDR = 64  # struct mmsghdr: msghdr + unsigned msg_len, padded
_IOVEC = 16
IOV = struct.Struct("=QQ")  # struct iovec: base, length
_IOV = IOV
_HDR_IOV = struct.Struct("=QQ")  # msg_iov, msg_iovlen at offset 16 of msghdr

_libc = None


def available() -> bool:
    global _libc
    if _libc is False:
        return False
    if _libc is not None:
        return True
    ok = (sys.platform.startswith("linux") and struct.calcsize("P") == 8
          and sys.byteorder == "little")
    if ok:
        try:
            lib = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
            for name in ("recvmmsg", "sendmmsg"):
                fn = getattr(lib, name)
                fn.restype = ctypes.c_int
                fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int,
                               ctypes.c_void_p][: 5 if name == "recvmmsg" else 4]
            lib.connect.restype = ctypes.c_int
            lib.connect.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
            _libc = lib
            return True
        except (OSError, AttributeError):
            pass
    _libc = False
    return False


def _headers(count: int, iov_addr: int) -> ctypes.Array:
    """``count`` mmsghdrs, the i-th pointing at the i-th iovec of ``iov_addr``."""
    msgs = ctypes.create_string_buffer(count * _MMSGHDR)
    for i in range(count):
        _HDR_IOV.pack_into(msgs, i * _MMSGHDR + 16, iov_addr + i * _IOVEC, 1)
    return msgs


def disconnect(fd: int) -> bool:
    """Dissolve a datagram socket's association (``connect`` to AF_UNSPEC, which Python's
    ``connect`` cannot express for AF_UNIX); False where that cannot be done."""
    if not available():
        return False
    connect = _libc.connect  # type: ignore[union-attr]
    unspec = bytes(16)  # sa_family = AF_UNSPEC (0)
    return connect(fd, unspec, len(unspec)) == 0


class RecvBatch:
    """``nslots`` receive slots of ``slot_size`` bytes, filled by one recvmmsg."""

    def __init__(self, nslots: int = 64, slot_size: int = 1536) -> None:
        if not available():
            raise OSError(errno.ENOSYS, "recvmmsg is not available here")
        self.nslots = nslots
        self.slot_size = slot_size
        self._buf = ctypes.create_string_buffer(nslots * slot_size)
        base = ctypes.addressof(self._buf)
        self.addrs = [base + i * slot_size for i in range(nslots)]
        mv = memoryview(self._buf).cast("B")
        self.slots = [mv[i * slot_size:(i + 1) * slot_size] for i in range(nslots)]
        self._iov = ctypes.create_string_buffer(nslots * _IOVEC)
        for i in range(nslots):
            _IOV.pack_into(self._iov, i * _IOVEC, self.addrs[i], slot_size)
        self._msgs = _headers(nslots, ctypes.addressof(self._iov))
        self._msgs_addr = ctypes.addressof(self._msgs)
        lens = memoryview(self._msgs).cast("B").cast("I")
        self.lengths = lens  # message i's length is lengths[16 * i + 14]
        self._recvmmsg = _libc.recvmmsg  # type: ignore[union-attr]

    def recv(self, fd: int, flags: int = MSG_DONTWAIT) -> int:
        """Receive up to ``nslots`` datagrams (by default without blocking; pass
        ``MSG_WAITFORONE`` to wait for the first). Returns how many (0 = none)."""
        n = self._recvmmsg(fd, self._msgs_addr, self.nslots, flags, None)
        if n < 0:
            err = ctypes.get_errno()
            if err in (errno.EAGAIN, errno.EINTR):
                return 0
            raise OSError(err, errno.errorcode.get(err, str(err)))
        return n


class SendQueue:
    """Frames queued for one socket as iovecs (addresses + lengths), sent by one sendmmsg."""

    def __init__(self, capacity: int = 128) -> None:
        if not available():
            raise OSError(errno.ENOSYS, "sendmmsg is not available here")
        self.capacity = capacity
        self.count = 0
        self.dropped = 0
        self._unsent = (0, 0)
        self._iov = ctypes.create_string_buffer(capacity * _IOVEC)
        self.iov = memoryview(self._iov).cast("B")  # for callers that inline ``add``
        self._msgs = _headers(capacity, ctypes.addressof(self._iov))
        self._msgs_addr = ctypes.addressof(self._msgs)
        self._sendmmsg = _libc.sendmmsg  # type: ignore[union-attr]

    def send_blocking(self, fd: int) -> int:
        """Send everything queued, waiting while the peer's queue is full; returns the
        number sent (a generator's back-pressure; a switch never blocks on a client)."""
        count, self.count = self.count, 0
        sent = 0
        while sent < count:
            n = self._sendmmsg(fd, self._msgs_addr + sent * _MMSGHDR, count - sent, 0)
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                raise OSError(err, errno.errorcode.get(err, str(err)))
            sent += n
        return sent

    def add(self, addr: int, length: int) -> None:
        _IOV.pack_into(self._iov, self.count * _IOVEC, addr, length)
        self.count += 1

    def flush(self, fd: int) -> int:
        """Send what is queued without blocking; returns 0, or an errno for a fatal error
        (peer gone). Datagrams the peer cannot take now (EAGAIN) stay listed by
        ``unsent()`` until the next ``add``; the caller copies or drops them."""
        count = self.count
        self.count = 0
        self._unsent = (count, count)
        sent = 0
        while sent < count:
            n = self._sendmmsg(fd, self._msgs_addr + sent * _MMSGHDR, count - sent, MSG_DONTWAIT)
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                if err in (errno.EAGAIN, errno.ENOBUFS):
                    self._unsent = (sent, count)
                    return 0
                self.dropped += count - sent
                return err
            sent += n
        return 0

    def unsent(self) -> list[bytes]:
        """Copies of the frames the last ``flush`` could not send."""
        start, end = self._unsent
        self._unsent = (0, 0)
        out = []
        for i in range(start, end):
            addr, length = _IOV.unpack_from(self._iov, i * _IOVEC)
            out.append(ctypes.string_at(addr, length))
        return out
