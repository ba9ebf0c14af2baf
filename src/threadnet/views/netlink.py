"""NETLINK_ROUTE for supervised programs: the stack's links, addresses and routes.

A program's ``socket(AF_NETLINK, ..., NETLINK_ROUTE)`` gets a socket pair end (SOCK_SEQPACKET,
one netlink packet per record). Its requests reach the supervisor through the relay (a
plain ``send``) or a trapped ``sendto``/``sendmsg``; the answers are written into the pair,
where ``recv``/``recvmsg`` (emulated for their source address) find them. So
``getifaddrs()``, ``if_nameindex()``, ``ip addr``, ``ip link`` and ``ip route`` inside the
view show the stack.

The answers come from the stack's own NETLINK_ROUTE emulator (``stack/rtnetlink.py``,
checked against the kernel's), asked through the published stack
(``RemoteStack.netlink``), which lets only the stack's owner and root change it (as vunet
lets a view change its stack); a refusal is the netlink error (EPERM). This module makes
the program's socket and serves the calls the supervisor traps on it.
"""

from __future__ import annotations

import errno
import socket
import struct
from typing import TYPE_CHECKING

from threadnet.views import dgram

if TYPE_CHECKING:
    from threadnet.views.kernel import Notification
    from threadnet.views.supervisor import Supervisor, VSocket

NETLINK_ROUTE = 0
MAX_REQUEST = 65536

_IFF = {"UP": 0x1, "BROADCAST": 0x2, "LOOPBACK": 0x8, "POINTOPOINT": 0x10, "RUNNING": 0x40,
        "NOARP": 0x80, "PROMISC": 0x100, "MULTICAST": 0x1000, "LOWER_UP": 0x10000}
_ARPHRD = {"ether": 1, "loopback": 772, "none": 65534}
SOCKADDR_KERNEL = struct.pack("=HHII", socket.AF_NETLINK, 0, 0, 0)


def sockaddr_nl(pid: int, groups: int = 0) -> bytes:
    return struct.pack("=HHII", socket.AF_NETLINK, 0, pid, groups)


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":")) if text else b""


# -- the supervisor's side ------------------------------------------------------------------------
def setup(vs: VSocket, port_id: int) -> None:
    """Make ``vs`` an emulated NETLINK_ROUTE socket with port id ``port_id``."""
    vs.proto = NETLINK_ROUTE
    vs.netlink = vs.dgram = True
    vs.remote = SOCKADDR_KERNEL  # every packet comes from the kernel
    vs.nl_pid = port_id
    dgram.open_pair(vs)


_SOCKOPTS = {(socket.SOL_SOCKET, socket.SO_DOMAIN): socket.AF_NETLINK,
             (socket.SOL_SOCKET, socket.SO_PROTOCOL): NETLINK_ROUTE,
             (socket.SOL_SOCKET, socket.SO_RCVBUF): 212992,
             (socket.SOL_SOCKET, socket.SO_SNDBUF): 212992}


def call(sup: Supervisor, n: Notification, vs: VSocket) -> None:
    """A trapped call on an emulated netlink socket."""
    from threadnet.views.kernel import NR

    nr = n.nr
    if nr in (NR["sendto"], NR["sendmsg"], NR["sendmmsg"]):
        # a connected SOCK_SEQPACKET pair ignores the address: the relay answers
        sup.listener.cont(n.id)
    elif nr == NR["recvfrom"]:
        dgram.recvfrom(sup, n, vs)
    elif nr == NR["recvmsg"]:
        dgram.recvmsg(sup, n, vs)
    elif nr == NR["recvmmsg"]:
        dgram.recvmmsg(sup, n, vs)
    elif nr in (NR["getsockname"], NR["getpeername"]):
        raw = sockaddr_nl(vs.nl_pid) if nr == NR["getsockname"] else SOCKADDR_KERNEL
        sup._write_sockaddr(n, n.args[1], n.args[2], raw)
        sup.listener.reply(n.id, 0)
    elif nr == NR["bind"]:
        if n.args[2] & 0xFFFFFFFF >= 12:
            fam, _, pid, _ = struct.unpack("=HHII", sup._read(n, n.args[1], 12))
            if fam != socket.AF_NETLINK:
                raise OSError(errno.EINVAL, "Invalid argument")
            if pid:
                vs.nl_pid = pid
        sup.listener.reply(n.id, 0)
    elif nr == NR["getsockopt"]:
        level, name = n.args[1] & 0xFFFFFFFF, n.args[2] & 0xFFFFFFFF
        value = vs.type if (level, name) == (socket.SOL_SOCKET, socket.SO_TYPE) else \
            _SOCKOPTS.get((level, name), 0)
        (size,) = struct.unpack("=i", sup._read(n, n.args[4], 4))
        raw = struct.pack("=i", value)[:max(0, size)]
        sup._write(n, n.args[3], raw)
        sup._write(n, n.args[4], struct.pack("=i", len(raw)))
        sup.listener.reply(n.id, 0)
    else:  # connect (to the kernel), setsockopt (buffer sizes, strict checking...)
        sup.listener.reply(n.id, 0)
