"""Fast unit tests of the sans-IO parts: ``Switch`` and ``ForwardingTable`` with fake
endpoints and a fake clock, and the wire formats (``wire.vde``, ``wire.ethernet``,
``wire.stream``), with hypothesis property tests.
"""

from __future__ import annotations

import errno
import itertools
import os
import random
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadnet.errors import FrameError
from threadnet.switch.core import NOVLAN, Endpoint, Switch
from threadnet.switch.fdb import ForwardingTable, make_key, split_key
from threadnet.wire import ethernet, stream
from threadnet.wire import vde as wire

BCAST = b"\xff" * 6


def mac(n: int) -> bytes:
    return bytes([0x02, 0, 0, 0, (n >> 8) & 0xFF, n & 0xFF])


def frame(dst: bytes, src: bytes, payload: bytes = b"", ethertype: int = 0x88B5) -> bytes:
    return (dst + src + struct.pack("!H", ethertype) + payload).ljust(60, b"\0")


def tagged(dst: bytes, src: bytes, vlan: int, payload: bytes = b"", pcp: int = 0) -> bytes:
    return (dst + src + struct.pack("!HHH", 0x8100, (pcp << 13) | vlan, 0x88B5)
            + payload).ljust(64, b"\0")


def tag(f: bytes, vlan: int) -> bytes:
    return f[:12] + struct.pack("!HH", 0x8100, vlan) + f[12:]


def untag(f: bytes) -> bytes:
    return f[:12] + f[16:]


class FakeEndpoint(Endpoint):
    """Collects what the switch sends (copied: the switch passes views of its buffer)."""

    def __init__(self, ident: int, uid: int = 0) -> None:
        super().__init__(ident, f"fake {ident}", uid)
        self.frames: list[bytes] = []
        self.closed = False

    def send(self, data) -> None:
        self.frames.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        out, self.frames = self.frames, []
        return out


class Net:
    """A Switch with one fake endpoint per port, and a fake clock."""

    def __init__(self, nports: int = 4, **kw) -> None:
        self.sw = Switch(**kw)
        self.now = 0.0
        self.ep = {n: FakeEndpoint(100 + n) for n in range(1, nports + 1)}
        for n, ep in self.ep.items():
            self.sw.attach(n, ep)

    def send(self, port: int, data: bytes) -> None:
        buf = bytearray(data) + bytearray(b"\xee" * 8)  # garbage after the frame: n counts
        self.sw.input(self.sw.ports[port], memoryview(buf), len(data), self.now)

    def take(self) -> dict[int, list[bytes]]:
        return {n: ep.take() for n, ep in self.ep.items()}


# -- learning, flooding --------------------------------------------------------------------------
def test_unknown_unicast_and_broadcast_flood_to_all_but_the_source():
    net = Net()
    f = frame(mac(9), mac(1), b"unknown destination")
    net.send(1, f)
    assert net.take() == {1: [], 2: [f], 3: [f], 4: [f]}
    b = frame(BCAST, mac(2))
    net.send(2, b)
    assert net.take() == {1: [b], 2: [], 3: [b], 4: [b]}
    m = frame(b"\x01\x00\x5e\x00\x00\x01", mac(3))  # multicast floods like broadcast
    net.send(3, m)
    assert net.take() == {1: [m], 2: [m], 3: [], 4: [m]}


def test_learned_unicast_goes_to_one_port_only():
    net = Net()
    net.send(2, frame(BCAST, mac(2)))
    net.take()
    f = frame(mac(2), mac(1), b"for 2")
    net.send(1, f)
    assert net.take() == {1: [], 2: [f], 3: [], 4: []}
    assert net.sw.fdb.lookup(mac(2), 0) is net.sw.ports[2]
    assert net.sw.fdb.lookup(mac(1), 0) is net.sw.ports[1]


def test_group_source_is_not_learned():
    net = Net()
    net.send(1, frame(BCAST, b"\x03\x00\x00\x00\x00\x01"))
    assert len(net.sw.fdb) == 0


def test_no_hairpin():
    net = Net()
    net.send(1, frame(BCAST, mac(1)))
    net.send(1, frame(BCAST, mac(5)))  # mac 5 also lives behind port 1
    net.take()
    net.send(1, frame(mac(5), mac(1), b"stays on its segment"))
    assert net.take() == {1: [], 2: [], 3: [], 4: []}


def test_aging_and_gc_with_a_fake_clock():
    net = Net()
    fdb = net.sw.fdb
    assert (fdb.gc_interval, fdb.expire, fdb.min_persistence) == (2, 100, 3)
    net.send(2, frame(BCAST, mac(2)))
    net.now = 60
    net.send(3, frame(BCAST, mac(3)))
    net.take()
    assert net.sw.expire(99.0) == 0
    assert fdb.lookup(mac(2), 0, now=99.0) is net.sw.ports[2]
    assert fdb.lookup(mac(2), 0, now=100.5) is None  # too old, even before gc runs
    assert net.sw.expire(100.5) == 1
    assert fdb.lookup(mac(2), 0) is None and fdb.lookup(mac(3), 0) is net.sw.ports[3]
    # an expired MAC is flooded again
    net.now = 101
    f = frame(mac(2), mac(1))
    net.send(1, f)
    assert net.take() == {1: [], 2: [f], 3: [f], 4: [f]}
    # seeing a MAC refreshes it
    net.now = 150
    net.send(3, frame(BCAST, mac(3)))
    assert net.sw.expire(201.5) == 1  # mac(1), last seen at 101
    assert fdb.lookup(mac(3), 0) is net.sw.ports[3]


def test_min_persistence_before_a_mac_moves():
    net = Net()
    p1, p2 = net.sw.ports[1], net.sw.ports[2]
    fdb = net.sw.fdb
    net.now = 10.0
    net.send(1, frame(BCAST, mac(7)))
    net.now = 11.0  # seen on port 2 within 3 s: a loop or a spoof; the entry stays
    net.send(2, frame(BCAST, mac(7)))
    assert fdb.lookup(mac(7), 0) is p1
    net.now = 12.9
    net.send(2, frame(BCAST, mac(7)))
    assert fdb.lookup(mac(7), 0) is p1
    net.now = 13.0  # 3 s since it was last seen on port 1: it moves
    net.send(2, frame(BCAST, mac(7)))
    assert fdb.lookup(mac(7), 0) is p2
    net.take()
    f = frame(mac(7), mac(3))
    net.send(3, f)
    assert net.take() == {1: [], 2: [f], 3: [], 4: []}
    # and a fresh sighting on the owner port restarts the 3 s
    net.now = 20.0
    net.send(2, frame(BCAST, mac(7)))
    net.now = 22.5
    net.send(1, frame(BCAST, mac(7)))
    assert fdb.lookup(mac(7), 0) is p2


def test_forwarding_table_alone():
    fdb = ForwardingTable(min_persistence=3, expire=10, max_entries=2)
    a, b = object(), object()
    fdb.learn(mac(1), 0, a, 0.0)
    fdb.learn(mac(1), 5, b, 0.0)  # same MAC, other VLAN: another entry
    assert fdb.lookup(mac(1), 0) is a and fdb.lookup(mac(1), 5) is b
    fdb.learn(mac(2), 0, a, 0.0)  # full
    assert len(fdb) == 2 and fdb.full_drops == 1 and fdb.lookup(mac(2), 0) is None
    fdb.learn(mac(1), 0, b, 2.0)
    assert fdb.lookup(mac(1), 0) is a
    fdb.learn(mac(1), 0, b, 3.0)
    assert fdb.lookup(mac(1), 0) is b
    fdb.forget_port(b)
    assert len(fdb) == 0
    assert make_key(mac(1), 0) == mac(1)
    assert split_key(make_key(mac(1), 4094)) == (mac(1), 4094)
    assert 0 <= fdb.bucket(make_key(mac(1), 7)) < fdb.size


def test_mac_flood_is_bounded_and_frames_still_flood():
    net = Net()
    fdb = net.sw.fdb
    rng = random.Random(1234)
    body = bytearray(frame(mac(0x99), mac(0)))
    buf = memoryview(body)
    port1 = net.sw.ports[1]
    net.ep[2].send = lambda data: None  # skip collecting 100k copies
    net.ep[3].send = lambda data: None
    net.ep[4].send = lambda data: None
    for _ in range(100_000):
        body[6:12] = bytes([rng.randrange(256) & 0xFE]) + rng.randbytes(5)
        net.sw.input(port1, buf, len(body), 0.0)
    assert len(fdb) <= fdb.max_entries
    assert fdb.full_drops > 0
    del net.ep[2].send, net.ep[3].send, net.ep[4].send
    # a station that arrives now cannot be learned, so traffic to it floods (but flows)
    net.send(2, frame(BCAST, mac(0x222)))
    net.take()
    f = frame(mac(0x222), mac(0x333))
    net.send(3, f)
    got = net.take()
    assert got[2] == [f] and got[1] == [f] and got[4] == [f]
    # when the entries expire there is room again
    net.sw.expire(101.0)
    assert len(fdb) == 0
    net.now = 102
    net.send(2, frame(BCAST, mac(0x222)))
    assert fdb.lookup(mac(0x222), 0) is net.sw.ports[2]


# -- VLANs ---------------------------------------------------------------------------------------
def vlan_net() -> Net:
    """Port 1 untagged in VLAN 7, port 2 tagged member of 7 (untagged in 0), 3 and 4 in 0."""
    net = Net()
    net.sw.create_vlan(7)
    net.sw.set_port_vlan(1, 7)
    net.sw.add_tagged(7, 2)
    return net


def test_vlan_tag_added_and_stripped():
    net = vlan_net()
    f = frame(BCAST, mac(1), b"untagged in 7")
    net.send(1, f)
    assert net.take() == {1: [], 2: [tag(f, 7)], 3: [], 4: []}
    t = tagged(BCAST, mac(2), 7, b"tagged 7", pcp=3)
    net.send(2, t)
    assert net.take() == {1: [untag(t)], 2: [], 3: [], 4: []}
    # learned unicast takes the same care of the tag
    u = frame(mac(2), mac(1), b"to 2, learned in VLAN 7")
    net.send(1, u)
    assert net.take() == {1: [], 2: [tag(u, 7)], 3: [], 4: []}
    u2 = tagged(mac(1), mac(2), 7, b"to 1")
    net.send(2, u2)
    assert net.take() == {1: [untag(u2)], 2: [], 3: [], 4: []}
    assert net.sw.fdb.lookup(mac(1), 7) is net.sw.ports[1]
    assert net.sw.fdb.lookup(mac(1), 0) is None


def test_tagged_to_tagged_is_unchanged():
    net = vlan_net()
    net.sw.add_tagged(7, 3)
    t = tagged(BCAST, mac(2), 7, b"trunk to trunk", pcp=6)
    net.send(2, t)
    assert net.take() == {1: [untag(t)], 2: [], 3: [t], 4: []}


def test_vlan0_is_separate():
    net = vlan_net()
    f = frame(BCAST, mac(3), b"VLAN 0")
    net.send(3, f)
    assert net.take() == {1: [], 2: [f], 3: [], 4: [f]}


def test_tagged_frame_of_a_foreign_vlan_is_dropped():
    net = vlan_net()
    net.sw.create_vlan(9)
    for port, vid in ((2, 9), (3, 7), (1, 0), (4, 0x123)):
        net.send(port, tagged(BCAST, mac(port), vid))
    assert net.take() == {1: [], 2: [], 3: [], 4: []}
    assert net.sw.dropped_vlan == 4


def test_tagged_frame_from_an_untagged_member_is_accepted():
    """vde_switch accepts a frame tagged with the port's own untagged VLAN."""
    net = vlan_net()
    t = tagged(BCAST, mac(1), 7, b"self-tagged")
    net.send(1, t)
    assert net.take() == {1: [], 2: [t], 3: [], 4: []}
    p = tagged(BCAST, mac(3), 0, b"priority tag")
    net.send(3, p)
    assert net.take() == {1: [], 2: [untag(p)], 3: [], 4: [untag(p)]}


def test_short_tagged_frame_is_dropped():
    net = vlan_net()
    net.send(2, tagged(BCAST, mac(2), 7)[:17])
    assert net.take() == {1: [], 2: [], 3: [], 4: []}
    assert net.sw.dropped_short == 1


def test_novlan_port_drops_untagged_frames():
    net = vlan_net()
    net.sw.set_port_vlan(3, NOVLAN)
    net.send(3, frame(BCAST, mac(3)))
    assert net.take() == {1: [], 2: [], 3: [], 4: []}
    assert net.sw.dropped_vlan == 1
    # and it gets no untagged frames either
    f = frame(BCAST, mac(4))
    net.send(4, f)
    assert net.take() == {1: [], 2: [f], 3: [], 4: []}


def test_vlan_configuration_errors():
    sw = Net().sw
    with pytest.raises(OSError) as e:
        sw.create_vlan(NOVLAN)
    assert e.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e:
        sw.create_vlan(0)  # always exists; vde_switch answers EINVAL too
    assert e.value.errno == errno.EINVAL
    sw.create_vlan(7)
    with pytest.raises(OSError) as e:
        sw.create_vlan(7)
    assert e.value.errno == errno.EEXIST
    for call, err in ((lambda: sw.set_port_vlan(1, 8), errno.ENXIO),
                      (lambda: sw.set_port_vlan(99, 7), errno.EINVAL),
                      (lambda: sw.set_port_vlan(20, 7), errno.ENXIO),
                      (lambda: sw.add_tagged(8, 1), errno.ENXIO),
                      (lambda: sw.add_tagged(7, 20), errno.ENXIO),
                      (lambda: sw.add_tagged(NOVLAN, 1), errno.EINVAL),
                      (lambda: sw.remove_vlan(0), errno.EINVAL),
                      (lambda: sw.remove_vlan(8), errno.ENXIO)):
        with pytest.raises(OSError) as e:
            call()
        assert e.value.errno == err
    sw.del_tagged(7, 1)  # not a member: a no-op, as vde_switch
    sw.add_tagged(7, 1)
    with pytest.raises(OSError) as e:
        sw.remove_vlan(7)
    assert e.value.errno == errno.EADDRINUSE
    sw.del_tagged(7, 1)
    sw.remove_vlan(7)
    assert sw.vlans == {0}


# -- hub, counters, ports --------------------------------------------------------------------------
def test_hub_mode_floods_everything():
    net = Net(hub=True)
    net.send(2, frame(BCAST, mac(2)))
    net.take()
    f = frame(mac(2), mac(1), b"learned? a hub does not care")
    net.send(1, f)
    assert net.take() == {1: [], 2: [f], 3: [f], 4: [f]}
    t = tagged(mac(2), mac(1), 5)
    net.send(1, t)  # tags are passed through untouched, whatever the VLANs
    assert net.take() == {1: [], 2: [t], 3: [t], 4: [t]}
    net.sw.hub = False
    net.send(1, f)
    assert net.take()[3] == [f]  # nothing was learned while a hub


def test_counters_count_what_was_forwarded():
    net = Net()
    sw = net.sw
    f1 = frame(BCAST, mac(1))
    f2 = frame(mac(1), mac(2), b"x" * 100)
    net.send(1, f1)
    net.send(2, f2)
    net.send(1, b"\x00" * 13)  # short: dropped, not counted
    net.send(1, frame(BCAST, mac(1), b"y" * 1600))  # longer than 1518: dropped
    big = frame(BCAST, mac(1), b"z" * 1504)  # exactly 1518
    net.send(1, big)
    p = sw.ports
    assert (p[1].in_pkts, p[1].in_bytes) == (2, 60 + 1518)
    assert (p[1].out_pkts, p[1].out_bytes) == (1, len(f2))
    assert (p[2].in_pkts, p[2].in_bytes) == (1, len(f2))
    assert (p[2].out_pkts, p[2].out_bytes) == (2, 60 + 1518)
    assert (p[3].out_pkts, p[3].out_bytes) == (2, 60 + 1518)
    assert (sw.dropped_short, sw.dropped_long) == (1, 1)
    p[1].reset_counters()
    assert (p[1].in_pkts, p[1].in_bytes, p[1].out_pkts, p[1].out_bytes) == (0, 0, 0, 0)


def test_counters_use_the_size_sent_after_tagging():
    net = vlan_net()
    f = frame(BCAST, mac(1))
    net.send(1, f)
    assert net.sw.ports[2].out_bytes == len(f) + 4
    assert net.sw.ports[1].in_bytes == len(f)


def test_detach_forgets_entries_and_frees_the_port():
    net = Net()
    sw = net.sw
    net.send(2, frame(BCAST, mac(2)))
    ep2 = net.ep[2]
    sw.detach(ep2)
    assert ep2.closed and ep2.port is None
    assert 2 not in sw.ports
    assert sw.fdb.lookup(mac(2), 0) is None
    assert sw.free_port() == 2
    net.take()
    f = frame(mac(2), mac(1))
    net.send(1, f)
    got = net.take()
    assert got[3] == [f] and got[4] == [f] and got[2] == []
    sw.detach(ep2)  # twice is harmless


def test_several_endpoints_share_a_port():
    net = Net()
    extra = FakeEndpoint(500)
    net.sw.attach(3, extra)
    f = frame(BCAST, mac(1))
    net.send(1, f)
    assert net.ep[3].frames == [f] and extra.frames == [f]
    net.sw.detach(net.ep[3])
    assert 3 in net.sw.ports  # still has an endpoint
    net.send(1, f)
    assert extra.frames == [f, f]


def test_persistent_port_survives_detach_and_is_not_allocatable():
    sw = Switch(numports=4)
    port = sw.create_port(1)
    assert not port.active and not port.allocatable
    assert sw.free_port() == 2
    ep = FakeEndpoint(1)
    sw.attach(1, ep)
    sw.detach(ep)
    assert 1 in sw.ports
    with pytest.raises(OSError) as e:
        sw.create_port(1)
    assert e.value.errno == errno.EEXIST
    sw.remove_port(1)
    assert 1 not in sw.ports
    for n in (1, 2, 3):
        sw.attach(n, FakeEndpoint(n))
    assert sw.free_port() is None
    with pytest.raises(OSError):
        sw.attach(4, FakeEndpoint(4))
    with pytest.raises(ValueError):
        Switch(numports=0)


def test_port_acl():
    sw = Switch()
    port = sw.create_port(5)
    assert sw.may_attach(port, 1000, set())
    port.user = 1001
    assert not sw.may_attach(port, 1000, {1000})
    assert sw.may_attach(port, 1001, set())
    assert sw.may_attach(port, 0, set())  # root, always
    port.user = None
    port.group = 50
    assert not sw.may_attach(port, 1000, {1000})
    assert sw.may_attach(port, 1000, {1000, 50})
    port.group = None
    sw.attach(5, FakeEndpoint(1, uid=1000))
    assert sw.may_attach(port, 1000, set())
    assert not sw.may_attach(port, 1002, set())  # shared only by the same user
    assert sw.may_attach(port, 0, set())


# -- wire.vde --------------------------------------------------------------------------------------
_path_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E)
_paths = st.text(_path_chars, min_size=1, max_size=107)
_descrs = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=200)


@given(_paths, _descrs, st.integers(0, 0xFFFFFF), st.sampled_from([wire.REQ_NEW_CONTROL,
                                                                   wire.REQ_NEW_PORT0]))
def test_request_round_trip(path, descr, port, kind):
    data = wire.pack_request(path, descr, port, kind)
    assert len(data) <= wire.MAX_REQUEST
    assert data[:12] == struct.pack("<III", 0xFEEDFACE, 3, kind | port << 8)
    req = wire.parse_request(data)
    assert (req.kind, req.port, req.path, req.version) == (kind, port, path, 3)
    assert req.description == descr[: wire.MAXDESCR - 1]


@given(_paths)
def test_sockaddr_round_trip(path):
    raw = wire.pack_sockaddr_un(path)
    assert len(raw) == wire.SOCKADDR_UN_LEN == 110
    assert raw[:2] == b"\x01\x00"
    assert wire.parse_sockaddr_un(raw) == path


def test_request_v1_layout_is_accepted():
    data = (struct.pack("=II6s", 0xFEEDFACE, 5 << 8, b"\x02" * 6)
            + wire.pack_sockaddr_un("/tmp/old-client") + b"old descr\0junk")
    req = wire.parse_request(data)
    assert (req.version, req.kind, req.port, req.path, req.description) == (
        1, wire.REQ_NEW_CONTROL, 5, "/tmp/old-client", "old descr")


def test_request_errors():
    good = wire.pack_request("/tmp/c", "d")
    bad = [
        b"",
        good[:7],
        struct.pack("=I", 0xCAFEBABE) + good[4:],  # magic
        good[:4] + struct.pack("=I", 2) + good[8:],  # version 2
        good[:121],  # short v3 header
        good[:8] + struct.pack("=I", 2) + good[12:],  # type 2
        good[:12] + struct.pack("=H", 2) + good[14:],  # AF_INET
        good[:14] + b"\0" * 108,  # empty path
        struct.pack("=II6s", 0xFEEDFACE, 0, b"\0" * 6) + b"\x01\x00/tm",  # short v1
    ]
    for data in bad:
        with pytest.raises(FrameError):
            wire.parse_request(data)
    with pytest.raises(ValueError):
        wire.pack_sockaddr_un("/" + "x" * 107)
    with pytest.raises(FrameError):
        wire.parse_sockaddr_un(b"\x01\x00/x")
    with pytest.raises(ValueError):
        wire.pack_request("/tmp/c", port=1 << 24)


# -- wire.ethernet --------------------------------------------------------------------------------
_macs = st.binary(min_size=6, max_size=6)


@given(_macs, _macs, st.integers(0, 0xFFFF).filter(lambda t: t != 0x8100),
       st.integers(-1, 4095), st.integers(0, 7), st.binary(max_size=1500))
def test_ethernet_build_parse_round_trip(dst, src, etype, vlan, pcp, payload):
    buf = bytearray(18 + len(payload))
    hlen = ethernet.build(buf, dst, src, etype, vlan, pcp)
    assert hlen == (14 if vlan < 0 else 18)
    data = bytes(buf[:hlen]) + payload
    assert ethernet.parse(data) == (dst, src, etype, vlan, hlen)
    if vlan >= 0:
        assert ethernet.strip_tag(data) == dst + src + struct.pack("!H", etype) + payload
        assert ethernet.add_tag(ethernet.strip_tag(data), vlan, pcp) == data
    else:
        t = ethernet.add_tag(data, 42, pcp)
        assert ethernet.parse(t) == (dst, src, etype, 42, 18)
        assert ethernet.strip_tag(t) == data
        assert ethernet.is_multicast(dst) == bool(dst[0] & 1)


def test_vlan_tag_helpers_take_memoryviews_and_check_the_id():
    """The switch tags and untags memoryviews of its receive buffer with these."""
    frame = bytes(range(12)) + b"\x08\x00" + b"x" * 50
    tagged = ethernet.add_tag(memoryview(frame), 4095)
    assert tagged == frame[:12] + b"\x81\x00\x0f\xff" + frame[12:]
    assert ethernet.add_tag(frame, 5, pcp=3)[12:16] == b"\x81\x00\x60\x05"
    assert ethernet.strip_tag(memoryview(tagged)) == frame
    for bad in (-1, 4096):
        with pytest.raises(ValueError):
            ethernet.add_tag(frame, bad)


@given(_macs)
def test_mac_text_round_trip(m):
    text = ethernet.mac_to_str(m)
    assert len(text) == 17 and text == text.lower()
    assert ethernet.mac_from_str(text) == m
    assert ethernet.mac_from_str(text.upper().replace(":", "-")) == m


def test_ethernet_errors():
    for text in ("", "00:11:22:33:44", "00:11:22:33:44:55:66", "00:11:22:33:44:zz",
                 "00:11:22:33:44:", "000:11:22:33:44:55"):
        with pytest.raises(ValueError):
            ethernet.mac_from_str(text)
    with pytest.raises(FrameError):
        ethernet.parse(b"\0" * 13)
    with pytest.raises(FrameError):
        ethernet.parse(b"\0" * 12 + b"\x81\x00\0")
    with pytest.raises(ValueError):
        ethernet.build(bytearray(18), b"\0" * 6, b"\0" * 6, 0x800, vlan=4096)
    with pytest.raises(ValueError):
        ethernet.build(bytearray(18), b"\0" * 5, b"\0" * 6, 0x800)


# -- wire.stream -----------------------------------------------------------------------------------
@settings(max_examples=200)
@given(st.lists(st.binary(max_size=1600), max_size=20), st.data())
def test_stream_decoder_any_chunking(frames, data):
    blob = b"".join(stream.encode(f) for f in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(blob)), max_size=30)))
    dec = stream.Decoder()
    out = []
    prev = 0
    for cut in [*cuts, len(blob)]:
        out.extend(dec.feed(blob[prev:cut]))
        prev = cut
    assert out == [f for f in frames if f]  # zero-length records are skipped
    assert dec.buffered == 0


def test_stream_decoder_byte_by_byte_and_partial():
    frames = [os.urandom(n) for n in (1, 60, 1518, 9234)]
    blob = b"".join(stream.encode(f) for f in frames)
    dec = stream.Decoder()
    out = []
    for i in range(len(blob)):
        out.extend(dec.feed(blob[i:i + 1]))
    assert out == frames
    assert dec.feed(b"\x00") == [] and dec.buffered == 1
    assert dec.feed(b"\x03ab") == [] and dec.buffered == 4
    assert dec.feed(memoryview(b"c")) == [b"abc"]


@settings(max_examples=100)
@given(st.lists(st.binary(max_size=1600), max_size=10))
def test_stream_decoder_wanted_stops_at_each_record(frames):
    """Fed ``wanted`` bytes at a time (as link.stream reads), the decoder returns each
    frame exactly when its last byte arrives and never holds bytes of the next record."""
    blob = memoryview(b"".join(stream.encode(f) for f in frames))
    ends = list(itertools.accumulate(2 + len(f) for f in frames))
    dec = stream.Decoder()
    pos, out = 0, []
    while pos < len(blob):
        n = dec.wanted
        assert n >= 1
        got = dec.feed(blob[pos:pos + n])
        pos += n
        assert len(got) <= 1 and (not got or (pos in ends and dec.buffered == 0))
        out += got
    assert out == [f for f in frames if f] and dec.buffered == 0 and dec.wanted == 2


def test_stream_errors():
    assert stream.encode(b"\x01\x02") == b"\x00\x02\x01\x02"
    with pytest.raises(FrameError):
        stream.encode(b"\0" * 0x10000)
    dec = stream.Decoder(max_record=1521)
    assert dec.feed(stream.encode(b"ok")) == [b"ok"]
    with pytest.raises(FrameError):
        dec.feed(stream.encode(b"\0" * 1522))
