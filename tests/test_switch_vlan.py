"""802.1Q VLANs on ``threadnet switch`` and, as the reference, on Debian's vde_switch
(issue acceptance 4). Every scenario runs on both switches with the same assertions.

Set-up, through the console: ``vlan/create 7``, ``port/setvlan A 7`` (A becomes an
untagged member of VLAN 7 and leaves VLAN 0), ``vlan/addport 7 B`` (B becomes a tagged
member of VLAN 7). C stays an untagged member of VLAN 0.

Semantics (src/threadnet/switch/core.py, the same as vde_switch's port.c):
* an untagged frame belongs to the untagged VLAN of the port it enters on; a tagged frame
  to its VID, and is dropped unless the port is a *tagged* member of that VLAN;
* frames go only to members of their VLAN: with a tag to tagged members, without to the
  untagged ones;
* ``vlan/addport`` adds a tagged membership and keeps the port's untagged VLAN, so B is
  still an untagged member of VLAN 0: C's VLAN 0 traffic reaches B (untagged) but never A.
"""

from __future__ import annotations

import os
import struct

import pytest

import threadnet

from conftest import wait_for
from switch_helpers import (
    BROADCAST,
    Console,
    eth,
    eth_tagged,
    expect,
    expect_silence,
    mac,
    recv_frame,
)

A_PORT, B_PORT, C_PORT = 2, 3, 4
MA, MB, MC = mac(0xA), mac(0xB), mac(0xC)


def _console(path: str) -> Console:
    def attempt():
        try:
            return Console(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None

    return wait_for(attempt, what=f"console {path}")


@pytest.fixture(params=["threadnet", "debian"])
def vlan_net(request, fg_switch):
    """A switch with A (untagged, VLAN 7), B (tagged member of 7, untagged in 0), C (VLAN 0)."""
    d, mgmt, _ = fg_switch(request.param)
    con = _console(mgmt)
    links = {}
    try:
        for name, port in (("A", A_PORT), ("B", B_PORT), ("C", C_PORT)):
            links[name] = threadnet.open_link(f"vde://{d}[{port}]", description=f"vlan-{name}")
            assert links[name].port == port
        con.ok("vlan/create 7")
        con.ok(f"port/setvlan {A_PORT} 7")
        con.ok(f"vlan/addport 7 {B_PORT}")
        yield request.param, con, links["A"], links["B"], links["C"]
    finally:
        for link in links.values():
            link.close()
        con.close()


def test_vlan_print_shows_the_membership(vlan_net):
    _, con, *_ = vlan_net
    assert con.ok("vlan/print") == [
        "VLAN 0000",
        f" -- Port {B_PORT:04d} tagged=0 active=1 status=Forwarding",
        f" -- Port {C_PORT:04d} tagged=0 active=1 status=Forwarding",
        "VLAN 0007",
        f" -- Port {A_PORT:04d} tagged=0 active=1 status=Forwarding",
        f" -- Port {B_PORT:04d} tagged=1 active=1 status=Forwarding",
    ]
    ports = con.ports()
    assert ports[A_PORT]["vlan"] == 7 and ports[B_PORT]["vlan"] == 0 and ports[C_PORT]["vlan"] == 0


def test_untagged_a_to_tagged_b(vlan_net):
    _, _, a, b, c = vlan_net
    frame = eth(BROADCAST, MA, b"A broadcasts in VLAN 7")
    a.send(frame)
    got = recv_frame(b)
    assert got is not None, "B received nothing"
    # the tag goes right after the MACs: TPID 0x8100, TCI with VID 7 (priority 0)
    assert got[:12] == frame[:12]
    assert struct.unpack("!HH", got[12:16]) == (0x8100, 7)
    assert got[16:] == frame[12:]
    assert len(got) == len(frame) + 4
    expect_silence(c)
    # unicast to A's MAC, now learned in VLAN 7: B answers with a tag, A gets it untagged
    reply = eth_tagged(MA, MB, 7, b"B answers A in VLAN 7")
    b.send(reply)
    expect(a, reply[:12] + reply[16:])
    # and A's unicast to B's MAC (learned in VLAN 7) reaches only B, tagged
    uni = eth(MB, MA, b"A to B by unicast")
    a.send(uni)
    expect(b, uni[:12] + struct.pack("!HH", 0x8100, 7) + uni[12:])
    expect_silence(c, 0.2)


def test_tagged_b_to_untagged_a(vlan_net):
    _, _, a, b, c = vlan_net
    frame = eth_tagged(BROADCAST, MB, 7, b"B broadcasts in VLAN 7")
    b.send(frame)
    expect(a, frame[:12] + frame[16:])
    expect_silence(c)


def test_vlan0_traffic_of_c_never_reaches_a(vlan_net):
    _, _, a, b, c = vlan_net
    bcast = eth(BROADCAST, MC, b"C broadcasts in VLAN 0")
    c.send(bcast)
    # B is still an untagged member of VLAN 0, so it gets C's broadcast untagged
    expect(b, bcast)
    expect_silence(a)
    # B's untagged frames are VLAN 0 traffic too: they reach C, not A
    b_untagged = eth(BROADCAST, MB, b"B untagged = VLAN 0")
    b.send(b_untagged)
    expect(c, b_untagged)
    expect_silence(a)
    # unknown unicast floods only inside VLAN 0
    c.send(eth(MA, MC, b"C to A's MAC: different VLAN"))
    expect(b, eth(MA, MC, b"C to A's MAC: different VLAN"))
    expect_silence(a)


def test_vlan7_traffic_never_reaches_c(vlan_net):
    _, _, a, b, c = vlan_net
    a.send(eth(BROADCAST, MA, b"a"))
    b.send(eth_tagged(BROADCAST, MB, 7, b"b"))
    a.send(eth(MC, MA, b"to C's MAC, but in VLAN 7"))  # unknown in VLAN 7: floods VLAN 7 only
    got_b = [recv_frame(b) for _ in range(2)]
    assert all(f is not None and f[12:16] == b"\x81\x00\x00\x07" for f in got_b)
    got_a = recv_frame(a)
    assert got_a is not None and got_a[12:14] != b"\x81\x00"
    expect_silence(c)


def test_tagged_frame_for_foreign_vlan_is_dropped(vlan_net):
    kind, con, a, b, c = vlan_net
    con.ok("vlan/create 9")
    before = con.ports()
    # B is no member of VLAN 9, C no member of 7, A no member of VLAN 0 (any more)
    b.send(eth_tagged(BROADCAST, MB, 9, b"B tags 9"))
    c.send(eth_tagged(BROADCAST, MC, 7, b"C tags 7"))
    a.send(eth_tagged(BROADCAST, MA, 0, b"A tags 0"))
    c.send(eth_tagged(BROADCAST, MC, 0x123, b"C tags an undefined VLAN"))
    for link in (a, b, c):
        expect_silence(link, 0.1)
    after = con.ports()
    for p in (A_PORT, B_PORT, C_PORT):
        assert after[p]["out"] == before[p]["out"], (kind, p)
    # the ports still work for their own VLANs afterwards
    frame = eth_tagged(BROADCAST, MB, 7, b"B tags 7: fine")
    b.send(frame)
    expect(a, frame[:12] + frame[16:])


def test_tagged_frame_from_untagged_member_is_accepted(vlan_net):
    """A frame tagged with the port's own untagged VLAN belongs to that VLAN (vde_switch
    accepts it too): A, untagged in 7, sends a frame tagged 7; C, untagged in 0, one
    tagged 0 (a priority tag)."""
    _, _, a, b, c = vlan_net
    frame = eth_tagged(BROADCAST, MA, 7, b"A tags 7", pcp=5)
    a.send(frame)
    expect(b, frame)  # B is a tagged member: the tag stays as it was
    expect_silence(c, 0.1)
    frame0 = eth_tagged(BROADCAST, MC, 0, b"C tags 0")
    c.send(frame0)
    expect(b, frame0[:12] + frame0[16:])  # B is an untagged member of VLAN 0
    expect_silence(a, 0.1)


def test_port_without_untagged_vlan_drops_untagged_frames(vlan_net):
    _, con, a, b, c = vlan_net
    con.ok(f"port/setvlan {C_PORT} 4095")  # 0xfff: no untagged VLAN
    c.send(eth(BROADCAST, MC, b"nowhere to go"))
    expect_silence(a, 0.1)
    expect_silence(b, 0.1)
    b.send(eth(BROADCAST, MB, b"VLAN 0 without C"))
    expect_silence(c, 0.2)


def test_untagged_port_moves_back_to_vlan0(vlan_net):
    _, con, a, b, c = vlan_net
    con.ok(f"port/setvlan {A_PORT} 0")
    frame = eth(BROADCAST, MA, b"A is in VLAN 0 again")
    a.send(frame)
    expect(b, frame)
    expect(c, frame)


def test_threadnet_keeps_vlan0(fg_switch):
    """vde_switch 2.3.2 lets ``vlan/remove 0`` delete the default VLAN and then crashes on
    the next ``port/create``; threadnet refuses (EINVAL), deliberately."""
    _, mgmt, pid = fg_switch("threadnet")
    con = _console(mgmt)
    try:
        assert con.run("vlan/remove 0")[0] == 22
        assert con.ok("vlan/print") == ["VLAN 0000"]
        con.ok("port/create 1")
        assert os.path.exists(f"/proc/{pid}")
    finally:
        con.close()
