"""TCP under impairment, and the captures of it checked by tshark.

The issue's acceptance item 3: a 20 MB transfer in each direction, with a stack peer and
with a kernel peer, through the wirefilter at 5 % loss, 1 % duplication, reordering and
20 ms delay, every transfer byte-exact. Item 4 for these transfers: their capture decodes
in tshark with no malformed packet and no bad checksum.

At 5 % loss each way and a 40 ms round trip, loss-based TCP (ours, or Linux with CUBIC or
Reno) moves 1 to 1.5 Mbit/s (Mathis et al.: rate ~ MSS/RTT * 1.22/sqrt(p)), so one 20 MB
transfer takes about two minutes. The four transfers run at once, over two impaired
paths, so the test takes about as long as one of them:

- stack A on switch 1, stack B on switch 2, joined by ``threadnet wirefilter``;
- stack C on switch 3, the kernel (a namespace whose tap Debian's ``vde_plug2tap`` joins)
  on switch 4, joined by Debian's ``wirefilter``.

The kernel sends with BBR where it has it (as this host's default already is): BBR does
not take loss for congestion, so that transfer takes seconds and tests the stack's
receiver at ~15 Mbit/s under the impairment, instead of crawling at the loss-bound rate
(with CUBIC, Linux moves 1.1-1.3 Mbit/s through this channel, our stack ~1.5).

Every switch captures what it receives. A frame from a sender is captured on its own
switch before the wirefilter and on the far switch after it, so the captures also
measure what the channel really did (loss, duplication, reordering, delay).
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import random
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.stack.socket import create_connection, create_server

from conftest import need_tool, threadnet_cmd, threadnet_env, wait_for
from stack_helpers import assert_capture_clean, link_stats

SIZE = 20 * 1024 * 1024
#: the same impairment for both wirefilters, each direction: 5 % loss, 1 % duplication,
#: 20 ms delay with +-5 ms of uniform jitter, and -N so frames may overtake each other
IMPAIRMENT = ("-l", "5", "-D", "1", "-d", "20+5", "-N")
#: a stalled transfer fails well before pytest's timeout
TRANSFER_TIMEOUT = 480.0

KERNEL_PEER = f"""\
import hashlib, random, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "recv":
    srv = socket.create_server((host, port))
    print("listening", flush=True)
    c, _ = srv.accept()
    c.settimeout({TRANSFER_TIMEOUT})
    h = hashlib.sha256()
    n = 0
    while d := c.recv(1 << 16):
        h.update(d)
        n += len(d)
    cc = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0").decode()
    c.close()
    print(n, h.hexdigest(), cc, flush=True)
else:
    size, seed = int(sys.argv[4]), int(sys.argv[5])
    data = random.Random(seed).randbytes(size)
    c = socket.socket()
    try:  # see the module's docstring
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"bbr")
    except OSError:
        pass  # the kernel's default, then
    c.settimeout({TRANSFER_TIMEOUT})
    c.connect((host, port))
    c.sendall(data)
    c.shutdown(socket.SHUT_WR)
    c.recv(1)  # the stack closes once it has read everything
    cc = c.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\\0").decode()
    c.close()
    print("sent", cc, flush=True)
"""


@dataclass
class Result:
    name: str
    seconds: float = 0.0
    received: int = 0
    sha_ok: bool = False
    note: str = ""
    error: str = ""

    def line(self) -> str:
        if self.error:
            return f"{self.name}: FAILED: {self.error}"
        rate = self.received * 8 / self.seconds / 1e6 if self.seconds else 0.0
        return (f"{self.name}: {self.received / 2**20:.0f} MB in {self.seconds:.1f} s, "
                f"{rate:.2f} Mbit/s, sha256 {'ok' if self.sha_ok else 'MISMATCH'} {self.note}")


def _guard(result: Result, fn) -> threading.Thread:
    def run() -> None:
        try:
            fn()
        except Exception as exc:  # reported by the test, not lost in a thread
            result.error = f"{type(exc).__name__}: {exc}"

    t = threading.Thread(target=run, daemon=True, name=result.name)
    t.start()
    return t


def _sender_stats(stack: Stack, sock) -> str:
    port = sock.getsockname()[1]
    with stack.locked():
        for ep in stack.tcp.conns.values():
            if ep.local[1] == port:
                s = ep.conn.stats
                return (f"(sender: {s.retransmits} retransmits, {s.fast_recoveries} fast "
                        f"recoveries ({s.spurious_recoveries} undone), {s.timeouts} timeouts)")
    return ""


def _stack_receiver(result: Result, srv, expected: str, timed: bool):
    def run() -> None:
        conn, _ = srv.accept()
        t0 = time.monotonic()
        conn.settimeout(TRANSFER_TIMEOUT)
        h = hashlib.sha256()
        with conn:
            while d := conn.recv(1 << 16):
                h.update(d)
                result.received += len(d)
        if timed:
            result.seconds = time.monotonic() - t0
        result.sha_ok = h.hexdigest() == expected

    return run


def _stack_sender(result: Result, stack: Stack, dst: tuple[str, int], data: bytes,
                  timed: bool):
    def run() -> None:
        t0 = time.monotonic()
        with create_connection(stack, dst, timeout=TRANSFER_TIMEOUT) as c:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)  # the FIN follows the data
            c.recv(1)  # the receiver closes once it has everything
            if timed:
                result.seconds = time.monotonic() - t0
            result.note = _sender_stats(stack, c) + result.note

    return run


@pytest.fixture
def impaired(sockdir, procs, netns, fg_switch, stop_daemons_first):
    """The two impaired paths; yields a dict of stacks, switch directories/consoles/
    captures and the kernel's namespace."""
    need_tool("vde_plug2tap", "wirefilter", "tshark")
    sw = {}
    for i in (1, 2, 3, 4):
        pcap = os.path.join(sockdir, f"sw{i}.pcap")
        d, mgmt, _ = fg_switch("threadnet", "--pcap", pcap)
        sw[i] = {"dir": d, "mgmt": mgmt, "pcap": pcap}
    pidfile = os.path.join(sockdir, "wf-threadnet.pid")
    procs.daemon(threadnet_cmd("wirefilter", "-v", f"{sw[1]['dir']}:{sw[2]['dir']}", *IMPAIRMENT,
                               "--seed", "11", "--daemon", "--pidfile", pidfile),
                 pidfile, env=threadnet_env())
    pidfile = os.path.join(sockdir, "wf-debian.pid")
    procs.daemon(["wirefilter", "-v", f"{sw[3]['dir']}:{sw[4]['dir']}", *IMPAIRMENT,
                  "--daemon", "--pidfile", pidfile], pidfile)
    ns = netns.add()
    netns.run(ns, "ip", "tuntap", "add", "dev", "tnk0", "mode", "tap")
    netns.run(ns, "ip", "addr", "add", "10.13.0.9/24", "dev", "tnk0")
    netns.run(ns, "ip", "link", "set", "tnk0", "up")
    pidfile = os.path.join(sockdir, "p2t.pid")
    procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", sw[4]["dir"], "-d", "-P", pidfile,
                                "tnk0"), pidfile)
    runner = StackRunner("test-impaired")
    stacks: dict[str, Stack] = {}
    try:
        for name, conf, i in (("A", "eth,ip=10.12.0.1/24", 1), ("B", "eth,ip=10.12.0.2/24", 2),
                              ("C", "eth,ip=10.13.0.1/24", 3)):
            stacks[name] = Stack(conf, link=f"vde://{sw[i]['dir']}", runner=runner, name=name)
        # both paths carry frames (a lost ping is the impairment at work: try again)
        wait_for(lambda: stacks["A"].ping("10.12.0.2", timeout=0.5), 20, what="A pings B")
        wait_for(lambda: stacks["C"].ping("10.13.0.9", timeout=0.5), 20, what="C pings the kernel")
        yield {"stacks": stacks, "sw": sw, "ns": ns}
    finally:
        for s in stacks.values():
            s.close()
        runner.stop()


def _stop_captures(sw: dict) -> None:
    from threadnet.mgmt.client import ConsoleClient

    for s in sw.values():
        with ConsoleClient(s["mgmt"]) as c:
            err, _, text = c.run("port/capture all")
            assert err == 0, f"stopping the capture of {s['dir']}: {text}"


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_20mb_each_way_through_wirefilters_with_stack_and_kernel_peers(impaired, netns, procs,
                                                                       sockdir):
    stacks, sw, ns = impaired["stacks"], impaired["sw"], impaired["ns"]
    a, b, c = stacks["A"], stacks["B"], stacks["C"]
    script = os.path.join(sockdir, "kpeer.py")
    with open(script, "w") as f:
        f.write(KERNEL_PEER)
    data = {seed: random.Random(seed).randbytes(SIZE) for seed in (1, 2, 3)}
    sha = {seed: hashlib.sha256(d).hexdigest() for seed, d in data.items()}
    sha[4] = hashlib.sha256(random.Random(4).randbytes(SIZE)).hexdigest()

    results = [Result("stack A -> stack B (threadnet wirefilter)"),
               Result("stack B -> stack A (threadnet wirefilter)"),
               Result("stack C -> kernel  (Debian wirefilter)"),
               Result("kernel  -> stack C (Debian wirefilter)")]
    ab, ba, ck, kc = results
    srv_b = create_server(b, ("", 5001))
    srv_a = create_server(a, ("", 5002))
    srv_c = create_server(c, ("", 5003))
    k_recv = procs.popen(netns.exec_cmd(ns, sys.executable, script, "recv", "10.13.0.9", "5004"),
                         stdout=subprocess.PIPE, text=True)
    assert k_recv.stdout.readline().strip() == "listening"

    t_start = time.monotonic()
    threads = [
        _guard(ab, _stack_receiver(ab, srv_b, sha[1], timed=False)),
        _guard(ab, _stack_sender(ab, a, ("10.12.0.2", 5001), data[1], timed=True)),
        _guard(ba, _stack_receiver(ba, srv_a, sha[2], timed=False)),
        _guard(ba, _stack_sender(ba, b, ("10.12.0.1", 5002), data[2], timed=True)),
        _guard(ck, _stack_sender(ck, c, ("10.13.0.9", 5004), data[3], timed=True)),
        _guard(kc, _stack_receiver(kc, srv_c, sha[4], timed=True)),
    ]
    k_send = procs.popen(netns.exec_cmd(ns, sys.executable, script, "send", "10.13.0.1", "5003",
                                        str(SIZE), "4"), stdout=subprocess.PIPE, text=True)
    del data
    deadline = t_start + TRANSFER_TIMEOUT + 30
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    try:
        out, _ = k_recv.communicate(timeout=max(1.0, deadline - time.monotonic()))
        n, digest, cc = out.split()
        ck.received, ck.sha_ok = int(n), digest == sha[3]
        ck.note += f" (kernel receiver, {cc})"
    except (subprocess.TimeoutExpired, ValueError) as exc:
        ck.error = ck.error or f"kernel receiver: {exc!r}"
    try:
        out, _ = k_send.communicate(timeout=max(1.0, deadline - time.monotonic()))
        assert k_send.returncode == 0 and out.startswith("sent"), out
        kc.note += f" (kernel sender, {out.split()[-1]})"
    except (subprocess.TimeoutExpired, AssertionError) as exc:
        kc.error = kc.error or f"kernel sender: {exc!r}"
    wall = time.monotonic() - t_start
    for t, r in zip(threads, (ab, ab, ba, ba, ck, kc), strict=True):
        if t.is_alive() and not r.error:
            r.error = f"still running after {TRANSFER_TIMEOUT:.0f} s ({r.received} bytes received)"
    for srv in (srv_a, srv_b, srv_c):
        srv.close()
    print(f"\n4 x {SIZE >> 20} MB at once through 5 % loss, 1 % dup, 20+-5 ms, reordering: "
          f"{wall:.1f} s")
    for r in results:
        print("  " + r.line())
    assert all(not r.error and r.received == SIZE and r.sha_ok for r in results), \
        "\n".join(r.line() for r in results)

    # what the wirefilters really did, from the captures on both sides
    _stop_captures(sw)
    directions = (("A -> B, threadnet wirefilter", 1, 2, "10.12.0.1"),
                  ("B -> A, threadnet wirefilter", 2, 1, "10.12.0.2"),
                  ("C -> kernel, Debian wirefilter", 3, 4, "10.13.0.1"),
                  ("kernel -> C, Debian wirefilter", 4, 3, "10.13.0.9"))
    bad = []
    for name, pre, post, src in directions:
        st = link_stats(sw[pre]["pcap"], sw[post]["pcap"], src)
        print(f"  {name}: {st}")
        # wide bounds (a 20 MB transfer is some 15,000 frames: the standard error of the
        # loss rate is 0.2 %), yet a channel without loss, duplication, reordering or
        # delay, or with ten times too much, fails
        if not (0.03 <= st.loss <= 0.07 and 0.004 <= st.dup <= 0.02 and st.reorder >= 0.01
                and 0.018 <= st.delay_quantile(0.5) <= 0.023
                and st.delay_quantile(0.05) >= 0.014
                and st.delay_quantile(0.95) - st.delay_quantile(0.05) >= 0.005):
            bad.append(f"{name}: {st}")
    assert not bad, "a wirefilter is not doing what it was told:\n" + "\n".join(bad)

    # item 4: every capture decodes cleanly in tshark (both sides of each wirefilter)
    t0 = time.monotonic()
    floor = SIZE // 2000  # a 20 MB transfer is more than 14,000 full segments
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(
            lambda i: assert_capture_clean(sw[i]["pcap"], floor, tcp=floor, tcp_data=True,
                                           minus_zero_from=("10.13.0.9",)), sw))
    for i, rep in zip(sw, reports, strict=True):
        print(f"  tshark sw{i}.pcap: {rep.frames} frames, none malformed, no bad checksum")
    print(f"  tshark: {time.monotonic() - t0:.1f} s")


# -- the tshark check itself -----------------------------------------------------------------

def _sample_frames() -> dict[str, bytes]:
    """Valid frames of each kind the captures hold: TCP, UDP, ICMP and ICMPv6."""
    from threadnet.wire import icmp4, icmp6, ipv4, ipv6, tcp, udp

    macs = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")
    a4, b4 = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    a6, b6 = bytes.fromhex("fc00" + "00" * 13 + "01"), bytes.fromhex("fc00" + "00" * 13 + "02")

    def v4(proto: int, l4: bytearray) -> bytes:
        ip = bytearray(20)
        ipv4.build(ip, a4, b4, proto, len(l4))
        return macs + b"\x08\x00" + bytes(ip) + bytes(l4)

    def v6(proto: int, l4: bytearray) -> bytes:
        ip = bytearray(40)
        ipv6.build(ip, a6, b6, proto, len(l4))
        return macs + b"\x86\xdd" + bytes(ip) + bytes(l4)

    payload = bytes(range(100))
    out = {}
    for v, (src, dst), wrap in ((4, (a4, b4), v4), (6, (a6, b6), v6)):
        seg = bytearray(20 + len(payload))
        tcp.build(seg, src, dst, 40000, 5001, 1, 1, tcp.ACK, 1000, payload)
        out[f"tcp{v}"] = wrap(6, seg)
        dgram = bytearray(8 + len(payload))
        udp.build(dgram, src, dst, 40000, 40001, payload)
        out[f"udp{v}"] = wrap(17, dgram)
    echo = bytearray(8 + 56)
    icmp4.build_echo(echo, 7, 1, bytes(56))
    out["icmp"] = v4(1, echo)
    echo = bytearray(8 + 56)
    icmp6.build_echo(echo, a6, b6, 7, 1, bytes(56))
    out["icmpv6"] = v6(58, echo)
    return out


def test_tshark_check_passes_good_frames_and_flags_every_bad_one(sockdir):
    """The capture check can fail: each corrupted frame is reported, for its own reason."""
    from threadnet.wire.pcap import PcapWriter

    from stack_helpers import tshark_check

    need_tool("tshark")
    good = _sample_frames()
    path = os.path.join(sockdir, "good.pcap")
    with PcapWriter(path) as w:
        for frame in good.values():
            w.write(frame, 1.0)
    report = assert_capture_clean(path, len(good), tcp=2, udp=2, icmp=1, icmpv6=1)
    assert report.frames == len(good)

    bad: list[tuple[str, bytes]] = []
    for name, frame in good.items():  # one payload bit flipped: the L4 checksum is wrong
        f = bytearray(frame)
        f[-1] ^= 0x01
        layer = name[:3] if name[:3] in ("tcp", "udp") else name  # tcp4 -> tcp, icmpv6
        bad.append((f"bad {layer} checksum", bytes(f)))
    f = bytearray(good["tcp4"])
    f[14 + 8] ^= 0x01  # the IPv4 TTL: the header checksum is wrong
    bad.append(("bad ip checksum", bytes(f)))
    bad.append(("expert error", good["udp4"][:-30]))  # shorter than its IPv4 total length
    from threadnet.wire import ipv4, udp

    dns = b"\x12\x34\x01\x00\x00\x05\x00\x00\x00\x00\x00\x00\x03www"  # 5 questions, cut short
    dgram = bytearray(8 + len(dns))
    udp.build(dgram, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 53, dns)
    ip = bytearray(20)
    ipv4.build(ip, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 17, len(dgram))
    bad.append(("malformed", good["udp4"][:14] + bytes(ip) + bytes(dgram)))
    path = os.path.join(sockdir, "bad.pcap")
    with PcapWriter(path) as w:
        for _, frame in bad:
            w.write(frame, 1.0)
    report = tshark_check(path)
    assert report.frames == len(bad)
    problems = {int(p.split()[1]): p for p in report.problems}
    assert sorted(problems) == list(range(1, len(bad) + 1)), report.problems
    for i, (why, _) in enumerate(bad, 1):
        assert why in problems[i], (why, problems[i])
    with pytest.raises(AssertionError, match=f"{len(bad)} of {len(bad)} frames are bad"):
        assert_capture_clean(path)


@pytest.mark.parametrize("version", [4, 6])
def test_tshark_check_takes_minus_zero_checksums_only_from_whom_it_is_told(sockdir, version):
    """A TCP checksum field of 0xFFFF where 0x0000 is computed (the same in ones'
    complement; Linux writes it when it completes a checksum in software) is accepted
    from the addresses named, and is a problem from any other; over IPv6 too (the curl
    capture test has the kernel on IPv6), where the source comes from the IPv6 header."""
    from threadnet.wire import ipv4, ipv6, tcp
    from threadnet.wire.pcap import PcapWriter

    need_tool("tshark")
    peer, me = ("10.13.0.9", "10.13.0.1") if version == 4 else ("fc00:8::9", "fc00:8::1")
    src, dst = ipaddress.ip_address(peer).packed, ipaddress.ip_address(me).packed
    rng = random.Random(version)
    while True:  # a segment whose checksum comes out as 0x0000 (one in 65 535)
        seg = bytearray(20)
        tcp.build(seg, src, dst, 5004, 40000, rng.getrandbits(32), rng.getrandbits(32),
                  tcp.ACK, 1000)
        if seg[16:18] == b"\0\0":
            break
    seg[16:18] = b"\xff\xff"
    if version == 4:
        ip = bytearray(20)
        ipv4.build(ip, src, dst, ipv4.PROTO_TCP, len(seg))
        ethertype = b"\x08\x00"
    else:
        ip = bytearray(40)
        ipv6.build(ip, src, dst, ipv6.PROTO_TCP, len(seg))
        ethertype = b"\x86\xdd"
    path = os.path.join(sockdir, f"minus0v{version}.pcap")
    with PcapWriter(path) as w:
        w.write(b"\x02" * 6 + b"\x04" * 6 + ethertype + bytes(ip) + bytes(seg), 1.0)
    assert assert_capture_clean(path, minus_zero_from=(peer,)).minus_zero == [("1", peer)]
    with pytest.raises(AssertionError, match=f"checksum 0xffff for 0x0000, from {peer}"):
        assert_capture_clean(path)


def test_link_stats_measures_loss_dup_reordering_and_delay(sockdir):
    """The channel measurement of the impaired test, on captures made up here."""
    from threadnet.wire.pcap import PcapWriter

    frames = [b"\x02" * 12 + b"\x08\x00" + bytes(12) + bytes([10, 0, 0, 1]) + bytes(4)
              + i.to_bytes(4, "big") for i in range(100)]
    other = frames[0][:26] + bytes([10, 0, 0, 2]) + frames[0][30:]  # another sender: ignored
    pre, post = os.path.join(sockdir, "pre.pcap"), os.path.join(sockdir, "post.pcap")
    with PcapWriter(pre) as w:
        for i, f in enumerate(frames):
            w.write(f, 100.0 + i * 0.001)
        w.write(frames[7], 100.2)  # sent twice: cannot be matched, not counted
        w.write(other, 100.0)
    arrivals = []
    for i, f in enumerate(frames):
        if i % 20 == 3:
            continue  # 5 lost
        t = 100.0 + i * 0.001 + 0.020
        if i in (50, 60):
            t += 0.0035  # overtaken by the 3 frames sent after each
        arrivals.append((t, f))
        if i == 10:
            arrivals.append((t + 0.0001, f))  # duplicated
    arrivals.append((100.5, other))
    with PcapWriter(post) as w:
        for t, f in sorted(arrivals):
            w.write(f, t)
    st = link_stats(pre, post, "10.0.0.1")
    assert (st.frames, st.lost, st.duplicated, st.reordered) == (99, 5, 1, 2)
    assert st.loss == pytest.approx(5 / 99) and st.dup == pytest.approx(1 / 94)
    assert st.delay_quantile(0.5) == pytest.approx(0.020, abs=1e-5)
    assert st.delay_quantile(1) == pytest.approx(0.0235, abs=1e-5)
    assert "loss 5.05 %" in str(st)
