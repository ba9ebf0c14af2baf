"""Connection tracking, as Linux's nf_conntrack: sans-IO, on the stack's time.

A ``Conntrack`` keeps one ``Connection`` per flow: TCP (with nf_conntrack's TCP states),
UDP, ICMP and ICMPv6 queries (echo, by identifier) and any other protocol by its pair of
addresses ("generic"). Each connection has two tuples, ``original`` (the direction of its
first packet) and ``reply``, and the table finds it by either; NAT (``stack/nat.py``) rewrites the
reply tuple with ``alter_reply``. A packet's ``ct state`` (nftables' bits) is:

- ``NEW``: in the original direction of a connection that has seen no reply yet;
- ``ESTABLISHED``: any other packet of a tracked connection;
- ``RELATED``: an ICMP or ICMPv6 error that quotes a packet of a tracked connection;
- ``INVALID``: what cannot be tracked: a TCP segment that does not fit the connection's
  state (or has a meaningless set of flags), a reply or an error with no connection,
  a truncated header, a packet dropped because the table is full;
- ``UNTRACKED``: neighbor discovery and MLD messages (as Linux leaves them untracked).

Timeouts are nf_conntrack's defaults (``TIMEOUTS``, named as its sysctls), and a
connection expires that long after its last packet. Expiry is kept in order by time,
without a scan: connections with the same timeout are refreshed into the tail of one
ordered dict per timeout value, so each dict is in deadline order and expiring looks at
its heads only (this needs ``now`` never to go backwards, which the stack's clock
guarantees). ``track`` expires what is due before it looks anything up.

The table is bounded (``max_entries``, 65536 by default, as Linux's nf_conntrack_max on
a small host): a new connection in a full table first evicts a connection that is not
ASSURED (one that never saw traffic both ways, for UDP for at least 2 seconds) nearest
to its expiry ("early drop"); if every connection is assured the packet is dropped.

What is not done as Linux does it: no TCP window tracking (as Linux with
``nf_conntrack_tcp_be_liberal=1``: a segment outside the window is not INVALID; a RST
that answers a SYN must still acknowledge it), no helpers or expectations (FTP, SIP), no
zones, no per-connection byte counters.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import OrderedDict
from typing import Any

from threadnet.errors import FrameError
from threadnet.wire import ipv6

# -- nftables' ct state bits -----------------------------------------------------------------
INVALID = 1
ESTABLISHED = 2
RELATED = 4
NEW = 8
UNTRACKED = 64
#: what ``track`` answers for a packet that must be dropped: the table is full of
#: assured connections, so a new one cannot be tracked (Linux drops it too)
DROP = 0
CT_STATE_NAMES = {"invalid": INVALID, "established": ESTABLISHED, "related": RELATED,
                  "new": NEW, "untracked": UNTRACKED}

# -- directions and connection status (as Linux's IPS_ bits) -------------------------------
ORIGINAL = 0
REPLY = 1
SEEN_REPLY = 2
ASSURED = 4
CONFIRMED = 8

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

# -- TCP states, as nf_conntrack names them -------------------------------------------------
NONE, SYN_SENT, SYN_RECV, ESTABLISHED_, FIN_WAIT, CLOSE_WAIT, LAST_ACK, TIME_WAIT, CLOSE, \
    SYN_SENT2 = range(10)
TCP_STATE_NAMES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
                   "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2")
_IV = 10  # the segment is invalid in this state
_IG = 11  # the segment may be valid but does not move the state: let it pass, note it

#: nf_conntrack's default timeouts in seconds, by the name of its sysctl
#: (net.netfilter.nf_conntrack_<name>_timeout...); ``Conntrack(timeouts=...)`` changes them
TIMEOUTS: dict[str, float] = {
    "tcp_syn_sent": 120, "tcp_syn_recv": 60, "tcp_established": 432000,
    "tcp_fin_wait": 120, "tcp_close_wait": 60, "tcp_last_ack": 30, "tcp_time_wait": 120,
    "tcp_close": 10, "tcp_syn_sent2": 120, "tcp_max_retrans": 300,
    "tcp_unacknowledged": 300, "udp": 30, "udp_stream": 120, "icmp": 30, "icmpv6": 30,
    "generic": 600,
}
#: a UDP flow that saw a reply becomes a stream (longer timeout, ASSURED) once it has
#: lasted this long (Linux: 2 s)
UDP_STREAM_AFTER = 2.0
#: as nf_conntrack_tcp_max_retrans: this many retransmissions of one segment in a row
#: cut the timeout to ``tcp_max_retrans``
TCP_MAX_RETRANS = 3
DEFAULT_MAX_ENTRIES = 65536
#: how many connections at the head of each timeout's queue early drop looks at
EARLY_DROP_SCAN = 16

# the TCP flags; a segment's class for the state table (as Linux's get_conntrack_index)
_FIN, _SYN, _RST, _PSH, _ACK, _URG, _ECE, _CWR = 1, 2, 4, 8, 16, 32, 64, 128
I_SYN, I_SYNACK, I_FIN, I_ACK, I_RST, I_NONE = range(6)
#: the flag sets (PSH, ECE and CWR aside) a segment may carry; any other is INVALID
#: (a "Christmas tree", SYN+FIN, a FIN without ACK, no flags at all...)
_FLAG_BITS = _FIN | _SYN | _RST | _ACK | _URG
_VALID_FLAGS = frozenset({_SYN, _SYN | _URG, _SYN | _ACK, _RST, _RST | _ACK, _FIN | _ACK,
                          _FIN | _ACK | _URG, _ACK, _ACK | _URG})


def _tcp_index(flags: int) -> int:
    """A segment's class for the state table (as Linux's get_conntrack_index)."""
    if flags & _RST:
        return I_RST
    if flags & _SYN:
        return I_SYNACK if flags & _ACK else I_SYN
    if flags & _FIN:
        return I_FIN
    if flags & _ACK:
        return I_ACK
    return I_NONE


#: by the flags byte: the segment's class, and whether its flags make sense (one lookup
#: each on the hot path)
_INDEX = tuple(_tcp_index(f) for f in range(256))
_VALID = tuple(f & _FLAG_BITS in _VALID_FLAGS for f in range(256))


def _row(text: str) -> tuple[int, ...]:
    names = {"NO": NONE, "SS": SYN_SENT, "SR": SYN_RECV, "ES": ESTABLISHED_, "FW": FIN_WAIT,
             "CW": CLOSE_WAIT, "LA": LAST_ACK, "TW": TIME_WAIT, "CL": CLOSE, "S2": SYN_SENT2,
             "IV": _IV, "IG": _IG}
    return tuple(names[w] for w in text.split())


#: the TCP state machine (nf_conntrack_proto_tcp.c's table, as data): for a segment of a
#: direction and class, the next state from each current state. The columns are the
#: current state, in the order NONE SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT
#: LAST_ACK TIME_WAIT CLOSE SYN_SENT2. FIN_WAIT means "a FIN was seen", CLOSE_WAIT "an
#: ACK after it", LAST_ACK "FINs both ways", TIME_WAIT "the last ACK"; SYN_SENT2 is a
#: simultaneous open. IG: the segment may belong to a connection we are out of sync
#: with (a new SYN on an old entry...): it passes, the state stays, and a SYN-ACK that
#: acknowledges an ignored SYN puts us back in sync.
TCP_TRANSITIONS: tuple[tuple[tuple[int, ...], ...], ...] = (
    (  # ORIGINAL
        _row("SS SS IG IG IG IG IG SS SS S2"),  # SYN: new, retransmitted; reopens
        _row("IV IV IG IG IG IG IG IG IG SR"),  # SYN-ACK: only answers a simultaneous SYN
        _row("IV IV FW FW LA LA LA TW CL IV"),  # FIN
        _row("ES IV ES ES CW CW TW TW CL IV"),  # ACK: NONE -> ES picks up a connection
        _row("IV CL CL CL CL CL CL CL CL CL"),  # RST
        _row("IV IV IV IV IV IV IV IV IV IV"),  # no flags
    ),
    (  # REPLY
        _row("IV S2 IV IV IV IV IV IV IV S2"),  # SYN: a simultaneous open
        _row("IV SR IG IG IG IG IG IG IG SR"),  # SYN-ACK
        _row("IV IV FW FW LA LA LA TW CL IV"),  # FIN
        _row("IV IG SR ES CW CW TW TW CL IG"),  # ACK
        _row("IV CL CL CL CL CL CL CL CL CL"),  # RST
        _row("IV IV IV IV IV IV IV IV IV IV"),  # no flags
    ),
)
_TCP_TIMEOUT_NAMES = ("tcp_close", "tcp_syn_sent", "tcp_syn_recv", "tcp_established",
                      "tcp_fin_wait", "tcp_close_wait", "tcp_last_ack", "tcp_time_wait",
                      "tcp_close", "tcp_syn_sent2")

# ICMP: the queries that may start a connection, and the type of their answer
_ICMP4_QUERIES = {8: 0, 13: 14, 15: 16, 17: 18}
_ICMP6_QUERIES = {128: 129, 139: 140}
_ICMP4_ERRORS = frozenset({3, 4, 5, 11, 12})
_ICMP6_ERRORS = frozenset({1, 2, 3, 4})
#: neighbor discovery, router discovery and MLD: never tracked (as Linux)
_ICMP6_UNTRACKED = frozenset({130, 131, 132, 133, 134, 135, 136, 137, 143})

# -- what tracking and filtering need of a packet, read once ---------------------------------
#: ``packet_fields``'s ``frag``: a whole datagram, its first fragment, a later fragment
#: (no transport header), or a transport header too short to read (a tiny first fragment,
#: RFC 1858, or a truncated packet)
WHOLE, FIRST_FRAGMENT, LATER_FRAGMENT, TRUNCATED = range(4)
_V4 = struct.Struct("!B5xHxB2x4s4s")  # version/IHL, flags+offset, protocol, addresses
_V6 = struct.Struct("!6xBx16s16s")  # next header, addresses
_TCP = struct.Struct("!HHIIH")
_PORTS = struct.Struct("!HH")
_ICMP = struct.Struct("!BBxxH")  # type, code, (checksum), identifier
#: packet_fields's answer: (proto, src, dst, sport, dport, icmp type, icmp code, TCP
#: flags, seq, ack, TCP data length, frag, transport offset). ICMP queries put their
#: identifier in sport; fields a packet does not have are -1 (ports, ICMP) or 0.
Fields = tuple[int, bytes, bytes, int, int, int, int, int, int, int, int, int, int]


def packet_fields(family: int, packet: Any) -> Fields:
    """Read the addresses and transport header of an IP ``packet`` (a memoryview from its
    IP header, whose IP header the stack has checked). Raises FrameError only for an
    IPv6 extension header chain that cannot be walked."""
    n = len(packet)
    if family == 4:
        vihl, frag, proto, src, dst = _V4.unpack_from(packet)
        off = (vihl & 0x0F) << 2
        if frag & 0x1FFF:
            return (proto, src, dst, -1, -1, -1, -1, 0, 0, 0, 0, LATER_FRAGMENT, off)
        kind = FIRST_FRAGMENT if frag & 0x2000 else WHOLE
    else:
        nh, src, dst = _V6.unpack_from(packet)
        if nh == 6 or nh == 17 or nh == 58:
            proto, off, kind = nh, 40, WHOLE
        else:
            proto, off, fh = ipv6.walk(packet, nh)
            kind = WHOLE
            if fh is not None:
                if fh[0]:
                    return (proto, src, dst, -1, -1, -1, -1, 0, 0, 0, 0, LATER_FRAGMENT, off)
                if fh[1]:
                    kind = FIRST_FRAGMENT
    left = n - off
    if proto == 6:
        if left < 20:
            return (proto, src, dst, -1, -1, -1, -1, 0, 0, 0, 0, TRUNCATED, off)
        sport, dport, seq, ack, word = _TCP.unpack_from(packet, off)
        return (proto, src, dst, sport, dport, -1, -1, word & 0xFF, seq, ack,
                left - ((word >> 12) << 2), kind, off)
    if proto == 17 or proto == 136:  # UDP, UDP-Lite
        if left < 8:
            return (proto, src, dst, -1, -1, -1, -1, 0, 0, 0, 0, TRUNCATED, off)
        sport, dport = _PORTS.unpack_from(packet, off)
        return (proto, src, dst, sport, dport, -1, -1, 0, 0, 0, 0, kind, off)
    if proto == 1 or proto == 58:
        if left < 8:
            return (proto, src, dst, -1, -1, -1, -1, 0, 0, 0, 0, TRUNCATED, off)
        kind_, code, ident = _ICMP.unpack_from(packet, off)
        return (proto, src, dst, ident, -1, kind_, code, 0, 0, 0, 0, kind, off)
    return (proto, src, dst, -1, -1, -1, -1, 0, 0, 0, 0, kind, off)


class TcpTrack:
    """What a TCP connection's tracking remembers beyond its state: per direction, the
    sequence number after the last byte sent and the highest ACK sent; the last segment
    (to count retransmissions and to recognize a SYN-ACK for an ignored SYN); whether a
    close began (a FIN was seen: a SYN may then reopen the connection)."""

    __slots__ = ("end", "acked", "close_init", "last_dir", "last_index", "last_end",
                 "last_seq", "last_ack", "retrans")

    def __init__(self) -> None:
        self.end: list[int | None] = [None, None]
        self.acked: list[int | None] = [None, None]  # acked[d]: the highest ACK d sent
        self.close_init = False
        self.last_dir = -1
        self.last_index = I_NONE
        self.last_end = 0
        self.last_seq = -1
        self.last_ack = -1
        self.retrans = 0


class Connection:
    """One tracked flow. ``original`` and ``reply`` are its tuples (source address,
    destination address, protocol, source port or ICMP identifier, destination port or
    ICMP type); ``state`` its TCP state (``TCP_STATE_NAMES``; 0 for the others);
    ``status`` the bits ``SEEN_REPLY``, ``ASSURED``, ``CONFIRMED``; ``deadline`` when it
    expires, on the stack's clock; ``nat`` is NAT's record (``stack/nat.py``: which
    translations were decided, and whether one changed ``reply``, which it does with
    ``Conntrack.alter_reply``), None for a connection NAT never saw."""

    __slots__ = ("original", "reply", "proto", "family", "state", "status", "timeout",
                 "deadline", "created", "tcp", "nat")

    def __init__(self, original: tuple, reply: tuple, family: int, now: float) -> None:
        self.original = original
        self.reply = reply
        self.proto: int = original[2]
        self.family = family
        self.state = NONE
        self.status = 0
        self.timeout = 0.0
        self.deadline = now
        self.created = now
        self.tcp: TcpTrack | None = None
        self.nat: object | None = None

    @property
    def assured(self) -> bool:
        return bool(self.status & ASSURED)

    def describe(self, now: float) -> str:
        """One line, as ``conntrack -L`` prints an entry."""
        names = {PROTO_TCP: "tcp", PROTO_UDP: "udp", PROTO_ICMP: "icmp",
                 PROTO_ICMPV6: "icmpv6"}
        proto = self.proto
        parts = [f"{names.get(proto, 'unknown'):<8}", str(proto),
                 str(max(0, int(self.deadline - now + 0.999)))]
        if proto == PROTO_TCP:
            parts.append(TCP_STATE_NAMES[self.state])
        parts.append(_tuple_text(self.original))
        if not self.status & SEEN_REPLY:
            parts.append("[UNREPLIED]")
        parts.append(_tuple_text(self.reply))
        if self.status & ASSURED:
            parts.append("[ASSURED]")
        return " ".join(parts)

    def __repr__(self) -> str:
        return f"<Connection {self.describe(self.deadline)}>"


def _tuple_text(t: tuple) -> str:
    src, dst, proto, a, b = t
    text = f"src={ipaddress.ip_address(src)} dst={ipaddress.ip_address(dst)}"
    if proto in (PROTO_TCP, PROTO_UDP, 136):
        return f"{text} sport={a} dport={b}"
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        return f"{text} type={b} code=0 id={a}"
    return text


class Conntrack:
    """The connection table of one stack (sans-IO: every call takes ``now``).

    ``track(family, packet, fields, now)`` finds or creates the connection of a packet,
    moves its state and answers (connection or None, direction, ct state). ``confirm``
    marks a connection as kept once its first packet passed every hook; ``discard``
    forgets an unconfirmed one whose first packet was dropped (as Linux frees an
    unconfirmed entry with its packet). ``stats`` counts as ``conntrack -S``: found,
    new, invalid, ignore, insert_failed, drop, early_drop, expired."""

    def __init__(self, max_entries: int = DEFAULT_MAX_ENTRIES,
                 timeouts: dict[str, float] | None = None, *, loose: bool = True) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be 1 or more")
        unknown = set(timeouts or ()) - set(TIMEOUTS)
        if unknown:
            raise ValueError(f"unknown conntrack timeouts: {', '.join(sorted(unknown))}")
        self.max_entries = max_entries
        self.timeouts = {**TIMEOUTS, **(timeouts or {})}
        #: as nf_conntrack_tcp_loose: an ACK with no connection picks one up
        self.loose = loose
        #: tuple -> (connection, direction), both tuples of each connection
        self.table: dict[tuple, tuple[Connection, int]] = {}
        self._queues: dict[float, OrderedDict[Connection, None]] = {}
        self._next = float("inf")  # no deadline before this (a lower bound)
        self._tcp_timeouts = tuple(self.timeouts[n] for n in _TCP_TIMEOUT_NAMES)
        self._retrans_timeout = self.timeouts["tcp_max_retrans"]
        self._unack_timeout = self.timeouts["tcp_unacknowledged"]
        self.stats = {"found": 0, "new": 0, "invalid": 0, "ignore": 0, "insert_failed": 0,
                      "drop": 0, "early_drop": 0, "expired": 0}

    def __len__(self) -> int:
        return len(self.table) >> 1

    # -- the table ------------------------------------------------------------------------
    def find(self, key: tuple) -> tuple[Connection, int] | None:
        """The connection and direction of a tuple (src, dst, proto, a, b), or None."""
        return self.table.get(key)

    def connections(self, now: float | None = None) -> list[Connection]:
        """Every connection (after expiring those due at ``now``), oldest first."""
        if now is not None:
            self.expire(now)
        seen = []
        for conn, d in self.table.values():
            if d == ORIGINAL:
                seen.append(conn)
        seen.sort(key=lambda c: c.created)
        return seen

    def listing(self, now: float) -> list[str]:
        """``conntrack -L``'s lines."""
        return [c.describe(now) for c in self.connections(now)]

    def flush(self) -> None:
        """Forget every connection."""
        self.table.clear()
        self._queues.clear()
        self._next = float("inf")

    def delete(self, conn: Connection) -> None:
        """Forget ``conn`` (no error if it is gone already)."""
        table = self.table
        if table.get(conn.original, (None,))[0] is conn:
            del table[conn.original]
        if table.get(conn.reply, (None,))[0] is conn:
            del table[conn.reply]
        q = self._queues.get(conn.timeout)
        if q is not None:
            q.pop(conn, None)

    def adopt(self, family: int, original: tuple, reply: tuple, state: int, now: float,
              *, replied: bool = True) -> Connection | None:
        """Enter a TCP connection that exists already, in TCP ``state``, as if it had been
        tracked from its first packet (a host's own connections, when tracking starts):
        confirmed, ASSURED once established. None when either tuple is taken or the
        table is full."""
        if original in self.table or reply in self.table or \
                len(self.table) >= self.max_entries << 1:
            return None
        conn = Connection(original, reply, family, now)
        conn.state = state
        conn.status = CONFIRMED | (SEEN_REPLY if replied else 0) | \
            (ASSURED if ESTABLISHED_ <= state <= TIME_WAIT else 0)
        t = conn.tcp = TcpTrack()
        t.close_init = FIN_WAIT <= state <= TIME_WAIT
        self.table[original] = (conn, ORIGINAL)
        self.table[reply] = (conn, REPLY)
        self._refresh(conn, self._tcp_timeouts[state], now)
        return conn

    def confirm(self, conn: Connection) -> None:
        conn.status |= CONFIRMED

    def discard(self, conn: Connection) -> None:
        """Forget ``conn`` if it was never confirmed (its first packet was dropped)."""
        if not conn.status & CONFIRMED:
            self.delete(conn)

    def alter_reply(self, conn: Connection, reply: tuple) -> bool:
        """Give ``conn`` a new reply tuple (what NAT does); False, and no change, when
        another connection has that tuple already (counted as insert_failed)."""
        other = self.table.get(reply)
        if other is not None and other[0] is not conn:
            self.stats["insert_failed"] += 1
            return False
        if self.table.get(conn.reply, (None,))[0] is conn:
            del self.table[conn.reply]
        conn.reply = reply
        self.table[reply] = (conn, REPLY)
        return True

    def _refresh(self, conn: Connection, timeout: float, now: float) -> None:
        """``conn`` expires ``timeout`` seconds after ``now``: to the tail of its queue."""
        queues = self._queues
        if conn.timeout == timeout:
            try:
                queues[timeout].move_to_end(conn)
            except KeyError:  # (not queued yet)
                queues.setdefault(timeout, OrderedDict())[conn] = None
        else:
            old = queues.get(conn.timeout)
            if old is not None:
                old.pop(conn, None)
            q = queues.get(timeout)
            if q is None:
                q = queues[timeout] = OrderedDict()
            q[conn] = None
            conn.timeout = timeout
        deadline = now + timeout
        conn.deadline = deadline
        if deadline < self._next:
            self._next = deadline

    def next_deadline(self) -> float | None:
        """When the next connection expires (None: the table is empty)."""
        best = None
        for q in self._queues.values():
            if q:
                d = next(iter(q)).deadline
                if best is None or d < best:
                    best = d
        return best

    def expire(self, now: float) -> int:
        """Forget the connections whose time is up at ``now``; returns how many."""
        if now < self._next:
            return 0
        gone = 0
        table = self.table
        for q in self._queues.values():
            while q:
                conn = next(iter(q))
                if conn.deadline > now:
                    break
                del q[conn]
                if table.get(conn.original, (None,))[0] is conn:
                    del table[conn.original]
                if table.get(conn.reply, (None,))[0] is conn:
                    del table[conn.reply]
                gone += 1
        self.stats["expired"] += gone
        nxt = self.next_deadline()
        self._next = float("inf") if nxt is None else nxt
        return gone

    def _early_drop(self) -> bool:
        """Make room: forget the connection nearest to its expiry among those that are
        not ASSURED at the heads of the queues; False when there is none."""
        victim = None
        for q in self._queues.values():
            for i, conn in enumerate(q):
                if i >= EARLY_DROP_SCAN:
                    break
                if not conn.status & ASSURED:
                    if victim is None or conn.deadline < victim.deadline:
                        victim = conn
                    break
        if victim is None:
            return False
        self.delete(victim)
        self.stats["early_drop"] += 1
        return True

    def _new(self, family: int, key: tuple, reply: tuple, now: float) -> Connection | None:
        if len(self.table) >= self.max_entries << 1 and not self._early_drop():
            self.stats["drop"] += 1
            return None
        conn = Connection(key, reply, family, now)
        self.table[key] = (conn, ORIGINAL)
        self.table[reply] = (conn, REPLY)
        self.stats["new"] += 1
        return conn

    # -- packets --------------------------------------------------------------------------
    def track_packet(self, family: int, packet: Any, now: float,
                     update: bool = True) -> tuple[Connection | None, int, int]:
        """``track`` for a packet not parsed yet (tests, tools)."""
        try:
            f = packet_fields(family, packet)
        except FrameError:
            self.stats["invalid"] += 1
            return None, ORIGINAL, INVALID
        return self.track(family, packet, f, now, update)

    def track(self, family: int, packet: Any, f: Fields, now: float,
              update: bool = True) -> tuple[Connection | None, int, int]:
        """Track one packet, whose ``packet_fields`` are ``f``: returns (its connection
        or None, its direction, its ct state; ``DROP`` when the table is full and it
        must be dropped). ``update=False`` only classifies: no connection is made, no
        state moves, no timeout is refreshed (for a packet already tracked, such as
        one that comes back through loopback)."""
        if now >= self._next:
            self.expire(now)
        proto = f[0]
        frag = f[11]
        if frag == TRUNCATED:
            self.stats["invalid"] += 1
            return None, ORIGINAL, INVALID
        if frag == LATER_FRAGMENT:
            # no transport header: the flow of its first fragment, if the protocol has
            # no ports (generic); else the caller knows the first fragment's verdict
            return None, ORIGINAL, INVALID
        src, dst = f[1], f[2]
        if proto == PROTO_TCP or proto == PROTO_UDP or proto == 136:
            key = (src, dst, proto, f[3], f[4])
        elif proto == PROTO_ICMP or proto == PROTO_ICMPV6:
            return self._icmp(family, packet, f, now, update)
        else:
            key = (src, dst, proto, 0, 0)
        hit = self.table.get(key)
        if hit is None:
            reply = (dst, src, proto, key[4], key[3])
            if proto == PROTO_TCP:
                flags = f[7]
                first = TCP_TRANSITIONS[ORIGINAL][_INDEX[flags]][NONE] if _VALID[flags] \
                    else _IV
                if first == _IV or (first == ESTABLISHED_ and not self.loose):
                    self.stats["invalid"] += 1
                    return None, ORIGINAL, INVALID
            if not update:
                return None, ORIGINAL, NEW
            conn = self._new(family, key, reply, now)
            if conn is None:
                return None, ORIGINAL, DROP
            d = ORIGINAL
            state = NEW
        else:
            conn, d = hit
            self.stats["found"] += 1
            state = ESTABLISHED if d or conn.status & SEEN_REPLY else NEW
            if not update:
                return conn, d, state
        if proto == PROTO_TCP:
            r = self._tcp(conn, d, f, now)
            if r is _REOPEN:  # a new connection on the tuple of a closed one
                self.delete(conn)
                return self.track(family, packet, f, now, update)
            if r is _INVALID:
                self.stats["invalid"] += 1
                return conn, d, INVALID
        elif proto == PROTO_UDP or proto == 136:
            if conn.status & SEEN_REPLY:
                if now >= conn.created + UDP_STREAM_AFTER:
                    conn.status |= ASSURED
                    self._refresh(conn, self.timeouts["udp_stream"], now)
                else:
                    self._refresh(conn, self.timeouts["udp"], now)
            else:
                self._refresh(conn, self.timeouts["udp"], now)
        else:
            self._refresh(conn, self.timeouts["generic"], now)
        if d:
            conn.status |= SEEN_REPLY
        return conn, d, state

    def _icmp(self, family: int, packet: Any, f: Fields, now: float,
              update: bool) -> tuple[Connection | None, int, int]:
        kind = f[5]
        if family == 4:
            errors, queries = _ICMP4_ERRORS, _ICMP4_QUERIES
        else:
            if kind in _ICMP6_UNTRACKED:
                self.stats["ignore"] += 1
                return None, ORIGINAL, UNTRACKED
            errors, queries = _ICMP6_ERRORS, _ICMP6_QUERIES
        if kind in errors:
            key = quoted_tuple(family, packet, f[12] + 8)
            # as nf_conntrack: the quoted packet's tuple inverted is the tuple of the
            # error's own direction (the error travels against its packet); after NAT
            # it is the only one the table knows, as the packet was quoted rewritten
            hit = None if key is None else self.table.get(invert(key))
            if hit is None:
                self.stats["invalid"] += 1
                return None, ORIGINAL, INVALID
            self.stats["found"] += 1
            return hit[0], hit[1], RELATED
        src, dst, proto, ident = f[1], f[2], f[0], f[3]
        hit = self.table.get((src, dst, proto, ident, kind))
        if hit is None:
            answer = queries.get(kind)
            if answer is None:  # a reply with no request, or not a query at all
                self.stats["invalid"] += 1
                return None, ORIGINAL, INVALID
            if not update:
                return None, ORIGINAL, NEW
            conn = self._new(family, (src, dst, proto, ident, kind),
                             (dst, src, proto, ident, answer), now)
            if conn is None:
                return None, ORIGINAL, DROP
            d, state = ORIGINAL, NEW
        else:
            conn, d = hit
            self.stats["found"] += 1
            state = ESTABLISHED if d or conn.status & SEEN_REPLY else NEW
            if not update:
                return conn, d, state
        self._refresh(conn, self.timeouts["icmp" if family == 4 else "icmpv6"], now)
        if d:
            conn.status |= SEEN_REPLY
        return conn, d, state

    def _tcp(self, conn: Connection, d: int, f: Fields, now: float) -> object:
        """Move a TCP connection's state for one segment (in direction ``d``): None when
        the segment is valid, ``_INVALID``, or ``_REOPEN`` (a SYN that starts a new
        connection on the tuple of a closed one)."""
        flags = f[7]
        if not _VALID[flags]:
            return _INVALID
        seq, ack = f[8], f[9]
        t = conn.tcp
        if t is None:
            t = conn.tcp = TcpTrack()
        index = _INDEX[flags]
        end = (seq + f[10] + (flags & _FIN) + ((flags & _SYN) >> 1)) & 0xFFFFFFFF
        old = conn.state
        new = TCP_TRANSITIONS[d][index][old]
        if new == SYN_SENT and old >= TIME_WAIT:
            # RFC 1122 4.2.2.13: a SYN may reopen a connection in TIME-WAIT; a connection
            # that was closed (a FIN seen) or reset by this side is replaced by a new one
            if t.close_init or (t.last_dir == d and t.last_index == I_RST):
                return _REOPEN
            new = _IG
        if new == _IG:
            if index == I_SYNACK and t.last_index == I_SYN and t.last_dir != d \
                    and ack == t.last_end:
                # it answers the SYN we let pass: both ends are in sync, we were not
                old, new = SYN_SENT, SYN_RECV
                t.end = [None, None]
                t.acked = [None, None]
                t.end[t.last_dir] = t.last_end
            else:
                t.last_index, t.last_dir, t.last_end = index, d, end
                self.stats["ignore"] += 1
                return None
        elif new == _IV:
            return _INVALID
        elif index == I_RST and old == SYN_SENT and d == REPLY and \
                (not flags & _ACK or ack != t.end[ORIGINAL]):
            return _INVALID  # RFC 9293 3.10.7.3: a RST to a SYN acknowledges it
        # sequence bookkeeping: the end of what each side sent and the highest ACK each
        # sent (sequence numbers compare mod 2**32, RFC 1982); a new SYN from the client
        # restarts its side: a new initial sequence number
        ends = t.end
        e = ends[d]
        if e is None or 0 < ((end - e) & 0xFFFFFFFF) < 0x80000000 or \
                (index == I_SYN and d == ORIGINAL):
            ends[d] = e = end
        acked = t.acked
        if flags & _ACK:
            a = acked[d]
            if a is None or 0 < ((ack - a) & 0xFFFFFFFF) < 0x80000000:
                acked[d] = ack
        if t.last_seq == seq and t.last_ack == ack and t.last_end == end and t.last_dir == d:
            t.retrans += 1
        else:
            t.retrans = 0
        t.last_dir, t.last_index, t.last_seq, t.last_ack, t.last_end = d, index, seq, ack, end
        conn.state = new
        if new == FIN_WAIT and old != FIN_WAIT:
            t.close_init = True
        timeout = self._tcp_timeouts[new]
        if t.retrans >= TCP_MAX_RETRANS and timeout > self._retrans_timeout:
            timeout = self._retrans_timeout
        elif timeout > self._unack_timeout:
            # data (or a SYN or FIN) one side sent and the other has not acknowledged
            other = ends[1 - d]
            a = acked[1 - d]  # what the other side acknowledged of ours
            b = acked[d]  # what we acknowledged of theirs
            if (a is None or 0 < ((e - a) & 0xFFFFFFFF) < 0x80000000) or \
                    (other is not None and (b is None or
                                            0 < ((other - b) & 0xFFFFFFFF) < 0x80000000)):
                timeout = self._unack_timeout
        status = conn.status
        if not status & SEEN_REPLY:
            if index == I_RST:  # the only answer was a RST: nothing was established
                self.delete(conn)
                return None
        elif not status & ASSURED and new == ESTABLISHED_ and \
                (old == SYN_RECV or old == ESTABLISHED_):
            conn.status = status | ASSURED  # the handshake completed (or a picked-up one answered)
        self._refresh(conn, timeout, now)
        return None


_INVALID = object()
_REOPEN = object()


_ICMP_ANSWERS = {**_ICMP4_QUERIES, **{v: k for k, v in _ICMP4_QUERIES.items()}}
_ICMP6_ANSWERS = {**_ICMP6_QUERIES, **{v: k for k, v in _ICMP6_QUERIES.items()}}


def invert(t: tuple) -> tuple:
    """The tuple of the answer to a packet whose tuple is ``t`` (an ICMP query's type
    becomes its answer's)."""
    src, dst, proto, a, b = t
    if proto == PROTO_ICMP:
        return (dst, src, proto, a, _ICMP_ANSWERS.get(b, b))
    if proto == PROTO_ICMPV6:
        return (dst, src, proto, a, _ICMP6_ANSWERS.get(b, b))
    return (dst, src, proto, b, a)


def quoted_tuple(family: int, packet: Any, off: int) -> tuple | None:
    """The tuple of the packet an ICMP error quotes from ``off`` (its IP header), as
    that packet went: (src, dst, proto, sport or ICMP id, dport or ICMP type); None when
    too little of it is there."""
    n = len(packet)
    try:
        if family == 4:
            if n < off + 20:
                return None
            vihl, frag, proto, src, dst = _V4.unpack_from(packet, off)
            if vihl >> 4 != 4 or frag & 0x1FFF:
                return None
            t = off + ((vihl & 0x0F) << 2)
        else:
            if n < off + 40 or packet[off] >> 4 != 6:
                return None
            nh, src, dst = _V6.unpack_from(packet, off)
            proto, t, fh = ipv6.walk(packet, nh, offset=off + 40)
            if fh is not None and fh[0]:
                return None
    except (FrameError, struct.error):
        return None
    if proto in (PROTO_TCP, PROTO_UDP, 136):
        if n < t + 4:
            return None
        a, b = _PORTS.unpack_from(packet, t)
        return (src, dst, proto, a, b)
    if proto in (PROTO_ICMP, PROTO_ICMPV6):
        if n < t + 8:
            return None
        kind, _code, ident = _ICMP.unpack_from(packet, t)
        return (src, dst, proto, ident, kind)
    return (src, dst, proto, 0, 0)
