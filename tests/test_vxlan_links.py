"""``vxvde://`` and ``vxlan://`` (issue 13, LANs without a switch process), against the real
peers: Debian's ``vde_plug`` (vdeplug4 4.0.1's vxvde and vxlan plugins), a kernel tap on
another ``vde_plug vxvde://``, and a Linux ``vxlan`` device.

Multicast stays on loopback or inside namespaces the test made: in-process endpoints use
``/if=lo/bind=127.0.0.1`` (the group joined on lo, frames sent from 127.0.0.1); the
others run in a namespace whose multicast route is lo (``mcast_ns``) or a veth pair.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import time

import pytest

from threadnet.errors import URLError
from threadnet.link import open_link
from threadnet.link.vxbase import MacTable, parse_url
from threadnet.link.vxlan import TAGS as VXLAN_TAGS
from threadnet.link.vxvde import TAGS as VXVDE_TAGS
from threadnet.wire import vxlan as wire_vxlan

from conftest import need_tool, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import BROADCAST, Plug, eth, expect, expect_silence, mac, recv_frame

# a group per test run: parallel runs (and other tests) do not share a LAN
_G = 16 + os.getpid() % 200
LO = "/if=lo/bind=127.0.0.1"


def group(n: int) -> str:
    return f"239.255.{_G}.{n}"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the header ------------------------------------------------------------------------
def test_header_is_rfc7348_and_parses_back() -> None:
    h = wire_vxlan.pack(0x123456)
    assert h == bytes([0x08, 0, 0, 0, 0x12, 0x34, 0x56, 0])
    assert wire_vxlan.parse(h) == (0x08, 0x123456)
    assert wire_vxlan.vni_of(h) == 0x123456
    buf = bytearray(12)
    wire_vxlan.pack_into(buf, 4, 7)
    assert wire_vxlan.vni_of(buf, 4) == 7 and wire_vxlan.is_exact(buf, wire_vxlan.pack(7), 4)
    with pytest.raises(ValueError):
        wire_vxlan.pack(1 << 24)
    with pytest.raises(ValueError):
        wire_vxlan.pack(-1)


def test_header_validity_as_the_kernel_and_vdeplug4_judge_it() -> None:
    good = wire_vxlan.pack(5)
    assert wire_vxlan.parse(good[:7]) is None and wire_vxlan.vni_of(good[:7]) is None
    assert wire_vxlan.vni_of(b"\x00" + good[1:]) is None  # no I bit
    assert wire_vxlan.vni_of(b"\x0c" + good[1:]) is None  # an unknown flag
    assert wire_vxlan.vni_of(good[:7] + b"\x01") is None  # the VNI's reserved byte
    odd = good[:1] + b"\x01\x02\x03" + good[4:]  # reserved bits after the flags: ignored
    assert wire_vxlan.vni_of(odd) == 5
    assert not wire_vxlan.is_exact(odd, good)  # ... but not by vxvde, which wants its own


# -- URLs ------------------------------------------------------------------------------
def test_url_syntax_is_vdeplug4s() -> None:
    assert parse_url("u", "239.1.2.3/port=14790/vni=7", VXVDE_TAGS) == (
        "239.1.2.3", {"port": "14790", "vni": "7"})
    # any prefix, the first option in the plugin's order wins: "v" is vni, "e" expiretime
    assert parse_url("u", "/v=9/e=3/h=0/p=1/v6", VXVDE_TAGS) == (
        "", {"vni": "9", "expiretime": "3", "hashsize": "0", "port": "1", "v6": ""})
    # empty items are skipped; quotes and %XX protect characters
    assert parse_url("u", "ff05::9//if='lo'/bind=%31%32%37.0.0.1", VXVDE_TAGS) == (
        "ff05::9", {"if": "lo", "bind": "127.0.0.1"})
    assert parse_url("u", "[ff05::9]/ttl=3", VXLAN_TAGS) == ("ff05::9", {"ttl": "3"})


@pytest.mark.parametrize("url, message", [
    ("vxvde:///colour=red", "unknown option 'colour'"),
    ("vxvde:///vni=16777216", "a VNI has 24 bits"),
    ("vxvde:///vni=nosuchgroup-xyz", "neither a number nor a group name"),
    ("vxvde:///grp=nosuchgroup-xyz", "bad grp"),
    ("vxvde:///port=0", "bad port '0'"),
    ("vxvde:///port=70000", "bad port"),
    ("vxvde:///port=nosuchservice", "UDP service name"),
    ("vxvde:///ttl=256", "bad ttl"),
    ("vxvde:///if=nosuchif0", "no such network interface"),
    ("vxvde:///hashsize=-1", "bad hashsize"),
    ("vxvde:///expiretime=soon", "bad expiretime"),
    ("vxvde:///rcvbuf=lots", "bad rcvbuf"),
    ("vxvde://10.0.0.1", "not a multicast address"),
    ("vxvde://no.such.host.invalid", "cannot resolve"),
    ("vxvde:///v4/v6x", "unknown option 'v6x'"),
    ("vxvde://239.1.1.1{vde:///tmp/x}", "takes no nested"),
    ("vxlan:///vni=abc", "bad vni"),
    ("vxlan:///vni=16777216", "bad vni"),
    ("vxlan:///grp=1", "unknown option 'grp'"),
    ("vxlan:///bind=::", "unknown option 'bind'"),
    ("vxlan://no.such.host.invalid", "cannot resolve"),
])
def test_bad_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(URLError, match=message.replace("(", r"\(")):
        open_link(url)


def test_grp_picks_the_vni_and_the_groups_last_24_bits() -> None:
    link = open_link(f"vxvde://{group(1)}/grp=513" + LO)
    try:
        assert link.vni == 513
        assert link.group[0] == "239.0.2.1" and link.group[1] == 14789
    finally:
        link.close()
    link = open_link(f"vxvde://{group(1)}/grp=513/vni=9" + LO)
    try:
        assert link.vni == 9 and link.group[0] == "239.0.2.1"
    finally:
        link.close()


def test_vni_may_be_a_group_name_as_in_vdeplug4() -> None:
    import grp as groups

    g = groups.getgrgid(os.getegid())
    for spec, vni in ((g.gr_name, g.gr_gid), ("", os.getegid())):
        link = open_link(f"vxvde://{group(1)}/vni={spec}" + LO)
        try:
            assert link.vni == vni
        finally:
            link.close()


def test_defaults_are_vdeplug4s() -> None:
    link = open_link("vxvde://" + LO)
    try:
        assert link.group == ("239.0.0.1", 14789) and link.vni == 1
        assert link.table.size == 1024 and link.table.expire == 128
        assert link.max_mtu is None and link.max_frame == 1518
    finally:
        link.close()
    port = free_udp_port()
    link = open_link(f"vxlan://127.0.0.1/port={port}")
    try:
        assert link.vni == 1 and not link.multicast and link.local_addr == ("0.0.0.0", port)
    finally:
        link.close()
    assert wire_vxlan.DEFAULT_PORT == 4789


# -- the learning table ---------------------------------------------------------------
def test_mac_table_learns_expires_forgets_and_stays_bounded() -> None:
    t = MacTable(4, expire=128)
    a1, a2 = ("10.0.0.1", 5000), ("10.0.0.2", 5000)
    t.learn(mac(1), a1, 100.0)
    t.learn(BROADCAST, a1, 100.0)  # a group MAC is never a source
    assert t.lookup(mac(1), 200.0) == a1 and len(t) == 1
    assert t.lookup(mac(1), 228.5) is None  # older than expiretime: not used
    t.learn(mac(1), a2, 229.0)  # moved
    assert t.lookup(mac(1), 229.0) == a2
    for i in range(2, 8):
        t.learn(mac(i), a1, 230.0 + i)
    assert len(t) == 4  # bounded: the least recently refreshed went first
    assert t.lookup(mac(1), 240.0) is None and t.lookup(mac(7), 240.0) == a1
    assert t.forget(a1) == 4 and len(t) == 0
    off = MacTable(0, 128)
    off.learn(mac(1), a1, 0.0)
    assert off.lookup(mac(1), 0.0) is None


# -- malformed datagrams (loopback) ----------------------------------------------------
def test_vxlan_drops_and_counts_malformed_datagrams_and_learns_the_sender() -> None:
    port = free_udp_port()
    link = open_link(f"vxlan://127.0.0.1/port={port}/vni=7")
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.2", 0))
        dst = ("127.0.0.1", port)
        frame = eth(BROADCAST, mac(9), b"payload")
        for junk in (b"", b"\x08\x00", wire_vxlan.pack(7),  # short, header only
                     wire_vxlan.pack(7) + frame[:14],  # no payload at all
                     wire_vxlan.pack(8) + frame,  # another VNI
                     b"\x0c" + wire_vxlan.pack(7)[1:] + frame,  # unknown flag
                     os.urandom(1400)):
            peer.sendto(junk, dst)
        peer.sendto(wire_vxlan.pack(7) + frame, dst)
        expect(link, frame)
        assert link.malformed == 7
        # the sender's MAC is learned at the VXLAN port (a VTEP sends from any port)
        assert link.destination(eth(mac(9), mac(1))) == ("127.0.0.2", port)
        assert link.destination(eth(mac(8), mac(1))) == ("127.0.0.1", port)
        assert link.destination(eth(BROADCAST, mac(1))) == ("127.0.0.1", port)
        link.send(b"short")  # shorter than an Ethernet header: not sent
        assert link.short_tx == 1
    finally:
        peer.close()
        link.close()


def test_vxvde_drops_and_counts_malformed_datagrams() -> None:
    link = open_link(f"vxvde://{group(2)}/vni=7" + LO)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        peer.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,  # on lo, not the LAN
                        struct.pack("=4s4si", bytes(4), bytes(4), socket.if_nametoindex("lo")))
        frame = eth(BROADCAST, mac(9), b"payload")
        hdr = wire_vxlan.pack(7)
        for dst in (link.local_addr, link.group):  # its unicast socket and the group
            for junk in (b"\x08", hdr + frame[:14], wire_vxlan.pack(8) + frame,
                         hdr[:1] + b"\x01" + hdr[2:] + frame,  # vxvde wants its header exactly
                         os.urandom(300)):
                peer.sendto(junk, dst)
        peer.sendto(hdr + frame, link.group)
        expect(link, frame)
        assert link.malformed == 10
        assert link.table.lookup(mac(9), time.monotonic()) == peer.getsockname()
        peer.sendto(hdr, link.group)  # a goodbye: forget what that peer taught
        expect_silence(link, 0.2)
        assert link.table.lookup(mac(9), time.monotonic()) is None
    finally:
        peer.close()
        link.close()


# -- vxvde between threadnet endpoints (loopback) ---------------------------------------
def test_vxvde_endpoints_form_a_lan_learn_and_isolate_vnis() -> None:
    url = f"vxvde://{group(3)}/port=14790/vni=7" + LO
    a, b, c = open_link(url), open_link(url), open_link(url)
    other = open_link(f"vxvde://{group(3)}/port=14790/vni=8" + LO)
    try:
        hello = eth(BROADCAST, mac(1), b"hello")
        a.send(hello)  # unknown: to the group, so everyone on VNI 7 gets it
        expect(b, hello)
        expect(c, hello)
        expect_silence(other)  # another VNI: a different LAN
        assert other.malformed >= 1
        expect_silence(a)  # our own frame came back by loopback and was dropped
        assert a.own >= 1
        reply = eth(mac(1), mac(2), b"reply")
        b.send(reply)  # b learned mac(1) -> a's unicast socket: a alone gets it
        expect(a, reply)
        expect_silence(c)
        assert a.table.lookup(mac(2), time.monotonic()) == b.local_addr
        assert a.destination(eth(mac(2), mac(1))) == b.local_addr
        later = time.monotonic() + 129  # past vdeplug4's expiretime: to the group again
        a._clock = lambda: later
        assert a.destination(eth(mac(2), mac(1))) == a.group
        a._clock = time.monotonic
        c.send(eth(mac(2), mac(3), b"to b"))  # unknown to c: multicast, b takes it
        expect(b, eth(mac(2), mac(3), b"to b"))
        expect(a, eth(mac(2), mac(3), b"to b"))  # (a group member too)
    finally:
        for link in (b, c, other):
            link.close()
    # a's table knew b; b's goodbye (on close) makes it forget
    expect_silence(a, 0.2)
    assert a.table.lookup(mac(2), time.monotonic()) is None
    a.close()


# -- vxvde with Debian's vde_plug -------------------------------------------------------
@pytest.fixture
def mcast_ns(netns):
    """A namespace whose multicast goes out (and loops back) on lo, from 127.0.0.1."""
    ns = netns.add()
    netns.run(ns, "ip", "route", "add", "224.0.0.0/4", "dev", "lo", "src", "127.0.0.1")
    return ns


def _plugs(procs, netns, ns: str, url_vde: str, url_tn: str) -> tuple[Plug, Plug]:
    vde = Plug(procs, url_vde, "vde", prog=netns.exec_cmd(ns, "vde_plug"))
    tn = Plug(procs, url_tn, "tn", prog=netns.exec_cmd(ns, *threadnet_cmd("plug")),
              popen_kw={"env": threadnet_env()})
    return vde, tn


def _exchange(vde: Plug, tn: Plug, vde_learns: bool = True) -> None:
    """Both ways, broadcast first (each learns the other), then unicast. Without
    ``vde_learns`` the last frame goes to a MAC vde_plug never saw (so to the group):
    vdeplug4 4.0.1's vxlan learns an uninitialised sender address (its recvmsg gets a
    name length from a sockaddr it has not filled), and its unicast goes nowhere."""
    time.sleep(0.3)  # both joined
    first = eth(BROADCAST, mac(1), b"from vde_plug")
    deadline = time.monotonic() + 10
    while True:  # (threadnet plug may still be starting: resend until it hears)
        vde.send(first)
        got = tn.recv(0.5)
        if got is not None:
            break
        assert time.monotonic() < deadline, "threadnet plug heard nothing from vde_plug"
    assert got == first
    back = eth(mac(1), mac(2), b"from threadnet")
    tn.send(back)
    vde.expect(back)
    again = eth(mac(2) if vde_learns else mac(7), mac(1), b"unicast to threadnet")
    vde.send(again)
    tn.expect(again)


@pytest.mark.root
def test_vxvde_threadnet_plug_and_debian_vde_plug_exchange_frames(procs, netns, mcast_ns):
    need_tool("vde_plug")
    url = f"vxvde://{group(4)}/port=14791/vni=12"
    vde, tn = _plugs(procs, netns, mcast_ns, url, url)
    _exchange(vde, tn)
    # a vde_plug on another VNI hears neither
    odd = Plug(procs, f"vxvde://{group(4)}/port=14791/vni=13", "odd",
               prog=netns.exec_cmd(mcast_ns, "vde_plug"))
    time.sleep(0.3)
    tn.send(eth(BROADCAST, mac(2), b"vni 12 only"))
    vde.expect(eth(BROADCAST, mac(2), b"vni 12 only"))
    odd.expect_silence()


@pytest.mark.root
def test_vxvde_over_ipv6_with_debian_vde_plug(procs, netns):
    """IPv6 multicast does not loop on lo: a veth pair in the namespace, /if= names it."""
    need_tool("vde_plug")
    ns = netns.add()
    netns.run(ns, "ip", "link", "add", "vxa", "type", "veth", "peer", "name", "vxb")
    for dev in ("vxa", "vxb"):
        netns.run(ns, "ip", "link", "set", dev, "up")
    def has_linklocal() -> bool:
        out = netns.run(ns, "ip", "-6", "-j", "addr", "show", "dev", "vxa").stdout
        return any(a.get("scope") == "link" and "tentative" not in a
                   for i in json.loads(out) for a in i.get("addr_info", []))
    wait_for(has_linklocal, timeout=10, what="vxa's link-local address")
    url = "vxvde://ff05:56de::7/v6/if=vxa/vni=99"
    vde, tn = _plugs(procs, netns, ns, url, url)
    _exchange(vde, tn)


# -- a threadnet stack and a kernel tap -------------------------------------------------
PROBE = r"""
import json, sys
from threadnet import Stack
from threadnet.stack.socket import create_connection
link, cfg, target, port, count = sys.argv[1:6]
s = Stack(cfg, link=link)
out = {"ping": len(s.ping(target, count=int(count), timeout=1.5))}
if port != "0":
    with create_connection(s, (target, int(port)), timeout=10) as c:
        c.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: peer\r\n\r\n")
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    out["http"] = data.decode(errors="replace")
print(json.dumps(out), flush=True)
s.close()
"""


def probe(netns, ns: str, link: str, cfg: str, target: str, port: int = 0,
          count: int = 3) -> dict:
    """Run a threadnet Stack on ``link`` inside ``ns``: ping ``target`` (and with ``port``
    fetch /hello.txt over HTTP with the stack's socket API)."""
    r = subprocess.run(netns.exec_cmd(ns, sys.executable, "-c", PROBE, link, cfg, target,
                                      str(port), str(count)),
                       capture_output=True, text=True, timeout=60, env=threadnet_env())
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.root
def test_a_stack_on_vxvde_pings_a_kernel_tap_on_vde_plug_vxvde(procs, netns, mcast_ns):
    need_tool("vde_plug")
    ns = mcast_ns
    netns.run(ns, "ip", "tuntap", "add", "dev", "vxtap0", "mode", "tap")
    netns.run(ns, "ip", "addr", "add", "10.231.0.2/24", "dev", "vxtap0")
    netns.run(ns, "ip", "link", "set", "vxtap0", "up")
    url = f"vxvde://{group(5)}/vni=21"
    procs.popen(netns.exec_cmd(ns, "vde_plug", url, "tap://vxtap0"),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.3)
    assert probe(netns, ns, url, "eth,ip=10.231.0.1/24", "10.231.0.2")["ping"] == 3
    # the same group on another VNI is another LAN: nobody answers
    assert probe(netns, ns, f"vxvde://{group(5)}/vni=22", "eth,ip=10.231.0.3/24",
                 "10.231.0.2", count=1)["ping"] == 0


# -- vxlan with a Linux vxlan device ---------------------------------------------------
@pytest.fixture
def veth_pair(netns):
    """Two namespaces joined by a veth pair: (ns_a, ns_b), 10.232.0.1 and .2/24 on
    vxa/vxb. Transmit checksum offload is off on vxa: a veth hands its peer datagrams whose
    inner (tunnelled) checksums were never computed, which a real NIC would have done."""
    need_tool("ethtool")
    a, b = netns.add(), netns.add()
    netns.run(a, "ip", "link", "add", "vxa", "type", "veth", "peer", "name", "vxb",
              "netns", b)
    for ns, dev, addr in ((a, "vxa", "10.232.0.1/24"), (b, "vxb", "10.232.0.2/24")):
        netns.run(ns, "ip", "addr", "add", addr, "dev", dev)
        netns.run(ns, "ip", "link", "set", dev, "up")
        netns.run(ns, "ethtool", "-K", dev, "tx", "off")
    return a, b


@pytest.mark.root
def test_a_stack_on_vxlan_pings_and_fetches_from_a_linux_vxlan_device(procs, netns, veth_pair,
                                                                      sockdir):
    kern, mine = veth_pair
    netns.run(kern, "ip", "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport",
              "4789", "remote", "10.232.0.2", "dev", "vxa")
    netns.run(kern, "ip", "addr", "add", "192.168.232.1/24", "dev", "vx0")
    netns.run(kern, "ip", "link", "set", "vx0", "up")
    www = os.path.join(sockdir, "www")
    os.mkdir(www)
    with open(os.path.join(www, "hello.txt"), "w") as f:
        f.write("hello over vxlan\n")
    procs.popen(netns.exec_cmd(kern, sys.executable, "-m", "http.server", "8080", "--bind",
                               "192.168.232.1", "-d", www),
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(lambda: "192.168.232.1:8080" in netns.run(kern, "ss", "-tln").stdout,
             what="http.server")
    out = probe(netns, mine, "vxlan://10.232.0.1/vni=42", "eth,ip=192.168.232.2/24",
                "192.168.232.1", port=8080)
    assert out["ping"] == 3
    assert out["http"].startswith("HTTP/1.0 200") and out["http"].endswith("hello over vxlan\n")
    # another VNI: the kernel drops it
    assert probe(netns, mine, "vxlan://10.232.0.1/vni=43", "eth,ip=192.168.232.3/24",
                 "192.168.232.1", count=1)["ping"] == 0


@pytest.mark.root
def test_a_stack_on_vxlan_multicast_pings_a_linux_vxlan_device_in_that_group(netns, veth_pair):
    kern, mine = veth_pair
    g = group(8)
    netns.run(kern, "ip", "link", "add", "vx1", "type", "vxlan", "id", "77", "dstport",
              "4789", "group", g, "dev", "vxa")
    netns.run(kern, "ip", "addr", "add", "192.168.233.1/24", "dev", "vx1")
    netns.run(kern, "ip", "link", "set", "vx1", "up")
    # ARP goes to the group; the kernel learns our MAC's VTEP and answers it unicast
    out = probe(netns, mine, f"vxlan://{g}/vni=77/if=vxb", "eth,ip=192.168.233.2/24",
                "192.168.233.1")
    assert out["ping"] == 3


@pytest.mark.root
def test_vxlan_threadnet_plug_and_debian_vde_plug_exchange_frames(procs, netns, veth_pair):
    """vdeplug4's vxlan binds the port with multicast loopback off: one endpoint per
    host, so each plug has its own namespace, the group routed over the veth."""
    need_tool("vde_plug")
    a, b = veth_pair
    for ns, dev in ((a, "vxa"), (b, "vxb")):
        netns.run(ns, "ip", "route", "add", "224.0.0.0/4", "dev", dev)
    url = f"vxlan://{group(6)}/vni=5"
    vde = Plug(procs, url, "vde", prog=netns.exec_cmd(a, "vde_plug"))
    tn = Plug(procs, url, "tn", prog=netns.exec_cmd(b, *threadnet_cmd("plug")),
              popen_kw={"env": threadnet_env()})
    _exchange(vde, tn, vde_learns=False)


# -- IPv6 unicast and the transmit backlog (loopback) -----------------------------------
# (a vxlan:// link binds its port on every address, so its remote on this host is itself)
def test_vxlan_over_ipv6_unicast_learns_the_senders_vtep() -> None:
    port = free_udp_port()
    link = open_link(f"vxlan://[::1]/port={port}/vni=3")
    peer = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        peer.bind(("::1", 0))
        frame = eth(BROADCAST, mac(4), b"v6")
        peer.sendto(wire_vxlan.pack(3) + frame, ("::1", port))
        expect(link, frame)
        assert link.destination(eth(mac(4), mac(1)))[:2] == ("::1", port)
        answer = eth(mac(4), mac(1), b"answer")
        link.send(answer)  # to the learned VTEP: ::1 at the VXLAN port, this link
        expect(link, answer)
        assert link.drops == 0 and link.malformed == 0
    finally:
        peer.close()
        link.close()


def test_frames_queued_in_the_backlog_go_out_encapsulated_to_their_destination() -> None:
    """With a loop attached, what the socket cannot take waits in the bounded backlog as
    whole datagrams with their destination; ``on_writable`` sends them in order."""
    port = free_udp_port()
    link = open_link(f"vxlan://127.0.0.1/port={port}/vni=11")
    try:
        woken: list[object] = []
        assert link.attach_tx(woken.append)
        bl = link._backlog
        frames = [eth(BROADCAST, mac(1), bytes([i])) for i in range(3)]
        with bl.lock:  # as if the socket had been full: queue them
            wake = link._queue(bl, [link._wrap(f, link.destination(f)) for f in frames])
        assert wake is not None and link.tx_backlog == 3
        frames.append(eth(BROADCAST, mac(1), b"behind"))
        link.send(frames[-1])  # keeps the order: queued too
        assert link.tx_backlog == 4
        assert link.on_writable() is False and link.tx_backlog == 0
        for f in frames:
            expect(link, f)
    finally:
        link.close()


def test_random_datagrams_never_crash_either_link() -> None:
    """Garbage of every length, some behind a valid header: dropped and counted, or
    delivered as a frame when it is one; the links keep working."""
    import random

    rng = random.Random(13)
    port = free_udp_port()
    vxl = open_link(f"vxlan://127.0.0.1/port={port}/vni=2")
    vxv = open_link(f"vxvde://{group(7)}/vni=2" + LO)
    peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        peer.bind(("127.0.0.1", 0))
        hdr = wire_vxlan.pack(2)
        got = {vxl: 0, vxv: 0}
        for i in range(300):
            body = rng.randbytes(rng.choice([0, 1, 7, 8, 9, 15, 22, 23, 60, 1500]))
            data = hdr + body if i % 3 == 0 else body
            peer.sendto(data, ("127.0.0.1", port))
            peer.sendto(data, vxv.local_addr)
            if i % 25 == 24:  # (read as we go: the socket buffers are small)
                for link in (vxl, vxv):
                    while recv_frame(link, 0.05) is not None:
                        got[link] += 1
        for link in (vxl, vxv):
            # each one a frame, or counted: malformed, or (vxvde) a header alone, a goodbye
            assert got[link] + link.malformed + getattr(link, "goodbyes", 0) == 300
            assert len(link.table) <= link.table.size
        ok = eth(BROADCAST, mac(5), b"still alive")
        peer.sendto(hdr + ok, ("127.0.0.1", port))
        expect(vxl, ok)
    finally:
        peer.close()
        vxl.close()
        vxv.close()
