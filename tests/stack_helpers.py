"""Helpers shared by the stack tests (not a test module)."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

from threadnet.link import Link
from threadnet.stack.stack import Stack as CoreStack


class ListLink(Link):
    """A link that records what the stack sends and never receives: for feeding a stack
    frames directly (fuzzing, floods) and reading its answers."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.url = "list://"
        self._r, self._w = os.pipe()

    def fileno(self) -> int:
        return self._r

    def _send(self, frame) -> None:
        self.sent.append(bytes(frame))

    def close(self) -> None:
        if not self.closed:
            super().close()
            os.close(self._r)
            os.close(self._w)


# -- checking captures with tshark ---------------------------------------------------------

#: checksum validation is off by default in tshark for IPv4, TCP and UDP; ICMP and ICMPv6
#: checksums are always checked
TSHARK_CHECKSUM_PREFS = ("-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE",
                         "-o", "udp.check_checksum:TRUE")
_CHECKSUM_FIELDS = ("ip.checksum.status", "tcp.checksum.status", "udp.checksum.status",
                    "icmp.checksum.status", "icmpv6.checksum.status")
_TSHARK_FIELDS = ("frame.number", "frame.protocols", "_ws.malformed", "_ws.expert.severity",
                  *_CHECKSUM_FIELDS, "ip.src", "ipv6.src", "_ws.expert.message")
#: tshark's word for a TCP or UDP checksum field of 0xFFFF where it computes 0x0000: the
#: same value in ones' complement (RFC 1624), which Linux writes when it completes a
#: checksum in software (skb_checksum_help: "csum_fold(csum) ?: CSUM_MANGLED_0")
_RFC1624 = "instead of 0x0000 (see RFC 1624)"
#: epan's PI_ERROR (expert severities: chat 0x200000, note 0x400000, warn 0x600000)
_SEVERITY_ERROR = 0x800000
#: epan's PROTO_CHECKSUM_E_BAD (good is 1, unverified 2, not present 3)
_CHECKSUM_BAD = "0"


@dataclass
class TsharkReport:
    """What tshark made of a capture: the frame count, how many frames hold each protocol
    (tshark's lower-case names: ``tcp``, ``icmpv6``, ``http``...), and one line per frame
    that is malformed, has an error-level expert item or a bad checksum."""

    frames: int = 0
    protocols: Counter = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    #: (frame, IPv4 or IPv6 source) of frames whose only fault is a checksum field of
    #: 0xFFFF for 0x0000 (``_RFC1624``): a problem too, unless that source is allowed to
    minus_zero: list[tuple[str, str]] = field(default_factory=list)


#: for a capture of bulk transfers whose TCP carries no application protocol: every TCP
#: payload is data, so that a random client port that happens to be some protocol's
#: registered port (44818 is EtherNet/IP) does not make tshark decode, and reassemble,
#: random bytes as that protocol
TSHARK_TCP_AS_DATA = ("-d", "tcp.port==1-65535,data")


def tshark_check(pcap: str, timeout: float = 600, tcp_data: bool = False) -> TsharkReport:
    """Decode ``pcap`` in one tshark pass with IPv4, TCP and UDP checksum validation on.

    A frame is a problem when tshark marks it malformed, raises an expert item of
    severity error (a bad IP or TCP checksum, a length that exceeds the packet...), or
    reports a bad checksum at any layer (a bad ICMP or ICMPv6 checksum is only a warning
    in tshark's expert system, so the checksum status fields are read directly).
    ``tcp_data``: decode every TCP payload as plain data (``TSHARK_TCP_AS_DATA``)."""
    cmd = ["tshark", "-n", "-r", pcap, *TSHARK_CHECKSUM_PREFS,
           *(TSHARK_TCP_AS_DATA if tcp_data else ()), "-T", "fields",
           "-E", "separator=\t", "-E", "occurrence=a", "-E", "aggregator=,"]
    for name in _TSHARK_FIELDS:
        cmd += ["-e", name]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise AssertionError(f"tshark failed on {pcap} ({r.returncode}): {r.stderr.strip()}")
    report = TsharkReport()
    nf = len(_TSHARK_FIELDS)
    for line in r.stdout.splitlines():
        cols = line.split("\t")
        if len(cols) < nf:
            cols += [""] * (nf - len(cols))
        number, stack, malformed, severity = cols[:4]
        checksums = cols[4:4 + len(_CHECKSUM_FIELDS)]
        report.frames += 1
        report.protocols.update(set(stack.split(":")))
        why = []
        if malformed:
            why.append("malformed")
        if any(s and int(s) >= _SEVERITY_ERROR for s in severity.split(",")):
            why.append("expert error")
        for name, status in zip(_CHECKSUM_FIELDS, checksums, strict=True):
            if _CHECKSUM_BAD in status.split(","):
                why.append(f"bad {name.split('.')[0]} checksum")
        if why and not malformed and _RFC1624 in cols[-1] \
                and set(why) <= {"expert error", "bad tcp checksum", "bad udp checksum"}:
            # the outer header's source (an ICMP error quotes another after it)
            src = (cols[-3] or cols[-2]).split(",")[0]
            report.minus_zero.append((number, src))
        elif why:
            report.problems.append(f"frame {number} ({'; '.join(why)}): {stack} [{cols[-1]}]")
    return report


def assert_capture_clean(pcap: str, min_frames: int = 1, *, tcp_data: bool = False,
                         minus_zero_from: tuple[str, ...] = (), **expect: int) -> TsharkReport:
    """tshark_check, then fail unless the capture holds ``min_frames`` frames or more, at
    least ``expect[protocol]`` frames holding each protocol named (``icmpv6=2``), and no
    problem frame at all.

    ``minus_zero_from``: the addresses of the Linux kernels in the capture. Every check of
    a capture with a kernel peer passes them: Linux writes a TCP or UDP checksum of
    0x0000 as 0xFFFF when it completes it in software (RFC 1624's negative zero, equal
    in ones' complement), about once in 65 535 segments, and tshark calls that bad.
    From these addresses it is accepted; from anyone else (a stack) it is a problem."""
    report = tshark_check(pcap, tcp_data=tcp_data)
    report.problems += [f"frame {n} (checksum 0xffff for 0x0000, from {src})"
                        for n, src in report.minus_zero if src not in minus_zero_from]
    assert report.frames >= min_frames, \
        f"{pcap}: tshark decoded {report.frames} frames, expected at least {min_frames}"
    for proto, n in expect.items():
        assert report.protocols[proto] >= n, \
            f"{pcap}: {report.protocols[proto]} {proto} frames, expected {n}+ ({report.protocols})"
    shown = "\n".join(report.problems[:20])
    assert not report.problems, \
        f"{pcap}: {len(report.problems)} of {report.frames} frames are bad:\n{shown}"
    return report


class Dumpcap:
    """Wireshark's ``dumpcap`` capturing one interface inside a network namespace to a
    classic pcap file: a capture outside the test's process, which a busy transfer does
    not slow down (a switch's own capture runs under the test's GIL). ``stop()`` ends it
    by PID (SIGINT: dumpcap flushes and prints its counts) and returns the counts."""

    def __init__(self, procs, ns: str, iface: str, path: str) -> None:
        self.path = path
        # ip netns exec execs dumpcap: the PID is dumpcap's own
        self.proc = procs.popen(["ip", "netns", "exec", ns, "dumpcap", "-i", iface, "-P",
                                 "-B", "64", "-w", path], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        line = self.proc.stderr.readline()
        if not line.startswith("Capturing on"):
            self.proc.kill()
            raise AssertionError(f"dumpcap did not start: {line}{self.proc.stderr.read()}")

    def stop(self, settle: float = 1.0) -> str:
        """Give the kernel ``settle`` seconds to hand over its last buffered block, then
        end dumpcap; returns its closing report (packets received/dropped)."""
        import signal
        import time

        time.sleep(settle)
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=30)
        if self.proc.returncode != 0:
            raise AssertionError(f"dumpcap failed ({self.proc.returncode}): {err.strip()}")
        return err.replace("\r", "\n").strip().splitlines()[-1]


# -- measuring an impaired link from captures on both sides ----------------------------------

@dataclass
class LinkStats:
    """What a channel did to one sender's IPv4 frames, from a capture before it (``pre``)
    and one after it (``post``): frames counted are those sent exactly once (identical
    frames sent twice cannot be told apart)."""

    frames: int  # sent once, before the channel
    lost: int  # never seen after it
    duplicated: int  # seen twice or more after it
    reordered: int  # arrived after a frame that was sent after it (RFC 4737)
    delays: list[float]  # seconds, first copy, in sending order

    @property
    def loss(self) -> float:
        return self.lost / self.frames

    @property
    def dup(self) -> float:
        return self.duplicated / (self.frames - self.lost)

    @property
    def reorder(self) -> float:
        return self.reordered / (self.frames - self.lost)

    def delay_quantile(self, q: float) -> float:
        s = sorted(self.delays)
        return s[min(len(s) - 1, int(q * len(s)))]

    def __str__(self) -> str:
        return (f"{self.frames} frames: loss {100 * self.loss:.2f} %, dup {100 * self.dup:.2f} %,"
                f" reordered {100 * self.reorder:.2f} %, delay min/5th/median/95th/max "
                + "/".join(f"{1000 * self.delay_quantile(q):.1f}" for q in (0, .05, .5, .95, 1))
                + " ms")


def _ipv4_frames_from(pcap: str, src: bytes) -> dict[bytes, list[float]]:
    from threadnet.wire.pcap import PcapReader

    seen: dict[bytes, list[float]] = {}
    with PcapReader(pcap) as r:
        for ts, frame in r:
            if frame[12:14] == b"\x08\x00" and frame[26:30] == src:
                seen.setdefault(frame, []).append(ts)
    return seen


def link_stats(pre: str, post: str, src: str) -> LinkStats:
    """Compare the IPv4 frames from address ``src`` captured before a channel (``pre``)
    and after it (``post``)."""
    import ipaddress

    addr = ipaddress.IPv4Address(src).packed
    before = _ipv4_frames_from(pre, addr)
    after = _ipv4_frames_from(post, addr)
    once = sorted((ts[0], frame) for frame, ts in before.items() if len(ts) == 1)
    lost = duplicated = reordered = 0
    delays: list[float] = []
    delivered: list[tuple[float, float]] = []
    for sent, frame in once:
        got = after.get(frame)
        if not got:
            lost += 1
            continue
        if len(got) > 1:
            duplicated += 1
        arrived = min(got)
        delays.append(arrived - sent)
        delivered.append((arrived, sent))
    # RFC 4737: a frame is reordered when one sent after it has arrived before it
    newest = float("-inf")
    for _, sent in sorted(delivered):
        if sent < newest:
            reordered += 1
        else:
            newest = sent
    assert once and len(once) > lost, f"no frame from {src} went through ({pre} -> {post})"
    return LinkStats(len(once), lost, duplicated, reordered, delays)


def serve_echo(sock: socket.socket) -> threading.Thread:
    """Accept connections on ``sock`` forever, echoing each on its own thread."""

    def loop() -> None:
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return

            def run(c: socket.socket = conn) -> None:
                with c:
                    while data := c.recv(65536):
                        c.sendall(data)

            threading.Thread(target=run, daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    return t


def self_signed_cert(directory: str, ip: str) -> tuple[str, str]:
    """A throwaway certificate for ``ip`` made by openssl: (certificate, key) paths."""
    key, crt = os.path.join(directory, "k.pem"), os.path.join(directory, "c.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
                    "-out", crt, "-days", "1", "-subj", f"/CN={ip}",
                    "-addext", f"subjectAltName=IP:{ip}"], check=True, capture_output=True)
    return crt, key


# -- bulk transfers with the kernel -------------------------------------------------------

#: a kernel-socket peer, run in a namespace: ``send|recv HOST SIZE`` listens on HOST port
#: 9100, prints "ready", sends SIZE bytes or receives to EOF, and prints the sha256
KERNEL_PEER = """
import hashlib, socket, sys
mode, host, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = socket.create_server((host, 9100), family=socket.AF_INET6 if ':' in host else socket.AF_INET)
print('ready', flush=True)
c, _ = s.accept()
h = hashlib.sha256()
if mode == 'send':
    block = bytes(range(256)) * 256
    left = size
    while left:
        chunk = block[:min(left, len(block))]; c.sendall(chunk); h.update(chunk); left -= len(chunk)
    c.shutdown(socket.SHUT_WR)
else:
    while d := c.recv(1 << 16): h.update(d)
print(h.hexdigest(), flush=True)
"""


def kernel_transfer(netns, procs, sockdir: str, ns: str, stack, host: str, direction: str,
                    size: int) -> float:
    """``size`` bytes between a kernel socket at ``host`` in namespace ``ns`` (port 9100)
    and ``stack``: "download" to the stack, "upload" from it; sha256-checked. Returns
    Mbit/s."""
    from threadnet.stack.socket import create_connection

    script = os.path.join(sockdir, "peer.py")
    with open(script, "w") as f:
        f.write(KERNEL_PEER)
    peer = procs.popen(netns.exec_cmd(ns, "python3", script,
                                      "send" if direction == "download" else "recv", host,
                                      str(size)), stdout=subprocess.PIPE, text=True)
    assert peer.stdout.readline().strip() == "ready"
    h = hashlib.sha256()
    t0 = time.monotonic()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with create_connection(stack, (host, 9100), timeout=60) as c:
        assert c.family == family
        if direction == "download":
            while d := c.recv(1 << 16):
                h.update(d)
        else:
            block = bytes(range(256)) * 256
            left = size
            while left:
                chunk = block[:min(left, len(block))]
                c.sendall(chunk)
                h.update(chunk)
                left -= len(chunk)
            c.shutdown(socket.SHUT_WR)
            c.recv(1)  # wait for the kernel to close
    out, _ = peer.communicate(timeout=120)
    assert out.strip() == h.hexdigest(), "sha256 mismatch"
    return size * 8 / (time.monotonic() - t0) / 1e6


def serve_http(srv, body: bytes, count: int) -> threading.Thread:
    """Answer ``count`` HTTP/1.0 requests on the listening ``srv`` with ``body``, in a
    daemon thread (started); for curl from a kernel namespace."""
    def serve() -> None:
        for _ in range(count):
            conn, _ = srv.accept()
            with conn:
                req = b""
                while b"\r\n\r\n" not in req:
                    req += conn.recv(1024)
                conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
                             + body)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


class FakeLan:
    """Core stacks on one wire, on fake time, no runner, no threads: a frame sent at t
    reaches the others at t + DELAY. ``step`` advances the clock by STEP."""

    DELAY = 0.05  # one way
    STEP = 0.01

    def __init__(self, *configs: str, start: float = 100.0) -> None:
        self.now = start
        self.links = [ListLink() for _ in configs]
        self.stacks = [CoreStack(link=link, clock=lambda: self.now) for link in self.links]
        for s, cfg in zip(self.stacks, configs, strict=True):
            s.configure(cfg)
        self.queue: list[tuple[float, int, bytes]] = []
        self.drop = lambda frame: False
        self.ticks = 0
        self._start = start

    def collect(self) -> None:
        for i, link in enumerate(self.links):
            frames, link.sent = link.sent, []
            for f in frames:
                for j in range(len(self.stacks)):
                    if j != i and not self.drop(f):
                        self.queue.append((self.now + self.DELAY, j, f))

    def step(self) -> None:
        # integer ticks: the times stay exact multiples of STEP from the start
        self.ticks += 1
        self.now = self._start + self.ticks * self.STEP
        due = [q for q in self.queue if q[0] <= self.now + 1e-9]
        self.queue = [q for q in self.queue if q[0] > self.now + 1e-9]
        for _, j, f in due:
            s = self.stacks[j]
            s.input(s.interfaces[2], f, self.now)
        self.collect()
        for s in self.stacks:
            s.on_timer(self.now)
        self.collect()

    def run_until(self, cond, limit: float) -> None:
        end = self.now + limit
        while not cond():
            assert self.now < end, "no progress on fake time"
            self.step()

    def close(self) -> None:
        for s in self.stacks:
            s.close()
