"""TCP in the stack: demultiplexing, listeners, ephemeral ports, timers, wire encoding.

``stack/tcp`` holds one connection's sans-IO state machine; this module gives a Stack
many of them. Segments that arrive are parsed (``wire/tcp``) into ``Segment`` records and
handed to their connection; what connections want to send is encoded and passed to the
IP layer. A listener keeps a bounded queue of half-open connections (the SYN backlog):
under a SYN flood the oldest half-open entry is dropped to admit the newest, so memory
stays bounded and a real client's retransmitted SYN still gets through.

Everything here runs under the stack's lock (the runner's). A connection's and a
listener's owner is a handle (``owner``, see ``stack/upper.py``), so their state is plain
data: ``stack.upper.on_tcp_event(owner, endpoint)`` is called whenever something a socket
might wait for changes (data, space, state).

Nothing here reads a clock: input and timers carry the runner's ``now``, and the socket
layer's calls on a ``TcpEndpoint`` take theirs (``now``; when omitted, the stack's
boundary time, ``Stack._api_now``).
"""

from __future__ import annotations

import errno
import hashlib
import heapq
import itertools
import os
import random
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

from threadnet.errors import FrameError
from threadnet.stack.ip import OutputPath
from threadnet.stack.tcp import Segment, TcpConnection, TcpState
from threadnet.wire import ipv4, ipv6, tcp

if TYPE_CHECKING:
    from threadnet.stack.stack import Stack

EPHEMERAL = (32768, 60999)  # Linux's ip_local_port_range
SYN_BACKLOG = 256  # half-open connections per listener
#: default send and receive buffer of a stack's TCP connections (SO_SNDBUF/SO_RCVBUF
#: override it). A window of 1 MiB keeps a batched sender and receiver busy: at MTU 1500
#: over threadnet switch it moved 283-370 Mbit/s where 256 KiB moved 226-293, with no
#: loss; 2 MiB overflowed the switch's per-port backlog (500-1400 retransmissions).
#: Buffers fill only as data waits, so idle connections cost nothing.
TCP_BUF = 1 << 20
#: payload of the largest segment sent through an offload link (the kernel cuts it into
#: MSS-sized ones): 45 segments of 1448 bytes, with the headers within IPv4's 64 KiB
TSO_MAX = 65535 - 20 - 60
_seq = itertools.count()
# the wire helpers of the hot path, bound once (wire/tcp.py)
_HDR = tcp.HEADER.pack_into
_HDR_TS = tcp.HEADER_TS.pack_into
_PARSE = tcp.parse_header
_TS_OPT = tcp.TS_OPTION.unpack_from
_NOP_NOP_TS = tcp.NOP_NOP_TS
_OFF = tcp.HEADER_OFFSET
_OFF_TS = tcp.HEADER_TS_OFFSET
_SET_CSUMS = tcp.set_checksums
_SET_PARTIAL_CSUMS = tcp.set_partial_checksums
_SYN_ACK_RST = tcp.SYN | tcp.ACK | tcp.RST
_NOT_PSH = 0xFF & ~tcp.PSH


ANY6 = b"::"  # the IPv6 wildcard's key in the listener table (b"" is IPv4's)
#: the catch-all listener's key (``Stack.catch_all``): SYNs to any address and port that
#: no other listener takes; its connections keep the original destination as ``local``
CATCH_ALL = (b"*", 0)

class TcpEndpoint:
    """A connection with its addresses, as the socket layer sees it."""

    __slots__ = ("layer", "conn", "family", "local", "remote", "key", "listener",
                 "owner", "accepted", "_timer", "_in_event", "path")

    def __init__(self, layer: TcpLayer, conn: TcpConnection, family: int,
                 local: tuple[bytes, int], remote: tuple[bytes, int]) -> None:
        self.layer = layer
        self.conn = conn
        self.family = family
        self.local = local
        self.remote = remote
        self.key = (local[0], local[1], remote[0], remote[1])
        self.listener: TcpListener | None = None  # set while half-open on a listener
        #: the handle of who hears of changes (``stack.upper.on_tcp_event``), or None
        self.owner: int | None = None
        self.accepted = False
        self._timer: float | None = None
        self._in_event = False
        self.path: OutputPath | None = None

    # -- the socket layer's calls (under the stack lock) ------------------------------
    # Each takes the time of the call, ``now``; None (tests, old callers) means the
    # stack's boundary time (``Stack._api_now``): the clock is read there, never below.
    def send(self, data: bytes | bytearray | memoryview, now: float | None = None) -> int:
        n = self.conn.send(data)
        self.layer.flush(self, self.layer.stack._api_now(now))
        return n

    def recv(self, maxlen: int, now: float | None = None) -> bytes:
        """Up to ``maxlen`` bytes; b"" when nothing is queued (check ``conn.eof``)."""
        if not self.conn.recv_queued:
            return b""
        data = self.conn.recv(maxlen)
        self.layer.flush(self, self.layer.stack._api_now(now))  # a window update may be due
        return data

    def consume(self, n: int, now: float | None = None) -> None:
        """Drop ``n`` bytes shown by ``conn.peek`` (a window update goes out if due)."""
        if self.conn.consume(n):
            self.layer.flush(self, self.layer.stack._api_now(now))

    def shutdown_write(self, now: float | None = None) -> None:
        now = self.layer.stack._api_now(now)
        self.conn.shutdown_write(now)
        self.layer.flush(self, now)

    def close(self, now: float | None = None) -> None:
        now = self.layer.stack._api_now(now)
        self.conn.close(now)
        self.disown()
        self.layer.flush(self, now)

    def abort(self, error: int = 0, now: float | None = None) -> None:
        """Reset the connection. An application's own abort ends its interest in events;
        with ``error`` (the stack itself going away) the owner is told, with that error."""
        now = self.layer.stack._api_now(now)
        self.conn.abort(now)
        owner = self.owner
        if owner is not None:
            self.owner = None  # (what the owner calls now tells it nothing more)
            upper = self.layer.stack.upper
            try:
                if error:
                    self.conn.error = self.conn.error or error
                    upper.on_tcp_event(owner, self)
            finally:
                upper.release(owner)
        self.layer.flush(self, now)

    def disown(self) -> None:
        """The owner lets go: no more events (the connection may live on, in TIME-WAIT
        or sending what it was given); its entry in ``stack.upper`` goes."""
        owner = self.owner
        if owner is not None:
            self.owner = None
            self.layer.stack.upper.release(owner)


class TcpListener:
    """A listening port: half-open connections and the queue of established ones."""

    def __init__(self, layer: TcpLayer, family: int, addr: bytes, port: int, backlog: int,
                 owner: int | None) -> None:
        self.layer = layer
        self.family = family  # 6 listens on both families unless v6only
        self.addr = addr
        self.port = port
        self.backlog = max(1, backlog)
        #: the handle of who hears that a connection is ready (``stack.upper.on_tcp_ready``)
        #: and that the stack closed this listener (``on_tcp_closed``), or None
        self.owner = owner
        self.v6only = False
        self.key = (addr or (b"" if family == 4 else ANY6), port)
        self.half_open: OrderedDict[tuple, TcpEndpoint] = OrderedDict()
        self.ready: deque[TcpEndpoint] = deque()
        self.options: dict[str, object] = {}
        self.syn_dropped = 0

    def accept(self) -> TcpEndpoint | None:
        while self.ready:
            ep = self.ready.popleft()
            if ep.conn.closed or ep.conn.error:
                continue  # reset before anyone accepted it
            ep.accepted = True
            return ep
        return None

    def close(self, now: float | None = None) -> None:
        if self.layer.listeners.get(self.key) is self:
            del self.layer.listeners[self.key]
        now = self.layer.stack._api_now(now)
        for ep in list(self.half_open.values()) + list(self.ready):
            ep.abort(now=now)
        self.half_open.clear()
        self.ready.clear()
        owner = self.owner
        if owner is not None:
            self.owner = None
            upper = self.layer.stack.upper
            try:
                upper.on_tcp_closed(owner, self)
            finally:
                upper.release(owner)


class TcpLayer:
    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.conns: dict[tuple, TcpEndpoint] = {}
        self.listeners: dict[tuple[bytes, int], TcpListener] = {}
        self.timers: list[tuple[float, int, TcpEndpoint]] = []
        self.rng = random.Random()
        # the key of the initial sequence numbers' and timestamp offsets' hash (RFC 6528)
        self._secret = os.urandom(16)
        self.defaults: dict[str, object] = {}
        self.rst_sent = 0
        #: SYNs to the catch-all listener that wait for its owner's ``release_syn`` (the
        #: owner connects onward first, as libslirp does): key -> (family, seq, window,
        #: options); at most SYN_BACKLOG
        self.held: dict[tuple, tuple[int, int, int, bytes]] = {}
        # while a batch of frames is processed: the connections to flush at its end, and
        # the time of the batch's latest segment (when they are flushed)
        self._batch: dict[TcpEndpoint, None] | None = None
        self._batch_now = 0.0

    # -- batches ---------------------------------------------------------------------
    def begin_batch(self) -> bool:
        """Defer flushing connections until ``end_batch``: a batch of segments then gives
        one ``output`` per connection (one burst of data, one ACK, one wake-up of the
        socket). Returns False when a batch is already open (the outer one ends it)."""
        if self._batch is not None:
            return False
        self._batch = {}
        return True

    def end_batch(self, now: float | None = None) -> None:
        """Flush the connections the batch touched, at ``now`` (default: the time its
        latest segment arrived)."""
        pending = self._batch
        self._batch = None
        if pending:
            if now is None:
                now = self._batch_now
            for ep in pending:
                self.flush(ep, now)

    # -- ports -----------------------------------------------------------------------
    def port_in_use(self, addr: bytes, port: int, family: int = 0, v6only: bool = False) -> bool:
        """Would binding ``addr`` (b"" for any) and ``port`` clash, as Linux sees it? A
        wildcard of ``family`` 6 with ``v6only`` leaves IPv4 users of the port alone, and
        the other way round; ``family`` 0 (unknown) clashes with both."""
        if addr:
            covers4, covers6 = len(addr) == 4, len(addr) == 16
        else:
            covers4, covers6 = family != 6 or not v6only, family != 4
        ls = self.listeners
        if (addr, port) in ls:
            return True
        if covers4 and (b"", port) in ls:
            return True
        any6 = ls.get((ANY6, port))
        if any6 is not None and (covers6 or (covers4 and not any6.v6only)):
            return True
        for k in self.conns:
            if k[1] != port:
                continue
            local = k[0]
            if not local or (covers4 if len(local) == 4 else covers6) and (not addr or local == addr):
                return True
        return False

    def ephemeral(self, addr: bytes, remote: tuple[bytes, int] | None = None) -> int:
        lo, hi = EPHEMERAL
        start = self.rng.randrange(lo, hi + 1)
        for i in range(hi - lo + 1):
            port = lo + (start - lo + i) % (hi - lo + 1)
            if remote is not None:
                if (addr, port, remote[0], remote[1]) not in self.conns and \
                        (addr, port) not in self.listeners and (b"", port) not in self.listeners \
                        and (ANY6, port) not in self.listeners:
                    return port
            elif not self.port_in_use(addr, port):
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free local port")

    # -- opening ----------------------------------------------------------------------
    def listen(self, family: int, addr: bytes, port: int, backlog: int,
               owner: int | None = None, *, reuse: bool = False,
               v6only: bool = False) -> TcpListener:
        """Listen on ``addr`` (b"" for any) and ``port``; ``owner``: the handle of the
        listener's owner in ``stack.upper``. The wildcard of each family has its own
        slot, so an IPv4 listener and an IPV6_V6ONLY one share a port, as on Linux; a
        dual-stack IPv6 wildcard conflicts with an IPv4 one."""
        listener = TcpListener(self, family, addr, port, backlog, owner)
        listener.v6only = v6only or family == 4
        ls = self.listeners
        clash = ls.get(listener.key)
        if clash is None and not addr:
            other = ls.get((ANY6, port) if family == 4 else (b"", port))
            if other is not None and not (family == 4 and other.v6only) and \
                    not (family == 6 and v6only):
                clash = other
        if clash is not None:
            raise OSError(errno.EADDRINUSE, f"port {port} is already listening")
        if not reuse and self.port_in_use(addr, port, family, listener.v6only):
            raise OSError(errno.EADDRINUSE, f"port {port} is in use")
        ls[listener.key] = listener
        return listener

    def connect(self, family: int, src: bytes | None, sport: int, dst: bytes, dport: int,
                now: float, **options: object) -> TcpEndpoint:
        stack = self.stack
        if src is None:
            src = stack.source(family, dst)
            if src is None:
                raise OSError(errno.ENETUNREACH, "no route to host")
        if not sport:
            sport = self.ephemeral(src, (dst, dport))
        key = (src, sport, dst, dport)
        if key in self.conns:
            raise OSError(errno.EADDRINUSE, "that connection exists")
        conn = self._new_conn(family, (src, sport), (dst, dport), now, options)
        ep = TcpEndpoint(self, conn, family, (src, sport), (dst, dport))
        self.conns[key] = ep
        conn.connect(now)
        self.flush(ep, now)
        return ep

    def _new_conn(self, family: int, local: tuple[bytes, int], remote: tuple[bytes, int],
                  now: float, options: dict, iss: int | None = None) -> TcpConnection:
        mtu = self.stack.path_mtu(family, remote[0], now) or 1500
        # IPv4's total length is 16 bits: on a link of a larger MTU (the loopback's 65536,
        # as Linux's lo) a segment must still fit in 65535 bytes (Linux's MSS there is
        # 65495 too); IPv6's payload length does not count its 40-byte header
        mss = (min(mtu, 0xFFFF) - 40) if family == 4 else mtu - 60
        opts = {"rcvbuf": TCP_BUF, "sndbuf": TCP_BUF, **self.defaults, **options}
        # RFC 6528: ISN = a 4 us clock + a keyed hash of the connection's addresses and
        # ports, so that a new incarnation of a connection starts above the old one (what
        # lets a peer's TIME-WAIT take its SYN, RFC 6191); the timestamp clock's offset is
        # a keyed hash of the two addresses
        if iss is None:
            iss = int(now * 250_000) + self._keyed_hash(
                local[0] + remote[0] + ((local[1] << 16) | remote[1]).to_bytes(4, "big"))
        ts_off = self._keyed_hash(local[0] + remote[0])
        conn = TcpConnection(now, iss=iss, ts_offset=ts_off, mss=max(mss, 536), rng=self.rng,
                             **opts)  # type: ignore[arg-type]
        conn.payload_views = True  # flush() encodes them at once, then drops them
        conn.stretch_acks = True  # the runner feeds batches and flushes after each
        return conn

    def _keyed_hash(self, data: bytes) -> int:
        """32 bits of a keyed hash of ``data`` (the key is this layer's secret)."""
        return int.from_bytes(hashlib.blake2s(data, key=self._secret, digest_size=4).digest(),
                              "big")

    # -- input --------------------------------------------------------------------------
    def input(self, family: int, src: bytes, dst: bytes, payload: memoryview, now: float,
              csum_ok: bool = False) -> None:
        """One TCP segment; ``csum_ok``: an offload link vouches for its checksum.
        Raises FrameError for a malformed one (``tcp.parse_header``)."""
        sport, dport, seq, ack, doff, flags, window = _PARSE(payload, src, dst, not csum_ok)
        n = len(payload)
        key = (dst, dport, src, sport)
        ep = self.conns.get(key)
        iss = None
        if ep is not None and flags & _SYN_ACK_RST == tcp.SYN and \
                ep.conn.state is TcpState.TIME_WAIT and \
                _new_incarnation(ep.conn, seq, payload[20:doff]):
            # RFC 6191: a SYN for a connection in TIME-WAIT that is sure to be a new
            # incarnation of it ends the TIME-WAIT and opens anew (as Linux does, with
            # an ISN past the old connection's sequence space)
            iss = ep.conn.snd_nxt + 65537
            self._forget(ep)
            ep = None
        if ep is not None:
            # a 32-byte header whose options are NOP NOP timestamps (RFC 7323 appendix A)
            if doff == 32 and (ts := _TS_OPT(payload, 20))[0] == _NOP_NOP_TS:
                _, ts_val, ts_ecr = ts
                if flags & _NOT_PSH == tcp.ACK and n > 32 and \
                        ep.conn.input_data(seq, ack, window, payload[32:], ts_val, now):
                    self._touched(ep, now)
                    return
                seg = Segment(seq, ack, flags, window, payload[32:], None, None, False, (),
                              ts_val, ts_ecr)
            elif doff == 20:
                if flags & _NOT_PSH == tcp.ACK and n > 20 and \
                        ep.conn.input_data(seq, ack, window, payload[20:], None, now):
                    self._touched(ep, now)
                    return
                seg = Segment(seq, ack, flags, window, payload[20:])
            else:
                seg = self._segment(seq, ack, flags, window, payload[20:doff], payload[doff:])
            ep.conn.input(seg, now)
            self._touched(ep, now)
            return
        opts = payload[20:doff] if doff > 20 else memoryview(b"")
        ls = self.listeners
        if family == 4:
            listener = ls.get((dst, dport)) or ls.get((b"", dport))
            if listener is None:
                listener = ls.get((ANY6, dport))
                if listener is not None and listener.v6only:
                    listener = None
        else:
            listener = ls.get((dst, dport)) or ls.get((ANY6, dport))
        if listener is None and self.stack.catch_all is not None:
            listener = ls.get(CATCH_ALL)
        if flags & tcp.RST:
            return
        if listener is not None and not flags & tcp.ACK:
            # RFC 9293 3.10.7.2, LISTEN: a SYN opens; anything else without ACK (FIN,
            # NULL and XMAS probes) is dropped, not reset. A SYN with FIN is dropped too,
            # as Linux does (no valid open carries both).
            if flags & (tcp.SYN | tcp.FIN) == tcp.SYN:
                if listener.key == CATCH_ALL:
                    self._hold(listener, family, src, sport, dst, dport, seq, window, opts)
                else:
                    self._syn(listener, family, src, sport, dst, dport, seq, window, opts,
                              now, iss)
            return
        self._reset(family, src, sport, dst, dport, seq, ack, flags, len(payload) - doff, now)

    def icmp_endpoint(self, family: int, src: bytes, sport: int, dst: bytes, dport: int,
                      seq: int) -> TcpEndpoint | None:
        """The connection an ICMP error about our segment from ``src``:``sport`` to
        ``dst``:``dport`` with sequence number ``seq`` is about, or None when no live
        connection could have sent it: RFC 5927 4.1 (and Linux) take the error only for
        a 4-tuple that exists and a ``seq`` in SND.UNA..SND.NXT (what is in flight)."""
        ep = self.conns.get((src, sport, dst, dport))
        if ep is None or ep.family != family:
            return None
        conn = ep.conn
        if conn.closed:
            return None
        una = conn.snd_una
        if (seq - una) & 0xFFFFFFFF >= conn.snd_max - una:
            return None
        return ep

    def unreachable(self, family: int, src: bytes, sport: int, dst: bytes, dport: int,
                    err: int, now: float) -> None:
        """A segment of ours could not go (address resolution for its next hop failed).
        As Linux's tcp_v4_err/tcp_v6_err for a hard error: a connection still in SYN-SENT
        fails with ``err`` (its connect raises it); a synchronized one keeps
        retransmitting (a soft error: the neighbor may come back)."""
        ep = self.conns.get((src, sport, dst, dport))
        if ep is None or ep.family != family or ep.conn.state is not TcpState.SYN_SENT:
            return
        ep.conn.abort(now)
        ep.conn.error = ep.conn.error or err
        self.flush(ep, now)  # forgets it, and tells the owner (on_tcp_event)

    def pmtu_reduced(self, ep: TcpEndpoint, mtu: int) -> None:
        """The path MTU of ``ep`` is ``mtu``: its segments shrink to fit (the ones lost
        go again, smaller, when the retransmission timer fires)."""
        ep.conn.path_mss(mtu - (60 if ep.family == 6 else 40))

    def _touched(self, ep: TcpEndpoint, now: float) -> None:
        """Input reached ``ep``: flush it now, or once at the end of the receive batch."""
        batch = self._batch
        if batch is not None:
            batch[ep] = None
            if now > self._batch_now:
                self._batch_now = now
        else:
            self.flush(ep, now)

    @staticmethod
    def _segment(seq: int, ack: int, flags: int, window: int, opts: memoryview,
                 data: memoryview) -> Segment:
        if opts:
            mss, wscale, sackok, blocks, ts_val, ts_ecr = tcp.parse_options(opts)
            return Segment(seq, ack, flags, window, data, mss, wscale, sackok, blocks, ts_val, ts_ecr)
        return Segment(seq, ack, flags, window, data)

    def _syn(self, listener: TcpListener, family: int, src: bytes, sport: int, dst: bytes,
             dport: int, seq: int, window: int, opts: memoryview, now: float,
             iss: int | None = None) -> None:
        key = (dst, dport, src, sport)
        if len(listener.ready) >= listener.backlog:
            listener.syn_dropped += 1  # accept queue full: drop, the client will retry
            return
        if len(listener.half_open) >= SYN_BACKLOG:
            # SYN flood: forget the oldest half-open connection (no RST: it may be spoofed)
            _, old = listener.half_open.popitem(last=False)
            self._forget(old)
            listener.syn_dropped += 1
        conn = self._new_conn(family, (dst, dport), (src, sport), now, dict(listener.options),
                              iss)
        ep = TcpEndpoint(self, conn, family, (dst, dport), (src, sport))
        ep.listener = listener
        self.conns[key] = ep
        listener.half_open[key] = ep
        conn.listen_accept(self._segment(seq, 0, tcp.SYN, window, opts, memoryview(b"")), now)
        self.flush(ep, now)

    def _hold(self, listener: TcpListener, family: int, src: bytes, sport: int, dst: bytes,
              dport: int, seq: int, window: int, opts: memoryview) -> None:
        """A SYN for the catch-all listener: held until the owner of ``Stack.catch_all``
        (told by ``on_syn``) calls ``release_syn``; a retransmitted one is dropped."""
        key = (dst, dport, src, sport)
        if key in self.held:
            return
        if len(self.held) >= SYN_BACKLOG:
            listener.syn_dropped += 1
            return
        self.held[key] = (family, seq, window, bytes(opts))
        self.stack.upper.on_syn(self.stack.catch_all, key)

    def release_syn(self, key: tuple, error: int, now: float) -> None:
        """Answer a held SYN (``key``: local address and port, remote address and port):
        ``error`` 0 opens the connection on the catch-all listener; ECONNREFUSED (or any
        other) resets it; EHOSTUNREACH, ENETUNREACH answer with an ICMP destination
        unreachable (host, network) quoting the SYN, which aborts the peer's connect."""
        entry = self.held.pop(key, None)
        if entry is None:
            return
        family, seq, window, opts = entry
        dst, dport, src, sport = key
        listener = self.listeners.get(CATCH_ALL)
        if not error and listener is not None:
            self._syn(listener, family, src, sport, dst, dport, seq, window, memoryview(opts),
                      now, None)
        elif error in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            head = 20 if family == 4 else ipv6.HEADER_LEN
            quote = bytearray(head + 20)
            tcp.build(memoryview(quote)[head:], src, dst, sport, dport, seq, 0, tcp.SYN, window)
            if family == 4:
                ipv4.build(quote, src, dst, ipv4.PROTO_TCP, 20)
                self.stack._icmp4_error(src, dst, 3, 1 if error == errno.EHOSTUNREACH else 0,
                                        memoryview(quote), now)
            else:
                ipv6.build(quote, src, dst, ipv6.PROTO_TCP, 20)
                self.stack._icmp6_error(src, dst, 1, 3 if error == errno.EHOSTUNREACH else 0,
                                        memoryview(quote), now)
        else:
            self._reset(family, src, sport, dst, dport, seq, 0, tcp.SYN, 0, now)

    def _reset(self, family: int, src: bytes, sport: int, dst: bytes, dport: int, seq: int,
               ack: int, flags: int, data_len: int, now: float) -> None:
        """RFC 9293 3.10.7.1: a segment for no connection gets a RST."""
        seg_len = data_len + (1 if flags & tcp.SYN else 0) + (1 if flags & tcp.FIN else 0)
        out = bytearray(20)
        if flags & tcp.ACK:
            tcp.build(out, dst, src, dport, sport, ack, 0, tcp.RST, 0)
        else:
            tcp.build(out, dst, src, dport, sport, 0, (seq + seg_len) & 0xFFFFFFFF,
                      tcp.RST | tcp.ACK, 0)
        self.rst_sent += 1
        self._send(family, dst, src, out, now)

    # -- output and timers ----------------------------------------------------------------
    def flush(self, ep: TcpEndpoint, now: float) -> None:
        """Send what the connection wants to send at ``now`` (the time of the input, timer
        or call that changed it), then update timers and waiters."""
        conn = ep.conn
        segs = conn.output(now)
        if segs:
            try:
                large = conn.tso_max
                path = self._path(ep, now)
                if large and (path is None or not path.offload):
                    # the path lost its offload link since output() made these segments
                    segs[:] = _cut(segs, conn.snd_mss)
                if path is not None:
                    self._xmit_path(ep, path, segs, now)
                else:
                    for seg in segs:
                        self._xmit(ep, seg, now)
            finally:
                # payloads may be views of the send buffer: let it change again
                segs.clear()
        # half-open -> established: move to the listener's accept queue
        listener = ep.listener
        if listener is not None and conn.established:
            ep.listener = None
            listener.half_open.pop(ep.key, None)
            if len(listener.ready) < listener.backlog:
                listener.ready.append(ep)
                if listener.owner is not None:
                    self.stack.upper.on_tcp_ready(listener.owner, listener)
            else:
                ep.abort(now=now)
                return
        if conn.closed:
            self._forget(ep)
        else:
            # An entry is pushed only when the deadline moves earlier: a later one (the RTO
            # restarted by every ACK) leaves the old entry, which then fires early and
            # finds nothing due; the flush after it pushes the real deadline.
            due = conn.next_timer()
            if due is not None:
                t = ep._timer
                if t is None or due < t:
                    ep._timer = due
                    heapq.heappush(self.timers, (due, next(_seq), ep))
        owner = ep.owner
        if owner is not None and not ep._in_event:
            # upper.on_tcp_event(owner, ep), without its call: this runs after every flush
            event = self.stack.upper.tcp_events.get(owner)
            if event is not None:
                # (the owner may call send/recv, which flush again: no recursion)
                ep._in_event = True
                try:
                    event(ep)
                finally:
                    ep._in_event = False

    def _xmit(self, ep: TcpEndpoint, seg: Segment, now: float) -> None:
        """Encode one segment with the general encoder and pass it to the IP layer."""
        src, sport = ep.local
        dst, dport = ep.remote
        n = len(seg.payload)
        ts = (seg.ts_val, seg.ts_ecr) if seg.ts_val is not None else None
        opt_len = tcp.options_length(seg.mss, seg.wscale, seg.sack_permitted,
                                     seg.sack_blocks, ts)
        out = bytearray(20 + opt_len + n)
        tcp.build(out, src, dst, sport, dport, seg.seq, seg.ack, seg.flags, seg.window,
                  seg.payload, mss=seg.mss, wscale=seg.wscale,
                  sack_permitted=seg.sack_permitted, sack_blocks=seg.sack_blocks, ts=ts)
        self._send(ep.family, src, dst, out, now)

    def _path(self, ep: TcpEndpoint, now: float) -> OutputPath | None:
        """The connection's output path from the IP layer (``Stack.output_path``), kept
        while it holds, or None for the general path (no route, neighbor not REACHABLE,
        local destination, a hook installed...)."""
        p = ep.path
        if p is not None:
            if p.fresh(now):
                return p
            ep.path = None
            ep.conn.tso_max = 0
        p = self.stack.output_path(ep.family, ep.local[0], ep.remote[0], ipv4.PROTO_TCP, now,
                                   offload=True)
        if p is None:
            return None
        ep.conn.tso_max = TSO_MAX if p.offload else 0
        ep.path = p
        return p

    def _xmit_path(self, ep: TcpEndpoint, p: OutputPath, segs: list[Segment], now: float) -> None:
        """Encode segments into frames with the path's headroom (one buffer, one copy of
        the payload) and hand them to the path in one batch: the output of established
        connections, IPv4 or IPv6. Segments the path cannot take (options other than
        timestamps, larger than its MTU) take the general path, in order."""
        sport = ep.local[1]
        dport = ep.remote[1]
        psum = p.psum
        th = p.headroom  # where the TCP header starts
        mtu = 0xFFFF if p.offload else p.mtu
        iphl = th - 14
        hdr = _HDR
        hdr_ts = _HDR_TS
        offload = p.offload
        mss = ep.conn.snd_mss
        frames: list[bytearray] = []
        payloads: list[memoryview | bytes] = []  # what each frame carries, for its checksum
        for seg in segs:
            payload = seg.payload
            n = len(payload)
            tsv = seg.ts_val
            hl = 20 if tsv is None else 32
            if seg.mss is not None or seg.wscale is not None or seg.sack_permitted or \
                    seg.sack_blocks or iphl + hl + n > mtu:
                # options: the general encoder; too large: the IP layer refuses it (IPv4,
                # DF: EMSGSIZE) or fragments it (IPv6)
                if frames:
                    if offload:
                        _SET_PARTIAL_CSUMS(frames, th, psum)
                    else:
                        _SET_CSUMS(frames, payloads, th, psum)
                    p.send(frames, mss)
                    frames = []
                    payloads = []
                self._xmit(ep, seg, now)
                continue
            frame = bytearray(th + hl + n)
            if tsv is None:
                hdr(frame, th, sport, dport, seg.seq, seg.ack, _OFF | seg.flags, seg.window,
                    0, 0)
            else:
                hdr_ts(frame, th, sport, dport, seg.seq, seg.ack, _OFF_TS | seg.flags,
                       seg.window, 0, 0, _NOP_NOP_TS, tsv, seg.ts_ecr)
            if n:
                frame[th + hl:] = payload
            frames.append(frame)
            if not offload:
                payloads.append(payload)
        if frames:
            # the checksums, a batch at a time: whole, or on an offload link the
            # pseudo-header's sum, which the link completes
            if offload:
                _SET_PARTIAL_CSUMS(frames, th, psum)
            else:
                _SET_CSUMS(frames, payloads, th, psum)
            p.send(frames, mss)

    def _forget(self, ep: TcpEndpoint) -> None:
        if self.conns.get(ep.key) is ep:
            del self.conns[ep.key]
        if ep.listener is not None:
            ep.listener.half_open.pop(ep.key, None)
        ep._timer = None
        # Stale heap entries keep forgotten connections alive: under a SYN flood they
        # would pile up, so rebuild the heap once they outnumber the live ones.
        if len(self.timers) > 4 * len(self.conns) + 64:
            self.timers = [t for t in self.timers
                           if t[2]._timer == t[0] and self.conns.get(t[2].key) is t[2]]
            heapq.heapify(self.timers)

    def _send(self, family: int, src: bytes, dst: bytes, segment: bytearray, now: float) -> None:
        try:
            if family == 4:
                self.stack.send_ip4(src, dst, ipv4.PROTO_TCP, segment, now, df=True)
            else:
                self.stack.send_ip6(src, dst, ipv6.PROTO_TCP, segment, now)
        except OSError:
            pass  # no route right now: TCP retransmits

    def next_deadline(self) -> float | None:
        timers = self.timers
        while timers:
            due, _, ep = timers[0]
            if ep._timer == due and self.conns.get(ep.key) is ep:
                return due
            heapq.heappop(timers)  # stale: the connection moved its timer or is gone
        return None

    def on_timer(self, now: float) -> None:
        timers = self.timers
        while timers and timers[0][0] <= now:
            due, _, ep = heapq.heappop(timers)
            if ep._timer != due or self.conns.get(ep.key) is not ep:
                continue
            ep._timer = None
            ep.conn.on_timer(now)
            self.flush(ep, now)


def _cut(segs: list[Segment], mss: int) -> list[Segment]:
    """Segments larger than ``mss`` cut into MSS-sized ones, as a TSO link would: the
    sequence numbers advance, FIN and PSH stay on the last piece and CWR on the first."""
    out: list[Segment] = []
    for seg in segs:
        payload = seg.payload
        n = len(payload)
        if n <= mss:
            out.append(seg)
            continue
        for off in range(0, n, mss):
            flags = seg.flags
            if off + mss < n:
                flags &= ~(tcp.FIN | tcp.PSH)
            if off:
                flags &= ~tcp.CWR
            out.append(Segment((seg.seq + off) & 0xFFFFFFFF, seg.ack, flags, seg.window,
                               payload[off:off + mss], None, None, False, (), seg.ts_val,
                               seg.ts_ecr))
    return out


def _new_incarnation(conn: TcpConnection, seq: int, opts: memoryview) -> bool:
    """RFC 6191 (and RFC 1122 4.2.2.13): whether a SYN with ``seq`` and options ``opts``
    may open a new connection over ``conn`` in TIME-WAIT: its timestamp is newer than the
    last one seen, or, without timestamps, its sequence number is beyond RCV.NXT."""
    try:
        ts_val = tcp.parse_options(opts)[4] if opts else None
    except FrameError:
        return False
    if conn.ts_ok and ts_val is not None:
        return 0 < (ts_val - conn.ts_recent) & 0xFFFFFFFF < 0x80000000
    return 0 < (seq - conn.rcv_nxt) & 0xFFFFFFFF < 0x80000000
