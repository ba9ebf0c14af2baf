"""What moves a stack socket's bytes (``stack/socket.py`` is the socket itself): the
pump between a stream socket's pair and its TCP connection (runner thread, flow control
both ways, the non-blocking connect's filler), and the owners through which the stack's
core reaches a listening or datagram socket (``stack/upper.py``).
"""

from __future__ import annotations

import ipaddress
import select
import socket as _socket
import struct
import threading
from typing import TYPE_CHECKING, Any

from threadnet.stack import runner as _runner
from threadnet.stack.tcp.connection import TcpState
from threadnet.stack.tcplayer import TcpEndpoint, TcpListener

if TYPE_CHECKING:
    pass

AF_INET6 = _socket.AF_INET6
PUMP_CHUNK = 256 * 1024
_APP_BUF = 512 * 1024
_UDP_HDR = struct.Struct("!B16sH")  # family, address (v4 in the first 4 bytes), port
_V4MAPPED = b"\x00" * 10 + b"\xff\xff"
# the states in which our FIN (and maybe data before it) waits for its acknowledgement
_FIN_UNACKED = frozenset((TcpState.FIN_WAIT_1, TcpState.CLOSING, TcpState.LAST_ACK))


class _StreamPump:
    """Moves bytes between a socket pair's stack end and a TCP connection."""

    def __init__(self, sock: Any, ep: TcpEndpoint, *, connected: bool,
                 fill: bool = False) -> None:
        self.stack = sock._stack
        self.runner = sock._stack.runner  # kept: the stack may be closed while callbacks wait
        self.inner = sock._inner
        self.ep = ep
        self.connected = connected
        self.error = 0
        self.done = threading.Event()
        self.reading = False
        self.writing = False
        self.eof_in = False  # the application shut down writing
        self.eof_out = False  # we passed the peer's FIN on
        self.closed = False
        self.discard = 0
        self.app = sock
        self.options = sock._conn_options
        if fill:
            self.discard = _fill(sock)
        # the connection names us by a handle in the stack's owners (stack/upper.py)
        self.handle = self.stack.upper.add(self)
        ep.owner = self.handle
        runner = self.stack.runner
        if connected:
            self.done.set()
        else:
            # an application that closes its socket (or a published stack's client that
            # dies) while the connect is pending aborts it (RFC 9293 3.10.4: CLOSE in
            # SYN-SENT deletes the TCB), instead of retrying SYNs for two minutes
            self._call(lambda: self._watch_hangup(0.05, until_connected=True))
        # As the TCP layer does when it calls on_tcp_event: ep.recv() flushes, and a
        # flush would call on_tcp_event again in the middle of _deliver (which then saw
        # the buffer drained and the FIN, shut the pair and lost the data being delivered).
        ep._in_event = True
        try:
            self.on_tcp_event(ep)
        finally:
            ep._in_event = False
        if runner is not None:
            runner.touch(self.stack)

    def apply_options(self) -> None:
        conn = self.ep.conn
        opts = self.options()
        conn.nodelay = bool(opts.get("nodelay", False))
        conn.keepalive = bool(opts.get("keepalive", False))
        if "sndbuf" in opts:
            conn.sndbuf = opts["sndbuf"]
        if "rcvbuf" in opts:
            # the window scale was fixed by the handshake, and a window must never shrink
            # (RFC 9293 3.8.6): a live SO_RCVBUF only grows the buffer, up to what the
            # scale can advertise
            limit = 0xFFFF << conn.rcv_wscale
            conn.rcvbuf = max(conn.rcvbuf, min(opts["rcvbuf"], limit))

    # -- called under the stack lock --------------------------------------------------------
    def on_tcp_event(self, ep: TcpEndpoint) -> None:
        if self.closed:
            return
        conn = ep.conn
        if conn.error and not self.error:
            self.error = conn.error
            self.app._error = conn.error
            self.done.set()
            self._shutdown()
            return
        if not self.connected and conn.established:
            self.connected = True
            self.done.set()
        if self.connected and not self.reading and not self.eof_in and \
                conn.writable_space >= low_water(conn):
            self._call(lambda: self._want_read(True))
        self._deliver()
        self._maybe_done()

    def _maybe_done(self) -> None:
        """Release the pair's end once nothing can travel through it any more: the
        connection is closed, or both directions have ended (the application's EOF was
        read and the peer's FIN passed on). TIME-WAIT and LAST-ACK are the connection's
        business; they need no descriptor."""
        if self.closed:
            return
        conn = self.ep.conn
        if conn.recv_queued:
            return
        if conn.closed:
            self._shutdown()
        elif self.eof_in and self.eof_out:
            self.ep.close(self.stack.clock())
            self._shutdown()

    def _deliver(self) -> None:
        # Received data goes from the connection's buffer straight into the pair (no copy
        # out first); what the pair cannot take stays there and keeps the window closed.
        ep = self.ep
        conn = ep.conn
        inner = self.inner
        while conn.recv_queued:
            view = conn.peek(PUMP_CHUNK)
            try:
                n = inner.send(view)
            except BlockingIOError:
                if not self.writing:
                    self.writing = True
                    self._call(lambda: self.runner.loop.add_writer(inner, self._writable))
                return
            except OSError:
                # the application closed its socket with data arriving: reset (RFC 9293)
                view.release()
                ep.abort(now=self.stack.clock())
                self._shutdown()
                return
            finally:
                view.release()
            ep.consume(n, self.stack.clock())
        if conn.eof and not self.eof_out:
            self.eof_out = True
            try:
                inner.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    # -- runner thread callbacks ---------------------------------------------------------------
    def _call(self, fn: Any) -> None:
        if self.runner is not None:
            self.runner.call_soon(fn)

    def _want_read(self, flag: bool) -> None:
        if self.closed or flag == self.reading:
            return
        self.reading = flag
        loop = self.runner.loop
        if flag:
            loop.add_reader(self.inner, self._readable)
        else:
            loop.remove_reader(self.inner)

    def _writable(self) -> None:
        with self.stack.locked():
            self.writing = False
            if self.closed:
                return
            self.runner.loop.remove_writer(self.inner)
            self._deliver()
            self._maybe_done()

    def _readable(self) -> None:
        with self.stack.locked():
            if self.closed:
                return
            # the segments this sends leave in one batch (one system call per link)
            opened = self.stack.begin_batch()
            try:
                self._read_app()
            finally:
                if opened:
                    self.stack.end_batch()

    def _read_app(self) -> None:
        conn = self.ep.conn
        inner = self.inner
        while True:
            if self.discard:
                try:
                    junk = inner.recv(min(self.discard, PUMP_CHUNK))
                except BlockingIOError:
                    return
                self.discard -= len(junk)
                if not self.discard:
                    _unfill(self.app)
                continue
            space = conn.writable_space
            if space <= 0 or (space < low_water(conn) and conn.send_queued):
                self._want_read(False)  # resume when the connection has room again
                return
            try:
                data = inner.recv(min(space, PUMP_CHUNK))
            except BlockingIOError:
                return
            except ConnectionResetError:
                # the application closed its socket with received data unread: as Linux
                # does, the connection is reset (RFC 1122 4.2.2.13)
                self.eof_in = True
                self.ep.abort(now=self.stack.clock())
                self._shutdown()
                return
            except OSError:
                data = b""
            if not data:
                self.eof_in = True
                self._want_read(False)
                if self.eof_out or conn.eof or _hung_up(inner):
                    # closed (not just shut down for writing): a FIN goes out, and the
                    # connection resets if data arrives later; the descriptor goes now
                    self.ep.close(self.stack.clock())
                    self._shutdown()
                else:
                    self.ep.shutdown_write(self.stack.clock())
                    self._watch_hangup(0.05)
                return
            self.ep.send(data, self.stack.clock())

    def _watch_hangup(self, delay: float, until_connected: bool = False) -> None:
        """After a shutdown(SHUT_WR), check now and then whether the application has
        closed the socket too, so that a peer that never sends its FIN does not keep
        the descriptor (the check backs off to once every 2 s). While a connect is
        pending (``until_connected``), the same check aborts the connect."""
        def check() -> None:
            with self.stack.locked():
                if self.closed or (until_connected and self.connected):
                    return
                if _hung_up(self.inner):
                    self.ep.close(self.stack.clock())
                    self._shutdown()
                else:
                    self._watch_hangup(min(2.0, delay * 2), until_connected)

        if self.runner is not None and not self.closed:
            self.runner.loop.call_later(delay, check)

    def _shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        inner = self.inner
        ep = self.ep
        if ep.owner == self.handle:
            # the connection lives on (TIME-WAIT, retransmitting a FIN) without us: let
            # go of the pump and the application's socket object
            ep.disown()
        # and no cycle through the socket object is left for the collector to find
        self.app = None
        self.options = _no_options

        def close() -> None:
            if self.runner is not None:
                self.runner.loop.remove_reader(inner)
                self.runner.loop.remove_writer(inner)
            inner.close()

        if self.runner is not None:
            self._call(close)
        else:
            inner.close()


class _ListeningOwner:
    """A listening socket, as its listener's owner: one byte on the pair for each
    connection ready to accept; the pair's end closed when the stack closes the
    listener, so a blocked accept() sees EOF at once."""

    __slots__ = ("inner",)

    def __init__(self, inner: _socket.socket) -> None:
        self.inner = inner

    def on_tcp_ready(self, listener: TcpListener) -> None:
        try:
            self.inner.send(b"\0")
        except OSError:
            pass

    def on_tcp_closed(self, listener: TcpListener) -> None:
        self.inner.close()


class _DatagramOwner:
    """A datagram socket, as its UDP port's owner: datagrams go into its pair with
    their source address in front."""

    __slots__ = ("sock",)

    def __init__(self, sock: Any) -> None:
        self.sock = sock

    def on_udp(self, data: bytes, src: tuple[str, int], dst: tuple[str, int]) -> None:
        sock = self.sock
        ip = ipaddress.ip_address(src[0])
        if sock._remote is not None and (ip.packed, src[1]) != sock._remote:
            return  # a connected UDP socket hears only its peer
        if ip.version == 4 and sock._vfamily == AF_INET6 and sock._v6only:
            return
        try:
            sock._inner.send(_UDP_HDR.pack(ip.version, ip.packed, src[1]) + data)
        except OSError:
            pass  # the receive queue is full: the datagram is lost, as with UDP

    def on_udp_error(self, err: int, dst: bytes, dport: int) -> None:
        # a datagram to our connected peer could not go (nobody answered ARP/NS for it):
        # as Linux's udp_err for a hard error, the next call raises it
        sock = self.sock
        if sock._remote is None or sock._remote != (dst, dport):
            return
        sock._error = err
        try:
            sock._inner.send(_UDP_HDR.pack(0, bytes(16), 0))  # wakes a blocked recv
        except OSError:
            pass


def unfinished(ep: TcpEndpoint) -> bool:
    """Has the application closed this connection (or shut it for writing) while data
    or the FIN it owes the peer are not yet acknowledged? (The stack lock is held.)
    A connection the application still holds open is its own business."""
    conn = ep.conn
    if conn.closed:
        return False
    pump = ep.layer.stack.upper.get(ep.owner) if ep.owner is not None else None
    if isinstance(pump, _StreamPump) and not pump.closed and not pump.eof_in:
        # data may still wait in the socket pair; only a closed socket counts
        return _hung_up(pump.inner)
    return conn.state in _FIN_UNACKED


_runner.linger_check = unfinished


def _no_options() -> dict[str, Any]:
    return {}


def _hung_up(sock: _socket.socket) -> bool:
    """Has the other end of this stream pair been closed (not just shut for writing)?
    Linux reports POLLHUP on a Unix socket once both directions are shut down, which a
    close() of the peer does."""
    p = select.poll()
    p.register(sock.fileno(), select.POLLHUP)
    try:
        return any(ev & select.POLLHUP for _, ev in p.poll(0))
    except OSError:
        return True


def low_water(conn: Any) -> int:
    """Send space worth reading the application's data for: taking it in a few large
    pieces rather than an ACK's worth at a time means fewer wake-ups, flushes and
    reallocations of the send buffer (like Linux's SO_SNDLOWAT, a quarter of the buffer
    up to 64 KiB)."""
    return max(1, min(64 * 1024, conn.sndbuf // 4))


def _fill(sock: Any) -> int:
    """Make the application's end not writable until the handshake completes."""
    _socket.socket.setsockopt(sock, _socket.SOL_SOCKET, _socket.SO_SNDBUF, 1)
    filled = 0
    chunk = b"\0" * 256
    while True:
        try:
            filled += _socket.socket.send(sock, chunk, _socket.MSG_DONTWAIT)
        except BlockingIOError:
            return filled


def _unfill(sock: Any) -> None:
    try:
        _socket.socket.setsockopt(sock, _socket.SOL_SOCKET, _socket.SO_SNDBUF, _APP_BUF)
    except OSError:
        pass  # the application closed it meanwhile
