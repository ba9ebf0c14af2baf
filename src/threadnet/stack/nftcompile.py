"""The packet filter's compiler: a parsed ``Ruleset`` (``stack/nftables.py``) becomes one
Python function per chain, so a packet is judged by plain comparisons of the header
fields the filter read once (``conntrack.packet_fields``), never by walking rule text.

Every chain function takes the same arguments::

    chain(fam, iif, oif, l4, src, dst, sp, dp, it, ic, fl, ct, ln)

the IP version (4 or 6), the names of the interfaces in and out ("" when there is
none), the transport protocol, the addresses (bytes), the ports (-1 without), the
ICMP type and code (-1 without), the TCP flags, the ct state bits and the packet's
length. It returns ``ACCEPT`` (1), ``DROP`` (0), a reject (2 + an index into
``Compiled.rejects``) or None (the end of the chain: the base chain's policy, or back
to the rule after the ``jump``).

The source is generated from the parsed rules only: every value a rule holds (an
address, a name, a set) reaches the function as a constant bound by name in its
namespace, never as text in the code.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from threadnet.stack.nftrules import (
    HOOKS,
    Chain,
    Counter,
    Element,
    Log,
    Match,
    Rule,
    Ruleset,
    Table,
)

ACCEPT = 1
DROP = 0
REJECT_BASE = 2
#: a nat statement's answer: NAT_BASE + an index into ``Compiled.nats``
NAT_BASE = 1 << 16
ARGS = "fam, iif, oif, l4, src, dst, sp, dp, it, ic, fl, ct, ln"
#: an inline run of interval tests longer than this becomes one helper call
_INLINE_RANGES = 4


@dataclass(slots=True)
class BaseChain:
    """A base chain, ready to run: ``families`` the IP versions its table sees."""

    table: Table
    chain: Chain
    fn: Callable[..., int | None]
    policy: int
    families: frozenset[int]
    nat: bool = False


@dataclass(slots=True)
class Compiled:
    """A whole ruleset compiled: the base chains of each hook in the order they run
    (priority, then the order of the text), the reject answers, and whether any rule
    needs connection tracking."""

    ruleset: Ruleset
    hooks: dict[str, tuple[BaseChain, ...]] = field(default_factory=dict)
    rejects: list[tuple[str, int, int]] = field(default_factory=list)
    nats: list[Any] = field(default_factory=list)
    conntrack: bool = False
    source: str = ""


def _in_prefixes(a: int, groups: tuple[tuple[int, frozenset[int]], ...]) -> bool:
    for shift, nets in groups:
        if a >> shift in nets:
            return True
    return False


def _in_ranges(a: int, ranges: tuple[tuple[int, int], ...]) -> bool:
    for lo, hi in ranges:
        if lo <= a <= hi:
            return True
    return False


class _Gen:
    """Generates the source of one ruleset's chain functions."""

    def __init__(self, log: Callable[..., None]) -> None:
        self.ns: dict[str, Any] = {"_int": int.from_bytes, "_pfx": _in_prefixes,
                                   "_rng": _in_ranges, "LOG": log}
        self.lines: list[str] = []
        self.rejects: list[tuple[str, int, int]] = []
        self.nats: list[Any] = []
        self.names: dict[int, str] = {}

    def const(self, value: Any) -> str:
        name = f"K{len(self.ns)}"
        self.ns[name] = value
        return name

    def fn_name(self, table_index: int, chain: Chain) -> str:
        key = id(chain)
        if key not in self.names:
            self.names[key] = f"chain_{table_index}_{len(self.names)}"
        return self.names[key]

    # -- one chain
    def chain(self, ti: int, table: Table, chain: Chain) -> str:
        name = self.fn_name(ti, chain)
        body: list[str] = []
        need_int = set()
        for rule in chain.rules:
            for item in rule.items:
                if isinstance(item, Match) and item.key in ("ip saddr", "ip6 saddr",
                                                            "ip daddr", "ip6 daddr"):
                    if any(e.lo != e.hi for e in item.elements):
                        need_int.add("s" if "saddr" in item.key else "d")
        self.lines.append(f"def {name}({ARGS}):")
        if "s" in need_int:
            body.append("si = _int(src, 'big')")
        if "d" in need_int:
            body.append("di = _int(dst, 'big')")
        for rule in chain.rules:
            body += self.rule(ti, table, rule)
        body.append("return None")
        self.lines += ["    " + line for line in body]
        self.lines.append("")
        return name

    def rule(self, ti: int, table: Table, rule: Rule) -> list[str]:
        out: list[str] = []
        depth = 0
        conds: list[str] = []
        v = rule.verdict
        if v is not None and v.kind == "reject":
            kind = v.reject_with[0]
            # nftables' implicit dependencies of these reject forms
            if kind == "tcp reset":
                conds.append("l4 == 6")
            elif kind == "icmp" and table.family == "inet":
                conds.append("fam == 4")
            elif kind == "icmpv6" and table.family == "inet":
                conds.append("fam == 6")
        elif v is not None and v.nat is not None and v.nat.family and table.family == "inet":
            conds.append(f"fam == {v.nat.family}")  # (an address of one family)

        def open_block() -> None:
            nonlocal depth, conds
            if conds:
                out.append("    " * depth + "if " + " and ".join(conds) + ":")
                depth += 1
                conds = []

        for item in rule.items:
            if isinstance(item, Match):
                conds.append(self.match(item))
            elif isinstance(item, Counter):
                open_block()
                c = self.const(item)
                out.append("    " * depth + f"{c}.packets += 1; {c}.bytes += ln")
            elif isinstance(item, Log):
                open_block()
                out.append("    " * depth + f"LOG({self.const(item)}, {ARGS})")
        open_block()
        pad = "    " * depth
        if v is None or v.kind == "continue":
            out.append(pad + "pass")
        elif v.kind == "accept":
            out.append(pad + "return 1")
        elif v.kind == "drop":
            out.append(pad + "return 0")
        elif v.kind == "return":
            out.append(pad + "return None")
        elif v.kind == "reject":
            self.rejects.append(v.reject_with)
            out.append(pad + f"return {REJECT_BASE + len(self.rejects) - 1}")
        elif v.nat is not None:
            self.nats.append(v.nat)
            out.append(pad + f"return {NAT_BASE + len(self.nats) - 1}")
        else:
            target = self.fn_name(ti, table.chains[v.target])  # type: ignore[index]
            if v.kind == "goto":
                out.append(pad + f"return {target}({ARGS})")
            else:
                out.append(pad + f"v = {target}({ARGS})")
                out.append(pad + "if v is not None:")
                out.append(pad + "    return v")
        return out

    # -- one match: a guard (the protocol it implies) and a test on one variable
    def match(self, m: Match) -> str:
        key = m.key
        guard = ""
        if key in ("iifname", "iif", "meta iifname"):
            test = self.names_test("iif", m.elements)
        elif key in ("oifname", "oif", "meta oifname"):
            test = self.names_test("oif", m.elements)
        elif key in ("ip saddr", "ip daddr", "ip6 saddr", "ip6 daddr"):
            guard = "fam == 4" if key.startswith("ip ") else "fam == 6"
            src = "saddr" in key
            test = self.addr_test("src" if src else "dst", "si" if src else "di",
                                  4 if key.startswith("ip ") else 16, m.elements)
        elif key in ("ip protocol", "ip6 nexthdr", "meta l4proto"):
            if key == "ip protocol":
                guard = "fam == 4"
            elif key == "ip6 nexthdr":
                guard = "fam == 6"
            test = self.int_test("l4", m.elements)
        elif key == "meta nfproto":
            test = self.int_test("fam", m.elements)
        elif key.endswith("port"):
            proto = key.split()[0]
            guard = {"tcp": "l4 == 6", "udp": "l4 == 17",
                     "th": "(l4 == 6 or l4 == 17 or l4 == 136)"}[proto]
            var = "dp" if key.endswith("dport") else "sp"
            test = self.int_test(var, m.elements)
            if m.negate:
                guard += f" and {var} >= 0"
        elif key in ("icmp type", "icmpv6 type"):
            guard = "l4 == 1 and fam == 4" if key == "icmp type" else "l4 == 58"
            test = self.int_test("it", m.elements)
            if m.negate:
                guard += " and it >= 0"  # (a header cut short has no type to compare)
        elif key == "ct state":
            mask = 0
            for e in m.elements:
                mask |= e.lo
            test = f"ct & {mask}"
        else:  # pragma: no cover - the parser knows no other key
            raise AssertionError(key)
        if m.negate:
            test = f"not ({test})"
        return f"({guard} and ({test}))" if guard else f"({test})"

    def int_test(self, var: str, elements: list[Element]) -> str:
        singles = sorted({e.lo for e in elements if e.lo == e.hi})
        ranges = sorted({(e.lo, e.hi) for e in elements if e.lo != e.hi})
        parts = []
        if len(singles) == 1:
            parts.append(f"{var} == {int(singles[0])}")
        elif singles:
            parts.append(f"{var} in {self.const(frozenset(singles))}")
        if len(ranges) <= _INLINE_RANGES:
            parts += [f"{int(lo)} <= {var} <= {int(hi)}" for lo, hi in ranges]
        else:
            parts.append(f"_rng({var}, {self.const(tuple(ranges))})")
        return " or ".join(parts)

    def addr_test(self, var: str, ivar: str, size: int, elements: list[Element]) -> str:
        singles = sorted({e.lo for e in elements if e.lo == e.hi})
        prefixes: dict[int, set[int]] = {}
        ranges = []
        for e in elements:
            if e.lo == e.hi:
                continue
            span = e.hi - e.lo + 1
            shift = span.bit_length() - 1
            if span & (span - 1) == 0 and e.lo & (span - 1) == 0:
                prefixes.setdefault(shift, set()).add(e.lo >> shift)
            else:
                ranges.append((e.lo, e.hi))
        parts = []
        packed = [s.to_bytes(size, "big") for s in singles]
        if len(packed) == 1:
            parts.append(f"{var} == {self.const(packed[0])}")
        elif packed:
            parts.append(f"{var} in {self.const(frozenset(packed))}")
        if len(prefixes) == 1:
            ((shift, nets),) = prefixes.items()
            if len(nets) == 1:
                parts.append(f"{ivar} >> {shift} == {self.const(next(iter(nets)))}")
            else:
                parts.append(f"{ivar} >> {shift} in {self.const(frozenset(nets))}")
        elif prefixes:
            groups = tuple((s, frozenset(n)) for s, n in sorted(prefixes.items()))
            parts.append(f"_pfx({ivar}, {self.const(groups)})")
        if ranges:
            parts.append(f"_rng({ivar}, {self.const(tuple(sorted(ranges)))})")
        return " or ".join(parts)

    def names_test(self, var: str, elements: list[Element]) -> str:
        exact = [e.name for e in elements if not e.wildcard]
        wild = tuple(e.name for e in elements if e.wildcard)
        parts = []
        if len(exact) == 1:
            parts.append(f"{var} == {self.const(exact[0])}")
        elif exact:
            parts.append(f"{var} in {self.const(frozenset(exact))}")
        if wild:
            parts.append(f"{var}.startswith({self.const(wild)})")
        return " or ".join(parts)


def compile_ruleset(ruleset: Ruleset, log: Callable[..., None]) -> Compiled:
    """Compile ``ruleset``; ``log(Log, *chain arguments)`` is called by log statements."""
    gen = _Gen(log)
    base: list[tuple[int, int, Table, Chain, str]] = []
    order = 0
    for ti, table in enumerate(ruleset.tables):
        for chain in table.chains.values():
            name = gen.chain(ti, table, chain)
            if chain.hook is not None:
                base.append((chain.priority, order, table, chain, name))
                order += 1
    source = "\n".join(gen.lines)
    code = compile(source, "<nftables ruleset>", "exec")
    exec(code, gen.ns)  # noqa: S102 (the source is generated from parsed values only)
    out = Compiled(ruleset, rejects=gen.rejects, nats=gen.nats,
                   conntrack=ruleset.uses_conntrack(),
                   source=source)
    fams = {"inet": frozenset({4, 6}), "ip": frozenset({4}), "ip6": frozenset({6})}
    for hook in HOOKS:
        chains = sorted((b for b in base if b[3].hook == hook), key=lambda b: (b[0], b[1]))
        if chains:
            out.hooks[hook] = tuple(
                BaseChain(t, c, gen.ns[n], ACCEPT if c.policy == "accept" else DROP,
                          fams[t.family], c.type == "nat") for _, _, t, c, n in chains)
    return out
