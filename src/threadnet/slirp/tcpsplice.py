"""A guest's TCP connection spliced to its host socket on the gateway stack's runner thread.

The gateway's TCP endpoint (a ``TcpEndpoint`` of the catch-all listener) and the kernel
socket it was re-originated on are copied into each other by an owner of the endpoint,
``TcpSplice``, with no ``StackSocket`` in between: no socket pair per connection, no
pump, no hand-off to another thread. Host data goes ``recv`` -> the connection's send
buffer (one copy of ours); guest data goes from the receive buffer (``peek``) straight
into the host socket's ``send``, and only what the host took is consumed, so a slow host
closes the guest's window (backpressure) and a full send buffer stops reading the host.

Everything here runs under the stack's lock. The host socket's readiness is watched on
the runner's loop (registrations on its thread: ``runner.call_soon``); the TCP layer
calls ``on_tcp_event`` whenever the connection changes (data, ACKs that free room, FIN,
reset), and that is when most of the copying happens: an ACK that frees room in the
send buffer reads the host socket at once, within the same receive batch.

Ends: the host's EOF becomes the guest's FIN (``shutdown_write``) and the guest's FIN a
``shutdown(SHUT_WR)`` of the host socket; once both are through, the endpoint is closed
(it lingers on in the TCP layer without an owner) and the host socket goes. A reset on
either side resets the other (SO_LINGER 0 on the host socket).
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Any

from threadnet.stack.sockpump import low_water  # (the socket pump's: read in large pieces)

if TYPE_CHECKING:
    from threadnet.stack.tcplayer import TcpEndpoint, TcpListener

#: bytes taken from a host socket per ``recv``, and given to it per ``send``: up to a whole
#: send buffer (TCP_BUF). At MTU 65520, offload tap, 12 alternating 2 s iperf3 runs each
#: (load 1.3-3.9), 1 MiB moved a median 8.3 Gbit/s down and 8.5 up, 256 KiB 7.6 and 7.4.
CHUNK = 1024 * 1024
_LINGER0 = b"\1\0\0\0\0\0\0\0"


class TcpSplice:
    """The owner of one guest connection (``ep``) and its connected host socket."""

    __slots__ = ("gw", "stack", "runner", "ep", "conn", "host", "fd", "handle", "reading",
                 "writing", "host_eof", "guest_eof", "closed")

    def __init__(self, gw: Any, ep: TcpEndpoint, host: socket.socket) -> None:
        self.gw = gw
        self.stack = gw.stack
        self.runner = gw.stack.runner
        self.ep = ep
        self.conn = ep.conn
        self.host = host
        #: the loop watches the descriptor, not the socket object: a miss in the selector
        #: formats its key into the KeyError, and a socket's repr makes system calls
        self.fd = host.fileno()
        self.reading = False
        self.writing = False
        self.host_eof = False  # the host socket said EOF (the guest has our FIN)
        self.guest_eof = False  # the guest's FIN was passed on (SHUT_WR)
        self.closed = False
        self.handle = self.stack.upper.add(self)
        ep.owner = self.handle
        gw.splices.add(self)
        ep._in_event = True  # (as the TCP layer does around on_tcp_event: no recursion)
        try:
            self.on_tcp_event(ep)
        finally:
            ep._in_event = False

    # -- the TCP layer's call (under the stack's lock) -----------------------------------
    def on_tcp_event(self, ep: TcpEndpoint) -> None:
        if self.closed:
            return
        conn = self.conn
        if conn.error:
            self._release(reset=True)  # the guest reset (or timed out): reset the host
            return
        if conn.recv_queued and not self.writing:
            self._to_host()
            if self.closed:
                return
        if conn.eof and not self.guest_eof:
            self.guest_eof = True
            try:
                self.host.shutdown(socket.SHUT_WR)
            except OSError:
                pass
        if not self.reading and not self.host_eof and \
                conn.writable_space >= low_water(conn):
            self._from_host()
            if self.closed:
                return
        self._maybe_done()

    # -- copying (under the stack's lock) ---------------------------------------------------
    def _to_host(self) -> None:
        """Guest data out of the receive buffer into the host socket, as far as it takes
        it; the rest waits (and its window stays closed) until the socket is writable."""
        conn = self.conn
        host = self.host
        ep = self.ep
        now = self.stack.clock()
        while conn.recv_queued:
            view = conn.peek(CHUNK)
            try:
                n = host.send(view)
            except (BlockingIOError, InterruptedError):
                n = -1
            except OSError:
                view.release()
                self._abort_guest()
                return
            view.release()
            if n < 0:
                self.writing = True
                self._call(self._watch_writable)
                return
            ep.consume(n, now)

    def _from_host(self) -> None:
        """Host data into the connection's send buffer while it has room; then wait for
        the socket (readable) or for room (an ACK: ``on_tcp_event``). The data passes
        through the gateway's one receive buffer (under the lock: a fresh 256 KiB object
        per ``recv`` cost page faults)."""
        buf = self.gw.rx_view
        conn = self.conn
        host = self.host
        ep = self.ep
        now = self.stack.clock()
        while True:
            space = conn.writable_space
            if space <= 0 or (space < low_water(conn) and conn.send_queued):
                self._want_read(False)
                return
            try:
                n = host.recv_into(buf, space if space < CHUNK else CHUNK)
            except (BlockingIOError, InterruptedError):
                self._want_read(True)
                return
            except OSError:
                self._abort_guest()
                return
            if not n:
                self.host_eof = True
                self._want_read(False)
                ep.shutdown_write(now)
                return
            ep.send(buf[:n], now)

    def _maybe_done(self) -> None:
        conn = self.conn
        if conn.recv_queued or self.writing:
            return
        if conn.closed or (self.host_eof and self.guest_eof):
            if not conn.closed:
                self.ep.close(self.stack.clock())  # our FIN is queued; it lingers on
            self._release()

    def _abort_guest(self) -> None:
        """The host socket broke (reset): reset the guest's connection."""
        self.ep.abort(now=self.stack.clock())
        self._release(reset=False)

    # -- the runner's thread ------------------------------------------------------------------
    def _call(self, fn: Any) -> None:
        self.runner.call_soon(fn)

    def _want_read(self, flag: bool) -> None:
        if flag == self.reading:
            return
        self.reading = flag
        self._call(self._watch_readable if flag else self._unwatch_readable)

    def _watch_readable(self) -> None:
        if not self.closed and self.reading:
            self.runner.loop.add_reader(self.fd, self._readable)

    def _unwatch_readable(self) -> None:
        if not self.closed and not self.reading:
            self.runner.loop.remove_reader(self.fd)

    def _watch_writable(self) -> None:
        if not self.closed and self.writing:
            self.runner.loop.add_writer(self.fd, self._writable)

    def _readable(self) -> None:
        st = self.stack
        with st.locked():
            if self.closed or not self.reading:
                return
            opened = st.begin_batch()  # what this sends leaves in one batch
            try:
                self._guarded(self._from_host)
                if not self.closed:
                    self._maybe_done()
            finally:
                if opened:
                    st.end_batch()

    def _writable(self) -> None:
        st = self.stack
        with st.locked():
            if self.closed or not self.writing:
                return
            self.writing = False
            self.runner.loop.remove_writer(self.fd)
            self._guarded(lambda: self.on_tcp_event(self.ep))

    def _guarded(self, fn: Any) -> None:
        try:
            fn()
        except Exception as exc:  # a bug must not stop the runner: say so, reset
            self.gw.report(exc)
            if not self.closed:
                self._abort_guest()

    # -- the end ------------------------------------------------------------------------------
    def close(self) -> None:
        """Reset both sides (the gateway closes); any thread."""
        with self.stack.locked():
            if not self.closed:
                self.ep.abort(now=self.stack.clock())
                self._release(reset=True)

    def _release(self, reset: bool = False) -> None:
        if self.closed:
            return
        self.closed = True
        ep = self.ep
        if ep.owner == self.handle:
            ep.disown()
        self.gw.splices.discard(self)
        host = self.host
        fd = self.fd
        runner = self.runner

        def close() -> None:
            loop = runner.loop
            loop.remove_reader(fd)  # (no-ops when not watched)
            loop.remove_writer(fd)
            if reset:
                try:
                    host.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER0)
                except OSError:
                    pass
            host.close()

        runner.call_soon(close)


class CatchAllListener:
    """The owner of the catch-all listener: each connection it accepts (its host socket
    made while its SYN was held) becomes a ``TcpSplice`` at once, under the lock."""

    __slots__ = ("gw",)

    def __init__(self, gw: Any) -> None:
        self.gw = gw

    def on_tcp_ready(self, listener: TcpListener) -> None:
        while True:
            ep = listener.accept()
            if ep is None:
                return
            self.gw.accepted(ep)

    def on_tcp_closed(self, listener: TcpListener) -> None:
        pass
