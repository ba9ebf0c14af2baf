"""``threadnet bench ioth``: the cost of using a stack from another process.

One process hosts two stacks, A and B, joined by an in-process pair link; B serves a
sink, an echo and a connect/close service. The same client code then runs twice per
round, side by side:

- *in-process*: a thread of the hosting process, on ``A.socket()``;
- *cross-process*: another process, on ``threadnet.msocket(PATH)``, where A is published
  at PATH (the socket's descriptor passed over SCM_RIGHTS, calls over a control channel).

Measured: bulk TCP throughput (A to B), request/response transactions per second over one
connection (1 byte each way), and connections per second (connect, 1 byte each way,
close). Each figure is printed with the ratio cross-process / in-process; the target is
a cross-process path costing at most 20 % (ratio >= 0.8).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from threadnet.bench import child_env, interpreter

SINK, ECHO = 5001, 5002
SERVER = "10.77.0.2"


# -- the client side: the same code in both places --------------------------------------------------
def client(open_socket: Any, mode: str, amount: int) -> float:
    """Run one measurement with sockets from ``open_socket()``; returns its rate."""
    if mode == "bulk":
        block = bytes(1 << 20)
        with open_socket() as s:
            s.connect((SERVER, SINK))
            t0 = time.perf_counter()
            left = amount
            while left > 0:
                s.sendall(block[:min(left, len(block))])
                left -= len(block)
            s.shutdown(socket.SHUT_WR)
            got = int(s.recv(64).decode())
            dt = time.perf_counter() - t0
        assert got == amount, (got, amount)
        return amount * 8 / dt / 1e6  # Mbit/s
    if mode == "rr":
        with open_socket() as s:
            s.connect((SERVER, ECHO))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            t0 = time.perf_counter()
            for _ in range(amount):
                s.sendall(b"x")
                if not s.recv(1):
                    raise ConnectionError("echo closed")
            return amount / (time.perf_counter() - t0)
    if mode == "conn":
        t0 = time.perf_counter()
        for _ in range(amount):
            with open_socket() as s:
                s.connect((SERVER, ECHO))
                s.sendall(b"x")
                if not s.recv(1):
                    raise ConnectionError("echo closed")
        return amount / (time.perf_counter() - t0)
    raise ValueError(mode)


def role_client(path: str, mode: str, amount: int) -> None:
    import threadnet

    rate = client(lambda: threadnet.msocket(path, socket.AF_INET, socket.SOCK_STREAM), mode, amount)
    print(json.dumps({"rate": rate}), flush=True)


# -- the hosting process ---------------------------------------------------------------------------------
def _serve(b: Any) -> list[socket.socket]:
    from threadnet.stack.socket import create_server

    sink = create_server(b, ("", SINK), backlog=64)
    echo = create_server(b, ("", ECHO), backlog=256)

    def sink_conn(c: socket.socket) -> None:
        with c:
            n = 0
            while d := c.recv(1 << 20):
                n += len(d)
            c.sendall(str(n).encode())

    def echo_conn(c: socket.socket) -> None:
        with c:
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            while d := c.recv(65536):
                c.sendall(d)

    def acceptor(listener: socket.socket, handler: Any) -> None:
        while True:
            try:
                c, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=handler, args=(c,), daemon=True).start()

    for listener, handler in ((sink, sink_conn), (echo, echo_conn)):
        threading.Thread(target=acceptor, args=(listener, handler), daemon=True).start()
    return [sink, echo]


def measure(python: str, repeat: int, mbytes: int, rr: int, conns: int, mtu: int) -> dict:
    from threadnet.link.pair import open_pair
    from threadnet.stack.api import Stack

    la, lb = open_pair(max_frame=mtu + 18)
    a = Stack("eth,ip=10.77.0.1/24", link=la, name="A")
    b = Stack(f"eth,ip={SERVER}/24", link=lb, name="B")
    listeners = _serve(b)
    work = tempfile.mkdtemp(prefix="tnbi-", dir="/tmp")
    path = os.path.join(work, "stackA")
    a.publish(path, mode=0o600)
    results: dict[str, dict[str, list[float]]] = {}
    amounts = {"bulk": mbytes << 20, "rr": rr, "conn": conns}
    units = {"bulk": "Mbit/s", "rr": "transactions/s", "conn": "connections/s"}
    try:
        client(a.socket, "rr", 50)  # warm up: ARP, code paths
        for rep in range(repeat):
            for mode, amount in amounts.items():
                here = client(a.socket, mode, amount)
                out = subprocess.run([python, "-m", "threadnet.bench.ioth", "--role", "client",
                                      "--path", path, "--mode", mode, "--amount", str(amount)],
                                     capture_output=True, text=True, env=child_env(), timeout=600)
                if out.returncode != 0:
                    raise RuntimeError(f"cross-process client failed: {out.stderr.strip()}")
                there = json.loads(out.stdout.strip().splitlines()[-1])["rate"]
                r = results.setdefault(mode, {"in-process": [], "cross-process": []})
                r["in-process"].append(here)
                r["cross-process"].append(there)
                print(f"  run {rep + 1} {mode:5}: in-process {here:10.1f}  cross-process "
                      f"{there:10.1f} {units[mode]}  ratio {there / here:.2f}", flush=True)
    finally:
        for listener in listeners:
            listener.close()
        a.close()
        b.close()
        try:
            os.rmdir(work)
        except OSError:
            pass
    summary = {}
    for mode, r in results.items():
        here, there = statistics.median(r["in-process"]), statistics.median(r["cross-process"])
        summary[mode] = {"unit": units[mode], "in-process": here, "cross-process": there,
                         "ratio": there / here, "runs": r}
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench ioth", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--mbytes", type=int, default=64, help="megabytes per bulk transfer")
    p.add_argument("--rr", type=int, default=2000, help="transactions per request/response run")
    p.add_argument("--conns", type=int, default=200, help="connections per connect/close run")
    p.add_argument("--mtu", type=int, default=65000, help="MTU of the pair link between A and B")
    p.add_argument("--python", default=sys.executable, help="interpreter of the other process")
    p.add_argument("--json", action="store_true", help="print the summary as JSON too")
    p.add_argument("--role", choices=["client"], help=argparse.SUPPRESS)
    p.add_argument("--path", help=argparse.SUPPRESS)
    p.add_argument("--mode", help=argparse.SUPPRESS)
    p.add_argument("--amount", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "client":
        role_client(args.path, args.mode, args.amount)
        return 0
    print(f"interpreter: {interpreter()}; the other process: {args.python}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    summary = measure(args.python, args.repeat, args.mbytes, args.rr, args.conns, args.mtu)
    print(f"medians of {args.repeat} (cross-process / in-process; target >= 0.80):")
    for mode, s in summary.items():
        print(f"  {mode:5} in-process {s['in-process']:10.1f}  cross-process "
              f"{s['cross-process']:10.1f} {s['unit']:15} ratio {s['ratio']:.2f}")
    if args.json:
        print(json.dumps({"interpreter": interpreter(), "results": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
