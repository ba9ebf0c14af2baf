"""The IP layer's output path and its hook points.

Every packet this stack sends goes down through the IP layer: ``Stack.send_ip4`` and
``send_ip6`` (route, source, path MTU, fragmentation, neighbor resolution), or, for a
flow that sends many packets to a reachable neighbor, a ``Path`` from
``Stack.output_path``. A transport (TCP) keeps its flow's path and hands it finished
transport packets in frames with ``headroom`` bytes free in front; the path writes the
Ethernet and IP headers, sends the frames on its link and counts them. The transport
never sees links, neighbor entries or route tables: it asks ``Path.fresh(now)`` whether
its path still holds and, when not, asks the stack for a new one (or None: then it sends
through ``send_ip4``/``send_ip6``).

Hook points (as netfilter's): a packet filter and NAT plug in here.

====================  ====================================================================
``PREROUTING``        every IP packet that arrives (links and loopback), before the
                      routing decision
``INPUT``             a packet for this host (as it arrived: fragments one by one)
``FORWARD``           a packet being forwarded (``forwarding=True``), before its TTL or
                      hop limit goes down
``OUTPUT``            a packet this host sends (before fragmentation), once routed
``POSTROUTING``       every IP packet that leaves on an interface: sent, forwarded, each
                      fragment (loopback traffic: OUTPUT only, as it comes back through
                      PREROUTING and INPUT)
====================  ====================================================================

A hook is ``hook(packet, meta) -> verdict``: ``packet`` a memoryview of the IP packet
(from its IP header; the hook must not keep it or change it), ``meta`` a ``HookMeta``
(point, family, the interfaces in and out, the time). It returns ``ACCEPT`` (the next
hook, then the stack, go on) or ``DROP`` (the packet is gone: counted in
``stack.stats["hook_drop_<point>"]``, no error goes back). ARP passes no hook. NDP
messages that arrive pass prerouting and input as any ICMPv6 packet (a hook that drops
them cuts off neighbor discovery); the ones the neighbor layer sends pass none (yet). ``Stack.add_hook(point, fn)`` and ``remove_hook``
install them. With no hook at a point that point costs one truthiness test; while any
output or postrouting hook exists the cached paths are off (``output_path`` returns
None), and while any prerouting or input hook exists the direct TCP input and receive
coalescing are off, so no packet passes a hook by.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet.errors import LinkError
from threadnet.stack.neighbor import REACHABLE
from threadnet.wire import ipv4, ipv6, vnet

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
              now: float) -> bool:
    """Whether every hook of ``point`` accepts ``packet`` (the caller checked that there
    are hooks: an empty point costs nothing)."""
    meta = HookMeta(point, family, iface_in, iface_out, now)
    mv = memoryview(packet).toreadonly()
    for hook in hooks:
        if hook(mv, meta) == DROP:
            stack._count(f"hook_drop_{point}")
            return False
    return True


class Path:
    """One flow's output, resolved once: interface, link, MACs, the constant parts of
    the IP header and of the transport's pseudo-header checksum. The stack makes it
    (``Stack.output_path``); ``fresh`` tells whether it still holds (no change of
    interfaces, addresses, routes, hooks, MTU, path MTU or the neighbor since).

    For the transport: ``headroom`` (where its header starts in a frame), ``mtu`` (the
    largest IP packet), ``psum`` (the pseudo-header's sum, mod 0xFFFF, without the
    length), ``offload`` (the link takes segments of up to 64 KiB and completes their
    checksums: ``send`` then wants the pseudo-header sum in the checksum field).
    """

    __slots__ = ("stack", "src", "dst", "proto", "gen", "table", "index", "iface", "ifmtu",
                 "pmtu", "nb", "neighbors", "nexthop", "mac", "smac", "link", "mtu", "psum",
                 "offload", "v6", "df", "idhash", "headroom")

    def fresh(self, now: float) -> bool:
        """Whether this path still holds at ``now``: one test per batch of packets."""
        stack = self.stack
        nb = self.nb
        pm = self.pmtu
        return (self.gen == stack._gen and self.index is self.table._index and self.iface.up
                and self.iface.mtu == self.ifmtu and nb.mac is self.mac
                and nb.state == REACHABLE and now < nb.deadline and not self.link.closed
                and self.neighbors.get(self.nexthop) is nb
                and (stack.pmtu.get(self.dst) is pm if (pm is not None or stack.pmtu) else True)
                and (pm is None or pm[1] >= now))

    def send(self, frames: list[bytearray], gso_size: int = 0) -> None:
        """Send ``frames`` (each a transport packet after ``headroom`` free bytes, no
        larger than ``mtu`` as an IP packet, or as 64 KiB on an offload path). On an
        offload path the checksum field holds the pseudo-header sum (TCP's at 16), and
        a TCP segment with more than ``gso_size`` bytes of data is cut by the kernel."""
        raise NotImplementedError


class Path4(Path):
    """An IPv4 path: with the constant part of the IPv4 header's checksum."""

    __slots__ = ("ipsum",)

    def send(self, frames: list[bytearray], gso_size: int = 0) -> None:
        iface = self.iface
        link = self.link
        mac = self.mac
        smac = self.smac
        src = self.src
        dst = self.dst
        proto = self.proto
        df = self.df
        ipsum = self.ipsum
        pack = ipv4.ETH_HEADER.pack_into
        # IP IDs: a run of this destination's counter for the whole batch
        ident = self.stack.take_ip_ids(self.idhash, len(frames)) - 1
        offload = self.offload
        if offload:
            send_offload = link.send_offload  # type: ignore[attr-defined]
            hdr = vnet.HEADER.pack
        sent = nbytes = 0
        for frame in frames:
            total = len(frame) - 14
            ident = (ident + 1) & 0xFFFF
            s = (ipsum + total + ident) % 0xFFFF
            pack(frame, 0, mac, smac, 0x0800, 0x45, 0, total, ident, df, 64, proto,
                 0xFFFF - s if s else 0, src, dst)
            try:
                if offload:
                    # the kernel completes the checksum from the pseudo-header's sum and
                    # cuts a segment larger than the MSS into MSS-sized ones
                    hlen = (frame[34 + 12] >> 4) * 4 + 34  # headers, TCP's included
                    n = total + 14 - hlen
                    send_offload(hdr(vnet.F_NEEDS_CSUM,
                                     vnet.GSO_TCPV4 if n > gso_size else vnet.GSO_NONE,
                                     hlen, gso_size if n > gso_size else 0, 34, 16), frame)
                else:
                    link.send(frame)
            except LinkError:
                iface.tx_dropped += 1
                continue
            sent += 1
            nbytes += 14 + total
        iface.tx_packets += sent
        iface.tx_bytes += nbytes


class Path6(Path):
    """An IPv6 path (the IPv6 header has no checksum)."""

    __slots__ = ()

    def send(self, frames: list[bytearray], gso_size: int = 0) -> None:
        iface = self.iface
        link = self.link
        mac = self.mac
        smac = self.smac
        src = self.src
        dst = self.dst
        proto = self.proto
        pack = ipv6.ETH_HEADER.pack_into
        offload = self.offload
        if offload:
            send_offload = link.send_offload  # type: ignore[attr-defined]
            hdr = vnet.HEADER.pack
        sent = nbytes = 0
        for frame in frames:
            plen = len(frame) - 54
            # hop limit 64 and flow label 0, as send_ip6 sends them
            pack(frame, 0, mac, smac, 0x86DD, 0x60000000, plen, proto, 64, src, dst)
            try:
                if offload:
                    hlen = (frame[54 + 12] >> 4) * 4 + 54
                    n = plen + 54 - hlen
                    send_offload(hdr(vnet.F_NEEDS_CSUM,
                                     vnet.GSO_TCPV6 if n > gso_size else vnet.GSO_NONE,
                                     hlen, gso_size if n > gso_size else 0, 54, 16), frame)
                else:
                    link.send(frame)
            except LinkError:
                iface.tx_dropped += 1
                continue
            sent += 1
            nbytes += 54 + plen
        iface.tx_packets += sent
        iface.tx_bytes += nbytes


def make_path(stack: Stack, family: int, src: bytes, dst: bytes, proto: int,
              r: tuple, offload_ok: bool) -> Path:
    """A path from ``fast_path4``/``fast_path6``'s answer ``r``."""
    v6 = family == 6
    p: Path = Path6() if v6 else Path4()
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
    p.link = p.iface.link
    p.headroom = 54 if v6 else 34
    # the constant words of the pseudo-header and (IPv4) of the IP header: version/IHL,
    # DF, TTL 64/protocol, addresses; summed once (mod 0xFFFF is the one's complement
    # sum, for 16-byte addresses too)
    a = int.from_bytes(src, "big") + int.from_bytes(dst, "big")
    p.psum = (a + proto) % 0xFFFF
    # DF, unless the path MTU is locked at its minimum (stack.MIN_PMTU4)
    p.df = 0 if p.pmtu is not None and p.pmtu[2] else 0x4000
    if not v6:
        p.ipsum = 0x4500 + p.df + 0x4000 + proto + a  # type: ignore[attr-defined]
        # the keyed hash that picks this destination's IP ID counter (stack.take_ip_ids)
        p.idhash = stack.ip_id_hash(src, dst, proto)
    # an offload link takes segments of up to 64 KiB and completes their checksums
    p.offload = offload_ok and p.iface.offload and p.pmtu is None
    return p
