"""The filter's language (stack/nftables.py) and compiler (stack/nftcompile.py), without a
stack: what parses, how errors name their line and column, how rulesets print back (as
``nft list ruleset``), and what each compiled match, statement and verdict does to
packets described by their header fields."""

from __future__ import annotations

import ipaddress

import pytest

from threadnet.stack import conntrack as ct
from threadnet.stack.nftables import RulesetError, parse
from threadnet.stack.nftcompile import ACCEPT, DROP, REJECT_BASE, compile_ruleset

LOGS: list[tuple] = []


def build(text: str):
    return compile_ruleset(parse(text, "t.nft"), lambda log, *args: LOGS.append((log, args)))


def judge(c, hook: str = "input", *, fam: int = 4, iif: str = "eth0", oif: str = "",
          l4: int = 6, src: str | None = None, dst: str | None = None, sp: int = 40000,
          dp: int = 80, it: int = -1, ic: int = -1, fl: int = 2, state: int = ct.NEW,
          ln: int = 60) -> int:
    """The verdict of ``hook``'s base chains for a packet with these fields, as the
    filter runs them."""
    src = src or ("10.0.0.1" if fam == 4 else "fc00::1")
    dst = dst or ("10.0.0.2" if fam == 4 else "fc00::2")
    s, d = ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed
    for bc in c.hooks.get(hook, ()):
        if fam not in bc.families:
            continue
        v = bc.fn(fam, iif, oif, l4, s, d, sp, dp, it, ic, fl, state, ln)
        if v is None:
            v = bc.policy
        if v != ACCEPT:
            return v
    return ACCEPT


def chain(rules: str, policy: str = "drop", family: str = "inet", hook: str = "input") -> str:
    return (f"table {family} t {{\n chain c {{\n  type filter hook {hook} priority 0; "
            f"policy {policy};\n{rules}\n }}\n}}\n")


# -- matches --------------------------------------------------------------------------------------
def test_addresses_prefixes_ranges_and_sets():
    c = build(chain("""
        ip saddr 192.168.1.7 accept
        ip saddr 10.0.0.0/8 ip daddr != 10.9.9.9 accept
        ip saddr { 172.16.0.0/12, 198.51.100.1, 203.0.113.10-203.0.113.20 } accept
        ip6 saddr fc00::/7 accept
        ip6 daddr { 2001:db8::1, 2001:db8:1::/48 } accept"""))
    assert judge(c, src="192.168.1.7") == ACCEPT
    assert judge(c, src="192.168.1.8") == DROP
    assert judge(c, src="10.200.0.1") == ACCEPT
    assert judge(c, src="10.200.0.1", dst="10.9.9.9") == DROP
    for a in ("172.31.255.255", "198.51.100.1", "203.0.113.15"):
        assert judge(c, src=a) == ACCEPT, a
    for a in ("172.32.0.0", "198.51.100.2", "203.0.113.21"):
        assert judge(c, src=a) == DROP, a
    assert judge(c, fam=6, src="fd12::1") == ACCEPT
    assert judge(c, fam=6, src="2001:db8::5", dst="2001:db8::1") == ACCEPT
    assert judge(c, fam=6, src="2001:db8::5", dst="2001:db8:1:ffff::1") == ACCEPT
    assert judge(c, fam=6, src="2001:db8::5", dst="2001:db8:2::1") == DROP
    # an IPv4 match never matches IPv6 packets, even negated
    c = build(chain("ip saddr != 10.0.0.1 accept"))
    assert judge(c, fam=6) == DROP and judge(c, src="10.0.0.3") == ACCEPT


def test_ports_protocols_and_icmp_types():
    c = build(chain("""
        tcp dport { 22, 8000-8080, } accept
        udp dport 53 accept
        tcp sport 1-1023 tcp dport 9 accept
        th dport 7 accept
        icmp type echo-request accept
        icmpv6 type { echo-request, nd-neighbor-solicit } accept
        meta l4proto gre accept
        ip protocol 50 accept"""))
    assert judge(c, dp=22) == ACCEPT and judge(c, dp=8050) == ACCEPT
    assert judge(c, dp=23) == DROP and judge(c, l4=17, dp=22) == DROP
    assert judge(c, l4=17, dp=53) == ACCEPT
    assert judge(c, sp=80, dp=9) == ACCEPT and judge(c, sp=8080, dp=9) == DROP
    assert judge(c, l4=17, dp=7) == ACCEPT and judge(c, dp=7) == ACCEPT
    assert judge(c, l4=1, sp=-1, dp=-1, it=8, ic=0) == ACCEPT
    assert judge(c, l4=1, sp=-1, dp=-1, it=0, ic=0) == DROP
    assert judge(c, fam=6, l4=58, it=135) == ACCEPT and judge(c, fam=6, l4=58, it=1) == DROP
    assert judge(c, l4=47) == ACCEPT and judge(c, l4=50) == ACCEPT
    assert judge(c, fam=6, l4=50) == DROP  # ip protocol: IPv4 only


def test_negated_port_never_matches_a_packet_without_ports():
    c = build(chain("tcp dport != 22 accept\n icmp type != echo-request accept"))
    assert judge(c, dp=23) == ACCEPT and judge(c, dp=22) == DROP
    assert judge(c, dp=-1, sp=-1) == DROP  # a truncated header: no port to compare
    assert judge(c, l4=1, it=0) == ACCEPT and judge(c, l4=1, it=8) == DROP
    assert judge(c, l4=1, it=-1) == DROP


def test_interfaces_with_wildcards_and_sets():
    c = build(chain("""
        iifname "lo" accept
        iifname { "veth*", eth1 } accept
        oifname "eth9" accept""", hook="forward"))
    assert judge(c, "forward", iif="lo") == ACCEPT
    assert judge(c, "forward", iif="veth12") == ACCEPT and judge(c, "forward", iif="eth1")
    assert judge(c, "forward", iif="eth2") == DROP
    assert judge(c, "forward", iif="eth2", oif="eth9") == ACCEPT


def test_ct_state_and_nfproto():
    c = build(chain("""
        ct state invalid drop
        ct state established,related accept
        ct state { new } meta nfproto ipv6 accept"""))
    assert judge(c, state=ct.ESTABLISHED) == ACCEPT and judge(c, state=ct.RELATED) == ACCEPT
    assert judge(c, state=ct.NEW) == DROP and judge(c, fam=6, state=ct.NEW) == ACCEPT
    assert judge(c, fam=6, state=ct.INVALID) == DROP
    assert c.conntrack and not build(chain("accept")).conntrack


def test_named_sets_and_defines():
    c = build("""
define admin = { 10.1.1.1, 10.1.1.2 }
define web = 80
table ip t {
    set ports { type inet_service; flags interval; elements = { 22, $web, 8000-8999 } }
    set nets { type ipv4_addr; flags interval; elements = { 192.0.2.0/24 } }
    chain c {
        type filter hook input priority 0; policy drop;
        ip saddr $admin accept
        ip saddr @nets tcp dport @ports accept
    }
}""")
    assert judge(c, src="10.1.1.2", dp=1) == ACCEPT
    assert judge(c, src="192.0.2.9", dp=8500) == ACCEPT
    assert judge(c, src="192.0.2.9", dp=9000) == DROP
    assert judge(c, fam=6) == ACCEPT  # an ip table sees IPv4 only: IPv6 passes it by


# -- statements and verdicts -------------------------------------------------------------------
def test_counters_count_where_they_stand():
    c = build(chain("""
        counter tcp dport 22 counter accept
        counter packets 5 bytes 500"""))
    judge(c, dp=22, ln=100)
    judge(c, dp=23, ln=40)
    text = c.ruleset.text()
    assert "counter packets 2 bytes 140 tcp dport 22 counter packets 1 bytes 100 accept" \
        in text
    assert "counter packets 6 bytes 540\n" in text  # it started at 5 / 500


def test_log_statement_calls_the_logger_and_goes_on():
    LOGS.clear()
    c = build(chain('tcp dport 23 log prefix "telnet: " level info\n tcp dport 23 accept'))
    assert judge(c, dp=23) == ACCEPT
    (log, args), = LOGS
    assert log.prefix == "telnet: " and log.level == "info" and args[7] == 23


def test_reject_forms_and_their_implicit_protocols():
    c = build(chain("""
        tcp dport 1 reject
        tcp dport 2 reject with tcp reset
        reject with tcp reset
        udp dport 3 reject with icmp type host-prohibited
        udp dport 4 reject with icmpv6 type admin-prohibited
        udp dport 5 reject with icmpx type admin-prohibited"""))
    v = judge(c, dp=1)
    assert c.rejects[v - REJECT_BASE] == ("default", 3, 4)
    assert c.rejects[judge(c, dp=2) - REJECT_BASE] == ("tcp reset", 0, 0)
    assert c.rejects[judge(c, dp=99) - REJECT_BASE] == ("tcp reset", 0, 0)
    assert judge(c, l4=17, dp=99) == DROP  # "reject with tcp reset" is for TCP only
    assert c.rejects[judge(c, l4=17, dp=3) - REJECT_BASE] == ("icmp", 10, 0)
    assert judge(c, fam=6, l4=17, dp=3) == DROP  # icmp: IPv4 only
    assert c.rejects[judge(c, fam=6, l4=17, dp=4) - REJECT_BASE] == ("icmpv6", 0, 1)
    assert c.rejects[judge(c, l4=17, dp=5) - REJECT_BASE] == ("icmpx", 13, 1)


def test_jump_goto_return_continue():
    c = build("""table inet t {
        chain web { tcp dport 80 accept; return; }
        chain ssh { tcp dport 22 accept }
        chain deny { drop }
        chain c {
            type filter hook input priority 0; policy accept;
            tcp dport 1 continue
            jump web
            tcp dport 8 goto ssh
            tcp dport 9 goto deny
            tcp dport { 80, 22, 8 } drop
        }
    }""")
    assert judge(c, dp=80) == ACCEPT
    assert judge(c, dp=8) == ACCEPT  # goto ssh: no match, back to c's caller: the policy
    assert judge(c, dp=9) == DROP
    assert judge(c, dp=22) == DROP  # web returned, then the drop rule


def test_chains_of_a_hook_run_by_priority_and_drop_is_final():
    c = build("""
table inet a { chain late { type filter hook input priority 10; policy accept; tcp dport 1 drop } }
table ip b { chain early { type filter hook input priority filter - 5; policy accept; tcp dport 2 drop; accept } }
table inet d { chain first { type filter hook input priority raw; policy drop; tcp dport 3 accept; tcp dport {1, 2} accept } }
""")
    assert [bc.chain.name for bc in c.hooks["input"]] == ["first", "early", "late"]
    assert judge(c, dp=1) == DROP and judge(c, dp=2) == DROP and judge(c, dp=3) == ACCEPT
    assert judge(c, dp=4) == DROP


def test_listing_round_trips():
    text = """table inet filter {
	set admins {
		type ipv4_addr
		flags interval
		elements = { 10.0.0.0/24, 192.0.2.1 }
	}

	chain input {
		type filter hook input priority filter; policy drop;
		ct state established,related accept
		ct state invalid counter packets 0 bytes 0 drop
		iifname "lo" accept
		ip saddr @admins tcp dport 22 accept
		tcp dport { 80, 443, 8000-8999 } accept comment "web"
		ip6 saddr != fc00::/7 icmpv6 type echo-request drop
		meta l4proto { icmp, ipv6-icmp } accept
		udp dport 53 log prefix "dns: " level info reject with icmpx type admin-prohibited
		jump extra
	}

	chain extra {
		tcp dport 23 reject with tcp reset
		return
	}

	chain out {
		type filter hook output priority 10; policy accept;
	}
}
"""
    rs = parse(text)
    assert rs.text() == text
    assert parse(rs.text()).text() == text


# -- errors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, where, message", [
    ("table inet t {\n chain c {\n  tcp dport 22 acept\n }\n}", "3:16",
     "unknown statement 'acept' (did you mean 'accept'?)"),
    ("table inet t {\n chain c {\n  tcp dprot 22 accept\n }\n}", "3:7",
     "tcp dprot: not supported"),
    ("table inet t { chain c { tcp dport 70000 accept } }", "1:36", "out of range"),
    ("table inet t { chain c { ip saddr 10.0.0.256 accept } }", "1:35",
     "not an IPv4 address"),
    ("table inet t { chain c { ip6 saddr 10.0.0.1 accept } }", "1:36",
     "not an IPv6 address"),
    ("table inet t { chain c { ct state fresh accept } }", "1:35", "ct state 'fresh'"),
    ("table inet t { chain c { accept drop } }", "1:33", "after the verdict"),
    ("table bridge t { }", "1:7", "family 'bridge' is not supported"),
    ("table inet t { chain c { type route hook output priority 0; } }", "1:31",
     "chain type 'route' is not supported"),
    ("table ip t { chain c { type nat hook forward priority 0; } }", "1:38",
     "a nat chain cannot hook forward"),
    ("table ip t { chain c { type filter hook postrouting priority 0; masquerade } }",
     "1:65", "masquerade belongs in a nat chain"),
    ("table ip t { chain c { type nat hook prerouting priority 0; masquerade } }", "1:61",
     "masquerade cannot be used at prerouting"),
    ("table ip t { chain c { type nat hook prerouting priority 0; dnat to fc00::1 } }",
     "1:69", "is not an IPv4 address"),
    ("table ip t { chain c { type nat hook postrouting priority 0; snat } }", "1:67",
     "snat needs 'to'"),
    ("table inet t { chain c { type filter hook ingress priority 0; } }", "1:43",
     "hook 'ingress' is not supported"),
    ("table inet t { chain c { policy drop; } }", "1:26", "needs a base chain"),
    ("table inet t { chain c { jump nowhere } }", "1:26", "no chain nowhere"),
    ("table inet t { chain c { jump c } }", "1:26", "a jump loop: c -> c"),
    ("table inet t { chain c { ip saddr @nope accept } }", "1:26", "no set nope"),
    ("table inet t {\n chain c {\n  tcp dport 22 accept\n", "4:1", "not closed"),
    ("table inet t { chain c { tcp dport { 22 80 } accept } }", "1:41",
     "expected ',' or '}' in a set"),
    ("table inet t { chain c { log prefix nope } }", "1:37", "quoted string"),
    ("table ip t { chain c { ip6 saddr ::1 accept } }", "1:24", "never matches"),
    ("table inet t { chain c { tcp dport $port accept } }", "1:36", "unknown variable"),
    ("table inet t { chain c { reject with icmp type bogus } }", "1:48",
     "reject with icmp type 'bogus'"),
    ("table inet t { } table inet t { }", "1:18", "defined twice"),
    ("chain c { }", "1:1", "expected 'table'"),
    ("table inet t { chain c { tcp dport 22 accept } } %", "1:50", "unexpected character"),
])
def test_errors_name_the_line_and_column(text: str, where: str, message: str):
    with pytest.raises(RulesetError) as info:
        parse(text, "rules.nft")
    first = str(info.value).splitlines()[0]
    assert first.startswith(f"rules.nft:{where}: "), first
    assert message in first, first
    assert "^" in str(info.value).splitlines()[2]  # a caret under the place


def test_jumps_nest_at_most_16_deep():
    chains = "\n".join(f"chain c{i} {{ jump c{i + 1} }}" for i in range(17)) + "\nchain c17 { }"
    with pytest.raises(RulesetError, match="deeper than 16"):
        parse(f"table inet t {{\n{chains}\n}}")
    chains = "\n".join(f"chain c{i} {{ jump c{i + 1} }}" for i in range(15)) + "\nchain c15 { }"
    parse(f"table inet t {{\n{chains}\n}}")


def test_compiled_code_holds_no_text_from_the_rules():
    c = build(chain('iifname "x\'; import os #" accept\n log prefix "\\"); os.system(1)" drop'
                    .replace('\\"', "'")))
    assert "import os" not in c.source and "os.system" not in c.source
    assert judge(c, iif="x'; import os #") == ACCEPT
