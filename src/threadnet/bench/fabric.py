"""``threadnet bench fabric``: LANs without a switch process, threadnet against the real peer.

Each section measures one fabric with the same endpoints on both sides and prints the
ratio threadnet / real peer; ``--only NAME`` runs one section (default: all).

- ``vxvde``: frames per second between two endpoints of one vxvde LAN (multicast on lo,
  ``/if=lo/bind=127.0.0.1``), ``threadnet plug vxvde://...`` against Debian's
  ``vde_plug vxvde://...``. A generator writes vde stream records (2-byte length +
  frame) into one plug's standard input as fast as the plug takes them; the other plug
  writes what it receives to its standard output, which is counted. The sink plug
  announces its MAC first, so the generator's plug learns it and sends unicast, as on a
  LAN in use. UDP has no back-pressure: frames the sink cannot take are lost, so the
  figure is what arrives, per second (and the generator's rate is shown too).
- ``fst``: the outage when a cable is cut in a ring of three switches running the fast
  spanning tree (``-F``), threadnet's switch against Debian's ``vde_switch -F``
  (``bench/fabric_fst.py``; a ratio above 1 means threadnet's outage is the longer).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable

from threadnet.bench import child_env, interpreter, kill_pid
from threadnet.bench.fabric_fst import section_fst

SINK_MAC = bytes.fromhex("02000000bb01")
GEN_MAC = bytes.fromhex("02000000aa01")
BROADCAST = b"\xff" * 6


def _record(size: int, dst: bytes, src: bytes) -> bytes:
    frame = dst + src + b"\x88\xb5" + bytes(size - 14)
    return struct.pack("!H", len(frame)) + frame


def _plug_cmd(kind: str, url: str, python: str) -> list[str]:
    if kind == "threadnet":
        return [python, "-m", "threadnet", "plug", url]
    return ["vde_plug", url]


# -- vxvde -------------------------------------------------------------------------------
def role_gen(kind: str, url: str, size: int, duration: float, python: str) -> None:
    """Run a plug and write records into it for ``duration`` seconds (a child process)."""
    plug = subprocess.Popen(_plug_cmd(kind, url, python), stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, env=child_env())
    assert plug.stdin is not None
    fd = plug.stdin.fileno()
    rec = _record(size, SINK_MAC, GEN_MAC)
    per = max(1, 65536 // len(rec))
    chunk = rec * per
    time.sleep(0.5)  # the plug has joined the group and learned the sink's MAC
    sent = 0
    t0 = time.perf_counter()
    end = t0 + duration
    while time.perf_counter() < end:
        os.write(fd, chunk)  # blocking: a slower plug slows the generator down
        sent += per
    elapsed = time.perf_counter() - t0
    print(json.dumps({"sent": sent, "rate": sent / elapsed}), flush=True)
    time.sleep(0.3)
    kill_pid(plug.pid)
    plug.wait()


def _count(fd: int, record: int, idle: float, limit: float) -> tuple[int, float]:
    """Count the generator's records (all ``record`` bytes long) read from ``fd`` until
    ``idle`` seconds pass without any (after the first) or ``limit`` seconds in all;
    (frames, seconds between the first and the last). Counting by bytes keeps the
    counter cheap: the sink's plug gets the generator's frames only, which the first
    record read confirms."""
    total = 0
    first = last = 0.0
    checked = False
    stop = time.perf_counter() + limit
    while time.perf_counter() < stop:
        if not select.select([fd], [], [], idle if total else 5.0)[0]:
            break
        data = os.read(fd, 1 << 20)
        if not data:
            break
        now = time.perf_counter()
        if not total:
            first = now
            if not checked and len(data) >= 14 and data[8:14] != GEN_MAC:
                raise RuntimeError("the sink received something else than the generator's frames")
            checked = True
        total += len(data)
        last = now
    frames = total // record
    return max(0, frames - 1), last - first  # (the rate counts frames after the first)


def measure_vxvde(kind: str, url: str, size: int, duration: float, python: str
                  ) -> tuple[float, float]:
    """(frames/s received, frames/s the generator wrote) for one run."""
    sink = subprocess.Popen(_plug_cmd(kind, url, python), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=child_env())
    gen = None
    try:
        assert sink.stdin is not None and sink.stdout is not None
        time.sleep(0.3)
        hello = _record(64, BROADCAST, SINK_MAC)
        gen = subprocess.Popen([sys.executable, "-m", "threadnet.bench.fabric", "--role", "gen",
                                "--kind", kind, "--url", url, "--size", str(size),
                                "--duration", str(duration), "--python", python],
                               stdout=subprocess.PIPE, text=True, env=child_env())
        for _ in range(4):  # (the generator's plug starts meanwhile: say it a few times)
            time.sleep(0.15)
            sink.stdin.write(hello)
            sink.stdin.flush()
        frames, seconds = _count(sink.stdout.fileno(), size + 2, 1.0, duration + 10)
        out, _ = gen.communicate(timeout=30)
        sent = json.loads(out.strip().splitlines()[-1])["rate"]
        return (frames / seconds if seconds > 0 else 0.0), sent
    finally:
        for p in (sink, gen):
            if p is not None and p.poll() is None:
                kill_pid(p.pid)
                p.wait()


def section_vxvde(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    if shutil.which("vde_plug") is None:
        print("vxvde: Debian's vde_plug is not installed (apt-get install vdeplug): skipped")
        return {}
    grp = f"239.255.{200 + os.getpid() % 50}.{1 + os.getpid() % 250}"
    url = f"vxvde://{grp}/port={20000 + os.getpid() % 20000}/if=lo/bind=127.0.0.1"
    print(f"vxvde: two plugs on {url}")
    kinds = ["threadnet", "vde_plug"]
    runs: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    for rep in range(args.repeat):
        for kind in kinds:
            for size in args.sizes:
                fps, sent = measure_vxvde(kind, url, size, args.duration, args.python)
                runs[kind].setdefault(f"{size}", []).append(fps)
                print(f"  run {rep + 1}: {kind:<10} {size:>5} B  {fps / 1000:8.1f} kframes/s "
                      f"received ({sent / 1000:.1f} k/s written)", flush=True)
    out = {}
    for size in args.sizes:
        t = statistics.median(runs["threadnet"][f"{size}"])
        v = statistics.median(runs["vde_plug"][f"{size}"])
        out[f"vxvde {size} B frames (k/s)"] = {"threadnet": t / 1000, "peer": v / 1000,
                                                "ratio": t / v if v else float("nan")}
    return out


# -- the sections ------------------------------------------------------------------------
#: name -> function(args) returning {case: {"threadnet", "peer", "ratio"}}; other fabrics
#: add theirs here
SECTIONS: dict[str, Callable[[argparse.Namespace], dict[str, dict[str, float]]]] = {
    "vxvde": section_vxvde,
    "fst": section_fst,
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench fabric", description=__doc__.split("\n")[0])
    p.add_argument("--only", choices=sorted(SECTIONS), help="run one section (default: all)")
    p.add_argument("--repeat", type=int, default=3, help="runs per case (medians are reported)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    p.add_argument("--sizes", default="64,1514", help="frame sizes")
    p.add_argument("--python", default=sys.executable, help="interpreter for threadnet's side")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--role", choices=["gen"], help=argparse.SUPPRESS)
    p.add_argument("--kind", help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "gen":
        role_gen(args.kind, args.url, args.size, args.duration, args.python)
        return 0
    args.sizes = [int(s) for s in str(args.sizes).split(",")]
    print(f"interpreter: {interpreter()}")
    if args.python != sys.executable:
        print(f"threadnet's side runs on: {args.python}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    results: dict[str, dict[str, float]] = {}
    for name in ([args.only] if args.only else list(SECTIONS)):
        results.update(SECTIONS[name](args))
    print()
    print(f"{'case':<30} {'threadnet':>10} {'peer':>10} {'ratio':>7}")
    for case, r in results.items():
        print(f"{case:<30} {r['threadnet']:>10.1f} {r['peer']:>10.1f} {r['ratio']:>7.2f}")
    print(f"(medians of {args.repeat} runs; ratio = threadnet / real peer; interpreter above)")
    if args.json:
        print(json.dumps({"interpreter": interpreter(), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
