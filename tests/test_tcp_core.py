"""The sans-IO TCP connection core on fake time.

Two ``TcpConnection``s talk through ``Net``, a seeded in-test network that can drop,
duplicate, reorder, delay and rate-limit segments; other tests feed one connection crafted
``Segment``s. Nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import errno
import heapq
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadnet.stack.tcp import (
    ACK,
    CONGESTION,
    FIN,
    PSH,
    RST,
    SYN,
    Cubic,
    NewReno,
    RttEstimator,
    Segment,
    TcpConnection,
    TcpState,
)
from threadnet.stack.tcp.congestion import INFINITE_SSTHRESH
from threadnet.stack.tcp.seq import seq_unwrap

MASK = 0xFFFFFFFF


# -- the simulated network -----------------------------------------------------------------
class Net:
    """Two connections joined by a seeded, lossy, delaying link.

    ``drop(src_index, seg)`` may veto a transmission. ``log`` records every transmitted
    segment as (time, src_index, seg), dropped or not. With ``listener`` set, a SYN that
    reaches that connection while it is still fresh goes to ``listen_accept``.
    """

    def __init__(self, a: TcpConnection, b: TcpConnection, *, seed: int = 1,
                 delay: float = 0.005, loss: float = 0.0, dup: float = 0.0,
                 reorder: float = 0.0, rate: float | None = None, queue: int | None = None,
                 listener: TcpConnection | None = None, now: float = 0.0) -> None:
        self.ends = (a, b)
        self.rng = random.Random(seed)
        self.delay, self.loss, self.dup, self.reorder = delay, loss, dup, reorder
        self.rate, self.queue = rate, queue
        self.listener = listener
        self.now = now
        self.busy = [now, now]
        self.heap: list = []
        self.n = 0
        self.drop = None
        self.log: list[tuple[float, int, Segment]] = []
        self.delivered = 0

    def flush(self) -> None:
        for i, c in enumerate(self.ends):
            for seg in c.output(self.now):
                self.transmit(i, seg)

    def transmit(self, i: int, seg: Segment) -> None:
        self.log.append((self.now, i, seg))
        if self.drop is not None and self.drop(i, seg):
            return
        if self.loss and self.rng.random() < self.loss:
            return
        t = self.now
        if self.rate:
            start = max(t, self.busy[i])
            if self.queue is not None and (start - t) * self.rate > self.queue:
                return  # tail drop at the bottleneck
            self.busy[i] = t = start + (len(seg.payload) + 52) / self.rate
        copies = 2 if self.dup and self.rng.random() < self.dup else 1
        for _ in range(copies):
            dt = self.delay
            if self.reorder and self.rng.random() < self.reorder:
                dt += 3 * self.delay  # overtaken by the segments behind it
            heapq.heappush(self.heap, (t + dt, self.n, 1 - i, seg))
            self.n += 1

    def step(self, until: float = float("inf")) -> bool:
        """Flush output, then advance to the next delivery or timer (not past ``until``).
        False when nothing is pending."""
        self.flush()
        times = [t for t in (c.next_timer() for c in self.ends) if t is not None]
        if self.heap:
            times.append(self.heap[0][0])
        if not times:
            return False
        self.now = max(self.now, min(min(times), until))
        while self.heap and self.heap[0][0] <= self.now:
            _, _, dst, seg = heapq.heappop(self.heap)
            c = self.ends[dst]
            self.delivered += 1
            if c is self.listener and c.state is TcpState.CLOSED and not c.closed \
                    and seg.flags & (SYN | ACK | RST) == SYN:
                c.listen_accept(seg, self.now)
            else:
                c.input(seg, self.now)
        for c in self.ends:
            t = c.next_timer()
            if t is not None and t <= self.now:
                c.on_timer(self.now)
        return True

    def run(self, cond=None, *, until: float = 3600.0, app=None) -> bool:
        """Step until ``cond()`` holds (True), ``until`` passes or nothing is left (False);
        ``app()`` runs before every step."""
        while True:
            if app is not None:
                app()
            if cond is not None and cond():
                self.flush()
                return True
            if self.now >= until or not self.step(until):
                self.flush()
                return cond is not None and bool(cond())

    def sent_by(self, i: int) -> list[tuple[float, Segment]]:
        return [(t, s) for t, src, s in self.log if src == i]


def make_pair(seed: int = 1, a_kw: dict | None = None, b_kw: dict | None = None, **net_kw):
    a = TcpConnection(0.0, rng=random.Random(seed), **(a_kw or {}))
    b = TcpConnection(0.0, rng=random.Random(seed + 1000), **(b_kw or {}))
    net = Net(a, b, seed=seed, listener=b, **net_kw)
    a.connect(0.0)
    assert net.run(lambda: a.established and b.established, until=10)
    return a, b, net


def drain(c: TcpConnection, into: bytearray) -> None:
    while True:
        try:
            chunk = c.recv(1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            return
        into += chunk


class Pump:
    """Application behaviour for Net.run: write ``data`` into ``src`` (then optionally
    shut down), read everything ``dst`` receives."""

    def __init__(self, net: Net, src: TcpConnection, dst: TcpConnection, data: bytes, *,
                 shutdown: bool = True, read: bool = True) -> None:
        self.net = net
        self.src, self.dst, self.data = src, dst, memoryview(data)
        self.sent = 0
        self.got = bytearray()
        self.shutdown = shutdown
        self.read = read

    def __call__(self) -> None:
        if self.sent < len(self.data):
            self.sent += self.src.send(self.data[self.sent:self.sent + 65536])
        if self.sent == len(self.data) and self.shutdown:
            self.src.shutdown_write(self.net.now)  # idempotent
        if self.read:
            drain(self.dst, self.got)


def run_pumps(net: Net, pumps: list[Pump], cond, until: float = 600.0) -> bool:
    def app() -> None:
        for p in pumps:
            p()

    return net.run(cond, until=until, app=app)


# -- single-connection helpers ---------------------------------------------------------
PEER_ISS = 5000
ISS = 1000


def open_client(*, window: int = 65535, peer_wscale: int | None = None, sack: bool = False,
                peer_mss: int = 1460, **kw) -> TcpConnection:
    """A client established against a crafted peer (no timestamps): SND.NXT = ISS + 1,
    RCV.NXT = PEER_ISS + 1."""
    kw.setdefault("timestamps", False)
    c = TcpConnection(0.0, iss=ISS, rng=random.Random(7), sack=sack, **kw)
    c.connect(0.0)
    [syn] = c.output(0.0)
    c.input(Segment(PEER_ISS, syn.seq + 1, SYN | ACK, window, mss=peer_mss, wscale=peer_wscale,
                    sack_permitted=sack), 0.0)
    [ack] = c.output(0.0)
    assert c.state is TcpState.ESTABLISHED and ack.flags == ACK
    return c


def peer_ack(ack: int, *, seq: int = PEER_ISS + 1, window: int = 65535, payload: bytes = b"",
             flags: int = ACK, sack: tuple = ()) -> Segment:
    return Segment(seq & MASK, ack & MASK, flags, window, payload, sack_blocks=sack)


# -- sequence arithmetic -------------------------------------------------------------------
def test_sequence_arithmetic_wraps():
    assert seq_unwrap(5, (1 << 32) - 10) == (1 << 32) + 5
    assert seq_unwrap(MASK - 3, (1 << 32) + 10) == (1 << 32) - 4
    text = repr(Segment(1, 2, SYN | ACK, 100, b"x", mss=1460, wscale=7, sack_permitted=True,
                        sack_blocks=((5, 9),), ts_val=3, ts_ecr=4))
    assert "[S.]" in text and "mss=1460" in text and "sack=5-9" in text and "ts=3/4" in text
    assert Segment(1, 0, SYN | FIN, 0, b"abc").seg_len == 5


# -- handshake -----------------------------------------------------------------------------
def test_handshake_negotiates_mss_wscale_sack_timestamps():
    a, b, net = make_pair(b_kw={"rcvbuf": 1 << 20})
    (_, syn), = net.sent_by(0)[:1]
    (_, synack), = net.sent_by(1)[:1]
    assert syn.flags == SYN and synack.flags == SYN | ACK
    assert syn.mss == 1460 and synack.mss == 1460
    # 256 KiB >> 3 fits 16 bits, 1 MiB needs a shift of 5 (RFC 7323 2.3)
    assert syn.wscale == 3 and synack.wscale == 5
    assert syn.sack_permitted and synack.sack_permitted
    assert syn.ts_val is not None and syn.ts_ecr == 0 and synack.ts_ecr == syn.ts_val
    assert syn.window == 65535 and synack.window == 65535  # never scaled in a SYN
    for c in (a, b):
        assert c.state is TcpState.ESTABLISHED and c.established
        assert c.ws_ok and c.sack_ok and c.ts_ok
        assert c.snd_mss == 1460 - 12  # the timestamps option takes 12 bytes
    assert a.snd_wscale == 5 and a.rcv_wscale == 3
    assert b.snd_wscale == 3 and b.rcv_wscale == 5
    # the first ACK after the SYN carries a scaled window and timestamps
    (_, ack), = net.sent_by(0)[1:2]
    assert ack.flags == ACK and ack.window == (256 * 1024) >> 3 and ack.ts_ecr == synack.ts_val
    assert ack.seq == (a.iss + 1) & MASK and ack.ack == (b.iss + 1) & MASK


def test_handshake_without_options():
    a, b, net = make_pair(a_kw={"wscale": False, "sack": False, "timestamps": False})
    (_, syn), = net.sent_by(0)[:1]
    (_, synack), = net.sent_by(1)[:1]
    assert syn.wscale is None and not syn.sack_permitted and syn.ts_val is None
    # RFC 7323 / 2018: the SYN-ACK carries only what the SYN offered
    assert synack.wscale is None and not synack.sack_permitted and synack.ts_val is None
    for c in (a, b):
        assert not (c.ws_ok or c.sack_ok or c.ts_ok)
        assert c.snd_wscale == c.rcv_wscale == 0 and c.snd_mss == 1460
    # a SYN without an MSS option means 536 (RFC 9293 3.7.1)
    c = TcpConnection(0.0, rng=random.Random(3))
    c.listen_accept(Segment(77, 0, SYN, 8192), 0.0)
    [synack] = c.output(0.0)
    assert synack.flags == SYN | ACK and synack.ack == 78 and synack.wscale is None
    assert c.snd_mss == 536 and c.snd_wnd == 8192
    with pytest.raises(ValueError):
        TcpConnection(0.0).listen_accept(Segment(1, 0, SYN | ACK, 100), 0.0)


def test_random_iss_comes_from_rng():
    isses = {TcpConnection(0.0, rng=random.Random(i)).iss for i in range(5)}
    assert len(isses) == 5
    assert TcpConnection(0.0, rng=random.Random(4)).iss == TcpConnection(0.0, rng=random.Random(4)).iss


# -- bulk transfer -------------------------------------------------------------------------
@pytest.mark.parametrize("cc", ["newreno", "cubic"])
def test_bulk_transfer_lossy_link(cc):
    kw = {"cc": cc}
    a, b, net = make_pair(seed=11, a_kw=kw, b_kw=kw, delay=0.01, rate=12.5e6, queue=150_000)
    net.loss, net.dup, net.reorder = 0.05, 0.01, 0.02
    rng = random.Random(5)
    up = rng.randbytes(1_500_000)
    down = rng.randbytes(300_000)
    p_up = Pump(net, a, b, up)
    p_down = Pump(net, b, a, down)
    assert run_pumps(net, [p_up, p_down], lambda: b.eof and a.eof, until=300)
    assert bytes(p_up.got) == up and bytes(p_down.got) == down
    assert isinstance(a.cc, CONGESTION[cc])
    assert a.stats.retransmits > 10 and a.stats.fast_recoveries > 5 and a.stats.dup_acks_in > 0
    assert b.stats.ooo_segments_in > 0
    # both sides sent FIN: one of them ends in TIME-WAIT, the other closes
    a.close(net.now)
    b.close(net.now)
    net.loss = net.dup = net.reorder = 0.0
    assert net.run(lambda: a.closed and b.closed, until=net.now + 200)
    assert a.error is None and b.error is None


# -- RTO -----------------------------------------------------------------------------------
def test_rtt_estimator_follows_rfc6298():
    r = RttEstimator(min_rto=0.2)
    assert r.rto == 1.0  # 2.1: before any measurement
    r.sample(0.1)  # 2.2: SRTT = R, RTTVAR = R/2, RTO = SRTT + 4*RTTVAR
    assert r.srtt == pytest.approx(0.1) and r.rttvar == pytest.approx(0.05)
    assert r.rto == pytest.approx(0.3)
    r.sample(0.2)  # 2.3: RTTVAR = 3/4*0.05 + 1/4*|0.1-0.2|, SRTT = 7/8*0.1 + 1/8*0.2
    assert r.rttvar == pytest.approx(0.0625) and r.srtt == pytest.approx(0.1125)
    assert r.rto == pytest.approx(0.1125 + 4 * 0.0625)
    r.sample(0.01)
    r.sample(0.01)
    r.sample(0.01)
    r.sample(0.01)
    assert r.rto >= 0.2  # 2.4: the configured minimum
    base = r.rto
    for i in range(1, 5):  # 5.5: back off by doubling
        r.on_timeout()
        assert r.rto == pytest.approx(base * 2 ** i)
    for _ in range(20):
        r.on_timeout()
    assert r.rto == 120.0  # 2.5: a maximum
    r.sample(0.05)  # a new measurement ends the backoff
    assert r.backoff == 0 and r.rto < 1
    strict = RttEstimator(min_rto=1.0)
    strict.sample(0.01)
    assert strict.rto == 1.0  # 2.4: RFC 6298's 1 s minimum when configured
    assert RttEstimator(min_rto=0.2, granularity=0.1).rto == 1.0


def test_data_rto_backoff_and_give_up():
    kw = {"timestamps": False, "max_retries": 5}
    a, b, net = make_pair(a_kw=kw, b_kw=kw, delay=0.05)
    # the SYN-ACK round trip, 0.1 s, is the only sample: RTO = 0.1 + 4 * 0.05
    assert a.rtt.srtt == pytest.approx(0.1) and a.rtt.rto == pytest.approx(0.3)
    net.drop = lambda i, seg: i == 0  # everything a sends from now on is lost
    t0 = net.now
    a.send(b"x" * 100)
    assert net.run(lambda: a.closed, until=t0 + 100)
    sends = [t for t, s in net.sent_by(0) if s.payload]
    assert sends[0] == pytest.approx(t0)
    gaps = [y - x for x, y in zip(sends, sends[1:], strict=False)]
    assert gaps == pytest.approx([0.3, 0.6, 1.2, 2.4, 4.8])
    assert a.error == errno.ETIMEDOUT and a.stats.timeouts == 6
    assert net.now == pytest.approx(t0 + 0.3 * 63)


def test_syn_retries_then_etimedout():
    c = TcpConnection(0.0, rng=random.Random(1), syn_retries=3)
    c.connect(0.0)
    times = []
    now = 0.0
    while not c.closed:
        for seg in c.output(now):
            assert seg.flags == SYN and seg.seq == c.iss
            times.append(now)
        now = c.next_timer()
        c.on_timer(now)
    assert times == [0.0, 1.0, 3.0, 7.0]  # initial RTO 1 s, doubled each time
    assert now == 15.0 and c.error == errno.ETIMEDOUT and c.state is TcpState.CLOSED
    with pytest.raises(OSError) as e:
        c.send(b"x")
    assert e.value.errno == errno.ETIMEDOUT


def test_connection_refused():
    c = TcpConnection(0.0, iss=ISS, rng=random.Random(1))
    c.connect(0.0)
    [syn] = c.output(0.0)
    c.input(Segment(0, 0, RST, 0), 0.01)  # no ACK: ignored (RFC 5961 3.2 / 9293)
    c.input(Segment(0, ISS + 5, RST | ACK, 0), 0.01)  # does not acknowledge our SYN
    assert c.state is TcpState.SYN_SENT and c.output(0.01) == []
    c.input(Segment(0, ISS + 1, RST | ACK, 0), 0.02)
    assert c.error == errno.ECONNREFUSED and c.closed and c.next_timer() is None
    with pytest.raises(ConnectionRefusedError):
        c.recv(10)
    # the same through the network: a closed port's reply
    a = TcpConnection(0.0, rng=random.Random(2))
    closed_port = TcpConnection(0.0, rng=random.Random(3))
    net = Net(a, closed_port)
    a.connect(0.0)
    assert net.run(lambda: a.closed, until=5)
    assert a.error == errno.ECONNREFUSED
    [(_, rst)] = net.sent_by(1)
    assert rst.flags == RST | ACK and rst.ack == (a.iss + 1) & MASK


def test_bad_ack_in_syn_sent_answered_with_rst():
    c = TcpConnection(0.0, iss=ISS, rng=random.Random(1))
    c.connect(0.0)
    c.output(0.0)
    c.input(Segment(PEER_ISS, ISS + 99, SYN | ACK, 1000), 0.01)
    [rst] = c.output(0.01)
    assert rst.flags == RST and rst.seq == ISS + 99 and c.state is TcpState.SYN_SENT


# -- fast retransmit and SACK --------------------------------------------------------------
def test_fast_retransmit_after_exactly_three_dup_acks():
    c = open_client(cc="newreno")
    mss = c.snd_mss
    assert mss == 1460
    c.send(bytes(20 * mss))
    first = c.output(0.0)
    assert len(first) == 10 and all(len(s.payload) == mss for s in first)  # IW10
    una = ISS + 1 + mss
    c.input(peer_ack(una), 0.05)  # one segment acknowledged; slow start adds one more
    sent = c.output(0.05)
    assert len(sent) == 2
    hi = sent[-1].seq + mss
    news = []
    for n in (1, 2):
        c.input(peer_ack(una), 0.06 + n / 1000)
        out = c.output(0.06 + n / 1000)
        # RFC 3042 limited transmit: one new segment per duplicate ACK, no retransmission
        assert [s.seq for s in out] == [hi + (n - 1) * mss]
        news += out
    assert c.stats.fast_recoveries == 0
    c.input(peer_ack(una), 0.07)
    out = c.output(0.07)
    assert out and out[0].seq == una and len(out[0].payload) == mss
    assert all(s.seq > una for s in out[1:])
    assert c.stats.fast_recoveries == 1 and c.stats.retransmits == 1
    flight = hi + 2 * mss - una
    assert c.cc.ssthresh == flight // 2
    assert c.cc.cwnd == c.cc.ssthresh + 3 * mss  # RFC 6582 3.2 (3)
    cwnd = c.cc.cwnd
    c.input(peer_ack(una), 0.08)  # each further duplicate ACK inflates the window
    assert c.cc.cwnd == cwnd + mss and c.stats.retransmits == 1
    c.output(0.08)
    # a partial ACK retransmits the next hole at once (RFC 6582 3.2 (5))
    c.input(peer_ack(una + 2 * mss), 0.1)
    out = c.output(0.1)
    assert out[0].seq == una + 2 * mss and c.stats.retransmits == 2
    # a full ACK ends recovery and deflates the window
    c.input(peer_ack(hi + 2 * mss), 0.15)
    assert not c._in_recovery and c.cc.cwnd <= c.cc.ssthresh


def test_sack_recovery_retransmits_only_the_holes():
    a, b, net = make_pair(seed=3, delay=0.01)
    mss = a.snd_mss
    base = a.snd_nxt
    holes = {(base + 2 * mss) & MASK, (base + 6 * mss) & MASK, (base + 7 * mss) & MASK}
    seen = set()

    def drop(i, seg):
        if i == 0 and seg.payload and seg.seq in holes and seg.seq not in seen:
            seen.add(seg.seq)
            return True
        return False

    net.drop = drop
    data = random.Random(1).randbytes(40 * mss)
    p = Pump(net, a, b, data, shutdown=False)
    assert run_pumps(net, [p], lambda: len(p.got) == len(data), until=20)
    assert bytes(p.got) == data
    firsts = set()
    resent = []
    for _, seg in net.sent_by(0):
        if seg.payload:
            if seg.seq in firsts:
                resent.append(seg.seq)
            firsts.add(seg.seq)
    assert sorted(resent) == sorted(holes)
    assert a.stats.timeouts == 0 and a.stats.fast_recoveries == 1
    assert any(seg.sack_blocks for _, seg in net.sent_by(1))


def _first_copy_of(net: Net, seq: int, late: float | None) -> None:
    """The first transmission of the data segment at ``seq`` from connection 0 arrives
    ``late`` seconds after its normal delay, or never (``late=None``)."""
    seen = set()

    def drop(i, seg):
        if i != 0 or not seg.payload or seg.seq != seq or seq in seen:
            return False
        seen.add(seq)
        if late is not None:
            heapq.heappush(net.heap, (net.now + net.delay + late, net.n, 1, seg))
            net.n += 1
        return True

    net.drop = drop


@pytest.mark.parametrize("case", ["reordered", "lost", "reordered-no-timestamps"])
def test_spurious_fast_retransmit_is_undone(case):
    """RFC 3522/4015: a segment overtaken by three later ones causes a fast retransmit;
    when the ACK for it echoes the original's timestamp (the original filled the hole),
    the window reduction is undone. A real loss, or no timestamps to tell, keeps it."""
    kw = {"timestamps": case != "reordered-no-timestamps"}
    a, b, net = make_pair(seed=5, a_kw=kw, b_kw=kw, delay=0.01)
    mss = a.snd_mss
    # the 11th segment goes out with the 12th..30th, after the initial window's ACKs; its
    # first copy arrives 5 ms after them (the fast retransmit follows their SACKs 5 ms
    # later still), or is lost
    _first_copy_of(net, (a.snd_nxt + 10 * mss) & MASK, None if case == "lost" else 0.005)
    data = random.Random(2).randbytes(40 * mss)
    p = Pump(net, a, b, data, shutdown=False)
    assert run_pumps(net, [p], lambda: len(p.got) == len(data), until=20)
    assert bytes(p.got) == data
    assert a.stats.fast_recoveries == 1 and a.stats.retransmits >= 1
    assert a.stats.timeouts == 0
    if case == "reordered":
        assert a.stats.spurious_recoveries == 1
        assert a.cc.ssthresh == INFINITE_SSTHRESH  # as if nothing had happened: slow start
    else:
        assert a.stats.spurious_recoveries == 0
        assert a.cc.ssthresh < INFINITE_SSTHRESH


def test_sack_blocks_most_recent_first():
    c = open_client(sack=True)
    r = PEER_ISS + 1
    for off in (1000, 3000, 5000, 7000, 1100):
        c.input(peer_ack(ISS + 1, seq=r + off, payload=bytes(100)), 0.1)
    acks = c.output(0.1)
    assert len(acks) == 5  # one duplicate ACK per out-of-order segment (RFC 5681 4.2)
    assert [a.sack_blocks[0] for a in acks[:4]] == [
        (r + 1000, r + 1100), (r + 3000, r + 3100), (r + 5000, r + 5100), (r + 7000, r + 7100)]
    ack = acks[-1]
    assert ack.ack == r
    # the block holding the newest segment first; four fit without timestamps
    assert ack.sack_blocks == ((r + 1000, r + 1200), (r + 7000, r + 7100),
                               (r + 5000, r + 5100), (r + 3000, r + 3100))
    c.input(peer_ack(ISS + 1, seq=r, payload=bytes(1000)), 0.2)
    [ack] = c.output(0.2)
    assert ack.ack == r + 1200
    assert ack.sack_blocks == ((r + 7000, r + 7100), (r + 5000, r + 5100), (r + 3000, r + 3100))
    assert c.recv(5000) == bytes(1200)


# -- windows -------------------------------------------------------------------------------
def _max_flight(a_kw, b_kw, size):
    a, b, net = make_pair(seed=5, a_kw=a_kw, b_kw=b_kw, delay=0.02)
    data = random.Random(2).randbytes(size)
    p = Pump(net, a, b, data)
    peak = [0]

    def app():
        p()
        peak[0] = max(peak[0], a.bytes_in_flight)
    assert net.run(lambda: b.eof, until=60, app=app)
    assert bytes(p.got) == data
    return a, b, net, peak[0]


def test_window_scaling_allows_more_than_64k_in_flight():
    big = {"rcvbuf": 1 << 20, "sndbuf": 1 << 20}
    a, b, net, peak = _max_flight(big, big, 3_000_000)
    assert a.snd_wscale == 5 and peak > 4 * 65535
    assert max(s.window for _, s in net.sent_by(1)) <= 65535


def test_without_window_scaling_flight_is_capped_at_64k():
    big = {"rcvbuf": 1 << 20, "sndbuf": 1 << 20, "wscale": False}
    a, b, net, peak = _max_flight(big, big, 1_000_000)
    assert a.snd_wscale == 0 and b.rcv_wscale == 0
    assert 60_000 < peak <= 65535


def test_zero_window_probes_back_off_and_transfer_resumes():
    a, b, net = make_pair(b_kw={"rcvbuf": 16384}, delay=0.01)
    data = random.Random(4).randbytes(100_000)
    p = Pump(net, a, b, data, shutdown=False, read=False)
    net.run(until=net.now + 30, app=p)
    assert b.recv_queued == 16384 and a.snd_wnd == 0
    probes = [(t, s) for t, s in net.sent_by(0)
              if not s.payload and s.flags == ACK and s.seq == (a.snd_una - 1) & MASK]
    assert len(probes) >= 5 and a.stats.zero_window_probes == len(probes)
    times = [t for t, _ in probes]
    gaps = [y - x for x, y in zip(times, times[1:], strict=False)]
    for x, y in zip(gaps, gaps[1:], strict=False):
        assert y == pytest.approx(2 * x) or y == pytest.approx(60.0)
    # every probe was answered with the (zero) window; nothing was given up
    assert a.state is TcpState.ESTABLISHED and a.error is None
    # the reader drains: a window update goes out and the rest flows
    p.read = True
    p.shutdown = True
    assert net.run(lambda: b.eof, until=net.now + 30, app=p)
    assert bytes(p.got) == data
    assert net.now - times[-1] < 20


def test_receiver_avoids_silly_window():
    c = open_client(rcvbuf=8000)
    r = PEER_ISS + 1
    c.input(peer_ack(ISS + 1, seq=r, payload=bytes(1460)), 0.1)
    c.input(peer_ack(ISS + 1, seq=r + 1460, payload=bytes(1460)), 0.1)
    [ack] = c.output(0.1)
    assert ack.window == 8000 - 2920
    c.recv(100)  # 100 bytes freed: less than min(rcvbuf/2, MSS), the right edge stays
    c.input(peer_ack(ISS + 1, seq=r + 2920, payload=bytes(1000)), 0.2)
    c.input(peer_ack(ISS + 1, seq=r + 3920, payload=bytes(1000)), 0.2)
    [ack] = c.output(0.2)
    assert ack.window == 8000 - 2920 - 2000
    c.recv(10_000)
    [upd] = c.output(0.3)  # the window reopened a lot: a window update at once
    assert upd.window == 8000


# -- RFC 5961 ------------------------------------------------------------------------------
def test_rst_in_window_but_not_exact_gets_challenge_ack():
    c = open_client()
    c.input(Segment(PEER_ISS + 1 + 100, 0, RST, 0), 1.0)
    [ack] = c.output(1.0)
    assert ack.flags == ACK and ack.ack == PEER_ISS + 1 and ack.seq == ISS + 1
    assert c.state is TcpState.ESTABLISHED and c.error is None
    assert c.stats.challenge_acks == 1


def test_exact_rst_resets():
    c = open_client()
    c.send(b"pending")
    c.input(Segment(PEER_ISS + 1, 0, RST, 0), 1.0)
    assert c.error == errno.ECONNRESET and c.closed and c.state is TcpState.CLOSED
    assert c.output(1.0) == [] and c.next_timer() is None
    with pytest.raises(ConnectionResetError):
        c.recv(10)
    with pytest.raises(ConnectionResetError):
        c.send(b"more")


def test_out_of_window_rst_ignored():
    c = open_client()
    for seq in (PEER_ISS + 1 + 10_000_000, PEER_ISS - 5):
        c.input(Segment(seq, 0, RST, 0), 1.0)
    assert c.output(1.0) == [] and c.state is TcpState.ESTABLISHED


def test_syn_in_established_gets_challenge_ack():
    c = open_client()
    for seq in (PEER_ISS + 50, 123456789):
        c.input(Segment(seq, 0, SYN, 65535), 1.0)
        [ack] = c.output(1.0)
        assert ack.flags == ACK and ack.ack == PEER_ISS + 1
    assert c.state is TcpState.ESTABLISHED and c.stats.challenge_acks == 2


def test_ack_outside_acceptable_range_dropped():
    c = open_client(window=20000)
    c.send(bytes(1000))
    c.output(0.0)
    # ACK of data never sent: dropped with its data, answered with an ACK
    c.input(peer_ack(ISS + 1 + 5000, payload=b"evil"), 0.1)
    [ack] = c.output(0.1)
    assert ack.ack == PEER_ISS + 1 and c.recv_queued == 0 and c.snd_una == ISS + 1
    # older than SND.UNA - MAX.SND.WND: blind injection, dropped too
    c.input(peer_ack(ISS + 1 - 30000, payload=b"evil"), 0.2)
    assert c.recv_queued == 0 and len(c.output(0.2)) == 1
    # an old but plausible ACK still carries acceptable data
    c.input(peer_ack(ISS + 1 - 100, payload=b"fine"), 0.3)
    assert c.recv(10) == b"fine"
    assert c.state is TcpState.ESTABLISHED


def test_challenge_acks_are_rate_limited():
    c = open_client(challenge_ack_limit=10)
    for i in range(50):
        c.input(Segment(PEER_ISS + 100 + i, 0, RST, 0), 1.0 + i / 1000)
        c.output(1.0 + i / 1000)
    assert c.stats.challenge_acks == 10
    c.input(Segment(PEER_ISS + 100, 0, RST, 0), 2.5)
    assert len(c.output(2.5)) == 1


def test_paws_drops_old_timestamps():
    a, b, net = make_pair()
    old = Segment(b.snd_nxt & MASK, a.snd_nxt & MASK, ACK | PSH, 1000, b"old",
                  ts_val=(a.ts_recent - 1000) & MASK, ts_ecr=0)
    a.input(old, net.now)  # RFC 7323 5.3 R1: an older TSval, an old duplicate
    assert a.recv_queued == 0 and a.stats.paws_drops == 1
    [ack] = a.output(net.now)
    assert ack.flags == ACK and ack.ack == b.snd_nxt & MASK
    fresh = Segment(b.snd_nxt & MASK, a.snd_nxt & MASK, ACK | PSH, 1000, b"new",
                    ts_val=(a.ts_recent + 5) & MASK, ts_ecr=0)
    a.input(fresh, net.now)
    assert a.recv(10) == b"new" and a.ts_recent == fresh.ts_val
    # RFC 7323 3.2: once negotiated, a segment without timestamps is dropped
    a.input(Segment((b.snd_nxt + 3) & MASK, a.snd_nxt & MASK, ACK, 1000, b"nots"), net.now)
    assert a.recv_queued == 0


# -- closing -------------------------------------------------------------------------------
def test_time_wait_lasts_2msl_then_closed():
    a, b, net = make_pair(a_kw={"msl": 10.0})
    a.close(net.now)
    assert net.run(lambda: a.state is TcpState.FIN_WAIT_2, until=net.now + 5)
    b.close(net.now)
    assert net.run(lambda: a.state is TcpState.TIME_WAIT, until=net.now + 5)
    t = net.now
    assert a.next_timer() == pytest.approx(t + 20.0)
    a.on_timer(t + 19.9)
    assert a.state is TcpState.TIME_WAIT and not a.closed
    # a retransmitted FIN is acknowledged again and restarts the 2MSL wait
    assert net.run(lambda: b.closed, until=t + 1)
    a.input(Segment((b.snd_max - 1) & MASK, a.snd_max & MASK, FIN | ACK, 100,
                    ts_val=b._ts_clock(t + 5), ts_ecr=0), t + 5)
    [ack] = a.output(t + 5)
    assert ack.flags == ACK and ack.ack == b.snd_max & MASK
    assert a.next_timer() == pytest.approx(t + 25.0)
    a.on_timer(t + 25.0)
    assert a.closed and a.state is TcpState.CLOSED and a.error is None
    assert b.closed and b.error is None
    # default: 2 * 30 s
    a2, b2, net2 = make_pair()
    a2.shutdown_write(net2.now)
    b2.shutdown_write(net2.now + 1)
    net2.run(lambda: a2.state is TcpState.TIME_WAIT, until=10)
    assert a2.next_timer() == pytest.approx(net2.now + 60.0)


def _record_states(net, conns):
    seen = [[c.state] for c in conns]

    def app():
        for c, s in zip(conns, seen, strict=True):
            if s[-1] is not c.state:
                s.append(c.state)
    return seen, app


def test_simultaneous_open():
    a = TcpConnection(0.0, rng=random.Random(1))
    b = TcpConnection(0.0, rng=random.Random(2))
    net = Net(a, b, delay=0.01)
    a.connect(0.0)
    b.connect(0.0)
    seen, app = _record_states(net, (a, b))
    assert net.run(lambda: a.established and b.established, until=5, app=app)
    for s in seen:
        assert s == [TcpState.SYN_SENT, TcpState.SYN_RECEIVED, TcpState.ESTABLISHED]
    assert a.ws_ok and a.sack_ok and a.ts_ok and b.snd_wscale == a.rcv_wscale
    synacks = [s for _, _, s in net.log if s.flags == SYN | ACK]
    assert len(synacks) == 2
    p1, p2 = Pump(net, a, b, b"ping" * 1000), Pump(net, b, a, b"pong" * 1000)
    assert run_pumps(net, [p1, p2], lambda: a.eof and b.eof, until=10)
    assert bytes(p1.got) == b"ping" * 1000 and bytes(p2.got) == b"pong" * 1000
    assert net.now < 1.0  # no retransmission timeouts needed


def test_simultaneous_close():
    a, b, net = make_pair(delay=0.01)
    seen, app = _record_states(net, (a, b))
    a.shutdown_write(net.now)
    b.shutdown_write(net.now)
    assert net.run(lambda: a.state is b.state is TcpState.TIME_WAIT, until=net.now + 5, app=app)
    for s in seen:
        assert s == [TcpState.ESTABLISHED, TcpState.FIN_WAIT_1, TcpState.CLOSING,
                     TcpState.TIME_WAIT]
    assert a.eof and b.eof
    assert net.run(lambda: a.closed and b.closed, until=net.now + 61)
    assert a.error is None and b.error is None


def test_close_with_unread_data_sends_rst():
    a, b, net = make_pair()
    a.send(b"you will not read this")
    assert net.run(lambda: b.recv_queued > 0, until=net.now + 1)
    b.close(net.now)
    [rst] = b.output(net.now)
    assert rst.flags & RST and b.closed and b.error is None
    a.input(rst, net.now + 0.005)
    assert a.error == errno.ECONNRESET and a.closed


def test_data_after_close_is_answered_with_rst():
    a, b, net = make_pair()
    b.close(net.now)  # nothing unread: a FIN
    assert net.run(lambda: b.state is TcpState.FIN_WAIT_2, until=net.now + 1)
    a.send(b"late data")
    assert net.run(lambda: a.closed, until=net.now + 1)
    assert a.error == errno.ECONNRESET and b.closed


def test_orphaned_fin_wait_2_times_out():
    a, b, net = make_pair(a_kw={"fin_wait2_timeout": 5.0})
    a.close(net.now)
    assert net.run(lambda: a.state is TcpState.FIN_WAIT_2, until=net.now + 1)
    t = net.now
    assert net.run(lambda: a.closed, until=t + 10)
    assert net.now == pytest.approx(t + 5.0, abs=0.02) and a.error is None
    # after shutdown_write the application may still read: FIN-WAIT-2 has no limit
    a, b, net = make_pair(a_kw={"fin_wait2_timeout": 5.0})
    a.shutdown_write(net.now)
    assert net.run(lambda: a.state is TcpState.FIN_WAIT_2, until=net.now + 1)
    assert a.next_timer() is None


def test_rst_in_syn_received():
    c = TcpConnection(0.0, rng=random.Random(3))
    c.listen_accept(Segment(77, 0, SYN, 8192), 0.0)
    c.output(0.0)
    c.input(Segment(78, 0, RST, 0), 0.1)
    assert c.closed and c.error == errno.ECONNRESET  # the listener forgets it
    # a simultaneous open that is reset: refused
    c = TcpConnection(0.0, iss=ISS, rng=random.Random(3))
    c.connect(0.0)
    c.output(0.0)
    c.input(Segment(PEER_ISS, 0, SYN, 8192), 0.1)
    assert c.state is TcpState.SYN_RECEIVED
    [synack] = c.output(0.1)
    assert synack.flags == SYN | ACK and synack.seq == ISS and synack.ack == PEER_ISS + 1
    c.input(Segment(PEER_ISS + 1, 0, RST, 0), 0.2)
    assert c.error == errno.ECONNREFUSED


def test_syn_ack_carrying_data_and_fin():
    c = TcpConnection(0.0, iss=ISS, rng=random.Random(1), timestamps=False)
    c.connect(0.0)
    c.output(0.0)
    c.input(Segment(PEER_ISS, ISS + 1, SYN | ACK | FIN, 1000, b"early", mss=1000), 0.1)
    assert c.state is TcpState.CLOSE_WAIT and c.recv(100) == b"early" and c.recv(100) == b""
    [ack] = c.output(0.1)
    assert ack.ack == PEER_ISS + 1 + 5 + 1


def test_zero_receive_window_still_takes_acks():
    c = open_client(rcvbuf=2920)
    r = PEER_ISS + 1
    c.send(bytes(100))
    c.output(0.0)
    c.input(peer_ack(ISS + 1, seq=r, payload=bytes(1460)), 0.1)
    c.input(peer_ack(ISS + 1, seq=r + 1460, payload=bytes(1460)), 0.1)
    assert c.output(0.1)[-1].window == 0
    # the peer probes our zero window with a byte of data, acknowledging ours
    c.input(peer_ack(ISS + 101, seq=r + 2920, payload=b"!"), 0.2)
    assert c.snd_una == ISS + 101 and c.recv_queued == 2920  # ACK taken, byte not
    [ack] = c.output(0.2)
    assert ack.ack == r + 2920 and ack.window == 0
    # a bare FIN needs no room: it is taken at a zero window
    c.input(peer_ack(ISS + 101, seq=r + 2920, flags=ACK | FIN), 0.3)
    assert c.state is TcpState.CLOSE_WAIT


_pieces = st.lists(st.tuples(st.integers(0, 11999), st.integers(1, 1500), st.booleans()),
                   max_size=40)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 12000), pieces=_pieces, sack=st.booleans())
def test_reassembly_of_overlapping_reordered_duplicated_pieces(n, pieces, sack):
    """Pieces of a stream in any order, overlapping and repeated, some beyond the window:
    what recv returns is always a prefix of the stream, and all of it in the end."""
    stream = random.Random(n).randbytes(n)
    c = open_client(rcvbuf=8000, sack=sack)
    r = PEER_ISS + 1
    got = bytearray()

    def deliver(start: int, length: int) -> None:
        end = min(start + length, n)
        flags = ACK | (FIN if end == n else 0)
        c.input(peer_ack(ISS + 1, seq=r + start, payload=stream[start:end], flags=flags), 1.0)
        c.output(1.0)

    for start, length, read in pieces:
        if start < n:
            deliver(start, length)
        if read:
            drain(c, got)
        assert got == stream[:len(got)]
        assert c.rcv_nxt - r == len(got) + c.recv_queued + (1 if c._fin_received else 0)
    while not c.eof:
        drain(c, got)
        deliver(len(got), 1000)
    assert bytes(got) == stream and c.state is TcpState.CLOSE_WAIT


def test_out_of_order_islands_are_bounded():
    c = open_client(sack=True, rcvbuf=1 << 20, wscale=True, peer_wscale=0)
    r = PEER_ISS + 1
    for i in range(1, 1000):  # 1-byte islands every other byte
        c.input(peer_ack(ISS + 1, seq=r + 2 * i, payload=b"x"), 0.1)
    c.output(0.1)
    assert len(c._ooo) == 128 and c.stats.ooo_segments_in == 999
    # what is kept still completes the stream once the holes are filled
    c.input(peer_ack(ISS + 1, seq=r, payload=bytes(2000)), 0.2)
    assert c.rcv_nxt == r + 2000 and not c._ooo


def test_half_close_keeps_receiving():
    a, b, net = make_pair()
    a.shutdown_write(net.now)
    with pytest.raises(BrokenPipeError):
        a.send(b"x")
    assert a.writable_space == 0
    assert net.run(lambda: b.eof, until=net.now + 1)
    assert b.recv(10) == b"" and b.state is TcpState.CLOSE_WAIT
    p = Pump(net, b, a, b"reply" * 10000)
    assert net.run(lambda: a.eof, until=net.now + 10, app=p)
    assert bytes(p.got) == b"reply" * 10000


def test_abort_sends_rst():
    a, b, net = make_pair()
    a.abort(net.now)
    assert a.closed and a.error is None
    assert net.run(lambda: b.closed, until=net.now + 1)
    assert b.error == errno.ECONNRESET


# -- keepalive -----------------------------------------------------------------------------
def test_keepalive_probes_and_timeout():
    ka = {"keepalive": True, "keepalive_idle": 10.0, "keepalive_interval": 2.0,
          "keepalive_count": 3}
    a, b, net = make_pair(a_kw=ka)
    t0 = a._last_rx  # idle time counts from the last segment received
    assert a.next_timer() == pytest.approx(t0 + 10.0)
    net.run(until=t0 + 25)
    probes = [t for t, s in net.sent_by(0) if s.flags == ACK and s.seq == (a.snd_una - 1) & MASK]
    # answered each time: one probe per idle period
    assert probes == pytest.approx([t0 + 10, t0 + 20 + 0.01], abs=1e-6)
    assert a.state is TcpState.ESTABLISHED and a.stats.keepalive_probes == 2
    net.run(until=t0 + 29)
    net.drop = lambda i, seg: True  # the peer vanishes
    t1 = a._last_rx
    assert net.run(lambda: a.closed, until=t0 + 100)
    lost = [t for t, s in net.sent_by(0) if t > t1 + 1 and not s.flags & RST]
    assert lost == pytest.approx([t1 + 10, t1 + 12, t1 + 14])
    assert net.now == pytest.approx(t1 + 16)
    assert a.error == errno.ETIMEDOUT
    assert net.log[-1][2].flags & RST
    assert b.state is TcpState.ESTABLISHED


def test_keepalive_off_by_default():
    a, b, net = make_pair()
    assert a.next_timer() is None and b.next_timer() is None


# -- Nagle and delayed ACK -----------------------------------------------------------------
def test_nagle_coalesces_small_writes():
    c = open_client()
    c.send(b"a")
    [s1] = c.output(0.0)
    assert s1.payload == b"a"  # nothing in flight: it goes at once
    c.send(b"b")
    c.send(b"c")
    assert c.output(0.01) == []  # a small segment is in flight: wait (RFC 896)
    c.send(bytes(3000))
    out = c.output(0.02)
    assert [len(s.payload) for s in out] == [1460, 1460]  # full segments do go
    c.input(peer_ack(ISS + 2), 0.05)
    assert c.output(0.05) == []  # still data in flight: the 82-byte tail waits
    c.input(peer_ack(ISS + 2 + 2920), 0.06)
    [tail] = c.output(0.06)
    assert len(tail.payload) == 82 and tail.flags & PSH


def test_nodelay_sends_small_writes_at_once():
    c = open_client(nodelay=True)
    for ch in (b"a", b"b", b"c"):
        c.send(ch)
        [s] = c.output(0.0)
        assert s.payload == ch


def test_delayed_ack_timing():
    c = open_client(sack=True)
    r = PEER_ISS + 1
    c.input(peer_ack(ISS + 1, seq=r, payload=bytes(1460)), 1.0)
    assert c.output(1.0) == []  # one segment: the ACK waits
    assert c.next_timer() == pytest.approx(1.04)
    c.on_timer(1.04)
    [ack] = c.output(1.04)
    assert ack.ack == r + 1460
    # every second full-sized segment is acknowledged at once
    c.input(peer_ack(ISS + 1, seq=r + 1460, payload=bytes(1460)), 2.0)
    assert c.output(2.0) == []
    c.input(peer_ack(ISS + 1, seq=r + 2920, payload=bytes(1460)), 2.001)
    [ack] = c.output(2.001)
    assert ack.ack == r + 4380 and c.next_timer() is None
    # out of order: at once, with SACK
    c.input(peer_ack(ISS + 1, seq=r + 5840, payload=bytes(1460)), 3.0)
    [ack] = c.output(3.0)
    assert ack.ack == r + 4380 and ack.sack_blocks == ((r + 5840, r + 7300),)
    # the segment that fills the hole: at once
    c.input(peer_ack(ISS + 1, seq=r + 4380, payload=bytes(1460)), 3.1)
    [ack] = c.output(3.1)
    assert ack.ack == r + 7300 and ack.sack_blocks == ()
    # a FIN: at once
    c.input(peer_ack(ISS + 1, seq=r + 7300, flags=ACK | FIN), 4.0)
    [ack] = c.output(4.0)
    assert ack.ack == r + 7301 and c.state is TcpState.CLOSE_WAIT
    # data of our own carries the ACK instead
    c.input(peer_ack(ISS + 1, seq=r, payload=bytes(1)), 4.5)  # duplicate: ACK at once
    assert len(c.output(4.5)) == 1


def test_batched_input_still_acks_every_second_segment():
    c = open_client()
    r = PEER_ISS + 1
    for i in range(10):  # a batch, as from recvmmsg, before the caller asks for output
        c.input(peer_ack(ISS + 1, seq=r + i * 1460, payload=bytes(1460)), 1.0)
    acks = c.output(1.0)
    assert [a.ack - r for a in acks] == [2920, 5840, 8760, 11680, 14600]


def test_bulk_receiver_acks_every_second_segment():
    a, b, net = make_pair(delay=0.01)
    data = bytes(300 * a.snd_mss)
    p = Pump(net, a, b, data, shutdown=False)
    assert run_pumps(net, [p], lambda: len(p.got) == len(data), until=10)
    acks = [s for _, s in net.sent_by(1) if not s.payload]
    assert len(acks) <= 160  # about one per two segments, not one per segment
    assert net.now < 2.0


# -- congestion control --------------------------------------------------------------------
def test_newreno_growth_and_reduction():
    cc = NewReno(1000)
    assert cc.cwnd == 10000 and cc.in_slow_start
    cc.on_ack(5000, 0.1, 0.0)
    assert cc.cwnd == 12000  # RFC 3465: at most 2*SMSS per ACK
    cc.on_loss_fast(1.0, 12000)
    assert cc.ssthresh == cc.cwnd == 6000
    for _ in range(6):
        cc.on_ack(1000, 0.1, 1.1)
    assert cc.cwnd == 7000  # one SMSS per window of ACKed data
    cc.on_timeout(2.0, 7000)
    assert cc.cwnd == 1000 and cc.ssthresh == 3500


def test_cubic_reduction_and_growth():
    cc = Cubic(1000, initial_cwnd=100_000)
    cc.ssthresh = 50_000
    cc.on_loss_fast(10.0, 100_000)
    assert cc.ssthresh == cc.cwnd == 70_000 and cc.w_max == pytest.approx(100.0)
    # K = cbrt((W_max - cwnd) / C): the window regains W_max after K seconds
    k = ((100 - 70) / 0.4) ** (1 / 3)
    now = 10.0
    while now < 10.0 + k:  # one window of ACKs per RTT; a long RTT keeps W_est below
        for _ in range(cc.cwnd // 1000):
            cc.on_ack(1000, 0.2, now)
        now += 0.2
    assert 95_000 < cc.cwnd <= 103_000 and cc.k == pytest.approx(k)
    # fast convergence: a loss below the previous W_max lowers W_max further
    cc.cwnd = 90_000
    cc.on_loss_fast(now, 90_000)
    assert cc.w_max == pytest.approx(90 * 1.7 / 2)
    cc.on_timeout(now, 60_000)
    assert cc.cwnd == 1000 and cc.ssthresh == 42_000


def test_cubic_reno_friendly_region():
    # a short RTT and small window: W_est (Reno's rate) grows faster than the cubic curve
    cc = Cubic(1000, initial_cwnd=20_000)
    cc.on_loss_fast(0.0, 20_000)
    now = 0.0
    for _ in range(200):
        for _ in range(cc.cwnd // 1000):
            cc.on_ack(1000, 0.001, now)
        now += 0.001
    w_cubic = 0.4 * (now - cc.k) ** 3 + cc.w_max
    assert cc.cwnd / 1000 >= cc.w_est - 1 > w_cubic


# -- robustness ----------------------------------------------------------------------------
def _deliver(src: TcpConnection, dst: TcpConnection, now: float) -> None:
    for seg in src.output(now):
        dst.input(seg, now)


def conn_in_state(name: str, timestamps: bool = True) -> TcpConnection:
    """A connection in the named state, built by a scripted exchange."""
    a = TcpConnection(0.0, iss=0xFFFFF000, rng=random.Random(1))  # wraps soon
    b = TcpConnection(0.0, iss=900_000, rng=random.Random(2), timestamps=timestamps)
    if name == "CLOSED":
        return a
    a.connect(0.0)
    [syn] = a.output(0.0)
    if name == "SYN-SENT":
        return a
    b.listen_accept(syn, 0.0)
    if name == "SYN-RECEIVED":
        b.output(0.0)
        return b
    _deliver(b, a, 0.01)
    _deliver(a, b, 0.01)
    a.send(b"hello" * 1000)
    b.send(b"world" * 100)
    for t in (0.02, 0.03, 0.04):
        _deliver(a, b, t)
        _deliver(b, a, t)
    if name == "ESTABLISHED":
        return a
    a.shutdown_write(0.1)
    fin_a = a.output(0.1)
    if name == "FIN-WAIT-1":
        return a
    if name == "CLOSING":
        b.shutdown_write(0.1)
        _deliver(b, a, 0.11)
        assert a.state is TcpState.CLOSING
        return a
    for seg in fin_a:
        b.input(seg, 0.11)
    if name == "CLOSE-WAIT":
        return b
    _deliver(b, a, 0.12)
    if name == "FIN-WAIT-2":
        return a
    b.shutdown_write(0.13)
    if name == "LAST-ACK":
        b.output(0.13)
        return b
    _deliver(b, a, 0.13)
    assert a.state is TcpState.TIME_WAIT
    return a


STATES = ["CLOSED", "SYN-SENT", "SYN-RECEIVED", "ESTABLISHED", "FIN-WAIT-1", "FIN-WAIT-2",
          "CLOSE-WAIT", "CLOSING", "LAST-ACK", "TIME-WAIT"]


@pytest.mark.parametrize("name", STATES)
def test_conn_in_state_helper(name):
    assert conn_in_state(name).state == name


_u32 = st.integers(0, MASK)
_near = st.one_of(st.integers(-3000, 3000), st.integers(-70000, 70000))
_flags = st.one_of(st.integers(0, 255), st.sampled_from(
    [ACK, ACK | PSH, ACK | FIN, ACK | PSH | FIN, RST, RST | ACK, SYN, SYN | ACK]))
#: one arriving segment, relative to the connection's RCV.NXT / SND.UNA / TS.Recent where
#: the flag says so (random 32-bit values reach the out-of-window paths)
_segment_specs = st.tuples(
    st.booleans(), _near, _u32,  # seq: near RCV.NXT or anywhere
    st.booleans(), _near, _u32,  # ack: near SND.UNA or anywhere
    _flags, st.integers(0, 0xFFFF), st.binary(max_size=64),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
    st.one_of(st.none(), st.integers(0, 255)),
    st.booleans(),
    st.lists(st.tuples(_u32, _u32), max_size=5),
    st.one_of(st.integers(-3, 3), st.none(), _u32),  # TSval: small ints are relative
    st.one_of(st.none(), _u32),
    st.floats(0.0, 5.0), st.integers(0, 100),
)


def _build(c: TcpConnection, spec) -> tuple[Segment, float, int]:
    (seq_near, seq_d, seq_any, ack_near, ack_d, ack_any, flags, window, payload, mss, wscale,
     sackp, blocks, ts, ecr, dt, nread) = spec
    seq = (c.rcv_nxt + seq_d) & MASK if seq_near else seq_any
    ack = (c.snd_una + ack_d) & MASK if ack_near else ack_any
    if ts is not None and -3 <= ts <= 3:
        ts = (c.ts_recent + ts) & MASK
    seg = Segment(seq, ack, flags, window, payload, mss=mss, wscale=wscale,
                  sack_permitted=sackp, sack_blocks=tuple(blocks), ts_val=ts, ts_ecr=ecr)
    return seg, dt, nread


@pytest.mark.parametrize("name", STATES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(timestamps=st.booleans(), specs=st.lists(_segment_specs, min_size=1, max_size=12))
def test_random_segments_never_raise(name, timestamps, specs):
    c = conn_in_state(name, timestamps=timestamps)
    now = 1.0
    for spec in specs:
        seg, dt, nread = _build(c, spec)
        c.input(seg, now)
        assert isinstance(c.state, TcpState)
        for out in c.output(now):
            assert 0 <= out.seq <= MASK and 0 <= out.ack <= MASK and 0 <= out.window <= 0xFFFF
            assert len(out.payload) <= max(c.snd_mss, 1)
        try:
            c.recv(nread)
        except (BlockingIOError, ConnectionError, TimeoutError):
            pass
        t = c.next_timer()
        now += dt
        if t is not None and t <= now:
            c.on_timer(now)
        if c.closed:
            assert c.state is TcpState.CLOSED and c.next_timer() is None
