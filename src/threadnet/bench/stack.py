"""``threadnet bench stack``: TCP throughput, connections/s and memory of threadnet stacks,
side by side with the kernel (veth between namespaces: the limit) in one run.

Cases:
- stack to stack over ``threadnet switch``, MTU 1500, each stack in its own process;
- stack to stack over an in-process pair link at MTU 64 KiB (one process);
- kernel to stack and stack to kernel through a tap (vde_plug2tap) on the switch (root);
- kernel to kernel over a veth pair between two namespaces (root): the reference;
- kernel to PyTCP and PyTCP to kernel, and the same with a threadnet stack in PyTCP's
  place, each peer on its own tap in a namespace (root; PyTCP is installed into a
  throwaway venv at run time, never imported here: it is GPL and runs as a separate
  process); printed as the ratio threadnet / PyTCP. threadnet runs twice: on a plain
  ``tap://`` and on ``tap://...[offload]`` (the kernel's TSO and checksum offloads);
- connections per second (handshake, a small request, close) between two stacks;
- small UDP ``sendto`` calls (64 bytes, one destination): microseconds per call on a
  stack whose link is ``null://`` (the neighbor entry static, so every datagram leaves),
  beside the kernel's (a UDP socket sending to a loopback port); ``--only udp-sendto``
  runs just this case;
- memory per idle stack.
Every figure is printed with its ratio to the kernel's veth figure where one exists.
``--filter FILE`` loads a packet filter ruleset (docs/filter.md) into every stack of the
stack-to-stack cases, and ``--only stack`` runs just those (switch, pair, conn/s): the
filter's cost is the difference between a run with and one without.
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
import threading
import time

from threadnet.bench import child_env, interpreter, kill_pid

PORT = 5201
PYTCP_VERSION = "2.7.6"  # the newest PyTCP for Python 3.11 (interop.md 5)

#: a kernel-socket peer: ``send HOST PORT N`` connects and sends N bytes; ``recv HOST PORT``
#: listens, prints "ready", and prints {"bytes", "seconds"} at EOF
KERNEL_PEER = """
import json, socket, sys, time
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "send":
    n = int(sys.argv[4])
    c = socket.create_connection((host, port), timeout=120)
    b = bytes(1 << 20)
    while n > 0:
        c.sendall(b[:min(n, len(b))])
        n -= len(b)
    c.close()
else:
    s = socket.create_server((host, port))
    print("ready", flush=True)
    s.settimeout(120)
    c, _ = s.accept()
    c.settimeout(120)
    k, t0 = 0, None
    while d := c.recv(1 << 20):
        t0 = t0 or time.perf_counter()
        k += len(d)
    print(json.dumps({"bytes": k, "seconds": time.perf_counter() - (t0 or time.perf_counter())}),
          flush=True)
"""

#: the PyTCP side, run with the venv's python -O (PyTCP logs unless -O):
#: ``recv TAP CIDR PORT`` or ``send TAP CIDR PORT HOST N``, same protocol as KERNEL_PEER
PYTCP_PEER = """
import json, os, sys, time
from pytcp import TcpIpStack
from pytcp.lib import socket
mode, tap, cidr, port = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
stack = TcpIpStack(interface=tap, mac_address="02:00:00:00:77:07", ip4_address=cidr)
stack.start()
me = cidr.split("/")[0]
s = socket.socket(family=socket.AF_INET4, type=socket.SOCK_STREAM)
if mode == "recv":
    s.bind((me, port))
    s.listen()
    print("ready", flush=True)
    c, _ = s.accept()
    k, t0 = 0, None
    while d := c.recv():
        t0 = t0 or time.perf_counter()
        k += len(d)
    print(json.dumps({"bytes": k, "seconds": time.perf_counter() - (t0 or time.perf_counter())}),
          flush=True)
else:
    print("ready", flush=True)
    s.connect((sys.argv[5], port))
    n = int(sys.argv[6])
    b = bytes(1 << 16)
    while n > 0:
        n -= s.send(b[:min(n, len(b))])
    s.close()
    time.sleep(600)  # the benchmark ends us once the kernel has read everything
os._exit(0)  # PyTCP's threads do not stop by themselves
"""


class PeerUnavailable(Exception):
    """A peer cannot be run here; the message says exactly why."""


# -- roles run in child processes ----------------------------------------------------------
def role_server(link: str, ip: str, filt: str | None = None) -> None:
    from threadnet.stack.api import Stack
    from threadnet.stack.socket import create_server

    s = Stack(f"eth,ip={ip}", link=link)
    if filt:
        s.filter_load(filt)
    srv = create_server(s, ("", PORT))
    print("ready", flush=True)
    conn, _ = srv.accept()
    n = 0
    t0 = None
    cpu0 = _cpu()
    while d := conn.recv(1 << 20):
        if t0 is None:
            t0 = time.perf_counter()
        n += len(d)
    dt = time.perf_counter() - (t0 or time.perf_counter())
    print(json.dumps({"bytes": n, "seconds": dt, "cpu": _cpu() - cpu0}), flush=True)
    conn.close()
    s.close()


def role_client(link: str, ip: str, dst: str, nbytes: int, filt: str | None = None) -> None:
    from threadnet.stack.api import Stack
    from threadnet.stack.socket import create_connection

    s = Stack(f"eth,ip={ip}", link=link)
    if filt:
        s.filter_load(filt)
    block = bytes(1 << 20)
    cpu0 = _cpu()
    with create_connection(s, (dst, PORT), timeout=60) as c:
        left = nbytes
        while left > 0:
            c.sendall(block[:min(left, len(block))])
            left -= len(block)
    print(json.dumps({"cpu": _cpu() - cpu0}), flush=True)
    time.sleep(0.5)
    s.close()


def _cpu() -> float:
    """CPU seconds (user + system) of this process, all threads."""
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _mbps(result: dict) -> float:
    return result["bytes"] * 8 / max(result["seconds"], 1e-9) / 1e6


# -- cases ---------------------------------------------------------------------------------
def stack_to_stack_switch(python: str, nbytes: int, work: str, filt: str | None = None
                          ) -> tuple[float, float, float]:
    """(Mbit/s, sender's CPU us per 1448-byte segment, receiver's)."""
    d = os.path.join(work, "sw")
    pidfile = d + ".pid"
    subprocess.run([python, "-m", "threadnet", "switch", "-s", d, "-d", "-p", pidfile],
                   check=True, env=child_env())
    try:
        me = [python, "-m", "threadnet.bench.stack"]
        extra = ["--filter", filt] if filt else []
        srv = subprocess.Popen(me + ["--role", "server", "--link", f"vde://{d}", "--ip",
                                     "10.251.0.2/24"] + extra,
                               stdout=subprocess.PIPE, text=True, env=child_env())
        assert srv.stdout is not None
        if srv.stdout.readline().strip() != "ready":
            raise RuntimeError("server did not start")
        cli = subprocess.run(me + ["--role", "client", "--link", f"vde://{d}", "--ip",
                                   "10.251.0.1/24", "--dst", "10.251.0.2", "--bytes", str(nbytes)]
                             + extra,
                             check=True, env=child_env(), timeout=600, capture_output=True,
                             text=True)
        out, _ = srv.communicate(timeout=120)
        r = json.loads(out.strip().splitlines()[-1])
        segs = nbytes / 1448
        tx_cpu = json.loads(cli.stdout.strip().splitlines()[-1])["cpu"]
        return _mbps(r), tx_cpu / segs * 1e6, r["cpu"] / segs * 1e6
    finally:
        with open(pidfile) as f:
            kill_pid(int(f.read()))


def stack_to_stack_pair(nbytes: int, mtu: int = 65535, filt: str | None = None) -> float:
    from threadnet.link.pair import open_pair
    from threadnet.stack.api import Stack
    from threadnet.stack.socket import create_connection, create_server

    la, lb = open_pair(mtu)
    a, b = Stack(link=la), Stack(link=lb)
    if filt:
        a.filter_load(filt)
        b.filter_load(filt)
    a.configure("eth,ip=10.252.0.1/24")
    b.configure("eth,ip=10.252.0.2/24")
    srv = create_server(b, ("", PORT))
    result: dict = {}

    def rx() -> None:
        conn, _ = srv.accept()
        n, t0 = 0, time.perf_counter()
        while d := conn.recv(1 << 20):
            n += len(d)
        result.update(bytes=n, seconds=time.perf_counter() - t0)

    t = threading.Thread(target=rx)
    t.start()
    block = bytes(1 << 20)
    with create_connection(a, ("10.252.0.2", PORT), timeout=60) as c:
        for _ in range(nbytes >> 20):
            c.sendall(block)
    t.join(300)
    a.close()
    b.close()
    return _mbps(result)


def connections_per_second(count: int, filt: str | None = None) -> float:
    from threadnet.link.pair import open_pair
    from threadnet.stack.api import Stack
    from threadnet.stack.socket import create_connection, create_server

    la, lb = open_pair(1518)
    a, b = Stack(link=la), Stack(link=lb)
    if filt:
        a.filter_load(filt)
        b.filter_load(filt)
    a.configure("eth,ip=10.253.0.1/24")
    b.configure("eth,ip=10.253.0.2/24")
    srv = create_server(b, ("", 80), backlog=512)

    def serve() -> None:
        for _ in range(count):
            conn, _ = srv.accept()
            conn.recv(100)
            conn.sendall(b"HTTP/1.0 200 OK\r\n\r\nok")
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    a.ping("10.253.0.2")  # resolve ARP first
    t0 = time.perf_counter()
    for _ in range(count):
        with create_connection(a, ("10.253.0.2", 80), timeout=10) as c:
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            while c.recv(100):
                pass
    rate = count / (time.perf_counter() - t0)
    t.join(10)
    a.close()
    b.close()
    return rate


def udp_sendto_us(count: int) -> tuple[float, float]:
    """Microseconds per 64-byte ``sendto``: (kernel, threadnet stack)."""
    import socket

    from threadnet.link.null import open_null
    from threadnet.stack.api import Stack

    data = b"x" * 64
    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rx.bind(("127.0.0.1", 0))
    rx.setblocking(False)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = rx.getsockname()
    t0 = time.perf_counter()
    for i in range(count):
        tx.sendto(data, dst)
        if i & 255 == 255:  # keep the receive queue from filling (drops cost nothing)
            try:
                while rx.recv(128):
                    pass
            except BlockingIOError:
                pass
    kernel = (time.perf_counter() - t0) / count * 1e6
    tx.close()
    rx.close()

    stack = Stack("eth,ip=10.254.0.1/24", open_null("null://", "", None))
    stack.interface("eth0").arp.add_static(bytes((10, 254, 0, 2)), b"\x02\0\0\0\0\x02")
    s = stack.socket(socket.AF_INET, socket.SOCK_DGRAM)
    dst = ("10.254.0.2", 9)
    s.sendto(data, dst)  # binds the port
    t0 = time.perf_counter()
    for _ in range(count):
        s.sendto(data, dst)
    ours = (time.perf_counter() - t0) / count * 1e6
    s.close()
    stack.close()
    return kernel, ours


def _print_udp(udp: list[tuple[float, float]]) -> None:
    k = statistics.median(u[0] for u in udp)
    t = statistics.median(u[1] for u in udp)
    print(f"{'udp sendto 64 B, us per call':<34} threadnet {t:.1f}  kernel {k:.1f}  "
          f"ratio {t / k:.1f}x  (target: at most 15 us; medians of {len(udp)} runs, "
          f"{interpreter()})")


def memory_per_stack(count: int) -> float:
    import tracemalloc

    from threadnet.link.null import open_null
    from threadnet.stack.api import Stack

    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    stacks = []
    for i in range(count):
        s = Stack(link=open_null("null://", "", None), runner=False)
        s.configure(f"eth,ip=10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255 or 1}/8")
        stacks.append(s)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    for s in stacks:
        s.close()
    return used / count


def _ns(name: str, *cmd: str) -> list[str]:
    return ["ip", "netns", "exec", name, *cmd]


def _system_python(python: str) -> str:
    return "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else python


def pytcp_python(work: str, wheel: str | None) -> str:
    """Install PyTCP into a throwaway venv under ``work`` (once per run); returns its
    interpreter. Raises PeerUnavailable with the reason when that fails."""
    venv = os.path.join(work, "pytcp-venv")
    py = os.path.join(venv, "bin", "python")
    if os.path.exists(py):
        return py
    base = _system_python(sys.executable)
    r = subprocess.run([base, "-m", "venv", venv], capture_output=True, text=True)
    if r.returncode:
        raise PeerUnavailable(f"{base} -m venv failed: {(r.stderr or r.stdout).strip()[-300:]}")
    spec = wheel or f"pytcp=={PYTCP_VERSION}"
    try:
        r = subprocess.run([py, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                            spec], capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"pip install {spec} did not finish in 300 s") from None
    if r.returncode:
        raise PeerUnavailable(f"pip install {spec} failed: "
                              f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    r = subprocess.run([py, "-O", "-c", "import pytcp, pytcp.lib.socket, importlib.metadata as m;"
                        "print(m.version('pytcp'))"], capture_output=True, text=True)
    if r.returncode:
        raise PeerUnavailable(f"PyTCP installed but does not import: "
                              f"{r.stderr.strip().splitlines()[-1:]}")
    return py


def _read_ready(proc: subprocess.Popen, what: str, timeout: float) -> None:
    """Wait for the "ready" line of a peer; PeerUnavailable with its output if it dies."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    import select as _select

    while time.monotonic() < deadline:
        r, _, _ = _select.select([proc.stdout], [], [], 0.5)
        if r:
            line = proc.stdout.readline()
            if line.strip() == "ready":
                return
            if not line:
                break
        elif proc.poll() is not None:
            break
    err = ""
    if proc.stderr is not None and proc.poll() is not None:
        err = proc.stderr.read().strip()[-400:]
    raise PeerUnavailable(f"{what} did not start ({'exit ' + str(proc.returncode) if proc.poll() is not None else 'no answer'}): {err}")


def _result(proc: subprocess.Popen, what: str, timeout: float) -> float:
    """Mbit/s from the {"bytes", "seconds"} line a receiving peer prints at EOF."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"{what}: no result within {timeout:.0f} s") from None
    for line in reversed(out.strip().splitlines()):
        if line.startswith("{"):
            r = json.loads(line)
            if not r["bytes"]:
                raise PeerUnavailable(f"{what}: no data arrived")
            return _mbps(r)
    raise PeerUnavailable(f"{what}: no result (exit {proc.returncode}): {err.strip()[-300:]}")


def tap_peer(kind: str, python: str, nbytes: int, peer_python: str) -> tuple[float, float]:
    """(kernel -> peer, peer -> kernel) Mbit/s; the peer (``threadnet`` or ``pytcp``)
    owns a tap in a fresh namespace whose kernel side has 10.248.0.1; the peer is .7."""
    if os.geteuid() != 0:
        raise PeerUnavailable("needs root (a namespace and a tap)")
    ns = f"tbp{os.getpid() % 100000}"
    tap = "tbp0"
    sysp = _system_python(python)
    # generous: PyTCP moves about 4 Mbit/s, and takes seconds to start
    limit = 60 + nbytes * 8 / 0.5e6
    procs: list[subprocess.Popen] = []
    # threadnet-offload: the same stack with the kernel's TSO and checksum offloads
    link = f"tap://{tap}[offload]" if kind == "threadnet-offload" else f"tap://{tap}"

    def peer(mode: str, *extra: str) -> subprocess.Popen:
        if kind == "pytcp":
            cmd = [peer_python, "-O", "-c", PYTCP_PEER, mode, tap, "10.248.0.7/24", str(PORT),
                   *extra]
        elif mode == "recv":
            cmd = [python, "-m", "threadnet.bench.stack", "--role", "server", "--link",
                   link, "--ip", "10.248.0.7/24"]
        else:
            cmd = [python, "-m", "threadnet.bench.stack", "--role", "client", "--link",
                   link, "--ip", "10.248.0.7/24", "--dst", extra[0], "--bytes", extra[1]]
        p = subprocess.Popen(_ns(ns, *cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env=child_env())
        procs.append(p)
        return p

    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                    ["ip", "tuntap", "add", "dev", tap, "mode", "tap"],
                    ["ip", "addr", "add", "10.248.0.1/24", "dev", tap],
                    ["ip", "link", "set", tap, "up"]):
            subprocess.run(_ns(ns, *cmd), check=True, capture_output=True)
        name = "PyTCP" if kind == "pytcp" else kind
        # kernel -> peer
        rx = peer("recv")
        _read_ready(rx, f"{name} receiver", 60)
        tx = subprocess.Popen(_ns(ns, sysp, "-c", KERNEL_PEER, "send", "10.248.0.7", str(PORT),
                                  str(nbytes)), stderr=subprocess.PIPE, text=True)
        procs.append(tx)
        k2p = _result(rx, f"kernel -> {name}", limit)
        tx.wait(30)
        # peer -> kernel
        krx = subprocess.Popen(_ns(ns, sysp, "-c", KERNEL_PEER, "recv", "10.248.0.1",
                                   str(PORT)), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
        procs.append(krx)
        _read_ready(krx, "kernel receiver", 30)
        peer("send", "10.248.0.1", str(nbytes))
        p2k = _result(krx, f"{name} -> kernel", limit)
        return k2p, p2k
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        raise PeerUnavailable(f"{kind} over a tap: {exc}") from exc
    finally:
        for p in procs:
            if p.poll() is None:
                kill_pid(p.pid)
            p.wait(5)
            for f in (p.stdout, p.stderr):
                if f is not None:
                    f.close()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def kernel_veth(seconds: int) -> float | None:
    if os.geteuid() != 0 or not shutil.which("iperf3"):
        return None
    tag = f"tbs{os.getpid() % 100000}"
    a, b = tag + "a", tag + "b"
    try:
        for n in (a, b):
            subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "link", "add", "tbv0", "netns", a, "type", "veth", "peer", "name",
                        "tbv1", "netns", b], check=True)
        for n, dev, ip in ((a, "tbv0", "10.254.0.1/24"), (b, "tbv1", "10.254.0.2/24")):
            subprocess.run(_ns(n, "ip", "addr", "add", ip, "dev", dev), check=True)
            subprocess.run(_ns(n, "ip", "link", "set", dev, "up"), check=True)
        srv = subprocess.Popen(_ns(b, "iperf3", "-s", "-1"), stdout=subprocess.DEVNULL)
        time.sleep(0.5)
        r = subprocess.run(_ns(a, "iperf3", "-c", "10.254.0.2", "-t", str(seconds), "-J"),
                           capture_output=True, text=True, timeout=seconds + 30)
        srv.wait(10)
        return json.loads(r.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    except (OSError, subprocess.SubprocessError, ValueError, KeyError):
        return None
    finally:
        for n in (a, b):
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


def kernel_and_stack(python: str, nbytes: int, work: str) -> tuple[float, float] | None:
    """(kernel -> stack, stack -> kernel) Mbit/s through a tap on a threadnet switch."""
    if os.geteuid() != 0 or not shutil.which("vde_plug2tap"):
        return None
    d = os.path.join(work, "ksw")
    pidfile = d + ".pid"
    subprocess.run([python, "-m", "threadnet", "switch", "-s", d, "-d", "-p", pidfile],
                   check=True, env=child_env())
    ns = f"tbk{os.getpid() % 100000}"
    p2t = os.path.join(work, "p2t.pid")
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        for cmd in (["ip", "tuntap", "add", "dev", "tbk0", "mode", "tap"],
                    ["ip", "addr", "add", "10.250.0.9/24", "dev", "tbk0"],
                    ["ip", "link", "set", "tbk0", "up"],
                    ["vde_plug2tap", "-s", d, "-d", "-P", p2t, "tbk0"]):
            subprocess.run(_ns(ns, *cmd), check=True)
        peer = ("import socket,sys,time\n"
                "mode,n=sys.argv[1],int(sys.argv[2])\n"
                "if mode=='send':\n"
                " c=socket.create_connection(('10.250.0.1',5201),timeout=60);b=bytes(1<<20)\n"
                " for _ in range(n>>20): c.sendall(b)\n"
                " c.close()\n"
                "else:\n"
                " s=socket.create_server(('10.250.0.9',5202));print('ready',flush=True);c,_=s.accept();t=None;k=0\n"
                " while d:=c.recv(1<<20):\n"
                "  t=t or time.perf_counter();k+=len(d)\n"
                " print(k*8/(time.perf_counter()-t)/1e6,flush=True)\n")
        from threadnet.stack.api import Stack
        from threadnet.stack.socket import create_connection, create_server

        s = Stack("eth,ip=10.250.0.1/24", link=f"vde://{d}")
        srv = create_server(s, ("", PORT))
        srv.settimeout(60)  # a failed kernel peer must not hang the benchmark (and its cleanup)
        for _ in range(20):  # until vde_plug2tap has attached and ARP works
            if subprocess.run(_ns(ns, "ping", "-c", "1", "-W", "1", "10.250.0.1"),
                              capture_output=True).returncode == 0:
                break
        k = subprocess.Popen(_ns(ns, python if python.startswith("/usr/") else "python3", "-c",
                                 peer, "send", str(nbytes)))
        conn, _ = srv.accept()
        n, t0 = 0, None
        while data := conn.recv(1 << 20):
            t0 = t0 or time.perf_counter()
            n += len(data)
        k2s = n * 8 / (time.perf_counter() - (t0 or time.perf_counter())) / 1e6
        conn.close()
        k.wait(30)
        k = subprocess.Popen(_ns(ns, "python3", "-c", peer, "recv", str(nbytes)),
                             stdout=subprocess.PIPE, text=True)
        assert k.stdout is not None
        k.stdout.readline()
        block = bytes(1 << 20)
        with create_connection(s, ("10.250.0.9", 5202), timeout=60) as c:
            for _ in range(nbytes >> 20):
                c.sendall(block)
        s2k = float(k.communicate(timeout=120)[0].strip())
        s.close()
        return k2s, s2k
    except (OSError, subprocess.SubprocessError, ValueError, AssertionError):
        return None
    finally:
        try:
            with open(p2t) as f:
                kill_pid(int(f.read()))
        except (OSError, ValueError):
            pass
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        with open(pidfile) as f:
            kill_pid(int(f.read()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="threadnet bench stack", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--mbytes", type=int, default=64, help="megabytes per bulk transfer")
    p.add_argument("--conns", type=int, default=300, help="connections for the conn/s case")
    p.add_argument("--stacks", type=int, default=1000, help="stacks for the memory case")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--only", choices=["udp-sendto", "stack"],
                   help="run only this case (stack: the stack-to-stack cases)")
    p.add_argument("--filter", metavar="FILE",
                   help="a packet filter ruleset for every stack of the stack-to-stack cases")
    p.add_argument("--calls", type=int, default=50000, help="sendto calls per udp-sendto run")
    p.add_argument("--no-pytcp", action="store_true",
                   help="skip the PyTCP comparison (it installs PyTCP into a throwaway venv)")
    p.add_argument("--pytcp-mbytes", type=int, default=4,
                   help="megabytes per transfer for the PyTCP-vs-threadnet tap case "
                        "(PyTCP moves about 4 Mbit/s)")
    p.add_argument("--pytcp-wheel", help=f"install PyTCP from this file instead of "
                                          f"pytcp=={PYTCP_VERSION} from the index")
    p.add_argument("--role", choices=["server", "client"], help=argparse.SUPPRESS)
    p.add_argument("--link", help=argparse.SUPPRESS)
    p.add_argument("--ip", help=argparse.SUPPRESS)
    p.add_argument("--dst", help=argparse.SUPPRESS)
    p.add_argument("--bytes", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role == "server":
        role_server(args.link, args.ip, args.filter)
        return 0
    if args.role == "client":
        role_client(args.link, args.ip, args.dst, args.bytes, args.filter)
        return 0
    print(f"interpreter: {interpreter()}")
    if args.filter:
        args.filter = os.path.abspath(args.filter)
        print(f"packet filter on every stack of the stack-to-stack cases: {args.filter}")
    print(f"load average at start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs")
    udp: list[tuple[float, float]] = []
    if args.only == "udp-sendto":
        for rep in range(args.repeat):
            udp.append(udp_sendto_us(args.calls))
            print(f"  run {rep + 1}: udp sendto: threadnet {udp[-1][1]:.1f}  kernel "
                  f"{udp[-1][0]:.1f} us per call", flush=True)
        _print_udp(udp)
        return 0
    nbytes = args.mbytes << 20
    work = tempfile.mkdtemp(prefix="tnbs-", dir="/tmp")
    res: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    why_not: dict[str, str] = {}
    pytcp_py: str | None = None
    if args.only == "stack":
        args.no_pytcp = True
    if not args.no_pytcp:
        try:
            pytcp_py = pytcp_python(work, args.pytcp_wheel)
        except PeerUnavailable as exc:
            why_not["pytcp"] = str(exc)
    try:
        for rep in range(args.repeat):
            cases = {
                "stack-switch-1500": lambda: stack_to_stack_switch(args.python, nbytes, work,
                                                                   args.filter),
                "stack-pair-64k": lambda: stack_to_stack_pair(nbytes, filt=args.filter),
                "kernel-veth": lambda: kernel_veth(5),
                "kernel-stack-tap": lambda: kernel_and_stack(args.python, nbytes, work),
                "conn/s": lambda: connections_per_second(args.conns, args.filter),
                "udp-sendto": lambda: udp_sendto_us(args.calls),
            }
            if args.only == "stack":
                cases = {k: v for k, v in cases.items()
                         if k in ("stack-switch-1500", "stack-pair-64k", "conn/s")}
            for kind in () if args.only == "stack" else ("threadnet", "threadnet-offload",
                                                         "pytcp"):
                if kind in why_not or (kind == "pytcp" and args.no_pytcp):
                    continue
                # PyTCP moves ~4 Mbit/s: it gets the small transfer, threadnet the big one
                mib = args.pytcp_mbytes if kind == "pytcp" else args.mbytes
                try:
                    k2p, p2k = tap_peer(kind, args.python, mib << 20, pytcp_py or "")
                except PeerUnavailable as exc:
                    why_not[kind] = str(exc)
                    continue
                res.setdefault(f"kernel->{kind}-own-tap", []).append(k2p)
                res.setdefault(f"{kind}->kernel-own-tap", []).append(p2k)
                print(f"  run {rep + 1}: own tap, {mib} MiB: kernel->{kind} "
                      f"{k2p:.1f}  {kind}->kernel {p2k:.1f} Mbit/s", flush=True)
            for name, fn in cases.items():
                v = fn()
                if v is None:
                    continue
                if name == "udp-sendto":
                    udp.append(v)  # type: ignore[arg-type]
                    print(f"  run {rep + 1}: udp sendto: threadnet {v[1]:.1f}  kernel "  # type: ignore[index]
                          f"{v[0]:.1f} us per call", flush=True)
                elif name == "stack-switch-1500":
                    mbps, tx_us, rx_us = v  # type: ignore[misc]
                    res.setdefault(name, []).append(mbps)
                    cpu.setdefault("sender", []).append(tx_us)
                    cpu.setdefault("receiver", []).append(rx_us)
                    print(f"  run {rep + 1}: {name:<18} {mbps:10.1f} Mbit/s  CPU us per "
                          f"segment: sender {tx_us:.1f}, receiver {rx_us:.1f}", flush=True)
                elif isinstance(v, tuple):
                    res.setdefault("kernel->stack-tap", []).append(v[0])
                    res.setdefault("stack->kernel-tap", []).append(v[1])
                    print(f"  run {rep + 1}: kernel->stack {v[0]:.0f}  stack->kernel {v[1]:.0f} Mbit/s",
                          flush=True)
                else:
                    res.setdefault(name, []).append(v)
                    unit = "conn/s" if name == "conn/s" else "Mbit/s"
                    print(f"  run {rep + 1}: {name:<18} {v:10.1f} {unit}", flush=True)
        mem = memory_per_stack(args.stacks) if args.only != "stack" else None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print()
    veth = statistics.median(res["kernel-veth"]) if "kernel-veth" in res else None
    print(f"{'case':<34} {'median':>10}  {'ratio to kernel veth':>20}")
    for name, values in res.items():
        m = statistics.median(values)
        ratio = f"{m / veth:20.3f}" if veth and name != "conn/s" else f"{'':>20}"
        unit = "conn/s" if name == "conn/s" else "Mbit/s"
        print(f"{name:<34} {m:10.1f}  {ratio}  {unit}")
    if udp:
        _print_udp(udp)
    if mem is not None:
        print(f"{'memory per idle stack':<34} {mem / 1024:10.1f}  KiB  "
              f"({(1 << 30) / mem:,.0f} stacks per GiB)")
    if cpu:
        print(f"stack->stack over the switch, CPU us per 1448-byte segment (all threads of "
              f"each process): sender {statistics.median(cpu['sender']):.1f}, receiver "
              f"{statistics.median(cpu['receiver']):.1f} (a limit of ~"
              f"{1448 * 8 / max(statistics.median(cpu['receiver']), 1e-9):.0f} Mbit/s "
              "per receiving core)")
    for d in ("kernel->{}-own-tap", "{}->kernel-own-tap"):
        p_ = d.format("pytcp")
        for kind, how in (("threadnet", "plain tap"), ("threadnet-offload", "tap offloads")):
            t = d.format(kind)
            if t in res and p_ in res:
                ratio = statistics.median(res[t]) / statistics.median(res[p_])
                print(f"threadnet ({how}) / PyTCP {PYTCP_VERSION}, {d.format('peer')}: "
                      f"{ratio:.1f}x (target: at least 100x)")
    if args.no_pytcp and args.only != "stack":
        print("PyTCP: not measured (--no-pytcp)")
    for kind, reason in why_not.items():
        print(f"{'PyTCP' if kind == 'pytcp' else kind} over its own tap: not measured: {reason}")
    print(f"(medians of {args.repeat} runs; interpreter above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
