"""Interface ioctls (SIOCGIF*) for supervised programs, answered from the stack.

glibc's ``if_nametoindex``/``if_indextoname`` and programs like ``ifconfig`` ask about
interfaces with ioctls on any socket (glibc opens an AF_UNIX one). The filter traps
ioctl commands 0x8910-0x89ff on any descriptor; on a socket they are answered from the
stack's ``ip -j addr`` data: SIOCGIFNAME, SIOCGIFINDEX, SIOCGIFCONF, SIOCGIFFLAGS,
SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK, SIOCGIFMTU, SIOCGIFHWADDR. Setters fail
with EPERM (not served yet); the rest of the range (ethtool, bridges, bonding) with
EOPNOTSUPP.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import stat
import struct
from typing import TYPE_CHECKING, Any

from threadnet.views import netlink

if TYPE_CHECKING:
    from threadnet.views.kernel import Notification
    from threadnet.views.supervisor import Supervisor

SIOCGIFNAME, SIOCGIFCONF, SIOCGIFFLAGS = 0x8910, 0x8912, 0x8913
SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK = 0x8915, 0x8919, 0x891B
SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX = 0x8921, 0x8927, 0x8933
FIRST, LAST = 0x8910, 0x89FF  # the range the filter traps
GETTERS = frozenset((SIOCGIFNAME, SIOCGIFCONF, SIOCGIFFLAGS, SIOCGIFADDR, SIOCGIFBRDADDR,
                     SIOCGIFNETMASK, SIOCGIFMTU, SIOCGIFHWADDR, SIOCGIFINDEX))
SETTERS = frozenset((0x8911, 0x8914, 0x8916, 0x8918, 0x891A, 0x891C, 0x891E, 0x8920, 0x8922,
                     0x8923, 0x8924, 0x8931, 0x8932, 0x8934, 0x8936, 0x8937, 0x8943, 0x8971))
IFREQ = 40
_IFCONF = struct.Struct("=i4xQ")


def _sin(addr: str) -> bytes:
    return struct.pack("=H2s4s8x", socket.AF_INET, b"\0\0", ipaddress.IPv4Address(addr).packed)


def _flags(link: dict[str, Any]) -> int:
    f = 0
    for name in link.get("flags", []):
        f |= netlink._IFF.get(name, 0)
    if f & netlink._IFF["UP"] and f & netlink._IFF["LOWER_UP"]:
        f |= netlink._IFF["RUNNING"]
    return f


def _v4(link: dict[str, Any]) -> dict[str, Any] | None:
    for a in link.get("addr_info", []):
        if a["family"] == "inet":
            return a
    return None


def answer(cmd: int, req: bytes, links: list[dict[str, Any]]) -> bytes:
    """The ifreq a SIOCGIF* command returns for request ``req`` (sans-IO)."""
    name = req[:16].split(b"\0", 1)[0].decode(errors="replace")
    if cmd == SIOCGIFNAME:
        (index,) = struct.unpack_from("=i", req, 16)
        link = next((lk for lk in links if lk["ifindex"] == index), None)
    else:
        link = next((lk for lk in links if lk["ifname"] == name), None)
    if link is None:
        raise OSError(errno.ENODEV, "No such device")
    head = link["ifname"].encode()[:15].ljust(16, b"\0")
    a = _v4(link)
    if cmd in (SIOCGIFNAME, SIOCGIFINDEX):
        body = struct.pack("=i", int(link["ifindex"]))
    elif cmd == SIOCGIFFLAGS:
        body = struct.pack("=H", _flags(link) & 0xFFFF)
    elif cmd == SIOCGIFMTU:
        body = struct.pack("=i", int(link.get("mtu", 1500)))
    elif cmd == SIOCGIFHWADDR:
        arphrd = netlink._ARPHRD.get(link.get("link_type", ""), 1)
        body = struct.pack("=H", arphrd) + netlink._mac(link.get("address", "")).ljust(14, b"\0")
    elif cmd in (SIOCGIFADDR, SIOCGIFBRDADDR, SIOCGIFNETMASK):
        if a is None or (cmd == SIOCGIFBRDADDR and not a.get("broadcast")):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if cmd == SIOCGIFADDR:
            body = _sin(a["local"])
        elif cmd == SIOCGIFBRDADDR:
            body = _sin(a["broadcast"])
        else:
            body = _sin(str(ipaddress.IPv4Network(f"0.0.0.0/{a['prefixlen']}").netmask))
    else:
        raise OSError(errno.EINVAL, "Invalid argument")
    return (head + body).ljust(IFREQ, b"\0")


def ifconf(links: list[dict[str, Any]]) -> bytes:
    """SIOCGIFCONF's array: one ifreq per interface with an IPv4 address."""
    out = b""
    for lk in links:
        a = _v4(lk)
        if a is not None:
            out += (lk["ifname"].encode()[:15].ljust(16, b"\0") + _sin(a["local"])).ljust(IFREQ, b"\0")
    return out


def call(sup: Supervisor, n: Notification) -> None:
    """A trapped ioctl in the interface range, on any descriptor."""
    fd, cmd, ptr = n.args[0] & 0xFFFFFFFF, n.args[1] & 0xFFFFFFFF, n.args[2]
    try:
        st = os.stat(f"/proc/{n.pid}/fd/{fd}")
    except OSError:
        st = None
    if st is None or not stat.S_ISSOCK(st.st_mode):
        sup.listener.cont(n.id)  # not a socket: the kernel says ENOTTY or EBADF
        return
    if cmd in SETTERS:  # changes to the stack's interfaces: not served yet
        raise OSError(errno.EPERM, "Operation not permitted")
    if cmd not in GETTERS:  # ethtool, bridges, bonding, MII...: no such device here
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")
    links = sup.ip(["addr"])
    if cmd == SIOCGIFCONF:
        length, buf = _IFCONF.unpack(sup._read(n, ptr, _IFCONF.size))
        table = ifconf(links)
        if buf:
            table = table[:max(0, length) // IFREQ * IFREQ]
            sup._write(n, buf, table)
        sup._write(n, ptr, struct.pack("=i", len(table)))
        sup.listener.reply(n.id, 0)
        return
    out = answer(cmd, sup._read(n, ptr, IFREQ), links)
    sup._write(n, ptr, out)
    sup.listener.reply(n.id, 0)
