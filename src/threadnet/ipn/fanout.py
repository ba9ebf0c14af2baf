"""Many datagrams per system call for IPN members (``sendmmsg`` through ``threadnet.mmsg``).

``Fanout``: one message to many addresses from one (bound) socket, one call: a switch
bus's floods, whose receivers learn from the sender's address. ``Batch``: many messages
to one connected socket, one call: a broadcast bus's member sends its batch to each
member's socket so (each receiver wakes once for the lot).
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import struct
from typing import Any

from threadnet import mmsg

MSGHDR = 64  # struct mmsghdr on 64-bit Linux
_SUN = struct.Struct("=H")
_LEN = struct.Struct("=Q")


def _send_all(sendmmsg: Any, fd: int, base: int, start: int, count: int) -> tuple[int, int]:
    """``sendmmsg`` the prepared headers ``start``..``count`` (at ``base``) without
    waiting: (index reached, errno), errno 0 when all went."""
    while start < count:
        n = sendmmsg(fd, base + start * MSGHDR, count - start, mmsg.MSG_DONTWAIT)
        if n < 0:
            err = ctypes.get_errno()
            if err == errno.EINTR:
                continue
            return start, err
        start += n
    return count, 0


class Fanout:
    """One ``sendmmsg`` that writes the same message to many addresses."""

    def __init__(self, addrs: list[str], bufsize: int) -> None:
        n = len(addrs)
        self.count = n
        self._names = ctypes.create_string_buffer(max(1, n) * 112)
        self.buf = ctypes.create_string_buffer(bufsize)
        self.view = memoryview(self.buf).cast("B")
        self._iov = ctypes.create_string_buffer(16)
        mmsg.IOV.pack_into(self._iov, 0, ctypes.addressof(self.buf), 0)
        self._msgs = ctypes.create_string_buffer(max(1, n) * MSGHDR)
        names = ctypes.addressof(self._names)
        iov = ctypes.addressof(self._iov)
        for i, addr in enumerate(addrs):
            raw = os.fsencode(addr)
            _SUN.pack_into(self._names, i * 112, socket.AF_UNIX)
            self._names[i * 112 + 2:i * 112 + 2 + len(raw)] = raw
            struct.pack_into("=QI", self._msgs, i * MSGHDR, names + i * 112, 2 + len(raw) + 1)
            struct.pack_into("=QQ", self._msgs, i * MSGHDR + 16, iov, 1)
        self.base = ctypes.addressof(self._msgs)
        self._sendmmsg = mmsg._libc.sendmmsg  # type: ignore[union-attr]

    def load(self, msg: bytes | bytearray | memoryview) -> None:
        n = len(msg)
        self.view[:n] = msg
        struct.pack_into("=Q", self._iov, 8, n)

    def send(self, fd: int, start: int) -> tuple[int, int]:
        """Send the loaded message to addresses ``start``...; (index reached, errno) where
        errno is 0 when all went, else the error of the address at that index."""
        return _send_all(self._sendmmsg, fd, self.base, start, self.count)


class _Slots:
    """``slots`` message buffers of ``SLOT`` bytes, each with its iovec, for sendmmsg."""

    SLOT = 2048

    def __init__(self, slots: int) -> None:
        self.slots = slots
        size = self.SLOT
        self.buf = ctypes.create_string_buffer(slots * size)
        self.view = memoryview(self.buf).cast("B")
        base = ctypes.addressof(self.buf)
        self._iov = ctypes.create_string_buffer(slots * 16)
        for j in range(slots):
            mmsg.IOV.pack_into(self._iov, j * 16, base + j * size, 0)

    def load(self, msgs: list) -> None:
        """Copy ``msgs`` into the first slots and set their lengths."""
        size = self.SLOT
        view = self.view
        iov = self._iov
        for j, msg in enumerate(msgs):
            n = len(msg)
            view[j * size:j * size + n] = msg
            _LEN.pack_into(iov, j * 16 + 8, n)


class _BatchFan(_Slots):
    """Up to ``slots`` messages (of up to ``SLOT`` bytes) to each of many addresses: one
    ``sendmmsg`` per address carries them all (its receiver wakes once for the lot)."""

    def __init__(self, addrs: list[str], slots: int) -> None:
        n = len(addrs)
        super().__init__(slots)
        self._names = ctypes.create_string_buffer(max(1, n) * 112)
        self._msgs = ctypes.create_string_buffer(max(1, n) * slots * MSGHDR)
        names = ctypes.addressof(self._names)
        iov = ctypes.addressof(self._iov)
        hdr = struct.Struct("=QI4xQQ")
        for d, addr in enumerate(addrs):
            raw = os.fsencode(addr)
            _SUN.pack_into(self._names, d * 112, socket.AF_UNIX)
            self._names[d * 112 + 2:d * 112 + 2 + len(raw)] = raw
            for j in range(slots):
                hdr.pack_into(self._msgs, (d * slots + j) * MSGHDR, names + d * 112,
                              2 + len(raw) + 1, iov + j * 16, 1)
        self.base = ctypes.addressof(self._msgs)
        self._sendmmsg = mmsg._libc.sendmmsg  # type: ignore[union-attr]

    def send(self, fd: int, d: int, start: int, count: int) -> tuple[int, int]:
        """Send the loaded messages ``start``..``count`` to address ``d``: (index reached,
        errno), errno 0 when all went."""
        return _send_all(self._sendmmsg, fd, self.base + d * self.slots * MSGHDR, start, count)


class Batch(_Slots):
    """Up to ``slots`` messages (of up to ``SLOT`` bytes each) for one ``sendmmsg`` on a
    connected socket: every member's socket gets the same headers."""

    def __init__(self, slots: int) -> None:
        super().__init__(slots)
        self._msgs = mmsg._headers(slots, ctypes.addressof(self._iov))
        self.base = ctypes.addressof(self._msgs)
        self._sendmmsg = mmsg._libc.sendmmsg  # type: ignore[union-attr]

    def send(self, fd: int, start: int, count: int) -> tuple[int, int]:
        """Send the loaded messages ``start``..``count`` on ``fd``: (index reached, errno),
        errno 0 when all went."""
        base = self.base
        while start < count:
            n = self._sendmmsg(fd, base + start * MSGHDR, count - start, mmsg.MSG_DONTWAIT)
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                return start, err
            start += n
        return count, 0
