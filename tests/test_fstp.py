"""The fast spanning tree (vde_switch -F): its BPDU, the engine with fake time on in-memory
switches, then rings of real switches (threadnet's and Debian's) cabled by real plugs.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import deque

import pytest

from threadnet.switch.core import Endpoint, Switch
from threadnet.switch.fstp import DISCARDING, FORWARDING
from threadnet.wire import fstp as wire

from conftest import kill_pid, need_root, need_tool, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import BROADCAST, Console, eth, mac, unixterm

# A BPDU captured from Debian's vde_switch -F (2.3.2): a root port's hello.
DEBIAN_HELLO = bytes.fromhex(
    "0180c200000000ff51681a170027424203000002027c123400ff2ffe141f01312d00"
    "800000ff51681a178002010028000400000000")


# -- the BPDU ------------------------------------------------------------------------------
def test_parse_debian_bpdu():
    b = wire.parse(DEBIAN_HELLO, False)
    assert b.flags == 0x7C  # agreement, forwarding, designated
    assert b.root == bytes.fromhex("123400ff2ffe141f")  # priority 0x1234
    assert b.cost == 20000000
    assert b.bridge == bytes.fromhex("800000ff51681a17")
    assert b.port == wire.port_id(2) == b"\x80\x02"
    assert (b.age, b.max_age, b.hello, b.forward_delay) == (1, 40, 4, 0)  # little-endian seconds


def test_build_is_byte_identical_and_tags():
    b = wire.parse(DEBIAN_HELLO, False)
    assert wire.build(bytes.fromhex("00ff51681a17"), b) == DEBIAN_HELLO
    tagged = wire.build(bytes.fromhex("00ff51681a17"), b, 10)
    assert len(tagged) == 57 and tagged[12:16] == b"\x81\x00\x00\x0a"
    assert tagged[16:18] == b"\x00\x27"  # the 802.3 length follows the tag
    assert wire.parse(tagged, True) == b
    assert wire.port_id(0x123) == bytes([0x80 | 0x12, 0x23])  # vde_switch's formula


def test_bad_bpdus_are_refused():
    with pytest.raises(ValueError, match="too short"):
        wire.parse(DEBIAN_HELLO[:50], False)
    with pytest.raises(ValueError, match="version 3"):
        wire.parse(DEBIAN_HELLO[:19] + b"\x03" + DEBIAN_HELLO[20:], False)
    with pytest.raises(ValueError, match="out of range"):
        wire.bridge_id(0x10000, b"\0" * 6)


# -- the engine on in-memory switches, with fake time -------------------------------------
class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class Wire(Endpoint):
    """One end of an in-memory cable: frames go to the network's queue."""

    def __init__(self, net: Net, ident: int) -> None:
        super().__init__(ident, "cable")
        self.net = net
        self.peer: Wire | None = None
        self.switch: Switch | None = None

    def send(self, data) -> None:
        if self.peer is not None:
            self.net.queue.append((self.peer, bytes(data)))


class Host(Endpoint):
    def __init__(self, ident: int) -> None:
        super().__init__(ident, "host")
        self.got: list[bytes] = []

    def send(self, data) -> None:
        self.got.append(bytes(data))

    @property
    def data(self) -> list[bytes]:
        """What it received besides BPDUs."""
        return [f for f in self.got if not wire.is_bpdu(f)]


class Net:
    def __init__(self, n: int, priorities: list[int] | None = None) -> None:
        self.clock = Clock()
        self.queue: deque = deque()
        self.switches = [Switch(8, mac=bytes([0, 0xFF, 0, 0, 0, i + 1]), fstp=True,
                                priority=(priorities or [0x8000] * n)[i], clock=self.clock)
                         for i in range(n)]
        self.ids = iter(range(1, 1000))
        self.cables: dict[tuple[int, int], tuple[Wire, Wire]] = {}

    def cable(self, a: int, pa: int, b: int, pb: int) -> None:
        wa, wb = Wire(self, next(self.ids)), Wire(self, next(self.ids))
        wa.peer, wb.peer = wb, wa
        wa.switch, wb.switch = self.switches[a], self.switches[b]
        self.cables[(a, b)] = (wa, wb)
        self.switches[a].attach(pa, wa)
        self.switches[b].attach(pb, wb)

    def cut(self, a: int, b: int) -> None:
        wa, wb = self.cables.pop((a, b))
        wa.peer = wb.peer = None
        wa.switch.detach(wa)
        wb.switch.detach(wb)

    def host(self, s: int, port: int) -> Host:
        h = Host(next(self.ids))
        self.switches[s].attach(port, h)
        return h

    def pump(self, limit: int = 10000) -> int:
        """Deliver queued frames until quiet; returns how many (a storm hits ``limit``)."""
        n = 0
        while self.queue and n < limit:
            dst, data = self.queue.popleft()
            if dst.port is not None:
                mv = memoryview(bytearray(data))
                dst.switch.input(dst.port, mv, len(data), self.clock.t)
            n += 1
        return n

    def run(self, seconds: int) -> None:
        for _ in range(seconds):
            self.clock.t += 1
            for sw in self.switches:
                sw.fst.tick(self.clock.t)
            self.pump()


def ring(priorities: list[int] | None = None) -> Net:
    net = Net(3, priorities)
    net.cable(0, 1, 1, 1)
    net.cable(1, 2, 2, 1)
    net.cable(2, 2, 0, 2)
    net.run(10)
    return net


def roles(sw: Switch, vlan: int = 0) -> dict[int, str]:
    return {p: sw.fst.role(vlan, p) for p in sw.fst.vlans[vlan].ports()}


def test_ring_converges_and_blocks_the_far_link():
    net = ring([0x8000, 0x1000, 0x8000])  # switch 1 (the middle one) is root
    s0, s1, s2 = net.switches
    assert all(s.fst.vlans[0].root == s1.fst.myid for s in net.switches)
    assert roles(s1) == {1: "Designated", 2: "Designated"}
    assert roles(s0) == {1: "Root", 2: "Alternate/Backup"}
    assert roles(s2) == {1: "Root", 2: "Alternate/Backup"}
    assert s0.fst.state(2, 0) == DISCARDING and s0.ports[2].discard == {0}
    assert s0.fst.vlans[0].cost == 20000000
    lines = s0.fst.print_lines(0, net.clock.t)
    assert lines[0] == "FST DATA VLAN 0000  "
    assert lines[3].startswith(" ++ rootport 0001 cost 20000000 age ")
    assert lines[5] == " -- Port 0002 tagged=0 portcost=20000000 role=Alternate/Backup"
    assert s1.fst.print_lines(0, net.clock.t)[0] == "FST DATA VLAN 0000 ROOTSWITCH "


def test_a_broadcast_goes_round_once_and_blocked_ports_do_not_learn():
    net = ring([0x8000, 0x1000, 0x8000])
    hosts = [net.host(i, 5) for i in range(3)]
    frame = eth(BROADCAST, mac(1))
    net.switches[0].input(net.switches[0].ports[5], memoryview(bytearray(frame)), 60, net.clock.t)
    assert net.pump() < 10  # no storm: the frame dies at the blocked link
    assert hosts[1].data == [frame] and hosts[2].data == [frame] and hosts[0].data == []
    # switch 2 heard nothing on its discarding port 2: mac(1) was learnt on its root port
    assert net.switches[2].fdb.lookup(mac(1), 0).number == 1
    # a frame arriving on a discarding port is dropped before learning
    s2 = net.switches[2]
    s2.input(s2.ports[2], memoryview(bytearray(eth(BROADCAST, mac(9)))), 60, net.clock.t)
    assert s2.fdb.lookup(mac(9), 0) is None and s2.dropped_blocked == 1


def test_cutting_a_cable_unblocks_the_alternate_at_once():
    net = ring([0x8000, 0x1000, 0x8000])
    hosts = [net.host(i, 5) for i in range(3)]
    net.cut(0, 1)  # switch 0 loses its root port
    net.pump()
    s0, s2 = net.switches[0], net.switches[2]
    assert roles(s0) == {2: "Root", 5: "Designated"}
    assert roles(s2) == {1: "Root", 2: "Designated", 5: "Designated"}
    assert s0.fst.vlans[0].cost == 40000000
    frame = eth(BROADCAST, mac(3))
    s0.input(s0.ports[5], memoryview(bytearray(frame)), 60, net.clock.t)
    net.pump()
    assert hosts[1].data == [frame] and hosts[2].data == [frame]


def test_a_silent_root_times_out():
    net = ring([0x8000, 0x1000, 0x8000])
    for w in net.cables[(0, 1)] + net.cables[(1, 2)]:
        w.peer = None  # the root's cables go silent without a port going down
    net.run(40)  # 3 hellos unheard, checked at each hello; then stale news dies out
    s0, s2 = net.switches[0], net.switches[2]
    assert s0.fst.vlans[0].root != net.switches[1].fst.myid
    assert s0.fst.vlans[0].root == s2.fst.vlans[0].root  # they agree on a new root
    assert {s0.fst.state(2, 0), s2.fst.state(2, 0)} == {FORWARDING}


def test_edge_ports_send_no_bpdus_and_bonus_changes_cost():
    net = Net(1)
    sw = net.switches[0]
    h = net.host(0, 3)
    sw.fst.set_edge(0, 3, True)
    h.got.clear()  # (the BPDU a port gets when it comes up)
    net.run(8)
    assert h.got == [] and sw.fst.role(0, 3) == "Edge"
    sw.detach(h)  # the setting stays with the port when its client leaves and comes back
    h = net.host(0, 3)
    net.run(8)
    assert [f for f in h.got if wire.is_bpdu(f)] == [] and sw.fst.role(0, 3) == "Edge"
    edge_bpdu = wire.build(mac(60), wire.Bpdu(0x0C, b"\0" * 8, 0, b"\0" * 8, b"\x80\x01", 0,
                                               40, 4, 0))
    sw.input(sw.ports[3], memoryview(bytearray(edge_bpdu)), len(edge_bpdu), net.clock.t)
    assert sw.fst.vlans[0].root == sw.fst.myid  # an edge port's root claim is ignored
    sw.fst.set_edge(0, 3, False)
    h.got.clear()
    net.run(4)
    assert len(h.got) == 1 and wire.parse(h.got[0], False).hello == 4
    net2 = ring([0x8000, 0x1000, 0x8000])
    s0 = net2.switches[0]
    s0.fst.set_bonus(0, 2, 30000000)  # the path round the ring through port 2 gets cheaper
    net2.run(5)
    assert roles(s0)[2] == "Root"


def test_tagged_ports_run_one_tree_per_vlan():
    net = Net(2, [0x1000, 0x8000])
    for s in net.switches:
        s.create_vlan(10)
    net.cable(0, 1, 1, 1)
    net.cable(0, 2, 1, 2)
    for s in net.switches:
        s.set_port_vlan(1, 4095)  # trunks carry VLAN 10 only, tagged
        s.set_port_vlan(2, 4095)
        s.add_tagged(10, 1)
        s.add_tagged(10, 2)
    net.run(10)
    s1 = net.switches[1]
    assert roles(s1, 10) == {1: "Root", 2: "Alternate/Backup"}
    assert s1.ports[2].discard == {10}
    h0, h1 = net.host(0, 5), net.host(1, 5)
    h0.got.clear()
    for s in net.switches:
        s.set_port_vlan(5, 10)
    frame = eth(BROADCAST, mac(5))
    net.switches[0].input(net.switches[0].ports[5], memoryview(bytearray(frame)), 60, net.clock.t)
    assert net.pump() < 10 and h1.data == [frame] and h0.data == []


def test_topology_changes_are_rate_limited():
    # a TC that loops (one end of a redundant link blocked: vde_switch passes on a TC read
    # on its blocked port) is passed on at most TC_RATE times a second
    from threadnet.switch.fstp import TC_RATE

    net = ring([0x8000, 0x1000, 0x8000])
    s1 = net.switches[1]
    tc = wire.build(mac(50), wire.Bpdu(wire.TC | wire.ROLE_DESIGNATED, s1.fst.myid, 0,
                                       s1.fst.myid, wire.port_id(9), 0, 40, 4, 0))
    sent = []
    s1.fst_send = lambda port, frame: sent.append(port)
    for _ in range(100):
        s1.input(s1.ports[1], memoryview(bytearray(tc)), len(tc), net.clock.t)
    passed = sent.count(2)
    assert 1 <= passed <= TC_RATE and s1.fst.tc_limited >= 100 - TC_RATE
    net.clock.t += 1  # a second later, the bucket is full again
    for _ in range(100):
        s1.input(s1.ports[1], memoryview(bytearray(tc)), len(tc), net.clock.t)
    assert sent.count(2) == passed + TC_RATE


def test_flushes_are_bounded_and_deferred_not_lost():
    from threadnet.switch.fstp import FLUSH_RATE

    net = ring([0x8000, 0x1000, 0x8000])
    s1 = net.switches[1]
    tc = wire.build(mac(50), wire.Bpdu(wire.TC | wire.ROLE_DESIGNATED, s1.fst.myid, 0,
                                       s1.fst.myid, wire.port_id(9), 0, 40, 4, 0))
    flushes = []
    s1.fst_flush = lambda vlan: flushes.append(vlan)
    s1.fst_send = lambda port, frame: None
    for _ in range(500):  # a port's user asking for a table walk with every frame
        s1.input(s1.ports[1], memoryview(bytearray(tc)), len(tc), net.clock.t)
    assert len(flushes) <= FLUSH_RATE
    before = len(flushes)
    s1.fst.tick(net.clock.t + 0.5)  # the deferred flush is done at the next tick
    assert len(flushes) == before + 1
    s1.fst.tick(net.clock.t + 0.6)
    assert len(flushes) == before + 1  # once


def test_priority_option_reads_like_vde_switch(tmp_path):
    import argparse

    from threadnet.cli import fst_priority
    from threadnet.switch.server import SwitchServer

    assert fst_priority("0x1000") == fst_priority("4096") == 0x1000
    assert fst_priority("010") == 8  # C's %i: octal
    assert fst_priority("0x12345") == 0x2345  # kept to 16 bits, as vde_switch does
    with pytest.raises(argparse.ArgumentTypeError):
        fst_priority("high")
    with SwitchServer(str(tmp_path / "hub"), hub=True, fstp=True) as hub:
        assert not hub.switch.fst_on  # a hub runs no spanning tree (vde_switch -x -F)
    with SwitchServer(str(tmp_path / "sw"), fstp=True, priority=0x1234,
                      mac=bytes.fromhex("02aabbccddee")) as sw:
        assert sw.switch.fst_on and sw.switch.fst.myid == bytes.fromhex("123402aabbccddee")


# -- real switches and plugs --------------------------------------------------------------
def _console(mgmt: str) -> Console:
    return wait_for(lambda: _try_console(mgmt), 10, what=f"console {mgmt}")


def _try_console(mgmt: str):
    try:
        return Console(mgmt)
    except OSError:
        return None


def _fst_roles(con: Console) -> tuple[bool, dict[int, str]]:
    lines = con.ok("fstp/print 0")
    root = "ROOTSWITCH" in lines[0]
    return root, {int(m.group(1)): m.group(2) for ln in lines
                  if (m := re.match(r" -- Port (\d{4}) tagged=\d portcost=\d+ role=(\S+)", ln))}


def _start(kind: str, procs, sockdir: str, name: str, *extra: str) -> tuple[str, str]:
    d = os.path.join(sockdir, name)
    mgmt, pidfile = d + ".mgmt", d + ".pid"
    if kind == "debian":
        need_tool("vde_switch")
        procs.daemon(["vde_switch", "-F", "-s", d, "-M", mgmt, "-d", "-p", pidfile, *extra],
                     pidfile)
    else:
        procs.daemon(threadnet_cmd("switch", "-F", "-s", d, "-M", mgmt, "-d", "-p", pidfile,
                                   *extra), pidfile, env=threadnet_env())
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")) and os.path.exists(mgmt),
             what=f"{name} sockets")
    return d, mgmt


def _cable(procs, a: str, b: str, how: str) -> subprocess.Popen:
    if how == "dpipe":
        need_tool("dpipe", "vde_plug")
        cmd = ["dpipe", "vde_plug", a, "=", "vde_plug", b]
        return procs.popen(cmd, stderr=subprocess.DEVNULL)
    return procs.popen(threadnet_cmd("plug", f"vde://{a}", f"vde://{b}"), env=threadnet_env(),
                       stderr=subprocess.DEVNULL)


def _cut(p: subprocess.Popen) -> None:
    """End a cable by PID: a dpipe's two vde_plugs first (they hold the pipes between
    them, so ending dpipe alone leaves the cable working), then the cable's process."""
    from threadnet.bench.fabric_fst import children

    for pid in children(p.pid):
        kill_pid(pid)
    p.terminate()
    p.wait(5)


def _ring(procs, sockdir, kinds: list[str], priorities: list[int]):
    sw = [_start(k, procs, sockdir, f"r{i}", "--priority", str(p))
          for i, (k, p) in enumerate(zip(kinds, priorities, strict=True))]
    cables = {}
    for a, b in ((0, 1), (1, 2), (2, 0)):
        how = "dpipe" if "debian" in (kinds[a], kinds[b]) else "plug"
        cables[(a, b)] = _cable(procs, sw[a][0], sw[b][0], how)
    cons = [_console(m) for _, m in sw]
    for c in cons:
        wait_for(lambda c=c: len(c.ports()) == 2, 10, what="both cables on every switch")
    return sw, cables, cons


def _converged(cons: list[Console]) -> bool:
    views = [_fst_roles(c) for c in cons]
    roots = [r for r, _ in views]
    alternates = sum(list(ports.values()).count("Alternate/Backup") for _, ports in views)
    return roots.count(True) == 1 and alternates == 2


def _storm_check(cons: list[Console], first: Console, procs, sw_dir: str) -> None:
    """A broadcast from a plug on the first switch: every port's counters stay bounded."""
    from switch_helpers import Plug

    for c in cons:
        c.ok("port/resetcounter")
    plug = Plug(procs, sw_dir, "bcast")
    first.port_of("bcast")
    plug.send(eth(BROADCAST, mac(77)))
    time.sleep(1.5)
    for c in cons:
        for n, p in c.ports().items():
            assert p["in"][0] < 20 and p["out"][0] < 20, f"port {n}: {p}"  # hellos + 1 frame
    plug.proc.terminate()


@pytest.mark.slow
def test_ring_of_three_threadnet_switches(procs, sockdir):
    sw, cables, cons = _ring(procs, sockdir, ["threadnet"] * 3, [0x8000, 0x1000, 0x8000])
    wait_for(lambda: _converged(cons), 10, what="a tree with two alternate ports")
    assert _fst_roles(cons[1]) == (True, {1: "Designated", 2: "Designated"})
    _storm_check(cons, cons[0], procs, sw[0][0])
    assert "status=Discarding" in "\n".join(cons[0].ok("vlan/print"))
    need_tool("unixterm")  # Debian's console client reads the roles too
    out = unixterm(procs, sw[1][1], ["fstp/print", "help fstp"])
    assert "FST DATA VLAN 0000 ROOTSWITCH \n" in out and out.count("role=Designated") == 2
    assert "fstp/bonus         VLAN PORT COST  set the port bonus for a vlan" in out


@pytest.mark.slow
def test_ring_with_debian_vde_switch_converges(procs, sockdir):
    # the root is Debian's; the two threadnet switches block the far link
    sw, cables, cons = _ring(procs, sockdir, ["threadnet", "debian", "threadnet"],
                             [0x8000, 0x1000, 0x8000])
    wait_for(lambda: _converged(cons), 10, what="a tree with two alternate ports")
    root_id = cons[1].ok("fstp/print")[1]
    assert root_id.startswith(" ++ root 10:00:")
    assert all(c.ok("fstp/print")[1] == root_id for c in cons)
    _storm_check(cons, cons[0], procs, sw[0][0])
    # both kinds print fstp/print and fstp/showinfo alike
    id_ = r"([0-9a-f]{2}:){7}[0-9a-f]{2}"
    for c in cons:
        lines = c.ok("fstp/print")
        assert re.fullmatch(r"FST DATA VLAN 0000 (ROOTSWITCH)? ", lines[0]), lines
        assert re.fullmatch(rf" \+\+ root {id_}", lines[1])
        assert re.fullmatch(rf" \+\+ designated {id_}", lines[2])
        assert re.fullmatch(r" \+\+ rootport \d{4} cost \d+ age \d+ bonusport \d{4} bonuscost \d+",
                            lines[3])
        assert all(re.fullmatch(r" -- Port \d{4} tagged=0 portcost=20000000 role=(Root|Designated|"
                                r"Alternate/Backup)", ln) for ln in lines[4:]) and len(lines) >= 6
        info = c.ok("fstp/showinfo")
        assert re.fullmatch(r"MAC ([0-9a-f]{2}:){5}[0-9a-f]{2} Priority \d+ \(0x[0-9a-f]+\)", info[0])
        assert info[1] == "FSTP=true"
    assert cons[1].ok("fstp/showinfo")[0].endswith("Priority 4096 (0x1000)")
    assert cons[0].ok("fstp/showinfo")[0].endswith("Priority 32768 (0x8000)")


@pytest.mark.slow
def test_debian_blocks_its_side_of_the_far_link(procs, sockdir):
    sw, cables, cons = _ring(procs, sockdir, ["debian", "threadnet", "threadnet"],
                             [0x8000, 0x1000, 0x8000])
    wait_for(lambda: _converged(cons), 10, what="a tree with two alternate ports")
    assert "Alternate/Backup" in _fst_roles(cons[0])[1].values()
    _storm_check(cons, cons[1], procs, sw[1][0])


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("kinds", [("threadnet", "threadnet", "threadnet"),
                                   ("threadnet", "threadnet", "debian"),
                                   ("debian", "threadnet", "threadnet")],
                         ids=["threadnet", "debian-far", "debian-cut"])
def test_cutting_a_cable_restores_ping(procs, sockdir, tap_ns, kinds):
    need_root()
    # ring 0-1-2, root 1: the 0-2 link is blocked; ping 0 -> 2 goes through 1 until 0-1 is
    # cut (with Debian's switch 0, that cable is a dpipe and Debian's side must unblock)
    sw, cables, cons = _ring(procs, sockdir, list(kinds), [0x8000, 0x1000, 0x8000])
    wait_for(lambda: _converged(cons), 10, what="a tree with two alternate ports")
    a = tap_ns(sw[0][0], "10.77.0.1")
    b = tap_ns(sw[2][0], "10.77.0.2")

    def ping() -> bool:
        r = subprocess.run(["ip", "netns", "exec", a.ns, "ping", "-c1", "-W1", b.addr],
                           capture_output=True)
        return r.returncode == 0

    wait_for(ping, 10, what="ping through the root")
    _cut(cables[(0, 1)])
    t0 = time.monotonic()
    wait_for(ping, 10, what="ping round the other way")
    assert time.monotonic() - t0 < 5
    # switch 0 kept one cable (its root port now) and the tap (a designated port)
    assert sorted(_fst_roles(cons[0])[1].values()) == ["Designated", "Root"]


@pytest.mark.root
@pytest.mark.slow
def test_vlan_trunks_with_debian(procs, sockdir, tap_ns):
    need_root()
    # two tagged trunks (VLAN 10) between a threadnet and a Debian switch: a loop in VLAN 10
    # that FST breaks; hosts on VLAN 10 (untagged) ping across, a VLAN 0 host cannot
    t = _start("threadnet", procs, sockdir, "tr-t", "--priority", "0x1000")
    v = _start("debian", procs, sockdir, "tr-v")
    cons = [_console(m) for _, m in (t, v)]
    for c in cons:
        c.ok("vlan/create 10")
        for port in (1, 2):
            c.ok(f"port/create {port}")
            c.ok(f"port/setvlan {port} 4095")
            c.ok(f"vlan/addport 10 {port}")
    _cable(procs, f"{t[0]}[1]", f"{v[0]}[1]", "dpipe")
    _cable(procs, f"{t[0]}[2]", f"{v[0]}[2]", "dpipe")

    def tree() -> bool:
        lines = cons[1].ok("fstp/print 10")
        return "ROOTSWITCH" not in lines[0] and sum("Alternate/Backup" in ln for ln in lines) <= 1 \
            and "ROOTSWITCH" in cons[0].ok("fstp/print 10")[0] and \
            "Discarding" in "\n".join(cons[1].ok("vlan/print 10"))

    wait_for(tree, 10, what="one VLAN 10 trunk blocked on Debian's side")
    hosts = []
    for (d, _), c, addr in ((t, cons[0], "10.78.0.1"), (v, cons[1], "10.78.0.2")):
        h = tap_ns(d, addr)
        port = next(n for n, p in c.ports().items()
                    if any(f"pid={h.pid}" in e for e in p["endpoints"]))
        c.ok(f"port/setvlan {port} 10")
        hosts.append(h)
    other = tap_ns(v[0], "10.78.0.3")  # stays on VLAN 0
    r = subprocess.run(["ip", "netns", "exec", hosts[0].ns, "ping", "-c3", "-i0.2", "-W2",
                        hosts[1].addr], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    r = subprocess.run(["ip", "netns", "exec", hosts[0].ns, "ping", "-c1", "-W1", other.addr],
                       capture_output=True, text=True)
    assert r.returncode != 0
    # the tagged trunk ports' frames stay bounded (no storm in VLAN 10)
    time.sleep(1)
    for c in cons:
        for n, p in c.ports().items():
            assert p["in"][0] < 200, f"port {n}: {p}"
