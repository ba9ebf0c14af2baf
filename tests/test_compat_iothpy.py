"""threadnet.compat.iothpy: iothpy's API on threadnet stacks.

The example programs (examples/iothpy_echo_*.py, written against iothpy's API with only
the import line changed) run as two processes on a ``threadnet switch``. The unit tests
check each method's behaviour and errors in-process.
"""

from __future__ import annotations

import ast
import errno
import http.server
import ipaddress
import os
import socket
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import threadnet
import threadnet.compat.iothpy as iothpy
from threadnet.hook import _ORIG_SOCKET, hook_installed, uninstall_hook
from threadnet.stack import autoconf
from threadnet.stack.socket import StackSocket
from threadnet.switch.server import SwitchServer

from conftest import threadnet_env, wait_for

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
SERVER = EXAMPLES / "iothpy_echo_server.py"
CLIENT = EXAMPLES / "iothpy_echo_client.py"


@pytest.fixture
def stacks():
    """Make iothpy Stacks that are all closed at teardown."""
    made: list[iothpy.Stack] = []

    def make(*args, **kw) -> iothpy.Stack:
        s = iothpy.Stack(*args, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


@pytest.fixture
def switch_url(sockdir):
    """An in-process threadnet switch; its vde:// URL."""
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    yield f"vde://{sw.directory}"
    sw.close()


def oserror(excinfo) -> int:
    assert isinstance(excinfo.value, OSError)
    return excinfo.value.errno


# -- the example programs, as separate processes on a real `threadnet switch` -----------------
def _threadnet_names(path: Path) -> list[str]:
    """Every import and name in the program's code that refers to threadnet."""
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import | ast.ImportFrom):
            mod = getattr(node, "module", None) or ""
            for alias in node.names:
                full = f"{mod}.{alias.name}" if mod else alias.name
                if "threadnet" in full:
                    found.append(f"import {full} as {alias.asname}")
        elif isinstance(node, ast.Name) and "threadnet" in node.id:
            found.append(node.id)
    return found


@pytest.mark.parametrize("path", [SERVER, CLIENT], ids=lambda p: p.name)
def test_examples_use_only_iothpys_api(path):
    """The examples are iothpy programs: threadnet appears only as the module they import
    under the name ``iothpy``."""
    assert _threadnet_names(path) == ["import threadnet.compat.iothpy as iothpy"]


class _Output:
    """A child's stdout, collected by a thread (no buffered-pipe-vs-select pitfalls)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.text = ""
        self._cond = threading.Condition()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        for line in self.proc.stdout:
            with self._cond:
                self.text += line
                self._cond.notify_all()

    def wait_for(self, text: str, timeout: float) -> str:
        with self._cond:
            if not self._cond.wait_for(lambda: text in self.text, timeout):
                raise AssertionError(f"no {text!r} from {self.proc.args}: {self.text!r}")
            return self.text


def test_example_echo_server_and_client_on_threadnet_switch(threadnet_switch, procs):
    """iothpy's README echo server and client, two processes on one `threadnet switch`:
    the server configured with the netlink-style calls, the client with a newstackc string
    and override_socket_module + plain socket.socket and select.poll."""
    directory, _, _ = threadnet_switch()
    wait_for(lambda: os.path.exists(os.path.join(directory, "ctl")), what="switch ctl")
    url = f"vde://{directory}"
    env = threadnet_env({"PYTHONUNBUFFERED": "1"})
    server = procs.popen([sys.executable, str(SERVER), url], stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, env=env)
    output = _Output(server)
    banner = output.wait_for("Listening on 10.0.0.1:5000", 20)
    assert "MAC 80:00:42:0e:e7:3a" in banner  # linksetaddr took effect
    lines = [f"line {i} from the iothpy client" for i in range(20)]
    client = subprocess.run([sys.executable, str(CLIENT), url], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, env=env, timeout=60)
    assert client.returncode == 0, client.stderr
    out = client.stdout.splitlines()
    assert out[0].startswith("Connected to server at ('10.0.0.1', 5000) from ('10.0.0.2', ")
    assert out[1:-1] == lines  # every line echoed, in order
    assert out[-1] == "Server closed the connection"
    log = output.wait_for("Connection closed by ('10.0.0.2'", 10)
    assert "New connection from ('10.0.0.2'" in log and "Got: line 0" in log
    assert server.poll() is None  # it keeps serving; procs ends it by PID


# -- construction -------------------------------------------------------------------------------
def test_vdeurl_forms_name_interfaces_vde0_vde1(stacks):
    s = stacks("vdestack", "null://")
    assert s.if_nametoindex("vde0") == 2 and s.if_nameindex() == [(1, "lo"), (2, "vde0")]
    s = stacks("picox", b"null://")
    assert s.if_indextoname(2) == "vde0"
    s = stacks("vdestack", ["null://", "null://"])
    assert s.if_nameindex() == [(1, "lo"), (2, "vde0"), (3, "vde1")]
    assert s.if_nametoindex("vde1") == 3 and s.if_nametoindex(b"vde1") == 3
    assert isinstance(s.threadnet_stack, threadnet.Stack)
    assert stacks("vdestack", []).if_nameindex() == [(1, "lo")]
    assert stacks("vdestack").if_nameindex() == [(1, "lo")]  # a bare name: no interface


def test_newstackc_string(stacks):
    # iothpy's own example has spaces and a gw with a prefix length
    s = stacks("stack=vdestack,vnl=null://,eth, ip=10.0.0.1/24, gw=10.0.0.254/24")
    ts = s.threadnet_stack
    vde0 = ts.interfaces[s.if_nametoindex("vde0")]
    assert vde0.up and ts.addresses(4) == ["127.0.0.1/8", "10.0.0.1/24"]
    default = [r for r in ts.routes4 if r.dst.prefixlen == 0]
    assert [str(r.gateway) for r in default] == ["10.0.0.254"]
    s = stacks("stack=picox,vnl=null://,eth,ip=fc00::7,mac=02:00:00:00:00:07")
    assert "fc00::7/64" in [f"{ipaddress.ip_address(a.addr)}/{a.plen}"
                            for a in s.threadnet_stack.interfaces[2].v6]
    assert s.linkgetaddr(2) == bytes.fromhex("020000000007")


@pytest.mark.parametrize("args, exc, code", [
    (("vdestack", 5), ValueError, None),
    (("vdestack", ["null://", 5]), ValueError, None),
    ((b"vdestack", "null://"), TypeError, None),
    (("vdestack,opt", "null://"), ValueError, None),
    (("nosuchstack", "null://"), OSError, errno.ENOENT),
    (("stack=nosuchstack,vnl=null://",), OSError, errno.ENOENT),
    (("vdestack", "nosuchscheme://x"), OSError, errno.EINVAL),
    (("vdestack", "vde:///nonexistent/switch"), OSError, errno.ENOENT),
    (("stack=vdestack,eth,ip=10.0.0.1/24",), OSError, errno.ENODEV),  # no vnl: no vde0
    (("stack=vdestack,vnl=null://,bogus",), OSError, errno.EINVAL),
    (("stack=vdestack,vnl=null://,eth,ip=10.0.0.300/24",), OSError, errno.EINVAL),
])
def test_constructor_errors(args, exc, code):
    with pytest.raises(exc) as info:
        iothpy.Stack(*args)
    if code is not None:
        assert oserror(info) == code


def test_a_method_threadnet_lacks_is_refused_and_dhcp_starts_a_client(monkeypatch, stacks):
    s = stacks("stack=vdestack,vnl=null://,eth,dhcp")
    assert [a.kind for a in s.threadnet_stack.agents] == ["dhcp4"]
    monkeypatch.setattr(autoconf, "CLIENTS", {})  # a method without an agent
    with pytest.raises(NotImplementedError):
        iothpy.Stack("stack=vdestack,vnl=null://,dhcp")


# -- interfaces --------------------------------------------------------------------------------
def test_interface_names_and_indexes(stacks):
    s = stacks("vdestack", "null://")
    for bad in ("nope", "2", ""):
        with pytest.raises(OSError) as info:
            s.if_nametoindex(bad)
        assert oserror(info) == errno.ENODEV
    with pytest.raises(OSError) as info:
        s.if_indextoname(99)
    assert oserror(info) == errno.ENXIO
    with pytest.raises(TypeError):
        s.if_indextoname("2")


@pytest.mark.parametrize("call", [
    lambda s: s.linksetupdown(99, 1),
    lambda s: s.linksetaddr(99, "02:00:00:00:00:01"),
    lambda s: s.linkgetaddr(99),
    lambda s: s.linksetmtu(99, 1400),
    lambda s: s.ipaddr_add(iothpy.AF_INET, "10.0.0.1", 24, 99),
    lambda s: s.ipaddr_del(iothpy.AF_INET, "10.0.0.1", 24, 99),
    lambda s: s.iproute_add(iothpy.AF_INET, "10.0.0.254", ifindex=99),
    lambda s: s.iproute_del(iothpy.AF_INET, "10.0.0.254", ifindex=99),
    lambda s: s.iplink_del(ifindex=99),
    lambda s: s.ioth_config("ifindex=99,eth"),
], ids=["linksetupdown", "linksetaddr", "linkgetaddr", "linksetmtu", "ipaddr_add",
        "ipaddr_del", "iproute_add", "iproute_del", "iplink_del", "ioth_config"])
def test_bad_index_is_enodev(stacks, call):
    s = stacks("vdestack", "null://")
    with pytest.raises(OSError) as info:
        call(s)
    assert oserror(info) == errno.ENODEV


def test_link_calls(stacks):
    s = stacks("vdestack", "null://")
    ts = s.threadnet_stack
    i = s.if_nametoindex("vde0")
    s.linksetupdown(i, 1)
    assert ts.interfaces[i].up
    s.linksetupdown(i, False)
    assert not ts.interfaces[i].up
    s.linksetupdown(i, True)
    with pytest.raises(TypeError):
        s.linksetupdown("2", 1)
    for mac in ("80:00:42:0e:e7:3a", "8000420ee73a", b"\x80\x00\x42\x0e\xe7\x3a",
                bytearray.fromhex("8000420ee73a")):
        s.linksetaddr(i, mac)
        assert s.linkgetaddr(i) == b"\x80\x00\x42\x0e\xe7\x3a"
        s.linksetaddr(i, "02:00:00:00:00:01")
    assert ts.interfaces[i].mac == bytes.fromhex("020000000001")
    for bad in ("80:00:42:0e:e7", b"\x01" * 7, "zz:00:42:0e:e7:3a"):
        with pytest.raises(ValueError):
            s.linksetaddr(i, bad)
    with pytest.raises(TypeError):
        s.linksetaddr(i, 0x02)
    with pytest.raises(OSError) as info:
        s.linksetaddr(i, "01:00:5e:00:00:01")  # multicast
    assert oserror(info) == errno.EADDRNOTAVAIL
    with pytest.raises(OSError) as info:
        s.linksetaddr(1, "02:00:00:00:00:01")
    assert oserror(info) == errno.EOPNOTSUPP
    assert s.linkgetaddr(1) == bytes(6)
    s.linksetmtu(i, 1400)
    assert ts.interfaces[i].mtu == 1400
    for bad in (67, 65536):
        with pytest.raises(OSError) as info:
            s.linksetmtu(i, bad)
        assert oserror(info) == errno.EINVAL
    s.linksetmtu(1, 65535)


def test_mtu_limit_is_the_stacks(stacks, switch_url):
    """linksetmtu and ioth_config's mtu= allow what the stack's set_mtu allows: up to the
    link's max_mtu when the link knows it (vde://: 1500), else up to 65535 (null:// here,
    like a tap, whose kernel device decides). They used to take max_frame - 18 always,
    which refused a tap's jumbo MTU the stack itself accepts."""
    vde = stacks(f"stack=vdestack,vnl={switch_url}")
    ts = vde.threadnet_stack
    i = vde.if_nametoindex("vde0")
    assert ts.links[i].max_mtu == 1500
    vde.linksetmtu(i, 1500)
    for bad in (1501, 9000, 67):
        with pytest.raises(OSError) as info:
            vde.linksetmtu(i, bad)
        assert oserror(info) == errno.EINVAL
        with pytest.raises(OSError) as info:
            vde.ioth_config(f"ifindex={i},mtu={bad}")
        assert oserror(info) == errno.EINVAL
        with pytest.raises(ValueError):  # and the stack's own API agrees
            ts.set_mtu(i, bad)
    assert ts.interfaces[i].mtu == 1500
    null = stacks("vdestack", "null://")
    ts = null.threadnet_stack
    i = null.if_nametoindex("vde0")
    assert ts.links[i].max_mtu is None
    null.linksetmtu(i, 9000)
    assert ts.interfaces[i].mtu == 9000
    null.ioth_config(f"ifindex={i},mtu=65535")
    assert ts.interfaces[i].mtu == 65535
    ts.set_mtu(i, 9000)  # the stack's own API agrees


# -- addresses and routes -------------------------------------------------------------------------
def test_ipaddr_add_del(stacks):
    s = stacks("vdestack", "null://")
    ts = s.threadnet_stack
    i = s.if_nametoindex("vde0")
    s.ipaddr_add(iothpy.AF_INET, "10.1.0.1", 24, i)
    s.ipaddr_add(iothpy.AF_INET, "10.1.0.2", 24, i)
    s.ipaddr_add(iothpy.AF_INET6, "fc00:1::1", 64, i)
    assert ["10.1.0.1", "10.1.0.2"] == [str(ipaddress.ip_address(a)) for a, _ in ts.interfaces[i].v4]
    with pytest.raises(OSError) as info:
        s.ipaddr_add(iothpy.AF_INET, "10.1.0.1", 24, i)
    assert oserror(info) == errno.EEXIST
    with pytest.raises(ValueError):
        s.ipaddr_add(socket.AF_UNIX, "10.1.0.1", 24, i)
    with pytest.raises(ValueError):
        s.ipaddr_add(iothpy.AF_INET, "10.1.0.256", 24, i)
    with pytest.raises(ValueError):
        s.ipaddr_add(iothpy.AF_INET, "fc00::1", 64, i)  # the family says IPv4
    with pytest.raises(OSError) as info:
        s.ipaddr_add(iothpy.AF_INET, "10.1.0.9", 33, i)
    assert oserror(info) == errno.EINVAL
    with pytest.raises(OSError) as info:
        s.ipaddr_del(iothpy.AF_INET, "10.1.0.1", 16, i)  # the prefix length must match
    assert oserror(info) == errno.EADDRNOTAVAIL

    def connected() -> list[str]:
        return [str(r.dst) for r in ts.routes4 if r.ifindex == i and r.proto == "kernel"]

    assert connected() == ["10.1.0.0/24"]
    s.ipaddr_del(iothpy.AF_INET, "10.1.0.1", 24, i)
    assert connected() == ["10.1.0.0/24"]  # 10.1.0.2 still uses it
    s.ipaddr_del(iothpy.AF_INET, "10.1.0.2", 24, i)
    assert connected() == [] and ts.interfaces[i].v4 == []  # gone with the last address
    s.ipaddr_del(iothpy.AF_INET6, "fc00:1::1", 64, i)
    assert not [r for r in ts.routes6 if str(r.dst) == "fc00:1::/64"]


def test_iproute_add_del(stacks):
    s = stacks("vdestack", "null://")
    ts = s.threadnet_stack
    i = s.if_nametoindex("vde0")
    s.linksetupdown(i, 1)
    s.ipaddr_add(iothpy.AF_INET, "10.2.0.1", 24, i)
    with pytest.raises(OSError) as info:
        s.iproute_add(iothpy.AF_INET, "10.9.9.9")  # not on a connected network
    assert oserror(info) == errno.ENETUNREACH
    s.iproute_add(iothpy.AF_INET, "10.2.0.254")
    with pytest.raises(OSError) as info:
        s.iproute_add(iothpy.AF_INET, "10.2.0.254")
    assert oserror(info) == errno.EEXIST
    s.iproute_add(iothpy.AF_INET, "10.2.0.253", "192.168.0.0", 16)
    s.iproute_add(iothpy.AF_INET, "10.2.0.252", dst_addr="172.16.0.0", dst_prefix=12, ifindex=i)
    routes = {str(r.dst): (str(r.gateway), r.ifindex) for r in ts.routes4 if r.proto == "static"}
    assert routes == {"0.0.0.0/0": ("10.2.0.254", i), "192.168.0.0/16": ("10.2.0.253", i),
                      "172.16.0.0/12": ("10.2.0.252", i)}
    with pytest.raises(OSError) as info:
        s.iproute_add(iothpy.AF_INET, "10.2.0.253", "192.168.1.0", 16)  # host bits
    assert oserror(info) == errno.EINVAL
    with pytest.raises(ValueError):
        s.iproute_add(iothpy.AF_INET, None)  # neither gateway nor interface
    with pytest.raises(ValueError):
        s.iproute_add(iothpy.AF_INET, "10.2.0.254", dst_prefix=8)
    with pytest.raises(ValueError):
        s.iproute_add(iothpy.AF_INET6, "10.2.0.254")
    s.iproute_add(iothpy.AF_INET, None, "10.3.0.0", 16, i)  # on-link
    s.iproute_add(iothpy.AF_INET6, "fe80::1", ifindex=i)  # a link-local gateway
    assert [(str(r.dst), str(r.gateway)) for r in ts.routes6 if r.proto == "static"] == \
        [("::/0", "fe80::1")]

    s.iproute_del(iothpy.AF_INET, "10.2.0.253", "192.168.0.0", 16)
    with pytest.raises(OSError) as info:
        s.iproute_del(iothpy.AF_INET, "10.2.0.253", "192.168.0.0", 16)
    assert oserror(info) == errno.ESRCH
    with pytest.raises(OSError) as info:
        s.iproute_del(iothpy.AF_INET, "10.2.0.1")  # no default route via that gateway
    assert oserror(info) == errno.ESRCH
    s.iproute_del(iothpy.AF_INET, "10.2.0.254")
    s.iproute_del(iothpy.AF_INET6, "fe80::1", ifindex=i)
    assert {str(r.dst) for r in ts.routes4 if r.proto == "static"} == {"172.16.0.0/12",
                                                                         "10.3.0.0/16"}


# -- links --------------------------------------------------------------------------------------
def test_iplink_add_del(stacks):
    s = stacks("vdestack", "null://")
    ts = s.threadnet_stack
    assert s.iplink_add(-1, "vde", "null://") == 3
    assert s.if_indextoname(3) == "vde1"
    assert s.iplink_add(0, "vde", [(1, "null://")], "eth9") == 4  # iothpy's (tag, data) list
    assert s.iplink_add(10, "vde", "null://") == 10 and s.if_indextoname(10) == "vde2"
    assert s.iplink_add_vde(-1, "null://", "tn0") == s.if_nametoindex("tn0")
    for args, code in [((10, "vde", "null://"), errno.EEXIST),
                       ((-1, "vde", "null://", "eth9"), errno.EEXIST),
                       ((-1, "veth", "peer"), errno.EOPNOTSUPP),
                       ((-1, "vde", "nosuchscheme://"), errno.EINVAL)]:
        with pytest.raises(OSError) as info:
            s.iplink_add(*args)
        assert oserror(info) == code, args
    with pytest.raises(ValueError):
        s.iplink_add(-1, "vde", None)
    before = s.if_nameindex()
    with pytest.raises(OSError):
        s.iplink_add(-1, "vde", "vde:///nonexistent/switch")
    assert s.if_nameindex() == before  # nothing half-added

    link = ts.links[4]
    s.ipaddr_add(iothpy.AF_INET, "10.4.0.1", 24, 4)
    s.iproute_add(iothpy.AF_INET, "10.4.0.254", "10.5.0.0", 16)
    assert s.iplink_del(ifname="eth9") == 0
    assert link.closed and 4 not in ts.interfaces
    assert not [r for r in ts.routes4 if r.ifindex == 4]
    with pytest.raises(OSError) as info:
        s.if_nametoindex("eth9")
    assert oserror(info) == errno.ENODEV
    assert s.iplink_del("vde1", 3) == 0  # positional, both agreeing
    assert s.iplink_del(ifindex=10) == 0
    for kw, code in [({}, errno.EINVAL), ({"ifname": "tn0", "ifindex": 2}, errno.EINVAL),
                     ({"ifname": "nope"}, errno.ENODEV), ({"ifindex": 1}, errno.EOPNOTSUPP)]:
        with pytest.raises(OSError) as info:
            s.iplink_del(**kw)
        assert oserror(info) == code, kw
    assert s.if_nameindex() == [(1, "lo"), (2, "vde0"), (s.if_nametoindex("tn0"), "tn0")]


def test_iplink_add_carries_traffic(stacks, switch_url):
    """A stack made with no interface gets one by iplink_add and talks through it."""
    a = stacks("vdestack")
    b = stacks(f"stack=vdestack,vnl={switch_url},eth,ip=10.6.0.2/24")
    i = a.iplink_add(-1, "vde", switch_url)
    a.ioth_config(f"ifindex={i},eth,ip=10.6.0.1/24")
    assert a.threadnet_stack.ping("10.6.0.2", count=1, timeout=5)
    assert b.threadnet_stack.ping("10.6.0.1", count=1, timeout=5)


# -- iothconf ---------------------------------------------------------------------------------------
def test_ioth_config(stacks, monkeypatch):
    s = stacks("vdestack", "null://")
    ts = s.threadnet_stack
    vde0 = ts.interfaces[2]

    def state():
        return (vde0.up, ts.addresses(4)[1:], sorted(a for a in ts.addresses(6) if ":" in a
                                                     and not a.startswith(("fe80", "::1"))),
                sorted(str(r.gateway) for r in (*ts.routes4, *ts.routes6) if r.dst.prefixlen == 0))

    assert s.ioth_config("eth,ip=10.7.0.5,gw=10.7.0.1") is None
    assert state() == (True, ["10.7.0.5/24"], [], ["10.7.0.1"])  # iothconf's default /24
    s.ioth_config("eth,ip=10.7.0.5,gw=10.7.0.1")  # the same again: nothing to change
    assert state() == (True, ["10.7.0.5/24"], [], ["10.7.0.1"])
    vde0.v6.clear()  # (no DAD to wait for: the test reads addresses, not their state)
    s.ioth_config("ip=fc00:7::5,ip=10.7.1.5/16")  # a new static set replaces the old one
    assert (state()[1], [f"{ipaddress.ip_address(a.addr)}/{a.plen}" for a in vde0.v6],
            state()[3]) == (["10.7.1.5/16"], ["fc00:7::5/64"], [])
    s.ioth_config("-static")
    assert ts.addresses(4)[1:] == [] and vde0.v6 == []
    s.ioth_config("-eth")
    assert not vde0.up
    s.ioth_config("iface=vde0,eth,mac=02:11:22:33:44:55")
    assert vde0.up and vde0.mac == bytes.fromhex("021122334455")
    # eth with an fqdn and no mac: iothconf's hash MAC, octets 0-2 and 5-7 of
    # md5("host.example.org") = ca170abc5a62292f..., locally administered unicast
    s.ioth_config("eth,fqdn=host.example.org.")
    assert vde0.mac == bytes.fromhex("ca170a62292f")
    s.ioth_config("ifindex=2,eth,mtu=1400")
    assert vde0.mtu == 1400
    for bad, code in [("", errno.EINVAL), ("eth,bogus", errno.EINVAL),
                      ("stack=vdestack", errno.EINVAL), ("vnl=null://", errno.EINVAL),
                      ("ip=10.7.0.300/24", errno.EINVAL), ("gw=nonsense", errno.EINVAL),
                      ("iface=nope,eth", errno.ENODEV), ("eth,mtu=67", errno.EINVAL),
                      ("eth,mtu=65536", errno.EINVAL)]:
        with pytest.raises(OSError) as info:
            s.ioth_config(bad)
        assert oserror(info) == code, bad
    with monkeypatch.context() as mp:
        mp.setattr(autoconf, "CLIENTS", {})  # methods threadnet has no agent for
        for dynamic in ("dhcp", "dhcp6", "rd", "slaac", "auto", "auto4"):
            with pytest.raises(NotImplementedError):
                s.ioth_config(dynamic)
    s.ioth_config("-dhcp,-rd6")  # undoing what was never done is fine
    with pytest.raises(TypeError):
        s.ioth_config(None)


def test_ioth_config_needs_vde0_by_default(stacks):
    s = stacks("vdestack")
    s.iplink_add(-1, "vde", "null://", "eth0")
    with pytest.raises(OSError) as info:
        s.ioth_config("eth,ip=10.8.0.1/24")
    assert oserror(info) == errno.ENODEV
    s.ioth_config("iface=eth0,eth,ip=10.8.0.1/24")
    assert s.threadnet_stack.addresses(4) == ["127.0.0.1/8", "10.8.0.1/24"]


def test_ioth_resolvconf(stacks):
    s = stacks("vdestack", "null://")
    assert s.ioth_resolvconf(None) is None  # nothing configured
    s.ioth_config("eth,dns=10.0.0.53,dns=fc00::53,domain=example.org")
    assert s.ioth_resolvconf(None) == ("search example.org\n"
                                       "nameserver 10.0.0.53\nnameserver fc00::53\n")
    assert s.ioth_resolvconf("") is None  # unchanged since the last call
    s.ioth_config("dns=10.0.0.53,dns=fc00::53,domain=example.org")
    assert s.ioth_resolvconf("iface=vde0") is None  # the same data again
    s.ioth_config("dns=10.0.0.54")
    assert s.ioth_resolvconf("ifindex=2") == "nameserver 10.0.0.54\n"
    for bad in ("eth", "bogus=1", "dns=10.0.0.1"):
        with pytest.raises(OSError) as info:
            s.ioth_resolvconf(bad)
        assert oserror(info) == errno.EINVAL
    with pytest.raises(OSError) as info:
        s.ioth_resolvconf("iface=nope")
    assert oserror(info) == errno.ENODEV


# -- name resolution -------------------------------------------------------------------------------
def test_resolver_calls_go_to_the_threadnet_stack(stacks, monkeypatch, tmp_path):
    """config_dns and iothdns_update take a path (with a '/') or resolv.conf text; the
    queries are the threadnet stack's, with iothpy's enum conversion."""
    calls: list[tuple] = []
    monkeypatch.setattr(threadnet.Stack, "resolv_conf",
                        lambda self, text: calls.append(("resolv_conf", self, text)),
                        raising=False)
    monkeypatch.setattr(threadnet.Stack, "getaddrinfo",
                        lambda self, *a: calls.append(("gai", a)) or [
                            (2, 1, 6, "", ("10.0.0.9", 80))], raising=False)
    monkeypatch.setattr(threadnet.Stack, "getnameinfo",
                        lambda self, *a: calls.append(("gni", a)) or ("www", "http"),
                        raising=False)
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 10.0.0.53\n")
    s = stacks("vdestack", "null://", config_dns=str(conf))
    assert calls == [("resolv_conf", s.threadnet_stack, "nameserver 10.0.0.53\n")]
    calls.clear()
    s.iothdns_update("nameserver 10.0.0.54\nsearch example.org")
    assert calls == [("resolv_conf", s.threadnet_stack, "nameserver 10.0.0.54\nsearch example.org")]
    calls.clear()
    info = s.getaddrinfo("www.example.org", 80, type=socket.SOCK_STREAM)
    assert info == [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.9", 80))]
    assert isinstance(info[0][0], socket.AddressFamily) and isinstance(info[0][1], socket.SocketKind)
    assert calls == [("gai", ("www.example.org", 80, 0, socket.SOCK_STREAM, 0, 0))]
    assert s.getnameinfo(("10.0.0.9", 80), 0) == ("www", "http")
    calls.clear()
    stacks("vdestack", "null://")  # config_dns=None: iothdns reads /etc/resolv.conf
    if os.path.exists("/etc/resolv.conf"):
        assert [c[2] for c in calls] == [Path("/etc/resolv.conf").read_text()]
    with pytest.raises(FileNotFoundError):
        iothpy.Stack("vdestack", "null://", config_dns=str(tmp_path / "missing.conf"))


# -- sockets ------------------------------------------------------------------------------------------
def test_sockets_between_two_stacks(stacks, switch_url):
    a = stacks("vdestack", switch_url)
    i = a.if_nametoindex("vde0")
    a.linksetupdown(i, 1)
    a.ipaddr_add(iothpy.AF_INET, "10.9.0.1", 24, i)
    b = stacks(f"stack=vdestack,vnl={switch_url},eth,ip=10.9.0.2/24")

    srv = a.socket(iothpy.AF_INET, iothpy.SOCK_STREAM)
    assert isinstance(srv, socket.socket) and isinstance(srv, iothpy.MSocket)
    assert srv.stack is a and srv.family == socket.AF_INET and srv.type == socket.SOCK_STREAM
    srv.bind(("", 5000))
    srv.listen(1)
    got = {}

    def serve() -> None:
        conn, addr = srv.accept()
        got["conn"], got["addr"] = conn, addr
        with conn:
            while data := conn.recv(1024):
                conn.sendall(data.upper())

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with b.socket() as c:  # iothpy's defaults: AF_INET, SOCK_STREAM
        assert c.type == socket.SOCK_STREAM
        c.settimeout(10)
        c.connect(("10.9.0.1", 5000))
        c.sendall(b"hello iothpy")
        assert c.recv(100) == b"HELLO IOTHPY"
        with c.makefile("rwb") as f:  # the stdlib's makefile on an MSocket
            f.write(b"line\n")
            f.flush()
            assert f.readline() == b"LINE\n"
    t.join(10)
    assert isinstance(got["conn"], iothpy.MSocket) and got["conn"].stack is a
    assert got["addr"][0] == "10.9.0.2"

    u1 = a.socket(iothpy.AF_INET, iothpy.SOCK_DGRAM)
    u1.bind(("10.9.0.1", 5353))
    u2 = b.socket(iothpy.AF_INET, iothpy.SOCK_DGRAM)
    u2.settimeout(10)
    u1.settimeout(10)
    u2.sendto(b"ping", ("10.9.0.1", 5353))
    data, peer = u1.recvfrom(100)
    u1.sendto(data + b"-pong", peer)
    assert u2.recvfrom(100) == (b"ping-pong", ("10.9.0.1", 5353))
    u1.close()
    u2.close()
    srv.close()


def test_accept_after_the_client_sent_and_closed(stacks, switch_url):
    """Data and FIN that arrive before accept() reach the accepted socket. (The echo
    example's client can send and half-close before its server accepts; the accepted
    socket used to read EOF with no data, and the server then reset the connection.)"""
    a = stacks(f"stack=vdestack,vnl={switch_url},eth,ip=10.11.0.1/24")
    b = stacks(f"stack=vdestack,vnl={switch_url},eth,ip=10.11.0.2/24")
    srv = a.socket()
    srv.bind(("", 7))
    srv.listen(8)
    clients = []
    for i in range(5):
        c = b.socket()
        c.settimeout(10)
        c.connect(("10.11.0.1", 7))
        c.sendall(b"%d" % i * 151)
        c.shutdown(socket.SHUT_WR)
        clients.append(c)
    wait_for(lambda: [ep.conn.state for ep in srv._listener.ready] == ["CLOSE-WAIT"] * 5,
             what="five connections with data and FIN, not yet accepted")
    for i in range(5):
        conn, _ = srv.accept()
        with conn:
            got = b""
            while data := conn.recv(1024):
                got += data
        assert got == b"%d" % i * 151
    for c in clients:
        c.close()
    srv.close()


def test_socket_arguments(stacks):
    s = stacks("vdestack", "null://")
    with pytest.raises(NotImplementedError):
        s.socket(fileno=5)
    with pytest.raises(OSError) as info:
        s.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    assert oserror(info) == errno.EAFNOSUPPORT
    with pytest.raises(TypeError):
        iothpy.MSocket(s.threadnet_stack)  # an MSocket needs an iothpy Stack
    sock = iothpy.MSocket(s, iothpy.AF_INET6, iothpy.SOCK_DGRAM)
    assert sock.family == socket.AF_INET6 and sock.type == socket.SOCK_DGRAM
    with pytest.raises(NotImplementedError):
        sock.dup()
    sock.close()
    old = socket.getdefaulttimeout()
    iothpy.setdefaulttimeout(3.5)
    try:
        with s.socket() as sock:
            assert sock.gettimeout() == 3.5  # one default for kernel and stack sockets
    finally:
        iothpy.setdefaulttimeout(old)
    s.close()
    with pytest.raises(OSError) as info:
        s.socket()
    assert oserror(info) == errno.EBADF
    with pytest.raises(OSError) as info:
        s.ipaddr_add(iothpy.AF_INET, "10.0.0.1", 24, 2)
    assert oserror(info) == errno.EBADF


# -- override_socket_module ------------------------------------------------------------------------------
def test_override_socket_module_serves_stdlib_servers(stacks, switch_url):
    """iothpy's vhttp.py pattern: after override_socket_module, socketserver/http.server
    listen on the stack; override_socket_module(None) gives the kernel back."""
    was_installed = hook_installed()
    server_stack = stacks(f"stack=vdestack,vnl={switch_url},eth,ip=10.10.0.1/24")
    client_stack = stacks(f"stack=vdestack,vnl={switch_url},eth,ip=10.10.0.2/24")

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            body = f"hello {self.client_address[0]}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    with pytest.raises(TypeError):
        iothpy.override_socket_module(server_stack.threadnet_stack)
    iothpy.override_socket_module(server_stack)
    try:
        assert threadnet.get_default_stack() is server_stack.threadnet_stack
        httpd = socketserver.TCPServer(("", 8000), Hello)
        assert isinstance(httpd.socket, StackSocket)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        with client_stack.socket() as c:
            c.settimeout(10)
            c.connect(("10.10.0.1", 8000))
            c.sendall(b"GET / HTTP/1.0\r\n\r\n")
            reply = b""
            while data := c.recv(4096):
                reply += data
        assert reply.startswith(b"HTTP/1.0 200") and reply.endswith(b"hello 10.10.0.2")
        httpd.shutdown()
        httpd.server_close()
    finally:
        iothpy.override_socket_module(None)
        if not was_installed:
            uninstall_hook()
    assert threadnet.get_default_stack() is None
    with socket.socket() as k:
        assert not isinstance(k, StackSocket)  # the kernel's again


# -- the kernel stack --------------------------------------------------------------------------------------
def test_kernel_stack_is_the_hosts(stacks):
    k = stacks("kernel")
    assert k.threadnet_stack is None
    assert stacks("kernel", "vde:///ignored/by/the/kernel/plugin").threadnet_stack is None
    with k.socket() as srv, k.socket(iothpy.AF_INET, iothpy.SOCK_STREAM) as c:
        assert isinstance(srv, _ORIG_SOCKET) and not isinstance(srv, StackSocket)
        assert srv.stack is k
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        c.connect(srv.getsockname())
        conn, _ = srv.accept()
        with conn:
            c.sendall(b"kernel")
            assert conn.recv(10) == b"kernel"
    lo = socket.if_nametoindex("lo")
    assert k.if_nametoindex("lo") == lo and k.if_indextoname(lo) == "lo"
    assert k.if_nameindex() == socket.if_nameindex()
    assert k.linkgetaddr(lo) == bytes(6)
    assert k.getaddrinfo("127.0.0.1", 80, iothpy.AF_INET, iothpy.SOCK_STREAM)[0][4] == \
        ("127.0.0.1", 80)
    for call in (lambda: k.linksetupdown(lo, 1), lambda: k.ipaddr_add(iothpy.AF_INET, "10.0.0.1", 8, lo),
                 lambda: k.iproute_add(iothpy.AF_INET, "10.0.0.254"), lambda: k.ioth_config("eth"),
                 lambda: k.iplink_add(-1, "vde", "null://"), lambda: k.ioth_resolvconf(None),
                 lambda: k.iothdns_update("nameserver 10.0.0.53")):
        with pytest.raises(NotImplementedError):
            call()
    with pytest.raises(NotImplementedError):
        iothpy.Stack("stack=kernel,eth,ip=10.0.0.1/24")
    with pytest.raises(NotImplementedError):
        iothpy.Stack("kernel", config_dns="nameserver 10.0.0.53")
    was_installed = hook_installed()
    try:
        iothpy.override_socket_module(k)
        assert threadnet.get_default_stack() is None
    finally:
        iothpy.override_socket_module(None)
        if not was_installed:
            uninstall_hook()


# -- the module ------------------------------------------------------------------------------------------
def test_module_names_are_the_socket_modules():
    for name in ("AF_INET", "AF_INET6", "SOCK_STREAM", "SOCK_DGRAM", "INADDR_ANY", "SOL_SOCKET",
                 "SO_REUSEADDR", "IPPROTO_TCP", "TCP_NODELAY", "SHUT_WR", "MSG_PEEK"):
        assert getattr(iothpy, name) == getattr(socket, name), name
        assert name in iothpy.__all__
    assert iothpy.timeout is socket.timeout and iothpy.error is OSError
    assert iothpy.gaierror is socket.gaierror
    assert iothpy.getdefaulttimeout is socket.getdefaulttimeout
    assert iothpy.inet_pton(iothpy.AF_INET, "10.0.0.1") == b"\n\x00\x00\x01"
    assert iothpy.htons(1) == socket.htons(1) and iothpy.CMSG_LEN(4) == socket.CMSG_LEN(4)
    assert iothpy.getaddrinfo("127.0.0.1", 80, iothpy.AF_INET)[0][4] == ("127.0.0.1", 80)
    r, w = socket.socketpair()
    iothpy.close(w.detach())  # iothpy.close closes a descriptor
    assert r.recv(1) == b""
    r.close()
