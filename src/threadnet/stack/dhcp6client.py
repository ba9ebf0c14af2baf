"""The DHCPv6 client (RFC 8415), stateful: one IA_NA on one interface, with the DNS
servers and the domain search list of RFC 3646. Config word ``dhcp6`` (``dhcpv6``,
``auto``, ``auto6``).

An agent (``stack/agents.py``): sans-IO, driven by the stack with the time. It speaks
from the interface's link-local address, once duplicate address detection has made that
address preferred, to All_DHCP_Relay_Agents_and_Servers (ff02::1:2); the servers answer
on port 546, which the stack gives it before any socket.

    init -> soliciting -> requesting -> bound -> renewing (T1) -> rebinding (T2)
                ^              |          |  ^        |                |
                +--- failed ---+          |  +-- REPLY+----------------+
                ^                         v
                +------- expired / NoAddrsAvail / NotOnLink / declined (DAD failed)

* SOLICIT waits a random 0..1 s first (SOL_MAX_DELAY, 18.2.1) and is retransmitted on
  the schedule of section 15 (IRT 1 s, MRT SOL_MAX_RT 3600 s, or what a server's
  SOL_MAX_RT option says). Advertises are collected until the first retransmission
  timeout; then the one with the highest preference wins (the first received among
  equals). One with preference 255, or any after that first timeout, is taken at once
  (18.2.1). Advertises that offer no address for our IA are ignored.
* REQUEST (IRT 1 s, MRT 30 s, 10 tries) asks the chosen server for the addresses it
  offered. Each address of the REPLY becomes a /128 without a prefix route (as Linux
  does: the on-link prefix comes from router advertisements), ``origin="dhcp"``, with the
  valid and preferred lifetimes given; the stack deprecates and removes it on time.
* T1 and T2 come from the IA; when a server sends 0 the client takes 0.5 and 0.8 of the
  shortest preferred lifetime (RFC 8415 21.4). An IA with T1 > T2 is discarded. At T1,
  RENEW to the server (multicast: this client ignores the Server Unicast option) until
  T2; at T2, REBIND to any server until the lease ends. A REPLY with NoBinding makes it
  REQUEST again; addresses with a valid lifetime of 0 go at once.
* An address that fails DAD is removed and DECLINEd (IRT 1 s, 4 tries, 18.2.8); when it
  was the only one, the client solicits again.
* ``stop`` (``remove_agent``, ``Stack.close``) sends one RELEASE and removes the
  addresses. (RFC 8415 18.2.7 retransmits a RELEASE up to 4 times; an agent that is
  gone cannot, so a lost RELEASE leaves the binding to expire at the server.)
* DNS servers (option 23) and the domain list (24) go to ``stack.resolver.learn`` under
  ``dhcp6:IFACE`` and are forgotten when the lease ends.

After a REQUEST that failed, a NoAddrsAvail or a lost lease, the next SOLICIT waits 1,
2, 4... up to 300 s, so a server that advertises and then refuses is not asked in a
tight loop. Not done: CONFIRM after a link change, INFORMATION-REQUEST, RECONFIGURE,
rapid commit, IA_TA and IA_PD, relays.
"""

from __future__ import annotations

import ipaddress
import random
from typing import TYPE_CHECKING, Any

from threadnet.stack.agents import DADFAILED, EXPIRED, INFINITY, Agent
from threadnet.wire import dhcp6 as d

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

# RFC 8415 7.6: transmission and retransmission parameters, in seconds
SOL_MAX_DELAY = 1.0
SOL_TIMEOUT = 1.0
SOL_MAX_RT = 3600.0
REQ_TIMEOUT = 1.0
REQ_MAX_RT = 30.0
REQ_MAX_RC = 10
REN_TIMEOUT = 10.0
REN_MAX_RT = 600.0
REB_TIMEOUT = 10.0
REB_MAX_RT = 600.0
DEC_TIMEOUT = 1.0
DEC_MAX_RC = 4
#: RFC 8415 21.24: the range of a server's SOL_MAX_RT a client accepts
SOL_MAX_RT_RANGE = (60, 86400)
#: the longest wait before soliciting again after a failure
MAX_BACKOFF = 300.0
#: how often to look again for a link-local address on an interface that has none
LINK_POLL = 1.0
#: what the client asks for (RFC 8415 18.2.1: SOL_MAX_RT in every ORO of a SOLICIT)
ORO = [d.OPT_DNS_SERVERS, d.OPT_DOMAIN_LIST, d.OPT_SOL_MAX_RT]

INIT, SOLICITING, REQUESTING, BOUND = "init", "soliciting", "requesting", "bound"
RENEWING, REBINDING, DECLINING, STOPPED = "renewing", "rebinding", "declining", "stopped"


class _Exchange:
    """One message and its retransmissions (RFC 8415 15): IRT, MRT, MRC, MRD."""

    __slots__ = ("msg_type", "xid", "irt", "mrt", "mrc", "mrd_end", "rt", "count", "started",
                 "tx_at")

    def __init__(self, msg_type: int, xid: int, at: float, irt: float, mrt: float,
                 mrc: int = 0, mrd_end: float | None = None) -> None:
        self.msg_type, self.xid = msg_type, xid
        self.irt, self.mrt, self.mrc, self.mrd_end = irt, mrt, mrc, mrd_end
        self.rt = 0.0
        self.count = 0
        self.started = at  # the first transmission, for the elapsed time option
        self.tx_at = at

    def next_timeout(self, rng: random.Random, now: float) -> None:
        """RT after a transmission (RFC 8415 15); the first RT of a SOLICIT is strictly
        more than IRT (18.2.1)."""
        if not self.count:
            rand = rng.uniform(-0.1, 0.1)
            if self.msg_type == d.SOLICIT:
                rand = abs(rand) or 0.1
            self.rt = self.irt + rand * self.irt
        else:
            self.rt = 2 * self.rt + rng.uniform(-0.1, 0.1) * self.rt
        if self.mrt and self.rt > self.mrt:
            self.rt = self.mrt + rng.uniform(-0.1, 0.1) * self.mrt
        self.count += 1
        self.tx_at = now + self.rt
        if self.mrd_end is not None and self.tx_at > self.mrd_end:
            self.tx_at = self.mrd_end

    def over(self, now: float) -> bool:
        return bool((self.mrc and self.count >= self.mrc)
                    or (self.mrd_end is not None and now >= self.mrd_end))


class Dhcp6Client(Agent):
    """A DHCPv6 client for one IA_NA on interface ``ifindex`` (see the module's notes).

    ``mac``: the interface's MAC, for the DUID-LL (the default ``duid``) and the IAID
    (its last 4 bytes, as dhclient). ``rng``: the source of the random delays and
    transaction ids (a seeded one replays a test)."""

    kind = "dhcp6"
    udp_ports = ((6, d.CLIENT_PORT),)

    def __init__(self, ifindex: int, mac: bytes, *, duid: bytes | None = None,
                 iaid: int | None = None, rng: random.Random | None = None) -> None:
        super().__init__(ifindex)
        self.duid = duid if duid is not None else d.duid_ll(mac)
        self.iaid = int.from_bytes(mac[2:6], "big") if iaid is None else iaid
        self.rng = rng or random.Random()
        self.state = INIT
        self.exchange: _Exchange | None = None
        self.sol_max_rt = SOL_MAX_RT
        #: Advertises heard during the first RT of a SOLICIT: (-preference, order, message)
        self.adverts: list[tuple[int, int, d.Message]] = []
        self.server: bytes | None = None  # the DUID of the server of the lease (or asked)
        self.offered: list[str] = []  # the addresses a REQUEST asks for
        #: the lease's addresses: text -> (valid until, preferred until)
        self.addresses: dict[str, tuple[float, float]] = {}
        self.declining: list[str] = []
        self.t1 = self.t2 = 0.0  # the lease's T1 and T2, seconds
        self.renew_at: float | None = None
        self.rebind_at: float | None = None
        self.expires_at: float | None = None
        self.dns: list[str] = []
        self.domains: list[str] = []
        self.failures = 0
        self.wait_until: float | None = None  # INIT: when to look at the link-local again
        self.stats: dict[str, int] = {}
        self._now = 0.0  # the last time the stack called it (for describe)

    # -- the agent's interface -------------------------------------------------------------
    def start(self, stack: Stack, now: float) -> None:
        self._now = now
        self.state = INIT
        self._wait_for_link_local(stack, now)

    def stop(self, stack: Stack, now: float) -> None:
        self._now = now
        if self.addresses and self.server is not None:
            self._send(stack, now, self._message(d.RELEASE, self.rng.getrandbits(24),
                                                 server=True), None)
        self._drop_lease(stack, now)
        self.exchange = None
        self.wait_until = None
        self.state = STOPPED

    def next_deadline(self) -> float | None:
        times = [self.wait_until, self.exchange.tx_at if self.exchange else None]
        if self.state == BOUND:
            times += [self.renew_at, self.rebind_at, self.expires_at]
        elif self.state == RENEWING:
            times += [self.rebind_at, self.expires_at]
        elif self.state in (REBINDING, DECLINING):
            times.append(self.expires_at)
        return min((t for t in times if t is not None), default=None)

    def on_timer(self, stack: Stack, now: float) -> None:
        self._now = now
        if self.state == INIT:
            if self.wait_until is not None and now >= self.wait_until:
                self._wait_for_link_local(stack, now)
            return
        if self.state in (BOUND, RENEWING, REBINDING, DECLINING):
            if self.expires_at is not None and now >= self.expires_at:
                self._count("expired")
                self._lease_lost(stack, now)
                return
            if self.state == BOUND and self.renew_at is not None and now >= self.renew_at \
                    and (self.rebind_at is None or now < self.rebind_at):
                self.state = RENEWING
                self._begin(d.RENEW, now, REN_TIMEOUT, REN_MAX_RT, mrd_end=self.rebind_at)
            elif self.state in (BOUND, RENEWING) and self.rebind_at is not None \
                    and now >= self.rebind_at:
                self.state = REBINDING
                self._begin(d.REBIND, now, REB_TIMEOUT, REB_MAX_RT, mrd_end=self.expires_at)
        ex = self.exchange
        if ex is None or now < ex.tx_at:
            return
        if self.state == SOLICITING and ex.count == 1 and self.adverts:
            self._request_best(stack, now)  # the end of the first RT: choose (18.2.1)
            return
        if ex.count and ex.over(now):
            self._exchange_failed(stack, now)
            return
        self._transmit(stack, now)

    def configured(self, stack: Stack) -> bool:
        """A lease is bound (renewing and rebinding ones are still in use)."""
        return self.state in (BOUND, RENEWING, REBINDING)

    def on_udp(self, stack: Stack, iface: Interface, family: int, src: bytes, sport: int,
               dst: bytes, dport: int, data: bytes, now: float) -> None:
        self._now = now
        try:
            msg = d.parse(data)
        except d.Dhcp6Error:
            self._count("malformed")
            return
        ex = self.exchange
        # RFC 8415 16.3, 16.10: an answer to our transaction, for us, from a server
        if ex is None or msg.xid != ex.xid or msg.client_id != self.duid \
                or msg.server_id is None:
            self._count("ignored")
            return
        if msg.msg_type == d.ADVERTISE and self.state == SOLICITING:
            self._advertise(stack, msg, now)
        elif msg.msg_type == d.REPLY:
            self._reply(stack, msg, now)
        else:
            self._count("ignored")

    def on_address(self, stack: Stack, iface: Interface, addr: bytes, event: str,
                   now: float) -> None:
        self._now = now
        text = str(ipaddress.IPv6Address(addr)) if len(addr) == 16 else ""
        if text not in self.addresses:
            return
        if event == EXPIRED:
            del self.addresses[text]
            if not self.addresses:
                self._count("expired")
                self._lease_lost(stack, now)
        elif event == DADFAILED:
            # RFC 8415 18.2.8: not ours to use; tell the server
            self._count("declined")
            del self.addresses[text]
            self._addr_del(stack, text)
            self.declining.append(text)
            self.state = DECLINING
            self._begin(d.DECLINE, now, DEC_TIMEOUT, 0.0, mrc=DEC_MAX_RC)

    def describe(self, now: float | None = None) -> dict[str, Any]:
        """State, DUIDs, the lease: addresses with their lifetimes left, T1 and T2 and the
        seconds until them (``renew_in``, ``rebind_in``, ``expires_in``), DNS. Seconds
        are counted from ``now`` (default: the last time the stack called it); None is
        forever, or never."""
        now = self._now if now is None else now

        def left(until: float | None) -> float | None:
            return None if until is None or until == INFINITY else max(0.0, until - now)

        return {"kind": self.kind, "ifindex": self.ifindex, "state": self.state,
                "duid": d.duid_text(self.duid), "iaid": self.iaid,
                "server": d.duid_text(self.server) if self.server else None,
                "addresses": [{"address": a, "valid_lft": left(v), "preferred_lft": left(p)}
                              for a, (v, p) in self.addresses.items()],
                "t1": None if self.t1 == INFINITY else self.t1,
                "t2": None if self.t2 == INFINITY else self.t2,
                "renew_in": left(self.renew_at), "rebind_in": left(self.rebind_at),
                "expires_in": left(self.expires_at),
                "dns": list(self.dns), "domains": list(self.domains),
                "stats": dict(self.stats)}

    # -- exchanges -------------------------------------------------------------------------
    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1

    def _wait_for_link_local(self, stack: Stack, now: float) -> None:
        """Solicit once the link-local address is preferred (DAD done); until then wait
        for the end of its DAD, or look again every LINK_POLL."""
        iface = stack.interfaces.get(self.ifindex)
        lls = [a for a in (iface.v6 if iface is not None else ())
               if a.addr[:2] == b"\xfe\x80"]
        if any(a.state == "preferred" for a in lls):
            self.wait_until = None
            self._solicit(now, SOL_MAX_DELAY)
            return
        dad = [a.dad_deadline for a in lls if a.state == "tentative" and a.dad_deadline > now]
        self.wait_until = min(dad) if dad else now + LINK_POLL

    def _solicit(self, now: float, max_delay: float) -> None:
        self.state = SOLICITING
        self.adverts = []
        self.server = None
        self.offered = []
        self._begin(d.SOLICIT, now + self.rng.uniform(0.0, max_delay), SOL_TIMEOUT,
                    self.sol_max_rt)

    def _solicit_later(self, now: float) -> None:
        """Solicit again after 1, 2, 4... MAX_BACKOFF seconds (a failure in a row)."""
        self.failures += 1
        self._solicit(now + min(2.0 ** (self.failures - 1), MAX_BACKOFF), 1.0)

    def _begin(self, msg_type: int, at: float, irt: float, mrt: float, *, mrc: int = 0,
               mrd_end: float | None = None) -> None:
        self.exchange = _Exchange(msg_type, self.rng.getrandbits(24), at, irt, mrt, mrc,
                                  mrd_end)

    def _transmit(self, stack: Stack, now: float) -> None:
        ex = self.exchange
        assert ex is not None
        t = ex.msg_type
        msg = self._message(t, ex.xid, server=t in (d.REQUEST, d.RENEW, d.DECLINE))
        if t == d.SOLICIT:
            msg.ia_na = [d.IaNa(self.iaid)]
        elif t == d.REQUEST:
            msg.ia_na = [d.IaNa(self.iaid, addresses=[d.IaAddress(a) for a in self.offered])]
        elif t == d.DECLINE:
            msg.ia_na = [d.IaNa(self.iaid, addresses=[d.IaAddress(a) for a in self.declining])]
        msg.elapsed = min(int((now - ex.started) * 100), 0xFFFF) if ex.count else 0
        self._send(stack, now, msg, ex)

    def _message(self, msg_type: int, xid: int, *, server: bool) -> d.Message:
        """A message with our DUID, the server's (``server``), our IA with the lease's
        addresses and the option request list (for those that carry them)."""
        msg = d.Message(msg_type, xid, client_id=self.duid,
                        server_id=self.server if server else None)
        if msg_type in (d.SOLICIT, d.REQUEST, d.RENEW, d.REBIND):
            msg.oro = list(ORO)
        if msg_type in (d.RENEW, d.REBIND, d.RELEASE):
            # RFC 8415 18.2.4: T1, T2 and the lifetimes are 0 in what a client sends
            msg.ia_na = [d.IaNa(self.iaid, addresses=[d.IaAddress(a) for a in self.addresses])]
        if msg_type == d.RELEASE:
            msg.elapsed = 0
        return msg

    def _send(self, stack: Stack, now: float, msg: d.Message, ex: _Exchange | None) -> None:
        iface = stack.interfaces.get(self.ifindex)
        src = None if iface is None else next(
            (a.addr for a in iface.v6 if a.addr[:2] == b"\xfe\x80" and a.state == "preferred"),
            None)
        if ex is not None:
            ex.next_timeout(self.rng, now)
        if iface is None or src is None:
            self._count("no_source")
            return
        stack.send_udp_on(iface, src, d.CLIENT_PORT, d.ALL_SERVERS, d.SERVER_PORT,
                          d.build(msg), hop_limit=1)
        self._count(f"sent_{msg.name.lower()}")

    def _exchange_failed(self, stack: Stack, now: float) -> None:
        ex = self.exchange
        self.exchange = None
        assert ex is not None
        if ex.msg_type == d.REQUEST:
            self._count("request_failed")
            self._solicit_later(now)
        elif ex.msg_type == d.DECLINE:
            self._declined(now)
        # RENEW ends at T2 and REBIND when the lease does: on_timer goes on from there

    def _declined(self, now: float) -> None:
        self.declining = []
        self.exchange = None
        if self.addresses:
            self.state = BOUND
        else:
            self._drop_timeline()
            self._solicit_later(now)

    # -- answers ---------------------------------------------------------------------------
    def _offered(self, msg: d.Message) -> list[d.IaAddress]:
        """The usable addresses for our IA in an ADVERTISE or a REPLY."""
        ia = msg.ia(self.iaid)
        if ia is None or (ia.status is not None and ia.status.code != d.SUCCESS):
            return []
        if ia.t1 and ia.t2 and ia.t1 > ia.t2:
            return []  # RFC 8415 21.4: discard the IA
        return [a for a in ia.addresses if a.preferred <= a.valid
                and (a.status is None or a.status.code == d.SUCCESS)]

    def _advertise(self, stack: Stack, msg: d.Message, now: float) -> None:
        if msg.sol_max_rt is not None and \
                SOL_MAX_RT_RANGE[0] <= msg.sol_max_rt <= SOL_MAX_RT_RANGE[1]:
            self.sol_max_rt = float(msg.sol_max_rt)
            if self.exchange is not None:
                self.exchange.mrt = self.sol_max_rt
        if not [a for a in self._offered(msg) if a.valid]:
            self._count("advertise_without_addresses")
            return
        preference = msg.preference or 0
        self.adverts.append((-preference, len(self.adverts), msg))
        ex = self.exchange
        # 18.2.1: preference 255, or any Advertise after the first RT, is taken at once
        if preference == 255 or (ex is not None and ex.count > 1):
            self._request_best(stack, now)

    def _request_best(self, stack: Stack, now: float) -> None:
        best = min(self.adverts, key=lambda entry: entry[:2])[2]
        self.adverts = []
        self.server = best.server_id
        self.offered = [a.address for a in self._offered(best) if a.valid]
        self.state = REQUESTING
        self._begin(d.REQUEST, now, REQ_TIMEOUT, REQ_MAX_RT, mrc=REQ_MAX_RC)
        self._transmit(stack, now)

    def _reply(self, stack: Stack, msg: d.Message, now: float) -> None:
        ex = self.exchange
        assert ex is not None
        if ex.msg_type == d.DECLINE:
            self._declined(now)
            return
        if ex.msg_type not in (d.REQUEST, d.RENEW, d.REBIND):
            self._count("ignored")
            return
        status = msg.status.code if msg.status is not None else d.SUCCESS
        if status in (d.UNSPEC_FAIL, d.USE_MULTICAST):
            self._count("reply_" + d.STATUS_NAMES[status].lower())
            return  # the retransmissions go on (18.2.10)
        ia = msg.ia(self.iaid)
        ia_status = ia.status.code if ia is not None and ia.status is not None else d.SUCCESS
        if ex.msg_type == d.REQUEST and (status == d.NOT_ON_LINK or ia is None
                                         or ia_status != d.SUCCESS):
            # 18.2.10.1: NotOnLink, NoAddrsAvail: start over
            self._count("request_refused")
            self.exchange = None
            self._solicit_later(now)
            return
        if ia is not None and ia_status == d.NO_BINDING:
            # 18.2.10.1: the server lost our binding: ask for the addresses again
            self._count("no_binding")
            self.server = msg.server_id
            self.offered = list(self.addresses)
            self.state = REQUESTING
            self._begin(d.REQUEST, now, REQ_TIMEOUT, REQ_MAX_RT, mrc=REQ_MAX_RC)
            self._transmit(stack, now)
            return
        if ia is None or ia_status != d.SUCCESS or (ia.t1 and ia.t2 and ia.t1 > ia.t2):
            self._count("ignored")
            return
        self._apply(stack, msg, ia, now)

    def _apply(self, stack: Stack, msg: d.Message, ia: d.IaNa, now: float) -> None:
        """A REPLY's IA: the addresses with their lifetimes, T1 and T2, DNS."""
        for a in ia.addresses:
            if a.preferred > a.valid or (a.status is not None and a.status.code != d.SUCCESS):
                continue
            if not a.valid:
                if a.address in self.addresses:
                    del self.addresses[a.address]
                    self._addr_del(stack, a.address)
                continue
            valid = None if a.valid == d.INFINITY else float(a.valid)
            preferred = None if a.preferred == d.INFINITY else float(a.preferred)
            packed = ipaddress.IPv6Address(a.address).packed
            iface = stack.interfaces.get(self.ifindex)
            if a.address in self.addresses and iface is not None \
                    and any(x.addr == packed for x in iface.v6):
                stack.addr_set_lifetimes(self.ifindex, a.address, valid, preferred, now)
            else:  # new (or removed by hand meanwhile)
                try:
                    stack.addr_add(self.ifindex, f"{a.address}/128", now, valid_lft=valid,
                                   preferred_lft=preferred, origin="dhcp")
                except FileExistsError:  # the interface has it already, not from us
                    self._count("address_exists")
                    continue
            self.addresses[a.address] = (INFINITY if valid is None else now + valid,
                                         INFINITY if preferred is None else now + preferred)
        if not self.addresses:
            self._count("reply_without_addresses")
            self._lease_lost(stack, now)
            return
        self.exchange = None
        self.server = msg.server_id
        self.state = BOUND
        self.failures = 0
        self._timeline(ia, now)
        if msg.dns_servers is not None or msg.domains is not None:
            self.dns = [s for s in msg.dns_servers or [] if not ipaddress.IPv6Address(s).is_multicast
                        and not ipaddress.IPv6Address(s).is_unspecified]
            self.domains = [n for n in msg.domains or [] if n]
            stack.resolver.learn(self._source(stack), self.dns, self.domains)
        self._count("bound")

    def _timeline(self, ia: d.IaNa, now: float) -> None:
        shortest = min(p for _, p in self.addresses.values()) - now
        self.expires_at = max(v for v, _ in self.addresses.values())
        if ia.t1 and ia.t2:
            t1, t2 = float(ia.t1), float(ia.t2)
        else:  # RFC 8415 21.4: the client chooses (a second at least: no renewal storm)
            t1, t2 = max(0.5 * shortest, 1.0), max(0.8 * shortest, 2.0)
        self.t1 = INFINITY if ia.t1 == d.INFINITY else t1
        self.t2 = INFINITY if ia.t2 == d.INFINITY else t2
        self.renew_at = now + self.t1 if self.t1 != INFINITY else None
        self.rebind_at = now + self.t2 if self.t2 != INFINITY else None
        if self.expires_at == INFINITY:
            self.expires_at = None

    # -- the end of a lease ----------------------------------------------------------------
    def _source(self, stack: Stack) -> str:
        iface = stack.interfaces.get(self.ifindex)
        return f"dhcp6:{iface.name if iface is not None else self.ifindex}"

    def _addr_del(self, stack: Stack, address: str) -> None:
        try:
            stack.addr_del(self.ifindex, f"{address}/128")
        except OSError:
            pass  # gone already

    def _drop_timeline(self) -> None:
        self.renew_at = self.rebind_at = self.expires_at = None
        self.t1 = self.t2 = 0.0

    def _drop_lease(self, stack: Stack, now: float) -> None:
        for address in list(self.addresses):
            self._addr_del(stack, address)
        self.addresses = {}
        self._drop_timeline()
        if self.dns or self.domains:
            stack.resolver.forget(self._source(stack))
        self.dns, self.domains = [], []

    def _lease_lost(self, stack: Stack, now: float) -> None:
        self._drop_lease(stack, now)
        self.exchange = None
        self._solicit_later(now)

