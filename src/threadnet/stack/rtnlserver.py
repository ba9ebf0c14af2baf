"""NETLINK_ROUTE sockets served from a stack: one end of an AF_UNIX SOCK_SEQPACKET pair
stands for a program's ``socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE)``, the other is
served here with ``stack/rtnetlink.py``'s ``RtNetlink``.

``NetlinkServer`` is one such socket, non-blocking, for an event loop; ``serve_datagram``
serves one until the program's end is closed (in a thread); ``open_netlink`` makes the
pair, serves it in a daemon thread and returns the program's end, the descriptor a
supervisor injects. Nothing grows without bound: a server stops reading a program's
requests while MAX_PENDING reply bytes wait for it, a request longer than MAX_REQUEST is
answered EMSGSIZE, and one RtNetlink serves at most MAX_SERVERS sockets at once.
"""

from __future__ import annotations

import collections
import errno
import socket
import threading
from collections.abc import Callable

from threadnet.stack.rtnetlink import RtNetlink
from threadnet.wire import netlink as nl

#: the largest request datagram read (Linux's default netlink send buffer is larger, but
#: no route request needs more); a longer one is answered EMSGSIZE
MAX_REQUEST = 65536
#: the most netlink sockets one RtNetlink serves at once (``open_netlink``): one thread each
MAX_SERVERS = 64
#: the most reply bytes queued for one peer before ``NetlinkServer`` stops reading its
#: requests: a program that sends without reading stalls itself, it grows nothing here
MAX_PENDING = 1 << 20


class NetlinkServer:
    """One emulated netlink socket: the stack's end of a SOCK_SEQPACKET (or SOCK_DGRAM)
    pair whose other end the program has. Non-blocking: ``on_readable`` reads requests
    while fewer than MAX_PENDING reply bytes wait, ``on_writable`` sends what waits;
    ``wants_write`` says whether to watch for writability. ``closed`` once the program's
    end is gone."""

    def __init__(self, sock: socket.socket, rtnl: RtNetlink, *, pid: int,
                 may_change: bool) -> None:
        self.sock = sock
        self.rtnl = rtnl
        self.pid = pid
        self.may_change = may_change
        self.pending: collections.deque[bytes] = collections.deque()
        self.pending_bytes = 0
        self.closed = False
        sock.setblocking(False)

    def fileno(self) -> int:
        return self.sock.fileno()

    @property
    def wants_write(self) -> bool:
        return bool(self.pending)

    @property
    def wants_read(self) -> bool:
        return not self.closed and self.pending_bytes < MAX_PENDING

    def on_readable(self) -> None:
        while self.wants_read:
            try:
                data, _, flags, _ = self.sock.recvmsg(MAX_REQUEST)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            if not data and self.sock.type == socket.SOCK_SEQPACKET:
                self.close()  # the program closed its end
                return
            if flags & socket.MSG_TRUNC:
                hdr = nl.first_header(data)
                replies = ([nl.error(errno.EMSGSIZE, hdr, b"", self.pid, capped=True)]
                           if hdr is not None else [])
            else:
                replies = self.rtnl.handle(data, pid=self.pid, may_change=self.may_change)
            for r in replies:
                self.pending.append(r)
                self.pending_bytes += len(r)
            self.on_writable()

    def on_writable(self) -> None:
        while self.pending and not self.closed:
            try:
                self.sock.send(self.pending[0])
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()  # the program's end is gone
                return
            self.pending_bytes -= len(self.pending.popleft())

    def close(self) -> None:
        self.closed = True
        self.pending.clear()
        self.pending_bytes = 0
        self.sock.close()


def serve_datagram(sock: socket.socket | int, rtnl: RtNetlink, *, pid: int,
                   may_change: bool = False, stop: Callable[[], bool] | None = None) -> None:
    """Serve NETLINK_ROUTE on ``sock`` (a socket or descriptor: the stack's end of an
    AF_UNIX SOCK_SEQPACKET pair, whose other end is the program's netlink socket) until
    the program's end is closed, or ``stop()`` is true (checked every 0.5 s): run it in a
    thread. ``pid`` is the port id the program's getsockname reports; ``may_change``
    whether its requests may change the stack. The socket is closed on return."""
    import selectors

    if isinstance(sock, int):
        sock = socket.socket(fileno=sock)
    server = NetlinkServer(sock, rtnl, pid=pid, may_change=may_change)
    with selectors.DefaultSelector() as sel:
        sel.register(server, selectors.EVENT_READ)
        try:
            while not server.closed and not (stop is not None and stop()):
                events = (selectors.EVENT_READ if server.wants_read else 0) | (
                    selectors.EVENT_WRITE if server.wants_write else 0)
                sel.modify(server, events or selectors.EVENT_READ)
                for _, mask in sel.select(0.5):
                    if mask & selectors.EVENT_WRITE:
                        server.on_writable()
                    if mask & selectors.EVENT_READ and not server.closed:
                        server.on_readable()
        finally:
            if not server.closed:
                server.close()


def open_netlink(rtnl: RtNetlink, *, pid: int, may_change: bool) -> socket.socket:
    """A NETLINK_ROUTE socket for a program: the program's end of an AF_UNIX
    SOCK_SEQPACKET pair (inject it in place of its ``socket(AF_NETLINK, SOCK_RAW,
    NETLINK_ROUTE)``), whose other end a daemon thread serves with ``serve_datagram``
    until the program's end is closed. ``pid``: the port id its ``getsockname`` must
    report (every reply carries it). OSError EMFILE beyond MAX_SERVERS at once."""
    with rtnl._servers_lock:
        if rtnl.servers >= MAX_SERVERS:
            raise OSError(errno.EMFILE, f"more than {MAX_SERVERS} netlink sockets on this stack")
        rtnl.servers += 1
    try:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    except BaseException:
        with rtnl._servers_lock:
            rtnl.servers -= 1
        raise

    def serve() -> None:
        try:
            serve_datagram(ours, rtnl, pid=pid, may_change=may_change)
        finally:
            with rtnl._servers_lock:
                rtnl.servers -= 1

    threading.Thread(target=serve, name=f"rtnetlink-{pid}", daemon=True).start()
    return theirs
