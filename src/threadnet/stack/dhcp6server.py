"""A DHCPv6 server (RFC 8415) on one interface of a stack: addresses (IA_NA) from a pool,
with DNS servers and a domain search list (RFC 3646). Config item ``dhcpd6``.

    eth,ip=fd00:1::1/64,dhcpd6=::1000-::1fff,dhcpd6.dns=fd00:1::53,dhcpd6.domain=lan

``dhcpd6[=FIRST-LAST]``: the pool. Addresses written as a suffix (both ends inside
``::/64``, e.g. ``::1000-::1fff``, the default) are taken in the interface's first global
prefix. Options (``dhcpd6.OPTION=VALUE``; ``OPTIONS`` lists them): ``lease`` (valid
lifetime, s, default 3600), ``preferred`` (default: the lease), ``t1``/``t2`` (default 0.5
and 0.8 of ``preferred``, RFC 8415 21.4), ``dns`` and ``domain`` (repeat them for more),
``host=KEY/ADDR`` (a reservation: KEY is a MAC or a DUID in hex), ``leasefile=PATH``,
``preference`` (0-255, RFC 8415 21.8), ``max`` (lease table entries, default 4096),
``offer`` (how long an advertised address is held for its client, s, default 60),
``rapid`` (answer a SOLICIT with rapid commit at once, RFC 8415 21.14).

An agent (``stack/agents.py``): the stack joins ff02::1:2 and gives it port 547. It
answers from its link-local address to the client's (the stack finds the client's MAC by
neighbor discovery). Messages (RFC 8415 18.3, 16 for what each must carry):

* SOLICIT: ADVERTISE an address per IA_NA (at most ``MAX_IAS`` per message), held for
  ``offer`` seconds; REPLY at once with rapid commit when both sides want it.
* REQUEST: bind (the client's hint if it is free and in the pool, its reservation, its
  offer, or a free address); NoAddrsAvail when none; NotOnLink for a hint off the link.
* RENEW/REBIND: extend the binding; an address that is not the client's comes back with
  lifetimes 0. RENEW without a binding: NoBinding. REBIND without one: the address is
  bound again if it is on the link and free (a server restarted without its lease file
  takes its clients back), lifetimes 0 if off the link, else NoBinding.
* RELEASE frees, DECLINE sets the address aside for a lease time (someone else uses it);
  an IA without a binding gets NoBinding.
* CONFIRM: Success when every address is on the link, else NotOnLink; no answer without
  addresses (18.3.3). INFORMATION-REQUEST: the DNS options.

Bounded: the lease table (``stack/dhcp6leases.py``) holds at most ``max`` entries
(offers, bindings, declined addresses). A new client beyond that evicts the oldest offer,
then the oldest declined address; when every entry is a binding it gets NoAddrsAvail. So
a flood of SOLICITs from random DUIDs fills the pool with offers that real clients take
over, and nothing else grows.

The lease file (``leasefile``) holds the server's DUID and the bindings and declined
addresses with their ends in wall-clock time: JSON, rewritten whole (``fsafe``: atomic,
never through a symbolic link), at most every ``SAVE_DELAY`` seconds and when the server
stops. This is the only clock the server reads (``wallclock``), to carry lease ends
across restarts; everything else runs on the stack's time.
"""

from __future__ import annotations

import ipaddress
import json
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from threadnet import fsafe
from threadnet.stack import autoconf
from threadnet.stack.agents import Agent
from threadnet.stack.config import ConfigError, parse_mac
from threadnet.stack.dhcp6leases import BOUND, OFFERED, Lease, LeaseTable
from threadnet.stack.dhcp6leases import address_text as _text
from threadnet.wire import dhcp6 as d

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

OPTIONS = ("lease", "preferred", "t1", "t2", "dns", "domain", "host", "leasefile",
           "preference", "max", "offer", "rapid")
DEFAULT_POOL = "::1000-::1fff"
DEFAULT_LEASE = 3600
DEFAULT_OFFER = 60.0
DEFAULT_MAX = 4096
#: IA_NA served per message; more get NoAddrsAvail (one client cannot take the pool
#: with one SOLICIT)
MAX_IAS = 8
SAVE_DELAY = 0.5
MAX_LEASEFILE = 16 << 20


class Dhcp6Server(Agent):
    """A DHCPv6 server on interface ``ifindex`` (see the module's notes).

    ``first``/``last``: the pool. ``valid``/``preferred``/``t1``/``t2``: seconds.
    ``hosts``: reservations, a DUID (bytes of 7 or more) or a MAC (6 bytes) -> address.
    ``link``: the on-link prefixes (default: the interface's global ones when a message
    comes, else the /64 of the pool). ``duid``: the server's (default: the lease file's,
    else a DUID-LL of the interface's MAC)."""

    kind = "dhcpd6"
    udp_ports = ((6, d.SERVER_PORT),)
    groups6 = (d.ALL_SERVERS,)

    def __init__(self, ifindex: int, first: str, last: str, *, valid: int = DEFAULT_LEASE,
                 preferred: int | None = None, t1: int | None = None, t2: int | None = None,
                 dns: Iterable[str] = (), domains: Iterable[str] = (),
                 hosts: dict[bytes, str] | None = None, leasefile: str | None = None,
                 preference: int = 0, max_leases: int = DEFAULT_MAX,
                 offer: float = DEFAULT_OFFER, rapid_commit: bool = False,
                 link: Iterable[str] = (), duid: bytes | None = None,
                 wallclock: Callable[[], float] = time.time) -> None:
        super().__init__(ifindex)
        lo, hi = int(ipaddress.IPv6Address(first)), int(ipaddress.IPv6Address(last))
        if lo > hi:
            raise ValueError(f"pool {first}-{last}: the first address is after the last")
        self.first, self.last = lo, hi
        preferred = valid if preferred is None else preferred
        if not 0 < preferred <= valid <= d.INFINITY:
            raise ValueError(f"lifetimes: need 0 < preferred ({preferred}) <= lease ({valid})")
        self.valid, self.preferred = valid, preferred
        self.t1 = int(preferred * 0.5) if t1 is None else t1
        self.t2 = int(preferred * 0.8) if t2 is None else t2
        if not 0 <= self.t1 <= self.t2 <= d.INFINITY:
            raise ValueError(f"need t1 ({self.t1}) <= t2 ({self.t2})")
        self.dns = []
        for a in dns:
            try:
                self.dns.append(str(ipaddress.IPv6Address(a)))
            except ValueError:
                raise ValueError(f"DNS server {a!r} is not an IPv6 address") from None
        self.domains = list(domains)
        if self.domains:
            d.encode_domains(self.domains)  # a bad name fails here, not per message
        if not 0 <= preference <= 255:
            raise ValueError(f"preference {preference} is not 0-255")
        self.preference = preference
        if max_leases < 1 or offer <= 0:
            raise ValueError("max and offer must be positive")
        self.offer = float(offer)
        self.rapid_commit = rapid_commit
        self.link = [ipaddress.IPv6Network(n, strict=False) for n in link]
        reservations: dict[bytes, int] = {}
        for owner, address in (hosts or {}).items():
            a = int(ipaddress.IPv6Address(address))
            if a in reservations.values():
                raise ValueError(f"{address} is reserved twice")
            reservations[bytes(owner)] = a
        self.stats: dict[str, int] = {}
        self.table = LeaseTable(lo, hi, hosts=reservations, max_leases=max_leases,
                                offer=self.offer, stats=self.stats)
        self.wallclock = wallclock
        self.leasefile = leasefile
        self.duid = duid
        self._save_at: float | None = None
        self._now = 0.0  # the last time the stack called it (for describe)
        self.leasefile_error: str | None = None
        self._loaded: dict[str, Any] | None = None
        if leasefile is not None:
            self._loaded = self._read_leasefile(leasefile)  # a bad path fails here

    # -- the agent's interface -------------------------------------------------------------
    def start(self, stack: Stack, now: float) -> None:
        self._now = now
        loaded, self._loaded = self._loaded, None
        if self.duid is None and loaded is not None:
            try:
                self.duid = d.parse_duid(str(loaded.get("server_duid", "")))
            except ValueError:
                self.duid = None
        if self.duid is None:
            iface = stack.interfaces.get(self.ifindex)
            self.duid = d.duid_ll(iface.mac if iface is not None else bytes(6))
        if loaded is not None:
            self._restore(loaded, now)

    def stop(self, stack: Stack, now: float) -> None:
        if self._save_at is not None:
            self._save(now)

    def next_deadline(self) -> float | None:
        times = [self._save_at, self.table.next_expiry()]
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, stack: Stack, now: float) -> None:
        self._now = now
        if self.table.expire(now):
            self._dirty(now)
        if self._save_at is not None and now >= self._save_at:
            self._save(now)

    def on_udp(self, stack: Stack, iface: Interface, family: int, src: bytes, sport: int,
               dst: bytes, dport: int, data: bytes, now: float) -> None:
        self._now = now
        try:
            msg = d.parse(data)
        except d.Dhcp6Error:
            self._count("malformed")
            return
        if self.table.expire(now):
            self._dirty(now)
        reply = self.answer(msg, now, self._link_networks(stack, iface), src)
        if reply is None:
            return
        ll = next((a.addr for a in iface.v6 if a.addr[:2] == b"\xfe\x80"
                   and a.state == "preferred"), None)
        if ll is None:
            self._count("no_source")
            return
        stack.send_udp_on(iface, ll, d.SERVER_PORT, src, d.CLIENT_PORT, d.build(reply))
        self._count(f"sent_{reply.name.lower()}")

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """The settings and the table (``lease_list``: lifetimes left at ``now``, default
        the last time the stack called it)."""
        return {"kind": self.kind, "ifindex": self.ifindex,
                "pool": f"{_text(self.first)}-{_text(self.last)}",
                "duid": d.duid_text(self.duid) if self.duid else None,
                "lease": self.valid, "preferred": self.preferred, "t1": self.t1, "t2": self.t2,
                "dns": list(self.dns), "domains": list(self.domains),
                "max": self.table.max_leases, "leasefile": self.leasefile,
                "leasefile_error": self.leasefile_error, "leases": self.lease_list(now),
                "stats": dict(self.stats)}

    # -- the Python API --------------------------------------------------------------------
    def lease_list(self, now: float | None = None) -> list[dict[str, Any]]:
        """The table: address, DUID (hex), IAID, state, and the seconds left of the
        lifetimes at ``now`` (default: the last time the stack called the server)."""
        now = self._now if now is None else now
        return [{"address": _text(x.address), "duid": d.duid_text(x.duid), "iaid": x.iaid,
                 "state": x.state, "valid_lft": max(0.0, x.valid_until - now),
                 "preferred_lft": max(0.0, x.preferred_until - now)}
                for x in self.table.entries()]

    def forget(self, address: str, now: float) -> bool:
        """Drop the entry of ``address`` (an administrator's release): whether there was one."""
        lease = self.table.by_address.get(int(ipaddress.IPv6Address(address)))
        if lease is None:
            return False
        self.table.drop(lease)
        self._dirty(now)
        return True

    # -- answering -------------------------------------------------------------------------
    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def answer(self, msg: d.Message, now: float,
               link: list[ipaddress.IPv6Network] | None = None,
               src: bytes = b"") -> d.Message | None:
        """The ADVERTISE or REPLY to ``msg`` from the client at ``src``, or None when
        the message is to be discarded (RFC 8415 16). ``link``: the on-link prefixes."""
        t = msg.msg_type
        if link is None:
            link = self.link or [self._pool_network()]
        cid, sid = msg.client_id, msg.server_id
        mine = sid is not None and sid == self.duid
        if t in (d.SOLICIT, d.CONFIRM, d.REBIND):
            valid = cid is not None and sid is None
        elif t in (d.REQUEST, d.RENEW, d.RELEASE, d.DECLINE):
            valid = cid is not None and mine
        elif t == d.INFORMATION_REQUEST:
            valid = (sid is None or mine) and not msg.ia_na
        else:
            valid = False
        if not valid:
            self._count("discarded")
            return None
        self._count(f"received_{msg.name.lower()}")
        reply = d.Message(d.REPLY, msg.xid, client_id=cid, server_id=self.duid)
        assert cid is not None or t == d.INFORMATION_REQUEST
        mac = self._client_mac(cid, src) if cid is not None else None
        ias, extra = msg.ia_na[:MAX_IAS], msg.ia_na[MAX_IAS:]
        configure = True
        if t == d.SOLICIT:
            commit = msg.rapid_commit and self.rapid_commit
            if not commit:
                reply.msg_type = d.ADVERTISE
                if self.preference:
                    reply.preference = self.preference
            reply.rapid_commit = commit
            reply.ia_na = [self._assign(cid, ia, mac, now, link, commit)  # type: ignore[arg-type]
                           for ia in ias]
        elif t == d.REQUEST:
            reply.ia_na = [self._assign(cid, ia, mac, now, link, True)  # type: ignore[arg-type]
                           for ia in ias]
        elif t in (d.RENEW, d.REBIND):
            reply.ia_na = [self._extend(cid, ia, mac, now, link, t == d.REBIND)  # type: ignore[arg-type]
                           for ia in ias]
            if t == d.REBIND and not reply.ia_na:
                return None
        elif t in (d.RELEASE, d.DECLINE):
            reply.ia_na = [ia for ia in (self._give_back(cid, ia, now, t == d.DECLINE)  # type: ignore[arg-type]
                                         for ia in ias) if ia is not None]
            reply.status = d.Status(d.SUCCESS, "released" if t == d.RELEASE else "declined")
            configure = False
        elif t == d.CONFIRM:
            addresses = [int(ipaddress.IPv6Address(a.address)) for ia in msg.ia_na
                         for a in ia.addresses]
            if not addresses:
                return None  # 18.3.3: nothing to confirm
            on_link = all(self._on_link(a, link) for a in addresses)
            reply.status = d.Status(d.SUCCESS, "all on link") if on_link else \
                d.Status(d.NOT_ON_LINK, "not on this link")
        if t != d.INFORMATION_REQUEST:
            reply.ia_na += [d.IaNa(ia.iaid, status=d.Status(d.NO_ADDRS_AVAIL, "too many IAs"))
                            for ia in extra if t in (d.SOLICIT, d.REQUEST)]
        if configure:
            if self.dns:
                reply.dns_servers = list(self.dns)
            if self.domains:
                reply.domains = list(self.domains)
        return reply

    def _pool_network(self) -> ipaddress.IPv6Network:
        return ipaddress.IPv6Network((self.first, 64), strict=False)

    def _link_networks(self, stack: Stack, iface: Interface) -> list[ipaddress.IPv6Network]:
        if self.link:
            return self.link
        nets = [ipaddress.IPv6Network((a.addr, a.plen), strict=False) for a in iface.v6
                if a.addr[:2] != b"\xfe\x80" and a.plen < 128]
        return nets or [self._pool_network()]

    @staticmethod
    def _on_link(address: int, link: list[ipaddress.IPv6Network]) -> bool:
        a = ipaddress.IPv6Address(address)
        return any(a in net for net in link)

    @staticmethod
    def _client_mac(duid: bytes, src: bytes) -> bytes | None:
        """The client's MAC: from its DUID-LL or DUID-LLT, else from a modified EUI-64
        link-local source address (RFC 4291 appendix A)."""
        mac = d.duid_mac(duid)
        if mac is None and len(src) == 16 and src[:2] == b"\xfe\x80" and src[11:13] == b"\xff\xfe":
            mac = bytes([src[8] ^ 0x02]) + src[9:11] + src[13:16]
        return mac

    def _ia_with(self, ia: d.IaNa, lease: Lease, now: float) -> d.IaNa:
        """``ia`` answered with ``lease``'s address and the configured times."""
        return d.IaNa(ia.iaid, self.t1, self.t2,
                      [d.IaAddress(_text(lease.address), self.preferred, self.valid)])

    def _assign(self, duid: bytes, ia: d.IaNa, mac: bytes | None, now: float,
                link: list[ipaddress.IPv6Network], commit: bool) -> d.IaNa:
        """SOLICIT (an offer) and REQUEST (a binding)."""
        hints = [int(ipaddress.IPv6Address(a.address)) for a in ia.addresses]
        if commit and any(not self._on_link(h, link) for h in hints):
            return d.IaNa(ia.iaid, status=d.Status(d.NOT_ON_LINK, "address not on this link"))
        lease = self.table.take(duid, ia.iaid, mac, hints, now)
        if lease is None:
            self._count("no_addrs_avail")
            return d.IaNa(ia.iaid, status=d.Status(d.NO_ADDRS_AVAIL, "no addresses available"))
        if commit:
            self._bind(lease, now)
        elif lease.state == OFFERED:
            self.table.hold(lease, now + self.offer, now + self.offer)
        return self._ia_with(ia, lease, now)

    def _extend(self, duid: bytes, ia: d.IaNa, mac: bytes | None, now: float,
                link: list[ipaddress.IPv6Network], rebind: bool) -> d.IaNa:
        """RENEW and REBIND (RFC 8415 18.3.4, 18.3.5)."""
        lease = self.table.leases.get((duid, ia.iaid))
        asked = [int(ipaddress.IPv6Address(a.address)) for a in ia.addresses]
        if lease is None or lease.state != BOUND:
            if rebind:
                off = [a for a in asked if not self._on_link(a, link)]
                if off:
                    return d.IaNa(ia.iaid, addresses=[d.IaAddress(_text(a), 0, 0) for a in off])
                taken = self.table.take(duid, ia.iaid, mac, asked[:1], now, hint_only=True)
                if taken is not None:
                    self._bind(taken, now)
                    return self._ia_with(ia, taken, now)
            self._count("no_binding")
            return d.IaNa(ia.iaid, status=d.Status(d.NO_BINDING, "no binding for this IA"))
        self._bind(lease, now)
        out = self._ia_with(ia, lease, now)
        # addresses the client has that are not its binding: lifetimes 0 (18.3.4)
        out.addresses += [d.IaAddress(_text(a), 0, 0) for a in asked if a != lease.address]
        return out

    def _give_back(self, duid: bytes, ia: d.IaNa, now: float, decline: bool) -> d.IaNa | None:
        """RELEASE and DECLINE (RFC 8415 18.3.7, 18.3.8): None when done."""
        lease = self.table.leases.get((duid, ia.iaid))
        asked = {int(ipaddress.IPv6Address(a.address)) for a in ia.addresses}
        if lease is None or lease.state != BOUND or lease.address not in asked:
            return d.IaNa(ia.iaid, status=d.Status(d.NO_BINDING, "no binding for this IA"))
        if decline:
            self._count("declined")
            self.table.decline(lease, now + self.valid)
        else:
            self._count("released")
            self.table.drop(lease)
        self._dirty(now)
        return None

    def _bind(self, lease: Lease, now: float) -> None:
        self.table.bind(lease, now + self.valid, now + self.preferred)
        self._dirty(now)

    # -- the lease file --------------------------------------------------------------------
    def _dirty(self, now: float) -> None:
        if self.leasefile is not None and self._save_at is None:
            self._save_at = now + SAVE_DELAY

    def _read_leasefile(self, path: str) -> dict[str, Any] | None:
        raw = fsafe.read_file(path, MAX_LEASEFILE)  # an unsafe path raises here
        if raw is None:
            return None
        try:
            loaded = json.loads(raw)
            if not isinstance(loaded, dict):
                raise ValueError("not a JSON object")
        except ValueError as exc:
            self.leasefile_error = f"{path}: unreadable ({exc}); starting empty"
            return None
        return loaded

    def _restore(self, loaded: dict[str, Any], now: float) -> None:
        """The bindings and declined addresses of a lease file that have not ended."""
        bad = self.table.restore(loaded.get("leases"), now, self.wallclock())
        if bad:
            self.leasefile_error = f"{self.leasefile}: {bad} bad entries skipped"

    def _save(self, now: float) -> None:
        self._save_at = None
        if self.leasefile is None:
            return
        data = json.dumps({"server_duid": d.duid_text(self.duid or b""),
                           "leases": self.table.snapshot(now, self.wallclock())}, indent=0)
        try:
            fsafe.write_file_atomic(self.leasefile, data.encode() + b"\n")
            self.leasefile_error = None
        except OSError as exc:
            self._count("leasefile_errors")
            self.leasefile_error = f"{self.leasefile}: not written: {exc}"


# -- configuration -----------------------------------------------------------------------

def _seconds(values: list[str], name: str, default: int | None) -> int | None:
    if not values:
        return default
    try:
        n = d.INFINITY if values[-1] in ("infinite", "forever") else int(values[-1])
    except ValueError:
        raise ConfigError(f"dhcpd6.{name}={values[-1]}: not a number of seconds") from None
    if not 0 <= n <= d.INFINITY:
        raise ConfigError(f"dhcpd6.{name}={n}: out of range")
    return n


def _global_prefix(iface: Interface) -> ipaddress.IPv6Network | None:
    for a in iface.v6:
        if a.addr[:2] != b"\xfe\x80" and a.plen < 128:
            return ipaddress.IPv6Network((a.addr, a.plen), strict=False)
    return None


def _address(text: str, prefix: ipaddress.IPv6Network | None, what: str) -> str:
    """An address, or a suffix in ``::/64`` taken in ``prefix``."""
    try:
        a = int(ipaddress.IPv6Address(text))
    except ValueError:
        raise ConfigError(f"dhcpd6: bad address {text!r} in {what}") from None
    if a >> 64:
        return text
    if prefix is None:
        raise ConfigError(f"dhcpd6: {text} in {what} is a suffix, and the interface has no "
                          "global IPv6 prefix to put it in: give whole addresses")
    if a >= prefix.num_addresses:
        raise ConfigError(f"dhcpd6: suffix {text} in {what} does not fit in {prefix}")
    return str(prefix.network_address + a)


def _host_key(text: str) -> bytes:
    try:
        return parse_mac(text)
    except ValueError:
        pass
    try:
        return d.parse_duid(text)
    except ValueError:
        raise ConfigError(f"dhcpd6.host={text}/...: not a MAC or a DUID") from None


def server_from_options(stack: Stack, iface: Interface,
                        options: dict[str, list[str]]) -> Dhcp6Server:
    """The server the ``dhcpd6`` items ask for (``autoconf.SERVERS["dhcpd6"]``);
    ConfigError naming the bad item."""
    autoconf.option(options, "", "dhcpd6", OPTIONS)

    def opt(name: str) -> list[str]:
        return autoconf.option(options, name, "dhcpd6", OPTIONS)

    prefix = _global_prefix(iface)
    pool = [v for v in opt("") if v]
    if len(pool) > 1:
        raise ConfigError("dhcpd6: one pool per interface")
    first, sep, last = (pool[0] if pool else DEFAULT_POOL).partition("-")
    if not sep:
        raise ConfigError(f"dhcpd6={pool[0]}: a pool is FIRST-LAST")
    first, last = _address(first, prefix, "the pool"), _address(last, prefix, "the pool")
    hosts: dict[bytes, str] = {}
    for value in opt("host"):
        key, slash, address = value.rpartition("/")
        if not slash or not key:
            raise ConfigError(f"dhcpd6.host={value}: a reservation is MAC/ADDRESS or DUID/ADDRESS")
        hosts[_host_key(key)] = _address(address, prefix, f"dhcpd6.host={value}")
    leasefile = (opt("leasefile") or [None])[-1]
    try:
        return Dhcp6Server(
            iface.index, first, last, valid=_seconds(opt("lease"), "lease", DEFAULT_LEASE),  # type: ignore[arg-type]
            preferred=_seconds(opt("preferred"), "preferred", None),
            t1=_seconds(opt("t1"), "t1", None), t2=_seconds(opt("t2"), "t2", None),
            dns=opt("dns"), domains=opt("domain"), hosts=hosts, leasefile=leasefile or None,
            preference=_seconds(opt("preference"), "preference", 0),  # type: ignore[arg-type]
            max_leases=_seconds(opt("max"), "max", DEFAULT_MAX),  # type: ignore[arg-type]
            offer=_seconds(opt("offer"), "offer", int(DEFAULT_OFFER)),  # type: ignore[arg-type]
            rapid_commit=bool(opt("rapid")))
    except (ValueError, d.Dhcp6Error) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"dhcpd6: {exc}") from None


def serve(stack: Stack, iface: int | str | None = None, pool: str | None = None, *,
          now: float | None = None, **options: Any) -> Dhcp6Server:
    """Start a DHCPv6 server on ``iface`` (default: the stack's first interface with a
    link), replacing one running there, and return it. ``pool`` is ``"FIRST-LAST"``;
    ``options`` are the config items' (``lease=600, dns=["fd00::53"], domain=["lan"],
    host={"02:00:00:00:00:05": "::50"}, leasefile="/var/lib/x.leases"``)::

        >>> server = serve(stack, "eth0", "::1000-::1fff", dns=["fd00:1::53"])
        >>> server.lease_list()
    """
    with stack.locked():
        if iface is None:
            chosen = next(i for i in stack.interfaces.values() if not i.loopback)
        else:
            chosen = stack.interface(iface)
        items: dict[str, list[str]] = {"": [pool] if pool else []}
        for name, value in options.items():
            if name == "host" and isinstance(value, dict):
                items[name] = [f"{k}/{v}" for k, v in value.items()]
            elif isinstance(value, (list, tuple)):
                items[name] = [str(v) for v in value]
            elif isinstance(value, bool):
                items[name] = [""] if value else []
            else:
                items[name] = [str(value)]
        server = server_from_options(stack, chosen, items)
        for old in stack.find_agents(Dhcp6Server.kind, chosen.index):
            stack.remove_agent(old, now)
        stack.add_agent(server, now)
        return server
