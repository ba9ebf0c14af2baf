"""NETLINK_ROUTE for supervised programs: the stack's links, addresses and routes.

A program's ``socket(AF_NETLINK, ..., NETLINK_ROUTE)`` gets a socket pair end (SOCK_SEQPACKET,
one netlink packet per record). Its requests reach the supervisor through the relay (a
plain ``send``) or a trapped ``sendto``/``sendmsg``; the answers are built here from the
stack's ``ip -j`` data (``RemoteStack.ip``, ``stack/ipcommand.py``) and written into the
pair, where ``recv``/``recvmsg`` (emulated for their source address) find them. So
``getifaddrs()``, ``if_nameindex()``, ``ip addr``, ``ip link`` and ``ip route`` inside the
view show the stack.

Served: RTM_GETLINK, RTM_GETADDR, RTM_GETROUTE (dumps, and GETLINK of one interface); other
dumps answer an empty NLMSG_DONE. Changes (RTM_NEWADDR/DELADDR, RTM_NEWROUTE/DELROUTE,
RTM_NEWLINK/SETLINK for up, down and MTU) become the ``ip`` command they mean on the stack,
which allows them to the stack's owner and root only (as vunet lets a view change its
stack); a refusal is the netlink error (EPERM).
``build_replies`` is sans-IO.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet.views import dgram

if TYPE_CHECKING:
    from threadnet.views.kernel import Notification
    from threadnet.views.supervisor import Supervisor, VSocket

NETLINK_ROUTE = 0
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 1, 2, 4, 0x300
RTM_NEWLINK, RTM_GETLINK = 16, 18
RTM_NEWADDR, RTM_GETADDR = 20, 22
RTM_NEWROUTE, RTM_GETROUTE = 24, 26
_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
_IFADDR = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTA = struct.Struct("=HH")
MAX_PACKET = 4096  # bytes of messages per record (what glibc's first read takes)
MAX_REQUEST = 65536

_IFF = {"UP": 0x1, "BROADCAST": 0x2, "LOOPBACK": 0x8, "POINTOPOINT": 0x10, "RUNNING": 0x40,
        "NOARP": 0x80, "PROMISC": 0x100, "MULTICAST": 0x1000, "LOWER_UP": 0x10000}
_OPER = {"UNKNOWN": 0, "NOTPRESENT": 1, "DOWN": 2, "LOWERLAYERDOWN": 3, "DORMANT": 5, "UP": 6}
_SCOPE = {"global": 0, "site": 200, "link": 253, "host": 254, "nowhere": 255}
_PROTO = {"kernel": 2, "boot": 3, "static": 4, "ra": 9, "dhcp": 16}
_ARPHRD = {"ether": 1, "loopback": 772, "none": 65534}
SOCKADDR_KERNEL = struct.pack("=HHII", socket.AF_NETLINK, 0, 0, 0)


def sockaddr_nl(pid: int, groups: int = 0) -> bytes:
    return struct.pack("=HHII", socket.AF_NETLINK, 0, pid, groups)


def _attr(kind: int, data: bytes) -> bytes:
    raw = _RTA.pack(_RTA.size + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def _msg(kind: int, flags: int, seq: int, pid: int, body: bytes) -> bytes:
    raw = _HDR.pack(_HDR.size + len(body), kind, flags, seq, pid) + body
    return raw + b"\0" * (-len(raw) % 4)


def _mac(text: str) -> bytes:
    return bytes(int(x, 16) for x in text.split(":")) if text else b""


def _link(link: dict[str, Any]) -> bytes:
    flags = 0
    for f in link.get("flags", []):
        flags |= _IFF.get(f, 0)
    if flags & _IFF["UP"] and flags & _IFF["LOWER_UP"]:
        flags |= _IFF["RUNNING"]
    body = _IFINFO.pack(socket.AF_UNSPEC, _ARPHRD.get(link.get("link_type", ""), 1),
                        int(link["ifindex"]), flags, 0)
    body += _attr(3, link["ifname"].encode() + b"\0")  # IFLA_IFNAME
    body += _attr(4, struct.pack("=I", int(link.get("mtu", 1500))))  # IFLA_MTU
    body += _attr(13, struct.pack("=I", int(link.get("txqlen", 1000))))  # IFLA_TXQLEN
    body += _attr(16, bytes([_OPER.get(link.get("operstate", "UNKNOWN"), 0)]))  # IFLA_OPERSTATE
    body += _attr(17, b"\0")  # IFLA_LINKMODE
    body += _attr(27, struct.pack("=I", 0))  # IFLA_GROUP
    body += _attr(6, link.get("qdisc", "noqueue").encode() + b"\0")  # IFLA_QDISC
    if link.get("address"):
        body += _attr(1, _mac(link["address"]))  # IFLA_ADDRESS
    if link.get("broadcast"):
        body += _attr(2, _mac(link["broadcast"]))  # IFLA_BROADCAST
    return body


def _addr(link: dict[str, Any], a: dict[str, Any]) -> bytes:
    fam = socket.AF_INET if a["family"] == "inet" else socket.AF_INET6
    flags = 0x80 if a.get("valid_life_time", 0xFFFFFFFF) == 0xFFFFFFFF else 0  # PERMANENT
    if a.get("tentative"):
        flags |= 0x40
    body = _IFADDR.pack(fam, int(a["prefixlen"]), flags & 0xFF, _SCOPE.get(a.get("scope"), 0),
                        int(link["ifindex"]))
    local = ipaddress.ip_address(a["local"]).packed
    body += _attr(1, local)  # IFA_ADDRESS
    if fam == socket.AF_INET:
        body += _attr(2, local)  # IFA_LOCAL
        if a.get("broadcast"):
            body += _attr(4, ipaddress.ip_address(a["broadcast"]).packed)  # IFA_BROADCAST
        body += _attr(3, (a.get("label") or link["ifname"]).encode() + b"\0")  # IFA_LABEL
    body += _attr(8, struct.pack("=I", flags))  # IFA_FLAGS
    body += _attr(6, struct.pack("=IIII", int(a.get("preferred_life_time", 0xFFFFFFFF)),
                                 int(a.get("valid_life_time", 0xFFFFFFFF)), 0, 0))  # CACHEINFO
    return body


def _route(r: dict[str, Any], fam: int, ifindex: dict[str, int]) -> bytes:
    dst = r.get("dst", "default")
    if dst == "default":
        dst_len, dst_raw = 0, b""
    else:
        net = ipaddress.ip_network(dst if "/" in dst else dst + ("/32" if fam == socket.AF_INET
                                                                 else "/128"), strict=False)
        dst_len, dst_raw = net.prefixlen, net.network_address.packed
    scope = _SCOPE.get(r.get("scope", "global"), 0)
    body = _RTMSG.pack(fam, dst_len, 0, 0, 254, _PROTO.get(r.get("protocol", "boot"), 3),
                       scope, 1, 0)
    body += _attr(15, struct.pack("=I", 254))  # RTA_TABLE
    if dst_raw:
        body += _attr(1, dst_raw)  # RTA_DST
    if r.get("metric") is not None:
        body += _attr(6, struct.pack("=I", int(r["metric"])))  # RTA_PRIORITY
    if r.get("prefsrc"):
        body += _attr(7, ipaddress.ip_address(r["prefsrc"]).packed)  # RTA_PREFSRC
    if r.get("gateway"):
        body += _attr(5, ipaddress.ip_address(r["gateway"]).packed)  # RTA_GATEWAY
    if r.get("dev") in ifindex:
        body += _attr(4, struct.pack("=I", ifindex[r["dev"]]))  # RTA_OIF
    return body


def _error(seq: int, pid: int, err: int, request: bytes) -> bytes:
    return _msg(NLMSG_ERROR, 0, seq, pid, struct.pack("=i", -err) + request[:_HDR.size])


def _packets(msgs: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    cur = b""
    for m in msgs:
        if cur and len(cur) + len(m) > MAX_PACKET:
            out.append(cur)
            cur = b""
        cur += m
    if cur:
        out.append(cur)
    return out


def build_replies(data: bytes, pid: int, ip: Callable[[list[str]], list[dict[str, Any]]]
                  ) -> list[bytes]:
    """The packets that answer the netlink messages in ``data`` (sent by the socket
    whose port id is ``pid``); ``ip(argv)`` gives the stack's ``ip -j`` data."""
    out: list[bytes] = []
    off = 0
    while off + _HDR.size <= len(data):
        length, kind, flags, seq, _ = _HDR.unpack_from(data, off)
        if length < _HDR.size or off + length > len(data):
            break
        req = data[off:off + length]
        off += (length + 3) & ~3
        body = req[_HDR.size:]
        if not flags & NLM_F_REQUEST:
            continue
        msgs: list[bytes] = []
        dump = (flags & NLM_F_DUMP) == NLM_F_DUMP
        try:
            fam = body[0] if body else 0
            if kind == RTM_GETLINK:
                links = ip(["link"])
                if not dump:
                    index = _IFINFO.unpack_from(body)[2] if len(body) >= _IFINFO.size else 0
                    name = _find_attr(body[_IFINFO.size:], 3)
                    links = [lk for lk in links if lk["ifindex"] == index
                             or (name and lk["ifname"].encode() == name.rstrip(b"\0"))]
                    if not links:
                        raise OSError(errno.ENODEV, "No such device")
                for lk in links:
                    msgs.append(_msg(RTM_NEWLINK, NLM_F_MULTI if dump else 0, seq, pid,
                                     _link(lk)))
            elif kind == RTM_GETADDR and dump:
                for lk in ip(["addr"]):
                    for a in lk.get("addr_info", []):
                        afam = socket.AF_INET if a["family"] == "inet" else socket.AF_INET6
                        if fam in (0, afam):
                            msgs.append(_msg(RTM_NEWADDR, NLM_F_MULTI, seq, pid, _addr(lk, a)))
            elif kind == RTM_GETROUTE and dump:
                ifindex = {lk["ifname"]: lk["ifindex"] for lk in ip(["link"])}
                for rfam, argv in ((socket.AF_INET, ["-4", "route"]),
                                   (socket.AF_INET6, ["-6", "route"])):
                    if fam in (0, rfam):
                        for r in ip(argv):
                            msgs.append(_msg(RTM_NEWROUTE, NLM_F_MULTI, seq, pid,
                                             _route(r, rfam, ifindex)))
            elif kind % 4 == 2 and dump:
                pass  # another dump (neighbours, rules, netconf...): empty
            elif kind in _CHANGES:
                ip(change_argv(kind, flags, body, ip))  # the stack's owner and root only
            else:
                raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        except Exception as exc:  # OSError, or the ip command's IpError (with an errno)
            err = getattr(exc, "errno", None) or errno.EINVAL
            out.extend(_packets([_error(seq, pid, err, req)]))
            continue
        if dump:
            msgs.append(_msg(NLMSG_DONE, NLM_F_MULTI, seq, pid, struct.pack("=i", 0)))
        elif flags & NLM_F_ACK:
            msgs.append(_error(seq, pid, 0, req))
        out.extend(_packets(msgs))
    return out


RTM_DELLINK, RTM_SETLINK, RTM_DELADDR, RTM_DELROUTE = 17, 19, 21, 25
NLM_F_REPLACE = 0x100
_CHANGES = frozenset((RTM_NEWLINK, RTM_SETLINK, RTM_NEWADDR, RTM_DELADDR, RTM_NEWROUTE,
                      RTM_DELROUTE))


def change_argv(kind: int, flags: int, body: bytes,
                ip: Callable[[list[str]], list[dict[str, Any]]]) -> list[str]:
    """The ``ip`` command line (``stack/ipcommand.py``) a netlink change means, as vunet
    lets a view change its stack: addresses, routes, a link's state and MTU."""
    names = {lk["ifindex"]: lk["ifname"] for lk in ip(["link"])}

    def dev(index: int) -> list[str]:
        if index not in names:
            raise OSError(errno.ENODEV, "No such device")
        return ["dev", names[index]]

    verb = "replace" if flags & NLM_F_REPLACE else "add"
    if kind in (RTM_NEWLINK, RTM_SETLINK):
        if len(body) < _IFINFO.size:
            raise OSError(errno.EINVAL, "Invalid argument")
        _, _, index, ifflags, change = _IFINFO.unpack_from(body)
        argv = ["link", "set", *dev(index)]
        if change & _IFF["UP"]:
            argv.append("up" if ifflags & _IFF["UP"] else "down")
        mtu = _find_attr(body[_IFINFO.size:], 4)
        if mtu is not None and len(mtu) >= 4:
            argv += ["mtu", str(struct.unpack_from("=I", mtu)[0])]
        if len(argv) == 4:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        return argv
    if kind in (RTM_NEWADDR, RTM_DELADDR):
        if len(body) < _IFADDR.size:
            raise OSError(errno.EINVAL, "Invalid argument")
        fam, plen, _, _, index = _IFADDR.unpack_from(body)
        attrs = body[_IFADDR.size:]
        raw = _find_attr(attrs, 2) or _find_attr(attrs, 1)  # IFA_LOCAL, IFA_ADDRESS
        if raw is None:
            raise OSError(errno.EINVAL, "Invalid argument")
        addr = ipaddress.ip_address(raw)
        return (["-6"] if fam == socket.AF_INET6 else []) + \
            ["addr", "del" if kind == RTM_DELADDR else verb, f"{addr}/{plen}", *dev(index)]
    if len(body) < _RTMSG.size:  # a route
        raise OSError(errno.EINVAL, "Invalid argument")
    fam, dst_len = body[0], body[1]
    attrs = body[_RTMSG.size:]
    dst = _find_attr(attrs, 1)
    argv = (["-6"] if fam == socket.AF_INET6 else []) + \
        ["route", "del" if kind == RTM_DELROUTE else verb,
         f"{ipaddress.ip_address(dst)}/{dst_len}" if dst else "default"]
    gw = _find_attr(attrs, 5)
    if gw:
        argv += ["via", str(ipaddress.ip_address(gw))]
    oif = _find_attr(attrs, 4)
    if oif and len(oif) >= 4:
        argv += dev(struct.unpack_from("=I", oif)[0])
    metric = _find_attr(attrs, 6)
    if metric and len(metric) >= 4:
        argv += ["metric", str(struct.unpack_from("=I", metric)[0])]
    return argv


def _find_attr(attrs: bytes, kind: int) -> bytes | None:
    off = 0
    while off + _RTA.size <= len(attrs):
        ln, k = _RTA.unpack_from(attrs, off)
        if ln < _RTA.size:
            return None
        if k == kind:
            return attrs[off + _RTA.size:off + ln]
        off += (ln + 3) & ~3
    return None


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
