"""ICMP and ICMPv6 in the Stack: echo, errors, path MTU discovery (RFC 1191, RFC 8201),
neighbor solicitations and advertisements that arrive, ping, and what happens to packets
whose next hop never answered.

A ping is an ``EchoSession``: a sans-IO state machine run by the stack's timers, on the
times it is given (``threadnet.Stack.ping``, in the socket-API layer, blocks on one).
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from threadnet.errors import FrameError
from threadnet.stack import raw
from threadnet.stack.ip import LIMITED_BROADCAST
from threadnet.stack.upper import PingCallback
from threadnet.wire import icmp4, icmp6, ipv4, ipv6, tcp, udp
from threadnet.wire.ethernet import ETH_P_IPV4

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

PMTU_EXPIRE = 600.0  # RFC 1191: forget a learned path MTU after 10 minutes (Linux's mtu_expires)
PMTU_MAX_ENTRIES = 4096  # learned path MTUs kept; the oldest goes first
#: Linux's net.ipv4.route.min_pmtu: a smaller advertised MTU sets this one, "locked": the
#: packets to that destination then go without DF, so routers may fragment them
MIN_PMTU4 = 552
_ident = itertools.count(int.from_bytes(os.urandom(2), "big"))  # ping identifiers


class Icmp:
    """ICMP, ICMPv6 and path MTU discovery (a mixin of ``Stack``)."""

    def _input_icmp4(self, iface: Interface, src: bytes, dst: bytes, payload: memoryview,
                     packet: memoryview, broadcast: bool, now: float) -> None:
        kind, code, rest, body = icmp4.parse(payload)
        if kind == icmp4.ECHO_REQUEST:
            if broadcast:
                return  # no replies to broadcast pings (Linux's default)
            if self.catch_all is not None and not self._is_local4(dst):
                self.upper.on_echo(self.catch_all, 4, src, dst, rest, bytes(body))
                return
            out = bytearray(len(payload))
            icmp4.build_echo(out, rest >> 16, rest & 0xFFFF, body, reply=True)
            self.send_ip4(dst, src, ipv4.PROTO_ICMP, out, now)
        elif kind == icmp4.ECHO_REPLY:
            session = self.echo_waiters.get((4, rest >> 16))
            if session is not None:
                session.on_reply(bytes(body), now)
        elif kind == icmp4.DEST_UNREACHABLE and code == icmp4.UNREACH_FRAG_NEEDED:
            # RFC 1191: the quoted header names the destination whose path MTU shrank
            quoted = ipv4.parse(body, quoted=True)
            if quoted[4]:
                return  # a later fragment: no transport header to check it against
            self._icmp_too_big(4, quoted[6], quoted[7], quoted[8], body[quoted[9]:],
                               rest & 0xFFFF, now)

    def _input_icmp6(self, iface: Interface, src: bytes, dst: bytes, hlim: int,
                     payload: memoryview, packet: memoryview, now: float, src_mac: bytes) -> None:
        kind, code, rest, body = icmp6.parse(payload, src, dst)
        if self.agent_icmp6 and (kind, iface.index) in self.agent_icmp6:
            self._agent_icmp6_input(iface, kind, src, dst, hlim, payload, now)
        if kind == icmp6.ECHO_REQUEST:
            if self.catch_all is not None and dst[0] != 0xFF and not self._is_local6(dst):
                self.upper.on_echo(self.catch_all, 6, src, dst, rest, bytes(body))
                return
            reply_src = dst if dst[0] != 0xFF else self._source6(src)
            if reply_src is None:
                return
            out = bytearray(len(payload))
            icmp6.build_echo(out, reply_src, src, rest >> 16, rest & 0xFFFF, body, reply=True)
            self.send_ip6(reply_src, src, ipv6.PROTO_ICMPV6, out, now)
        elif kind == icmp6.ECHO_REPLY:
            session = self.echo_waiters.get((6, rest >> 16))
            if session is not None:
                session.on_reply(bytes(body), now)
        elif kind == icmp6.NEIGHBOR_SOLICITATION:
            if hlim != 255:
                return  # RFC 4861 7.1.1: not from an on-link node
            target, slla = icmp6.parse_ns(payload)
            mine = next((a for a in iface.v6 if a.addr == target), None)
            if mine is None:
                return
            if mine.state != "preferred":
                if mine.state == "tentative" and src == ipv6.UNSPECIFIED:
                    self._dad_failed(mine, iface)  # someone else is doing DAD for it too
                return  # not ours (yet): no answer
            if src != ipv6.UNSPECIFIED and slla is not None:
                for pkt in iface.nd.confirm(src, bytes(slla), now, solicited=False):
                    self._xmit(iface, bytes(slla), pkt)  # type: ignore[arg-type]
            flags = icmp6.NA_OVERRIDE
            to = src
            if src == ipv6.UNSPECIFIED:
                to = ipv6.ALL_NODES
            else:
                flags |= icmp6.NA_SOLICITED
            out = bytearray(32)
            n = icmp6.build_na(out, target, to, target, flags, iface.mac)
            self._send6_direct(iface, target, to, out[:n], src_mac if to == src else None, now)
        elif kind == icmp6.NEIGHBOR_ADVERTISEMENT:
            if hlim != 255:
                return
            flags, target, tlla = icmp6.parse_na(payload)
            mine = next((a for a in iface.v6 if a.addr == target), None)
            if mine is not None and mine.state != "dadfailed":  # (that one is a neighbor's)
                if mine.state == "tentative":
                    self._dad_failed(mine, iface)
                return
            if tlla is not None:
                for pkt in iface.nd.confirm(target, bytes(tlla), now,
                                            solicited=bool(flags & icmp6.NA_SOLICITED),
                                            create=False):
                    self._xmit(iface, bytes(tlla), pkt)  # type: ignore[arg-type]
        elif kind == icmp6.PACKET_TOO_BIG:
            quoted = ipv6.parse(body, quoted=True)
            nh, off = quoted[3], ipv6.HEADER_LEN
            if nh == ipv6.PROTO_FRAGMENT:  # one of our source fragments: the first only
                try:
                    nh, frag_off, _, _ = ipv6.parse_fragment(body, off)
                except FrameError:
                    return
                if frag_off:
                    return
                off += ipv6.FRAGMENT_LEN
            self._icmp_too_big(6, nh, quoted[5], quoted[6], body[off:], rest, now)

    def _icmp_too_big(self, family: int, proto: int, src: bytes, dst: bytes,
                      transport: memoryview, mtu: int, now: float) -> None:
        """A "fragmentation needed" (IPv4) or "packet too big" (IPv6) about a packet from
        ``src`` to ``dst`` whose transport header starts ``transport``.

        It is believed only when it quotes a packet one of our endpoints could have sent
        (RFC 5927 4): for TCP, a live connection's 4-tuple with a sequence number in
        SND.UNA..SND.NXT; for UDP and ICMP echo (IPv6 only), a bound port or a ping
        waiting for its reply, as Linux accepts them for sockets that exist. IPv4 sends
        only TCP with DF, so a router fragments any other IPv4 packet of ours rather than
        complain: an IPv4 message about UDP or ICMP is forged (or broken) and ignored.
        Anything else is ignored too: with no check, anyone could shrink any path.

        The MTU is clamped as Linux clamps it (IPv4: 552 at least, and then "locked":
        packets go without DF; IPv6: 1280, RFC 8201 4) and only ever lowers the path's
        MTU; entries expire after 10 minutes and the table holds at most
        ``PMTU_MAX_ENTRIES``. The TCP connection it is about shrinks its segments."""
        if len(transport) < 8:
            return  # RFC 792/4443 quote at least 8 bytes: the ports (and TCP's sequence)
        ep = None
        if family == 4:
            if src not in self._local4_set():
                return
        elif not self._is_local6(src):
            return
        if proto == ipv4.PROTO_TCP:
            sport, dport, seq = tcp.parse_quoted(transport)
            ep = self.tcp.icmp_endpoint(family, src, sport, dst, dport, seq)
            if ep is None:
                self._count("pmtu_ignored")
                return
        elif family == 6 and proto == ipv6.PROTO_UDP:
            sport, _ = udp.parse_quoted(transport)
            if (src, sport) not in self.udp and (b"", sport) not in self.udp:
                self._count("pmtu_ignored")
                return
        elif family == 6 and proto == ipv6.PROTO_ICMPV6:
            kind, _, rest, _ = icmp6.parse(transport, src, dst, verify=False)  # cut short
            if kind != icmp6.ECHO_REQUEST or (6, rest >> 16) not in self.echo_waiters:
                self._count("pmtu_ignored")
                return
        else:
            self._count("pmtu_ignored")
            return
        r = self._route4(dst) if family == 4 else self._route6(dst)
        if r is None:
            return
        current = r[0].mtu
        learned = self.pmtu.get(dst)
        if learned is not None and learned[1] >= now:
            current = min(current, learned[0])
        locked = False
        if family == 4:
            if mtu < MIN_PMTU4:
                mtu, locked = MIN_PMTU4, True
        elif mtu < ipv6.MIN_MTU:
            mtu = ipv6.MIN_MTU
        if mtu < current:
            self._pmtu_learn(dst, mtu, locked, now)
            current = mtu
            self._count("pmtu_learned")
        if ep is not None:
            self.tcp.pmtu_reduced(ep, current)

    def _pmtu_learn(self, dst: bytes, mtu: int, locked: bool, now: float) -> None:
        table = self.pmtu
        self._pmtu_expire(now)
        table.pop(dst, None)
        while len(table) >= PMTU_MAX_ENTRIES:
            table.popitem(last=False)
        table[dst] = (mtu, now + PMTU_EXPIRE, locked)

    def _pmtu_expire(self, now: float) -> None:
        """Forget the learned path MTUs that expired by ``now`` (RFC 1191 6.3, RFC 8201 4):
        the table is in expiry order, so this looks at the expired ones and one more."""
        table = self.pmtu
        while table:
            dst, entry = next(iter(table.items()))
            if entry[1] >= now:
                return
            del table[dst]

    def _icmp4_error(self, to: bytes, fr: bytes, kind: int, code: int, packet: memoryview,
                     now: float, mtu: int = 0) -> None:
        if to[0] >= 224 or to == LIMITED_BROADCAST or to == bytes(4):
            return  # RFC 1122 3.2.2: never about broadcasts or from unspecified sources
        out = bytearray(8 + min(len(packet), icmp4.MAX_QUOTE))
        if kind == icmp4.DEST_UNREACHABLE:
            icmp4.build_unreachable(out, code, packet, mtu)
        else:
            icmp4.build_time_exceeded(out, code, packet)
        src = fr if self._is_local4(fr) else self.source4(to)
        try:
            self.send_ip4(src, to, ipv4.PROTO_ICMP, out, now)
        except OSError:
            pass

    def _icmp6_error(self, to: bytes, fr: bytes, kind: int, code: int, packet: memoryview,
                     now: float, rest: int = 0) -> None:
        if to[0] == 0xFF or to == ipv6.UNSPECIFIED:
            return
        src = fr if self._is_local6(fr) else self._source6(to)
        if src is None:
            return
        out = bytearray(8 + min(len(packet), icmp6.MAX_QUOTE))
        icmp6.build_error(out, src, to, kind, code, packet, rest)
        try:
            self.send_ip6(src, to, ipv6.PROTO_ICMPV6, out, now)
        except OSError:
            pass

    def send_echo(self, dst: str, ident: int, seq: int, data: bytes = b"",
                  now: float | None = None) -> None:
        addr = ipaddress.ip_address(dst)
        if addr.version == 4:
            out = bytearray(8 + len(data))
            icmp4.build_echo(out, ident, seq, data)
            self.send_ip4(None, addr.packed, ipv4.PROTO_ICMP, out, now)
        else:
            src = self._source6(addr.packed)
            if src is None:
                raise self._no_source(6, addr.packed)
            out = bytearray(8 + len(data))
            icmp6.build_echo(out, src, addr.packed, ident, seq, data)
            self.send_ip6(src, addr.packed, ipv6.PROTO_ICMPV6, out, now)
        self._drain_local(self._now if now is None else now)

    def start_ping(self, dst: str, count: int = 1, timeout: float = 2.0, size: int = 56,
                   now: float | None = None, *,
                   on_done: Callable[[EchoSession], None] | int | None = None,
                   ident: int | None = None) -> EchoSession:
        """Start a ping (``EchoSession``) to ``dst``, its first request sent at ``now``
        (default: the stack's boundary time, ``_api_now``). The stack's timers run it
        (``next_deadline``/``on_timer``). When it ends, under the stack's lock, its
        owner hears of it: ``on_done`` is the handle of an owner registered with
        ``stack.upper`` (its ``on_ping_done(session)``), or a function ``on_done(session)``.
        OSError when the first request cannot go (no route, no source address)."""
        made = callable(on_done)
        owner = self.upper.add(PingCallback(on_done)) if made else on_done
        session = EchoSession(self, dst, count, timeout, size,
                              next(_ident) & 0xFFFF if ident is None else ident, owner)
        try:
            session.start(self._api_now(now))
        except BaseException:
            if made:
                self.upper.release(owner)  # type: ignore[arg-type]
            raise
        return session

    def _unreachable(self, etype: int, packet: bytes, now: float) -> None:
        """Address resolution failed (the neighbor cache gave the packets back): host
        unreachable to the packet's source if it is not us, else to the packet's owner
        here (``_local_unreachable``), as Linux's ICMP error to itself."""
        mv = memoryview(packet)
        if etype == ETH_P_IPV4:
            self._count("arp_failed")
            # a packet we sent or forward, whole (its checksum is not looked at)
            try:
                (_, total, _, _, frag_off, _, proto, src, dst, hlen,
                 _) = ipv4.parse(mv, verify=False)
            except FrameError:
                return
            if not self._is_local4(src):
                self._icmp4_error(src, dst, icmp4.DEST_UNREACHABLE, icmp4.UNREACH_HOST, mv, now)
            elif not frag_off:  # a first fragment or a whole datagram
                self._local_unreachable(4, proto, src, dst, mv[hlen:total], now)
        else:
            self._count("nd_failed")
            try:
                _, _, plen, nh, _, src, dst = ipv6.parse(mv)
            except FrameError:
                return
            if not self._is_local6(src):
                self._icmp6_error(src, dst, icmp6.DEST_UNREACHABLE, icmp6.UNREACH_ADDRESS, mv,
                                  now)
                return
            off = ipv6.HEADER_LEN
            if nh == ipv6.PROTO_FRAGMENT:  # one of our source fragments: the first only
                try:
                    nh, frag_off, _, _ = ipv6.parse_fragment(mv, off)
                except FrameError:
                    return
                if frag_off:
                    return
                off += ipv6.FRAGMENT_LEN
            self._local_unreachable(6, nh, src, dst, mv[off:ipv6.HEADER_LEN + plen], now)

    def _local_unreachable(self, family: int, proto: int, src: bytes, dst: bytes,
                           transport: memoryview, now: float) -> None:
        """EHOSTUNREACH to whoever here sent ``transport``: a connecting TCP socket fails,
        a UDP port's owner and a ping hear of it."""
        if len(transport) < 8:
            return
        if proto == ipv4.PROTO_TCP:
            sport, dport, _ = tcp.parse_quoted(transport)
            self.tcp.unreachable(family, src, sport, dst, dport, errno.EHOSTUNREACH, now)
        elif proto == ipv4.PROTO_UDP:
            sport, dport = udp.parse_quoted(transport)
            handle = self.udp.get((src, sport)) or self.udp.get((b"", sport))
            if handle is not None:
                self.upper.on_udp_error(handle, errno.EHOSTUNREACH, dst, dport)
        elif family == 4 and proto == ipv4.PROTO_ICMP:
            kind, _, rest, _ = icmp4.parse(transport, verify=False)
            if kind == icmp4.ECHO_REQUEST:
                self._echo_unreachable(4, rest >> 16, now, dst)
        elif family == 6 and proto == ipv6.PROTO_ICMPV6:
            kind, _, rest, _ = icmp6.parse(transport, src, dst, verify=False)
            if kind == icmp6.ECHO_REQUEST:
                self._echo_unreachable(6, rest >> 16, now, dst)

    def _echo_unreachable(self, family: int, ident: int, now: float, dst: bytes) -> None:
        session = self.echo_waiters.get((family, ident))
        if session is not None:
            session.on_error(errno.EHOSTUNREACH, now)
        elif self.raw_taps:  # a ping socket's request (stack/rawsocket.py)
            raw.echo_unreachable(self, family, ident, dst, errno.EHOSTUNREACH)


class EchoSession:
    """One ping: ``count`` echo requests to ``dst``, one at a time; each waits up to
    ``timeout`` seconds for its reply, and the next goes when the reply came or the wait
    ended. Sans-IO: it reads no clock, and its round-trip times are differences of the
    times it is given (the send's ``now``, the reply's ``now``).

    ``Stack.start_ping`` makes and starts one; the stack then calls ``on_timer`` when
    ``next_deadline`` comes, and ``on_reply``/``on_error`` when a reply or an error
    (address resolution for ``dst`` failed) arrives (``stack.echo_waiters`` holds the
    session by family and identifier). Its owner, named by the handle ``owner``
    (``stack/upper.py``), hears ``on_ping_done`` when it ends. When it ends (``done``), ``rtts``
    holds the replies' round-trip times in seconds, and ``error`` an errno: EHOSTUNREACH
    when address resolution failed before any reply came (the ping stops there), or the
    error of a request that could not be sent."""

    def __init__(self, stack: Stack, dst: str, count: int, timeout: float, size: int,
                 ident: int, owner: int | None = None) -> None:
        self.stack = stack
        self.dst = dst
        self.family = ipaddress.ip_address(dst).version
        self.count = count
        self.timeout = timeout
        self.size = size
        self.ident = ident
        self.owner = owner
        self.rtts: list[float] = []
        self.error: int | None = None
        self.done = False
        self.seq = -1  # of the request in flight (or due next)
        self._sent_at = 0.0
        self._expect: bytes | None = None  # the payload the reply must echo
        self._due: float | None = None  # the current wait's end, or when the next goes

    def start(self, now: float) -> None:
        """Send the first request at ``now``; OSError if it cannot go (nothing stays
        registered then)."""
        if self.count <= 0:
            self._finish()
            return
        key = (self.family, self.ident)
        stack = self.stack
        stack.echo_waiters[key] = self
        stack.echo_sessions.append(self)
        try:
            self._send(now)
        except BaseException:
            self._unregister()
            raise

    def next_deadline(self) -> float | None:
        return None if self.done else self._due

    def on_timer(self, now: float) -> None:
        """The wait for a reply ended, or the next request is due."""
        if self.done or self._due is None or now < self._due:
            return
        if self._expect is not None:  # no reply in time: that request is lost
            self._expect = None
        self._next(now)

    def on_reply(self, body: bytes, now: float) -> None:
        """An echo reply with our identifier, its data ``body``, arrived at ``now``."""
        if self.done or self._expect is None or body != self._expect:
            return  # an old request's late reply, or not ours
        self._expect = None
        self.rtts.append(now - self._sent_at)
        self._due = now  # the next request goes at the next timer (no nested sends)
        if self.seq + 1 >= self.count:
            self._finish()

    def on_error(self, err: int, now: float) -> None:
        """A request could not reach its next hop (``err``, EHOSTUNREACH)."""
        if self.done:
            return
        if not self.rtts:
            self.error = err  # as Linux's ping: stop at once
            self._finish()
            return
        self._expect = None  # that one is lost; the next goes at the next timer
        self._due = now

    def cancel(self) -> None:
        """Stop now (the replies counted so far stay in ``rtts``)."""
        if not self.done:
            self._finish()

    def _next(self, now: float) -> None:
        if self.seq + 1 >= self.count:
            self._finish()
            return
        try:
            self._send(now)
        except OSError as exc:
            self.error = exc.errno
            self._finish()

    def _send(self, now: float) -> None:
        self.seq += 1
        payload = self.seq.to_bytes(2, "big") + os.urandom(max(0, self.size - 2))
        self._expect = payload
        self._sent_at = now
        self._due = now + self.timeout
        # (a local destination answers within this call: on_reply runs before it returns)
        self.stack.send_echo(self.dst, self.ident, self.seq & 0xFFFF, payload, now)

    def _unregister(self) -> None:
        stack = self.stack
        key = (self.family, self.ident)
        if stack.echo_waiters.get(key) is self:
            del stack.echo_waiters[key]
        if self in stack.echo_sessions:
            stack.echo_sessions.remove(self)

    def _finish(self) -> None:
        self.done = True
        self._due = None
        self._expect = None
        self._unregister()
        owner, self.owner = self.owner, None
        if owner is not None:
            upper = self.stack.upper
            try:
                upper.on_ping_done(owner, self)
            finally:
                upper.release(owner)
