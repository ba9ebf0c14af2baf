"""Netlink (RFC 3549) as Linux's NETLINK_ROUTE family speaks it: the message header,
the route family's fixed headers (rtgenmsg, ifinfomsg, ifaddrmsg, rtmsg, ndmsg), typed
attributes (rtattr/nlattr, nested too), NLMSG_DONE and NLMSG_ERROR.

Everything is in host byte order (netlink is a local protocol), except the addresses
inside attributes, which are in network order. Messages and attributes start on 4-byte
boundaries (NLMSG_ALIGN, RTA_ALIGN): ``nlmsg_len``/``rta_len`` count the header and the
data without the padding after it. Several messages may share one datagram.

Reading follows the kernel's ``netlink_rcv_skb``: the messages of a datagram are read in
turn until fewer than a header's 16 bytes remain, or a header claims fewer than 16 or
more than remain (then the rest of the datagram is ignored: iproute2 sends its requests
in a buffer padded with zeros, whose "message" of length 0 the kernel skips). Malformed
data raises ``NetlinkError`` (a ValueError) with the errno the kernel answers, EINVAL.
"""

from __future__ import annotations

import errno
import struct
from collections.abc import Iterator
from typing import NamedTuple

# -- message types and flags (linux/netlink.h, linux/rtnetlink.h) --------------------------------
NLMSG_NOOP, NLMSG_ERROR, NLMSG_DONE, NLMSG_OVERRUN = 1, 2, 3, 4
NLMSG_MIN_TYPE = 0x10

NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_ECHO = 0x01, 0x02, 0x04, 0x08
NLM_F_DUMP_INTR, NLM_F_DUMP_FILTERED = 0x10, 0x20
NLM_F_ROOT, NLM_F_MATCH, NLM_F_ATOMIC = 0x100, 0x200, 0x400
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
# modifiers of NEW requests
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
# flags of an NLMSG_ERROR
NLM_F_CAPPED, NLM_F_ACK_TLVS = 0x100, 0x200

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26
RTM_NEWNEIGH, RTM_DELNEIGH, RTM_GETNEIGH = 28, 29, 30
RTM_MAX = 127  # the highest type the kernel's rtnetlink knows of (any beyond: EOPNOTSUPP)

AF_UNSPEC, AF_INET, AF_INET6, AF_PACKET = 0, 2, 10, 17

# -- links: ifinfomsg and IFLA_* (linux/if_link.h, linux/if.h, linux/if_arp.h) -----------------
IFLA_ADDRESS, IFLA_BROADCAST, IFLA_IFNAME, IFLA_MTU, IFLA_LINK = 1, 2, 3, 4, 5
IFLA_QDISC, IFLA_STATS, IFLA_MASTER, IFLA_PROTINFO, IFLA_TXQLEN = 6, 7, 10, 12, 13
IFLA_OPERSTATE, IFLA_LINKMODE, IFLA_LINKINFO, IFLA_IFALIAS = 16, 17, 18, 20
IFLA_STATS64, IFLA_AF_SPEC, IFLA_GROUP, IFLA_EXT_MASK = 23, 26, 27, 29
IFLA_PROMISCUITY, IFLA_NUM_TX_QUEUES, IFLA_NUM_RX_QUEUES, IFLA_CARRIER = 30, 31, 32, 33
IFLA_MIN_MTU, IFLA_MAX_MTU, IFLA_ALT_IFNAME = 50, 51, 53

IFF_UP, IFF_BROADCAST, IFF_DEBUG, IFF_LOOPBACK = 0x1, 0x2, 0x4, 0x8
IFF_POINTOPOINT, IFF_NOTRAILERS, IFF_RUNNING, IFF_NOARP = 0x10, 0x20, 0x40, 0x80
IFF_PROMISC, IFF_ALLMULTI, IFF_MASTER, IFF_SLAVE = 0x100, 0x200, 0x400, 0x800
IFF_MULTICAST, IFF_PORTSEL, IFF_AUTOMEDIA, IFF_DYNAMIC = 0x1000, 0x2000, 0x4000, 0x8000
IFF_LOWER_UP, IFF_DORMANT, IFF_ECHO = 0x10000, 0x20000, 0x40000
#: the flags a SETLINK may change (the kernel's __dev_change_flags)
IFF_SETTABLE = (IFF_UP | IFF_NOTRAILERS | IFF_NOARP | IFF_DEBUG | IFF_MULTICAST
                | IFF_PORTSEL | IFF_AUTOMEDIA | IFF_PROMISC | IFF_ALLMULTI | IFF_DYNAMIC)

ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 0xFFFE

IF_OPER_UNKNOWN, IF_OPER_NOTPRESENT, IF_OPER_DOWN, IF_OPER_LOWERLAYERDOWN = 0, 1, 2, 3
IF_OPER_TESTING, IF_OPER_DORMANT, IF_OPER_UP = 4, 5, 6

# -- addresses: ifaddrmsg and IFA_* (linux/if_addr.h) --------------------------------------------
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST, IFA_ANYCAST = 1, 2, 3, 4, 5
IFA_CACHEINFO, IFA_MULTICAST, IFA_FLAGS, IFA_RT_PRIORITY, IFA_PROTO = 6, 7, 8, 9, 11

IFA_F_SECONDARY = IFA_F_TEMPORARY = 0x01
IFA_F_NODAD, IFA_F_OPTIMISTIC, IFA_F_DADFAILED, IFA_F_HOMEADDRESS = 0x02, 0x04, 0x08, 0x10
IFA_F_DEPRECATED, IFA_F_TENTATIVE, IFA_F_PERMANENT = 0x20, 0x40, 0x80
IFA_F_MANAGETEMPADDR, IFA_F_NOPREFIXROUTE, IFA_F_MCAUTOJOIN = 0x100, 0x200, 0x400
IFA_F_STABLE_PRIVACY = 0x800
INFINITY_LIFE_TIME = 0xFFFFFFFF

RT_SCOPE_UNIVERSE, RT_SCOPE_SITE, RT_SCOPE_LINK = 0, 200, 253
RT_SCOPE_HOST, RT_SCOPE_NOWHERE = 254, 255

# -- routes: rtmsg and RTA_* (linux/rtnetlink.h) -------------------------------------------------
RTA_DST, RTA_SRC, RTA_IIF, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY = 1, 2, 3, 4, 5, 6
RTA_PREFSRC, RTA_METRICS, RTA_MULTIPATH, RTA_FLOW, RTA_CACHEINFO = 7, 8, 9, 11, 12
RTA_TABLE, RTA_MARK, RTA_VIA, RTA_NEWDST, RTA_PREF = 15, 16, 18, 19, 20
RTA_ENCAP_TYPE, RTA_ENCAP, RTA_EXPIRES, RTA_UID, RTA_NH_ID = 21, 22, 23, 25, 30

RT_TABLE_UNSPEC, RT_TABLE_MAIN, RT_TABLE_LOCAL = 0, 254, 255
RTN_UNSPEC, RTN_UNICAST, RTN_LOCAL, RTN_BROADCAST = 0, 1, 2, 3
RTPROT_UNSPEC, RTPROT_REDIRECT, RTPROT_KERNEL, RTPROT_BOOT, RTPROT_STATIC = 0, 1, 2, 3, 4
RTPROT_RA, RTPROT_DHCP = 9, 16
RTNH_F_DEAD, RTNH_F_ONLINK, RTNH_F_LINKDOWN = 1, 4, 16
RTM_F_NOTIFY, RTM_F_CLONED, RTM_F_LOOKUP_TABLE, RTM_F_FIB_MATCH = 0x100, 0x200, 0x1000, 0x2000
RTCF_LOCAL = 0x80000000  # a route get's answer for a local address (ip's "cache <local>")
# RTA_PREF (linux/icmpv6.h ICMPV6_ROUTER_PREF_*)
ROUTER_PREF_MEDIUM, ROUTER_PREF_HIGH, ROUTER_PREF_LOW = 0, 1, 3

# -- neighbours: ndmsg and NDA_* (linux/neighbour.h) ---------------------------------------------
NDA_DST, NDA_LLADDR, NDA_CACHEINFO, NDA_PROBES = 1, 2, 3, 4
NUD_INCOMPLETE, NUD_REACHABLE, NUD_STALE, NUD_DELAY = 0x01, 0x02, 0x04, 0x08
NUD_PROBE, NUD_FAILED, NUD_NOARP, NUD_PERMANENT = 0x10, 0x20, 0x40, 0x80

NLA_F_NESTED, NLA_F_NET_BYTEORDER = 0x8000, 0x4000
NLA_TYPE_MASK = ~(NLA_F_NESTED | NLA_F_NET_BYTEORDER) & 0xFFFF

# -- the structures --------------------------------------------------------------------------------
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, (pad), type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBi")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope,
#                                      type, flags
NDMSG = struct.Struct("=BxxxiHBB")  # family, (pad), ifindex, state, flags, type
RTATTR = struct.Struct("=HH")  # len, type
IFA_CACHEINFO_S = struct.Struct("=IIII")  # preferred, valid, cstamp, tstamp
RTA_CACHEINFO_S = struct.Struct("=IIIiIIII")  # clntref, lastuse, expires, error, used, id,
#                                               ts, tsage
NDA_CACHEINFO_S = struct.Struct("=IIII")  # confirmed, used, updated, refcnt
_ERRNO = struct.Struct("=i")
_U8, _U16, _U32, _U64 = (struct.Struct(f"={c}") for c in "BHIQ")

HDRLEN = NLMSGHDR.size
#: the fixed header after nlmsghdr of each route-family request (a dump may send only the
#: rtgenmsg's family byte)
FAMILY_HEADER = {RTM_NEWLINK: IFINFOMSG, RTM_DELLINK: IFINFOMSG, RTM_GETLINK: IFINFOMSG,
                 RTM_SETLINK: IFINFOMSG, RTM_NEWADDR: IFADDRMSG, RTM_DELADDR: IFADDRMSG,
                 RTM_GETADDR: IFADDRMSG, RTM_NEWROUTE: RTMSG, RTM_DELROUTE: RTMSG,
                 RTM_GETROUTE: RTMSG, RTM_NEWNEIGH: NDMSG, RTM_DELNEIGH: NDMSG,
                 RTM_GETNEIGH: NDMSG}


class NetlinkError(ValueError):
    """Malformed netlink data; ``errno`` is what the kernel would answer."""

    def __init__(self, message: str, err: int = errno.EINVAL) -> None:
        super().__init__(message)
        self.errno = err


class Header(NamedTuple):
    len: int
    type: int
    flags: int
    seq: int
    pid: int


def align(n: int) -> int:
    """NLMSG_ALIGN / RTA_ALIGN: ``n`` rounded up to a multiple of 4."""
    return (n + 3) & ~3


def message(type: int, flags: int, seq: int, pid: int, payload: bytes = b"") -> bytes:
    """One message: header and payload, padded to a 4-byte boundary (``nlmsg_len`` does
    not count the padding)."""
    n = HDRLEN + len(payload)
    return NLMSGHDR.pack(n, type, flags, seq, pid) + payload + bytes(align(n) - n)


def messages(data: bytes | memoryview) -> Iterator[tuple[Header, memoryview]]:
    """The messages of a datagram as (header, payload), read as the kernel does: it stops
    quietly at fewer than 16 bytes left or at a header whose length is below 16 or beyond
    the data (the zero padding iproute2 sends after its requests)."""
    view = memoryview(data)
    off, end = 0, len(view)
    while end - off >= HDRLEN:
        hdr = Header(*NLMSGHDR.unpack_from(view, off))
        if hdr.len < HDRLEN or hdr.len > end - off:
            return
        yield hdr, view[off + HDRLEN:off + hdr.len]
        off += align(hdr.len)


def first_header(data: bytes | memoryview) -> Header | None:
    """The header a datagram begins with, even if it claims a wrong length; None when
    fewer than 16 bytes came."""
    if len(data) < HDRLEN:
        return None
    return Header(*NLMSGHDR.unpack_from(data, 0))


def error(err: int, request: Header, request_payload: bytes | memoryview, pid: int, *,
          capped: bool = False) -> bytes:
    """The NLMSG_ERROR the kernel answers a request with (``netlink_ack``): the negative
    errno, then the request's header and, for an error (not an acknowledgement, err 0)
    unless ``capped``, its payload. An acknowledgement carries the header only, flagged
    NLM_F_CAPPED. ``pid`` is the requester's port id; the sequence number is the
    request's."""
    echo = NLMSGHDR.pack(*request)
    flags = 0
    if err and not capped:
        echo += bytes(request_payload)
    else:
        flags = NLM_F_CAPPED
    return message(NLMSG_ERROR, flags, request.seq, pid, _ERRNO.pack(-abs(err)) + echo)


def done(seq: int, pid: int, flags: int = NLM_F_MULTI) -> bytes:
    """The NLMSG_DONE that ends a dump, with its int 0 (the dump's error)."""
    return message(NLMSG_DONE, flags, seq, pid, _ERRNO.pack(0))


def parse_error(payload: bytes | memoryview) -> tuple[int, Header | None]:
    """An NLMSG_ERROR's (negative errno, echoed request header or None)."""
    if len(payload) < 4:
        raise NetlinkError("NLMSG_ERROR shorter than its errno")
    (err,) = _ERRNO.unpack_from(payload, 0)
    echo = first_header(payload[4:])
    return err, echo


# -- attributes ------------------------------------------------------------------------------------
def attr(type: int, data: bytes) -> bytes:
    """One attribute, padded to 4 bytes."""
    n = RTATTR.size + len(data)
    if n > 0xFFFF:
        raise NetlinkError(f"attribute {type} of {len(data)} bytes is too long")
    return RTATTR.pack(n, type) + data + bytes(align(n) - n)


def attr_u8(type: int, v: int) -> bytes:
    return attr(type, _U8.pack(v))


def attr_u16(type: int, v: int) -> bytes:
    return attr(type, _U16.pack(v))


def attr_u32(type: int, v: int) -> bytes:
    return attr(type, _U32.pack(v))


def attr_u64(type: int, v: int) -> bytes:
    return attr(type, _U64.pack(v))


def attr_str(type: int, s: str) -> bytes:
    """A NUL-terminated string attribute (IFLA_IFNAME, IFA_LABEL...)."""
    return attr(type, s.encode() + b"\0")


def attr_nested(type: int, *children: bytes) -> bytes:
    """A nested attribute (its data is attributes), flagged NLA_F_NESTED."""
    return attr(type | NLA_F_NESTED, b"".join(children))


def attrs(data: bytes | memoryview) -> list[tuple[int, memoryview]]:
    """The attributes in ``data`` as (type without the NESTED/BYTEORDER flags, value),
    in order. Fewer than 4 bytes left at the end are ignored, as the kernel does; an
    attribute whose length is below 4 or runs past the data is NetlinkError (EINVAL)."""
    view = memoryview(data)
    out = []
    off, end = 0, len(view)
    while end - off >= RTATTR.size:
        n, t = RTATTR.unpack_from(view, off)
        if n < RTATTR.size or n > end - off:
            raise NetlinkError(f"attribute {t & NLA_TYPE_MASK} at offset {off} claims "
                               f"{n} bytes of {end - off}")
        out.append((t & NLA_TYPE_MASK, view[off + RTATTR.size:off + n]))
        off += align(n)
    return out


def attr_map(data: bytes | memoryview) -> dict[int, memoryview]:
    """``attrs`` as a dict: the last of each type wins, as in the kernel's nla_parse."""
    return dict(attrs(data))


def get_u8(v: bytes | memoryview) -> int:
    return _fixed(_U8, v)


def get_u16(v: bytes | memoryview) -> int:
    return _fixed(_U16, v)


def get_u32(v: bytes | memoryview) -> int:
    return _fixed(_U32, v)


def get_u64(v: bytes | memoryview) -> int:
    return _fixed(_U64, v)


def _fixed(s: struct.Struct, v: bytes | memoryview) -> int:
    if len(v) < s.size:
        raise NetlinkError(f"attribute of {len(v)} bytes where {s.size} are needed")
    return int(s.unpack_from(v, 0)[0])


def get_str(v: bytes | memoryview) -> str:
    """A string attribute: up to its first NUL (the kernel's nla_strscpy)."""
    raw = bytes(v)
    cut = raw.find(b"\0")
    try:
        return (raw if cut < 0 else raw[:cut]).decode()
    except UnicodeDecodeError:
        raise NetlinkError("string attribute is not UTF-8") from None


def fixed_header(s: struct.Struct, payload: bytes | memoryview) -> tuple[tuple, memoryview]:
    """A request's fixed header (``IFINFOMSG``...) and its attributes' bytes; a payload
    shorter than the header is NetlinkError (EINVAL)."""
    if len(payload) < s.size:
        raise NetlinkError(f"message payload of {len(payload)} bytes is shorter than its "
                           f"{s.size}-byte header")
    return s.unpack_from(payload, 0), memoryview(payload)[align(s.size):]
