"""The DHCPv6 client and server (``stack/dhcp6client.py``, ``stack/dhcp6server.py``) on fake
time: core stacks on a FakeLan, the client against a scripted server (every transition and
timer: link-local wait, SOLICIT schedule, preference, REQUEST, T1/T2, RENEW, REBIND,
expiry, NoBinding, NoAddrsAvail, DECLINE, RELEASE), the server's answers one by one
(pool, offers, reservations, status codes, the flood bound, the lease file across
restarts), and the two together."""

from __future__ import annotations

import ipaddress
import json
import math
import os
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from test_wire_dhcp6 import messages
from threadnet.stack import dhcp6client as dc
from threadnet.stack import dhcp6leases as dl
from threadnet.stack import dhcp6server as ds
from threadnet.stack.agents import Agent
from threadnet.stack.config import ConfigError
from threadnet.wire import dhcp6 as d

from stack_helpers import FakeLan

MAC = bytes.fromhex("020000000c01")
CLIENT_DUID = d.duid_ll(MAC)
SERVER_A = d.duid_ll(bytes.fromhex("020000000a0a"))
SERVER_B = d.duid_ll(bytes.fromhex("020000000b0b"))


def ip(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def skip_ahead(lan: FakeLan) -> None:
    """Move the clock to just before the next frame or timer, so that ``step`` lands on it
    (fake time runs through minutes of lease timers in a few steps)."""
    lan.collect()  # what a test sent between steps
    times = [q[0] for q in lan.queue]
    times += [t for s in lan.stacks if (t := s.next_deadline()) is not None]
    if times:
        tick = math.ceil((min(times) - lan._start) / lan.STEP - 1e-9)
        lan.ticks = max(lan.ticks, tick - 1)


def run(lan: FakeLan, cond, limit: float) -> None:
    end = lan.now + limit
    while not cond():
        assert lan.now < end, "no progress on fake time"
        skip_ahead(lan)
        lan.step()


def link_local(stack) -> bytes:
    return next(a.addr for a in stack.interfaces[2].v6 if a.addr[:2] == b"\xfe\x80")


class Script(Agent):
    """A DHCPv6 server the test speaks for: it records what arrives and sends what it is
    told."""

    kind = "script6"
    udp_ports = ((6, d.SERVER_PORT),)
    groups6 = (d.ALL_SERVERS,)

    def __init__(self, ifindex: int) -> None:
        super().__init__(ifindex)
        self.got: list[tuple[float, bytes, bytes, d.Message]] = []
        self.stack = None

    def start(self, stack, now):
        self.stack = stack

    def on_udp(self, stack, iface, family, src, sport, dst, dport, data, now):
        self.got.append((now, src, dst, d.parse(data)))

    def of(self, msg_type: int) -> list[tuple[float, bytes, bytes, d.Message]]:
        return [g for g in self.got if g[3].msg_type == msg_type]

    def send(self, msg: d.Message, to: bytes) -> None:
        iface = self.stack.interfaces[self.ifindex]
        self.stack.send_udp_on(iface, link_local(self.stack), d.SERVER_PORT, to,
                               d.CLIENT_PORT, d.build(msg))

    def answer(self, asked: d.Message, to: bytes, msg_type: int = d.REPLY, *,
               server: bytes = SERVER_A, ia: d.IaNa | None | bool = True, **fields) -> None:
        """Answer ``asked`` with its xid and client id; ``ia=True``: fd00:1::100 for
        3600/7200 s, T1 1000, T2 1600."""
        if ia is True:
            ia = d.IaNa(asked.ia_na[0].iaid, 1000, 1600, [d.IaAddress("fd00:1::100", 3600, 7200)])
        self.send(d.Message(msg_type, asked.xid, client_id=asked.client_id, server_id=server,
                            ia_na=[ia] if ia else [], **fields), to)


@pytest.fixture
def net():
    """A client stack (a Dhcp6Client on a seeded random source) and a scripted server."""
    lan = FakeLan("eth,mac=02:00:00:00:0c:01", "eth,ip=fd00:1::1/64")
    client_stack, server_stack = lan.stacks
    script = server_stack.add_agent(Script(2), lan.now)
    client = client_stack.add_agent(dc.Dhcp6Client(2, MAC, rng=random.Random(7)), lan.now)
    yield lan, client_stack, client, script
    lan.close()


def bind(lan, client, script, **fields):
    """Take the client to BOUND with the default answer; returns the REQUEST."""
    run(lan, lambda: script.of(d.SOLICIT), 5)
    t, src, _, solicit = script.of(d.SOLICIT)[0]
    script.answer(solicit, src, d.ADVERTISE, preference=255)
    run(lan, lambda: script.of(d.REQUEST), 2)
    _, src, _, request = script.of(d.REQUEST)[-1]
    script.answer(request, src, **fields)
    run(lan, lambda: client.state == dc.BOUND, 2)
    return request


# -- the client ------------------------------------------------------------------------------

def test_solicit_waits_for_its_link_local_then_follows_the_retransmission_schedule(net):
    lan, stack, client, script = net
    ll = next(a for a in stack.interfaces[2].v6 if a.addr[:2] == b"\xfe\x80")
    assert client.state == dc.INIT and client.next_deadline() == ll.dad_deadline
    run(lan, lambda: len(script.of(d.SOLICIT)) >= 5, 60)
    times = [t for t, *_ in script.of(d.SOLICIT)]
    # RFC 8415 18.2.1: after DAD, a random delay of 0..SOL_MAX_DELAY
    assert ll.dad_deadline <= times[0] <= ll.dad_deadline + 1 + 2 * lan.DELAY
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    # 15: RT1 = IRT + RAND*IRT with RAND > 0 for a SOLICIT; then RT = 2RT + RAND*RT
    assert 1.0 < gaps[0] <= 1.1 + lan.STEP
    for a, b in zip(gaps, gaps[1:], strict=False):
        assert 1.9 * a - lan.STEP <= b <= 2.1 * a + lan.STEP
    _, src, dst, m = script.got[0]
    assert src == ll.addr and dst == d.ALL_SERVERS
    assert m.client_id == CLIENT_DUID and m.server_id is None
    assert m.ia_na == [d.IaNa(int.from_bytes(MAC[2:], "big"))]
    assert m.oro == [d.OPT_DNS_SERVERS, d.OPT_DOMAIN_LIST, d.OPT_SOL_MAX_RT]
    assert [g[3].elapsed for g in script.got[:3]] == [0, int(gaps[0] * 100),
                                                       int((gaps[0] + gaps[1]) * 100)]
    assert len({g[3].xid for g in script.got}) == 1  # one transaction


def test_sol_max_rt_from_a_server_caps_the_retransmissions(net):
    lan, stack, client, script = net
    run(lan, lambda: script.of(d.SOLICIT), 5)
    _, src, _, m = script.of(d.SOLICIT)[0]
    script.answer(m, src, d.ADVERTISE, ia=None, sol_max_rt=60)  # no address: just the option
    run(lan, lambda: len(script.of(d.SOLICIT)) >= 10, 600)
    times = [t for t, *_ in script.of(d.SOLICIT)]
    assert client.sol_max_rt == 60 and client.state == dc.SOLICITING
    assert all(54 - lan.STEP <= b - a <= 66 + lan.STEP for a, b in zip(times[-3:], times[-2:], strict=False))
    assert client.stats["advertise_without_addresses"] == 1


def test_the_highest_preference_wins_at_the_end_of_the_first_rt(net):
    lan, stack, client, script = net
    run(lan, lambda: script.of(d.SOLICIT), 5)
    t0, src, _, m = script.of(d.SOLICIT)[0]
    for server, pref in ((SERVER_A, 10), (SERVER_B, 20)):
        ia = d.IaNa(m.ia_na[0].iaid, 0, 0, [d.IaAddress(f"fd00:1::{pref}", 100, 200)])
        script.answer(m, src, d.ADVERTISE, server=server, ia=ia, preference=pref)
    run(lan, lambda: script.of(d.REQUEST), 3)
    t, _, _, req = script.of(d.REQUEST)[0]
    assert t >= t0 + 1.0  # not before the first RT ended
    assert len(script.of(d.SOLICIT)) == 1  # and no second SOLICIT
    assert req.server_id == SERVER_B and req.client_id == CLIENT_DUID
    assert req.ia_na[0].addresses == [d.IaAddress("fd00:1::20")]
    assert req.elapsed == 0 and client.state == dc.REQUESTING


def test_preference_255_is_taken_at_once_and_any_advertise_after_the_first_rt(net):
    lan, stack, client, script = net
    run(lan, lambda: script.of(d.SOLICIT), 5)
    t0, src, _, m = script.of(d.SOLICIT)[0]
    script.answer(m, src, d.ADVERTISE, preference=255)
    run(lan, lambda: script.of(d.REQUEST), 1)
    assert script.of(d.REQUEST)[0][0] < t0 + 1.0
    # another client: nothing in the first RT, then a plain advertise is taken at once
    lan2 = FakeLan("eth", "eth")
    try:
        s2 = lan2.stacks[1].add_agent(Script(2), lan2.now)
        lan2.stacks[0].add_agent(dc.Dhcp6Client(2, MAC, rng=random.Random(3)), lan2.now)
        run(lan2, lambda: len(s2.of(d.SOLICIT)) == 2, 10)
        t1, src, _, m = s2.of(d.SOLICIT)[1]
        s2.answer(m, src, d.ADVERTISE)
        run(lan2, lambda: s2.of(d.REQUEST), 1)
        assert s2.of(d.REQUEST)[0][0] < t1 + 0.5
    finally:
        lan2.close()


def test_a_reply_binds_the_address_with_its_lifetimes_and_dns(net):
    lan, stack, client, script = net
    bind(lan, client, script, dns_servers=["fd00:1::53"], domains=["lan", "example.org"])
    now = lan.now
    a = next(x for x in stack.interfaces[2].v6 if x.addr == ip("fd00:1::100"))
    assert (a.plen, a.origin) == (128, "dhcp")
    assert a.valid_until == pytest.approx(now + 7200, abs=0.1)
    assert a.preferred_until == pytest.approx(now + 3600, abs=0.1)
    # a /128 and no prefix route (as Linux; the prefix comes from router advertisements)
    assert not any(r.dst == ipaddress.ip_network("fd00:1::/64") for r in stack.routes6)
    assert stack.resolver.learned() == {"dhcp6:eth0": (["fd00:1::53"], ["lan", "example.org"])}
    assert stack.nameservers == ["fd00:1::53"]
    desc = client.describe()
    assert desc["state"] == "bound" and desc["server"] == d.duid_text(SERVER_A)
    assert (desc["t1"], desc["t2"]) == (1000, 1600)
    assert desc["renew_in"] == pytest.approx(1000, abs=0.1)
    assert desc["addresses"][0]["valid_lft"] == pytest.approx(7200, abs=0.1)
    assert desc["addresses"][0]["address"] == "fd00:1::100"
    run(lan, lambda: "fd00:1::100/128" in stack.addresses(6), 2)  # after its DAD


def test_renew_at_t1_rebind_at_t2_then_expiry_and_soliciting_again(net):
    lan, stack, client, script = net
    ia = d.IaNa(0, 100, 160, [d.IaAddress("fd00:1::100", 150, 200)])
    req = bind(lan, client, script, ia=dataclass_replace(ia, iaid=client.iaid),
               dns_servers=["fd00:1::53"])
    t_bound = lan.now
    run(lan, lambda: script.of(d.RENEW), 200)
    t, src, dst, renew = script.of(d.RENEW)[0]
    assert t == pytest.approx(t_bound + 100, abs=0.1) and client.state == dc.RENEWING
    assert dst == d.ALL_SERVERS and renew.server_id == SERVER_A
    assert renew.ia_na == [d.IaNa(client.iaid, addresses=[d.IaAddress("fd00:1::100")])]
    run(lan, lambda: script.of(d.REBIND), 100)
    renews = [g[0] for g in script.of(d.RENEW)]
    assert len(renews) >= 3 and renews[1] - renews[0] == pytest.approx(10, abs=1.1)  # REN_TIMEOUT
    t, _, _, rebind = script.of(d.REBIND)[0]
    assert t == pytest.approx(t_bound + 160, abs=0.1) and client.state == dc.REBINDING
    assert rebind.server_id is None and rebind.ia_na[0].addresses == [d.IaAddress("fd00:1::100")]
    # the preferred lifetime ended at 150 s: deprecated, still there; at 200 s, gone
    (a,) = [a for a in stack.interfaces[2].v6 if a.addr == ip("fd00:1::100")]
    assert a.deprecated and a.preferred_until == pytest.approx(t_bound + 150, abs=0.1)
    run(lan, lambda: client.state == dc.SOLICITING, 100)
    assert lan.now == pytest.approx(t_bound + 200, abs=0.1)
    assert not any(a.addr == ip("fd00:1::100") for a in stack.interfaces[2].v6)
    assert stack.resolver.learned() == {} and client.stats["expired"] == 1
    n = len(script.of(d.SOLICIT))
    run(lan, lambda: len(script.of(d.SOLICIT)) > n, 5)
    assert req.msg_type == d.REQUEST


def dataclass_replace(obj, **kw):
    import dataclasses

    return dataclasses.replace(obj, **kw)


def test_a_renew_reply_extends_and_zero_lifetimes_remove(net):
    lan, stack, client, script = net
    bind(lan, client, script)
    run(lan, lambda: script.of(d.RENEW), 1100)
    _, src, _, renew = script.of(d.RENEW)[0]
    script.answer(renew, src, ia=d.IaNa(client.iaid, 1000, 1600, [
        d.IaAddress("fd00:1::100", 3600, 7200), d.IaAddress("fd00:1::101", 3600, 7200)]))
    run(lan, lambda: client.state == dc.BOUND, 1)
    now = lan.now
    a = next(x for x in stack.interfaces[2].v6 if x.addr == ip("fd00:1::100"))
    assert a.valid_until == pytest.approx(now + 7200, abs=0.1)
    assert sorted(client.addresses) == ["fd00:1::100", "fd00:1::101"]
    assert client.renew_at == pytest.approx(now + 1000, abs=0.1)
    run(lan, lambda: len(script.of(d.RENEW)) == 2, 1100)
    _, src, _, renew = script.of(d.RENEW)[1]
    script.answer(renew, src, ia=d.IaNa(client.iaid, 1000, 1600, [
        d.IaAddress("fd00:1::100", 3600, 7200), d.IaAddress("fd00:1::101", 0, 0)]))
    run(lan, lambda: client.state == dc.BOUND, 1)
    assert list(client.addresses) == ["fd00:1::100"]
    assert not any(x.addr == ip("fd00:1::101") for x in stack.interfaces[2].v6)


def test_no_binding_makes_the_client_request_again(net):
    lan, stack, client, script = net
    bind(lan, client, script)
    run(lan, lambda: script.of(d.RENEW), 1100)
    _, src, _, renew = script.of(d.RENEW)[0]
    script.answer(renew, src, ia=d.IaNa(client.iaid, status=d.Status(d.NO_BINDING)))
    run(lan, lambda: len(script.of(d.REQUEST)) == 2, 2)
    req = script.of(d.REQUEST)[1][3]
    assert req.server_id == SERVER_A and req.ia_na[0].addresses == [d.IaAddress("fd00:1::100")]
    assert client.state == dc.REQUESTING and client.stats["no_binding"] == 1
    script.answer(req, src)
    run(lan, lambda: client.state == dc.BOUND, 2)


def test_an_address_the_interface_has_already_is_not_taken_over(net):
    lan, stack, client, script = net
    stack.addr_add(2, "fd00:1::100/64", lan.now)  # static: forever
    run(lan, lambda: script.of(d.SOLICIT), 5)
    _, src, _, m = script.of(d.SOLICIT)[0]
    script.answer(m, src, d.ADVERTISE, preference=255)
    run(lan, lambda: script.of(d.REQUEST), 2)
    _, src, _, req = script.of(d.REQUEST)[0]
    script.answer(req, src)
    run(lan, lambda: client.stats.get("address_exists"), 2)
    (a,) = [x for x in stack.interfaces[2].v6 if x.addr == ip("fd00:1::100")]
    assert (a.origin, a.plen, a.valid_until) == ("static", 64, float("inf"))
    assert client.state == dc.SOLICITING and not client.addresses


def test_t1_t2_zero_the_client_chooses_and_t1_over_t2_is_discarded(net):
    lan, stack, client, script = net
    bind(lan, client, script, ia=d.IaNa(client.iaid, 0, 0, [d.IaAddress("fd00:1::100", 1000, 2000)]))
    # RFC 8415 21.4: 0.5 and 0.8 of the shortest preferred lifetime
    assert (client.t1, client.t2) == (pytest.approx(500), pytest.approx(800))
    run(lan, lambda: script.of(d.RENEW), 600)
    _, src, _, renew = script.of(d.RENEW)[0]
    script.answer(renew, src, ia=d.IaNa(client.iaid, 900, 800, [d.IaAddress("fd00:1::100", 1, 2)]))
    lan.step()
    lan.step()
    lan.step()
    lan.step()
    lan.step()
    lan.step()
    assert client.state == dc.RENEWING and client.stats["ignored"] == 1
    assert client.addresses["fd00:1::100"][0] > lan.now + 100  # the bad IA changed nothing


def test_request_retransmits_ten_times_then_solicits_again(net):
    lan, stack, client, script = net
    run(lan, lambda: script.of(d.SOLICIT), 5)
    _, src, _, m = script.of(d.SOLICIT)[0]
    script.answer(m, src, d.ADVERTISE, preference=255)
    run(lan, lambda: client.stats.get("request_failed"), 600)
    times = [g[0] for g in script.of(d.REQUEST)]
    assert len(times) == dc.REQ_MAX_RC
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert max(gaps) <= dc.REQ_MAX_RT * 1.1 + lan.STEP and gaps[-1] >= dc.REQ_MAX_RT * 0.9
    assert client.state == dc.SOLICITING
    n = len(script.of(d.SOLICIT))
    run(lan, lambda: len(script.of(d.SOLICIT)) > n, 5)


def test_no_addrs_avail_and_not_on_link_start_over_with_a_growing_wait(net):
    lan, stack, client, script = net
    starts = []
    for round_ in range(3):
        n = len(script.of(d.SOLICIT))
        run(lan, lambda n=n: len(script.of(d.SOLICIT)) > n, 20)
        t, src, _, m = script.of(d.SOLICIT)[-1]
        starts.append(t)
        script.answer(m, src, d.ADVERTISE, preference=255)
        k = len(script.of(d.REQUEST))
        run(lan, lambda k=k: len(script.of(d.REQUEST)) > k, 2)
        _, src, _, req = script.of(d.REQUEST)[-1]
        if round_ == 1:
            script.answer(req, src, status=d.Status(d.NOT_ON_LINK), ia=None)
        else:
            script.answer(req, src, ia=d.IaNa(req.ia_na[0].iaid, status=d.Status(d.NO_ADDRS_AVAIL)))
    run(lan, lambda: client.stats.get("request_refused") == 3, 5)
    assert client.state == dc.SOLICITING and not client.addresses
    # 1, then 2 s (+ up to 1 s of random delay) before the next SOLICIT
    assert 1.0 <= starts[2] - starts[1] <= 3.2


def test_answers_not_for_us_are_ignored(net):
    lan, stack, client, script = net
    run(lan, lambda: script.of(d.SOLICIT), 5)
    _, src, _, m = script.of(d.SOLICIT)[0]
    wrong = [d.Message(d.ADVERTISE, m.xid ^ 1, client_id=m.client_id, server_id=SERVER_A),
             d.Message(d.ADVERTISE, m.xid, client_id=SERVER_B, server_id=SERVER_A),
             d.Message(d.ADVERTISE, m.xid, client_id=m.client_id)]
    for msg in wrong:  # (one at a time: neighbor discovery queues 3 packets)
        msg.ia_na = [d.IaNa(m.ia_na[0].iaid, addresses=[d.IaAddress("fd00:1::9", 9, 9)])]
        script.send(msg, src)
        for _ in range(15):
            lan.step()
    iface = script.stack.interfaces[2]
    script.stack.send_udp_on(iface, link_local(script.stack), 547, src, 546, b"\x02\x00")
    run(lan, lambda: len(script.of(d.SOLICIT)) == 2, 5)
    assert client.stats["ignored"] == 3 and client.stats["malformed"] == 1
    assert not script.of(d.REQUEST)


def test_dad_failure_declines_the_address_and_release_on_stop(net):
    lan, stack, client, script = net
    # another host already uses the address the server will give
    lan.stacks[1].addr_add(2, "fd00:1::100/64", lan.now)
    req = bind(lan, client, script)
    run(lan, lambda: script.of(d.DECLINE), 3)
    assert client.state == dc.DECLINING and not client.addresses
    assert not any(a.addr == ip("fd00:1::100") for a in stack.interfaces[2].v6)
    _, src, _, decline = script.of(d.DECLINE)[0]
    assert decline.server_id == SERVER_A and decline.ia_na == [
        d.IaNa(req.ia_na[0].iaid, addresses=[d.IaAddress("fd00:1::100")])]
    # unanswered, it is retransmitted DEC_MAX_RC times, then the client solicits again
    run(lan, lambda: client.state == dc.SOLICITING, 30)
    assert len(script.of(d.DECLINE)) == dc.DEC_MAX_RC
    # bound to another address, a RELEASE goes when the client stops
    n = len(script.of(d.SOLICIT))
    run(lan, lambda: len(script.of(d.SOLICIT)) > n, 5)
    _, src, _, m = script.of(d.SOLICIT)[-1]
    ia = d.IaNa(m.ia_na[0].iaid, 1000, 1600, [d.IaAddress("fd00:1::200", 3600, 7200)])
    script.answer(m, src, d.ADVERTISE, preference=255, ia=ia, dns_servers=["fd00:1::53"])
    run(lan, lambda: len(script.of(d.REQUEST)) == 2, 2)
    _, src, _, req = script.of(d.REQUEST)[-1]
    script.answer(req, src, ia=ia, dns_servers=["fd00:1::53"])
    run(lan, lambda: client.state == dc.BOUND, 2)
    assert "dhcp6:eth0" in stack.resolver.learned()
    stack.remove_agent(client, lan.now)
    lan.collect()
    run(lan, lambda: script.of(d.RELEASE), 1)
    rel = script.of(d.RELEASE)[0][3]
    assert rel.server_id == SERVER_A and rel.ia_na[0].addresses == [d.IaAddress("fd00:1::200")]
    assert not any(a.addr == ip("fd00:1::200") for a in stack.interfaces[2].v6)
    assert stack.resolver.learned() == {} and client.state == dc.STOPPED


def test_the_config_word_starts_the_client():
    lan = FakeLan("eth,dhcp6")
    try:
        (agent,) = lan.stacks[0].find_agents("dhcp6")
        assert isinstance(agent, dc.Dhcp6Client) and agent.ifindex == 2
        assert agent.duid == d.duid_ll(lan.stacks[0].interfaces[2].mac)
        lan.stacks[0].configure("-dhcp6")
        assert not lan.stacks[0].find_agents("dhcp6")
    finally:
        lan.close()


# -- the server, message by message ------------------------------------------------------------

LINK = [ipaddress.IPv6Network("fd00:1::/64")]
C1 = d.duid_ll(bytes.fromhex("020000000101"))
C2 = d.duid_llt(bytes.fromhex("020000000202"), d.DUID_EPOCH + 5)


def server(**kw) -> ds.Dhcp6Server:
    kw.setdefault("link", ["fd00:1::/64"])
    kw.setdefault("duid", SERVER_A)
    s = ds.Dhcp6Server(2, kw.pop("first", "fd00:1::1000"), kw.pop("last", "fd00:1::10ff"), **kw)
    return s


def ask(s, msg_type, duid=C1, iaid=1, hints=(), now=100.0, sid=None, src=b"", **fields):
    ias = [d.IaNa(iaid, addresses=[d.IaAddress(h) for h in hints])] if iaid is not None else []
    msg = d.Message(msg_type, 0x55, client_id=duid, server_id=sid, ia_na=ias, **fields)
    return s.answer(d.parse(d.build(msg)), now, LINK, src)


def address_of(reply: d.Message) -> str:
    (ia,) = reply.ia_na
    assert ia.status is None, ia.status
    return ia.addresses[0].address


def test_solicit_request_and_an_offer_held_for_its_client():
    s = server(dns=["fd00:1::53"], domains=["lan"], preference=7)
    adv = ask(s, d.SOLICIT)
    assert adv.msg_type == d.ADVERTISE and adv.xid == 0x55 and adv.preference == 7
    assert (adv.client_id, adv.server_id) == (C1, SERVER_A)
    assert adv.dns_servers == ["fd00:1::53"] and adv.domains == ["lan"]
    offered = address_of(adv)
    ia = adv.ia_na[0]
    assert (ia.t1, ia.t2, ia.addresses[0].preferred, ia.addresses[0].valid) == (1800, 2880, 3600, 3600)
    assert s.table.leases[(C1, 1)].state == dl.OFFERED
    assert address_of(ask(s, d.SOLICIT, duid=C2)) != offered  # held for C1
    rep = ask(s, d.REQUEST, hints=[offered], sid=SERVER_A, now=101)
    assert rep.msg_type == d.REPLY and address_of(rep) == offered
    assert s.table.leases[(C1, 1)].state == dl.BOUND and s.table.leases[(C1, 1)].valid_until == 3701
    # a free hint in the pool is honoured, one off the link is NotOnLink
    assert address_of(ask(s, d.REQUEST, duid=C2, iaid=7, hints=["fd00:1::1077"],
                          sid=SERVER_A)) == "fd00:1::1077"
    bad = ask(s, d.REQUEST, duid=C2, iaid=2, hints=["fd00:9::1"], sid=SERVER_A)
    assert bad.ia_na[0].status.code == d.NOT_ON_LINK
    # the same client and IA asking again gets the same address
    assert address_of(ask(s, d.SOLICIT)) == offered


def test_what_the_server_discards():
    s = server()
    assert ask(s, d.SOLICIT, sid=SERVER_A) is None  # a SOLICIT names no server
    assert ask(s, d.REQUEST, sid=SERVER_B) is None  # a REQUEST to another server
    assert ask(s, d.RENEW, sid=None) is None
    assert ask(s, d.REQUEST, duid=None, sid=SERVER_A) is None  # no client id
    assert ask(s, d.INFORMATION_REQUEST, sid=None) is None  # an IA in an info-request
    assert ask(s, d.ADVERTISE) is None and ask(s, d.REPLY) is None
    assert s.stats["discarded"] == 7


def test_renew_rebind_release_decline_and_their_status_codes():
    s = server()
    a = address_of(ask(s, d.REQUEST, sid=SERVER_A))
    rep = ask(s, d.RENEW, hints=[a, "fd00:1::1234"], sid=SERVER_A, now=500)
    assert [(x.address, x.valid) for x in rep.ia_na[0].addresses] == [(a, 3600), ("fd00:1::1234", 0)]
    assert s.table.leases[(C1, 1)].valid_until == 4100
    assert ask(s, d.RENEW, iaid=9, sid=SERVER_A).ia_na[0].status.code == d.NO_BINDING
    # REBIND without a binding: off the link -> lifetimes 0; free on the link -> bound
    rep = ask(s, d.REBIND, iaid=3, hints=["fd00:9::5"])
    assert rep.ia_na[0].addresses == [d.IaAddress("fd00:9::5", 0, 0)]
    assert address_of(ask(s, d.REBIND, iaid=3, hints=["fd00:1::1005"])) == "fd00:1::1005"
    assert ask(s, d.REBIND, duid=C2, hints=["fd00:1::1005"]).ia_na[0].status.code == d.NO_BINDING
    # RELEASE frees; a second one finds no binding
    rep = ask(s, d.RELEASE, hints=[a], sid=SERVER_A)
    assert rep.status.code == d.SUCCESS and rep.ia_na == [] and (C1, 1) not in s.table.leases
    assert ask(s, d.RELEASE, hints=[a], sid=SERVER_A).ia_na[0].status.code == d.NO_BINDING
    # DECLINE sets the address aside: nobody gets it
    b = address_of(ask(s, d.REQUEST, duid=C2, sid=SERVER_A))
    assert ask(s, d.DECLINE, duid=C2, hints=[b], sid=SERVER_A).status.code == d.SUCCESS
    assert s.table.by_address[int(ipaddress.IPv6Address(b))].state == dl.DECLINED
    assert address_of(ask(s, d.REQUEST, duid=C2, sid=SERVER_A)) != b
    assert address_of(ask(s, d.SOLICIT, duid=C2, iaid=5, hints=[b])) != b


def test_confirm_and_information_request():
    s = server(dns=["fd00:1::53"], domains=["lan"])
    assert ask(s, d.CONFIRM, hints=["fd00:1::77"]).status.code == d.SUCCESS
    assert ask(s, d.CONFIRM, hints=["fd00:1::77", "fd00:2::1"]).status.code == d.NOT_ON_LINK
    assert ask(s, d.CONFIRM) is None  # no address: no answer (18.3.3)
    info = ask(s, d.INFORMATION_REQUEST, iaid=None)
    assert info.msg_type == d.REPLY and info.dns_servers == ["fd00:1::53"] and info.domains == ["lan"]
    assert ask(s, d.INFORMATION_REQUEST, iaid=None, duid=None).client_id is None


def test_reservations_by_duid_and_by_mac():
    mac3 = bytes.fromhex("020000000303")
    s = server(hosts={C1: "fd00:1::50", bytes.fromhex("020000000202"): "fd00:1::1010",
                      mac3: "fd00:1::60"})
    assert address_of(ask(s, d.SOLICIT)) == "fd00:1::50"  # outside the pool, on the link
    assert address_of(ask(s, d.REQUEST, duid=C2, sid=SERVER_A)) == "fd00:1::1010"  # LLT's MAC
    # a DUID without a MAC: the MAC from a modified EUI-64 link-local source
    en = b"\x00\x02\x00\x00\x00\x09abc"
    src = ip("fe80::ff:fe00:303")
    assert address_of(ask(s, d.SOLICIT, duid=en, src=src)) == "fd00:1::60"
    # nobody else gets a reserved address, even asking for it
    other = d.duid_ll(bytes.fromhex("020000000404"))
    assert address_of(ask(s, d.REQUEST, duid=other, hints=["fd00:1::1010"], sid=SERVER_A)) != \
        "fd00:1::1010"


def test_too_many_ias_and_rapid_commit():
    s = server(rapid_commit=True)
    msg = d.Message(d.SOLICIT, 1, client_id=C1, ia_na=[d.IaNa(i) for i in range(20)])
    adv = s.answer(msg, 100.0, LINK)
    assert sum(1 for ia in adv.ia_na if ia.status is None) == ds.MAX_IAS
    assert sum(1 for ia in adv.ia_na if ia.status and ia.status.code == d.NO_ADDRS_AVAIL) == 12
    rep = ask(s, d.SOLICIT, duid=C2, rapid_commit=True)
    assert rep.msg_type == d.REPLY and rep.rapid_commit
    assert s.table.leases[(C2, 1)].state == dl.BOUND
    assert ask(server(), d.SOLICIT, rapid_commit=True).msg_type == d.ADVERTISE  # not allowed


def test_a_solicit_flood_is_bounded_and_a_real_client_still_gets_an_address():
    """10,000 SOLICITs from random DUIDs: the table never passes its bound, the pool
    fills with offers, and a real client's SOLICIT and REQUEST still get an address."""
    s = server(max_leases=1000, first="fd00:1::1000", last="fd00:1::11ff")  # 512 addresses
    rnd = random.Random(5)
    bound = ask(s, d.REQUEST, duid=C2, sid=SERVER_A, now=50)
    for i in range(10_000):
        duid = d.duid_ll(rnd.randbytes(6))
        reply = ask(s, d.SOLICIT, duid=duid, now=100 + i * 0.001)
        assert reply.ia_na[0].status is None
        assert len(s.table.leases) + len(s.table.declined) <= 1000
    assert len(s.table.offers) == 511 and len(s.table.by_address) == 512
    assert s.stats["offers_evicted"] > 9000
    a = address_of(ask(s, d.SOLICIT, now=111))
    assert address_of(ask(s, d.REQUEST, hints=[a], sid=SERVER_A, now=111)) == a
    assert s.table.leases[(C2, 1)].state == dl.BOUND and address_of(bound)  # bindings stay
    # a flood of REQUESTs binds the pool, then gets NoAddrsAvail: still bounded
    for _ in range(600):
        ask(s, d.REQUEST, duid=d.duid_ll(rnd.randbytes(6)), sid=SERVER_A, now=112)
    assert len(s.table.leases) <= 512 and s.stats["no_addrs_avail"] >= 88
    assert all(x.state == dl.BOUND for x in s.table.leases.values())


def test_the_table_bound_evicts_offers_first_then_refuses():
    s = server(max_leases=4)
    for i in range(3):
        ask(s, d.REQUEST, duid=d.duid_ll(bytes([2, 0, 0, 0, 0, i])), sid=SERVER_A)
    ask(s, d.SOLICIT)
    assert len(s.table.leases) == 4
    ask(s, d.SOLICIT, duid=C2)  # evicts C1's offer
    assert (C1, 1) not in s.table.leases and (C2, 1) in s.table.leases
    ask(s, d.REQUEST, duid=C2, sid=SERVER_A)
    rep = ask(s, d.SOLICIT)  # four bindings: no room
    assert rep.ia_na[0].status.code == d.NO_ADDRS_AVAIL and s.stats["table_full"] == 1


def test_leases_expire_on_the_stack_time():
    s = server(valid=100, offer=10)
    ask(s, d.REQUEST, sid=SERVER_A, now=0)
    ask(s, d.SOLICIT, duid=C2, now=0)
    assert s.next_deadline() == 10
    s.on_timer(None, 10)
    assert (C2, 1) not in s.table.leases and (C1, 1) in s.table.leases
    s.on_timer(None, 99.9)
    assert (C1, 1) in s.table.leases
    s.on_timer(None, 100)
    assert not s.table.leases and not s.table.by_address and s.stats["expired"] == 1


class Wall:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_the_lease_file_keeps_bindings_across_restarts(sockdir):
    path = os.path.join(sockdir, "dhcpd6.leases")
    wall = Wall(1_000_000.0)
    s = server(leasefile=path, duid=None, wallclock=wall, valid=1000)
    s.start(FakeStack(), 50.0)
    assert s.duid == d.duid_ll(FakeStack.mac)
    a = address_of(ask(s, d.REQUEST, sid=s.duid, now=50))
    ask(s, d.SOLICIT, duid=C2, now=50)  # an offer is not saved
    b = address_of(ask(s, d.REQUEST, duid=d.duid_ll(bytes(6)), sid=s.duid, now=50))
    ask(s, d.DECLINE, duid=d.duid_ll(bytes(6)), hints=[b], sid=s.duid, now=50)
    assert s.next_deadline() == 50 + ds.SAVE_DELAY
    wall.t += ds.SAVE_DELAY  # (the wall clock runs with the stack's)
    s.on_timer(None, 50 + ds.SAVE_DELAY)
    data = json.loads(open(path).read())
    assert data["server_duid"] == d.duid_text(s.duid)
    assert sorted(e["state"] for e in data["leases"]) == ["bound", "declined"]
    assert oct(os.stat(path).st_mode & 0o777) == "0o600"
    s.stop(None, 60)
    # 200 s later, on a new stack clock, with another MAC: the same DUID and leases
    wall.t += 200 - ds.SAVE_DELAY
    s2 = server(leasefile=path, duid=None, wallclock=wall, valid=1000)
    s2.start(FakeStack(mac=bytes.fromhex("02000000ffff")), 5.0)
    assert s2.duid == s.duid
    lease = s2.table.leases[(C1, 1)]
    assert ipaddress.IPv6Address(lease.address) == ipaddress.IPv6Address(a)
    assert lease.valid_until == pytest.approx(5.0 + 1000 - 200, abs=0.01)
    assert s2.table.by_address[int(ipaddress.IPv6Address(b))].state == dl.DECLINED
    assert address_of(ask(s2, d.RENEW, hints=[a], sid=s2.duid, now=6)) == a
    # ended leases are not restored
    wall.t += 10_000
    s3 = server(leasefile=path, duid=None, wallclock=wall)
    s3.start(FakeStack(), 0.0)
    assert not s3.table.leases and not s3.table.declined


def test_a_lease_file_is_never_followed_through_a_link_and_bad_content_is_survived(sockdir):
    target = os.path.join(sockdir, "elsewhere")
    with open(target, "w") as f:
        f.write("{}")
    link = os.path.join(sockdir, "l.leases")
    os.symlink(target, link)
    with pytest.raises(PermissionError, match="symbolic link"):
        server(leasefile=link)
    bad = os.path.join(sockdir, "bad.leases")
    with open(bad, "w") as f:
        f.write("{not json")
    s = server(leasefile=bad)
    s.start(FakeStack(), 0)
    assert "unreadable" in s.leasefile_error and not s.table.leases
    with open(bad, "w") as f:
        json.dump({"leases": [{"address": "nope"}, 5, {"address": "fd00:1::5", "state": "bound",
                               "duid": d.duid_text(C1), "iaid": 1, "valid_until": 1e12,
                               "preferred_until": 1e12}]}, f)
    s = server(leasefile=bad)
    s.start(FakeStack(), 0)
    assert "2 bad entries" in s.leasefile_error and (C1, 1) in s.table.leases
    # writing replaces a link put in its place, without touching the link's target
    os.unlink(bad)
    os.symlink(target, bad)
    ask(s, d.REQUEST, duid=C2, sid=SERVER_A, now=1)
    s.on_timer(None, 2)
    assert not os.path.islink(bad) and open(target).read() == "{}"
    with pytest.raises(PermissionError, match="writable by group and others"):
        os.chmod(sockdir, 0o777)
        try:
            server(leasefile=os.path.join(sockdir, "x.leases"))
        finally:
            os.chmod(sockdir, 0o755)


class FakeStack:
    """What ``Dhcp6Server.start`` looks at: the interface's MAC."""

    mac = bytes.fromhex("020000000a0a")

    def __init__(self, mac: bytes | None = None) -> None:
        iface = type("I", (), {"mac": mac or self.mac})()
        self.interfaces = {2: iface}


def test_config_items_and_their_errors():
    lan = FakeLan("eth,ip=fd00:7::1/64")
    try:
        s = lan.stacks[0]
        s.configure("dhcpd6,dhcpd6.dns=fd00:7::53,dhcpd6.domain=lan,dhcpd6.lease=600,"
                    "dhcpd6.host=02:00:00:00:00:05/::50,dhcpd6.preference=9,dhcpd6.rapid")
        (srv,) = s.find_agents("dhcpd6")
        assert srv.describe()["pool"] == "fd00:7::1000-fd00:7::1fff"
        assert (srv.valid, srv.preferred, srv.t1, srv.t2) == (600, 600, 300, 480)
        assert srv.table.hosts == {bytes.fromhex("020000000005"): int(ipaddress.IPv6Address("fd00:7::50"))}
        assert srv.preference == 9 and srv.rapid_commit and srv.dns == ["fd00:7::53"]
        assert d.ALL_SERVERS in s.interfaces[2].groups6
        s.configure("dhcpd6=fd00:7::a-fd00:7::f")
        (srv2,) = s.find_agents("dhcpd6")
        assert srv2 is not srv and srv2.describe()["pool"] == "fd00:7::a-fd00:7::f"
        for bad, why in [("dhcpd6.lese=5", "unknown option dhcpd6.lese"),
                         ("dhcpd6=::5", "a pool is FIRST-LAST"),
                         ("dhcpd6=::9-::5", "first address is after the last"),
                         ("dhcpd6.lease=x", "not a number"),
                         ("dhcpd6.host=zz/::5", "not a MAC or a DUID"),
                         ("dhcpd6.host=::5", "MAC/ADDRESS"),
                         ("dhcpd6.preference=300", "not 0-255"),
                         ("dhcpd6.lease=100,dhcpd6.preferred=200", "preferred"),
                         ("dhcpd6.domain=a..b", "DOMAIN_LIST"),
                         ("dhcpd6.dns=10.0.0.1", "IPv6"),
                         ("dhcpd6=fd00:7::1-fd00:7::2,dhcpd6=::3-::4", "one pool")]:
            with pytest.raises(ConfigError, match=why):
                s.configure(bad)
        assert s.find_agents("dhcpd6") == [srv2]  # a refused item leaves the server running
        s.configure("-dhcpd6")
        assert not s.find_agents("dhcpd6") and d.ALL_SERVERS not in s.interfaces[2].groups6
    finally:
        lan.close()
    lan = FakeLan("eth")
    try:
        with pytest.raises(ConfigError, match="no global IPv6 prefix"):
            lan.stacks[0].configure("dhcpd6")
    finally:
        lan.close()


# -- client and server together ---------------------------------------------------------------

def test_two_clients_get_different_addresses_over_the_lan_and_a_restart_keeps_them(sockdir):
    """The stacks' own client and server on a fake LAN: the server answers each client at
    its link-local address (neighbor discovery finds its MAC), two clients get two
    addresses, and a server restarted from its lease file renews them."""
    path = os.path.join(sockdir, "d6.leases")
    lan = FakeLan("eth,ip=fd00:1::1/64,dhcpd6=::1000-::10ff,dhcpd6.dns=fd00:1::53,"
                  f"dhcpd6.domain=lan,dhcpd6.lease=300,dhcpd6.leasefile={path}",
                  "eth,dhcp6", "eth,dhcp6")
    try:
        srv_stack, c1, c2 = lan.stacks
        (a1,) = c1.find_agents("dhcp6")
        (a2,) = c2.find_agents("dhcp6")
        run(lan, lambda: a1.state == a2.state == dc.BOUND, 10)
        (x1,), (x2,) = a1.addresses, a2.addresses
        assert x1 != x2 and all(ipaddress.IPv6Address(x) in LINK[0] for x in (x1, x2))
        assert c1.nameservers == ["fd00:1::53"] and a1.domains == ["lan"]
        run(lan, lambda: f"{x1}/128" in c1.addresses(6) and f"{x2}/128" in c2.addresses(6), 3)
        (srv,) = srv_stack.find_agents("dhcpd6")
        assert sorted(x["address"] for x in srv.lease_list()) == sorted([x1, x2])
        # the server restarts; its lease file brings the bindings back, renewals go on
        srv_stack.configure("-dhcpd6")
        srv_stack.configure(f"dhcpd6=::1000-::10ff,dhcpd6.lease=300,dhcpd6.leasefile={path}")
        (srv2,) = srv_stack.find_agents("dhcpd6")
        assert srv2.duid == srv.duid and len(srv2.table.leases) == 2
        run(lan, lambda: a1.stats.get("bound", 0) >= 2 and a2.stats.get("bound", 0) >= 2, 200)
        assert list(a1.addresses) == [x1] and list(a2.addresses) == [x2]
        assert a1.stats["sent_renew"] >= 1 and "sent_rebind" not in a1.stats
        # a client that stops releases its lease at the server
        c1.remove_agent(a1, lan.now)
        lan.collect()
        run(lan, lambda: srv2.stats.get("released"), 1)
        assert [x["address"] for x in srv2.lease_list()] == [x2]
    finally:
        lan.close()


def test_an_offered_address_in_use_is_declined_and_another_taken():
    """Issue 10 acceptance 7: a host already uses the address the server picks for the
    client; the client's DAD fails, it DECLINEs, and it gets the other address."""
    lan = FakeLan("eth,ip=fd00:1::1/64,dhcpd6=::1000-::1001", "eth,mac=02:00:00:00:0c:01",
                  "eth,ip=fd00:1::2/64")
    try:
        srv_stack, client_stack, squatter = lan.stacks
        (srv,) = srv_stack.find_agents("dhcpd6")
        client = dc.Dhcp6Client(2, MAC, rng=random.Random(1))
        first = ipaddress.IPv6Address(srv.table.probe(client.duid, client.iaid))
        squatter.addr_add(2, f"{first}/64", lan.now)
        client_stack.add_agent(client, lan.now)
        run(lan, lambda: client.stats.get("declined"), 10)
        run(lan, lambda: client.state == dc.BOUND and client.stats["bound"] == 2, 20)
        (other,) = client.addresses
        assert ipaddress.IPv6Address(other) != first
        assert srv.table.by_address[int(first)].state == dl.DECLINED and srv.stats["declined"] == 1
        assert [a.state for a in client_stack.interfaces[2].v6
                if a.addr == first.packed] == []  # removed after the failed DAD
    finally:
        lan.close()


def test_serve_is_the_python_api():
    lan = FakeLan("eth,ip=fd00:3::1/64")
    try:
        s = lan.stacks[0]
        srv = ds.serve(s, "eth0", "::100-::1ff", lease=600, dns=["fd00:3::53"], domain=["lan"],
                       host={"02:00:00:00:00:05": "::50"}, rapid=True)
        assert s.find_agents("dhcpd6") == [srv]
        assert srv.describe()["pool"] == "fd00:3::100-fd00:3::1ff" and srv.rapid_commit
        assert srv.table.hosts == {bytes.fromhex("020000000005"): int(ipaddress.IPv6Address("fd00:3::50"))}
        assert (srv.valid, srv.dns, srv.domains) == (600, ["fd00:3::53"], ["lan"])
        again = ds.serve(s)  # the first interface, the default pool: it replaces the first
        assert s.find_agents("dhcpd6") == [again]
        with pytest.raises(ConfigError, match="unknown option dhcpd6.bogus"):
            ds.serve(s, bogus=1)
    finally:
        lan.close()


# -- bad input: whatever a peer sends, the agents neither raise nor grow -----------------------


@given(st.lists(messages(), min_size=1, max_size=10), st.sampled_from([None, C1, C2]))
@settings(max_examples=120, deadline=None)
def test_the_server_answers_any_message_without_raising_or_growing(msgs, client_id):
    s = server(max_leases=16, rapid_commit=True)
    for i, m in enumerate(msgs):
        if client_id is not None:
            m.client_id = client_id
        if i % 2:
            m.server_id = SERVER_A  # (so REQUESTs and RENEWs get past the first check)
        reply = s.answer(d.parse(d.build(m)), 100.0 + i, LINK, ip("fe80::ff:fe00:303"))
        if reply is not None:
            d.parse(d.build(reply))  # what it sends is well formed
        assert len(s.table.leases) + len(s.table.declined) <= 16
        assert len(s.table.by_address) == len(s.table.leases) + len(s.table.declined)


@given(st.lists(messages(), min_size=1, max_size=8))
@settings(max_examples=60, deadline=None)
def test_the_client_takes_any_answer_to_its_transaction_without_raising(msgs):
    lan = FakeLan("eth,mac=02:00:00:00:0c:01")
    try:
        stack = lan.stacks[0]
        client = stack.add_agent(dc.Dhcp6Client(2, MAC, rng=random.Random(1)), lan.now)
        run(lan, lambda: client.exchange is not None and client.exchange.count, 5)
        iface = stack.interfaces[2]
        for m in msgs:
            ex = client.exchange
            if ex is not None:
                m.xid, m.client_id = ex.xid, client.duid
            for ia in m.ia_na[:1]:
                ia.iaid = client.iaid
            client.on_udp(stack, iface, 6, ip("fe80::1"), 547, ip("fe80::2"), 546,
                          d.build(m), lan.now)
            lan.step()
        assert client.state in (dc.SOLICITING, dc.REQUESTING, dc.BOUND, dc.RENEWING,
                                dc.REBINDING, dc.DECLINING)
    finally:
        lan.close()
