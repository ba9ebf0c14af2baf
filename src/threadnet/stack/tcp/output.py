"""What a connection transmits: ``output(now)`` builds SYNs, data segments (up to
the TSO size), retransmissions, probes and ACKs, within the send window, the congestion
window and Nagle's rule.

A mixin of ``TcpConnection`` (connection.py), which holds the state in its slots."""

from __future__ import annotations

from threadnet.stack.tcp.segment import ACK, FIN, PSH, SYN, Segment
from threadnet.stack.tcp.seq import MASK
from threadnet.stack.tcp.state import (
    _CLOSED,
    _SENDING,
    _SYN_RECEIVED,
    _SYN_SENT,
    DUPTHRESH,
)


class TcpOutput:
    """How a connection builds the segments it transmits."""

    __slots__ = ()

    def _emit(self, out: list, seq: int, flags: int, payload, now: float) -> None:
        seg = Segment(seq & MASK, self.rcv_nxt & MASK, flags, self._window_field(), payload)
        if self.ts_ok:
            seg.ts_val = self._ts_clock(now)
            seg.ts_ecr = self.ts_recent
        if self._ooo and self.sack_ok:
            seg.sack_blocks = self._sack_blocks()
        out.append(seg)
        self._ack_now = False
        self._delack_deadline = None
        self._unacked_segs = 0
        self._last_ack_sent = self.rcv_nxt
        self.stats.segments_out += 1

    def _emit_syn(self, out: list, now: float) -> None:
        state = self.state
        flags = SYN if state is _SYN_SENT else SYN | ACK
        seg = Segment(self.iss, self.rcv_nxt & MASK if flags & ACK else 0, flags,
                      min(self.rcvbuf - len(self._rcv_buf), 0xFFFF), b"", self.mss)
        active = state is _SYN_SENT
        # RFC 7323 / 2018: a SYN-ACK carries an option only if the SYN did
        if self._want_wscale and (active or self.ws_ok):
            seg.wscale = self.rcv_wscale
        if self._want_sack and (active or self.sack_ok):
            seg.sack_permitted = True
        if self._want_ts and (active or self.ts_ok):
            seg.ts_val = self._ts_clock(now)
            seg.ts_ecr = self.ts_recent if flags & ACK else 0
        out.append(seg)
        self.stats.segments_out += 1
        if self.snd_max > self.iss:
            self.stats.retransmits += 1
        self.snd_nxt = self.snd_max = self.iss + 1
        self._need_syn = False
        self._ack_now = False
        self._delack_deadline = None
        self._last_ack_sent = self.rcv_nxt
        if self._rto_deadline is None:
            self._rto_deadline = now + self.rtt.rto
        if not self._syn_rexmit and self._rtt_seq is None and not self.ts_ok:
            self._rtt_seq = self.iss + 1
            self._rtt_time = now

    def output(self, now: float) -> list[Segment]:
        """Everything to transmit now, in order."""
        out = self._ctl_out
        if out:
            self._ctl_out = []
        else:
            out = []
        state = self.state
        if state is _CLOSED:
            return out
        if state is _SYN_SENT or state is _SYN_RECEIVED:
            if self._need_syn or (state is _SYN_RECEIVED and self._ack_now):
                self._emit_syn(out, now)
            return out
        if state in _SENDING:
            self._output_data(now, out)
            if self._probe_pending or self._ka_pending:
                # RFC 9293 3.8.6.1 / RFC 1122 4.2.3.6: a probe the peer must answer
                if self._ka_pending:
                    self.stats.keepalive_probes += 1
                self._probe_pending = self._ka_pending = False
                self._emit(out, self.snd_una - 1, ACK, b"", now)
        if self._ack_now:
            self._emit(out, self.snd_max, ACK, b"", now)
        return out

    def _output_data(self, now: float, out: list) -> None:
        mss = self.snd_mss
        buf = self._snd_buf
        buf_seq = self._snd_buf_seq
        data_end = buf_seq + len(buf)
        fin_seq = self._fin_seq
        snd_una = self.snd_una
        mv = memoryview(buf)
        try:
            if self._rtx_pending:
                # fast retransmit / partial ACK: the first unacknowledged segment, whatever
                # cwnd says (RFC 5681 3.2 (4), RFC 6582 3.2 (5))
                self._rtx_pending = False
                s = snd_una
                stop = None
                if self._sacked:
                    s, stop = self._next_unsacked(s)
                e = s + mss
                if stop is not None and e > stop:
                    e = stop
                if s < self.snd_max:
                    self._send_range(out, mv, s, e, data_end, now)
                    if e > self._high_rxt:
                        self._high_rxt = e
                    if self._undo_cc is not None and self._undo_ts is None:
                        self._undo_ts = self._ts_clock(now)
            if self._in_recovery and self.sack_ok:
                self._output_sack_recovery(now, out, mv, data_end)
                blocked_wnd = False
            else:
                blocked_wnd = self._output_window(now, out, mv, data_end, fin_seq)
        finally:
            mv.release()
        # timers: RTO while something is in flight, persist while a window blocks us
        if self.snd_nxt > self.snd_una:
            if self._rto_deadline is None:
                self._rto_deadline = now + self.rtt.rto
            self._persist_deadline = None
            self._persist_backoff = 0
        else:
            self._rto_deadline = None
            if blocked_wnd:
                if self._persist_deadline is None:
                    self._persist_deadline = now + self._persist_interval()
            else:
                self._persist_deadline = None
                self._persist_backoff = 0

    def _send_range(self, out: list, mv: memoryview, s: int, e: int, data_end: int,
                    now: float) -> int:
        """(Re)transmit [s, e) of the sequence space, with our FIN if it is at the end.
        Returns the sequence space covered."""
        fin_seq = self._fin_seq
        if e > data_end:
            e = data_end
        flags = ACK
        if s >= data_end:
            # nothing but the FIN
            if fin_seq is None or s != fin_seq:
                return 0
            self._emit(out, s, ACK | FIN, b"", now)
            end = s + 1
        else:
            off = self._snd_buf_seq
            payload = mv[s - off:e - off]
            if not self.payload_views:
                payload = payload.tobytes()
            if e == data_end:
                flags |= PSH
                if fin_seq is not None:
                    flags |= FIN
            self._emit(out, s, flags, payload, now)
            end = e + 1 if flags & FIN else e
        if s < self.snd_max:
            self.stats.retransmits += 1
            self.stats.retransmitted_bytes += end - s
            if self._rtt_seq is not None and s < self._rtt_seq:
                self._rtt_seq = None  # Karn: the timed segment was resent
        if end > self.snd_max:
            self.snd_max = end
        return end - s

    def _output_window(self, now: float, out: list, mv: memoryview, data_end: int,
                       fin_seq: int | None) -> bool:
        """Send from SND.NXT within min(cwnd, peer window). Returns True when the peer's
        window (or sender-side SWS avoidance) is what stopped us."""
        mss = self.snd_mss
        # a segment may carry several MSS for a link that cuts it up (TSO)
        seg_max = self.tso_max // mss * mss or mss
        snd_una = self.snd_una
        wnd_edge = snd_una + self.snd_wnd
        cwnd_edge = snd_una + self.cc.cwnd
        dupacks = self._dupacks
        if dupacks and not self._in_recovery and self.snd_nxt >= self.snd_max:
            # RFC 3042 limited transmit: a new segment for each of the first two duplicate
            # ACKs, so that a small window still produces three of them
            cwnd_edge += (dupacks if dupacks < DUPTHRESH else DUPTHRESH - 1) * mss
        limit = wnd_edge if wnd_edge < cwnd_edge else cwnd_edge
        sacked = self._sacked
        nodelay = self.nodelay
        snd_max = self.snd_max
        cwnd_limited = False
        blocked_wnd = False
        while True:
            nxt = self.snd_nxt
            stop = None
            if nxt < snd_max and sacked:
                # going back after a timeout: skip what the peer has SACKed since
                nxt, stop = self._next_unsacked(nxt)
                if nxt > self.snd_nxt:
                    self.snd_nxt = nxt
                if nxt >= snd_max:
                    continue
            avail = data_end - nxt
            if avail <= 0:
                if fin_seq is not None and nxt == fin_seq:
                    # the FIN needs no window (it may even go with a zero one)
                    self._send_range(out, mv, nxt, nxt + 1, data_end, now)
                    self.snd_nxt = fin_seq + 1
                break
            n = limit - nxt
            if n <= 0:
                if wnd_edge <= cwnd_edge:
                    blocked_wnd = True
                else:
                    cwnd_limited = True
                break
            if n > seg_max:
                n = seg_max
            if n > avail:
                n = avail
            if stop is not None and nxt + n > stop:
                n = stop - nxt
            if n > mss and n % mss and (n < avail or (
                    nxt > snd_una and nxt >= snd_max and not nodelay and fin_seq is None)):
                # a large segment is cut into MSS-sized ones: leave out a small tail the
                # window cuts off, or one that Nagle would hold back (Linux's
                # tcp_mss_split_point); it goes later as a segment of its own
                n -= n % mss
            if n < mss:
                if n < avail and stop is None:
                    # RFC 9293 3.8.6.2.1: sender SWS avoidance, a window-limited small
                    # segment waits unless it is at least half the largest window seen
                    if not self._sws_override and n < (self.max_snd_wnd >> 1):
                        if wnd_edge <= cwnd_edge:
                            blocked_wnd = True
                        else:
                            cwnd_limited = True
                        break
                elif nxt > snd_una and nxt >= snd_max and not nodelay and fin_seq is None:
                    # RFC 896 / 9293 3.7.4: Nagle, one small segment in flight at a time
                    break
            self._sws_override = False
            e = nxt + n
            timing = nxt >= snd_max and self._rtt_seq is None and not self.ts_ok
            self._send_range(out, mv, nxt, e, data_end, now)
            if e == data_end and fin_seq is not None:
                e += 1
            self.snd_nxt = e
            if e > snd_max:
                snd_max = e
            if timing:
                self._rtt_seq = e
                self._rtt_time = now
        # the sender used its window: cwnd may grow (RFC 7661's spirit; slow start needs
        # only half of it in use)
        flight = self.snd_nxt - snd_una
        self._cwnd_limited = cwnd_limited or 2 * flight >= self.cc.cwnd
        return blocked_wnd
