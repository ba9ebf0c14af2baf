"""Name resolution on stacks: the DNS codec, the sans-IO stub resolver on fake time, the
socket module's lookup functions compared with glibc's, a fake DNS server on another
stack, and Debian's dnsmasq in a network namespace reached through a tap."""

from __future__ import annotations

import ipaddress
import itertools
import os
import socket
import struct
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.layers.dns import DNS, DNSQR, DNSRR

from threadnet import Stack
from threadnet.stack import dnsclient as rz
from threadnet.stack import gai
from threadnet.stack.dnsclient import Cache, Query, Resolution
from threadnet.stack.resolver import Resolver
from threadnet.stack.runner import StackRunner
from threadnet.switch.server import SwitchServer
from threadnet.wire import dns

from conftest import need_tool, wait_for

FAST = settings(max_examples=200, deadline=None)
FUZZ = settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
A, AAAA, CNAME, PTR, SOA = dns.TYPE_A, dns.TYPE_AAAA, dns.TYPE_CNAME, dns.TYPE_PTR, dns.TYPE_SOA


# -- the codec -------------------------------------------------------------------------

labels = st.lists(st.binary(min_size=1, max_size=63), max_size=6).filter(
    lambda ls: sum(len(x) + 1 for x in ls) + 1 <= dns.MAX_NAME)
names = labels.map(dns.name_from_labels)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
rdata = st.one_of(
    st.tuples(st.just(A), st.binary(min_size=4, max_size=4).map(
        lambda b: str(ipaddress.IPv4Address(b)))),
    st.tuples(st.just(AAAA), st.binary(min_size=16, max_size=16).map(
        lambda b: str(ipaddress.IPv6Address(b)))),
    st.tuples(st.sampled_from([dns.TYPE_NS, CNAME, PTR]), names),
    st.tuples(st.just(dns.TYPE_MX), st.tuples(u16, names)),
    st.tuples(st.just(SOA), st.tuples(names, names, u32, u32, u32, u32, u32)),
    st.tuples(st.sampled_from([dns.TYPE_TXT, 99, 65280]), st.binary(max_size=80)),
)
records = st.builds(lambda n, c, t, rd: dns.Record(n, rd[0], c, t, rd[1]),
                    names, u16, u32, rdata)
messages = st.builds(dns.Message, u16, u16,
                     st.lists(st.builds(dns.Question, names, u16, u16), max_size=3),
                     st.lists(records, max_size=5), st.lists(records, max_size=3),
                     st.lists(records, max_size=3))


@FAST
@given(messages, st.booleans())
def test_codec_round_trip(msg, compress):
    wire = dns.build(msg, compress=compress)
    assert dns.parse(wire) == msg
    assert len(wire) <= len(dns.build(msg, compress=False))


@FUZZ
@given(st.binary(max_size=600))
def test_parser_random_bytes_raise_only_dns_error(data):
    try:
        dns.parse(data)
    except dns.DnsError:
        pass


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.randoms(use_true_random=False))
def test_parser_mutated_messages_raise_only_dns_error(msg, rnd):
    """Valid messages with bytes changed, cut or inserted: 80 variants of each."""
    wire = dns.build(msg)
    for _ in range(80):
        data = bytearray(wire)
        for _ in range(rnd.randint(1, 4)):
            pos = rnd.randrange(len(data) + 1)
            op = rnd.random()
            if op < 0.6 and pos < len(data):
                data[pos] = rnd.choice((0, 0xC0, 0x3F, rnd.randrange(256)))
            elif op < 0.8:
                data.insert(pos, rnd.randrange(256))
            else:
                del data[pos:]
        try:
            dns.parse(bytes(data))
        except dns.DnsError:
            pass


def _header(qd=1, an=0):
    return struct.pack("!HHHHHH", 1, 0x8180, qd, an, 0, 0)


def test_compression_pointers_cannot_loop_or_point_forward():
    loops = [
        _header() + b"\xc0\x0c" + b"\x00\x01\x00\x01",  # points at itself
        _header() + b"\x01a\xc0\x0c" + b"\x00\x01\x00\x01",  # back to its own start
        _header() + b"\xc0\x10\x00\x01\x00\x01" + b"\x01b\xc0\x0c",  # forward, then back
        _header() + b"\x01a\xc0\x14\x00\x01\x00\x01" + b"\x01b\xc0\x0c",  # a cycle
        _header() + b"\xc0\x0c",  # pointer cut... to itself
        _header() + b"\xc0",  # half a pointer
        _header() + b"\x40abc\x00\x00\x01\x00\x01",  # extended label type
        _header() + b"\x05ab\x00\x00\x01",  # label past the end
    ]
    for wire in loops:
        with pytest.raises(dns.DnsError):
            dns.parse(wire)
    # a name of 257 bytes: 64 bytes of label, then a pointer to a 193-byte name
    long = b"".join(b"\x3f" + bytes([c]) * 63 for c in b"xyz") + b"\x00"
    def message(first_label: bytes) -> bytes:
        return (_header(qd=1, an=1) + long + b"\x00\x01\x00\x01" + first_label + b"\xc0\x0c"
                + b"\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\x0a\x00\x00\x01")

    ok = dns.parse(message(b"\x3d" + b"w" * 61))  # 255 bytes: the most allowed
    assert ok.answers[0].name.startswith("w" * 61 + ".xxx") and ok.answers[0].data == "10.0.0.1"
    with pytest.raises(dns.DnsError, match="longer than 255"):
        dns.parse(message(b"\x3e" + b"w" * 62))


def test_strict_record_data_and_trailing_bytes():
    q = dns.build_query(5, "a.example", A)
    with pytest.raises(dns.DnsError, match="after the last record"):
        dns.parse(q + b"\x00")
    good = dns.build(dns.Message(5, 0x8180, [dns.Question("a.example", A)],
                                 [dns.Record("a.example", A, 1, 60, "10.0.0.1")]))
    bad = good[:-6] + struct.pack("!H", 5) + b"\x0a\x00\x00\x01\x00"  # A with 5 bytes
    with pytest.raises(dns.DnsError, match="must be 4"):
        dns.parse(bad)
    with pytest.raises(dns.DnsError, match="shorter than its header"):
        dns.parse(b"\x00" * 11)


def test_names_presentation_form():
    assert dns.encode_name("www.Example.COM.") == b"\x03www\x07Example\x03COM\x00"
    assert dns.name_key("WWW.example.com") == dns.name_key("www.EXAMPLE.com.")
    odd = dns.name_from_labels([b"a.b", b"c\\d", b"\x00 \xff", b"e"])
    assert odd == "a\\.b.c\\\\d.\\000\\032\\255.e"
    assert dns.name_labels(odd) == [b"a.b", b"c\\d", b"\x00 \xff", b"e"]
    assert dns.encode_name("") == b"\x00" and dns.encode_name(".") == b"\x00"
    for bad in ("a..b", "x" * 64, ".".join(["a" * 63] * 4), "é.com", "a\\", "a\\25", "a\\256"):
        with pytest.raises(dns.DnsError):
            dns.encode_name(bad)
    assert dns.reverse_name("10.0.0.1") == "1.0.0.10.in-addr.arpa"
    assert dns.reverse_name("2001:db8::1").endswith(".8.b.d.0.1.0.0.2.ip6.arpa")


def test_scapy_reads_what_we_build_and_we_read_what_scapy_builds():
    ours = dns.build(dns.Message(
        0x1234, dns.FLAG_QR | dns.FLAG_RD | dns.FLAG_RA, [dns.Question("www.example.com", A)],
        [dns.Record("www.example.com", CNAME, 1, 60, "web.example.com"),
         dns.Record("web.example.com", A, 1, 30, "192.0.2.7"),
         dns.Record("web.example.com", AAAA, 1, 30, "2001:db8::7")]))
    p = DNS(ours)
    assert p.id == 0x1234 and p.qr == 1 and p.rd == 1 and p.ancount == 3
    assert p.qd[0].qname == b"www.example.com."
    assert [r.rdata for r in p.an] == [b"web.example.com.", "192.0.2.7", "2001:db8::7"]
    assert len(ours) < 100  # compressed
    theirs = bytes(DNS(id=7, qr=1, rd=1, rcode=3, qd=[DNSQR(qname="nope.example.org", qtype="AAAA")],
                       an=[DNSRR(rrname="1.2.0.192.in-addr.arpa", type="PTR", rdata="h.example.org",
                                 ttl=9)]))
    m = dns.parse(theirs)
    assert (m.id, m.rcode, m.qr) == (7, dns.RCODE_NXDOMAIN, True)
    assert m.questions == [dns.Question("nope.example.org", AAAA)]
    assert m.answers == [dns.Record("1.2.0.192.in-addr.arpa", PTR, 1, 9, "h.example.org")]


# -- the stub resolver, sans-IO on fake time --------------------------------------------------

S1 = (bytes([10, 0, 0, 53]), 53)
S2 = (socket.inet_pton(socket.AF_INET6, "fc00::53"), 53)


def reply(payload: bytes, answers=(), rcode=0, tc=False, authorities=()) -> bytes:
    return dns.build_response(dns.parse(payload), list(answers), rcode=rcode, tc=tc,
                              authorities=list(authorities))


def rr(name, rtype, data, ttl=60):
    return dns.Record(name, rtype, dns.CLASS_IN, ttl, data)


def test_query_tries_each_server_per_attempt_then_times_out():
    q = Query("www.example.com", A, [S1, S2], 40000, timeout=5.0, attempts=2)
    q.start(0.0)
    ids = []
    for n, t in enumerate((0.0, 5.0, 10.0, 15.0)):
        assert [i for i, _ in q.outbox] == [n % 2], f"transmission {n}"
        ids.append(dns.parse(q.outbox.pop()[1]).id)
        q.on_timer(t + 4.99)
        assert not q.outbox and q.result is None
        q.on_timer(t + 5.0)
    assert q.result is not None and q.result.status == "timeout" and not q.outbox
    assert len(set(ids)) == 4  # a fresh id each time


def test_query_accepts_only_the_right_answer():
    q = Query("www.example.com", A, [S1, S2], 40000)
    q.start(0.0)
    payload = q.outbox.pop()[1]
    good = reply(payload, [rr("www.example.com", A, "192.0.2.1")])
    other = dns.build_query(1, "www.example.com", A)
    wrong_q = dns.build_response(dns.parse(dns.build_query(dns.parse(payload).id,
                                                           "evil.example.com", A)),
                                 [rr("evil.example.com", A, "6.6.6.6")])
    wrong_id = bytearray(good)
    wrong_id[0] ^= 0xFF
    for data, src in [(good, (S1[0], 5353)), (good, S2), (good, (b"\x0a\x00\x00\x36", 53)),
                      (bytes(wrong_id), S1), (wrong_q, S1), (other, S1), (b"\x00" * 5, S1)]:
        assert not q.receive(data, src, 1.0)
    assert q.result is None and q.ignored == 7
    assert q.receive(good.replace(b"www", b"WwW"), S1, 1.0)  # names match case-insensitively
    assert q.result.status == "ok" and q.result.data == ["192.0.2.1"]


def test_query_servfail_moves_on_and_truncation_asks_tcp():
    q = Query("x.example", A, [S1, S2], 40000, attempts=1)
    q.start(0.0)
    assert q.receive(reply(q.outbox.pop()[1], rcode=dns.RCODE_SERVFAIL), S1, 0.1)
    index, payload = q.outbox.pop()
    assert index == 1 and q.result is None
    assert q.receive(reply(payload, rcode=dns.RCODE_REFUSED), S2, 0.2)
    assert q.result.status == "servfail"

    q = Query("x.example", A, [S1, S2], 40000)
    q.start(0.0)
    assert q.receive(reply(q.outbox.pop()[1], tc=True), S1, 0.1)
    assert q.tcp is not None and q.tcp[0] == 0 and q.deadline is None
    q.on_timer(100.0)
    assert not q.outbox  # no UDP timer while TCP is asked
    q.tcp_answer(None, 1.0)  # TCP failed: the next server, over UDP
    index, payload = q.outbox.pop()
    assert index == 1
    assert q.receive(reply(payload, tc=True), S2, 1.1)
    tcp_query = q.tcp[2]
    q.tcp_answer(reply(tcp_query, [rr("x.example", A, f"10.1.0.{i}") for i in range(40)],
                       tc=True), 1.2)
    assert q.result.status == "ok" and len(q.result.data) == 40

    q = Query("x.example", A, [S1], 40000)
    q.start(0.0)
    assert q.receive(reply(q.outbox.pop()[1], rcode=dns.RCODE_FORMERR), S1, 0.1)
    assert q.result.status == "fail"


def test_extract_follows_cname_chains():
    m = dns.parse(reply(dns.build_query(1, "a.example", A), [
        rr("a.example", CNAME, "B.example", ttl=300), rr("b.example", CNAME, "c.example", ttl=50),
        rr("c.example", A, "10.0.0.3", ttl=100), rr("c.example", AAAA, "fc00::3"),
        rr("other.example", A, "10.9.9.9")]))
    r = rz.extract(m, "a.example", A)
    assert (r.status, r.canonical, r.aliases, r.data, r.ttl) == (
        "ok", "c.example", ["a.example", "B.example"], ["10.0.0.3"], 50)
    m = dns.parse(reply(dns.build_query(1, "a.example", A), [rr("a.example", CNAME, "b.example")]))
    assert rz.extract(m, "a.example", A).status == "cname"
    m = dns.parse(reply(dns.build_query(1, "a.example", A), [
        rr("a.example", CNAME, "b.example"), rr("b.example", CNAME, "a.example")]))
    assert rz.extract(m, "a.example", A).status == "fail"
    soa = rr("example", SOA, ("ns.example", "h.example", 1, 2, 3, 4, 30), ttl=600)
    m = dns.parse(reply(dns.build_query(1, "n.example", A), rcode=3, authorities=[soa]))
    r = rz.extract(m, "n.example", A)
    assert (r.status, r.ttl) == ("nxdomain", 30)


class FakeNet:
    """Answers a Resolution's datagrams from a table, counting what was sent."""

    def __init__(self, zone: dict, *, down: set = frozenset(), servfail: set = frozenset()):
        self.zone = zone  # (name, qtype) -> (rcode, [records])
        self.down = down
        self.servfail = servfail
        self.sent: list[tuple[tuple, str, int]] = []

    def run(self, res: Resolution, now: float, until: float = 100.0) -> float:
        while not res.done and now <= until:
            for q, server, payload in res.take_datagrams():
                m = dns.parse(payload)
                name, qtype = m.questions[0].name, m.questions[0].qtype
                self.sent.append((server, name, qtype))
                if server in self.down:
                    continue
                rcode, answers = self.zone.get((name.lower(), qtype), (3, []))
                if server in self.servfail:
                    rcode, answers = dns.RCODE_SERVFAIL, []
                res.receive(q.port, reply(payload, answers, rcode=rcode), server, now)
            if not res.done and not any(q.outbox for q in res.active()):
                now = res.next_deadline()
                assert now is not None, "a resolution waiting for nothing"
                res.on_timer(now)
        return now


def ports():
    return itertools.count(30000).__next__


def test_resolution_search_list_and_glibc_continuation_rules():
    r = Resolver(None)  # type: ignore[arg-type]
    r.search = ["corp.example", "example"]
    assert r._candidates("www") == ["www.corp.example", "www.example", "www"]
    assert r._candidates("www.x") == ["www.x", "www.x.corp.example", "www.x.example"]
    assert r._candidates("www.x.") == ["www.x"]
    r.ndots = 2
    assert r._candidates("www.x") == ["www.x.corp.example", "www.x.example", "www.x"]

    zone = {("www.example", A): (0, [rr("www.example", A, "10.0.0.8")]),
            ("www.example", AAAA): (0, []),
            ("www.corp.example", AAAA): (0, [])}
    net = FakeNet(zone)
    res = Resolution(["www.corp.example", "www.example", "www"], [A, AAAA], [S1], ports())
    res.start(0.0)
    net.run(res, 0.0)
    assert res.name == "www.example" and res.results[A].data == ["10.0.0.8"]
    assert res.results[AAAA].status == "nodata"
    assert [(n, t) for _, n, t in net.sent] == [
        ("www.corp.example", A), ("www.corp.example", AAAA), ("www.example", A),
        ("www.example", AAAA)]

    res = Resolution(["a.corp.example", "a.example"], [A], [S1], ports())
    res.start(0.0)
    FakeNet({("a.corp.example", A): (0, [])}).run(res, 0.0)
    assert res.failure == "nodata"  # NXDOMAIN for one candidate, no data for another

    net = FakeNet({}, down={S1})
    res = Resolution(["a.corp.example", "a.example"], [A], [S1], ports(), timeout=1.0)
    res.start(0.0)
    end = net.run(res, 0.0)
    assert res.failure == "again" and end == 2.0  # a timeout stops the search
    assert all(n == "a.corp.example" for _, n, _ in net.sent)

    net = FakeNet({("a.example", A): (0, [rr("a.example", A, "10.0.0.1")])}, servfail={S1})
    res = Resolution(["a.example"], [A], [S1, S2], ports(), attempts=1)
    res.start(0.0)
    net.run(res, 0.0)
    assert res.results[A].data == ["10.0.0.1"] and [s for s, _, _ in net.sent] == [S1, S2]


def test_resolution_asks_again_at_the_end_of_a_cname_chain():
    zone = {("a.example", A): (0, [rr("a.example", CNAME, "b.example")]),
            ("b.example", A): (0, [rr("b.example", CNAME, "c.example")]),
            ("c.example", A): (0, [rr("c.example", A, "10.0.0.3")])}
    res = Resolution(["a.example"], [A], [S1], ports())
    res.start(0.0)
    FakeNet(zone).run(res, 0.0)
    r = res.results[A]
    assert (r.canonical, r.aliases, r.data) == ("c.example", ["a.example", "b.example"],
                                                ["10.0.0.3"])
    loop = {(f"n{i}.example", A): (0, [rr(f"n{i}.example", CNAME, f"n{i + 1}.example")])
            for i in range(20)}
    res = Resolution(["n0.example"], [A], [S1], ports())
    res.start(0.0)
    FakeNet(loop).run(res, 0.0)
    assert res.failure == "fail"


def test_cache_keeps_answers_for_their_ttl():
    zone = {("a.example", A): (0, [rr("a.example", A, "10.0.0.1", ttl=30)]),
            ("n.example", A): (3, [])}
    cache = Cache(4)
    net = FakeNet(zone)
    for now, sends in ((0.0, 1), (10.0, 0), (29.9, 0), (30.0, 1)):
        res = Resolution(["A.example"], [A], [S1], ports(), cache=cache)
        res.start(now)
        before = len(net.sent)
        net.run(res, now)
        assert res.results[A].data == ["10.0.0.1"] and len(net.sent) - before == sends, now
    res = Resolution(["n.example"], [A], [S1], ports(), cache=cache)
    res.start(0.0)
    net.run(res, 0.0)  # NXDOMAIN without an SOA: not cached
    res = Resolution(["n.example"], [A], [S1], ports(), cache=cache)
    res.start(1.0)
    assert not res.done
    for i in range(10):
        cache.put(f"x{i}.example", A, rz.Result("ok", "x", [], ["10.0.0.1"], 60), 0.0)
    assert len(cache.entries) == 4


# -- the socket module's functions, compared with glibc's ---------------------------------------

def _outcome(fn, *args):
    try:
        return ("ok", fn(*args))
    except Exception as exc:  # noqa: BLE001 - the comparison is the point
        return ("error", type(exc).__name__, exc.args)


def test_getaddrinfo_matches_glibc_for_numeric_hosts():
    """Numeric and absent hosts never reach a resolver, so the host's getaddrinfo is an
    oracle: every combination below must give the same results or the same error."""
    stack = Stack(runner=False)
    hosts = [None, "*", "", "127.0.0.1", "127.1", "0x7f.1", "08.1.1.1", "4294967295",
             "4294967296", "1.16777215", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "fe80::1%1",
             "fe80::1%lo", "fe80::1%nosuch", "2001:db8::1%5", "2001:db8::1%lo",
             "::ffff:1.2.3.4%nosuch", "0.0.0.0", "::", "1.2.3.4 ", "1.2.3.4.", "0x", b"1.2.3.4",
             "0X1.0x2.0.3", "1.2.3.0400", "fe80::1%4294967296"]
    ports = [None, 0, 80, "80", "http", "domain", "nosuch", "", "*", " 80", "+80", "-1",
             70000, -1, "99999999999999999999999", b"53", 2**63, True, 1.5]
    families, flag_sets = [0, 2, 10, 1], [0, 1, 2, 8, 24, 0x400, 0x10000]
    grid = itertools.chain(
        # every host with a few services, and every service with a few hosts
        itertools.product(hosts, [None, 80, "http"], families, [0, 1, 2], [0, 17], flag_sets),
        itertools.product([None, "127.0.0.1", "::1", "foo"], ports, families,
                          [0, 1, 2, 3, 5, 99], [0, 6, 17, 99, 132], flag_sets))
    checked = 0
    for h, p, fam, typ, proto, flags in grid:
        flags |= socket.AI_NUMERICHOST if h is not None else 0
        args = (h, p, fam, typ, proto, flags)
        assert _outcome(stack.getaddrinfo, *args) == _outcome(socket.getaddrinfo, *args), args
        checked += 1
    assert checked > 70_000


def test_getnameinfo_and_gethostby_match_the_stdlib_for_numeric_input():
    stack = Stack(runner=False)
    for h, p, rest, flags in itertools.product(
            ["127.0.0.1", "127.1", "::1", "fe80::1", "fe80::1%lo", "ff02::1", "2001:db8::1",
             "::ffff:127.0.0.1", "localhost", "", b"127.0.0.1", "::"],
            [0, 80, 53, 70000, -5, 2**31, "80"], [(), (0,), (5, 1), (2**20, 77), (0, 2**32 + 1)],
            [1, 3, 17, 65, 129, 257, 5, 11]):
        sa = (h, p, *rest)
        assert _outcome(stack.getnameinfo, sa, flags) == _outcome(socket.getnameinfo, sa,
                                                                  flags), (sa, flags)
    for bad in (["127.0.0.1", 80], ("127.0.0.1",)):
        assert _outcome(stack.getnameinfo, bad, 1) == _outcome(socket.getnameinfo, bad, 1)
    for name in ("127.0.0.1", "127.1", "", "::1", "1.2.3.4", b"1.2.3.4", bytearray(b"1.2.3.4"),
                 5, "0x7f.1", "fe80::1%lo", "255.255.255.255", "a..b", "x" * 64):
        assert _outcome(stack.gethostbyname, name) == _outcome(socket.gethostbyname, name)
        assert _outcome(stack.gethostbyname_ex, name) == _outcome(socket.gethostbyname_ex, name)
    for name in ("", 5, "<broadcast>"):
        assert _outcome(stack.gethostbyaddr, name) == _outcome(socket.gethostbyaddr, name)
    # (the host's answers for 127.0.0.1 depend on its /etc/hosts; Debian's say this)
    assert stack.gethostbyaddr("127.1") == ("localhost", [], ["127.0.0.1"])


def test_local_names_hosts_table_and_own_name_without_dns():
    stack = Stack(runner=False)
    assert stack.gethostname() == stack.name and stack._resolver is None  # nothing made yet
    stack.add_host("db.internal", "10.7.0.5")
    stack.add_host("db.internal", "fc00:7::5")
    stack.hosts["Printer.lan"] = ["10.7.0.9"]
    s = socket
    assert stack.getaddrinfo("db.internal", 5432, type=s.SOCK_STREAM) == [
        (s.AF_INET, s.SOCK_STREAM, 6, "", ("10.7.0.5", 5432)),
        (s.AF_INET6, s.SOCK_STREAM, 6, "", ("fc00:7::5", 5432, 0, 0))]
    assert stack.getaddrinfo("printer.LAN.", None, s.AF_INET, s.SOCK_DGRAM, 0,
                             s.AI_CANONNAME) == [
        (s.AF_INET, s.SOCK_DGRAM, 17, "Printer.lan", ("10.7.0.9", 0))]
    assert stack.gethostbyaddr("10.7.0.9") == ("Printer.lan", [], ["10.7.0.9"])
    assert stack.getnameinfo(("fc00:7::5", 22), 0) == ("db.internal", "ssh")
    assert stack.getaddrinfo("localhost", 80, type=s.SOCK_STREAM) == [
        (s.AF_INET6, s.SOCK_STREAM, 6, "", ("::1", 80, 0, 0)),
        (s.AF_INET, s.SOCK_STREAM, 6, "", ("127.0.0.1", 80))]
    assert stack.gethostbyname("api.localhost") == "127.0.0.1"
    with pytest.raises(s.gaierror) as e:  # no nameserver: an unknown name is unknown
        stack.getaddrinfo("www.example.com", 80)
    assert e.value.errno == s.EAI_NONAME
    with pytest.raises(s.gaierror) as e:
        stack.getaddrinfo("printer.lan", 80, s.AF_INET6)
    assert e.value.errno == s.EAI_NONAME
    with pytest.raises(s.herror) as e:
        stack.gethostbyaddr("10.7.0.10")
    assert e.value.args == (1, "Unknown host")
    with pytest.raises(s.gaierror) as e:
        stack.getnameinfo(("10.7.0.10", 80), s.NI_NAMEREQD)
    assert e.value.errno == s.EAI_NONAME
    assert stack.getnameinfo(("10.7.0.10", 80), 0) == ("10.7.0.10", "http")
    # a stack with no address but loopback answers its own name with loopback
    stack.set_hostname("lonely")
    assert stack.gethostbyname("lonely") == "127.0.1.1"
    assert stack.getfqdn() == "lonely"
    stack.resolver.domain = "example.org"
    assert stack.getfqdn() == "lonely.example.org"
    assert stack.getnameinfo(("127.0.1.1", 80), socket.NI_NOFQDN) == ("lonely", "http")


def test_destination_order_prefers_families_the_stack_can_reach():
    from stack_helpers import ListLink

    s = socket
    v4 = Stack("eth,ip=10.0.0.5/24,gw=10.0.0.1", link=ListLink(), runner=False)
    dual = Stack("eth,ip=10.0.0.6/24,gw=10.0.0.1,ip=2001:db8::6/64", link=ListLink(),
                 runner=False)
    dual.route_add("default", "2001:db8::1")
    for st_ in (v4, dual):
        st_.on_timer(5.0)  # DAD done: the IPv6 addresses (link-local too) are usable
        st_.add_host("both.example", "2001:db8:5::5")
        st_.add_host("both.example", "192.0.2.5")
        st_.add_host("both.example", "fe80::5")
    # RFC 6724: unreachable destinations last (rule 1), then the smaller scope (rule 8)
    order = [a[4][0] for a in v4.getaddrinfo("both.example", 80, type=s.SOCK_STREAM)]
    assert order == ["fe80::5", "192.0.2.5", "2001:db8:5::5"]  # no IPv6 route
    order = [a[4][0] for a in dual.getaddrinfo("both.example", 80, type=s.SOCK_STREAM)]
    assert order == ["fe80::5", "2001:db8:5::5", "192.0.2.5"]  # precedence 40 > 35
    # AI_ADDRCONFIG, as glibc: a family counts with an address other than loopback
    lone = Stack(runner=False)
    with pytest.raises(s.gaierror) as e:
        lone.getaddrinfo("localhost", 80, s.AF_INET, 0, 0, s.AI_ADDRCONFIG)
    assert e.value.errno == s.EAI_NONAME
    assert len(lone.getaddrinfo("localhost", 80, 0, s.SOCK_STREAM, 0, s.AI_ADDRCONFIG)) == 2
    assert [a[0] for a in v4.getaddrinfo("localhost", 80, 0, s.SOCK_STREAM, 0,
                                         s.AI_ADDRCONFIG)] == [s.AF_INET6, s.AF_INET]
    for st_ in (v4, dual, lone):
        st_.close()


# -- a fake DNS server on another stack ---------------------------------------------------------

@pytest.fixture(scope="module")
def lan(tmp_path_factory):
    """Client C, server S and third party X on one switch, each with IPv4 and IPv6."""
    d = tmp_path_factory.mktemp("dnslan")
    sw = SwitchServer(str(d / "sw")).start()
    runner = StackRunner("test-dns")
    url = f"vde://{sw.directory}"
    stacks = {n: Stack(f"eth,ip=10.53.0.{i}/24,ip=fc00:53::{i}/64", link=url, runner=runner,
                       name=n) for i, n in ((1, "C"), (2, "S"), (3, "X"))}
    wait_for(lambda: all(len(s.addresses(6)) == 3 for s in stacks.values()), what="DAD")
    yield stacks
    for s in stacks.values():
        s.close()
    runner.stop()
    sw.close()


class FakeDNS:
    """An authoritative-style server on a stack's UDP and TCP port 53 (v4 and v6): CNAMEs
    followed inside its zone, NXDOMAIN with an SOA for unknown names, optional faults."""

    def __init__(self, stack: Stack, records: list[dns.Record], *, truncate: bool = False,
                 before_answer=None) -> None:
        self.stack = stack
        self.records = records
        self.truncate = truncate
        self.before_answer = before_answer
        self.silent = False
        self.log: list[tuple[str, tuple, int, str, int]] = []  # (transport, src, id, name, type)
        self.socks = []
        self.threads = []
        u = stack.socket(socket.AF_INET6, socket.SOCK_DGRAM)  # dual stack: IPv4 too
        u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        u.bind(("", 53))
        t = stack.socket(socket.AF_INET6, socket.SOCK_STREAM)
        t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT ones
        t.bind(("", 53))
        t.listen(8)
        self.socks += [u, t]
        self._spawn(self._serve_udp, u)
        self._spawn(self._serve_tcp, t)

    def _spawn(self, fn, *args) -> None:
        th = threading.Thread(target=fn, args=args, daemon=True)
        th.start()
        self.threads.append(th)

    def answer(self, query: dns.Message) -> tuple[list[dns.Record], int]:
        q = query.questions[0]
        name, out = q.name.lower(), []
        for _ in range(10):
            cname = [r for r in self.records if r.name.lower() == name and r.rtype == CNAME]
            if not cname:
                break
            out += cname
            name = cname[0].data.lower()
        out += [r for r in self.records if r.name.lower() == name and r.rtype == q.qtype]
        exists = out or any(r.name.lower() == name for r in self.records)
        return out, (dns.RCODE_NOERROR if exists else dns.RCODE_NXDOMAIN)

    def _respond(self, data: bytes, src: tuple, transport: str) -> bytes | None:
        try:
            query = dns.parse(data)
        except dns.DnsError:
            return None
        q = query.questions[0]
        src = (src[0].removeprefix("::ffff:"), src[1])
        self.log.append((transport, src, query.id, q.name, q.qtype))
        if self.silent:
            return None
        answers, rcode = self.answer(query)
        soa = [rr("example", SOA, ("ns.example", "h.example", 1, 2, 3, 4, 60))]
        if transport == "udp" and self.truncate and len(answers) > 3:
            return dns.build_response(query, answers[:3], tc=True)
        return dns.build_response(query, answers, rcode=rcode,
                                  authorities=soa if not answers else [])

    def _serve_udp(self, sock) -> None:
        while True:
            try:
                data, src = sock.recvfrom(4096)
            except OSError:
                return
            out = self._respond(data, src, "udp")
            if out is not None:
                if self.before_answer is not None:
                    self.before_answer(dns.parse(data), (src[0].removeprefix("::ffff:"), src[1]))
                sock.sendto(out, src)

    def _serve_tcp(self, sock) -> None:
        while True:
            try:
                conn, src = sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                try:
                    buf = b""
                    while len(buf) < 2 or len(buf) < 2 + int.from_bytes(buf[:2], "big"):
                        chunk = conn.recv(4096)
                        if not chunk:
                            break
                        buf += chunk
                    out = self._respond(buf[2:], src, "tcp")
                    if out is not None:
                        conn.sendall(len(out).to_bytes(2, "big") + out)
                except OSError:
                    pass

    def close(self) -> None:
        for s in self.socks:
            s.close()


ZONE = [
    rr("web.example", A, "10.53.0.2"), rr("web.example", AAAA, "fc00:53::2"),
    rr("www.example", CNAME, "alias.example"), rr("alias.example", CNAME, "web.example"),
    rr("v4only.example", A, "10.53.0.44"),
    rr("v6only.example", AAAA, "fc00:53::66"),
    rr("box.corp.example", A, "10.53.0.77"),
    rr("2.0.53.10.in-addr.arpa", PTR, "web.example"),
    rr("big.example", A, "10.53.1.0"),
    *[rr("big.example", A, f"10.53.1.{i}") for i in range(1, 60)],
]


@pytest.fixture
def fake(lan):
    c = lan["C"]
    c._resolver = None  # a fresh resolver (and cache) for each test
    c.resolv_conf("nameserver 10.53.0.2\noptions timeout:2 attempts:2\n")
    server = FakeDNS(lan["S"], list(ZONE))
    yield c, server
    server.close()


def test_getaddrinfo_over_dns(fake):
    c, server = fake
    s = socket
    got = c.getaddrinfo("web.example", "http", 0, s.SOCK_STREAM, 0, s.AI_CANONNAME)
    # RFC 6724: the ULA (precedence 3) sorts after IPv4 (35), as glibc's gai.conf would say
    assert got == [(s.AF_INET, s.SOCK_STREAM, 6, "web.example", ("10.53.0.2", 80)),
                   (s.AF_INET6, s.SOCK_STREAM, 6, "", ("fc00:53::2", 80, 0, 0))]
    assert c.getaddrinfo("www.example", 443, s.AF_INET6, s.SOCK_STREAM, 0, s.AI_CANONNAME) == [
        (s.AF_INET6, s.SOCK_STREAM, 6, "web.example", ("fc00:53::2", 443, 0, 0))]
    assert c.gethostbyname_ex("www.example") == ("web.example", ["www.example", "alias.example"],
                                                 ["10.53.0.2"])
    assert c.gethostbyname("v4only.example") == "10.53.0.44"
    assert [a[4][0] for a in c.getaddrinfo("v4only.example", 80, s.AF_INET6, s.SOCK_STREAM, 0,
                                           s.AI_V4MAPPED)] == ["::ffff:10.53.0.44"]
    assert [a[4][0] for a in c.getaddrinfo("web.example", 80, s.AF_INET6, s.SOCK_STREAM, 0,
                                           s.AI_V4MAPPED | s.AI_ALL)] == [
        "::ffff:10.53.0.2", "fc00:53::2"]
    for name, family, code in (("nope.example", 0, s.EAI_NONAME),
                               ("v6only.example", s.AF_INET, s.EAI_NODATA),
                               ("v4only.example", s.AF_INET6, s.EAI_NODATA)):
        with pytest.raises(s.gaierror) as e:
            c.getaddrinfo(name, 80, family)
        assert e.value.args == (code, gai._GAI_TEXT[code]), name
    with pytest.raises(s.gaierror) as e:
        c.gethostbyname("nope.example")
    assert e.value.errno == s.EAI_NONAME
    assert c.gethostbyaddr("10.53.0.2") == ("web.example", [], ["10.53.0.2"])
    assert c.getnameinfo(("10.53.0.2", 80), 0) == ("web.example", "http")
    assert c.getfqdn("10.53.0.2") == "web.example"
    with pytest.raises(s.herror) as e:
        c.gethostbyaddr("10.53.0.99")
    assert e.value.args == (1, "Unknown host")
    # random, distinct query ids and source ports, on the stack's own address
    udp = [entry for entry in server.log if entry[0] == "udp"]
    assert all(src[0] == "10.53.0.1" for _, src, _, _, _ in udp)
    assert len({src[1] for _, src, _, _, _ in udp}) >= len(udp) - 1
    assert len({i for _, _, i, _, _ in udp}) >= len(udp) - 1
    # the cache answers again without asking
    n = len(server.log)
    assert c.gethostbyname("web.example") == "10.53.0.2"
    assert len(server.log) == n


def test_search_domain_and_config_string(fake, lan):
    c, server = fake
    c._resolver = None
    c.configure("fqdn=node1.corp.example,dns=10.53.0.2,domain=corp.example")
    assert c.gethostname() == "node1.corp.example"
    assert c.nameservers == ["10.53.0.2"] and c.resolver.search == ["corp.example"]
    assert c.gethostbyname("box") == "10.53.0.77"
    assert [e[3] for e in server.log if "box" in e[3]] == ["box.corp.example"]
    assert c.gethostbyname("node1") == "10.53.0.1"  # its own name: its address
    assert c.getfqdn() == "node1.corp.example"
    c.set_hostname("node1")
    assert c.getfqdn() == "node1.corp.example"
    assert c.gethostbyname_ex("node1") == ("node1.corp.example", ["node1"], ["10.53.0.1"])
    text = c.resolv_conf()
    assert text == "search corp.example\nnameserver 10.53.0.2\n"
    c.resolv_conf("10.53.0.2,fc00:53::2")
    assert c.nameservers == ["10.53.0.2", "fc00:53::2"] and c.resolver.search == []
    with pytest.raises(ValueError):
        c.resolv_conf("nameserver not-an-address\n")


def test_ipv6_nameserver_and_failover(fake, lan):
    c, server = fake
    c.resolv_conf("nameserver fc00:53::3\nnameserver fc00:53::2\noptions timeout:1 attempts:1\n")
    t0 = time.monotonic()
    assert c.gethostbyname("web.example") == "10.53.0.2"
    assert 0.9 < time.monotonic() - t0 < 3  # X does not answer: one timeout, then S
    assert server.log[-1][1][0] == "fc00:53::1"
    server.silent = True
    c.resolver.flush_cache()
    t0 = time.monotonic()
    with pytest.raises(socket.gaierror) as e:
        c.getaddrinfo("web.example", 80)
    assert e.value.args == (socket.EAI_AGAIN, "Temporary failure in name resolution")
    assert 1.9 < time.monotonic() - t0 < 4
    assert not c.udp, "UDP ports left bound"


def test_answers_from_the_wrong_source_are_ignored(fake, lan):
    c, server = fake
    x = lan["X"]
    forged = {}

    def spoof(query: dns.Message, src: tuple) -> None:
        bad = dns.build_response(query, [rr(query.questions[0].name, query.questions[0].qtype,
                                            "6.6.6.6" if query.questions[0].qtype == A
                                            else "fc00::666")])
        wrong_id = bytearray(bad)
        wrong_id[0] ^= 0x55
        with x.locked():  # from X's address, port 53: right id and question, wrong server
            x.udp_send(bad, src, 53, now=x.clock())
        with lan["S"].locked():  # from S's address, wrong port; then right port, wrong id
            lan["S"].udp_send(bad, src, 5353, now=x.clock())
            lan["S"].udp_send(bytes(wrong_id), src, 53, src="10.53.0.2", now=x.clock())
        forged[query.id] = True
        time.sleep(0.05)

    server.before_answer = spoof
    assert c.gethostbyname("web.example") == "10.53.0.2"
    assert forged


def test_truncated_answer_falls_back_to_tcp(fake):
    c, server = fake
    server.truncate = True
    name, aliases, addrs = c.gethostbyname_ex("big.example")
    assert len(addrs) == 60 and "10.53.1.59" in addrs
    assert [e[0] for e in server.log if e[3] == "big.example"] == ["udp", "tcp"]


def test_stack_sockets_take_names(fake, lan):
    c, server = fake
    lan["S"].add_host("web.example", "10.53.0.2")
    srv = lan["S"].socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("web.example", 7100))  # a name on the server's side too
    srv.listen(1)

    def serve():
        conn, addr = srv.accept()
        with conn:
            conn.sendall(f"hello {addr[0]}".encode())

    threading.Thread(target=serve, daemon=True).start()
    with c.socket() as sock:
        sock.settimeout(10)
        sock.connect(("www.example", 7100))
        assert sock.recv(100) == b"hello 10.53.0.1"
    u = c.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    with pytest.raises(socket.gaierror) as e:
        u.sendto(b"x", ("v4only.example", 9))  # an IPv6 socket, a name with IPv4 only
    assert e.value.errno == socket.EAI_NODATA
    u.sendto(b"x", ("web.example", 9))
    u.close()
    srv.close()
    with pytest.raises(socket.gaierror), c.socket() as sock:
        sock.connect(("nope.example", 80))


def test_resolving_on_the_runner_thread_refuses_instead_of_deadlocking(fake):
    c, _ = fake
    box = []

    def on_runner():
        try:
            c.gethostbyname("web.example")
        except RuntimeError as exc:
            box.append(exc)

    c.runner.call_soon(on_runner)
    wait_for(lambda: box, what="the runner's call")
    assert "deadlock" in str(box[0])


# -- a real DNS server: Debian's dnsmasq in a namespace, reached through a tap -----------------

@pytest.fixture
def dnsmasq(netns, procs, sockdir):
    """A client stack on a threadnet switch and dnsmasq in a namespace joined to it by
    vde_plug2tap, answering for test.example only (no upstream, no /etc/hosts)."""
    need_tool("vde_plug2tap", "dnsmasq")
    sw = SwitchServer(os.path.join(sockdir, "sw")).start()
    runner = StackRunner("test-dnsmasq")
    client = Stack("eth,ip=10.54.0.1/24,ip=fc00:54::1/64,dns=10.54.0.53", link=f"vde://{sw.directory}",
                   runner=runner, name="dnsclient")
    ns = netns.add()
    try:
        for cmd in (("ip", "tuntap", "add", "dev", "tnd0", "mode", "tap"),
                    ("ip", "addr", "add", "10.54.0.53/24", "dev", "tnd0"),
                    ("ip", "addr", "add", "fc00:54::53/64", "dev", "tnd0", "nodad"),
                    ("ip", "link", "set", "tnd0", "up")):
            netns.run(ns, *cmd)
        pidfile = os.path.join(sockdir, "p2t.pid")
        procs.daemon(netns.exec_cmd(ns, "vde_plug2tap", "-s", sw.directory, "-d", "-P", pidfile,
                                    "tnd0"), pidfile)
        conf = os.path.join(sockdir, "dnsmasq.conf")
        log = os.path.join(sockdir, "dnsmasq.log")
        dpid = os.path.join(sockdir, "dnsmasq.pid")
        big = [f"host-record=big.test.example,10.54.1.{i}" for i in range(60)]
        with open(conf, "w") as f:
            f.write("\n".join([
                "no-resolv", "no-hosts", "no-poll", "bind-interfaces",
                "listen-address=10.54.0.53", "listen-address=fc00:54::53", "port=53",
                f"pid-file={dpid}", f"log-facility={log}", "log-queries", "user=root",
                "local=/test.example/", "local=/54.10.in-addr.arpa/", "local-ttl=60",
                "host-record=web.test.example,10.54.0.53,fc00:54::53",
                "host-record=v6only.test.example,fc00:54::66",
                "cname=alias.test.example,web.test.example",
                "cname=www.test.example,alias.test.example",
                "ptr-record=77.0.54.10.in-addr.arpa,printer.test.example",
                *big]) + "\n")
        procs.daemon(netns.exec_cmd(ns, "dnsmasq", f"--conf-file={conf}"), dpid)
        wait_for(lambda: "10.54.0.1/24" in client.addresses(4) and
                 "fc00:54::1/64" in client.addresses(6), what="DAD")
        yield client, ns, log
    finally:
        client.close()
        runner.stop()
        sw.close()


def test_dnsmasq_records_through_a_stack(dnsmasq, netns, procs):
    client, ns, log = dnsmasq
    s = socket
    assert client.getaddrinfo("web.test.example", 80, 0, s.SOCK_STREAM) == [
        (s.AF_INET, s.SOCK_STREAM, 6, "", ("10.54.0.53", 80)),
        (s.AF_INET6, s.SOCK_STREAM, 6, "", ("fc00:54::53", 80, 0, 0))]
    assert client.gethostbyname_ex("www.test.example") == (
        "web.test.example", ["www.test.example", "alias.test.example"], ["10.54.0.53"])
    assert client.getaddrinfo("v6only.test.example", 80, s.AF_INET6, s.SOCK_STREAM,
                              0, s.AI_CANONNAME) == [
        (s.AF_INET6, s.SOCK_STREAM, 6, "v6only.test.example", ("fc00:54::66", 80, 0, 0))]
    assert client.gethostbyaddr("10.54.0.77") == ("printer.test.example", [], ["10.54.0.77"])
    assert client.gethostbyaddr("10.54.0.53")[0] == "web.test.example"
    assert client.gethostbyaddr("fc00:54::53")[0] == "web.test.example"
    with pytest.raises(s.gaierror) as e:
        client.getaddrinfo("nope.test.example", 80)
    assert e.value.args == (s.EAI_NONAME, "Name or service not known")
    with pytest.raises(s.gaierror) as e:
        client.getaddrinfo("v6only.test.example", 80, s.AF_INET)
    assert e.value.errno == s.EAI_NODATA
    # 60 A records do not fit 512 bytes: dnsmasq truncates, the resolver asks over TCP
    assert client.resolver.tcp_exchanges == 0
    name, _, addrs = client.gethostbyname_ex("big.test.example")
    assert name == "big.test.example" and sorted(addrs) == sorted(
        f"10.54.1.{i}" for i in range(60))
    assert client.resolver.tcp_exchanges == 1  # CPython asks twice: the second is cached
    # the same over IPv6 to the nameserver
    client.nameservers = ["fc00:54::53"]
    assert client.gethostbyname("alias.test.example") == "10.54.0.53"
    with open(log) as f:
        text = f.read()
    assert "query[A] alias.test.example from fc00:54::1" in text
    assert "query[PTR] 77.0.54.10.in-addr.arpa from 10.54.0.1" in text
    # a TCP connection by name to a server in the namespace
    server = procs.popen(netns.exec_cmd(ns, "python3", "-c", (
        "import socket\n"
        "s = socket.create_server(('10.54.0.53', 7200))\n"
        "print('ready', flush=True)\n"
        "c, a = s.accept()\n"
        "c.sendall(('hi ' + a[0]).encode())\n"
        "c.close()\n")), stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().strip() == "ready"
    with client.socket() as sock:
        sock.settimeout(10)
        sock.connect(("web.test.example", 7200))
        assert sock.recv(100) == b"hi 10.54.0.1"
    server.wait(10)
