"""The sans-IO wirefilter core: value syntax, channel behaviour under fake time, showinfo."""

from __future__ import annotations

import random
import statistics

import pytest

from threadnet.wirefilter.core import MAX_QUEUE_FRAMES, Channel, ChannelParams, ImpairedLine
from threadnet.wirefilter.values import Value, parse_setting, parse_value


def chan(seed: int = 1, **settings: object) -> Channel:
    return Channel(ChannelParams(**settings), random.Random(seed))


def frames(n: int, size: int = 100) -> list[bytes]:
    return [i.to_bytes(4, "big") + bytes(size - 4) for i in range(n)]


# -- values ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "text, mult, expected",
    [
        ("10", False, {"LR": Value(10), "RL": Value(10)}),
        ("2.5", False, {"LR": Value(2.5), "RL": Value(2.5)}),
        (".5", False, {"LR": Value(0.5), "RL": Value(0.5)}),
        ("10+5", False, {"LR": Value(10, 5), "RL": Value(10, 5)}),
        ("10+5U", False, {"LR": Value(10, 5, "U"), "RL": Value(10, 5, "U")}),
        ("10+5N", False, {"LR": Value(10, 5, "N"), "RL": Value(10, 5, "N")}),
        ("10N", False, {"LR": Value(10, 0, "N"), "RL": Value(10, 0, "N")}),
        ("10u", False, {"LR": Value(10), "RL": Value(10)}),
        ("LR5+2", False, {"LR": Value(5, 2)}),
        ("RL5", False, {"RL": Value(5)}),
        ("lr 7", False, {"LR": Value(7)}),
        ("  RL 3+1N ", False, {"RL": Value(3, 1, "N")}),
        ("1M", True, {"LR": Value(1048576), "RL": Value(1048576)}),
        ("10K", True, {"LR": Value(10240), "RL": Value(10240)}),
        ("1G", True, {"LR": Value(2**30), "RL": Value(2**30)}),
        ("LR2K+1K", True, {"LR": Value(2048, 1024)}),
        ("RL1.5k+512N", True, {"RL": Value(1536, 512, "N")}),
        ("100", True, {"LR": Value(100), "RL": Value(100)}),
        ("1e3", False, {"LR": Value(1000), "RL": Value(1000)}),
    ],
)
def test_parse_setting(text: str, mult: bool, expected: dict[str, Value]) -> None:
    assert parse_setting(text, multipliers=mult) == expected


def test_parse_setting_gives_distinct_values_per_direction() -> None:
    values = parse_setting("10")
    assert values["LR"] is not values["RL"]


@pytest.mark.parametrize(
    "text, mult, fragment",
    [
        ("abc", False, "expected [LR|RL]NUMBER[+JITTER][U|N]"),
        ("", False, "expected"),
        ("LR", False, "expected"),
        ("10+", False, "expected"),
        ("10+5X", False, "expected"),
        ("10 5", False, "expected"),
        ("XY10", False, "expected"),
        ("1K", False, "multipliers are not allowed"),
        ("10+1M", False, "multipliers are not allowed"),
        ("1T", True, "expected [LR|RL]NUMBER[K|M|G][+JITTER[K|M|G]][U|N]"),
        ("-5", False, "negative"),
        ("LR-5", False, "negative"),
        ("5+-2", True, "negative"),
        ("1e999", False, "out of range"),
        ("nan", False, "expected"),
    ],
)
def test_parse_setting_errors(text: str, mult: bool, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_setting(text, multipliers=mult, name="loss")
    msg = str(info.value)
    assert msg.startswith(f"bad value {text!r} for loss: ")
    assert fragment in msg
    assert "\n" not in msg


def test_parse_value() -> None:
    assert parse_value("3+1N") == Value(3, 1, "N")
    with pytest.raises(ValueError, match="direction"):
        parse_value("LR3")


@pytest.mark.parametrize(
    "value, text",
    [
        (Value(20), "20+0U"),
        (Value(10, 5, "N"), "10+5N"),
        (Value(1048576), "1.04858e+06+0U"),
        (Value(2.5, 0.25), "2.5+0.25U"),
        (Value(), "0+0U"),
    ],
)
def test_value_str(value: Value, text: str) -> None:
    assert str(value) == text


def test_value_sample_without_jitter_uses_no_randomness() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    assert Value(7).sample(rng) == 7
    assert Value(7, 0, "N").sample(rng) == 7
    assert rng.getstate() == state


def test_value_sample_uniform_bounds_and_mean() -> None:
    rng = random.Random(1)
    xs = [Value(10, 4).sample(rng) for _ in range(20000)]
    assert min(xs) >= 6 and max(xs) <= 14
    assert statistics.fmean(xs) == pytest.approx(10, abs=0.1)
    assert statistics.pstdev(xs) == pytest.approx(8 / 12**0.5, rel=0.05)


def test_value_sample_normal_spread_and_clipping() -> None:
    rng = random.Random(2)
    xs = [Value(10, 4, "N").sample(rng) for _ in range(20000)]
    assert statistics.fmean(xs) == pytest.approx(10, abs=0.1)
    assert statistics.pstdev(xs) == pytest.approx(2, rel=0.05)  # plus is two std devs
    assert min(xs) >= 2 and max(xs) <= 18


def test_value_sample_never_negative() -> None:
    rng = random.Random(3)
    assert min(Value(1, 5).sample(rng) for _ in range(2000)) == 0.0
    assert min(Value(1, 5, "N").sample(rng) for _ in range(2000)) == 0.0


def test_channel_params_accepts_plain_numbers() -> None:
    p = ChannelParams(loss=20, delay=Value(10, 5, "N"))
    assert p.loss == Value(20)
    assert p.delay == Value(10, 5, "N")
    assert p.mtu == Value() and p.fifo is True


# -- a plain channel -------------------------------------------------------------------
def test_default_channel_passes_everything_at_once() -> None:
    ch = chan()
    fs = frames(10)
    for f in fs:
        assert ch.push(f, 1.0)
    assert ch.next_deadline() == 1.0
    assert ch.queued_frames == 10 and ch.queued_bytes == 1000
    assert ch.pop(0.999) == []
    assert ch.pop(1.0) == fs
    assert ch.next_deadline() is None
    assert (ch.received, ch.delivered, ch.queued_frames, ch.queued_bytes) == (10, 10, 0, 0)


def test_push_accepts_bytearray_and_memoryview() -> None:
    ch = chan()
    ch.push(bytearray(b"abc"), 0.0)
    ch.push(memoryview(b"def"), 0.0)
    out = ch.pop(0.0)
    assert out == [b"abc", b"def"] and all(type(f) is bytes for f in out)


def test_accept_at_without_speed_is_now() -> None:
    ch = chan()
    ch.push(bytes(1000), 5.0)
    assert ch.accept_at(5.0) == 5.0


# -- loss ------------------------------------------------------------------------------
def test_loss_rate_within_bounds() -> None:
    ch = chan(seed=7, loss=20)
    kept = sum(ch.push(f, 0.0) for f in frames(20000, 20))
    lost = 20000 - kept
    assert 0.18 * 20000 <= lost <= 0.22 * 20000
    assert ch.dropped_loss == lost and ch.queued_frames == kept


def test_loss_extremes() -> None:
    ch = chan(loss=100)
    assert not any(ch.push(f, 0.0) for f in frames(100))
    ch = chan(loss=0)
    assert all(ch.push(f, 0.0) for f in frames(100))


def burst_lengths(outcomes: list[bool]) -> list[int]:
    runs, cur = [], 0
    for kept in outcomes:
        if not kept:
            cur += 1
        elif cur:
            runs.append(cur)
            cur = 0
    if cur:
        runs.append(cur)
    return runs


def pushes(ch: Channel, n: int) -> list[bool]:
    outcomes = []
    for _ in range(n):
        outcomes.append(ch.push(b"x" * 60, 0.0))
        ch.pop(0.0)  # keep the queue short: only loss may drop
    return outcomes


def test_gilbert_burst_model() -> None:
    ch = chan(seed=11, loss=10, lostburst=5)
    outcomes = pushes(ch, 100000)
    loss = outcomes.count(False) / len(outcomes)
    assert 0.09 <= loss <= 0.11
    runs = burst_lengths(outcomes)
    assert 4.5 <= statistics.fmean(runs) <= 5.5


def test_independent_loss_has_short_bursts() -> None:
    ch = chan(seed=12, loss=10)
    outcomes = pushes(ch, 50000)
    assert statistics.fmean(burst_lengths(outcomes)) == pytest.approx(1 / 0.9, rel=0.05)


# -- delay, fifo, bandwidth -------------------------------------------------------------
def test_fixed_delay() -> None:
    ch = chan(delay=10)
    ch.push(b"a", 1.0)
    ch.push(b"b", 1.005)
    assert ch.next_deadline() == pytest.approx(1.010)
    assert ch.pop(1.0099) == []
    assert ch.pop(1.0101) == [b"a"]
    assert ch.next_deadline() == pytest.approx(1.015)
    assert ch.pop(2.0) == [b"b"]


def delivery_order(fifo: bool) -> tuple[list[int], list[float], Channel]:
    ch = chan(seed=21, delay=Value(50, 40), fifo=fifo)
    for i, f in enumerate(frames(200)):
        ch.push(f, i * 0.001)
    times: list[float] = []
    order: list[int] = []
    while (t := ch.next_deadline()) is not None:
        got = ch.pop(t)
        times += [t] * len(got)
        order += [int.from_bytes(f[:4], "big") for f in got]
    return order, times, ch


def test_fifo_never_reorders_with_jitter() -> None:
    order, times, ch = delivery_order(True)
    assert order == list(range(200))
    assert times == sorted(times)
    assert ch.delivered == 200


def test_nonfifo_reorders_with_jitter() -> None:
    order, times, _ = delivery_order(False)
    assert sorted(order) == list(range(200))
    assert order != list(range(200))
    assert times == sorted(times)


def test_delays_follow_the_value() -> None:
    ch = chan(seed=4, delay=Value(100, 20), fifo=False)
    for f in frames(2000):
        ch.push(f, 0.0)
    due = sorted(e[0] for e in ch._heap)
    assert 0.080 <= due[0] and due[-1] <= 0.120
    assert statistics.fmean(due) == pytest.approx(0.100, abs=0.002)


def test_bandwidth_serialises_frames() -> None:
    ch = chan(bandwidth=1000, delay=10)  # 1000 bytes/s: a 100-byte frame takes 0.1 s
    for f in frames(3):
        ch.push(f, 0.0)
    assert ch.next_deadline() == pytest.approx(0.110)
    assert ch.pop(0.1099) == []
    assert len(ch.pop(0.1101)) == 1
    assert ch.next_deadline() == pytest.approx(0.210)
    assert len(ch.pop(0.3101)) == 2
    # the line is idle again: the next frame starts when it is pushed
    ch.push(bytes(50), 1.0)
    assert ch.next_deadline() == pytest.approx(1.060)


def test_bandwidth_line_busy_carries_over() -> None:
    ch = chan(bandwidth=1000)
    ch.push(bytes(100), 0.0)  # busy until 0.1
    ch.push(bytes(100), 0.05)  # starts at 0.1, done at 0.2
    assert [e[0] for e in sorted(ch._heap)] == pytest.approx([0.1, 0.2])


# -- capacity, mtu, dup, noise -----------------------------------------------------------
def test_chanbufsize_drops_when_full() -> None:
    ch = chan(chanbufsize=250, delay=100)
    results = [ch.push(f, 0.0) for f in frames(4)]
    assert results == [True, True, False, False]
    assert ch.dropped_buffer == 2 and ch.queued_bytes == 200
    assert len(ch.pop(0.1)) == 2
    assert ch.push(bytes(100), 0.1)  # room again once delivered


def test_mtu_drops_larger_frames() -> None:
    ch = chan(mtu=100)
    assert ch.push(bytes(100), 0.0)
    assert not ch.push(bytes(101), 0.0)
    assert ch.dropped_mtu == 1 and ch.received == 2 and ch.queued_frames == 1


def test_mtu_checked_before_loss() -> None:
    ch = chan(mtu=10, loss=100)
    ch.push(bytes(20), 0.0)
    ch.push(bytes(5), 0.0)
    assert (ch.dropped_mtu, ch.dropped_loss) == (1, 1)


def test_dup_counts() -> None:
    ch = chan(seed=9, dup=25)
    for f in frames(20000, 20):
        assert ch.push(f, 0.0)
    assert 0.23 * 20000 <= ch.duplicated <= 0.27 * 20000
    out = ch.pop(0.0)
    assert len(out) == 20000 + ch.duplicated
    assert ch.delivered == len(out)
    # the copy follows the original
    ids = [int.from_bytes(f[:4], "big") for f in out]
    assert ids == sorted(ids)


def test_dup_all() -> None:
    ch = chan(dup=100)
    ch.push(b"abc", 0.0)
    assert ch.pop(0.0) == [b"abc", b"abc"]


def test_noise_flips_bits() -> None:
    # 8 bits per megabyte on 64 KiB frames: about half a flipped bit per frame
    ch = chan(seed=13, noise=8)
    original = bytes(range(256)) * 256
    for _ in range(400):
        ch.push(original, 0.0)
    out = ch.pop(0.0)
    assert len(out) == 400
    ref = int.from_bytes(original, "big")
    flips = [(int.from_bytes(f, "big") ^ ref).bit_count() for f in out]
    damaged = sum(1 for n in flips if n)
    assert damaged == ch.corrupted
    assert statistics.fmean(flips) == pytest.approx(0.5, abs=0.12)
    assert 0.3 * 400 <= damaged <= 0.5 * 400  # P(k > 0) = 1 - exp(-0.5) ~ 0.39
    assert all(len(f) == len(original) for f in out)


def test_heavy_noise_flips_many_bits() -> None:
    # a mean far above the frame's bit count: every bit flipped once (positions are distinct)
    ch = chan(seed=14, noise=100 * 1_048_576)
    ch.push(bytes(16), 0.0)
    (f,) = ch.pop(0.0)
    assert f == b"\xff" * 16
    # one bit per byte on average: the large-mean path
    ch = chan(seed=15, noise=1_048_576)
    ch.push(bytes(1000), 0.0)
    (f,) = ch.pop(0.0)
    assert int.from_bytes(f, "big").bit_count() == pytest.approx(1000, abs=150)


def test_no_noise_leaves_frame_untouched() -> None:
    ch = chan(noise=0)
    f = bytes(range(200))
    ch.push(f, 0.0)
    assert ch.pop(0.0) == [f] and ch.corrupted == 0


# -- speed -----------------------------------------------------------------------------
def test_speed_holds_the_sender_back() -> None:
    ch = chan(speed=1000)
    assert ch.accept_at(0.0) == 0.0
    ch.push(bytes(100), 0.0)
    assert ch.accept_at(0.0) == pytest.approx(0.1)
    assert ch.accept_at(0.5) == 0.5
    ch.push(bytes(100), 0.05)  # read early anyway: it still costs its time on the wire
    assert ch.accept_at(0.05) == pytest.approx(0.2)
    # speed never drops and never delays delivery itself
    assert ch.pop(0.05) and ch.dropped_buffer == ch.dropped_loss == 0


def test_speed_off_releases_sender() -> None:
    ch = chan(speed=10)
    ch.push(bytes(100), 0.0)
    assert ch.accept_at(0.0) == pytest.approx(10.0)
    ch.set_params(ChannelParams(), 0.0)
    assert ch.accept_at(0.0) == 0.0


# -- live changes ----------------------------------------------------------------------
def test_live_delay_zero_releases_queue_at_once() -> None:
    ch = chan(delay=5000)
    for f in frames(5):
        ch.push(f, 0.0)
    assert ch.pop(1.0) == []
    ch.set_params(ChannelParams(delay=0), 1.0)
    assert ch.next_deadline() == 1.0
    assert ch.pop(1.0) == frames(5)


def test_live_lower_delay_keeps_fifo_and_never_postpones() -> None:
    ch = chan(seed=3, delay=Value(1000, 500))
    for i, f in enumerate(frames(50)):
        ch.push(f, i * 0.01)
    before = {e[1]: e[0] for e in ch._heap}
    ch.set_params(ChannelParams(delay=Value(10, 5)), 0.5)
    after = {e[1]: e[0] for e in ch._heap}
    assert all(after[s] <= before[s] for s in before)
    out = []
    while (t := ch.next_deadline()) is not None:
        out += ch.pop(t)
    assert out == frames(50)
    assert max(after.values()) <= 0.5 + 0.015 + 1e-9


def test_live_delay_zero_respects_bandwidth() -> None:
    ch = chan(bandwidth=1000, delay=1000)
    for f in frames(3):  # transmissions end at 0.1, 0.2, 0.3
        ch.push(f, 0.0)
    ch.set_params(ChannelParams(bandwidth=1000), 0.15)
    assert len(ch.pop(0.15)) == 1
    assert ch.next_deadline() == pytest.approx(0.2)


def test_live_higher_delay_does_not_touch_queue() -> None:
    ch = chan(delay=10)
    ch.push(b"a", 0.0)
    ch.set_params(ChannelParams(delay=1000), 0.0)
    assert ch.next_deadline() == pytest.approx(0.010)
    ch.push(b"b", 0.0)
    assert ch.next_deadline() == pytest.approx(0.010)
    assert ch.pop(0.5) == [b"a"]


def test_editing_params_in_place_applies_to_new_frames() -> None:
    ch = chan(delay=10)
    ch.params.loss = Value(100)
    assert not ch.push(b"x", 0.0)
    ch.params = ChannelParams(mtu=1)
    assert not ch.push(b"xy", 0.0)


# -- memory ----------------------------------------------------------------------------
def test_memory_cap_with_unlimited_buffer() -> None:
    ch = chan(delay=1000)
    for _ in range(MAX_QUEUE_FRAMES):
        assert ch.push(b"x", 0.0)
    assert not ch.push(b"x", 0.0)
    assert ch.dropped_buffer == 1 and ch.queued_frames == MAX_QUEUE_FRAMES


def test_memory_cap_in_bytes() -> None:
    ch = Channel(ChannelParams(delay=1000), random.Random(1), max_queue_bytes=1000)
    assert ch.push(bytes(600), 0.0)
    assert not ch.push(bytes(600), 0.0)
    assert ch.push(bytes(400), 0.0)
    assert ch.dropped_buffer == 1 and ch.queued_bytes == 1000


def test_accounting_balances() -> None:
    ch = chan(seed=30, loss=10, dup=10, mtu=150, chanbufsize=5000, delay=Value(5, 5))
    rng = random.Random(31)
    for i in range(5000):
        ch.push(bytes(rng.randrange(1, 200)), i * 0.0001)
        ch.pop(i * 0.0001)
    ch.pop(10.0)
    drops = ch.dropped_loss + ch.dropped_mtu + ch.dropped_buffer
    assert ch.received + ch.duplicated == ch.delivered + drops + ch.queued_frames
    assert ch.queued_frames == 0 and ch.queued_bytes == 0


def test_seeded_runs_are_reproducible() -> None:
    def run() -> list[bytes]:
        f = ImpairedLine(seed=99)
        for opt, val in [("loss", "30"), ("delay", "10+10N"), ("noise", "100000"), ("fifo", "0")]:
            f.set(opt, val, 0.0)
        ch = f.channels["LR"]
        for i, fr in enumerate(frames(300)):
            ch.push(fr, i * 0.001)
        return ch.pop(100.0)

    assert run() == run()


# -- the filter ------------------------------------------------------------------------
# verbatim showinfo body of Debian's wirefilter 2.3.2 (two lines end in spaces)
SAMPLE = [
    "WireFilter: bidirectional",
    "Loss   L->R 5+2U   R->L 5+0U",
    "Lburst L->R 3+0U   R->L 3+0U",
    "Delay  L->R 10+5N   R->L 10+5N",
    "Dup    L->R 2+0U   R->L 2+0U",
    "Bandw  L->R 1.04858e+06+0U   R->L 1.04858e+06+0U",
    "Speed  L->R 10240+0U   R->L 10240+0U",
    "Noise  L->R 3+0U   R->L 3+0U",
    "MTU    L->R 1000     R->L 1000   ",
    "Cap.   L->R 100+0U   R->L 100+0U",
    "Current Delay Queue size:   L->R 0      R->L 0   ",
    "Fifoness FALSE",
    "Waiting packets in delay queues 0",
]


def configured_filter() -> ImpairedLine:
    f = ImpairedLine(seed=1)
    for opt, val in [
        ("loss", "5"), ("loss", "LR5+2"), ("lostburst", "3"), ("delay", "10+5N"),
        ("dup", "2"), ("bandwidth", "1M"), ("speed", "10K"), ("noise", "3"),
        ("mtu", "1000"), ("chanbufsize", "100"), ("fifo", "0"),
    ]:
        f.set(opt, val, 0.0)
    return f


def test_showinfo_matches_wirefilter() -> None:
    assert configured_filter().showinfo_lines() == SAMPLE


def test_showinfo_defaults_and_queue_sizes() -> None:
    f = ImpairedLine()
    f.set("delay", "LR100", 0.0)
    f.channels["LR"].push(b"a", 0.0)
    f.channels["LR"].push(b"b", 0.0)
    f.channels["RL"].push(b"c", 0.0)
    lines = f.showinfo_lines()
    assert lines[1] == "Loss   L->R 0+0U   R->L 0+0U"
    assert lines[3] == "Delay  L->R 100+0U   R->L 0+0U"
    assert lines[8] == "MTU    L->R 0     R->L 0   "
    assert lines[10] == "Current Delay Queue size:   L->R 2      R->L 1   "
    assert lines[11:] == ["Fifoness TRUE", "Waiting packets in delay queues 3"]


def test_showinfo_monodirectional() -> None:
    f = configured_filter()
    lines = f.showinfo_lines(bidirectional=False)
    assert lines[0] == "WireFilter: monodirectional"
    assert lines[1] == "Loss   5+2U"
    assert lines[3] == "Delay  10+5N"
    assert lines[8] == "MTU    1000"
    assert lines[9] == "Cap.   100+0U"
    assert lines[10] == "Current Delay Queue size:   0"
    assert lines[11:] == ["Fifoness FALSE", "Waiting packets in delay queues 0"]


def test_filter_set_directions_and_aliases() -> None:
    f = ImpairedLine()
    f.set("delay", "RL20", 0.0)
    assert f.channels["LR"].params.delay == Value(0)
    assert f.channels["RL"].params.delay == Value(20)
    f.set("band", "2K", 0.0)
    f.set("capacity", "LR1M", 0.0)
    assert f.channels["RL"].params.bandwidth == Value(2048)
    assert f.channels["LR"].params.chanbufsize == Value(1 << 20)
    assert f.channels["RL"].params.chanbufsize == Value(0)
    f.set("fifo", "1", 0.0)
    assert all(ch.params.fifo for ch in f.channels.values())
    f.set("fifo", "0", 0.0)
    assert not any(ch.params.fifo for ch in f.channels.values())


def test_filter_channels_share_one_rng() -> None:
    f = ImpairedLine(seed=5)
    assert f.channels["LR"].rng is f.channels["RL"].rng is f.rng
    assert f.channels["LR"].params is not f.channels["RL"].params


@pytest.mark.parametrize(
    "option, text, fragment",
    [
        ("jitter", "5", "unknown wirefilter option 'jitter'"),
        ("loss", "abc", "bad value 'abc' for loss"),
        ("loss", "1K", "multipliers"),
        ("mtu", "1000.5", "whole number"),
        ("mtu", "1K", "multipliers"),
        ("fifo", "yes", "bad value 'yes' for fifo"),
        ("delay", "-1", "negative"),
    ],
)
def test_filter_set_errors(option: str, text: str, fragment: str) -> None:
    f = ImpairedLine()
    with pytest.raises(ValueError, match=fragment):
        f.set(option, text, 0.0)


def test_filter_live_delay_zero() -> None:
    f = ImpairedLine(seed=2)
    f.set("delay", "1000", 0.0)
    f.channels["LR"].push(b"a", 0.0)
    f.channels["RL"].push(b"b", 0.0)
    assert f.next_deadline() == pytest.approx(1.0)
    f.set("delay", "0", 0.25)
    assert f.next_deadline() == 0.25
    assert f.channels["LR"].pop(0.25) == [b"a"]
    assert f.channels["RL"].pop(0.25) == [b"b"]
    assert f.next_deadline() is None
