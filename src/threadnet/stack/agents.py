"""Agents, a part of the Stack: the protocol engines that configure a stack or serve
others on one of its interfaces (DHCPv4 and DHCPv6 clients and servers, router
discovery and SLAAC, the router advertisement server), and what they need from the
IP layer: datagrams on their ports before any socket sees them, the ICMPv6 messages
they ask for, multicast groups, sending on one interface without a route or an
address (a DHCP DISCOVER from 0.0.0.0), addresses and routes with lifetimes, and
news of duplicate addresses.

An agent is sans-IO plain data: it holds no stack, link or socket. The stack calls
it with itself and the time (``on_udp``, ``on_icmp6``, ``on_timer``, ``on_address``)
and the agent answers by calling the stack back. ``add_agent`` starts one,
``remove_agent`` stops it (a DHCP client sends its RELEASE then).

Lifetimes: an address or a route may carry an absolute ``valid_until`` (and an
address a ``preferred_until``). The stack's timer deprecates an address at the end
of its preferred lifetime (it stays assigned, RFC 4862 5.5.4, but is no longer chosen
as a source) and removes addresses and routes whose valid lifetime ended.
"""

from __future__ import annotations

import ipaddress
import random
from typing import TYPE_CHECKING, Any

from threadnet.stack.ip import BROADCAST_MAC
from threadnet.wire import ipv4, ipv6, udp
from threadnet.wire.ethernet import TYPE_IPV4, TYPE_IPV6

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack

INFINITY = float("inf")

#: ``on_address`` events: an address an agent asked for is in use (``ready``), was
#: found in use elsewhere (``conflict``: IPv4 ACD; ``dadfailed``: IPv6 DAD), or went
#: at the end of its valid lifetime (``expired``)
READY, CONFLICT, DADFAILED, EXPIRED = "ready", "conflict", "dadfailed", "expired"


class SystemRng(random.SystemRandom):
    """The system's entropy source as an agent's ``rng`` (temporary addresses and
    delays nobody can predict), which a stack's state may hold: it has no state of its
    own, so a copy or an unpickled one is simply a new one (``random.SystemRandom``
    refuses to be pickled)."""

    def __reduce__(self) -> tuple[type, tuple[()]]:
        return (type(self), ())


class Agent:
    """A protocol engine on one interface, driven by the stack (see the module's notes).

    Subclasses set ``udp_ports`` (``(family, port)`` pairs whose datagrams arriving on
    the interface go to ``on_udp`` first, even to an address the stack does not have
    yet) and ``icmp6_types``; they override what they use."""

    #: what ``threadnet ip`` and the console call it: dhcp4, dhcp6, rd, dhcpd4, ...
    kind = "agent"
    udp_ports: tuple[tuple[int, int], ...] = ()
    icmp6_types: tuple[int, ...] = ()
    #: IPv6 multicast groups the interface joins for it (ff02::1:2 for a DHCPv6 server)
    groups6: tuple[bytes, ...] = ()

    def __init__(self, ifindex: int) -> None:
        self.ifindex = ifindex

    def start(self, stack: Stack, now: float) -> None:
        """Called once by ``add_agent``."""

    def stop(self, stack: Stack, now: float) -> None:
        """Called once by ``remove_agent`` (and by ``Stack.close``): undo what it set up,
        tell peers it leaves (a DHCP RELEASE)."""

    def next_deadline(self) -> float | None:
        return None

    def on_timer(self, stack: Stack, now: float) -> None:
        """Called when ``next_deadline`` has come."""

    def on_udp(self, stack: Stack, iface: Interface, family: int, src: bytes, sport: int,
               dst: bytes, dport: int, data: bytes, now: float) -> None:
        """A datagram to one of ``udp_ports``, arrived on its interface."""

    def on_icmp6(self, stack: Stack, iface: Interface, src: bytes, dst: bytes, hlim: int,
                 message: memoryview, now: float) -> None:
        """An ICMPv6 message of one of ``icmp6_types`` (the whole message, its checksum
        checked), arrived on its interface, before the stack's own handling of it (it
        has none for router solicitations and advertisements)."""

    def on_address(self, stack: Stack, iface: Interface, addr: bytes, event: str,
                   now: float) -> None:
        """News of an address of its interface (``READY``, ``CONFLICT``, ``DADFAILED``,
        ``EXPIRED``)."""

    def configured(self, stack: Stack) -> bool:
        """Whether the configuration it was started for has arrived (a lease is bound,
        routers and addresses are known, or it gave up asking): what a program started on
        the stack waits for (``threadnet.Stack.wait_configured``). A server is at once."""
        return True

    def describe(self) -> dict[str, Any]:
        """Its state for the console and ``threadnet ip``: plain values."""
        return {"kind": self.kind, "ifindex": self.ifindex}


class Agents:
    """The agents of a stack and the IP layer's services for them (a mixin of ``Stack``)."""

    agents: list[Agent]
    #: (family, port, ifindex) -> the agent that takes those datagrams
    agent_udp: dict[tuple[int, int, int], Agent]
    #: (ICMPv6 type, ifindex) -> the agents that hear those messages
    agent_icmp6: dict[tuple[int, int], list[Agent]]

    def add_agent(self, agent: Agent, now: float | None = None) -> Agent:
        """Start ``agent`` on its interface. OSError(EADDRINUSE) if another agent has one
        of its ports there."""
        import errno

        iface = self.interface(agent.ifindex)  # type: ignore[attr-defined]
        for family, port in agent.udp_ports:
            if (family, port, iface.index) in self.agent_udp:
                raise OSError(errno.EADDRINUSE,
                              f"UDP port {port} on {iface.name} is taken by "
                              f"{self.agent_udp[(family, port, iface.index)].kind}")
        now = self._api_now(now)  # type: ignore[attr-defined]
        for family, port in agent.udp_ports:
            self.agent_udp[(family, port, iface.index)] = agent
        for kind in agent.icmp6_types:
            self.agent_icmp6.setdefault((kind, iface.index), []).append(agent)
        for group in agent.groups6:
            iface.groups6[group] = iface.groups6.get(group, 0) + 1
        self.agents.append(agent)
        agent.start(self, now)  # type: ignore[arg-type]
        return agent

    def remove_agent(self, agent: Agent, now: float | None = None) -> None:
        """Stop ``agent`` (it undoes what it set up) and forget it."""
        if agent not in self.agents:
            return
        now = self._api_now(now)  # type: ignore[attr-defined]
        try:
            agent.stop(self, now)  # type: ignore[arg-type]
        finally:
            self.agents.remove(agent)
            for key in [k for k, a in self.agent_udp.items() if a is agent]:
                del self.agent_udp[key]
            for key, lst in list(self.agent_icmp6.items()):
                if agent in lst:
                    lst.remove(agent)
                    if not lst:
                        del self.agent_icmp6[key]
            iface = self.interfaces.get(agent.ifindex)  # type: ignore[attr-defined]
            if iface is not None:
                for group in agent.groups6:
                    left = iface.groups6.get(group, 0) - 1
                    if left > 0:
                        iface.groups6[group] = left
                    else:
                        iface.groups6.pop(group, None)

    def find_agents(self, kind: str | None = None, ifindex: int | None = None) -> list[Agent]:
        return [a for a in self.agents if (kind is None or a.kind == kind)
                and (ifindex is None or a.ifindex == ifindex)]

    # -- the stack's hooks for them ---------------------------------------------------------
    def _agents_deadline(self) -> float | None:
        times = [t for t in (a.next_deadline() for a in self.agents) if t is not None]
        return min(times, default=None)

    def _agents_timer(self, now: float) -> None:
        for agent in list(self.agents):
            t = agent.next_deadline()
            if t is not None and t <= now and agent in self.agents:
                agent.on_timer(self, now)  # type: ignore[arg-type]

    def _agent_udp_input(self, iface: Interface, family: int, src: bytes, dst: bytes,
                         payload: memoryview, now: float) -> bool:
        """Give a datagram to the agent of its port on ``iface``: whether one took it."""
        if len(payload) < udp.HEADER_LEN:
            return False
        _, dport = udp.parse_quoted(payload)  # the ports, before the whole datagram's check
        agent = self.agent_udp.get((family, dport, iface.index))
        if agent is None:
            return False
        sport, _, data = udp.parse(payload, src, dst)
        agent.on_udp(self, iface, family, src, sport, dst, dport, bytes(data), now)  # type: ignore[arg-type]
        return True

    def _agent_icmp6_input(self, iface: Interface, kind: int, src: bytes, dst: bytes,
                           hlim: int, message: memoryview, now: float) -> None:
        for agent in list(self.agent_icmp6.get((kind, iface.index), ())):
            agent.on_icmp6(self, iface, src, dst, hlim, message, now)  # type: ignore[arg-type]

    def _address_event(self, iface: Interface, addr: bytes, event: str, now: float) -> None:
        for agent in list(self.agents):
            if agent.ifindex == iface.index:
                agent.on_address(self, iface, addr, event, now)  # type: ignore[arg-type]

    # -- sending on one interface, without a route --------------------------------------
    def send_udp_on(self, iface: Interface, src: bytes, sport: int, dst: bytes, dport: int,
                    data: bytes | bytearray, mac: bytes | None = None, *,
                    hop_limit: int = 64) -> None:
        """A UDP datagram out of ``iface`` as it is: IPv4 from any source (0.0.0.0 too) to
        ``mac`` (default: broadcast), or IPv6 to ``dst``'s multicast MAC, ``mac``, or (a
        unicast ``dst`` without ``mac``) the MAC neighbor discovery finds for ``dst`` on
        ``iface``. For agents that speak before they have an address or a route (DHCP),
        or that answer a client by its MAC (a DHCP server's OFFER to an address not yet
        in use) or at its link-local address (a DHCPv6 server's REPLY)."""
        out = bytearray(8 + len(data))
        udp.build(out, src, dst, sport, dport, data)
        if len(dst) == 4:
            packet = bytearray(20 + len(out))
            ipv4.build(packet, src, dst, ipv4.PROTO_UDP, len(out), ttl=hop_limit,
                       ident=self.take_ip_ids(self.ip_id_hash(src, dst, ipv4.PROTO_UDP)))  # type: ignore[attr-defined]
            packet[20:] = out
            self._send_eth(iface, mac or BROADCAST_MAC, TYPE_IPV4, packet)  # type: ignore[attr-defined]
            return
        packet = bytearray(40 + len(out))
        ipv6.build(packet, src, dst, ipv6.PROTO_UDP, len(out), hop_limit=hop_limit)
        packet[40:] = out
        if mac is None:
            if dst[0] != 0xFF:  # a neighbor on this link, whatever the routes say
                self._output6(iface, dst, dst, packet, self._now)  # type: ignore[attr-defined]
                return
            mac = ipv6.multicast_mac(dst)
        self._send_eth(iface, mac, TYPE_IPV6, packet)  # type: ignore[attr-defined]

    def send_icmp6_on(self, iface: Interface, src: bytes, dst: bytes, message: bytes | bytearray,
                      mac: bytes | None = None) -> None:
        """An ICMPv6 message (its checksum filled in) out of ``iface`` with hop limit 255,
        as NDP wants (RS, RA): to ``dst``'s multicast MAC, or to ``mac``."""
        self._send6_direct(iface, src, dst, message, mac, self._now)  # type: ignore[attr-defined]

    # -- lifetimes -------------------------------------------------------------------------
    _life_gen = -1
    _life_best = INFINITY

    def _addresses_deadline(self) -> float | None:
        """The next end of a DAD wait or of a lifetime (addresses' and routes'). The
        addresses' part is cached until the next change of addresses (``_gen``), since
        ``next_deadline`` runs after every socket call."""
        if self._life_gen != self._gen:  # type: ignore[attr-defined]
            best = INFINITY
            for iface in self.interfaces.values():  # type: ignore[attr-defined]
                for a in iface.v6:
                    if a.valid_until < best:
                        best = a.valid_until
                    if not a.deprecated and a.preferred_until < best:
                        best = a.preferred_until
                    if a.state == "tentative" and a.dad_deadline and a.dad_deadline < best:
                        best = a.dad_deadline
                for info in iface.v4_life.values():
                    if info[0] < best:
                        best = info[0]
            self._life_best = best
            self._life_gen = self._gen  # type: ignore[attr-defined]
        best = self._life_best
        for table in (self.routes4, self.routes6):  # type: ignore[attr-defined]
            t = table.next_expiry()
            if t is not None and t < best:
                best = t
        return None if best == INFINITY else best

    def _lifetimes_timer(self, now: float) -> None:
        for iface in list(self.interfaces.values()):  # type: ignore[attr-defined]
            for a in list(iface.v6):
                if a.valid_until <= now:
                    self.addr_del(iface.index, f"{ipaddress.ip_address(a.addr)}/{a.plen}")  # type: ignore[attr-defined]
                    self._address_event(iface, a.addr, EXPIRED, now)
                elif not a.deprecated and a.preferred_until <= now:
                    a.deprecated = True
                    self._gen += 1  # type: ignore[attr-defined]
            for addr, (valid_until, _pref, _origin) in list(iface.v4_life.items()):
                if valid_until <= now:
                    plen = next((p for a, p in iface.v4 if a == addr), None)
                    if plen is None:
                        pending = iface.acd4.get(addr)
                        plen = pending.plen if pending is not None else 32
                    try:
                        self.addr_del(iface.index, f"{ipaddress.ip_address(addr)}/{plen}")  # type: ignore[attr-defined]
                    except OSError:
                        iface.v4_life.pop(addr, None)
                    self._address_event(iface, addr, EXPIRED, now)
        for table in (self.routes4, self.routes6):  # type: ignore[attr-defined]
            if table.expire(now):
                self._gen += 1  # type: ignore[attr-defined]
