"""Sans-IO stack parts on fake time: reassembly, neighbor cache, routing, config strings."""

from __future__ import annotations

import ipaddress
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadnet.stack.config import ConfigError, parse_config
from threadnet.stack.neighbor import INCOMPLETE, PROBE, REACHABLE, NeighborCache
from threadnet.stack.reassembly import Reassembler
from threadnet.stack.route import Route, RoutingTable

# -- reassembly ---------------------------------------------------------------------


def fragments(payload: bytes, size: int) -> list[tuple[int, bool, bytes]]:
    out = []
    for off in range(0, len(payload), size):
        piece = payload[off:off + size]
        out.append((off, off + size < len(payload), piece))
    return out


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=1, max_size=4000), st.integers(1, 64), st.randoms())
def test_reassembly_any_order(payload, blocks, rnd):
    # fragments of 8 bytes and more, but no more than the 64 pieces a datagram may have
    frags = fragments(payload, max(blocks * 8, -(-len(payload) // 512) * 8))
    rnd.shuffle(frags)
    r = Reassembler()
    results = [r.add(("k",), off, more, data, 0.0) for off, more, data in frags]
    assert results[-1] == payload
    assert all(x is None for x in results[:-1])
    assert r.buffered == 0 and len(r) == 0


def test_overlap_drops_whole_datagram():
    r = Reassembler()
    assert r.add(("k",), 0, True, b"a" * 16, 0.0) is None
    assert r.add(("k",), 8, True, b"b" * 16, 0.0) is None  # overlaps bytes 8..16
    assert r.dropped_overlap == 1 and len(r) == 0
    # the rest of that datagram then never completes
    assert r.add(("k",), 24, False, b"c" * 8, 0.0) is None
    assert len(r) == 1


def test_exact_duplicate_is_tolerated():
    r = Reassembler()
    assert r.add(("k",), 0, True, b"a" * 8, 0.0) is None
    assert r.add(("k",), 0, True, b"a" * 8, 0.0) is None
    assert r.add(("k",), 8, False, b"z", 0.0) == b"a" * 8 + b"z"


def test_oversized_and_misaligned_fragments_dropped():
    r = Reassembler()
    assert r.add(("k",), 65528, False, b"x" * 16, 0.0) is None  # past 65535
    assert r.add(("j",), 0, True, b"x" * 7, 0.0) is None  # non-final not a multiple of 8
    assert r.dropped_oversize == 2 and len(r) == 0


def test_memory_bounded_under_fragment_flood():
    r = Reassembler(max_bytes=64 * 1024, max_datagrams=100)
    rnd = random.Random(1)
    for i in range(20000):
        r.add((i,), rnd.randrange(0, 8000, 8), True, b"x" * 512, 0.0)
        assert r.buffered <= 64 * 1024 and len(r) <= 100
    assert r.evicted > 0


def test_timeout_expires_and_reports_first_fragment():
    r = Reassembler(timeout=30)
    r.add(("k",), 0, True, b"a" * 8, 10.0, first_header=b"hdr")
    r.add(("j",), 8, True, b"a" * 8, 20.0)
    assert r.next_deadline() == 40.0
    assert r.expire(39.9) == []
    assert r.expire(40.0) == [(("k",), b"hdr")]
    assert len(r) == 1 and r.expire(50.0) == [(("j",), None)]


# -- neighbor cache -------------------------------------------------------------------

IP = b"\x0a\x00\x00\x02"
MAC = b"\x02\x00\x00\x00\x00\x02"


def test_resolution_queue_and_confirm():
    c = NeighborCache(queue_len=2)
    assert c.lookup(IP, 0.0) == (None, False)
    assert c.enqueue(IP, "p1", 0.0) == (True, [])
    assert c.enqueue(IP, "p2", 0.1) == (False, [])
    assert c.enqueue(IP, "p3", 0.2) == (False, ["p1"])  # bounded queue
    assert c.entries[IP].state == INCOMPLETE
    assert c.confirm(IP, MAC, 0.3) == ["p2", "p3"]
    assert c.lookup(IP, 0.4) == (MAC, False)
    assert c.entries[IP].state == REACHABLE


def test_retries_then_failure_returns_packets():
    c = NeighborCache(retrans=1.0, max_probes=3)
    c.enqueue(IP, "p", 0.0)
    assert c.next_deadline() == 1.0
    assert c.on_timer(1.0) == ([(IP, None)], [])
    assert c.on_timer(2.0) == ([(IP, None)], [])
    assert c.on_timer(3.0) == ([], ["p"])
    assert IP not in c.entries


def test_stale_entry_used_and_probed():
    c = NeighborCache(reachable=30.0)
    c.confirm(IP, MAC, 0.0)
    assert c.lookup(IP, 29.0) == (MAC, False)
    assert c.lookup(IP, 31.0) == (MAC, True)  # stale: used, and a unicast probe goes out
    assert c.entries[IP].state == PROBE
    assert c.on_timer(32.0) == ([(IP, MAC)], [])
    c.confirm(IP, MAC, 32.5)
    assert c.entries[IP].state == REACHABLE


def test_unsolicited_does_not_make_reachable_and_table_bounded():
    c = NeighborCache(max_entries=100)
    c.confirm(IP, MAC, 0.0, solicited=False)
    assert c.entries[IP].state == "STALE"
    for i in range(10000):
        c.confirm(i.to_bytes(4, "big"), MAC, 0.0, solicited=False)
    assert len(c) <= 100


# -- routing ------------------------------------------------------------------------


def a(text: str) -> int:
    return int(ipaddress.ip_address(text))


def test_longest_prefix_and_metric():
    t = RoutingTable(4)
    t.add(Route(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_address("10.0.0.1"), 1))
    t.add(Route(ipaddress.ip_network("10.0.0.0/24"), None, 1, proto="kernel"))
    t.add(Route(ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_address("10.0.0.9"), 2, metric=10))
    t.add(Route(ipaddress.ip_network("10.1.0.0/16"), ipaddress.ip_address("10.0.0.8"), 2, metric=5))
    assert t.lookup(a("10.0.0.7")).gateway is None
    assert str(t.lookup(a("10.1.2.3")).gateway) == "10.0.0.8"
    assert str(t.lookup(a("8.8.8.8")).gateway) == "10.0.0.1"
    t.delete(ipaddress.ip_network("0.0.0.0/0"))
    assert t.lookup(a("8.8.8.8")) is None
    with pytest.raises(FileExistsError):
        t.add(Route(ipaddress.ip_network("10.0.0.0/24"), None, 1))
    with pytest.raises(LookupError):
        t.delete(ipaddress.ip_network("192.168.0.0/16"))


def test_ipv6_table():
    t = RoutingTable(6)
    t.add(Route(ipaddress.ip_network("fc00::/64"), None, 1))
    t.add(Route(ipaddress.ip_network("::/0"), ipaddress.ip_address("fc00::1"), 1))
    assert t.lookup(a("fc00::5")).gateway is None
    assert str(t.lookup(a("2001:db8::1")).gateway) == "fc00::1"
    with pytest.raises(ValueError):
        t.add(Route(ipaddress.ip_network("10.0.0.0/8"), None, 1))


# -- config strings -----------------------------------------------------------------


def test_config_strings():
    c = parse_config("eth,ip=10.0.0.5/24,gw=10.0.0.1,ip=fc00::5/64,mac=02:00:00:00:00:05,mtu=9000")
    assert c.eth is True and [str(x) for x in c.addresses] == ["10.0.0.5/24", "fc00::5/64"]
    assert [str(g) for g in c.gateways] == ["10.0.0.1"] and c.mtu == 9000
    assert c.mac == bytes.fromhex("020000000005")
    c = parse_config("auto,-dhcp6")
    assert c.eth and c.dhcp4 and c.rd and c.dhcp6 is False


@pytest.mark.parametrize("bad", ["eth,ip=10.0.0.5", "bogus", "ip=300.0.0.1/24", "gw=x",
                                 "mac=zz", "mtu=10", "-ip=1.2.3.4/8"])
def test_bad_config_strings(bad):
    with pytest.raises(ConfigError):
        parse_config(bad)


def test_config_lenient_is_iothconfs_value_rules():
    """iothconf (iothconf_static) takes /24 or /64 for an ip= without a prefix; strict
    parsing refuses it, and a gw= with a prefix, naming the item."""
    c = parse_config("ip=10.0.0.5,ip=fc00::5,gw=10.0.0.1/24", lenient=True)
    assert [str(a) for a in c.addresses] == ["10.0.0.5/24", "fc00::5/64"]
    assert [str(g) for g in c.gateways] == ["10.0.0.1"] and c.static and c.items == 3
    for bad, where in [("ip=10.0.0.5", "ip="), ("gw=10.0.0.1/24", "gw=")]:
        with pytest.raises(ConfigError, match=where) as info:
            parse_config(bad)
        assert isinstance(info.value, ValueError)


def test_config_undo_items_and_dynamic_methods():
    c = parse_config("-static,-all")
    assert c.clean == {"static", "eth", "dhcp4", "dhcp6", "rd"}
    assert c.eth is False and c.dhcp4 is False and not c.dynamic and c.items == 2
    for text, methods in [("dhcp", ["dhcp4"]), ("dhcpv6", ["dhcp6"]), ("rd6", ["rd"]),
                          ("slaac", ["slaac"]), ("auto6", ["dhcp6", "rd"])]:
        c = parse_config(text)
        assert c.dynamic == methods and c.eth is True  # a client turns its link on
    for bad in ["-slaac", "-debug", "static", "-ip"]:  # not iothconf items
        with pytest.raises(ConfigError, match="unknown configuration item"):
            parse_config(bad)


def test_config_newstackc_items_only_when_asked():
    c = parse_config("vdestack,vnl=vde:///tmp/sw,eth", stacks={"vdestack"})
    assert (c.stack, c.vnl, c.eth, c.items) == ("vdestack", "vde:///tmp/sw", True, 1)
    assert parse_config("stack=picox", stacks={"vdestack"}).stack == "picox"
    for bad in ["stack=vdestack", "vnl=null://", "vdestack"]:
        with pytest.raises(ConfigError):
            parse_config(bad)
    with pytest.raises(ConfigError):
        parse_config("picox", stacks={"vdestack"})
    with pytest.raises(TypeError):
        parse_config(None)  # type: ignore[arg-type]


def test_config_values():
    c = parse_config("mac=020000000005,domain=a.example,domain=b.example,dns=fc00::53,ifindex=2")
    assert c.mac == bytes.fromhex("020000000005") and c.domain == "b.example"
    assert c.domains == ["a.example", "b.example"] and c.dns == ["fc00::53"] and c.ifindex == 2
    assert parse_config("eth").domain is None
    for bad in ["domain=", "mac=0200", "dns=x", "ifindex=two", "mtu=65536"]:
        with pytest.raises(ConfigError, match=f"bad {bad.partition('=')[0]}="):
            parse_config(bad)


def test_addr_del_removes_the_connected_route_with_the_last_address_on_it() -> None:
    """As on Linux: the route a prefix brought goes with the last address on that prefix."""
    from threadnet import Stack

    from stack_helpers import ListLink

    s = Stack("eth,ip=10.40.0.1/24,ip=10.40.0.2/24,ip=fc00:40::1/64", link=ListLink(),
              runner=False)
    try:
        def connected(table) -> list[str]:
            return [str(r.dst) for r in table.routes if r.proto == "kernel" and r.ifindex == 2]

        assert connected(s.routes4) == ["10.40.0.0/24"]
        s.addr_del(2, "10.40.0.1/24")
        assert connected(s.routes4) == ["10.40.0.0/24"]  # 10.40.0.2 still needs it
        s.addr_del(2, "10.40.0.2/24")
        assert connected(s.routes4) == []
        with pytest.raises(OSError, match="not on eth0"):
            s.addr_del(2, "10.40.0.2/24")
        assert "fc00:40::/64" in connected(s.routes6)
        s.addr_del(2, "fc00:40::1/64")
        assert "fc00:40::/64" not in connected(s.routes6)
    finally:
        s.close()


def test_ipv6_source_selection_follows_rfc_6724():
    """Rules 1, 2, 3 and 8: the destination itself, the scope that reaches it, no
    deprecated address while another will do, the longest prefix in common (capped at
    the address's prefix length, as Linux). An oracle: the kernel picks fc00:1::5 for
    fc00:1::9 on an interface with fc00::5/64 and fc00:1::5/64 (seen in the rtnetlink
    tests' namespace)."""
    from types import SimpleNamespace as A

    from threadnet.stack.addrsel import choose_source6

    def p(text):
        return ipaddress.IPv6Address(text).packed

    ll = A(addr=p("fe80::1"), plen=64, deprecated=False)
    a0 = A(addr=p("fc00::5"), plen=64, deprecated=False)
    a1 = A(addr=p("fc00:1::5"), plen=64, deprecated=False)
    for order in ([ll, a0, a1], [a1, a0, ll], [a0, ll, a1]):
        assert choose_source6(p("fc00:1::9"), order) == a1.addr  # rule 8
        assert choose_source6(p("fc00::9"), order) == a0.addr
        assert choose_source6(p("fe80::9"), order) == ll.addr  # rule 2
        assert choose_source6(p("2001:db8::1"), order) in (a0.addr, a1.addr)
        assert choose_source6(p("fc00::5"), order) == a0.addr  # rule 1
    old = A(addr=p("fc00:1::6"), plen=64, deprecated=True)
    assert choose_source6(p("fc00:1::9"), [old, a0]) == a0.addr  # rule 3 before rule 8
    assert choose_source6(p("fc00:1::9"), [old, ll]) == old.addr  # rule 2 before rule 3
    # rule 8 counts only up to the prefix length: a /48 does not win by its host bits
    wide = A(addr=p("fc00:1::9:1"), plen=48, deprecated=False)
    assert choose_source6(p("fc00:1::9:2"), [wide, a1]) == a1.addr
    assert choose_source6(p("fc00:1::9"), []) is None


def test_ipv6_routes_without_a_metric_compare_as_linux_metrics():
    """An IPv6 route given no metric is 1024 to Linux (256 for an address's prefix
    route): a route with metric 100 wins over it, one with 2000 loses (it used to be 0,
    and won every time)."""
    from threadnet.stack.route import effective_metric

    t = RoutingTable(6)
    net = ipaddress.ip_network("fd00::/16")
    none = Route(net, ipaddress.ip_address("fe80::1"), 2)
    t.add(Route(net, ipaddress.ip_address("fe80::2"), 2, 100))
    t.add(none)
    t.add(Route(net, ipaddress.ip_address("fe80::3"), 2, 2000))
    assert t.lookup(int(ipaddress.ip_address("fd00::9"))).gateway == ipaddress.ip_address("fe80::2")
    t.delete(net, metric=100)
    assert t.lookup(int(ipaddress.ip_address("fd00::9"))) == none
    assert effective_metric(none) == 1024
    assert effective_metric(Route(net, None, 2, proto="kernel")) == 256
    assert effective_metric(Route(ipaddress.ip_network("10.0.0.0/8"), None, 2)) == 0
