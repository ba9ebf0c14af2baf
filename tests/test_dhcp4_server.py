"""The DHCPv4 server on a stack (stack/dhcp4server.py), on fake time: crafted client
messages go into a core stack's input as frames and its replies are read off its link.
Addresses and options per RFC 2131 4.3, where replies go (4.1), NAKs, DECLINE, RELEASE,
reservations, the lease file across a restart (written atomically, never through a
symbolic link), the configuration items, and the bounded lease table under a flood of
10,000 DISCOVERs, after which a real client still gets an address."""

from __future__ import annotations

import os
import random
import stat

import pytest

from threadnet.fsafe import UnsafePathError
from threadnet.stack.config import ConfigError
from threadnet.stack.dhcp4client import BOUND, Dhcp4Client
from threadnet.stack.dhcp4server import (
    LeaseFile,
    default_pool,
    from_options,
    serve,
)
from threadnet.stack.stack import Stack as CoreStack
from threadnet.wire import dhcp4, ipv4, udp
from threadnet.wire.dhcp4 import DhcpMessage
from threadnet.wire.ethernet import mac_from_str

from dhcp4_helpers import ip, run
from stack_helpers import FakeLan, ListLink

ANY = bytes(4)
BCAST = b"\xff" * 4
BCAST_MAC = b"\xff" * 6
SERVER = ip("10.9.0.1")
A = mac_from_str("02:00:00:00:00:0a")
B = mac_from_str("02:00:00:00:00:0b")
C = mac_from_str("02:00:00:00:00:0c")


class Harness:
    """One core stack serving DHCP on ListLink: ``send`` puts a client's message in as a
    frame and returns the replies as (Ethernet destination, IP source, IP destination,
    message)."""

    def __init__(self, config: str = "eth,ip=10.9.0.1/24", *, server: bool = True,
                 **kw) -> None:
        self.now = 100.0
        self.link = ListLink()
        self.stack = CoreStack(link=self.link, clock=lambda: self.now)
        self.stack.configure(config, self.now)
        self.server = serve(self.stack, "eth0", now=self.now, **kw) if server else None
        self.xid = 0

    def close(self) -> None:
        self.stack.close()

    def send(self, kind: int, mac: bytes = A, *, src: bytes = ANY, dst: bytes = BCAST,
             xid: int | None = None, ciaddr: bytes = ANY, flags: int = 0, giaddr: bytes = ANY,
             **options: bytes) -> list[tuple[bytes, bytes, bytes, DhcpMessage]]:
        codes = {"requested": dhcp4.OPT_REQUESTED_IP, "sid": dhcp4.OPT_SERVER_ID,
                 "cid": dhcp4.OPT_CLIENT_ID, "hostname": dhcp4.OPT_HOST_NAME}
        opts = {dhcp4.OPT_MESSAGE_TYPE: bytes([kind])}
        for name, value in options.items():
            opts[codes[name]] = value
        self.xid += 1
        msg = DhcpMessage(op=dhcp4.BOOTREQUEST, xid=self.xid if xid is None else xid,
                          chaddr=mac, ciaddr=ciaddr, flags=flags, giaddr=giaddr, options=opts)
        return self.send_raw(dhcp4.to_bytes(msg), mac, src, dst)

    def send_raw(self, payload: bytes, mac: bytes = A, src: bytes = ANY,
                 dst: bytes = BCAST) -> list[tuple[bytes, bytes, bytes, DhcpMessage]]:
        seg = bytearray(8 + len(payload))
        udp.build(seg, src, dst, dhcp4.CLIENT_PORT, dhcp4.SERVER_PORT, payload)
        pkt = bytearray(20 + len(seg))
        ipv4.build(pkt, src, dst, ipv4.PROTO_UDP, len(seg))
        pkt[20:] = seg
        eth_dst = BCAST_MAC if dst == BCAST else self.stack.interfaces[2].mac
        frame = eth_dst + mac + b"\x08\x00" + bytes(pkt)
        self.link.sent.clear()
        self.stack.input(self.stack.interfaces[2], frame, self.now)
        out = []
        for f in self.link.sent:
            if f[12:14] == b"\x08\x00" and f[23] == ipv4.PROTO_UDP and f[36:38] == b"\x00\x44":
                out.append((f[:6], f[26:30], f[30:34], dhcp4.parse(f[42:])))
        self.link.sent.clear()
        return out

    def lease(self, mac: bytes = A, *, cid: bytes | None = None, hostname: bytes | None = None
              ) -> bytes:
        """DISCOVER, OFFER, REQUEST, ACK: the address."""
        extra = {} if cid is None else {"cid": cid}
        if hostname is not None:
            extra["hostname"] = hostname
        (offer,) = self.send(dhcp4.DISCOVER, mac, **extra)
        addr = offer[3].yiaddr
        (ack,) = self.send(dhcp4.REQUEST, mac, xid=offer[3].xid, requested=addr,
                           sid=self.server.address, **extra)
        assert ack[3].message_type == dhcp4.ACK and ack[3].yiaddr == addr
        return addr


@pytest.fixture
def h():
    x = Harness("eth,ip=10.9.0.1/24,dns=10.9.0.53,dns=fc00::53")
    yield x
    x.close()


def test_offer_and_ack_carry_the_lease_and_the_options(h):
    (offer,) = h.send(dhcp4.DISCOVER, A, cid=b"\x01" + A)
    eth, src, dst, m = offer
    # RFC 2131 4.1: no broadcast flag, no ciaddr: unicast to yiaddr at chaddr
    assert (eth, src, dst) == (A, SERVER, ip("10.9.0.100")) and m.yiaddr == dst
    assert m.op == dhcp4.BOOTREPLY and m.message_type == dhcp4.OFFER and m.chaddr == A
    assert m.server_id == SERVER and m.lease_time == 3600
    assert (m.t1, m.t2) == (1800, 3150)
    assert m.subnet_mask == ip("255.255.255.0") and m.routers == [SERVER]
    assert m.dns_servers == [ip("10.9.0.53")]  # the stack's IPv4 nameservers
    assert m.client_id == b"\x01" + A  # RFC 6842
    (ack,) = h.send(dhcp4.REQUEST, A, xid=m.xid, requested=m.yiaddr, sid=SERVER,
                    cid=b"\x01" + A, hostname=b"alpha")
    assert ack[3].message_type == dhcp4.ACK and ack[3].yiaddr == m.yiaddr
    assert ack[3].ciaddr == ANY and ack[2] == m.yiaddr
    (row,) = h.server.table(h.now)
    assert row["address"] == "10.9.0.100" and row["state"] == "bound"
    assert row["hostname"] == "alpha" and row["remaining"] == 3600


def test_two_clients_get_different_addresses_and_keep_them(h):
    a, b = h.lease(A), h.lease(B)
    assert a != b and {a, b} == {ip("10.9.0.100"), ip("10.9.0.101")}
    assert h.lease(A) == a and h.lease(B) == b  # again: the same
    # a client known by its identifier is the same client whatever its MAC says
    assert h.lease(C, cid=b"\x01" + A) == a


def test_where_replies_go(h):
    (r,) = h.send(dhcp4.DISCOVER, A, flags=dhcp4.FLAG_BROADCAST)
    assert (r[0], r[2]) == (BCAST_MAC, BCAST) and r[3].flags == dhcp4.FLAG_BROADCAST
    addr = h.lease(A)
    # renewing: unicast to ciaddr
    (r,) = h.send(dhcp4.REQUEST, A, src=addr, dst=SERVER, ciaddr=addr)
    assert (r[0], r[2], r[3].message_type, r[3].ciaddr) == (A, addr, dhcp4.ACK, addr)
    # a NAK is broadcast
    (r,) = h.send(dhcp4.REQUEST, B, requested=ip("10.8.0.5"))
    assert (r[0], r[2], r[3].message_type) == (BCAST_MAC, BCAST, dhcp4.NAK)
    assert r[3].yiaddr == ANY and r[3].server_id == SERVER and r[3].lease_time is None


def test_renewal_extends_the_lease(h):
    addr = h.lease(A)
    h.now += 1800
    (r,) = h.send(dhcp4.REQUEST, A, src=addr, dst=SERVER, ciaddr=addr)
    assert r[3].message_type == dhcp4.ACK and r[3].lease_time == 3600
    assert h.server.table(h.now)[0]["expires"] == h.now + 3600
    # rebinding (broadcast, no server id) works the same
    h.now += 3000
    (r,) = h.send(dhcp4.REQUEST, A, src=addr, ciaddr=addr)
    assert r[3].message_type == dhcp4.ACK


def test_requests_the_server_cannot_grant_are_naked(h):
    a = h.lease(A)
    # another client asking for A's address (INIT-REBOOT, SELECTING, RENEWING)
    for kw in (dict(requested=a), dict(requested=a, sid=SERVER), dict(ciaddr=a, src=a)):
        (r,) = h.send(dhcp4.REQUEST, B, **kw)
        assert r[3].message_type == dhcp4.NAK, kw
    # another network, the server's own address, outside the pool
    for addr in ("10.8.0.5", "10.9.0.1", "10.9.0.20"):
        (r,) = h.send(dhcp4.REQUEST, B, requested=ip(addr))
        assert r[3].message_type == dhcp4.NAK, addr
    # a free address of the pool without a record (the lease file was lost): granted
    (r,) = h.send(dhcp4.REQUEST, B, requested=ip("10.9.0.150"))
    assert r[3].message_type == dhcp4.ACK and r[3].yiaddr == ip("10.9.0.150")


def test_a_request_for_another_server_drops_our_offer(h):
    (offer,) = h.send(dhcp4.DISCOVER, A)
    assert h.server.describe()["offers"] == 1
    assert h.send(dhcp4.REQUEST, A, requested=ip("10.9.0.7"), sid=ip("10.9.0.2")) == []
    assert h.server.describe()["offers"] == 0 and not h.server.leases


def test_offers_are_held_briefly(h):
    h.send(dhcp4.DISCOVER, A)
    h.now += 5
    (r,) = h.send(dhcp4.DISCOVER, B)
    assert r[3].yiaddr == ip("10.9.0.101")
    h.now += 6  # A's offer ended
    assert h.server.describe()["offers"] == 2  # (tidied on the next message)
    h.send(dhcp4.DISCOVER, C)
    assert h.server.describe()["offers"] == 2


def test_a_declined_address_is_kept_from_everyone_for_a_while(h):
    a = h.lease(A)
    assert h.send(dhcp4.DECLINE, B, requested=a, sid=SERVER) == []  # not B's: ignored
    assert h.server.table(h.now)[0]["state"] == "bound"
    assert h.send(dhcp4.DECLINE, A, requested=a, sid=SERVER) == []
    assert h.server.table(h.now)[0]["state"] == "declined"
    b = h.lease(A)
    assert b != a
    assert h.lease(B) not in (a, b)
    (r,) = h.send(dhcp4.REQUEST, C, requested=a)
    assert r[3].message_type == dhcp4.NAK
    h.now += 601
    (r,) = h.send(dhcp4.REQUEST, C, requested=a)
    assert r[3].message_type == dhcp4.ACK


def test_release_ends_the_lease_but_the_client_keeps_its_address(h):
    a = h.lease(A)
    assert h.send(dhcp4.RELEASE, B, ciaddr=a, src=a, dst=SERVER) == []  # not B's
    assert h.server.table(h.now)[0]["state"] == "bound"
    assert h.send(dhcp4.RELEASE, A, ciaddr=a, src=a, dst=SERVER, sid=SERVER) == []
    assert h.server.table(h.now)[0]["state"] == "free"
    assert h.lease(B) != a  # a never handed out address first
    assert h.lease(A) == a


def test_a_full_pool_offers_nothing_and_ended_leases_are_reused_oldest_first():
    x = Harness(pool="10.9.0.100-10.9.0.101", lease=100)
    try:
        a, b = x.lease(A), x.lease(B)
        assert x.send(dhcp4.DISCOVER, C) == []
        assert x.server.stats["exhausted"] == 1
        x.now += 50
        x.send(dhcp4.REQUEST, B, ciaddr=b, src=b, dst=SERVER)  # B renews
        x.now += 60  # A's lease ended, B's did not
        assert x.lease(C) == a
    finally:
        x.close()


def test_reservations_are_honoured():
    x = Harness(hosts={"02:00:00:00:00:0b": "10.9.0.20"})
    try:
        assert x.lease(A) == ip("10.9.0.100")
        assert x.lease(B) == ip("10.9.0.20")  # outside the pool: reserved
        (r,) = x.send(dhcp4.REQUEST, C, requested=ip("10.9.0.20"))
        assert r[3].message_type == dhcp4.NAK
        # a reserved client gets nothing else
        (r,) = x.send(dhcp4.REQUEST, B, requested=ip("10.9.0.150"))
        assert r[3].message_type == dhcp4.NAK
    finally:
        x.close()


def test_inform_gets_options_without_a_lease(h):
    (r,) = h.send(dhcp4.INFORM, A, ciaddr=ip("10.9.0.33"), src=ip("10.9.0.33"), dst=SERVER)
    assert r[3].message_type == dhcp4.ACK and r[3].lease_time is None
    assert r[3].yiaddr == ANY and r[2] == ip("10.9.0.33") and r[3].routers == [SERVER]


def test_relayed_malformed_and_odd_messages_are_ignored(h):
    assert h.send(dhcp4.DISCOVER, A, giaddr=ip("10.7.0.1")) == []
    assert h.server.stats["relayed"] == 1
    good = dhcp4.to_bytes(DhcpMessage(options={53: b"\x01"}, chaddr=A))
    assert h.send_raw(good[:243]) == []  # no end option and h.server.stats["bad"] == 1
    assert h.send(dhcp4.DISCOVER, b"\x03" + A[1:]) == []  # a multicast MAC
    assert h.send(dhcp4.OFFER, A) == []  # a server's message
    # a renewal unicast to another server (a switch floods what it has not learned)
    assert h.send(dhcp4.REQUEST, A, src=ip("10.9.0.77"), dst=ip("10.9.0.2"),
                  ciaddr=ip("10.9.0.77")) == []
    assert h.server.stats["not_for_us"] == 1
    assert not h.server.leases


def test_options_router_dns_domain_mtu_and_changes_at_run_time():
    x = Harness(routers=["10.9.0.254"], dns=[], domain="lan.example", mtu=1400, lease=600)
    try:
        (r,) = x.send(dhcp4.DISCOVER, A)
        m = r[3]
        assert m.routers == [ip("10.9.0.254")] and m.dns_servers == []
        assert m.domain_name == "lan.example" and m.mtu == 1400 and m.lease_time == 600
        x.server.set_option(x.stack, "lease", ["120"])
        x.server.set_option(x.stack, "router", ["none"])
        x.server.set_option(x.stack, "dns", ["10.9.0.53"])
        x.server.set_option(x.stack, "pool", ["10.9.0.10-10.9.0.20"])
        (r,) = x.send(dhcp4.DISCOVER, B)
        m = r[3]
        assert m.lease_time == 120 and m.routers == [] and m.dns_servers == [ip("10.9.0.53")]
        assert m.yiaddr == ip("10.9.0.10")
        for name, value in (("lease", "0"), ("pool", "10.8.0.1-10.8.0.5"), ("leases", "/x"),
                            ("nope", "1"), ("host", "02:00:00:00:00:01/10.8.0.1")):
            with pytest.raises(ConfigError):
                x.server.set_option(x.stack, name, [value])
        assert x.server.describe()["pool"] == "10.9.0.10-10.9.0.20"
    finally:
        x.close()


def test_the_default_pool():
    assert default_pool(ip("10.9.0.1"), 24) == (ip("10.9.0.100"), ip("10.9.0.199"))
    assert default_pool(ip("10.9.3.1"), 16) == (ip("10.9.3.100"), ip("10.9.3.199"))
    assert default_pool(ip("10.9.0.17"), 28) == (ip("10.9.0.17"), ip("10.9.0.30"))
    x = Harness("eth,ip=10.9.0.17/28")
    try:
        assert x.server.describe()["pool"] == "10.9.0.17-10.9.0.30"
        got = {x.lease(bytes([2, 0, 0, 0, 0, i])) for i in range(1, 14)}
        assert ip("10.9.0.17") not in got and len(got) == 13  # never its own address
        assert x.send(dhcp4.DISCOVER, bytes([2, 0, 0, 0, 1, 1])) == []
    finally:
        x.close()


def test_configuration_items(tmp_path):
    leases = tmp_path / "d.leases"
    x = Harness(f"eth,ip=10.9.0.1/24,dhcpd=10.9.0.50-10.9.0.60,dhcpd.lease=600,"
                f"dhcpd.router=10.9.0.254,dhcpd.dns=10.9.0.53,dhcpd.dns=10.9.0.54,"
                f"dhcpd.domain=lan.example,dhcpd.mtu=1400,"
                f"dhcpd.host=02:00:00:00:00:0b/10.9.0.7,dhcpd.leases={leases}", server=False)
    try:
        (srv,) = x.stack.find_agents("dhcpd")
        d = srv.describe()
        assert d["pool"] == "10.9.0.50-10.9.0.60" and d["lease"] == 600
        assert d["routers"] == ["10.9.0.254"] and d["dns"] == ["10.9.0.53", "10.9.0.54"]
        assert d["domain"] == "lan.example" and d["mtu"] == 1400
        assert d["hosts"] == {"02:00:00:00:00:0b": "10.9.0.7"}
        assert d["leases_file"] == str(leases)
        x.server = srv
        assert x.lease(A) == ip("10.9.0.50") and x.lease(B) == ip("10.9.0.7")
        assert leases.exists()
        # asked again with other options: restarted with them
        x.stack.configure("dhcpd.lease=900", x.now)
        (srv2,) = x.stack.find_agents("dhcpd")
        assert srv2 is not srv and srv2.describe()["lease"] == 900
        x.stack.configure("-dhcpd", x.now)
        assert x.stack.find_agents("dhcpd") == []
        for bad, why in [("dhcpd.leese=1", "unknown option dhcpd.leese"),
                         ("dhcpd=10.8.0.1-10.8.0.9", "not within a subnet of eth0"),
                         ("dhcpd=10.9.0.9-10.9.0.1", "is after"),
                         ("dhcpd=10.9.0.9", "FIRST-LAST"),
                         ("dhcpd.lease=soon", "seconds"),
                         ("dhcpd.router=router", "not an IPv4 address"),
                         ("dhcpd.host=02:00:00:00:00:0b", "MAC/ADDR"),
                         ("dhcpd.host=02:00:00:00:00:0b/10.8.0.1", "not a host address"),
                         ("dhcpd.host=02:00:00:00:00:0b/10.9.0.255", "not a host address"),
                         ("dhcpd.mtu=20", "68..65535"),
                         ("dhcpd.domain=a b", "not a domain name")]:
            with pytest.raises(ConfigError, match=why):
                x.stack.configure(bad, x.now)
    finally:
        x.close()
    y = Harness("eth", server=False)
    try:
        with pytest.raises(ConfigError, match="no IPv4 address"):
            y.stack.configure("dhcpd", y.now)
    finally:
        y.close()


# -- the lease file ----------------------------------------------------------------------

def test_leases_survive_a_restart(tmp_path):
    path = tmp_path / "leases"
    x = Harness(leases=str(path))
    try:
        a = x.lease(A, hostname=b"alpha")
        b = x.lease(B, cid=b"\xff\x01\x02\x03")
    finally:
        x.close()
    text = path.read_text()
    assert "02:00:00:00:00:0a 10.9.0.100 alpha *" in text
    assert "02:00:00:00:00:0b 10.9.0.101 * ff:01:02:03" in text
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600  # MACs and names: the server's
    assert [n for n in os.listdir(tmp_path)] == ["leases"]  # no temporary file left
    y = Harness(leases=str(path))  # a new stack, the same file
    try:
        assert y.lease(B, cid=b"\xff\x01\x02\x03") == b  # B first: still its own
        assert y.lease(A) == a
        (r,) = y.send(dhcp4.REQUEST, C, requested=a)
        assert r[3].message_type == dhcp4.NAK
        assert y.server.table(y.now)[0]["hostname"] == "alpha"
        assert 3590 < y.server.table(y.now)[0]["remaining"] <= 3600
    finally:
        y.close()


def test_the_lease_file_is_never_followed_through_a_symbolic_link(tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep me\n")
    link = tmp_path / "leases"
    link.symlink_to(target)
    with pytest.raises(UnsafePathError, match="symbolic link"):
        LeaseFile(link).load()
    # saving replaces the link itself, leaving its target alone
    f = LeaseFile(link)
    f.save([])
    assert target.read_text() == "keep me\n" and not link.is_symlink()


def test_the_lease_file_directory_must_be_safe(tmp_path):
    d = tmp_path / "open"
    d.mkdir()
    os.chmod(d, 0o777)  # anyone may swap files here
    with pytest.raises(UnsafePathError, match="writable by"):
        LeaseFile(d / "leases").load()


def test_lease_file_lines_it_cannot_read_are_skipped(tmp_path):
    path = tmp_path / "leases"
    path.write_text("# comment\n0 02:00:00:00:00:0a 10.9.0.100 * *\ngarbage line\n"
                    "1 02:00:00:00:00:0b 10.9.0.101 * *\n"  # ended in 1970
                    "0 zz:00:00:00:00:0b 10.9.0.102 * *\n")
    f = LeaseFile(path)
    (s,) = f.load()
    assert (s.addr, s.remaining) == (ip("10.9.0.100"), None) and f.skipped == 2


def test_renewals_are_written_at_most_once_a_second(tmp_path):
    path = tmp_path / "leases"
    x = Harness(leases=str(path))
    try:
        a = x.lease(A)
        t_ack = x.now
        saves = []
        real = x.server.store.save
        x.server.store.save = lambda leases: (saves.append(x.now), real(leases))
        for _ in range(5):
            x.now += 0.1
            x.send(dhcp4.REQUEST, A, ciaddr=a, src=a, dst=SERVER)
        assert saves == []
        assert x.server.next_deadline() == pytest.approx(t_ack + 1.0)
        x.now = x.server.next_deadline()
        x.stack.on_timer(x.now)
        assert len(saves) == 1
    finally:
        x.close()


# -- a flood ---------------------------------------------------------------------------

def test_a_flood_of_discovers_takes_only_the_pool_and_a_real_client_still_gets_one():
    """10,000 DISCOVERs from random MACs: the lease table never holds more than the
    pool (100 addresses), offers to the flood are evicted oldest first, and a real
    client that comes after gets an address."""
    w = FakeLan("eth", "eth,ip=10.9.0.1/24")
    try:
        client, server = w.stacks
        srv = serve(server, "eth0", now=w.now)
        iface = server.interfaces[2]
        rng = random.Random(5)
        biggest = 0
        for i in range(10_000):
            mac = bytes([2]) + rng.randbytes(5)
            msg = DhcpMessage(xid=i, chaddr=mac, options={53: bytes([dhcp4.DISCOVER])})
            srv.on_udp(server, iface, 4, ANY, 68, BCAST, 67, dhcp4.to_bytes(msg), w.now)
            biggest = max(biggest, len(srv.leases), len(srv.by_client), len(srv.offers))
            w.links[1].sent.clear()
        assert biggest == 100 and srv.stats["sent_offer"] == 10_000
        agent = client.add_agent(Dhcp4Client(2, init_delay=0.0), w.now)
        run(w, lambda: agent.state == BOUND, 30)
        assert agent.address is not None and srv.describe()["bound"] == 1
        assert len(srv.leases) == 100
    finally:
        w.close()


def test_the_table_is_bounded_by_max_leases_in_a_huge_pool():
    x = Harness("eth,ip=10.0.0.1/8", pool="10.0.0.2-10.255.255.254")
    try:
        x.server.max_leases = 500
        rng = random.Random(6)
        for _ in range(3000):
            x.send(dhcp4.DISCOVER, bytes([2]) + rng.randbytes(5))
            assert len(x.server.leases) <= 500
        assert x.lease(A) is not None
    finally:
        x.close()


def test_from_options_checks_before_anything_starts():
    x = Harness(server=False)
    try:
        with pytest.raises(ConfigError, match="unknown option dhcpd.bogus"):
            from_options(x.stack, x.stack.interfaces[2], {"": [], "bogus": ["1"]})
        assert x.stack.find_agents("dhcpd") == []
    finally:
        x.close()


def test_leasefile_is_the_option_name_dhcpd6_uses_too():
    from threadnet.stack.config import parse_config
    from threadnet.stack.dhcp4server import _parse_options as parse_options

    for name in ("leasefile", "leases"):
        opts = parse_config(f"dhcpd=10.0.0.100-10.0.0.110,dhcpd.{name}=/tmp/x").servers["dhcpd"]
        assert parse_options(opts)["leases"] == "/tmp/x"
