"""``tap://ifname[offload]``: a Linux tap interface, one frame per read/write on /dev/net/tun.

Opens (creating if needed) the tap ``ifname`` with ``IFF_TAP | IFF_NO_PI``, as
vdeplug4's tap plugin does, so each read/write is exactly one Ethernet frame without a
packet-information prefix. A tap created here is not persistent: it disappears when
the link closes. The interface is left down; bring it up with ``ip link set IF up``.

``[offload]`` also opens it with ``IFF_VNET_HDR``: every frame then travels behind a
virtio-net header (``wire/vnet.py``), as it does for QEMU's virtio-net. That alone
changes nothing a reader sees. A threadnet stack on such a link turns the kernel's
offloads on (``enable_offload``): the kernel then hands it TCP segments of up to 64 KiB
with checksums it vouches for, and takes segments as large, which it cuts to the MTU
itself. A reader other than a stack still gets ordinary frames from ``recv``: a large
segment is cut up and a partial checksum completed here.

The kernel takes a frame written to a tap at once, unless the tap's send buffer is
limited (``TUNSETSNDBUF``, as QEMU sets it) and its frames still wait somewhere (a
bridge port's slow qdisc): then a write fails with EAGAIN. A link driven by a loop then
queues frames in its bounded backlog, which the loop writes, one frame per write, when
the descriptor is writable again; a link with no loop waits briefly, then drops (see
``link/backlog.py``).
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from collections import deque

from threadnet.errors import FrameError, LinkError, URLError
from threadnet.link import Link, parse_options, require_no_inner, split_bracket, unquote
from threadnet.link.backlog import BackloggedLink
from threadnet.wire import vnet

TUN_DEVICE = "/dev/net/tun"
TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
TUN_F_CSUM = 0x01  # the reader takes partial checksums
TUN_F_TSO4 = 0x02  # ... and TCP/IPv4 segments larger than the MTU
TUN_F_TSO6 = 0x04  # ... and TCP/IPv6 ones
IFNAMSIZ = 16
READ_SIZE = 65536
# a segment the kernel did not cut up: 64 KiB of IP plus the Ethernet and virtio-net headers
OFFLOAD_READ_SIZE = 65536 + 14 + vnet.HEADER_LEN + 64
_IFREQ = struct.Struct("16sH22x")  # struct ifreq: name, then the flags of the union


class TapLink(BackloggedLink, Link):
    """A tap interface. ``ifname`` is the kernel's name for it (after ``%d`` expansion).

    Frames the kernel refuses (the interface is down, a malformed frame) are lost and
    counted in ``drops``, and so are those a full backlog has no room for. With
    ``offload`` the tap carries virtio-net headers (see the module's text).
    """

    def __init__(self, ifname: str, *, url: str = "", offload: bool = False,
                 fd: int | None = None) -> None:
        """``fd``: adopt a descriptor already attached to the tap ``ifname`` (opened
        without ``IFF_VNET_HDR``), e.g. one made inside another network namespace and
        passed over SCM_RIGHTS (``threadnet ns``); the link closes it."""
        super().__init__()
        self.url = url or f"tap://{ifname}"
        name = ifname.encode()
        if not name or len(name) >= IFNAMSIZ or "/" in ifname or any(c.isspace() for c in ifname):
            raise URLError(f"{self.url}: bad interface name {ifname!r} "
                           f"(1-{IFNAMSIZ - 1} characters, no '/' or spaces)")
        self.drops = 0
        #: opened with virtio-net headers (``[offload]``)
        self.vnet_hdr = offload
        #: the kernel's offloads are on: it may send large segments and partial checksums
        self.offload = False
        #: frames from the kernel that could not be used (a malformed virtio-net header)
        self.rx_errors = 0
        #: large segments ``recv`` cut up for an ordinary reader
        self.rx_segmented = 0
        self._pending: deque[bytes | bytearray] = deque()
        if fd is not None:
            if offload:
                raise LinkError(errno.EINVAL, f"{self.url}: an adopted tap has no [offload]")
            self.ifname = ifname
            os.set_blocking(fd, False)
            self._fd = fd
            return
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
            flags = IFF_TAP | IFF_NO_PI | (IFF_VNET_HDR if offload else 0)
            ifr = fcntl.ioctl(fd, TUNSETIFF, _IFREQ.pack(name, flags))
            if offload:
                fcntl.ioctl(fd, TUNSETVNETHDRSZ, struct.pack("i", vnet.HEADER_LEN))
        except OSError as exc:
            os.close(fd)
            raise LinkError(exc.errno, f"{self.url}: {_explain(exc, ifname)}") from exc
        self.ifname = _IFREQ.unpack(ifr)[0].rstrip(b"\0").decode()
        os.set_blocking(fd, False)
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def enable_offload(self) -> None:
        """Let the kernel send (and take) TCP segments of up to 64 KiB and partial
        checksums: for a reader that uses ``recv_offload`` and ``send_offload``."""
        if not self.vnet_hdr:
            raise LinkError(errno.EOPNOTSUPP, f"{self.url}: opened without [offload]")
        try:
            fcntl.ioctl(self._fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
        except OSError as exc:
            raise LinkError(exc.errno, f"{self.url}: cannot turn offloads on: {exc.strerror}") \
                from exc
        self.offload = True

    def send_offload(self, header: bytes, frame: bytes | bytearray | memoryview) -> None:
        """Send ``frame`` behind the virtio-net ``header`` (``vnet.pack_header``): a large
        TCP segment for the kernel to cut up, or a frame whose checksum it completes."""
        if self.closed:
            raise LinkError(f"{self.url}: link is closed")
        parts = (header, frame)
        if not self._send_or_queue(parts):
            self._send_waiting((parts,))

    def recv_offload(self) -> tuple[bytes | bytearray, tuple[int, int, int, int, int, int]]:
        """One frame as the kernel sent it and its virtio-net header fields (``flags,
        gso_type, hdr_len, gso_size, csum_start, csum_offset``); BlockingIOError when none
        waits. A read too short for the header counts in ``rx_errors`` and gives b""."""
        if self._pending:
            return self._pending.popleft(), _PLAIN_FIELDS
        data = self._read(OFFLOAD_READ_SIZE)
        if len(data) < vnet.HEADER_LEN:
            self.rx_errors += 1
            return b"", _PLAIN_FIELDS
        return memoryview(data)[vnet.HEADER_LEN:], vnet.unpack_header(data)

    def wait_readable(self, timeout: float | None) -> bool:
        if self._pending:
            return True
        return super().wait_readable(timeout)

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        data = (vnet.PLAIN, frame) if self.vnet_hdr else frame
        if not self._send_or_queue(data):
            self._send_waiting((data,))

    # -- the backlog's part: one frame per write, a virtio-net header joined to its frame
    def _try_send(self, data: tuple | bytes | bytearray | memoryview) -> bool:  # type: ignore[override]
        try:
            if type(data) is tuple:
                os.writev(self._fd, data)
            else:
                os.write(self._fd, data)
            return True
        except BlockingIOError:
            return False  # the tap's send buffer is full
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise LinkError(exc.errno, f"{self.url}: tap is closed") from exc
            # EIO (interface down), EINVAL (bad frame): lost, as on a wire.
            self.drops += 1
            return True

    @staticmethod
    def _copy(data: tuple | bytes | bytearray | memoryview) -> bytes:  # type: ignore[override]
        return b"".join(data) if type(data) is tuple else bytes(data)

    def _recv(self) -> bytes | bytearray:
        if not self.vnet_hdr:
            return self._read(READ_SIZE)
        if self._pending:
            return self._pending.popleft()
        data = self._read(OFFLOAD_READ_SIZE)
        try:
            flags, gso_type, _, gso_size, start, offset = vnet.unpack_header(data)
            frame: bytes | bytearray = data[vnet.HEADER_LEN:]
            if gso_type != vnet.GSO_NONE:
                # an ordinary reader gets ordinary frames: cut the segment up here
                first, *rest = vnet.segment(frame, gso_type, gso_size)
                self.rx_segmented += 1
                self._pending.extend(rest)
                return first
            if flags & vnet.F_NEEDS_CSUM:
                frame = bytearray(frame)
                vnet.complete_checksum(frame, start, offset)
            return frame
        except FrameError:
            self.rx_errors += 1
            return b""  # ignored, as a stranger's datagram is

    def _read(self, size: int) -> bytes:
        try:
            return os.read(self._fd, size)
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


_PLAIN_FIELDS = (0, vnet.GSO_NONE, 0, 0, 0, 0)


def open_tap(url: str, rest: str, inner: str | None) -> TapLink:
    """``tap://ifname[offload]``."""
    require_no_inner(url, inner)
    path, options = split_bracket(rest)
    opts = parse_options(options, ("offload",), url)
    name = unquote(path)
    if not name:
        raise URLError(f"{url!r}: tap:// needs an interface name, e.g. tap://tap0")
    offload = opts.get("offload")
    if offload is not None and offload.lower() not in _ON + _OFF:
        raise URLError(f"{url!r}: offload takes on or off, not {offload!r}")
    return TapLink(name, url=url, offload=offload is not None and offload.lower() in _ON)


_ON = ("", "on", "1", "yes")
_OFF = ("off", "0", "no")
