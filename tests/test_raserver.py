"""The router advertisement server (``stack/raserver.py``) on fake time: what it
advertises, when (RFC 4861 6.2.4-6.2.6), its answers to solicitations, its last
advertisement, its configuration items, and hosts on a FakeLan configuring themselves
from it with router discovery and SLAAC."""

from __future__ import annotations

import ipaddress
import random

import pytest

from threadnet.stack.config import ConfigError
from threadnet.stack.raserver import MAX_INITIAL_RTR_ADVERT_INTERVAL, RaServer
from threadnet.wire import icmp6, ipv6

from stack_helpers import FakeLan

INF = icmp6.INFINITE_LIFETIME


def p6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


class Lan:
    """A router (stacks[0]) and hosts on a FakeLan, every frame recorded."""

    def __init__(self, *configs: str) -> None:
        self.lan = FakeLan(*configs)
        self.stacks = self.lan.stacks
        self.sent: list[tuple[float, int, bytes]] = []
        for i, link in enumerate(self.lan.links):
            orig = link._send
            link._send = lambda frame, i=i, orig=orig: (
                self.sent.append((self.lan.now, i, bytes(frame))), orig(frame))

    def ras(self, index: int = 0) -> list[tuple[float, bytes, icmp6.RouterAdvert]]:
        """The advertisements stack ``index`` sent: (time, frame, parsed)."""
        out = []
        for t, i, f in self.sent:
            if i == index and f[12:14] == b"\x86\xdd" and f[20] == 58 and f[54] == 134:
                icmp6.parse(f[54:], f[22:38], f[38:54])
                out.append((t, f, icmp6.parse_router_advert(f[54:])))
        return out

    def run(self, seconds: float) -> None:
        end = self.lan.now + seconds
        self.lan.run_until(lambda: self.lan.now >= end - 1e-9, seconds + 1)

    def ll(self, index: int) -> bytes:
        return next(a.addr for a in self.stacks[index].interfaces[2].v6
                    if a.addr[:2] == b"\xfe\x80")

    def solicit(self, index: int = 1, *, src: bytes | None = None, slla: bool = True,
                hlim: int = 255) -> None:
        """Stack ``index`` sends a router solicitation (or one is put straight into the
        router, for a hop limit no stack sends)."""
        stack = self.stacks[index]
        iface = stack.interfaces[2]
        src = self.ll(index) if src is None else src
        out = bytearray(16)
        n = icmp6.build_rs(out, src, ipv6.ALL_ROUTERS, iface.mac if slla else None)
        if hlim == 255:
            stack.send_icmp6_on(iface, src, ipv6.ALL_ROUTERS, out[:n])
            return
        packet = bytearray(40 + n)
        ipv6.build(packet, src, ipv6.ALL_ROUTERS, ipv6.PROTO_ICMPV6, n, hop_limit=hlim)
        packet[40:] = out[:n]
        router = self.stacks[0]
        router.input(router.interfaces[2], ipv6.multicast_mac(ipv6.ALL_ROUTERS) + iface.mac
                     + b"\x86\xdd" + bytes(packet), self.lan.now)

    def close(self) -> None:
        self.lan.close()


@pytest.fixture
def make():
    made: list[Lan] = []

    def build(*configs: str) -> Lan:
        made.append(Lan(*configs))
        return made[-1]

    yield build
    for lan in made:
        lan.close()


def server(stack) -> RaServer:
    (agent,) = stack.find_agents("ra")
    return agent


# -- what it advertises --------------------------------------------------------------------
def test_the_advertisement_holds_what_it_was_given(make):
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64,ra=fd00:2::/64,ra.managed,ra.other,"
               "ra.rdnss=fd00:1::53,ra.rdnss=fd00:1::54,ra.dnssl=lan.example,"
               "ra.dnssl=b.example,ra.lifetime=900,ra.interval=60,ra.mtu=1400,ra.valid=3600,"
               "ra.preferred=1800,ra.hoplimit=32,ra.pref=high", "eth")
    lan.run(2)
    ((t, f, ra),) = lan.ras()
    router = lan.stacks[0].interfaces[2]
    assert f[:6] == ipv6.multicast_mac(ipv6.ALL_NODES) and f[6:12] == router.mac
    assert (f[21], f[22:38], f[38:54]) == (255, lan.ll(0), ipv6.ALL_NODES)
    assert (ra.cur_hop_limit, ra.managed, ra.other, ra.preference, ra.router_lifetime) == (
        32, True, True, icmp6.PREF_HIGH, 900)
    assert (ra.slla, ra.mtu) == (router.mac, 1400)
    assert ra.prefixes == (icmp6.PrefixInfo(p6("fd00:1::"), 64, 0xC0, 3600, 1800),
                           icmp6.PrefixInfo(p6("fd00:2::"), 64, 0xC0, 3600, 1800))
    assert ra.rdnss == (icmp6.DnsServers(180, (p6("fd00:1::53"), p6("fd00:1::54"))),)
    assert ra.dnssl == (icmp6.SearchList(180, ("lan.example", "b.example")),)


def test_without_prefixes_it_advertises_the_interfaces_own(make):
    lan = make("eth,ip=fd00:1::1/64,ip=fd00:2::1/56,ip=10.0.0.1/24,ra", "eth")
    lan.run(2)
    ra = lan.ras()[0][2]
    assert ra.prefixes == (icmp6.PrefixInfo(p6("fd00:1::"), 64, 0xC0, 2592000, 604800),
                           icmp6.PrefixInfo(p6("fd00:2::"), 56, 0x80, 2592000, 604800))
    assert ra.router_lifetime == 1800 and not ra.rdnss and ra.mtu is None
    assert server(lan.stacks[0]).describe()["prefixes_from_interface"]


def test_nothing_goes_out_before_the_link_local_address_passes_dad(make):
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64", "eth")
    start = lan.lan.now
    lan.run(3)
    first = lan.ras()[0][0]
    assert first == pytest.approx(start + 1.0, abs=lan.lan.STEP + 1e-6)


def test_an_advertisement_too_big_for_the_minimum_mtu_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        RaServer(2, [f"fd00:{i:x}::/64" for i in range(40)])
    with pytest.raises(ValueError, match="link-local"):
        RaServer(2, ["fe80::/64"])
    with pytest.raises(ValueError, match="preferred"):
        RaServer(2, ["fd00::/64"], valid=10, preferred=20)


# -- when ----------------------------------------------------------------------------------
def test_unsolicited_timing(make):
    """RFC 4861 6.2.4: random intervals between MinRtrAdvInterval (a third of the maximum)
    and MaxRtrAdvInterval, the first three no longer than 16 s."""
    lan = make("eth,ip=fd00:1::1/64", "eth")
    lan.stacks[0].add_agent(RaServer(2, ["fd00:1::/64"], interval=40, rng=random.Random(4)))
    lan.run(400)
    times = [t for t, _f, _ra in lan.ras()]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 10
    assert all(g <= MAX_INITIAL_RTR_ADVERT_INTERVAL + 0.02 for g in gaps[:3])
    assert all(0.33 * 40 - 0.02 <= g <= 40 + 0.02 for g in gaps[3:])
    assert len({round(g, 1) for g in gaps[3:]}) > 3  # random, not a fixed period


def test_a_solicitation_is_answered_soon_and_rate_limited(make):
    """RFC 4861 6.2.6: a multicast answer within MAX_RA_DELAY_TIME, but no sooner than
    MIN_DELAY_BETWEEN_RAS after the last one; a burst of solicitations gets one."""
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64", "eth")
    ra = server(lan.stacks[0])
    lan.run(5)
    ra.next_ra = lan.lan.now + 10_000  # (no unsolicited one in the way)
    before = len(lan.ras())
    sent = lan.lan.now
    lan.solicit()
    lan.lan.run_until(lambda: len(lan.ras()) > before, 2)
    assert lan.ras()[-1][0] - sent <= 0.5 + lan.lan.DELAY + lan.lan.STEP
    answered = lan.ras()[-1][0]
    for _ in range(5):
        lan.solicit()
    lan.lan.run_until(lambda: len(lan.ras()) > before + 1, 5)
    assert lan.ras()[-1][0] == pytest.approx(answered + 3.0, abs=lan.lan.STEP + 1e-6)
    lan.run(5)
    assert len(lan.ras()) == before + 2
    assert ra.counters["rs"] == 6


def test_bad_solicitations_are_ignored(make):
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64", "eth")
    ra = server(lan.stacks[0])
    lan.run(2)
    lan.solicit(hlim=64)
    lan.solicit(src=ipv6.UNSPECIFIED)  # from :: with a link-layer address: RFC 4861 6.1.1
    lan.run(1)
    assert ra.counters.get("rs_invalid") == 2 and "rs" not in ra.counters
    lan.solicit(src=ipv6.UNSPECIFIED, slla=False)
    lan.run(1)
    assert ra.counters["rs"] == 1


def test_it_joins_all_routers_and_says_goodbye(make):
    """Stopping sends a last advertisement with router lifetime 0: the host's default
    route through it goes at once; its addresses stay."""
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64", "eth,slaac")
    router, host = lan.stacks
    assert router.interfaces[2].groups6.get(ipv6.ALL_ROUTERS) == 1
    lan.lan.run_until(lambda: any(r.dst.prefixlen == 0 for r in host.routes6), 10)
    router.configure("-ra")
    assert not router.find_agents("ra")
    assert ipv6.ALL_ROUTERS not in router.interfaces[2].groups6
    assert lan.ras()[-1][2].router_lifetime == 0
    lan.run(0.2)
    assert not any(r.dst.prefixlen == 0 for r in host.routes6)
    assert any(a.addr[:2] == b"\xfd\x00" for a in host.interfaces[2].v6)


# -- hosts configure themselves from it ------------------------------------------------------
def test_hosts_autoconfigure_and_reach_each_other_through_it(make):
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64,ra.rdnss=fd00:1::53,ra.dnssl=lan.example",
               "eth,slaac", "eth,slaac")
    router, a, b = lan.stacks
    router.forwarding = True

    def configured(s):
        return [x for x in s.interfaces[2].v6 if x.addr[:8] == p6("fd00:1::")[:8]
                and x.state == "preferred"]

    lan.lan.run_until(lambda: configured(a) and configured(b), 15)
    (addr_a,), (addr_b,) = configured(a), configured(b)
    assert addr_a.addr != addr_b.addr
    for host in (a, b):
        (d,) = [r for r in host.routes6 if r.dst.prefixlen == 0]
        assert d.gateway == ipaddress.IPv6Address(lan.ll(0)) and d.proto == "ra"
        assert host.nameservers == ["fd00:1::53"]
        assert host.resolver.learned()["rd:eth0"][1] == ["lan.example"]
    ping = a.start_ping(str(ipaddress.IPv6Address(addr_b.addr)), timeout=2)
    lan.lan.run_until(lambda: ping.done, 3)
    assert ping.rtts
    ping = a.start_ping("fd00:1::1", timeout=2)
    lan.lan.run_until(lambda: ping.done, 3)
    assert ping.rtts


def test_a_server_on_a_host_that_does_not_forward_is_allowed(make):
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64", "eth,slaac")
    assert not lan.stacks[0].forwarding
    lan.lan.run_until(lambda: any(r.dst.prefixlen == 0 for r in lan.stacks[1].routes6), 10)
    lan = make("eth,ip=fd00:1::1/64,ra=fd00:1::/64,ra.lifetime=0", "eth,rd")
    lan.run(3)
    assert lan.ras()[0][2].router_lifetime == 0
    assert not any(r.dst.prefixlen == 0 for r in lan.stacks[1].routes6)
    assert any(str(r.dst) == "fd00:1::/64" for r in lan.stacks[1].routes6)


# -- configuration ----------------------------------------------------------------------------
def test_configuration_items_and_their_errors(make):
    lan = make("eth,ip=fd00:1::1/64", "eth")
    router = lan.stacks[0]
    router.configure("ra=fd00:1::/64,ra.interval=2,ra.valid=infinity,ra.dnssl=lan.example.")
    d = server(router).describe()
    assert (d["interval"], d["min_interval"], d["router_lifetime"]) == (2.0, 2.0, 6)
    assert d["prefixes"][0]["valid"] == INF and d["prefixes"][0]["preferred"] == 604800
    assert d["dnssl"] == ["lan.example"] and d["dns_lifetime"] == 6
    for text, match in (
            ("ra.bogus=1", r"unknown option ra\.bogus"),
            ("ra.lifetime=x", r"bad ra\.lifetime='x'"),
            ("ra.lifetime=9001", r"bad ra\.lifetime=9001: 0\.\.9000"),
            ("ra.mtu=1000", r"bad ra\.mtu=1000"),
            ("ra.mtu=9000", r"the link carries at most MTU 1500"),
            ("ra.valid=5,ra.preferred=10", "must not exceed"),
            ("ra=fd00::1/64", "host bits"),
            ("ra=fe80::/64", "link-local"),
            ("ra.dnssl=bad..name", "bad domain name"),
            ("ra.pref=top", "high, medium or low"),
            ("ra.managed=maybe", r"bad ra\.managed='maybe'"),
            ("ra.interval=0", "at most 1800"),
            ("ra.interval=soon", r"bad ra\.interval")):
        router.links[2].max_frame_known = True
        with pytest.raises(ConfigError, match=match):
            router.configure("ra=fd00:5::/64," + text)
        assert server(router).describe()["interval"] == 2.0  # the running one stays
    # asked again, the server restarts with the new options
    router.configure("ra=fd00:5::/64,ra.managed=1")
    d = server(router).describe()
    assert d["managed"] and d["prefixes"][0]["prefix"] == "fd00:5::/64"
    assert d["interval"] == 600.0 and d["router_lifetime"] == 1800
