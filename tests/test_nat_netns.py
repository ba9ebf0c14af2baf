"""NAT against real peers (root; skips without it): a forwarding stack between two
network namespaces, each on its own threadnet switch through Debian's vde_plug2tap. The
outside namespace has no route to the inside network, so only NAT gets answers back.

- ``curl`` from inside reaches an HTTP server outside, whose log shows the stack's
  outside address; ``ping`` gets its replies;
- a UDP datagram to a closed outside port comes back as a port unreachable that the
  inside kernel takes: the socket sees ECONNREFUSED (RFC 5508, the quoted header
  translated);
- a port forward (``dnat``) lets the outside reach a server inside;
- 100,000 spoofed flows from the inside leave the connection table at its bound, and
  service goes on;
- tshark decodes captures on both sides without complaint (every checksum NAT adjusted
  is valid).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from threadnet import Stack
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer

from conftest import need_tool, wait_for
from stack_helpers import Dumpcap, assert_capture_clean

pytestmark = pytest.mark.root

IN_NET, OUT_NET = "10.63.1", "10.63.2"
RULES = f"""
table ip nat {{
    chain pre {{
        type nat hook prerouting priority dstnat;
        iifname "eth1" tcp dport 8080 dnat to {IN_NET}.2:8000
    }}
    chain post {{
        type nat hook postrouting priority srcnat;
        oifname "eth1" masquerade
    }}
}}
"""

HTTP = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ('client ' + self.client_address[0]).encode()
        self.send_response(200)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer((sys.argv[1], int(sys.argv[2])), H)
print('ready', flush=True)
s.serve_forever()
"""

UDP_CLOSED = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(3)
s.connect((sys.argv[1], 9))
s.send(b'?')
try:
    s.recv(10)
    print('answered')
except ConnectionRefusedError:
    print('refused')
except TimeoutError:
    print('timeout')
"""


FLOOD = """
import random, socket, struct, sys, time
net, dst, count = sys.argv[1], socket.inet_aton(sys.argv[2]), int(sys.argv[3])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
rnd = random.Random(1)
for i in range(count):
    src = socket.inet_aton(f"{net}.{rnd.randrange(3, 250)}")
    udp = struct.pack("!HHHH", rnd.randrange(1024, 65536), 53, 9, 0) + b"q"
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 29, i & 0xFFFF, 0, 64, 17, 0, src, dst)
    s.sendto(ip + udp, (sys.argv[2], 0))
    if i % 200 == 199:
        time.sleep(0.015)  # (paced, so the stack takes nearly all of them)
"""


def _ns(netns, procs, sockdir: str, switch_dir: str, name: str, addr: str,
        gw: str | None) -> str:
    ns = netns.add()
    netns.run(ns, "ip", "tuntap", "add", "dev", name, "mode", "tap")
    netns.run(ns, "ip", "addr", "add", addr, "dev", name)
    netns.run(ns, "ip", "link", "set", name, "up")
    if gw:
        netns.run(ns, "ip", "route", "add", "default", "via", gw)
    pidfile = os.path.join(sockdir, f"{name}.pid")
    procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", switch_dir, "-d", "-P", pidfile,
                                name), pidfile)
    return ns


def test_masquerade_and_a_port_forward_between_two_namespaces(netns, procs, sockdir):
    need_tool("vde_plug2tap", "ping", "curl", "dumpcap", "tshark")
    sw1 = SwitchServer(os.path.join(sockdir, "sw1")).start()
    sw2 = SwitchServer(os.path.join(sockdir, "sw2")).start()
    runner = StackRunner("test-nat-netns")
    router = Stack(name="nat", forwarding=True, runner=runner)
    caps = []
    try:
        router.filter_set(RULES, "nat.nft")
        router.add_interface(f"vde://{sw1.directory}")
        router.add_interface(f"vde://{sw2.directory}")
        router.configure(f"iface=eth0,eth,ip={IN_NET}.1/24")
        router.configure(f"iface=eth1,eth,ip={OUT_NET}.1/24")
        inside = _ns(netns, procs, sockdir, sw1.directory, "tnna", f"{IN_NET}.2/24",
                     f"{IN_NET}.1")
        outside = _ns(netns, procs, sockdir, sw2.directory, "tnnb", f"{OUT_NET}.2/24", None)
        cap_in = Dumpcap(procs, inside, "tnna", os.path.join(sockdir, "inside.pcap"))
        caps.append(cap_in)
        cap_out = Dumpcap(procs, outside, "tnnb", os.path.join(sockdir, "outside.pcap"))
        caps.append(cap_out)
        script = os.path.join(sockdir, "webserver.py")
        with open(script, "w") as f:
            f.write(HTTP)
        for ns, addr, port in ((outside, f"{OUT_NET}.2", "8000"),
                               (inside, f"{IN_NET}.2", "8000")):
            server = procs.popen(netns.exec_cmd(ns, "python3", script, addr, port),
                                 stdout=subprocess.PIPE, text=True)
            assert server.stdout.readline().strip() == "ready"
        wait_for(lambda: netns.run(inside, "ping", "-c", "1", "-W", "1", f"{OUT_NET}.2",
                                   check=False).returncode == 0, timeout=20,
                 what="a ping through NAT")
        r = netns.run(inside, "ping", "-c", "3", "-i", "0.2", f"{OUT_NET}.2")
        assert " 0% packet loss" in r.stdout
        # the outside server sees the stack's outside address
        r = netns.run(inside, "curl", "-sS", "-m", "5", f"http://{OUT_NET}.2:8000/")
        assert r.stdout == f"client {OUT_NET}.1", r.stdout
        # a closed outside port: the kernel inside takes the translated error
        closed = os.path.join(sockdir, "udp.py")
        with open(closed, "w") as f:
            f.write(UDP_CLOSED)
        r = netns.run(inside, "python3", closed, f"{OUT_NET}.2")
        assert r.stdout.strip() == "refused"
        # the port forward: the outside reaches the inside server by the stack's address
        r = netns.run(outside, "curl", "-sS", "-m", "5", f"http://{OUT_NET}.1:8080/")
        assert r.stdout == f"client {OUT_NET}.2", r.stdout
        nat = router.packet_filter.nat
        assert nat.stats["translated"] > 10 and nat.stats["errors"] == 0
        cap_in.stop()
        cap_out.stop()
        caps.clear()
        kernels = (f"{IN_NET}.2", f"{OUT_NET}.2")
        assert_capture_clean(os.path.join(sockdir, "inside.pcap"), 10,
                             minus_zero_from=kernels, http=2, icmp=6)
        assert_capture_clean(os.path.join(sockdir, "outside.pcap"), 10,
                             minus_zero_from=kernels, http=2, icmp=6)
        # 100,000 spoofed flows from the inside: the table stays bounded, service goes on
        router.conntrack.max_entries = 4000
        flood = os.path.join(sockdir, "flood.py")
        with open(flood, "w") as f:
            f.write(FLOOD)
        netns.run(inside, "python3", flood, f"{IN_NET}", f"{OUT_NET}.2", "100000",
                  timeout=300)
        stats = router.conntrack.stats
        assert len(router.conntrack) <= 4000
        assert stats["early_drop"] > 80_000, stats  # (nearly all of the flood got there)
        r = netns.run(inside, "curl", "-sS", "-m", "10", f"http://{OUT_NET}.2:8000/")
        assert r.stdout == f"client {OUT_NET}.1", r.stdout
    finally:
        for c in caps:
            c.stop(settle=0)
        router.close()
        runner.stop()
        sw1.close()
        sw2.close()
