"""The switch's management commands, declared once (vde_switch's names and output formats).

The console socket and ``threadnet console`` both run this table.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from threadnet.mgmt.commands import (
    Caller,
    CommandError,
    CommandTable,
    add_load_command,
    parse_int,
    split_args,
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


def build_table(server: SwitchServer) -> CommandTable:
    sw = server.switch
    t = CommandTable()

    def need_port(text: str) -> int:
        return parse_int(text, "port", 0, sw.numports - 1)

    def need_vlan(text: str) -> int:
        return parse_int(text, "vlan", 0, NOVLAN)

    # -- data socket ----------------------------------------------------------------
    t.menu("ds", "DATA SOCKET MENU")
    t.add("ds/showinfo", "", "show ds info",
          lambda a: [f"ctl dir {server.directory}", f"std mode {server.mode:04o}"], output=True)

    # -- general -------------------------------------------------------------------
    def help_(args: str) -> list[str]:
        return t.help_lines(args.strip())

    t.add("help", "[arg]", "Help (limited to arg when specified)", help_, output=True)
    t.add("logout", "", "logout from this mgmt terminal", lambda a: None)
    t.add("shutdown", "", "shutdown of the switch", lambda a: server.stop())

    def showinfo(args: str) -> list[str]:
        uptime = int(server.uptime())
        lines = banner_lines() + ["", f"pid {os.getpid()} MAC {mac_to_str(server.mac)} uptime {uptime}"]
        if server.mgmt_path:
            lines.append(f"mgmt {server.mgmt_path} perm {server.mgmtmode:04o}")
        return lines

    t.add("showinfo", "", "show switch version and info", showinfo, output=True)

    add_load_command(t)

    # -- hash ----------------------------------------------------------------------
    fdb = sw.fdb
    t.menu("hash", "HASH TABLE MENU")
    t.add("hash/showinfo", "", "show hash info", lambda a: [
        f"Hash size {fdb.size}", f"GC interval {fdb.gc_interval:g} secs",
        f"GC expire {fdb.expire:g} secs", f"Min persistence {fdb.min_persistence:g} secs"], output=True)

    def setter(attr: str, lo: int) -> None:
        def run(args: str) -> None:
            setattr(fdb, attr, parse_int(args, attr, lo))
            if attr == "gc_interval":
                server.reschedule_gc()
        return run

    t.add("hash/setsize", "N", "change hash size", setter("size", 1))
    t.add("hash/setgcint", "N", "change garbage collector interval", setter("gc_interval", 1))
    t.add("hash/setexpire", "N", "change hash entries expire time", setter("expire", 1))
    t.add("hash/setminper", "N", "minimum persistence time", setter("min_persistence", 0))

    def hash_line(key: bytes, entry: list, now: float) -> str:
        mac, vlan = split_key(key)
        return (f"Hash: {fdb.bucket(key):04d} Addr: {mac_to_str(mac)} VLAN {vlan:04d} "
                f"to port: {entry[0].number:03d}  age {int(now - entry[1])} secs")

    def hash_print(args: str) -> list[str]:
        now = server.now()
        return [hash_line(k, e, now) for k, e in sorted(fdb.entries.items(),
                                                          key=lambda kv: fdb.bucket(kv[0]))]

    t.add("hash/print", "", "print the hash table", hash_print, output=True)

    def hash_find(args: str) -> list[str]:
        mac_text, vlan_text = split_args(args, 2, 1)
        try:
            mac = mac_from_str(mac_text)
        except ValueError:
            raise CommandError(errno.EINVAL) from None
        vlan = need_vlan(vlan_text) if vlan_text else 0
        key = mac if vlan == 0 else mac + vlan.to_bytes(2, "big")
        e = fdb.entries.get(key)
        if e is None:
            raise CommandError(errno.ENODEV)
        return [hash_line(key, e, server.now())]

    t.add("hash/find", "MAC [VLAN]", "MAC lookup", hash_find, output=True)

    # -- ports ---------------------------------------------------------------------
    t.menu("port", "PORT STATUS MENU")
    t.add("port/showinfo", "", "show port info", lambda a: [
        f"Numports={sw.numports}", f"HUB={'true' if sw.hub else 'false'}", "counters=true"], output=True)

    def setnumports(args: str) -> None:
        n = parse_int(args, "ports", 1, 4096)
        if any(num >= n for num, p in sw.ports.items() if p.active or p.persistent):
            raise CommandError(errno.EBUSY)
        sw.numports = n

    t.add("port/setnumports", "N", "set the number of ports", setnumports)

    def sethub(args: str) -> None:
        sw.hub = bool(parse_int(args, "hub", 0, 1))

    t.add("port/sethub", "0/1", "1=HUB 0=switch", sethub)

    def setvlan(args: str) -> None:
        port_text, vlan_text = split_args(args, 2)
        try:
            sw.set_port_vlan(need_port(port_text), need_vlan(vlan_text))
        except OSError as exc:
            raise _oserror(exc) from None

    t.add("port/setvlan", "N VLAN", "set port VLAN (untagged)", setvlan)

    def createauto(args: str) -> list[str]:
        for n in range(1, sw.numports):
            if n not in sw.ports:
                sw.create_port(n)
                return [f"Port {n:04d}"]
        raise CommandError(errno.ENOSPC)

    t.add("port/createauto", "", "create a port with an automatically allocated id (inactive|notallocatable)",
          createauto, output=True)

    def create(args: str) -> None:
        try:
            sw.create_port(need_port(args))
        except OSError as exc:
            raise _oserror(exc) from None

    t.add("port/create", "N", "create the port N (inactive|notallocatable)", create)

    def remove(args: str) -> None:
        n = need_port(args)
        if n not in sw.ports:
            raise CommandError(errno.ENXIO)
        if sw.ports[n].endpoints:
            raise CommandError(errno.EADDRINUSE)  # as vde_switch; port/epclose unplugs
        sw.remove_port(n)

    t.add("port/remove", "N", "remove the port N", remove)

    def allocatable(args: str) -> None:
        port_text, flag = split_args(args, 2)
        port = sw.ports.get(need_port(port_text))
        if port is None:
            raise CommandError(errno.ENXIO)
        port.allocatable = bool(parse_int(flag, "flag", 0, 1))

    t.add("port/allocatable", "N 0/1", "Is the port allocatable as unnamed? 1=Y 0=N", allocatable)

    def acl(kind: str):
        def run(args: str) -> None:
            import grp
            import pwd

            port_text, who = split_args(args, 2)
            port = sw.ports.get(need_port(port_text))
            if port is None:
                raise CommandError(errno.ENXIO)
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
        return run

    t.add("port/setuser", "N user", "access control: set user", acl("user"))
    t.add("port/setgroup", "N user", "access control: set group", acl("group"))

    def epclose(args: str) -> None:
        port_text, ident_text = split_args(args, 2)
        port = sw.ports.get(need_port(port_text))
        ident = parse_int(ident_text, "id", 0)
        ep = server.datasock.endpoints.get(ident)
        if port is None or ep is None or ep.port is not port:
            raise CommandError(errno.ENXIO)
        server.datasock.close_endpoint(ep)

    t.add("port/epclose", "N ID", "remove the endpoint port N/id ID", epclose)

    def defqlen(args: str) -> list[str] | None:
        if not args:
            return [f"default endpoint queue length {server.datasock.qlen}"]
        server.datasock.qlen = parse_int(args, "queue length", 0, 65536)
        return None

    t.add("port/defqlen", "[N]", "default queue length of new endpoints (frames)", defqlen,
          output=True)

    def epqlen(args: str) -> None:
        port_text, ident_text, qlen_text = split_args(args, 3)
        port = sw.ports.get(need_port(port_text))
        ep = server.datasock.endpoints.get(parse_int(ident_text, "id", 0))
        if port is None or ep is None or ep.port is not port:
            raise CommandError(errno.ENXIO)
        ep.qlen = parse_int(qlen_text, "queue length", 0, 65536)

    t.add("port/epqlen", "N ID QLEN", "set the queue length of the endpoint port N/id ID", epqlen)

    def resetcounter(args: str) -> None:
        if args:
            port = sw.ports.get(need_port(args))
            if port is None:
                raise CommandError(errno.ENXIO)
            port.reset_counters()
        else:
            for port in sw.ports.values():
                port.reset_counters()

    t.add("port/resetcounter", "[N]", "reset the port (N) counters", resetcounter)

    def port_print(include_inactive: bool):
        def run(args: str) -> list[str]:
            ports = [p for _, p in sorted(sw.ports.items()) if include_inactive or p.active]
            if args:
                n = need_port(args)
                ports = [p for p in ports if p.number == n]
                if not ports:
                    raise CommandError(errno.ENXIO)
            return [line for p in ports for line in port_lines(p)]
        return run

    t.add("port/print", "[N]", "print the port/endpoint table", port_print(False), output=True)
    t.add("port/allprint", "[N]", "print the port/endpoint table (including inactive port)",
          port_print(True), output=True)

    def capture(args: str, caller: Caller) -> None:
        # the file is opened with the rights of whoever asked (a console user's own)
        port_text, path = split_args(args, 2, 1)
        try:
            server.set_capture(need_port(port_text) if port_text != "all" else None,
                               path or None, caller)
        except OSError as exc:
            raise _oserror(exc) from None

    t.add("port/capture", "N|all [FILE]", "capture port N (or all) to a pcap FILE; no FILE stops",
          capture, with_caller=True)

    # -- VLANs ---------------------------------------------------------------------
    t.menu("vlan", "VLAN MANAGEMENT MENU")

    def vlan_call(fn):
        def run(args: str) -> None:
            parts = args.split()
            try:
                if len(parts) == 1:
                    fn(need_vlan(parts[0]))
                elif len(parts) == 2:
                    fn(need_vlan(parts[0]), need_port(parts[1]))
                else:
                    raise CommandError(errno.EINVAL)
            except OSError as exc:
                raise _oserror(exc) from None
            except TypeError:
                raise CommandError(errno.EINVAL) from None
        return run

    t.add("vlan/create", "N", "create the VLAN with tag N", vlan_call(sw.create_vlan))
    t.add("vlan/remove", "N", "remove the VLAN with tag N", vlan_call(sw.remove_vlan))
    t.add("vlan/addport", "N PORT", "add port to the vlan N (tagged)", vlan_call(sw.add_tagged))
    t.add("vlan/delport", "N PORT", "remove port from the vlan N (tagged)", vlan_call(sw.del_tagged))

    def vlan_print(include_inactive: bool):
        def run(args: str) -> list[str]:
            vlans = sorted(sw.vlans)
            if args:
                v = need_vlan(args)
                if v not in sw.vlans:
                    raise CommandError(errno.ENXIO)
                vlans = [v]
            lines = []
            for v in vlans:
                lines.append(f"VLAN {v:04d}")
                for n, p in sorted(sw.ports.items()):
                    if not (include_inactive or p.active):
                        continue
                    for tagged in (False, True):
                        if (p.vlan == v and not tagged) or (tagged and v in p.tagged):
                            status = "Forwarding" if p.active else "Learning"
                            lines.append(f" -- Port {n:04d} tagged={int(tagged)} "
                                         f"active={int(p.active)} status={status}")
            return lines
        return run

    t.add("vlan/print", "[N]", "print the list of defined vlan", vlan_print(False), output=True)
    t.add("vlan/allprint", "[N]", "print the list of defined vlan (including inactive port)",
          vlan_print(True), output=True)
    return t
