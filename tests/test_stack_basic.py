"""The stack's IP layer against itself and against the Linux kernel: ARP/NDP, ping, UDP,
fragmentation, robustness to random frames, and a thousand stacks in one process.

(TCP and the socket API are not connected to the stack yet.)
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import need_tool, threadnet_cmd, threadnet_env, wait_for
from stack_helpers import ListLink


@pytest.fixture
def runner():
    d = StackRunner("test-runner")
    yield d
    d.stop()


@pytest.fixture
def switch(sockdir):
    sw = SwitchServer(os.path.join(sockdir, "sw"), pcap=os.path.join(sockdir, "sw.pcap")).start()
    yield sw
    sw.close()


def test_two_stacks_ping_and_udp_v4_v6(switch, runner):
    url = f"vde://{switch.directory}"
    a = Stack("eth,ip=10.5.0.1/24,ip=fc00:5::1/64", link=url, runner=runner)
    b = Stack("eth,ip=10.5.0.2/24,ip=fc00:5::2/64", link=url, runner=runner)
    try:
        assert len(a.ping("10.5.0.2", count=3)) == 3
        assert len(a.ping("127.0.0.1")) == 1 and len(a.ping("10.5.0.1")) == 1
        wait_for(lambda: "fc00:5::1/64" in a.addresses(6) and "fc00:5::2/64" in b.addresses(6),
                 what="DAD")
        assert len(a.ping("fc00:5::2", count=3)) == 3
        assert len(a.ping("::1")) == 1
        got = []
        with b.locked():
            b.udp_bind(7, lambda data, src, dst: b.udp_send(data, src, 7))
        with a.locked():
            a.udp_bind(5000, lambda data, src, dst: got.append((data, src)))
            a.udp_send(b"hello", ("10.5.0.2", 7), 5000)
            a.udp_send(b"x" * 5000, ("fc00:5::2", 7), 5000)  # fragmented both ways
            a.udp_send(b"y" * 3000, ("10.5.0.2", 7), 5000)
        wait_for(lambda: len(got) == 3, what="UDP echoes")
        assert sorted(got) == sorted([(b"hello", ("10.5.0.2", 7)), (b"x" * 5000, ("fc00:5::2", 7)),
                                      (b"y" * 3000, ("10.5.0.2", 7))])
        # a closed port answers with ICMP port unreachable, not silence
        with a.locked():
            a.udp_send(b"?", ("10.5.0.2", 9), 5000)
        wait_for(lambda: b.stats.get("udp_no_port") == 1, what="port unreachable")
    finally:
        a.close()
        b.close()
    if os.path.exists("/usr/bin/tshark"):
        switch.set_capture(None, None)
        _tshark_clean(switch.directory.rsplit("/", 1)[0] + "/sw.pcap")


def _tshark_clean(path: str) -> str:
    r = subprocess.run(["tshark", "-r", path, "-o", "ip.check_checksum:TRUE",
                        "-o", "udp.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                        "-Y", "_ws.malformed || _ws.expert.severity == error"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "", f"malformed or bad checksums:\n{r.stdout}"
    return r.stdout




_MAC = bytes.fromhex("020000000001")
_frame_heads = st.sampled_from([b"\x08\x00", b"\x86\xdd", b"\x08\x06", b"\x81\x00", b"\x00\x00"])


@settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dst=st.sampled_from([_MAC, b"\xff" * 6, b"\x33\x33\xff\x00\x00\x01"]),
       etype=_frame_heads, body=st.binary(max_size=200))
def test_random_frames_never_raise(dst, etype, body):
    s = Stack(runner=False)
    link = ListLink()
    iface = s.add_interface(link, mac=_MAC)
    s.configure("eth,ip=10.9.9.1/24,ip=fc00::1/64", 0.0)
    try:
        s.input(iface, dst + b"\x02\x00\x00\x00\x00\x09" + etype + body, 1.0)
        s.on_timer(100.0)
    finally:
        link.close()


def test_structured_garbage_never_raises():
    """300,000 frames with valid-looking headers and random contents: checksum-valid TCP,
    UDP and ICMP with random fields reach the TCP state machine, listeners, sockets and
    the ICMP handlers, not just the checksum checks. Nothing may escape, memory stays
    bounded."""
    import random

    from threadnet.wire import icmp4, ipv4, ipv6, tcp, udp

    rnd = random.Random(5)
    s = Stack(runner=False)
    link = ListLink()
    iface = s.add_interface(link, mac=_MAC)
    s.configure("eth,ip=10.9.9.1/24,ip=fc00::1/64", 0.0)
    s.tcp.listen(4, b"", 80, 64)
    s.udp_bind(53, lambda data, src, dst: None)
    src4, dst4 = bytes([10, 9, 9, 2]), bytes([10, 9, 9, 1])
    src6, dst6 = bytes.fromhex("fc000000000000000000000000000002"), bytes.fromhex(
        "fc000000000000000000000000000001")
    s.interfaces[iface.index].arp.add_static(src4, b"\x02" * 6)
    for i in range(300_000):
        body = rnd.randbytes(rnd.randrange(0, 80))
        kind = i % 5
        if kind == 0:  # checksum-valid TCP with random flags, numbers and options space
            seg = bytearray(20 + len(body))
            tcp.build(seg, src4, dst4, rnd.choice([1234, 4321, rnd.randrange(65536)]),
                      rnd.choice([80, 80, 81, rnd.randrange(65536)]), rnd.getrandbits(32),
                      rnd.getrandbits(32), rnd.getrandbits(8), rnd.getrandbits(16), body)
            payload, proto = bytes(seg), 6
        elif kind == 1:  # checksum-valid UDP
            seg = bytearray(8 + len(body))
            udp.build(seg, src4, dst4, rnd.randrange(65536), rnd.choice([53, 9, 7]), body)
            payload, proto = bytes(seg), 17
        elif kind == 2:  # checksum-valid ICMP of any type
            seg = bytearray(8 + len(body))
            icmp4.build(seg, rnd.randrange(256), rnd.randrange(16), rnd.getrandbits(32), body)
            payload, proto = bytes(seg), 1
        else:
            payload, proto = body, rnd.choice([1, 6, 17, 47, 58])
        if kind != 4:
            hdr = bytearray(20)
            ipv4.build(hdr, src4, dst4, proto, len(payload),
                       flags=rnd.choice([0, 0, 0, 1, 2]), frag_offset=rnd.randrange(0, 4) * 8)
            frame = _MAC + b"\x02" * 6 + b"\x08\x00" + bytes(hdr) + payload
        else:
            hdr = bytearray(40)
            ipv6.build(hdr, src6, dst6, rnd.choice([0, 6, 17, 44, 58, 60, 43]), len(body),
                       hop_limit=rnd.choice([1, 64, 255]))
            frame = _MAC + b"\x02" * 6 + b"\x86\xdd" + bytes(hdr) + body
        s.input(iface, frame, i * 0.001)
        if i % 1000 == 0:
            s.on_timer(i * 0.001)
            link.sent.clear()
    s.on_timer(1000.0)
    assert s.reasm4.buffered <= s.reasm4.max_bytes
    assert len(s.tcp.conns) <= 256 + 64
    link.close()


@pytest.fixture
def kernel_peer(netns, procs, sockdir, switch):
    """A namespace whose tap (vde_plug2tap) is on the test's switch: 10.6.0.1, fc00:6::1."""
    need_tool("vde_plug2tap", "ping")
    ns = netns.add()
    netns.run(ns, "ip", "tuntap", "add", "dev", "tnk0", "mode", "tap")
    netns.run(ns, "ip", "addr", "add", "10.6.0.1/24", "dev", "tnk0")
    netns.run(ns, "ip", "addr", "add", "fc00:6::1/64", "dev", "tnk0", "nodad")
    netns.run(ns, "ip", "link", "set", "tnk0", "up")
    pidfile = os.path.join(sockdir, "p2t.pid")
    procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", switch.directory, "-d", "-P", pidfile,
                                "tnk0"), pidfile)
    return ns


def test_kernel_pings_the_stack_and_back(kernel_peer, netns, switch, runner):
    ns = kernel_peer
    s = Stack("eth,ip=10.6.0.2/24,ip=fc00:6::2/64", link=f"vde://{switch.directory}", runner=runner)
    try:
        wait_for(lambda: "fc00:6::2/64" in s.addresses(6), what="DAD")
        r = netns.run(ns, "ping", "-c", "3", "-i", "0.2", "-W", "2", "10.6.0.2", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        r = netns.run(ns, "ping", "-6", "-c", "3", "-i", "0.2", "-W", "2", "fc00:6::2", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        # large pings: the kernel fragments, the stack reassembles and fragments its reply
        r = netns.run(ns, "ping", "-c", "2", "-s", "4000", "-W", "2", "10.6.0.2", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        r = netns.run(ns, "ping", "-6", "-c", "2", "-s", "4000", "-W", "2", "fc00:6::2", check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        assert len(s.ping("10.6.0.1", count=2)) == 2
        assert len(s.ping("fc00:6::1", count=2)) == 2
        # a kernel UDP datagram reaches a stack port, and the kernel gets port-unreachable
        got = []
        with s.locked():
            s.udp_bind(9999, lambda data, src, dst: got.append(data))
        netns.run(ns, "python3", "-c", "import socket; s=socket.socket(socket.AF_INET, "
                  "socket.SOCK_DGRAM); s.sendto(b'from-kernel', ('10.6.0.2', 9999))")
        wait_for(lambda: got == [b"from-kernel"], what="UDP from the kernel")
        r = netns.run(ns, "python3", "-c", "import socket; s=socket.socket(socket.AF_INET, "
                      "socket.SOCK_DGRAM); s.settimeout(2); s.connect(('10.6.0.2', 9)); "
                      "s.send(b'x'); s.recv(10)", check=False)
        assert "ConnectionRefused" in r.stderr
    finally:
        s.close()
    if os.path.exists("/usr/bin/tshark"):
        switch.set_capture(None, None)
        _tshark_clean(os.path.join(os.path.dirname(switch.directory), "sw.pcap"))


@pytest.mark.slow
def test_a_thousand_stacks_answer_ping(sockdir, procs, runner):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard < 8192:
        pytest.skip(f"needs 8192 file descriptors, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 16384)), hard))
    d = os.path.join(sockdir, "big")
    pidfile = d + ".pid"
    procs.daemon(threadnet_cmd("switch", "-s", d, "-n", "1030", "-d", "-p", pidfile), pidfile,
                 env=threadnet_env())
    url = f"vde://{d}"
    stacks = []
    try:
        prober = Stack("eth,ip=10.7.255.254/16", link=url, runner=runner)
        for i in range(1000):
            stacks.append(Stack(f"eth,ip=10.7.{i // 250}.{i % 250 + 1}/16,-dhcp", link=url,
                                runner=runner))
        # a thousand link-ups at once send a thousand DAD solicitations, which the switch
        # floods to a thousand ports: let that storm pass before timing answers (a first
        # ping inside it missed its 2 s now and then)
        for s in [prober, *stacks]:
            s.settle(timeout=60)
        missing = []
        t0 = time.monotonic()
        for i in range(1000):
            if not prober.ping(f"10.7.{i // 250}.{i % 250 + 1}", timeout=2.0):
                missing.append(i)
        elapsed = time.monotonic() - t0
        assert not missing, f"{len(missing)} stacks did not answer: {missing[:10]}..."
        print(f"1000 stacks answered ping in {elapsed:.1f} s")
    finally:
        for s in stacks:
            s.close()
        prober.close()


def test_closing_stacks_does_not_break_the_next_ones(switch, runner):
    """Closed links leave the runner's selector before their descriptors can be reused."""
    url = f"vde://{switch.directory}"
    for round_ in range(5):
        a = Stack(f"eth,ip=10.5.1.{2 * round_ + 1}/24", link=url, runner=runner)
        b = Stack(f"eth,ip=10.5.1.{2 * round_ + 2}/24", link=url, runner=runner)
        try:
            assert a.ping(f"10.5.1.{2 * round_ + 2}", timeout=2.0), f"round {round_}"
        finally:
            a.close()
            b.close()


@pytest.mark.parametrize("family", [4, 6])
@pytest.mark.parametrize("which", ["dst", "src"])
def test_loopback_addresses_from_the_wire_are_dropped(family: int, which: str) -> None:
    """RFC 1122 3.2.1.3 / RFC 4291 2.5.3: 127/8 and ::1 never come from a wire. A SYN to
    (or from) them on an Ethernet interface gets no answer and is counted, through the
    general path and the direct one alike; the same SYN to the interface's own address
    from a real host is answered."""
    from scapy.layers.inet import IP, TCP
    from scapy.layers.inet6 import IPv6
    from scapy.layers.l2 import Ether

    link = ListLink()
    s = Stack("eth,ip=10.50.0.1/24,ip=fc00:50::1/64", link=link, runner=False)
    try:
        s.tcp.listen(family, b"", 80, 8)
        s.tcp.listen(family, b"::" if family == 6 else b"", 81, 8)
        iface = s.interfaces[2]
        mac = iface.mac
        for a in iface.v6:
            a.state = "preferred"  # no DAD on fake time here
        s._gen += 1
        own, peer, lo = (("10.50.0.1", "10.50.0.9", "127.0.0.1") if family == 4 else
                         ("fc00:50::1", "fc00:50::9", "::1"))
        ip = IP if family == 4 else IPv6
        dst, src = (lo, peer) if which == "dst" else (own, lo)
        for opts in ([], [("MSS", 1460), ("Timestamp", (1, 0))]):
            bad = Ether(dst=mac, src="02:00:00:00:00:09") / ip(src=src, dst=dst) / \
                TCP(sport=5000, dport=80, flags="S", options=opts)
            link.sent.clear()
            s.input(iface, bytes(bad), 100.0)
            assert not [f for f in link.sent if len(f) > 54], "a martian was answered"
        assert s.stats.get(f"ip{family}_martian", 0) == 2
        good = Ether(dst=mac, src="02:00:00:00:00:09") / ip(src=peer, dst=own) / \
            TCP(sport=5000, dport=80, flags="S")
        link.sent.clear()
        s.input(iface, bytes(good), 100.0)
        assert link.sent, "the real SYN got no answer"
    finally:
        s.close()
