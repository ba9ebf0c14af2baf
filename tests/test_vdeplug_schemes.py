"""vdeplug4's seqpacket:// and netnode schemes (hub://, switch://, multi://, bonding://).

Debian's vde_plug (vdeplug4 4.0.1) is the peer in both roles: the node served by
``vde_plug KIND://D`` with ``threadnet plug vde://D`` joining, and the node served by
``threadnet plug KIND://D`` with ``vde_plug vde://D`` joining; the same checks pass
against either server, which is what says the two behave alike. seqpacket:// has no
roles (both ends of a socketpair are the same); vde_plug and threadnet face each other
on one. Stacks ping through every scheme; bad URLs and vanished peers give errors.
"""

from __future__ import annotations

import errno
import glob
import os
import signal
import socket
import stat
import subprocess
import threading
import time

import pytest

from threadnet import Stack
from threadnet.errors import LinkError, URLError
from threadnet.link import open_link
from threadnet.link.netnode import HOST, QLEN, NetNodeLink
from threadnet.stack.runner import StackRunner

from conftest import need_tool, threadnet_cmd, threadnet_env, wait_for
from switch_helpers import BROADCAST, Plug, eth, eth_tagged, mac, recv_frame

DEB = ["vde_plug"]
TN = threadnet_cmd("plug")
H, A, B = mac(1), mac(10), mac(11)  # the node's host, and two programs that join it


@pytest.fixture
def runner():
    r = StackRunner("test-vdeplug-schemes")
    yield r
    r.stop()


def _plug(procs, prog: list[str], url: str, descr: str, **kw) -> Plug:
    if prog is TN:
        kw.setdefault("env", threadnet_env())
    return Plug(procs, url, descr, prog=prog, popen_kw=kw)


def _ports(d: str) -> int:
    """The ports a node serves: both vdeplug4 and threadnet name them ``D/fdN``."""
    return len(glob.glob(os.path.join(d, "fd*")))


def _serve(procs, sockdir: str, kind: str, server: str) -> tuple[str, Plug, Plug, Plug]:
    """``KIND://D`` served by Debian's vde_plug or threadnet plug, joined by two programs of
    the other implementation; returns (D, host, a, b)."""
    need_tool("vde_plug")
    d = os.path.join(sockdir, "node")
    srv, cli = (DEB, TN) if server == "debian" else (TN, DEB)
    host = _plug(procs, srv, f"{kind}://{d}", "host")
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what=f"{kind}://{d}")
    a = _plug(procs, cli, f"vde://{d}", "a")
    b = _plug(procs, cli, f"vde://{d}", "b")
    wait_for(lambda: _ports(d) == 2, timeout=10, what="two ports")
    return d, host, a, b


ROLES = ["debian", "threadnet"]


# -- netnode semantics, against either server ---------------------------------------------
@pytest.mark.parametrize("server", ROLES)
def test_hub_floods_everything(procs, sockdir, server):
    _, host, a, b = _serve(procs, sockdir, "hub", server)
    f = eth(BROADCAST, H, b"from the host")
    host.send(f)
    a.expect(f)
    b.expect(f)
    f = eth(BROADCAST, A, b"from a")
    a.send(f)
    host.expect(f)
    b.expect(f)
    f = eth(B, A, b"a to b")  # a hub learns nothing: everybody else gets it
    a.send(f)
    b.expect(f)
    host.expect(f)
    a.expect_silence()  # never back to the sender


@pytest.mark.parametrize("server", ROLES)
def test_switch_learns_and_forwards(procs, sockdir, server):
    _, host, a, b = _serve(procs, sockdir, "switch", server)
    hello = [(host, eth(BROADCAST, H, b"h")), (a, eth(BROADCAST, A, b"a")),
             (b, eth(BROADCAST, B, b"b"))]
    for sender, f in hello:  # unknown and broadcast: everybody else; each source learned
        sender.send(f)
        for other in (host, a, b):
            if other is not sender:
                other.expect(f)
    f = eth(B, A, b"a to b")
    a.send(f)
    b.expect(f)
    f = eth(H, A, b"a to the host")
    a.send(f)
    host.expect(f)
    f = eth(A, H, b"host to a")
    host.send(f)
    a.expect(f)
    f = eth(H, B, b"b to the host")
    b.send(f)
    host.expect(f)
    for plug in (host, a, b):  # none of the unicast frames went anywhere else
        plug.expect_silence(0.2)


@pytest.mark.parametrize("server", ROLES)
def test_switch_table_is_per_vlan(procs, sockdir, server):
    """The same MAC behind a on VLAN 5 and behind b on VLAN 7: two entries (a trunk)."""
    _, host, a, b = _serve(procs, sockdir, "switch", server)
    x = mac(99)
    for sender, vlan in ((a, 5), (b, 7)):
        f = eth_tagged(BROADCAST, x, vlan, b"hello")
        sender.send(f)
        host.expect(f)
        (b if sender is a else a).expect(f)
    for vlan, to, other in ((5, a, b), (7, b, a)):
        f = eth_tagged(x, H, vlan, b"to x on %d" % vlan)
        host.send(f)
        to.expect(f)
        other.expect_silence(0.2)


@pytest.mark.parametrize("server", ROLES)
def test_switch_entries_expire(procs, sockdir, server):
    d = os.path.join(sockdir, "node")
    srv, cli = (DEB, TN) if server == "debian" else (TN, DEB)
    need_tool("vde_plug")
    host = _plug(procs, srv, f"switch://{d}[expiretime=1]", "host")
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="the switch")
    a = _plug(procs, cli, f"vde://{d}", "a")
    b = _plug(procs, cli, f"vde://{d}", "b")
    wait_for(lambda: _ports(d) == 2, timeout=10, what="two ports")
    f = eth(BROADCAST, A, b"learn a")
    a.send(f)
    host.expect(f)
    b.expect(f)
    f = eth(A, H, b"known")
    host.send(f)
    a.expect(f)
    b.expect_silence(0.2)
    time.sleep(2.2)  # (vdeplug4 counts whole seconds)
    f = eth(A, H, b"forgotten: flooded")
    host.send(f)
    a.expect(f)
    b.expect(f)


@pytest.mark.parametrize("server", ROLES)
def test_multi_fans_out_and_collects(procs, sockdir, server):
    _, host, a, b = _serve(procs, sockdir, "multi", server)
    f = eth(BROADCAST, H, b"to every link")
    host.send(f)
    a.expect(f)
    b.expect(f)
    for sender in (a, b):  # what comes in on any link is the host's alone
        f = eth(BROADCAST, A if sender is a else B, b"in")
        sender.send(f)
        host.expect(f)
    f = eth(B, A, b"not to b")
    a.send(f)
    host.expect(f)
    b.expect_silence()
    a.expect_silence(0.1)


@pytest.mark.parametrize("server", ROLES)
def test_bonding_round_robin(procs, sockdir, server):
    _, host, a, b = _serve(procs, sockdir, "bonding", server)
    sent = [eth(BROADCAST, H, b"frame %d" % i) for i in range(6)]
    for f in sent:
        host.send(f)
    got_a = [g for g in iter(lambda: a.recv(0.5), None)]
    got_b = [g for g in iter(lambda: b.recv(0.3), None)]
    # each frame on exactly one link, the links in turn (broadcasts too)
    assert sorted(got_a + got_b) == sorted(sent)
    assert len(got_a) == len(got_b) == 3
    assert got_a in (sent[0::2], sent[1::2])
    f = eth(BROADCAST, A, b"from a")
    a.send(f)
    host.expect(f)
    b.expect_silence()


@pytest.mark.parametrize("prog", [DEB, TN], ids=["debian", "threadnet"])
def test_standalone_switch_with_null_host(procs, sockdir, prog):
    """``plug null:// switch://D``, vdeplug4's recipe for a stand-alone switch: the ports
    reach each other with nothing behind the host."""
    need_tool("vde_plug")
    d = os.path.join(sockdir, "sw")
    kw = {"env": threadnet_env()} if prog is TN else {}
    procs.popen([*prog, "null://", f"switch://{d}"], stdout=subprocess.DEVNULL, **kw)
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="the switch")
    a = _plug(procs, DEB, f"vde://{d}", "a")
    b = _plug(procs, DEB, f"vde://{d}", "b")
    wait_for(lambda: _ports(d) == 2, timeout=10, what="two ports")
    f = eth(BROADCAST, A, b"hello b")
    a.send(f)
    b.expect(f)
    f = eth(A, B, b"hello a")
    b.send(f)
    a.expect(f)


# -- stacks through the nodes ---------------------------------------------------------------
@pytest.mark.parametrize("kind", ["hub", "switch", "multi", "bonding"])
def test_stack_on_a_node_pings_a_stack_that_joined(sockdir, runner, kind):
    d = os.path.join(sockdir, kind)
    a = Stack("eth,ip=10.81.0.1/24", link=f"{kind}://{d}", runner=runner)
    b = Stack("eth,ip=10.81.0.2/24", link=f"vde://{d}", runner=runner)
    try:
        assert len(a.ping("10.81.0.2", count=3)) == 3
        assert len(b.ping("10.81.0.1", count=2)) == 2
    finally:
        b.close()
        a.close()
    assert not os.path.exists(d), "the node's directory outlived it"


@pytest.mark.parametrize("kind", ["hub", "switch"])
def test_stacks_ping_through_debian_and_threadnet_nodes(procs, sockdir, runner, kind):
    """Two stacks joined to a node of Debian's, then to one of threadnet's with a Debian
    vde_plug as a third port."""
    need_tool("vde_plug")
    deb = os.path.join(sockdir, "deb")
    procs.popen(["vde_plug", f"{kind}://{deb}"], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(os.path.join(deb, "ctl")), what="Debian's node")
    a = Stack("eth,ip=10.82.0.1/24", link=f"vde://{deb}", runner=runner)
    b = Stack("eth,ip=10.82.0.2/24", link=f"vde://{deb}", runner=runner)
    try:
        assert len(a.ping("10.82.0.2", count=3)) == 3
    finally:
        b.close()
        a.close()
    ours = os.path.join(sockdir, "ours")
    c = Stack("eth,ip=10.82.1.1/24", link=f"{kind}://{ours}", runner=runner)
    try:
        procs.popen(["vde_plug", f"vde://{ours}"], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL)
        d = Stack("eth,ip=10.82.1.2/24", link=f"vde://{ours}", runner=runner)
        try:
            wait_for(lambda: _ports(ours) == 2, what="two ports")
            assert len(d.ping("10.82.1.1", count=3)) == 3
        finally:
            d.close()
    finally:
        c.close()


# -- nodes: URLs, options, paths -------------------------------------------------------------
@pytest.mark.parametrize("rest, message", [
    ("{D}[mode=0999]", "mode must be an octal number"),
    ("{D}[dirmode=rwx]", "dirmode must be an octal number"),
    ("{D}[hashsize=0]", "hashsize must be a number of at least 1"),
    ("{D}[expiretime=soon]", "expiretime must be a number"),
    ("{D}[colour=red]", "unknown option 'colour'"),
    ("{D}[grp=no-such-group-here]", "unknown group"),
    ("{D}[mode=0600", "unbalanced brackets"),
    ("/no/such/dir/node", "does not exist"),
    ("/tmp/" + "n" * 100, "too long"),
])
def test_node_bad_urls(sockdir, rest, message):
    url = "switch://" + rest.replace("{D}", os.path.join(sockdir, "n"))
    with pytest.raises(URLError, match=message):
        open_link(url)
    assert not os.path.exists(os.path.join(sockdir, "n"))


def test_node_takes_no_nested_url(sockdir):
    with pytest.raises(URLError, match="takes no nested"):
        open_link(f"multi://{sockdir}/m{{vde:///tmp/x}}")


def test_node_modes_and_default_path(sockdir):
    d = os.path.join(sockdir, "n")
    with open_link(f"hub://{d}[mode=0666/dirm=0750]") as node:
        assert stat.S_IMODE(os.stat(os.path.join(d, "ctl")).st_mode) == 0o666
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o750
    assert not os.path.exists(d)
    with open_link(f"hub://{d}[mode=0666]"):
        # vdeplug4's 02777 for mode 0666, plus sticky: nobody else removes our sockets
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o3777
    with open_link(f"hub://{d}"):
        assert stat.S_IMODE(os.stat(d).st_mode) == 0o2700
        assert stat.S_IMODE(os.stat(os.path.join(d, "ctl")).st_mode) == 0o600
    node = open_link("switch://")
    try:
        assert isinstance(node, NetNodeLink) and node.path.startswith("/tmp/vdenode_")
    finally:
        node.close()
    assert not os.path.exists(node.path)


@pytest.mark.root
def test_node_mode_lets_another_user_join(procs, sockdir, unpriv):
    """A root node with ``mode=0666`` takes another user's Debian vde_plug; with the
    default 0600 it does not."""
    need_tool("vde_plug")
    as_user = {"user": unpriv["uid"], "group": unpriv["gid"], "extra_groups": []}
    d = os.path.join(sockdir, "n")
    with open_link(f"hub://{d}") as node:
        shut = procs.popen(["vde_plug", f"vde://{d}"], stdin=subprocess.PIPE,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **as_user)
        wait_for(lambda: _pump(node) or shut.poll() is not None, what="vde_plug to give up")
        assert shut.returncode != 0 and not node.ports
    with open_link(f"hub://{d}[mode=0666]") as node:
        plug = _plug(procs, DEB, f"vde://{d}", "other-user", **as_user)
        wait_for(lambda: _pump(node) or len(node.ports) == 1, what="the other user's port")
        assert node.ports[0].uid == unpriv["uid"]
        f = eth(BROADCAST, H, b"to another user")
        node.send(f)
        plug.expect(f)
        f = eth(BROADCAST, A, b"from another user")
        plug.send(f)
        assert recv_frame(node) == f


_NAME_A_SOCKET = """
import socket, struct, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(sys.argv[1])
s.sendall(struct.pack("=III", 0xfeedface, 3, 0) + struct.pack("=H108s", 1, sys.argv[2].encode())
          + b"not mine")
s.settimeout(5)
print(len(s.recv(200)))
"""


@pytest.mark.root
def test_root_node_will_not_connect_to_another_users_socket(procs, sockdir, unpriv):
    """A user joining a root node must not get it to send frames into a socket that is
    not theirs (vdeplug4's node connects to whatever path the request names)."""
    d = os.path.join(sockdir, "n")
    host = _plug(procs, TN, f"hub://{d}[mode=0666]", "root-hub")
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="the hub")
    victim = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    victim_path = os.path.join(sockdir, "victim")
    victim.bind(victim_path)
    os.chmod(victim_path, 0o600)
    try:
        r = subprocess.run([unpriv["python"], "-c", _NAME_A_SOCKET, os.path.join(d, "ctl"),
                            victim_path], user=unpriv["uid"], group=unpriv["gid"],
                           extra_groups=[], capture_output=True, text=True, timeout=10)
        assert r.stdout.strip() == "0", f"the node answered: {r.stdout} {r.stderr}"
        assert _ports(d) == 0
        host.send(eth(BROADCAST, H, b"for ports only"))
        victim.settimeout(0.3)
        with pytest.raises(TimeoutError):
            victim.recv(100)
    finally:
        victim.close()


def test_second_node_on_a_live_path_is_refused(procs, sockdir):
    d = os.path.join(sockdir, "n")
    with open_link(f"hub://{d}"):
        with pytest.raises(LinkError, match="already serves") as info:
            open_link(f"switch://{d}")
        assert info.value.errno == errno.EADDRINUSE
        assert os.path.exists(os.path.join(d, "ctl")), "the refused opener broke the live node"
    if os.path.exists("/usr/bin/vde_plug"):
        deb = procs.popen(["vde_plug", f"hub://{d}"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="Debian's hub")
        with pytest.raises(LinkError, match="already serves"):
            open_link(f"hub://{d}")
        deb.terminate()
        deb.wait(5)
        # a node whose directory others may write (mode=0666): refused for the same reason
        deb = procs.popen(["vde_plug", f"switch://{d}[mode=0666]"], stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL)
        wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="Debian's switch")
        with pytest.raises(LinkError, match="already serves"):
            open_link(f"switch://{d}")
        deb.terminate()
        deb.wait(5)


def test_node_left_by_a_killed_process_is_reused(procs, sockdir):
    need_tool("vde_plug")
    d = os.path.join(sockdir, "n")
    first = _plug(procs, TN, f"hub://{d}", "doomed")
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="the first node")
    client = _plug(procs, DEB, f"vde://{d}", "client")
    wait_for(lambda: _ports(d) == 1, what="a port")
    first.proc.kill()
    first.proc.wait(5)
    client.proc.wait(5)  # its node is gone: vde_plug ends
    assert os.path.exists(os.path.join(d, "ctl"))
    with open_link(f"hub://{d}") as node:
        again = _plug(procs, DEB, f"vde://{d}", "again")
        wait_for(lambda: _pump(node) or len(node.ports) == 1, what="the port")
        f = eth(BROADCAST, H, b"new node")
        node.send(f)
        again.expect(f)


def test_node_refuses_a_directory_that_is_not_a_dead_node(sockdir):
    d = os.path.join(sockdir, "n")
    os.mkdir(d, 0o700)
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("mine")
    with pytest.raises(LinkError, match="not a node left by this user"):
        open_link(f"hub://{d}")
    assert os.listdir(d) == ["notes.txt"]


def _pump(node) -> bool:
    """Let a node with nobody reading it accept and handshake; False (keep waiting)."""
    node.setblocking(False)
    try:
        node.recv()
    except BlockingIOError:
        pass
    return False


def test_node_queues_for_a_port_that_reads_late(sockdir):
    """A burst larger than the port's socket takes waits in a bounded queue, sent as the
    port reads; beyond the bound frames are dropped, counted."""
    d = os.path.join(sockdir, "n")
    with open_link(f"hub://{d}") as node:
        opened: list = []
        joining = threading.Thread(target=lambda: opened.append(open_link(f"vde://{d}")))
        joining.start()
        wait_for(lambda: _pump(node) or opened, what="the port")  # (the node answers in recv)
        joining.join()
        port = opened[0]
        try:
            burst: list[bytes] = []
            while not node.ports[0].backlog:  # until the port's socket is full
                assert len(burst) < 20000, "the port's socket never filled"
                burst.append(eth(BROADCAST, H, b"%d" % len(burst) + b"." * 1400))
                node.send(burst[-1])
            for _ in range(QLEN // 2):
                burst.append(eth(BROADCAST, H, b"%d" % len(burst) + b"." * 1400))
                node.send(burst[-1])
            got = []
            port.setblocking(False)
            deadline = time.monotonic() + 5
            while len(got) < len(burst) and time.monotonic() < deadline:
                _pump(node)  # the node sends what waits when the port has room
                try:
                    got.append(port.recv())
                except BlockingIOError:
                    time.sleep(0.001)
            assert got == burst and node.ports[0].drops == 0
            while not node.ports[0].drops:  # more than the socket and the queue hold
                assert len(burst) < 40000, "nothing was ever dropped"
                burst.append(eth(BROADCAST, H, b"." * 1400))
                node.send(burst[-1])
            assert len(node.ports[0].backlog) == QLEN
        finally:
            port.close()


# -- vanishing peers --------------------------------------------------------------------------
def test_node_outlives_ports_that_vanish(procs, sockdir):
    need_tool("vde_plug")
    d = os.path.join(sockdir, "n")
    with open_link(f"switch://{d}") as node:
        a = _plug(procs, DEB, f"vde://{d}", "a")
        b = _plug(procs, DEB, f"vde://{d}", "b")
        wait_for(lambda: _pump(node) or len(node.ports) == 2, what="two ports")
        learn = eth(BROADCAST, A, b"learn a")
        a.send(learn)
        assert recv_frame(node) == learn
        b.expect(learn)
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(5)
        wait_for(lambda: _pump(node) or len(node.ports) == 1, what="the dead port removed")
        assert _ports(d) == 1
        assert all(where in node.ports or where is HOST for where, _ in node.fdb.values())
        f = eth(A, H, b"to the dead a: flooded now")
        node.send(f)
        b.expect(f)
        f = eth(BROADCAST, B, b"still here")
        b.send(f)
        assert recv_frame(node) == f
    b.proc.wait(5)  # the node closed: vde_plug's control stream ended


def test_joined_link_sees_debian_node_vanish(procs, sockdir):
    need_tool("vde_plug")
    d = os.path.join(sockdir, "n")
    deb = procs.popen(["vde_plug", f"hub://{d}"], stdin=subprocess.PIPE,
                      stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="Debian's hub")
    link = open_link(f"vde://{d}")
    try:
        deb.kill()
        deb.wait(5)
        with pytest.raises(LinkError):
            link.setblocking(True)
            link.wait_readable(3)
            link.recv()
        assert link.closed_by_peer
    finally:
        link.close()


def test_threadnet_plug_ends_when_its_node_vanishes(procs, sockdir):
    """``threadnet plug vde://D`` on Debian's node: killing the node ends the plug with a
    message, not a traceback."""
    need_tool("vde_plug")
    d = os.path.join(sockdir, "n")
    deb = procs.popen(["vde_plug", f"switch://{d}"], stdin=subprocess.PIPE,
                      stdout=subprocess.DEVNULL)
    wait_for(lambda: os.path.exists(os.path.join(d, "ctl")), what="Debian's switch")
    plug = procs.popen([*TN, f"vde://{d}"], env=threadnet_env(), stdin=subprocess.PIPE,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    wait_for(lambda: _ports(d) == 1, what="the plug's port")
    deb.kill()
    deb.wait(5)
    _, err = plug.communicate(timeout=10)
    assert b"Traceback" not in err


# -- seqpacket:// ------------------------------------------------------------------------------
def _pair() -> tuple[socket.socket, socket.socket]:
    return socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)


def test_seqpacket_with_vde_plug(procs):
    need_tool("vde_plug")
    ours, theirs = _pair()
    plug = _plug(procs, DEB, f"seqpacket://{theirs.fileno()}", "deb",
                 pass_fds=(theirs.fileno(),))
    theirs.close()
    link = open_link(f"seqpacket://{ours.detach()}")
    try:
        for i in range(3):
            f = eth(BROADCAST, A, b"to vde_plug %d" % i)
            link.send(f)
            plug.expect(f)
        big = eth(B, A, b"x" * 1500)
        plug.send(big)
        assert recv_frame(link) == big
        plug.proc.stdin.close()  # vde_plug ends at EOF: its end closes
        plug.proc.wait(5)
        with pytest.raises(LinkError, match="closed its end"):
            link.setblocking(True)
            link.recv()
        assert link.closed_by_peer
        with pytest.raises(LinkError, match="the peer is gone"):
            link.send(eth(BROADCAST, A))
    finally:
        link.close()


def test_seqpacket_threadnet_plug_and_vde_plug_back_to_back(procs):
    need_tool("vde_plug")
    left, right = _pair()
    tn = _plug(procs, TN, f"seqpacket://{left.fileno()}", "tn", pass_fds=(left.fileno(),))
    deb = _plug(procs, DEB, f"seqpacket://0x{right.fileno():x}", "deb",
                pass_fds=(right.fileno(),))
    left.close()
    right.close()
    f = eth(B, A, b"threadnet to Debian")
    tn.send(f)
    deb.expect(f)
    f = eth(A, B, b"Debian to threadnet")
    deb.send(f)
    tn.expect(f)
    deb.proc.kill()
    deb.proc.wait(5)
    assert tn.proc.wait(10) == 0  # the peer vanished: the plug ends, cleanly


def test_seqpacket_stacks_ping(runner):
    left, right = _pair()
    a = Stack("eth,ip=10.83.0.1/24", link=f"seqpacket://{left.detach()}", runner=runner)
    b = Stack("eth,ip=10.83.0.2/24", link=f"seqpacket://{right.detach()}", runner=runner)
    try:
        assert len(a.ping("10.83.0.2", count=3)) == 3
        assert len(b.ping("10.83.0.1", count=2)) == 2
    finally:
        a.close()
        b.close()


def test_seqpacket_skips_an_empty_message():
    ours, theirs = _pair()
    link = open_link(f"seqpacket://{ours.detach()}")
    try:
        theirs.send(b"")  # vdeplug4 never sends one; a read of nothing is EOF only on hang-up
        f = eth(BROADCAST, A, b"after the empty one")
        theirs.send(f)
        assert recv_frame(link) == f
        link.send(b"")  # nor do we: it would read as EOF
        link.send(f)
        theirs.settimeout(2)
        assert theirs.recv(100) == f
    finally:
        link.close()
        theirs.close()


@pytest.mark.parametrize("url, message", [
    ("seqpacket://", "expected seqpacket://FD"),
    ("seqpacket://three", "expected seqpacket://FD"),
    ("seqpacket://-1", "expected seqpacket://FD"),
    ("seqpacket://3x", "expected seqpacket://FD"),
    ("seqpacket:///tmp/sock", "expected seqpacket://FD"),
    ("seqpacket://3{vde:///tmp/sw}", "takes no nested"),
])
def test_seqpacket_bad_urls(url, message):
    with pytest.raises(URLError, match=message):
        open_link(url)


def test_seqpacket_refuses_descriptors_that_do_not_fit():
    r, w = os.pipe()
    dgram = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0tn-seqpacket-test-%d" % os.getpid())
    listener.listen()
    try:
        for fd, message in [(r, "is not a socket"), (dgram.fileno(), "not an AF_UNIX SOCK_SEQPACKET"),
                            (listener.fileno(), "listening socket")]:
            with pytest.raises(LinkError, match=message):
                open_link(f"seqpacket://{fd}")
            os.fstat(fd)  # refused, and left open for its owner
        closed = os.dup(r)
        os.close(closed)
        with pytest.raises(LinkError, match="is not open") as info:
            open_link(f"seqpacket://0{closed:o}")  # octal, as strtol reads it
        assert info.value.errno == errno.EBADF
    finally:
        os.close(r)
        os.close(w)
        dgram.close()
        listener.close()


def test_seqpacket_octal_and_hex_numbers():
    for form in ("{:d}", "0{:o}", "0x{:x}", "0X{:X}"):
        ours, theirs = _pair()
        link = open_link("seqpacket://" + form.format(ours.detach()))
        try:
            link.send(eth(BROADCAST, A, form.encode()))
            theirs.settimeout(2)
            assert form.encode() in theirs.recv(100)
        finally:
            link.close()
            theirs.close()
