"""Raw IP sockets, ping sockets and packet sockets on a Stack, as Linux has them.

* ``socket(AF_INET|AF_INET6, SOCK_RAW, proto)`` (raw(7)): a copy of every packet of
  ``proto`` delivered locally, IPv4 with its header and IPv6 without, as Linux gives
  them; sends have their IP header built by the stack, or with ``IP_HDRINCL`` (implied
  by ``IPPROTO_RAW``; ``IPV6_HDRINCL`` for IPv6) take the caller's, whose IPv4 total
  length and checksum the stack fills in, and its identification and source if zero
  (an IPv6 header is sent as given). The ICMPv6 checksum is the
  stack's (``IPV6_CHECKSUM`` asks for one at another offset for other protocols).
  ``bind`` filters on the destination address, ``connect`` on the source.
* ``socket(AF_INET, SOCK_DGRAM, IPPROTO_ICMP)`` and ``AF_INET6``/``IPPROTO_ICMPV6``
  (Linux's ping sockets, icmp(7)): send echo requests only; the stack writes the
  socket's identifier (its "port", chosen at bind or first send) and the checksum, and
  the socket receives the echo replies with that identifier, ICMP message only. A
  connected one hears of a destination unreachable that quotes its request as an
  error on its next call (as Linux without ``IP_RECVERR``).
* ``socket(AF_PACKET, SOCK_RAW|SOCK_DGRAM, htons(proto))`` (packet(7)): frames in and
  out of a stack interface (``bind((ifname, proto))``; all interfaces before a bind),
  ``ETH_P_ALL`` or one EtherType, with or without the Ethernet header; the address is
  ``(ifname, proto, pkttype, hatype, addr)`` as Python gives for AF_PACKET. Frames the
  stack sends are seen by ``ETH_P_ALL`` sockets only, as Linux's ptype_all.

Each is a ``StackSocket`` whose ``_raw`` is one of the ends below; the core sees it as a
tap (``stack/raw.py``). Datagrams on the socket pair carry the address in front: the
UDP sockets' header for IP (family, address, port 0), ``_PKT`` for frames.
"""

from __future__ import annotations

import errno
import os
import random
import socket as _socket
import struct
from typing import TYPE_CHECKING, Any

from threadnet.stack import raw
from threadnet.stack.ip import OUTPUT, run_hooks
from threadnet.wire.checksum import checksum, pseudo_header
from threadnet.wire.ethernet import ETH_P_IPV4, ETH_P_IPV6

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface

#: a StackSocket (stack/socket.py imports this module, not the other way round)
StackSocket = Any

AF_PACKET = getattr(_socket, "AF_PACKET", 17)
SOCK_RAW = _socket.SOCK_RAW
IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_RAW = 1, 58, 255
IP_HDRINCL, IP_TTL = 3, 2
SOL_RAW, ICMP_FILTER, ICMPV6_FILTER = 255, 1, 1
IPV6_CHECKSUM, IPV6_UNICAST_HOPS, IPV6_HDRINCL = 7, 16, 36
ETH_P_ALL = 3
ARPHRD_ETHER = 1
PACKET_HOST, PACKET_BROADCAST, PACKET_MULTICAST, PACKET_OTHERHOST, PACKET_OUTGOING = range(5)
#: a frame's address on the pair: a marker (1), interface name, EtherType, packet type,
#: hardware type, the frame's source MAC
_PKT = struct.Struct("!B16sHBH6s")
_IP = struct.Struct("!B16sH")  # the UDP sockets' datagram header (stack/socket.py)
_ECHO_REQUEST = {4: 8, 6: 128}
_ECHO_REPLY = {4: 0, 6: 129}
_UNREACH = {4: 3, 6: 1}
# RFC 1122 3.2.2.1 codes as Linux's icmp_err_convert and icmpv6_err_convert map them
_ERRNO4 = {0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT,
           3: errno.ECONNREFUSED, 4: errno.EMSGSIZE, 5: errno.EOPNOTSUPP}
_ERRNO6 = {0: errno.ENETUNREACH, 1: errno.EACCES, 3: errno.EHOSTUNREACH, 4: errno.ECONNREFUSED}


def kind_of(family: int, type: int, proto: int) -> str:
    """What a (family, type, proto) opens: "" (TCP or UDP), "raw", "ping" or "packet";
    OSError for what a stack does not have."""
    if family == AF_PACKET:
        if type not in (SOCK_RAW, _socket.SOCK_DGRAM):
            raise OSError(errno.ESOCKTNOSUPPORT, "packet sockets are SOCK_RAW or SOCK_DGRAM")
        return "packet"
    if family not in (_socket.AF_INET, _socket.AF_INET6):
        raise OSError(errno.EAFNOSUPPORT, "threadnet stacks support AF_INET, AF_INET6 "
                      "and AF_PACKET")
    if type == SOCK_RAW:
        if not 0 < proto <= 255:
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
        return "raw"
    if type == _socket.SOCK_DGRAM and proto == (IPPROTO_ICMP if family == _socket.AF_INET
                                                  else IPPROTO_ICMPV6):
        return "ping"
    if type == _socket.SOCK_DGRAM and proto in (IPPROTO_ICMP, IPPROTO_ICMPV6):
        raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
    return ""


def open_end(sock: StackSocket, kind: str) -> IpEnd | PacketEnd:
    if kind == "packet":
        return PacketEnd(sock)
    return IpEnd(sock, kind)


# -- the wire form of AF_PACKET addresses for a published stack (bytes are not JSON) --------
def to_json(addr: Any) -> Any:
    if isinstance(addr, tuple | list):
        return [{"hex": bytes(a).hex()} if isinstance(a, bytes | bytearray) else a for a in addr]
    return addr


def from_json(addr: Any) -> Any:
    if isinstance(addr, list):
        return tuple(bytes.fromhex(a["hex"]) if isinstance(a, dict) and isinstance(
            a.get("hex"), str) else a for a in addr)
    return addr


def decode_frame(data: bytes, bufsize: int) -> tuple[bytes, tuple]:
    """A datagram of a packet socket's pair: (frame or payload, address)."""
    _, name, proto, pkttype, hatype, mac = _PKT.unpack_from(data)
    return (data[_PKT.size:_PKT.size + bufsize],
            (name.rstrip(b"\0").decode(), proto, pkttype, hatype, mac))


class IpEnd:
    """A raw IP or ping socket, as the stack's IP tap."""

    def __init__(self, sock: StackSocket, kind: str) -> None:
        self.sock = sock
        self.stack = sock._stack
        self.kind = kind
        self.family = 4 if sock._vfamily == _socket.AF_INET else 6
        self.proto = sock._vproto
        self.hdrincl = kind == "raw" and self.proto == IPPROTO_RAW
        self.local = b""
        self.remote: bytes | None = None
        self.ident = 0  # a ping socket's identifier, 0 until bound
        self.ttl = 64
        #: ICMP_FILTER / ICMPV6_FILTER: bit n set blocks ICMP type n (a raw socket's only)
        self.icmp_block = 0
        self.csum_offset = 2 if (kind == "raw" and self.family == 6
                                 and self.proto == IPPROTO_ICMPV6) else -1
        if kind == "raw" and self.proto == IPPROTO_RAW:
            return  # IPPROTO_RAW sends only (raw(7)): no tap
        with self.stack.locked():
            raw.add_tap(self.stack, self)

    # -- options and names ----------------------------------------------------------------
    def setsockopt(self, level: int, name: int, value: int) -> bool:
        """Take an option that changes this end; False for one the socket just keeps."""
        if (level, name) in ((_socket.IPPROTO_IP, IP_HDRINCL),
                             (_socket.IPPROTO_IPV6, IPV6_HDRINCL)) and self.kind == "raw" and \
                (level == _socket.IPPROTO_IP) == (self.family == 4):
            self.hdrincl = bool(value) or self.proto == IPPROTO_RAW
        elif (level, name) == (_socket.IPPROTO_IP, IP_TTL) and self.family == 4:
            self.ttl = value if 1 <= value <= 255 else 64
        elif (level, name) == (_socket.IPPROTO_IPV6, IPV6_UNICAST_HOPS) and self.family == 6:
            self.ttl = value if 1 <= value <= 255 else 64
        elif self.kind == "raw" and self.proto == (IPPROTO_ICMP if self.family == 4 else
                                                     IPPROTO_ICMPV6) and \
                (level, name) == ((SOL_RAW, ICMP_FILTER) if self.family == 4
                                  else (IPPROTO_ICMPV6, ICMPV6_FILTER)):
            # the kernel's u32 words, little-endian on the hosts we run on: bit n is type n
            self.icmp_block = value
        elif (level, name) == (_socket.IPPROTO_IPV6, IPV6_CHECKSUM) and self.kind == "raw":
            if self.proto == IPPROTO_ICMPV6:
                raise OSError(errno.EINVAL, "the ICMPv6 checksum is always computed")
            if value >= 0 and value & 1:
                raise OSError(errno.EINVAL, "Invalid argument")
            self.csum_offset = value
        else:
            return False
        return True

    def name(self) -> tuple:
        return self.sock._fmt((self.local, self.ident))

    def bind(self, fam: int, addr: bytes, port: int) -> None:
        stack = self.stack
        if addr and not (stack._is_local4(addr) if fam == 4 else stack._is_local6(addr)):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        with stack.locked():
            if self.kind == "ping":
                if self.ident:
                    raise OSError(errno.EINVAL, "already bound")
                if port and self._ident_used(port):
                    raise OSError(errno.EADDRINUSE, "Address already in use")
                self.ident = port or self._free_ident()
            self.local = addr

    def connect(self, fam: int, addr: bytes) -> None:
        self.remote = addr or None

    def _ident_used(self, ident: int) -> bool:
        stack = self.stack
        return (self.family, ident) in stack.echo_waiters or any(
            isinstance(t, IpEnd) and t is not self and t.kind == "ping"
            and t.family == self.family and t.ident == ident for t in stack.raw_taps)

    def _free_ident(self) -> int:
        for _ in range(1000):
            ident = random.randint(32768, 60999)
            if not self._ident_used(ident):
                return ident
        raise OSError(errno.EAGAIN, "no free ping identifier")

    # -- sending (the caller's thread) ------------------------------------------------------
    def sendto(self, data: bytes, dst: bytes | None) -> int:
        if dst is None:
            dst = self.remote
            if dst is None:
                raise OSError(errno.EDESTADDRREQ, "Destination address required")
        if not dst:
            dst = b"\x7f\0\0\x01" if self.family == 4 else bytes(15) + b"\x01"
        stack = self.stack
        with stack.locked():
            now = stack.clock()
            if self.hdrincl:
                self._send_whole(bytearray(data), dst, now)
                return len(data)
            payload = bytearray(data)
            src = self.local or None
            if self.kind == "ping":
                if len(payload) < 8 or payload[0] != _ECHO_REQUEST[self.family] or payload[1]:
                    raise OSError(errno.EINVAL, "a ping socket sends echo requests only")
                if not self.ident:
                    self.ident = self._free_ident()
                payload[4:6] = self.ident.to_bytes(2, "big")
            if self.family == 4:
                if self.kind == "ping":
                    payload[2:4] = b"\0\0"
                    payload[2:4] = checksum(payload).to_bytes(2, "big")
                stack.send_ip4(src, dst, self.proto, payload, now, ttl=self.ttl)
                return len(data)
            off = 2 if self.kind == "ping" else self.csum_offset
            if off >= 0:
                if off + 2 > len(payload):
                    raise OSError(errno.EINVAL, "Invalid argument")
                if src is None:
                    src = stack._source6(dst)
                    if src is None:
                        raise OSError(errno.EADDRNOTAVAIL, "no usable IPv6 source address")
                payload[off:off + 2] = b"\0\0"
                s = checksum(payload, pseudo_header(src, dst, self.proto, len(payload)))
                payload[off:off + 2] = s.to_bytes(2, "big")
            stack.send_ip6(src, dst, self.proto, payload, now, hop_limit=self.ttl)
            return len(data)

    def _send_whole(self, packet: bytearray, dst: bytes, now: float) -> None:
        """A packet with the caller's IP header (IP_HDRINCL; for IPv6, IPPROTO_RAW)."""
        stack = self.stack
        if self.family == 4:
            if len(packet) < 20 or packet[0] >> 4 != 4 or (packet[0] & 15) * 4 > len(packet):
                raise OSError(errno.EINVAL, "Invalid argument")
            hlen = (packet[0] & 15) * 4
            # raw(7): the total length and checksum are always filled in, the source
            # and the identification when zero
            packet[2:4] = len(packet).to_bytes(2, "big")
            if packet[12:16] == bytes(4):
                src = stack.source4(dst)
                if src is None:
                    raise OSError(errno.EADDRNOTAVAIL, "no usable IPv4 source address")
                packet[12:16] = src
            if packet[4:6] == b"\0\0":
                h = stack.ip_id_hash(bytes(packet[12:16]), dst, packet[9])
                packet[4:6] = stack.take_ip_ids(h).to_bytes(2, "big")
            packet[10:12] = b"\0\0"
            packet[10:12] = checksum(packet[:hlen]).to_bytes(2, "big")
        elif len(packet) < 40 or packet[0] >> 4 != 6:
            raise OSError(errno.EINVAL, "Invalid argument")
        family, etype = (4, ETH_P_IPV4) if self.family == 4 else (6, ETH_P_IPV6)
        local = stack._is_local4(dst) if family == 4 else stack._is_local6(dst)
        if local:
            iface = stack.interfaces[1]
        else:
            iface, nexthop, _, mtu = stack._path(family, None, dst, now)
            if len(packet) > mtu:
                raise OSError(errno.EMSGSIZE, "Message too long")
        if stack.hooks_output and not run_hooks(stack, stack.hooks_output, OUTPUT, family,
                                                packet, None, iface, now):
            return
        if local:
            stack._loop_local(etype, bytes(packet))
        elif family == 4:
            stack._output4(iface, nexthop, dst, packet, now)
        else:
            stack._output6(iface, nexthop, dst, packet, now)

    # -- receiving (the tap; under the stack's lock) ----------------------------------------
    def on_ip(self, iface: Interface, src: bytes, dst: bytes, header: Any, payload: Any) -> None:
        if self.local and dst != self.local:
            return
        if self.kind == "ping":
            self._ping_input(src, dst, payload)
            return
        if self.remote is not None and src != self.remote:
            return
        if self.icmp_block and payload and (self.icmp_block >> payload[0]) & 1:
            return
        if header is None:
            off = self.csum_offset
            if off >= 0 and (len(payload) < off + 2 or checksum(
                    payload, pseudo_header(src, dst, self.proto, len(payload)))):
                return  # rawv6_rcv: a socket that computes checksums drops bad ones
            data = bytes(payload)
        else:
            head = bytearray(header)
            total = len(head) + len(payload)
            if total > 0xFFFF:
                return
            if int.from_bytes(head[2:4], "big") != total or head[6:8] != b"\0\0":
                # a reassembled datagram: its header as one datagram (Linux's ip_frag_reasm)
                head[2:4] = total.to_bytes(2, "big")
                head[6:8] = bytes(2)
                head[10:12] = bytes(2)
                head[10:12] = checksum(head).to_bytes(2, "big")
            data = bytes(head) + bytes(payload)
        self._put(src, data)

    def _ping_input(self, src: bytes, dst: bytes, payload: Any) -> None:
        if len(payload) < 8 or not self.ident:
            return
        kind = payload[0]
        if kind == _ECHO_REPLY[self.family]:
            if int.from_bytes(payload[4:6], "big") != self.ident:
                return
            initial = 0 if self.family == 4 else pseudo_header(src, dst, IPPROTO_ICMPV6,
                                                                len(payload))
            if checksum(payload, initial):
                return  # a damaged reply: dropped, as Linux's icmp_rcv does
            if self.remote is not None and src != self.remote:
                return
            self._put(src, bytes(payload))
        elif kind == _UNREACH[self.family] and self.remote is not None:
            self._ping_error(payload)

    def _ping_error(self, payload: Any) -> None:
        """A destination unreachable quoting one of our requests: a hard error for a
        connected socket (Linux's ping_err without IP_RECVERR)."""
        quoted = bytes(payload[8:])
        if self.family == 4:
            if len(quoted) < 20 or quoted[0] >> 4 != 4:
                return
            hl = (quoted[0] & 15) * 4
            if quoted[9] != IPPROTO_ICMP or quoted[16:20] != self.remote:
                return
            icmp = quoted[hl:hl + 8]
            err = _ERRNO4.get(payload[1], errno.EHOSTUNREACH)
        else:
            if len(quoted) < 48 or quoted[6] != IPPROTO_ICMPV6 or quoted[24:40] != self.remote:
                return
            icmp = quoted[40:48]
            err = _ERRNO6.get(payload[1], errno.EHOSTUNREACH)
        if len(icmp) < 8 or icmp[0] != _ECHO_REQUEST[self.family] or \
                int.from_bytes(icmp[4:6], "big") != self.ident:
            return
        self._fail(err)

    def on_echo_unreachable(self, family: int, ident: int, dst: bytes, err: int) -> None:
        """(``raw.echo_unreachable``) Linux sends itself a host unreachable when address
        resolution fails, which ping_err gives a connected socket."""
        if self.kind == "ping" and family == self.family and ident == self.ident and \
                self.remote == dst:
            self._fail(err)

    def _fail(self, err: int) -> None:
        self.sock._error = err
        try:  # wakes a blocked recv, which raises it (the errno rides in the port field)
            self.sock._inner.send(_IP.pack(0, bytes(16), err))
        except OSError:
            pass

    def _put(self, src: bytes, data: bytes) -> None:
        try:
            self.sock._inner.send(_IP.pack(self.family, src, 0) + data)
        except OSError:
            pass  # the receive queue is full: lost, as on Linux

    def close(self) -> None:
        with self.stack.locked():
            raw.remove_tap(self.stack, self)


class PacketEnd:
    """A packet socket, as a frame tap on one interface (or all, index 0)."""

    def __init__(self, sock: StackSocket) -> None:
        self.sock = sock
        self.stack = sock._stack
        self.dgram = sock._vtype == _socket.SOCK_DGRAM
        # socket()'s protocol is in network order, bind()'s in host order (as Python's)
        self.proto = _socket.ntohs(sock._vproto & 0xFFFF)
        self.ifindex = 0
        self.outgoing = self.proto == ETH_P_ALL
        self.installed = False
        self._install()

    def _install(self) -> None:
        with self.stack.locked():
            if self.installed:
                raw.remove_tap(self.stack, self)
                self.installed = False
            if self.proto:
                raw.add_tap(self.stack, self, self.ifindex)
                self.installed = True

    def setsockopt(self, level: int, name: int, value: int) -> bool:
        return False

    def _iface(self, name: Any) -> Interface:
        if not isinstance(name, str):
            raise TypeError("an AF_PACKET address is (ifname, proto[, pkttype, hatype, addr])")
        iface = self.stack.interface(name)  # ENODEV
        if iface.loopback:
            raise OSError(errno.EOPNOTSUPP, "the loopback interface carries no frames")
        return iface

    def bind(self, address: Any) -> None:
        if not isinstance(address, tuple) or len(address) < 1:
            raise TypeError("an AF_PACKET address is (ifname, proto[, pkttype, hatype, addr])")
        iface = self._iface(address[0])
        if len(address) > 1:
            proto = address[1]
            if not isinstance(proto, int) or not 0 <= proto <= 0xFFFF:
                raise OverflowError("proto must be 0-65535")
            if proto:
                self.proto = proto
                self.outgoing = proto == ETH_P_ALL
        self.ifindex = iface.index
        self._install()

    def name(self) -> tuple:
        iface = self.stack.interfaces.get(self.ifindex)
        if iface is None:
            return ("", self.proto, 0, 0, b"")
        return (iface.name, self.proto, 0, ARPHRD_ETHER, iface.mac)

    def sendto(self, data: bytes, address: Any) -> int:
        if address is None:
            if not self.ifindex:
                raise OSError(errno.ENXIO, "No such device or address (not bound)")
            iface = self.stack.interfaces[self.ifindex]
            proto, mac = self.proto, None
        else:
            if not isinstance(address, tuple) or len(address) < 2:
                raise TypeError("an AF_PACKET address is (ifname, proto[, pkttype, hatype, addr])")
            iface = self._iface(address[0])
            proto = address[1]
            mac = address[4] if len(address) > 4 else None
        if self.dgram:
            if not isinstance(mac, bytes | bytearray) or len(mac) != 6 or \
                    not isinstance(proto, int) or not 0 <= proto <= 0xFFFF:
                raise OSError(errno.EINVAL, "a SOCK_DGRAM packet socket needs (ifname, "
                              "proto, pkttype, hatype, 6-byte addr)")
            frame = bytes(mac) + iface.mac + proto.to_bytes(2, "big") + data
        else:
            if len(data) < 14:
                raise OSError(errno.EINVAL, "a frame needs its Ethernet header")
            frame = bytes(data)
        with self.stack.locked():
            raw.send_frame(self.stack, iface, frame, self)
        return len(data)

    def on_frame(self, iface: Interface, frame: Any, outgoing: bool) -> None:
        if len(frame) < 14:
            return
        proto = (frame[12] << 8) | frame[13]
        if self.proto != ETH_P_ALL and proto != self.proto:
            return
        dst = frame[:6]
        if outgoing:
            pkttype = PACKET_OUTGOING
        elif dst == iface.mac:
            pkttype = PACKET_HOST
        elif dst == b"\xff" * 6:
            pkttype = PACKET_BROADCAST
        elif dst[0] & 1:
            pkttype = PACKET_MULTICAST
        else:
            pkttype = PACKET_OTHERHOST
        head = _PKT.pack(1, iface.name.encode()[:16], proto, pkttype, ARPHRD_ETHER,
                         bytes(frame[6:12]))
        try:
            self.sock._inner.send(head + bytes(frame[14:] if self.dgram else frame))
        except OSError:
            pass

    def close(self) -> None:
        with self.stack.locked():
            raw.remove_tap(self.stack, self)
            self.installed = False


def may_open(kind: str, uid: int) -> bool:
    """Who may open a socket of ``kind`` on a published stack: raw and packet sockets
    need the stack's owner or root (Linux: CAP_NET_RAW); ping sockets and the rest
    anyone who can connect (as a ping_group_range that admits every group)."""
    return kind not in ("raw", "packet") or uid in (0, os.geteuid())
