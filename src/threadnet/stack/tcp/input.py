"""Arriving segments: RFC 9293 3.10.7's checks in order, the fast path for
in-order data and pure ACKs (``input_data``), SYN-SENT, RFC 5961's challenge ACKs, and
the ACK's processing (RTT samples, window updates, duplicate ACKs, Eifel detection).

A mixin of ``TcpConnection`` (connection.py), which holds the state in its slots."""

from __future__ import annotations

import errno

from threadnet.stack.tcp.segment import ACK, FIN, RST, SYN, Segment
from threadnet.stack.tcp.seq import HALF as _HALF
from threadnet.stack.tcp.seq import MASK
from threadnet.stack.tcp.seq import SPACE as _SPACE
from threadnet.stack.tcp.seq import seq_unwrap as _unwrap
from threadnet.stack.tcp.state import (
    _CLOSED,
    _CLOSING,
    _ESTABLISHED,
    _FIN_WAIT_1,
    _FIN_WAIT_2,
    _LAST_ACK,
    _RECEIVING,
    _SYN_RECEIVED,
    _SYN_SENT,
    _TIME_WAIT,
    DUPTHRESH,
    PAWS_IDLE,
    TcpState,
)


class TcpInput:
    """How a connection takes arriving segments."""

    __slots__ = ()

    # -- input -------------------------------------------------------------------------
    def input_data(self, seq_w: int, ack_w: int, window: int, payload: memoryview | bytes,
                   ts_val: int | None, now: float) -> bool:
        """Header prediction for a bulk receiver (as BSD's tcp_input): a segment with
        ACK (and maybe PSH) only, carrying the next in-order data, acknowledging nothing
        new while nothing of ours is in flight, in ESTABLISHED with no out-of-order data
        held. Does exactly what ``input`` does for such a segment, without building a
        ``Segment`` or running the general checks; returns False (having done nothing)
        for any other segment, which then goes to ``input``. ``seq_w``/``ack_w`` are wire
        values, ``window`` the raw field, ``ts_val`` the TSval or None."""
        if self.state is not _ESTABLISHED or self._ooo or self._user_closed:
            return False
        rcv_nxt = self.rcv_nxt
        snd_una = self.snd_una
        plen = len(payload)
        if (seq_w != rcv_nxt & MASK or ack_w != snd_una & MASK or self.snd_max != snd_una
                or not plen or plen > self._rcv_adv - rcv_nxt or self.snd_wl1 >= rcv_nxt
                or window << self.snd_wscale != self.snd_wnd):
            return False
        if self.ts_ok:
            # RFC 7323 PAWS (R1) passes, then R3: TS.Recent from a segment at RCV.NXT
            if ts_val is None or (ts_val - self.ts_recent) & MASK >= _HALF:
                return False
            if rcv_nxt <= self._last_ack_sent:
                self.ts_recent = ts_val
                self._ts_recent_time = now
        self.stats.segments_in += 1
        self._last_rx = now
        self._ka_probes = 0
        self._persist_probes = 0
        # RFC 9293 3.10.7.4: the window update (SND.WL1 < SEG.SEQ), same window
        self.snd_wl1 = rcv_nxt
        self.snd_wl2 = snd_una
        self._input_text(rcv_nxt, payload, 0, now)
        return True

    def input(self, seg: Segment, now: float) -> None:
        """Process one arriving segment (RFC 9293 3.10.7)."""
        self.stats.segments_in += 1
        state = self.state
        if state is _ESTABLISHED:
            self._input_sync(seg, now, state)
        elif state is _SYN_SENT:
            self._input_syn_sent(seg, now)
        elif state is _CLOSED:
            if not seg.flags & RST:
                self._reply_rst(seg)  # RFC 9293 3.10.7.1
        else:
            self._input_sync(seg, now, state)

    def _reply_rst(self, seg: Segment) -> None:
        if seg.flags & ACK:
            self._ctl_out.append(Segment(seg.ack & MASK, 0, RST, 0))
        else:
            self._ctl_out.append(Segment(0, (seg.seq + seg.seg_len) & MASK, RST | ACK, 0))

    def _input_syn_sent(self, seg: Segment, now: float) -> None:
        # RFC 9293 3.10.7.3
        flags = seg.flags
        ack = 0
        if flags & ACK:
            ack = _unwrap(seg.ack & MASK, self.snd_una)
            if ack <= self.iss or ack > self.snd_max:
                if not flags & RST:
                    self._ctl_out.append(Segment(seg.ack & MASK, 0, RST, 0))
                self.stats.dropped += 1
                return
        if flags & RST:
            # RFC 5961 3.2 for SYN-SENT: only an RST that acknowledges our SYN counts
            if flags & ACK:
                self._fail(errno.ECONNREFUSED)
            return
        if not flags & SYN:
            self.stats.dropped += 1
            return
        self.irs = irs = seg.seq & MASK
        self.rcv_nxt = irs + 1
        self._negotiate(seg, now)
        self._rcv_adv = self.rcv_nxt + min(self.rcvbuf, 0xFFFF)
        self._last_rx = now
        self.snd_wnd = seg.window  # unscaled in a SYN
        self.max_snd_wnd = seg.window
        self.snd_wl1 = irs
        if flags & ACK:
            self.snd_wl2 = ack
            self._take_rtt_sample(seg, ack, now)
            self.snd_una = ack
            self._enter_established(now)
            self._ack_now = True
            payload = seg.payload
            if payload or flags & FIN:
                self._input_text(irs + 1, payload, flags & FIN, now)
        else:
            # simultaneous open: answer with SYN-ACK, go to SYN-RECEIVED
            self.snd_wl2 = self.snd_una
            self.state = _SYN_RECEIVED
            self._need_syn = True

    def _challenge_ack(self, now: float) -> None:
        # RFC 5961 7: a bounded number of challenge ACKs per second
        if now - self._chal_start >= 1.0:
            self._chal_start = now
            self._chal_count = 0
        if self._chal_count < self.challenge_ack_limit:
            self._chal_count += 1
            self._ack_now = True
            self.stats.challenge_acks += 1

    def _input_sync(self, seg: Segment, now: float, state: TcpState) -> None:
        """SYN-RECEIVED and the synchronized states (RFC 9293 3.10.7.4)."""
        flags = seg.flags
        rcv_nxt = self.rcv_nxt
        d = (seg.seq - rcv_nxt) & MASK
        if d >= _HALF:
            d -= _SPACE
        seq = rcv_nxt + d
        payload = seg.payload
        plen = len(payload)
        fin = flags & FIN
        syn = flags & SYN
        rst = flags & RST

        # RFC 7323 5.3 R1: PAWS, before anything else
        tsv = None
        if self.ts_ok:
            tsv = seg.ts_val
            if tsv is None:
                if not rst:  # RFC 7323 3.2: non-RST segments without TSopt are dropped
                    self.stats.dropped += 1
                    return
            else:
                tsv &= MASK
                if not rst and (tsv - self.ts_recent) & MASK >= _HALF and \
                        not self._disordered_ack(seg, d, plen, tsv):
                    if now - self._ts_recent_time > PAWS_IDLE:
                        self.ts_recent = tsv  # RFC 7323 5.5: TS.Recent too old to trust
                    else:
                        self.stats.paws_drops += 1
                        self._ack_now = True
                        return

        if syn and not rst:
            if state is _SYN_RECEIVED and d < 0:
                # our peer's SYN again (a retransmission, or the SYN-ACK of a simultaneous
                # open): trim it off (RFC 9293 3.10.7.4, "idealized segment")
                seq += 1
                syn = 0
                if not flags & ACK:
                    self._ack_now = True  # resend our SYN-ACK
                    return
            elif state is _SYN_RECEIVED and self.passive:
                # RFC 9293: a new SYN in SYN-RECEIVED from a passive open goes back to the
                # listener; this connection is abandoned
                self.error = errno.ECONNRESET
                self._enter_closed()
                return
            else:
                # RFC 5961 4.2: a SYN in a synchronized state, whatever its sequence number
                self._challenge_ack(now)
                return

        # RFC 9293 3.10.7.4, first check: acceptability
        seg_len = plen + (1 if fin else 0) + (1 if syn else 0)
        wnd = self._rcv_adv - rcv_nxt
        if wnd < 0:
            wnd = 0
        dd = seq - rcv_nxt
        if seg_len == 0:
            # the right edge is accepted too (as Linux does): a pure ACK from a peer that
            # has filled our window exactly starts there
            ok = 0 <= dd <= wnd
        elif wnd == 0:
            ok = False
        else:
            ok = (0 <= dd < wnd) or (0 <= dd + seg_len - 1 < wnd)
        if not ok:
            if rst:
                return
            self._ack_now = True
            if state is _TIME_WAIT and fin:
                self._timewait_deadline = now + 2 * self.msl
            if wnd == 0 and dd == 0 and flags & ACK:
                # RFC 9293: with a zero window, still process valid ACKs (and drop text);
                # a bare FIN needs no buffer space, so it is taken too (as Linux does)
                if plen:
                    fin = 0
                payload = b""
                plen = 0
            else:
                self.stats.dropped += 1
                return

        # RFC 7323 4.3 R3: remember the timestamp to echo
        if tsv is not None and seq <= self._last_ack_sent and \
                (tsv - self.ts_recent) & MASK < _HALF:
            self.ts_recent = tsv
            self._ts_recent_time = now

        # second check: RST (RFC 5961 3.2)
        if rst:
            if seq == rcv_nxt:
                self._on_reset(state)
            else:
                self._challenge_ack(now)
            return

        self._last_rx = now
        self._ka_probes = 0
        self._persist_probes = 0

        # fifth check: ACK
        if not flags & ACK:
            self.stats.dropped += 1
            return
        snd_una = self.snd_una
        ack = _unwrap(seg.ack & MASK, snd_una)
        if state is _SYN_RECEIVED:
            if snd_una < ack <= self.snd_max:
                self._enter_established(now)
                state = self.state
                self.snd_wnd = seg.window if flags & SYN else seg.window << self.snd_wscale
                self.snd_wl1 = seq
                self.snd_wl2 = ack
                if self.snd_wnd > self.max_snd_wnd:
                    self.max_snd_wnd = self.snd_wnd
            else:
                self._ctl_out.append(Segment(seg.ack & MASK, 0, RST, 0))
                self.stats.dropped += 1
                return
        # RFC 5961 5.2: acceptable ACKs lie in [SND.UNA - MAX.SND.WND, SND.NXT]
        if ack > self.snd_max or ack < snd_una - self.max_snd_wnd:
            self._challenge_ack(now)
            self.stats.dropped += 1
            return
        self._input_ack(seg, seq, ack, plen, now)
        if self.closed:
            return

        # our FIN acknowledged?
        fin_seq = self._fin_seq
        if fin_seq is not None and self.snd_una > fin_seq:
            if state is _FIN_WAIT_1:
                self.state = state = _FIN_WAIT_2
                self._rto_deadline = None
                if self._user_closed:
                    self._fw2_deadline = now + self.fin_wait2_timeout
            elif state is _CLOSING:
                self._enter_time_wait(now)
                return
            elif state is _LAST_ACK:
                self._enter_closed()
                return

        # seventh check: segment text; eighth: FIN
        if plen or fin:
            if state in _RECEIVING:
                if plen and self._user_closed:
                    # RFC 1122 4.2.2.13: data for a closed socket is answered with a reset
                    self._ctl_out.append(Segment(self.snd_max & MASK, self.rcv_nxt & MASK,
                                                 RST | ACK, 0))
                    self._enter_closed()
                    return
                self._input_text(seq, payload, fin, now)
            elif fin:
                # CLOSE-WAIT, CLOSING, LAST-ACK, TIME-WAIT: the FIN again
                self._ack_now = True
                if state is _TIME_WAIT:
                    self._timewait_deadline = now + 2 * self.msl
            elif plen:
                self._ack_now = True

    def _disordered_ack(self, seg: Segment, d: int, plen: int, tsv: int) -> bool:
        # A duplicate ACK overtaken by a later one carries an older TSval; dropping it
        # would lose a duplicate ACK that fast retransmit counts. Like Linux, PAWS lets
        # through a pure duplicate ACK at RCV.NXT that changes no window and lags by less
        # than one RTO.
        return (d == 0 and not plen and seg.flags & (SYN | FIN | ACK) == ACK
                and (seg.ack - self.snd_una) & MASK == 0
                and seg.window << self.snd_wscale == self.snd_wnd
                and (self.ts_recent - tsv) & MASK <= self.rtt.rto * 1000.0)

    def _on_reset(self, state: TcpState) -> None:
        # RFC 9293 3.10.7.4 second check, per state
        if state is _SYN_RECEIVED:
            self._fail(errno.ECONNRESET if self.passive else errno.ECONNREFUSED)
        elif state is _CLOSING or state is _LAST_ACK or state is _TIME_WAIT:
            self._enter_closed()
        else:
            self._fail(errno.ECONNRESET)

    def _take_rtt_sample(self, seg: Segment, ack: int, now: float) -> None:
        if self.ts_ok:
            ecr = seg.ts_ecr
            if ecr is not None:
                rtx = self._rtx_ts
                if rtx is not None:
                    if (ecr - rtx) & MASK >= _HALF:
                        # The echo predates our last timeout retransmission: the peer
                        # answered a duplicate with an old TS.Recent (RFC 7323 4.3), and the
                        # sample would span the timeout. With backoff such samples feed
                        # on themselves up to max_rto, so (Karn's rule, as for Linux's
                        # retrans_stamp) they are not taken.
                        return
                    self._rtx_ts = None
                ms = (self._ts_clock(now) - ecr) & MASK
                if ms < 600_000:  # an echo from the future or absurdly old is ignored
                    self.rtt.sample(ms / 1000.0)
        elif self._rtt_seq is not None and ack >= self._rtt_seq:
            self.rtt.sample(now - self._rtt_time)
            self._rtt_seq = None

    def _ts_clock(self, now: float) -> int:
        # RFC 7323 5.4: a 1 ms clock with a random offset
        return (int(now * 1000.0) + self._ts_offset) & MASK

    def _input_ack(self, seg: Segment, seq: int, ack: int, plen: int, now: float) -> None:
        """The ACK field of an acceptable segment (RFC 9293 3.10.7.4, fifth check)."""
        snd_una = self.snd_una
        flags = seg.flags
        wnd = seg.window if flags & SYN else seg.window << self.snd_wscale
        newly_sacked = 0
        if self.sack_ok and seg.sack_blocks:
            newly_sacked = self._update_scoreboard(seg.sack_blocks, ack if ack > snd_una else snd_una)
        cc = self.cc
        if ack > snd_una:
            acked = ack - snd_una
            buf_seq = self._snd_buf_seq
            data_acked = 0
            if ack > buf_seq:
                end = buf_seq + len(self._snd_buf)
                data_acked = (ack if ack < end else end) - buf_seq
                if data_acked > 0:
                    del self._snd_buf[:data_acked]
                    self._snd_buf_seq = buf_seq + data_acked
            self.snd_una = ack
            if self.snd_nxt < ack:
                self.snd_nxt = ack
            self._retries = 0
            self._take_rtt_sample(seg, ack, now)
            sacked = self._sacked
            if sacked:
                while sacked and sacked[0][1] <= ack:
                    del sacked[0]
                if sacked and sacked[0][0] < ack:
                    sacked[0][0] = ack
            if self._undo_ts is not None:
                self._check_spurious(seg, ack)
                cc = self.cc
            if self._in_recovery:
                if ack >= self._recover:
                    # recovery ends: RFC 6582 3.2 (full ACK) / RFC 6675 5
                    self._in_recovery = False
                    self._dupacks = 0
                    if self.sack_ok:
                        cc.cwnd = cc.ssthresh
                    else:
                        flight = self.snd_max - ack
                        cc.cwnd = min(cc.ssthresh, max(flight, self.snd_mss) + self.snd_mss)
                elif not self.sack_ok:
                    # RFC 6582 3.2 (5): partial ACK, retransmit the next hole and deflate
                    self._rtx_pending = True
                    cwnd = cc.cwnd - acked
                    if acked >= self.snd_mss:
                        cwnd += self.snd_mss
                    cc.cwnd = cwnd if cwnd > self.snd_mss else self.snd_mss
            else:
                self._dupacks = 0
                if data_acked > 0 and self._cwnd_limited:
                    cc.on_ack(data_acked, self.rtt.srtt, now)
            # RFC 6298 5.2/5.3: stop the timer when all is acknowledged, else restart it
            if self.snd_nxt > ack:
                self._rto_deadline = now + self.rtt.rto
            else:
                self._rto_deadline = None
            self.stats.bytes_out += data_acked
        elif ack == snd_una and self.snd_max > snd_una and not plen and \
                not flags & (SYN | FIN) and (wnd == self.snd_wnd or newly_sacked):
            # RFC 5681 2: a duplicate ACK
            self._dupacks += 1
            self.stats.dup_acks_in += 1
            if self._in_recovery:
                if not self.sack_ok:
                    cc.cwnd += self.snd_mss  # RFC 6582 3.2 (4): inflate
            elif snd_una >= self._recover and (
                    self._dupacks >= DUPTHRESH or
                    (self.sack_ok and self._sacked and self._lost_edge() > snd_una)):
                self._enter_recovery(now)
        # RFC 9293 3.10.7.4: update the send window from the newest segment
        if ack >= self.snd_una and (self.snd_wl1 < seq or
                                    (self.snd_wl1 == seq and self.snd_wl2 <= ack)):
            self.snd_wnd = wnd
            self.snd_wl1 = seq
            self.snd_wl2 = ack
            if wnd > self.max_snd_wnd:
                self.max_snd_wnd = wnd

    def _check_spurious(self, seg: Segment, ack: int) -> None:
        # RFC 3522 Eifel detection, on the first ACK that acknowledges the fast
        # retransmission (it went out at SND.UNA): when that ACK echoes a timestamp older
        # than the retransmission's, the original filled the hole (the receiver takes
        # TS.Recent from the segment that fills it), so the loss was reordering. RFC 4015:
        # undo the reduction and leave recovery; holes truly lost start a new one.
        undo = self._undo_cc
        ecr = seg.ts_ecr
        rtx = self._undo_ts
        self._undo_cc = self._undo_ts = None
        if undo is None or ecr is None or not self._in_recovery or ecr == rtx \
                or (rtx - ecr) & MASK >= _HALF:
            return
        self.cc = undo
        self._in_recovery = False
        self._recover = ack
        self._dupacks = 0
        self.stats.spurious_recoveries += 1
