"""``vxvde://[GROUP][/OPTIONS]``: a LAN without a switch, on UDP multicast (vdeplug4's vxvde).

Every endpoint of a vxvde LAN joins one multicast group (default ``239.0.0.1``, or
``ff05:56de::1`` with ``/v6``, port 14789) and listens on it; it also has a unicast
socket, bound to an ephemeral port, that every frame leaves by. A frame carries the
8-byte VXLAN header (``wire/vxlan.py``) with the LAN's VNI (default 1). Receiving a frame
teaches the endpoint where its source MAC lives (the sender's unicast address); a frame
to a known MAC then goes to that endpoint alone, every other frame to the group. A
datagram of the header alone is a goodbye: the sender is closing, forget what it
taught. Our own frames, which come back by multicast loopback (on, so that many
endpoints on one host form one LAN; the group socket has SO_REUSEADDR for the same
reason), are recognised by their source (our unicast port on a local address) and
dropped. A datagram whose header is not exactly ours (another VNI, other flags) is
dropped and counted in ``malformed``, as is one too short to hold a frame.

Options (vdeplug4's, any prefix of the name; ``vxvde://239.1.2.3/port=14790/vni=7``):

=============  ==================================================================
port=N         UDP port of the group (14789)
vni=N|GROUP    the VXLAN network id, or a group name (its gid); empty: our egid (1)
grp=GROUP      a group: the VNI (unless vni= is given) and the last 24 bits of the
               multicast address become its gid, a LAN per Unix group
ttl=N          multicast TTL / hop limit (1: the local link only)
rcvbuf=SIZE    SO_RCVBUF (k/M/G suffixes)
v4, v6         the address family (v6 also changes the default group)
hashsize=N     the learning table's size (1024; 0 turns learning off)
expiretime=S   seconds a learned MAC stays valid (128)
if=IFACE       the interface that joins the group and sends multicast
bind=ADDR      the local address of the unicast socket
=============  ==================================================================
"""

from __future__ import annotations

import ipaddress
import select
import socket

from threadnet.errors import LinkError, URLError
from threadnet.link import require_no_inner
from threadnet.link.vxbase import (
    MacTable,
    VxLink,
    bind_or_fail,
    common_options,
    is_multicast,
    join_group,
    parse_url,
    resolve,
    set_multicast_out,
    vni_number,
)
from threadnet.wire import vxlan as wire_vxlan

TAGS = ("port", "vni", "grp", "ttl", "rcvbuf", "v6", "v4", "hashsize", "expiretime", "if",
        "bind")
HEADER = wire_vxlan.HEADER_LEN
ETH_HEADER = 14


def _group_with_gid(url: str, family: int, addr: tuple, gid: int) -> tuple:
    """vdeplug4's ``grp=``: the multicast address's last 24 bits become the gid."""
    packed = bytearray(socket.inet_pton(family, addr[0].split("%")[0]))
    packed[-3:] = (gid & 0xFFFFFF).to_bytes(3, "big")
    host = socket.inet_ntop(family, bytes(packed))
    if not ipaddress.ip_address(host).is_multicast:  # pragma: no cover - the top byte stays
        raise URLError(f"{url}: grp= makes {host}, not a multicast address")
    return (host, *addr[1:])


class VxvdeLink(VxLink):
    """One endpoint of a vxvde LAN (see the module's text). Extra counters: ``own`` (our
    frames looped back, dropped) and ``goodbyes`` (peers that said they close)."""

    def __init__(self, url: str, rest: str) -> None:
        super().__init__()
        self.url = url
        address, opts = parse_url(url, rest, TAGS)
        o = common_options(url, address, opts, wire_vxlan.VXVDE_PORT)
        gid = vni_number(url, "grp", opts["grp"]) if "grp" in opts else None
        vni = vni_number(url, "vni", opts["vni"]) if "vni" in opts else None
        if vni is None:
            vni = gid if gid is not None else 1
        self.vni = vni
        self.header = wire_vxlan.pack(vni)
        ttl = o["ttl"] if o["ttl"] is not None else 1
        family, group = resolve(url, str(o["address"]), int(o["port"]), int(o["family"]))
        if not is_multicast(group):
            raise URLError(f"{url}: {group[0]} is not a multicast address (vxvde needs a "
                           "group, e.g. 239.0.0.1 or ff05:56de::1)")
        if gid is not None:
            group = _group_with_gid(url, family, group, gid)
        self.family = family
        self.group = group
        self.table = MacTable(int(o["hashsize"]), float(o["expire"]))
        self.own = 0
        self.goodbyes = 0
        self._local: dict[str, bool] = {}
        ifindex = int(o["ifindex"])
        any_addr = "0.0.0.0" if family == socket.AF_INET else "::"
        self._multi = socket.socket(family, socket.SOCK_DGRAM)
        self._uni = socket.socket(family, socket.SOCK_DGRAM)
        self._poll = select.epoll()
        try:
            for s in (self._multi, self._uni):
                s.setblocking(False)
                if o["rcvbuf"] is not None:
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(o["rcvbuf"]))
            self._multi.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            bind_or_fail(self._multi, group, url, "group")
            join_group(self._multi, family, group, ifindex, url)
            if family == socket.AF_INET:
                self._uni.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, max(ttl, 1))
            set_multicast_out(self._uni, family, ifindex, ttl, loop=True)
            bind = opts.get("bind") or any_addr
            try:
                _, local = resolve(url, bind, 0, family)
            except URLError:
                raise URLError(f"{url}: bad bind {bind!r}: not an address of this "
                               "family") from None
            bind_or_fail(self._uni, local, url, "unicast")
            self.local_addr = self._uni.getsockname()
            self.uniport = self.local_addr[1]
            self._poll.register(self._multi.fileno(), select.EPOLLIN)
            self._poll.register(self._uni.fileno(), select.EPOLLIN)
        except (LinkError, URLError):
            self._close_sockets()
            raise
        except OSError as exc:  # a setsockopt the kernel refuses: say which URL
            self._close_sockets()
            raise LinkError(exc.errno, f"{url}: {exc.strerror}") from exc
        self._tx_sock = self._uni
        self._flip = False

    def fileno(self) -> int:
        return self._poll.fileno()

    def _is_local(self, host: str, addr: tuple) -> bool:
        """Is ``host`` an address of this host? (It can be bound: vdeplug4's LOCALBIND.)"""
        known = self._local.get(host)
        if known is None:
            if len(self._local) > 256:
                self._local.clear()
            s = socket.socket(self.family, socket.SOCK_DGRAM)
            try:
                s.bind((host, 0) if self.family == socket.AF_INET else (host, 0, 0, addr[3]))
                known = True
            except OSError:
                known = False
            finally:
                s.close()
            self._local[host] = known
        return known

    def _recv(self) -> bytes:
        self._flip = not self._flip
        socks = (self._multi, self._uni) if self._flip else (self._uni, self._multi)
        for sock in socks:
            try:
                n, addr = self._take(sock)
            except BlockingIOError:
                continue
            if not addr:
                return b""
            return self._accept(n, addr, sock is self._multi)
        raise BlockingIOError

    def _accept(self, n: int, addr: tuple, from_group: bool) -> bytes:
        buf = self._buf
        if n < HEADER or buf[:HEADER] != self.header:
            self.malformed += 1  # another VNI's, other flags, or not vxvde at all
            return b""
        if len(addr) == 4:
            addr = (addr[0], addr[1], 0, addr[3])
        if n == HEADER:
            self.goodbyes += 1
            self.table.forget(addr)  # a goodbye: the peer closes
            return b""
        if n - HEADER <= ETH_HEADER:
            self.malformed += 1
            return b""
        if from_group and addr[1] == self.uniport and self._is_local(addr[0], addr):
            self.own += 1  # our own, looped back
            return b""
        frame = bytes(self._view[HEADER:n])
        self.table.learn(frame[6:12], addr, self._clock())
        return frame

    def _close_sockets(self) -> None:
        for s in (self._multi, self._uni):
            s.close()
        self._poll.close()

    def close(self) -> None:
        if not self.closed:
            try:
                self._uni.sendto(self.header, self.group)  # goodbye: peers forget our MACs
            except OSError:
                pass
            super().close()
            self._close_sockets()


def open_vxvde(url: str, rest: str, inner: str | None) -> VxvdeLink:
    """``vxvde://[GROUP][/port=N][/vni=N][/ttl=N][/if=IFACE]...``."""
    require_no_inner(url, inner)
    return VxvdeLink(url, rest)
