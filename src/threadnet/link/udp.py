"""``udp://[srcaddr:]sport->host:dport``: one raw Ethernet frame per UDP datagram.

The point-to-point UDP cable of vdeplug4's udp plugin: no header, no handshake. We bind
``srcaddr:sport`` (any address of the destination's family by default), send every
frame to ``host:dport`` and accept datagrams only from ``host:dport``.

Addresses: IPv4, host names, and IPv6 either in brackets (``[::1]:3000``) or bare as
vdeplug4 writes them (``::1:3000``, the port being after the last colon).
The shell needs quotes around the URL because of ``>``: ``'udp://2000->10.0.0.2:2000'``.
"""

from __future__ import annotations

import errno
import socket

from threadnet.errors import LinkError, URLError
from threadnet.link import Link, require_no_inner, unquote
from threadnet.link.batch import DatagramSender
from threadnet.wire import stream as wire_stream

RECV_BUF = 65536


class UdpLink(DatagramSender, Link):
    """Frames as UDP datagrams between a local address and one remote address.

    The socket is not connected, so the local end keeps working if the peer restarts;
    datagrams from any other source are dropped and counted in ``foreign``. A frame the
    kernel refuses (no route, too big, a firewall) is lost, as on a wire, and counted in
    ``drops``. When the socket's send buffer is full (EAGAIN: its datagrams wait in a
    queue towards a slow device), a link driven by a loop queues frames in its bounded
    backlog and the loop sends them when there is room; a link with no loop waits
    briefly, then drops (see ``link/backlog.py``).
    """

    # What vdeplug4 peers read into their buffer; UDP itself would carry 65507.
    max_frame = wire_stream.MAX_RECORD
    max_frame_known = True

    def __init__(self, remote: tuple[str, int], local: tuple[str | None, int] = (None, 0),
                 *, url: str = "") -> None:
        super().__init__()
        host, port = remote
        self.url = url or f"udp://{local[1]}->{host}:{port}"
        self.drops = 0
        self.foreign = 0
        family, remote_addr = _resolve(host, port, 0, self.url, "destination")
        self.remote_addr = remote_addr
        self.family = family
        src_host, src_port = local
        if src_host is None:
            bind_addr: tuple = ("::", src_port, 0, 0) if family == socket.AF_INET6 else ("0.0.0.0", src_port)
        else:
            _, bind_addr = _resolve(src_host, src_port, family, self.url, "source",
                                    passive=True)
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.bind(bind_addr)
            self._sock.setblocking(False)
        except OSError as exc:
            self._sock.close()
            raise LinkError(exc.errno, f"{self.url}: cannot bind {_fmt(bind_addr)}: "
                            f"{exc.strerror}") from exc
        self.local_addr = self._sock.getsockname()
        self._peer_key = _key(family, remote_addr)
        self._dest = remote_addr

    def fileno(self) -> int:
        return self._sock.fileno()

    # what the datagram sender needs: only a full send buffer waits (ENOBUFS is a device
    # queue's drop); every error but a closed socket loses one frame, as on a wire
    _full_errnos = (errno.EAGAIN,)

    def _lost(self, err: int) -> bool:
        return err not in (errno.EBADF, errno.ENOTSOCK)

    def _gone(self, exc: OSError) -> LinkError:
        return LinkError(exc.errno, f"{self.url}: socket is gone")

    def _dgram_socket(self) -> socket.socket:
        return self._sock

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self._send_frame(frame)

    def _recv(self) -> bytes:
        try:
            frame, addr = self._sock.recvfrom(RECV_BUF)
        except BlockingIOError:
            raise
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                return b""  # an ICMP error about an earlier datagram; not a frame
            raise LinkError(exc.errno, f"{self.url}: receive failed: {exc.strerror}") from exc
        # Fast path: the kernel formats the address as getaddrinfo did.
        if addr[:2] != self.remote_addr[:2] and _key(self.family, addr) != self._peer_key:
            self.foreign += 1
            return b""
        return frame

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.close()


def _key(family: int, addr: tuple) -> tuple[bytes, int]:
    """(packed address, port): compares equal whatever the text form of the address."""
    host = addr[0].split("%", 1)[0]
    try:
        return socket.inet_pton(family, host), addr[1]
    except OSError:
        return host.encode(), addr[1]


def _fmt(addr: tuple) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


def _resolve(host: str, port: int, family: int, url: str, what: str,
             passive: bool = False) -> tuple[int, tuple]:
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM, 0,
                                   socket.AI_PASSIVE if passive else 0)
    except socket.gaierror as exc:
        raise URLError(f"{url}: cannot resolve {what} address {host!r}: {exc.strerror}") from None
    if not infos:  # pragma: no cover - getaddrinfo raises instead
        raise URLError(f"{url}: no {what} address for {host!r}")
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


def _split_hostport(text: str, url: str, what: str, need_host: bool) -> tuple[str | None, int]:
    """``host:port``, ``[v6]:port``, bare ``v6:port`` or (source only) ``port``."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1:].startswith(":"):
            raise URLError(f"{url}: bad {what} {text!r}: expected [ADDRESS]:PORT")
        host: str | None = text[1:end]
        port_text = text[end + 2:]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
    else:
        host, port_text = None, text
    if not host:
        if need_host:
            raise URLError(f"{url}: {what} {text!r} needs a host, e.g. 10.0.0.2:2000")
        host = None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise URLError(f"{url}: bad {what} port {port_text!r}: expected a number 0-65535")
    port = int(port_text)
    if need_host and port == 0:
        raise URLError(f"{url}: destination port must not be 0")
    return host, port


def parse_udp(url: str, rest: str) -> tuple[tuple[str | None, int], tuple[str, int]]:
    """Parse ``[srcaddr:]sport->host:dport`` into ((srcaddr or None, sport), (host, dport))."""
    text = unquote(rest)
    if text.count("->") != 1:
        raise URLError(f"{url}: expected udp://[SRCADDR:]SPORT->HOST:DPORT, "
                       "e.g. udp://2000->10.0.0.2:2000")
    src, dst = text.split("->")
    local = _split_hostport(src, url, "source", need_host=False)
    host, port = _split_hostport(dst, url, "destination", need_host=True)
    assert host is not None
    return local, (host, port)


def open_udp(url: str, rest: str, inner: str | None) -> UdpLink:
    """``udp://[srcaddr:]sport->host:dport``."""
    require_no_inner(url, inner)
    local, remote = parse_udp(url, rest)
    return UdpLink(remote, local, url=url)
