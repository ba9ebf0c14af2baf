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

The class is put together from mixins, one module per job: ``input.py`` (arriving
segments and ACKs), ``receive.py`` (text, the out-of-order queue, the window we
advertise), ``output.py`` (what is transmitted), ``sack.py`` (fast recovery and the SACK
scoreboard); ``state.py`` has the states, counters and constants. This module has the
state itself (one ``__slots__``), the socket-facing calls and the timers.

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

import errno
import os
import random

from threadnet.stack.tcp.congestion import CONGESTION, CongestionControl
from threadnet.stack.tcp.input import TcpInput
from threadnet.stack.tcp.output import TcpOutput
from threadnet.stack.tcp.receive import TcpReceive
from threadnet.stack.tcp.rtt import RttEstimator
from threadnet.stack.tcp.sack import SackRecovery
from threadnet.stack.tcp.segment import ACK, RST, SYN, Segment
from threadnet.stack.tcp.seq import MASK
from threadnet.stack.tcp.state import (
    _CLOSE_WAIT,
    _CLOSED,
    _ESTABLISHED,
    _FIN_WAIT_1,
    _FIN_WAIT_2,
    _LAST_ACK,
    _RECEIVING,
    _SENDING,
    _SYN_RECEIVED,
    _SYN_SENT,
    _TIME_WAIT,
    DEFAULT_MSS,
    MIN_MSS,
    PERSIST_MAX,
    PERSIST_MIN,
    TS_OPTION_LEN,
    TcpState,
    TcpStats,
)

__all__ = ["TcpConnection", "TcpState", "TcpStats"]


class TcpConnection(TcpInput, TcpReceive, TcpOutput, SackRecovery):
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
