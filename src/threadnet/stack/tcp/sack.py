"""Loss recovery with SACK (RFC 6675): the sender's scoreboard of SACKed ranges,
IsLost, pipe, NextSeg, and the recovery's output; NewReno (RFC 6582) without SACK.

A mixin of ``TcpConnection`` (connection.py), which holds the state in its slots."""

from __future__ import annotations

import copy
from bisect import bisect_left

from threadnet.stack.tcp.seq import MASK
from threadnet.stack.tcp.seq import seq_unwrap as _unwrap
from threadnet.stack.tcp.state import (
    DUPTHRESH,
    MAX_RANGES,
    _range_end,
)


class SackRecovery:
    """Fast recovery and the SACK scoreboard of a connection."""

    __slots__ = ()

    def _enter_recovery(self, now: float) -> None:
        # RFC 5681 3.2 / 6582 3.2 / 6675 5 (4)
        cc = self.cc
        self._undo_cc = copy.copy(cc) if self.ts_ok else None
        self._undo_ts = None
        cc.on_loss_fast(now, self.snd_max - self.snd_una)
        self._in_recovery = True
        self._recover = self.snd_max
        self._rtx_pending = True
        self._high_rxt = self.snd_una
        if not self.sack_ok:
            cc.cwnd = cc.ssthresh + DUPTHRESH * self.snd_mss
        self._rtt_seq = None
        self.stats.fast_recoveries += 1

    # -- SACK scoreboard (RFC 6675) --------------------------------------------------------
    def _update_scoreboard(self, blocks, una: int) -> int:
        """Merge the peer's SACK blocks; returns how many bytes became SACKed."""
        snd_max = self.snd_max
        added = 0
        for block in blocks[:4]:
            try:
                left_w, right_w = block
                left = _unwrap(left_w & MASK, una)
                right = _unwrap(right_w & MASK, una)
            except (TypeError, ValueError):
                continue
            if left < una:
                left = una  # a D-SACK or stale block: only what is above SND.UNA
            if right <= left or right > snd_max:
                continue
            added += self._sack_insert(left, right)
        return added

    def _sack_insert(self, left: int, right: int) -> int:
        sacked = self._sacked
        i = bisect_left(sacked, left, key=_range_end)  # first range ending at/after left
        j = i
        covered = 0
        n = len(sacked)
        while j < n and sacked[j][0] <= right:
            r = sacked[j]
            lo = r[0] if r[0] > left else left
            hi = r[1] if r[1] < right else right
            if hi > lo:
                covered += hi - lo
            j += 1
        if i == j:
            if n >= MAX_RANGES:
                return 0
            sacked.insert(i, [left, right])
            return right - left
        new_left = min(left, sacked[i][0])
        new_right = max(right, sacked[j - 1][1])
        sacked[i:j] = [[new_left, new_right]]
        return (right - left) - covered

    def _lost_edge(self) -> int:
        """Every un-SACKed byte below this is lost (RFC 6675 IsLost: DupThresh SACKed
        ranges above it, or more than (DupThresh - 1) * SMSS SACKed bytes)."""
        limit = (DUPTHRESH - 1) * self.snd_mss
        acc = 0
        count = 0
        for r in reversed(self._sacked):
            acc += r[1] - r[0]
            count += 1
            if count >= DUPTHRESH or acc > limit:
                return r[0]
        return self.snd_una

    def _sacked_between(self, a: int, b: int) -> int:
        total = 0
        for lo, hi in self._sacked:
            if hi <= a:
                continue
            if lo >= b:
                break
            total += (hi if hi < b else b) - (lo if lo > a else a)
        return total

    def _next_unsacked(self, s: int) -> tuple[int, int | None]:
        """The first un-SACKed sequence number at or after ``s`` and where the next SACKed
        range starts after it (None if there is none)."""
        for lo, hi in self._sacked:
            if hi <= s:
                continue
            if lo <= s:
                s = hi
                continue
            return s, lo
        return s, None

    def _pipe(self, lost_edge: int) -> int:
        # RFC 6675 4 SetPipe: un-SACKed bytes not deemed lost, plus retransmitted bytes
        una = self.snd_una
        hi = self.snd_max
        lost = lost_edge if lost_edge > una else una
        if lost > hi:
            lost = hi
        rxt = self._high_rxt
        if rxt < una:
            rxt = una
        elif rxt > hi:
            rxt = hi
        return ((hi - lost) - self._sacked_between(lost, hi)
                + (rxt - una) - self._sacked_between(una, rxt))

    def _retransmit_hole(self, out: list, mv: memoryview, s: int, stop: int | None, mss: int,
                         data_end: int, now: float) -> int:
        """RFC 6675 NextSeg: resend up to one MSS of the hole at ``s``; returns bytes sent."""
        e = s + mss
        if stop is not None and e > stop:
            e = stop
        sent = self._send_range(out, mv, s, e, data_end, now)
        self._high_rxt = e
        return sent
    def _output_sack_recovery(self, now: float, out: list, mv: memoryview,
                              data_end: int) -> None:
        """RFC 6675 5 (C): send while cwnd - pipe >= 1 SMSS, choosing with NextSeg."""
        mss = self.snd_mss
        cwnd = self.cc.cwnd
        lost_edge = self._lost_edge()
        pipe = self._pipe(lost_edge)
        fin_seq = self._fin_seq
        wnd_edge = self.snd_una + self.snd_wnd
        high_sacked = self._sacked[-1][1] if self._sacked else self.snd_una
        while cwnd - pipe >= mss:
            base = self._high_rxt if self._high_rxt > self.snd_una else self.snd_una
            s, stop = self._next_unsacked(base)
            if s < lost_edge:
                # (1) the first lost, not yet retransmitted hole
                pipe += self._retransmit_hole(out, mv, s, stop, mss, data_end, now)
                continue
            nxt = self.snd_nxt
            if nxt < data_end and nxt < wnd_edge:
                # (2) new data
                e = nxt + mss
                if e > data_end:
                    e = data_end
                if e > wnd_edge:
                    e = wnd_edge
                sent = self._send_range(out, mv, nxt, e, data_end, now)
                self.snd_nxt = nxt + sent
                pipe += sent
                continue
            if nxt == data_end and fin_seq is not None and nxt == fin_seq:
                self._send_range(out, mv, nxt, nxt + 1, data_end, now)
                self.snd_nxt = fin_seq + 1
                pipe += 1
                continue
            if s < high_sacked:
                # (3) an un-SACKed hole below the highest SACKed byte, not yet deemed lost
                pipe += self._retransmit_hole(out, mv, s, stop, mss, data_end, now)
                continue
            break
