"""The IP layer's output path and its hook points.

Every packet this stack sends goes down through the IP layer: ``Stack.send_ip4`` and
``send_ip6`` (route, source, path MTU, fragmentation, neighbor resolution), or, for a
flow that sends many packets to a reachable neighbor, a ``OutputPath`` from
``Stack.output_path``. A transport (TCP) keeps its flow's path and hands it finished
transport packets in frames with ``headroom`` bytes free in front; the path writes the
Ethernet and IP headers, sends the frames on its link and counts them. The transport
never sees links, neighbor entries or route tables: it asks ``OutputPath.fresh(now)`` whether
its path still holds and, when not, asks the stack for a new one (or None: then it sends
through ``send_ip4``/``send_ip6``).

Hook points (as netfilter's): a packet filter and NAT plug in here.

====================  ====================================================================
``PREROUTING``        every IP packet that arrives (links and loopback), before the
                      routing decision
``INPUT``             a packet for this host (as it arrived: fragments one by one)
``FORWARD``           a packet being forwarded (``forwarding=True``), before its TTL or
                      hop limit goes down (``iface_out``: where its route leads)
``OUTPUT``            a packet this host sends (before fragmentation), once routed
``POSTROUTING``       every IP packet that leaves on an interface: sent, forwarded, each
                      fragment (loopback traffic: OUTPUT only, as it comes back through
                      PREROUTING and INPUT)
====================  ====================================================================

A hook is ``hook(packet, meta) -> verdict``: ``packet`` a memoryview of the IP packet
(from its IP header; the hook must not keep it or change it), ``meta`` a ``HookMeta``
(point, family, the interfaces in and out, the time). It returns ``ACCEPT`` (the next
hook, then the stack, go on), ``DROP`` (the packet is gone: counted in
``stack.stats["hook_drop_<point>"]``, no error goes back) or a new packet (a bytearray,
what NAT returns) that goes on in its place: at prerouting and output the stack routes
it by its new destination, at input it is delivered by its new addresses. ARP passes no hook. NDP
messages that arrive pass prerouting and input as any ICMPv6 packet (a hook that drops
them cuts off neighbor discovery); the ones the neighbor layer sends pass none (yet). ``Stack.add_hook(point, fn)`` and ``remove_hook``
install them. With no hook at a point that point costs one truthiness test; while any
output or postrouting hook exists the cached paths are off (``output_path`` returns
None), and while any prerouting or input hook exists the direct TCP input and receive
coalescing are off, so no packet passes a hook by.
"""

from __future__ import annotations

import errno
import ipaddress
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError, LinkError
from threadnet.stack import raw
from threadnet.stack.addrsel import choose_source6
from threadnet.stack.neighbor import REACHABLE, Neighbor, NeighborCache
from threadnet.wire import ipv4, ipv6, vnet
from threadnet.wire.checksum import pseudo_header
from threadnet.wire.ethernet import ETH_P_IPV4, ETH_P_IPV6, TYPE, TYPE_IPV4, TYPE_IPV6

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

PREROUTING = "prerouting"
INPUT = "input"
FORWARD = "forward"
OUTPUT = "output"
POSTROUTING = "postrouting"
HOOK_POINTS = (PREROUTING, INPUT, FORWARD, OUTPUT, POSTROUTING)

DROP = 0  # (netfilter's NF_DROP and NF_ACCEPT values)
ACCEPT = 1

BROADCAST_MAC = b"\xff" * 6
LIMITED_BROADCAST = b"\xff\xff\xff\xff"
LOOPBACK6 = bytes(15) + b"\x01"
MAX_LOCAL_QUEUE = 1024  # packets looped back to ourselves waiting to be processed
#: IPv4 identification counters (as Linux's ip_idents): a keyed hash of source,
#: destination and protocol picks one of these and an offset, so each destination sees
#: its own sequence and nobody can count our traffic to others (no idle scans)
IP_ID_BUCKETS = 2048


class HookMeta:
    """What a hook learns about a packet besides its bytes."""

    __slots__ = ("point", "family", "iface_in", "iface_out", "now")

    def __init__(self, point: str, family: int, iface_in: Interface | None,
                 iface_out: Interface | None, now: float) -> None:
        self.point = point
        self.family = family
        self.iface_in = iface_in  # None for packets of this host (output)
        self.iface_out = iface_out  # None before routing (prerouting, input)
        self.now = now

    def __repr__(self) -> str:
        i = self.iface_in.name if self.iface_in is not None else "-"
        o = self.iface_out.name if self.iface_out is not None else "-"
        return f"<HookMeta {self.point} IPv{self.family} in={i} out={o}>"


Hook = Callable[[memoryview, HookMeta], int]


def run_hooks(stack: Stack, hooks: tuple[Hook, ...], point: str, family: int,
              packet: Any, iface_in: Interface | None, iface_out: Interface | None,
              now: float) -> Any:
    """``packet`` once every hook of ``point`` accepted it, or the packet a hook handed
    back in its place (NAT rewrites addresses and ports); None when a hook dropped it
    (the caller checked that there are hooks: an empty point costs nothing)."""
    meta = HookMeta(point, family, iface_in, iface_out, now)
    mv = memoryview(packet).toreadonly()
    for hook in hooks:
        v = hook(mv, meta)
        if v.__class__ is int:
            if v == DROP:
                stack._count(f"hook_drop_{point}")
                return None
        else:  # a rewritten packet (a bytearray): the hooks after see it
            packet = v
            mv = memoryview(v).toreadonly()
    return packet


class OutputPath:
    """One flow's output, resolved once: interface, MACs, the constant parts of the IP
    header and of the transport's pseudo-header checksum (plain data: the link is the
    stack's, ``stack.links``). The stack makes it
    (``Stack.output_path``); ``fresh`` tells whether it still holds (no change of
    interfaces, addresses, routes, hooks, MTU, path MTU or the neighbor since).

    For the transport: ``headroom`` (where its header starts in a frame), ``mtu`` (the
    largest IP packet), ``psum`` (the pseudo-header's sum without the length,
    ``checksum.pseudo_header``), ``offload`` (the link takes segments of up to 64 KiB and
    completes their checksums: ``send`` then wants the pseudo-header sum in the checksum
    field). ``send`` writes the headers with ``ipv4``/``ipv6.write_eth_headers``.
    """

    __slots__ = ("stack", "src", "dst", "proto", "gen", "table", "index", "iface", "ifmtu",
                 "pmtu", "nb", "neighbors", "nexthop", "mac", "smac", "mtu", "psum",
                 "offload", "v6", "df", "idhash", "headroom")

    def fresh(self, now: float) -> bool:
        """Whether this path still holds at ``now``: one test per batch of packets."""
        stack = self.stack
        nb = self.nb
        pm = self.pmtu
        iface = self.iface
        link = stack.links.get(iface.index)
        return (self.gen == stack._gen and self.index is self.table._index and iface.up
                and iface.mtu == self.ifmtu and nb.mac is self.mac
                and nb.state == REACHABLE and now < nb.deadline
                and link is not None and not link.closed
                and self.neighbors.get(self.nexthop) is nb
                and (stack.pmtu.get(self.dst) is pm if (pm is not None or stack.pmtu) else True)
                and (pm is None or pm[1] >= now))

    def send(self, frames: list[bytearray], gso_size: int = 0) -> None:
        """Send ``frames`` (each a transport packet after ``headroom`` free bytes, no
        larger than ``mtu`` as an IP packet, or as 64 KiB on an offload path). On an
        offload path the checksum field holds the pseudo-header sum (TCP's at 16), and
        a TCP segment with more than ``gso_size`` bytes of data is cut by the kernel."""
        raise NotImplementedError

    def _transmit(self, frames: list[bytearray], l4_start: int, gso_type: int,
                  gso_size: int) -> None:
        """Send ``frames`` (their headers written) on the interface's link, and count.
        On an offload link each goes with a virtio-net header: the kernel completes its
        checksum from the pseudo-header's sum (the transport header starts at
        ``l4_start``) and cuts a segment larger than the MSS into MSS-sized ones."""
        iface = self.iface
        link = self.stack.links[iface.index]
        sent = nbytes = 0
        if self.offload:
            send_offload = link.send_offload  # type: ignore[attr-defined]
            tso_header = vnet.tso_header
            for frame in frames:
                try:
                    send_offload(tso_header(frame, l4_start, gso_type, gso_size), frame)
                except LinkError:
                    iface.tx_dropped += 1
                    continue
                sent += 1
                nbytes += len(frame)
        else:
            send = link.send
            for frame in frames:
                try:
                    send(frame)
                except LinkError:
                    iface.tx_dropped += 1
                    continue
                sent += 1
                nbytes += len(frame)
        iface.tx_packets += sent
        iface.tx_bytes += nbytes


class OutputPath4(OutputPath):
    """An IPv4 path: with the constant part of the IPv4 header's checksum."""

    __slots__ = ("ipsum",)

    def send(self, frames: list[bytearray], gso_size: int = 0) -> None:
        # IP IDs: a run of this destination's counter for the whole batch
        ipv4.write_eth_headers(frames, self.mac, self.smac,
                               self.stack.take_ip_ids(self.idhash, len(frames)), self.df, 64,
                               self.proto, self.src, self.dst, self.ipsum)
        self._transmit(frames, 34, vnet.GSO_TCPV4, gso_size)


class OutputPath6(OutputPath):
    """An IPv6 path (the IPv6 header has no checksum)."""

    __slots__ = ()

    def send(self, frames: list[bytearray], gso_size: int = 0) -> None:
        # hop limit 64 and flow label 0, as send_ip6 sends them
        ipv6.write_eth_headers(frames, self.mac, self.smac, self.proto, 64, self.src, self.dst)
        self._transmit(frames, 54, vnet.GSO_TCPV6, gso_size)


def make_path(stack: Stack, family: int, src: bytes, dst: bytes, proto: int,
              r: tuple, offload_ok: bool) -> OutputPath:
    """A path from ``fast_path4``/``fast_path6``'s answer ``r``."""
    v6 = family == 6
    p: OutputPath = OutputPath6() if v6 else OutputPath4()
    (p.iface, p.nexthop, p.nb, p.pmtu, p.mtu) = r
    p.stack = stack
    p.src = src
    p.dst = dst
    p.proto = proto
    p.v6 = v6
    p.gen = stack._gen
    p.table = stack.routes6 if v6 else stack.routes4
    p.index = p.table._index
    p.neighbors = (p.iface.nd if v6 else p.iface.arp).entries
    p.ifmtu = p.iface.mtu
    p.mac = p.nb.mac
    p.smac = p.iface.mac
    p.headroom = 54 if v6 else 34
    # the constant words of the pseudo-header and (IPv4) of the IP header, summed once
    p.psum = pseudo_header(src, dst, proto, 0)
    # DF, unless the path MTU is locked at its minimum (stack.MIN_PMTU4)
    p.df = 0 if p.pmtu is not None and p.pmtu[2] else ipv4.FLAG_DF << 13
    if not v6:
        p.ipsum = ipv4.header_sum(p.df, 64, proto, src, dst)  # type: ignore[attr-defined]
        # the keyed hash that picks this destination's IP ID counter (stack.take_ip_ids)
        p.idhash = stack.ip_id_hash(src, dst, proto)
    # an offload link takes segments of up to 64 KiB and completes their checksums
    p.offload = offload_ok and p.iface.offload and p.pmtu is None
    return p


class IpLayer:
    """The Stack's IP layer (a mixin of ``Stack``): hooks, routes and source addresses,
    the general output path (``send_ip4``/``send_ip6``: fragmentation, neighbor
    resolution, the link, counters), the cached one (``output_path``) and loopback."""

    def add_hook(self, point: str, hook: Hook) -> None:
        """Install ``hook(packet, meta) -> ACCEPT | DROP`` at ``point`` (``"prerouting"``,
        ``"input"``, ``"forward"``, ``"output"``, ``"postrouting"``), after the hooks
        there; see ``stack/ip.py``. Cached output paths are dropped, and the direct
        paths stay off while a hook they would pass by is installed."""
        if point not in HOOK_POINTS:
            raise ValueError(f"no hook point {point!r}: one of {', '.join(HOOK_POINTS)}")
        name = f"hooks_{point}"
        setattr(self, name, (*getattr(self, name), hook))
        self._hooks_changed()

    def remove_hook(self, point: str, hook: Hook) -> None:
        """Remove a hook ``add_hook`` installed (ValueError if it is not there)."""
        if point not in HOOK_POINTS:
            raise ValueError(f"no hook point {point!r}: one of {', '.join(HOOK_POINTS)}")
        name = f"hooks_{point}"
        hooks = list(getattr(self, name))
        hooks.remove(hook)
        setattr(self, name, tuple(hooks))
        self._hooks_changed()

    def _hooks_changed(self) -> None:
        self._rx_hooked = bool(self.hooks_prerouting or self.hooks_input) or \
            raw.needs_slow_path(self)
        self._gen += 1  # cached paths go: output_path says None while hooks need it

    def _route4(self, dst: bytes) -> tuple[Interface, bytes] | None:
        route = self.routes4.lookup(int.from_bytes(dst, "big"))
        if route is None:
            return None
        iface = self.interfaces.get(route.ifindex)
        if iface is None or not iface.up:
            return None
        return iface, route.gateway.packed if route.gateway is not None else dst

    def _route6(self, dst: bytes) -> tuple[Interface, bytes] | None:
        route = self.routes6.lookup(int.from_bytes(dst, "big"))
        if route is None:
            if dst[:2] == b"\xfe\x80":  # link-local: the first interface that has one
                for iface in self.interfaces.values():
                    if iface.up and not iface.loopback:
                        return iface, dst
            return None
        iface = self.interfaces.get(route.ifindex)
        if iface is None or not iface.up:
            return None
        return iface, route.gateway.packed if route.gateway is not None else dst

    def source4(self, dst: bytes) -> bytes | None:
        """The source address for ``dst``: an address of the outgoing interface."""
        if self._is_local4(dst):
            return dst
        r = self._route4(dst)
        if r is None:
            return None
        iface, nexthop = r
        for a, p in iface.v4:
            if same_net(a, nexthop, p):
                return a
        return iface.v4[0][0] if iface.v4 else None

    def _no_source(self, family: int, dst: bytes) -> OSError:
        """Why a packet to ``dst`` has no source address: no route (ENETUNREACH), or a
        route whose interface has no usable address yet (EADDRNOTAVAIL, as Linux says
        while every IPv6 address is still tentative, i.e. during DAD)."""
        r = self._route4(dst) if family == 4 else self._route6(dst)
        if r is None:
            return OSError(errno.ENETUNREACH, f"no route to {ntop(dst)}")
        return OSError(errno.EADDRNOTAVAIL,
                       f"no usable source address for {ntop(dst)} on {r[0].name} "
                       "(its addresses are still tentative: duplicate address detection "
                       "takes about a second)")

    def _source6(self, dst: bytes) -> bytes | None:
        if self._is_local6(dst):
            return dst
        r = self._route6(dst)
        if r is None:
            return None
        return choose_source6(dst, [a for a in r[0].v6 if a.state == "preferred"])

    def source(self, family: int, dst: bytes) -> bytes | None:
        """The source address for a packet to ``dst`` (``source4``, or IPv6's preferred
        address of the outgoing interface of the right scope), None without one."""
        return self.source4(dst) if family == 4 else self._source6(dst)

    def path_mtu(self, family: int, dst: bytes, now: float) -> int | None:
        """The MTU of the path to ``dst``: the outgoing interface's, or a smaller one
        learned by path MTU discovery; None without a route or source address."""
        try:
            return self._path(family, None, dst, now)[3]
        except OSError:
            return None

    def fast_path4(self, src: bytes, dst: bytes, now: float
                   ) -> tuple[Interface, bytes, Neighbor, tuple[int, float] | None, int] | None:
        """For a unicast flow from our ``src`` to ``dst``: (interface, next hop, its
        REACHABLE neighbor entry, the path MTU entry or None, the MTU), which a
        connection may reuse while none of them changes; None when packets to ``dst`` need
        the general output path (no route, a local, broadcast or multicast destination,
        a next hop not known to be reachable, or ``src`` not ours)."""
        if dst[0] >= 224 or self._is_local4(dst) or (src not in self._local4_set()
                                                      and self.catch_all is None):
            return None
        r = self._route4(dst)
        if r is None:
            return None
        iface, nexthop = r
        if iface.loopback or any(dst == broadcast4(a, p) for a, p in iface.v4):
            return None
        return self._reachable(iface, iface.arp, nexthop, dst, now)

    def _reachable(self, iface: Interface, cache: NeighborCache, nexthop: bytes, dst: bytes,
                   now: float
                   ) -> tuple[Interface, bytes, Neighbor, tuple[int, float] | None, int] | None:
        """The end of ``fast_path4``/``fast_path6`` for a route through ``iface`` to
        ``nexthop``: its REACHABLE entry in ``cache``, the path MTU entry, the MTU."""
        nb = cache.entries.get(nexthop)
        if nb is None or nb.mac is None or nb.state != REACHABLE or not now < nb.deadline:
            return None
        mtu = iface.mtu
        learned = self.pmtu.get(dst)
        if learned is not None:
            if learned[1] < now:
                return None
            mtu = min(mtu, learned[0])
        return iface, nexthop, nb, learned, mtu

    def fast_path6(self, src: bytes, dst: bytes, now: float
                   ) -> tuple[Interface, bytes, Neighbor, tuple[int, float] | None, int] | None:
        """``fast_path4`` for IPv6: the same answer where ``send_ip6`` would route a packet
        from our preferred ``src`` to a unicast ``dst`` that is not ours through a
        REACHABLE neighbor; None otherwise (multicast, unspecified or local destination,
        no route, a next hop not known to be reachable, ``src`` not a preferred address)."""
        if dst[0] == 0xFF or dst == ipv6.UNSPECIFIED or self._is_local6(dst) \
                or (not self._is_local6(src) and self.catch_all is None):
            return None
        r = self._route6(dst)
        if r is None:
            return None
        iface, nexthop = r
        if iface.loopback:
            return None
        return self._reachable(iface, iface.nd, nexthop, dst, now)

    def output_path(self, family: int, src: bytes, dst: bytes, proto: int, now: float, *,
                    offload: bool = False) -> OutputPath | None:
        """A cached output path (``stack/ip.py``) for a flow of ``proto`` packets from
        our ``src`` to ``dst``, or None when they need ``send_ip4``/``send_ip6`` (see
        ``fast_path4``; and while output or postrouting hooks are installed, which the
        path would pass by). ``offload``: the flow's transport (TCP) can use the
        segmentation and checksum offloads of an offload link."""
        if self.hooks_output or self.hooks_postrouting or self.packet_taps:
            return None
        r = (self.fast_path6 if family == 6 else self.fast_path4)(src, dst, now)
        if r is None:
            return None
        return make_path(self, family, src, dst, proto, r, offload)

    def _path(self, family: int, src: bytes | None, dst: bytes, now: float
              ) -> tuple[Interface, bytes, bytes, int]:
        """Route to ``dst``: (interface, next hop, source address, path MTU).

        Raises OSError(ENETUNREACH) without a route, EADDRNOTAVAIL without a source.
        """
        r = self._route4(dst) if family == 4 else self._route6(dst)
        if r is None:
            raise OSError(errno.ENETUNREACH, f"no route to {ntop(dst)}")
        iface, nexthop = r
        if src is None:
            src = self.source4(dst) if family == 4 else self._source6(dst)
            if src is None:
                raise OSError(errno.EADDRNOTAVAIL, f"no usable IPv{family} address on {iface.name}")
        mtu = iface.mtu
        learned = self.pmtu.get(dst)
        if learned is not None:
            if learned[1] < now:
                del self.pmtu[dst]  # RFC 1191/8201: try the interface MTU again
            else:
                mtu = min(mtu, learned[0])
        return iface, nexthop, src, mtu

    def ip_id_hash(self, src: bytes, dst: bytes, proto: int) -> int:
        """The keyed hash (the TCP layer's secret, as for ISNs) that picks the IP ID
        counter of packets from ``src`` to ``dst`` with ``proto``: a caller may keep it
        (a connection's cached path) and pass it to ``take_ip_ids``."""
        return self.tcp._keyed_hash(src + dst + bytes((proto,)))

    def take_ip_ids(self, h: int, n: int = 1) -> int:
        """The first of ``n`` consecutive IPv4 identifications (mask with 0xFFFF) from
        the counter that the hash ``h`` picks, offset by ``h``."""
        ids = self._ip_ids
        b = h & (IP_ID_BUCKETS - 1)
        v = ids[b]
        ids[b] = (v + n) & 0xFFFF
        return ((h >> 16) + v) & 0xFFFF

    def send_ip4(self, src: bytes | None, dst: bytes, proto: int, payload: bytes | bytearray,
                 now: float | None = None, *, ttl: int = 64, df: bool = False,
                 hooked: bool = False) -> None:
        """Send an IPv4 datagram, fragmenting it to the path MTU unless ``df``
        (``hooked``: it passed the output hooks already, rewritten).

        Raises OSError(ENETUNREACH) without a route, EMSGSIZE when ``df`` forbids
        fragmenting.
        """
        now = self._now if now is None else now
        if self._is_local4(dst):
            src = src or dst
            packet = bytearray(20 + len(payload))
            ipv4.build(packet, src, dst, proto, len(payload), ttl=ttl,
                       ident=self.take_ip_ids(self.ip_id_hash(src, dst, proto)))
            packet[20:] = payload
            if self.hooks_output and not hooked:
                out = run_hooks(self, self.hooks_output, OUTPUT, 4, packet, None,
                                self.interfaces[1], now)
                if out is not packet:
                    self._rewritten4(out, now)
                    return
            self._loop_local(ETH_P_IPV4, bytes(packet))
            return
        iface, nexthop, src, mtu = self._path(4, src, dst, now)
        if df and mtu < iface.mtu and self.pmtu[dst][2]:
            df = False  # a path MTU locked at MIN_PMTU4: as Linux, no DF to this host
        ident = self.take_ip_ids(self.ip_id_hash(src, dst, proto))
        n = len(payload)
        if self.hooks_output and not hooked:
            # one look at the whole datagram, before it is cut up
            packet = bytearray(20 + n)
            ipv4.build(packet, src, dst, proto, n, ttl=ttl, ident=ident,
                       flags=ipv4.FLAG_DF if df else 0)
            packet[20:] = payload
            out = run_hooks(self, self.hooks_output, OUTPUT, 4, packet, None, iface, now)
            if out is not packet:
                self._rewritten4(out, now)
                return
        if 20 + n <= mtu:
            packet = bytearray(20 + n)
            ipv4.build(packet, src, dst, proto, n, ttl=ttl, ident=ident,
                       flags=ipv4.FLAG_DF if df else 0)
            packet[20:] = payload
            self._output4(iface, nexthop, dst, packet, now)
            return
        if df:
            raise OSError(errno.EMSGSIZE, f"datagram of {n} bytes exceeds the path MTU {mtu}")
        chunk = (mtu - 20) & ~7
        for off in range(0, n, chunk):
            piece = payload[off:off + chunk]
            more = off + chunk < n
            packet = bytearray(20 + len(piece))
            ipv4.build(packet, src, dst, proto, len(piece), ttl=ttl, ident=ident,
                       flags=ipv4.FLAG_MF if more else 0, frag_offset=off)
            packet[20:] = piece
            self._output4(iface, nexthop, dst, packet, now)

    def _rewritten4(self, packet: bytearray | None, now: float) -> None:
        """Send a packet an output hook rewrote (NAT), routed by its new destination;
        None: a hook dropped it."""
        if packet is not None:
            _, _, _, flags, _, ttl, proto, src, dst, hlen, _ = ipv4.parse(packet)
            self.send_ip4(src, dst, proto, packet[hlen:], now, ttl=ttl,
                          df=bool(flags & ipv4.FLAG_DF), hooked=True)

    def _output4(self, iface: Interface, nexthop: bytes, dst: bytes, packet: bytearray,
                 now: float) -> None:
        if self.hooks_postrouting:
            packet = run_hooks(self, self.hooks_postrouting, POSTROUTING, 4, packet, None,
                               iface, now)
            if packet is None:
                return
        if dst == LIMITED_BROADCAST or any(dst == broadcast4(a, p) for a, p in iface.v4):
            self._send_eth(iface, BROADCAST_MAC, TYPE_IPV4, packet)
            return
        if dst[0] >= 224 and dst[0] < 240:
            self._send_eth(iface, ipv4.multicast_mac(dst), TYPE_IPV4, packet)
            return
        mac, probe = iface.arp.lookup(nexthop, now)
        if mac is not None:
            if probe:
                self._arp_request(iface, nexthop, mac)
            self._send_eth(iface, mac, TYPE_IPV4, packet)
            return
        send_now, dropped = iface.arp.enqueue(nexthop, (ETH_P_IPV4, bytes(packet)), now)
        iface.tx_dropped += len(dropped)
        if send_now:
            self._arp_request(iface, nexthop, None)

    def send_ip6(self, src: bytes | None, dst: bytes, next_header: int,
                 payload: bytes | bytearray, now: float | None = None, *,
                 hop_limit: int = 64, hooked: bool = False) -> None:
        """Send an IPv6 packet, with source fragmentation (RFC 8200 4.5) beyond the PMTU
        (``hooked``: it passed the output hooks already, rewritten)."""
        now = self._now if now is None else now
        if self._is_local6(dst):
            packet = bytearray(40 + len(payload))
            ipv6.build(packet, src or dst, dst, next_header, len(payload), hop_limit=hop_limit)
            packet[40:] = payload
            if self.hooks_output and not hooked:
                out = run_hooks(self, self.hooks_output, OUTPUT, 6, packet, None,
                                self.interfaces[1], now)
                if out is not packet:
                    self._rewritten6(out, now)
                    return
            self._loop_local(ETH_P_IPV6, bytes(packet))
            return
        iface, nexthop, src, mtu = self._path(6, src, dst, now)
        n = len(payload)
        if self.hooks_output and not hooked:
            packet = bytearray(40 + n)
            ipv6.build(packet, src, dst, next_header, n, hop_limit=hop_limit)
            packet[40:] = payload
            out = run_hooks(self, self.hooks_output, OUTPUT, 6, packet, None, iface, now)
            if out is not packet:
                self._rewritten6(out, now)
                return
        if 40 + n <= mtu:
            packet = bytearray(40 + n)
            ipv6.build(packet, src, dst, next_header, n, hop_limit=hop_limit)
            packet[40:] = payload
            self._output6(iface, nexthop, dst, packet, now)
            return
        chunk = (mtu - 48) & ~7
        ident = int.from_bytes(os.urandom(4), "big")
        for off in range(0, n, chunk):
            piece = payload[off:off + chunk]
            more = off + chunk < n
            packet = bytearray(48 + len(piece))
            ipv6.build(packet, src, dst, ipv6.PROTO_FRAGMENT, 8 + len(piece), hop_limit=hop_limit)
            ipv6.build_fragment(packet, next_header, off, more, ident, offset=40)
            packet[48:] = piece
            self._output6(iface, nexthop, dst, packet, now)

    def _rewritten6(self, packet: bytearray | None, now: float) -> None:
        """``_rewritten4`` for IPv6."""
        if packet is not None:
            _, _, plen, nh, hlim, src, dst = ipv6.parse(packet)
            self.send_ip6(src, dst, nh, packet[40:40 + plen], now, hop_limit=hlim, hooked=True)

    def _output6(self, iface: Interface, nexthop: bytes, dst: bytes, packet: bytearray,
                 now: float) -> None:
        if self.hooks_postrouting:
            packet = run_hooks(self, self.hooks_postrouting, POSTROUTING, 6, packet, None,
                               iface, now)
            if packet is None:
                return
        if dst[0] == 0xFF:
            self._send_eth(iface, ipv6.multicast_mac(dst), TYPE_IPV6, packet)
            return
        mac, probe = iface.nd.lookup(nexthop, now)
        if mac is not None:
            if probe:
                self._ns(iface, nexthop, mac, now)
            self._send_eth(iface, mac, TYPE_IPV6, packet)
            return
        send_now, dropped = iface.nd.enqueue(nexthop, (ETH_P_IPV6, bytes(packet)), now)
        iface.tx_dropped += len(dropped)
        if send_now:
            self._ns(iface, nexthop, None, now)

    def _send_eth(self, iface: Interface, dst_mac: bytes, etype: bytes,
                  payload: bytes | bytearray) -> None:
        link = self.links.get(iface.index)
        if link is None or not iface.up:
            return
        frame = dst_mac + iface.mac + etype + payload  # an untagged Ethernet II header
        try:
            link.send(frame)
        except LinkError:
            iface.tx_dropped += 1
            return
        iface.tx_packets += 1
        iface.tx_bytes += len(frame)
        if self.packet_taps:
            raw.tap_frame(self, iface, frame, True)

    def _xmit(self, iface: Interface, mac: bytes, pkt: tuple[int, bytes]) -> None:
        etype, packet = pkt
        self._send_eth(iface, mac, TYPE.pack(etype), packet)

    def _loop_local(self, etype: int, packet: bytes) -> None:
        if len(self._local) >= MAX_LOCAL_QUEUE:
            self._count("local_dropped")
            return
        self._local.append((etype, packet))

    def _drain_local(self, now: float) -> None:
        lo = self.interfaces[1]
        while self._local:
            etype, packet = self._local.popleft()
            try:
                if etype == ETH_P_IPV4:
                    self._input_ip4(lo, memoryview(packet), now, bytes(6))
                else:
                    self._input_ip6(lo, memoryview(packet), now, bytes(6))
            except FrameError:
                self._count("rx_malformed")


def broadcast4(addr: bytes, plen: int) -> bytes:
    """The directed broadcast address of ``addr``/``plen`` (b"" for /31 and /32)."""
    if plen >= 31:
        return b""
    host = (1 << (32 - plen)) - 1
    return (int.from_bytes(addr, "big") | host).to_bytes(4, "big")


def same_net(a: bytes, b: bytes, plen: int) -> bool:
    if plen == 0:
        return True
    shift = 32 - plen
    return int.from_bytes(a, "big") >> shift == int.from_bytes(b, "big") >> shift


def ntop(addr: bytes) -> str:
    return str(ipaddress.ip_address(addr))
