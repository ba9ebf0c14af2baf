"""``threadnet wirefilter`` end to end: the real CLI (daemonized) between two switches.

Link level (no root): threadnet ``vde://`` endpoints in the test process on each switch
send sequence-numbered frames through the wirefilter and count what comes out: loss
within binomial bounds and reproducible with ``--seed``, delay and its change at run
time through the console, duplication, MTU, per-direction loss, bandwidth, (no)fifo.
Console: banner, prompt, ``help``, errors, and ``showinfo`` compared line by line with
Debian's ``wirefilter`` given the same options. Interop: Debian's wirefilter between two
threadnet switches, and threadnet wirefilter as the middle tool of vdeplug4's ``dpipe``.
With root: kernel ``ping`` between two namespaces across the wirefilter.
"""

from __future__ import annotations

import math
import os
import re
import socket
import struct
import subprocess
import threading
import time

import pytest

from threadnet.link import open_link
from threadnet.mgmt.client import ConsoleClient

from conftest import Namespaces, need_tool, threadnet_cmd, threadnet_env, wait_for

ETHERTYPE = b"\x88\xb5"  # IEEE "local experimental": nothing else on the switches uses it
MAC_L = bytes.fromhex("020000000a01")
MAC_R = bytes.fromhex("020000000b01")


def make_frame(dst: bytes, src: bytes, seq: int, size: int = 64) -> bytes:
    head = dst + src + ETHERTYPE + struct.pack("!I", seq)
    return head + bytes(max(0, size - len(head)))


class Endpoint:
    """A threadnet vde:// link with a receiver thread that records our test frames.

    ``received`` holds (arrival time, seq, length). With ``echo`` every test frame is sent
    back at once, addresses swapped.
    """

    def __init__(self, switch_dir: str, mac: bytes, *, echo: bool = False, name: str = "") -> None:
        self.mac = mac
        self.echo = echo
        self.link = open_link(f"vde://{switch_dir}", description=f"tn-test {name}")
        self.received: list[tuple[float, int, int]] = []
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        link = self.link
        while not self._stop.is_set():
            if not link.wait_readable(0.05):
                continue
            frame = link.recv()
            now = time.monotonic()
            if frame[12:14] != ETHERTYPE or len(frame) < 18:
                continue
            if self.echo:
                link.send(frame[6:12] + frame[0:6] + frame[12:])
            seq = struct.unpack("!I", frame[14:18])[0]
            with self._cond:
                self.received.append((now, seq, len(frame)))
                self._cond.notify_all()

    def send(self, seq: int, dst: bytes, size: int = 64) -> float:
        t = time.monotonic()
        self.link.send(make_frame(dst, self.mac, seq, size))
        return t

    def send_many(self, dst: bytes, seqs, size: int = 64, burst: int = 10,
                  pause: float = 0.001) -> None:
        """Send paced (``burst`` frames, then ``pause``) so no socket queue overflows."""
        for i, seq in enumerate(seqs):
            self.send(seq, dst, size)
            if i % burst == burst - 1:
                time.sleep(pause)

    def seqs(self) -> list[int]:
        with self._cond:
            return [s for _, s, _ in self.received]

    def wait_seq(self, seq: int, timeout: float = 5.0) -> float | None:
        """Arrival time of ``seq`` (waiting up to ``timeout``), or None."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for t, s, _ in self.received:
                    if s == seq:
                        return t
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def settle(self, quiet: float = 0.3, timeout: float = 15.0) -> int:
        """Wait until no frame has arrived for ``quiet`` seconds; returns the count."""
        deadline = time.monotonic() + timeout
        last = -1
        while time.monotonic() < deadline:
            n = len(self.received)
            if n == last:
                return n
            last = n
            time.sleep(quiet)
        return len(self.received)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.close()


class Wire:
    """Two switches, a wirefilter between them, and a test endpoint on each switch."""

    def __init__(self, sw1: str, sw2: str, mgmt: str, pid: int, left: Endpoint,
                 right: Endpoint) -> None:
        self.sw1, self.sw2, self.mgmt, self.pid = sw1, sw2, mgmt, pid
        self.left, self.right = left, right

    def console(self, line: str) -> tuple[int, list[str], str]:
        with ConsoleClient(self.mgmt) as c:
            return c.run(line)


@pytest.fixture
def wire(threadnet_switch, procs, sockdir, stop_daemons_first):
    """``wire(*options, echo=False, tool="threadnet")`` -> Wire: two threadnet switches with
    ``wirefilter -v SW1:SW2 -M MGMT --daemon --pidfile P OPTIONS`` between them (threadnet's
    or, with ``tool="debian"``, Debian's), endpoint ``left`` on SW1, ``right`` on SW2."""
    endpoints: list[Endpoint] = []
    n = iter(range(100))

    def start(*options: str, echo: bool = False, tool: str = "threadnet") -> Wire:
        i = next(n)
        sw1, _, _ = threadnet_switch()
        sw2, _, _ = threadnet_switch()
        mgmt = os.path.join(sockdir, f"wf{i}.mgmt")
        pidfile = os.path.join(sockdir, f"wf{i}.pid")
        args = ["-v", f"{sw1}:{sw2}", "-M", mgmt, "--daemon", "--pidfile", pidfile, *options]
        if tool == "debian":
            need_tool("wirefilter")
            pid = procs.daemon(["wirefilter", *args], pidfile)
        else:
            pid = procs.daemon(threadnet_cmd("wirefilter", *args), pidfile, env=threadnet_env())
        wait_for(lambda: os.path.exists(mgmt), what="wirefilter console")
        left = Endpoint(sw1, MAC_L, name="left")
        endpoints.append(left)
        right = Endpoint(sw2, MAC_R, echo=echo, name="right")
        endpoints.append(right)
        return Wire(sw1, sw2, mgmt, pid, left, right)

    try:
        yield start
    finally:
        for ep in endpoints:
            ep.close()


def inversions(seqs: list[int]) -> int:
    """Frames that arrived after a frame sent later than them."""
    count = 0
    highest = -1
    for s in seqs:
        if s < highest:
            count += 1
        highest = max(highest, s)
    return count


# -- (a) loss ----------------------------------------------------------------------------
def test_loss_within_binomial_bounds_and_seeded(wire) -> None:
    n, p = 3000, 0.20
    bound = 4.5 * math.sqrt(p * (1 - p) / n)  # ~3.3 percentage points
    runs = []
    for seed in ("7", "7", "8"):
        w = wire("-l", "20", "--seed", seed)
        w.left.send_many(MAC_R, range(n))
        w.right.settle()
        got = w.right.seqs()
        assert len(got) == len(set(got)) and max(got) < n
        loss = 1 - len(got) / n
        assert abs(loss - p) <= bound, f"loss {loss:.4f} outside {p}±{bound:.4f}"
        runs.append(got)
    assert runs[0] == runs[1], "the same --seed must lose the same frames"
    assert runs[0] != runs[2], "a different --seed should lose other frames"


# -- (b) delay, changed at run time ------------------------------------------------------
def round_trip(w: Wire, seq: int, timeout: float = 5.0) -> float:
    t0 = w.left.send(seq, MAC_R)
    t1 = w.left.wait_seq(seq, timeout)
    assert t1 is not None, f"echo of frame {seq} never came back"
    return t1 - t0


def test_delay_and_delay_0_at_once(wire) -> None:
    w = wire("-d", "50", echo=True)
    slow = [round_trip(w, i) for i in range(5)]
    assert all(rtt >= 0.100 for rtt in slow), slow
    err, _, text = w.console("delay 0")
    assert err == 0, text
    fast = [round_trip(w, 100 + i) for i in range(5)]
    assert all(rtt < 0.050 for rtt in fast), fast
    _, info, _ = w.console("showinfo")
    assert "Delay  L->R 0+0U   R->L 0+0U" in info

    # a frame already waiting in a long delay is released when the delay drops
    assert w.console("delay 2000")[0] == 0
    t0 = w.left.send(200, MAC_R)
    time.sleep(0.2)
    assert w.console("delay 0")[0] == 0
    t1 = w.left.wait_seq(200, 5.0)
    assert t1 is not None and t1 - t0 < 1.0, "a queued frame kept its old 2 s delay"


# -- (c) kernel ping across the wirefilter (root) ------------------------------------------
@pytest.mark.root
def test_kernel_ping_through_delay(threadnet_switch, tap_ns, procs, sockdir,
                                   stop_daemons_first) -> None:
    need_tool("ping", "vde_plug2tap")
    sw1, _, _ = threadnet_switch()
    sw2, _, _ = threadnet_switch()
    a = tap_ns(sw1, "10.77.1.1")
    b = tap_ns(sw2, "10.77.1.2")
    mgmt = os.path.join(sockdir, "wf.mgmt")
    pidfile = os.path.join(sockdir, "wf.pid")
    procs.daemon(threadnet_cmd("wirefilter", "-v", f"{sw1}:{sw2}", "-M", mgmt, "--daemon",
                               "--pidfile", pidfile, "-d", "50"), pidfile, env=threadnet_env())

    def ping() -> list[float]:
        r = Namespaces.run(a.ns, "ping", "-c", "3", "-i", "0.2", "-W", "3", b.addr, check=False)
        assert r.returncode == 0 and "3 received" in r.stdout, r.stdout + r.stderr
        return [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]

    slow = ping()
    assert len(slow) == 3 and all(rtt >= 100 for rtt in slow), slow
    with ConsoleClient(mgmt) as c:
        assert c.run("delay 0")[0] == 0
    fast = ping()
    assert len(fast) == 3 and all(rtt < 20 for rtt in fast), fast


# -- (d) console ---------------------------------------------------------------------------
SHOWINFO_OPTIONS = ["-l", "LR20", "-L", "3", "-d", "10+5N", "-D", "RL2", "-b", "1M",
                    "-s", "10K", "-n", "3", "-m", "1000", "-c", "100", "-N"]
RUNTIME_COMMANDS = ["loss RL5+2", "delay 30+5", "dup 1", "bandwidth 2K", "speed 0", "noise 0",
                    "mtu 1400", "chanbufsize 64K", "lostburst 0", "fifo 1"]


def normalised_showinfo(mgmt: str) -> list[str]:
    with ConsoleClient(mgmt) as c:
        err, lines, text = c.run("showinfo")
    assert err == 0, text
    # only the queue counts may differ
    return [re.sub(r"\d+", "N", ln) if ln.startswith(("Current Delay Queue", "Waiting packets"))
            else ln for ln in lines]


def raw_console(path: str, lines: list[str]) -> list[bytes]:
    """The raw bytes of the banner and of the reply to each line."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(path)
    out = []
    try:
        for line in [None, *lines]:
            if line is not None:
                s.sendall(line.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"VDEwf$ "):
                chunk = s.recv(65536)
                assert chunk, f"console closed after {buf!r}"
                buf += chunk
            out.append(buf)
    finally:
        s.close()
    return out


def test_console_like_debian_wirefilter(wire, vde_switch, procs, sockdir) -> None:
    need_tool("wirefilter")
    ours = wire(*SHOWINFO_OPTIONS)
    d1, _, _ = vde_switch()
    d2, _, _ = vde_switch()
    ref_mgmt = os.path.join(sockdir, "debian-wf.mgmt")
    ref_pid = os.path.join(sockdir, "debian-wf.pid")
    procs.daemon(["wirefilter", "-v", f"{d1}:{d2}", "-M", ref_mgmt, "--daemon", "--pidfile",
                  ref_pid, *SHOWINFO_OPTIONS], ref_pid)
    wait_for(lambda: os.path.exists(ref_mgmt), what="Debian wirefilter console")

    # showinfo: the same body for the same options, and after the same runtime commands
    assert normalised_showinfo(ours.mgmt) == normalised_showinfo(ref_mgmt)
    for line in RUNTIME_COMMANDS:
        for mgmt in (ours.mgmt, ref_mgmt):
            with ConsoleClient(mgmt) as c:
                assert c.run(line)[0] == 0, (mgmt, line)
    assert normalised_showinfo(ours.mgmt) == normalised_showinfo(ref_mgmt)

    # banner and prompt, on the raw socket
    banner, help_reply, bad, unknown, ok = raw_console(
        ours.mgmt, ["help", "delay abc", "bogus", "loss 0"])
    assert banner.startswith(b"\nVDE wirefilter V.2.3.2\n") and b"VDE wirefilter" in banner
    assert banner.endswith(b"\n\nVDEwf$ ")
    assert bad == b"1022 Invalid argument\n\nVDEwf$ "
    assert unknown == b"1038 Function not implemented\n\nVDEwf$ "
    assert ok == b"1000 Success\n\nVDEwf$ "
    assert help_reply.startswith(b"0000 DATA END WITH '.'\n")
    assert help_reply.endswith(b".\n1000 Success\n\nVDEwf$ ")

    # help: the same layout as Debian's, listing every command we implement
    def commands(mgmt: str) -> dict[str, str]:
        with ConsoleClient(mgmt) as c:
            err, lines, _ = c.run("help")
        assert err == 0
        assert lines[:2] == ["COMMAND      HELP", "------------ ------------"]
        table: dict[str, str] = {}
        for ln in lines[2:]:
            table.setdefault(ln.split()[0], ln)  # Debian lists "showinfo" twice (markov)
        return table

    mine, ref = commands(ours.mgmt), commands(ref_mgmt)
    for name in ("help", "load", "showinfo", "loss", "lostburst", "delay", "dup", "bandwidth",
                 "speed", "noise", "mtu", "chanbufsize", "fifo", "shutdown", "logout"):
        assert name in mine, f"help does not list {name}"
        assert mine[name] == ref[name]
    assert set(mine) <= set(ref)


def test_rcfile_description_and_console_shutdown(wire, sockdir) -> None:
    rc = os.path.join(sockdir, "wf.rc")
    with open(rc, "w") as f:
        f.write("# settings\ndelay 30\nloss LR10\n")
    w = wire("-f", rc)
    _, info, _ = w.console("showinfo")
    assert "Delay  L->R 30+0U   R->L 30+0U" in info and "Loss   L->R 10+0U   R->L 0+0U" in info
    # the switches show who the wirefilter is, as vde_plug and Debian's wirefilter do
    with ConsoleClient(w.sw1 + ".mgmt") as c:
        lines = c.run("port/print")[1]
    assert any(re.search(r"prog   : wirefilter user=\S+ pid=\d+$", ln) for ln in lines), lines

    # shutdown: the process ends, its console socket goes, the switch ports are freed
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect(w.mgmt)
        wait_for(lambda: s.recv(4096).endswith(b"VDEwf$ "), what="prompt")
        s.sendall(b"shutdown\n")
        rest = b""
        while chunk := s.recv(4096):
            rest += chunk
    finally:
        s.close()
    assert b"VDEwf$" not in rest  # no prompt after shutdown: the session is over
    wait_for(lambda: not os.path.exists(f"/proc/{w.pid}") or _state(w.pid) == "Z",
             what="wirefilter exit")
    assert not os.path.exists(w.mgmt)

    def freed() -> bool:
        with ConsoleClient(w.sw1 + ".mgmt") as c:
            return not any("wirefilter" in ln for ln in c.run("port/print")[1])

    wait_for(freed, what="the wirefilter's port to go")


def _state(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "gone"


# -- (e) the other channel features ------------------------------------------------------
def test_dup_within_bounds(wire) -> None:
    n, p = 2000, 0.5
    w = wire("-D", "50", "--seed", "3")
    w.left.send_many(MAC_R, range(n))
    got = w.right.settle()
    bound = 4.5 * math.sqrt(n * p * (1 - p))  # about 100 frames
    assert abs(got - n * (1 + p)) <= bound, f"{got} frames for {n} sent with 50% dup"
    seqs = w.right.seqs()
    assert set(seqs) == set(range(n))  # no loss, only copies
    assert max(seqs.count(s) for s in set(seqs)) == 2


def test_mtu_drops_longer_frames(wire) -> None:
    sizes = [60, 400, 500, 501, 1000, 1514]
    w = wire("-m", "500")
    for i, size in enumerate(sizes):
        w.left.send(i, MAC_R, size)
        w.right.send(i, MAC_L, size)
    w.left.settle()
    w.right.settle()
    for ep in (w.left, w.right):
        assert sorted(length for _, _, length in ep.received) == [60, 400, 500]


def test_loss_in_one_direction_only(wire) -> None:
    w = wire("-l", "LR100")
    w.left.send_many(MAC_R, range(100))
    w.right.send_many(MAC_L, range(100))
    assert w.left.settle() == 100  # R->L untouched
    assert w.right.settle() == 0  # L->R loses everything
    _, info, _ = w.console("showinfo")
    assert "Loss   L->R 100+0U   R->L 0+0U" in info


def test_bandwidth_limits_the_rate(wire) -> None:
    n, size = 200, 1000
    w = wire("-b", "100K")  # 102400 bytes/s: 200 kB take ~1.95 s on the line
    t0 = time.monotonic()
    w.left.send_many(MAC_R, range(n), size=size)
    last = w.right.wait_seq(n - 1, timeout=20)
    assert last is not None, f"only {len(w.right.received)} of {n} frames arrived"
    assert last - t0 >= 1.8, f"{n * size} bytes crossed a 100K line in {last - t0:.2f} s"
    assert w.right.settle() == n  # limited, not lost
    assert w.right.seqs() == list(range(n))


def test_jitter_reorders_only_without_fifo(wire) -> None:
    n = 300
    results = {}
    for name, opts in (("nofifo", ("-d", "20+15", "-N")), ("fifo", ("-d", "20+15"))):
        w = wire(*opts, "--seed", "5")
        w.left.send_many(MAC_R, range(n), burst=1, pause=0.001)
        assert w.right.settle() == n
        results[name] = w.right.seqs()
    assert sorted(results["nofifo"]) == list(range(n))
    assert inversions(results["nofifo"]) > 0, "jitter without fifo should reorder"
    assert results["fifo"] == list(range(n)), "fifo must keep the order"


# -- (f) interop -----------------------------------------------------------------------------
def test_debian_wirefilter_between_threadnet_switches(wire) -> None:
    w = wire("-d", "20", tool="debian", echo=True)
    w.left.send_many(MAC_R, range(200))
    assert w.right.settle() == 200
    assert sorted(w.left.seqs()) == list(range(200))  # and the echoes came back
    assert round_trip(w, 1000) >= 0.040
    with ConsoleClient(w.sw1 + ".mgmt") as c:
        _, lines, _ = c.run("port/print")
    assert any("vde_crosscable" in ln for ln in lines), lines


def _children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def test_dpipe_middle_tool(threadnet_switch, procs, sockdir, stop_daemons_first) -> None:
    need_tool("dpipe", "vde_plug")
    sw1, mgmt1, _ = threadnet_switch()
    sw2, mgmt2, _ = threadnet_switch()
    mgmt = os.path.join(sockdir, "dpipe-wf.mgmt")
    cmd = ["dpipe", "vde_plug", sw1, "=", *threadnet_cmd("wirefilter", "-l", "0", "-M", mgmt),
           "=", "vde_plug", sw2]
    p = procs.popen(cmd, env=threadnet_env(), stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE)

    def plugged(m: str) -> bool:
        with ConsoleClient(m) as c:
            return any("vdeplug" in ln for ln in c.run("port/print")[1])

    try:
        wait_for(lambda: plugged(mgmt1) and plugged(mgmt2) and os.path.exists(mgmt),
                 timeout=10, what="dpipe's two vde_plugs and the wirefilter console")
    except AssertionError:
        if p.poll() is not None:
            err = p.stderr.read().decode(errors="replace") if p.stderr else ""
            pytest.fail(f"dpipe exited ({p.returncode}): {err}")
        raise
    for child in _children(p.pid):
        procs.adopt(child)  # ended by PID at teardown even if dpipe leaves them behind

    left = Endpoint(sw1, MAC_L, name="left")
    right = Endpoint(sw2, MAC_R, name="right")
    try:
        left.send_many(MAC_R, range(200))
        right.send_many(MAC_L, range(200))
        assert right.settle() == 200 and left.settle() == 200
        # it is our wirefilter in the middle, and L is dpipe's left side
        with ConsoleClient(mgmt) as c:
            assert c.run("loss LR100")[0] == 0
        left.send_many(MAC_R, range(1000, 1100))
        right.send_many(MAC_L, range(1000, 1100))
        assert left.settle() == 300
        assert right.settle() == 200
    finally:
        left.close()
        right.close()
