"""``threadnet bench switch``: frames/s through threadnet's switch and Debian's vde_switch.

Both switches get the same endpoints: a generator process and a sink process, each a
vde client on its own port. The sink announces its MAC first, so the switch learns it
and forwards the generator's unicast frames to the sink's port only. The generator
sends with blocking writes, so a slower switch slows it down instead of losing frames
at the sender; the figure is what reaches the sink, per second. Runs alternate between
the switches and the medians are compared.

With root, it also runs iperf3 TCP between two network namespaces whose taps are
attached to each switch by Debian's vde_plug2tap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from threadnet.bench import child_env, interpreter, kill_pid

SINK_MAC = bytes.fromhex("02000000bb01")
GEN_MAC = bytes.fromhex("02000000aa01")


def _frame(size: int, dst: bytes, src: bytes) -> bytes:
    return dst + src + b"\x88\xb5" + bytes(size - 14)


# -- the two endpoint roles, run as child processes ----------------------------------
def role_sink(url: str, duration: float) -> None:
    from threadnet import mmsg
    from threadnet.link import open_link

    link = open_link(url, description="bench-sink")
    sock = link._data  # type: ignore[attr-defined]  # raw socket: the sink must not be the bottleneck
    sock.setblocking(True)
    sock.send(_frame(64, b"\xff" * 6, SINK_MAC))
    print("ready", flush=True)
    batch = mmsg.RecvBatch(64, 2048) if mmsg.available() else None
    buf = bytearray(2048)
    count = 0
    first = last = 0.0
    deadline = None
    fd = sock.fileno()
    sock.settimeout(2.0)
    import select

    while True:
        if not select.select([fd], [], [], 2.0)[0]:
            break  # the generator has stopped
        if batch is not None:
            n = batch.recv(fd)
            got = sum(1 for i in range(n) if batch.slots[i][6:12] == GEN_MAC)
        else:
            n = sock.recv_into(buf)
            got = 1 if n >= 14 and buf[6:12] == GEN_MAC else 0
        if not got:
            continue
        now = time.perf_counter()
        if count == 0:
            first = now
            deadline = now + duration + 1.0
            got -= 1  # the rate counts frames after the first one's arrival
        count += got
        last = now
        if deadline is not None and now > deadline:
            break
    rate = count / (last - first) if count > 0 and last > first else 0.0
    print(json.dumps({"frames": count, "seconds": last - first, "rate": rate}), flush=True)
    link.close()


def role_gen(url: str, size: int, duration: float) -> None:
    from threadnet import mmsg
    from threadnet.link import open_link

    link = open_link(url, description="bench-gen")
    sock = link._data  # type: ignore[attr-defined]
    sock.setblocking(True)
    frame = _frame(size, SINK_MAC, GEN_MAC)
    sent = 0
    end = time.perf_counter() + duration
    if mmsg.available():
        # one blocking sendmmsg of 64 copies: the generator costs little CPU, and a full
        # switch queue makes it wait (back-pressure) instead of losing frames
        import ctypes

        buf = ctypes.create_string_buffer(frame, len(frame))
        q = mmsg.SendQueue(64)
        fd = sock.fileno()
        while time.perf_counter() < end:
            for _ in range(64):
                q.add(ctypes.addressof(buf), len(frame))
            sent += q.send_blocking(fd)
    else:
        send = sock.send
        while time.perf_counter() < end:
            for _ in range(256):
                send(frame)
            sent += 256
    print(json.dumps({"sent": sent}), flush=True)
    link.close()


# -- orchestration -------------------------------------------------------------------
class Switch:
    def __init__(self, kind: str, workdir: str, python: str) -> None:
        self.kind = kind
        self.dir = os.path.join(workdir, kind)
        pidfile = self.dir + ".pid"
        if kind.startswith("threadnet"):
            cmd = [python, "-m", "threadnet", "switch", "-s", self.dir, "-d", "-p", pidfile]
            if kind == "threadnet-nobatch":
                cmd.append("--no-batch")
        else:
            cmd = ["vde_switch", "-s", self.dir, "-d", "-p", pidfile]
        subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, env=child_env())
        for _ in range(200):
            if os.path.exists(pidfile) and os.path.exists(os.path.join(self.dir, "ctl")):
                break
            time.sleep(0.02)
        with open(pidfile) as f:
            self.pid = int(f.read())

    def stop(self) -> None:
        kill_pid(self.pid)






def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_fps(sw: Switch, size: int, duration: float, python: str) -> tuple[float, float]:
    """Frames/s reaching the sink, and the switch's CPU microseconds per forwarded frame."""
    me = [python, "-m", "threadnet.bench.switch"]
    url = f"vde://{sw.dir}"
    sink = subprocess.Popen(me + ["--role", "sink", "--url", url, "--duration", str(duration)],
                            stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert sink.stdout is not None
        if sink.stdout.readline().strip() != "ready":
            raise RuntimeError("sink did not start")
        cpu0 = cpu_seconds(sw.pid)
        gen = subprocess.run(me + ["--role", "gen", "--url", url, "--size", str(size),
                                   "--duration", str(duration)],
                             capture_output=True, text=True, env=child_env(), timeout=duration + 30)
        if gen.returncode != 0:
            raise RuntimeError(f"generator failed: {gen.stderr.strip()}")
        out, _ = sink.communicate(timeout=30)
        cpu = cpu_seconds(sw.pid) - cpu0
        result = json.loads(out.strip().splitlines()[-1])
        frames = max(result["frames"], 1)
        return result["rate"], cpu / frames * 1e6
    finally:
        if sink.poll() is None:
            sink.kill()
            sink.wait()


def measure_iperf(sw: Switch, seconds: int) -> float | None:
    """iperf3 TCP between two namespaces on the switch (root only); Mbit/s received."""
    if os.geteuid() != 0 or not all(shutil.which(t) for t in ("iperf3", "vde_plug2tap", "ip")):
        return None
    tag = f"tb{os.getpid() % 100000}"
    nss = [f"{tag}a", f"{tag}b"]
    pids: list[int] = []
    tmp = tempfile.mkdtemp(prefix="tnb-", dir="/tmp")
    try:
        for i, ns in enumerate(nss):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            ex = ["ip", "netns", "exec", ns]
            subprocess.run(ex + ["ip", "link", "set", "lo", "up"], check=True)
            subprocess.run(ex + ["ip", "tuntap", "add", "dev", "tbtap", "mode", "tap"], check=True)
            subprocess.run(ex + ["ip", "addr", "add", f"10.213.0.{i + 1}/24", "dev", "tbtap"], check=True)
            subprocess.run(ex + ["ip", "link", "set", "tbtap", "up"], check=True)
            pidfile = os.path.join(tmp, f"p2t{i}.pid")
            subprocess.run(ex + ["vde_plug2tap", "-s", sw.dir, "-d", "-P", pidfile, "tbtap"], check=True)
            for _ in range(100):
                if os.path.exists(pidfile):
                    break
                time.sleep(0.02)
            with open(pidfile) as f:
                pids.append(int(f.read()))
        ex_a = ["ip", "netns", "exec", nss[0]]
        ex_b = ["ip", "netns", "exec", nss[1]]
        subprocess.run(ex_a + ["ping", "-c", "2", "-i", "0.2", "-W", "2", "10.213.0.2"],
                       capture_output=True, timeout=10)
        spid = os.path.join(tmp, "iperf.pid")
        subprocess.run(ex_b + ["iperf3", "-s", "-1", "-D", "-I", spid], check=True)
        time.sleep(0.3)
        r = subprocess.run(ex_a + ["iperf3", "-c", "10.213.0.2", "-t", str(seconds), "-J"],
                           capture_output=True, text=True, timeout=seconds + 30)
        try:
            with open(spid) as f:
                pids.append(int(f.read()))
        except (OSError, ValueError):
            pass
        data = json.loads(r.stdout)
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    except (subprocess.SubprocessError, OSError, ValueError, KeyError):
        return None
    finally:
        for pid in pids:
            kill_pid(pid)
        for ns in nss:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench switch", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, help="runs per case (medians are reported)")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per frames/s run")
    p.add_argument("--sizes", default="64,1514", help="frame sizes")
    p.add_argument("--iperf", type=int, default=10, help="iperf3 seconds (0 = skip)")
    p.add_argument("--python", default=sys.executable, help="interpreter for threadnet and endpoints")
    p.add_argument("--json", action="store_true", help="print the results as JSON too")
    p.add_argument("--nobatch", action="store_true",
                   help="also measure threadnet without recvmmsg/sendmmsg batching")
    p.add_argument("--role", choices=["sink", "gen"], help=argparse.SUPPRESS)
    p.add_argument("--url", help=argparse.SUPPRESS)
    p.add_argument("--size", type=int, default=64, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "sink":
        role_sink(args.url, args.duration)
        return 0
    if args.role == "gen":
        role_gen(args.url, args.size, args.duration)
        return 0
    if shutil.which("vde_switch") is None:
        print("threadnet bench switch: Debian's vde_switch is not installed (apt-get install vde2)",
              file=sys.stderr)
        return 1
    print(f"interpreter: {interpreter()}")
    if args.python != sys.executable:
        print(f"switch and endpoints run on: {args.python}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    sizes = [int(s) for s in args.sizes.split(",")]
    work = tempfile.mkdtemp(prefix="tnb-", dir="/tmp")
    kinds = ["threadnet", "vde_switch"] + (["threadnet-nobatch"] if args.nobatch else [])
    results: dict[str, dict[str, list[float]]] = {k: {} for k in kinds}
    try:
        for rep in range(args.repeat):
            for kind in kinds:
                sw = Switch(kind, work, args.python)
                try:
                    for size in sizes:
                        fps, cpu = measure_fps(sw, size, args.duration, args.python)
                        results[kind].setdefault(f"fps{size}", []).append(fps)
                        results[kind].setdefault(f"cpu{size}", []).append(cpu)
                        print(f"  run {rep + 1}: {kind:<17} {size:>5} B  {fps / 1000:8.1f} kframes/s"
                              f"  {cpu:6.2f} CPU us/frame", flush=True)
                    if args.iperf:
                        mbps = measure_iperf(sw, args.iperf)
                        if mbps is not None:
                            results[kind].setdefault("iperf", []).append(mbps)
                            print(f"  run {rep + 1}: {kind:<10} iperf3 TCP {mbps:8.1f} Mbit/s", flush=True)
                finally:
                    sw.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    print(f"{'case':<22} {'threadnet':>14} {'vde_switch':>14} {'ratio':>7}")
    summary = {}
    for key in results["threadnet"]:
        t = statistics.median(results["threadnet"][key])
        v = statistics.median(results["vde_switch"].get(key, [0.0]))
        ratio = t / v if v else float("nan")
        if key == "iperf":
            label, unit, tv, vv = "iperf3 TCP (Mbit/s)", "", t, v
        elif key.startswith("cpu"):
            # lower is better: report vde_switch / threadnet so that > 1 means threadnet wins
            ratio = v / t if t else float("nan")
            label, unit, tv, vv = f"{key[3:]} B CPU us/frame", " (inverse)", t, v
        else:
            label, unit, tv, vv = f"{key[3:]} B frames (k/s)", "", t / 1000, v / 1000
        extra = ""
        if args.nobatch and key in results["threadnet-nobatch"]:
            nb = statistics.median(results["threadnet-nobatch"][key])
            extra = f"   (no batching: {nb / (1000 if key.startswith('fps') else 1):.1f})"
        print(f"{label:<22} {tv:>14.1f} {vv:>14.1f} {ratio:>7.2f}{unit}{extra}")
        summary[key] = {"threadnet": t, "vde_switch": v, "ratio": ratio}
    print(f"(medians of {args.repeat} runs; ratio = threadnet / vde_switch; interpreter above)")
    if args.json:
        print(json.dumps({"interpreter": interpreter(), "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
