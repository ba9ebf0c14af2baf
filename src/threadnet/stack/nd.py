"""Address resolution and duplicate detection, a part of the Stack: ARP input and
requests, IPv4 address conflict detection (RFC 5227, the state machine in
``stack/acd.py``), neighbor solicitations, DAD (RFC 4862). The neighbor caches are
``stack/neighbor.py``; NS and NA input is ICMPv6's (``stack/icmp.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadnet.stack.acd import ARP_ANNOUNCE, ARP_PROBE, CONFLICT, DEFEND
from threadnet.stack.agents import CONFLICT as AGENT_CONFLICT
from threadnet.stack.agents import DADFAILED, READY
from threadnet.stack.ip import BROADCAST_MAC, ETH_ARP, ETH_IPV6, ntop, same_net
from threadnet.stack.neighbor import INCOMPLETE, PROBE
from threadnet.wire import arp, icmp6, ipv6

if TYPE_CHECKING:
    from threadnet.stack.stack import Address6, Interface

DAD_DELAY = 1.0  # RFC 4861 RetransTimer: one NS, then the address is ours


class NeighborDiscovery:
    """ARP, NDP's solicitations, DAD and ACD (a mixin of ``Stack``)."""

    def _input_arp(self, iface: Interface, mv: memoryview, now: float) -> None:
        op, sha, spa, tha, tpa = arp.parse(mv)
        if sha[0] & 1:
            return  # a multicast sender address is never valid
        if iface.acd4:
            self._acd_arp(iface, op == arp.OP_REQUEST, sha, spa, tpa, now)
        if spa == bytes(4):
            # an ARP probe (RFC 5227): answered if it is for us, no cache entry for 0.0.0.0
            if op == arp.OP_REQUEST and any(a == tpa for a, _ in iface.v4):
                buf = bytearray(28)
                arp.build(buf, arp.OP_REPLY, iface.mac, tpa, sha, spa)
                self._send_eth(iface, sha, ETH_ARP, buf)
            return
        ours = any(a == tpa for a, _ in iface.v4)
        # RFC 826: update an existing entry; create one only from a request for us (as
        # Linux with arp_accept=0: no entries from unsolicited replies or gratuitous ARP).
        # Only a reply to our own request (the entry is INCOMPLETE or being probed) makes
        # it REACHABLE; unsolicited news of a new MAC leaves it STALE (RFC 4861 7.2.5),
        # to be confirmed by a probe before the direct paths use it.
        e = iface.arp.entries.get(spa)
        solicited = op == arp.OP_REPLY and ours and e is not None and \
            e.state in (INCOMPLETE, PROBE)
        for pkt in iface.arp.confirm(spa, sha, now, solicited=solicited,
                                     create=ours and op == arp.OP_REQUEST):
            self._xmit(iface, sha, pkt)  # type: ignore[arg-type]
        if op == arp.OP_REQUEST and ours:
            buf = bytearray(28)
            arp.build(buf, arp.OP_REPLY, iface.mac, tpa, sha, spa)
            self._send_eth(iface, sha, ETH_ARP, buf)

    def _acd_arp(self, iface: Interface, request: bool, sha: bytes, spa: bytes, tpa: bytes,
                 now: float) -> None:
        for a in list(iface.acd4.values()):
            what = a.on_arp(request, sha, spa, tpa, iface.mac, now)
            if what == DEFEND:
                self._arp_announce(iface, a.addr)
                self._count("acd_defended")
            elif what == CONFLICT:
                self._count("acd_conflict")
                entry = (a.addr, a.plen)
                if entry in iface.v4:
                    self._unbind4(iface, entry, ntop(a.addr))
                if self.agents:
                    self._address_event(iface, a.addr, AGENT_CONFLICT, now)

    def _acd_timer(self, iface: Interface, now: float) -> None:
        for a in list(iface.acd4.values()):
            if a.deadline is None or now < a.deadline:
                continue
            what = a.on_timer(now)
            if what == ARP_PROBE:
                buf = bytearray(28)
                arp.build(buf, arp.OP_REQUEST, iface.mac, bytes(4), bytes(6), a.addr)
                self._send_eth(iface, BROADCAST_MAC, ETH_ARP, buf)
            elif what == ARP_ANNOUNCE:
                if a.usable and (a.addr, a.plen) not in iface.v4:
                    self._bind4(iface, (a.addr, a.plen))
                    if self.agents:
                        self._address_event(iface, a.addr, READY, now)
                self._arp_announce(iface, a.addr)

    def _arp_announce(self, iface: Interface, addr: bytes) -> None:
        """An ARP announcement: a request with our address as sender and target."""
        buf = bytearray(28)
        arp.build(buf, arp.OP_REQUEST, iface.mac, addr, bytes(6), addr)
        self._send_eth(iface, BROADCAST_MAC, ETH_ARP, buf)

    def _arp_request(self, iface: Interface, target: bytes, mac: bytes | None) -> None:
        src = next((a for a, p in iface.v4 if same_net(a, target, p)),
                   iface.v4[0][0] if iface.v4 else bytes(4))
        buf = bytearray(28)
        arp.build(buf, arp.OP_REQUEST, iface.mac, src, bytes(6), target)
        self._send_eth(iface, mac or BROADCAST_MAC, ETH_ARP, buf)

    def _ns(self, iface: Interface, target: bytes, mac: bytes | None, now: float,
            src: bytes | None = None) -> None:
        """Neighbor Solicitation: to the solicited-node group, or unicast (a probe)."""
        if src is None:
            usable = iface.v6_usable()
            ll = [a for a in usable if a[:2] == b"\xfe\x80"]
            src = (ll or usable or [None])[0]
            if src is None:
                return
        dst = target if mac is not None else ipv6.solicited_node(target)
        out = bytearray(32)
        n = icmp6.build_ns(out, src, dst, target, iface.mac if src != ipv6.UNSPECIFIED else None)
        self._send6_direct(iface, src, dst, out[:n], mac, now)

    def _send6_direct(self, iface: Interface, src: bytes, dst: bytes, icmp: bytes | bytearray,
                      mac: bytes | None, now: float) -> None:
        """An NDP message: hop limit 255, no routing, to ``mac`` or the multicast MAC."""
        packet = bytearray(40 + len(icmp))
        ipv6.build(packet, src, dst, ipv6.PROTO_ICMPV6, len(icmp), hop_limit=255)
        packet[40:] = icmp
        if mac is None:
            if dst[0] == 0xFF:
                mac = ipv6.multicast_mac(dst)
            else:
                self._output6(iface, dst, dst, packet, now)
                return
        self._send_eth(iface, mac, ETH_IPV6, packet)

    def _dad_failed(self, a: Address6, iface: Interface | None = None) -> None:
        """RFC 4862 5.4.5: the address is someone else's. It stays listed (``ip addr``'s
        "dadfailed") and is never used. The interface's agents hear of it (SLAAC)."""
        a.state = "dadfailed"
        a.dad_deadline = 0.0
        self._gen += 1
        self._count("dad_duplicate")
        if iface is not None and self.agents:
            self._address_event(iface, a.addr, DADFAILED, self._now)

    def _start_dad(self, iface: Interface, a: Address6, now: float) -> None:
        """RFC 4862 5.4: one NS from :: for the tentative address, then wait."""
        a.dad_deadline = now + DAD_DELAY
        self._gen += 1  # (the cached next deadline)
        self._ns(iface, a.addr, None, now, src=ipv6.UNSPECIFIED)
