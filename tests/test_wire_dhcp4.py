"""DHCPv4 messages (wire/dhcp4.py) against scapy's BOOTP/DHCP both ways, round trips,
the strict parser's errors, and fuzzing: random and mutated messages raise FrameError
and nothing else."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scapy.all import BOOTP, DHCP

from threadnet.errors import FrameError
from threadnet.wire import dhcp4
from threadnet.wire.dhcp4 import DhcpMessage

FUZZ = settings(max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MAC = bytes.fromhex("020000000005")


def ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def sample() -> DhcpMessage:
    return DhcpMessage(
        op=dhcp4.BOOTREPLY, xid=0xDEADBEEF, chaddr=MAC, secs=3, flags=dhcp4.FLAG_BROADCAST,
        ciaddr=ip("0.0.0.0"), yiaddr=ip("10.0.0.77"), siaddr=ip("10.0.0.1"),
        giaddr=ip("0.0.0.0"), sname=b"srv", file=b"boot.img",
        options={dhcp4.OPT_MESSAGE_TYPE: bytes([dhcp4.ACK]),
                 dhcp4.OPT_SERVER_ID: ip("10.0.0.1"),
                 dhcp4.OPT_LEASE_TIME: dhcp4.u32(3600), dhcp4.OPT_T1: dhcp4.u32(1800),
                 dhcp4.OPT_T2: dhcp4.u32(3150), dhcp4.OPT_SUBNET_MASK: ip("255.255.255.0"),
                 dhcp4.OPT_ROUTER: ip("10.0.0.1") + ip("10.0.0.2"),
                 dhcp4.OPT_DNS: ip("10.0.0.53"), dhcp4.OPT_DOMAIN_NAME: b"lan.example",
                 dhcp4.OPT_HOST_NAME: b"box", dhcp4.OPT_MTU: dhcp4.u16(1400),
                 dhcp4.OPT_CLIENT_ID: b"\x01" + MAC})


#: real messages, captured between busybox udhcpc, ISC dhclient and dnsmasq 2.90 on a veth
#: pair: (op .. chaddr in hex, length, the rest of op .. chaddr then the options after the
#: magic cookie); sname and file were zeros, and what follows the end option is padding
_CAPTURED = [
    # udhcpc DISCOVER
    ("01010600dfe6da6b0000000000000000000000000000", 300,
     "000000000000a200e3b1ac0400000000000000000000"
     "3501013902024037070103060c0f1c2a0c06636170626f783c0c756468637020312e33352e303d0701a2"
     "00e3b1ac04ff"),
    # dnsmasq OFFER
    ("02010600dfe6da6b00000000000000000a4600920a46", 305,
     "000100000000a200e3b1ac0400000000000000000000"
     "35010236040a4600013304000000783a040000003c3b04000000690104ffffff001c040a4600ff0f0b63"
     "61702e6578616d706c6506040a46000103040a460001ff"),
    # udhcpc REQUEST
    ("01010600dfe6da6b0003000000000000000000000000", 300,
     "000000000000a200e3b1ac0400000000000000000000"
     "35010332040a46009236040a4600013902024037070103060c0f1c2a0c06636170626f783c0c75646863"
     "7020312e33352e303d0701a200e3b1ac04ff"),
    # dnsmasq ACK
    ("02010600dfe6da6b00030000000000000a4600920a46", 313,
     "000100000000a200e3b1ac0400000000000000000000"
     "35010536040a4600013304000000783a040000003c3b04000000690104ffffff001c040a4600ff0f0b63"
     "61702e6578616d706c650c06636170626f7806040a46000103040a460001ff"),
    # dhclient DISCOVER
    ("010106002a15e94f0000000000000000000000000000", 300,
     "000000000000a200e3b1ac0400000000000000000000"
     "3501013707011c02030f060cff"),
    # dhclient REQUEST
    ("010106002a15e94f0000000000000000000000000000", 300,
     "000000000000a200e3b1ac0400000000000000000000"
     "35010336040a46000132040a4600923707011c02030f060cff"),
]


def captured() -> list[bytes]:
    out = []
    for head, length, rest in _CAPTURED:
        data = bytes.fromhex(head + rest[:44]) + bytes(192) + dhcp4.MAGIC + \
            bytes.fromhex(rest[44:])
        out.append(data + bytes(length - len(data)))
    return out


def test_real_messages_of_udhcpc_dhclient_and_dnsmasq():
    kinds = [dhcp4.parse(d).message_type for d in captured()]
    assert kinds == [dhcp4.DISCOVER, dhcp4.OFFER, dhcp4.REQUEST, dhcp4.ACK, dhcp4.DISCOVER,
                     dhcp4.REQUEST]
    udhcpc_req, ack, dhclient_req = (dhcp4.parse(d) for d in
                                     [captured()[i] for i in (2, 3, 5)])
    assert udhcpc_req.client_id == b"\x01" + udhcpc_req.chaddr  # busybox's default
    assert udhcpc_req.host_name == "capbox" and udhcpc_req.max_size == 576
    assert udhcpc_req.requested_ip == ip("10.70.0.146")
    assert udhcpc_req.server_id == ip("10.70.0.1")
    assert ack.yiaddr == ip("10.70.0.146") and ack.lease_time == 120
    assert (ack.t1, ack.t2) == (60, 105) and ack.routers == [ip("10.70.0.1")]
    assert ack.dns_servers == [ip("10.70.0.1")] and ack.domain_name == "cap.example"
    assert dhclient_req.client_id is None  # ISC dhclient sends none by default
    assert dhclient_req.requested_ip == ip("10.70.0.146")
    for d in captured():  # and they build back to the same options
        m = dhcp4.parse(d)
        assert dhcp4.parse(dhcp4.to_bytes(m)) == m


def test_scapy_reads_what_we_build():
    data = dhcp4.to_bytes(sample())
    assert len(data) >= dhcp4.MIN_BUILD_LEN
    p = BOOTP(data)
    assert (p.op, p.xid, p.secs, p.flags) == (2, 0xDEADBEEF, 3, 0x8000)
    assert (p.yiaddr, p.siaddr, p.chaddr[:6]) == ("10.0.0.77", "10.0.0.1", MAC)
    assert p.sname.rstrip(b"\x00") == b"srv" and p.file.rstrip(b"\x00") == b"boot.img"
    opts = {o[0]: o[1] for o in p[DHCP].options if isinstance(o, tuple)}
    assert opts["message-type"] == 5 and opts["server_id"] == "10.0.0.1"
    assert opts["lease_time"] == 3600 and opts["renewal_time"] == 1800
    assert opts["rebinding_time"] == 3150 and opts["subnet_mask"] == "255.255.255.0"
    routers = [o for o in p[DHCP].options if isinstance(o, tuple) and o[0] == "router"][0]
    assert list(routers[1:]) == ["10.0.0.1", "10.0.0.2"]
    assert opts["name_server"] == "10.0.0.53" and opts["domain"] == b"lan.example"
    assert opts["hostname"] == b"box" and opts["interface-mtu"] == 1400
    assert opts["client_id"] == b"\x01" + MAC
    assert p[DHCP].options[len(opts)] == "end"


def test_we_read_what_scapy_builds():
    p = BOOTP(op=1, xid=0x1234, chaddr=MAC + bytes(10), ciaddr="10.0.0.9", flags=0,
              secs=7) / DHCP(options=[
                  ("message-type", "request"), ("client_id", b"\x01" + MAC),
                  ("requested_addr", "10.0.0.77"), ("server_id", "10.0.0.1"),
                  ("param_req_list", [1, 3, 6, 15, 26]), ("max_dhcp_size", 1500),
                  ("hostname", "box"), ("lease_time", 600), "end", "pad", "pad"])
    m = dhcp4.parse(bytes(p))
    assert (m.op, m.xid, m.secs, m.chaddr, m.ciaddr) == (1, 0x1234, 7, MAC, ip("10.0.0.9"))
    assert m.message_type == dhcp4.REQUEST and m.client_id == b"\x01" + MAC
    assert m.requested_ip == ip("10.0.0.77") and m.server_id == ip("10.0.0.1")
    assert m.param_list == bytes([1, 3, 6, 15, 26]) and m.max_size == 1500
    assert m.host_name == "box" and m.lease_time == 600
    assert m.routers == [] and m.domain_name is None and m.mtu is None


def test_round_trip_and_lengths():
    msg = sample()
    data = dhcp4.to_bytes(msg)
    assert dhcp4.parse(data) == msg
    assert dhcp4.build_length(msg) == len(data)
    buf = bytearray(b"\xaa" * (len(data) + 10))
    assert dhcp4.build(buf, msg, offset=5) == len(data)
    assert bytes(buf[5:5 + len(data)]) == data and buf[:5] == b"\xaa" * 5
    with pytest.raises(ValueError, match="does not fit"):
        dhcp4.build(bytearray(len(data) - 1), msg)


def test_long_options_are_split_and_joined_rfc3396():
    long = bytes(range(256)) * 2  # 512 bytes: three parts on the wire
    msg = DhcpMessage(options={dhcp4.OPT_MESSAGE_TYPE: b"\x01", 224: long})
    data = dhcp4.to_bytes(msg)
    assert data.count(bytes([224, 255])) >= 2
    assert dhcp4.parse(data).options[224] == long
    # a repeated option is one value: two router options make one list
    raw = bytes(BOOTP(op=2) / DHCP(options=[("message-type", "ack"), ("router", "10.0.0.1"),
                                            ("router", "10.0.0.2"), "end"]))
    assert dhcp4.parse(raw).routers == [ip("10.0.0.1"), ip("10.0.0.2")]


def test_option_overload_reads_file_then_sname():
    m = DhcpMessage(op=2, options={dhcp4.OPT_MESSAGE_TYPE: bytes([dhcp4.OFFER]),
                                   dhcp4.OPT_OVERLOAD: b"\x03"})
    data = bytearray(dhcp4.to_bytes(m))
    data[108:108 + 7] = bytes([dhcp4.OPT_SERVER_ID, 4, 10, 0, 0, 1, 255])  # file
    data[44:44 + 4] = bytes([dhcp4.OPT_HOST_NAME, 1, ord("x"), 255])  # sname
    p = dhcp4.parse(bytes(data))
    assert p.server_id == ip("10.0.0.1") and p.host_name == "x"
    assert p.file == b"" and p.sname == b""
    # scapy's overload too (it does not build one: check it reads ours)
    assert BOOTP(bytes(data)).op == 2


@pytest.mark.parametrize("mutate,message", [
    (lambda d: d[:239], "shorter than its 240-byte"),
    (lambda d: b"\x03" + d[1:], "BOOTP op 3"),
    (lambda d: d[:2] + b"\x11" + d[3:], "hardware address length 17"),
    (lambda d: d[:236] + b"\x63\x82\x53\x64" + d[240:], "no DHCP magic cookie"),
    (lambda d: d[:240] + bytes([53, 1, 1]), "no end option"),
    (lambda d: d[:240] + bytes([53]), "option 53 in the options field has no length byte"),
    (lambda d: d[:240] + bytes([53, 9, 1, 255]), "runs past"),
    (lambda d: d[:240] + bytes([51, 3, 0, 0, 1, 255]), "option 51 (lease time) has length 3"),
    (lambda d: d[:240] + bytes([3, 6, 1, 2, 3, 4, 5, 6, 255]), "not a multiple of 4"),
    (lambda d: d[:240] + bytes([53, 1, 0, 255]), "message type 0"),
    (lambda d: d[:240] + bytes([53, 1, 1, 53, 1, 1, 255]), "option 53 (message type) has length 2"),
    (lambda d: d[:240] + bytes([61, 1, 1, 255]), "client identifier"),
    (lambda d: d[:240] + bytes([12, 0, 255]), "(host name) is empty"),
    (lambda d: d[:240] + bytes([52, 1, 1, 255]), "in the file field have no end option"),
    (lambda d: d[:240] + bytes([52, 1, 4, 255]), "overload 4"),
])
def test_malformed_messages_raise_frame_error_naming_the_problem(mutate, message):
    good = dhcp4.to_bytes(DhcpMessage(options={dhcp4.OPT_MESSAGE_TYPE: b"\x01"}))
    with pytest.raises(FrameError, match=message.replace("(", r"\(").replace(")", r"\)")):
        dhcp4.parse(mutate(good))


def test_padding_after_the_end_and_nul_terminated_text_are_fine():
    good = dhcp4.to_bytes(DhcpMessage(options={dhcp4.OPT_MESSAGE_TYPE: b"\x02",
                                               dhcp4.OPT_HOST_NAME: b"name\x00junk"}))
    m = dhcp4.parse(good + b"\xff\x13garbage")
    assert m.host_name == "name"


def test_masks_and_prefixes():
    assert dhcp4.mask_of(24) == ip("255.255.255.0") and dhcp4.mask_of(0) == bytes(4)
    assert dhcp4.mask_of(32) == b"\xff" * 4
    for plen in range(33):
        assert dhcp4.prefix_of(dhcp4.mask_of(plen)) == plen
    assert dhcp4.prefix_of(ip("255.0.255.0")) is None


def test_build_refuses_what_does_not_fit():
    for bad in (DhcpMessage(chaddr=bytes(17)), DhcpMessage(sname=b"x" * 64),
                DhcpMessage(file=b"x" * 128), DhcpMessage(options={255: b"x"})):
        with pytest.raises(ValueError):
            dhcp4.to_bytes(bad)


# -- fuzzing: FrameError and nothing else ------------------------------------------------

def _parse_or_frame_error(data: bytes) -> None:
    try:
        m = dhcp4.parse(data)
    except FrameError:
        return
    # whatever parses has usable decoded views
    for name in ("message_type", "server_id", "requested_ip", "subnet_mask", "lease_time",
                 "t1", "t2", "routers", "dns_servers", "domain_name", "host_name", "mtu",
                 "max_size", "client_id", "param_list", "message"):
        getattr(m, name)


@FUZZ
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_frame_error(data):
    _parse_or_frame_error(data)


@FUZZ
@given(st.binary(max_size=120), st.integers(1, 2), st.integers(0, 20))
def test_random_options_raise_only_frame_error(options, op, hlen):
    head = bytearray(dhcp4.to_bytes(DhcpMessage(op=op)))[:240]
    head[2] = hlen
    _parse_or_frame_error(bytes(head) + options)


@FUZZ
@given(st.data())
def test_mutated_real_messages_raise_only_frame_error(data):
    base = bytearray(data.draw(st.sampled_from([dhcp4.to_bytes(sample()), *captured()])))
    for _ in range(data.draw(st.integers(1, 8))):
        i = data.draw(st.integers(0, len(base) - 1))
        base[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(base)))
    _parse_or_frame_error(bytes(base[:cut]))


@FUZZ
@given(st.dictionaries(st.integers(1, 254), st.binary(max_size=300), max_size=6),
       st.integers(0, 2**32 - 1), st.binary(min_size=0, max_size=16))
def test_round_trip_of_any_options(options, xid, chaddr):
    msg = DhcpMessage(xid=xid, chaddr=chaddr, options=options)
    try:
        back = dhcp4.parse(dhcp4.to_bytes(msg))
    except FrameError:
        return  # a value of the wrong form for an option parse checks
    assert back == msg
