"""``vxlan://[ADDRESS][/OPTIONS]``: RFC 7348 VXLAN, as vdeplug4's vxlan plugin and the
Linux kernel's ``vxlan`` device speak it.

One UDP socket bound to the VXLAN port on every address (default 4789, IANA's) sends
and receives datagrams of the 8-byte VXLAN header (``wire/vxlan.py``) and a frame. A
datagram whose flags byte is not exactly the I bit, whose VNI is not ours, or too short
to hold a frame is dropped and counted in ``malformed``. Received frames teach where
their source MAC lives: the sender's address, at the VXLAN port (a kernel sends from
any source port, always to the VXLAN port); a frame to a known MAC goes there, every
other frame (broadcast, multicast, unknown) to ADDRESS.

ADDRESS is a multicast group (default ``239.0.0.1``; ``ff05:56de::1`` with ``/v6``),
which the socket joins, as vdeplug4 does, with multicast loopback off (only one
process per host can own the port anyway); or, beyond vdeplug4, a unicast address: the
remote VTEP of a point-to-point tunnel, like ``ip link add ... type vxlan remote ADDR``.

Options (vdeplug4's, any prefix of the name): ``port=N`` (4789), ``vni=N`` (1),
``ttl=N`` (multicast TTL 1; for a unicast remote, the TTL, else the system's),
``rcvbuf=SIZE``, ``v4``, ``v6``, ``hashsize=N`` (1024; 0: no learning),
``expiretime=S`` (128), ``if=IFACE`` (the interface that joins the group).

A Linux peer: ``ip link add vx0 type vxlan id 42 dstport 4789 remote 10.0.0.1 dev eth0``
(``dstport`` is needed: the kernel's default is the pre-IANA 8472) and here
``vxlan://10.0.0.2/vni=42``.
"""

from __future__ import annotations

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
    number,
    parse_url,
    resolve,
    set_multicast_out,
)
from threadnet.wire import vxlan as wire_vxlan

TAGS = ("port", "vni", "ttl", "rcvbuf", "v6", "v4", "hashsize", "expiretime", "if")
HEADER = wire_vxlan.HEADER_LEN
ETH_HEADER = 14


class VxlanLink(VxLink):
    """A VXLAN tunnel endpoint (see the module's text)."""

    def __init__(self, url: str, rest: str) -> None:
        super().__init__()
        self.url = url
        address, opts = parse_url(url, rest, TAGS)
        o = common_options(url, address, opts, wire_vxlan.DEFAULT_PORT)
        vni = number(url, "vni", opts["vni"], 0, wire_vxlan.VNI_MAX) if "vni" in opts else 1
        self.vni = vni
        self.header = wire_vxlan.pack(vni)
        self.port = int(o["port"])
        family, remote = resolve(url, str(o["address"]), self.port, int(o["family"]))
        self.family = family
        self.group = remote
        self.multicast = is_multicast(remote)
        self.table = MacTable(int(o["hashsize"]), float(o["expire"]))
        ttl = o["ttl"]
        ifindex = int(o["ifindex"])
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            if o["rcvbuf"] is not None:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, int(o["rcvbuf"]))
            if self.multicast:
                set_multicast_out(self._sock, family, ifindex, 1 if ttl is None else int(ttl),
                                  loop=False)
            elif ttl is not None:
                if family == socket.AF_INET:
                    self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, max(int(ttl), 1))
                else:
                    self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, int(ttl))
            any_addr: tuple = (("0.0.0.0", self.port) if family == socket.AF_INET
                               else ("::", self.port, 0, 0))
            bind_or_fail(self._sock, any_addr, url, "VXLAN")
            if self.multicast:
                join_group(self._sock, family, remote, ifindex, url)
        except (LinkError, URLError):
            self._sock.close()
            raise
        except OSError as exc:
            self._sock.close()
            raise LinkError(exc.errno, f"{url}: {exc.strerror}") from exc
        self.local_addr = self._sock.getsockname()
        self._tx_sock = self._sock

    def fileno(self) -> int:
        return self._sock.fileno()

    def _recv(self) -> bytes:
        n, addr = self._take(self._sock)
        if not addr:
            return b""
        buf = self._buf
        if n - HEADER <= ETH_HEADER or wire_vxlan.vni_of(buf) != self.vni:
            self.malformed += 1  # too short, bad flags, another VNI's
            return b""
        frame = bytes(self._view[HEADER:n])
        # a VTEP sends from any port, always to the VXLAN port
        where = (addr[0], self.port) if len(addr) == 2 else (addr[0], self.port, 0, addr[3])
        self.table.learn(frame[6:12], where, self._clock())
        return frame

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.close()


def open_vxlan(url: str, rest: str, inner: str | None) -> VxlanLink:
    """``vxlan://[ADDRESS][/port=N][/vni=N][/ttl=N][/if=IFACE]...``."""
    require_no_inner(url, inner)
    return VxlanLink(url, rest)
