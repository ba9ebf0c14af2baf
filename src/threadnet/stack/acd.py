"""IPv4 address conflict detection (RFC 5227), sans-IO: one ``Acd`` per address.

An address added with conflict detection is not used at first: after a random wait of
up to ``PROBE_WAIT`` it sends ``PROBE_NUM`` ARP probes (sender address 0.0.0.0)
``PROBE_MIN``..``PROBE_MAX`` seconds apart, then waits ``ANNOUNCE_WAIT``. Any ARP packet
from someone else whose sender address is ours, or another host's probe for it, is a
conflict: the address is marked conflicting and never used. Otherwise it becomes usable
and is announced ``ANNOUNCE_NUM`` times (``ANNOUNCE_INTERVAL`` apart). An address in use
defends itself once (an announcement) against a conflicting ARP packet, and gives up on a
second one within ``DEFEND_INTERVAL`` (2.4, option b).

The stack calls ``on_timer(now)`` when ``deadline`` is due and ``on_arp`` for the ARP
packets of the interface, and does what they answer.
"""

from __future__ import annotations

import random

PROBE_WAIT = 1.0
PROBE_NUM = 3
PROBE_MIN = 1.0
PROBE_MAX = 2.0
ANNOUNCE_WAIT = 2.0
ANNOUNCE_NUM = 2
ANNOUNCE_INTERVAL = 2.0
DEFEND_INTERVAL = 10.0

PROBING, ANNOUNCING, BOUND, CONFLICT = "tentative", "announcing", "bound", "conflict"
ANY4 = bytes(4)

#: the answers: what the stack sends now
ARP_PROBE, ARP_ANNOUNCE, DEFEND = "probe", "announce", "defend"


class Acd:
    __slots__ = ("addr", "plen", "state", "deadline", "probes", "announces", "last_defend",
                 "rng")

    def __init__(self, addr: bytes, plen: int, now: float,
                 rng: random.Random | None = None) -> None:
        self.addr = addr
        self.plen = plen
        self.rng = rng or random.Random()
        self.state = PROBING
        self.probes = 0
        self.announces = 0
        self.last_defend: float | None = None
        self.deadline: float | None = now + self.rng.uniform(0.0, PROBE_WAIT)

    @property
    def usable(self) -> bool:
        """Probing ended without a conflict: the address is in use."""
        return self.state in (ANNOUNCING, BOUND)

    def on_timer(self, now: float) -> str | None:
        """ARP_PROBE or ARP_ANNOUNCE (send one now) or None. ``usable`` turns True with the first
        announcement (RFC 5227 2.3: the address is used from then on)."""
        if self.deadline is None or now < self.deadline:
            return None
        if self.state == PROBING:
            if self.probes < PROBE_NUM:
                self.probes += 1
                self.deadline = now + (self.rng.uniform(PROBE_MIN, PROBE_MAX)
                                       if self.probes < PROBE_NUM else ANNOUNCE_WAIT)
                return ARP_PROBE
            self.state = ANNOUNCING
        if self.state == ANNOUNCING:
            self.announces += 1
            if self.announces < ANNOUNCE_NUM:
                self.deadline = now + ANNOUNCE_INTERVAL
            else:
                self.state = BOUND
                self.deadline = None
            return ARP_ANNOUNCE
        self.deadline = None
        return None

    def on_arp(self, op_request: bool, sha: bytes, spa: bytes, tpa: bytes, our_mac: bytes,
               now: float) -> str | None:
        """An ARP packet that arrived: CONFLICT (the address must not be used any more),
        DEFEND (send an announcement now) or None."""
        if sha == our_mac or self.state == CONFLICT:
            return None
        if self.state == PROBING:
            # 2.1.1: anyone using it, or probing for it at the same time
            if spa == self.addr or (op_request and spa == ANY4 and tpa == self.addr):
                return self._conflict()
            return None
        if spa != self.addr:
            return None
        if self.last_defend is not None and now - self.last_defend < DEFEND_INTERVAL:
            return self._conflict()
        self.last_defend = now
        return DEFEND

    def _conflict(self) -> str:
        self.state = CONFLICT
        self.deadline = None
        return CONFLICT
