"""A DHCPv4 server on a stack (RFC 2131 4.3, options of RFC 2132): an agent
(``stack/agents.py``) on one interface, behind the configuration item ``dhcpd``.

    dhcpd[=FIRST-LAST]       the pool (default: .100-.199 of the server's /24, or every
                             host of a smaller subnet; never the server's own address)
    dhcpd.lease=SECONDS      the lease time (default 3600; "infinite")
    dhcpd.router=ADDR|none   routers to give (repeatable; default: the server's address)
    dhcpd.dns=ADDR|none      DNS servers to give (repeatable; default: the stack's IPv4
                             nameservers when it replies)
    dhcpd.domain=NAME        the domain name (option 15)
    dhcpd.mtu=N              the interface MTU (option 26)
    dhcpd.host=MAC/ADDR      a reservation (repeatable): that client always gets ADDR,
                             nobody else does (ADDR may be outside the pool)
    dhcpd.leasefile=PATH     the lease file, read at start and kept up to date (also dhcpd.leases=)

From Python: ``serve(stack, "eth0", pool="10.0.0.100-10.0.0.150", ...)``, or
``stack.add_agent(Dhcp4Server(...))`` after ``prepare(stack)``.

Addresses (4.3.1): a client gets its reservation, else the address it had (leases are
keyed by client identifier, else by MAC, 4.2), else the one it asks for if free, else
one never handed out, else the one whose lease ended longest ago, else the oldest
unanswered offer's. An offer is held for ``offer_hold`` (10 s). The lease table is
bounded: it holds at most one record per address of the pool and reservations, and at
most ``max_leases`` (65536), so a flood of DISCOVERs from random MACs only takes the
pool, and offers to the flood are evicted oldest first for the next client.

The server is authoritative for its subnet: a REQUEST for an address it cannot give (on
another network, in use by another client, outside its pool) gets a NAK, a REQUEST for
a free address of its pool is granted even without a record (the lease file was lost).
A DECLINE marks the address unusable for ``decline_hold`` (600 s); a RELEASE ends the
lease (the client keeps its claim to the address until someone else needs it). INFORM
gets the options without a lease. Replies follow 4.1: a NAK is broadcast; to a client
with ``ciaddr``, unicast to it; with the broadcast flag, broadcast; else unicast to
``yiaddr`` at ``chaddr``'s MAC. Relayed messages (``giaddr`` set) are ignored: the
server serves its own link only.

The lease table's records and the lease file are in ``stack/dhcp4leases.py``.
"""

from __future__ import annotations

import ipaddress
import os
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError
from threadnet.stack.agents import Agent
from threadnet.stack.config import ConfigError
from threadnet.stack.dhcp4leases import Lease, LeaseFile, StoredLease, _hostname, client_key
from threadnet.stack.ip import BROADCAST_MAC, broadcast4, ntop, same_net
from threadnet.wire import dhcp4
from threadnet.wire.dhcp4 import DhcpMessage
from threadnet.wire.ethernet import mac_from_str, mac_to_str

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

OFFERED, BOUND, FREE, DECLINED = "offered", "bound", "free", "declined"
OFFER_HOLD = 10.0
DECLINE_HOLD = 600.0
DEFAULT_LEASE = 3600
MAX_LEASES = 65536
#: renewals are written to the lease file at most this often
SAVE_INTERVAL = 1.0
BROADCAST4 = b"\xff" * 4
ANY4 = bytes(4)
#: the options of the ``dhcpd`` item
#: ``leasefile`` as dhcpd6 names it; ``leases`` is its older name here
OPTIONS = ("lease", "router", "dns", "domain", "mtu", "host", "leasefile", "leases")


def _ip4(text: str, what: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text.strip()).packed
    except ValueError:
        raise ConfigError(f"dhcpd {what}: {text!r} is not an IPv4 address") from None


def parse_pool(text: str) -> tuple[bytes, bytes]:
    """``FIRST-LAST`` (two IPv4 addresses, FIRST <= LAST)."""
    first, dash, last = text.partition("-")
    if not dash:
        raise ConfigError(f"dhcpd pool {text!r}: expected FIRST-LAST, e.g. "
                          "10.0.0.100-10.0.0.199")
    a, b = _ip4(first, "pool"), _ip4(last, "pool")
    if a > b:
        raise ConfigError(f"dhcpd pool {text!r}: {first} is after {last}")
    return a, b


def parse_host(text: str) -> tuple[bytes, bytes]:
    """A reservation ``MAC/ADDR``."""
    mac, slash, addr = text.rpartition("/")
    if not slash:
        raise ConfigError(f"dhcpd host {text!r}: expected MAC/ADDR, e.g. "
                          "02:00:00:00:00:05/10.0.0.50")
    try:
        m = mac_from_str(mac)
    except ValueError as exc:
        raise ConfigError(f"dhcpd host {text!r}: {exc}") from None
    return m, _ip4(addr, "host")


class Dhcp4Server(Agent):
    """A DHCPv4 server on interface ``ifindex`` (see the module's notes).

    ``pool``: (first, last) addresses, packed or text; None: derived from the
    interface's address. ``lease``: seconds (``dhcp4.INFINITE`` for never).
    ``routers``/``dns``: addresses to give; None: the defaults (the server's address;
    the stack's nameservers); [] gives none. ``hosts``: MAC -> address reservations.
    ``leases``: a LeaseFile (or a path). Call ``prepare(stack)`` before ``add_agent`` to
    check all this against the interface (``serve`` does)."""

    kind = "dhcpd"
    udp_ports = ((4, dhcp4.SERVER_PORT),)

    def __init__(self, ifindex: int, *, pool: tuple[bytes | str, bytes | str] | None = None,
                 lease: int = DEFAULT_LEASE, routers: list[bytes | str] | None = None,
                 dns: list[bytes | str] | None = None, domain: str | None = None,
                 mtu: int | None = None, hosts: dict[bytes | str, bytes | str] | None = None,
                 leases: LeaseFile | str | os.PathLike[str] | None = None,
                 offer_hold: float = OFFER_HOLD, decline_hold: float = DECLINE_HOLD,
                 max_leases: int = MAX_LEASES) -> None:
        super().__init__(ifindex)
        self.pool_arg = None if pool is None else (_packed(pool[0]), _packed(pool[1]))
        self.lease_time = _check_lease(lease)
        self.routers = None if routers is None else [_packed(r) for r in routers]
        self.dns = None if dns is None else [_packed(d) for d in dns]
        self.domain = _check_domain(domain)
        self.mtu = _check_mtu(mtu)
        self.hosts: dict[bytes, bytes] = {}
        for mac, addr in (hosts or {}).items():
            self.hosts[mac_from_str(mac) if isinstance(mac, str) else bytes(mac)] = _packed(addr)
        self.store = LeaseFile(leases) if isinstance(leases, (str, os.PathLike)) else leases
        self.offer_hold = offer_hold
        self.decline_hold = decline_hold
        self.max_leases = max_leases
        # set by prepare: the server's address and subnet, the pool as ints
        self.address = ANY4
        self.plen = 0
        self.first = self.last = 0
        self._cursor = 0
        self._prepared = False
        self._stored: list[StoredLease] = []
        # the lease table: address -> record, client -> address, offers and quarantined
        # addresses in the order they end
        self.leases: dict[bytes, Lease] = {}
        self.by_client: dict[bytes, bytes] = {}
        self.offers: OrderedDict[bytes, None] = OrderedDict()
        self.declined: OrderedDict[bytes, None] = OrderedDict()
        self._dirty = False
        self._last_save = float("-inf")
        self._save_at: float | None = None
        #: counters: messages by type, replies, NAKs, ignored and bad input
        self.stats: dict[str, int] = {}

    # -- set-up ----------------------------------------------------------------------
    def prepare(self, stack: Stack) -> None:
        """Find the server's address on its interface and the pool, check the
        reservations against them and read the lease file. ConfigError (or OSError for
        the lease file) when something does not fit; nothing is started."""
        self._locate(stack)
        self._stored = self.store.load() if self.store is not None else []
        self._prepared = True

    def _locate(self, stack: Stack) -> None:
        iface = stack.interface(self.ifindex)
        mine = list(iface.v4) + [(a.addr, a.plen) for a in iface.acd4.values()
                                 if a.state != "conflict"]
        if not mine:
            raise ConfigError(f"dhcpd on {iface.name}: the interface has no IPv4 address "
                              "(give it one with ip=)")
        if self.pool_arg is not None:
            first, last = self.pool_arg
            found = [(a, p) for a, p in mine if same_net(a, first, p) and same_net(a, last, p)]
            if not found:
                raise ConfigError(f"dhcpd pool {ntop(first)}-{ntop(last)} is not within a "
                                  f"subnet of {iface.name} "
                                  f"({', '.join(f'{ntop(a)}/{p}' for a, p in mine)})")
            address, plen = found[0]
        else:
            address, plen = mine[0]
            first, last = default_pool(address, plen)
        net = int.from_bytes(address) & _mask(plen)
        top = net | (~_mask(plen) & 0xFFFFFFFF)
        lo, hi = int.from_bytes(first), int.from_bytes(last)
        if plen <= 30:  # the network and broadcast addresses are nobody's
            lo, hi = max(lo, net + 1), min(hi, top - 1)
        if lo > hi:
            raise ConfigError(f"dhcpd pool {ntop(first)}-{ntop(last)} has no host address")
        for mac, addr in self.hosts.items():
            n = int.from_bytes(addr)
            if not same_net(addr, address, plen) or addr == address or (
                    plen <= 30 and n in (net, top)):
                raise ConfigError(f"dhcpd host {mac_to_str(mac)}/{ntop(addr)}: not a host "
                                  f"address of {ntop(address)}/{plen}")
        if (address, plen, lo, hi) != (self.address, self.plen, self.first, self.last):
            self.address, self.plen, self.first, self.last = address, plen, lo, hi
            self._cursor = lo

    def start(self, stack: Stack, now: float) -> None:
        if not self._prepared:
            self.prepare(stack)
        reserved = {a: m for m, a in self.hosts.items()}
        for s in self._stored:
            if len(self.leases) >= self.max_leases:
                break
            owner = reserved.get(s.addr)
            if (owner not in (None, s.mac) or s.addr == self.address
                    or not (self._in_pool(s.addr) or owner == s.mac) or s.addr in self.leases
                    or s.key in self.by_client):
                continue
            expires = float("inf") if s.remaining is None else now + s.remaining
            self.leases[s.addr] = Lease(s.addr, s.key, s.mac, BOUND, expires, s.hostname)
            self.by_client[s.key] = s.addr
        self._stored = []

    def stop(self, stack: Stack, now: float) -> None:
        if self._dirty:
            self._save(now, urgent=True)

    def next_deadline(self) -> float | None:
        return self._save_at

    def on_timer(self, stack: Stack, now: float) -> None:
        if self._save_at is not None and now >= self._save_at:
            self._save_at = None
            if self._dirty:
                self._save(now, urgent=True)

    # -- options, from the console ----------------------------------------------------
    def set_option(self, stack: Stack, name: str, values: list[str]) -> None:
        """Change an option of the running server: ``pool`` (FIRST-LAST) or one of the
        ``dhcpd.NAME`` items but ``leases`` (``host`` adds reservations). It applies to
        the next replies; leases given stay. ConfigError for a bad one, which changes
        nothing."""
        if name not in ("pool", *OPTIONS) or name in ("leases", "leasefile"):
            raise ConfigError(f"dhcpd option {name!r} cannot be set on a running server "
                              f"(known: pool, {', '.join(o for o in OPTIONS if o not in ('leases', 'leasefile'))})")
        parsed = _parse_options({"" if name == "pool" else name: values})
        if name in ("pool", "host"):
            old = (self.pool_arg, dict(self.hosts))
            if name == "pool":
                if "pool" not in parsed:
                    raise ConfigError("dhcpd pool: give FIRST-LAST")
                self.pool_arg = parsed["pool"]
            else:
                self.hosts.update(parsed["hosts"])
            try:
                self._locate(stack)
            except BaseException:
                self.pool_arg, self.hosts = old
                raise
            return
        key = {"lease": "lease_time", "router": "routers"}.get(name, name)
        setattr(self, key, parsed[key])

    # -- input -----------------------------------------------------------------------
    def on_udp(self, stack: Stack, iface: Interface, family: int, src: bytes, sport: int,
               dst: bytes, dport: int, data: bytes, now: float) -> None:
        if sport != dhcp4.CLIENT_PORT:
            return
        if dst not in (BROADCAST4, self.address, broadcast4(self.address, self.plen)):
            # the agent hears datagrams to any address (for clients' sake): a renewal
            # unicast to another server is that server's
            self._count("not_for_us")
            return
        try:
            msg = dhcp4.parse(data)
        except FrameError:
            self._count("bad")
            return
        kind = msg.message_type
        if msg.op != dhcp4.BOOTREQUEST or kind is None or msg.htype != dhcp4.HTYPE_ETHER \
                or len(msg.chaddr) != 6 or msg.chaddr[0] & 1 or msg.chaddr == iface.mac:
            self._count("ignored")
            return
        if msg.giaddr != ANY4:
            self._count("relayed")  # relays are not supported: this link's clients only
            return
        self._count(dhcp4.TYPE_NAMES.get(kind, "other").lower())
        self._tidy(now)
        if kind == dhcp4.DISCOVER:
            self._discover(stack, iface, msg, now)
        elif kind == dhcp4.REQUEST:
            self._request(stack, iface, msg, now)
        elif kind == dhcp4.DECLINE:
            self._decline(msg, now)
        elif kind == dhcp4.RELEASE:
            self._release(msg, now)
        elif kind == dhcp4.INFORM:
            self._inform(stack, iface, msg, now)

    def _discover(self, stack: Stack, iface: Interface, msg: DhcpMessage, now: float) -> None:
        key = client_key(msg)
        addr = self._choose(key, msg.chaddr, msg.requested_ip, now)
        if addr is None:
            self._count("exhausted")
            return  # nothing to offer: stay silent (RFC 2131 4.3.1)
        rec = self.leases.get(addr)
        if not (rec is not None and rec.key == key and rec.state == BOUND
                and rec.expires > now):
            self._assign(addr, key, msg.chaddr, OFFERED, now + self.offer_hold,
                         _hostname(msg.host_name), now)
        self._reply(stack, iface, dhcp4.OFFER, msg, addr, now)

    def _request(self, stack: Stack, iface: Interface, msg: DhcpMessage, now: float) -> None:
        key = client_key(msg)
        server, requested = msg.server_id, msg.requested_ip
        if server is not None:
            # SELECTING (4.3.2): the client chose a server; if not us, our offer goes
            if server != self.address:
                addr = self.by_client.get(key)
                rec = self.leases.get(addr) if addr is not None else None
                if rec is not None and rec.state == OFFERED:
                    self._forget(rec)
                self._count("other_server")
                return
            addr = requested if requested is not None else msg.ciaddr
        elif requested is not None:
            addr = requested  # INIT-REBOOT
        elif msg.ciaddr != ANY4:
            addr = msg.ciaddr  # RENEWING (unicast) or REBINDING (broadcast)
        else:
            self._count("ignored")
            return
        if not self._grantable(addr, key, msg.chaddr, now):
            self._reply(stack, iface, dhcp4.NAK, msg, ANY4, now)
            return
        old = self.leases.get(addr)
        changed = old is None or old.state != BOUND or old.key != key
        lease = float("inf") if self.lease_time == dhcp4.INFINITE else now + self.lease_time
        self._assign(addr, key, msg.chaddr, BOUND, lease,
                     _hostname(msg.host_name) or (old.hostname if old is not None else None),
                     now)
        # RFC 2131 4.3.2: the binding is committed before the ACK goes
        self._save(now, urgent=changed)
        self._reply(stack, iface, dhcp4.ACK, msg, addr, now)

    def _decline(self, msg: DhcpMessage, now: float) -> None:
        """4.3.3: the client found the address in use; keep it from everyone a while."""
        key, addr = client_key(msg), msg.requested_ip
        rec = self.leases.get(addr) if addr is not None else None
        if rec is None or rec.key != key or msg.server_id not in (None, self.address):
            self._count("ignored")
            return
        if self.by_client.get(key) == addr:
            del self.by_client[key]
        self.offers.pop(addr, None)
        rec.state, rec.expires, rec.key = DECLINED, now + self.decline_hold, b""
        self.declined[addr] = None
        self._save(now, urgent=True)

    def _release(self, msg: DhcpMessage, now: float) -> None:
        """4.3.4: the lease ends now; the address stays the client's until needed."""
        key, addr = client_key(msg), msg.ciaddr
        rec = self.leases.get(addr)
        if rec is None or rec.key != key or rec.state != BOUND:
            self._count("ignored")
            return
        rec.state, rec.expires = FREE, now
        self._save(now, urgent=True)

    def _inform(self, stack: Stack, iface: Interface, msg: DhcpMessage, now: float) -> None:
        if msg.ciaddr == ANY4:
            self._count("ignored")
            return
        self._reply(stack, iface, dhcp4.ACK, msg, ANY4, now, inform=True)

    # -- the lease table ---------------------------------------------------------------
    def _in_pool(self, addr: bytes) -> bool:
        return self.first <= int.from_bytes(addr) <= self.last

    def _active(self, rec: Lease, now: float) -> bool:
        """Held: an offer or a quarantine not over, a lease not ended."""
        return rec.state != FREE and rec.expires > now

    def _reserved_for(self, addr: bytes) -> bytes | None:
        for mac, a in self.hosts.items():
            if a == addr:
                return mac
        return None

    def _grantable(self, addr: bytes, key: bytes, mac: bytes, now: float) -> bool:
        if addr == self.address or not same_net(addr, self.address, self.plen):
            return False
        owner = self._reserved_for(addr)
        if owner is not None and owner != mac:
            return False
        if owner is None and (not self._in_pool(addr) or self.hosts.get(mac) not in (None, addr)):
            return False
        rec = self.leases.get(addr)
        if rec is None:
            return len(self.leases) < self.max_leases or self._make_room(now, key)
        if rec.state == DECLINED and rec.expires > now:
            return False
        return rec.key == key or not self._active(rec, now)

    def _choose(self, key: bytes, mac: bytes, requested: bytes | None,
                now: float) -> bytes | None:
        """The address to offer (4.3.1), or None."""
        reserved = self.hosts.get(mac)
        if reserved is not None:
            rec = self.leases.get(reserved)
            if rec is None or rec.key == key or not self._active(rec, now):
                return reserved if rec is not None or self._room(now, key) else None
            return None
        addr = self.by_client.get(key)
        if addr is not None and self._grantable(addr, key, mac, now):
            return addr
        if requested is not None and self._grantable(requested, key, mac, now):
            return requested
        if not self._room(now, key):
            return None
        # one never handed out, from the cursor on (pigeonhole: among len(leases) +
        # len(hosts) + 2 addresses one is free, if the pool has one)
        size = self.last - self.first + 1
        reserved_addrs = set(self.hosts.values())
        for _ in range(min(size, len(self.leases) + len(self.hosts) + 2)):
            a = self._cursor
            self._cursor = self.first if a >= self.last else a + 1
            packed = a.to_bytes(4)
            if packed not in self.leases and packed != self.address \
                    and packed not in reserved_addrs:
                return packed
        # the lease that ended longest ago (expired or released)
        best: Lease | None = None
        for rec in self.leases.values():
            if not self._active(rec, now) and rec.state != DECLINED and self._in_pool(rec.addr) \
                    and rec.addr not in reserved_addrs and (best is None or rec.expires < best.expires):
                best = rec
        if best is not None:
            return best.addr
        # the oldest offer to another client (a flood's), evicted for this one
        for addr in self.offers:
            if self.leases[addr].key != key:
                self._forget(self.leases[addr])
                return addr
        return None

    def _room(self, now: float, key: bytes) -> bool:
        return len(self.leases) < self.max_leases or self._make_room(now, key)

    def _make_room(self, now: float, key: bytes) -> bool:
        """The table is full (``max_leases``): drop a record that ended, else the oldest
        offer; False when every record is a live lease."""
        for rec in self.leases.values():
            if not self._active(rec, now):
                self._forget(rec)
                return True
        for addr in self.offers:
            if self.leases[addr].key != key:
                self._forget(self.leases[addr])
                return True
        return False

    def _assign(self, addr: bytes, key: bytes, mac: bytes, state: str, expires: float,
                hostname: str | None, now: float) -> None:
        """Give ``addr`` to the client ``key``: a client has one address here, so its
        other record goes (an offer is forgotten, a lease ends now)."""
        other = self.by_client.get(key)
        if other is not None and other != addr:
            rec = self.leases.get(other)
            if rec is not None and rec.state == BOUND:
                rec.state, rec.expires, rec.key = FREE, min(rec.expires, now), b""
                del self.by_client[key]
            elif rec is not None:
                self._forget(rec)
        rec = self.leases.get(addr)
        if rec is not None and rec.key != key and self.by_client.get(rec.key) == addr:
            del self.by_client[rec.key]
        self.offers.pop(addr, None)
        self.declined.pop(addr, None)
        self.leases[addr] = Lease(addr, key, mac, state, expires, hostname)
        self.by_client[key] = addr
        if state == OFFERED:
            self.offers[addr] = None

    def _forget(self, rec: Lease) -> None:
        self.leases.pop(rec.addr, None)
        self.offers.pop(rec.addr, None)
        self.declined.pop(rec.addr, None)
        if self.by_client.get(rec.key) == rec.addr:
            del self.by_client[rec.key]

    def _tidy(self, now: float) -> None:
        """Offers and quarantines that ended go (they end in the order they began)."""
        for queue in (self.offers, self.declined):
            while queue:
                addr = next(iter(queue))
                rec = self.leases.get(addr)
                if rec is not None and rec.expires > now:
                    break
                queue.popitem(last=False)
                if rec is not None:
                    self._forget(rec)

    # -- replies -----------------------------------------------------------------------
    def _reply(self, stack: Stack, iface: Interface, kind: int, req: DhcpMessage,
               yiaddr: bytes, now: float, *, inform: bool = False) -> None:
        opts: dict[int, bytes] = {dhcp4.OPT_MESSAGE_TYPE: bytes([kind]),
                                  dhcp4.OPT_SERVER_ID: self.address}
        if kind != dhcp4.NAK:
            if not inform:
                rec = self.leases.get(yiaddr)
                if self.lease_time == dhcp4.INFINITE:
                    opts[dhcp4.OPT_LEASE_TIME] = dhcp4.u32(dhcp4.INFINITE)
                else:
                    left = self.lease_time
                    if rec is not None and rec.state == BOUND and kind == dhcp4.OFFER:
                        left = max(1, int(min(rec.expires - now, self.lease_time)))
                    opts[dhcp4.OPT_LEASE_TIME] = dhcp4.u32(left)
                    opts[dhcp4.OPT_T1] = dhcp4.u32(left // 2)
                    opts[dhcp4.OPT_T2] = dhcp4.u32(left * 7 // 8)
            opts[dhcp4.OPT_SUBNET_MASK] = dhcp4.mask_of(self.plen)
            bcast = broadcast4(self.address, self.plen)
            if bcast:
                opts[dhcp4.OPT_BROADCAST] = bcast
            routers = [self.address] if self.routers is None else self.routers
            if routers:
                opts[dhcp4.OPT_ROUTER] = b"".join(routers)
            dns = self.dns
            if dns is None:
                dns = [ipaddress.IPv4Address(s).packed for s in stack.nameservers
                       if _is_v4(s)]
            if dns:
                opts[dhcp4.OPT_DNS] = b"".join(dns[:63])
            if self.domain:
                opts[dhcp4.OPT_DOMAIN_NAME] = self.domain.encode()
            if self.mtu is not None:
                opts[dhcp4.OPT_MTU] = dhcp4.u16(self.mtu)
        if req.client_id is not None:
            opts[dhcp4.OPT_CLIENT_ID] = req.client_id  # RFC 6842
        out = DhcpMessage(op=dhcp4.BOOTREPLY, xid=req.xid, chaddr=req.chaddr,
                          htype=req.htype, flags=req.flags, giaddr=req.giaddr,
                          ciaddr=req.ciaddr if kind == dhcp4.ACK else ANY4,
                          yiaddr=yiaddr, options=opts)
        data = dhcp4.to_bytes(out)
        # RFC 2131 4.1: where the reply goes
        if kind == dhcp4.NAK or (req.ciaddr == ANY4 and req.flags & dhcp4.FLAG_BROADCAST):
            dst, mac = BROADCAST4, BROADCAST_MAC
        elif req.ciaddr != ANY4:
            dst, mac = req.ciaddr, req.chaddr
        else:
            dst, mac = yiaddr, req.chaddr
        stack.send_udp_on(iface, self.address, dhcp4.SERVER_PORT, dst, dhcp4.CLIENT_PORT,
                          data, mac)
        self._count(f"sent_{dhcp4.TYPE_NAMES[kind].lower()}")

    # -- the lease file --------------------------------------------------------------------
    def _save(self, now: float, *, urgent: bool) -> None:
        if self.store is None:
            return
        if not urgent and now - self._last_save < SAVE_INTERVAL:
            self._dirty = True
            if self._save_at is None:
                self._save_at = self._last_save + SAVE_INTERVAL
            return
        stored = [StoredLease(r.addr, r.mac, r.key, r.hostname,
                              None if r.expires == float("inf") else r.expires - now)
                  for r in self.leases.values() if r.state == BOUND and r.expires > now]
        try:
            self.store.save(stored)
        except OSError:
            self._count("lease_file_errors")
            self._dirty = True
            self._save_at = now + SAVE_INTERVAL
            return
        self._dirty = False
        self._last_save = now
        self._save_at = None

    # -- what the console shows -----------------------------------------------------------
    def table(self, now: float) -> list[dict[str, Any]]:
        """The lease table: one plain dict per record, by address."""
        out = []
        for addr in sorted(self.leases):
            rec = self.leases[addr]
            state = rec.state if self._active(rec, now) or rec.state == FREE else (
                "expired" if rec.state == BOUND else rec.state)
            out.append({"address": ntop(addr), "mac": mac_to_str(rec.mac), "state": state,
                        "hostname": rec.hostname,
                        "expires": None if rec.expires == float("inf") else rec.expires,
                        "remaining": None if rec.expires == float("inf")
                        else max(0.0, rec.expires - now)})
        return out

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(address=f"{ntop(self.address)}/{self.plen}",
                 pool=f"{ntop(self.first.to_bytes(4))}-{ntop(self.last.to_bytes(4))}",
                 lease=None if self.lease_time == dhcp4.INFINITE else self.lease_time,
                 routers=None if self.routers is None else [ntop(r) for r in self.routers],
                 dns=None if self.dns is None else [ntop(r) for r in self.dns],
                 domain=self.domain, mtu=self.mtu,
                 hosts={mac_to_str(m): ntop(a) for m, a in self.hosts.items()},
                 leases_file=None if self.store is None else self.store.path,
                 records=len(self.leases), offers=len(self.offers),
                 bound=sum(1 for r in self.leases.values() if r.state == BOUND),
                 declined=len(self.declined), stats=dict(self.stats))
        return d

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


def _mask(plen: int) -> int:
    return (0xFFFFFFFF << (32 - plen)) & 0xFFFFFFFF


def _packed(value: bytes | str) -> bytes:
    if isinstance(value, str):
        return ipaddress.IPv4Address(value).packed
    if len(value) != 4:
        raise ValueError(f"not an IPv4 address: {value!r}")
    return bytes(value)


def _is_v4(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True


def _check_lease(lease: int) -> int:
    if not isinstance(lease, int) or not 1 <= lease <= dhcp4.INFINITE:
        raise ConfigError(f"dhcpd lease {lease!r}: seconds, 1 or more (or infinite)")
    return lease


def _check_domain(domain: str | None) -> str | None:
    if domain is not None and (_hostname(domain) is None or len(domain) > 255):
        raise ConfigError(f"dhcpd domain {domain!r} is not a domain name")
    return domain


def _check_mtu(mtu: int | None) -> int | None:
    if mtu is not None and not 68 <= mtu <= 65535:
        raise ConfigError(f"dhcpd mtu {mtu}: 68..65535")
    return mtu


def default_pool(addr: bytes, plen: int) -> tuple[bytes, bytes]:
    """.100-.199 of the /24 ``addr`` is in, when the subnet is a /24 or larger; else
    every host address of the subnet."""
    a = int.from_bytes(addr)
    if plen <= 24:
        base = a & 0xFFFFFF00
        return (base + 100).to_bytes(4), (base + 199).to_bytes(4)
    net = a & _mask(plen)
    top = net | (~_mask(plen) & 0xFFFFFFFF)
    if plen >= 31:
        return net.to_bytes(4), top.to_bytes(4)
    return (net + 1).to_bytes(4), (top - 1).to_bytes(4)


def _parse_options(options: dict[str, list[str]]) -> dict[str, Any]:
    """The ``dhcpd.NAME=VALUE`` items as Dhcp4Server's arguments (ConfigError naming a
    bad one)."""
    out: dict[str, Any] = {}
    for name, values in options.items():
        if name == "":
            if len(values) > 1:
                raise ConfigError("dhcpd= given twice: one FIRST-LAST pool")
            if values:
                out["pool"] = parse_pool(values[0])
        elif name == "lease":
            v = values[-1].strip().lower()
            if v in ("infinite", "forever"):
                out["lease_time"] = dhcp4.INFINITE
            else:
                try:
                    out["lease_time"] = _check_lease(int(v))
                except ValueError:
                    raise ConfigError(f"dhcpd.lease={values[-1]!r}: seconds or infinite"
                                      ) from None
        elif name in ("router", "dns"):
            addrs = [] if any(v.strip().lower() in ("", "none") for v in values) else \
                [_ip4(v, name) for v in values]
            out["routers" if name == "router" else "dns"] = addrs
        elif name == "domain":
            out["domain"] = _check_domain(values[-1].strip())
        elif name == "mtu":
            try:
                out["mtu"] = _check_mtu(int(values[-1]))
            except ValueError:
                raise ConfigError(f"dhcpd.mtu={values[-1]!r}: a number 68..65535") from None
        elif name == "host":
            out["hosts"] = dict(parse_host(v) for v in values)
        elif name in ("leases", "leasefile"):
            if not values[-1]:
                raise ConfigError(f"dhcpd.{name}= needs a path")
            out["leases"] = values[-1]
    return out


def from_options(stack: Stack, iface: Interface, options: dict[str, list[str]]) -> Dhcp4Server:
    """The ``dhcpd`` item's server, checked and ready to start (see the module's notes)."""
    from threadnet.stack import autoconf

    autoconf.option(options, "", "dhcpd", OPTIONS)
    args = _parse_options(options)
    lease_time = args.pop("lease_time", DEFAULT_LEASE)
    server = Dhcp4Server(iface.index, lease=lease_time, **args)
    server.prepare(stack)
    return server


def serve(stack: Stack, iface: int | str = "eth0", *, pool: str | None = None,
          lease: int = DEFAULT_LEASE, routers: list[str] | None = None,
          dns: list[str] | None = None, domain: str | None = None, mtu: int | None = None,
          hosts: dict[str, str] | None = None, leases: str | os.PathLike[str] | None = None,
          now: float | None = None) -> Dhcp4Server:
    """Start a DHCPv4 server on ``stack``'s interface ``iface`` (a running server there
    is replaced): ``pool`` "FIRST-LAST", ``hosts`` {MAC: address} reservations,
    ``leases`` the lease file; see Dhcp4Server. Returns the server."""
    with stack.locked():
        index = stack.interface(iface).index
        server = Dhcp4Server(index, pool=None if pool is None else parse_pool(pool),
                             lease=lease, routers=routers, dns=dns, domain=domain, mtu=mtu,
                             hosts=hosts, leases=leases)
        server.prepare(stack)
        for old in stack.find_agents(Dhcp4Server.kind, index):
            stack.remove_agent(old, now)
        stack.add_agent(server, now)
        return server
