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
from threadnet.wire import ipv4, tcp

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface

_FAST4 = ipv4.LEN_FRAG
_GRO = tcp.GRO4
_TS_HEAD = tcp.TS_HEAD


class DirectInput:
    """The Stack's direct TCP input paths (a mixin of ``Stack``)."""

    def _input_direct(self, iface: Interface, mv: memoryview, n: int, now: float,
                      csum_ok: bool) -> bool:
        """The direct IPv4 or IPv6 TCP input, when the frame qualifies (see those)."""
        return self._input_fast4(iface, mv, n, now, csum_ok) or (
            n >= 74 and mv[12] == 0x86 and self._input_fast6(iface, mv, n, now, csum_ok))

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
        unpack = _GRO.unpack_from
        i = 0
        while i < n:
            f = frames[i]
            ln = len(f)
            j = i + 1
            if ln > 66:
                (dmac, etype, vihl, total, frag, proto, addrs, ports, seq, ack, offfl, window,
                 opts) = unpack(f)
                if (etype == 0x0800 and vihl == 0x45 and proto == 6 and offfl & 0xF0F7 == 0x8010
                        and total == ln - 14 and not frag & 0x3FFF and dmac == mac
                        and opts[:4] == _TS_HEAD):
                    # a data segment with ACK (and maybe PSH), timestamps, no other option:
                    # find how far the run goes
                    nxt = seq + total - 52
                    while j < n and not offfl & 8:  # a PSH ends a run
                        g = frames[j]
                        lg = len(g)
                        if lg <= 66:
                            break
                        (dmac, etype, vihl, total, frag, proto, a2, p2, seq2, ack2, offfl,
                         window2, opts2) = unpack(g)
                        if (seq2 != nxt & 0xFFFFFFFF or a2 != addrs or p2 != ports
                                or ack2 != ack or window2 != window or opts2 != opts
                                or offfl & 0xF0F7 != 0x8010 or total != lg - 14
                                or etype != 0x0800 or vihl != 0x45 or proto != 6
                                or frag & 0x3FFF or dmac != mac):
                            break
                        nxt = seq2 + total - 52
                        j += 1
            if j - i < 2 or not self._input_run(iface, frames, i, j, now):
                self.input(iface, f, now)
                j = i + 1
            i = j
        if self._local:
            self._drain_local(now)

    def _input_run(self, iface: Interface, frames: list[memoryview], i: int, j: int,
                   now: float) -> bool:
        """TCP input for ``frames[i:j]``, a run ``input_many`` found: returns False, having
        done nothing, unless the first frame's destination is ours and every frame's
        checksums are right (a bad frame then goes its own way and shows up in the
        counters)."""
        f = frames[i]
        dst = f[30:34].tobytes()
        if dst not in (self._local4 if self._local4_gen == self._gen else self._local4_set()) \
                or dst[0] == 127 or f[26] == 127:
            return False
        src = f[26:30].tobytes()
        from_bytes = int.from_bytes
        psum = from_bytes(src, "big") + from_bytes(dst, "big") + 6
        run = frames[i:j]
        nbytes = 0
        for g in run:
            n = len(g)
            if from_bytes(g[14:34], "big") % 0xFFFF:
                return False
            v = from_bytes(g[34:], "big") % 0xFFFF  # reduced first: a sum would copy it
            if n & 1:
                v <<= 8
            if (v + psum + n - 34) % 0xFFFF:
                return False
            nbytes += n
        self._now = now
        iface.rx_packets += j - i
        iface.rx_bytes += nbytes
        # one segment: the first header (the last one's flags, for a PSH) and every payload
        last = run[-1]
        seg = bytearray(f[34:66])
        seg[13] = last[47]
        seg += b"".join([g[66:] for g in run])
        try:
            self.tcp.input(4, src, dst, memoryview(seg), now, True)
        except FrameError:
            iface.rx_errors += 1
            self._count("rx_malformed")
        return True

    def _input_fast4(self, iface: Interface, mv: memoryview, n: int, now: float,
                     csum_ok: bool) -> bool:
        """The common case without the general path's calls: IPv4 without options or
        fragmentation, TCP, unicast to one of our addresses, header checksum right.
        Returns False, having done nothing, for anything else (and for any error, which
        the general path reports). ``csum_ok``: the TCP checksum needs no check."""
        if n >= 54 and mv[12] == 8 and mv[13] == 0 and mv[14] == 0x45 and mv[23] == 6 \
                and mv[:6] == iface.mac:
            total, frag = _FAST4.unpack_from(mv, 16)
            dst = mv[30:34].tobytes()
            if not frag & 0x3FFF and 40 <= total <= n - 14 and (
                    dst in (self._local4 if self._local4_gen == self._gen
                            else self._local4_set())) and dst[0] != 127 and mv[26] != 127 \
                    and not int.from_bytes(mv[14:34], "big") % 0xFFFF:
                self.tcp.input(4, mv[26:30].tobytes(), dst, mv[34:14 + total], now, csum_ok)
                return True
        return False

    def _input_fast6(self, iface: Interface, mv: memoryview, n: int, now: float,
                     csum_ok: bool) -> bool:
        """``_input_fast4`` for IPv6: a packet without extension headers, TCP, to one of
        the preferred addresses of ``iface``. The caller has checked that the frame holds
        74 bytes or more and that its EtherType's first byte is 0x86."""
        if mv[13] == 0xDD and mv[14] >> 4 == 6 and mv[20] == 6 and mv[:6] == iface.mac:
            plen = (mv[18] << 8) | mv[19]
            dst = mv[38:54].tobytes()
            if 20 <= plen <= n - 54 and dst in (
                    self._local6 if self._local6_gen == self._gen
                    else self._local6_sets()).get(iface, ()):
                src = mv[22:38].tobytes()
                if src == LOOPBACK6:
                    return False  # the general path drops it
                self.tcp.input(6, src, dst, mv[54:54 + plen], now, csum_ok)
                return True
        return False
