"""Helpers shared by the switch tests: frames, receiving with timeouts, Debian vde_plug on
pipes, and console access (parsed and raw).

Not a test module; the switch test files import it (pytest puts ``tests/`` on sys.path).
"""

from __future__ import annotations

import os
import re
import select
import struct
import subprocess
import time

from threadnet.link import Link
from threadnet.mgmt.client import ConsoleClient
from threadnet.wire.stream import Decoder

from conftest import wait_for

BROADCAST = b"\xff" * 6
TEST_ETHERTYPE = 0x88B5  # IEEE "local experimental"


def mac(n: int) -> bytes:
    """A locally administered unicast MAC 02:00:00:00:HH:LL."""
    return bytes([0x02, 0, 0, 0, (n >> 8) & 0xFF, n & 0xFF])


def eth(dst: bytes, src: bytes, payload: bytes = b"", ethertype: int = TEST_ETHERTYPE,
        pad: bool = True) -> bytes:
    """An untagged Ethernet frame (no FCS), padded to 60 bytes unless ``pad`` is False."""
    frame = dst + src + struct.pack("!H", ethertype) + payload
    return frame.ljust(60, b"\0") if pad else frame


def eth_tagged(dst: bytes, src: bytes, vlan: int, payload: bytes = b"",
               ethertype: int = TEST_ETHERTYPE, pcp: int = 0) -> bytes:
    """An 802.1Q-tagged frame: the MACs, TPID 0x8100, TCI, inner type, payload (>= 64 B)."""
    frame = dst + src + struct.pack("!HHH", 0x8100, (pcp << 13) | vlan, ethertype) + payload
    return frame.ljust(64, b"\0")


def add_tag(frame: bytes, vlan: int) -> bytes:
    return frame[:12] + struct.pack("!HH", 0x8100, vlan) + frame[12:]


def strip_tag(frame: bytes) -> bytes:
    return frame[:12] + frame[16:]


# -- threadnet links -------------------------------------------------------------------
def recv_frame(link: Link, timeout: float = 3.0) -> bytes | None:
    """One frame from ``link`` within ``timeout`` seconds, or None."""
    link.setblocking(False)
    deadline = time.monotonic() + timeout
    while True:
        try:
            return link.recv()
        except BlockingIOError:
            pass
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        link.wait_readable(left)


def recv_frames(link: Link, wait: float = 0.3) -> list[bytes]:
    """Every frame that arrives on ``link`` within ``wait`` seconds."""
    out = []
    deadline = time.monotonic() + wait
    while True:
        frame = recv_frame(link, max(0.0, deadline - time.monotonic()))
        if frame is None:
            return out
        out.append(frame)


def expect(link: Link, frame: bytes, timeout: float = 3.0) -> None:
    got = recv_frame(link, timeout)
    assert got is not None, f"{link!r} received nothing, expected {frame[:18].hex()}"
    assert got == frame, f"{link!r} got {got.hex()}, expected {frame.hex()}"


def expect_silence(link: Link, wait: float = 0.3) -> None:
    """After ``wait`` seconds, a non-blocking recv finds nothing."""
    time.sleep(wait)
    link.setblocking(False)
    try:
        frame = link.recv()
    except BlockingIOError:
        return
    raise AssertionError(f"{link!r} unexpectedly received {frame.hex()}")


# -- Debian vde_plug on pipes -------------------------------------------------------------
class Plug:
    """``vde_plug [-D descr] URL`` with its stdin/stdout stream (2-byte BE length + frame)."""

    def __init__(self, procs, url: str, descr: str, *, popen_kw: dict | None = None,
                 prog: list[str] | None = None) -> None:
        """``prog`` replaces ``["vde_plug"]``, e.g. ``threadnet plug`` (same arguments)."""
        self.descr = descr
        self.proc: subprocess.Popen = procs.popen(
            [*(prog or ["vde_plug"]), "-D", descr, url], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, **(popen_kw or {}))
        self._dec = Decoder()
        self._queue: list[bytes] = []

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, frame: bytes) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(struct.pack("!H", len(frame)) + frame)
        self.proc.stdin.flush()

    def recv(self, timeout: float = 3.0) -> bytes | None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while not self._queue:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            r, _, _ = select.select([fd], [], [], left)
            if not r:
                return None
            data = os.read(fd, 65536)
            if not data:
                return None
            self._queue.extend(self._dec.feed(data))
        return self._queue.pop(0)

    def expect(self, frame: bytes, timeout: float = 3.0) -> None:
        got = self.recv(timeout)
        assert got is not None, f"vde_plug {self.descr} received nothing"
        assert got == frame, f"vde_plug {self.descr} got {got.hex()}, expected {frame.hex()}"

    def expect_silence(self, wait: float = 0.3) -> None:
        got = self.recv(wait)
        assert got is None, f"vde_plug {self.descr} unexpectedly received {got.hex()}"


# -- consoles ------------------------------------------------------------------------------
class Console(ConsoleClient):
    """ConsoleClient plus the raw reply text and a few checks."""

    def raw(self, line: str) -> str:
        """Send one command, return the reply text up to and including the next prompt."""
        self.sock.sendall(line.encode() + b"\n")
        return self._read_until(self.prompt.encode()).decode(errors="replace")

    def ok(self, line: str) -> list[str]:
        err, lines, text = self.run(line)
        assert err == 0, f"{line!r} failed: {err} {text}"
        return lines

    def port_print(self, port: int | None = None) -> str:
        err, lines, text = self.run("port/print" if port is None else f"port/print {port}")
        return "\n".join(lines) if err == 0 else ""

    def ports(self) -> dict[int, dict]:
        """``port/print`` parsed: {port: {"vlan", "in", "out", "endpoints": [descr...]}}."""
        out: dict[int, dict] = {}
        cur: dict | None = None
        for ln in self.ok("port/print"):
            m = re.match(r"Port (\d{4}) untagged_vlan=(\d{4}) (ACTIVE|INACTIVE)", ln)
            if m:
                cur = out[int(m.group(1))] = {"vlan": int(m.group(2)), "endpoints": []}
                continue
            m = re.match(r" (IN|OUT): +pkts +(\d+) +bytes +(\d+)$", ln)
            if m and cur is not None:
                cur[m.group(1).lower()] = (int(m.group(2)), int(m.group(3)))
                continue
            m = re.match(r"  -- endpoint ID (\d+) module (\S+) +prog +: (.*)$", ln)
            if m and cur is not None:
                cur["endpoints"].append(m.group(3))
        return out

    def port_of(self, descr: str, timeout: float = 5.0) -> int:
        """Wait until an endpoint whose description starts with ``descr`` shows up."""
        def find():
            for n, p in self.ports().items():
                if any(d == descr or d.startswith(descr + " ") for d in p["endpoints"]):
                    return n + 1  # port 0 is falsy
            return None

        return wait_for(find, timeout, what=f"endpoint {descr!r} in port/print") - 1


def unixterm(procs, mgmt: str, commands: list[str], timeout: float = 5.0,
             prompt: bytes = b"vde$ ") -> str:
    """Drive Debian's unixterm with a stdin that stays open: one command per prompt."""
    p = procs.popen(["unixterm", mgmt], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    fd = p.stdout.fileno()
    out = b""

    def read_until(pred) -> None:
        nonlocal out
        deadline = time.monotonic() + timeout
        while not pred(out):
            r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                raise AssertionError(f"unixterm: timed out; output so far {out!r}")
            chunk = os.read(fd, 65536)
            if not chunk:
                return
            out += chunk

    read_until(lambda o: o.count(prompt) >= 1)
    for i, cmd in enumerate(commands):
        p.stdin.write(cmd.encode() + b"\n")
        p.stdin.flush()
        if cmd == "logout":
            read_until(lambda o: b"9999 END OF SESSION" in o)
        else:
            read_until(lambda o, n=i + 2: o.count(prompt) >= n)
    p.stdin.close()
    p.wait(timeout)
    return out.decode()
