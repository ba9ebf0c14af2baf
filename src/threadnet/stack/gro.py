"""Direct TCP input and receive coalescing (Linux's GRO), a part of the Stack.

The common case of a frame that arrives, plain IPv4 or IPv6 TCP to one of our addresses,
skips the general input path and goes straight to ``TcpLayer.input``; a receive batch's
run of in-order data segments of one connection goes to TCP as one segment. Both are off
while prerouting or input hooks are installed (``stack/ip.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from threadnet.errors import FrameError
from threadnet.stack.ip import LOOPBACK6
from threadnet.wire import ethernet, ipv4, ipv6, tcp

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface

# the wire helpers of the direct paths, bound once (wire/ethernet, ipv4, ipv6, tcp)
_DST_TYPE = ethernet.DST_TYPE.unpack_from
_IP4 = ipv4.FIELDS.unpack_from
_IP4_OK = ipv4.checksum_ok
_IP6 = ipv6.FIELDS.unpack_from
_GRO = tcp.GRO4.unpack_from
_ETH_P_IPV4 = ethernet.ETH_P_IPV4
_ETH_P_IPV6 = ethernet.ETH_P_IPV6
_VIHL = ipv4.VIHL
_FRAGMENT = ipv4.FRAGMENT_BITS
_MERGE_MASK = tcp.GRO4_MERGEABLE_MASK
_MERGEABLE = tcp.GRO4_MERGEABLE
_HEADERS = tcp.GRO4_HEADERS_LEN  # Ethernet, IPv4 and TCP with timestamps
_IP_TCP_HEADERS = _HEADERS - 14
_TS_HEAD = tcp.TS_HEAD
_PSH = tcp.PSH


class DirectInput:
    """The Stack's direct TCP input paths (a mixin of ``Stack``)."""

    def _input_direct(self, iface: Interface, mv: memoryview, n: int, now: float,
                      csum_ok: bool) -> bool:
        """The direct IPv4 or IPv6 TCP input, when the frame qualifies (see those): an
        untagged frame to our MAC address."""
        if n < 54:
            return False
        dmac, etype = _DST_TYPE(mv)
        if dmac != iface.mac:
            return False
        if etype == _ETH_P_IPV4:
            return self._input_fast4(iface, mv, n, now, csum_ok)
        return etype == _ETH_P_IPV6 and n >= 74 and self._input_fast6(iface, mv, n, now,
                                                                      csum_ok)

    def input_many(self, iface: Interface, frames: list[memoryview], now: float) -> None:
        """``input`` for a receive batch, with TCP receive coalescing (Linux's GRO): a run
        of in-order data segments of one connection, alike in everything but their data
        (addresses, ports, ACK, window, timestamps), goes to TCP as one segment once each
        frame's own IPv4 and TCP checksums are checked. Anything else, and any run that
        is not for one of our addresses, takes ``input`` frame by frame."""
        n = len(frames)
        if n < 2 or not iface.up or self._rx_hooked:
            for f in frames:
                self.input(iface, f, now)
            return
        mac = iface.mac
        unpack = _GRO
        i = 0
        while i < n:
            f = frames[i]
            ln = len(f)
            j = i + 1
            if ln > _HEADERS:
                (dmac, etype, vihl, total, frag, proto, addrs, ports, seq, ack, offfl, window,
                 opts) = unpack(f)
                if (etype == _ETH_P_IPV4 and vihl == _VIHL and proto == 6
                        and offfl & _MERGE_MASK == _MERGEABLE and total == ln - 14
                        and not frag & _FRAGMENT and dmac == mac and opts[:4] == _TS_HEAD):
                    # a data segment with ACK (and maybe PSH), timestamps, no other option:
                    # find how far the run goes
                    nxt = seq + total - _IP_TCP_HEADERS
                    while j < n and not offfl & _PSH:  # a PSH ends a run
                        g = frames[j]
                        lg = len(g)
                        if lg <= _HEADERS:
                            break
                        (dmac, etype, vihl, total, frag, proto, a2, p2, seq2, ack2, offfl,
                         window2, opts2) = unpack(g)
                        if (seq2 != nxt & 0xFFFFFFFF or a2 != addrs or p2 != ports
                                or ack2 != ack or window2 != window or opts2 != opts
                                or offfl & _MERGE_MASK != _MERGEABLE or total != lg - 14
                                or etype != _ETH_P_IPV4 or vihl != _VIHL or proto != 6
                                or frag & _FRAGMENT or dmac != mac):
                            break
                        nxt = seq2 + total - _IP_TCP_HEADERS
                        j += 1
            if j - i < 2 or not self._input_run(iface, frames[i:j], addrs, now):
                self.input(iface, f, now)
                j = i + 1
            i = j
        if self._local:
            self._drain_local(now)

    def _input_run(self, iface: Interface, run: list[memoryview], addrs: bytes,
                   now: float) -> bool:
        """TCP input for ``run``, frames ``input_many`` found to continue each other, with
        ``addrs`` their IPv4 source and destination: returns False, having done nothing,
        unless the destination is ours and every frame's checksums are right (a bad
        frame then goes its own way and shows up in the counters)."""
        src = addrs[:4]
        dst = addrs[4:]
        if (dst not in (self._local4 if self._local4_gen == self._gen else self._local4_set())
                and (self.catch_all is None or dst[0] >= 224)) \
                or dst[0] == 127 or src[0] == 127 or not tcp.verify_frames4(run, src, dst):
            return False
        self._now = now
        iface.rx_packets += len(run)
        iface.rx_bytes += sum(map(len, run))
        try:
            self.tcp.input(4, src, dst, memoryview(tcp.coalesce4(run)), now, True)
        except FrameError:
            iface.rx_errors += 1
            self._count("rx_malformed")
        return True

    def _input_fast4(self, iface: Interface, mv: memoryview, n: int, now: float,
                     csum_ok: bool) -> bool:
        """The common case without the general path's calls: IPv4 without options or
        fragmentation, TCP, unicast to one of our addresses, header checksum right.
        Returns False, having done nothing, for anything else (and for any error, which
        the general path reports). ``csum_ok``: the TCP checksum needs no check. The
        caller has checked the frame's length (54 bytes or more), destination MAC and
        EtherType (``_input_direct``)."""
        vihl, total, frag, proto, src, dst = _IP4(mv, 14)
        if vihl == _VIHL and proto == 6 and not frag & _FRAGMENT and 40 <= total <= n - 14 \
                and (dst in (self._local4 if self._local4_gen == self._gen
                             else self._local4_set())
                     or (self.catch_all is not None and dst[0] < 224)) \
                and dst[0] != 127 and src[0] != 127 and _IP4_OK(mv, 14):
            self.tcp.input(4, src, dst, mv[34:14 + total], now, csum_ok)
            return True
        return False

    def _input_fast6(self, iface: Interface, mv: memoryview, n: int, now: float,
                     csum_ok: bool) -> bool:
        """``_input_fast4`` for IPv6: a packet without extension headers, TCP, to one of
        the preferred addresses of ``iface``. The caller has checked that the frame holds
        74 bytes or more, its destination MAC and its EtherType."""
        vtf, plen, nh, src, dst = _IP6(mv, 14)
        if vtf >> 28 == 6 and nh == 6 and 20 <= plen <= n - 54 and (dst in (
                self._local6 if self._local6_gen == self._gen
                else self._local6_sets()).get(iface, ())
                or (self.catch_all is not None and dst[0] != 0xFF)):
            if src == LOOPBACK6:
                return False  # the general path drops it
            self.tcp.input(6, src, dst, mv[54:54 + plen], now, csum_ok)
            return True
        return False
