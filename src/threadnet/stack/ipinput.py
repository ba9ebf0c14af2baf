"""IP input, a part of the Stack: a frame that arrives is demultiplexed by EtherType;
IPv4 and IPv6 are checked (martians), pass the prerouting hook, are delivered (the input
hook, reassembly, then ICMP, UDP, TCP) or forwarded, and get the ICMP errors the RFCs
ask for. A frame from an offload link may be a large TCP segment (``wire/vnet.py``).
The common TCP case skips all this (``stack/gro.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadnet.errors import FrameError
from threadnet.stack import raw
from threadnet.stack.ip import (
    INPUT,
    LIMITED_BROADCAST,
    LOOPBACK6,
    PREROUTING,
    broadcast4,
    run_hooks,
)
from threadnet.wire import ethernet, icmp4, icmp6, ipv4, ipv6, vnet
from threadnet.wire.ethernet import ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface


class IpInput:
    """Frames in: Ethernet, IPv4, IPv6 (a mixin of ``Stack``)."""

    def input(self, iface: Interface, frame: bytes | bytearray | memoryview, now: float,
              header: tuple[int, int, int, int, int, int] | None = None) -> None:
        """Process one Ethernet frame received on ``iface``. Never raises for bad input.

        ``header``: the virtio-net header fields of a frame from an offload link
        (``TapLink.recv_offload``). The frame may then be a TCP segment larger than the
        MTU, and its checksum one the kernel vouches for (``F_DATA_VALID``) or has left
        partial (``F_NEEDS_CSUM``)."""
        self._now = now
        if not iface.up:
            return
        n = len(frame)
        iface.rx_packets += 1
        iface.rx_bytes += n
        if self.packet_taps:
            raw.tap_frame(self, iface, frame, False)
        try:
            mv = memoryview(frame)
            if header is None:
                if self._rx_hooked or not self._input_direct(iface, mv, n, now, False):
                    self._input_eth(iface, mv, now)
            else:
                self._input_offloaded(iface, mv, n, header, now)
        except FrameError:
            iface.rx_errors += 1
            self._count("rx_malformed")
        if self._local:
            self._drain_local(now)

    def _input_offloaded(self, iface: Interface, mv: memoryview, n: int,
                         header: tuple[int, int, int, int, int, int], now: float) -> None:
        flags, gso_type, _, gso_size, start, offset = header
        vouched = bool(flags & (vnet.F_NEEDS_CSUM | vnet.F_DATA_VALID)) and not self._rx_hooked
        if vouched and self._input_direct(iface, mv, n, now, True):
            return
        if gso_type != vnet.GSO_NONE:
            # not for our TCP fast paths (forwarded...): ordinary frames
            for piece in vnet.segment(mv, gso_type, gso_size):
                pmv = memoryview(piece)
                if self._rx_hooked or not self._input_direct(iface, pmv, len(piece), now, True):
                    self._input_eth(iface, pmv, now)
            return
        if flags & vnet.F_NEEDS_CSUM:
            mv = memoryview(bytearray(mv))
            vnet.complete_checksum(mv, start, offset)
        self._input_eth(iface, mv, now)

    def _input_eth(self, iface: Interface, mv: memoryview, now: float) -> None:
        dst, src, etype, vlan, off = ethernet.parse(mv)  # FrameError for a runt
        if dst != iface.mac and not dst[0] & 1:
            return  # unicast for someone else
        if vlan >= 0:
            return  # an interface is on one untagged LAN: 802.1Q frames are not for it
        if etype == ETH_P_IPV4:
            self._input_ip4(iface, mv[off:], now, src)
        elif etype == ETH_P_IPV6:
            self._input_ip6(iface, mv[off:], now, src)
        elif etype == ETH_P_ARP:
            self._input_arp(iface, mv[off:], now)

    def _input_ip4(self, iface: Interface, mv: memoryview, now: float, src_mac: bytes) -> None:
        (tos, total, ident, flags, frag_off, ttl, proto, src, dst, hlen,
         _opts) = ipv4.parse(mv)
        if (dst[0] == 127 or src[0] == 127) and not iface.loopback:
            # RFC 1122 3.2.1.3: 127/8 never comes from a wire (Linux: a martian)
            self._count("ip4_martian")
            return
        if self.hooks_prerouting:
            out = run_hooks(self, self.hooks_prerouting, PREROUTING, 4, mv[:total], iface, None,
                            now)
            if out is None:
                return
            if out.__class__ is bytearray:  # rewritten (NAT): routed by its new addresses
                mv = memoryview(out)
                tos, total, ident, flags, frag_off, ttl, proto, src, dst, hlen, _ = ipv4.parse(mv)
        payload = mv[hlen:total]
        broadcast = dst == LIMITED_BROADCAST or any(
            dst == broadcast4(a, p) for a, p in iface.v4)
        local = broadcast or self._is_local4(dst) or (iface.loopback and dst[0] == 127) or (
            self.catch_all is not None and dst[0] < 224)
        if not local:
            if self.agent_udp and proto == ipv4.PROTO_UDP and not (flags & ipv4.FLAG_MF or frag_off) \
                    and self._agent_udp_input(iface, 4, src, dst, mv[hlen:total], now):
                return  # a DHCP OFFER to the address we are being offered
            if dst[0] >= 224:
                return  # multicast we did not join
            if self.forwarding:
                self._forward4(iface, mv[:total], src, dst, ttl, flags, now)
            else:
                self._count("ip4_not_for_us")
            return
        if self.hooks_input:
            out = run_hooks(self, self.hooks_input, INPUT, 4, mv[:total], iface, None, now)
            if out is None:
                return
            if out.__class__ is bytearray:  # rewritten (NAT)
                mv = memoryview(out)
                tos, total, ident, flags, frag_off, ttl, proto, src, dst, hlen, _ = ipv4.parse(mv)
                payload = mv[hlen:total]
        if flags & ipv4.FLAG_MF or frag_off:
            whole = self.reasm4.add((src, dst, proto, ident), frag_off, bool(flags & ipv4.FLAG_MF),
                                    payload, now, first_header=bytes(mv[:hlen]) if not frag_off else None)
            if whole is None:
                return
            payload = memoryview(whole)
        tapped = self.raw_taps and raw.deliver_ip(self, iface, 4, proto, src, dst, mv[:hlen],
                                                  payload)
        if proto == ipv4.PROTO_ICMP:
            self._input_icmp4(iface, src, dst, payload, mv[:total], broadcast, now)
        elif proto == ipv4.PROTO_UDP:
            if self.agent_udp and self._agent_udp_input(iface, 4, src, dst, payload, now):
                return
            self._input_udp(4, src, dst, payload, mv[:total], broadcast, now)
        elif proto == ipv4.PROTO_TCP:
            self._input_tcp(4, src, dst, payload, mv[:total], now)
        elif not broadcast and not tapped:
            self._icmp4_error(src, dst, icmp4.DEST_UNREACHABLE, icmp4.UNREACH_PROTOCOL, mv[:total], now)

    def _input_tcp(self, family: int, src: bytes, dst: bytes, payload: memoryview,
                   packet: memoryview, now: float) -> None:
        if dst[0] == 0xFF or (family == 4 and (dst[0] >= 224 or dst == LIMITED_BROADCAST)):
            return  # TCP is unicast only
        self.tcp.input(family, src, dst, payload, now)

    def _input_ip6(self, iface: Interface, mv: memoryview, now: float, src_mac: bytes) -> None:
        tc, flow, plen, nh, hlim, src, dst = ipv6.parse(mv)
        if (dst == LOOPBACK6 or src == LOOPBACK6) and not iface.loopback:
            # RFC 4291 2.5.3: a packet to (or from) ::1 received on an interface is dropped
            self._count("ip6_martian")
            return
        end = ipv6.HEADER_LEN + plen
        packet = mv[:end]
        if self.hooks_prerouting:
            out = run_hooks(self, self.hooks_prerouting, PREROUTING, 6, packet, iface, None, now)
            if out is None:
                return
            if out.__class__ is bytearray:  # rewritten (NAT): routed by its new addresses
                packet = mv = memoryview(out)
                tc, flow, plen, nh, hlim, src, dst = ipv6.parse(mv)
        multicast = dst[0] == 0xFF
        if multicast:
            local = dst == ipv6.ALL_NODES or dst in iface.groups6 or any(
                dst == ipv6.solicited_node(a.addr) for a in iface.v6)
        else:
            local = self._is_local6(dst) or any(a.addr == dst for a in iface.v6) or \
                self.catch_all is not None
        if not local:
            if multicast:
                return
            if self.forwarding:
                self._forward6(iface, packet, src, dst, hlim, now)
            return
        if self.hooks_input:
            out = run_hooks(self, self.hooks_input, INPUT, 6, packet, iface, None, now)
            if out is None:
                return
            if out.__class__ is bytearray:  # rewritten (NAT)
                packet = memoryview(out)
                tc, flow, plen, nh, hlim, src, dst = ipv6.parse(packet)
        try:
            proto, off, frag = ipv6.walk(packet, nh)
        except ipv6.ParameterProblem as exc:
            if not multicast or not exc.unicast_only:
                self._icmp6_error(src, dst, icmp6.PARAMETER_PROBLEM, exc.code, packet, now,
                                  rest=exc.pointer)
            return
        payload = packet[off:]
        if frag is not None:
            frag_off, more, ident = frag
            if not frag_off and more and not _whole_chain(payload, proto):
                # RFC 7112 5: a first fragment must hold the whole header chain, up to
                # and with the upper-layer header; drop it, with the parameter problem
                # (code 3) the RFC allows
                self._count("ip6_incomplete_chain")
                if not multicast:
                    self._icmp6_error(src, dst, icmp6.PARAMETER_PROBLEM, 3, packet, now)
                return
            whole = self.reasm6.add((src, dst, ident), frag_off, more, payload, now)
            if whole is None:
                return
            # the reassembled payload starts with the header after the fragment header
            proto, off2, _ = ipv6.walk(memoryview(whole), proto, offset=0)
            payload = memoryview(whole)[off2:]
        tapped = self.raw_taps and raw.deliver_ip(self, iface, 6, proto, src, dst, None, payload)
        if proto == ipv6.PROTO_ICMPV6:
            self._input_icmp6(iface, src, dst, hlim, payload, packet, now, src_mac)
        elif proto == ipv6.PROTO_UDP:
            if self.agent_udp and self._agent_udp_input(iface, 6, src, dst, payload, now):
                return
            self._input_udp(6, src, dst, payload, packet, multicast, now)
        elif proto == ipv6.PROTO_TCP:
            self._input_tcp(6, src, dst, payload, packet, now)
        elif proto != ipv6.PROTO_NONE and not multicast and not tapped:
            self._icmp6_error(src, dst, icmp6.PARAMETER_PROBLEM, 1, packet, now, rest=6)


#: the upper-layer headers a first fragment must hold in full (RFC 7112; as Linux's
#: ipv6frag_thdr_truncated): TCP's and UDP's fixed headers, ICMPv6's type, code, checksum
#: and 4 more bytes
_UPPER_HEADER = {ipv6.PROTO_TCP: 20, ipv6.PROTO_UDP: 8, ipv6.PROTO_ICMPV6: 8}


def _whole_chain(data: memoryview, nh: int) -> bool:
    """Whether ``data`` (a first fragment's data, headers after the Fragment header
    first) holds every extension header and the upper-layer header."""
    try:
        proto, off, _ = ipv6.walk(data, nh, offset=0)
    except ipv6.ParameterProblem:
        return True  # complete enough to be wrong: the reassembled datagram says how
    except FrameError:
        return False
    return len(data) - off >= _UPPER_HEADER.get(proto, 0)
