"""The kernel stack as the peer: two namespaces, each with a tap joined by Debian's
``vde_plug2tap`` to one ``threadnet switch``.

Covers: ping and a 10 s iperf3 TCP run across the switch; MAC learning (a third endpoint
sees no unicast between the two taps once they are learned); ``port/print`` listing the
two vde_plug2tap endpoints with their counters; the switch's pcap capture (``--pcap`` and
``port/capture``) read back by tshark without malformed packets.

Needs root (namespaces, taps); the ``netns`` fixture skips otherwise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

import pytest

from threadnet.link import open_link
from threadnet.mgmt.client import ConsoleClient

from conftest import Namespaces, need_tool, wait_for

ADDR_A = "10.77.0.1"
ADDR_B = "10.77.0.2"
IPERF_PORT = "5201"

pytestmark = pytest.mark.root


# -- helpers -----------------------------------------------------------------------------
def parse_ports(lines: list[str]) -> dict[int, dict]:
    """``port/print`` body -> {port: {"in_pkts", "in_bytes", "out_pkts", "out_bytes", "endpoints"}}."""
    ports: dict[int, dict] = {}
    cur: dict | None = None
    for line in lines:
        m = re.match(r"^Port (\d{4}) ", line)
        if m:
            cur = ports.setdefault(int(m.group(1)), {"endpoints": []})
            continue
        if cur is None:
            continue
        m = re.match(r"^ (IN|OUT):\s+pkts\s+(\d+)\s+bytes\s+(\d+)$", line)
        if m:
            kind = m.group(1).lower()
            cur[f"{kind}_pkts"] = int(m.group(2))
            cur[f"{kind}_bytes"] = int(m.group(3))
            continue
        m = re.match(r"^  -- endpoint ID (\d+) module (\S+)\s+prog\s+: (.*)$", line)
        if m:
            cur["endpoints"].append(m.group(3))
    return ports


def port_print(mgmt: str) -> dict[int, dict]:
    with ConsoleClient(mgmt) as c:
        err, lines, text = c.run("port/print")
    assert err == 0, text
    return parse_ports(lines)


def port_of_pid(mgmt: str, pid: int) -> int:
    for number, info in port_print(mgmt).items():
        if any(f"pid={pid}" in d for d in info["endpoints"]):
            return number
    raise AssertionError(f"no port for pid {pid} in port/print")


def console(mgmt: str, line: str) -> list[str]:
    with ConsoleClient(mgmt) as c:
        err, lines, text = c.run(line)
    assert err == 0, f"{line!r}: {err} {text}"
    return lines


def ping(ns: str, addr: str, count: int = 3) -> list[float]:
    """Ping from ``ns``; every echo must come back. Returns the RTTs in ms."""
    r = Namespaces.run(ns, "ping", "-c", str(count), "-i", "0.2", "-W", "2", addr, check=False)
    assert r.returncode == 0, f"ping failed:\n{r.stdout}\n{r.stderr}"
    assert f"{count} received" in r.stdout, r.stdout
    rtts = [float(x) for x in re.findall(r"time=([\d.]+) ms", r.stdout)]
    assert len(rtts) == count, r.stdout
    return rtts


def iperf3_tcp(procs, sockdir: str, server, client, *args: str) -> dict:
    """One iperf3 TCP run from ``client`` to ``server`` (TapNs); returns the JSON report."""
    need_tool("iperf3")
    pidfile = os.path.join(sockdir, f"iperf3-{server.ns}.pid")
    procs.daemon(Namespaces.exec_cmd(server.ns, "iperf3", "-s", "-1", "-D", "-I", pidfile, "-p",
                                IPERF_PORT), pidfile)

    def listening() -> bool:
        r = Namespaces.run(server.ns, "ss", "-Htln", f"sport = :{IPERF_PORT}", check=False)
        return bool(r.stdout.strip())

    wait_for(listening, what="iperf3 server listening")
    r = Namespaces.run(client.ns, "iperf3", "-c", server.addr, "-p", IPERF_PORT, "-J", *args,
                  check=False, timeout=60)
    assert r.returncode == 0, f"iperf3 client failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr}"
    return json.loads(r.stdout)


class Observer:
    """A threadnet ``vde://`` endpoint in the test process that records every frame it gets."""

    def __init__(self, switch_dir: str) -> None:
        self.link = open_link(f"vde://{switch_dir}", description="tn-observer")
        self.frames: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.link.wait_readable(0.05):
                self.frames.append(self.link.recv())

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.link.close()


def mac_str(raw: bytes) -> str:
    return ":".join(f"{b:02x}" for b in raw)


@pytest.fixture
def two_taps(threadnet_switch, tap_ns, stop_daemons_first):
    """A threadnet switch with tap A (10.77.0.1) and tap B (10.77.0.2) on it."""
    need_tool("vde_plug2tap", "ping")

    def make(*switch_args: str):
        d, mgmt, pid = threadnet_switch(*switch_args)
        a = tap_ns(d, ADDR_A)
        b = tap_ns(d, ADDR_B)
        return d, mgmt, a, b

    return make


# -- tests -------------------------------------------------------------------------------
def test_ping_learning_and_port_print(two_taps) -> None:
    d, mgmt, a, b = two_taps()
    ping(a.ns, ADDR_B)
    ping(b.ns, ADDR_A)

    # both taps are learned now; a third endpoint must see no unicast between them
    observer = Observer(d)
    try:
        # forget A's neighbour entry so that A broadcasts an ARP request: the observer
        # must see that flood (it is connected), but not the unicast reply to A
        Namespaces.run(a.ns, "ip", "neigh", "flush", "dev", a.tap)
        ping(a.ns, ADDR_B, count=5)
        ping(b.ns, ADDR_A, count=2)
        time.sleep(0.2)
    finally:
        observer.close()
    dsts = [mac_str(f[0:6]) for f in observer.frames]
    srcs = [mac_str(f[6:12]) for f in observer.frames]
    assert "ff:ff:ff:ff:ff:ff" in dsts, f"observer saw no broadcast: {dsts}"
    assert a.mac in srcs  # the ARP request of A
    leaked = [(s, t) for s, t in zip(srcs, dsts, strict=True) if t in (a.mac, b.mac)]
    assert not leaked, f"unicast to a learned MAC reached a third port: {leaked}"

    ports = port_print(mgmt)
    plugs = {n: p for n, p in ports.items()
             if any(e.startswith("vde_plug2tap") for e in p["endpoints"])}
    assert len(plugs) == 2, ports
    for pid in (a.pid, b.pid):
        (number,) = [n for n, p in plugs.items() if any(f"pid={pid}" in e for e in p["endpoints"])]
        info = plugs[number]
        assert info["endpoints"] == [f"vde_plug2tap: user=root pid={pid}"]
        for key in ("in_pkts", "in_bytes", "out_pkts", "out_bytes"):
            assert info[key] > 0, (number, info)


def test_iperf3_tcp_10s(two_taps, procs, sockdir) -> None:
    d, mgmt, a, b = two_taps()
    ping(a.ns, ADDR_B)
    report = iperf3_tcp(procs, sockdir, b, a, "-t", "10")
    assert "error" not in report, report.get("error")
    end = report["end"]
    assert end["sum_sent"]["bytes"] > 0
    assert end["sum_received"]["bytes"] > 0
    assert end["sum_sent"]["seconds"] >= 9.5
    ports = port_print(mgmt)
    total_in = sum(p.get("in_bytes", 0) for p in ports.values())
    assert total_in >= end["sum_received"]["bytes"]  # it all went through the switch


def tshark(*args: str) -> subprocess.CompletedProcess:
    r = subprocess.run(["tshark", *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"tshark {args} failed: {r.stderr}"
    return r


def read_capture(path: str) -> list[tuple[list[str], str, str]]:
    """(protocol stack, eth.src, icmp.type) of every frame, as tshark dissects them."""
    out = tshark("-r", path, "-T", "fields", "-E", "separator=/t", "-e", "frame.protocols",
                 "-e", "eth.src", "-e", "icmp.type").stdout
    rows = []
    for line in out.splitlines():
        protos, src, icmp = (line.split("\t") + ["", "", ""])[:3]
        rows.append((protos.split(":"), src.lower(), icmp))
    return rows


def assert_not_malformed(path: str, rows) -> None:
    bad = [i + 1 for i, (protos, _, _) in enumerate(rows) if "_ws.malformed" in protos]
    assert not bad, f"malformed frames in {path}: {bad[:20]}"
    r = tshark("-r", path, "-Y", "_ws.malformed", "-T", "fields", "-e", "frame.number")
    assert r.stdout.strip() == "", f"malformed frames in {path}: {r.stdout.split()[:20]}"
    expert = tshark("-r", path, "-q", "-z", "expert,error").stdout
    assert "Malformed" not in expert, expert


def test_capture_opens_in_tshark(two_taps, procs, sockdir) -> None:
    need_tool("tshark")
    everything = os.path.join(sockdir, "all.pcap")
    d, mgmt, a, b = two_taps("--pcap", everything)
    port_a = port_of_pid(mgmt, a.pid)
    one_port = os.path.join(sockdir, "port.pcap")
    console(mgmt, f"port/capture {port_a} {one_port}")
    ping(a.ns, ADDR_B)
    # a short, rate-capped TCP run: the capture must stay small
    report = iperf3_tcp(procs, sockdir, b, a, "-t", "2", "-b", "10M")
    assert report["end"]["sum_received"]["bytes"] > 0
    console(mgmt, "port/capture all")  # stop (and flush) both captures
    console(mgmt, f"port/capture {port_a}")

    counts = {}
    for path in (everything, one_port):
        assert os.path.getsize(path) > 24
        rows = read_capture(path)
        counts[path] = len(rows)
        assert_not_malformed(path, rows)
        assert any("tcp" in protos for protos, _, _ in rows), path
        icmp = [t for protos, _, t in rows if "icmp" in protos]
        assert icmp.count("8") >= 3 and icmp.count("0") >= 3, (path, icmp)
        # the per-port file has both directions: frames from A and from B
        assert {a.mac, b.mac} <= {src for _, src, _ in rows}, path
    assert counts[everything] >= counts[one_port]
