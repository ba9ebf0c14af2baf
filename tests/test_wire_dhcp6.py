"""DHCPv6 messages (``wire/dhcp6.py``): scapy reads what we build and we read what scapy
builds, every option the client and server use; strict parsing with one named error per
problem; hypothesis round trips and fuzzing (random and mutated messages raise
Dhcp6Error and nothing else)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from threadnet.wire import dhcp6 as d

scapy_dhcp6 = pytest.importorskip("scapy.layers.dhcp6")

MAC = bytes.fromhex("020000000a01")
CLIENT = d.duid_ll(MAC)
SERVER = d.duid_llt(bytes.fromhex("020000000a02"), d.DUID_EPOCH + 1000)


def full_reply() -> d.Message:
    return d.Message(
        d.REPLY, 0xABCDEF, client_id=CLIENT, server_id=SERVER,
        ia_na=[d.IaNa(1, 1800, 2880, [d.IaAddress("fd00:1::100", 3600, 7200),
                                      d.IaAddress("fd00:1::101", 0, 0,
                                                  d.Status(d.NOT_ON_LINK, "gone"))]),
               d.IaNa(2, status=d.Status(d.NO_ADDRS_AVAIL, "pool is empty"))],
        preference=200, status=d.Status(d.SUCCESS, "ok"), unicast="fd00:1::1",
        dns_servers=["fd00:1::53", "fd00:1::54"], domains=["example.org", "lan"],
        sol_max_rt=3600, inf_max_rt=7200, refresh_time=86400, reconf_accept=True,
        rapid_commit=True, options=[(d.OPT_IA_PD, bytes(12))])


# -- against scapy --------------------------------------------------------------------------

def test_scapy_reads_what_we_build():
    s = scapy_dhcp6
    m = d.Message(d.SOLICIT, 0x010203, client_id=CLIENT,
                  ia_na=[d.IaNa(0x0a01, addresses=[d.IaAddress("fd00:1::7")])],
                  oro=[d.OPT_DNS_SERVERS, d.OPT_DOMAIN_LIST, d.OPT_SOL_MAX_RT], elapsed=150,
                  rapid_commit=True)
    p = s.DHCP6_Solicit(d.build(m))
    assert p.trid == 0x010203
    assert p[s.DHCP6OptClientId].duid.lladdr == "02:00:00:00:0a:01"
    ia = p[s.DHCP6OptIA_NA]
    assert ia.iaid == 0x0a01 and ia.T1 == 0 and ia.T2 == 0
    assert ia.ianaopts[0].addr == "fd00:1::7"
    assert p[s.DHCP6OptOptReq].reqopts == [23, 24, 82]
    assert p[s.DHCP6OptElapsedTime].elapsedtime == 150
    assert p.haslayer(s.DHCP6OptRapidCommit)

    p = s.DHCP6_Reply(d.build(full_reply()))
    assert p.msgtype == d.REPLY and p.trid == 0xABCDEF
    assert p[s.DHCP6OptServerId].duid.timeval == 1000
    assert p[s.DHCP6OptServerId].duid.lladdr == "02:00:00:00:0a:02"
    ias = [o for o in p.iterpayloads() if isinstance(o, s.DHCP6OptIA_NA)]
    assert [ia.iaid for ia in ias] == [1, 2]
    a0, a1 = ias[0].ianaopts
    assert (a0.addr, a0.preflft, a0.validlft) == ("fd00:1::100", 3600, 7200)
    assert a1.iaaddropts[0].statuscode == d.NOT_ON_LINK
    assert ias[1].ianaopts[0].statuscode == d.NO_ADDRS_AVAIL
    assert ias[1].ianaopts[0].statusmsg == b"pool is empty"
    assert p[s.DHCP6OptPref].prefval == 200
    assert p[s.DHCP6OptServerUnicast].srvaddr == "fd00:1::1"
    assert p[s.DHCP6OptDNSServers].dnsservers == ["fd00:1::53", "fd00:1::54"]
    assert p[s.DHCP6OptDNSDomains].dnsdomains == ["example.org.", "lan."]
    # scapy has no class for SOL_MAX_RT and INF_MAX_RT (RFC 8415 21.24, 21.25)
    unknown = {o.optcode: o.data for o in p.iterpayloads() if isinstance(o, s.DHCP6OptUnknown)}
    assert unknown[d.OPT_SOL_MAX_RT] == (3600).to_bytes(4, "big")
    assert unknown[d.OPT_INF_MAX_RT] == (7200).to_bytes(4, "big")
    assert p[s.DHCP6OptInfoRefreshTime].reftime == 86400
    assert p.haslayer(s.DHCP6OptReconfAccept)


def test_we_read_what_scapy_builds():
    s = scapy_dhcp6
    raw = bytes(s.DHCP6_Advertise(trid=0x42)
                / s.DHCP6OptClientId(duid=s.DUID_LL(lladdr="02:00:00:00:0a:01"))
                / s.DHCP6OptServerId(duid=s.DUID_LLT(lladdr="02:00:00:00:0a:02", timeval=77))
                / s.DHCP6OptIA_NA(iaid=9, T1=100, T2=160, ianaopts=[
                    s.DHCP6OptIAAddress(addr="fd00:2::9", preflft=200, validlft=300)])
                / s.DHCP6OptPref(prefval=255)
                / s.DHCP6OptDNSServers(dnsservers=["fd00:2::53"])
                / s.DHCP6OptDNSDomains(dnsdomains=["test.example.", "example."])
                / s.DHCP6OptStatusCode(statuscode=0, statusmsg="all fine"))
    m = d.parse(raw)
    assert (m.msg_type, m.xid) == (d.ADVERTISE, 0x42)
    assert m.client_id == CLIENT and d.duid_mac(m.client_id) == MAC
    assert m.server_id == d.duid_llt(bytes.fromhex("020000000a02"), d.DUID_EPOCH + 77)
    assert m.ia_na == [d.IaNa(9, 100, 160, [d.IaAddress("fd00:2::9", 200, 300)])]
    assert m.preference == 255
    assert m.dns_servers == ["fd00:2::53"]
    assert m.domains == ["test.example", "example"]
    assert m.status == d.Status(0, "all fine")
    for cls, want in ((s.DHCP6_Request, d.REQUEST), (s.DHCP6_Renew, d.RENEW),
                      (s.DHCP6_Rebind, d.REBIND), (s.DHCP6_Release, d.RELEASE),
                      (s.DHCP6_Decline, d.DECLINE), (s.DHCP6_Confirm, d.CONFIRM),
                      (s.DHCP6_InfoRequest, d.INFORMATION_REQUEST)):
        m = d.parse(bytes(cls(trid=5) / s.DHCP6OptClientId(duid=s.DUID_LL(lladdr="02:00:00:00:0a:01"))
                          / s.DHCP6OptElapsedTime(elapsedtime=3)))
        assert (m.msg_type, m.xid, m.client_id, m.elapsed) == (want, 5, CLIENT, 3)


def test_round_trip_and_duids():
    m = full_reply()
    assert d.parse(d.build(m)) == m
    assert d.duid_mac(SERVER) == bytes.fromhex("020000000a02")
    assert d.duid_mac(b"\x00\x02" + bytes(8)) is None
    assert d.parse_duid(d.duid_text(SERVER)) == SERVER
    assert d.duid_text(CLIENT) == "00:03:00:01:02:00:00:00:0a:01"
    assert d.parse_duid("0003000102000000 0a01".replace(" ", "")) == CLIENT
    for bad in ("zz", "0001", "00" * 131):
        with pytest.raises(ValueError):
            d.parse_duid(bad)
    assert str(d.Status(d.NO_BINDING, "x")) == "NoBinding: x"


def opt(code: int, body: bytes) -> bytes:
    return code.to_bytes(2, "big") + len(body).to_bytes(2, "big") + body


HDR = bytes([d.REPLY, 0, 0, 1])


@pytest.mark.parametrize("raw,why", [
    (b"\x07\x00\x00", "shorter than its header"),
    (bytes([d.RELAY_FORW, 0, 0, 0]), "relays are not supported"),
    (bytes([99, 0, 0, 0]), "unknown message type 99"),
    (HDR + b"\x00\x01\x00", "option header cut short"),
    (HDR + opt(1, CLIENT)[:-1], "runs past the end of the message"),
    (HDR + opt(1, CLIENT) + opt(1, CLIENT), "CLIENTID appears twice"),
    (HDR + opt(2, b"\x00\x01"), "SERVERID DUID of 2 bytes"),
    (HDR + opt(2, bytes(131)), "SERVERID DUID of 131 bytes"),
    (HDR + opt(d.OPT_PREFERENCE, b"\x01\x02"), "PREFERENCE of 2 bytes"),
    (HDR + opt(d.OPT_ELAPSED_TIME, b""), "ELAPSED_TIME of 0 bytes"),
    (HDR + opt(d.OPT_RAPID_COMMIT, b"x"), "RAPID_COMMIT of 1 bytes"),
    (HDR + opt(d.OPT_ORO, b"\x00\x17\x00"), "ORO of 3 bytes"),
    (HDR + opt(d.OPT_DNS_SERVERS, bytes(20)), "DNS_SERVERS of 20 bytes"),
    (HDR + opt(d.OPT_STATUS_CODE, b"\x00"), "STATUS_CODE of 1 bytes"),
    (HDR + opt(d.OPT_STATUS_CODE, b"\x00\x00\xff"), "not UTF-8"),
    (HDR + opt(d.OPT_IA_NA, bytes(11)), "IA_NA of 11 bytes"),
    (HDR + opt(d.OPT_IA_NA, bytes(12)) + opt(d.OPT_IA_NA, bytes(12)), "two IA_NA options with IAID 0"),
    (HDR + opt(d.OPT_IAADDR, bytes(24)), "IAADDR outside an IA_NA"),
    (HDR + opt(d.OPT_IA_NA, bytes(12) + opt(d.OPT_IAADDR, bytes(23))), "IAADDR of 23 bytes"),
    (HDR + opt(d.OPT_IA_NA, bytes(12) + opt(d.OPT_IAADDR, bytes(24)) * 2), "twice in IA_NA 0"),
    (HDR + opt(d.OPT_IA_NA, bytes(12) + opt(d.OPT_IAADDR, bytes(24))[:-1]), "past the end of an IA_NA"),
    (HDR + opt(d.OPT_IA_NA, bytes(12) + opt(13, b"\0\0") * 2), "two STATUS_CODE options in IA_NA"),
    (HDR + opt(d.OPT_IA_NA, bytes(12) + opt(d.OPT_IAADDR, bytes(24) + opt(13, b"\0\0") * 2)),
     "two STATUS_CODE options in one IAADDR"),
    (HDR + opt(d.OPT_IA_NA, bytes(12) + opt(d.OPT_IAADDR, bytes(24) + b"\0\x0d\0\x05\0")),
     "past the end of an IAADDR"),
    (HDR + opt(d.OPT_DOMAIN_LIST, b"\x03lan\xc0\x00"), "not compressed"),
    (HDR + opt(d.OPT_DOMAIN_LIST, b"\x03lan"), "no root label"),
    (HDR + opt(d.OPT_DOMAIN_LIST, b"\x05lan\x00"), "runs past the end of the option"),
    (HDR + opt(d.OPT_DOMAIN_LIST, (b"\x3f" + b"a" * 63) * 4 + b"\x00"), "longer than 255"),
    (HDR + opt(d.OPT_UNICAST, bytes(4)), "UNICAST of 4 bytes"),
    (HDR + opt(d.OPT_SOL_MAX_RT, bytes(2)), "SOL_MAX_RT of 2 bytes"),
])
def test_strict_parsing_names_the_problem(raw, why):
    with pytest.raises(d.Dhcp6Error, match=why):
        d.parse(raw)


def test_build_refuses_what_it_cannot_encode():
    for m in (d.Message(0, 1), d.Message(d.SOLICIT, 1 << 24), d.Message(d.SOLICIT, 1, client_id=b"x"),
              d.Message(d.SOLICIT, 1, preference=256), d.Message(d.SOLICIT, 1, dns_servers=["10.0.0.1"]),
              d.Message(d.SOLICIT, 1, domains=["a" * 64 + ".org"]),
              d.Message(d.SOLICIT, 1, ia_na=[d.IaNa(1 << 32)]),
              d.Message(d.SOLICIT, 1, options=[(d.OPT_CLIENTID, CLIENT)]),
              d.Message(d.SOLICIT, 1, options=[(7, bytes(70000))])):
        with pytest.raises(d.Dhcp6Error):
            d.build(m)


# -- properties -----------------------------------------------------------------------------

u32 = st.integers(0, d.INFINITY)
addresses = st.integers(0, 2**128 - 1).map(lambda n: str(__import__("ipaddress").IPv6Address(n)))
statuses = st.builds(d.Status, st.integers(0, 0xFFFF), st.text(max_size=20))
duids = st.binary(min_size=d.MIN_DUID, max_size=d.MAX_DUID)
labels = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20)
names = st.lists(labels, min_size=1, max_size=4).map(".".join)
raw_options = st.lists(st.tuples(st.sampled_from([4, 15, 16, 17, 25, 39, 200]),
                                 st.binary(max_size=30)), max_size=3)


@st.composite
def ia_nas(draw):
    addrs = draw(st.lists(addresses, max_size=3, unique=True))
    return d.IaNa(draw(u32), draw(u32), draw(u32),
                  [d.IaAddress(a, draw(u32), draw(u32), draw(st.none() | statuses), draw(raw_options))
                   for a in addrs], draw(st.none() | statuses), draw(raw_options))


@st.composite
def messages(draw):
    ias = draw(st.lists(ia_nas(), max_size=3))
    seen: set[int] = set()
    ias = [ia for ia in ias if not (ia.iaid in seen or seen.add(ia.iaid))]
    return d.Message(
        draw(st.sampled_from(sorted(d.MESSAGE_NAMES))), draw(st.integers(0, 0xFFFFFF)),
        draw(st.none() | duids), draw(st.none() | duids), ias,
        draw(st.none() | st.lists(st.integers(0, 0xFFFF), max_size=5)),
        draw(st.none() | st.integers(0, 255)), draw(st.none() | st.integers(0, 0xFFFF)),
        draw(st.booleans()), draw(st.none() | statuses), draw(st.none() | addresses),
        draw(st.booleans()), draw(st.none() | st.lists(addresses, max_size=3)),
        draw(st.none() | st.lists(names, max_size=3)), draw(st.none() | u32),
        draw(st.none() | u32), draw(st.none() | u32), draw(raw_options))


@given(messages())
@settings(max_examples=300, deadline=None)
def test_round_trip(m):
    assert d.parse(d.build(m)) == m


@given(st.binary(max_size=300))
@settings(max_examples=2000, deadline=None)
def test_random_bytes_raise_only_dhcp6_error(data):
    try:
        d.parse(data)
    except d.Dhcp6Error:
        pass


@given(st.binary(min_size=4, max_size=300))
@settings(max_examples=1500, deadline=None)
def test_random_options_after_a_valid_header_raise_only_dhcp6_error(body):
    """Past the header every byte is option data: the option and nested option parsers
    see the random input (a random first byte would mostly stop at the type)."""
    try:
        d.parse(bytes([d.REPLY, 0, 0, 1]) + body)
    except d.Dhcp6Error:
        pass


@given(messages(), st.randoms(use_true_random=False))
@settings(max_examples=500, deadline=None)
def test_mutated_messages_raise_only_dhcp6_error(m, rnd: random.Random):
    raw = bytearray(d.build(m))
    for _ in range(rnd.randint(1, 4)):
        what = rnd.random()
        if what < 0.5 and raw:
            raw[rnd.randrange(len(raw))] = rnd.randrange(256)
        elif what < 0.75 and len(raw) > 4:
            del raw[rnd.randrange(4, len(raw)):]
        else:
            at = rnd.randrange(len(raw) + 1)
            raw[at:at] = rnd.randbytes(rnd.randint(1, 8))
    try:
        d.parse(bytes(raw))
    except d.Dhcp6Error:
        pass
