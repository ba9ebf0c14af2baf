"""The DHCPv4 client on fake time (stack/dhcp4client.py): every state change of RFC 2131
4.4 against a scripted server whose every reply the test writes, with the timers
checked to the step: retransmission backoff, T1, T2, retransmission in RENEWING and
REBINDING, expiry; NAK, DECLINE after a conflict, RELEASE; what a lease applies to
the stack and that all of it is undone. Then a whole life against threadnet's own
server."""

from __future__ import annotations

import ipaddress
import random

import pytest

from threadnet.stack import autoconf
from threadnet.stack.config import parse_config
from threadnet.stack.dhcp4client import (
    BOUND,
    INIT,
    PROBING,
    REBINDING,
    REBOOTING,
    RENEWING,
    REQUESTING,
    SELECTING,
    Dhcp4Client,
)
from threadnet.wire import dhcp4

from dhcp4_helpers import Scripted, answer, ip, run, settle
from stack_helpers import FakeLan

STEP = FakeLan.STEP
SERVER = ip("10.9.0.1")
BCAST = b"\xff" * 4
ANY = bytes(4)
OFFERED = "10.9.0.77"


@pytest.fixture
def lan():
    w = FakeLan("eth", "eth,ip=10.9.0.1/24")
    yield w
    w.close()


def start(lan, **kw) -> tuple[Dhcp4Client, Scripted]:
    client, server = lan.stacks
    script = server.add_agent(Scripted(2), lan.now)
    kw.setdefault("rng", random.Random(7))
    kw.setdefault("init_delay", 0.0)
    agent = client.add_agent(Dhcp4Client(2, **kw), lan.now)
    return agent, script


def full_ack(lan, req, lease=1000, **extra):
    opts = dict(lease=dhcp4.u32(lease), mask=ip("255.255.255.0"), router=SERVER,
                dns=ip("10.9.0.53") + ip("10.9.0.54"), domain=b"lan.example")
    opts.update(extra)
    return answer(lan.stacks[1], req, dhcp4.ACK, OFFERED, **opts)


def to_bound(lan, agent, script, lease=1000, **extra):
    """DISCOVER -> OFFER -> REQUEST -> ACK -> conflict detection -> BOUND; returns the
    time the REQUEST went (the lease's start)."""
    run(lan, lambda: script.of_type(dhcp4.DISCOVER), 5)
    answer(lan.stacks[1], script.got[-1][3], dhcp4.OFFER, OFFERED, lease=dhcp4.u32(lease))
    run(lan, lambda: script.of_type(dhcp4.REQUEST), 5)
    t_req, _, _, req = script.of_type(dhcp4.REQUEST)[-1]
    full_ack(lan, req, lease, **extra)
    run(lan, lambda: agent.state == BOUND, 15)
    return t_req - lan.DELAY


def test_discover_offer_request_ack_then_conflict_probe_then_bound(lan):
    client, server = lan.stacks
    agent, script = start(lan, hostname="box.example.org")
    assert agent.state == INIT
    run(lan, lambda: script.got, 5)
    t, src, dst, disc = script.got[0]
    # RFC 2131 4.4.1 / table 5: from 0.0.0.0 to 255.255.255.255, our MAC, a client
    # identifier 0x01 + MAC, what we want, our host name's first label
    assert (src, dst, disc.op, disc.message_type) == (ANY, BCAST, dhcp4.BOOTREQUEST,
                                                       dhcp4.DISCOVER)
    mac = client.interfaces[2].mac
    assert disc.chaddr == mac and disc.client_id == b"\x01" + mac
    assert disc.host_name == "box" and disc.server_id is None and disc.ciaddr == ANY
    assert {dhcp4.OPT_SUBNET_MASK, dhcp4.OPT_ROUTER, dhcp4.OPT_DNS, dhcp4.OPT_DOMAIN_NAME,
            dhcp4.OPT_MTU, dhcp4.OPT_HOST_NAME} <= set(disc.param_list)
    assert disc.max_size == 1500
    assert agent.state == SELECTING
    answer(server, disc, dhcp4.OFFER, OFFERED, lease=dhcp4.u32(1000))
    run(lan, lambda: script.of_type(dhcp4.REQUEST), 1)
    _, src, dst, req = script.of_type(dhcp4.REQUEST)[0]
    assert (src, dst, req.xid) == (ANY, BCAST, disc.xid)
    assert req.server_id == SERVER and req.requested_ip == ip(OFFERED) and req.ciaddr == ANY
    assert agent.state == REQUESTING
    full_ack(lan, req, mtu=dhcp4.u16(1400), hostname=b"given")
    run(lan, lambda: agent.state != REQUESTING, 1)
    # RFC 2131 4.4.1 + RFC 5227: the address is probed before it is used
    assert agent.state == PROBING
    assert f"{OFFERED}/24" not in client.addresses(4)
    t_probe = lan.now
    run(lan, lambda: agent.state == BOUND, 15)
    assert 3.0 <= lan.now - t_probe <= 10.0
    assert f"{OFFERED}/24" in client.addresses(4)
    valid, _, origin = client.interfaces[2].v4_life[ip(OFFERED)]
    assert origin == "dhcp" and valid == pytest.approx(agent.expires_at)
    (route,) = [r for r in client.routes4 if r.dst.prefixlen == 0]
    assert (str(route.gateway), route.proto) == ("10.9.0.1", "dhcp")
    assert route.expires == pytest.approx(agent.expires_at)
    assert client.nameservers == ["10.9.0.53", "10.9.0.54"]
    assert client.resolver.search == ["lan.example"]
    assert client.gethostname() == "given"
    assert client.interfaces[2].mtu == 1400
    d = agent.describe()
    assert d["state"] == BOUND and d["address"] == f"{OFFERED}/24"
    assert d["server"] == "10.9.0.1" and d["lease"] == 1000.0
    assert d["dns"] == ["10.9.0.53", "10.9.0.54"] and d["domain"] == "lan.example"


def test_discover_backoff_is_4_8_16_32_64_64_seconds_plus_or_minus_one(lan):
    agent, script = start(lan)
    run(lan, lambda: len(script.got) >= 8, 400)
    times = [g[0] for g in script.got]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, base in zip(gaps, [4, 8, 16, 32, 64, 64, 64], strict=True):
        assert base - 1 - STEP <= gap <= base + 1 + STEP, (gaps, base)
    assert len({round(g - b, 2) for g, b in zip(gaps, [4, 8, 16, 32, 64, 64, 64],
                                                strict=True)}) > 1  # randomized
    msgs = [g[3] for g in script.got]
    assert len({m.xid for m in msgs}) == 1  # one exchange
    assert [m.secs for m in msgs] == sorted(m.secs for m in msgs) and msgs[-1].secs > 200
    assert agent.state == SELECTING


def test_request_is_retransmitted_then_the_client_starts_again(lan):
    agent, script = start(lan)
    run(lan, lambda: script.got, 5)
    answer(lan.stacks[1], script.got[0][3], dhcp4.OFFER, OFFERED, lease=dhcp4.u32(600))
    run(lan, lambda: len(script.of_type(dhcp4.REQUEST)) == 4, 100)
    times = [g[0] for g in script.of_type(dhcp4.REQUEST)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    for gap, base in zip(gaps, [4, 8, 16], strict=True):
        assert base - 1 - STEP <= gap <= base + 1 + STEP
    run(lan, lambda: len(script.of_type(dhcp4.DISCOVER)) == 2, 40)
    assert 31 - STEP <= script.of_type(dhcp4.DISCOVER)[1][0] - times[-1] <= 33 + STEP
    assert agent.state == SELECTING


def test_t1_renews_by_unicast_t2_rebinds_by_broadcast_and_the_lease_ends(lan):
    client, _ = lan.stacks
    agent, script = start(lan, hostname=None)
    t0 = to_bound(lan, agent, script, lease=1000, t1=dhcp4.u32(500), t2=dhcp4.u32(875),
                  mtu=dhcp4.u16(1280), hostname=b"leased")
    assert (agent.t1_at, agent.t2_at, agent.expires_at) == pytest.approx(
        (t0 + 500, t0 + 875, t0 + 1000), abs=STEP)
    seen = len(script.got)
    run(lan, lambda: script.got[-1][3].message_type == dhcp4.DISCOVER, 1100)
    late = script.got[seen:]
    kinds = [(g[3].message_type, g[2] == BCAST) for g in late]
    sent = [g[0] - lan.DELAY - t0 for g in late]
    # RFC 2131 4.4.5: RENEWING from T1, unicast, then half the time to T2 (60 s at
    # least); REBINDING from T2, broadcast, half the time left; then the end
    expect = [(500, False), (687.5, False), (781.25, False), (841.25, False),
              (875, True), (937.5, True), (997.5, True)]
    assert [k for k in kinds[:7]] == [(dhcp4.REQUEST, b) for _, b in expect]
    for got, (want, _) in zip(sent[:7], expect, strict=True):
        # (the first unicast waits for ARP: one round trip)
        assert want - STEP <= got <= want + 2 * lan.DELAY + 2 * STEP
    for _, src, _, m in late[:7]:
        assert m.ciaddr == ip(OFFERED) and m.server_id is None and m.requested_ip is None
        assert src == ip(OFFERED)
    assert late[0][2] == SERVER
    assert {g[3].xid for g in late[:4]} != {g[3].xid for g in late[4:7]}
    # the end of the lease: a new DISCOVER (asking for the old address), and nothing
    # the lease gave is left
    assert late[7][3].message_type == dhcp4.DISCOVER
    assert late[7][3].requested_ip == ip(OFFERED)
    assert late[7][0] - lan.DELAY - t0 == pytest.approx(1000, abs=2 * STEP)
    assert agent.stats["expired"] == 1
    assert f"{OFFERED}/24" not in client.addresses(4)
    assert ip(OFFERED) not in client.interfaces[2].v4_life
    assert not any(r.dst.prefixlen == 0 for r in client.routes4)
    assert client.nameservers == [] and client.resolver.search == []
    assert client.gethostname() == client.name
    assert client.interfaces[2].mtu == 1500


def test_an_ack_while_renewing_extends_the_lease(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    t0 = to_bound(lan, agent, script, lease=1000)
    run(lan, lambda: agent.state == RENEWING and script.got[-1][3].ciaddr != ANY, 600)
    t_renew, _, dst, req = script.got[-1]
    assert dst == SERVER
    full_ack(lan, req, lease=2000, dns=ip("10.9.0.99"))
    run(lan, lambda: agent.state == BOUND, 1)
    # the lease starts when the REQUEST went, at T1 (it reached the server after ARP)
    start_at = t0 + 500
    assert t_renew - lan.DELAY == pytest.approx(start_at + 2 * lan.DELAY, abs=STEP)
    assert agent.expires_at == pytest.approx(start_at + 2000, abs=STEP)
    assert agent.t1_at == pytest.approx(start_at + 1000, abs=STEP)
    valid = client.interfaces[2].v4_life[ip(OFFERED)][0]
    assert valid == pytest.approx(start_at + 2000, abs=STEP)
    (route,) = [r for r in client.routes4 if r.dst.prefixlen == 0]
    assert route.expires == pytest.approx(start_at + 2000, abs=STEP)
    assert client.nameservers == ["10.9.0.99"]
    # the old lease's end passes: nothing goes
    settle(lan, 600)
    assert f"{OFFERED}/24" in client.addresses(4) and agent.state == BOUND


def test_an_ack_while_rebinding_from_another_server_is_taken(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    to_bound(lan, agent, script, lease=1000)
    run(lan, lambda: agent.state == REBINDING and script.got[-1][2] == BCAST, 1000)
    req = script.got[-1][3]
    answer(server, req, dhcp4.ACK, OFFERED, server="10.9.0.2", dst=ip(OFFERED),
           lease=dhcp4.u32(500))
    run(lan, lambda: agent.state == BOUND, 1)
    assert agent.server == ip("10.9.0.2")


def test_a_nak_while_requesting_starts_again_at_once(lan):
    agent, script = start(lan)
    run(lan, lambda: script.got, 5)
    answer(lan.stacks[1], script.got[0][3], dhcp4.OFFER, OFFERED, lease=dhcp4.u32(600))
    run(lan, lambda: script.of_type(dhcp4.REQUEST), 1)
    req = script.of_type(dhcp4.REQUEST)[0][3]
    # a NAK from another server is not for us
    answer(lan.stacks[1], req, dhcp4.NAK, server="10.9.0.2")
    settle(lan, 0.5)
    assert agent.state == REQUESTING
    answer(lan.stacks[1], req, dhcp4.NAK)
    t = lan.now
    run(lan, lambda: len(script.of_type(dhcp4.DISCOVER)) == 2, 1)
    assert lan.now - t < 0.2
    assert script.of_type(dhcp4.DISCOVER)[1][3].requested_ip is None


def test_nak_while_renewing_undoes_the_lease_and_naks_in_a_row_back_off(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    to_bound(lan, agent, script, lease=1000)
    run(lan, lambda: agent.state == RENEWING and script.got[-1][3].ciaddr != ANY, 600)
    answer(server, script.got[-1][3], dhcp4.NAK)
    run(lan, lambda: len(script.of_type(dhcp4.DISCOVER)) == 2, 1)  # at once
    assert f"{OFFERED}/24" not in client.addresses(4) and not client.nameservers
    assert not any(r.dst.prefixlen == 0 for r in client.routes4)
    # NAKs in a row: 0 s, then 1, 2, 4... before the next DISCOVER
    waits = []
    for _ in range(4):
        n = len(script.of_type(dhcp4.DISCOVER))
        disc = script.of_type(dhcp4.DISCOVER)[-1][3]
        answer(server, disc, dhcp4.OFFER, OFFERED, lease=dhcp4.u32(600))
        run(lan, lambda: script.got[-1][3].message_type == dhcp4.REQUEST, 1)
        answer(server, script.got[-1][3], dhcp4.NAK)
        t = lan.now + lan.DELAY
        run(lan, lambda n=n: len(script.of_type(dhcp4.DISCOVER)) > n, 70)
        waits.append(round(lan.now - lan.DELAY - t))
    assert waits == [1, 2, 4, 8]


def test_an_address_in_use_is_declined_and_the_client_waits_10_s(lan):
    """Another host holds the offered address: conflict detection finds it, the client
    DECLINEs it (RFC 2131 3.1.5) and asks again 10 s later."""
    client, server = lan.stacks
    server.addr_add(2, f"{OFFERED}/24", lan.now)  # the other host
    agent, script = start(lan)
    run(lan, lambda: script.got, 5)
    answer(server, script.got[0][3], dhcp4.OFFER, OFFERED, lease=dhcp4.u32(600))
    run(lan, lambda: script.of_type(dhcp4.REQUEST), 1)
    full_ack(lan, script.of_type(dhcp4.REQUEST)[0][3])
    run(lan, lambda: script.of_type(dhcp4.DECLINE), 15)
    t, src, dst, decline = script.of_type(dhcp4.DECLINE)[0]
    assert (src, dst, decline.ciaddr) == (ANY, BCAST, ANY)
    assert decline.requested_ip == ip(OFFERED) and decline.server_id == SERVER
    assert decline.client_id == b"\x01" + client.interfaces[2].mac
    assert agent.state == INIT
    assert ip(OFFERED) not in client.interfaces[2].acd4
    assert OFFERED not in " ".join(client.describe())
    assert not client.nameservers and not any(r.dst.prefixlen == 0 for r in client.routes4)
    run(lan, lambda: len(script.of_type(dhcp4.DISCOVER)) == 2, 15)
    again = script.of_type(dhcp4.DISCOVER)[1]
    assert again[0] - t == pytest.approx(10.0, abs=2 * STEP)
    assert again[3].requested_ip is None  # never asks for it again


def test_stop_releases_the_lease_and_undoes_it(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    to_bound(lan, agent, script)
    client.remove_agent(agent, lan.now)
    run(lan, lambda: script.of_type(dhcp4.RELEASE), 1)
    _, src, dst, rel = script.of_type(dhcp4.RELEASE)[0]
    assert (src, dst) == (ip(OFFERED), SERVER)
    assert rel.ciaddr == ip(OFFERED) and rel.server_id == SERVER and rel.requested_ip is None
    assert f"{OFFERED}/24" not in client.addresses(4) and not client.nameservers
    assert not any(r.dst.prefixlen == 0 for r in client.routes4)


def test_close_sends_the_release_before_the_link_closes(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    to_bound(lan, agent, script)
    sent = len(lan.links[0].sent)
    client.close()
    frames = lan.links[0].sent[sent:]
    assert any(f[42 + 240:].find(bytes([53, 1, dhcp4.RELEASE])) >= 0 for f in frames)


def test_init_reboot_asks_for_the_earlier_address(lan):
    client, server = lan.stacks
    agent, script = start(lan, address=OFFERED)
    run(lan, lambda: script.got, 5)
    _, src, dst, req = script.got[0]
    assert agent.state == REBOOTING and req.message_type == dhcp4.REQUEST
    assert (src, dst) == (ANY, BCAST)
    assert req.requested_ip == ip(OFFERED) and req.server_id is None and req.ciaddr == ANY
    full_ack(lan, req)
    run(lan, lambda: agent.state == BOUND, 15)
    assert f"{OFFERED}/24" in client.addresses(4)


def test_an_ack_without_server_identifier_renews_with_its_sender(lan):
    client, server = lan.stacks
    agent, script = start(lan, address=OFFERED)
    run(lan, lambda: script.got, 5)
    full_ack(lan, script.got[0][3], sid=None)
    run(lan, lambda: agent.state == BOUND, 15)
    assert agent.server == SERVER
    run(lan, lambda: script.got[-1][3].ciaddr != ANY, 600)
    assert script.got[-1][2] == SERVER  # unicast to the ACK's sender


def test_init_reboot_refused_goes_to_init(lan):
    agent, script = start(lan, address=OFFERED)
    run(lan, lambda: script.got, 5)
    answer(lan.stacks[1], script.got[0][3], dhcp4.NAK)
    run(lan, lambda: script.of_type(dhcp4.DISCOVER), 1)
    assert script.of_type(dhcp4.DISCOVER)[0][3].requested_ip is None


def test_replies_that_are_not_ours_are_ignored(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    run(lan, lambda: script.got, 5)
    disc = script.got[0][3]
    answer(server, disc, dhcp4.OFFER, OFFERED, xid=disc.xid ^ 1, lease=dhcp4.u32(60))
    answer(server, disc, dhcp4.OFFER, OFFERED, chaddr=b"\x02" * 6, lease=dhcp4.u32(60))
    answer(server, disc, dhcp4.OFFER, "0.0.0.0", dst=BCAST, lease=dhcp4.u32(60))
    answer(server, disc, dhcp4.OFFER, "127.0.0.5", dst=BCAST, lease=dhcp4.u32(60))
    answer(server, disc, dhcp4.ACK, OFFERED, lease=dhcp4.u32(60))  # no REQUEST yet
    # malformed: a truncated option
    bad = bytearray(dhcp4.to_bytes(dhcp4.DhcpMessage(op=2, xid=disc.xid, chaddr=disc.chaddr)))
    bad[240:243] = bytes([53, 5, 2])
    server.send_udp_on(server.interfaces[2], SERVER, 67, BCAST, 68, bytes(bad[:243]))
    settle(lan, 1)
    assert agent.state == SELECTING and not script.of_type(dhcp4.REQUEST)
    assert agent.stats["ignored"] == 5 and agent.stats["bad"] == 1


def test_an_existing_default_route_and_host_name_are_left_alone(lan):
    client, server = lan.stacks
    client.addr_add(2, "10.9.0.5/24", lan.now)
    client.route_add("default", "10.9.0.254")
    client.set_hostname("mine")
    agent, script = start(lan)
    to_bound(lan, agent, script, hostname=b"theirs")
    (route,) = [r for r in client.routes4 if r.dst.prefixlen == 0]
    assert (str(route.gateway), route.proto) == ("10.9.0.254", "static")
    assert client.gethostname() == "mine"
    client.remove_agent(agent, lan.now)
    assert [str(r.gateway) for r in client.routes4 if r.dst.prefixlen == 0] == ["10.9.0.254"]
    assert client.gethostname() == "mine"


def test_mtu_is_kept_within_what_the_link_carries(lan):
    client, _ = lan.stacks
    link = lan.links[0]
    link.max_frame, link.max_frame_known = 1518, True  # a vde link: MTU 1500 at most
    agent, script = start(lan)
    to_bound(lan, agent, script, mtu=dhcp4.u16(9000))
    assert client.interfaces[2].mtu == 1500
    client.remove_agent(agent, lan.now)
    link.max_frame = 9018
    script.got.clear()
    agent = client.add_agent(Dhcp4Client(2, rng=random.Random(8), init_delay=0.0), lan.now)
    to_bound(lan, agent, script, mtu=dhcp4.u16(1280))
    assert client.interfaces[2].mtu == 1280
    client.remove_agent(agent, lan.now)
    assert client.interfaces[2].mtu == 1500  # as it was


def test_no_subnet_mask_takes_the_class_and_an_infinite_lease_never_renews(lan):
    client, server = lan.stacks
    agent, script = start(lan)
    run(lan, lambda: script.got, 5)
    answer(server, script.got[0][3], dhcp4.OFFER, OFFERED, lease=dhcp4.u32(60))
    run(lan, lambda: script.of_type(dhcp4.REQUEST), 1)
    answer(server, script.of_type(dhcp4.REQUEST)[0][3], dhcp4.ACK, OFFERED,
           lease=dhcp4.u32(dhcp4.INFINITE))
    run(lan, lambda: agent.state == PROBING, 1)
    assert agent.next_deadline() is None  # no timer at infinity for a runner to arm
    run(lan, lambda: agent.state == BOUND, 15)
    assert f"{OFFERED}/8" in client.addresses(4)
    assert agent.next_deadline() is None
    assert ip(OFFERED) in client.interfaces[2].v4_life  # origin dhcp, forever
    assert client.interfaces[2].v4_life[ip(OFFERED)][0] == float("inf")


def test_config_item_dhcp_starts_the_client_and_minus_dhcp_stops_it(lan):
    client, server = lan.stacks
    server.add_agent(Scripted(2), lan.now)
    client.configure("dhcp,fqdn=node.example.org", lan.now)
    (agent,) = client.find_agents("dhcp4")
    assert isinstance(agent, Dhcp4Client) and agent.hostname == "node"
    client.configure("dhcp4", lan.now)  # already running: stays
    assert client.find_agents("dhcp4") == [agent]
    client.configure("-dhcp", lan.now)
    assert client.find_agents("dhcp4") == []
    autoconf.check(parse_config("auto4"))


def test_a_whole_life_against_threadnets_server():
    """The client and the server of this package on one LAN: a lease, a renewal at T1,
    a RELEASE on close that the server's table shows."""
    from threadnet.stack.dhcp4server import serve

    w = FakeLan("eth", "eth,ip=10.9.0.1/24,dns=10.9.0.53")
    try:
        client, server = w.stacks
        srv = serve(server, "eth0", lease=600, domain="lan.example", now=w.now)
        client.configure("eth,dhcp", w.now)
        (agent,) = client.find_agents("dhcp4")
        run(w, lambda: agent.state == BOUND, 30)
        assert "10.9.0.100/24" in client.addresses(4)
        assert client.nameservers == ["10.9.0.53"] and client.resolver.search == ["lan.example"]
        t1 = agent.t1_at
        run(w, lambda: agent.stats.get("got_ack", 0) == 2, 400)
        # ARP for the server, the REQUEST, the ACK
        assert w.now == pytest.approx(t1 + 4 * w.DELAY, abs=2 * STEP)
        assert agent.expires_at == pytest.approx(t1 + 600, abs=STEP)
        assert srv.table(w.now)[0]["state"] == "bound"
        client.close()
        run(w, lambda: srv.table(w.now)[0]["state"] == "free", 1)
    finally:
        w.close()


def test_the_client_is_sans_io_plain_data():
    a = Dhcp4Client(2)
    assert a.kind == "dhcp4" and a.udp_ports == ((4, 68),) and a.next_deadline() is None
    assert ipaddress.ip_address("10.0.0.1")  # (no stack, link or socket in it)
    assert not any(hasattr(v, "send") or hasattr(v, "fileno") for v in vars(a).values())
