"""One TCP connection's state machine (RFC 9293), sans-IO.

The caller feeds received segments with ``input(seg, now)``, collects what to transmit
with ``output(now)``, asks ``next_timer()`` when it must call ``on_timer(now)`` next, and
moves application data with ``send``/``recv``. Nothing here reads a clock, sleeps or
touches a socket, so a test can drive two connections through a simulated network on
fake time.

Inside, sequence numbers are *unwrapped*: plain ints that start at the 32-bit ISS/IRS and
keep growing, so comparisons are ordinary integer comparisons. They are wrapped (``&
MASK``) when a segment is built and unwrapped against SND.UNA or RCV.NXT when one
arrives. ``snd_nxt`` is where the next transmission starts (it goes back to ``snd_una``
after a retransmission timeout); ``snd_max`` is the highest sequence number sent.

What is implemented, by RFC:

- 9293: the states, the acceptability test, SND.WL1/WL2 window updates, simultaneous
  open and close, TIME-WAIT, receiver and sender silly window avoidance, Nagle (RFC 896);
- 5961: challenge ACKs for in-window RSTs and for SYNs, the ACK acceptability range with
  MAX.SND.WND, a per-connection challenge ACK rate limit;
- 7323: window scaling (shift chosen from the receive buffer), timestamps for RTT and PAWS;
- 2018/6675: SACK blocks (most recent first) and the sender's scoreboard, pipe, NextSeg;
- 5681/6582/3042: fast retransmit on three duplicate ACKs, NewReno partial ACKs, limited
  transmit;
- 3522/4015: Eifel detection of a spurious fast retransmit (the ACK for the retransmitted
  data echoes the original's timestamp: reordering, not loss) and the undo of the window
  reduction;
- 6298: the RTO with backoff (``rtt.py``); 1122: delayed ACK, keepalive, zero-window
  probes (sent as Linux does: an ACK with SEG.SEQ = SND.UNA - 1, which any peer answers).

Deviations, all as Linux behaves: a zero-length segment at the right window edge is
acceptable; a bare FIN is taken at a zero window; PAWS passes reordered duplicate ACKs.

Not implemented: urgent data (URG is ignored, the data is delivered inline), ECN, D-SACK,
TCP Fast Open, RACK/TLP loss detection, RFC 1337 TIME-WAIT assassination protection (an
exact RST in TIME-WAIT closes it, as RFC 9293 says).
"""

from __future__ import annotations

import copy
import errno
import os
import random
from bisect import bisect_left
from enum import StrEnum
from operator import itemgetter

from threadnet.stack.tcp.congestion import CONGESTION, CongestionControl
from threadnet.stack.tcp.rtt import RttEstimator
from threadnet.stack.tcp.segment import ACK, FIN, PSH, RST, SYN, Segment
from threadnet.stack.tcp.seq import HALF as _HALF
from threadnet.stack.tcp.seq import MASK
from threadnet.stack.tcp.seq import SPACE as _SPACE
from threadnet.stack.tcp.seq import seq_unwrap as _unwrap

#: RFC 7323 5.5: a TS.Recent idle this long is no longer used for PAWS
PAWS_IDLE = 24 * 86400.0
#: RFC 9293 3.7.1: the MSS assumed when the SYN has no MSS option (IPv4)
DEFAULT_MSS = 536
#: smallest MSS accepted from a peer (smaller values would make absurdly many segments)
MIN_MSS = 64
#: RFC 6675 DupThresh
DUPTHRESH = 3
#: the Timestamps option, with its two NOPs, in every segment once negotiated
TS_OPTION_LEN = 12
#: most disjoint ranges held out of order, and in the SACK scoreboard: the window bounds
#: the bytes, this bounds the bookkeeping a peer can make us keep (1-byte islands)
MAX_RANGES = 128
#: persist (zero-window probe) interval bounds
PERSIST_MIN = 0.2
PERSIST_MAX = 60.0


class TcpState(StrEnum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


_CLOSED = TcpState.CLOSED
_SYN_SENT = TcpState.SYN_SENT
_SYN_RECEIVED = TcpState.SYN_RECEIVED
_ESTABLISHED = TcpState.ESTABLISHED
_FIN_WAIT_1 = TcpState.FIN_WAIT_1
_FIN_WAIT_2 = TcpState.FIN_WAIT_2
_CLOSE_WAIT = TcpState.CLOSE_WAIT
_CLOSING = TcpState.CLOSING
_LAST_ACK = TcpState.LAST_ACK
_TIME_WAIT = TcpState.TIME_WAIT

#: states in which segments may carry our data (or retransmit it, and our FIN)
_SENDING = frozenset((_ESTABLISHED, _CLOSE_WAIT, _FIN_WAIT_1, _CLOSING, _LAST_ACK))
#: states in which arriving data is accepted (RFC 9293 3.10.7.4, seventh check)
_RECEIVING = frozenset((_ESTABLISHED, _FIN_WAIT_1, _FIN_WAIT_2))

_range_end = itemgetter(1)


class TcpStats:
    """Per-connection counters."""

    __slots__ = ("segments_in", "segments_out", "bytes_in", "bytes_out", "retransmits",
                 "retransmitted_bytes", "fast_recoveries", "timeouts", "dup_acks_in",
                 "ooo_segments_in", "challenge_acks", "zero_window_probes",
                 "keepalive_probes", "paws_drops", "dropped", "spurious_recoveries")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "<TcpStats " + " ".join(f"{k}={v}" for k, v in self.as_dict().items() if v) + ">"


class TcpConnection:
    """One connection: RFC 9293's state machine, congestion control and timers.

    Output is pulled: ``connect``, ``listen_accept``, ``input``, ``on_timer``, ``send``,
    ``recv``, ``shutdown_write``, ``close`` and ``abort`` only change state; ``output(now)``
    returns the segments to transmit (call it after any of them). ``next_timer()`` is the
    absolute time at which ``on_timer`` must run, or None.

    Socket-facing state: ``state``, ``readable``, ``writable_space``, ``error`` (an errno:
    ECONNREFUSED, ECONNRESET, ETIMEDOUT), ``established`` (the handshake completed at some
    point), ``closed`` (nothing more will happen: the stack may forget the connection once
    it has flushed ``output``) and ``stats``.
    """

    __slots__ = (
        # configuration
        "mss", "rcvbuf", "sndbuf", "nodelay", "msl", "max_retries", "syn_retries",
        "synack_retries", "keepalive", "keepalive_idle", "keepalive_interval",
        "keepalive_count", "delack_timeout", "fin_wait2_timeout", "challenge_ack_limit",
        "_want_wscale", "_want_sack", "_want_ts", "_cc_name", "_rng", "payload_views",
        "stretch_acks", "tso_max",
        # state
        "state", "passive", "error", "closed", "established", "stats",
        "_user_closed", "_wr_shut",
        # send sequence space
        "iss", "snd_una", "snd_nxt", "snd_max", "snd_wnd", "snd_wl1", "snd_wl2",
        "max_snd_wnd", "snd_mss", "snd_wscale", "rcv_wscale", "ws_ok", "sack_ok", "ts_ok",
        "peer_mss", "_snd_buf", "_snd_buf_seq", "_fin_seq",
        # receive sequence space
        "irs", "rcv_nxt", "_rcv_adv", "_rcv_buf", "_rcv_sws", "_ooo", "_ooo_stamp",
        "_ooo_fin", "_fin_received", "ts_recent", "_ts_recent_time", "_last_ack_sent",
        "_ts_offset",
        # ACK generation
        "_ack_now", "_delack_deadline", "_unacked_segs",
        # timers
        "_rto_deadline", "_persist_deadline", "_persist_backoff", "_persist_probes",
        "_timewait_deadline", "_fw2_deadline", "_last_rx", "_ka_probes", "_ka_last",
        # RTT, retransmission, recovery
        "rtt", "cc", "_rtt_seq", "_rtt_time", "_rtx_ts", "_retries", "_syn_rexmit", "_dupacks",
        "_in_recovery", "_recover", "_rtx_pending", "_sacked", "_high_rxt",
        "_cwnd_limited", "_undo_cc", "_undo_ts", "_probe_pending", "_ka_pending", "_sws_override",
        # output
        "_ctl_out", "_need_syn", "_chal_start", "_chal_count",
    )

    def __init__(self, now: float, *, iss: int | None = None, ts_offset: int | None = None,
                 mss: int = 1460,
                 rcvbuf: int = 256 * 1024, sndbuf: int = 256 * 1024, cc: str = "cubic",
                 nodelay: bool = False, wscale: bool = True, sack: bool = True,
                 timestamps: bool = True, rng: random.Random | None = None,
                 msl: float = 30.0, min_rto: float = 0.2, max_rto: float = 120.0,
                 initial_rto: float = 1.0, max_retries: int = 15, syn_retries: int = 6,
                 synack_retries: int = 5, keepalive: bool = False,
                 keepalive_idle: float = 7200.0, keepalive_interval: float = 75.0,
                 keepalive_count: int = 9, delack_timeout: float = 0.04,
                 fin_wait2_timeout: float = 60.0, challenge_ack_limit: int = 100) -> None:
        if cc not in CONGESTION:
            raise ValueError(f"unknown congestion control {cc!r} (known: {sorted(CONGESTION)})")
        if mss < MIN_MSS:
            raise ValueError(f"mss must be at least {MIN_MSS}")
        if rcvbuf < 1 or sndbuf < 1:
            raise ValueError("buffer sizes must be positive")
        self.mss = mss
        #: largest segment ``output`` may make, in payload bytes, for a link that cuts it
        #: up itself (TSO); 0 or anything below the MSS means one MSS
        self.tso_max = 0
        self.rcvbuf = rcvbuf
        self.sndbuf = sndbuf
        self.nodelay = nodelay
        self.msl = msl
        self.max_retries = max_retries
        self.syn_retries = syn_retries
        self.synack_retries = synack_retries
        self.keepalive = keepalive
        self.keepalive_idle = keepalive_idle
        self.keepalive_interval = keepalive_interval
        self.keepalive_count = keepalive_count
        self.delack_timeout = delack_timeout
        self.fin_wait2_timeout = fin_wait2_timeout
        self.challenge_ack_limit = challenge_ack_limit
        self._want_wscale = wscale
        self._want_sack = sack
        self._want_ts = timestamps
        self._cc_name = cc
        self._rng = rng = rng if rng is not None else random.Random()
        #: segments from ``output`` carry views of the send buffer instead of copies; the
        #: caller must drop them (``segs.clear()``) before the next call into the connection
        self.payload_views = False
        #: a caller that feeds segments in batches and calls ``output`` after each batch
        #: may set this: once the first receive buffer's worth of data has arrived (the
        #: peer's slow start, which counts ACKs), in-order data is acknowledged once per
        #: batch instead of every second segment (out-of-order segments still get one
        #: duplicate ACK each)
        self.stretch_acks = False

        self.state = _CLOSED
        self.passive = False
        self.error: int | None = None
        self.closed = False
        self.established = False
        self.stats = TcpStats()
        self._user_closed = False
        self._wr_shut = False

        self.iss = iss = (iss if iss is not None else rng.getrandbits(32)) & MASK
        self.snd_una = self.snd_nxt = self.snd_max = iss
        self.snd_wnd = 0
        self.snd_wl1 = 0
        self.snd_wl2 = iss
        self.max_snd_wnd = 0
        self.snd_mss = min(mss, DEFAULT_MSS)
        self.snd_wscale = 0
        # RFC 7323 2.3: the smallest shift that lets the window cover the receive buffer
        shift = 0
        while shift < 14 and (rcvbuf >> shift) > 0xFFFF:
            shift += 1
        self.rcv_wscale = shift if wscale else 0
        self.ws_ok = False
        self.sack_ok = False
        self.ts_ok = False
        self.peer_mss = DEFAULT_MSS
        self._snd_buf = bytearray()
        self._snd_buf_seq = iss + 1  # sequence number of _snd_buf[0]; the SYN takes ISS
        self._fin_seq: int | None = None  # where our FIN goes, once shut down

        self.irs = 0
        self.rcv_nxt = 0
        self._rcv_adv = 0  # right edge of the window we last advertised
        self._rcv_buf = bytearray()
        self._rcv_sws = min(rcvbuf // 2, mss)
        self._ooo: list[list] = []  # [start, end, bytearray, stamp], sorted and disjoint
        self._ooo_stamp = 0
        self._ooo_fin: int | None = None
        self._fin_received = False
        self.ts_recent = 0
        self._ts_recent_time = now
        self._last_ack_sent = 0
        # RFC 7323 5.4: a random offset; a stack gives one per address pair (as Linux
        # does), so that one host's timestamps keep growing from connection to connection
        self._ts_offset = (ts_offset if ts_offset is not None else rng.getrandbits(32)) & MASK

        self._ack_now = False
        self._delack_deadline: float | None = None
        self._unacked_segs = 0

        self._rto_deadline: float | None = None
        self._persist_deadline: float | None = None
        self._persist_backoff = 0
        self._persist_probes = 0
        self._timewait_deadline: float | None = None
        self._fw2_deadline: float | None = None
        self._last_rx = now
        self._ka_probes = 0
        self._ka_last = now

        self.rtt = RttEstimator(initial_rto=initial_rto, min_rto=min_rto, max_rto=max_rto)
        self.cc: CongestionControl = CONGESTION[cc](self.snd_mss)
        self._rtt_seq: int | None = None
        self._rtt_time = 0.0
        self._rtx_ts: int | None = None  # TSval of the last timeout retransmission
        self._retries = 0
        self._syn_rexmit = False
        self._dupacks = 0
        self._in_recovery = False
        self._recover = iss
        self._rtx_pending = False
        self._sacked: list[list[int]] = []  # SACK scoreboard: sorted disjoint [left, right)
        self._high_rxt = iss
        # RFC 3522: the controller as it was before a fast recovery, and the TSval of that
        # recovery's first retransmission (while its verdict is pending)
        self._undo_cc: CongestionControl | None = None
        self._undo_ts: int | None = None
        self._cwnd_limited = True
        self._probe_pending = False
        self._ka_pending = False
        self._sws_override = False

        self._ctl_out: list[Segment] = []
        self._need_syn = False
        self._chal_start = now
        self._chal_count = 0

    # -- socket-facing state -----------------------------------------------------------
    @property
    def readable(self) -> bool:
        """``recv`` would return data or EOF, or raise the connection's error."""
        return bool(self._rcv_buf) or self._fin_received or self.error is not None

    @property
    def writable_space(self) -> int:
        """Free room in the send buffer (0 once writing is no longer possible)."""
        if self._wr_shut or self.closed or self.error is not None or self.state is _CLOSED:
            return 0
        return max(self.sndbuf - len(self._snd_buf), 0)

    @property
    def bytes_in_flight(self) -> int:
        """Sent and not yet acknowledged (sequence space, SYN and FIN included)."""
        return self.snd_max - self.snd_una

    @property
    def send_queued(self) -> int:
        """Bytes in the send buffer: unacknowledged plus not yet sent."""
        return len(self._snd_buf)

    @property
    def recv_queued(self) -> int:
        """In-order bytes waiting for ``recv``."""
        return len(self._rcv_buf)

    @property
    def eof(self) -> bool:
        """The peer's FIN was received and everything before it has been read."""
        return self._fin_received and not self._rcv_buf

    def __repr__(self) -> str:
        return (f"<TcpConnection {self.state} una={self.snd_una & MASK} nxt={self.snd_nxt & MASK}"
                f" rcv_nxt={self.rcv_nxt & MASK} cwnd={self.cc.cwnd} wnd={self.snd_wnd}>")

    # -- opening -----------------------------------------------------------------------
    def connect(self, now: float) -> None:
        """Active open: the SYN goes out with the next ``output``."""
        if self.state is not _CLOSED or self.closed:
            raise OSError(errno.EISCONN, os.strerror(errno.EISCONN))
        self.state = _SYN_SENT
        self._need_syn = True
        self._last_rx = now

    def listen_accept(self, syn: Segment, now: float) -> None:
        """Passive open from a SYN that reached a listener: the SYN-ACK goes out with the
        next ``output``. The listening socket and its backlog belong to the stack."""
        if self.state is not _CLOSED or self.closed:
            raise OSError(errno.EISCONN, os.strerror(errno.EISCONN))
        if syn.flags & (SYN | ACK | RST) != SYN:
            raise ValueError("listen_accept needs a SYN without ACK or RST")
        self.passive = True
        self.irs = irs = syn.seq & MASK
        self.rcv_nxt = irs + 1
        self._negotiate(syn, now)
        self.snd_wnd = syn.window  # RFC 7323 2.2: a SYN's window is never scaled
        self.max_snd_wnd = syn.window
        self.snd_wl1 = irs
        self._rcv_adv = self.rcv_nxt + min(self.rcvbuf, 0xFFFF)
        self.state = _SYN_RECEIVED
        self._need_syn = True
        self._last_rx = now

    def _negotiate(self, syn: Segment, now: float) -> None:
        """Options from the peer's SYN (or SYN-ACK), RFC 9293 3.7.1, 7323, 2018."""
        peer_mss = syn.mss if syn.mss is not None else DEFAULT_MSS
        self.peer_mss = min(max(peer_mss, MIN_MSS), 0xFFFF)
        self.sack_ok = self._want_sack and bool(syn.sack_permitted)
        self.ts_ok = self._want_ts and syn.ts_val is not None
        self.ws_ok = self._want_wscale and syn.wscale is not None
        if self.ws_ok:
            self.snd_wscale = min(max(syn.wscale, 0), 14)  # RFC 7323 2.3: at most 14
        else:
            self.snd_wscale = 0
            self.rcv_wscale = 0
        if self.ts_ok:
            self.ts_recent = syn.ts_val & MASK
            self._ts_recent_time = now
        # the payload that fits next to the options each segment carries
        self.snd_mss = min(self.peer_mss, self.mss) - (TS_OPTION_LEN if self.ts_ok else 0)
        self._rcv_sws = min(self.rcvbuf // 2, min(self.peer_mss, self.mss))

    def _enter_established(self, now: float) -> None:
        self.state = _ESTABLISHED
        self.established = True
        # RFC 5681 3.1 / RFC 6928: the initial window is one segment if the SYN was lost
        self.cc = CONGESTION[self._cc_name](self.snd_mss, self.snd_mss if self._syn_rexmit else None)
        if self._syn_rexmit:
            self.rtt.set_initial(3.0)  # RFC 6298 5.7
        self.rtt.reset_backoff()
        self._retries = 0
        self._rto_deadline = None
        self._last_rx = now
        if self._wr_shut:
            self._queue_fin()

    def path_mss(self, mss: int) -> None:
        """The path allows segments of ``mss`` bytes after the IP and TCP headers (path
        MTU discovery): segments shrink to fit, options included; never below MIN_MSS."""
        mss -= TS_OPTION_LEN if self.ts_ok else 0
        if mss < MIN_MSS:
            mss = MIN_MSS
        if mss < self.snd_mss:
            self.snd_mss = mss
            self.cc.mss = mss

    # -- application data --------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview) -> int:
        """Copy as much of ``data`` as fits into the send buffer; returns the count (0 when
        full). Data queued before the handshake completes goes out after it.

        Raises BrokenPipeError after ``shutdown_write``/``close``, the connection's error
        if it has one, and ENOTCONN before ``connect``/``listen_accept``.
        """
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        if self._wr_shut or self.closed:
            raise BrokenPipeError(errno.EPIPE, os.strerror(errno.EPIPE))
        if self.state is _CLOSED:
            raise OSError(errno.ENOTCONN, os.strerror(errno.ENOTCONN))
        room = self.sndbuf - len(self._snd_buf)
        n = len(data)
        if room <= 0 or not n:
            return 0
        if n > room:
            with memoryview(data) as mv:
                self._snd_buf += mv[:room]
            return room
        self._snd_buf += data
        return n

    def recv(self, maxlen: int) -> bytes:
        """Up to ``maxlen`` received bytes; b"" at EOF (the peer's FIN, all data read).

        With nothing to return: raises the connection's error (ConnectionResetError...)
        if it has one, else BlockingIOError.
        """
        buf = self._rcv_buf
        if buf and maxlen > 0:
            n = len(buf) if len(buf) < maxlen else maxlen
            with memoryview(buf) as mv:
                data = mv[:n].tobytes()
            del buf[:n]
            if self.state in _RECEIVING:
                self._check_window_update()
            return data
        if self._fin_received or maxlen <= 0:
            return b""
        if self.error is not None:
            raise OSError(self.error, os.strerror(self.error))
        if self.closed:
            return b""
        raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN))

    def peek(self, maxlen: int) -> memoryview:
        """A view of up to ``maxlen`` in-order received bytes, left in place: pass it on,
        release it, then ``consume`` what was used (saves ``recv``'s copy)."""
        return memoryview(self._rcv_buf)[:maxlen]

    def consume(self, n: int) -> bool:
        """Drop ``n`` received bytes that ``peek`` showed. Returns True when that opened
        the window enough for an update to go out (call ``output``)."""
        if n <= 0:
            return False
        del self._rcv_buf[:n]
        if self.state in _RECEIVING:
            self._check_window_update()
        return self._ack_now

    def _check_window_update(self) -> None:
        # Like Linux's tcp_cleanup_rbuf: after a read, send a window update at once if the
        # window we may now advertise (past the receiver SWS rule) at least doubles.
        cur = self._rcv_adv - self.rcv_nxt
        if cur < 0:
            cur = 0
        free = self.rcvbuf - len(self._rcv_buf)
        if 2 * cur <= self.rcvbuf and free - cur >= self._rcv_sws and free >= 2 * cur:
            self._ack_now = True

    # -- closing -----------------------------------------------------------------------
    def shutdown_write(self, now: float) -> None:
        """Half-close: a FIN follows the data already queued."""
        if self._wr_shut or self.closed:
            return
        self._wr_shut = True
        if self.state in (_ESTABLISHED, _CLOSE_WAIT):
            self._queue_fin()
        elif self.state is _SYN_SENT:
            # RFC 9293 3.10.4: CLOSE in SYN-SENT deletes the TCB (Linux's shutdown does
            # the same): nobody waits on a connect whose owner has stopped writing
            self._enter_closed()
        # SYN-RECEIVED: RFC 9293 3.10.4 queues the FIN until ESTABLISHED

    def _queue_fin(self) -> None:
        self._fin_seq = self._snd_buf_seq + len(self._snd_buf)
        self.state = _FIN_WAIT_1 if self.state is _ESTABLISHED else _LAST_ACK

    def close(self, now: float) -> None:
        """Like close(2): no more reading or writing. Queued data and then a FIN go out
        (the connection lingers until the peer's FIN handshake completes), or an RST when
        received data is left unread (RFC 1122 4.2.2.13; also if data arrives later)."""
        if self.closed:
            return
        self._user_closed = True
        state = self.state
        if state is _CLOSED:
            self._enter_closed()
            return
        if state is _SYN_SENT:  # RFC 9293 3.10.4: delete the TCB
            self._enter_closed()
            return
        if self._rcv_buf or self._ooo:
            self.abort(now)
            return
        self.shutdown_write(now)
        if self.state is _FIN_WAIT_2 and self._fw2_deadline is None:
            self._fw2_deadline = now + self.fin_wait2_timeout

    def abort(self, now: float) -> None:
        """Reset the connection: an RST goes out (in synchronized states) and it closes."""
        if self.closed:
            return
        state = self.state
        if state is not _CLOSED and state is not _SYN_SENT and state is not _TIME_WAIT:
            self._ctl_out.append(Segment(self.snd_max & MASK, self.rcv_nxt & MASK,
                                         RST | ACK, 0))
        self._enter_closed()

    def _enter_closed(self) -> None:
        self.state = _CLOSED
        self.closed = True
        self._rto_deadline = self._persist_deadline = self._delack_deadline = None
        self._timewait_deadline = self._fw2_deadline = None
        self._ack_now = False
        self._probe_pending = self._ka_pending = self._rtx_pending = False
        self._need_syn = False
        self._snd_buf = bytearray()
        self._ooo.clear()
        self._sacked.clear()

    def _fail(self, err: int) -> None:
        self.error = err
        self._enter_closed()

    def _enter_time_wait(self, now: float) -> None:
        self.state = _TIME_WAIT
        self._rto_deadline = self._persist_deadline = self._fw2_deadline = None
        self._probe_pending = self._ka_pending = self._rtx_pending = False
        self._timewait_deadline = now + 2 * self.msl

    # -- timers ------------------------------------------------------------------------
    def next_timer(self) -> float | None:
        """When ``on_timer`` must run next (absolute time), or None."""
        if self.closed:
            return None
        t = self._rto_deadline
        for d in (self._delack_deadline, self._persist_deadline, self._timewait_deadline,
                  self._fw2_deadline):
            if d is not None and (t is None or d < t):
                t = d
        if self.keepalive:
            k = self._keepalive_deadline()
            if k is not None and (t is None or k < t):
                t = k
        return t

    def _keepalive_deadline(self) -> float | None:
        # RFC 1122 4.2.3.6: probe only an idle connection (nothing outstanding or queued)
        if (self.state is not _ESTABLISHED and self.state is not _CLOSE_WAIT) or \
                self.snd_max != self.snd_una or self._snd_buf:
            return None
        if self._ka_probes:
            return self._ka_last + self.keepalive_interval
        return self._last_rx + self.keepalive_idle

    def on_timer(self, now: float) -> None:
        """Run the timers that are due at ``now``."""
        if self.closed:
            return
        d = self._timewait_deadline
        if d is not None and now >= d:
            self._enter_closed()  # RFC 9293 3.10.8: 2 MSL in TIME-WAIT
            return
        d = self._fw2_deadline
        if d is not None and now >= d:
            self._enter_closed()  # an orphaned FIN-WAIT-2 does not wait forever
            return
        d = self._rto_deadline
        if d is not None and now >= d:
            self._on_rto(now)
            if self.closed:
                return
        d = self._persist_deadline
        if d is not None and now >= d:
            self._on_persist(now)
            if self.closed:
                return
        d = self._delack_deadline
        if d is not None and now >= d:
            self._delack_deadline = None
            self._ack_now = True
        if self.keepalive:
            k = self._keepalive_deadline()
            if k is not None and now >= k:
                if self._ka_probes >= self.keepalive_count:
                    self._ctl_out.append(Segment(self.snd_max & MASK, self.rcv_nxt & MASK,
                                                 RST | ACK, 0))
                    self._fail(errno.ETIMEDOUT)
                    return
                self._ka_probes += 1
                self._ka_last = now
                self._ka_pending = True

    def _on_rto(self, now: float) -> None:
        state = self.state
        self._retries += 1
        self.stats.timeouts += 1
        if state is _SYN_SENT or state is _SYN_RECEIVED:
            limit = self.synack_retries if self.passive else self.syn_retries
            if self._retries > limit:
                self._fail(errno.ETIMEDOUT)
                return
            self.rtt.on_timeout()
            self._syn_rexmit = True
            self._need_syn = True
            self._rtt_seq = None  # Karn
            self._rtx_ts = self._ts_clock(now)
            self._rto_deadline = now + self.rtt.rto
            return
        if self._retries > self.max_retries:
            self._fail(errno.ETIMEDOUT)
            return
        flight = self.snd_max - self.snd_una
        if flight <= 0:
            self._rto_deadline = None
            return
        cc = self.cc
        if self._retries == 1:
            cc.on_timeout(now, flight)
        else:
            # RFC 5681 3.1: ssthresh is held when the same data times out again
            cc.cwnd = self.snd_mss
        # RFC 6582 / 6675: no fast recovery until everything sent so far is acknowledged
        # (``_recover`` is SND.MAX, one past RFC 6582's "recover"),
        # and the scoreboard goes (RFC 2018 8: the receiver may have reneged)
        self._recover = self.snd_max
        self._in_recovery = False
        self._undo_cc = None
        self._rtx_pending = False
        self._dupacks = 0
        self._sacked.clear()
        self._high_rxt = self.snd_una
        self.snd_nxt = self.snd_una  # go back: everything outstanding is resent
        self._rtt_seq = None
        self._rtx_ts = self._ts_clock(now)
        self.rtt.on_timeout()
        self._rto_deadline = now + self.rtt.rto

    def _on_persist(self, now: float) -> None:
        self._persist_deadline = None
        if self.state not in _SENDING:
            return
        self._persist_probes += 1
        if self._persist_probes > self.max_retries:
            self._fail(errno.ETIMEDOUT)
            return
        if self.snd_wnd == 0:
            self._probe_pending = True
            self.stats.zero_window_probes += 1
        else:
            # RFC 1122 4.2.3.4: the SWS override timeout, send what the window allows
            self._sws_override = True
        self._persist_backoff += 1

    def _persist_interval(self) -> float:
        t = self.rtt.base_rto * (1 << min(self._persist_backoff, 16))
        return PERSIST_MIN if t < PERSIST_MIN else PERSIST_MAX if t > PERSIST_MAX else t

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
