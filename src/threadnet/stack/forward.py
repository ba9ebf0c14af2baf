"""Forwarding (``Stack(forwarding=True)``): TTL and hop limit, ICMP errors, IPv4
fragmentation on the way; packets pass the forward hook first (``stack/ip.py``), which
learns the interface they would leave by (None without a route).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadnet.stack.ip import FORWARD, run_hooks
from threadnet.wire import icmp4, icmp6, ipv4, ipv6

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface


class Forwarding:
    """IPv4 and IPv6 forwarding (a mixin of ``Stack``)."""

    def _forward4(self, iface: Interface, packet: memoryview, src: bytes, dst: bytes,
                  ttl: int, flags: int, now: float) -> None:
        """Forward ``packet`` (``ipv4.parse`` gave its ``src``, ``dst``, ``ttl`` and
        ``flags``)."""
        r = self._route4(dst)  # (first: the forward hook learns the interface out)
        if self.hooks_forward and not run_hooks(self, self.hooks_forward, FORWARD, 4, packet,
                                                iface, r[0] if r else None, now):
            return
        if ttl <= 1:
            self._icmp4_error(src, self.source4(src) or bytes(4), icmp4.TIME_EXCEEDED,
                              icmp4.TTL_EXCEEDED, packet, now)
            return
        if r is None:
            self._icmp4_error(src, self.source4(src) or bytes(4), icmp4.DEST_UNREACHABLE,
                              icmp4.UNREACH_NET, packet, now)
            return
        out_iface, nexthop = r
        out = bytearray(packet)
        ipv4.decrement_ttl(out)  # and its checksum (RFC 1624)
        if len(out) > out_iface.mtu:
            if flags & ipv4.FLAG_DF:  # RFC 1191 fragmentation needed, with our MTU
                self._icmp4_error(src, self.source4(src) or bytes(4), icmp4.DEST_UNREACHABLE,
                                  icmp4.UNREACH_FRAG_NEEDED, packet, now, mtu=out_iface.mtu)
                return
            fields = ipv4.parse(out)
            body = bytes(out[fields[9]:])
            self._count("ip4_forward_fragmented")
            chunk = (out_iface.mtu - 20) & ~7
            for off in range(0, len(body), chunk):
                piece = body[off:off + chunk]
                more = off + chunk < len(body) or bool(fields[3] & ipv4.FLAG_MF)
                pkt = bytearray(20 + len(piece))
                ipv4.build(pkt, fields[7], fields[8], fields[6], len(piece), ttl=ttl - 1,
                           ident=fields[2], flags=ipv4.FLAG_MF if more else 0,
                           frag_offset=fields[4] + off, tos=fields[0])
                pkt[20:] = piece
                self._output4(out_iface, nexthop, dst, pkt, now)
            return
        self._count("ip4_forwarded")
        self._output4(out_iface, nexthop, dst, out, now)

    def _forward6(self, iface: Interface, packet: memoryview, src: bytes, dst: bytes,
                  hlim: int, now: float) -> None:
        """Forward ``packet`` (``ipv6.parse`` gave its ``src``, ``dst`` and ``hlim``)."""
        if src[:2] == b"\xfe\x80" or dst[:2] == b"\xfe\x80":
            return  # link-local scope is never forwarded
        r = self._route6(dst)
        if self.hooks_forward and not run_hooks(self, self.hooks_forward, FORWARD, 6, packet,
                                                iface, r[0] if r else None, now):
            return
        if hlim <= 1:
            self._icmp6_error(src, bytes(16), icmp6.TIME_EXCEEDED, 0, packet, now)
            return
        if r is None:
            self._icmp6_error(src, bytes(16), icmp6.DEST_UNREACHABLE, icmp6.UNREACH_NO_ROUTE,
                              packet, now)
            return
        out_iface, nexthop = r
        if len(packet) > out_iface.mtu:
            self._icmp6_error(src, bytes(16), icmp6.PACKET_TOO_BIG, 0, packet, now,
                              rest=out_iface.mtu)
            return
        out = bytearray(packet)
        ipv6.decrement_hop_limit(out)
        self._count("ip6_forwarded")
        self._output6(out_iface, nexthop, dst, out, now)
