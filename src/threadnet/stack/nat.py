"""NAT on a stack that routes, as Linux's nf_nat: the translation lives in the connection
table (``stack/conntrack.py``), and the ruleset's ``type nat`` chains (``stack/nftables.py``)
decide it for each new connection.

How it works, as netfilter does it:

- a connection's first packet meets the nat chains of its hooks: prerouting or output
  (``dnat``: the destination), postrouting or input (``snat``, ``masquerade``: the
  source). A decision rewrites the connection's reply tuple (``Conntrack.alter_reply``),
  which refuses a tuple another connection holds, so no two connections ever look alike
  on the wire after NAT;
- every packet of the connection is then rewritten from its two tuples alone: a packet
  of direction d should leave looking like the inverse of the other direction's tuple.
  At prerouting and output its destination (address, port) becomes that; at postrouting
  and input its source. So a reply to a masqueraded connection gets its destination back
  at prerouting, before routing, and a reply from a port forward's server gets its source
  back at postrouting;
- ports: SNAT keeps the source port when that tuple is free (RFC 4787 REQ-3 "port
  preservation", RFC 5382), else looks for one in the rule's range or, without one, in
  Linux's classes (1-511, 600-1023, 1024-65535 by the original port), from a random
  start. UDP gets an endpoint-independent mapping (RFC 4787 REQ-1): the same inside
  address and port keep their outside address and port for every destination, and no
  other inside endpoint is given them while the mapping lasts;
- ICMP queries (echo) get their identifier rewritten as a port (RFC 5508 3.1); ICMP
  errors that quote a packet of a translated connection get their outer address and the
  quoted header translated back (RFC 5508 4.1, as nf_nat_icmp_reply_translation);
- hairpinning (RFC 4787 REQ-9, RFC 5382 REQ-8): a connection a ``dnat`` sends back out
  of the network its client is on is also source-translated, to the address the client
  used, so the server's replies come back through us;
- checksums are adjusted (RFC 1624), never recomputed: the IPv4 header, TCP and UDP with
  their pseudo-header, ICMP echo; a UDP checksum of zero (none, IPv4) stays zero. An
  ICMP error's checksum, which covers the quoted header, is recomputed (errors are rare
  and short);
- fragments: the first one is translated as its datagram; a later one (no ports) gets
  its first fragment's address (the memory is bounded, ``MAX_FRAGMENTS``).

The state is bounded by the connection table (its size and eviction), plus the UDP
mappings (``MAX_MAPPINGS``, oldest first out) and the fragment memory. ``Nat.stats``
counts ``translated`` (packets rewritten), ``no_port`` (a connection that found no free
tuple, dropped as Linux does) and ``errors`` (a packet that could not be rewritten).
"""

from __future__ import annotations

import random
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError
from threadnet.stack import conntrack as ct
from threadnet.wire.checksum import checksum, finish, pseudo_header

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

#: the manip types, as netfilter's: the destination (prerouting, output) or the source
#: (postrouting, input)
DST = 1
SRC = 2
#: ``Connection.nat``'s bits: which manips were decided, and whether one changed a tuple
DONE_DST = 1
DONE_SRC = 2
CHANGED = 4
#: ... and which rewrites a packet needs: NEED[direction][manip] (set by ``setup``, so a
#: packet that needs none at a hook costs one test there)
NEED = ((0, 8, 16), (0, 32, 64))
#: the hook points and their manip
MANIP = {"prerouting": DST, "output": DST, "postrouting": SRC, "input": SRC}
#: UDP's endpoint-independent mappings kept at most, oldest given up first
MAX_MAPPINGS = 65536
#: later fragments' translations remembered, for at most FRAGMENT_MEMORY seconds
MAX_FRAGMENTS = 4096
FRAGMENT_MEMORY = 60.0
#: how many ports a search tries before it gives up (Linux: at most 128 too)
PORT_ATTEMPTS = 128
_PORTED = (ct.PROTO_TCP, ct.PROTO_UDP, 136)
_ICMP_ERRORS4 = frozenset({3, 4, 5, 11, 12})
_ICMP_ERRORS6 = frozenset({1, 2, 3, 4})
_H = struct.Struct("!H")


@dataclass(slots=True, frozen=True)
class NatSpec:
    """One nat statement: ``kind`` "masquerade", "snat" or "dnat"; the addresses to use
    (``lo``..``hi`` as ints; None for masquerade, or a port-only change); the ports
    (``port_lo``..``port_hi``; None: keep them when free); ``family`` 4 or 6."""

    kind: str
    family: int
    lo: int | None = None
    hi: int | None = None
    port_lo: int | None = None
    port_hi: int | None = None
    text: str = ""
    #: ``snat/dnat prefix to``: the length of the prefix ``lo`` (the address's first
    #: bits are replaced, the rest kept; IPv6 checksum-neutrally, RFC 6296)
    prefix: int | None = None


class Nat:
    """The NAT of one stack: decisions (``setup``) and the rewriting of packets
    (``translate``), on the stack's connection table."""

    def __init__(self, stack: Stack, table: ct.Conntrack, seed: int | None = None) -> None:
        self.stack = stack
        self.table = table
        self.stats = {"translated": 0, "no_port": 0, "errors": 0}
        #: UDP endpoint-independent mappings: (family, inside addr, port) -> (outside
        #: addr, port), and back, oldest first
        self.mappings: OrderedDict[tuple, tuple[bytes, int]] = OrderedDict()
        #: (family, outside addr, port) -> (inside addr, port, the connection that took
        #: it last): a mapping whose connections are all gone frees its port
        self._owners: dict[tuple, tuple[bytes, int, ct.Connection]] = {}
        self._frags: OrderedDict[tuple, tuple[bytes, float]] = OrderedDict()
        self._rnd = random.Random(seed)

    # -- decisions ------------------------------------------------------------------------
    def setup(self, conn: ct.Connection, d: int, spec: NatSpec | None, manip: int,
              iface_out: Interface | None) -> bool:
        """Decide ``manip`` for ``conn`` (whose first packet is at a hook of that manip)
        with ``spec`` (None: no translation, a "null binding"). False when no free tuple
        was found: the packet is dropped."""
        bits = conn.nat or 0
        if d != ct.ORIGINAL or bits & (DONE_DST if manip == DST else DONE_SRC):
            return True
        conn.nat = bits | (DONE_DST if manip == DST else DONE_SRC)
        ok = self._decide(conn, spec, manip, iface_out, bits)
        if conn.nat & CHANGED:
            conn.nat = (conn.nat & 7) | _needs(conn)
        return ok

    def _decide(self, conn: ct.Connection, spec: NatSpec | None, manip: int,
                iface_out: Interface | None, bits: int) -> bool:
        if spec is None:
            if manip == SRC and bits & CHANGED and iface_out is not None:
                return self._hairpin(conn, iface_out)
            return True
        if spec.prefix is not None:
            old = conn.original[0 if manip == SRC else 1]
            new = map_prefix(old, spec.lo, spec.prefix)  # type: ignore[arg-type]
            if new is None:
                self.stats["errors"] += 1
                return False
            lo = hi = int.from_bytes(new, "big")
            return self._alter(conn, manip, lo, hi, None, None)
        if spec.kind == "masquerade":
            addr = self._iface_address(conn.family, iface_out, conn.original[1])
            if addr is None:
                self.stats["errors"] += 1
                return False
            lo = hi = int.from_bytes(addr, "big")
        else:
            lo, hi = spec.lo, spec.hi
        return self._alter(conn, manip, lo, hi, spec.port_lo, spec.port_hi)

    def _hairpin(self, conn: ct.Connection, iface_out: Interface) -> bool:
        """A dnat'd connection leaves by the interface its client is reached by: its
        server would answer the client directly, so the source becomes the address the
        client used (RFC 4787 REQ-9)."""
        client = conn.original[0]
        stack = self.stack
        if stack._is_local4(client) if conn.family == 4 else stack._is_local6(client):
            return True  # this host's own connection, sent elsewhere by an output dnat
        r = stack._route4(client) if conn.family == 4 else stack._route6(client)
        if r is None or r[0] is not iface_out:
            return True
        public = int.from_bytes(conn.original[1], "big")
        return self._alter(conn, SRC, public, public, None, None)

    @staticmethod
    def _iface_address(family: int, iface: Interface | None, dst: bytes) -> bytes | None:
        if iface is None:
            return None
        if family == 4:
            return iface.v4[0][0] if iface.v4 else None
        usable = iface.v6_usable()
        for a in usable:
            if a[:2] != b"\xfe\x80":
                return a
        return None

    def _alter(self, conn: ct.Connection, manip: int, lo: int | None, hi: int | None,
               plo: int | None, phi: int | None) -> bool:
        """Give ``conn`` a new reply tuple: for SRC, the reply's destination (and port)
        from the ranges, for DST its source."""
        size = 4 if conn.family == 4 else 16
        r = conn.reply
        proto = r[2]
        ported = proto in _PORTED
        icmp = proto in (ct.PROTO_ICMP, ct.PROTO_ICMPV6)
        # the reply tuple's slots this manip owns: its destination for SRC (1, and the
        # port in 4), its source for DST (0, 3); ICMP's identifier is slot 3 either way
        aslot = 1 if manip == SRC else 0
        pslot = (4 if manip == SRC else 3) if ported else (3 if icmp else -1)
        cur_addr = r[aslot]
        cur_port = r[pslot] if pslot >= 0 else 0
        if lo is None:
            addrs = [cur_addr]
        else:
            span = hi - lo + 1  # type: ignore[operator]
            if span <= 16:
                addrs = [(lo + i).to_bytes(size, "big") for i in range(span)]
            else:  # many: the inside address picks a start (a stable choice per host)
                first = lo + int.from_bytes(conn.original[0], "big") % span
                addrs = [((first - lo + i) % span + lo).to_bytes(size, "big")
                         for i in range(16)]
        if pslot < 0:  # no ports: the addresses alone
            for a in addrs:
                if self._try(conn, r, aslot, a, pslot, 0):
                    return True
            self.stats["no_port"] += 1
            return False
        mapping = None
        if manip == SRC and proto == ct.PROTO_UDP:
            mapping = (conn.family, conn.original[0], conn.original[3])
            got = self.mappings.get(mapping)
            if got is not None and (lo is None or lo <= int.from_bytes(got[0], "big") <= hi) \
                    and (plo is None or plo <= got[1] <= phi):  # type: ignore[operator]
                if self._try(conn, r, aslot, got[0], pslot, got[1]):
                    self._map(mapping, got[0], got[1], conn)
                    return True
        if plo is None:
            if manip == DST:  # (as Linux: a dnat without ports never moves the port)
                plo = phi = cur_port
            elif icmp:
                plo, phi = 0, 65535
            elif cur_port < 512:
                plo, phi = 1, 511
            elif cur_port < 1024:
                plo, phi = 600, 1023
            else:
                plo, phi = 1024, 65535
            keep = True
        else:
            keep = plo <= cur_port <= phi  # type: ignore[operator]
        span = phi - plo + 1  # type: ignore[operator]
        for a in addrs:
            if keep and self._free(mapping, a, cur_port) and \
                    self._try(conn, r, aslot, a, pslot, cur_port):
                self._map(mapping, a, cur_port, conn)
                return True
            start = self._rnd.randrange(span)
            for i in range(min(span, PORT_ATTEMPTS)):
                p = plo + (start + i) % span  # type: ignore[operator]
                if self._free(mapping, a, p) and self._try(conn, r, aslot, a, pslot, p):
                    self._map(mapping, a, p, conn)
                    return True
        self.stats["no_port"] += 1
        return False

    def _try(self, conn: ct.Connection, r: tuple, aslot: int, addr: bytes, pslot: int,
             port: int) -> bool:
        new = list(r)
        new[aslot] = addr
        if pslot >= 0:
            new[pslot] = port
        reply = tuple(new)
        if reply == r:
            return True
        if not self.table.alter_reply(conn, reply):
            return False
        conn.nat = (conn.nat or 0) | CHANGED
        return True

    def _free(self, mapping: tuple | None, addr: bytes, port: int) -> bool:
        """Whether a UDP mapping may take (addr, port): no other inside endpoint has it."""
        if mapping is None:
            return True
        owner = self._owners.get((mapping[0], addr, port))
        if owner is None or owner[:2] == mapping[1:]:
            return True
        last = owner[2]  # still in the table? else the mapping has lapsed
        return self.table.table.get(last.original, (None,))[0] is not last

    def _map(self, mapping: tuple | None, addr: bytes, port: int,
             conn: ct.Connection) -> None:
        if mapping is None:
            return
        old = self.mappings.pop(mapping, None)
        if old is not None:
            self._owners.pop((mapping[0], *old), None)
        self.mappings[mapping] = (addr, port)
        self._owners[(mapping[0], addr, port)] = (*mapping[1:], conn)
        # at most as many as the table has connections, and those whose connection is
        # gone go (a few per call, from the least recently used end)
        limit = min(MAX_MAPPINGS, self.table.max_entries)
        table = self.table.table
        for _ in range(4):
            key, value = next(iter(self.mappings.items()))
            owner = self._owners.get((key[0], *value))
            alive = owner is not None and \
                table.get(owner[2].original, (None,))[0] is owner[2]
            if alive and len(self.mappings) <= limit:
                break
            del self.mappings[key]
            if owner is not None and owner[:2] == key[1:]:
                del self._owners[(key[0], *value)]

    # -- packets --------------------------------------------------------------------------
    def translate(self, family: int, packet: Any, f: ct.Fields, conn: ct.Connection,
                  d: int, state: int, manip: int, now: float) -> bytearray | None:
        """The packet rewritten for ``manip`` (a new bytearray), or None when it needs
        no change. ``f`` its fields, ``conn``/``d``/``state`` what tracking said."""
        try:
            if state == ct.RELATED:
                return self._error(family, packet, f, conn, d, manip)
            other = conn.original if d else conn.reply
            proto = f[0]
            if manip == DST:
                addr, port = other[0], other[3]
                aoff = 16 if family == 4 else 24
            else:
                addr, port = other[1], other[4]
                aoff = 12 if family == 4 else 8
            toff = f[12]
            if proto in _PORTED:
                poff = toff + (2 if manip == DST else 0)
            elif proto == ct.PROTO_ICMP or proto == ct.PROTO_ICMPV6:
                port = other[3]
                poff = toff + 4
            else:
                poff = -1
            size = 4 if family == 4 else 16
            old_addr = bytes(packet[aoff:aoff + size])
            frag = f[11]
            if frag == ct.LATER_FRAGMENT:
                return None  # (translate_fragment does those)
            old_port = _H.unpack_from(packet, poff)[0] if poff >= 0 else port
            if old_addr == addr and old_port == port:
                return None
            out = bytearray(packet)
            self._rewrite(out, family, proto, toff, aoff, addr, poff, port)
            if frag == ct.FIRST_FRAGMENT:
                self._remember(family, packet, f, manip, addr, now)
            self.stats["translated"] += 1
            return out
        except (struct.error, IndexError, ValueError, FrameError):
            self.stats["errors"] += 1
            return None

    def translate_fragment(self, family: int, packet: Any, f: ct.Fields, manip: int,
                           now: float) -> bytearray | None:
        """A later fragment: its first fragment's new address, if one was given (only
        the address: its ports and checksum are in the first fragment)."""
        got = self._frags.get(_fragment_key(family, packet, f, manip))
        if got is None or got[1] < now:
            return None
        out = bytearray(packet)
        if family == 4:
            aoff = 16 if manip == DST else 12
            old = bytes(out[aoff:aoff + 4])
            out[aoff:aoff + 4] = got[0]
            _adjust(out, 10, old, got[0])
        else:  # (no header checksum)
            aoff = 24 if manip == DST else 8
            out[aoff:aoff + 16] = got[0]
        self.stats["translated"] += 1
        return out

    def _remember(self, family: int, packet: Any, f: ct.Fields, manip: int, addr: bytes,
                  now: float) -> None:
        frags = self._frags
        frags[_fragment_key(family, packet, f, manip)] = (addr, now + FRAGMENT_MEMORY)
        while len(frags) > MAX_FRAGMENTS:
            frags.popitem(last=False)

    @staticmethod
    def _rewrite(out: bytearray, family: int, proto: int, toff: int, aoff: int,
                 addr: bytes, poff: int, port: int, ip: int = 0) -> None:
        """Write the new address (at ``aoff``) and port or identifier (at ``poff``) into
        ``out`` and adjust every checksum they count in (the IP header's at ``ip``)."""
        size = len(addr)
        old_addr = bytes(out[aoff:aoff + size])
        out[aoff:aoff + size] = addr
        if family == 4:
            _adjust(out, ip + 10, old_addr, addr)
        old_port = b""
        new_port = b""
        if poff >= 0:
            old_port = bytes(out[poff:poff + 2])
            new_port = _H.pack(port)
            out[poff:poff + 2] = new_port
        n = len(out)
        if proto == ct.PROTO_TCP:
            if toff + 18 <= n:
                _adjust(out, toff + 16, old_addr + old_port, addr + new_port)
        elif proto == ct.PROTO_UDP or proto == 136:
            if toff + 8 <= n:
                c = _H.unpack_from(out, toff + 6)[0]
                if c or family == 6 or proto == 136:  # RFC 768: zero means none (IPv4)
                    _adjust(out, toff + 6, old_addr + old_port, addr + new_port)
                    if proto == ct.PROTO_UDP and _H.unpack_from(out, toff + 6)[0] == 0:
                        _H.pack_into(out, toff + 6, 0xFFFF)
        elif proto == ct.PROTO_ICMP:
            if toff + 4 <= n and old_port:
                _adjust(out, toff + 2, old_port, new_port)
        elif proto == ct.PROTO_ICMPV6:  # its checksum counts the pseudo-header
            if toff + 4 <= n:
                _adjust(out, toff + 2, old_addr + old_port, addr + new_port)

    def _error(self, family: int, packet: Any, f: ct.Fields, conn: ct.Connection, d: int,
               manip: int) -> bytearray | None:
        """An ICMP error about a packet of ``conn`` (it travels in direction ``d``):
        the outer address of this manip, and the quoted packet's opposite one with its
        port or identifier (RFC 5508 4.1); the ICMP checksum recomputed."""
        other = conn.original if d else conn.reply
        if manip == DST:
            addr, port = other[0], other[3]
            aoff = 16 if family == 4 else 24
        else:
            addr, port = other[1], other[4]
            aoff = 12 if family == 4 else 8
        toff = f[12]
        ioff = toff + 8  # the quoted packet
        size = 4 if family == 4 else 16
        out = bytearray(packet)
        n = len(out)
        if family == 4:
            ihl = (out[ioff] & 0x0F) << 2
            iproto = out[ioff + 9]
            iaoff = ioff + (12 if manip == DST else 16)  # the quoted packet's other end
            itoff = ioff + ihl
        else:
            iproto = conn.proto
            iaoff = ioff + (8 if manip == DST else 24)
            itoff = ioff + _quoted_transport6(out, ioff)
        old_outer = bytes(out[aoff:aoff + size])
        old_inner = bytes(out[iaoff:iaoff + size])
        if old_outer == addr and old_inner == addr:
            inner_port = -1
            if iproto in _PORTED and itoff + 4 <= n:
                inner_port = _H.unpack_from(out, itoff + (0 if manip == DST else 2))[0]
            elif iproto in (ct.PROTO_ICMP, ct.PROTO_ICMPV6) and itoff + 6 <= n:
                inner_port = _H.unpack_from(out, itoff + 4)[0]
            if inner_port in (-1, port):
                return None
        if iproto in _PORTED:
            ipoff = itoff + (0 if manip == DST else 2)
        elif iproto in (ct.PROTO_ICMP, ct.PROTO_ICMPV6):
            ipoff = itoff + 4
            port = other[3]
        else:
            ipoff = -1
        if ipoff + 2 > n:
            ipoff = -1
        # the quoted packet: its address (and IPv4 header checksum), port, checksum
        self._rewrite(out, family, iproto, itoff, iaoff, addr, ipoff, port, ioff)
        # the outer header
        out[aoff:aoff + size] = addr
        if family == 4:
            _adjust(out, 10, old_outer, addr)
            out[toff + 2:toff + 4] = b"\0\0"
            _H.pack_into(out, toff + 2, checksum(out[toff:]))
        else:
            out[toff + 2:toff + 4] = b"\0\0"
            src, dst = bytes(out[8:24]), bytes(out[24:40])
            _H.pack_into(out, toff + 2, checksum(out[toff:], pseudo_header(
                src, dst, len(out) - toff, ct.PROTO_ICMPV6)))
        self.stats["translated"] += 1
        return out


def _fragment_key(family: int, packet: Any, f: ct.Fields, manip: int) -> tuple:
    """A datagram's fragments' key: addresses, protocol, identification (IPv6: from
    the Fragment header, which ends where the fragment's data starts)."""
    if family == 4:
        return (bytes(packet[12:20]), packet[9], bytes(packet[4:6]), manip)
    off = f[12]
    return (bytes(packet[8:40]), f[0], bytes(packet[off - 4:off]), manip)


def _needs(conn: ct.Connection) -> int:
    """The ``NEED`` bits of ``conn``: which manips change a packet of each direction
    (one that should leave as the other direction's tuple inverted)."""
    out = 0
    proto = conn.proto
    for d, this, other in ((0, conn.original, conn.reply), (1, conn.reply, conn.original)):
        if proto in _PORTED:
            dst = this[1] != other[0] or this[4] != other[3]
            src = this[0] != other[1] or this[3] != other[4]
        else:  # (an ICMP identifier is rewritten at either, whichever comes first)
            ident = proto in (ct.PROTO_ICMP, ct.PROTO_ICMPV6) and this[3] != other[3]
            dst = this[1] != other[0] or ident
            src = this[0] != other[1] or ident
        out |= (NEED[d][DST] if dst else 0) | (NEED[d][SRC] if src else 0)
    return out


def map_prefix(addr: bytes, prefix: int, plen: int) -> bytes | None:
    """``addr`` with its first ``plen`` bits those of ``prefix`` (an int). For IPv6 the
    translation is checksum-neutral (RFC 6296 3.2, 3.4): the ones' complement sum of the
    address's words does not change, so no transport checksum does. The difference goes
    into the subnet word (bits 48-63) for a prefix of /48 or shorter, else into the
    first interface identifier word that is not 0xFFFF; None when that word is 0xFFFF
    (RFC 6296 3.5: such a packet is dropped)."""
    bits = len(addr) * 8
    host = (1 << (bits - plen)) - 1
    v = int.from_bytes(addr, "big")
    new = (prefix & ~host & ((1 << bits) - 1)) | (v & host)
    if bits == 32:
        return new.to_bytes(4, "big")
    old_words = struct.unpack("!8H", addr)
    words = list(struct.unpack("!8H", new.to_bytes(16, "big")))
    if plen <= 48:
        at = 3
    else:
        at = next((i for i in range(4, 8) if words[i] != 0xFFFF), -1)
        if at < 0:
            return None
    if words[at] == 0xFFFF:
        return None
    # the difference of the sums, folded (ones' complement), added to that word
    diff = sum(old_words) - sum(words)
    w = (words[at] + diff % 0xFFFF) % 0xFFFF
    words[at] = 0 if w == 0xFFFF else w
    return struct.pack("!8H", *words)


def _quoted_transport6(out: bytearray, ioff: int) -> int:
    """Where the quoted IPv6 packet's transport header starts, from its header."""
    from threadnet.wire import ipv6

    _, t, _ = ipv6.walk(memoryview(out), out[ioff + 6], offset=ioff + 40)
    return t - ioff


def _adjust(buf: bytearray, at: int, old: bytes, new: bytes) -> None:
    """RFC 1624 eqn. 3 for every 16-bit word of ``old`` (an even length) that became
    ``new``: the checksum at ``at`` without summing the data again."""
    c = _H.unpack_from(buf, at)[0]
    s = 0xFFFF - c
    for i in range(0, len(old), 2):
        s += (0xFFFF - ((old[i] << 8) | old[i + 1])) + ((new[i] << 8) | new[i + 1])
    _H.pack_into(buf, at, finish(s))


__all__ = ["Nat", "NatSpec", "DST", "SRC", "MANIP", "MAX_MAPPINGS"]
