"""The core's side of raw IP, ping and packet sockets: taps on IP input and on frames.

Like the IP layer's hooks, the taps are part of what runs a stack, not of its state
(``Stack.RUNTIME``): ``Stack.raw_taps`` is a tuple of owners that see every IP packet
delivered locally (raw(7): a copy, before the protocol's own handler), and
``Stack.packet_taps`` maps an interface index (0: every interface) to the owners that
see its frames in and out (packet(7)). Both are empty when no such socket is open, so
the data path pays one truthiness test for each; while a tap that needs them is open the
direct TCP input paths and cached output paths are off (``Stack._hooks_changed``), so
every packet passes the points below.

An IP tap has ``family``, ``proto`` and ``on_ip(iface, src, dst, header, payload)``; a
frame tap has ``outgoing`` (whether it wants frames we send: ETH_P_ALL taps, as Linux's
ptype_all) and ``on_frame(iface, frame, outgoing)``. Taps are called under the stack's
lock and must not block.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Any

from threadnet.errors import LinkError

if TYPE_CHECKING:
    from threadnet.stack.stack import Interface, Stack


def deliver_ip(stack: Stack, iface: Interface, family: int, proto: int, src: bytes,
               dst: bytes, header: Any, payload: Any) -> bool:
    """Give a locally delivered packet to the IP taps of its family and protocol;
    whether any took it (a raw socket for a protocol the stack does not speak
    keeps the ICMP protocol unreachable from going out, as on Linux)."""
    seen = False
    for tap in stack.raw_taps:
        if tap.family == family and tap.proto == proto:
            seen = True
            tap.on_ip(iface, src, dst, header, payload)
    return seen


def echo_unreachable(stack: Stack, family: int, ident: int, dst: bytes, err: int) -> None:
    """Our own echo request with identifier ``ident`` to ``dst`` could not go (nobody
    answered for its next hop): its ping socket hears of it."""
    for tap in stack.raw_taps:
        fail = getattr(tap, "on_echo_unreachable", None)
        if fail is not None:
            fail(family, ident, dst, err)


def tap_frame(stack: Stack, iface: Interface, frame: Any, outgoing: bool,
              sender: Any = None) -> None:
    """Give a frame received on (or sent out of) ``iface`` to its packet taps."""
    taps = stack.packet_taps
    for tap in (*taps.get(iface.index, ()), *taps.get(0, ())):
        if tap is sender or (outgoing and not tap.outgoing):
            continue
        tap.on_frame(iface, frame, outgoing)


def add_tap(stack: Stack, tap: Any, ifindex: int | None = None) -> None:
    """Install an IP tap, or (with ``ifindex``) a frame tap on that interface."""
    if ifindex is None:
        stack.raw_taps = (*stack.raw_taps, tap)
    else:
        stack.packet_taps[ifindex] = (*stack.packet_taps.get(ifindex, ()), tap)
    stack._hooks_changed()


def remove_tap(stack: Stack, tap: Any) -> None:
    """Remove a tap wherever it is installed (nothing if it is not)."""
    stack.raw_taps = tuple(t for t in stack.raw_taps if t is not tap)
    for index, taps in list(stack.packet_taps.items()):
        left = tuple(t for t in taps if t is not tap)
        if left:
            stack.packet_taps[index] = left
        else:
            del stack.packet_taps[index]
    stack._hooks_changed()


def needs_slow_path(stack: Stack) -> bool:
    """Whether an open tap must see what the direct TCP paths pass by: any frame tap,
    or an IP tap for a protocol other than ICMP."""
    return bool(stack.packet_taps) or any(t.proto not in (1, 58) for t in stack.raw_taps)


def send_frame(stack: Stack, iface: Interface, frame: bytes, sender: Any = None) -> None:
    """Send a whole Ethernet frame out of ``iface`` (a packet socket's), counted as
    the stack's own, and show it to the other packet taps as outgoing."""
    link = stack.links.get(iface.index)
    if link is None or not iface.up:
        raise OSError(errno.ENETDOWN, f"{iface.name} is down or has no link")
    if len(frame) > iface.mtu + 14:
        raise OSError(errno.EMSGSIZE, "Message too long")
    try:
        link.send(frame)
    except LinkError:
        iface.tx_dropped += 1
        return
    iface.tx_packets += 1
    iface.tx_bytes += len(frame)
    if stack.packet_taps:
        tap_frame(stack, iface, frame, True, sender)
