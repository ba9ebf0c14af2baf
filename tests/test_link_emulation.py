"""The emulation wrapper (``wirefilter://OPTS{URL}``, ``emulate(link)``) on any link."""

from __future__ import annotations

import os
import time

import pytest

from threadnet import URLError, open_link
from threadnet.link.emulation import EmulatedLink, emulate, parse_settings
from threadnet.link.stream import StreamLink


def frame(i: int, size: int = 60) -> bytes:
    return b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + i.to_bytes(4, "big") + bytes(size - 18)


@pytest.fixture
def pair():
    """Two stream links joined by pipes: what one sends, the other receives."""
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    a = StreamLink(r1, w2)
    b = StreamLink(r2, w1)
    yield a, b
    for link in (a, b):
        link.close()


def recv_all(link, timeout: float) -> list[bytes]:
    out = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not link.wait_readable(left):
            return out
        out.append(link.recv())


def test_delay_on_send_and_receive(pair):
    a, b = pair
    ea = emulate(a, delay="LR60")  # only our sends are delayed
    try:
        t0 = time.monotonic()
        ea.send(frame(1))
        assert b.wait_readable(2.0)
        assert b.recv() == frame(1)
        assert time.monotonic() - t0 >= 0.058
        # the other direction is not delayed
        t0 = time.monotonic()
        b.send(frame(2))
        assert ea.wait_readable(2.0)
        assert ea.recv() == frame(2)
        assert time.monotonic() - t0 < 0.05
        # a live change takes effect at once
        ea.set("delay", "RL80")
        t0 = time.monotonic()
        b.send(frame(3))
        assert ea.wait_readable(2.0)
        assert ea.recv() == frame(3)
        assert time.monotonic() - t0 >= 0.078
    finally:
        ea.close()


def test_loss_is_seeded_and_within_bounds(pair):
    a, b = pair
    n = 2000
    ea = EmulatedLink(a, [("loss", "LR25")], seed=11)
    try:
        for i in range(n):
            ea.send(frame(i))
            if i % 100 == 99:
                time.sleep(0.005)
        got = recv_all(b, 1.0)
    finally:
        ea.close()
    lost = 1 - len(got) / n
    # binomial sd at n=2000, p=0.25 is ~0.97 points; allow ~5 sd
    assert 0.20 < lost < 0.30, lost
    # frames arrive in order and intact
    seq = [int.from_bytes(f[14:18], "big") for f in got]
    assert seq == sorted(seq)


def test_mtu_and_fileno_readiness(pair):
    a, b = pair
    eb = emulate(b, mtu=100)
    try:
        assert not eb.wait_readable(0.05)
        a.send(frame(1, 200))  # longer than the MTU: dropped on receive
        a.send(frame(2, 80))
        assert eb.wait_readable(2.0)
        eb.setblocking(False)
        assert eb.recv() == frame(2, 80)
        with pytest.raises(BlockingIOError):
            eb.recv()
        assert eb.filter.channels["RL"].dropped_mtu == 1
    finally:
        eb.close()


def test_url_form_wraps_any_link():
    link = open_link("wirefilter://loss=5/delay=10+2/seed=3{null://}")
    try:
        assert isinstance(link, EmulatedLink)
        link.send(frame(1))
        assert not link.wait_readable(0.05)
    finally:
        link.close()


@pytest.mark.parametrize("url", [
    "wirefilter://bogus=1{null://}",
    "wirefilter://loss=abc{null://}",
    "wirefilter://loss=5",
    "wirefilter://seed=x{null://}",
])
def test_bad_urls(url):
    with pytest.raises(URLError):
        open_link(url)


def test_parse_settings_keeps_order_and_directions():
    settings, seed = parse_settings("loss=LR5/loss=RL2/del=10+5N/seed=4", "u")
    assert settings == [("loss", "LR5"), ("loss", "RL2"), ("delay", "10+5N")]
    assert seed == 4
