"""The IPN part of ``threadnet bench fabric``: broadcast to 8 members with no dispatcher,
against the same through a dispatcher process (threadnet's switch and Debian's
``vde_switch``, both in hub mode).

One sender and 8 receivers, each a process of its own. On an IPN bus the sender writes
each message into the 8 members' sockets itself (``Member.send``: one ``sendmmsg``);
through a hub it sends each frame to the hub's port and the hub copies it to the 8
other ports. The sender sends for ``duration`` seconds; every receiver counts what
reaches it with ``recvmmsg``. The figure is messages delivered per second to each
member (the mean over the 8, over the sender's time), and the share lost.

A lossless bus makes the sender wait for the slowest member (nothing lost); a lossy one
and the hubs drop at full queues. The hubs' sender has the advantage of sending 64
frames per system call (``sendmmsg``, blocking: a busy hub slows it down); the IPN
sender calls ``Member.send`` once per message.

    python -m threadnet.bench.fabric_ipn [--duration S] [--size BYTES] [--repeat N]
    threadnet bench fabric --only ipn [--repeat N] [--duration S]   (section_ipn)
"""

from __future__ import annotations

import argparse
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

from threadnet.bench import child_env, interpreter, kill_pid

MEMBERS = 8
#: what systemd's sysctl.d/50-default.conf sets (the kernel's default is 10)
SYSTEMD_QLEN = 512
SRC_MAC = bytes.fromhex("02000000fa01")


def _frame(size: int) -> bytes:
    return b"\xff" * 6 + SRC_MAC + b"\x88\xb5" + bytes(max(0, size - 14))


# -- roles (child processes) -----------------------------------------------------------
def role_rx(kind: str, where: str) -> None:
    from threadnet import mmsg

    if kind == "ipn":
        from threadnet.ipn import Member

        m = Member(where)
        fd = m.fileno()
        keep: object = m
    else:
        from threadnet.link import open_link

        link = open_link(where, description="bench-rx")
        fd = link.fileno()
        keep = link
    os.set_blocking(fd, False)
    batch = mmsg.RecvBatch(64, 2048)
    print("ready", flush=True)
    count = 0
    started = False
    while True:
        if not select.select([fd], [], [], 2.0 if started else 60.0)[0]:
            break  # the sender has stopped
        n = batch.recv(fd)
        for i in range(n):
            if batch.slots[i][6:12] == SRC_MAC:
                count += 1
        started = started or count > 0
    print(json.dumps({"received": count}), flush=True)
    keep.close()  # type: ignore[attr-defined]


def role_tx(kind: str, where: str, size: int, duration: float, batch: int) -> None:
    frame = _frame(size)
    if kind == "ipn":
        from threadnet.ipn import Member

        m = Member(where)
        deadline = time.monotonic() + 20
        while len(m.members()) < MEMBERS and time.monotonic() < deadline:
            time.sleep(0.01)
        msgs = [frame] * batch
        send_many = m.send_many
        sent = 0
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        end = t0 + duration
        while time.perf_counter() < end:
            for _ in range(8):
                send_many(msgs)
            sent += 8 * batch
        took = time.perf_counter() - t0
        c = m.counters
        print(json.dumps({"sent": sent, "seconds": took, "waits": c[3], "dropped": c[2],
                          "cpu": time.process_time() - cpu0}), flush=True)
        m.close()
        return
    import ctypes

    from threadnet import mmsg
    from threadnet.link import open_link

    link = open_link(where, description="bench-tx")
    fd = link.fileno()
    os.set_blocking(fd, True)
    buf = ctypes.create_string_buffer(frame, len(frame))
    q = mmsg.SendQueue(64)
    sent = 0
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    end = t0 + duration
    while time.perf_counter() < end:
        for _ in range(64):
            q.add(ctypes.addressof(buf), len(frame))
        sent += q.send_blocking(fd)
    took = time.perf_counter() - t0
    print(json.dumps({"sent": sent, "seconds": took, "cpu": time.process_time() - cpu0}),
          flush=True)
    link.close()


# -- orchestration -----------------------------------------------------------------------
def _me(python: str) -> list[str]:
    return [python, "-m", "threadnet.bench.fabric_ipn"]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(kind: str, where: str, python: str, size: int, duration: float,
            hub_pid: int | None = None, batch: int = 8) -> dict:
    """One run: ``kind`` "ipn" (``where`` a bus) or "vde" (a hub's URL, the hub's
    process ``hub_pid``)."""
    rxs = []
    try:
        for _ in range(MEMBERS):
            p = subprocess.Popen(_me(python) + ["--role", "rx", "--kind", kind, "--where", where],
                                 stdout=subprocess.PIPE, text=True, env=child_env())
            rxs.append(p)
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a receiver on {where} did not start")
        hub0 = cpu_seconds(hub_pid) if hub_pid else 0.0
        tx = subprocess.run(_me(python) + ["--role", "tx", "--kind", kind, "--where", where,
                                           "--size", str(size), "--duration", str(duration),
                                           "--batch", str(batch)],
                            capture_output=True, text=True, env=child_env(),
                            timeout=duration + 60)
        if tx.returncode != 0:
            raise RuntimeError(f"the sender failed: {tx.stderr.strip()[-300:]}")
        sent = json.loads(tx.stdout.strip().splitlines()[-1])
        hub_cpu = cpu_seconds(hub_pid) - hub0 if hub_pid else 0.0
        received = []
        for p in rxs:
            out, _ = p.communicate(timeout=30)
            received.append(json.loads(out.strip().splitlines()[-1])["received"])
        mean = sum(received) / len(received)
        return {"rate": mean / sent["seconds"], "sent": sent["sent"],
                # the CPU the fan-out cost: the sender's, and the dispatcher's
                "cpu_us": (sent["cpu"] + hub_cpu) / max(1, sent["sent"]) * 1e6,
                "lost": 1 - mean / sent["sent"] if sent["sent"] else 0.0,
                "min": min(received), "tx": sent}
    finally:
        for p in rxs:
            if p.poll() is None:
                p.kill()
                p.wait()


def _hub(kind: str, workdir: str, python: str) -> tuple[str, int]:
    d = os.path.join(workdir, kind)
    pidfile = d + ".pid"
    if kind == "threadnet":
        cmd = [python, "-m", "threadnet", "switch", "-x", "-s", d, "-d", "-p", pidfile]
    else:
        cmd = ["vde_switch", "-x", "-s", d, "-d", "-p", pidfile]
    subprocess.run(cmd, check=True, stdin=subprocess.DEVNULL, env=child_env())
    for _ in range(250):
        if os.path.exists(pidfile) and os.path.exists(os.path.join(d, "ctl")):
            break
        time.sleep(0.02)
    with open(pidfile) as f:
        return f"vde://{d}", int(f.read())


def _qlen() -> int:
    try:
        with open("/proc/sys/net/unix/max_dgram_qlen") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 10


def run_ipn(python: str, duration: float = 2.0, size: int = 100, repeat: int = 1,
            batch: int | None = None) -> dict[str, dict[str, dict]]:
    """Run every configuration ``repeat`` times, interleaved, and print one line each
    (medians when repeated) and the ratios. Where this machine's
    net.unix.max_dgram_qlen is the kernel's default (10, no systemd), and we are root,
    run it all again in a private network namespace with 512, as systemd sets it.
    Returns {"qlen N": {case: medians}} for each queue length measured."""
    results = {f"qlen {_qlen()}": _run_all(python, duration, size, repeat, batch)}
    if _qlen() < SYSTEMD_QLEN and os.geteuid() == 0 and shutil.which("unshare"):
        print(f"the same as on a systemd host (net.unix.max_dgram_qlen {SYSTEMD_QLEN}, in a "
              "private network namespace):", flush=True)
        cmd = ["unshare", "-n", "--", python, "-m", "threadnet.bench.fabric_ipn",
               "--private-qlen", str(SYSTEMD_QLEN),
               "--outer-netns", str(os.stat("/proc/self/ns/net").st_ino),
               "--duration", str(duration),
               "--size", str(size), "--repeat", str(repeat)]
        if batch:
            cmd += ["--batch", str(batch)]
        r = subprocess.run(cmd, env=child_env(), check=False, timeout=600 * repeat,
                           stdout=subprocess.PIPE, text=True)
        for line in r.stdout.splitlines():
            if line.startswith("{"):
                results[f"qlen {SYSTEMD_QLEN}"] = json.loads(line)
            else:
                print(line, flush=True)
    return results


def section_ipn(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """``threadnet bench fabric --only ipn``: its cases in ``bench fabric``'s form (here
    "threadnet" is the IPN bus and "peer" the dispatcher, both threadnet's switch and
    Debian's vde_switch in hub mode; a ratio above 1 means IPN delivers more)."""
    print(f"ipn: one sender, {MEMBERS} members, broadcast")
    out: dict[str, dict[str, float]] = {}
    for qlen, res in run_ipn(args.python, args.duration, 100, args.repeat).items():
        for delivery in ("lossless", "lossy"):
            mine = res.get(f"ipn {delivery}")
            for hub in ("threadnet", "vde_switch"):
                peer = res.get(f"{hub} -x (dispatcher)")
                if mine is None or peer is None:
                    continue
                short = "tn" if hub == "threadnet" else "vde"
                out[f"ipn {delivery}/{short} {qlen.replace('qlen ', 'q')} (k/s)"] = {
                    "threadnet": mine["rate"] / 1000, "peer": peer["rate"] / 1000,
                    "ratio": mine["rate"] / peer["rate"] if peer["rate"] else float("nan")}
    return out


def _run_all(python: str, duration: float, size: int, repeat: int,
             batch: int | None) -> dict[str, dict]:
    import statistics

    from threadnet.ipn import BusConfig, create_bus, remove_bus

    qlen = _qlen()
    if not batch:
        batch = 8 if qlen < 64 else 64  # a batch should fit in a member's queue
    print(f"IPN broadcast to {MEMBERS} members, {size}-byte messages, {duration:g} s each, "
          f"IPN sender batches of {batch} (send_many), net.unix.max_dgram_qlen {qlen} "
          f"(processes: {python})")
    runs: dict[str, list[dict]] = {}
    hubs = ["threadnet"] + (["vde_switch"] if shutil.which("vde_switch") else [])
    workdir = tempfile.mkdtemp(prefix="tnb-ipn-", dir="/tmp")
    try:
        for _ in range(repeat):
            for lossless in (True, False):
                name = f"ipn {'lossless' if lossless else 'lossy'}"
                bus = create_bus(os.path.join(workdir, "bus" + name[-5:]),
                                 BusConfig(policy="broadcast", lossless=lossless))
                try:
                    r = measure("ipn", bus, python, size, duration, batch=batch)
                finally:
                    remove_bus(bus)
                runs.setdefault(name, []).append(r)
                if repeat > 1:
                    _line(name, r, "  run: ")
            for hub in hubs:
                url, pid = _hub(hub, workdir, python)
                try:
                    name = f"{hub} -x (dispatcher)"
                    r = measure("vde", url, python, size, duration, pid)
                finally:
                    kill_pid(pid)
                runs.setdefault(name, []).append(r)
                if repeat > 1:
                    _line(name, r, "  run: ")
        if "vde_switch" not in hubs:
            print("  (vde_switch not installed: apt-get install vde2)")
        results = {name: {k: statistics.median(x[k] for x in rs)
                          for k in ("rate", "lost", "cpu_us", "sent")}
                   for name, rs in runs.items()}
        if repeat > 1:
            print(f"medians of {repeat} runs:")
        for name, r in results.items():
            _line(name, r)
        for ipn in ("ipn lossless", "ipn lossy"):
            mine = results[ipn]
            ratios = [f"{mine['rate'] / r['rate']:.2f}x the rate and "
                      f"{r['cpu_us'] / mine['cpu_us']:.2f}x less CPU than {n.split()[0]}"
                      for n, r in results.items() if not n.startswith("ipn") and r["rate"]]
            print(f"  {ipn}: " + "; ".join(ratios))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _line(name: str, r: dict, lead: str = "  ") -> None:
    print(f"{lead}{name:28s} {r['rate']:>8,.0f} msg/s delivered per member  "
          f"lost {r['lost'] * 100:5.1f}%  fan-out CPU {r['cpu_us']:5.1f} us/msg  "
          f"(sent {r['sent']:,})", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench fabric_ipn")
    p.add_argument("--role", choices=["rx", "tx"])
    p.add_argument("--kind", choices=["ipn", "vde"])
    p.add_argument("--where")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--duration", type=float, default=2.0)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--batch", type=int, help="IPN sender: messages per send_many (default: "
                   "8, or 64 where net.unix.max_dgram_qlen is 64 or more)")
    p.add_argument("--private-qlen", type=int, help=argparse.SUPPRESS)
    p.add_argument("--outer-netns", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "rx":
        role_rx(args.kind, args.where)
        return 0
    if args.role == "tx":
        role_tx(args.kind, args.where, args.size, args.duration, args.batch)
        return 0
    if args.private_qlen:
        # only in a network namespace of our own (unshare -n): never the host's setting
        if (args.outer_netns is None
                or os.stat("/proc/self/ns/net").st_ino == args.outer_netns):
            print("--private-qlen: not in a private network namespace", file=sys.stderr)
            return 2
        with open("/proc/sys/net/unix/max_dgram_qlen", "w") as f:
            f.write(str(args.private_qlen))
        results = _run_all(sys.executable, args.duration, args.size, args.repeat, args.batch)
        print(json.dumps(results), flush=True)  # (for run_ipn, which prints the rest)
        return 0
    print(f"interpreter: {interpreter()}")
    run_ipn(sys.executable, args.duration, args.size, args.repeat, args.batch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
