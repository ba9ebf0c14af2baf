"""The receive fast path (``TcpConnection.input_data``, header prediction) must do exactly
what ``input`` does: two connections get the same segments, one through ``input`` and
the other through ``input_data`` (falling back to ``input`` when it declines), and
their outputs and state must stay identical."""

from __future__ import annotations

import random

import pytest

from threadnet.stack.tcp import ACK, FIN, PSH, SYN, Segment, TcpConnection, TcpState

MASK = 0xFFFFFFFF


def _open(iss: int, peer_iss: int, timestamps: bool, wscale: int | None) -> TcpConnection:
    c = TcpConnection(0.0, iss=iss, rng=random.Random(7), timestamps=timestamps)
    c.connect(0.0)
    [syn] = c.output(0.0)
    c.input(Segment(peer_iss, syn.seq + 1, SYN | ACK, 65535, mss=1460, wscale=wscale,
                    ts_val=100 if timestamps else None,
                    ts_ecr=syn.ts_val if timestamps else None), 0.0)
    c.output(0.0)
    assert c.state is TcpState.ESTABLISHED
    return c


def _state(c: TcpConnection) -> tuple:
    return (c.state, c.rcv_nxt, c.snd_una, c.snd_wnd, c.snd_wl1, c.snd_wl2, c.max_snd_wnd,
            c.ts_recent, c.recv_queued, c.next_timer(), c.stats.as_dict())


def _recv(c: TcpConnection, n: int) -> bytes | str:
    try:
        return c.recv(n)
    except OSError as exc:
        return type(exc).__name__


def _segs(c: TcpConnection, now: float) -> list[tuple]:
    return [(s.seq, s.ack, s.flags, s.window, bytes(s.payload), s.sack_blocks, s.ts_val,
             s.ts_ecr) for s in c.output(now)]


@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("peer_iss", [5000, MASK - 20000])  # the second wraps mid-test
@pytest.mark.parametrize("seed", range(4))
def test_input_data_matches_input(timestamps: bool, peer_iss: int, seed: int) -> None:
    rng = random.Random(seed)
    wscale = rng.choice([None, 0, 7])
    a = _open(1000, peer_iss, timestamps, wscale)
    b = _open(1000, peer_iss, timestamps, wscale)
    for c in (a, b):
        c.stretch_acks = seed % 2 == 1
    nxt = peer_iss + 1
    ts = 100
    now = 0.0
    fast = 0
    window = 65535
    for step in range(400):
        now += rng.choice([0.0, 0.001, 0.05])
        ts += rng.choice([0, 1, 1, 5])
        r = rng.random()
        n = rng.choice([1, 100, 1448, 1460])
        seq = nxt
        flags = ACK | (PSH if rng.random() < 0.3 else 0)
        if r < 0.08:
            seq = nxt + rng.choice([1460, 2920])  # out of order
        elif r < 0.12:
            seq = nxt - n  # a duplicate
        elif r < 0.15:
            window = rng.choice([65535, 30000, 0, 65535])  # a window change
        elif r < 0.17:
            ts -= 50  # an old timestamp: PAWS
        elif r < 0.2 and step > 380:
            flags |= FIN
        payload = rng.randbytes(n)
        tsv = (ts & MASK) if timestamps else None
        seg = Segment(seq & MASK, 1001, flags, window, payload, ts_val=tsv,
                      ts_ecr=0 if timestamps else None)
        a.input(seg, now)
        if flags == ACK or flags == ACK | PSH:
            done = b.input_data(seq & MASK, 1001, window, memoryview(payload), tsv, now)
            fast += done
        else:
            done = False
        if not done:
            b.input(Segment(seq & MASK, 1001, flags, window, payload, ts_val=tsv,
                            ts_ecr=0 if timestamps else None), now)
        if seq == nxt and a.rcv_nxt != nxt:
            nxt = a.rcv_nxt
        elif a.rcv_nxt > nxt:
            nxt = a.rcv_nxt
        assert _segs(a, now) == _segs(b, now)
        assert _state(a) == _state(b)
        if rng.random() < 0.3:
            k = rng.choice([100, 5000, 1 << 20])
            assert _recv(a, k) == _recv(b, k)
            assert _segs(a, now) == _segs(b, now)
        if a.state is not TcpState.ESTABLISHED:
            break
        if a.next_timer() is not None and rng.random() < 0.1:
            t = a.next_timer()
            a.on_timer(t)
            b.on_timer(t)
            assert _segs(a, t) == _segs(b, t)
    assert fast > 20, fast  # the fast path was taken, and agreed with input every time
