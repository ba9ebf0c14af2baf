"""``threadnet bench slirp``: iperf3 from a namespace through threadnet's slirp to the host,
both directions, side by side with Debian's ``slirp4netns`` (libslirp, C) and ``pasta``
(passt's namespace mode, C; skipped with a reason when it is missing or cannot run) on the
same setup (a tap in a namespace, the host's iperf3 server reached at 10.0.2.2, its
loopback), at MTU 1500 and 65520, and connections per second (connect, 16 bytes each way, close)
to a host echo server. threadnet runs on a plain tap and on ``tap://IF[offload]`` (the
kernel's TSO and checksum offloads). Needs root (namespaces).

    threadnet bench slirp [--time S] [--mtu 1500 --mtu 65520] [--no-offload] [--no-pasta]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from threadnet.bench import child_env, interpreter, kill_pid

PORT = 5211


def _run(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def _ns(name: str, *cmd: str, **kw) -> subprocess.CompletedProcess:
    return _run("ip", "netns", "exec", name, *cmd, **kw)


def _wait(pred, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _iperf(ns: str, seconds: float, reverse: bool) -> float:
    """Mbit/s of one iperf3 run from namespace ``ns`` to 10.0.2.2:PORT."""
    args = ["iperf3", "-c", "10.0.2.2", "-p", str(PORT), "-t", str(seconds), "-J"]
    if reverse:
        args.append("-R")
    r = _ns(ns, *args, check=False, timeout=seconds + 60)
    try:
        data = json.loads(r.stdout)
        return data["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError):
        sys.stderr.write(f"iperf3 failed: {r.stdout[-500:]} {r.stderr[-500:]}\n")
        return 0.0


#: connections per second from the namespace: connect, a 16-byte request, its echo, close
CONN_CLIENT = """
import socket, sys, time
port, seconds = int(sys.argv[1]), float(sys.argv[2])
n, end = 0, time.monotonic() + seconds
while time.monotonic() < end:
    with socket.create_connection(("10.0.2.2", port), timeout=10) as c:
        c.sendall(b"x" * 16)
        c.recv(16)
    n += 1
print(n / seconds)
"""


def _echo_server() -> tuple[object, int]:
    import socketserver
    import threading

    class Echo(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            self.request.sendall(self.request.recv(16))

    class Server(socketserver.ThreadingTCPServer):
        daemon_threads = True
        allow_reuse_address = True
        request_queue_size = 128

    srv = Server(("127.0.0.1", 0), Echo)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, srv.server_address[1]


def _conns(ns: str, port: int, seconds: float) -> float:
    r = _ns(ns, sys.executable, "-c", CONN_CLIENT, str(port), str(seconds), check=False,
            timeout=seconds + 60)
    try:
        return float(r.stdout.strip())
    except ValueError:
        sys.stderr.write(f"conn/s client failed: {r.stderr[-500:]}\n")
        return 0.0


def _threadnet(ns: str, mtu: int, offload: bool, tmp: str) -> int:
    url = "tap://tn0[offload]" if offload else "tap://tn0"
    pidfile = os.path.join(tmp, f"slirp-{ns}.pid")
    subprocess.run([sys.executable, "-m", "threadnet", "slirp", "--netns", f"/run/netns/{ns}",
                    "--no-dhcp", "--no-ipv6", "--mtu", str(mtu), url, "-d", "-p", pidfile],
                   check=True, env=child_env(), timeout=30)
    with open(pidfile) as f:
        pid = int(f.read())
    _wait(lambda: _ns(ns, "ip", "link", "show", "tn0", check=False).returncode == 0)
    _ns(ns, "ip", "link", "set", "tn0", "mtu", str(mtu))
    _ns(ns, "ip", "addr", "add", "10.0.2.100/24", "dev", "tn0")
    _ns(ns, "ip", "link", "set", "tn0", "up")
    _ns(ns, "ip", "route", "add", "default", "via", "10.0.2.2")
    return pid


def _slirp4netns(ns: str, mtu: int) -> tuple[subprocess.Popen, subprocess.Popen]:
    holder = subprocess.Popen(["ip", "netns", "exec", ns, "sleep", "3600"])
    time.sleep(0.2)
    s = subprocess.Popen(["slirp4netns", "--configure", f"--mtu={mtu}", "--disable-dns",
                          str(holder.pid), "tap0"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    _wait(lambda: "10.0.2.100" in _ns(ns, "ip", "-4", "addr", "show", "tap0",
                                      check=False).stdout)
    return holder, s


def _pasta(ns: str, mtu: int, tmp: str) -> int:
    """pasta on namespace ``ns``: a tap with 10.0.2.100/24, the gateway 10.0.2.2 leading to
    the host's loopback (pasta's default gateway mapping), no port forwards. Its PID."""
    pidfile = os.path.join(tmp, f"pasta-{ns}.pid")
    # as root it would drop to nobody, who cannot enter the namespace: stay root
    r = _run("pasta", "--config-net", "-a", "10.0.2.100", "-n", "24", "-g", "10.0.2.2",
             "-m", str(mtu), "-t", "none", "-u", "none", "-T", "none", "-U", "none",
             "-I", "tap0", "-q", "--runas", "0", "-P", pidfile, "--netns", ns,
             check=False, timeout=30)
    if r.returncode != 0 or not _wait(lambda: os.path.exists(pidfile) and
                                      os.path.getsize(pidfile) > 0):
        raise RuntimeError(f"pasta failed ({r.returncode}): {r.stderr.strip()[-300:]}")
    with open(pidfile) as f:
        pid = int(f.read())
    _ns(ns, "ip", "link", "set", "tap0", "mtu", str(mtu), check=False)
    return pid


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench slirp")
    p.add_argument("--time", type=float, default=5.0, help="seconds per iperf3 run")
    p.add_argument("--mtu", type=int, action="append", help="MTUs (default 1500, 65520)")
    p.add_argument("--no-offload", action="store_true", help="skip the tap[offload] runs")
    p.add_argument("--no-pasta", action="store_true", help="skip pasta")
    p.add_argument("--only", action="append",
                   help="run only these (slirp4netns, pasta, threadnet, threadnet[offload])")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("threadnet bench slirp: needs root (namespaces and taps)", file=sys.stderr)
        return 2
    for tool in ("iperf3", "slirp4netns", "ip"):
        if shutil.which(tool) is None:
            print(f"threadnet bench slirp: {tool} is not installed", file=sys.stderr)
            return 2
    mtus = args.mtu or [1500, 65520]
    print(f"interpreter: {interpreter()}")
    print(f"load: {os.getloadavg()[0]:.2f}; iperf3 {args.time:g} s per run, namespace -> "
          "host (up) and host -> namespace (down, -R), Mbit/s")
    tmp = tempfile.mkdtemp(prefix="tn-bslirp-")
    server = subprocess.Popen(["iperf3", "-s", "-B", "127.0.0.1", "-p", str(PORT)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    echo, echo_port = _echo_server()
    time.sleep(0.3)
    kinds: list[tuple[str, bool | str | None]] = [("slirp4netns", None)]
    if args.no_pasta:
        pass
    elif shutil.which("pasta") is None:
        print("pasta: skipped (not installed; Debian's package is passt)")
    else:
        kinds.append(("pasta", "pasta"))
    kinds.append(("threadnet", False))
    if not args.no_offload:
        kinds.append(("threadnet[offload]", True))
    if args.only:
        kinds = [k for k in kinds if k[0] in args.only]
    rows = []
    try:
        for mtu in mtus:
            results: dict[str, tuple[float, float, float]] = {}
            for kind, offload in kinds:
                ns = f"tnbs{os.getpid()}{len(rows)}{len(results)}"
                _run("ip", "netns", "add", ns)
                _ns(ns, "ip", "link", "set", "lo", "up")
                procs: list[subprocess.Popen] = []
                pid = None
                try:
                    if offload is None:
                        procs = list(_slirp4netns(ns, mtu))
                    elif offload == "pasta":
                        try:
                            pid = _pasta(ns, mtu, tmp)
                        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                            print(f"MTU {mtu:5d}  pasta: skipped ({exc})", flush=True)
                            continue
                    else:
                        pid = _threadnet(ns, mtu, bool(offload), tmp)
                    up = _iperf(ns, args.time, False)
                    down = _iperf(ns, args.time, True)
                    cps = _conns(ns, echo_port, min(args.time, 3.0))
                finally:
                    if pid is not None:
                        kill_pid(pid)
                    for pr in reversed(procs):
                        kill_pid(pr.pid)
                        pr.wait(5)
                    _run("ip", "netns", "del", ns, check=False)
                results[kind] = (up, down, cps)
                print(f"MTU {mtu:5d}  {kind:20s} up {up:8.0f}  down {down:8.0f}  "
                      f"conn/s {cps:6.0f}", flush=True)
            ref = results.get("slirp4netns")
            for kind, (up, down, cps) in results.items() if ref else ():
                if kind == "slirp4netns":
                    continue
                ru = up / ref[0] if ref[0] else 0.0
                rd = down / ref[1] if ref[1] else 0.0
                rc = cps / ref[2] if ref[2] else 0.0
                print(f"MTU {mtu:5d}  {kind:20s} / slirp4netns: up {ru:.2f}x  down {rd:.2f}x  "
                      f"conn/s {rc:.2f}x")
            rows.append((mtu, results))
    finally:
        kill_pid(server.pid)
        server.wait(5)
        echo.shutdown()  # type: ignore[attr-defined]
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
