"""Router discovery and SLAAC (``stack/rdisc.py``) on fake time: core stacks on a FakeLan,
one of them the router that sends hand-made advertisements (or runs the RA server).
Solicitation timing, what an advertisement sets up and how its lifetimes end, the
2-hour rule, RFC 7217 addresses and their DAD retries, RFC 8981 temporary addresses,
the bounds, and undoing it all."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random

import pytest

from threadnet.stack import autoconf
from threadnet.stack.agents import DADFAILED
from threadnet.stack.rdisc import (
    IDGEN_RETRIES,
    MAX_DNS_SERVERS,
    MAX_PREFIXES,
    MAX_ROUTERS,
    REGEN_ADVANCE,
    RouterDiscovery,
    reserved_iid,
    stable_iid,
    stable_secret,
)
from threadnet.wire import icmp6, ipv6

from stack_helpers import FakeLan

SECRET = bytes(range(16))
PREFIX = ipaddress.IPv6Address("fd00:7::").packed
INF = icmp6.INFINITE_LIFETIME


def p6(text: str) -> bytes:
    return ipaddress.IPv6Address(text).packed


def ntop(addr: bytes) -> str:
    return str(ipaddress.IPv6Address(addr))


class Net:
    """A router (stacks[0], which sends the advertisements a test makes) and a host
    (stacks[1]) on a FakeLan, every frame recorded with its time and sender."""

    def __init__(self, router_cfg: str = "eth,ip=fd00:7::1/64", host_cfg: str = "eth",
                 extra: tuple[str, ...] = ()) -> None:
        self.lan = FakeLan(router_cfg, host_cfg, *extra)
        self.router, self.host = self.lan.stacks[:2]
        self.sent: list[tuple[float, int, bytes]] = []
        for i, link in enumerate(self.lan.links):
            orig = link._send
            link._send = lambda frame, i=i, orig=orig: (
                self.sent.append((self.lan.now, i, bytes(frame))), orig(frame))

    def settle(self) -> None:
        self.lan.run_until(lambda: all(a.state == "preferred" for s in self.lan.stacks
                                       for a in s.interfaces[2].v6
                                       if a.addr[:2] == b"\xfe\x80"), 5.0)

    @property
    def rll(self) -> bytes:
        return next(a.addr for a in self.router.interfaces[2].v6 if a.addr[:2] == b"\xfe\x80")

    def advertise(self, ra: icmp6.RouterAdvert | None = None, *, src: bytes | None = None,
                  hlim: int = 255, **kw) -> None:
        """The router sends ``ra`` (or one made of ``kw``) to all nodes; ``hlim`` other
        than 255 goes straight into the host, as no stack sends that."""
        ra = ra or icmp6.RouterAdvert(**kw)
        iface = self.router.interfaces[2]
        src = src or self.rll
        out = bytearray(icmp6.router_advert_size(ra))
        icmp6.build_router_advert(out, src, ipv6.ALL_NODES, ra)
        if hlim == 255:
            self.router.send_icmp6_on(iface, src, ipv6.ALL_NODES, out)
            self.lan.step()
            self.lan.run_until(lambda: not self.lan.queue, 1.0)
            return
        packet = bytearray(40 + len(out))
        ipv6.build(packet, src, ipv6.ALL_NODES, ipv6.PROTO_ICMPV6, len(out), hop_limit=hlim)
        packet[40:] = out
        frame = ipv6.multicast_mac(ipv6.ALL_NODES) + iface.mac + b"\x86\xdd" + bytes(packet)
        self.host.input(self.host.interfaces[2], frame, self.lan.now)

    def rd(self, **kw) -> RouterDiscovery:
        kw.setdefault("secret", SECRET)
        kw.setdefault("rng", random.Random(7))
        return self.host.add_agent(RouterDiscovery(2, **kw))

    def icmp_from(self, index: int, kind: int) -> list[tuple[float, bytes]]:
        return [(t, f) for t, i, f in self.sent if i == index and f[12:14] == b"\x86\xdd"
                and f[20] == 58 and f[54] == kind]

    def host_addrs(self):
        return [a for a in self.host.interfaces[2].v6 if a.addr[:2] != b"\xfe\x80"]

    def close(self) -> None:
        self.lan.close()


@pytest.fixture
def net():
    n = Net()
    yield n
    n.close()


def prefix_ra(valid=86400, preferred=14400, flags=0xC0, prefix=PREFIX, plen=64, **kw):
    kw.setdefault("router_lifetime", 1800)
    return icmp6.RouterAdvert(prefixes=(icmp6.PrefixInfo(prefix, plen, flags, valid,
                                                         preferred),), **kw)


def expected_stable(ifname: str = "eth0", counter: int = 0, prefix: bytes = PREFIX,
                    secret: bytes = SECRET) -> bytes:
    """RFC 7217's F computed here, independently of rdisc.stable_iid."""
    name = ifname.encode()
    data = prefix[:8] + bytes([len(name)]) + name + b"\x00" + counter.to_bytes(4, "big") + secret
    return prefix[:8] + hashlib.sha256(data).digest()[:8]


def default_routes(stack):
    return [r for r in stack.routes6 if r.dst.prefixlen == 0]


# -- solicitation --------------------------------------------------------------------------
def test_solicits_three_times_from_the_link_local_address(net):
    """RFC 4861 6.3.7: after DAD of the link-local address, with our MAC, to ff02::2 with
    hop limit 255, 4 s apart, three in all."""
    start = net.lan.now
    net.rd()
    net.lan.run_until(lambda: net.lan.now > start + 20, 25)
    rs = net.icmp_from(1, icmp6.ROUTER_SOLICITATION)
    assert len(rs) == 3
    t0 = rs[0][0]
    assert start + 1.0 - 1e-6 <= t0 <= start + 1.0 + net.lan.STEP + 1e-6  # LL DAD ends at +1
    assert [round(t - t0, 6) for t, _ in rs] == [0, 4.0, 8.0]
    host_ll = net.host.interfaces[2].v6[0].addr
    for _, f in rs:
        assert f[21] == 255 and f[22:38] == host_ll and f[38:54] == ipv6.ALL_ROUTERS
        assert f[:6] == ipv6.multicast_mac(ipv6.ALL_ROUTERS)
        assert icmp6.parse_rs(f[54:]) == net.host.interfaces[2].mac
    assert net.host.find_agents("rd")[0].describe()["solicitations"] == 3


def test_the_first_solicitation_waits_a_random_delay_when_the_address_is_ready(net):
    net.settle()
    start = net.lan.now
    net.rd(rng=random.Random(3))
    net.lan.run_until(lambda: net.icmp_from(1, icmp6.ROUTER_SOLICITATION), 2)
    delay = net.icmp_from(1, icmp6.ROUTER_SOLICITATION)[0][0] - start
    assert 0 <= delay <= 1.0 + net.lan.STEP
    assert delay == pytest.approx(random.Random(3).uniform(0, 1.0), abs=net.lan.STEP + 1e-9)


def test_a_router_that_answers_ends_the_solicitations(net):
    net.settle()
    net.rd()
    net.lan.run_until(lambda: net.icmp_from(1, icmp6.ROUTER_SOLICITATION), 2)
    net.advertise(router_lifetime=600)
    end = net.lan.now + 15
    net.lan.run_until(lambda: net.lan.now > end, 16)
    assert len(net.icmp_from(1, icmp6.ROUTER_SOLICITATION)) == 1


# -- what an advertisement sets up ------------------------------------------------------------
def test_an_advert_sets_router_onlink_prefix_mtu_dns_and_flags(net):
    net.settle()
    agent = net.rd()
    ra = icmp6.RouterAdvert(
        cur_hop_limit=32, flags=icmp6.RA_MANAGED | icmp6.RA_OTHER | 0x08,
        router_lifetime=1800, reachable_time=30000, retrans_timer=1000,
        slla=net.router.interfaces[2].mac, mtu=1400,
        prefixes=(icmp6.PrefixInfo(PREFIX, 64, 0xC0, 7200, 3600),),
        routes=(icmp6.RouteInfo(p6("fd99::"), 16, icmp6.PREF_LOW, 300),),
        rdnss=(icmp6.DnsServers(600, (p6("fd00:7::53"), p6("fe80::53"))),),
        dnssl=(icmp6.SearchList(600, ("Lan.Example", "other.example")),))
    net.advertise(ra)
    (d,) = default_routes(net.host)
    assert (str(d.gateway), d.proto, d.metric, d.pref) == (ntop(net.rll), "ra", 1024, "high")
    assert d.expires == pytest.approx(net.lan.now + 1800, abs=0.2)
    onlink = [r for r in net.host.routes6 if r.dst == ipaddress.IPv6Network("fd00:7::/64")]
    assert [(r.gateway, r.proto) for r in onlink] == [(None, "ra")]
    assert onlink[0].expires == pytest.approx(net.lan.now + 7200, abs=0.2)
    (more,) = [r for r in net.host.routes6 if r.dst == ipaddress.IPv6Network("fd99::/16")]
    assert (str(more.gateway), more.pref) == (ntop(net.rll), "low")
    assert not net.host_addrs()  # rd without slaac makes no address
    assert net.host.interfaces[2].mtu == 1400
    assert net.host.nameservers == ["fd00:7::53", "fe80::53%eth0"]
    assert net.host.resolver.learned()["rd:eth0"][1] == ["lan.example", "other.example"]
    desc = agent.describe()
    assert (desc["managed"], desc["other"], desc["hop_limit"], desc["reachable_time"],
            desc["retrans_timer"], desc["mtu"]) == (True, True, 32, 30000, 1000, 1400)
    assert desc["routers"][0]["preference"] == "high"
    # the router's MAC is known without asking (RFC 4861 6.3.4)
    entry = net.host.interfaces[2].nd.entries[net.rll]
    assert (entry.mac, entry.state) == (net.router.interfaces[2].mac, "STALE")
    # a host on the prefix is reached on-link, without the router
    assert net.host.routes6.lookup(int(ipaddress.IPv6Address("fd00:7::99"))).gateway is None


def test_invalid_adverts_are_dropped(net):
    net.settle()
    agent = net.rd()
    net.advertise(prefix_ra(), hlim=64)  # RFC 4861 6.1.2: not from the link
    net.advertise(prefix_ra(), src=p6("fd00:7::1"))  # not link-local
    bad = prefix_ra(rdnss=(icmp6.DnsServers(60, (p6("fd00:7::53"),)),))
    out = bytearray(icmp6.router_advert_size(bad))
    icmp6.build_router_advert(out, net.rll, ipv6.ALL_NODES, bad)
    out[-23] = 4  # the RDNSS option (the last, 24 bytes) claims 32: runs past the end
    msg = bytearray(len(out))  # with a good checksum, so that it reaches the agent
    icmp6.build(msg, net.rll, ipv6.ALL_NODES, out[0], 0, int.from_bytes(out[4:8], "big"),
                out[8:])
    net.router.send_icmp6_on(net.router.interfaces[2], net.rll, ipv6.ALL_NODES, msg)
    net.lan.run_until(lambda: agent.counters.get("ra_malformed"), 1)
    assert agent.counters == {"ra_invalid": 2, "ra_malformed": 1}
    assert not default_routes(net.host) and not net.host.nameservers


def test_mtu_outside_what_the_link_and_ipv6_allow_is_ignored(net):
    net.settle()
    agent = net.rd()
    net.advertise(mtu=1279)
    net.host.links[2].max_frame_known = True  # it carries MTU 1500 at most
    net.advertise(mtu=9000)
    assert net.host.interfaces[2].mtu == 1500 and agent.counters["mtu_ignored"] == 2


def test_lifetimes_end_routes_dns_and_addresses(net):
    """The router's lifetime ends its default route; the prefix's preferred lifetime
    deprecates the address and its valid lifetime removes it with the on-link route; the
    RDNSS lifetime makes the resolver forget the server."""
    net.settle()
    agent = net.rd(slaac=True)
    t0 = net.lan.now
    net.advertise(prefix_ra(valid=8, preferred=4, router_lifetime=3,
                            rdnss=(icmp6.DnsServers(2, (p6("fd00:7::53"),)),)))
    (a,) = net.host_addrs()
    assert (a.origin, a.flags) == ("ra", ())  # as Linux shows a SLAAC address
    net.lan.run_until(lambda: not net.host.nameservers, 3)
    assert net.lan.now == pytest.approx(t0 + 2, abs=0.2)
    assert "rd:eth0" not in net.host.resolver.learned()
    net.lan.run_until(lambda: not default_routes(net.host), 3)
    assert net.lan.now == pytest.approx(t0 + 3, abs=0.2)
    assert not agent.routers
    net.lan.run_until(lambda: a.deprecated, 3)
    assert net.lan.now == pytest.approx(t0 + 4, abs=0.2) and a.state == "preferred"
    net.lan.run_until(lambda: not net.host_addrs(), 5)
    assert net.lan.now == pytest.approx(t0 + 8, abs=0.2)
    assert not [r for r in net.host.routes6 if r.proto == "ra"]
    assert not agent.prefixes and not agent.made


def test_a_zero_lifetime_ends_router_prefix_and_dns_at_once(net):
    net.settle()
    net.rd()
    net.advertise(prefix_ra(rdnss=(icmp6.DnsServers(600, (p6("fd00:7::53"),)),),
                            dnssl=(icmp6.SearchList(600, ("lan.example",)),)))
    assert default_routes(net.host) and net.host.nameservers
    net.advertise(prefix_ra(valid=0, preferred=0, router_lifetime=0,
                            rdnss=(icmp6.DnsServers(0, (p6("fd00:7::53"),)),),
                            dnssl=(icmp6.SearchList(0, ("lan.example",)),)))
    assert not default_routes(net.host) and not net.host.nameservers
    assert not [r for r in net.host.routes6 if r.proto == "ra"]
    assert "rd:eth0" not in net.host.resolver.learned()


# -- SLAAC ------------------------------------------------------------------------------------
def test_slaac_makes_a_stable_address_rfc7217(net):
    net.settle()
    net.rd(slaac=True)
    net.advertise(prefix_ra())
    (a,) = net.host_addrs()
    assert a.addr == expected_stable() == PREFIX[:8] + stable_iid(PREFIX, "eth0", b"", 0, SECRET)
    assert (a.plen, a.state) == (64, "tentative")
    assert a.valid_until == pytest.approx(net.lan.now + 86400, abs=0.2)
    assert a.preferred_until == pytest.approx(net.lan.now + 14400, abs=0.2)
    net.lan.run_until(lambda: a.state == "preferred", 2)
    # the host answers on it: the router pings it
    ping = net.router.start_ping(ntop(a.addr), timeout=2)
    net.lan.run_until(lambda: ping.done, 3)
    assert ping.rtts and ping.error is None


def test_stable_addresses_are_stable_and_opaque(net):
    """The same prefix, interface and secret give the same address, after a restart and on
    another stack; another prefix or secret gives another identifier."""
    net.settle()
    agent = net.rd(slaac=True)
    net.advertise(prefix_ra())
    first = net.host_addrs()[0].addr
    net.host.remove_agent(agent)
    assert not net.host_addrs()
    net.rd(slaac=True)
    net.advertise(prefix_ra())
    assert net.host_addrs()[0].addr == first
    other = p6("fd00:8::")
    net.advertise(prefix_ra(prefix=other))
    assert {a.addr for a in net.host_addrs()} == {first, expected_stable(prefix=other)}
    assert expected_stable(prefix=other)[8:] != first[8:]
    assert expected_stable(secret=bytes(16))[8:] != first[8:]
    assert expected_stable(ifname="eth1")[8:] != first[8:]


def test_the_default_secret_is_one_per_stack(net):
    a, b = stable_secret(net.host), stable_secret(net.router)
    assert a == stable_secret(net.host) and a != b and len(a) == 16
    stable_secret(net.router, SECRET)
    assert stable_secret(net.router) == SECRET
    with pytest.raises(ValueError):
        stable_secret(net.router, b"short")
    net.settle()
    agent = net.host.add_agent(RouterDiscovery(2, slaac=True))
    net.advertise(prefix_ra())
    assert agent.secret == a
    assert net.host_addrs()[0].addr == expected_stable(secret=a)


def test_reserved_identifiers():
    for iid, reserved in (("0000000000000000", True), ("02005efffe000000", True),
                          ("02005efffe005213", True), ("02005efffeffffff", True),
                          ("02005efffd000000", False), ("fdffffffffffff80", True),
                          ("fdffffffffffffff", True), ("fdffffffffffff7f", False),
                          ("0000000000000001", False)):
        assert reserved_iid(bytes.fromhex(iid)) is reserved, iid


def test_a_duplicate_address_fails_dad_and_the_next_counter_makes_another():
    """RFC 7217 6 / issue 10 acceptance 7: a peer holds the address the host derives; the
    host marks it dadfailed and, a second later, takes the one from counter 1."""
    taken = expected_stable(ifname="eth0")
    net = Net(extra=(f"eth,ip={ntop(taken)}/64",))
    try:
        net.lan.run_until(lambda: all(a.state == "preferred" for s in net.lan.stacks
                                      for a in s.interfaces[2].v6), 5)
        agent = net.rd(slaac=True)
        net.advertise(prefix_ra())
        first = next(a for a in net.host_addrs() if a.addr == taken)
        net.lan.run_until(lambda: first.state == "dadfailed", 2)
        failed_at = net.lan.now
        assert agent.made[taken].dadfailed and agent.counters["dad_failed"] == 1
        net.lan.run_until(lambda: len(net.host_addrs()) == 2, 3)
        assert net.lan.now == pytest.approx(failed_at + 1.0, abs=0.05)  # IDGEN_DELAY
        second = next(a for a in net.host_addrs() if a.addr != taken)
        assert second.addr == expected_stable(counter=1)
        net.lan.run_until(lambda: second.state == "preferred", 2)
        assert first.state == "dadfailed"  # still listed, as ip addr shows it
        assert agent.describe()["prefixes"][0]["dad_counter"] == 1
        # a new advertisement renews the one in use and makes no third
        net.advertise(prefix_ra(valid=90000))
        assert len(net.host_addrs()) == 2
        assert second.valid_until == pytest.approx(net.lan.now + 90000, abs=0.2)
    finally:
        net.close()


def test_dad_retries_are_bounded():
    """Every identifier the host tries is taken: it gives up after IDGEN_RETRIES more."""
    taken = [expected_stable(counter=c) for c in range(IDGEN_RETRIES + 1)]
    net = Net(extra=("eth," + ",".join(f"ip={ntop(a)}/64" for a in taken),))
    try:
        net.lan.run_until(lambda: all(a.state == "preferred" for s in net.lan.stacks
                                      for a in s.interfaces[2].v6), 5)
        agent = net.rd(slaac=True)
        net.advertise(prefix_ra())
        net.lan.run_until(lambda: agent.counters.get("slaac_gave_up"), 10)
        assert sorted(a.addr for a in net.host_addrs()) == sorted(taken)
        assert all(a.state == "dadfailed" for a in net.host_addrs())
        net.advertise(prefix_ra())
        end = net.lan.now + 3
        net.lan.run_until(lambda: net.lan.now >= end, 4)
        assert len(net.host_addrs()) == len(taken)
    finally:
        net.close()


def test_the_two_hour_rule(net):
    """RFC 4862 5.5.3 e: a valid lifetime over two hours, or longer than what is left, is
    taken; a shorter one leaves at least two hours (or what is left, if less); the
    preferred lifetime is always taken."""
    net.settle()
    net.rd(slaac=True)
    net.advertise(prefix_ra(valid=3 * 3600, preferred=3600))
    (a,) = net.host_addrs()

    def left(until):
        return until - net.lan.now

    net.advertise(prefix_ra(valid=60, preferred=30))  # 3 h left: cut to 2 h, not to 60 s
    assert left(a.valid_until) == pytest.approx(7200, abs=0.2)
    assert left(a.preferred_until) == pytest.approx(30, abs=0.2)
    net.advertise(prefix_ra(valid=100, preferred=0))  # 2 h left: ignored
    assert left(a.valid_until) == pytest.approx(7200, abs=0.3)
    net.lan.run_until(lambda: a.deprecated, 1)  # preferred 0 deprecates at once
    net.advertise(prefix_ra(valid=9000, preferred=100))  # over 2 h: taken
    assert left(a.valid_until) == pytest.approx(9000, abs=0.2) and not a.deprecated
    net.advertise(prefix_ra(valid=INF, preferred=INF))
    assert a.valid_until == a.preferred_until == float("inf")
    net.advertise(prefix_ra(valid=5000, preferred=100))  # forever left: 2 h
    assert left(a.valid_until) == pytest.approx(7200, abs=0.2)


def test_a_short_lifetime_lengthens_a_shorter_one(net):
    net.settle()
    net.rd(slaac=True)
    net.advertise(prefix_ra(valid=50, preferred=50))
    (a,) = net.host_addrs()
    net.advertise(prefix_ra(valid=100, preferred=90))  # under 2 h, but more than is left
    assert a.valid_until - net.lan.now == pytest.approx(100, abs=0.2)


def test_slaac_ignores_what_rfc4862_says_to(net):
    net.settle()
    agent = net.rd(slaac=True)
    net.advertise(prefix_ra(prefix=p6("fe80::"), flags=0x40))  # link-local
    net.advertise(prefix_ra(valid=10, preferred=20))  # preferred > valid
    net.advertise(prefix_ra(prefix=p6("fd00:9::"), plen=48))  # 48 + 64 != 128
    net.advertise(prefix_ra(valid=0, preferred=0))  # a new prefix without lifetime
    net.advertise(prefix_ra(prefix=p6("fd00:a::"), flags=0x80))  # on-link only
    assert not net.host_addrs()
    assert agent.counters["prefix_lifetimes_bad"] == 1 and agent.counters["prefix_not_64"] == 1
    # the /48 is still on-link (L flag) though no address is made in it
    assert any(str(r.dst) == "fd00:9::/48" for r in net.host.routes6)


def test_an_autonomous_prefix_without_the_l_flag_is_not_on_link(net):
    net.settle()
    net.rd(slaac=True)
    net.advertise(prefix_ra(flags=0x40))
    (a,) = net.host_addrs()
    assert "noprefixroute" not in a.flags  # (Linux shows none; no route all the same)
    assert not any(r.dst == ipaddress.IPv6Network("fd00:7::/64") for r in net.host.routes6)


def test_a_static_address_keeps_its_own_prefix_route():
    net = Net(host_cfg="eth,ip=fd00:7::5/64")
    try:
        net.settle()
        agent = net.rd()
        net.advertise(prefix_ra(flags=0x80))
        (r,) = [r for r in net.host.routes6 if r.dst == ipaddress.IPv6Network("fd00:7::/64")]
        assert r.proto == "kernel"
        net.host.remove_agent(agent)
        assert [r.proto for r in net.host.routes6
                if r.dst == ipaddress.IPv6Network("fd00:7::/64")] == ["kernel"]
    finally:
        net.close()


# -- temporary addresses (RFC 8981) ---------------------------------------------------------------
def test_temporary_addresses_are_made_and_regenerated(net):
    net.settle()
    agent = net.rd(slaac=True, temporary=True, temp_valid=60, temp_preferred=20,
                   rng=random.Random(11))
    t0 = net.lan.now
    net.advertise(prefix_ra())
    stable = next(a for a in net.host_addrs() if "mngtmpaddr" in a.flags)
    (temp,) = [a for a in net.host_addrs() if "temporary" in a.flags]
    assert stable.addr == expected_stable() and temp.addr[:8] == PREFIX[:8]
    assert temp.addr != stable.addr and temp.origin == "ra"
    desync = agent.prefixes[(PREFIX, 64)].temps[0].desync
    assert 0 <= desync <= 0.4 * 20
    assert temp.valid_until == pytest.approx(t0 + 60, abs=0.2)
    assert temp.preferred_until == pytest.approx(t0 + 20 - desync, abs=0.2)
    # REGEN_ADVANCE before it is deprecated, a new one comes; the old one lives out its life
    net.lan.run_until(lambda: len([a for a in net.host_addrs() if "temporary" in a.flags]) == 2,
                      25)
    assert net.lan.now == pytest.approx(temp.preferred_until - REGEN_ADVANCE, abs=0.05)
    gone_at = temp.valid_until
    net.lan.run_until(lambda: temp.deprecated, 10)
    net.lan.run_until(lambda: temp not in net.host.interfaces[2].v6, 50)
    assert net.lan.now == pytest.approx(gone_at, abs=net.lan.STEP + 1e-6)
    # over a long run: always one preferred temporary address, and no more than live out
    # their valid lifetime at one each (shortest preferred lifetime - REGEN_ADVANCE)
    most = math.ceil(60 / (20 * 0.6 - REGEN_ADVANCE)) + 1
    for _ in range(8):
        end = net.lan.now + 10
        net.lan.run_until(lambda end=end: net.lan.now >= end, 11)
        temps = [a for a in net.host_addrs() if "temporary" in a.flags]
        assert 1 <= len(temps) <= most
        assert any(not a.deprecated for a in temps)
    assert stable in net.host.interfaces[2].v6 and not stable.deprecated
    assert sum(1 for m in agent.made.values() if m.kind == "temporary") == len(
        [a for a in net.host_addrs() if "temporary" in a.flags])


def test_a_temporary_address_is_never_longer_lived_than_its_prefix(net):
    net.settle()
    net.rd(slaac=True, temporary=True, temp_valid=600, temp_preferred=300)
    net.advertise(prefix_ra(valid=100, preferred=50))
    (temp,) = [a for a in net.host_addrs() if "temporary" in a.flags]
    assert temp.valid_until - net.lan.now == pytest.approx(100, abs=0.2)
    assert temp.preferred_until - net.lan.now <= 50 + 0.2
    # a prefix preferred for no more than REGEN_ADVANCE gets no new temporary address
    net.advertise(prefix_ra(prefix=p6("fd00:8::"), valid=100, preferred=4))
    assert not [a for a in net.host_addrs() if "temporary" in a.flags
                and a.addr[:8] == p6("fd00:8::")[:8]]


class _Collide(random.Random):
    """getrandbits gives ``first`` once, then random values."""

    def __init__(self, first: int) -> None:
        super().__init__(5)
        self.first: int | None = first

    def getrandbits(self, k: int) -> int:
        if self.first is not None:
            value, self.first = self.first, None
            return value
        return super().getrandbits(k)


def test_a_duplicate_temporary_address_is_replaced():
    taken = PREFIX[:8] + bytes.fromhex("1234567812345678")
    net = Net(extra=(f"eth,ip={ntop(taken)}/64",))
    try:
        net.lan.run_until(lambda: all(a.state == "preferred" for s in net.lan.stacks
                                      for a in s.interfaces[2].v6), 5)
        agent = net.rd(slaac=True, temporary=True, rng=_Collide(0x1234567812345678))
        net.advertise(prefix_ra())
        bad = next(a for a in net.host_addrs() if a.addr == taken)
        net.lan.run_until(lambda: bad.state == "dadfailed", 2)
        temps = [a for a in net.host_addrs() if "temporary" in a.flags and a is not bad]
        assert len(temps) == 1 and temps[0].state == "tentative"
        assert agent.prefixes[(PREFIX, 64)].temp_failures == 1
    finally:
        net.close()


# -- bounds, several routers, stopping ---------------------------------------------------------
def test_several_routers_and_the_bounds(net):
    net.settle()
    agent = net.rd()
    for i in range(MAX_ROUTERS + 4):
        net.advertise(router_lifetime=600, src=p6(f"fe80::{i + 1:x}"))
    assert len(default_routes(net.host)) == MAX_ROUTERS == len(agent.routers)
    assert agent.counters["routers_full"] == 4
    prefixes = tuple(icmp6.PrefixInfo(p6(f"fd00:{i:x}::"), 64, 0x80, 600, 600)
                     for i in range(MAX_PREFIXES + 4))
    net.advertise(prefixes=prefixes, router_lifetime=600)
    assert len(agent.prefixes) == MAX_PREFIXES and agent.counters["prefixes_full"] == 4
    servers = tuple(p6(f"fd00::{i + 1:x}") for i in range(MAX_DNS_SERVERS + 2))
    net.advertise(router_lifetime=600, rdnss=(icmp6.DnsServers(100, servers[:4]),
                                              icmp6.DnsServers(200, servers[4:])))
    # the full table replaced the entries that would have expired first
    assert len(net.host.nameservers) == MAX_DNS_SERVERS
    assert set(net.host.nameservers) == {ntop(a) for a in servers[2:]}


def test_stopping_undoes_everything(net):
    net.settle()
    before = (list(net.host.routes6), net.host.interfaces[2].mtu)
    net.rd(slaac=True, temporary=True)
    net.advertise(prefix_ra(mtu=1400, routes=(icmp6.RouteInfo(p6("fd99::"), 16),),
                            rdnss=(icmp6.DnsServers(600, (p6("fd00:7::53"),)),)))
    assert len(net.host_addrs()) == 2 and net.host.interfaces[2].mtu == 1400
    net.host.configure("-rd")
    assert not net.host.find_agents("rd")
    assert not net.host_addrs()
    assert (list(net.host.routes6), net.host.interfaces[2].mtu) == before
    assert not net.host.nameservers and not net.host.resolver.learned()


# -- configuration words ----------------------------------------------------------------------
def test_the_configuration_words():
    assert autoconf.CLIENTS["rd"] is not None
    lan = FakeLan("eth,rd", "eth,slaac", "eth,rd6")
    try:
        rd, slaac, rd6 = (s.find_agents("rd")[0] for s in lan.stacks)
        assert (rd.slaac, slaac.slaac, rd6.slaac) == (False, True, False)
        lan.stacks[0].configure("slaac")
        assert lan.stacks[0].find_agents("rd") == [rd] and rd.slaac
        lan.stacks[0].configure("-rd")
        assert not lan.stacks[0].find_agents("rd")
    finally:
        lan.close()


def test_describe_is_plain_data(net):
    import json

    net.settle()
    agent = net.rd(slaac=True, temporary=True)
    net.advertise(prefix_ra(dnssl=(icmp6.SearchList(60, ("lan.example",)),)))
    d = agent.describe(net.lan.now + 10)
    json.dumps(d)
    assert d["routers"][0]["lifetime"] == pytest.approx(1790, abs=0.2)
    assert {a["kind"] for a in d["addresses"]} == {"stable", "temporary"}
    assert d["search"] == [{"domain": "lan.example", "lifetime": pytest.approx(50, abs=0.2)}]


def test_dadfailed_events_for_other_addresses_are_not_its_business(net):
    net.settle()
    agent = net.rd(slaac=True)
    agent.on_address(net.host, net.host.interfaces[2], p6("fd00::99"), DADFAILED, net.lan.now)
    assert not agent.counters



def test_solicitations_wait_for_the_link():
    lan = FakeLan("eth,ip=fd00:7::1/64", "-eth,rd")  # rd alone turns the link on
    try:
        host = lan.stacks[1]
        agent = host.find_agents("rd")[0]
        lan.run_until(lambda: lan.now > 110, 11)
        assert agent.solicitations == 0
        host.link_up(2)
        lan.run_until(lambda: agent.solicitations == 1, 6)
    finally:
        lan.close()
