"""Name resolution on a Stack, with the standard library's semantics (libioth's iothdns).

``Resolver`` gives a stack ``getaddrinfo``, ``gethostbyname``, ``gethostbyname_ex``,
``gethostbyaddr``, ``getnameinfo``, ``getfqdn`` and ``gethostname`` that return what the
``socket`` module's functions return and raise what they raise (``socket.gaierror`` with
glibc's EAI_* codes and messages, ``socket.herror``), but resolve on the stack: never
through the host's resolver, files or DNS servers. A name is looked up in this order:

1. numeric addresses, as glibc parses them (``inet_aton`` forms such as ``127.1``, IPv6
   with a ``%scope`` naming one of the stack's interfaces or an index);
2. ``localhost`` and names under ``.localhost`` (RFC 6761 6.3): the loopback addresses;
3. the stack's hosts table (``Resolver.hosts``, name -> addresses);
4. the stack's own host name (short, as set, or qualified with the search domain): the
   stack's addresses;
5. DNS, through the stack's own UDP (and TCP when an answer is truncated), with the
   nameservers, search list and options of a resolv.conf.

The DNS client is a sans-IO core (``Query``: one question asked of the nameservers in
turn; ``Resolution``: the search list, parallel A/AAAA questions, CNAME chains and the
cache) driven by ``Resolver._run``, which binds random UDP ports on the stack, sends,
and waits in the caller's thread. Resolver state lives only in stacks that use it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket as _socket
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from threadnet.wire import dns

if TYPE_CHECKING:
    from threadnet.stack.stack import Stack

AF_UNSPEC, AF_INET, AF_INET6 = _socket.AF_UNSPEC, _socket.AF_INET, _socket.AF_INET6
SOCK_STREAM, SOCK_DGRAM, SOCK_RAW = _socket.SOCK_STREAM, _socket.SOCK_DGRAM, _socket.SOCK_RAW
SOCK_SEQPACKET, SOCK_DCCP = 5, 6
IPPROTO_TCP, IPPROTO_UDP, IPPROTO_DCCP, IPPROTO_SCTP, IPPROTO_UDPLITE = 6, 17, 33, 132, 136

EAI_BADFLAGS = _socket.EAI_BADFLAGS
EAI_NONAME = _socket.EAI_NONAME
EAI_AGAIN = _socket.EAI_AGAIN
EAI_FAIL = _socket.EAI_FAIL
EAI_FAMILY = _socket.EAI_FAMILY
EAI_SOCKTYPE = _socket.EAI_SOCKTYPE
EAI_SERVICE = _socket.EAI_SERVICE
EAI_NODATA = getattr(_socket, "EAI_NODATA", -5)
EAI_ADDRFAMILY = getattr(_socket, "EAI_ADDRFAMILY", -9)

# glibc's gai_strerror and hstrerror texts, so errors read as the stdlib's do
_GAI_TEXT = {
    EAI_BADFLAGS: "Bad value for ai_flags",
    EAI_NONAME: "Name or service not known",
    EAI_AGAIN: "Temporary failure in name resolution",
    EAI_FAIL: "Non-recoverable failure in name resolution",
    EAI_FAMILY: "ai_family not supported",
    EAI_SOCKTYPE: "ai_socktype not supported",
    EAI_SERVICE: "Servname not supported for ai_socktype",
    EAI_NODATA: "No address associated with hostname",
    EAI_ADDRFAMILY: "Address family for hostname not supported",
}
HOST_NOT_FOUND, TRY_AGAIN, NO_RECOVERY, NO_DATA = 1, 2, 3, 4
_H_TEXT = {HOST_NOT_FOUND: "Unknown host", TRY_AGAIN: "Host name lookup failure",
           NO_RECOVERY: "Unknown server error", NO_DATA: "No address associated with name"}

AI_PASSIVE, AI_CANONNAME, AI_NUMERICHOST = 0x1, 0x2, 0x4
AI_V4MAPPED, AI_ALL, AI_ADDRCONFIG, AI_NUMERICSERV = 0x8, 0x10, 0x20, 0x400
_AI_KNOWN = 0x7FF  # glibc accepts the IDN flags (0x40..0x200) too
NI_NUMERICHOST, NI_NUMERICSERV, NI_NOFQDN, NI_NAMEREQD, NI_DGRAM = 1, 2, 4, 8, 16
_NI_KNOWN = 0xFF

# resolv.conf defaults and glibc's limits (resolv.h RES_TIMEOUT, RES_DFLRETRY, RES_MAXNDOTS...)
DEFAULT_TIMEOUT = 5.0
DEFAULT_ATTEMPTS = 2
DEFAULT_NDOTS = 1
MAX_CNAMES = 8  # CNAME hops followed for one question, across re-asks
CACHE_SIZE = 128
MAX_CACHE_TTL = 3600

_LOOP4 = b"\x7f\x00\x00\x01"
_LOOP6 = bytes(15) + b"\x01"
_OWN4 = b"\x7f\x00\x01\x01"  # 127.0.1.1: a host name with no other address, as Debian
_ANY4 = bytes(4)
_ANY6 = bytes(16)
_MAPPED = bytes(10) + b"\xff\xff"

# glibc's gaih_inet_typeproto: (socktype, protocol, any protocol, no service, by default, name)
_TYPEPROTO = (
    (SOCK_STREAM, IPPROTO_TCP, False, False, True, "tcp"),
    (SOCK_DGRAM, IPPROTO_UDP, False, False, True, "udp"),
    (SOCK_DCCP, IPPROTO_DCCP, False, False, False, "dccp"),
    (SOCK_DGRAM, IPPROTO_UDPLITE, False, False, False, "udplite"),
    (SOCK_STREAM, IPPROTO_SCTP, False, False, False, "sctp"),
    (SOCK_SEQPACKET, IPPROTO_SCTP, False, False, False, "sctp"),
    (SOCK_RAW, 0, True, True, True, "raw"),
)


def gaierror(code: int, detail: str = "") -> _socket.gaierror:
    text = _GAI_TEXT.get(code, "Unknown error")
    return _socket.gaierror(code, f"{text} ({detail})" if detail else text)


def herror(code: int) -> _socket.herror:
    return _socket.herror(code, _H_TEXT.get(code, "Resolver internal error"))


class LookupFailed(Exception):
    """A name or address was not found; ``status`` says why: ``nxdomain`` (no such name),
    ``nodata`` (the name has no records of the types asked), ``again`` (no server
    answered, or all failed) or ``fail`` (a server answered with an error)."""

    _EAI = {"nxdomain": EAI_NONAME, "nodata": EAI_NODATA, "again": EAI_AGAIN,
            "fail": EAI_FAIL}
    _HERR = {"nxdomain": HOST_NOT_FOUND, "nodata": NO_DATA, "again": TRY_AGAIN,
             "fail": NO_RECOVERY}

    def __init__(self, status: str, detail: str = "") -> None:
        super().__init__(status, detail)
        self.status = status
        self.detail = detail

    def gaierror(self) -> _socket.gaierror:
        return gaierror(self._EAI[self.status], self.detail)

    def herror(self) -> _socket.herror:
        return herror(self._HERR[self.status])


# -- the sans-IO DNS client ---------------------------------------------------------------

@dataclass(slots=True)
class Result:
    """What one question got. ``status``: ``ok``, ``nodata``, ``nxdomain``, ``cname`` (a
    CNAME chain that ended without the records asked for: ask its target), ``servfail``
    (every server failed), ``timeout`` (no server answered) or ``fail`` (an error answer,
    a CNAME loop). ``aliases`` are the names passed through CNAMEs, the asked name first;
    ``canonical`` is where the chain ended."""

    status: str
    canonical: str = ""
    aliases: list[str] = field(default_factory=list)
    data: list[Any] = field(default_factory=list)
    ttl: int = 0


class Cancel:
    """A way to stop a lookup that nobody waits for any more (a published stack's client
    went away): ``cancel()`` wakes every lookup run under ``cancellable(this)``, which
    then fails with EAI_AGAIN instead of waiting out its DNS timeouts."""

    def __init__(self) -> None:
        self.cancelled = False
        self._lock = threading.Lock()
        self._wakers: list[Callable[[], object]] = []

    def cancel(self) -> None:
        with self._lock:
            self.cancelled = True
            wakers, self._wakers = self._wakers, []
        for wake in wakers:
            wake()

    def _add(self, wake: Callable[[], object]) -> None:
        with self._lock:
            if not self.cancelled:
                self._wakers.append(wake)
                return
        wake()

    def _discard(self, wake: Callable[[], object]) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self._wakers.remove(wake)

    def check(self) -> None:
        if self.cancelled:
            raise LookupFailed("again", "the lookup was cancelled")


_cancel_scope = threading.local()


@contextlib.contextmanager
def cancellable(token: Cancel):
    """Lookups in this thread, inside the ``with``, stop when ``token`` is cancelled."""
    prev = getattr(_cancel_scope, "token", None)
    _cancel_scope.token = token
    try:
        yield token
    finally:
        _cancel_scope.token = prev


def _key(name: str) -> bytes | None:
    try:
        return dns.name_key(name)
    except dns.DnsError:
        return None


def extract(msg: dns.Message, name: str, qtype: int) -> Result:
    """Read the answer to ``name``/``qtype`` out of a response, following its CNAMEs."""
    answers = [r for r in msg.answers if r.rclass == dns.CLASS_IN]
    current, key = name, _key(name)
    aliases: list[str] = []
    seen = {key}
    ttl = MAX_CACHE_TTL
    for _ in range(MAX_CNAMES + 1):
        rr = next((r for r in answers if r.rtype == dns.TYPE_CNAME and _key(r.name) == key), None)
        if rr is None:
            break
        aliases.append(current)
        ttl = min(ttl, rr.ttl)
        current, key = rr.data, _key(rr.data)  # type: ignore[assignment, arg-type]
        if key in seen:
            return Result("fail", current, aliases)  # a CNAME loop
        seen.add(key)
    else:
        return Result("fail", current, aliases)
    data = [r.data for r in answers if r.rtype == qtype and _key(r.name) == key]
    if data:
        ttl = min([ttl] + [r.ttl for r in answers if r.rtype == qtype and _key(r.name) == key])
        return Result("ok", current, aliases, data, ttl)
    # RFC 2308 5: a negative answer may be cached for the SOA's TTL, at most its minimum
    soa = next((r for r in msg.authorities if r.rtype == dns.TYPE_SOA), None)
    neg = min(soa.ttl, soa.data[6]) if soa is not None else 0  # type: ignore[index]
    if msg.rcode == dns.RCODE_NXDOMAIN:
        return Result("nxdomain", current, aliases, ttl=neg)
    return Result("cname" if aliases else "nodata", current, aliases, ttl=min(ttl, neg))


class Query:
    """One question asked of the nameservers in turn, as glibc's res_send does: each of
    ``attempts`` rounds tries every server, each transmission waits ``timeout`` seconds,
    and SERVFAIL, REFUSED or NOTIMP move on to the next server at once. A truncated
    answer asks for the same question over TCP (``tcp``). Sans-IO.

    Every transmission has a fresh random id. An answer is accepted only from the server
    (address and port) that transmission went to, with that id and our question (RFC
    5452 9.1); anything else is ignored, and the query keeps waiting.
    """

    def __init__(self, name: str, qtype: int, servers: list[tuple[bytes, int]], port: int,
                 *, timeout: float = DEFAULT_TIMEOUT, attempts: int = DEFAULT_ATTEMPTS) -> None:
        self.name = name
        self.qtype = qtype
        self.key = dns.name_key(name)  # DnsError for a name DNS cannot carry
        self.servers = servers
        self.port = port
        self.timeout = timeout
        self.attempts = attempts
        self.sent: dict[int, int] = {}  # query id -> index of the server it went to
        self.tries = 0
        self.deadline: float | None = None
        self.outbox: list[tuple[int, bytes]] = []  # (server index, message)
        self.tcp: tuple[int, int, bytes] | None = None  # (server index, id, message)
        self.tcp_taken = False
        self.servfail = False
        self.result: Result | None = None
        self.ignored = 0  # answers that failed validation

    def start(self, now: float) -> None:
        self._transmit(now)

    def _new_id(self) -> int:
        while True:
            ident = secrets.randbits(16)
            if ident not in self.sent:
                return ident

    def _transmit(self, now: float) -> None:
        if self.tries >= self.attempts * len(self.servers):
            self.deadline = None
            self.result = Result("servfail" if self.servfail else "timeout", self.name)
            return
        index = self.tries % len(self.servers)
        self.tries += 1
        ident = self._new_id()
        self.sent[ident] = index
        self.outbox.append((index, dns.build_query(ident, self.name, self.qtype)))
        self.deadline = now + self.timeout

    def unreachable(self, now: float) -> None:
        """The last transmission could not be sent (no route): the next server now."""
        if self.result is None:
            self._transmit(now)

    def on_timer(self, now: float) -> None:
        if (self.result is None and self.tcp is None and self.deadline is not None
                and now >= self.deadline):
            self._transmit(now)

    def _valid(self, msg: dns.Message) -> bool:
        if not msg.qr or msg.opcode != dns.OPCODE_QUERY or len(msg.questions) != 1:
            return False
        q = msg.questions[0]
        return q.qtype == self.qtype and q.qclass == dns.CLASS_IN and _key(q.name) == self.key

    def receive(self, data: bytes, src: tuple[bytes, int], now: float) -> bool:
        """A datagram to our port from ``src`` (packed address, port). True if accepted."""
        if self.result is not None or self.tcp is not None:
            return False
        try:
            msg = dns.parse(data)
        except dns.DnsError:
            self.ignored += 1
            return False
        index = self.sent.get(msg.id)
        if index is None or self.servers[index] != src or not self._valid(msg):
            self.ignored += 1
            return False
        self._answer(msg, index, now, over_tcp=False)
        return True

    def tcp_answer(self, data: bytes | None, now: float) -> None:
        """The TCP exchange asked for by ``tcp`` ended: its answer, or None if it failed."""
        if self.tcp is None or self.result is not None:
            return
        index, ident, _ = self.tcp
        self.tcp = None
        self.tcp_taken = False
        msg = None
        if data is not None:
            try:
                msg = dns.parse(data)
            except dns.DnsError:
                msg = None
        if msg is None or msg.id != ident or not self._valid(msg):
            self.ignored += data is not None
            self._transmit(now)
            return
        self._answer(msg, index, now, over_tcp=True)

    def _answer(self, msg: dns.Message, index: int, now: float, over_tcp: bool) -> None:
        rcode = msg.rcode
        if msg.tc and not over_tcp:
            ident = self._new_id()
            self.sent[ident] = index
            self.tcp = (index, ident, dns.build_query(ident, self.name, self.qtype))
            self.deadline = None
            return
        if rcode in (dns.RCODE_SERVFAIL, dns.RCODE_REFUSED, dns.RCODE_NOTIMP):
            self.servfail = True
            self._transmit(now)
            return
        self.deadline = None
        if rcode not in (dns.RCODE_NOERROR, dns.RCODE_NXDOMAIN):
            self.result = Result("fail", self.name)  # FORMERR and the rest: NO_RECOVERY
            return
        self.result = extract(msg, self.name, self.qtype)


class Cache:
    """Answers by (name, type), each for its TTL (capped), the least recently used
    dropped first when ``size`` entries are held."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[bytes, int], tuple[float, Result]] = OrderedDict()

    def get(self, name: str, qtype: int, now: float) -> Result | None:
        key = (_key(name) or b"", qtype)
        hit = self.entries.get(key)
        if hit is None:
            return None
        if hit[0] <= now:
            del self.entries[key]
            return None
        self.entries.move_to_end(key)
        r = hit[1]
        return Result(r.status, r.canonical, list(r.aliases), list(r.data),
                      max(0, int(hit[0] - now)))

    def put(self, name: str, qtype: int, result: Result, now: float) -> None:
        if self.size <= 0 or result.ttl <= 0 or result.status not in (
                "ok", "nodata", "nxdomain", "cname"):
            return
        key = (_key(name) or b"", qtype)
        self.entries[key] = (now + min(result.ttl, MAX_CACHE_TTL), result)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class Resolution:
    """Resolve a name to the records of some types, as glibc's res_nsearch does: the
    candidate names of the search list in order, the types asked in parallel, CNAME
    chains that end without data asked again at their target, answers cached. Sans-IO:
    ``new_port()`` returns a UDP port bound for the answers (``receive``), and the
    caller sends ``take_datagrams()``, runs ``take_tcp()`` exchanges and calls
    ``on_timer`` at ``next_deadline()`` until ``done``.

    glibc's rules for going on down the search list: NXDOMAIN, no data and SERVFAIL
    try the next candidate, a timeout or an error answer stops. At the end ``failure``
    is ``nodata`` if any candidate existed without data, else ``again`` if any server
    failed, else ``nxdomain``.
    """

    def __init__(self, candidates: list[str], qtypes: list[int],
                 servers: list[tuple[bytes, int]], new_port: Callable[[], int], *,
                 timeout: float = DEFAULT_TIMEOUT, attempts: int = DEFAULT_ATTEMPTS,
                 cache: Cache | None = None) -> None:
        self.candidates = candidates
        self.qtypes = qtypes
        self.servers = servers
        self.new_port = new_port
        self.timeout = timeout
        self.attempts = attempts
        self.cache = cache
        self.index = -1
        self.slots: dict[int, Query | Result] = {}
        self.prefix: dict[int, list[str]] = {}  # aliases before a re-asked CNAME target
        self.hops: dict[int, int] = {}
        self.by_port: dict[int, Query] = {}
        self.got_nodata = self.got_servfail = False
        self.done = False
        self.name = ""  # the candidate that answered
        self.results: dict[int, Result] = {}
        self.failure = ""

    def start(self, now: float) -> None:
        self._next_candidate(now)

    def _next_candidate(self, now: float) -> None:
        self.index += 1
        if self.index >= len(self.candidates):
            self._finish("nodata" if self.got_nodata else
                         "again" if self.got_servfail else "nxdomain")
            return
        name = self.candidates[self.index]
        self.slots = {}
        for qtype in self.qtypes:
            self.prefix[qtype] = []
            self.hops[qtype] = 0
            self._ask(qtype, name, now)
        self._settle(now)

    def _ask(self, qtype: int, name: str, now: float) -> None:
        if self.cache is not None:
            hit = self.cache.get(name, qtype, now)
            if hit is not None:
                self.slots[qtype] = hit
                return
        try:
            q = Query(name, qtype, self.servers, self.new_port(), timeout=self.timeout,
                      attempts=self.attempts)
        except dns.DnsError:
            self.slots[qtype] = Result("nxdomain", name)  # no such name can exist
            return
        self.by_port[q.port] = q
        self.slots[qtype] = q
        q.start(now)

    def _settle(self, now: float) -> None:
        """Collect finished questions; once all are in, decide on this candidate."""
        while True:
            for qtype, slot in list(self.slots.items()):
                if isinstance(slot, Query) and slot.result is not None:
                    if self.cache is not None:
                        self.cache.put(slot.name, qtype, slot.result, now)
                    self.slots[qtype] = slot.result
            chase = [(qt, r) for qt, r in self.slots.items()
                     if isinstance(r, Result) and r.status == "cname"]
            if not chase:
                break
            for qtype, r in chase:
                self.prefix[qtype] += r.aliases
                self.hops[qtype] += len(r.aliases)
                if self.hops[qtype] > MAX_CNAMES:
                    self.slots[qtype] = Result("fail", r.canonical)
                else:
                    self._ask(qtype, r.canonical, now)
        if any(isinstance(s, Query) for s in self.slots.values()):
            return
        results: dict[int, Result] = {}
        for qtype, r in self.slots.items():
            assert isinstance(r, Result)
            results[qtype] = Result(r.status, r.canonical, self.prefix[qtype] + r.aliases,
                                    r.data, r.ttl)
        statuses = {r.status for r in results.values()}
        if "ok" in statuses:
            self.name = self.candidates[self.index]
            self.results = results
            self.done = True
            return
        if "timeout" in statuses:
            self._finish("again")
            return
        if "fail" in statuses:
            self._finish("fail")
            return
        self.got_servfail |= "servfail" in statuses
        self.got_nodata |= "nodata" in statuses
        self._next_candidate(now)

    def _finish(self, failure: str) -> None:
        self.failure = failure
        self.done = True

    # -- what the driving code calls ---------------------------------------------------
    def active(self) -> list[Query]:
        return [s for s in self.slots.values() if isinstance(s, Query)]

    def take_datagrams(self) -> list[tuple[Query, tuple[bytes, int], bytes]]:
        out = []
        for q in self.active():
            for index, payload in q.outbox:
                out.append((q, q.servers[index], payload))
            q.outbox.clear()
        return out

    def take_tcp(self) -> list[tuple[Query, tuple[bytes, int], bytes]]:
        out = []
        for q in self.active():
            if q.tcp is not None and not q.tcp_taken:
                q.tcp_taken = True
                out.append((q, q.servers[q.tcp[0]], q.tcp[2]))
        return out

    def next_deadline(self) -> float | None:
        times = [q.deadline for q in self.active() if q.deadline is not None and q.tcp is None]
        return min(times, default=None)

    def receive(self, port: int, data: bytes, src: tuple[bytes, int], now: float) -> bool:
        q = self.by_port.get(port)
        if q is None or self.done or not q.receive(data, src, now):
            return False
        self._settle(now)
        return True

    def unreachable(self, q: Query, now: float) -> None:
        q.unreachable(now)
        self._settle(now)

    def tcp_answer(self, q: Query, data: bytes | None, now: float) -> None:
        q.tcp_answer(data, now)
        self._settle(now)

    def on_timer(self, now: float) -> None:
        for q in self.active():
            q.on_timer(now)
        self._settle(now)


# -- address helpers ----------------------------------------------------------------------

def inet_aton_exact(text: str) -> bytes | None:
    """An IPv4 address in any form glibc's getaddrinfo takes as numeric (``inet_aton``:
    1 to 4 parts, each decimal, octal with a leading 0 or hex with 0x, the last part
    filling the remaining bytes, nothing after it); None if ``text`` is not one."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = []
    for p in parts:
        if not p or not p.isascii() or not p[0].isdigit():
            return None
        if p[:2] in ("0x", "0X"):
            digits, base, ok = p[2:], 16, "0123456789abcdefABCDEF"
        elif p[0] == "0":
            digits, base, ok = p, 8, "01234567"
        else:
            digits, base, ok = p, 10, "0123456789"
        if not digits or any(c not in ok for c in digits):
            return None  # strtoul stopped early: a character is left over
        values.append(int(digits, base))
    last = values.pop()
    if any(v > 0xFF for v in values) or last > 0xFFFFFFFF >> (8 * len(values)):
        return None
    n = 0
    for v in values:
        n = (n << 8) | v
    return ((n << (8 * (4 - len(values)))) | last).to_bytes(4, "big")


def ntop(packed: bytes) -> str:
    """An address as glibc's inet_ntop writes it (``::ffff:1.2.3.4``, ``::1.2.3.4``)."""
    return _socket.inet_ntop(AF_INET if len(packed) == 4 else AF_INET6, packed)


def _pton6(text: str) -> bytes | None:
    try:
        return _socket.inet_pton(AF_INET6, text)
    except (OSError, ValueError):
        return None


# RFC 6724 2.1 default policy table: (prefix, length, precedence, label), longest first
_POLICY = [(_LOOP6, 128, 50, 0), (_MAPPED, 96, 35, 4), (_ANY6, 96, 1, 3),
           (b"\x20\x01\x00\x00", 32, 5, 5), (b"\x20\x02", 16, 30, 2),
           (b"\x3f\xfe", 16, 1, 12), (b"\xfe\xc0", 10, 1, 11), (b"\xfc", 7, 3, 13),
           (b"", 0, 40, 1)]


def _as6(packed: bytes) -> bytes:
    return _MAPPED + packed if len(packed) == 4 else packed


_POLICY_BITS = [(int.from_bytes(p.ljust(16, b"\0"), "big") >> (128 - n), 128 - n, prec, label)
                for p, n, prec, label in _POLICY]


def _policy(packed: bytes) -> tuple[int, int]:
    """(precedence, label) of an address (IPv4 as IPv4-mapped) in the policy table."""
    a = int.from_bytes(_as6(packed), "big")
    for prefix, shift, prec, label in _POLICY_BITS:
        if a >> shift == prefix:
            return prec, label
    return 40, 1


def _scope(packed: bytes) -> int:
    """RFC 6724 3.1 scope: 2 link-local (loopback too), 5 site-local, 14 global."""
    if len(packed) == 16 and packed[:12] == _MAPPED:
        packed = packed[12:]
    if len(packed) == 4:
        return 2 if packed[0] == 127 or packed[:2] == b"\xa9\xfe" else 14
    if packed[0] == 0xFF:
        return packed[1] & 0x0F
    if packed == _LOOP6 or (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80):
        return 2
    if packed[0] == 0xFE and packed[1] & 0xC0 == 0xC0:
        return 5
    return 14


def _common_prefix(a: bytes, b: bytes) -> int:
    x = int.from_bytes(a, "big") ^ int.from_bytes(b, "big")
    return len(a) * 8 - x.bit_length()


def _services(serv: str | None, socktype: int, proto: int, flags: int
              ) -> list[tuple[int, int, int]]:
    """glibc's gaih_inet service step: (socktype, protocol, port) tuples, or gaierror."""
    num: int | None = None
    if serv is not None:
        # strtoul(serv, 10) must take the whole string; a "negative" value is a name
        s = serv.lstrip(" \t\n\v\f\r")
        body = s[1:] if s[:1] in ("+", "-") else s
        if body.isdigit() and body.isascii():
            mag = int(body)
            if mag >= 1 << 64:
                v = (1 << 64) - 1  # ERANGE: ULONG_MAX
            else:
                v = -mag % (1 << 64) if s[:1] == "-" else mag
            v &= 0xFFFFFFFF  # then stored in an int: negative means "a name"
            if v < 0x80000000:
                num = v
        elif flags & AI_NUMERICSERV:
            raise gaierror(EAI_NONAME)
    chosen = None
    if socktype or proto:
        chosen = next((tp for tp in _TYPEPROTO
                       if (not socktype or socktype == tp[0])
                       and (not proto or tp[2] or proto == tp[1])), None)
        if chosen is None:
            raise gaierror(EAI_SOCKTYPE if socktype else EAI_SERVICE)
    if serv is not None:
        if chosen is not None and chosen[3]:
            raise gaierror(EAI_SERVICE)
        if num is None:
            candidates = [chosen] if chosen is not None else [
                tp for tp in _TYPEPROTO if not tp[3]
                and (not socktype or socktype == tp[0])
                and (not proto or tp[2] or proto == tp[1])]
            out = []
            for tp in candidates:
                try:
                    port = _socket.getservbyname(serv, tp[5])
                except (OSError, UnicodeError, ValueError):
                    continue
                out.append((tp[0], proto if tp[2] else tp[1], port))
            if not out:
                raise gaierror(EAI_SERVICE)
            return out
    port = (num or 0) & 0xFFFF
    if chosen is not None:
        return [(chosen[0], proto if chosen[2] else chosen[1], port)]
    return [(tp[0], tp[1], port) for tp in _TYPEPROTO if tp[4]]


def _host_arg(value: Any, fname: str) -> str:
    """A host argument the way CPython's ``et`` converter with ``idna`` takes it."""
    if isinstance(value, str):
        return value.encode("idna").decode("ascii")
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    raise TypeError(f"{fname}() argument 1 must be str, bytes or bytearray, "
                    f"not {type(value).__name__}")


def _intenum(value: int, enum: Any) -> Any:
    try:
        return enum(value)
    except ValueError:
        return value


@dataclass(slots=True)
class HostEntry:
    """A name's lookup result: canonical name, aliases and (packed) addresses."""

    canonical: str
    aliases: list[str]
    addresses: list[bytes]


# -- the resolver of one stack --------------------------------------------------------------

class Resolver:
    """Name resolution for one stack: its host name, hosts table, resolv.conf settings,
    DNS cache, and the socket module's lookup functions.

    ``timeout`` (seconds a DNS transmission waits), ``attempts`` (rounds over the
    nameservers) and ``ndots`` are resolv.conf's options; ``cache_size`` bounds the DNS
    cache (0 disables it).
    """

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.hostname: str | None = None
        self._nameservers: list[str] = []
        self.search: list[str] = []
        self.hosts: dict[str, list[str]] = {}
        self.timeout = DEFAULT_TIMEOUT
        self.attempts = DEFAULT_ATTEMPTS
        self.ndots = DEFAULT_NDOTS
        self.cache_size = CACHE_SIZE
        self._cache: Cache | None = None
        self.queries_sent = 0  # UDP transmissions
        self.tcp_exchanges = 0

    # -- configuration -----------------------------------------------------------------
    @property
    def nameservers(self) -> list[str]:
        return list(self._nameservers)

    @nameservers.setter
    def nameservers(self, servers: list[str] | str) -> None:
        if isinstance(servers, str):
            servers = [s for s in servers.replace(",", " ").split() if s]
        out = []
        for s in servers:
            try:
                ipaddress.ip_address(str(s).split("%", 1)[0])
            except ValueError:
                raise ValueError(f"nameserver {s!r} is not an IP address") from None
            out.append(str(s))
        self._nameservers = out
        self.flush_cache()

    @property
    def domain(self) -> str | None:
        return self.search[0] if self.search else None

    @domain.setter
    def domain(self, value: str | None) -> None:
        self.search = [value] if value else []

    def flush_cache(self) -> None:
        self._cache = None

    def set_hostname(self, name: str) -> None:
        if not isinstance(name, str) or not name or len(name) > 255:
            raise ValueError(f"bad host name {name!r}")
        self.hostname = name

    def gethostname(self) -> str:
        return self.hostname or self.stack.name

    def fqdn(self) -> str:
        name = self.gethostname()
        if "." not in name.rstrip(".") and self.domain:
            return f"{name}.{self.domain.rstrip('.')}"
        return name.rstrip(".") or name

    def add_host(self, name: str, address: str) -> None:
        """Map ``name`` to ``address`` (one more address if the name has some)."""
        ip = ipaddress.ip_address(address)
        addrs = self.hosts.setdefault(name, [])
        if isinstance(addrs, str):
            addrs = self.hosts[name] = [addrs]
        if str(ip) not in addrs:
            addrs.append(str(ip))

    def resolv_conf(self, text: str | None = None) -> str:
        """Replace the DNS settings with resolv.conf text (``nameserver``, ``search``,
        ``domain``, ``options timeout: attempts: ndots:``), or with a list of addresses
        separated by commas (iothdns_init_strcfg's short form); return the settings as
        resolv.conf text. Unknown keywords are ignored, as glibc does."""
        if text is not None:
            servers: list[str] = []
            search: list[str] = []
            opts = {"timeout": DEFAULT_TIMEOUT, "attempts": DEFAULT_ATTEMPTS,
                    "ndots": DEFAULT_NDOTS}
            words = text.replace(",", " ").split()
            if words and all(_is_address(w) for w in words):
                servers = words
            else:
                for raw in text.splitlines():
                    line = raw.split("#", 1)[0].split(";", 1)[0].split()
                    if not line:
                        continue
                    kw, args = line[0], line[1:]
                    if kw == "nameserver" and args:
                        if not _is_address(args[0]):
                            raise ValueError(f"resolv.conf: {raw.strip()!r}: not an IP address")
                        servers.append(args[0])
                    elif kw in ("search", "domain") and args:
                        search = args if kw == "search" else args[:1]
                    elif kw == "options":
                        for opt in args:
                            name, _, value = opt.partition(":")
                            if name in opts and value.isdigit():
                                lo, hi = {"timeout": (1, 30), "attempts": (1, 5),
                                          "ndots": (0, 15)}[name]
                                opts[name] = min(max(int(value), lo), hi)
            self.nameservers = servers
            self.search = search
            self.timeout = float(opts["timeout"])
            self.attempts = int(opts["attempts"])
            self.ndots = int(opts["ndots"])
        lines = []
        if self.search:
            lines.append("search " + " ".join(self.search))
        lines += [f"nameserver {s}" for s in self._nameservers]
        opts_out = []
        if self.timeout != DEFAULT_TIMEOUT:
            opts_out.append(f"timeout:{self.timeout:g}")
        if self.attempts != DEFAULT_ATTEMPTS:
            opts_out.append(f"attempts:{self.attempts}")
        if self.ndots != DEFAULT_NDOTS:
            opts_out.append(f"ndots:{self.ndots}")
        if opts_out:
            lines.append("options " + " ".join(opts_out))
        return "".join(line + "\n" for line in lines)

    # -- the stack's own addresses --------------------------------------------------------
    def _own_addresses(self, want4: bool, want6: bool) -> list[bytes]:
        out: list[bytes] = []
        for iface in self.stack.interfaces.values():
            if iface.loopback:
                continue
            if want4:
                out += [a for a, _ in iface.v4]
            if want6:
                out += [a for a in iface.v6_usable() if a[:2] != b"\xfe\x80"]
        return out

    def _seen_families(self) -> tuple[bool, bool]:
        """glibc's AI_ADDRCONFIG test: an IPv4 address other than 127.0.0.1, an IPv6
        address other than ::1."""
        v4 = v6 = False
        for iface in self.stack.interfaces.values():
            v4 = v4 or any(a != _LOOP4 for a, _ in iface.v4)
            v6 = v6 or any(a.addr != _LOOP6 for a in iface.v6)
        return v4, v6

    def _own_names(self) -> set[str]:
        host = self.gethostname().rstrip(".").lower()
        fq = self.fqdn().rstrip(".").lower()
        return {host, fq, fq.split(".", 1)[0]}

    # -- forward lookups ----------------------------------------------------------------------
    def lookup(self, name: str, want4: bool = True, want6: bool = True) -> HostEntry:
        """The addresses of ``name`` (not numeric) from the local sources, then DNS.
        Raises LookupFailed."""
        key = name.rstrip(".").lower() if name not in (".", "") else name
        if key in ("localhost", "localhost.localdomain") or key.endswith(".localhost"):
            return HostEntry(name, [], ([_LOOP4] if want4 else []) + ([_LOOP6] if want6 else []))
        for hname, addrs in list(self.hosts.items()):
            if hname.rstrip(".").lower() != key:
                continue
            found = []
            for a in [addrs] if isinstance(addrs, str) else addrs:
                packed = ipaddress.ip_address(a).packed
                if (len(packed) == 4 and want4) or (len(packed) == 16 and want6):
                    found.append(packed)
            if found:
                return HostEntry(hname, [], found)
        if key in self._own_names():
            found = self._own_addresses(want4, want6)
            if not self._own_addresses(True, True):  # only loopback: Debian's 127.0.1.1
                found = [_OWN4] if want4 else []
            if found:
                fq = self.fqdn()
                return HostEntry(fq, [n for n in (self.gethostname(),) if n != fq], found)
        qtypes = ([dns.TYPE_A] if want4 else []) + ([dns.TYPE_AAAA] if want6 else [])
        res = self.resolve(self._candidates(name), qtypes)
        addrs: list[bytes] = []
        canonical, aliases = "", []
        for qtype in qtypes:
            r = res.results.get(qtype)
            if r is None or r.status != "ok":
                continue
            if not canonical:
                canonical, aliases = r.canonical, r.aliases
            addrs += [ipaddress.ip_address(a).packed for a in r.data]
        return HostEntry(canonical, aliases, addrs)

    def _candidates(self, name: str) -> list[str]:
        """res_nsearch's order: as is first when the name has ``ndots`` dots or more,
        else after the search domains; a trailing dot means as is only."""
        if name.endswith("."):
            return [name[:-1]]
        searched = [f"{name}.{d.rstrip('.')}" for d in self.search if d.rstrip(".")]
        if name.count(".") >= self.ndots:
            return [name] + searched
        return searched + [name]

    def resolve(self, candidates: list[str], qtypes: list[int]) -> Resolution:
        """Run a DNS resolution to its end (blocking). Raises LookupFailed."""
        if not self._nameservers:
            raise LookupFailed("nxdomain")  # no nameserver: DNS cannot know the name
        servers = [(ipaddress.ip_address(s.split("%", 1)[0]).packed, dns.PORT)
                   for s in self._nameservers]
        if self.cache_size > 0 and self._cache is None:
            self._cache = Cache(self.cache_size)
        elif self._cache is not None:
            self._cache.size = self.cache_size
        res = Resolution(candidates, qtypes, servers, _no_port, timeout=self.timeout,
                         attempts=self.attempts, cache=self._cache if self.cache_size else None)
        self._run(res)
        if res.failure:
            raise LookupFailed(res.failure)
        return res

    def _run(self, res: Resolution) -> None:
        """Drive ``res`` on the stack: random UDP ports with handlers that feed it, the
        datagrams it wants sent, TCP exchanges, and its timers, in the caller's thread."""
        stack = self.stack
        driver = stack.driver
        if driver is None:
            raise LookupFailed("fail", "no driver runs this stack, so it cannot ask DNS")
        if threading.current_thread() is getattr(driver, "_thread", None):
            raise RuntimeError("a blocking name lookup on the stack's driver thread would "
                               "deadlock; resolve from an application thread")
        wake = threading.Event()
        ports: list[int] = []
        token: Cancel | None = getattr(_cancel_scope, "token", None)
        if token is not None:
            token.check()

        def new_port() -> int:
            for _ in range(64):
                port = 1024 + secrets.randbelow(65536 - 1024)
                if all(p != port for _, p in stack.udp):
                    break
            else:
                raise LookupFailed("again", "no free UDP port")

            def on_datagram(data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
                try:
                    packed = ipaddress.ip_address(src[0]).packed
                except ValueError:
                    return
                if res.receive(port, data, (packed, src[1]), stack.clock()):
                    wake.set()

            stack.udp_bind(port, on_datagram)
            ports.append(port)
            return port

        res.new_port = new_port
        # the driver's lock itself: stack.locked() also re-arms the stack's timers, which
        # only matters after something was sent (_flush does it then)
        lock = driver.lock
        if token is not None:
            token._add(wake.set)
        try:
            with lock:
                res.start(stack.clock())
                self._flush(res)
            while True:
                # the resolution changes on the driver thread too: read it under the lock
                with lock:
                    if res.done:
                        break
                    tcp = res.take_tcp()
                    deadline = res.next_deadline()
                if tcp:
                    for q, server, payload in tcp:
                        answer = self._tcp_exchange(server, payload)
                        with lock:
                            res.tcp_answer(q, answer, stack.clock())
                            self._flush(res)
                    continue
                wait = self.timeout if deadline is None else deadline - stack.clock()
                wake.wait(max(0.0, wait))
                if token is not None:
                    token.check()
                with lock:
                    wake.clear()
                    res.on_timer(stack.clock())
                    self._flush(res)
        finally:
            if token is not None:
                token._discard(wake.set)
            if ports:
                with lock:
                    for port in ports:
                        stack.udp_unbind(port)

    def _flush(self, res: Resolution) -> None:
        """Send what ``res`` wants sent (under the driver's lock)."""
        stack = self.stack
        sent = False
        while True:
            out = res.take_datagrams()
            if not out:
                break
            for q, (addr, port), payload in out:
                self.queries_sent += 1
                sent = True
                try:
                    stack.udp_send(payload, (ntop(addr), port), q.port, now=stack.clock())
                except OSError:
                    res.unreachable(q, stack.clock())
        if sent and stack.driver is not None:
            stack.driver.touch(stack)  # ARP/NDP may have armed a timer

    def _tcp_exchange(self, server: tuple[bytes, int], payload: bytes) -> bytes | None:
        """RFC 1035 4.2.2 / RFC 7766: one query over TCP, with a 2-byte length prefix."""
        import time

        addr, port = server
        family = AF_INET if len(addr) == 4 else AF_INET6
        self.tcp_exchanges += 1
        deadline = time.monotonic() + self.timeout
        sock = self.stack.socket(family, SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((ntop(addr), port))
            sock.sendall(len(payload).to_bytes(2, "big") + payload)
            buf = b""
            need = 2
            while len(buf) < need:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(65537 - len(buf))
                if not chunk:
                    return None
                buf += chunk
                if len(buf) >= 2:
                    need = 2 + int.from_bytes(buf[:2], "big")
            return buf[2:need]
        except OSError:
            return None
        finally:
            sock.close()

    # -- reverse lookups -------------------------------------------------------------------------
    def reverse(self, packed: bytes) -> tuple[str, list[str]]:
        """The name and aliases of an address: the stack's own, loopback, the hosts
        table, then a DNS PTR question. Raises LookupFailed."""
        if len(packed) == 16 and packed[:12] == _MAPPED:
            packed = packed[12:]
        if packed == _OWN4 or packed in self._own_addresses(True, True):
            fq = self.fqdn()
            return fq, [n for n in (self.gethostname(),) if n != fq]
        if packed in (_LOOP4, _LOOP6):
            return "localhost", []
        names = []
        for hname, addrs in list(self.hosts.items()):
            for a in [addrs] if isinstance(addrs, str) else addrs:
                if ipaddress.ip_address(a).packed == packed:
                    names.append(hname)
                    break
        if names:
            return names[0], names[1:]
        res = self.resolve([dns.reverse_name(packed)], [dns.TYPE_PTR])
        names = list(res.results[dns.TYPE_PTR].data)
        return names[0], names[1:]

    # -- the socket module's functions ------------------------------------------------------------
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[tuple]:
        """``socket.getaddrinfo`` on the stack: same arguments, results and errors."""
        if host is None:
            h = None
        elif isinstance(host, str):
            h = host.encode("idna").decode("ascii")
        elif isinstance(host, bytes):
            h = host.decode("latin-1")
        else:
            raise TypeError("getaddrinfo() argument 1 must be string or None")
        if port.__class__ is int:  # PyLong_CheckExact: bool and int subclasses are refused
            if not -(1 << 63) <= port < (1 << 63):
                raise OverflowError("Python int too large to convert to C long")
            serv: str | None = str(port)
        elif isinstance(port, str):
            serv = port
        elif isinstance(port, bytes):
            serv = port.decode("latin-1")
        elif port is None:
            serv = None
        else:
            raise OSError("Int or String expected")
        family, type, proto, flags = (_c_int(family), _c_int(type), _c_int(proto),
                                      _c_int(flags))
        out = []
        for fam, socktype, prot, canon, sa in self._getaddrinfo(h, serv, family, type, proto,
                                                               flags):
            out.append((_intenum(fam, _socket.AddressFamily), _intenum(socktype, _socket.SocketKind),
                        prot, canon, sa))
        return out

    def _getaddrinfo(self, name: str | None, serv: str | None, family: int, socktype: int,
                     proto: int, flags: int) -> list[tuple]:
        """glibc's getaddrinfo with the stack as the only source of names."""
        if name == "*":
            name = None
        if serv == "*":
            serv = None
        if name is None and serv is None:
            raise gaierror(EAI_NONAME)
        if flags & ~_AI_KNOWN or (flags & AI_CANONNAME and name is None):
            raise gaierror(EAI_BADFLAGS)
        if flags & AI_ADDRCONFIG:
            seen4, seen6 = self._seen_families()
            if family == AF_UNSPEC and (seen4 or seen6) and seen4 != seen6:
                family = AF_INET if seen4 else AF_INET6
            elif (family == AF_INET and not seen4) or (family == AF_INET6 and not seen6):
                raise gaierror(EAI_NONAME)
        if family not in (AF_UNSPEC, AF_INET, AF_INET6):
            raise gaierror(EAI_FAMILY)
        services = _services(serv or None, socktype, proto, flags)
        canon = ""
        addrs: list[tuple[bytes, int]] = []  # (packed, scope id)
        if name is None:
            any6, any4 = (_ANY6, _ANY4) if flags & AI_PASSIVE else (_LOOP6, _LOOP4)
            if family in (AF_UNSPEC, AF_INET6):
                addrs.append((any6, 0))
            if family in (AF_UNSPEC, AF_INET):
                addrs.append((any4, 0))
        else:
            if name == "":
                raise gaierror(EAI_NONAME)
            numeric = self._numeric(name, family, flags)
            if numeric is not None:
                addrs = [numeric]
                canon = name
            else:
                if flags & AI_NUMERICHOST:
                    raise gaierror(EAI_NONAME)
                entry = self._lookup_for(name, family, flags)
                canon = entry.canonical
                addrs = [(a, 0) for a in entry.addresses]
        if len(addrs) > 1:
            addrs = self._sort(addrs)
        out = []
        first = True
        for packed, scope in addrs:
            fam = AF_INET if len(packed) == 4 else AF_INET6
            text = ntop(packed)
            for st, pr, p in services:
                sa = (text, p) if fam == AF_INET else (text, p, 0, scope)
                out.append((fam, st, pr, canon if first and flags & AI_CANONNAME else "", sa))
                first = False
        return out

    def _numeric(self, name: str, family: int, flags: int) -> tuple[bytes, int] | None:
        """A numeric host as glibc reads it, fitted to ``family``; None if not numeric."""
        v4 = inet_aton_exact(name)
        if v4 is not None:
            if family in (AF_UNSPEC, AF_INET):
                return v4, 0
            if family == AF_INET6 and flags & AI_V4MAPPED:
                return _MAPPED + v4, 0
            raise gaierror(EAI_ADDRFAMILY)
        addr, pct, scope_text = name.partition("%")
        v6 = _pton6(addr)
        if v6 is None:
            return None
        if family in (AF_UNSPEC, AF_INET6):
            return v6, self._scope_id(v6, scope_text) if pct else 0
        if family == AF_INET and v6[:12] == _MAPPED:
            if pct:
                self._scope_id(v6, scope_text)  # glibc still rejects a bad scope
            return v6[12:], 0
        raise gaierror(EAI_ADDRFAMILY)

    def _scope_id(self, addr: bytes, text: str) -> int:
        """glibc's __inet6_scopeid_pton: an interface of the stack (link-local and
        multicast link/node-local addresses) or a number."""
        if (addr[0] == 0xFE and addr[1] & 0xC0 == 0x80) or (
                addr[0] == 0xFF and addr[1] & 0x0F in (1, 2)):
            for iface in self.stack.interfaces.values():
                if iface.name == text:
                    return iface.index
        if text[:1].isdigit() and text.isdigit() and text.isascii() and int(text) <= 0xFFFFFFFF:
            return int(text)
        raise gaierror(EAI_NONAME)

    def _lookup_for(self, name: str, family: int, flags: int) -> HostEntry:
        """A name lookup for getaddrinfo, with AI_V4MAPPED and AI_ALL."""
        try:
            if family == AF_INET6 and flags & AI_V4MAPPED:
                if flags & AI_ALL:
                    entry = self.lookup(name, True, True)
                else:
                    try:
                        return self.lookup(name, False, True)
                    except LookupFailed as exc:
                        if exc.status not in ("nodata", "nxdomain"):
                            raise
                    entry = self.lookup(name, True, False)
                entry.addresses = [_MAPPED + a if len(a) == 4 else a for a in entry.addresses]
                return entry
            entry = self.lookup(name, family != AF_INET6, family != AF_INET)
        except LookupFailed as exc:
            raise exc.gaierror() from None
        if not entry.addresses:
            raise gaierror(EAI_NODATA)
        return entry

    def _sort(self, addrs: list[tuple[bytes, int]]) -> list[tuple[bytes, int]]:
        """Destination address selection (RFC 6724 6, rules 1, 2, 5, 6, 8 and 9 for
        IPv6): usable destinations first, so families the stack has addresses for
        come first."""
        stack = self.stack

        def source(dst: bytes) -> bytes | None:
            if len(dst) == 16 and dst[:12] == _MAPPED:
                s = source(dst[12:])
                return _MAPPED + s if s is not None else None
            if dst == _ANY4:
                return _LOOP4
            if dst == _ANY6:
                return _LOOP6
            return stack.source4(dst) if len(dst) == 4 else stack._source6(dst)

        driver = stack.driver
        with driver.lock if driver is not None else contextlib.nullcontext():
            sources = [source(a) for a, _ in addrs]

        def rank(i: int) -> tuple:
            dst, src = addrs[i][0], sources[i]
            prec, label = _policy(dst)
            if src is None:
                return (1, 0, 0, -prec, _scope(dst), 0, i)
            return (0, _scope(dst) != _scope(src), _policy(src)[1] != label, -prec,
                    _scope(dst), -_common_prefix(src, dst) if len(dst) == 16 else 0, i)

        return [addrs[i] for i in sorted(range(len(addrs)), key=rank)]

    def _setipaddr(self, name: str, family: int) -> bytes:
        """CPython's setipaddr: ``""`` is the wildcard, ``<broadcast>`` the broadcast
        address, anything else the first getaddrinfo result."""
        if name == "":
            res = self._getaddrinfo(None, "0", family, SOCK_DGRAM, 0, AI_PASSIVE)
            if len(res) > 1:
                raise OSError("wildcard resolved to multiple address")
            return _packed(res[0][4][0])
        if name == "<broadcast>":
            if family not in (AF_INET, AF_UNSPEC):
                raise OSError("address family mismatched")
            return b"\xff\xff\xff\xff"
        return _packed(self._getaddrinfo(name, None, family, 0, 0, 0)[0][4][0])

    def gethostbyname(self, hostname: Any) -> str:
        """``socket.gethostbyname`` on the stack."""
        name = _host_arg(hostname, "gethostbyname")
        return ntop(self._setipaddr(name, AF_INET))

    def gethostbyname_ex(self, hostname: Any) -> tuple[str, list[str], list[str]]:
        """``socket.gethostbyname_ex`` on the stack: (name, aliases, IPv4 addresses)."""
        name = _host_arg(hostname, "gethostbyname_ex")
        self._setipaddr(name, AF_INET)
        if name == "":
            raise herror(NO_RECOVERY)  # glibc's gethostbyname("") after setipaddr accepted it
        # glibc's __nss_hostname_digits_dots: only digits and dots count as an address here
        numeric = inet_aton_exact(name) if not name.strip("0123456789.") else None
        if numeric is not None:
            return name, [], [ntop(numeric)]
        try:
            entry = self.lookup(name, True, False)
        except LookupFailed as exc:
            raise exc.herror() from None
        if not entry.addresses:
            raise herror(NO_DATA)
        return entry.canonical, entry.aliases, [ntop(a) for a in entry.addresses]

    def gethostbyaddr(self, ip_address: Any) -> tuple[str, list[str], list[str]]:
        """``socket.gethostbyaddr`` on the stack: (name, aliases, [address])."""
        name = _host_arg(ip_address, "gethostbyaddr")
        packed = self._setipaddr(name, AF_UNSPEC)
        try:
            host, aliases = self.reverse(packed)
        except LookupFailed as exc:
            raise exc.herror() from None
        return host, aliases, [ntop(packed)]

    def getnameinfo(self, sockaddr: Any, flags: int) -> tuple[str, str]:
        """``socket.getnameinfo`` on the stack: (host, port) for a socket address."""
        flags = _c_int(flags)
        if not isinstance(sockaddr, tuple):
            raise TypeError("getnameinfo() argument 1 must be a tuple")
        if not 2 <= len(sockaddr) <= 4 or not isinstance(sockaddr[0], str):
            raise TypeError("getnameinfo(): illegal sockaddr argument")
        host = sockaddr[0]
        port = _c_int(sockaddr[1])
        flowinfo = _c_uint(sockaddr[2]) if len(sockaddr) > 2 else 0
        scope_id = _c_uint(sockaddr[3]) if len(sockaddr) > 3 else 0
        if flowinfo > 0xFFFFF:
            raise OverflowError("getnameinfo(): flowinfo must be 0-1048575.")
        res = self._getaddrinfo(host, str(port), AF_UNSPEC, SOCK_DGRAM, 0, AI_NUMERICHOST)
        if len(res) > 1:
            raise OSError("sockaddr resolved to multiple addresses")
        fam, _, _, _, sa = res[0]
        if fam == AF_INET and len(sockaddr) != 2:
            raise OSError("IPv4 sockaddr must be 2 tuple")
        packed = _packed(sa[0])
        port = sa[1]
        if flags & ~_NI_KNOWN:
            raise gaierror(EAI_BADFLAGS)
        hostname = None
        if not flags & NI_NUMERICHOST:
            try:
                hostname = self.reverse(packed)[0]
            except LookupFailed as exc:
                if exc.status == "again":
                    raise gaierror(EAI_AGAIN) from None
            if hostname is not None and flags & NI_NOFQDN and self.domain:
                suffix = "." + self.domain.rstrip(".").lower()
                if hostname.lower().endswith(suffix):
                    hostname = hostname[:-len(suffix)]
        if hostname is None:
            if flags & NI_NAMEREQD:
                raise gaierror(EAI_NONAME)
            hostname = ntop(packed)
            if fam == AF_INET6 and scope_id:
                hostname += "%" + self._scope_name(packed, scope_id)
        if flags & NI_NUMERICSERV:
            service = str(port)
        else:
            try:
                service = _socket.getservbyport(port, "udp" if flags & NI_DGRAM else "tcp")
            except OSError:
                service = str(port)
        return hostname, service

    def _scope_name(self, packed: bytes, scope_id: int) -> str:
        if (packed[0] == 0xFE and packed[1] & 0xC0 == 0x80) or (
                packed[0] == 0xFF and packed[1] & 0x0F == 2):
            iface = self.stack.interfaces.get(scope_id)
            if iface is not None:
                return iface.name
        return str(scope_id)

    def getfqdn(self, name: str = "") -> str:
        """``socket.getfqdn`` on the stack (the stdlib's algorithm over the stack's
        gethostname and gethostbyaddr)."""
        name = name.strip()
        if not name or name in ("0.0.0.0", "::"):
            name = self.gethostname()
        try:
            hostname, aliases, _ = self.gethostbyaddr(name)
        except OSError:
            return name
        aliases.insert(0, hostname)
        for alias in aliases:
            if "." in alias:
                return alias
        return hostname


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return False
    return True


def _packed(text: str) -> bytes:
    return ipaddress.ip_address(text.split("%", 1)[0]).packed


def _c_int(value: Any) -> int:
    """An argument for C ``int`` (PyArg ``i``)."""
    import operator

    v = operator.index(value)
    if v > 0x7FFFFFFF:
        raise OverflowError("signed integer is greater than maximum")
    if v < -0x80000000:
        raise OverflowError("signed integer is less than minimum")
    return v


def _c_uint(value: Any) -> int:
    """An argument for C ``unsigned int`` without overflow checking (PyArg ``I``)."""
    import operator

    return operator.index(value) & 0xFFFFFFFF


def _no_port() -> int:
    raise RuntimeError("a Resolution gets its port binder from Resolver._run")
