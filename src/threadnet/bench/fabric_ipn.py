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

    python -m threadnet.bench.fabric_ipn [--duration S] [--size BYTES]
    (run_ipn(python) is what ``threadnet bench fabric --only ipn`` calls)
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


def role_tx(kind: str, where: str, size: int, duration: float) -> None:
    frame = _frame(size)
    if kind == "ipn":
        from threadnet.ipn import Member

        m = Member(where)
        deadline = time.monotonic() + 20
        while len(m.members()) < MEMBERS and time.monotonic() < deadline:
            time.sleep(0.01)
        batch = int(os.environ.get("IPN_BATCH", "8"))
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
            hub_pid: int | None = None) -> dict:
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
                                           "--size", str(size), "--duration", str(duration)],
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


def run_ipn(python: str, duration: float = 2.0, size: int = 100) -> dict[str, dict]:
    """Run every configuration once and print one line each (and the ratios)."""
    from threadnet.ipn import BusConfig, create_bus, remove_bus

    print(f"IPN broadcast to {MEMBERS} members, {size}-byte messages, {duration:g} s each "
          f"(sender and receivers: {python})")
    results: dict[str, dict] = {}
    workdir = tempfile.mkdtemp(prefix="tnb-ipn-", dir="/tmp")
    try:
        for lossless in (True, False):
            name = f"ipn {'lossless' if lossless else 'lossy'}"
            bus = create_bus(os.path.join(workdir, "bus" + name[-5:]),
                             BusConfig(policy="broadcast", lossless=lossless))
            try:
                results[name] = measure("ipn", bus, python, size, duration)
            finally:
                remove_bus(bus)
            _line(name, results[name])
        hubs = ["threadnet"] + (["vde_switch"] if shutil.which("vde_switch") else [])
        for hub in hubs:
            url, pid = _hub(hub, workdir, python)
            try:
                name = f"{hub} -x (dispatcher)"
                results[name] = measure("vde", url, python, size, duration, pid)
                _line(name, results[name])
            finally:
                kill_pid(pid)
        if "vde_switch" not in hubs:
            print("  (vde_switch not installed: apt-get install vde2)")
        for ipn in ("ipn lossless", "ipn lossy"):
            mine = results[ipn]
            ratios = [f"{mine['rate'] / r['rate']:.2f}x the rate, "
                      f"{r['cpu_us'] / mine['cpu_us']:.2f}x less CPU than {n.split()[0]}"
                      for n, r in results.items() if not n.startswith("ipn") and r["rate"]]
            print(f"  {ipn}: " + "; ".join(ratios))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return results


def _line(name: str, r: dict) -> None:
    print(f"  {name:28s} {r['rate']:>8,.0f} msg/s delivered per member  "
          f"lost {r['lost'] * 100:5.1f}%  fan-out CPU {r['cpu_us']:5.1f} us/msg  "
          f"(sent {r['sent']:,})", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench fabric_ipn")
    p.add_argument("--role", choices=["rx", "tx"])
    p.add_argument("--kind", choices=["ipn", "vde"])
    p.add_argument("--where")
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--duration", type=float, default=2.0)
    args = p.parse_args(argv)
    if args.role == "rx":
        role_rx(args.kind, args.where)
        return 0
    if args.role == "tx":
        role_tx(args.kind, args.where, args.size, args.duration)
        return 0
    print(f"interpreter: {interpreter()}")
    run_ipn(sys.executable, args.duration, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
