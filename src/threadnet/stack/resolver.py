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

This module is the blocking adapter, in the socket-API layer. What needs no network
lives in the stack core, in one module per job: the sans-IO DNS client (``Query``,
``Resolution``, ``Cache``: ``stack/dnsclient.py``), RFC 6724 ordering
(``stack/addrsel.py``), the services table (``stack/services.py``), glibc's flags,
error codes and numeric forms (``stack/gai.py``) and the settings
(``ResolverConfig``: ``stack/resolvconf.py``). ``Resolver._run`` drives a
``Resolution`` on the stack: it binds random UDP ports, sends, and waits in the
caller's thread. Resolver state lives only in stacks that use it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import secrets
import socket as _socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from threadnet.stack.addrsel import sort_destinations
from threadnet.stack.dnsclient import Cache, Resolution, _no_port
from threadnet.stack.gai import (
    _AI_KNOWN,
    _ANY4,
    _ANY6,
    _LOOP4,
    _LOOP6,
    _MAPPED,
    _NI_KNOWN,
    _OWN4,
    AF_INET,
    AF_INET6,
    AF_UNSPEC,
    AI_ADDRCONFIG,
    AI_ALL,
    AI_CANONNAME,
    AI_NUMERICHOST,
    AI_PASSIVE,
    AI_V4MAPPED,
    EAI_ADDRFAMILY,
    EAI_AGAIN,
    EAI_BADFLAGS,
    EAI_FAMILY,
    EAI_NODATA,
    EAI_NONAME,
    NI_DGRAM,
    NI_NAMEREQD,
    NI_NOFQDN,
    NI_NUMERICHOST,
    NI_NUMERICSERV,
    NO_DATA,
    NO_RECOVERY,
    SOCK_DGRAM,
    SOCK_STREAM,
    LookupFailed,
    _pton6,
    gaierror,
    herror,
    inet_aton_exact,
    ntop,
)
from threadnet.stack.resolvconf import ResolverConfig
from threadnet.stack.services import service_ports
from threadnet.stack.socket import StackSocket
from threadnet.wire import dns, stream

if TYPE_CHECKING:
    from threadnet.stack.stack import Stack

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

class Resolver(ResolverConfig):
    """Name resolution for one stack: the socket module's lookup functions over its
    settings (``ResolverConfig``): hosts table, own names, then DNS, run by blocking the
    caller's thread.
    """

    def __init__(self, stack: Stack) -> None:
        super().__init__(stack)
        self.queries_sent = 0  # UDP transmissions
        self.tcp_exchanges = 0

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
        runner = stack.runner
        if runner is None:
            raise LookupFailed("fail", "no runner runs this stack, so it cannot ask DNS")
        if threading.current_thread() is getattr(runner, "_thread", None):
            raise RuntimeError("a blocking name lookup on the stack's runner thread would "
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
        # the stack's lock itself: stack.locked() also checks the stack's timers, which
        # only matters after something was sent (_flush does it then)
        lock = stack.lock
        if token is not None:
            token._add(wake.set)
        try:
            with lock:
                res.start(stack.clock())
                self._flush(res)
            while True:
                # the resolution changes on the runner thread too: read it under the lock
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
        """Send what ``res`` wants sent (under the stack's lock)."""
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
        if sent and stack.runner is not None:
            stack.runner.rearm(stack)  # ARP/NDP may have armed a timer (lock held)

    def _tcp_exchange(self, server: tuple[bytes, int], payload: bytes) -> bytes | None:
        """RFC 1035 4.2.2 / RFC 7766: one query over TCP, with a 2-byte length prefix."""
        import time

        addr, port = server
        family = AF_INET if len(addr) == 4 else AF_INET6
        self.tcp_exchanges += 1
        deadline = time.monotonic() + self.timeout
        sock = StackSocket(self.stack, family, SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect((ntop(addr), port))
            # the 2-byte length prefix is vde_plug's stream framing (wire/stream.py)
            sock.sendall(stream.encode(payload))
            records = stream.Decoder(0xFFFF)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                sock.settimeout(left)
                chunk = sock.recv(records.wanted)  # no further than the first message
                if not chunk:
                    return None
                answers = records.feed(chunk)
                if answers:
                    return answers[0]
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
        services = service_ports(serv or None, socktype, proto, flags)
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

        with stack.lock:
            sources = [source(a) for a, _ in addrs]
        return sort_destinations(addrs, sources)

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

