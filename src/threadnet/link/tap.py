"""``tap://ifname``: a Linux tap interface, one frame per read/write on /dev/net/tun.

Opens (creating if needed) the tap ``ifname`` with ``IFF_TAP | IFF_NO_PI``, as
vdeplug4's tap plugin does, so each read/write is exactly one Ethernet frame without a
packet-information prefix. A tap created here is not persistent: it disappears when
the link closes. The interface is left down; bring it up with ``ip link set IF up``.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct

from threadnet.errors import LinkError, URLError
from threadnet.link import Link, require_no_inner, unquote

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFNAMSIZ = 16
READ_SIZE = 65536
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then the flags of the union


class TapLink(Link):
    """A tap interface. ``ifname`` is the kernel's name for it (after ``%d`` expansion).

    Frames the kernel will not take now are dropped and counted in ``drops``.
    """

    def __init__(self, ifname: str, *, url: str = "") -> None:
        super().__init__()
        self.url = url or f"tap://{ifname}"
        name = ifname.encode()
        if not name or len(name) >= IFNAMSIZ or "/" in ifname or any(c.isspace() for c in ifname):
            raise URLError(f"{self.url}: bad interface name {ifname!r} "
                           f"(1-{IFNAMSIZ - 1} characters, no '/' or spaces)")
        self.drops = 0
        try:
            fd = os.open(TUN_DEVICE, os.O_RDWR | os.O_CLOEXEC)
        except PermissionError:
            raise LinkError(errno.EACCES, f"{self.url}: permission denied opening {TUN_DEVICE} "
                            "(needs root or CAP_NET_ADMIN)") from None
        except FileNotFoundError:
            raise LinkError(errno.ENOENT, f"{self.url}: no {TUN_DEVICE} "
                            "(is the tun module loaded?)") from None
        except OSError as exc:
            raise LinkError(exc.errno, f"{self.url}: cannot open {TUN_DEVICE}: {exc.strerror}") from exc
        try:
            ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name, IFF_TAP | IFF_NO_PI))
        except OSError as exc:
            os.close(fd)
            raise LinkError(exc.errno, f"{self.url}: {_explain(exc, ifname)}") from exc
        self.ifname = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
        os.set_blocking(fd, False)
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        try:
            os.write(self._fd, frame)
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise LinkError(exc.errno, f"{self.url}: tap is closed") from exc
            # EAGAIN (queue full), EIO (interface down), EINVAL (bad frame): lost, as on a wire.
            self.drops += 1

    def _recv(self) -> bytes:
        try:
            return os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            raise
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: read failed: {exc.strerror}") from exc

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._fd)


def _explain(exc: OSError, ifname: str) -> str:
    if exc.errno == errno.EPERM:
        return f"permission denied creating tap {ifname} (needs root or CAP_NET_ADMIN)"
    if exc.errno == errno.EBUSY:
        return f"tap {ifname} is already in use by another process"
    if exc.errno == errno.EINVAL:
        return f"cannot attach to {ifname}: it exists and is not a tap (or the name is invalid)"
    return f"cannot create tap {ifname}: {exc.strerror}"


def open_tap(url: str, rest: str, inner: str | None) -> TapLink:
    """``tap://ifname``."""
    require_no_inner(url, inner)
    name = unquote(rest)
    if not name:
        raise URLError(f"{url!r}: tap:// needs an interface name, e.g. tap://tap0")
    return TapLink(name, url=url)
