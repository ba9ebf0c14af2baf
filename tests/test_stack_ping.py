"""Ping as a sans-IO session (``Stack.start_ping``, ``EchoSession``) on fake time: two
core stacks joined by an in-memory wire with a fixed one-way delay, no runner, no
threads, no sleeps. The round-trip times are differences of the fake times."""

from __future__ import annotations

import errno

import pytest

from threadnet.stack.icmp import EchoSession

from stack_helpers import FakeLan

DELAY = FakeLan.DELAY
STEP = FakeLan.STEP
DelayWire = FakeLan


def _icmp_echo_requests(frames: list[bytes]) -> int:
    return sum(1 for f in frames if f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 8)


@pytest.mark.parametrize("family", [4, 6])
def test_a_ping_on_fake_time_completes_with_rtts_from_the_given_times(family: int) -> None:
    w = DelayWire("eth,ip=10.8.0.1/24,ip=fc00:8::1/64", "eth,ip=10.8.0.2/24,ip=fc00:8::2/64")
    a, b = w.stacks
    try:
        w.run_until(lambda: all(x.state == "preferred" for s in w.stacks
                                for x in s.interfaces[2].v6), 5.0)  # DAD ends
        done: list[EchoSession] = []
        session = a.start_ping("10.8.0.2" if family == 4 else "fc00:8::2", count=3,
                               timeout=1.0, now=w.now, on_done=done.append)
        assert not session.done and a.next_deadline() is not None
        w.collect()
        w.run_until(lambda: session.done, 5.0)
        assert done == [session] and session.error is None
        # the first waits for address resolution (request and answer: 2 x DELAY), then
        # each request and its reply take 2 x DELAY; the next goes at the reply's time.
        # IPv6: A's solicitation comes from its link-local address, so B resolves A's
        # global address before it can reply (2 x DELAY more)
        first = 4 * DELAY if family == 4 else 6 * DELAY
        assert session.rtts == pytest.approx([first, 2 * DELAY, 2 * DELAY])
        # nothing stays registered
        assert not a.echo_sessions and not a.echo_waiters and not len(a.upper)
    finally:
        w.close()


def test_a_ping_nobody_answers_reports_ehostunreach_after_three_probes() -> None:
    """ARP asks three times, a second apart (the neighbor cache's retrans and probes),
    then gives the queued request back: the session ends with EHOSTUNREACH, on fake
    time, before its own timeout."""
    w = DelayWire("eth,ip=10.8.0.1/24", "eth,ip=10.8.0.2/24")
    a, _ = w.stacks
    try:
        sent: list[bytes] = []
        collect = w.collect

        def watch() -> None:
            sent.extend(w.links[0].sent)
            collect()

        w.collect = watch  # type: ignore[method-assign]
        t0 = w.now
        ended: list[float] = []
        session = a.start_ping("10.8.0.9", count=2, timeout=10.0, now=t0,
                               on_done=lambda s: ended.append(w.now))
        w.collect()
        w.run_until(lambda: session.done, 20.0)
        assert session.error == errno.EHOSTUNREACH and session.rtts == []
        probes = [f for f in sent if f[12:14] == b"\x08\x06" and f[38:42] == bytes([10, 8, 0, 9])]
        assert len(probes) == 3
        assert ended[0] == pytest.approx(t0 + 3.0, abs=STEP + 1e-9)
        assert not a.echo_sessions and not a.echo_waiters and not len(a.upper)
    finally:
        w.close()


def test_lost_replies_time_out_on_fake_time() -> None:
    """Replies that never come: each request waits ``timeout``, then the next goes; the
    session ends with no RTT and no error after count x timeout."""
    w = DelayWire("eth,ip=10.8.0.1/24", "eth,ip=10.8.0.2/24")
    a, _ = w.stacks
    try:
        w.drop = lambda f: f[12:14] == b"\x08\x00" and f[23] == 1 and f[34] == 0  # replies
        sent: list[bytes] = []
        collect = w.collect

        def watch() -> None:
            sent.extend(w.links[0].sent)
            collect()

        w.collect = watch  # type: ignore[method-assign]
        t0 = w.now
        ended: list[float] = []
        session = a.start_ping("10.8.0.2", count=2, timeout=0.5, now=t0,
                               on_done=lambda s: ended.append(w.now))
        w.collect()
        w.run_until(lambda: session.done, 5.0)
        assert session.rtts == [] and session.error is None
        assert ended[0] == pytest.approx(t0 + 1.0, abs=1e-9)
        assert _icmp_echo_requests(sent) == 2
    finally:
        w.close()
