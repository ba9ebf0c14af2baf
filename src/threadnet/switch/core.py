"""Ports, VLANs and frame forwarding (vde-2 port.c semantics), with no I/O of its own.

An Endpoint is anything with ``send(data)``; the server's endpoints wrap datagram
sockets, tests use lists. ``Switch.input(port, view, n, now)`` forwards one frame that
arrived on ``port``: it learns the source, then sends to the learned port or floods the
frame's VLAN, adding or removing the 802.1Q tag per output port.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from time import monotonic

from threadnet.switch.fdb import ForwardingTable
from threadnet.switch.fstp import DISCARDING, FORWARDING, FstEngine
from threadnet.wire.ethernet import add_tag, strip_tag
from threadnet.wire.fstp import BPDU_DST

NUMPORTS = 32
NOVLAN = 0xFFF  # an untagged VLAN of 4095 means "untagged frames are dropped"
MAX_FRAME = 1518  # 1500 + 14 + one 802.1Q tag; longer datagrams are dropped
_VLAN_SUFFIX = [v.to_bytes(2, "big") for v in range(4096)]  # forwarding-table key suffixes


class Endpoint:
    """One client connection on a port. Subclasses override ``send`` and ``close``."""

    def __init__(self, ident: int, description: str = "", uid: int = -1, module: str = "unix") -> None:
        self.ident = ident
        self.description = description
        self.uid = uid
        self.module = module
        self.port: Port | None = None
        self.drops = 0

    def send(self, data: bytes | memoryview) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def close(self) -> None:
        pass


class Port:
    """A switch port: its endpoints, VLAN membership, ACL and counters."""

    __slots__ = ("number", "endpoints", "senders", "vlan", "tagged", "user", "group", "allocatable",
                 "persistent", "in_pkts", "in_bytes", "out_pkts", "out_bytes", "capture",
                 "discard", "nofwd")

    def __init__(self, number: int, *, allocatable: bool = True, persistent: bool = False) -> None:
        self.number = number
        self.endpoints: list[Endpoint] = []
        self.senders: list[Callable[[bytes | memoryview], None]] = []  # endpoints' send methods
        self.vlan = 0
        self.tagged: set[int] = set()
        self.user: int | None = None
        self.group: int | None = None
        self.allocatable = allocatable
        self.persistent = persistent
        self.capture: Callable[[bytes | memoryview], None] | None = None
        # the fast spanning tree's port states: VLANs where this port neither learns nor
        # forwards (discarding), and where it does not forward (discarding or learning)
        self.discard: set[int] = set()
        self.nofwd: set[int] = set()
        self.reset_counters()

    def reset_counters(self) -> None:
        self.in_pkts = self.in_bytes = self.out_pkts = self.out_bytes = 0

    @property
    def active(self) -> bool:
        return bool(self.endpoints)

    def send(self, data: bytes | memoryview, n: int) -> None:
        self.out_pkts += 1
        self.out_bytes += n
        if self.capture is not None:
            self.capture(data)
        for send in self.senders:
            send(data)


class Switch:
    """The forwarding plane and its configuration. Not thread-safe: one loop drives it."""

    def __init__(self, numports: int = NUMPORTS, *, hub: bool = False,
                 fdb: ForwardingTable | None = None, max_frame: int = MAX_FRAME,
                 mac: bytes | None = None, priority: int = 0x8000, fstp: bool = False,
                 clock: Callable[[], float] = monotonic) -> None:
        if numports < 1:
            raise ValueError("a switch needs at least one port")
        self.numports = numports
        self.hub = hub
        self.fdb = fdb if fdb is not None else ForwardingTable()
        self.max_frame = max_frame
        self.ports: dict[int, Port] = {}
        self.vlans: set[int] = {0}
        self.dropped_short = 0
        self.dropped_long = 0
        self.dropped_vlan = 0
        self._flood: dict[int, list[tuple[Port, bool]]] = {}
        self._active: list[Port] = []
        self.on_capture: Callable[[bytes | memoryview], None] | None = None
        self.capturing = False  # any capture hook set (checked once per frame)
        self.dropped_blocked = 0
        # the fast spanning tree (vde_switch -F): its configuration events (ports and VLANs
        # coming and going) read ``clock``; frames and ticks bring their own time
        self.clock = clock
        self.fst = FstEngine(self, mac if mac is not None else b"\x00\xff" + os.urandom(4),
                             priority, now=clock())
        self.fst_on = False  # the engine's BPDUs are consumed, not forwarded
        if fstp:
            self.set_fstp(True)

    # -- ports and endpoints -------------------------------------------------------
    def free_port(self) -> int | None:
        """The first port (from 1) that an unnamed request may take."""
        for n in range(1, self.numports):
            p = self.ports.get(n)
            if p is None or (not p.endpoints and p.allocatable):
                return n
        return None

    def may_attach(self, port: Port, uid: int, gids: set[int]) -> bool:
        """Port ACL (port/setuser, port/setgroup); uid 0 is always allowed."""
        if uid == 0:
            return True
        if port.user is not None and port.user != uid:
            return False
        if port.group is not None and port.group not in gids:
            return False
        # several endpoints may share a port only when they belong to the same user
        return all(ep.uid == uid for ep in port.endpoints)

    def attach(self, number: int, endpoint: Endpoint) -> Port:
        """Add ``endpoint`` to port ``number`` (creating it). Raises OSError."""
        if not 0 <= number < self.numports:
            raise OSError(errno.EINVAL, f"port {number} out of range 0..{self.numports - 1}")
        port = self.ports.get(number)
        if port is None:
            port = self.ports[number] = Port(number)
        port.endpoints.append(endpoint)
        endpoint.port = port
        self._rebuild()
        if len(port.endpoints) == 1:  # the port becomes active in its VLANs
            now = self.clock()
            for vlan in sorted(self._memberships(port)):
                self.fst.add_port(vlan, number, vlan != port.vlan, now)
        return port

    def detach(self, endpoint: Endpoint) -> None:
        port = endpoint.port
        if port is None:
            return
        endpoint.port = None
        if endpoint in port.endpoints:
            port.endpoints.remove(endpoint)
        endpoint.close()
        if not port.endpoints:
            self.fdb.forget_port(port)
            if not port.persistent:
                del self.ports[port.number]
            self._rebuild()
            now = self.clock()
            for vlan in sorted(self._memberships(port)):
                self._fst_leave(port, vlan, now)
            return
        self._rebuild()

    def create_port(self, number: int) -> Port:
        if not 0 <= number < self.numports:
            raise OSError(errno.EINVAL, "port out of range")
        if number in self.ports:
            raise OSError(errno.EEXIST, "port exists")
        port = self.ports[number] = Port(number, allocatable=False, persistent=True)
        self._rebuild()
        return port

    def remove_port(self, number: int) -> None:
        port = self.ports.get(number)
        if port is None:
            raise OSError(errno.ENXIO, "no such port")
        for ep in list(port.endpoints):
            self.detach(ep)
        self.ports.pop(number, None)
        self._rebuild()

    # -- VLANs ---------------------------------------------------------------------
    def set_port_vlan(self, number: int, vlan: int) -> None:
        port = self.ports.get(number)
        if not 0 <= number < self.numports:
            raise OSError(errno.EINVAL, "port out of range")
        if vlan not in self.vlans and vlan != NOVLAN:
            raise OSError(errno.ENXIO, "no such VLAN")
        if port is None:
            raise OSError(errno.ENXIO, "no such port")
        old = port.vlan
        port.vlan = vlan
        port.tagged.discard(vlan)
        self.fdb.forget_port(port)
        self._rebuild()
        if port.endpoints:
            now = self.clock()
            if old != NOVLAN:
                self._fst_leave(port, old, now)
            if vlan != NOVLAN:
                self.fst.add_port(vlan, number, False, now)

    def create_vlan(self, vlan: int) -> None:
        if not 0 < vlan < NOVLAN:  # VLAN 0 always exists and 4095 means "none"
            raise OSError(errno.EINVAL, "VLAN out of range 0..4094")
        if vlan in self.vlans:
            raise OSError(errno.EEXIST, "VLAN exists")
        self.vlans.add(vlan)
        self.fst.new_vlan(vlan, self.clock())

    def remove_vlan(self, vlan: int) -> None:
        if vlan not in self.vlans or vlan == 0:
            raise OSError(errno.ENXIO if vlan not in self.vlans else errno.EINVAL, "cannot remove")
        if any(p.vlan == vlan or vlan in p.tagged for p in self.ports.values()):
            raise OSError(errno.EADDRINUSE, "VLAN has ports")
        self.vlans.discard(vlan)
        self.fst.remove_vlan(vlan)

    def add_tagged(self, vlan: int, number: int) -> None:
        if not 0 <= vlan < NOVLAN:
            raise OSError(errno.EINVAL, "VLAN out of range")
        if vlan not in self.vlans:
            raise OSError(errno.ENXIO, "no such VLAN")
        port = self.ports.get(number)
        if port is None:
            raise OSError(errno.ENXIO, "no such port")
        if port.vlan == vlan:
            return  # already an (untagged) member: nothing to do, as vde_switch
        new = vlan not in port.tagged
        port.tagged.add(vlan)
        self._rebuild()
        if new and port.endpoints:
            self.fst.add_port(vlan, number, True, self.clock())

    def del_tagged(self, vlan: int, number: int) -> None:
        if not 0 <= vlan < NOVLAN:
            raise OSError(errno.EINVAL, "VLAN out of range")
        if vlan not in self.vlans:
            raise OSError(errno.ENXIO, "no such VLAN")
        port = self.ports.get(number)
        if port is None:
            raise OSError(errno.ENXIO, "no such port")
        if vlan not in port.tagged:
            return  # not a member: nothing to do, as vde_switch
        port.tagged.discard(vlan)
        self.fdb.forget_port(port)
        self._rebuild()
        if port.endpoints:
            self._fst_leave(port, vlan, self.clock())

    # -- fast spanning tree ----------------------------------------------------------
    @staticmethod
    def _memberships(port: Port) -> set[int]:
        return port.tagged | ({port.vlan} if port.vlan != NOVLAN else set())

    def _fst_leave(self, port: Port, vlan: int, now: float) -> None:
        if vlan in port.nofwd:
            port.discard.discard(vlan)
            port.nofwd.discard(vlan)
            self._rebuild()
        self.fst.del_port(vlan, port.number, now)

    def set_fstp(self, on: bool, now: float | None = None) -> None:
        """Run the fast spanning tree (vde_switch -F, fstp/setfstp); never in hub mode."""
        if on and self.hub:
            raise OSError(errno.EINVAL, "Can't use fstp in hub mode")
        self.fst.set_enabled(on, self.clock() if now is None else now)
        self.fst_on = self.fst.enabled

    def fst_send(self, number: int, frame: bytes) -> None:
        port = self.ports.get(number)
        if port is not None and port.endpoints:
            port.send(frame, len(frame))

    def fst_set_state(self, number: int, vlan: int, state: int) -> None:
        port = self.ports.get(number)
        if port is None or not (vlan == port.vlan or vlan in port.tagged):
            return
        (port.discard.add if state == DISCARDING else port.discard.discard)(vlan)
        (port.nofwd.discard if state == FORWARDING else port.nofwd.add)(vlan)
        self._rebuild()

    def fst_flush(self, vlan: int) -> None:
        self.fdb.forget_vlan(vlan)

    def _rebuild(self) -> None:
        """Recompute the flood lists (per VLAN: active member ports and whether tagged)."""
        for p in self.ports.values():
            p.senders = [ep.send for ep in p.endpoints]
        self.capturing = self.on_capture is not None or any(
            p.capture is not None for p in self.ports.values())
        active = [p for _, p in sorted(self.ports.items()) if p.endpoints]
        self._active = active
        flood: dict[int, list[tuple[Port, bool]]] = {}
        for p in active:
            if p.vlan != NOVLAN and p.vlan not in p.nofwd:
                flood.setdefault(p.vlan, []).append((p, False))
            for v in p.tagged:
                if v not in p.nofwd:
                    flood.setdefault(v, []).append((p, True))
        self._flood = flood

    # -- forwarding ----------------------------------------------------------------
    def input(self, port: Port, mv: memoryview, n: int, now: float) -> None:
        """Forward the frame ``mv[:n]`` that arrived on ``port`` at time ``now``."""
        if n < 14:
            self.dropped_short += 1
            return
        if n > self.max_frame:
            self.dropped_long += 1
            return
        port.in_pkts += 1
        port.in_bytes += n
        frame = mv[:n]
        if self.capturing:
            if self.on_capture is not None:
                self.on_capture(frame)
            if port.capture is not None:
                port.capture(frame)
        if self.hub:
            for p in self._active:
                if p is not port:
                    p.send(frame, n)
            return
        if mv[12] == 0x81 and mv[13] == 0x00:
            if n < 18:
                self.dropped_short += 1
                return
            vlan = ((mv[14] & 0x0F) << 8) | mv[15]
            # accepted from any member of the VLAN, tagged or untagged (as vde_switch does)
            if vlan not in port.tagged and vlan != port.vlan:
                self.dropped_vlan += 1
                return
            tagged_in = True
        else:
            vlan = port.vlan
            if vlan == NOVLAN:
                self.dropped_vlan += 1
                return
            tagged_in = False
        if self.fst_on and mv[0] == 0x01 and mv[:6] == BPDU_DST:
            self.fst.input(port.number, vlan, tagged_in, frame, now)
            return  # BPDUs are consumed, never forwarded
        if port.discard and vlan in port.discard:
            self.dropped_blocked += 1  # a discarding port neither learns nor forwards
            return
        entries = self.fdb.entries
        macs = mv[:12].tobytes()  # one copy; slicing bytes is cheaper than slicing views
        if not macs[6] & 1:  # learn unicast sources only
            key = macs[6:]
            if vlan:
                key += _VLAN_SUFFIX[vlan]
            e = entries.get(key)
            if e is None:
                self.fdb.learn(macs[6:], vlan, port, now)
            elif e[0] is port:
                e[1] = now
            elif now - e[1] >= self.fdb.min_persistence:
                e[0] = port
                e[1] = now
        if not macs[0] & 1:
            key = macs[:6]
            if vlan:
                key += _VLAN_SUFFIX[vlan]
            e = entries.get(key)
            if e is not None and not (e[0].nofwd and vlan in e[0].nofwd):
                out = e[0]
                if out is port:
                    return  # never back out of the port it came from
                if out.vlan == vlan:
                    out_tagged = False
                elif vlan in out.tagged:
                    out_tagged = True
                else:
                    return
                if out_tagged == tagged_in:
                    out.send(frame, n)
                elif out_tagged:
                    data = add_tag(frame, vlan)
                    out.send(data, len(data))
                else:
                    data = strip_tag(frame)
                    out.send(data, len(data))
                return
        members = self._flood.get(vlan)
        if not members:
            return
        other = None
        for out, out_tagged in members:
            if out is port:
                continue
            if out_tagged == tagged_in:
                out.send(frame, n)
            else:
                if other is None:
                    other = add_tag(frame, vlan) if out_tagged else strip_tag(frame)
                out.send(other, len(other))

    def set_capture(self, number: int | None,
                    hook: Callable[[bytes | memoryview], None] | None) -> None:
        """Set the capture hook of port ``number``, or of the whole switch (None)."""
        if number is None:
            self.on_capture = hook
        else:
            self.ports[number].capture = hook
        self._rebuild()

    def expire(self, now: float) -> int:
        return self.fdb.gc(now)


def uid_name(uid: int | None) -> str:
    import pwd

    if uid is None or uid < 0:
        return "NONE"
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def gid_name(gid: int | None) -> str:
    import grp

    if gid is None or gid < 0:
        return "NONE"
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def user_gids(uid: int) -> set[int]:
    """The groups of ``uid`` (primary and supplementary), for port ACLs."""
    import grp
    import pwd

    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        return set()
    gids = {pw.pw_gid}
    gids.update(g.gr_gid for g in grp.getgrall() if pw.pw_name in g.gr_mem)
    return gids


__all__ = ["Endpoint", "Port", "Switch", "NOVLAN", "MAX_FRAME"]
