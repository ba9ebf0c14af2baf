"""``threadnet bench views``: a supervised program against the in-process hook.

One process hosts two stacks, A and B, joined by an in-process pair link; A is published
at a path and B serves a byte source, an echo and an HTTP/1.0 file. The same client
program (plain ``socket`` code, no threadnet) then runs on A twice per round:

- *hook*: ``threadnet run``'s in-process path (the sitecustomize hook, RemoteSocket);
- *seccomp*: the general path (``threadnet run --seccomp``): its real socket calls are
  trapped and served by the supervisor (threadnet.views).

Measured: bulk TCP download (Mbit/s), connections per second (connect, 1 byte each way,
close), and the cost of one emulated call (µs per ``getsockname``, which the hook answers
from a cache). Also ``curl`` (supervised) against ``urllib`` (hook) downloading over HTTP.
Targets (issue 12): bulk ratio >= 0.9, connections ratio >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from threadnet.bench import child_env, interpreter

SOURCE, ECHO, HTTP = 5001, 5002, 80
SERVER = "10.78.0.2"


def client(mode: str, amount: int) -> float:
    """The client program's measurement (run in the child, on its default network)."""
    if mode == "bulk":
        with socket.create_connection((SERVER, SOURCE)) as s:
            s.sendall(str(amount).encode() + b"\n")
            t0 = time.perf_counter()
            got = 0
            while d := s.recv(1 << 20):
                got += len(d)
            dt = time.perf_counter() - t0
        assert got == amount, (got, amount)
        return amount * 8 / dt / 1e6
    if mode == "conn":
        t0 = time.perf_counter()
        for _ in range(amount):
            with socket.create_connection((SERVER, ECHO)) as s:
                s.sendall(b"x")
                if not s.recv(1):
                    raise ConnectionError("echo closed")
        return amount / (time.perf_counter() - t0)
    if mode == "call":
        with socket.create_connection((SERVER, ECHO)) as s:
            t0 = time.perf_counter()
            for _ in range(amount):
                s.getsockname()
            return (time.perf_counter() - t0) / amount * 1e6
    if mode == "http":
        import urllib.request

        t0 = time.perf_counter()
        with urllib.request.urlopen(f"http://{SERVER}/{amount}") as r:
            got = 0
            while d := r.read(1 << 20):
                got += len(d)
        assert got == amount, (got, amount)
        return amount * 8 / (time.perf_counter() - t0) / 1e6
    raise ValueError(mode)


def _serve(b: Any) -> list[socket.socket]:
    from threadnet.stack.socket import create_server

    block = bytes(1 << 20)

    def send_n(c: socket.socket, n: int) -> None:
        while n > 0:
            n -= c.send(block[:min(n, len(block))])

    def source(c: socket.socket) -> None:
        with c:
            line = b""
            while not line.endswith(b"\n"):
                d = c.recv(64)
                if not d:
                    return
                line += d
            send_n(c, int(line))

    def echo(c: socket.socket) -> None:
        with c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while d := c.recv(65536):
                c.sendall(d)

    def http(c: socket.socket) -> None:
        with c:
            req = b""
            while b"\r\n\r\n" not in req:
                d = c.recv(4096)
                if not d:
                    return
                req += d
            n = int(req.split()[1].lstrip(b"/") or b"0")
            c.sendall(b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % n)
            send_n(c, n)

    listeners = []
    for port, handler in ((SOURCE, source), (ECHO, echo), (HTTP, http)):
        listener = create_server(b, ("", port), backlog=256)
        listeners.append(listener)

        def acceptor(listener: socket.socket = listener, handler: Any = handler) -> None:
            while True:
                try:
                    c, _ = listener.accept()
                except OSError:
                    return
                threading.Thread(target=handler, args=(c,), daemon=True).start()

        threading.Thread(target=acceptor, daemon=True).start()
    return listeners


def _hooked(python: str, path: str, mode: str, amount: int) -> float:
    """The client on the in-process hook (``threadnet run`` of a Python program)."""
    from threadnet.cli import run_environment

    cmd = [python, "-m", "threadnet.bench.views", "--role", "client", "--mode", mode,
           "--amount", str(amount)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env=run_environment(path, child_env()))
    if out.returncode != 0:
        raise RuntimeError(f"hook client failed: {out.stderr.strip()}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rate"])


def _supervised(python: str, path: str, mode: str, amount: int) -> float:
    """The same client under the supervisor (``threadnet run --seccomp``)."""
    cmd = [python, "-m", "threadnet", "run", "--seccomp", "--stack", path, "--", python, "-m",
           "threadnet.bench.views", "--role", "client", "--mode", mode, "--amount", str(amount)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())
    if out.returncode != 0:
        raise RuntimeError(f"supervised client failed: {out.stderr.strip()}")
    return float(json.loads(out.stdout.strip().splitlines()[-1])["rate"])


def _curl(python: str, path: str, amount: int) -> float:
    cmd = [python, "-m", "threadnet", "run", "--stack", path, "--", "curl", "-s", "-o",
           "/dev/null", "-w", "%{speed_download}", f"http://{SERVER}/{amount}"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=child_env())
    if out.returncode != 0:
        raise RuntimeError(f"supervised curl failed: {out.stderr.strip()}")
    return float(out.stdout.strip().replace(",", ".")) * 8 / 1e6


def measure(python: str, repeat: int, mbytes: int, conns: int, calls: int) -> dict:
    from threadnet.link.pair import open_pair
    from threadnet.stack.api import Stack

    la, lb = open_pair(max_frame=65000 + 18)
    a = Stack("eth,ip=10.78.0.1/24", link=la, name="A")
    b = Stack(f"eth,ip={SERVER}/24", link=lb, name="B")
    listeners = _serve(b)
    work = tempfile.mkdtemp(prefix="tnbv-", dir="/tmp")
    path = os.path.join(work, "stackA")
    a.publish(path, mode=0o600)
    runs: dict[str, dict[str, list[float]]] = {}
    plan = [("bulk", mbytes << 20, "Mbit/s"), ("conn", conns, "connections/s"),
            ("call", calls, "µs per getsockname")]
    has_curl = shutil.which("curl") is not None
    try:
        for rep in range(repeat):
            for mode, amount, unit in plan:
                hook = _hooked(python, path, mode, amount)
                sec = _supervised(python, path, mode, amount)
                r = runs.setdefault(mode, {"hook": [], "seccomp": []})
                r["hook"].append(hook)
                r["seccomp"].append(sec)
                print(f"  run {rep + 1} {mode:5}: hook {hook:10.1f}  seccomp {sec:10.1f} {unit}",
                      flush=True)
            if has_curl:
                hook = _hooked(python, path, "http", mbytes << 20)
                sec = _curl(python, path, mbytes << 20)
                r = runs.setdefault("http", {"hook": [], "seccomp": []})
                r["hook"].append(hook)
                r["seccomp"].append(sec)
                print(f"  run {rep + 1} http : urllib (hook) {hook:10.1f}  curl (seccomp) "
                      f"{sec:10.1f} Mbit/s", flush=True)
    finally:
        for listener in listeners:
            listener.close()
        a.close()
        b.close()
        shutil.rmtree(work, ignore_errors=True)
    units = {m: u for m, _, u in plan} | {"http": "Mbit/s"}
    summary = {}
    for mode, r in runs.items():
        hook, sec = statistics.median(r["hook"]), statistics.median(r["seccomp"])
        summary[mode] = {"unit": units[mode], "hook": hook, "seccomp": sec,
                         "ratio": sec / hook, "runs": r}
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench views", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--mbytes", type=int, default=64, help="megabytes per download")
    p.add_argument("--conns", type=int, default=200, help="connections per run")
    p.add_argument("--calls", type=int, default=2000, help="getsockname calls per run")
    p.add_argument("--python", default=sys.executable, help="interpreter of the clients")
    p.add_argument("--json", action="store_true", help="print the summary as JSON too")
    p.add_argument("--role", choices=["client"], help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--amount", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "client":
        print(json.dumps({"rate": client(args.mode, args.amount)}), flush=True)
        return 0
    print(f"interpreter: {interpreter()}; the clients: {args.python}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    summary = measure(args.python, args.repeat, args.mbytes, args.conns, args.calls)
    print(f"medians of {args.repeat} (seccomp / hook; targets: bulk >= 0.9, conn >= 0.5):")
    for mode, s in summary.items():
        print(f"  {mode:5} hook {s['hook']:10.1f}  seccomp {s['seccomp']:10.1f} "
              f"{s['unit']:20} ratio {s['ratio']:.2f}")
    if args.json:
        print(json.dumps({"interpreter": interpreter(), "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
