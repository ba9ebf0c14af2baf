"""The switch's management commands, declared once (vde_switch's names and output formats).

The console socket and ``threadnet console`` both run this table. Each handler is a
module-level function of the ``SwitchServer`` and the argument text (and the Caller, for
commands that open paths); ``COMMANDS`` lists them in vde_switch's order.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from threadnet.mgmt.commands import (
    CALLER,
    OUTPUT,
    Caller,
    CommandError,
    CommandTable,
    Entry,
    load,
    parse_int,
    split_args,
    table_from_entries,
)
from threadnet.switch.core import NOVLAN, Port, gid_name, uid_name
from threadnet.switch.fdb import split_key
from threadnet.wire.ethernet import mac_from_str, mac_to_str

if TYPE_CHECKING:
    from threadnet.switch.server import SwitchServer

VERSION_LINE = "VDE switch V.2.3.2"
COPYRIGHT_LINE = "(C) threadnet - a vde_switch-compatible switch in Python"


def banner_lines() -> list[str]:
    return [VERSION_LINE, COPYRIGHT_LINE]


def _oserror(exc: OSError) -> CommandError:
    return CommandError(exc.errno or errno.EINVAL)


def port_lines(port: Port) -> list[str]:
    state = "ACTIVE" if port.active else "INACTIVE"
    alloc = "" if port.allocatable else "NOT "
    current = uid_name(port.endpoints[0].uid) if port.endpoints else "NONE"
    lines = [
        f"Port {port.number:04d} untagged_vlan={port.vlan:04d} {state} - {alloc}Unnamed Allocatable",
        f" Current User: {current} Access Control: (User: {uid_name(port.user)} - Group: {gid_name(port.group)})",
        " IN:  pkts %10d          bytes %20d" % (port.in_pkts, port.in_bytes),
        " OUT: pkts %10d          bytes %20d" % (port.out_pkts, port.out_bytes),
    ]
    for ep in reversed(port.endpoints):  # newest first, as vde_switch lists them
        lines.append(f"  -- endpoint ID {ep.ident:04d} module {ep.module:<4} prog   : {ep.description}")
    return lines


def _port(sw: SwitchServer, text: str) -> int:
    return parse_int(text, "port", 0, sw.switch.numports - 1)


def _vlan(text: str) -> int:
    return parse_int(text, "vlan", 0, NOVLAN)


def _existing_port(sw: SwitchServer, text: str) -> Port:
    port = sw.switch.ports.get(_port(sw, text))
    if port is None:
        raise CommandError(errno.ENXIO)
    return port


# -- data socket ------------------------------------------------------------------------------
def ds_showinfo(sw: SwitchServer, args: str) -> list[str]:
    return [f"ctl dir {sw.directory}", f"std mode {sw.mode:04o}"]


# -- general ------------------------------------------------------------------------------
def help_(sw: SwitchServer, args: str) -> list[str]:
    return sw.table.help_lines(args.strip())


def logout(sw: SwitchServer, args: str) -> None:
    return None  # the console ends the session


def shutdown(sw: SwitchServer, args: str) -> None:
    sw.stop()


def showinfo(sw: SwitchServer, args: str) -> list[str]:
    lines = banner_lines() + ["", f"pid {os.getpid()} MAC {mac_to_str(sw.mac)} "
                                  f"uptime {int(sw.uptime())}"]
    if sw.mgmt_path:
        lines.append(f"mgmt {sw.mgmt_path} perm {sw.mgmtmode:04o}")
    return lines


def load_(sw: SwitchServer, args: str, caller: Caller) -> None:
    load(sw.table, args, caller)


# -- hash ---------------------------------------------------------------------------------
def hash_showinfo(sw: SwitchServer, args: str) -> list[str]:
    fdb = sw.switch.fdb
    return [f"Hash size {fdb.size}", f"GC interval {fdb.gc_interval:g} secs",
            f"GC expire {fdb.expire:g} secs", f"Min persistence {fdb.min_persistence:g} secs"]


def hash_setsize(sw: SwitchServer, args: str) -> None:
    sw.switch.fdb.size = parse_int(args, "size", 1)


def hash_setgcint(sw: SwitchServer, args: str) -> None:
    sw.switch.fdb.gc_interval = parse_int(args, "gc_interval", 1)
    sw.reschedule_gc()


def hash_setexpire(sw: SwitchServer, args: str) -> None:
    sw.switch.fdb.expire = parse_int(args, "expire", 1)


def hash_setminper(sw: SwitchServer, args: str) -> None:
    sw.switch.fdb.min_persistence = parse_int(args, "min_persistence", 0)


def _hash_line(sw: SwitchServer, key: bytes, entry: list, now: float) -> str:
    mac, vlan = split_key(key)
    return (f"Hash: {sw.switch.fdb.bucket(key):04d} Addr: {mac_to_str(mac)} VLAN {vlan:04d} "
            f"to port: {entry[0].number:03d}  age {int(now - entry[1])} secs")


def hash_print(sw: SwitchServer, args: str) -> list[str]:
    fdb, now = sw.switch.fdb, sw.now()
    return [_hash_line(sw, k, e, now)
            for k, e in sorted(fdb.entries.items(), key=lambda kv: fdb.bucket(kv[0]))]


def hash_find(sw: SwitchServer, args: str) -> list[str]:
    mac_text, vlan_text = split_args(args, 2, 1)
    try:
        mac = mac_from_str(mac_text)
    except ValueError:
        raise CommandError(errno.EINVAL) from None
    vlan = _vlan(vlan_text) if vlan_text else 0
    key = mac if vlan == 0 else mac + vlan.to_bytes(2, "big")
    e = sw.switch.fdb.entries.get(key)
    if e is None:
        raise CommandError(errno.ENODEV)
    return [_hash_line(sw, key, e, sw.now())]


# -- fast spanning tree -------------------------------------------------------------------
def fstp_showinfo(sw: SwitchServer, args: str) -> list[str]:
    fst = sw.switch.fst
    return [f"MAC {mac_to_str(fst.mac)} Priority {fst.priority} (0x{fst.priority:x})",
            f"FSTP={'true' if fst.enabled else 'false'}"]


def fstp_setfstp(sw: SwitchServer, args: str) -> list[str] | None:
    on = parse_int(args, "0/1") != 0
    if sw.switch.hub:
        return ["Can't use fstp in hub mode"]  # vde_switch's answer (and success)
    sw.switch.set_fstp(on)
    return None


def _fst_vlan_port(sw: SwitchServer, args: str) -> tuple[int, int, int]:
    vlan_text, port_text, value_text = split_args(args, 3)
    vlan = parse_int(vlan_text, "vlan", 0, 4095)
    port = _port(sw, port_text)
    value = parse_int(value_text, "value")
    if vlan not in sw.switch.vlans:
        raise CommandError(errno.ENXIO)
    return vlan, port, value


def fstp_setedge(sw: SwitchServer, args: str) -> None:
    vlan, port, on = _fst_vlan_port(sw, args)
    sw.switch.fst.set_edge(vlan, port, on != 0)


def fstp_bonus(sw: SwitchServer, args: str) -> None:
    vlan, port, cost = _fst_vlan_port(sw, args)
    sw.switch.fst.set_bonus(vlan, port, cost)


def fstp_print(sw: SwitchServer, args: str) -> list[str]:
    fst, now = sw.switch.fst, sw.now()
    if args.strip():
        # vde_switch reads the VLAN with atoi(): leading digits, else 0
        m = re.match(r"\s*([+-]?\d+)", args)
        vlan = int(m.group(1)) if m else 0
        if not 0 <= vlan < NOVLAN:
            raise CommandError(errno.EINVAL)
        if vlan not in sw.switch.vlans:
            raise CommandError(errno.ENXIO)
        return fst.print_lines(vlan, now)
    return [line for vlan in sorted(sw.switch.vlans) for line in fst.print_lines(vlan, now)]


# -- ports --------------------------------------------------------------------------------
def port_showinfo(sw: SwitchServer, args: str) -> list[str]:
    return [f"Numports={sw.switch.numports}", f"HUB={'true' if sw.switch.hub else 'false'}",
            "counters=true"]


def port_setnumports(sw: SwitchServer, args: str) -> None:
    n = parse_int(args, "ports", 1, 4096)
    if any(num >= n for num, p in sw.switch.ports.items() if p.active or p.persistent):
        raise CommandError(errno.EBUSY)
    sw.switch.numports = n


def port_sethub(sw: SwitchServer, args: str) -> None:
    hub = bool(parse_int(args, "hub", 0, 1))
    if hub:
        sw.switch.set_fstp(False)  # a hub runs no spanning tree (vde_switch stops it too)
    sw.switch.hub = hub


def port_setvlan(sw: SwitchServer, args: str) -> None:
    port_text, vlan_text = split_args(args, 2)
    try:
        sw.switch.set_port_vlan(_port(sw, port_text), _vlan(vlan_text))
    except OSError as exc:
        raise _oserror(exc) from None


def port_createauto(sw: SwitchServer, args: str) -> list[str]:
    for n in range(1, sw.switch.numports):
        if n not in sw.switch.ports:
            sw.switch.create_port(n)
            return [f"Port {n:04d}"]
    raise CommandError(errno.ENOSPC)


def port_create(sw: SwitchServer, args: str) -> None:
    try:
        sw.switch.create_port(_port(sw, args))
    except OSError as exc:
        raise _oserror(exc) from None


def port_remove(sw: SwitchServer, args: str) -> None:
    port = _existing_port(sw, args)
    if port.endpoints:
        raise CommandError(errno.EADDRINUSE)  # as vde_switch; port/epclose unplugs
    sw.switch.remove_port(port.number)


def port_allocatable(sw: SwitchServer, args: str) -> None:
    port_text, flag = split_args(args, 2)
    port = _existing_port(sw, port_text)
    port.allocatable = bool(parse_int(flag, "flag", 0, 1))


def _set_acl(sw: SwitchServer, args: str, kind: str) -> None:
    import grp
    import pwd

    port_text, who = split_args(args, 2)
    port = _existing_port(sw, port_text)
    value: int | None
    if who in ("NONE", "-1"):
        value = None
    elif who.isdigit():
        value = int(who)
    else:
        try:
            value = pwd.getpwnam(who).pw_uid if kind == "user" else grp.getgrnam(who).gr_gid
        except KeyError:
            raise CommandError(errno.EINVAL) from None
    setattr(port, kind, value)


def port_setuser(sw: SwitchServer, args: str) -> None:
    _set_acl(sw, args, "user")


def port_setgroup(sw: SwitchServer, args: str) -> None:
    _set_acl(sw, args, "group")


def _endpoint(sw: SwitchServer, port_text: str, ident_text: str):  # -> the endpoint
    port = sw.switch.ports.get(_port(sw, port_text))
    ep = sw.datasock.endpoints.get(parse_int(ident_text, "id", 0))
    if port is None or ep is None or ep.port is not port:
        raise CommandError(errno.ENXIO)
    return ep


def port_epclose(sw: SwitchServer, args: str) -> None:
    port_text, ident_text = split_args(args, 2)
    sw.datasock.close_endpoint(_endpoint(sw, port_text, ident_text))


def port_defqlen(sw: SwitchServer, args: str) -> list[str] | None:
    if not args:
        return [f"default endpoint queue length {sw.datasock.qlen}"]
    sw.datasock.qlen = parse_int(args, "queue length", 0, 65536)
    return None


def port_epqlen(sw: SwitchServer, args: str) -> None:
    port_text, ident_text, qlen_text = split_args(args, 3)
    ep = _endpoint(sw, port_text, ident_text)
    ep.qlen = parse_int(qlen_text, "queue length", 0, 65536)


def port_resetcounter(sw: SwitchServer, args: str) -> None:
    ports = [_existing_port(sw, args)] if args else sw.switch.ports.values()
    for port in ports:
        port.reset_counters()


def _port_print(sw: SwitchServer, args: str, include_inactive: bool) -> list[str]:
    ports = [p for _, p in sorted(sw.switch.ports.items()) if include_inactive or p.active]
    if args:
        n = _port(sw, args)
        ports = [p for p in ports if p.number == n]
        if not ports:
            raise CommandError(errno.ENXIO)
    return [line for p in ports for line in port_lines(p)]


def port_print(sw: SwitchServer, args: str) -> list[str]:
    return _port_print(sw, args, False)


def port_allprint(sw: SwitchServer, args: str) -> list[str]:
    return _port_print(sw, args, True)


def port_capture(sw: SwitchServer, args: str, caller: Caller) -> None:
    # the file is opened with the rights of whoever asked (a console user's own)
    port_text, path = split_args(args, 2, 1)
    try:
        sw.set_capture(_port(sw, port_text) if port_text != "all" else None, path or None,
                       caller)
    except OSError as exc:
        raise _oserror(exc) from None


# -- VLANs --------------------------------------------------------------------------------
def _vlan_call(sw: SwitchServer, args: str, fn: Callable[..., None], nargs: int) -> None:
    parts = args.split()
    if len(parts) != nargs:
        raise CommandError(errno.EINVAL)
    try:
        fn(*([_vlan(parts[0])] + [_port(sw, p) for p in parts[1:]]))
    except OSError as exc:
        raise _oserror(exc) from None


def vlan_create(sw: SwitchServer, args: str) -> None:
    _vlan_call(sw, args, sw.switch.create_vlan, 1)


def vlan_remove(sw: SwitchServer, args: str) -> None:
    _vlan_call(sw, args, sw.switch.remove_vlan, 1)


def vlan_addport(sw: SwitchServer, args: str) -> None:
    _vlan_call(sw, args, sw.switch.add_tagged, 2)


def vlan_delport(sw: SwitchServer, args: str) -> None:
    _vlan_call(sw, args, sw.switch.del_tagged, 2)


def _vlan_print(sw: SwitchServer, args: str, include_inactive: bool) -> list[str]:
    vlans = sorted(sw.switch.vlans)
    if args:
        v = _vlan(args)
        if v not in sw.switch.vlans:
            raise CommandError(errno.ENXIO)
        vlans = [v]
    lines = []
    for v in vlans:
        lines.append(f"VLAN {v:04d}")
        for n, p in sorted(sw.switch.ports.items()):
            if not (include_inactive or p.active):
                continue
            for tagged in (False, True):
                if (p.vlan == v and not tagged) or (tagged and v in p.tagged):
                    status = ("Discarding" if v in p.discard else "Learning" if v in p.nofwd
                              else "Forwarding" if p.active else "Learning")
                    lines.append(f" -- Port {n:04d} tagged={int(tagged)} "
                                 f"active={int(p.active)} status={status}")
    return lines


def vlan_print(sw: SwitchServer, args: str) -> list[str]:
    return _vlan_print(sw, args, False)


def vlan_allprint(sw: SwitchServer, args: str) -> list[str]:
    return _vlan_print(sw, args, True)


#: the switch's commands, in vde_switch's help order
COMMANDS: tuple[Entry, ...] = (
    ("ds", "", "DATA SOCKET MENU", None, 0),
    ("ds/showinfo", "", "show ds info", ds_showinfo, OUTPUT),
    ("help", "[arg]", "Help (limited to arg when specified)", help_, OUTPUT),
    ("logout", "", "logout from this mgmt terminal", logout, 0),
    ("shutdown", "", "shutdown of the switch", shutdown, 0),
    ("showinfo", "", "show switch version and info", showinfo, OUTPUT),
    ("load", "path", "load a configuration script", load_, CALLER),
    ("hash", "", "HASH TABLE MENU", None, 0),
    ("hash/showinfo", "", "show hash info", hash_showinfo, OUTPUT),
    ("hash/setsize", "N", "change hash size", hash_setsize, 0),
    ("hash/setgcint", "N", "change garbage collector interval", hash_setgcint, 0),
    ("hash/setexpire", "N", "change hash entries expire time", hash_setexpire, 0),
    ("hash/setminper", "N", "minimum persistence time", hash_setminper, 0),
    ("hash/print", "", "print the hash table", hash_print, OUTPUT),
    ("hash/find", "MAC [VLAN]", "MAC lookup", hash_find, OUTPUT),
    ("fstp", "", "FAST SPANNING TREE MENU", None, 0),
    ("fstp/showinfo", "", "show fstp info", fstp_showinfo, OUTPUT),
    ("fstp/setfstp", "0/1", "Fast spanning tree protocol 1=ON 0=OFF", fstp_setfstp, OUTPUT),
    ("fstp/setedge", "VLAN PORT 1/0", "Define an edge port for a vlan 1=Y 0=N", fstp_setedge, 0),
    ("fstp/bonus", "VLAN PORT COST", "set the port bonus for a vlan", fstp_bonus, 0),
    ("fstp/print", "[N]", "print fst data for the defined vlan", fstp_print, OUTPUT),
    ("port", "", "PORT STATUS MENU", None, 0),
    ("port/showinfo", "", "show port info", port_showinfo, OUTPUT),
    ("port/setnumports", "N", "set the number of ports", port_setnumports, 0),
    ("port/sethub", "0/1", "1=HUB 0=switch", port_sethub, 0),
    ("port/setvlan", "N VLAN", "set port VLAN (untagged)", port_setvlan, 0),
    ("port/createauto", "",
     "create a port with an automatically allocated id (inactive|notallocatable)",
     port_createauto, OUTPUT),
    ("port/create", "N", "create the port N (inactive|notallocatable)", port_create, 0),
    ("port/remove", "N", "remove the port N", port_remove, 0),
    ("port/allocatable", "N 0/1", "Is the port allocatable as unnamed? 1=Y 0=N",
     port_allocatable, 0),
    ("port/setuser", "N user", "access control: set user", port_setuser, 0),
    ("port/setgroup", "N user", "access control: set group", port_setgroup, 0),
    ("port/epclose", "N ID", "remove the endpoint port N/id ID", port_epclose, 0),
    ("port/defqlen", "[N]", "default queue length of new endpoints (frames)", port_defqlen,
     OUTPUT),
    ("port/epqlen", "N ID QLEN", "set the queue length of the endpoint port N/id ID",
     port_epqlen, 0),
    ("port/resetcounter", "[N]", "reset the port (N) counters", port_resetcounter, 0),
    ("port/print", "[N]", "print the port/endpoint table", port_print, OUTPUT),
    ("port/allprint", "[N]", "print the port/endpoint table (including inactive port)",
     port_allprint, OUTPUT),
    ("port/capture", "N|all [FILE]", "capture port N (or all) to a pcap FILE; no FILE stops",
     port_capture, CALLER),
    ("vlan", "", "VLAN MANAGEMENT MENU", None, 0),
    ("vlan/create", "N", "create the VLAN with tag N", vlan_create, 0),
    ("vlan/remove", "N", "remove the VLAN with tag N", vlan_remove, 0),
    ("vlan/addport", "N PORT", "add port to the vlan N (tagged)", vlan_addport, 0),
    ("vlan/delport", "N PORT", "remove port from the vlan N (tagged)", vlan_delport, 0),
    ("vlan/print", "[N]", "print the list of defined vlan", vlan_print, OUTPUT),
    ("vlan/allprint", "[N]", "print the list of defined vlan (including inactive port)",
     vlan_allprint, OUTPUT),
)


def build_table(server: SwitchServer) -> CommandTable:
    """The command table of ``server`` (``server.table``)."""
    return table_from_entries(COMMANDS, server)
