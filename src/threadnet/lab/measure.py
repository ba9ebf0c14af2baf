"""What a lab measures: ping (RTTs and loss) and TCP throughput, between any two hosts.

A stack host pings with an unprivileged ping socket on its published stack
(``RemoteStack.socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)``), a namespace host with the
kernel's ``ping`` run in its namespace. Throughput between two namespace hosts is kernel
``iperf3``; otherwise a bulk TCP transfer between the two hosts' sockets: a stack host's
come from its published stack, a namespace host's are kernel sockets made in its
namespace (``setns`` in a short-lived thread: the socket stays in the namespace).
"""

from __future__ import annotations

import json
import os
import re
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

CLONE_NEWNET = 0x40000000


@dataclass
class PingResult:
    src: str
    dst: str
    address: str
    sent: int
    rtts: list[float] = field(default_factory=list)  # seconds, one per reply
    error: str | None = None

    @property
    def received(self) -> int:
        return len(self.rtts)

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 1.0

    @property
    def ok(self) -> bool:
        return self.received > 0

    @property
    def avg(self) -> float | None:
        return sum(self.rtts) / len(self.rtts) if self.rtts else None

    def __str__(self) -> str:
        text = f"{self.src} -> {self.dst} ({self.address}): {self.received}/{self.sent}"
        if self.rtts:
            text += (f", rtt min/avg/max {min(self.rtts) * 1000:.2f}/{self.avg * 1000:.2f}/"
                     f"{max(self.rtts) * 1000:.2f} ms")
        if self.error:
            text += f" ({self.error})"
        return text


@dataclass
class PingAll:
    """Every pair's ping: ``results``, the share of all pings lost, the silent pairs."""

    results: list[PingResult]

    @property
    def sent(self) -> int:
        return sum(r.sent for r in self.results)

    @property
    def received(self) -> int:
        return sum(r.received for r in self.results)

    @property
    def loss(self) -> float:
        return 1.0 - self.received / self.sent if self.sent else 0.0

    @property
    def failed(self) -> list[tuple[str, str]]:
        return [(r.src, r.dst) for r in self.results if not r.ok]

    def pair(self, src: str, dst: str) -> PingResult:
        for r in self.results:
            if (r.src, r.dst) == (src, dst):
                return r
        raise KeyError((src, dst))

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.results)

    def lines(self) -> list[str]:
        """Mininet's pingall table, then each pair's numbers."""
        srcs: dict[str, list[str]] = {}
        for r in self.results:
            srcs.setdefault(r.src, []).append(r.dst if r.ok else "X")
        out = [f"{s} -> {' '.join(d)}" for s, d in srcs.items()]
        out += [str(r) for r in self.results]
        out.append(f"*** Results: {self.loss * 100:.0f}% dropped "
                   f"({self.received}/{self.sent} received)")
        return out


@dataclass
class IperfResult:
    src: str
    dst: str
    bits_per_second: float
    bytes: int
    seconds: float
    tool: str

    def __str__(self) -> str:
        return (f"{self.src} -> {self.dst}: {self.bits_per_second / 1e6:.1f} Mbit/s "
                f"({self.bytes} bytes in {self.seconds:.2f} s, {self.tool})")


# -- ping ---------------------------------------------------------------------------------------
def ping_stack(stack_path: str, address: str, count: int, interval: float,
               timeout: float) -> PingResult:
    """Echo requests from a published stack's ping socket; replies matched by sequence."""
    from threadnet.stack.remote import RemoteStack

    v6 = ":" in address
    result = PingResult("", "", address, 0)
    try:
        sock = RemoteStack(stack_path).socket(
            socket.AF_INET6 if v6 else socket.AF_INET, socket.SOCK_DGRAM,
            socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP)
    except OSError as exc:
        result.sent = count
        result.error = f"cannot open a ping socket: {exc}"
        return result
    request = 128 if v6 else 8
    reply_type = 129 if v6 else 0
    sent_at: dict[int, float] = {}
    payload = b"threadnet-lab".ljust(48, b".")
    with sock:
        sock.setblocking(False)
        next_send = time.monotonic()
        last_deadline = None
        seq = 0
        while True:
            now = time.monotonic()
            if seq < count and now >= next_send:
                seq += 1
                packet = struct.pack("!BBHHH", request, 0, 0, 0, seq) + payload
                try:
                    # (the time before the send, as ping's: taken after it, a preemption
                    # between the two would shorten the RTT)
                    sent_at[seq] = time.monotonic()
                    sock.sendto(packet, (address, 0))
                except OSError as exc:
                    sent_at.pop(seq, None)
                    result.error = str(exc)
                result.sent += 1
                next_send = now + interval
                if seq == count:
                    last_deadline = now + timeout
            if last_deadline is not None and now >= last_deadline:
                break
            if len(result.rtts) == count:
                break
            wake = next_send if seq < count else last_deadline
            r, _, _ = select.select([sock], [], [], max(0.0, (wake or now) - now))
            if not r:
                continue
            while True:
                try:
                    data = sock.recv(2048)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError as exc:  # an ICMP error queued for the socket
                    result.error = str(exc)
                    break
                if len(data) >= 8 and data[0] == reply_type:
                    n = struct.unpack_from("!H", data, 6)[0]
                    t = sent_at.pop(n, None)
                    if t is not None:
                        result.rtts.append(time.monotonic() - t)
    return result


_RTT = re.compile(r"icmp_seq=(\d+).*time=([0-9.]+) ms")


def ping_netns(enter: list[str], address: str, count: int, interval: float,
               timeout: float) -> PingResult:
    """The kernel's ping, in the namespace (``enter``: the command prefix that runs a
    command there, ``ip netns exec NS`` or ``nsenter ...``)."""
    result = PingResult("", "", address, count)
    deadline = count * interval + timeout
    cmd = [*enter, "ping", "-n", "-c", str(count), "-i", f"{interval:g}",
           "-W", f"{timeout:g}", "-w", f"{deadline:.0f}" if deadline >= 1 else "1", address]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=deadline + 10)
    except subprocess.TimeoutExpired:
        result.error = "ping did not finish"
        return result
    seen = set()
    for m in _RTT.finditer(r.stdout):
        if m.group(1) not in seen:  # (a duplicate reply counts once)
            seen.add(m.group(1))
            result.rtts.append(float(m.group(2)) / 1000)
    if r.returncode not in (0, 1):
        lines = (r.stderr.strip() or r.stdout.strip()).splitlines()
        result.error = lines[-1] if lines else f"ping: exit status {r.returncode}"
    return result


# -- throughput ---------------------------------------------------------------------------------
def netns_socket(nsfile: str, family: int, kind: int) -> socket.socket:
    """A kernel socket in the network namespace of ``nsfile`` (/run/netns/NAME or
    /proc/PID/ns/net), made by a thread that enters it (root, or the namespace's owner
    where it is in our user namespace)."""
    import ctypes

    box: dict[str, Any] = {}

    def work() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = os.open(nsfile, os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns into {nsfile}: {os.strerror(err)}")
            finally:
                os.close(fd)
            box["sock"] = socket.socket(family, kind)
        except BaseException as exc:  # handed to the caller
            box["error"] = exc

    t = threading.Thread(target=work, name=f"netns {nsfile}")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["sock"]


CHUNK = 64 * 1024


def tcp_throughput(client: Callable[[int, int], socket.socket],
                   server: Callable[[int, int], socket.socket], address: str,
                   seconds: float, port: int) -> IperfResult:
    """Send for ``seconds`` from a socket of ``client`` to a listener of ``server`` at
    ``address``; the rate is what the receiver got, first byte to end of stream."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    lsock = server(family, socket.SOCK_STREAM)
    got: dict[str, Any] = {}
    try:
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("", port))
        lsock.listen(1)
        lsock.settimeout(seconds + 30)

        def receive() -> None:
            try:
                conn, _ = lsock.accept()
                with conn:
                    conn.settimeout(seconds + 30)
                    total = 0
                    first = None
                    while data := conn.recv(CHUNK):
                        if first is None:
                            first = time.monotonic()
                        total += len(data)
                    got["bytes"] = total
                    got["seconds"] = time.monotonic() - (first or time.monotonic())
            except OSError as exc:
                got["error"] = exc

        t = threading.Thread(target=receive, name="lab-iperf-server", daemon=True)
        t.start()
        csock = client(family, socket.SOCK_STREAM)
        with csock:
            csock.settimeout(30)
            csock.connect((address, port))
            block = bytes(CHUNK)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                csock.sendall(block)
            csock.shutdown(socket.SHUT_WR)
            t.join(seconds + 60)
    finally:
        lsock.close()
    if "error" in got:
        raise got["error"]
    if "bytes" not in got:
        raise TimeoutError("the receiver did not finish")
    secs = max(got["seconds"], 1e-6)
    return IperfResult("", "", got["bytes"] * 8 / secs, got["bytes"], secs, "sockets")


def iperf3(client: list[str], server_enter: list[str], address: str, seconds: float,
           port: int) -> IperfResult:
    """Kernel iperf3 between two namespaces (entered by these command prefixes)."""
    server = subprocess.Popen([*server_enter, "iperf3", "-s", "-1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while True:  # until the server listens
            r = subprocess.run([*client, "iperf3", "-c", address,
                                "-p", str(port), "-t", f"{seconds:g}", "-J"],
                               capture_output=True, text=True, timeout=seconds + 60)
            if r.returncode == 0 or time.monotonic() > deadline or server.poll() is not None:
                break
            time.sleep(0.1)
        try:
            data = json.loads(r.stdout)
        except ValueError:
            data = {}
        if r.returncode != 0 or "error" in data:
            raise OSError(f"iperf3: {data.get('error') or r.stderr.strip() or 'failed'}")
        end = data["end"]["sum_received"]
        return IperfResult("", "", float(end["bits_per_second"]), int(end["bytes"]),
                           float(end["seconds"]), "iperf3")
    finally:
        if server.poll() is None:
            server.kill()
        server.wait()
        if server.stderr is not None:
            server.stderr.close()
