"""The switch's console handlers one by one, called directly on an in-process SwitchServer
(not started: no thread, no console socket). The protocol around them is pinned by
test_switch_interop.py against Debian's vde_switch."""

from __future__ import annotations

import errno
import os

import pytest

from threadnet.mgmt.commands import Caller, CommandError
from threadnet.switch import commands as c
from threadnet.switch.core import Endpoint
from threadnet.switch.server import SwitchServer


@pytest.fixture
def sw(tmp_path):
    server = SwitchServer(str(tmp_path / "sw"), mac=bytes.fromhex("020000000001"), numports=8)
    yield server
    server.close()


def fails(code: int, handler, *args) -> None:
    with pytest.raises(CommandError) as info:
        handler(*args)
    assert info.value.errno == code


def test_every_entry_is_a_module_level_function_called_here():
    source = open(__file__).read()
    for path, _, _, handler, _ in c.COMMANDS:
        if handler is not None:
            assert handler is getattr(c, handler.__name__)
            assert f"c.{handler.__name__}" in source, path


def test_ds_showinfo(sw):
    assert c.ds_showinfo(sw, "") == [f"ctl dir {sw.directory}", "std mode 0600"]


def test_help(sw):
    lines = c.help_(sw, "vlan")
    assert lines[0].startswith("COMMAND PATH") and lines[2].startswith("vlan ")
    assert all(line.startswith("vlan") for line in lines[2:])


def test_logout(sw):
    assert c.logout(sw, "") is None


def test_shutdown(sw):
    c.shutdown(sw, "")  # the server is not running: stopping it is a no-op


def test_showinfo(sw):
    lines = c.showinfo(sw, "")
    assert lines[:2] == c.banner_lines() and lines[2] == ""
    assert lines[3].startswith(f"pid {os.getpid()} MAC 02:00:00:00:00:01 uptime ")


def test_load(sw, tmp_path):
    script = tmp_path / "rc"
    script.write_text("# a comment\nport/create 5\n")
    c.load_(sw, str(script), Caller.service())
    assert 5 in sw.switch.ports
    script.write_text("port/create 5\n")  # exists now: the script fails
    fails(errno.EINVAL, c.load_, sw, str(script), Caller.service())
    fails(errno.ENOENT, c.load_, sw, str(tmp_path / "missing"), Caller.service())
    fails(errno.EINVAL, c.load_, sw, "", Caller.service())


def test_hash_showinfo(sw):
    assert c.hash_showinfo(sw, "") == ["Hash size 128", "GC interval 2 secs",
                                       "GC expire 100 secs", "Min persistence 3 secs"]


@pytest.mark.parametrize("handler, attr, lo", [
    (c.hash_setsize, "size", 1), (c.hash_setgcint, "gc_interval", 1),
    (c.hash_setexpire, "expire", 1), (c.hash_setminper, "min_persistence", 0)])
def test_hash_setters(sw, handler, attr, lo):
    handler(sw, "42")
    assert getattr(sw.switch.fdb, attr) == 42
    for bad in (str(lo - 1), "x", ""):
        fails(errno.EINVAL, handler, sw, bad)



def _learn(sw, mac: bytes, port: int) -> None:
    sw.switch.create_port(port)
    sw.switch.fdb.learn(mac, 0, sw.switch.ports[port], sw.now())


def test_hash_print(sw):
    assert c.hash_print(sw, "") == []
    _learn(sw, bytes.fromhex("020000000002"), 3)
    [line] = c.hash_print(sw, "")
    assert "Addr: 02:00:00:00:00:02 VLAN 0000 to port: 003  age 0 secs" in line


def test_hash_find(sw):
    _learn(sw, bytes.fromhex("020000000002"), 3)
    assert "to port: 003" in c.hash_find(sw, "02:00:00:00:00:02")[0]
    fails(errno.ENODEV, c.hash_find, sw, "02:00:00:00:00:09")
    fails(errno.ENODEV, c.hash_find, sw, "02:00:00:00:00:02 7")
    fails(errno.EINVAL, c.hash_find, sw, "zz")
    fails(errno.EINVAL, c.hash_find, sw, "")


def test_port_showinfo(sw):
    assert c.port_showinfo(sw, "") == ["Numports=8", "HUB=false", "counters=true"]


def test_port_setnumports(sw):
    c.port_setnumports(sw, "16")
    assert sw.switch.numports == 16
    fails(errno.EINVAL, c.port_setnumports, sw, "0")


def test_port_sethub(sw):
    c.port_sethub(sw, "1")
    assert sw.switch.hub
    fails(errno.EINVAL, c.port_sethub, sw, "2")


def test_port_setvlan(sw):
    c.port_create(sw, "3")
    fails(errno.ENXIO, c.port_setvlan, sw, "3 5")  # no VLAN 5 yet
    c.vlan_create(sw, "5")
    c.port_setvlan(sw, "3 5")
    assert sw.switch.ports[3].vlan == 5
    fails(errno.EINVAL, c.port_setvlan, sw, "3")


def test_port_createauto(sw):
    assert c.port_createauto(sw, "") == ["Port 0001"]
    for _ in range(6):
        c.port_createauto(sw, "")
    fails(errno.ENOSPC, c.port_createauto, sw, "")


def test_port_create(sw):
    c.port_create(sw, "3")
    fails(errno.EEXIST, c.port_create, sw, "3")
    fails(errno.EINVAL, c.port_create, sw, "8")


def test_port_remove(sw):
    c.port_create(sw, "3")
    c.port_remove(sw, "3")
    assert 3 not in sw.switch.ports
    fails(errno.ENXIO, c.port_remove, sw, "3")
    sw.switch.create_port(4)
    sw.switch.ports[4].endpoints.append(Endpoint(1))
    fails(errno.EADDRINUSE, c.port_remove, sw, "4")


def test_port_allocatable(sw):
    c.port_create(sw, "3")
    c.port_allocatable(sw, "3 0")
    assert not sw.switch.ports[3].allocatable
    fails(errno.ENXIO, c.port_allocatable, sw, "4 0")


def test_port_setuser_and_setgroup(sw):
    c.port_create(sw, "3")
    c.port_setuser(sw, "3 root")
    c.port_setgroup(sw, "3 0")
    assert (sw.switch.ports[3].user, sw.switch.ports[3].group) == (0, 0)
    c.port_setuser(sw, "3 NONE")
    assert sw.switch.ports[3].user is None
    fails(errno.EINVAL, c.port_setgroup, sw, "3 no-such-group-here")
    fails(errno.ENXIO, c.port_setuser, sw, "4 root")



def test_port_epclose_and_epqlen(sw):
    c.port_create(sw, "3")
    fails(errno.ENXIO, c.port_epclose, sw, "3 1")
    fails(errno.ENXIO, c.port_epqlen, sw, "3 1 5")
    fails(errno.EINVAL, c.port_epqlen, sw, "3 1")



def test_port_defqlen(sw):
    c.port_defqlen(sw, "10")
    assert c.port_defqlen(sw, "") == ["default endpoint queue length 10"]
    fails(errno.EINVAL, c.port_defqlen, sw, "-1")


def test_port_resetcounter(sw):
    c.port_create(sw, "3")
    sw.switch.ports[3].in_pkts = 5
    c.port_resetcounter(sw, "3")
    assert sw.switch.ports[3].in_pkts == 0
    sw.switch.ports[3].in_pkts = 5
    c.port_resetcounter(sw, "")
    assert sw.switch.ports[3].in_pkts == 0
    fails(errno.ENXIO, c.port_resetcounter, sw, "4")


def test_port_print_and_allprint(sw):
    c.port_create(sw, "3")
    assert c.port_print(sw, "") == []  # inactive ports are not listed
    lines = c.port_allprint(sw, "3")
    assert lines[0] == "Port 0003 untagged_vlan=0000 INACTIVE - NOT Unnamed Allocatable"
    assert len(lines) == 4
    fails(errno.ENXIO, c.port_print, sw, "3")



def test_port_capture(sw, tmp_path):
    c.port_create(sw, "3")
    c.port_capture(sw, f"3 {tmp_path / 'p.pcap'}", Caller.service())
    assert (tmp_path / "p.pcap").exists()
    c.port_capture(sw, "3", Caller.service())  # no FILE stops
    fails(errno.EINVAL, c.port_capture, sw, "", Caller.service())


def test_vlan_create_remove_addport_delport(sw):
    c.vlan_create(sw, "7")
    fails(errno.EEXIST, c.vlan_create, sw, "7")
    c.port_create(sw, "3")
    c.vlan_addport(sw, "7 3")
    assert 7 in sw.switch.ports[3].tagged
    fails(errno.EINVAL, c.vlan_addport, sw, "7")
    c.vlan_delport(sw, "7 3")
    assert 7 not in sw.switch.ports[3].tagged
    c.vlan_remove(sw, "7")
    assert 7 not in sw.switch.vlans
    fails(errno.EINVAL, c.vlan_remove, sw, "7 1 2")



def test_vlan_print_and_allprint(sw):
    c.vlan_create(sw, "7")
    c.port_create(sw, "3")
    c.vlan_addport(sw, "7 3")
    assert c.vlan_print(sw, "7") == ["VLAN 0007"]  # the port is not active
    assert c.vlan_allprint(sw, "7") == [
        "VLAN 0007", " -- Port 0003 tagged=1 active=0 status=Learning"]
    fails(errno.ENXIO, c.vlan_print, sw, "99")



def test_fstp_showinfo_and_setfstp(sw):
    assert c.fstp_showinfo(sw, "") == ["MAC 02:00:00:00:00:01 Priority 32768 (0x8000)",
                                       "FSTP=false"]
    assert c.fstp_setfstp(sw, "1") is None
    assert c.fstp_showinfo(sw, "")[1] == "FSTP=true" and sw.switch.fst_on
    fails(errno.EINVAL, c.fstp_setfstp, sw, "on")
    c.port_sethub(sw, "1")  # a hub stops the spanning tree, and refuses to start it
    assert not sw.switch.fst_on
    assert c.fstp_setfstp(sw, "1") == ["Can't use fstp in hub mode"]


def test_fstp_print_setedge_bonus(sw):
    lines = c.fstp_print(sw, "")
    assert lines[0] == "FST DATA VLAN 0000 ROOTSWITCH FSTP IS DISABLED"
    assert lines[1:3] == [" ++ root 80:00:02:00:00:00:00:01",
                          " ++ designated ff:ff:ff:ff:ff:ff:ff:ff"]
    assert lines[3].startswith(" ++ rootport 0000 cost 0 age ")
    assert lines[3].endswith(" bonusport 0000 bonuscost 0")
    c.fstp_bonus(sw, "0 3 5")
    assert c.fstp_print(sw, "0")[3].endswith(" bonusport 0003 bonuscost 5")
    c.fstp_setedge(sw, "0 3 1")
    assert 3 in sw.switch.fst.vlans[0].edge
    c.fstp_setedge(sw, "0 3 0")
    assert 3 not in sw.switch.fst.vlans[0].edge
    fails(errno.ENXIO, c.fstp_setedge, sw, "7 3 1")  # no VLAN 7
    fails(errno.EINVAL, c.fstp_setedge, sw, "0 99 1")  # no port 99 (of 8)
    fails(errno.EINVAL, c.fstp_bonus, sw, "0 3")
    fails(errno.ENXIO, c.fstp_print, sw, "5")
    assert c.fstp_print(sw, "x")[:3] == c.fstp_print(sw, "0")[:3]  # atoi(), as vde_switch
    fails(errno.EINVAL, c.fstp_print, sw, "4095")
