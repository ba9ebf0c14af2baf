"""vde_switch's fast spanning tree (``-F``), sans-IO: every entry point takes ``now``.

One instance per VLAN, as vde-2's fstp.c runs it (this is its protocol, not IEEE 802.1w):

- each switch starts as its own root; every ``hello`` seconds (4) it sends a BPDU on every
  non-edge port of each VLAN (untagged, or 802.1Q-tagged on the VLAN's tagged ports);
- a BPDU is compared with the switch's root vector (root id, root path cost including
  the receiving port's cost less its bonus, designated bridge, designated port). Better
  (or worse news on the root port itself): the port becomes the root port, every other
  port that speaks FST is put in discarding (alternate/backup) with a proposal, the root
  port forwards with an agreement, and a topology change follows. Same root but a
  longer path: the port goes discarding unless the sender calls that link its root port,
  in which case it forwards (designated). A worse root: the sender is told ours;
- a topology change flushes the VLAN's forwarding table and is sent (TC flag) on the
  other forwarding ports that speak FST;
- the root port unheard for 3 hellos, or lost (its cable cut): the switch is root
  again and all its ports forward until the next BPDUs settle the tree; an
  alternate port unheard for 16 to 32 s forwards again (its peer stopped speaking FST);
- edge ports (``fstp/setedge``) neither send nor read BPDUs and always forward. Unlike
  vde_switch, which forgets the setting when the port's client leaves or a new one comes,
  an edge port stays one (and one may be set before its client comes, from an rc file):
  a port given to an untrusted user stays out of the tree when the user reconnects.

The engine keeps roles and timers; the switch (``FstHost``) sends its frames, applies
port states (a discarding port neither forwards nor learns) and flushes its table.
"""

from __future__ import annotations

from typing import Protocol

from threadnet.wire import fstp as wire

DEFAULT_PRIORITY = 0x8000
DEFAULT_COST = 20000000  # vde_switch's cost of every port ("1Mbit line")
HELLO = 4
MAX_AGE = HELLO * 10
NUMVLANS = 4096

DISCARDING = wire.STATE_DISCARDING
LEARNING = wire.STATE_LEARNING
FORWARDING = wire.STATE_FORWARDING
STATE_NAMES = {DISCARDING: "Discarding", LEARNING: "Learning", FORWARDING: "Forwarding"}

_NO_DESIGNATED = b"\xff" * 8
#: topology change BPDUs a VLAN may send per second (and in a burst). vde_switch sends them
#: unlimited: when only one end of a redundant link blocks, a TC that enters the blocked
#: end is passed on (BPDUs are read before the port's state is checked) and comes back
#: round the loop at once, a BPDU storm until the next hello blocks the other end too.
#: Rate-limited here, such a loop carries TC_RATE BPDUs a second; the local flush is
#: never limited.
TC_RATE = 10.0
#: forwarding table flushes a VLAN may make per second (and in a burst). A flush walks the
#: whole table, and BPDUs from a port's user can ask for one each; past this rate the
#: flush is deferred to the next tick (at most a second), never dropped.
FLUSH_RATE = 50.0


class FstHost(Protocol):
    """What the engine needs of its switch."""

    def fst_send(self, port: int, frame: bytes) -> None: ...

    def fst_set_state(self, port: int, vlan: int, state: int) -> None: ...

    def fst_flush(self, vlan: int) -> None: ...


class VlanFst:
    """One VLAN's tree: the root vector learnt on the root port, and the port sets."""

    __slots__ = ("root", "cost", "designated", "desport", "rootport", "root_time", "bonusport",
                 "bonuscost", "tc_time", "tc_tokens", "flush_tokens", "flush_pending",
                 "untagged", "tagged", "backup", "edge", "heard")

    def __init__(self) -> None:
        self.root = b""
        self.cost = 0
        self.designated = _NO_DESIGNATED
        self.desport = b"\0\0"
        self.rootport: int | None = None
        self.root_time = 0.0
        self.bonusport = 0
        self.bonuscost = 0
        self.tc_time = 0.0
        self.tc_tokens = TC_RATE
        self.flush_tokens = FLUSH_RATE
        self.flush_pending = False
        self.untagged: set[int] = set()
        self.tagged: set[int] = set()
        self.backup: set[int] = set()  # alternate/backup ports: discarding
        self.edge: set[int] = set()
        self.heard: tuple[set[int], set[int]] = (set(), set())  # BPDUs seen, two periods

    def ports(self) -> list[int]:
        return sorted(self.untagged) + sorted(self.tagged)

    def member(self, port: int) -> bool:
        return port in self.untagged or port in self.tagged

    def active(self, port: int) -> bool:
        """The port's peer speaks FST (a BPDU came in the last two history periods)."""
        return port in self.heard[0] or port in self.heard[1]


class FstEngine:
    """The fast spanning tree of one switch (all its VLANs)."""

    def __init__(self, host: FstHost, mac: bytes, priority: int = DEFAULT_PRIORITY, *,
                 enabled: bool = False, now: float = 0.0, hello: int = HELLO) -> None:
        self.host = host
        self.mac = bytes(mac)
        self.priority = priority
        self.myid = wire.bridge_id(priority, self.mac)
        self.epoch = now  # vde_switch's clock starts at 0 with the switch
        self.hello = hello
        self.max_age = hello * 10
        self.enabled = False
        self.vlans: dict[int, VlanFst] = {}
        self.states: dict[tuple[int, int], int] = {}  # (port, vlan) -> state, when not forwarding
        self.costs: dict[int, int] = {}
        self._index = 0
        self._hellos = 0
        self._next_hello = now + hello
        self.bad_bpdus = 0
        self.topology_changes = 0
        self.tc_limited = 0  # topology changes not passed on (TC_RATE)
        self.new_vlan(0, now)
        if enabled:
            self.set_enabled(True, now)

    # -- configuration -------------------------------------------------------------
    def cost(self, port: int) -> int:
        return self.costs.get(port, DEFAULT_COST)

    def state(self, port: int, vlan: int) -> int:
        return self.states.get((port, vlan), FORWARDING)

    def set_enabled(self, on: bool, now: float) -> None:
        """fstp/setfstp: start (the first hello in ``hello`` s) or stop; stopping makes
        every VLAN's switch its own root with all ports forwarding."""
        if on == self.enabled:
            return
        self.enabled = on
        if on:
            self._next_hello = now + self.hello
        else:
            for vlan in list(self.vlans):
                self.new_vlan(vlan, now)

    def new_vlan(self, vlan: int, now: float) -> None:
        """Create VLAN ``vlan``'s tree, or reset it: this switch is root, no port blocks."""
        v = self.vlans.get(vlan)
        if v is None:
            v = self.vlans[vlan] = VlanFst()
        v.root = self.myid
        v.cost = 0
        v.designated = _NO_DESIGNATED
        v.desport = b"\0\0"
        v.rootport = None
        v.root_time = self.epoch
        for port in sorted(v.backup):
            v.backup.discard(port)
            self._set_state(port, vlan, FORWARDING)

    def remove_vlan(self, vlan: int) -> None:
        v = self.vlans.pop(vlan, None)
        if v is not None:
            for port in v.ports():
                self.states.pop((port, vlan), None)

    def add_port(self, vlan: int, port: int, tagged: bool, now: float) -> None:
        """Port ``port`` is now an active member of ``vlan`` (tagged or not)."""
        v = self.vlans.get(vlan)
        if v is None:
            return
        (v.untagged.discard if tagged else v.tagged.discard)(port)
        (v.tagged.add if tagged else v.untagged.add)(port)
        v.backup.discard(port)
        v.heard[0].discard(port)
        v.heard[1].discard(port)
        self.states.pop((port, vlan), None)  # an activated port forwards
        if port not in v.edge:
            self._send(vlan, port, now)
        self._topology_change(vlan, port, now)

    def del_port(self, vlan: int, port: int, now: float) -> None:
        """Port ``port`` left ``vlan`` or lost its last endpoint (a cable was cut)."""
        v = self.vlans.get(vlan)
        if v is None:
            return
        v.untagged.discard(port)
        v.tagged.discard(port)
        v.backup.discard(port)
        self.states.pop((port, vlan), None)
        if port == v.rootport:
            self.new_vlan(vlan, now)
        self._topology_change(vlan, port, now)

    def set_edge(self, vlan: int, port: int, on: bool) -> None:
        v = self.vlans[vlan]
        if on:
            v.edge.add(port)
            v.backup.discard(port)  # (vde_switch leaves it listed; an edge is never one)
            if v.member(port):
                self._set_state(port, vlan, FORWARDING)
        else:
            v.edge.discard(port)
            v.backup.discard(port)

    def set_bonus(self, vlan: int, port: int, cost: int) -> None:
        v = self.vlans[vlan]
        v.bonusport = port
        v.bonuscost = cost

    # -- time ----------------------------------------------------------------------
    def next_deadline(self) -> float | None:
        return self._next_hello if self.enabled else None

    def tick(self, now: float) -> None:
        """Run the hello timer and deferred flushes: call at least once a second."""
        for vlan, v in self.vlans.items():
            if v.flush_pending:
                v.flush_pending = False
                self.host.fst_flush(vlan)
        if not self.enabled or now < self._next_hello:
            return
        self._next_hello += self.hello
        if self._next_hello <= now:  # far behind (a suspended process): do not burst
            self._next_hello = now + self.hello
        self._hellos += 1
        for vlan in sorted(self.vlans):
            self._hello_vlan(vlan, now)
        if self._hellos % 4 == 0:
            self._index = 1 - self._index
            for vlan, v in self.vlans.items():
                for port in sorted(v.backup):
                    if not v.active(port):  # its peer stopped speaking FST
                        v.backup.discard(port)
                        self._set_state(port, vlan, FORWARDING)
                v.heard[self._index].clear()

    def _hello_vlan(self, vlan: int, now: float) -> None:
        v = self.vlans[vlan]
        if v.rootport is not None and now - v.root_time > 3 * self.hello:
            self.new_vlan(vlan, now)  # the root went silent
        for port in v.ports():
            if port not in v.edge:
                self._send(vlan, port, now, agreement=True, force=True)

    # -- BPDUs ---------------------------------------------------------------------
    def _flags(self, v: VlanFst, vlan: int, port: int, agreement: bool, tc: bool,
               tc_ack: bool) -> int:
        backup = port in v.backup
        return (int(tc) | int(backup) << 1 | int(not backup) << 2
                | int(v.rootport != port) << 3 | self.state(port, vlan) << 4
                | int(agreement) << 6 | int(tc_ack) << 7)

    def _send(self, vlan: int, port: int, now: float, *, agreement: bool = False,
              tc: bool = False, force: bool = False) -> None:
        if not (self.enabled or force):
            return
        v = self.vlans[vlan]
        age = 0 if v.rootport is None else int(now - v.root_time)
        bpdu = wire.Bpdu(self._flags(v, vlan, port, agreement, tc, False), v.root, v.cost,
                         self.myid, wire.port_id(port), age, self.max_age, self.hello, 0)
        if port in v.untagged:
            self.host.fst_send(port, wire.build(self.mac, bpdu))
        if port in v.tagged:
            self.host.fst_send(port, wire.build(self.mac, bpdu, vlan))

    def _set_state(self, port: int, vlan: int, state: int) -> None:
        if state == FORWARDING:
            self.states.pop((port, vlan), None)
        else:
            self.states[(port, vlan)] = state
        self.host.fst_set_state(port, vlan, state)

    def _topology_change(self, vlan: int, origin: int, now: float) -> None:
        """Flush the VLAN's table and tell the other forwarding FST ports."""
        v = self.vlans[vlan]
        elapsed = max(0.0, now - v.tc_time)
        v.tc_tokens = min(TC_RATE, v.tc_tokens + elapsed * TC_RATE)
        v.flush_tokens = min(FLUSH_RATE, v.flush_tokens + elapsed * FLUSH_RATE)
        v.tc_time = now
        self.topology_changes += 1
        if v.flush_tokens >= 1:
            v.flush_tokens -= 1
            v.flush_pending = False
            self.host.fst_flush(vlan)
        else:
            v.flush_pending = True  # done by the next tick
        if v.tc_tokens < 1:
            self.tc_limited += 1
            return
        v.tc_tokens -= 1
        for port in v.ports():
            if port != origin and port not in v.backup and port not in v.edge and v.active(port):
                self._send(vlan, port, now, tc=True)

    def _fast_protocol(self, vlan: int, rootport: int, now: float) -> None:
        """A new root port: block every other FST port (proposal), then forward on the
        root port (agreement)."""
        v = self.vlans[vlan]
        for port in v.ports():
            if port != rootport and port not in v.backup and port not in v.edge and v.active(port):
                self._set_state(port, vlan, DISCARDING)
                v.backup.add(port)
                self._send(vlan, port, now)
        v.backup.discard(rootport)
        self._set_state(rootport, vlan, FORWARDING)
        self._send(vlan, rootport, now, agreement=True)

    def input(self, port: int, vlan: int, tagged: bool, frame: bytes | memoryview,
              now: float) -> None:
        """A BPDU arrived on ``port`` in ``vlan`` (the switch consumed it: never forwarded)."""
        v = self.vlans.get(vlan)
        if v is None or port in v.edge:
            return
        v.heard[self._index].add(port)
        try:
            b = wire.parse(frame, tagged)
        except ValueError:
            self.bad_bpdus += 1
            return
        if b.flags & wire.TC:
            self._topology_change(vlan, port, now)
        cost = (b.cost + self.cost(port) - (v.bonuscost if port == v.bonusport else 0)) & 0xFFFFFFFF
        mine = v.root + v.cost.to_bytes(4, "big") + v.designated + v.desport
        theirs = b.root + cost.to_bytes(4, "big") + b.bridge + b.port
        if mine == theirs:
            v.root_time = now  # the root's hello, relayed on the root port
        elif mine > theirs or port == v.rootport:
            # a better root or path, or worse news on the root port itself
            if v.root <= self.mac + b"\x00\x27":  # vde_switch compares with its BPDU's source
                self.new_vlan(vlan, now)
            v.root, v.cost, v.designated, v.desport = b.root, cost, b.bridge, b.port
            v.rootport = port
            v.root_time = now
            self._fast_protocol(vlan, port, now)
            self._topology_change(vlan, port, now)
        elif v.root == b.root:
            # the same root by a longer path: the link is ours to forward on (designated)
            # only when the sender uses it as its root port
            if b.flags & wire.ROLE_MASK == wire.ROLE_ROOT:
                if port in v.backup:
                    v.backup.discard(port)
                    self._set_state(port, vlan, FORWARDING)
                    self._topology_change(vlan, port, now)
            elif port not in v.backup:
                v.backup.add(port)
                self._set_state(port, vlan, DISCARDING)
                self._topology_change(vlan, port, now)
        else:
            self._send(vlan, port, now)  # the sender must learn our (better) root

    # -- reports -------------------------------------------------------------------
    def role(self, vlan: int, port: int) -> str:
        v = self.vlans[vlan]
        if not v.member(port):
            return "Unknown"
        if port in v.edge:
            return "Edge"
        if port == v.rootport:
            return "Root"
        if port in v.backup:
            return "Alternate/Backup"
        return "Designated"

    def print_lines(self, vlan: int, now: float) -> list[str]:
        """fstp/print's lines for one VLAN, in vde_switch's format."""
        v = self.vlans[vlan]
        lines = [f"FST DATA VLAN {vlan:04d} {'ROOTSWITCH' if v.root == self.myid else ''} "
                 f"{'' if self.enabled else 'FSTP IS DISABLED'}",
                 f" ++ root {wire.format_id(v.root)}",
                 f" ++ designated {wire.format_id(v.designated)}",
                 f" ++ rootport {v.rootport or 0:04d} cost {v.cost} age {int(now - v.root_time)} "
                 f"bonusport {v.bonusport:04d} bonuscost {v.bonuscost}"]
        for tagged, ports in ((0, sorted(v.untagged)), (1, sorted(v.tagged))):
            for port in ports:
                lines.append(f" -- Port {port:04d} tagged={tagged} portcost={self.cost(port)} "
                             f"role={self.role(vlan, port)}")
        return lines


__all__ = ["FstEngine", "FstHost", "VlanFst", "DEFAULT_PRIORITY", "DEFAULT_COST", "DISCARDING",
           "LEARNING", "FORWARDING", "STATE_NAMES"]
