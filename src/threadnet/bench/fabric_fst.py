"""The fast spanning tree part of ``threadnet bench fabric``: how long a ring of three
switches running ``-F`` takes to carry traffic again after a cable is cut, threadnet's
switch side by side with Debian's ``vde_switch -F``.

Each run starts three switches of one kind (the middle one, switch 1, has the lowest
priority, so it is the root and the 0-2 cable is the blocked one), cables them in a ring
with ``dpipe vde_plug A = vde_plug B`` (the same cables for both kinds; ``threadnet plug``
when dpipe is missing), waits until ``fstp/print`` shows the tree (two alternate ports),
then joins a sender to switch 0 and a receiver to switch 2 (vde:// links in this
process). The sender sends a unicast frame to the receiver every millisecond; the 0-1
cable is cut (its processes signalled by PID) and the figure is the outage: the longest
silence at the receiver from its last frame before the cut on (so it does not depend on
how long the cable's processes take to die). ``run_fst(python)`` returns the printed
lines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable

from threadnet.bench import child_env, interpreter, kill_pid

SENDER = bytes.fromhex("02000000fa01")
RECEIVER = bytes.fromhex("02000000fa02")
PRIORITIES = (0x8000, 0x1000, 0x8000)


def _wait(pred, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _console_lines(mgmt: str, command: str) -> list[str]:
    from threadnet.mgmt.client import ConsoleClient

    try:
        with ConsoleClient(mgmt) as c:
            err, lines, _ = c.run(command)
            return lines if err == 0 else []
    except OSError:
        return []


def children(pid: int) -> list[int]:
    """The PIDs whose parent is ``pid`` (from /proc)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


class _Ring:
    def __init__(self, kind: str, work: str, python: str) -> None:
        self.kind = kind
        self.pids: list[int] = []
        self.cables: dict[tuple[int, int], subprocess.Popen] = {}
        self.dirs: list[str] = []
        self.mgmts: list[str] = []
        try:
            for i, prio in enumerate(PRIORITIES):
                d = os.path.join(work, f"{kind[0]}{i}")
                mgmt, pidfile = d + ".mgmt", d + ".pid"
                if kind == "threadnet":
                    cmd = [python, "-m", "threadnet", "switch"]
                    env = child_env()
                else:
                    cmd, env = ["vde_switch"], None
                cmd += ["-F", "--priority", str(prio), "-s", d, "-M", mgmt, "-d", "-p", pidfile]
                subprocess.run(cmd, env=env, check=True, stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=20)
                self.pids.append(int(_wait(lambda p=pidfile: os.path.exists(p) and
                                           open(p).read().strip(), 10, pidfile)))
                _wait(lambda d=d, m=mgmt: os.path.exists(os.path.join(d, "ctl"))
                      and os.path.exists(m), 10, f"{d} sockets")
                self.dirs.append(d)
                self.mgmts.append(mgmt)
            for a, b in ((0, 1), (1, 2), (2, 0)):
                self.cables[(a, b)] = self._cable(self.dirs[a], self.dirs[b], python)
            _wait(self.converged, 20, f"{kind}: the tree")
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def _cable(a: str, b: str, python: str) -> subprocess.Popen:
        if shutil.which("dpipe") and shutil.which("vde_plug"):
            cmd, env = ["dpipe", "vde_plug", a, "=", "vde_plug", b], None
        else:
            cmd, env = [python, "-m", "threadnet", "plug", f"vde://{a}", f"vde://{b}"], child_env()
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def converged(self) -> bool:
        text = [_console_lines(m, "fstp/print 0") for m in self.mgmts]
        roots = sum(1 for lines in text if lines and "ROOTSWITCH" in lines[0])
        alternates = sum(ln.endswith("role=Alternate/Backup") for lines in text for ln in lines)
        return roots == 1 and alternates == 2

    def cut(self, a: int, b: int) -> None:
        """Signal the cable's processes (by PID) and return at once: a dpipe's two
        vde_plugs (they hold the pipes between them: ending dpipe alone would leave the
        cable working), and the cable's own process. ``stop`` reaps them."""
        p = self.cables[(a, b)]
        for pid in children(p.pid) + [p.pid]:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        for p in self.cables.values():
            for pid in children(p.pid):
                kill_pid(pid)
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.cables.clear()
        for pid in self.pids:
            kill_pid(pid)


def _measure(ring: _Ring) -> float:
    """The longest gap (s) between frames across the ring when the root's cable to
    switch 0 is cut: the outage, plus the 1 ms between two frames."""
    from threadnet.link import open_link

    tx = open_link(f"vde://{ring.dirs[0]}", description="fst-sender")
    rx = open_link(f"vde://{ring.dirs[2]}", description="fst-receiver")
    try:
        announce = b"\xff" * 6 + RECEIVER + b"\x88\xb5" + bytes(46)
        rx.send(announce)
        got: list[tuple[float, int]] = []
        stop = threading.Event()

        def receive() -> None:
            rx.setblocking(False)
            while not stop.is_set():
                rx.wait_readable(0.05)
                while True:
                    try:
                        f = bytes(rx.recv())
                    except BlockingIOError:
                        break
                    if f[6:12] == SENDER and len(f) >= 18:
                        got.append((time.monotonic(), struct.unpack_from("!I", f, 14)[0]))

        t = threading.Thread(target=receive, daemon=True)
        t.start()
        seq = 0
        cut_at = None
        deadline = time.monotonic() + 30
        try:
            while time.monotonic() < deadline:
                seq += 1
                tx.send(RECEIVER + SENDER + b"\x88\xb5" + struct.pack("!I", seq) + bytes(42))
                now = time.monotonic()
                if cut_at is None and len(got) >= 50:
                    cut_at = now
                    ring.cut(0, 1)
                elif cut_at is not None and got and got[-1][0] > cut_at + 0.5 and \
                        now > cut_at + 1.5:
                    break  # frames flow again, for half a second at least
                if cut_at is None and seq % 200 == 0:
                    rx.send(announce)  # (in case the first one went before the tree settled)
                time.sleep(0.001)
        finally:
            stop.set()
            t.join(2)
        if cut_at is None:
            raise TimeoutError(f"{ring.kind}: no frame crossed the ring before the cut")
        # the outage: the longest silence at the receiver from the last frame before the
        # cut on (the cable's processes die some time after their signal)
        times = [ts for ts, _ in got]
        before = [ts for ts in times if ts <= cut_at]
        after = [ts for ts in times if ts > cut_at]
        if not after or after[-1] < cut_at + 0.5:
            raise TimeoutError(f"{ring.kind}: frames did not flow again within 30 s of the cut")
        series = before[-1:] + after
        return max(b - a for a, b in zip(series, series[1:], strict=False))
    finally:
        tx.close()
        rx.close()


def measure(python: str, repeat: int,
            emit: Callable[[str], None]) -> dict[str, list[float]] | None:
    """The outages (ms) of ``repeat`` runs of each kind; each line as it comes to ``emit``.
    None when Debian's vde_switch is missing."""
    emit("fst: a ring of 3 switches with -F, the root's cable to switch 0 cut; the longest"
         " gap (ms) in a unicast stream of a frame a ms across the ring")
    if shutil.which("vde_switch") is None:
        emit("fst: Debian's vde_switch is not installed (apt-get install vde2): skipped")
        return None
    if python != sys.executable:
        emit(f"  threadnet's switches run on: {python}")
    work = tempfile.mkdtemp(prefix="tnbf-", dir="/tmp")
    results: dict[str, list[float]] = {"threadnet": [], "vde_switch": []}
    try:
        for rep in range(repeat):
            for kind in results:
                ring = _Ring(kind, work, python)
                try:
                    ms = _measure(ring) * 1000
                finally:
                    ring.stop()
                results[kind].append(ms)
                emit(f"  run {rep + 1}: {kind:<10} {ms:8.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def run_fst(python: str, repeat: int = 3) -> list[str]:
    """Measure both kinds ``repeat`` times; returns the lines to print."""
    lines: list[str] = []
    results = measure(python, repeat, lines.append)
    if results is not None:
        t, v = statistics.median(results["threadnet"]), statistics.median(results["vde_switch"])
        lines.append(f"  outage after a cut (ms), medians of {repeat}: threadnet {t:.1f}, "
                     f"vde_switch {v:.1f}")
    return lines


def section_fst(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``threadnet bench fabric --only fst``: its case, in ``bench fabric``'s form (a ratio
    above 1 means threadnet's outage is the longer)."""
    results = measure(args.python, args.repeat, lambda line: print(line, flush=True))
    if results is None:
        return {}
    t, v = statistics.median(results["threadnet"]), statistics.median(results["vde_switch"])
    return {"fst outage after a cut (ms)": {"threadnet": t, "peer": v,
                                            "ratio": t / v if v else float("nan")}}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m threadnet.bench.fabric_fst",
                                description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--python", default=sys.executable, help="interpreter of threadnet's switches")
    args = p.parse_args(argv)
    print(f"interpreter: {interpreter()}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    for line in run_fst(args.python, args.repeat):
        print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
