"""The packet filter of a stack: an nftables-like ruleset (``stack/nftables.py``, compiled
by ``stack/nftcompile.py``) and connection tracking (``stack/conntrack.py``) at the IP
layer's hook points (``stack/ip.py``).

``stack.filter_set(text)``, ``filter_load(path)``, ``filter_list()``, ``filter_flush()``
(``FilterApi``, a mixin of ``Stack``) replace, show and remove the whole ruleset. A new
ruleset is parsed and compiled first, with no lock held; only then is it swapped in,
under the stack's lock, so a packet sees the old ruleset or the new one, never a mix.
The connection table belongs to the stack, not to a ruleset: established connections
stay established across a reload.

How packets pass (one ``PacketFilter`` hook per hook point it needs, made anew for each
ruleset and added after the stack's other hooks, which it leaves alone). The chains of a hook run in priority order; ``accept`` ends a
chain, ``drop`` and ``reject`` end the packet. When a rule uses ``ct state`` the
packets are tracked where netfilter tracks them, in a simpler scheme that gives the
same states:

- a packet is tracked at its first hook: prerouting when the ruleset has prerouting
  chains, else input (for this host) or forward (forwarded); output for this host's
  packets. Its later hooks (input after prerouting, postrouting after output or
  forward) see the state it got there;
- a connection is confirmed when its first packet passed its last hook (input, or
  postrouting when the ruleset has postrouting chains, else forward or output); when
  the filter drops that packet first, the connection is forgotten (as netfilter
  frees an unconfirmed entry with its packet), so a scan leaves no entries behind;
- a packet that comes back through loopback was tracked at output and is not tracked
  twice: it keeps the state it got there;
- a ruleset with nat chains tracks as one with prerouting and postrouting chains, and
  NAT (``stack/nat.py``) rewrites packets inside the hooks, after the chains of the nat
  stage's priority: the chains after see the packet rewritten (``docs/nat.md``);
- a ruleset without ``ct state`` or nat chains tracks nothing; replacing a tracking
  ruleset by one that does not track empties the table (a later tracking ruleset picks
  up the connections still running, as nf_conntrack_tcp_loose does).

Fragments: the hooks before reassembly see fragments one by one. The first fragment,
which has the transport header, is judged by the rules; a later fragment takes the
verdict its first fragment got at the same hook, and one that arrives before its first
fragment passes (it is useless alone: the first one is judged, and a dropped first
fragment leaves the rest to time out in reassembly). A first fragment too short to hold
its transport header is INVALID (RFC 1858).

``reject`` answers a TCP segment with a RST (unless it is a RST) and anything else with
an ICMP or ICMPv6 destination unreachable: port unreachable by default, or the type
``reject with`` names; never about an ICMP error, a later fragment or a packet to a
multicast or broadcast address (RFC 1122 3.2.2). ``log`` writes a line like the
kernel's to a bounded ring (``PacketFilter.log``, ``LOG_RING`` lines) and to the
Python logger ``threadnet.filter``.
"""

from __future__ import annotations

import ipaddress
import logging
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet.errors import FrameError
from threadnet.stack import conntrack as ct
from threadnet.stack.conntrack import (
    CONFIRMED,
    FIRST_FRAGMENT,
    LATER_FRAGMENT,
    TRUNCATED,
    Conntrack,
    packet_fields,
)
from threadnet.stack.ip import ACCEPT, DROP
from threadnet.stack.nat import MANIP, NEED, Nat
from threadnet.stack.nftables import parse
from threadnet.stack.nftcompile import NAT_BASE, REJECT_BASE, Compiled, compile_ruleset
from threadnet.stack.nftrules import Log, RulesetError
from threadnet.wire import icmp4, icmp6, tcp

if TYPE_CHECKING:
    from threadnet.stack.ip import HookMeta
    from threadnet.stack.stack import Stack

#: the log statement's ring: this many lines are kept
LOG_RING = 1000
#: the verdicts of first fragments, for the fragments after them: at most this many,
#: for at most FRAGMENT_MEMORY seconds (the stack's reassembly gives up after 30/60 s)
MAX_FRAGMENT_VERDICTS = 4096
FRAGMENT_MEMORY = 60.0
#: what packets sent to this host got at output, until they come back (as many as the
#: stack queues for loopback, ip.MAX_LOCAL_QUEUE)
MAX_LOOPED = 1024
_LEVELS = {"emerg": logging.CRITICAL, "alert": logging.CRITICAL, "crit": logging.CRITICAL,
           "err": logging.ERROR, "warn": logging.WARNING, "notice": logging.INFO,
           "info": logging.INFO, "debug": logging.DEBUG}
_PROTO_NAMES = {6: "TCP", 17: "UDP", 1: "ICMP", 58: "ICMPv6", 136: "UDPLITE"}
_TCP_FLAG_NAMES = ((tcp.CWR, "CWR"), (tcp.ECE, "ECE"), (tcp.URG, "URG"), (tcp.ACK, "ACK"),
                   (tcp.PSH, "PSH"), (tcp.RST, "RST"), (tcp.SYN, "SYN"), (tcp.FIN, "FIN"))
_ICMP_ERRORS = {4: icmp4.ERROR_TYPES, 6: frozenset({1, 2, 3, 4})}

logger = logging.getLogger("threadnet.filter")


class PacketFilter:
    """One stack's filter: the compiled ruleset in force, the hooks it installed, the
    connection table (``conntrack``, made when a ruleset first needs it) and the log."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.compiled: Compiled | None = None
        self.conntrack: Conntrack | None = None
        #: NAT, made when a ruleset first has a nat chain (``stack/nat.py``)
        self.nat: Nat | None = None
        self.tracking = False
        #: the log statement's lines, newest last
        self.log: deque[str] = deque(maxlen=LOG_RING)
        self.stats = {"rejected": 0, "logged": 0, "ct_table_full": 0}
        #: hook point -> (track here, confirm here, a later hook reads what was tracked)
        self.roles: dict[str, tuple[bool, bool, bool]] = {}
        self._installed: dict[str, Callable[[memoryview, HookMeta], int]] = {}
        # the last packet tracked: (fields, connection, ct state, direction), for its
        # later hooks
        self._memo: tuple[Any, ct.Connection | None, int, int] | None = None
        self._frags: OrderedDict[tuple, tuple[int, float]] = OrderedDict()
        # packets sent to ourselves, tracked at output, by their fields: what they got
        # there, for when they come back in through loopback (the stack queues them)
        self._looped: OrderedDict[Any, tuple[ct.Connection | None, int]] = OrderedDict()

    # -- rulesets ---------------------------------------------------------------------
    def compile(self, text: str, source: str = "<ruleset>") -> Compiled:
        """Parse and compile ``text`` (RulesetError when it is wrong); changes nothing."""
        return compile_ruleset(parse(text, source), self._log)

    def install(self, compiled: Compiled | None) -> None:
        """Put ``compiled`` (None: no ruleset) in force; call with the stack's lock held.
        Each hook point gets a new function made for this ruleset (``_make_hook``)."""
        stack = self.stack
        self.compiled = compiled
        tracking = compiled is not None and compiled.conntrack
        if tracking and self.conntrack is None:
            self.conntrack = Conntrack()
        if self.tracking and not tracking and self.conntrack is not None:
            self.conntrack.flush()
        if tracking and not self.tracking:
            self._adopt_connections()
        if compiled is not None and compiled.ruleset.uses_nat():
            if self.nat is None or self.nat.table is not self.conntrack:
                self.nat = Nat(stack, self.conntrack)  # type: ignore[arg-type]
        self.tracking = tracking
        self.roles = _roles(compiled)
        self._memo = None
        self._frags.clear()
        self._looped.clear()
        for point, hook in sorted(self._installed.items()):
            stack.remove_hook(point, hook)
        self._installed = {}
        if compiled is not None:
            for point, role in sorted(self.roles.items()):
                hook = self._make_hook(point, compiled, role)
                stack.add_hook(point, hook)
                self._installed[point] = hook

    def _adopt_connections(self) -> None:
        """Tracking starts: the stack's own TCP connections go into the table as they
        are, as if it had seen them from their first packet, so a first ruleset (or one
        after a ruleset without ``ct``) keeps them established; a router's filter would
        have to pick them up from their next packets."""
        table = self.conntrack
        stack = self.stack
        assert table is not None
        now = stack._api_now(None)
        listening = {(ls.addr, ls.port) for ls in stack.tcp.listeners.values()}
        for ep in list(stack.tcp.conns.values()):
            state = _ADOPTED_STATES.get(str(ep.conn.state))
            if state is None:
                continue
            (laddr, lport), (raddr, rport) = ep.local, ep.remote
            local = (laddr, raddr, 6, lport, rport)
            remote = (raddr, laddr, 6, rport, lport)
            # who opened it: the peer, when the port is one we listen on
            by_peer = state == ct.SYN_RECV or (state != ct.SYN_SENT and any(
                (a, lport) in listening for a in (laddr, b"", b"::")))
            table.adopt(ep.family, remote if by_peer else local,
                        local if by_peer else remote, state, now,
                        replied=state != ct.SYN_SENT)

    def text(self) -> str:
        """The ruleset in force as ``nft list ruleset`` prints it ("" without one)."""
        return "" if self.compiled is None else self.compiled.ruleset.text()

    # -- packets ----------------------------------------------------------------------
    def _make_hook(self, point: str, compiled: Compiled, role: tuple[bool, bool, bool]
                   ) -> Callable[[memoryview, HookMeta], int]:
        """The hook of ``point`` for ``compiled``: what it needs is bound once here, so a
        packet costs a header read, a table lookup and the chains' comparisons."""
        track, confirm, memo = role
        table = self.conntrack if self.tracking else None
        nat = self.nat if compiled.ruleset.uses_nat() else None
        manip = MANIP.get(point, 0) if nat is not None else 0
        every = compiled.hooks.get(point, ())
        # NAT rewrites a packet after the nat chains of its hook (and the filter chains
        # of the same or a lower priority) ran: the chains after see it rewritten
        stage = max([bc.chain.priority for bc in every if bc.nat],
                    default=-100 if manip == 1 else 100)
        chains = tuple((bc.fn, bc.policy, None if len(bc.families) == 2 else bc.families,
                        bc.nat) for bc in every if not manip or bc.chain.priority <= stage)
        after = tuple((bc.fn, bc.policy, None if len(bc.families) == 2 else bc.families,
                       bc.nat) for bc in every if manip and bc.chain.priority > stage)
        nats = compiled.nats
        new_state = ct.NEW
        done_bit = 1 if manip == 1 else 2
        need = (NEED[0][manip], NEED[1][manip]) if manip else (0, 0)
        rejects = compiled.rejects
        pf = self
        fields = packet_fields
        later = self._later_fragment
        remember = self._remember_fragment
        reject = self._reject
        relevant = ct.RELATED
        table_full = ct.DROP
        looped = self._looped

        def hook(packet: memoryview, meta: HookMeta) -> int:
            fam = meta.family
            try:
                f = fields(fam, packet)
            except FrameError:  # an IPv6 header chain that cannot be walked
                f = _unreadable(fam, packet)
            frag = f[11]
            if frag == LATER_FRAGMENT:
                v = later(point, fam, packet, f, meta.now)
                if manip and v == ACCEPT:  # its first fragment's address
                    out = nat.translate_fragment(fam, packet, f, manip,  # type: ignore
                                                 meta.now)
                    if out is not None:
                        return out  # type: ignore[return-value]
                return v
            conn = None
            state = 0
            d = 0
            if table is not None:
                iface_in = meta.iface_in
                if iface_in is not None and iface_in.loopback:
                    # back from loopback: it was tracked at output
                    got = looped.pop(f, None)
                    if got is not None:
                        conn, state = got
                    else:
                        conn, d, state = table.track(fam, packet, f, meta.now, False)
                elif track:
                    conn, d, state = table.track(fam, packet, f, meta.now)
                    if memo:
                        pf._memo = (f, conn, state, d)
                    iface = meta.iface_out
                    if iface is not None and iface.loopback and iface_in is None:
                        looped[f] = (conn, state)
                        if len(looped) > MAX_LOOPED:
                            looped.popitem(last=False)
                else:
                    seen = pf._memo
                    if seen is not None and seen[0] == f:
                        conn, state, d = seen[1], seen[2], seen[3]
                    else:
                        conn, d, state = table.track(fam, packet, f, meta.now, False)
                if state == table_full:
                    pf.stats["ct_table_full"] += 1
                    return DROP
            verdict = ACCEPT
            spec = None
            out = None
            iface = meta.iface_in
            iif = iface.name if iface is not None else ""
            iface = meta.iface_out
            oif = iface.name if iface is not None else ""
            ln = len(packet)
            for fn, policy, fams, is_nat in chains:
                if fams is None or fam in fams:
                    if is_nat:  # only a connection's first packet, once per manip
                        if conn is None or state != new_state or d or spec is not None \
                                or (conn.nat or 0) & done_bit:
                            continue
                    v = fn(fam, iif, oif, f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7],
                           state, ln)
                    if v is None:
                        v = policy
                    if v >= NAT_BASE:
                        spec = nats[v - NAT_BASE]
                        continue
                    if v != ACCEPT:
                        verdict = v
                        break
            if manip and verdict == ACCEPT and conn is not None:
                if state == new_state and not d and not (conn.nat or 0) & done_bit and \
                        not nat.setup(conn, d, spec, manip, meta.iface_out):  # type: ignore
                    verdict = DROP  # no free tuple (counted as no_port)
                if verdict == ACCEPT and conn.nat and conn.nat & (
                        4 if state == relevant else need[d]):  # (nat.CHANGED, nat.NEED)
                    out = nat.translate(fam, packet, f, conn, d, state, manip,  # type: ignore
                                        meta.now)
                    if out is not None:
                        packet = memoryview(out)
                        f = fields(fam, packet)
                        if memo or point == "prerouting":
                            pf._memo = (f, conn, state, d)
                if verdict == ACCEPT:
                    for fn, policy, fams, _ in after:
                        if fams is None or fam in fams:
                            v = fn(fam, iif, oif, f[0], f[1], f[2], f[3], f[4], f[5], f[6],
                                   f[7], state, ln)
                            if v is None:
                                v = policy
                            if v != ACCEPT and v < NAT_BASE:
                                verdict = v
                                break
            if frag == FIRST_FRAGMENT:
                remember(point, fam, packet, f, verdict, meta.now)
            if verdict == ACCEPT:
                if confirm and conn is not None and state != relevant:
                    # (an error about a packet, such as reject's own, confirms nothing)
                    conn.status |= CONFIRMED
                return ACCEPT if out is None else out  # type: ignore[return-value]
            if verdict >= REJECT_BASE:
                reject(rejects[verdict - REJECT_BASE], fam, packet, f, meta.now)
            if conn is not None and not conn.status & CONFIRMED:
                table.delete(conn)  # type: ignore[union-attr]
            return DROP

        hook.__qualname__ = f"PacketFilter.{point}"
        return hook

    # -- fragments --------------------------------------------------------------------
    @staticmethod
    def _fragment_key(point: str, fam: int, packet: memoryview, f: ct.Fields) -> tuple:
        if fam == 4:
            ident = bytes(packet[4:6])
        else:  # the fragment header ends where the fragment's data starts
            off = f[12]
            ident = bytes(packet[off - 4:off])
        return (point, f[1], f[2], f[0], ident)

    def _remember_fragment(self, point: str, fam: int, packet: memoryview, f: ct.Fields,
                           verdict: int, now: float) -> None:
        frags = self._frags
        frags[self._fragment_key(point, fam, packet, f)] = (
            ACCEPT if verdict == ACCEPT else DROP, now + FRAGMENT_MEMORY)
        while len(frags) > MAX_FRAGMENT_VERDICTS:
            frags.popitem(last=False)

    def _later_fragment(self, point: str, fam: int, packet: memoryview, f: ct.Fields,
                        now: float) -> int:
        got = self._frags.get(self._fragment_key(point, fam, packet, f))
        if got is None or got[1] < now:
            return ACCEPT  # judged with its first fragment, whenever that comes
        return got[0]

    # -- reject and log ---------------------------------------------------------------
    def _reject(self, spec: tuple[str, int, int], fam: int, packet: memoryview,
                f: ct.Fields, now: float) -> None:
        kind, code4, code6 = spec
        proto, src, dst = f[0], f[1], f[2]
        if (dst[0] >= 224 or dst == b"\xff\xff\xff\xff") if fam == 4 else dst[0] == 0xFF:
            return  # RFC 1122 3.2.2, RFC 4443 2.4: no answer to multicast or broadcast
        stack = self.stack
        if kind == "tcp reset" or (kind == "default" and proto == 6):
            if proto != 6 or f[11] == TRUNCATED or f[7] & tcp.RST:
                return  # never a RST for a RST (RFC 9293 3.10.7.1)
            flags, seq, ack = f[7], f[8], f[9]
            out = bytearray(20)
            # RFC 9293 3.10.7.1: as a closed port answers
            if flags & tcp.ACK:
                tcp.build(out, dst, src, f[4], f[3], ack, 0, tcp.RST, 0)
            else:
                end = (seq + f[10] + (1 if flags & tcp.SYN else 0)
                       + (1 if flags & tcp.FIN else 0)) & 0xFFFFFFFF
                tcp.build(out, dst, src, f[4], f[3], 0, end, tcp.RST | tcp.ACK, 0)
            self.stats["rejected"] += 1
            try:
                if fam == 4:
                    stack.send_ip4(dst, src, 6, out, now)
                else:
                    stack.send_ip6(dst, src, 6, out, now)
            except OSError:
                pass
            return
        if (proto == 1 and fam == 4 or proto == 58 and fam == 6) and \
                (f[11] == TRUNCATED or f[5] in _ICMP_ERRORS[fam]):
            return  # RFC 1122 3.2.2: never an error about an error
        self.stats["rejected"] += 1
        if fam == 4:
            stack._icmp4_error(src, dst, icmp4.DEST_UNREACHABLE, code4, packet, now)
        else:
            stack._icmp6_error(src, dst, icmp6.DEST_UNREACHABLE, code6, packet, now)

    def _log(self, log: Log, fam: int, iif: str, oif: str, l4: int, src: bytes, dst: bytes,
             sp: int, dp: int, it: int, ic: int, fl: int, state: int, ln: int) -> None:
        parts = [f"{log.prefix or ''}IN={iif} OUT={oif}",
                 f"SRC={ipaddress.ip_address(src)} DST={ipaddress.ip_address(dst)} LEN={ln}",
                 f"PROTO={_PROTO_NAMES.get(l4, l4)}"]
        if sp >= 0 and l4 not in (1, 58):
            parts.append(f"SPT={sp} DPT={dp}")
        if l4 == 6:
            parts += [name for bit, name in _TCP_FLAG_NAMES if fl & bit]
        elif it >= 0:
            parts.append(f"TYPE={it} CODE={ic}")
        line = " ".join(parts)
        self.log.append(line)
        self.stats["logged"] += 1
        logger.log(_LEVELS[log.level], "%s", line)


def _roles(compiled: Compiled | None) -> dict[str, tuple[bool, bool, bool]]:
    """Which hook points the filter needs, and at each whether it tracks packets there,
    whether it confirms their connections there, and whether a later hook of the same
    packet reads what was tracked (see the module's docstring)."""
    if compiled is None:
        return {}
    chains = set(compiled.hooks)
    if compiled.ruleset.uses_nat():  # NAT rewrites at four points, tracks at the first
        chains |= {"prerouting", "input", "output", "postrouting"}
    roles = {p: (False, False, False) for p in chains}
    if not compiled.conntrack:
        return roles
    post = "postrouting" in chains
    if "prerouting" in chains:
        roles["prerouting"] = (True, False, True)
        roles["input"] = (False, True, False)
        roles["forward"] = (False, not post, False)
    else:
        roles["input"] = (True, True, False)
        roles["forward"] = (True, not post, post)
    roles["output"] = (True, not post, post)
    if post:
        roles["postrouting"] = (False, True, False)
    return roles


#: the stack's TCP states (RFC 9293 names) as nf_conntrack's
_ADOPTED_STATES = {"SYN-SENT": ct.SYN_SENT, "SYN-RECEIVED": ct.SYN_RECV,
                   "ESTABLISHED": ct.ESTABLISHED_, "FIN-WAIT-1": ct.FIN_WAIT,
                   "FIN-WAIT-2": ct.CLOSE_WAIT, "CLOSING": ct.LAST_ACK,
                   "CLOSE-WAIT": ct.CLOSE_WAIT, "LAST-ACK": ct.LAST_ACK,
                   "TIME-WAIT": ct.TIME_WAIT}


def _unreadable(fam: int, packet: memoryview) -> ct.Fields:
    """The fields of a packet whose headers cannot be read past the IP header."""
    if fam == 4:
        return (packet[9], bytes(packet[12:16]), bytes(packet[16:20]), -1, -1, -1, -1, 0, 0,
                0, 0, TRUNCATED, 20)
    return (packet[6], bytes(packet[8:24]), bytes(packet[24:40]), -1, -1, -1, -1, 0, 0, 0,
            0, TRUNCATED, 40)


class FilterApi:
    """The packet filter's calls on a ``Stack`` (a mixin of it)."""

    _packet_filter: PacketFilter | None = None

    @property
    def packet_filter(self) -> PacketFilter:
        """This stack's filter (made on first use)."""
        pf = self._packet_filter
        if pf is None:
            pf = self._packet_filter = PacketFilter(self)  # type: ignore[arg-type]
        return pf

    @property
    def conntrack(self) -> Conntrack:
        """This stack's connection table (made on first use; a ruleset with ``ct state``
        keeps it up to date)."""
        pf = self.packet_filter
        if pf.conntrack is None:
            pf.conntrack = Conntrack()
        return pf.conntrack

    def filter_set(self, text: str, source: str = "<ruleset>") -> None:
        """Replace the whole ruleset by ``text`` (nftables syntax, see docs/filter.md).
        It is parsed and compiled before anything changes: RulesetError (a ValueError
        naming the line and column) leaves the ruleset in force as it was."""
        pf = self.packet_filter
        compiled = pf.compile(text, source)
        with self.locked():  # type: ignore[attr-defined]
            pf.install(compiled)

    def filter_load(self, path: str) -> None:
        """``filter_set`` with the text of the file ``path`` (a regular file of at most
        1 MiB, read with this process's rights)."""
        from threadnet.mgmt.commands import Caller, read_script

        self.filter_set(read_script(Caller.service(), path), source=path)

    def filter_list(self) -> str:
        """The ruleset in force, with its counters, as ``nft list ruleset`` prints it."""
        with self.locked():  # type: ignore[attr-defined]
            return self.packet_filter.text()

    def filter_flush(self) -> None:
        """Remove the ruleset: every packet passes, and the hooks are gone (the direct
        TCP paths come back)."""
        with self.locked():  # type: ignore[attr-defined]
            self.packet_filter.install(None)


__all__ = ["FilterApi", "PacketFilter", "RulesetError", "LOG_RING"]
