"""UDP in the Stack: ports and their owners, input, sending through the IP layer.

``stack.udp`` maps a bound (address, port) to its owner's handle (``stack/upper.py``):
a datagram goes to ``stack.upper.on_udp(handle, ...)``, so the table is plain data.
"""

from __future__ import annotations

import errno
import ipaddress
from collections.abc import Callable

from threadnet.stack.ip import ntop
from threadnet.stack.tcplayer import CATCH_ALL
from threadnet.stack.upper import UdpCallbacks
from threadnet.wire import icmp4, icmp6, ipv4, ipv6, udp

UdpHandler = Callable[[bytes, tuple[str, int], tuple[str, int]], None]


class Udp:
    """UDP ports (a mixin of ``Stack``)."""

    def _input_udp(self, family: int, src: bytes, dst: bytes, payload: memoryview,
                   packet: memoryview, broadcast: bool, now: float) -> None:
        sport, dport, data = udp.parse(payload, src, dst)
        handle = self.udp.get((dst, dport)) or self.udp.get((b"", dport))
        if handle is None and self.catch_all is not None:
            handle = self.udp.get(CATCH_ALL)  # (see Stack.catch_all)
        if handle is None:
            self._count("udp_no_port")
            if not broadcast and not (family == 6 and dst[0] == 0xFF):
                if family == 4:
                    self._icmp4_error(src, dst, icmp4.DEST_UNREACHABLE, icmp4.UNREACH_PORT,
                                      packet, now)
                else:
                    self._icmp6_error(src, dst, icmp6.DEST_UNREACHABLE, icmp6.UNREACH_PORT,
                                      packet, now)
            return
        self.upper.on_udp(handle, bytes(data), (ntop(src), sport), (ntop(dst), dport))

    def udp_bind(self, port: int, handler: UdpHandler | int, addr: str | None = None, *,
                 on_error: Callable[[int, bytes, int], None] | None = None) -> int:
        """Deliver datagrams for ``port`` (on ``addr``, or any address) to ``handler``:
        the handle of an owner registered with ``stack.upper`` (its ``on_udp`` and
        ``on_udp_error``), or a function ``handler(data, src, dst)``, with ``on_error(errno,
        destination, port)`` told when a datagram sent from this port could not go
        (EHOSTUNREACH: nobody answered for its next hop). Returns the port's handle."""
        key = (ipaddress.ip_address(addr).packed if addr else b"", port)
        if key in self.udp:
            raise OSError(errno.EADDRINUSE, f"UDP port {port} is in use")
        if isinstance(handler, int):
            handle = handler
        else:
            handle = self.upper.add(UdpCallbacks(handler, on_error))
        self.udp[key] = handle
        return handle

    def udp_unbind(self, port: int, addr: str | None = None) -> None:
        key = (ipaddress.ip_address(addr).packed if addr else b"", port)
        handle = self.udp.pop(key, None)
        if handle is not None:
            self.upper.release(handle)

    def udp_send(self, data: bytes, dst: tuple[str, int], sport: int,
                 src: str | None = None, now: float | None = None) -> None:
        addr = ipaddress.ip_address(dst[0])
        d = addr.packed
        s = ipaddress.ip_address(src).packed if src else (
            self.source4(d) if addr.version == 4 else self._source6(d))
        if s is None:
            raise self._no_source(addr.version, d)
        out = bytearray(8 + len(data))
        udp.build(out, s, d, sport, dst[1], data)
        if addr.version == 4:
            self.send_ip4(s, d, ipv4.PROTO_UDP, out, now)
        else:
            self.send_ip6(s, d, ipv6.PROTO_UDP, out, now)
        self._drain_local(self._now if now is None else now)
