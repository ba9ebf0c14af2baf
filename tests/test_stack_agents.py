"""The stack's services for agents (``stack/agents.py``): DHCP, router discovery and
their servers plug in through these. Core stacks on a fake LAN, on fake time: datagrams
to an agent's port before the stack has an address, sending from 0.0.0.0 and to a MAC,
multicast groups, timers, news of duplicate addresses, and addresses and routes with
lifetimes."""

from __future__ import annotations

import ipaddress

import pytest

from threadnet.stack import autoconf
from threadnet.stack.agents import DADFAILED, EXPIRED, Agent
from threadnet.stack.config import ConfigError, DynamicConfigNotImplemented, parse_config
from threadnet.wire import ipv6

from stack_helpers import FakeLan

ANY = bytes(4)
BCAST = b"\xff" * 4
ALL_DHCP6 = ipaddress.ip_address("ff02::1:2").packed


class Recorder(Agent):
    """An agent that records what reaches it and can be told to answer."""

    kind = "recorder"

    def __init__(self, ifindex: int, ports=((4, 68),), groups6=(), icmp6=()) -> None:
        super().__init__(ifindex)
        self.udp_ports = tuple(ports)
        self.groups6 = tuple(groups6)
        self.icmp6_types = tuple(icmp6)
        self.got: list[tuple] = []
        self.events: list[tuple] = []
        self.timers: list[float] = []
        self.deadline: float | None = None
        self.started = self.stopped = 0

    def start(self, stack, now):
        self.started += 1

    def stop(self, stack, now):
        self.stopped += 1

    def next_deadline(self):
        return self.deadline

    def on_timer(self, stack, now):
        self.timers.append(now)
        self.deadline = None

    def on_udp(self, stack, iface, family, src, sport, dst, dport, data, now):
        self.got.append((family, src, sport, dst, dport, data))

    def on_icmp6(self, stack, iface, src, dst, hlim, message, now):
        self.got.append(("icmp6", src, dst, hlim, bytes(message)))

    def on_address(self, stack, iface, addr, event, now):
        self.events.append((addr, event, now))


@pytest.fixture
def lan():
    w = FakeLan("eth", "eth,ip=10.9.0.1/24,ip=fc00:9::1/64")
    yield w
    w.close()


def test_a_broadcast_from_nowhere_reaches_an_agent_and_the_answer_to_its_mac(lan):
    """A DHCP exchange's shape: a client without an address broadcasts from 0.0.0.0; the
    server answers to the client's MAC at an address the client does not have yet."""
    client, server = lan.stacks
    c = client.add_agent(Recorder(2, ports=[(4, 68)]))
    s = server.add_agent(Recorder(2, ports=[(4, 67)]))
    assert (c.started, s.started) == (1, 1)
    client.send_udp_on(client.interfaces[2], ANY, 68, BCAST, 67, b"discover")
    lan.run_until(lambda: s.got, 1.0)
    assert s.got == [(4, ANY, 68, BCAST, 67, b"discover")]
    offered = ipaddress.ip_address("10.9.0.50").packed
    server.send_udp_on(server.interfaces[2], ipaddress.ip_address("10.9.0.1").packed, 67,
                       offered, 68, b"offer", client.interfaces[2].mac)
    lan.run_until(lambda: c.got, 1.0)
    assert c.got == [(4, ipaddress.ip_address("10.9.0.1").packed, 67, offered, 68, b"offer")]
    assert not client.stats.get("udp_no_port")


def test_ports_are_per_interface_and_exclusive(lan):
    client, _ = lan.stacks
    client.add_agent(Recorder(2, ports=[(4, 68)]))
    with pytest.raises(OSError, match="port 68 on eth0 is taken"):
        client.add_agent(Recorder(2, ports=[(4, 68)]))
    # a datagram to a port without an agent still goes to the sockets (none here)
    client.send_udp_on(client.interfaces[2], ANY, 68, BCAST, 69, b"x")
    lan.run_until(lambda: lan.stacks[1].stats.get("udp_no_port"), 1.0)


def test_a_joined_multicast_group_is_heard_and_left(lan):
    client, server = lan.stacks
    lan.run_until(lambda: all(a.state == "preferred" for s in lan.stacks
                              for a in s.interfaces[2].v6), 5.0)
    s = server.add_agent(Recorder(2, ports=[(6, 547)], groups6=[ALL_DHCP6]))
    ll = client.interfaces[2].v6[0].addr
    client.send_udp_on(client.interfaces[2], ll, 546, ALL_DHCP6, 547, b"solicit")
    lan.run_until(lambda: s.got, 1.0)
    assert s.got[0][1:] == (ll, 546, ALL_DHCP6, 547, b"solicit")
    server.remove_agent(s)
    assert s.stopped == 1 and ALL_DHCP6 not in server.interfaces[2].groups6


def test_icmp6_router_messages_reach_their_agents(lan):
    client, server = lan.stacks
    lan.run_until(lambda: all(a.state == "preferred" for s in lan.stacks
                              for a in s.interfaces[2].v6), 5.0)
    r = server.add_agent(Recorder(2, ports=(), icmp6=[133]))
    rs = bytearray(8)
    src = client.interfaces[2].v6[0].addr
    all_routers = ipaddress.ip_address("ff02::2").packed
    from threadnet.wire import icmp6
    icmp6.build(rs, src, all_routers, 133, 0, 0, b"")
    server.interfaces[2].groups6[all_routers] = 1
    client.send_icmp6_on(client.interfaces[2], src, all_routers, rs)
    lan.run_until(lambda: r.got, 1.0)
    kind, rsrc, rdst, hlim, message = r.got[0]
    assert (rsrc, rdst, hlim, message[0]) == (src, all_routers, 255, 133)


def test_agent_timers_run_on_the_stacks_time(lan):
    client, _ = lan.stacks
    a = client.add_agent(Recorder(2))
    a.deadline = lan.now + 0.5
    assert client.next_deadline() <= a.deadline
    lan.run_until(lambda: a.timers, 1.0)
    assert a.timers[0] == pytest.approx(a.deadline or lan.now, abs=lan.STEP + 1e-9)


def test_a_duplicate_address_is_news_for_the_agents(lan):
    """Both stacks take fc00:9::1: the one that adds it second sees DAD fail, and its
    agent hears it (SLAAC then makes another address)."""
    client, _ = lan.stacks
    lan.run_until(lambda: all(a.state == "preferred" for a in lan.stacks[1].interfaces[2].v6),
                  5.0)
    a = client.add_agent(Recorder(2))
    client.addr_add(2, "fc00:9::1/64", lan.now, origin="ra")
    lan.run_until(lambda: a.events, 3.0)
    assert a.events[0][:2] == (ipaddress.ip_address("fc00:9::1").packed, DADFAILED)


def test_address_lifetimes_deprecate_then_remove(lan):
    client, _ = lan.stacks
    lan.run_until(lambda: all(a.state == "preferred" for a in client.interfaces[2].v6), 5.0)
    rec = client.add_agent(Recorder(2))
    t0 = lan.now
    client.addr_add(2, "fc00:9::77/64", t0, valid_lft=4.0, preferred_lft=2.0, origin="ra")
    client.addr_add(2, "fc00:9::78/64", t0, origin="static")
    client.addr_add(2, "10.9.0.77/24", t0, valid_lft=3.0, origin="dhcp")
    a = next(x for x in client.interfaces[2].v6
             if x.addr == ipaddress.ip_address("fc00:9::77").packed)
    assert (a.origin, a.valid_until, a.preferred_until) == ("ra", t0 + 4.0, t0 + 2.0)
    assert client.interfaces[2].v4_life[ipaddress.ip_address("10.9.0.77").packed][2] == "dhcp"
    lan.run_until(lambda: a.deprecated, 3.0)
    assert lan.now == pytest.approx(t0 + 2.0, abs=lan.STEP + 1e-9)
    # still the stack's (existing connections go on), but not chosen as a source
    assert client._is_local6(a.addr)
    assert client._source6(ipaddress.ip_address("fc00:9::1").packed)[-1] == 0x78
    lan.run_until(lambda: "10.9.0.77/24" not in client.addresses(), 2.0)
    lan.run_until(lambda: a not in client.interfaces[2].v6, 2.0)
    assert lan.now == pytest.approx(t0 + 4.0, abs=lan.STEP + 1e-9)
    assert not any(r.dst == ipaddress.ip_network("10.9.0.0/24") for r in client.routes4)
    assert [e[1] for e in rec.events] == [EXPIRED, EXPIRED]


def test_renewed_lifetimes_undeprecate(lan):
    client, _ = lan.stacks
    t0 = lan.now
    client.addr_add(2, "fc00:9::77/64", t0, valid_lft=4.0, preferred_lft=1.0)
    a = client.interfaces[2].v6[-1]
    lan.run_until(lambda: a.deprecated, 2.0)
    client.addr_set_lifetimes(2, "fc00:9::77", 100.0, 50.0, lan.now)
    assert not a.deprecated and a.valid_until == lan.now + 100.0
    with pytest.raises(OSError, match="not on eth0"):
        client.addr_set_lifetimes(2, "fc00:9::99", 1.0, 1.0)


def test_a_route_with_a_lifetime_goes(lan):
    client, _ = lan.stacks
    client.addr_add(2, "10.9.0.7/24", lan.now)
    client.route_add("default", "10.9.0.1", proto="dhcp", lifetime=1.5, now=lan.now)
    (r,) = [r for r in client.routes4 if r.dst.prefixlen == 0]
    assert r.proto == "dhcp" and r.expires == pytest.approx(lan.now + 1.5)
    lan.run_until(lambda: not any(r.dst.prefixlen == 0 for r in client.routes4), 2.0)
    # IPv6: a default route per router (as Linux), replaced in place by a new lifetime
    client.route_add("default", "fe80::1", dev=2, proto="ra", lifetime=30, now=lan.now)
    client.route_add("default", "fe80::2", dev=2, proto="ra", lifetime=30, now=lan.now)
    client.route_add("default", "fe80::2", dev=2, proto="ra", lifetime=60, replace=True,
                     now=lan.now)
    gws = sorted(str(r.gateway) for r in client.routes6 if r.dst.prefixlen == 0)
    assert gws == ["fe80::1", "fe80::2"]


def test_close_stops_the_agents(lan):
    client, _ = lan.stacks
    a = client.add_agent(Recorder(2))
    client.close()
    assert a.stopped == 1 and not client.agents


def test_server_items_parse_with_their_options():
    c = parse_config("eth,dhcpd=10.0.0.100-10.0.0.150,dhcpd.lease=600,"
                     "dhcpd.host=02:00:00:00:00:05/10.0.0.50,ra=fd00:1::/64,ra.managed,-dhcpd6")
    assert c.servers == {"dhcpd": {"": ["10.0.0.100-10.0.0.150"], "lease": ["600"],
                                   "host": ["02:00:00:00:00:05/10.0.0.50"]},
                         "ra": {"": ["fd00:1::/64"], "managed": [""]}}
    assert c.servers_off == {"dhcpd6"}
    assert parse_config("dhcpd4").servers == {"dhcpd": {"": []}}
    for bad in ["dhcpd.=1", "dhcpd="]:
        with pytest.raises(ConfigError):
            parse_config(bad)
    with pytest.raises(ConfigError, match=r"unknown option dhcpd\.leese .*dhcpd\.lease"):
        autoconf.option({"": [], "leese": ["1"]}, "", "dhcpd", ("lease", "router"))


def test_a_method_without_an_agent_is_refused_before_anything_changes(monkeypatch):
    monkeypatch.setattr(autoconf, "CLIENTS", {})
    monkeypatch.setattr(autoconf, "SERVERS", {})
    for text, methods in [("dhcp", "dhcp4"), ("dhcpv6", "dhcp6"), ("rd6", "rd"),
                          ("slaac", "rd"), ("auto6", "dhcp6, rd"), ("ra", "ra")]:
        with pytest.raises(DynamicConfigNotImplemented, match=f"^{methods}: not implemented"):
            autoconf.check(parse_config(text))
    autoconf.check(parse_config("-static,-all,-dhcpd"))  # undoing is always fine
    w = FakeLan("eth")
    try:
        with pytest.raises(DynamicConfigNotImplemented):
            w.stacks[0].configure("ip=10.1.0.1/24,dhcp")
        assert "10.1.0.1/24" not in w.stacks[0].addresses()
    finally:
        w.close()


def test_slaac_is_router_discovery_with_addresses():
    assert autoconf.methods(parse_config("slaac")) == ["rd"]
    assert autoconf.methods(parse_config("auto")) == ["dhcp4", "dhcp6", "rd"]
    assert ipv6.ALL_NODES  # (the module is what the agents send with)


def test_a_high_preference_router_wins_a_tie(lan):
    """RFC 4191: between equal default routes the router's preference decides."""
    client, _ = lan.stacks
    client.route_add("default", "fe80::1", dev=2, proto="ra", pref="low", metric=1024)
    client.route_add("default", "fe80::2", dev=2, proto="ra", pref="high", metric=1024)
    best = client.routes6.lookup(int(ipaddress.ip_address("2001:db8::1")))
    assert str(best.gateway) == "fe80::2"
