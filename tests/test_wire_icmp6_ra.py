"""Router advertisements and their options (RFC 4861 4.2/4.6, RFC 4191 2.3, RFC 8106 5):
scapy as the oracle both ways, strictness with the error that names the fault, round
trips, and fuzzing of every option parser and of mutated real advertisements (one that
dnsmasq sent, captured on a tap, and ones scapy builds)."""

from __future__ import annotations

import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import (
    ICMPv6ND_RA,
    ICMPv6NDOptDNSSL,
    ICMPv6NDOptMTU,
    ICMPv6NDOptPrefixInfo,
    ICMPv6NDOptRDNSS,
    ICMPv6NDOptRouteInfo,
    ICMPv6NDOptSrcLLAddr,
    IPv6,
)

from threadnet.errors import FrameError
from threadnet.wire import icmp6, ipv6
from threadnet.wire.ethernet import mac_to_str

ROUTER = socket.inet_pton(socket.AF_INET6, "fe80::ff:fe00:1")
MAC = bytes.fromhex("020000000001")
ORACLE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: a Router Advertisement dnsmasq 2.90 sent on a veth (``--enable-ra``,
#: ``--dhcp-range=fd00:77::,ra-only,64,2h``,
#: ``--dhcp-option=option6:dns-server,[fd00:77::53]``,
#: ``--dhcp-option=option6:domain-search,lan.example``), captured with an AF_PACKET
#: socket: the ICMPv6 message from fe80::a8c1:abff:fe12:3456 to ff02::1 with its source
#: LLA, MTU, prefix, DNSSL and RDNSS options
DNSMASQ_RA = bytes.fromhex(
    "86007190400007080000000000000000030440c000001c2000001c2000000000fd0000770000000000"
    "0000000000000005010000000005dc0101aac1ab1234561f03000000001c20036c616e076578616d70"
    "6c65000000001903000000001c20fd000077000000000000000000000053")
DNSMASQ_SRC = socket.inet_pton(socket.AF_INET6, "fe80::a8c1:abff:fe12:3456")


def s6(a: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, a)


def p6(text: str) -> bytes:
    return socket.inet_pton(socket.AF_INET6, text)


def message(pkt) -> bytes:
    """The ICMPv6 message of a scapy IPv6 packet, its checksum verified here."""
    raw = bytes(pkt)
    plen = ipv6.parse(raw)[2]
    icmp6.parse(raw[40:40 + plen], p6(pkt.src), p6(pkt.dst))
    return raw[40:40 + plen]


# -- strategies ------------------------------------------------------------------------
label = st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=20)
domain = st.lists(label, min_size=1, max_size=4).map(".".join)
lifetime = st.integers(0, 0xFFFFFFFF)


@st.composite
def route_infos(draw):
    plen = draw(st.integers(0, 128))
    units = icmp6._route_info_units(plen)
    prefix = draw(st.binary(min_size=16, max_size=16))[:8 * (units - 1)].ljust(16, b"\0")
    return icmp6.RouteInfo(prefix, plen, draw(st.sampled_from([0, 1, 3])), draw(lifetime))


prefix_infos = st.builds(icmp6.PrefixInfo, st.binary(min_size=16, max_size=16),
                         st.integers(0, 128), st.integers(0, 255), lifetime, lifetime)
adverts = st.builds(
    icmp6.RouterAdvert, st.integers(0, 255), st.integers(0, 255), st.integers(0, 0xFFFF),
    lifetime, lifetime, st.none() | st.binary(min_size=6, max_size=6),
    st.none() | lifetime,
    st.lists(prefix_infos, max_size=3).map(tuple),
    st.lists(route_infos(), max_size=3).map(tuple),
    st.lists(st.builds(icmp6.DnsServers, lifetime,
                       st.lists(st.binary(min_size=16, max_size=16), min_size=1,
                                max_size=3).map(tuple)), max_size=2).map(tuple),
    st.lists(st.builds(icmp6.SearchList, lifetime,
                       st.lists(domain, min_size=1, max_size=3).map(tuple)),
             max_size=2).map(tuple))


def scapy_advert(ra: icmp6.RouterAdvert, src: bytes = ROUTER, dst: bytes = ipv6.ALL_NODES):
    """The same advertisement built by scapy, its options in build_router_advert's order."""
    f = ra.flags
    pkt = IPv6(src=s6(src), dst=s6(dst), hlim=255) / ICMPv6ND_RA(
        chlim=ra.cur_hop_limit, M=f >> 7, O=(f >> 6) & 1, H=(f >> 5) & 1, prf=(f >> 3) & 3,
        P=(f >> 2) & 1, res=f & 3, routerlifetime=ra.router_lifetime,
        reachabletime=ra.reachable_time, retranstimer=ra.retrans_timer)
    if ra.slla is not None:
        pkt /= ICMPv6NDOptSrcLLAddr(lladdr=mac_to_str(ra.slla))
    if ra.mtu is not None:
        pkt /= ICMPv6NDOptMTU(mtu=ra.mtu)
    for p in ra.prefixes:
        pkt /= ICMPv6NDOptPrefixInfo(prefixlen=p.plen, L=p.flags >> 7, A=(p.flags >> 6) & 1,
                                     R=(p.flags >> 5) & 1, res1=p.flags & 0x1F,
                                     validlifetime=p.valid, preferredlifetime=p.preferred,
                                     prefix=s6(p.prefix))
    for r in ra.routes:
        pkt /= ICMPv6NDOptRouteInfo(len=icmp6._route_info_units(r.plen), plen=r.plen,
                                    prf=r.pref, rtlifetime=r.lifetime, prefix=s6(r.prefix))
    for d in ra.rdnss:
        pkt /= ICMPv6NDOptRDNSS(lifetime=d.lifetime, dns=[s6(a) for a in d.servers])
    for sl in ra.dnssl:
        pkt /= ICMPv6NDOptDNSSL(lifetime=sl.lifetime, searchlist=list(sl.domains))
    return pkt


# -- against scapy -----------------------------------------------------------------------
@ORACLE
@given(adverts)
def test_advert_against_scapy_both_ways(ra):
    """scapy's bytes parse to the same RouterAdvert, and ours are scapy's byte for byte."""
    pkt = scapy_advert(ra)
    raw = message(pkt)
    assert icmp6.parse_router_advert(raw) == ra
    buf = bytearray(icmp6.router_advert_size(ra) + 40)
    n = icmp6.build_router_advert(buf, ROUTER, ipv6.ALL_NODES, ra, offset=40)
    assert n == len(raw) and bytes(buf[40:]) == raw
    # and scapy reads back what we wrote, field by field
    got = IPv6(bytes(pkt)[:40] + bytes(buf[40:]))
    if ra.rdnss:
        assert [s6(a) for a in ra.rdnss[0].servers] == got[ICMPv6NDOptRDNSS].dns
    if ra.dnssl:
        assert [d + "." for d in ra.dnssl[0].domains] == \
            [x.decode() if isinstance(x, bytes) else x for x in got[ICMPv6NDOptDNSSL].searchlist]


def test_a_real_dnsmasq_advert():
    icmp6.parse(DNSMASQ_RA, DNSMASQ_SRC, ipv6.ALL_NODES)  # its checksum holds
    ra = icmp6.parse_router_advert(DNSMASQ_RA)
    assert (ra.cur_hop_limit, ra.router_lifetime, ra.managed, ra.other) == (64, 1800, False,
                                                                           False)
    assert ra.slla == bytes.fromhex("aac1ab123456") and ra.mtu == 1500
    assert ra.prefixes == (icmp6.PrefixInfo(p6("fd00:77::"), 64, 0xC0, 7200, 7200),)
    assert ra.rdnss == (icmp6.DnsServers(7200, (p6("fd00:77::53"),)),)
    assert ra.dnssl == (icmp6.SearchList(7200, ("lan.example",)),)
    assert ra.preference == icmp6.PREF_MEDIUM
    # scapy reads it the same way
    pkt = ICMPv6ND_RA(DNSMASQ_RA)
    assert pkt[ICMPv6NDOptRDNSS].dns == ["fd00:77::53"]


def test_build_ra_keeps_its_tuple_form():
    prefix = p6("2001:db8:1::")
    buf = bytearray(80)
    n = icmp6.build_ra(buf, ROUTER, ipv6.ALL_NODES, flags=icmp6.RA_OTHER, slla=MAC,
                       prefixes=((64, 0xC0, 100, 50, prefix),))
    assert icmp6.parse_ra(buf[:n]) == (64, icmp6.RA_OTHER, 1800, 0, 0, MAC, None,
                                       ((64, 0xC0, 100, 50, prefix),))
    assert icmp6.parse_router_advert(buf[:n]).other


def test_preference_reserved_is_medium():
    for bits, pref in ((0, icmp6.PREF_MEDIUM), (0x08, icmp6.PREF_HIGH),
                       (0x10, icmp6.PREF_MEDIUM), (0x18, icmp6.PREF_LOW)):
        assert icmp6.RouterAdvert(flags=bits | icmp6.RA_MANAGED).preference == pref


# -- strictness ------------------------------------------------------------------------------
def _ra_with(option: bytes) -> bytes:
    buf = bytearray(16)
    icmp6.build_router_advert(buf, ROUTER, ipv6.ALL_NODES, icmp6.RouterAdvert())
    return bytes(buf) + option


def test_malformed_options_are_named():
    dnssl = bytes(ICMPv6NDOptDNSSL(lifetime=1, searchlist=["lan.example"]))
    cases = {
        b"\x19\x02" + bytes(14): "RDNSS option of 16 bytes",
        b"\x19\x04" + bytes(30): "RDNSS option of 32 bytes",
        b"\x1f\x01" + bytes(6): "DNSSL option of 8 bytes",
        b"\x1f\x02" + bytes(14): "holds no domain name",
        b"\x1f\x02" + bytes(6) + b"\xc0\x0c" + bytes(6): "compressed",
        b"\x1f\x02" + bytes(6) + b"\x07example": "runs past",
        b"\x1f\x02" + bytes(6) + b"\x01a\x00\x00\x01" + bytes(3): "padding",
        b"\x1f\x02" + bytes(6) + b"\x02a.\x00" + bytes(4): "octets a host name cannot",
        b"\x18\x01\x08" + bytes(5): "too short for a /8",
        b"\x18\x02\x41" + bytes(13): "too short for a /65",
        b"\x18\x02\x81" + bytes(13): "prefix length 129",
        b"\x18\x04" + bytes(30): "route information option of 32 bytes",
        b"\x03\x03" + bytes(22): "prefix information",
        b"\x05\x02" + bytes(14): "MTU option",
        b"\x01\x02" + bytes(14): "not an Ethernet address",
        b"\x19\x00" + bytes(6): "length zero",
        dnssl[:-8]: "runs past",
    }
    for option, match in cases.items():
        with pytest.raises(FrameError, match=match):
            icmp6.parse_router_advert(_ra_with(option))
    long_name = b"".join(b"\x3f" + b"a" * 63 for _ in range(4)) + b"\x00"  # 257 octets
    padded = long_name.ljust((len(long_name) + 7) // 8 * 8, b"\0")
    with pytest.raises(FrameError, match="longer than 255"):
        icmp6.parse_dnssl(bytes(bytes([0, 0, 0, 0, 0, 1])) + padded)
    # unknown options are skipped; a good DNSSL after one parses
    ra = icmp6.parse_router_advert(_ra_with(b"\x63\x01" + bytes(6) + dnssl))
    assert ra.dnssl == (icmp6.SearchList(1, ("lan.example",)),)
    with pytest.raises(FrameError, match="code 1"):
        icmp6.parse_router_advert(b"\x86\x01" + _ra_with(b"")[2:])
    with pytest.raises(FrameError, match="shorter than 16"):
        icmp6.parse_router_advert(_ra_with(b"")[:15])


def test_building_refuses_what_no_option_can_hold():
    buf = bytearray(200)
    for ra, match in (
            (icmp6.RouterAdvert(router_lifetime=70000), "router lifetime"),
            (icmp6.RouterAdvert(rdnss=(icmp6.DnsServers(1, ()),)), "RDNSS"),
            (icmp6.RouterAdvert(dnssl=(icmp6.SearchList(1, ("bad..name",)),)), "domain"),
            (icmp6.RouterAdvert(dnssl=(icmp6.SearchList(1, ("a" * 64,)),)), "domain"),
            (icmp6.RouterAdvert(routes=(icmp6.RouteInfo(bytes(16), 129),)), "route"),
            (icmp6.RouterAdvert(prefixes=(icmp6.PrefixInfo(bytes(15), 64),)), "prefix")):
        with pytest.raises(ValueError, match=match):
            icmp6.build_router_advert(buf, ROUTER, ipv6.ALL_NODES, ra)
    with pytest.raises(ValueError, match="does not fit"):
        icmp6.build_router_advert(bytearray(20), ROUTER, ipv6.ALL_NODES,
                                  icmp6.RouterAdvert(mtu=1500))
    assert icmp6.encode_domain("lan.example.") == b"\x03lan\x07example\x00"
    with pytest.raises(ValueError, match="longer than 255"):
        icmp6.encode_domain(".".join(["a" * 63] * 4))


# -- fuzzing: only FrameError may escape --------------------------------------------------
OPTION_PARSERS = {
    "prefix": icmp6.parse_prefix_info,
    "route": icmp6.parse_route_info,
    "rdnss": icmp6.parse_rdnss,
    "dnssl": icmp6.parse_dnssl,
    "ra": lambda d: icmp6.parse_router_advert(b"\x86\x00" + bytes(d)),
    "rs": lambda d: icmp6.parse_rs(b"\x85\x00" + bytes(d)),
}


def only_frame_error(fn, data) -> None:
    try:
        fn(data)
    except FrameError:
        pass


@settings(max_examples=2000, deadline=None)
@given(st.sampled_from(sorted(OPTION_PARSERS)), st.binary(max_size=300), st.booleans())
def test_fuzz_option_parsers(name, data, as_view):
    only_frame_error(OPTION_PARSERS[name], memoryview(data) if as_view else data)


def _seed_adverts() -> list[bytes]:
    seeds = [DNSMASQ_RA]
    ra = icmp6.RouterAdvert(
        flags=icmp6.RA_MANAGED | 0x08, slla=MAC, mtu=1400,
        prefixes=(icmp6.PrefixInfo(p6("2001:db8:1::"), 64),),
        routes=(icmp6.RouteInfo(p6("2001:db8:9::"), 48, icmp6.PREF_HIGH, 60),
                icmp6.RouteInfo(bytes(16), 0)),
        rdnss=(icmp6.DnsServers(600, (p6("2001:db8::53"), p6("fe80::53"))),),
        dnssl=(icmp6.SearchList(600, ("a.example", "b.example.org")),))
    buf = bytearray(icmp6.router_advert_size(ra))
    icmp6.build_router_advert(buf, ROUTER, ipv6.ALL_NODES, ra)
    seeds.append(bytes(buf))
    return seeds


SEEDS = _seed_adverts()


@settings(max_examples=3000, deadline=None)
@given(st.sampled_from(range(len(SEEDS))),
       st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)), min_size=1, max_size=6),
       st.integers(0, 400))
def test_fuzz_mutated_real_adverts(which, flips, cut):
    """A real advertisement with some octets changed and maybe cut short: it parses or
    raises FrameError, and what parses rebuilds into a message that parses the same."""
    data = bytearray(SEEDS[which])
    for pos, value in flips:
        data[pos % len(data)] = value
    data = data[:max(cut, 2)] if cut < len(data) else data
    data[0], data[1] = icmp6.ROUTER_ADVERTISEMENT, 0
    try:
        ra = icmp6.parse_router_advert(data)
    except FrameError:
        return
    # canonical route information (the shortest form) keeps only the prefix it needs
    ra = icmp6.RouterAdvert(**{
        **{f: getattr(ra, f) for f in ("cur_hop_limit", "flags", "router_lifetime",
                                       "reachable_time", "retrans_timer", "slla", "mtu",
                                       "prefixes", "rdnss", "dnssl")},
        "routes": tuple(icmp6.RouteInfo(r.prefix[:8 * (icmp6._route_info_units(r.plen) - 1)]
                                        .ljust(16, b"\0"), r.plen, r.pref, r.lifetime)
                        for r in ra.routes)})
    buf = bytearray(icmp6.router_advert_size(ra))
    icmp6.build_router_advert(buf, ROUTER, ipv6.ALL_NODES, ra)
    assert icmp6.parse_router_advert(buf) == ra
