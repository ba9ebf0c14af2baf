"""The DHCPv4 client (RFC 2131, options of RFC 2132): an agent (``stack/agents.py``) on
one interface, behind the configuration item ``dhcp`` (``dhcp4``).

States (RFC 2131 4.4, figure 5): INIT -> SELECTING (DISCOVER broadcast, the first
acceptable OFFER wins) -> REQUESTING (REQUEST broadcast, naming the server) -> PROBING
(the ACKed address goes through conflict detection, RFC 5227 and RFC 2131 4.4.1; a
conflict sends a DECLINE and restarts after 10 s, 3.1.5) -> BOUND -> RENEWING at T1
(REQUEST unicast to the server) -> REBINDING at T2 (REQUEST broadcast to any server) ->
at the end of the lease, everything is undone and the client starts again at INIT. A
NAK also starts again (after a delay that doubles on NAKs in a row, up to a minute, so
a server that refuses everything is not flooded). INIT-REBOOT (REBOOTING) runs when
the client is given the address of an earlier lease (``address=``).

Retransmission (4.1): 4 s, then 8, 16, 32 and 64 s at most, each randomized by +-1 s;
a REQUEST in REQUESTING or REBOOTING is sent 4 times before the client gives up and
starts again. In RENEWING and REBINDING the client waits half the time left until T2
(or until the end of the lease), and at least 60 s (4.4.5). The lease starts when the
first REQUEST of the exchange went (4.4.1). Deviation: RFC 2131 4.4.1 suggests waiting
1 to 10 s before the first DISCOVER; like udhcpc and dhcpcd this client waits at most
``init_delay`` (1 s).

What a lease gives is applied to the stack and undone when it ends, when a NAK comes,
and when the client stops (``Stack.close``, ``-dhcp``): the address with its prefix
(valid lifetime = the lease, origin "dhcp"); a default route through the first router
(proto "dhcp", the lease's lifetime; a default route already there is left alone); DNS
servers and the domain (``resolver.learn("dhcp4:IFACE", ...)``); the host name, only if
the stack has none set; the interface MTU (option 26), no larger than the link carries.
Stopping with a lease sends a RELEASE.

The client identifier (61) is 0x01 and the MAC by default; the host name (12) it sends
is the first label of ``fqdn=``. Relays and classless static routes (121) are not
supported.
"""

from __future__ import annotations

import ipaddress
import random
import re
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError
from threadnet.stack.agents import CONFLICT, EXPIRED, READY, Agent
from threadnet.stack.ip import BROADCAST_MAC, ntop
from threadnet.wire import dhcp4
from threadnet.wire.dhcp4 import DhcpMessage

if TYPE_CHECKING:
    from threadnet.stack.config import Config
    from threadnet.stack.stack import Interface, Stack

INIT, SELECTING, REQUESTING, PROBING = "INIT", "SELECTING", "REQUESTING", "PROBING"
BOUND, RENEWING, REBINDING, REBOOTING = "BOUND", "RENEWING", "REBINDING", "REBOOTING"

ANY4 = bytes(4)
BROADCAST4 = b"\xff" * 4
#: RFC 2131 4.1: the first retransmission after 4 s, doubling up to 64 s, +-1 s
FIRST_BACKOFF = 4.0
MAX_BACKOFF = 64.0
#: REQUESTs sent in REQUESTING or REBOOTING before starting again
MAX_REQUESTS = 4
#: RFC 2131 4.4.5: the least wait between REQUESTs in RENEWING and REBINDING
MIN_RENEW_WAIT = 60.0
#: RFC 2131 3.1.5: after a DECLINE, wait before starting again
DECLINE_WAIT = 10.0
#: the longest wait after NAKs in a row
MAX_NAK_WAIT = 60.0
#: what the client asks for (option 55)
PARAMS = bytes([dhcp4.OPT_SUBNET_MASK, dhcp4.OPT_ROUTER, dhcp4.OPT_DNS, dhcp4.OPT_HOST_NAME,
                dhcp4.OPT_DOMAIN_NAME, dhcp4.OPT_MTU, dhcp4.OPT_BROADCAST,
                dhcp4.OPT_LEASE_TIME, dhcp4.OPT_T1, dhcp4.OPT_T2])
_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def usable_unicast(addr: bytes) -> bool:
    """An address a host may take: not 0/8, loopback, multicast, reserved or broadcast."""
    return addr[0] not in (0, 127) and addr[0] < 224


def classful_prefix(addr: bytes) -> int:
    """The prefix when a server sends no subnet mask (RFC 2131 leaves it to the client;
    dhclient and udhcpc take the class's)."""
    return 8 if addr[0] < 128 else 16 if addr[0] < 192 else 24


def _is_name(text: str) -> bool:
    return len(text) <= 253 and bool(_NAME.match(text))


class Dhcp4Client(Agent):
    """A DHCPv4 client on interface ``ifindex`` (see the module's notes).

    ``hostname``: sent as option 12 (its first label). ``client_id``: option 61 (default
    0x01 + the interface's MAC). ``acd``: probe the address before using it (RFC 5227;
    a conflict sends a DECLINE). ``address``: an earlier lease's address, asked for
    first (INIT-REBOOT). ``rng``: for xids and jitter (tests pass a seeded one).
    ``init_delay``: the longest random wait before the first DISCOVER.
    """

    kind = "dhcp4"
    udp_ports = ((4, dhcp4.CLIENT_PORT),)

    def __init__(self, ifindex: int, *, hostname: str | None = None,
                 client_id: bytes | None = None, acd: bool = True,
                 address: str | None = None, rng: random.Random | None = None,
                 init_delay: float = 1.0) -> None:
        super().__init__(ifindex)
        self.hostname = hostname.split(".", 1)[0] if hostname else None
        self.client_id = client_id
        self.acd = acd
        self.rng = rng or random.Random()
        self.init_delay = init_delay
        self.state = INIT
        self.deadline: float | None = None
        self.xid = 0
        self.attempt = 0  # transmissions of the current message, less one
        self.started = 0.0  # when this acquisition began (the secs field)
        self.request_sent = 0.0  # the first REQUEST of the exchange: the lease's start
        #: an earlier lease's address: asked for with INIT-REBOOT first, then a hint in
        #: DISCOVERs (RFC 2131 4.4.1)
        self.reboot: bytes | None = ipaddress.IPv4Address(address).packed if address else None
        self.previous = self.reboot
        self.naks = 0  # in a row
        # the offer being requested, then the lease
        self.offered: bytes | None = None
        self.server: bytes | None = None
        self.address: bytes | None = None
        self.plen = 0
        self.lease: float | None = None  # seconds (None: infinite)
        self.t1_at = self.t2_at = self.expires_at = float("inf")
        self.ack: DhcpMessage | None = None
        # what was applied, to undo it
        self._addr_added = False
        self._router: str | None = None
        self._hostname_set: str | None = None
        self._mtu_before: int | None = None
        self._dns_source = ""
        #: counters: sent and received messages by type, bad and ignored input
        self.stats: dict[str, int] = {}

    # -- the agent's interface ---------------------------------------------------------
    def start(self, stack: Stack, now: float) -> None:
        iface = stack.interface(self.ifindex)
        self._dns_source = f"dhcp4:{iface.name}"
        if self.client_id is None:
            self.client_id = b"\x01" + iface.mac
        self.deadline = now + self.rng.uniform(0.0, self.init_delay)

    def stop(self, stack: Stack, now: float) -> None:
        if self.state in (PROBING, BOUND, RENEWING, REBINDING):
            self._send_release(stack, now)
        self._unconfigure(stack, now)
        self.state = INIT
        self.deadline = None

    def next_deadline(self) -> float | None:
        return self.deadline

    def on_timer(self, stack: Stack, now: float) -> None:
        if self.deadline is None or now < self.deadline:
            return
        state = self.state
        if state == INIT:
            self._begin(stack, now)
        elif state == SELECTING:
            self.attempt += 1
            self._send_discover(stack, now)
        elif state in (REQUESTING, REBOOTING):
            self.attempt += 1
            if self.attempt >= MAX_REQUESTS:
                self._restart(stack, now, 0.0)  # RFC 2131 3.1.5 / 3.2.2: back to INIT
            else:
                self._send_request(stack, now)
        elif state in (PROBING, BOUND, RENEWING, REBINDING) and now >= self.expires_at:
            self._expire(stack, now)
        elif state == BOUND or (state == RENEWING and now < self.t2_at):
            if state == BOUND:  # T1
                self.state = RENEWING
                self._new_exchange(now)
            self._send_request(stack, now)
        elif state in (RENEWING, REBINDING):
            if state == RENEWING:  # T2
                self.state = REBINDING
                self._new_exchange(now)
            self._send_request(stack, now)
        else:  # PROBING: conflict detection answers through on_address
            self.deadline = self._finite(self.expires_at)

    def configured(self, stack: Stack) -> bool:
        """A lease is bound (renewing and rebinding ones are still in use)."""
        return self.state in (BOUND, RENEWING, REBINDING)

    def on_udp(self, stack: Stack, iface: Interface, family: int, src: bytes, sport: int,
               dst: bytes, dport: int, data: bytes, now: float) -> None:
        if sport != dhcp4.SERVER_PORT:
            return
        try:
            msg = dhcp4.parse(data)
        except FrameError:
            self._count("bad")
            return
        kind = msg.message_type
        if (msg.op != dhcp4.BOOTREPLY or msg.xid != self.xid or msg.chaddr != iface.mac
                or kind is None):
            self._count("ignored")
            return
        self._count(f"got_{dhcp4.TYPE_NAMES.get(kind, str(kind)).lower()}")
        if kind == dhcp4.OFFER and self.state == SELECTING:
            self._on_offer(stack, msg, now)
        elif kind == dhcp4.ACK and self.state in (REQUESTING, REBOOTING, RENEWING, REBINDING):
            self._on_ack(stack, iface, msg, src, now)
        elif kind == dhcp4.NAK and self.state in (REQUESTING, REBOOTING, RENEWING, REBINDING):
            # RFC 2131 4.4.1: a NAK from the server asked (any server when rebinding)
            if self.state in (REQUESTING, RENEWING) and msg.server_id not in (None, self.server):
                self._count("ignored")
                return
            self.naks += 1
            wait = 0.0 if self.naks == 1 else min(MAX_NAK_WAIT, 2.0 ** (self.naks - 2))
            self._unconfigure(stack, now)
            self._restart(stack, now, wait, forget=True)
        else:
            self._count("ignored")

    def on_address(self, stack: Stack, iface: Interface, addr: bytes, event: str,
                   now: float) -> None:
        if addr != self.address:
            return
        if event == READY and self.state == PROBING:
            self._bound(stack, iface, now)
        elif event == CONFLICT and self.state in (PROBING, BOUND, RENEWING, REBINDING):
            self._decline(stack, now)
        elif event == EXPIRED and self.state in (PROBING, BOUND, RENEWING, REBINDING):
            self._addr_added = False  # the stack removed it
            self._expire(stack, now)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(state=self.state,
                 address=None if self.address is None else f"{ntop(self.address)}/{self.plen}",
                 server=None if self.server is None else ntop(self.server),
                 router=self._router,
                 lease=self.lease, obtained=self.request_sent if self.address else None,
                 t1=None if self.t1_at == float("inf") else self.t1_at,
                 t2=None if self.t2_at == float("inf") else self.t2_at,
                 expires=None if self.expires_at == float("inf") else self.expires_at,
                 next=self.deadline, stats=dict(self.stats))
        if self.ack is not None:
            d.update(dns=[ntop(a) for a in self.ack.dns_servers],
                     domain=self.ack.domain_name, mtu=self.ack.mtu)
        return d

    @property
    def bound(self) -> bool:
        """A lease is in use (BOUND, RENEWING or REBINDING)."""
        return self.state in (BOUND, RENEWING, REBINDING)

    # -- the exchanges ---------------------------------------------------------------------
    def _new_exchange(self, now: float) -> None:
        """A new xid; the lease an ACK to it gives starts now (RFC 2131 4.4.1: when
        the first REQUEST went), and ``secs`` counts from now."""
        self.xid = self.rng.getrandbits(32)
        self.started = self.request_sent = now
        self.attempt = 0

    def _begin(self, stack: Stack, now: float) -> None:
        self._new_exchange(now)
        if self.reboot is not None:
            self.state = REBOOTING  # INIT-REBOOT: ask for the earlier address at once
            self.offered, self.server, self.reboot = self.reboot, None, None
            self._send_request(stack, now)
            return
        self.state = SELECTING
        self._send_discover(stack, now)

    def _restart(self, stack: Stack, now: float, wait: float, *, forget: bool = False) -> None:
        """Back to INIT, to start again in ``wait`` seconds; ``forget``: the address was
        refused (NAK) or is someone else's (DECLINE), so no DISCOVER asks for it."""
        self.state = INIT
        self.offered = self.server = None
        if forget:
            self.previous = None
        self.deadline = now + wait

    def _on_offer(self, stack: Stack, msg: DhcpMessage, now: float) -> None:
        if not usable_unicast(msg.yiaddr) or msg.server_id is None:
            self._count("ignored")
            return
        self.state = REQUESTING
        self.offered, self.server = msg.yiaddr, msg.server_id
        self.attempt = 0
        self.request_sent = now
        self._send_request(stack, now)

    def _on_ack(self, stack: Stack, iface: Interface, msg: DhcpMessage, src: bytes,
                now: float) -> None:
        if self.state in (REQUESTING, REBOOTING):
            if msg.yiaddr != self.offered or not usable_unicast(msg.yiaddr):
                self._count("ignored")
                return
        elif msg.yiaddr != self.address:
            # a renewal that gives another address: start again rather than switch
            self._unconfigure(stack, now)
            self._restart(stack, now, 0.0)
            return
        self.naks = 0
        lease = msg.lease_time
        if lease is None:  # RFC 2131 table 3: an ACK to a REQUEST MUST carry it
            self._count("ignored")
            return
        start = self.request_sent
        self.lease = None if lease == dhcp4.INFINITE else float(lease)
        self.ack = msg
        if msg.server_id is not None:
            self.server = msg.server_id
        elif self.server is None and usable_unicast(src):
            self.server = src  # (an ACK without its server identifier: its sender)
        self._set_times(msg, start)
        if self.state in (RENEWING, REBINDING):
            self._extend(stack, iface, now)
            return
        mask = msg.subnet_mask
        plen = dhcp4.prefix_of(mask) if mask is not None else None
        self.address = msg.yiaddr
        self.plen = plen if plen is not None else classful_prefix(msg.yiaddr)
        cidr = f"{ntop(self.address)}/{self.plen}"
        valid = None if self.lease is None else max(self.expires_at - now, 0.0)
        try:
            stack.addr_add(iface.index, cidr, now, acd=self.acd, valid_lft=valid,
                           origin="dhcp")
            self._addr_added = True
        except FileExistsError:
            self._addr_added = False  # set by hand already: used, not ours to remove
        if self.acd and self._addr_added:
            self.state = PROBING
            self.deadline = self._finite(self.expires_at)
        else:
            self._bound(stack, iface, now)

    def _set_times(self, msg: DhcpMessage, start: float) -> None:
        """T1, T2 and the expiry from the ACK (RFC 2131 4.4.5: 0.5 and 0.875 of the lease
        unless the server says otherwise; a T1 after T2, or a T2 after the end, is
        ignored)."""
        if self.lease is None:
            self.t1_at = self.t2_at = self.expires_at = float("inf")
            return
        lease = self.lease
        t1 = msg.t1 if msg.t1 is not None and msg.t1 != dhcp4.INFINITE else 0.5 * lease
        t2 = msg.t2 if msg.t2 is not None and msg.t2 != dhcp4.INFINITE else 0.875 * lease
        if not t2 <= lease:
            t2 = 0.875 * lease
        if not t1 <= t2:
            t1 = min(0.5 * lease, t2)
        self.t1_at, self.t2_at, self.expires_at = start + t1, start + t2, start + lease

    @staticmethod
    def _finite(t: float) -> float | None:
        return None if t == float("inf") else t

    def _bound(self, stack: Stack, iface: Interface, now: float) -> None:
        self.state = BOUND
        self.deadline = self._finite(self.t1_at)
        self._apply_options(stack, iface, now)

    def _extend(self, stack: Stack, iface: Interface, now: float) -> None:
        """A renewal's ACK: new lifetimes and options for the same address."""
        assert self.address is not None
        if self._addr_added:
            valid = None if self.lease is None else max(self.expires_at - now, 0.0)
            try:
                stack.addr_set_lifetimes(iface.index, ntop(self.address), valid, None, now)
            except OSError:
                self._addr_added = False
        self._bound(stack, iface, now)

    def _expire(self, stack: Stack, now: float) -> None:
        """The lease ended (RFC 2131 4.4.5: stop using the address, back to INIT)."""
        self._count("expired")
        self._unconfigure(stack, now)
        self._restart(stack, now, 0.0)

    def _decline(self, stack: Stack, now: float) -> None:
        """The address is someone else's (conflict detection): DECLINE it, drop it and
        start again in 10 s (RFC 2131 3.1.5, 4.4.1)."""
        assert self.address is not None
        msg = self._message(dhcp4.DECLINE, stack.interface(self.ifindex), now, params=False)
        msg.options[dhcp4.OPT_REQUESTED_IP] = self.address
        if self.server is not None:
            msg.options[dhcp4.OPT_SERVER_ID] = self.server
        self._broadcast(stack, msg)
        self._unconfigure(stack, now)
        self._restart(stack, now, DECLINE_WAIT, forget=True)

    # -- messages --------------------------------------------------------------------------
    def _message(self, kind: int, iface: Interface, now: float, *,
                 params: bool = True) -> DhcpMessage:
        """A message of the client's (RFC 2131 table 5): the client identifier always;
        the maximum size, host name and parameter list in DISCOVER and REQUEST."""
        opts: dict[int, bytes] = {dhcp4.OPT_MESSAGE_TYPE: bytes([kind])}
        assert self.client_id is not None
        opts[dhcp4.OPT_CLIENT_ID] = self.client_id
        if params:
            opts[dhcp4.OPT_MAX_SIZE] = dhcp4.u16(max(dhcp4.MIN_MAX_SIZE, min(iface.mtu, 0xFFFF)))
            if self.hostname:
                opts[dhcp4.OPT_HOST_NAME] = self.hostname.encode()
            opts[dhcp4.OPT_PARAM_LIST] = PARAMS
        secs = 0 if kind in (dhcp4.DECLINE, dhcp4.RELEASE) else min(int(now - self.started),
                                                                    0xFFFF)
        return DhcpMessage(op=dhcp4.BOOTREQUEST, xid=self.xid, chaddr=iface.mac, secs=secs,
                           options=opts)

    def _send_discover(self, stack: Stack, now: float) -> None:
        msg = self._message(dhcp4.DISCOVER, stack.interface(self.ifindex), now)
        if self.previous is not None:
            msg.options[dhcp4.OPT_REQUESTED_IP] = self.previous  # a hint (RFC 2131 4.4.1)
        self._broadcast(stack, msg)
        self.deadline = now + self._backoff()

    def _send_request(self, stack: Stack, now: float) -> None:
        msg = self._message(dhcp4.REQUEST, stack.interface(self.ifindex), now)
        if self.state in (REQUESTING, REBOOTING):
            # RFC 2131 4.3.2 / table 5: the address asked for; the server chosen
            assert self.offered is not None
            msg.options[dhcp4.OPT_REQUESTED_IP] = self.offered
            if self.state == REQUESTING and self.server is not None:
                msg.options[dhcp4.OPT_SERVER_ID] = self.server
            self._broadcast(stack, msg)
            self.deadline = now + self._backoff()
            return
        assert self.address is not None
        msg.ciaddr = self.address  # RENEWING, REBINDING: ciaddr only
        if self.state == RENEWING and self.server is not None:
            try:
                stack.udp_send(dhcp4.to_bytes(msg), (ntop(self.server), dhcp4.SERVER_PORT),
                               dhcp4.CLIENT_PORT, ntop(self.address), now)
                self._count("sent_request")
            except OSError:
                self._count("send_errors")
        else:  # REBINDING (or a server that never said who it is)
            self._broadcast(stack, msg, src=self.address)
        end = self.t2_at if self.state == RENEWING else self.expires_at
        # RFC 2131 4.4.5: half the time left, at least 60 s, not past T2 (the lease's end)
        self.deadline = min(end, now + max(MIN_RENEW_WAIT, (end - now) / 2))

    def _send_release(self, stack: Stack, now: float) -> None:
        if self.address is None or self.server is None:
            return
        iface = stack.interface(self.ifindex)
        self.xid = self.rng.getrandbits(32)
        msg = self._message(dhcp4.RELEASE, iface, now, params=False)
        msg.ciaddr = self.address
        msg.options[dhcp4.OPT_SERVER_ID] = self.server
        # RFC 2131 4.4.6: unicast to the server; its MAC from the ARP cache if known
        # (a frame queued for address resolution would be lost when the stack closes),
        # else in a broadcast frame (Linux takes a unicast IP packet in one)
        entry = iface.arp.entries.get(self.server)
        mac = entry.mac if entry is not None and entry.mac is not None else BROADCAST_MAC
        src = self.address if self._addr_added and self.bound else ANY4
        stack.send_udp_on(iface, src, dhcp4.CLIENT_PORT, self.server, dhcp4.SERVER_PORT,
                          dhcp4.to_bytes(msg), mac)
        self._count("sent_release")

    def _broadcast(self, stack: Stack, msg: DhcpMessage, src: bytes = ANY4) -> None:
        iface = stack.interface(self.ifindex)
        stack.send_udp_on(iface, src, dhcp4.CLIENT_PORT, BROADCAST4, dhcp4.SERVER_PORT,
                          dhcp4.to_bytes(msg))
        name = dhcp4.TYPE_NAMES.get(msg.message_type or 0, "?").lower()
        self._count(f"sent_{name}")

    def _backoff(self) -> float:
        """RFC 2131 4.1: 4 s before the first retransmission, doubling up to 64 s, +-1 s."""
        base = min(FIRST_BACKOFF * 2 ** self.attempt, MAX_BACKOFF)
        return base + self.rng.uniform(-1.0, 1.0)

    # -- applying the lease's options --------------------------------------------------
    def _apply_options(self, stack: Stack, iface: Interface, now: float) -> None:
        msg = self.ack
        assert msg is not None
        lifetime = None if self.expires_at == float("inf") else max(self.expires_at - now, 0.0)
        # the default route through the first router (as dhclient-script does)
        routers = [r for r in msg.routers if usable_unicast(r)]
        router = ntop(routers[0]) if routers else None
        if self._router is not None and self._router != router:
            self._remove_route(stack)
        if router is not None:
            ours = self._our_route(stack)
            if ours is not None or not any(r.dst.prefixlen == 0 for r in stack.routes4.routes):
                try:
                    stack.route_add("default", router, iface.index, proto="dhcp",
                                    lifetime=lifetime, replace=ours is not None, now=now)
                    self._router = router
                except OSError:
                    self._count("route_errors")
        # DNS servers and the domain, after any set by hand
        servers = [ntop(a) for a in msg.dns_servers if usable_unicast(a)]
        domain = msg.domain_name
        search = [d for d in (domain or "").split() if _is_name(d)]
        if servers or search:
            stack.resolver.learn(self._dns_source, servers, search)
        else:
            stack.resolver.forget(self._dns_source)
        # the host name, unless the stack has one
        name = msg.host_name
        resolver = stack.resolver
        if name and _is_name(name) and (resolver.hostname is None
                                        or resolver.hostname == self._hostname_set):
            resolver.set_hostname(name)
            self._hostname_set = name
        # the interface MTU (RFC 2132 5.1: 68 at least), within what the link carries
        mtu = msg.mtu
        if mtu is not None and mtu >= 68:
            link = stack.links.get(iface.index)
            top = None if link is None else link.max_mtu
            if top is not None:
                mtu = min(mtu, top)
            if mtu != iface.mtu:
                if self._mtu_before is None:
                    self._mtu_before = iface.mtu
                try:
                    stack.set_mtu(iface.index, mtu)
                except ValueError:
                    self._count("mtu_errors")

    def _our_route(self, stack: Stack) -> Any:
        if self._router is None:
            return None
        gw = ipaddress.IPv4Address(self._router)
        return next((r for r in stack.routes4.routes if r.dst.prefixlen == 0
                     and r.gateway == gw and r.proto == "dhcp" and r.ifindex == self.ifindex),
                    None)

    def _remove_route(self, stack: Stack) -> None:
        if self._our_route(stack) is not None:
            assert self._router is not None
            stack.route_del("default", self._router)
        self._router = None

    def _unconfigure(self, stack: Stack, now: float) -> None:
        """Undo what the lease applied (the stack may have removed the address and
        route already, at the end of their lifetimes)."""
        iface = stack.interfaces.get(self.ifindex)
        if self.address is not None and self._addr_added and iface is not None:
            try:
                stack.addr_del(iface.index, f"{ntop(self.address)}/{self.plen}")
            except OSError:
                pass
        self._addr_added = False
        self._remove_route(stack)
        resolver = stack.resolver
        resolver.forget(self._dns_source)
        if self._hostname_set is not None and resolver.hostname == self._hostname_set:
            resolver.hostname = None
        self._hostname_set = None
        if self._mtu_before is not None and iface is not None:
            try:
                stack.set_mtu(iface.index, self._mtu_before)
            except ValueError:
                pass
            self._mtu_before = None
        if self.address is not None:
            self.previous = self.address
        self.address = None
        self.ack = None
        self.lease = None
        self.t1_at = self.t2_at = self.expires_at = float("inf")

    def _count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


def from_config(stack: Stack, iface: Interface, cfg: Config) -> Dhcp4Client:
    """The ``dhcp`` item's client: host name from ``fqdn=`` (or the one the stack has
    been given)."""
    name = cfg.fqdn if cfg.fqdn is not None else stack.resolver.hostname
    return Dhcp4Client(iface.index, hostname=name)
