"""Mininet-style labs (threadnet.lab, ``threadnet lab``): issue 13, acceptance 5.

``threadnet lab up examples/lab-two-lans.toml`` (stack hosts, as an unprivileged user
when the suite runs as root), then every pair pings, the router's NAT and DHCP are seen
at work, and ``threadnet lab down`` leaves no process, socket file or directory. The
Python API builds the same lab. Delay and loss set in a topology show in the measured
RTTs and loss. Namespace hosts (root) ping and run kernel iperf3. Bad topology files
fail with the file, line and key.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from threadnet.lab import Lab, LabError, TopologyError, load, loads

from conftest import IS_ROOT, _gone, need_root, need_tool, run_as, threadnet_cmd, threadnet_env

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TWO_LANS = str(EXAMPLES / "lab-two-lans.toml")
RING = str(EXAMPLES / "lab-ring.toml")


@pytest.fixture
def labdir():
    """THREADNET_LAB_DIR for one test; whatever lab is left there is stopped (as root
    if need be) and its namespaces removed, even when the test fails."""
    top = tempfile.mkdtemp(prefix="tn-labs-", dir="/tmp")
    os.chmod(top, 0o755)  # the unprivileged user makes its labs directory in there
    base = os.path.join(top, "labs")
    yield base
    if os.path.isdir(base):
        for name in os.listdir(base):
            d = os.path.join(base, name)
            if os.path.isfile(os.path.join(d, "lab.json")):
                try:
                    Lab.attach(d).stop()
                except (LabError, OSError):
                    pass
    shutil.rmtree(top, ignore_errors=True)


def lab_env(base: str) -> dict[str, str]:
    return threadnet_env({"THREADNET_LAB_DIR": base})


def state_of(directory: str) -> dict:
    with open(os.path.join(directory, "lab.json")) as f:
        return json.load(f)


def assert_nothing_left(state: dict) -> None:
    """Every process of the lab is gone, its directory (sockets, pidfiles) and its
    namespaces too."""
    assert state["processes"]
    for p in state["processes"]:
        assert _gone(p["pid"]), f"{p['role']} {p['node']} (pid {p['pid']}) still runs"
    assert not os.path.exists(state["dir"]), os.listdir(state["dir"])
    for ns in state["namespaces"]:
        assert not os.path.exists(f"/run/netns/{ns}"), ns


# -- topology files ---------------------------------------------------------------------------------
@pytest.mark.parametrize("text, message", [
    ("[switches.s1]\nhub = 3\n", r"t.toml:2: .*hub: expected true or false"),
    ("[switches.s1]\n[hosts.h1]\nswitch = \"s1\"\nip = \"10.0.0.300/24\"\n",
     r"t.toml:4: .*host h1 ip: '10.0.0.300/24' is not an address"),
    ("[switches.s1]\n\n[hosts.h1]\nswitch = \"s1\"\nipp = \"10.0.0.3/24\"\n",
     r"t.toml:5: \[hosts.h1\]: unknown key 'ipp'"),
    ("[switches.s1]\n[[links]]\na = \"s1\"\nb = \"s9\"\n", r"t.toml:4: link s1 -- s9: no switch or host named 's9'"),
    ("[switches.s1]\n[switches.s2]\n[[links]]\na = \"s1\"\nb = \"s2\"\ndelay = \"5 parsecs\"\n",
     r"t.toml:6: .*delay: unknown unit 'parsecs'"),
    ("[switches.s1]\n[switches.s2]\n[[links]]\na = \"s1\"\nb = \"s2\"\nloss = 120\n",
     r"t.toml:6: .*loss: 120 is more than 100%"),
    ("[switches.s1]\n[[links]]\na = \"s1\"\n", r"t.toml:2: .*'b' is missing"),
    ("[routers.r1]\ninterfaces = [{ switch = \"nope\", ip = \"10.0.0.1/24\" }]\n",
     r"t.toml:2: router r1 interfaces\[0\] switch: no switch named 'nope'"),
    ("[routers.r1]\ninterfaces = [{ swtch = \"s1\" }]\n",
     r"t.toml:2: .*interfaces\[0\]: unknown key 'swtch'"),
    ("[hosts.h1]\nkind = \"vm\"\n", r"t.toml:2: host h1 kind: 'vm' is not one of stack, netns"),
    ("[hosts.h1]\nip = \"10.0.0.1/24\"\n", r"t.toml:1: host h1: not cabled to anything"),
    ("[hosts.h1]\nkind = \"netns\"\nconfig = \"eth\"\n",
     r"t.toml:3: .*config \(iothconf items\) is for stack hosts"),
    ("[switches.s1]\n[hosts.s1]\n", r"t.toml:2: .*the name 's1' is taken"),
    ("[switches.'bad name']\n", r"t.toml:1: .*'bad name' is not a node name"),
    ("[switchs.s1]\n", r"t.toml:1: unknown table 'switchs'"),
    ("[hosts.h1]\nswitch = \"s9\"\n", r"t.toml:2: host h1 switch: no switch named 's9'"),
    ("[switches.s1]\n[hosts.h1]\nswitch = \"s1\"\n[hosts.h2]\nswitch = \"s1\"\n[[links]]\n"
     "a = \"h1\"\nb = \"h2\"\nvlan = 3\n", r"t.toml:9: link h1 -- h2: vlan needs a switch"),
    ("[switches.s1\n", r"t.toml: not valid TOML: .*line 1"),
])
def test_bad_topology_names_the_line_and_key(text, message):
    with pytest.raises(TopologyError, match=message):
        loads(text, "t.toml")


def test_bad_topology_file_on_the_command_line(tmp_path, labdir):
    bad = tmp_path / "bad.toml"
    bad.write_text("[switches.s1]\n[[links]]\na = \"s1\"\nb = \"s2\"\nvlan = 5000\n")
    r = subprocess.run(threadnet_cmd("lab", "up", str(bad)), env=lab_env(labdir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert f"{bad}:5: link s1 -- s2 vlan: 5000 is not a VLAN tag" in r.stderr
    assert not os.path.exists(labdir) or not os.listdir(labdir)


def test_values_and_units():
    topo = loads('[switches.a]\n[switches.b]\n[[links]]\na = "a"\nb = "b"\n'
                 'delay = "0.1s"\njitter = 5\nloss = "2.5%"\nbw = "512kbit"\nvlan = [10, 20]\n')
    p = topo.links[0].params
    assert (p.delay, p.jitter, p.loss, p.bw, p.vlan) == (100.0, 5.0, 2.5, 512000.0, [10, 20])
    assert dict(p.wirefilter_options()) == {"delay": "100+5", "loss": "2.5",
                                            "bandwidth": "64000", "chanbufsize": "65536"}
    assert loads(topo_text := 'lab.name = "x"\n[switches.a]\n[hosts.h]\nswitch = "a"\nbw = 1\n'
                 .replace("bw = 1\n", "")).hosts["h"].switch == "a", topo_text


# -- the two-LAN example, from the command line --------------------------------------------------
@pytest.mark.slow
def test_lab_up_two_lans_pings_every_pair_and_down_leaves_nothing(labdir, request):
    """Stack hosts need no root: as root, the suite runs it all as an unprivileged user."""
    def cli(*args: str) -> subprocess.CompletedProcess:
        cmd = threadnet_cmd("lab", *args)
        if IS_ROOT:
            user = request.getfixturevalue("unpriv")
            return run_as(user, [user["python"], *cmd[1:]], capture_output=True, text=True,
                          timeout=120, env={"THREADNET_LAB_DIR": labdir})
        return subprocess.run(cmd, env=lab_env(labdir), capture_output=True, text=True,
                              timeout=120)

    if IS_ROOT:
        user = request.getfixturevalue("unpriv")
        os.chown(os.path.dirname(labdir), user["uid"], user["gid"])
    r = cli("up", TWO_LANS)
    assert r.returncode == 0, r.stderr
    assert "lab two-lans is up" in r.stdout
    directory = os.path.join(labdir, "two-lans")
    state = state_of(directory)
    if IS_ROOT:
        assert os.stat(directory).st_uid == request.getfixturevalue("unpriv")["uid"]
    try:
        r = cli("ping")  # the only lab up: no name needed
        assert r.returncode == 0, r.stdout + r.stderr
        assert "*** Results: 0% dropped (18/18 received)" in r.stdout
        for line in ("h1 -> h2 server", "h2 -> h1 server", "server -> h1 h2"):
            assert line in r.stdout
        r = cli("status", "two-lans")
        assert r.returncode == 0, r.stderr
        rows = {line.split()[0]: line for line in r.stdout.splitlines()[1:]}
        assert set(rows) == {"lan1", "wan", "r1", "h1", "h2", "server"}
        assert all(" up " in row for row in rows.values()), r.stdout
        assert "10.0.1.1/24 192.168.100.1/24" in rows["r1"]
        # DHCP: h1 and h2 have addresses from the router's pool
        for h in ("h1", "h2"):
            addr = rows[h].split("pid")[1].split()[1]
            assert addr.startswith("10.0.1.1") and addr.endswith("/24"), rows[h]
            assert 100 <= int(addr.split("/")[0].split(".")[3]) <= 199
    finally:
        r = cli("down", "two-lans")
    assert r.returncode == 0, r.stderr
    assert "lab two-lans is down" in r.stdout
    assert_nothing_left(state)


# -- the Python API builds the same lab -------------------------------------------------------------
def build_two_lans(lab: Lab) -> None:
    lab.add_switch("lan1")
    lab.add_switch("wan")
    lab.add_router("r1", {"switch": "lan1", "ip": "10.0.1.1/24", "dhcpd": "10.0.1.100-10.0.1.199"},
                   {"switch": "wan", "ip": "192.168.100.1/24", "nat": True})
    lab.add_host("h1", switch="lan1", dhcp=True)
    lab.add_host("h2", switch="lan1", dhcp=True)
    lab.add_host("server", ip="192.168.100.10/24", gw="192.168.100.1")
    lab.add_link("server", "wan", delay="10ms")


@pytest.mark.slow
def test_python_api_builds_the_same_lab_and_nat_shows(labdir, monkeypatch):
    monkeypatch.setenv("THREADNET_LAB_DIR", labdir)
    lab = Lab("two-lans")
    build_two_lans(lab)
    assert lab.topology.to_dict() == load(TWO_LANS).to_dict()
    with lab:
        lab.start()
        state = state_of(lab.dir)
        result = lab.ping_all()
        assert not result.failed and result.loss == 0, "\n".join(result.lines())
        # the server's cable has 10 ms each way: h1 -> server costs at least 20 ms
        assert min(result.pair("h1", "server").rtts) >= 0.020
        # NAT: a connection from h1 reaches the server from the router's outside address
        srv = lab.stack("server").socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.bind(("", 8080))
        srv.listen(1)
        srv.settimeout(10)
        peer = {}

        def accept() -> None:
            conn, addr = srv.accept()
            peer["addr"] = addr
            conn.sendall(b"hello " + addr[0].encode())
            conn.close()

        t = threading.Thread(target=accept)
        t.start()
        c = lab.stack("h1").socket(socket.AF_INET, socket.SOCK_STREAM)
        c.settimeout(10)
        c.connect(("192.168.100.10", 8080))
        assert c.recv(100) == b"hello 192.168.100.1"
        c.close()
        t.join(10)
        srv.close()
        assert peer["addr"][0] == "192.168.100.1"
        # iperf between two stack hosts, across the router
        rate = lab.iperf("h1", "server", seconds=1.0)
        assert rate.bytes > 0 and rate.bits_per_second > 1e5, rate
    assert_nothing_left(state)


# -- impairments -------------------------------------------------------------------------------------
IMPAIRED = """
[lab]
name = "impaired"
[switches.s1]
[switches.s2]
[[links]]            # a wirefilter process between the switches
a = "s1"
b = "s2"
delay = "50ms"
[hosts.h1]
switch = "s1"
ip = "10.7.0.1/24"
[hosts.h2]
ip = "10.7.0.2/24"
[[links]]            # the host's own side: wirefilter://delay=20{vde://...}
a = "h2"
b = "s2"
delay = "20ms"
[hosts.h3]
ip = "10.7.0.3/24"
[[links]]
a = "h3"
b = "s1"
loss = "20%"
"""


@pytest.mark.slow
def test_delay_and_loss_show_in_rtt_and_loss(tmp_path, labdir):
    topo = tmp_path / "impaired.toml"
    topo.write_text(IMPAIRED)
    r = subprocess.run(threadnet_cmd("lab", "up", str(topo)), env=lab_env(labdir),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    lab = Lab.attach(os.path.join(labdir, "impaired"))
    state = state_of(lab.dir)
    try:
        # 50 ms on the switches' cable and 20 ms on h2's, each way: RTT >= 140 ms
        delayed = lab.ping("h1", "h2", count=10, interval=0.05)
        assert delayed.received == 10, delayed
        assert min(delayed.rtts) >= 0.140, delayed
        assert statistics.median(delayed.rtts) < 0.140 + 0.100, delayed
        # 20% loss each way on h3's cable: a round trip survives with 0.8 * 0.8 = 64%.
        # First the two learn each other's MAC (ARP crosses the lossy cable too, and
        # pings waiting for it are not counted here)
        for _ in range(20):
            if lab.ping("h1", "h3", count=2, interval=0.05, timeout=1.0).received:
                break
        lossy = lab.ping("h1", "h3", count=300, interval=0.005, timeout=1.0)
        assert lossy.sent == 300
        assert 0.22 <= lossy.loss <= 0.50, lossy
        # unimpaired: no loss, no delay to speak of
        clean = lab.ping("h1", "h2", count=1)
        assert clean.received == 1
    finally:
        r = subprocess.run(threadnet_cmd("lab", "down", str(topo)), env=lab_env(labdir),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert_nothing_left(state)


# -- namespace hosts (root) ---------------------------------------------------------------------------
NETNS_LAB = """
[lab]
name = "nslab"
[switches.lan1]
[switches.wan]
[routers.r1]
interfaces = [
    { switch = "lan1", ip = "10.8.1.1/24", dhcpd = true },
    { switch = "wan", ip = "10.8.2.1/24", nat = true },
]
[hosts.k1]
kind = "netns"
switch = "lan1"
dhcp = true
[hosts.k2]
kind = "netns"
ip = "10.8.1.11/24"
gw = "10.8.1.1"
[[links]]
a = "k2"
b = "lan1"
delay = "15ms"
[hosts.s1]
switch = "wan"
ip = "10.8.2.10/24"
gw = "10.8.2.1"
"""


@pytest.mark.root
@pytest.mark.slow
@pytest.mark.parametrize("via", ["ip", "ns"])
def test_namespace_hosts_ping_and_iperf(tmp_path, labdir, via):
    """Namespace hosts made by ip netns, or by threadnet ns (a user and network
    namespace: no root where the system lets users make them; run as root here)."""
    need_root("namespace hosts (ip netns)")
    need_tool("iperf3", "ping", "nsenter")
    topo = tmp_path / "nslab.toml"
    topo.write_text(NETNS_LAB)
    r = subprocess.run(threadnet_cmd("lab", "up", "--netns", via, str(topo)),
                       env=lab_env(labdir), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    directory = os.path.join(labdir, "nslab")
    state = state_of(directory)
    if via == "ip":
        assert sorted(state["namespaces"]) == ["tn-nslab-k1", "tn-nslab-k2"]
    else:
        assert state["namespaces"] == []
        roles = sorted(p["role"] for p in state["processes"] if p["node"] in ("k1", "k2"))
        assert roles == ["ns-command"] * 2 + ["threadnet-ns"] * 2
    try:
        r = subprocess.run(threadnet_cmd("lab", "ping", "nslab"), env=lab_env(labdir),
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        assert "*** Results: 0% dropped (18/18 received)" in r.stdout
        lab = Lab.attach(directory)
        # k1's address and default route came from the router's DHCP server
        assert lab.address("k1").startswith("10.8.1.1"), lab.addresses("k1")
        assert lab.addresses("k1")[0].endswith("/24")
        k2 = lab.ping("k1", "k2", count=3)
        assert min(k2.rtts) >= 0.030, k2  # 15 ms each way on k2's cable
        # kernel to kernel: iperf3; kernel to stack: sockets
        for a, b, tool in (("k1", "k2", "iperf3"), ("k1", "s1", "sockets"),
                           ("s1", "k1", "sockets")):
            rate = lab.iperf(a, b, seconds=1.0)
            assert rate.tool == tool and rate.bytes > 0 and rate.bits_per_second > 1e5, rate
    finally:
        r = subprocess.run(threadnet_cmd("lab", "down", "nslab"), env=lab_env(labdir),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert_nothing_left(state)
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "tn-nslab-" not in out


def test_namespace_hosts_need_root(labdir, monkeypatch):
    if IS_ROOT:
        monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("THREADNET_LAB_DIR", labdir)
    lab = Lab("needroot", netns="ip")
    lab.add_switch("s")
    lab.add_host("k", "netns", ip="10.0.0.1/24", switch="s")
    with pytest.raises(LabError, match=r"namespace hosts \(k\) made by ip netns need root"):
        lab.start()
    with pytest.raises(ValueError, match="netns='vm'"):
        Lab("x", netns="vm")
    assert not os.path.exists(os.path.join(labdir, "needroot"))


# -- the ring ---------------------------------------------------------------------------------------------
def test_ring_example_runs_the_spanning_tree(labdir):
    """A ring of switches is a loop: the example asks every switch for the fast spanning
    tree (threadnet switch -F). One port of the ring is blocked, every pair pings, and
    the broadcasts that crossed the ring did not circle it (the cables' counters stay
    small)."""
    topo = load(RING)
    assert all(sw.fstp for sw in topo.switches.values())
    r = subprocess.run(threadnet_cmd("lab", "up", RING), env=lab_env(labdir),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    directory = os.path.join(labdir, "ring")
    state = state_of(directory)
    try:
        deadline = time.monotonic() + 60  # the spanning tree settles first
        while True:
            r = subprocess.run(threadnet_cmd("lab", "ping", "ring", "-c", "2"),
                               env=lab_env(labdir), capture_output=True, text=True, timeout=120)
            if r.returncode == 0 or time.monotonic() > deadline:
                break
        assert r.returncode == 0, r.stdout + r.stderr
        for line in ("h1 -> h2 h3", "h2 -> h1 h3", "h3 -> h1 h2"):
            assert line in r.stdout
        roles, counts = [], []
        for sw in ("s1", "s2", "s3"):
            mgmt = os.path.join(directory, f"{sw}.mgmt")
            out = subprocess.run(threadnet_cmd("console", mgmt, "fstp/print"),
                                 env=lab_env(labdir), capture_output=True, text=True,
                                 timeout=30).stdout
            roles += [w.split("=", 1)[1] for w in out.split() if w.startswith("role=")]
            out = subprocess.run(threadnet_cmd("console", mgmt, "port/print"),
                                 env=lab_env(labdir), capture_output=True, text=True,
                                 timeout=30).stdout
            counts += [int(line.split()[2]) for line in out.splitlines()
                       if line.strip().startswith(("IN:", "OUT:"))]
        assert any(role.startswith("Alternate") for role in roles), roles
        assert counts and max(counts) < 2000, counts  # a storm counts millions
    finally:
        r = subprocess.run(threadnet_cmd("lab", "down", "ring"), env=lab_env(labdir),
                           capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert_nothing_left(state)


def test_state_dir_is_refused_twice_and_down_without_lab(labdir, monkeypatch):
    monkeypatch.setenv("THREADNET_LAB_DIR", labdir)
    r = subprocess.run(threadnet_cmd("lab", "down"), env=lab_env(labdir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "no lab is up" in r.stderr
    r = subprocess.run(threadnet_cmd("lab", "status"), env=lab_env(labdir),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "no lab is up" in r.stdout
    with Lab("twice") as lab:
        lab.add_switch("s")
        lab.add_host("h", ip="10.0.0.1/24", switch="s")
        lab.add_host("p", ip="10.0.1.2/24")
        lab.add_host("q", ip="10.0.0.3/24", config="iface=eth1,ip=10.0.1.1/24")
        lab.add_link("q", "s")
        lab.add_link("q", "p", delay="5ms")  # two hosts: a switch of their own between
        lab.start()
        assert lab.addresses("q") == ["10.0.0.3/24", "10.0.1.1/24"]
        assert "q" in lab.hosts() and "_pair0" not in {r["node"] for r in lab.status()}
        rtts = lab.ping("p", "10.0.1.1", count=2).rtts  # q (its first address is eth0's)
        assert rtts and min(rtts) >= 0.010
        assert lab.ping("q", "h", count=1).received == 1
        again = Lab("twice")
        again.add_switch("s")
        with pytest.raises(LabError, match="lab twice is already up"):
            again.start()
        assert Lab.attach().name == "twice"
        assert lab.ping("h", "10.0.0.1", count=1).received == 1  # its own address


def test_a_lab_that_fails_to_start_leaves_nothing(tmp_path, labdir):
    """The router refuses its DHCP pool (not in its subnet): the lab does not come up, the
    error names the router, and the switch and host already started are stopped."""
    topo = tmp_path / "broken.toml"
    topo.write_text('[switches.s1]\n[routers.r1]\ninterfaces = [{ switch = "s1", '
                    'ip = "10.0.1.1/24", dhcpd = "10.0.9.100-10.0.9.199" }]\n'
                    '[hosts.h1]\nswitch = "s1"\nip = "10.0.1.5/24"\n')
    seen = []
    real_popen = subprocess.Popen

    class Spy(real_popen):  # the daemons the lab starts, to check that none is left
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            seen.append(a[0])

    lab = Lab.from_toml(str(topo), state_dir=os.path.join(labdir, "broken"))
    os.makedirs(labdir, mode=0o700)
    try:
        subprocess.Popen = Spy
        with pytest.raises(LabError, match=r"router r1: .*dhcpd pool 10.0.9.100-10.0.9.199 is "
                                           r"not within a subnet of eth0"):
            lab.start()
    finally:
        subprocess.Popen = real_popen
    assert any("switch" in cmd for cmd in seen)
    assert not os.path.exists(os.path.join(labdir, "broken"))
    assert not lab.started
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert os.path.join(labdir, "broken") not in out


def test_two_labs_share_a_vxvde_lan(tmp_path, labdir, monkeypatch):
    """A cable to a link outside the lab (url = ...): two labs, here on one machine, each
    with a cable to the same vxvde:// LAN, reach each other as labs on two machines
    would. Lab a's switch has the cable (a threadnet plug), lab b's host is on the LAN
    itself."""
    import random

    monkeypatch.setenv("THREADNET_LAB_DIR", labdir)
    rng = random.Random()
    url = (f"vxvde://239.255.{rng.randrange(1, 255)}.{rng.randrange(1, 255)}"
           f"/port={rng.randrange(20000, 60000)}/vni={rng.randrange(1, 1 << 24)}")
    topo = tmp_path / "site-a.toml"
    topo.write_text(f'[switches.s]\n[hosts.a1]\nswitch = "s"\nip = "10.66.0.1/24"\n'
                    f'[[links]]\na = "s"\nurl = "{url}"\ndelay = "5ms"\n')
    site_a = load(str(topo))
    assert site_a.links[-1].url == url and site_a.to_dict()["links"][-1]["url"] == url
    with Lab.from_toml(str(topo)) as a, Lab("site-b") as b:
        b.add_host("b1", ip="10.66.0.2/24")
        b.add_link("b1", url=url)
        a.start()
        b.start()
        there = a.ping("a1", "10.66.0.2", count=3)
        back = b.ping("b1", "10.66.0.1", count=3)
        assert there.received == 3 and back.received == 3, (there, back)
        assert min(there.rtts) >= 0.010  # the cable's 5 ms, each way
    with pytest.raises(TopologyError, match=r"link s -- nope://x url: unknown scheme 'nope'"):
        loads('[switches.s]\n[[links]]\na = "s"\nurl = "nope://x"\n')
    with pytest.raises(TopologyError, match=r"one of them"):
        loads('[switches.s]\n[switches.t]\n[[links]]\na = "s"\nb = "t"\nurl = "null://"\n')


@pytest.mark.slow
def test_bandwidth_limits_show_in_iperf(labdir, monkeypatch):
    """bw on a host's cable (its emulated link) and on a cable between switches (a
    wirefilter process): TCP gets most of the rate and never more."""
    monkeypatch.setenv("THREADNET_LAB_DIR", labdir)
    with Lab("bw") as lab:
        lab.add_switch("s1")
        lab.add_switch("s2")
        lab.add_host("a", ip="10.5.0.1/24", switch="s1")
        lab.add_host("b", ip="10.5.0.2/24")
        lab.add_link("b", "s1", bw="8Mbit")
        lab.add_host("c", ip="10.5.0.3/24", switch="s2")
        lab.add_link("s1", "s2", bw="4Mbit")
        lab.start()
        for dst, limit in (("b", 8e6), ("c", 4e6)):
            rate = lab.iperf("a", dst, seconds=2)
            assert 0.4 * limit <= rate.bits_per_second <= 1.05 * limit, rate


@pytest.mark.root
def test_namespace_hosts_without_root(labdir, unpriv):
    """An unprivileged user's namespace hosts are made by threadnet ns: where the system
    refuses (no /dev/net/tun for users, no user namespaces) the lab says why before
    anything runs; where it allows, every pair pings."""
    need_tool("nsenter")
    topo = Path(os.path.dirname(labdir)) / "userns.toml"  # where the user may read it
    topo.write_text('[switches.s]\n[hosts.k1]\nkind = "netns"\nswitch = "s"\nip = "10.9.0.1/24"\n'
                    '[hosts.h2]\nswitch = "s"\nip = "10.9.0.2/24"\n')
    os.chmod(topo, 0o644)
    os.chown(os.path.dirname(labdir), unpriv["uid"], unpriv["gid"])

    def cli(*args: str) -> subprocess.CompletedProcess:
        return run_as(unpriv, [unpriv["python"], "-m", "threadnet", "lab", *args],
                      capture_output=True, text=True, timeout=120,
                      env={"THREADNET_LAB_DIR": labdir, "PATH": "/usr/sbin:/usr/bin:/bin"})

    r = cli("up", str(topo))
    if r.returncode != 0:
        assert "namespace hosts (k1) need root (ip netns), or threadnet ns, which cannot run " \
               "here: " in r.stderr, r.stderr
        assert not os.path.exists(os.path.join(labdir, "userns"))
        pytest.skip("no unprivileged namespaces here: " + r.stderr.strip())
    state = state_of(os.path.join(labdir, "userns"))
    try:
        r = cli("ping")
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        r = cli("down")
    assert r.returncode == 0, r.stderr
    assert_nothing_left(state)
