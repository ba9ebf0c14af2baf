"""Receiving text: in-window data and FIN (RFC 9293 3.10.7.4), the out-of-order
queue with its bound, the SACK blocks we send (RFC 2018) and the advertised window with
receiver silly window avoidance.

A mixin of ``TcpConnection`` (connection.py), which holds the state in its slots."""

from __future__ import annotations

from bisect import bisect_left
from operator import itemgetter

from threadnet.stack.tcp.segment import ACK
from threadnet.stack.tcp.seq import MASK
from threadnet.stack.tcp.state import (
    _CLOSE_WAIT,
    _CLOSING,
    _ESTABLISHED,
    _FIN_WAIT_1,
    _FIN_WAIT_2,
    _SYN_RECEIVED,
    MAX_RANGES,
    _range_end,
)


class TcpReceive:
    """How a connection takes and acknowledges text."""

    __slots__ = ()

    # -- receiving text ----------------------------------------------------------------
    def _input_text(self, seq: int, payload, fin: int, now: float) -> None:
        """Accept in-window data and a FIN (RFC 9293 3.10.7.4, seventh and eighth checks)."""
        rcv_nxt = self.rcv_nxt
        plen = len(payload)
        end = seq + plen
        right = self._rcv_adv
        if right < rcv_nxt:
            right = rcv_nxt
        if end > right:
            # beyond the window: trimmed, and a FIN after it is not ours to see yet
            plen -= end - right
            end = right
            fin = 0
        if plen > 0:
            self.stats.bytes_in += plen
            if seq <= rcv_nxt < end:
                had_ooo = bool(self._ooo)
                if seq == rcv_nxt and end - seq == len(payload):
                    self._rcv_buf += payload
                else:
                    with memoryview(payload) as mv:
                        self._rcv_buf += mv[rcv_nxt - seq:end - seq]
                self.rcv_nxt = rcv_nxt = end
                if had_ooo:
                    rcv_nxt = self._drain_ooo()
                    if not fin:
                        self._emit_ack_now(now)  # RFC 5681 4.2: a segment that fills a hole
                else:
                    # RFC 1122 4.2.3.2 / 5681 4.2: ACK at least every second segment (a
                    # segment larger than the MSS, coalesced or from a TSO sender, counts
                    # as two, as in Linux's "more than one full frame" rule)
                    self._unacked_segs += 1 if plen <= self.mss else 2
                    if self._unacked_segs >= 2:
                        if not fin:
                            if self.stretch_acks and self.stats.bytes_in > self.rcvbuf:
                                self._ack_now = True  # with the next output (batch end)
                            else:
                                self._emit_ack_now(now)
                    elif self._delack_deadline is None:
                        self._delack_deadline = now + self.delack_timeout
            elif seq > rcv_nxt:
                self.stats.ooo_segments_in += 1
                with memoryview(payload) as mv:
                    self._ooo_insert(seq, mv[:plen])
                # RFC 5681 4.2: out of order, a duplicate ACK (with SACK) for each segment
                self._emit_ack_now(now)
            else:
                self._ack_now = True  # a duplicate
        if fin:
            fin_at = end
            if fin_at == rcv_nxt:
                self._on_fin(now)
            elif fin_at > rcv_nxt:
                self._ooo_fin = fin_at
                self._ack_now = True
        elif self._ooo_fin is not None and self._ooo_fin == self.rcv_nxt:
            self._on_fin(now)

    def _emit_ack_now(self, now: float) -> None:
        # Built during input, not at the next output(): a caller that feeds a batch of
        # segments before calling output() must still produce an ACK per two segments and
        # one duplicate ACK per out-of-order segment (slow start and fast retransmit
        # count them).
        self._emit(self._ctl_out, self.snd_max, ACK, b"", now)

    def _drain_ooo(self) -> int:
        q = self._ooo
        rcv_nxt = self.rcv_nxt
        while q and q[0][0] <= rcv_nxt:
            start, end, data, _ = q.pop(0)
            if end > rcv_nxt:
                if start == rcv_nxt:
                    self._rcv_buf += data
                else:
                    with memoryview(data) as mv:
                        self._rcv_buf += mv[rcv_nxt - start:]
                rcv_nxt = end
        self.rcv_nxt = rcv_nxt
        return rcv_nxt

    def _ooo_insert(self, s: int, data) -> None:
        e = s + len(data)
        q = self._ooo
        self._ooo_stamp += 1
        stamp = self._ooo_stamp
        if not q or q[-1][1] <= s:
            # the usual case: beyond every held range (or extending the last one)
            if q and q[-1][1] == s:
                last = q[-1]
                last[2] += data
                last[1] = e
                last[3] = stamp
            elif len(q) < MAX_RANGES:
                q.append([s, e, bytearray(data), stamp])
            return
        i = bisect_left(q, s, key=_range_end)
        j = i
        n = len(q)
        while j < n and q[j][0] <= e:
            j += 1
        if i == j:
            if n >= MAX_RANGES:
                return  # not kept, not SACKed: the peer sends it again
            q.insert(i, [s, e, bytearray(data), stamp])
            return
        first = q[i]
        if j - i == 1 and first[0] <= s and e <= first[1]:
            first[3] = stamp  # all of it is held already
            return
        ns = first[0] if first[0] < s else s
        last = q[j - 1]
        ne = last[1] if last[1] > e else e
        buf = bytearray(ne - ns)
        buf[s - ns:e - ns] = data
        for r in q[i:j]:
            buf[r[0] - ns:r[1] - ns] = r[2]
        q[i:j] = [[ns, ne, buf, stamp]]

    def _on_fin(self, now: float) -> None:
        # RFC 9293 3.10.7.4, eighth check
        self.rcv_nxt += 1
        self._fin_received = True
        self._ooo_fin = None
        self._ack_now = True
        state = self.state
        if state is _ESTABLISHED or state is _SYN_RECEIVED:
            self.state = _CLOSE_WAIT
        elif state is _FIN_WAIT_1:
            fin_seq = self._fin_seq
            if fin_seq is not None and self.snd_una > fin_seq:
                self._enter_time_wait(now)
            else:
                self.state = _CLOSING  # simultaneous close
        elif state is _FIN_WAIT_2:
            self._enter_time_wait(now)

    def _sack_blocks(self) -> tuple[tuple[int, int], ...]:
        # RFC 2018 4: the block holding the latest segment first, then the most recent
        # others; 3 fit beside the timestamps, 4 without
        q = self._ooo
        if len(q) == 1:
            r = q[0]
            return ((r[0] & MASK, r[1] & MASK),)
        limit = 3 if self.ts_ok else 4
        rs = sorted(q, key=itemgetter(3), reverse=True)[:limit]
        return tuple((r[0] & MASK, r[1] & MASK) for r in rs)

    # -- output ------------------------------------------------------------------------
    def _window_field(self) -> int:
        """The window to advertise (scaled field), with receiver-side SWS avoidance
        (RFC 9293 3.8.6.2.2) and never moving the right edge back (3.8.6)."""
        free = self.rcvbuf - len(self._rcv_buf)
        rcv_nxt = self.rcv_nxt
        cur = self._rcv_adv - rcv_nxt
        if cur < 0:
            cur = 0
        wnd = free if free - cur >= self._rcv_sws else cur
        shift = self.rcv_wscale
        f = wnd >> shift
        if (f << shift) < cur:
            f += 1
        if f > 0xFFFF:
            f = 0xFFFF
        adv = rcv_nxt + (f << shift)
        if adv > self._rcv_adv:
            self._rcv_adv = adv
        return f
