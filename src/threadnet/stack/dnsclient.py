"""The DNS stub resolver's client, sans-IO: ``Query`` asks one question of the nameservers
in turn (as glibc's res_send does), ``Resolution`` walks the search list, asks A and AAAA
in parallel, follows CNAME chains and uses the ``Cache``. Both take ``now`` and hand out
datagrams; the blocking adapter that drives them on a stack is ``Resolver._run``
(``stack/resolver.py``).
"""

from __future__ import annotations

import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threadnet.wire import dns

# resolv.conf defaults and glibc's limits (resolv.h RES_TIMEOUT, RES_DFLRETRY, RES_MAXNDOTS...)
DEFAULT_TIMEOUT = 5.0
DEFAULT_ATTEMPTS = 2
DEFAULT_NDOTS = 1
MAX_CNAMES = 8  # CNAME hops followed for one question, across re-asks
CACHE_SIZE = 128
MAX_CACHE_TTL = 3600


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


def _no_port() -> int:
    raise RuntimeError("a Resolution gets its port binder from Resolver._run")
