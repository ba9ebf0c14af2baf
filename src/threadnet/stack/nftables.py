"""The packet filter's language: a subset of nftables' ruleset syntax, parsed into a
``Ruleset`` (its parts and vocabulary are in ``stack/nftrules.py``) that
``stack/nftcompile.py`` compiles and ``Ruleset.text`` prints back (as ``nft list ruleset``
does, with counters). docs/filter.md is the reference.

    table inet filter {
        chain input {
            type filter hook input priority 0; policy drop;
            ct state established,related accept
            iifname "lo" accept
            tcp dport { 22, 80-89 } counter accept
            udp dport 53 reject with icmpx type admin-prohibited
        }
    }

Parsing never touches the stack: ``parse(text, source)`` gives a ``Ruleset`` or raises
``RulesetError``, whose message names the source, line and column and shows the line.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import socket
from dataclasses import dataclass

from threadnet.stack.conntrack import CT_STATE_NAMES
from threadnet.stack.nat import NatSpec
from threadnet.stack.nftrules import (
    _SELECTOR_HEADS,
    FAMILIES,
    HOOKS,
    ICMP_TYPES,
    ICMPV6_TYPES,
    L4_NAMES,
    L4_PROTOCOLS,
    LOG_LEVELS,
    MATCH_KEYS,
    MAX_JUMP_DEPTH,
    MAX_LOG_PREFIX,
    NAT_HOOKS,
    PRIORITY_NAMES,
    REJECT_ICMP,
    REJECT_ICMPV6,
    REJECT_ICMPX,
    SET_TYPES,
    Chain,
    Counter,
    Element,
    Log,
    Match,
    NamedSet,
    Rule,
    Ruleset,
    RulesetError,
    Statement,
    Table,
    Verdict,
)

__all__ = ["Ruleset", "RulesetError", "parse", "tokenize"]

# -- tokens -----------------------------------------------------------------------------------
@dataclass(slots=True)
class Token:
    kind: str  # "word", "string", "punct" ({ } ; , = !=), "nl", "eof"
    text: str
    line: int
    col: int


_TOKEN = re.compile(r"""
    (?P<nl>\n)
  | (?P<space>[ \t\r\f\v]+|\\\n)
  | (?P<comment>\#[^\n]*)
  | (?P<string>"[^"\n]*")
  | (?P<punct>!=|==|[{};,=])
  | (?P<word>[A-Za-z0-9_.:/*$@+\-\[\]]+)
""", re.VERBOSE)


class _Source:
    """The text being parsed, for error messages."""

    def __init__(self, text: str, name: str) -> None:
        self.lines = text.split("\n")
        self.name = name

    def error(self, tok: Token | tuple[int, int], message: str) -> RulesetError:
        line, col = (tok.line, tok.col) if isinstance(tok, Token) else tok
        text = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        width = max(1, len(tok.text)) if isinstance(tok, Token) and tok.kind != "eof" else 1
        return RulesetError(f"{self.name}:{line}:{col}: {message}\n    {text.expandtabs(4)}\n"
                            f"    {' ' * len(text[:col - 1].expandtabs(4))}{'^' * width}")


def tokenize(text: str, src: _Source) -> list[Token]:
    out: list[Token] = []
    pos, line, start = 0, 1, 0
    n = len(text)
    while pos < n:
        m = _TOKEN.match(text, pos)
        if m is None:
            raise src.error((line, pos - start + 1), f"unexpected character {text[pos]!r}")
        kind = m.lastgroup
        value = m.group()
        col = pos - start + 1
        if kind == "nl":
            out.append(Token("nl", "\n", line, col))
            line += 1
            start = m.end()
        elif kind == "space":
            if value == "\\\n":
                line += 1
                start = m.end()
        elif kind == "string":
            out.append(Token("string", value[1:-1], line, col))
        elif kind != "comment":
            out.append(Token(kind, value, line, col))  # type: ignore[arg-type]
        pos = m.end()
    out.append(Token("eof", "", line, pos - start + 1))
    return out


# -- the parser -----------------------------------------------------------------------------------
class Parser:
    """Recursive descent over the tokens of one ruleset text."""

    def __init__(self, text: str, source: str = "<ruleset>") -> None:
        self.src = _Source(text, source)
        self.toks = self._expand(tokenize(text, self.src))
        self.i = 0

    # -- tokens
    def _expand(self, toks: list[Token]) -> list[Token]:
        """``define NAME = VALUE`` lines, and ``$NAME`` replaced by their value."""
        out: list[Token] = []
        defines: dict[str, list[Token]] = {}
        i = 0
        at_start = True
        while i < len(toks):
            t = toks[i]
            if at_start and t.kind == "word" and t.text == "define":
                if i + 2 >= len(toks) or toks[i + 1].kind != "word" or \
                        toks[i + 2].text != "=":
                    raise self.src.error(t, "expected 'define NAME = VALUE'")
                name = toks[i + 1].text
                j = i + 3
                value: list[Token] = []
                depth = 0
                while toks[j].kind != "eof" and (depth or toks[j].kind != "nl") and \
                        not (depth == 0 and toks[j].text == ";"):
                    if toks[j].text == "{":
                        depth += 1
                    elif toks[j].text == "}":
                        depth -= 1
                    value.append(toks[j])
                    j += 1
                if not value:
                    raise self.src.error(toks[i + 1], f"define {name}: no value")
                defines[name] = self._substitute(value, defines)
                i = j
                continue
            if t.kind == "word" and t.text.startswith("$"):
                out += self._substitute([t], defines)
            else:
                out.append(t)
            at_start = t.kind == "nl" or t.text in (";", "{", "}")
            i += 1
        return out

    def _substitute(self, toks: list[Token], defines: dict[str, list[Token]]) -> list[Token]:
        out = []
        for t in toks:
            if t.kind == "word" and t.text.startswith("$"):
                value = defines.get(t.text[1:])
                if value is None:
                    raise self.src.error(t, f"unknown variable {t.text}")
                out += [Token(v.kind, v.text, t.line, t.col) for v in value]
            else:
                out.append(t)
        return out

    def peek(self, k: int = 0) -> Token:
        return self.toks[min(self.i + k, len(self.toks) - 1)]

    def next(self) -> Token:
        t = self.toks[self.i]
        if t.kind != "eof":
            self.i += 1
        return t

    def accept(self, text: str) -> bool:
        if self.peek().text == text and self.peek().kind in ("word", "punct"):
            self.i += 1
            return True
        return False

    def expect(self, text: str, what: str | None = None) -> Token:
        t = self.next()
        if t.text != text or t.kind not in ("word", "punct"):
            raise self.src.error(t, f"expected {what or repr(text)}, got {_shown(t)}")
        return t

    def word(self, what: str) -> Token:
        t = self.next()
        if t.kind not in ("word", "string"):
            raise self.src.error(t, f"expected {what}, got {_shown(t)}")
        return t

    def skip_separators(self) -> None:
        while self.peek().kind == "nl" or self.peek().text == ";":
            self.i += 1

    def end_of_statement(self) -> None:
        t = self.peek()
        if t.kind == "nl" or t.text == ";":
            self.i += 1
        elif t.text != "}" and t.kind != "eof":
            raise self.src.error(t, f"unexpected {_shown(t)}: expected the end of the line")

    # -- structure
    def parse(self) -> Ruleset:
        rs = Ruleset()
        names: set[tuple[str, str]] = set()
        while True:
            self.skip_separators()
            t = self.peek()
            if t.kind == "eof":
                break
            if t.text == "flush":
                self.next()
                self.expect("ruleset", "'ruleset' (only 'flush ruleset' is supported)")
                self.end_of_statement()
                continue
            if t.text == "table":
                self.next()
                table = self.table()
                if (table.family, table.name) in names:
                    raise self.src.error(t, f"table {table.family} {table.name} is defined "
                                         "twice")
                names.add((table.family, table.name))
                rs.tables.append(table)
                continue
            if t.text in ("include", "add", "insert", "delete", "create"):
                raise self.src.error(t, f"'{t.text}' is not supported: write the whole "
                                     "ruleset as table blocks")
            raise self.src.error(t, f"expected 'table', got {_shown(t)}")
        self._check(rs)
        return rs

    def table(self) -> Table:
        fam = self.word("a table family (inet, ip, ip6)")
        if fam.text not in FAMILIES:
            raise self.src.error(fam, f"table family {fam.text!r} is not supported "
                                 "(inet, ip, ip6)")
        name = self.word("a table name")
        table = Table(fam.text, name.text)
        self._table = table  # for the @set references of its rules
        self.expect("{")
        while True:
            self.skip_separators()
            t = self.next()
            if t.text == "}" and t.kind == "punct":
                break
            if t.text == "chain":
                cname = self.word("a chain name")
                if cname.text in table.chains:
                    raise self.src.error(cname, f"chain {cname.text} is defined twice")
                table.chains[cname.text] = self.chain(cname)
            elif t.text == "set":
                sname = self.word("a set name")
                if sname.text in table.sets:
                    raise self.src.error(sname, f"set {sname.text} is defined twice")
                table.sets[sname.text] = self.named_set(sname, table)
            elif t.kind == "eof":
                raise self.src.error(t, "the table is not closed: expected '}'")
            else:
                raise self.src.error(t, f"expected 'chain', 'set' or '}}', got {_shown(t)}")
        return table

    def named_set(self, name: Token, table: Table) -> NamedSet:
        s = NamedSet(name.text, "")
        self.expect("{")
        while True:
            self.skip_separators()
            t = self.next()
            if t.text == "}" and t.kind == "punct":
                break
            if t.text == "type":
                ty = self.word("a set type")
                if ty.text not in SET_TYPES:
                    raise self.src.error(ty, f"set type {ty.text!r} is not supported "
                                         f"({', '.join(SET_TYPES)})")
                s.type = ty.text
            elif t.text == "flags":
                fl = self.word("set flags")
                if fl.text not in ("interval", "constant"):
                    raise self.src.error(fl, f"set flag {fl.text!r} is not supported")
                s.interval = s.interval or fl.text == "interval"
                while self.accept(","):
                    self.word("set flags")
            elif t.text == "elements":
                if not s.type:
                    raise self.src.error(t, "give the set's type before its elements")
                self.expect("=")
                s.elements = self.value(SET_TYPES[s.type], t, table, allow_ref=False)[0]
            elif t.kind == "eof":
                raise self.src.error(t, "the set is not closed: expected '}'")
            else:
                raise self.src.error(t, f"expected 'type', 'flags' or 'elements', "
                                     f"got {_shown(t)}")
            self.end_of_statement()
        if not s.type:
            raise self.src.error(name, f"set {name.text} has no type")
        return s

    def chain(self, name: Token) -> Chain:
        chain = Chain(name.text, line=name.line)
        self.expect("{")
        typed = False
        while True:
            self.skip_separators()
            t = self.peek()
            if t.text == "}" and t.kind == "punct":
                self.next()
                break
            if t.kind == "eof":
                raise self.src.error(t, "the chain is not closed: expected '}'")
            if t.text == "type" and not chain.rules:
                self.next()
                ty = self.word("a chain type")
                if ty.text not in ("filter", "nat"):
                    raise self.src.error(ty, f"chain type {ty.text!r} is not supported "
                                         "(filter or nat)")
                chain.type = ty.text
                self.expect("hook")
                hook = self.word("a hook")
                if hook.text not in HOOKS:
                    raise self.src.error(hook, f"hook {hook.text!r} is not supported "
                                         f"({', '.join(HOOKS)})")
                if ty.text == "nat" and hook.text not in NAT_HOOKS:
                    raise self.src.error(hook, f"a nat chain cannot hook {hook.text} "
                                         f"({', '.join(NAT_HOOKS)})")
                chain.hook = hook.text
                if self.peek().text in ("device", "devices"):
                    raise self.src.error(self.peek(), "devices are not supported")
                self.expect("priority")
                chain.priority = self.priority()
                typed = True
                self.end_of_statement()
            elif t.text == "policy" and not chain.rules:
                self.next()
                pol = self.word("accept or drop")
                if pol.text not in ("accept", "drop"):
                    raise self.src.error(pol, f"policy {pol.text!r}: a policy is accept or "
                                         "drop")
                if not typed:
                    raise self.src.error(t, "a policy needs a base chain (type ... hook ...) "
                                         "before it")
                chain.policy = pol.text
                self.end_of_statement()
            else:
                self._chain = chain
                chain.rules.append(self.rule())
        return chain

    _chain: Chain | None = None  # the chain being parsed, for its nat statements

    def priority(self) -> int:
        t = self.word("a priority")
        text = t.text
        m = re.fullmatch(r"(-?\d+)|([a-z]+)([+-]\d+)?", text)
        if m is None:
            raise self.src.error(t, f"bad priority {text!r}")
        if m.group(1) is not None:
            return int(m.group(1))
        base_name = m.group(2)
        if base_name not in PRIORITY_NAMES:
            raise self.src.error(t, f"unknown priority {base_name!r} "
                                 f"({', '.join(PRIORITY_NAMES)} or a number)")
        value = PRIORITY_NAMES[base_name]
        if m.group(3) is not None:
            return value + int(m.group(3))
        if self.peek().text in ("+", "-"):
            sign = self.next().text
            num = self.word("a number")
            if not num.text.isdigit():
                raise self.src.error(num, f"expected a number, got {_shown(num)}")
            value += int(num.text) if sign == "+" else -int(num.text)
        return value

    def rule(self) -> Rule:
        first = self.peek()
        items: list[Statement] = []
        verdict: Verdict | None = None
        comment = None
        while True:
            t = self.peek()
            if t.kind in ("nl", "eof") or t.text in (";", "}"):
                break
            if verdict is not None and t.text != "comment":
                raise self.src.error(t, f"unexpected {_shown(t)} after the verdict "
                                     f"'{verdict.text()}'")
            w = t.text
            if t.kind == "string":
                raise self.src.error(t, f"unexpected string {_shown(t)}")
            if w == "comment":
                self.next()
                comment = self.word("a comment string").text
                continue
            if w in ("accept", "drop", "continue", "return"):
                self.next()
                verdict = Verdict(w)
            elif w in ("jump", "goto"):
                self.next()
                verdict = Verdict(w, self.word("a chain name").text)
            elif w == "reject":
                self.next()
                verdict = self.reject()
            elif w in ("masquerade", "snat", "dnat"):
                verdict = self.nat_statement()
            elif w == "counter":
                self.next()
                c = Counter()
                if self.peek().text == "packets":
                    self.next()
                    c.packets = self._count_number()
                    self.expect("bytes")
                    c.bytes = self._count_number()
                items.append(c)
            elif w == "log":
                self.next()
                items.append(self.log())
            else:
                items.append(self.match())
        if not items and verdict is None:
            raise self.src.error(first, "empty rule")
        rule = Rule(items, verdict, comment, first.line, first.col)
        self.end_of_statement()
        return rule

    def _count_number(self) -> int:
        t = self.word("a number")
        if not t.text.isdigit():
            raise self.src.error(t, f"expected a number, got {_shown(t)}")
        return int(t.text)

    def log(self) -> Log:
        log = Log()
        while self.peek().text in ("prefix", "level"):
            what = self.next().text
            if what == "prefix":
                p = self.next()
                if p.kind != "string":
                    raise self.src.error(p, 'a log prefix is a quoted string ("...")')
                if len(p.text) > MAX_LOG_PREFIX:
                    raise self.src.error(p, f"a log prefix has at most {MAX_LOG_PREFIX} "
                                         "characters")
                log.prefix = p.text
            else:
                lv = self.word("a log level")
                if lv.text not in LOG_LEVELS:
                    raise self.src.error(lv, f"log level {lv.text!r}: one of "
                                         f"{', '.join(LOG_LEVELS)}")
                log.level = lv.text
        return log

    def reject(self) -> Verdict:
        if not self.accept("with"):
            return Verdict("reject")
        t = self.word("tcp, icmp, icmpv6 or icmpx")
        if t.text == "tcp":
            self.expect("reset", "'reset'")
            return Verdict("reject", reject_with=("tcp reset", 0, 0), with_text="tcp reset")
        table: dict = {"icmp": REJECT_ICMP, "icmpv6": REJECT_ICMPV6,
                       "icmpx": REJECT_ICMPX}.get(t.text)  # type: ignore[assignment]
        if table is None:
            raise self.src.error(t, f"reject with {t.text!r}: expected tcp reset, icmp, "
                                 "icmpv6 or icmpx")
        if self.peek().text == "type":
            self.next()
        code = self.word(f"an {t.text} reject type")
        if code.text not in table:
            raise self.src.error(code, f"reject with {t.text} type {code.text!r}: one of "
                                 f"{', '.join(table)}")
        v = table[code.text]
        if t.text == "icmp":
            spec = ("icmp", v, 0)
        elif t.text == "icmpv6":
            spec = ("icmpv6", 0, v)
        else:
            spec = ("icmpx", v[0], v[1])
        return Verdict("reject", reject_with=spec, with_text=f"{t.text} type {code.text}")

    def nat_statement(self) -> Verdict:
        """``masquerade [to :PORT[-PORT]]``, ``snat [ip|ip6] to ADDR[-ADDR][:PORT[-PORT]]``,
        ``dnat [ip|ip6] to ADDR[-ADDR][:PORT[-PORT]]`` (an IPv6 address with a port in
        brackets: ``[fc00::5]:80``)."""
        t = self.next()
        kind = t.text
        chain, table = self._chain, self._table
        if chain is None or chain.type != "nat" or table is None:
            raise self.src.error(t, f"{kind} belongs in a nat chain (type nat hook ...)")
        if chain.hook is not None and kind not in NAT_HOOKS[chain.hook]:
            raise self.src.error(t, f"{kind} cannot be used at {chain.hook} "
                                 f"({' or '.join(NAT_HOOKS[chain.hook])} there)")
        fam = {"ip": 4, "ip6": 6}.get(table.family, 0)
        if self.peek().text in ("ip", "ip6") and kind != "masquerade":
            w = self.next()
            want = 4 if w.text == "ip" else 6
            if fam and fam != want:
                raise self.src.error(w, f"{kind} {w.text} in a table of family "
                                     f"{table.family}")
            fam = want
        lo = hi = plo = phi = plen = None
        text = kind
        if kind != "masquerade" and self.accept("prefix"):
            # a prefix for a prefix (NETMAP; RFC 6296's NPTv6 for IPv6)
            self.expect("to", "'to' and a prefix")
            v = self.word("a prefix (ADDR/LEN)")
            try:
                e = _address(v.text, fam or (6 if ":" in v.text else 4))
            except ValueError as exc:
                raise self.src.error(v, str(exc)) from None
            bits = 32 if "." in v.text else 128
            lo, hi = e.lo, e.lo
            plen = bits - (e.hi - e.lo + 1).bit_length() + 1
            fam = 4 if bits == 32 else 6
            text += (" ip" if fam == 4 else " ip6") + f" prefix to {e.text}"
            return Verdict(kind, nat=NatSpec(kind, fam, lo, hi, text=text, prefix=plen))
        if self.accept("to"):
            v = self.word("an address, a range, or :PORT")
            try:
                lo, hi, plo, phi, fam = _nat_target(v.text, fam, kind == "masquerade")
            except ValueError as exc:
                raise self.src.error(v, str(exc)) from None
            if kind != "masquerade" and table.family == "inet" and fam:
                text += " ip" if fam == 4 else " ip6"
            text += f" to {v.text}"
        elif kind != "masquerade":
            raise self.src.error(self.peek(), f"{kind} needs 'to' and an address")
        return Verdict(kind, nat=NatSpec(kind, fam, lo, hi, plo, phi, text))

    def match(self) -> Match:
        t = self.next()
        key = t.text
        if key in _SELECTOR_HEADS:
            sub = self.word(f"what of {key} to match ({', '.join(_SELECTOR_HEADS[key])})")
            if sub.text not in _SELECTOR_HEADS[key]:
                raise self.src.error(sub, f"{key} {sub.text}: not supported (with {key}: "
                                     f"{', '.join(_SELECTOR_HEADS[key])})"
                                     f"{_suggest(sub.text, _SELECTOR_HEADS[key])}")
            key = f"{key} {sub.text}"
        if key not in MATCH_KEYS:
            raise self.src.error(t, f"unknown statement {_shown(t)}{_suggest(t.text)}")
        negate = False
        if self.peek().text in ("!=", "=="):
            negate = self.next().text == "!="
        vtype = MATCH_KEYS[key]
        elements, braces, ref = self.value(vtype, t, self._table, allow_ref=True)
        return Match(key, negate, elements, braces, ref, t.line, t.col)

    _table: Table | None = None  # the table being parsed, for @set references

    def value(self, vtype: str, at: Token, table: Table | None, *, allow_ref: bool
              ) -> tuple[list[Element], bool, str | None]:
        t = self.peek()
        if t.kind in ("nl", "eof") or t.text in (";", "}"):
            raise self.src.error(t, f"{at.text}: expected a value, got {_shown(t)}")
        if t.kind == "word" and t.text.startswith("@"):
            self.next()
            if not allow_ref:
                raise self.src.error(t, "a set reference is not allowed here")
            return [], False, t.text[1:]
        if t.text == "{":
            self.next()
            elems: list[Element] = []
            while True:
                while self.peek().kind == "nl":
                    self.next()
                if self.peek().text == "}":
                    self.next()
                    break
                elems.append(self.element(vtype))
                while self.peek().kind == "nl":
                    self.next()
                if self.accept(","):
                    continue
                if self.peek().text != "}":
                    raise self.src.error(self.peek(), f"expected ',' or '}}' in a set, got "
                                         f"{_shown(self.peek())}")
            if not elems:
                raise self.src.error(t, "an empty set")
            return elems, True, None
        elems = [self.element(vtype)]
        if vtype == "ctstate":
            while self.accept(","):
                elems.append(self.element(vtype))
        return elems, False, None

    def element(self, vtype: str) -> Element:
        t = self.next()
        if t.kind not in ("word", "string"):
            raise self.src.error(t, f"expected a value, got {_shown(t)}")
        text = t.text
        try:
            if vtype == "ifname":
                if len(text.rstrip("*")) > 15 or not text.rstrip("*"):
                    raise ValueError("an interface name has 1 to 15 characters")
                wild = text.endswith("*")
                return Element(name=text.rstrip("*") if wild else text, wildcard=wild,
                               text=f'"{text}"')
            if t.kind == "string":
                raise ValueError(f"{text!r}: a quoted string is not a value here")
            if vtype in ("addr4", "addr6"):
                return _address(text, 4 if vtype == "addr4" else 6)
            if vtype == "port":
                return _range(text, 0, 65535, _service)
            if vtype == "l4proto":
                return _named(text, L4_PROTOCOLS, L4_NAMES, 255)
            if vtype == "icmp":
                return _named(text, ICMP_TYPES, _inverse(ICMP_TYPES), 255)
            if vtype == "icmpv6":
                return _named(text, ICMPV6_TYPES, _inverse(ICMPV6_TYPES), 255)
            if vtype == "nfproto":
                if text not in ("ipv4", "ipv6"):
                    raise ValueError("meta nfproto is ipv4 or ipv6")
                v = 4 if text == "ipv4" else 6
                return Element(v, v, text)
            if vtype == "ctstate":
                bit = CT_STATE_NAMES.get(text)
                if bit is None:
                    raise ValueError(f"ct state {text!r}: one of {', '.join(CT_STATE_NAMES)}")
                return Element(bit, bit, text)
        except ValueError as exc:
            raise self.src.error(t, str(exc)) from None
        raise AssertionError(vtype)  # pragma: no cover

    # -- checks after parsing: references, jump loops, set types
    def _check(self, rs: Ruleset) -> None:
        for table in rs.tables:
            for chain in table.chains.values():
                for rule in chain.rules:
                    v = rule.verdict
                    if v is not None and v.kind in ("jump", "goto"):
                        target = table.chains.get(v.target or "")
                        if target is None:
                            raise self.src.error((rule.line, rule.col), f"{v.kind} {v.target}: no "
                                                 f"chain {v.target} in table {table.name}")
                        if target.hook is not None:
                            raise self.src.error((rule.line, rule.col), f"{v.kind} {v.target}: a "
                                                 "base chain cannot be a jump target")
                    for item in rule.items:
                        if isinstance(item, Match):
                            self._check_match(table, item, rule)
                    if v is not None and v.kind == "reject":
                        self._check_reject(table, rule, v)
            below: dict[str, int] = {}
            for chain in table.chains.values():
                self._depth(table, chain, (chain.name,), below)

    def _check_match(self, table: Table, m: Match, rule: Rule) -> None:
        fam = m.key.split()[0]
        if table.family == "ip" and fam in ("ip6", "icmpv6"):
            raise self.src.error((m.line, m.col), f"{m.key} in a table of family ip "
                                 "(IPv4 only) never matches")
        if table.family == "ip6" and fam in ("ip", "icmp"):
            raise self.src.error((m.line, m.col), f"{m.key} in a table of family ip6 "
                                 "(IPv6 only) never matches")
        if m.setref is None:
            return
        s = table.sets.get(m.setref)
        if s is None:
            raise self.src.error((m.line, m.col), f"@{m.setref}: no set {m.setref} in table "
                                 f"{table.name}")
        want = MATCH_KEYS[m.key]
        if SET_TYPES[s.type] != want:
            raise self.src.error((m.line, m.col), f"@{m.setref} holds {s.type}, which "
                                 f"{m.key} does not take")
        m.elements = s.elements

    def _check_reject(self, table: Table, rule: Rule, v: Verdict) -> None:
        kind = v.reject_with[0]
        if kind == "icmp" and table.family == "ip6" or kind == "icmpv6" and table.family == "ip":
            raise self.src.error((rule.line, rule.col), f"reject with {kind} in a table of family "
                                 f"{table.family}")

    def _depth(self, table: Table, chain: Chain, path: tuple[str, ...],
               below: dict[str, int]) -> int:
        """How many jumps deep ``chain`` reaches (memoized in ``below``, so a ruleset of
        many chains that jump to many others costs one visit per chain); a loop or more
        than MAX_JUMP_DEPTH levels is an error."""
        if chain.name in below:
            return below[chain.name]
        deepest = 0
        for rule in chain.rules:
            v = rule.verdict
            if v is not None and v.kind in ("jump", "goto"):
                target = v.target or ""
                if target in path:
                    raise self.src.error((rule.line, rule.col), "a jump loop: "
                                         f"{' -> '.join(path + (target,))}")
                deepest = max(deepest, 1 + self._depth(table, table.chains[target],
                                                       path + (target,), below))
                if len(path) + deepest > MAX_JUMP_DEPTH + 1:
                    raise self.src.error((rule.line, rule.col), "jumps nest deeper than "
                                         f"{MAX_JUMP_DEPTH} chains: {' -> '.join(path)} ...")
        below[chain.name] = deepest
        return deepest


def _shown(t: Token) -> str:
    if t.kind == "eof":
        return "the end of the text"
    if t.kind == "nl":
        return "the end of the line"
    if t.kind == "string":
        return f'"{t.text}"'
    return repr(t.text)


_KEYWORDS = ("accept", "drop", "reject", "masquerade", "snat", "dnat", "counter", "log",
             "jump", "goto", "return",
             "continue", "comment", "iifname", "oifname", "iif", "oif", "ip", "ip6", "tcp",
             "udp", "th", "icmp", "icmpv6", "ct", "meta")


def _suggest(word: str, choices: tuple[str, ...] = _KEYWORDS) -> str:
    close = difflib.get_close_matches(word, choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _inverse(table: dict[str, int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for name, v in table.items():
        out.setdefault(v, name)
    return out


def _named(text: str, names: dict[str, int], back: dict[int, str], top: int) -> Element:
    if text in names:
        v = names[text]
        return Element(v, v, back.get(v, text))
    if text.isdigit() and int(text) <= top:
        v = int(text)
        return Element(v, v, back.get(v, text))
    raise ValueError(f"unknown value {text!r} (a name: {', '.join(sorted(names))}; or a "
                     f"number 0..{top})")


def _service(text: str) -> int:
    if text.isdigit():
        return int(text)
    try:
        return socket.getservbyname(text)
    except OSError:
        raise ValueError(f"unknown port or service {text!r}") from None


def _range(text: str, lo: int, hi: int, conv) -> Element:  # type: ignore[no-untyped-def]
    if "-" in text[1:]:
        a, b = text.split("-", 1)
        x, y = conv(a), conv(b)
        if not lo <= x <= y <= hi:
            raise ValueError(f"bad range {text!r} (from {lo} to {hi}, low to high)")
        return Element(x, y, f"{x}-{y}")
    v = conv(text)
    if not lo <= v <= hi:
        raise ValueError(f"{text!r} is out of range ({lo}..{hi})")
    return Element(v, v, str(v))


def _address(text: str, version: int) -> Element:
    bits = 32 if version == 4 else 128
    kind = "IPv4" if version == 4 else "IPv6"
    try:
        if "/" in text:
            net = ipaddress.ip_network(text, strict=False)
            if net.version != version:
                raise ValueError
            lo = int(net.network_address)
            return Element(lo, lo | ((1 << (bits - net.prefixlen)) - 1), str(net)
                           if net.prefixlen < bits else str(net.network_address))
        if "-" in text:
            a, b = text.split("-", 1)
            x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
            if x.version != version or y.version != version or int(x) > int(y):
                raise ValueError
            return Element(int(x), int(y), f"{x}-{y}")
        addr = ipaddress.ip_address(text)
        if addr.version != version:
            raise ValueError
        return Element(int(addr), int(addr), str(addr))
    except ValueError:
        raise ValueError(f"{text!r} is not an {kind} address, prefix or range") from None


def _nat_target(text: str, family: int, port_only: bool
                ) -> tuple[int | None, int | None, int | None, int | None, int]:
    """A nat statement's ``to``: (first address, last address, first port, last port,
    family), None where it gives none."""
    addr, ports = text, ""
    if text.startswith(":"):
        addr, ports = "", text[1:]
    elif text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"{text!r}: no ']' after the IPv6 address")
        addr, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"{text!r}: expected ':PORT' after ']'")
        ports = rest[1:]
    elif text.count(":") == 1:
        addr, ports = text.split(":")
    if port_only and addr:
        raise ValueError("masquerade takes ports only (to :PORT[-PORT])")
    lo = hi = plo = phi = None
    if addr:
        if "-" in addr:
            a, b = addr.split("-", 1)
        else:
            a = b = addr
        try:
            x, y = ipaddress.ip_address(a), ipaddress.ip_address(b)
        except ValueError:
            raise ValueError(f"{addr!r} is not an address or a range of them") from None
        if x.version != y.version or int(x) > int(y):
            raise ValueError(f"{addr!r}: a range goes from low to high, in one family")
        if family and x.version != family:
            raise ValueError(f"{addr!r} is not an IPv{family} address")
        family = x.version
        lo, hi = int(x), int(y)
    elif not port_only:
        raise ValueError(f"{text!r}: an address is needed")
    if ports:
        e = _range(ports, 1, 65535, _service)
        plo, phi = e.lo, e.hi
    elif text.endswith(":"):
        raise ValueError(f"{text!r}: a port is needed after ':'")
    return lo, hi, plo, phi, family


def parse(text: str, source: str = "<ruleset>") -> Ruleset:
    """Parse a whole ruleset; RulesetError names the line and column of the first error."""
    return Parser(text, source).parse()
