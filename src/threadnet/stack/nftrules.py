"""The packet filter's rulesets as data: tables, chains, rules, matches, verdicts and
named sets, with the vocabulary they use (hooks, protocols, ICMP types, reject codes,
selectors) and ``Ruleset.text``, which prints a ruleset back as ``nft list ruleset``
does. ``stack/nftables.py`` parses text into these; ``stack/nftcompile.py`` compiles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from threadnet.stack.nat import NatSpec

HOOKS = ("prerouting", "input", "forward", "output", "postrouting")
#: where a nat chain may hook, and which of its statements each hook takes
NAT_HOOKS = {"prerouting": ("dnat",), "output": ("dnat",),
             "postrouting": ("snat", "masquerade"), "input": ("snat",)}
FAMILIES = ("inet", "ip", "ip6")
#: nftables' standard priority names (for the filter's hooks)
PRIORITY_NAMES = {"raw": -300, "mangle": -150, "dstnat": -100, "filter": 0, "security": 50,
                  "srcnat": 100}
#: how deep ``jump`` may nest (nftables' jump stack holds 16)
MAX_JUMP_DEPTH = 16

L4_PROTOCOLS = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "ah": 51,
                "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132, "udplite": 136, "dccp": 33}
L4_NAMES = {1: "icmp", 2: "igmp", 6: "tcp", 17: "udp", 47: "gre", 50: "esp", 51: "ah",
            58: "ipv6-icmp", 132: "sctp", 136: "udplite", 33: "dccp"}
ICMP_TYPES = {"echo-reply": 0, "destination-unreachable": 3, "source-quench": 4,
              "redirect": 5, "echo-request": 8, "router-advertisement": 9,
              "router-solicitation": 10, "time-exceeded": 11, "parameter-problem": 12,
              "timestamp-request": 13, "timestamp-reply": 14, "info-request": 15,
              "info-reply": 16, "address-mask-request": 17, "address-mask-reply": 18}
ICMPV6_TYPES = {"destination-unreachable": 1, "packet-too-big": 2, "time-exceeded": 3,
                "parameter-problem": 4, "echo-request": 128, "echo-reply": 129,
                "mld-listener-query": 130, "mld-listener-report": 131,
                "mld-listener-done": 132, "mld-listener-reduction": 132,
                "nd-router-solicit": 133, "nd-router-advert": 134,
                "nd-neighbor-solicit": 135, "nd-neighbor-advert": 136, "nd-redirect": 137,
                "router-renumbering": 138, "ind-neighbor-solicit": 141,
                "ind-neighbor-advert": 142, "mld2-listener-report": 143}
#: ``reject with icmp type X`` (destination unreachable codes, RFC 792/1812)
REJECT_ICMP = {"net-unreachable": 0, "host-unreachable": 1, "prot-unreachable": 2,
               "port-unreachable": 3, "net-prohibited": 9, "host-prohibited": 10,
               "admin-prohibited": 13}
#: ``reject with icmpv6 type X`` (RFC 4443 3.1)
REJECT_ICMPV6 = {"no-route": 0, "admin-prohibited": 1, "addr-unreachable": 3,
                 "port-unreachable": 4, "policy-fail": 5, "reject-route": 6}
#: ``reject with icmpx type X``: one word for both (IPv4 code, IPv6 code)
REJECT_ICMPX = {"port-unreachable": (3, 4), "admin-prohibited": (13, 1),
                "no-route": (0, 0), "host-unreachable": (1, 3)}
LOG_LEVELS = ("emerg", "alert", "crit", "err", "warn", "notice", "info", "debug")
MAX_LOG_PREFIX = 127  # as nftables


class RulesetError(ValueError):
    """A ruleset that cannot be parsed or used: the message names where and why."""


# -- the ruleset's parts ------------------------------------------------------------------------
@dataclass(slots=True)
class Element:
    """One element of a value: a closed interval of numbers (an address as an int, a
    port, a type) or an interface name (``name``, ``wildcard``: a prefix ending in *);
    ``text`` is how it prints."""

    lo: int = 0
    hi: int = 0
    text: str = ""
    name: str | None = None
    wildcard: bool = False


@dataclass(slots=True)
class Match:
    """``KEY [!=] VALUE``: ``key`` one of the selectors (``MATCH_KEYS``), ``elements`` the
    value (one, or the members of a set), ``setref`` a named set's name."""

    key: str
    negate: bool
    elements: list[Element]
    braces: bool = False
    setref: str | None = None
    line: int = 0
    col: int = 0

    def text(self) -> str:
        op = "!= " if self.negate else ""
        if self.setref is not None:
            value = f"@{self.setref}"
        elif self.key == "ct state" and not self.braces:
            value = ",".join(e.text for e in self.elements)
        elif self.braces or len(self.elements) > 1:
            value = "{ " + ", ".join(e.text for e in self.elements) + " }"
        else:
            value = self.elements[0].text
        return f"{self.key} {op}{value}"


@dataclass(slots=True)
class Counter:
    packets: int = 0
    bytes: int = 0

    def text(self) -> str:
        return f"counter packets {self.packets} bytes {self.bytes}"


@dataclass(slots=True)
class Log:
    prefix: str | None = None
    level: str = "warn"

    def text(self) -> str:
        out = "log"
        if self.prefix is not None:
            out += ' prefix "' + self.prefix + '"'
        if self.level != "warn":
            out += f" level {self.level}"
        return out


@dataclass(slots=True)
class Verdict:
    """``accept``, ``drop``, ``continue``, ``return``, ``jump C``, ``goto C``,
    ``reject`` with ``reject_with`` = (kind, IPv4 code, IPv6 code): kind "default"
    (TCP: a RST; others: port unreachable), "tcp reset", "icmp", "icmpv6", "icmpx"; or
    a nat statement (``masquerade``, ``snat``, ``dnat``: ``nat`` says to what)."""

    kind: str
    target: str | None = None
    reject_with: tuple[str, int, int] = ("default", 3, 4)
    with_text: str = ""
    nat: NatSpec | None = None

    def text(self) -> str:
        if self.nat is not None:
            return self.nat.text
        if self.kind in ("jump", "goto"):
            return f"{self.kind} {self.target}"
        if self.kind == "reject" and self.with_text:
            return f"reject with {self.with_text}"
        return self.kind


Statement = Match | Counter | Log


@dataclass(slots=True)
class Rule:
    """Matches and statements in order, then an optional verdict."""

    items: list[Statement]
    verdict: Verdict | None
    comment: str | None = None
    line: int = 0
    col: int = 0

    def text(self) -> str:
        words = [item.text() for item in self.items]
        if self.verdict is not None:
            words.append(self.verdict.text())
        if self.comment is not None:
            words.append(f'comment "{self.comment}"')
        return " ".join(words)


@dataclass(slots=True)
class Chain:
    name: str
    hook: str | None = None  # None: a regular chain (a jump or goto target)
    type: str = "filter"  # or "nat"
    priority: int = 0
    policy: str = "accept"
    rules: list[Rule] = field(default_factory=list)
    line: int = 0

    def text(self, indent: str = "\t") -> list[str]:
        lines = [f"{indent}chain {self.name} {{"]
        if self.hook is not None:
            lines.append(f"{indent}\ttype {self.type} hook {self.hook} priority "
                         f"{priority_text(self.priority)}; policy {self.policy};")
        lines += [f"{indent}\t{r.text()}" for r in self.rules]
        lines.append(f"{indent}}}")
        return lines


@dataclass(slots=True)
class NamedSet:
    name: str
    type: str  # ipv4_addr, ipv6_addr, inet_service, inet_proto, ifname
    elements: list[Element] = field(default_factory=list)
    interval: bool = False

    def text(self, indent: str = "\t") -> list[str]:
        lines = [f"{indent}set {self.name} {{", f"{indent}\ttype {self.type}"]
        if self.interval:
            lines.append(f"{indent}\tflags interval")
        if self.elements:
            lines.append(f"{indent}\telements = {{ "
                         + ", ".join(e.text for e in self.elements) + " }")
        lines.append(f"{indent}}}")
        return lines


@dataclass(slots=True)
class Table:
    family: str
    name: str
    sets: dict[str, NamedSet] = field(default_factory=dict)
    chains: dict[str, Chain] = field(default_factory=dict)

    def text(self) -> list[str]:
        lines = [f"table {self.family} {self.name} {{"]
        parts = [s.text() for s in self.sets.values()] + [c.text() for c in self.chains.values()]
        for i, part in enumerate(parts):
            if i:
                lines.append("")
            lines += part
        lines.append("}")
        return lines


@dataclass(slots=True)
class Ruleset:
    tables: list[Table] = field(default_factory=list)

    def text(self) -> str:
        """The ruleset as ``nft list ruleset`` prints it (counters with their values)."""
        return "".join("\n".join(t.text()) + "\n" for t in self.tables)

    def uses_conntrack(self) -> bool:
        """Whether a rule needs connection tracking (a ``ct state`` match, or a nat
        chain)."""
        return self.uses_nat() or any(isinstance(item, Match) and item.key == "ct state"
                   for t in self.tables for c in t.chains.values() for r in c.rules
                   for item in r.items)


    def uses_nat(self) -> bool:
        """Whether the ruleset has a nat chain."""
        return any(c.type == "nat" for t in self.tables for c in t.chains.values())


def priority_text(value: int) -> str:
    for name, base in PRIORITY_NAMES.items():
        if value == base:
            return name
    return str(value)


# -- what each selector takes -----------------------------------------------------------------
#: selector -> value type: addr4, addr6, port, l4proto, icmp, icmpv6, ctstate, ifname,
#: nfproto
MATCH_KEYS = {
    "iifname": "ifname", "oifname": "ifname", "iif": "ifname", "oif": "ifname",
    "meta iifname": "ifname", "meta oifname": "ifname",
    "ip saddr": "addr4", "ip daddr": "addr4", "ip6 saddr": "addr6", "ip6 daddr": "addr6",
    "ip protocol": "l4proto", "ip6 nexthdr": "l4proto", "meta l4proto": "l4proto",
    "meta nfproto": "nfproto",
    "tcp dport": "port", "tcp sport": "port", "udp dport": "port", "udp sport": "port",
    "th dport": "port", "th sport": "port",
    "icmp type": "icmp", "icmpv6 type": "icmpv6", "ct state": "ctstate",
}
#: a named set's type -> the value type it holds
SET_TYPES = {"ipv4_addr": "addr4", "ipv6_addr": "addr6", "inet_service": "port",
             "inet_proto": "l4proto", "ifname": "ifname"}
_SELECTOR_HEADS = {"ip": ("saddr", "daddr", "protocol"), "ip6": ("saddr", "daddr", "nexthdr"),
                   "tcp": ("dport", "sport"), "udp": ("dport", "sport"),
                   "th": ("dport", "sport"), "icmp": ("type",), "icmpv6": ("type",),
                   "ct": ("state",), "meta": ("l4proto", "nfproto", "iifname", "oifname")}
