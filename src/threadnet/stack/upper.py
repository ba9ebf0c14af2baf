"""The layer above a stack's core, as the core sees it: owners named by handles.

A stack's protocol state (interfaces, addresses, routes, neighbors, UDP ports, TCP
connections and listeners, pings) is plain data: it names who owns a UDP port, a
connection, a listener or a ping by a handle, an int, never by a callable, a socket or a
thread. So the state can be copied, pickled and compared, and moved to another process
(where the owners register again under the same handles).

``Stack.upper`` (an ``Owners``, one per stack) maps handles to owner objects and is what
the core calls when something happens to one, under the stack's lock:

==============================================  =========================================
``on_udp(handle, data, src, dst)``              a datagram for a bound UDP port
``on_udp_error(handle, err, dst, port)``        one the port sent could not go
``on_tcp_event(handle, endpoint)``              a connection changed (data, space, state)
``on_tcp_ready(handle, listener)``              a connection waits to be accepted
``on_tcp_closed(handle, listener)``             the stack closed the listener
``on_ping_done(handle, session)``               a ping ended
``on_echo(handle, family, src, dst, rest, data)``  an echo request to an address not
                                                ours, in catch-all mode (``Stack.catch_all``)
``on_syn(handle, key)``                          a SYN held for the catch-all listener
                                                (``TcpLayer.release_syn`` answers it)
``release(handle)``                             the core names the handle no more
==============================================  =========================================

The owner registered for a handle has the methods of the same names without the handle
(``on_udp(data, src, dst)``...), for the kinds it owns. A handle with no owner (a stack
just restored, whose owners have not registered yet) gets nothing: its events are lost,
as a datagram to a socket that is gone.

Handles come from ``add``, which the upper layer (``stack/socket.py``, the resolver)
calls before it names the handle to the core; the core releases the entry when its state
stops naming the handle (a port unbound, a connection's owner gone, a listener closed, a
ping ended), so the table holds no more than the state refers to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Owners:
    """A stack's owners by handle (``Stack.upper``): where the core's events go."""

    __slots__ = ("owners", "next_handle", "tcp_events")

    def __init__(self, next_handle: int = 1) -> None:
        self.owners: dict[int, Any] = {}
        #: the next handle ``add`` gives; saved with the stack's state, so that handles
        #: stay unique after a stack is restored
        self.next_handle = next_handle
        #: each connection owner's ``on_tcp_event``, bound once: the TCP layer calls it
        #: after every flush, so it takes it from here (one lookup, no call in between)
        self.tcp_events: dict[int, Callable[[Any], None]] = {}

    def add(self, owner: Any) -> int:
        """Register ``owner``; returns its handle (1 and up: never false)."""
        handle = self.next_handle
        self.next_handle = handle + 1
        self.put(handle, owner)
        return handle

    def put(self, handle: int, owner: Any) -> None:
        """Register ``owner`` under a handle the state already names (after a restore)."""
        self.owners[handle] = owner
        event = getattr(owner, "on_tcp_event", None)
        if event is not None:
            self.tcp_events[handle] = event
        if handle >= self.next_handle:
            self.next_handle = handle + 1

    def get(self, handle: int | None) -> Any:
        return self.owners.get(handle)  # type: ignore[arg-type]

    def release(self, handle: int) -> None:
        self.owners.pop(handle, None)
        self.tcp_events.pop(handle, None)

    def __len__(self) -> int:
        return len(self.owners)

    # -- the core's calls (under the stack's lock) -------------------------------------
    def on_udp(self, handle: int, data: bytes, src: tuple[str, int],
               dst: tuple[str, int]) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_udp(data, src, dst)

    def on_udp_error(self, handle: int, err: int, dst: bytes, port: int) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_udp_error(err, dst, port)

    def on_tcp_event(self, handle: int, endpoint: Any) -> None:
        event = self.tcp_events.get(handle)
        if event is not None:
            event(endpoint)

    def on_tcp_ready(self, handle: int, listener: Any) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_tcp_ready(listener)

    def on_tcp_closed(self, handle: int, listener: Any) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_tcp_closed(listener)

    def on_ping_done(self, handle: int, session: Any) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_ping_done(session)

    def on_syn(self, handle: int, key: tuple) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_syn(key)

    def on_echo(self, handle: int, family: int, src: bytes, dst: bytes, rest: int,
                data: bytes) -> None:
        owner = self.owners.get(handle)
        if owner is not None:
            owner.on_echo(family, src, dst, rest, data)


class UdpCallbacks:
    """The owner of a UDP port bound with plain functions (``Stack.udp_bind(port, fn)``):
    ``handler(data, src, dst)``, and ``on_error(err, dst, port)`` if given."""

    __slots__ = ("handler", "on_error")

    def __init__(self, handler: Callable[[bytes, tuple[str, int], tuple[str, int]], None],
                 on_error: Callable[[int, bytes, int], None] | None = None) -> None:
        self.handler = handler
        self.on_error = on_error

    def on_udp(self, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        self.handler(data, src, dst)

    def on_udp_error(self, err: int, dst: bytes, port: int) -> None:
        if self.on_error is not None:
            self.on_error(err, dst, port)


class PingCallback:
    """The owner of a ping started with a plain function (``start_ping(on_done=fn)``)."""

    __slots__ = ("on_done",)

    def __init__(self, on_done: Callable[[Any], None]) -> None:
        self.on_done = on_done

    def on_ping_done(self, session: Any) -> None:
        self.on_done(session)
