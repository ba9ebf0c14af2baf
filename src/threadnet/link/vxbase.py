"""What ``vxvde://`` and ``vxlan://`` share: vdeplug4's URL syntax for them, the table of
learned endpoints, and sending VXLAN-encapsulated frames through a transmit backlog.

URL syntax (vdeplug4's ``vde_parseparms``): ``ADDRESS/opt=value/opt/...``. The address
is everything up to the first unquoted ``/`` (empty: the plugin's default group); each
option name may be abbreviated to any prefix, and the first option in the plugin's own
order that starts with it wins (so ``v`` is ``vni``); an option without ``=`` has the
empty value; quotes, backslashes and ``%XX`` protect characters as everywhere in VNL.
We add two things vdeplug4 leaves to getaddrinfo: an IPv6 address may be written in
brackets, and a bad value is an error that says which option and why, not a silent
default.

The learning table (vdeplug4's ``vde_hashtable``): a frame's source MAC maps to the UDP
address it came from; a frame to a known unicast MAC goes to that address alone, every
other frame (broadcast, multicast, unknown) to the group. An entry older than
``expiretime`` seconds is not used; the table holds at most ``hashsize`` MACs (rounded up
to a power of two as vdeplug4 does; 0 turns learning off), forgetting the
least recently refreshed one when full.
"""

from __future__ import annotations

import errno
import grp
import ipaddress
import os
import socket
import struct
import time
from collections.abc import Callable

from threadnet.errors import LinkError, URLError
from threadnet.link import Link, _split_unquoted, unquote
from threadnet.link.backlog import BackloggedLink, Frame
from threadnet.wire import vxlan as wire_vxlan

DEFAULT_GROUP4 = "239.0.0.1"
DEFAULT_GROUP6 = "ff05:56de::1"
DEFAULT_HASHSIZE = 1024
DEFAULT_EXPIRE = 128
ETH_HEADER = 14
RECV_BUF = 65536

_MREQN = struct.Struct("=4s4si")  # struct ip_mreqn: group, local address, ifindex
_MREQ6 = struct.Struct("=16sI")  # struct ipv6_mreq: group, ifindex


# -- URL -------------------------------------------------------------------------------
def parse_url(url: str, rest: str, tags: tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """``ADDRESS/opt=val/...`` into (address, {option: value}) as vdeplug4 reads it."""
    parts = _split_unquoted(rest, "/")
    address = unquote(parts[0]).strip()
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    opts: dict[str, str] = {}
    for item in parts[1:]:
        item = unquote(item)
        key, eq, value = item.partition("=")
        if not key:
            continue  # "//" or "/=x": vdeplug4 skips an empty name
        tag = next((t for t in tags if t.startswith(key)), None)
        if tag is None:
            raise URLError(f"{url}: unknown option {key!r} (known: {', '.join(tags)})")
        opts[tag] = value if eq else ""
    return address, opts


def number(url: str, name: str, text: str, lo: int, hi: int) -> int:
    """A decimal option value in [lo, hi]."""
    t = text.strip()
    if not t.isdigit() or not lo <= int(t) <= hi:
        raise URLError(f"{url}: bad {name} {text!r}: expected a number {lo}-{hi}")
    return int(t)


def port_number(url: str, text: str) -> int:
    """``port=``: a number or a UDP service name (vdeplug4 hands it to getaddrinfo)."""
    t = text.strip()
    if t.isdigit():
        return number(url, "port", t, 1, 65535)
    try:
        return socket.getservbyname(t, "udp")
    except OSError:
        raise URLError(f"{url}: bad port {text!r}: expected a number 1-65535 or a UDP "
                       "service name") from None


def vni_number(url: str, name: str, text: str) -> int:
    """``vni=``/``grp=`` as vdeplug4's ``vde_grnam2gid``: a number, a group name (its
    gid), or empty (the effective gid); it must fit in 24 bits."""
    t = text.strip()
    if not t:
        value = os.getegid()
    elif t.isdigit():
        value = int(t)
    else:
        try:
            value = grp.getgrnam(t).gr_gid
        except KeyError:
            raise URLError(f"{url}: bad {name} {text!r}: neither a number nor a group "
                           "name") from None
    if value > wire_vxlan.VNI_MAX:
        raise URLError(f"{url}: bad {name} {text!r}: a VNI has 24 bits "
                       f"(0-{wire_vxlan.VNI_MAX})")
    return value


def size_number(url: str, name: str, text: str) -> int:
    """A size with vdeplug4's suffixes: k, M, G (powers of 1024)."""
    t = text.strip()
    mult = 1
    if t[-1:] in ("k", "K", "m", "M", "g", "G"):
        mult = 1 << {"k": 10, "m": 20, "g": 30}[t[-1].lower()]
        t = t[:-1]
    if not t.isdigit():
        raise URLError(f"{url}: bad {name} {text!r}: expected a size, e.g. 4M")
    return int(t) * mult


def interface_index(url: str, name: str) -> int:
    try:
        return socket.if_nametoindex(name)
    except OSError:
        raise URLError(f"{url}: bad if {name!r}: no such network interface") from None


def common_options(url: str, address: str, opts: dict[str, str], default_port: int
                   ) -> dict[str, object]:
    """Options both schemes have: port, ttl, rcvbuf, v4/v6, hashsize, expiretime, if."""
    out: dict[str, object] = {}
    out["port"] = port_number(url, opts["port"]) if "port" in opts else default_port
    out["ttl"] = number(url, "ttl", opts["ttl"], 0, 255) if "ttl" in opts else None
    out["rcvbuf"] = size_number(url, "rcvbuf", opts["rcvbuf"]) if "rcvbuf" in opts else None
    v4, v6 = "v4" in opts, "v6" in opts
    out["family"] = (socket.AF_INET if v4 and not v6 else
                     socket.AF_INET6 if v6 and not v4 else socket.AF_UNSPEC)
    if "hashsize" in opts:
        n = number(url, "hashsize", opts["hashsize"], 0, 1 << 24)
        out["hashsize"] = 0 if n == 0 else 1 << (n - 1).bit_length()
    else:
        out["hashsize"] = DEFAULT_HASHSIZE
    expire = DEFAULT_EXPIRE
    if "expiretime" in opts:
        t = opts["expiretime"].strip()
        if not t.lstrip("-").isdigit():
            raise URLError(f"{url}: bad expiretime {opts['expiretime']!r}: expected seconds")
        expire = int(t) if int(t) > 0 else DEFAULT_EXPIRE  # vdeplug4: <= 0 is the default
    out["expire"] = expire
    out["ifindex"] = interface_index(url, opts["if"]) if opts.get("if") else 0
    out["address"] = address or (DEFAULT_GROUP6 if v6 else DEFAULT_GROUP4)
    return out


def resolve(url: str, host: str, port: int, family: int) -> tuple[int, tuple]:
    """The first address getaddrinfo gives for ``host`` (as vdeplug4 takes the first that
    works; a numeric group has exactly one)."""
    try:
        infos = socket.getaddrinfo(host, port, family, socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise URLError(f"{url}: cannot resolve {host!r}: {exc.strerror}") from None
    fam, _, _, _, sockaddr = infos[0]
    return fam, sockaddr


def is_multicast(addr: tuple) -> bool:
    return ipaddress.ip_address(addr[0].split("%", 1)[0]).is_multicast


# -- sockets ---------------------------------------------------------------------------
def join_group(sock: socket.socket, family: int, group: tuple, ifindex: int, url: str) -> None:
    try:
        if family == socket.AF_INET:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                            _MREQN.pack(socket.inet_aton(group[0]), bytes(4), ifindex))
        else:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP,
                            _MREQ6.pack(socket.inet_pton(socket.AF_INET6, group[0].split("%")[0]),
                                        ifindex))
    except OSError as exc:
        hint = ""
        if exc.errno == errno.ENODEV:
            hint = (" (no interface routes the group: add a route, e.g. 'ip route add "
                    "224.0.0.0/4 dev eth0', or name one with /if=IFACE)")
        raise LinkError(exc.errno, f"{url}: cannot join multicast group {group[0]}: "
                        f"{exc.strerror}{hint}") from exc


def set_multicast_out(sock: socket.socket, family: int, ifindex: int, ttl: int | None,
                      loop: bool) -> None:
    """Multicast TTL (hops), loopback and, with ``ifindex``, the outgoing interface."""
    if family == socket.AF_INET:
        if ttl is not None:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, ttl)
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, int(loop))
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                            _MREQN.pack(bytes(4), bytes(4), ifindex))
    else:
        if ttl is not None:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, ttl)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, int(loop))
        if ifindex:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)


def bind_or_fail(sock: socket.socket, addr: tuple, url: str, what: str) -> None:
    try:
        sock.bind(addr)
    except OSError as exc:
        raise LinkError(exc.errno, f"{url}: cannot bind the {what} socket to "
                        f"{fmt(addr)}: {exc.strerror}") from exc


def fmt(addr: tuple) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"


# -- the learning table ----------------------------------------------------------------
class MacTable:
    """Source MAC -> the UDP address it was last seen from, with expiry and a size bound."""

    def __init__(self, size: int, expire: float) -> None:
        self.size = size
        self.expire = expire
        self._t: dict[bytes, tuple[tuple, float]] = {}

    def __len__(self) -> int:
        return len(self._t)

    def learn(self, mac: bytes, addr: tuple, now: float) -> None:
        if not self.size or mac[0] & 1:
            return  # learning off, or a group MAC (never a source)
        t = self._t
        old = t.get(mac)
        if old is not None:
            if old[0] == addr and now - old[1] < 1.0:
                return  # fresh: touch it at most once a second
            del t[mac]  # (re)inserted last: the dict's order is the refresh order
        elif len(t) >= self.size:
            del t[next(iter(t))]
        t[mac] = (addr, now)

    def lookup(self, mac: bytes, now: float) -> tuple | None:
        e = self._t.get(mac)
        if e is None or now - e[1] > self.expire:
            return None
        return e[0]

    def forget(self, addr: tuple) -> int:
        """Drop every MAC learned from ``addr`` (a vxvde peer's goodbye)."""
        gone = [m for m, (a, _) in self._t.items() if a == addr]
        for m in gone:
            del self._t[m]
        return len(gone)


class _Out(bytes):
    """An encapsulated datagram waiting in the backlog, with where it goes."""

    dest: tuple


# -- the link ----------------------------------------------------------------------------
class VxLink(BackloggedLink, Link):
    """Frames in VXLAN datagrams: a frame to a learned unicast MAC goes to that endpoint,
    any other to ``self.group`` (the multicast group, or vxlan's unicast remote).

    Subclasses open the sockets, set ``_tx_sock`` (the one frames leave by), ``group``,
    ``header``, ``table`` and implement ``fileno`` and ``_recv``. Counters: ``drops``
    (frames lost: the kernel refused, or the backlog was full), ``malformed`` (datagrams
    too short, with a bad header, or another VNI's: dropped), ``short_tx`` (frames
    shorter than an Ethernet header, not sent, as vdeplug4 does).
    """

    # A stack's default MTU is 1500, as on a tap: the underlay carries larger datagrams
    # in IP fragments (vdeplug4 does the same), and we receive up to 64 KiB.
    max_frame = 1518
    max_frame_known = False

    _tx_sock: socket.socket
    group: tuple
    header: bytes
    table: MacTable

    def __init__(self) -> None:
        super().__init__()
        self.drops = 0
        self.malformed = 0
        self.short_tx = 0
        self._buf = bytearray(RECV_BUF)
        self._view = memoryview(self._buf)
        self._clock: Callable[[], float] = time.monotonic

    def tx_fileno(self) -> int:
        return self._tx_sock.fileno()

    def destination(self, frame: Frame) -> tuple:
        if frame[0] & 1:
            return self.group
        dest = self.table.lookup(bytes(frame[:6]), self._clock())
        return self.group if dest is None else dest

    def _send_now(self, frame: Frame, dest: tuple) -> bool:
        """Send at once: True when the frame is gone (sent, or lost with the error
        counted), False when the socket is full and it must wait."""
        try:
            self._tx_sock.sendmsg((self.header, frame), (), 0, dest)
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return False
            self._failed(exc)
            return True

    def _send(self, frame: Frame) -> None:
        if len(frame) < ETH_HEADER:
            self.short_tx += 1
            return
        dest = self.destination(frame)
        bl = self._backlog
        if bl is None or bl.wake is None:
            if bl is None or not bl.frames:
                if self._send_now(frame, dest):
                    return
            self._send_waiting((self._wrap(frame, dest),))
            return
        with bl.lock:
            if not bl.frames:  # (else it goes behind them: keep the order)
                if self._send_now(frame, dest):
                    return
            wake = self._queue(bl, (self._wrap(frame, dest),))
        if wake is not None:
            wake(self)

    def _wrap(self, frame: Frame, dest: tuple) -> _Out:
        out = _Out(self.header + bytes(frame))
        out.dest = dest
        return out

    @staticmethod
    def _copy(frame: Frame) -> Frame:
        return frame  # the backlog gets _Out datagrams, already copies

    def _failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EBADF, errno.ENOTSOCK):
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: socket is gone") from exc
        self.drops += 1  # no route, too big, a firewall: this frame is lost, as on a wire

    def _try_send(self, frame: Frame) -> bool:
        assert isinstance(frame, _Out)
        try:
            self._tx_sock.sendto(frame, frame.dest)
            return True
        except (BlockingIOError, InterruptedError):
            return False
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return False
            self._failed(exc)
            return True

    def _take(self, sock: socket.socket) -> tuple[int, tuple]:
        """One datagram into ``self._buf``: (length, sender); BlockingIOError if none."""
        try:
            return sock.recvfrom_into(self._buf)
        except (BlockingIOError, InterruptedError):
            raise BlockingIOError from None
        except OSError as exc:
            if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
                return 0, ()  # an ICMP error about an earlier datagram: not a frame
            raise LinkError(exc.errno, f"{self.url}: receive failed: {exc.strerror}") from exc
