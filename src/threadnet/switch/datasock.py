"""The switch side of the vde_switch control protocol (vde-2 datasock.c, interop.md 1.2).

``DIR/ctl`` is a stream listener. A client sends one request_v3 naming its datagram
socket; we check it may use the port, bind our own datagram socket ``DIR/%03d.%d``
(port, control fd), connect it to the client, and answer with our address. The client's
control stream stays open for the port's lifetime: its EOF removes the endpoint, and we
close it when the port is removed.

Security (issue 14, docs/security.md): the client's identity is the control
connection's peer (SO_PEERCRED), never the owner of a path it names: the port ACL is
checked against that uid, and the datagram socket it names must belong to it (a root
peer may name any), pinned and connected through ``threadnet.peer.connect_to_socket_of``.
``DIR`` must be ours (``threadnet.fsafe.open_private_dir``); everything in it is made and
changed through the directory's descriptor without following symbolic links.
"""

from __future__ import annotations

import errno
import os
import socket
from collections import deque
from collections.abc import Callable

from threadnet import fsafe, mmsg
from threadnet.errors import FrameError
from threadnet.loop import EventLoop, Timer, monotonic
from threadnet.mgmt.console import create_unix_listener, resolve_group
from threadnet.peer import connect_to_socket_of, peer_credentials
from threadnet.switch.core import Endpoint, Switch, user_gids
from threadnet.wire import vde as wire

REQUEST_TIMEOUT = 5.0  # a connection that sends no request in time is closed
MAX_PENDING = 128  # connections waiting for their request
DRAIN_BUDGET = 64  # frames taken from one socket before serving the others
BATCHES = 4  # recvmmsg batches taken from one socket before serving the others
_pack_iov = mmsg.IOV.pack_into
DEFAULT_QLEN = 128  # frames waiting for a client whose socket is full (port/defqlen)

SNDBUF = 1 << 20
MAX_CTL_BACKLOG = 128


class UnixEndpoint(Endpoint):
    """An endpoint served by a datagram socket, with the client's control stream.

    A frame the client's socket cannot take now (its queue is full) waits in a bounded
    backlog of ``qlen`` frames, sent when the socket becomes writable; beyond that it is
    dropped. vde_switch 2.3.2 drops at once, which a TCP flow sees as loss (vde-2 HEAD
    added the same kind of queue: ``port/defqlen``).
    """

    def __init__(self, server: DataSocketServer, ident: int, description: str, uid: int,
                 ctl: socket.socket, data: socket.socket, path: str, qlen: int) -> None:
        super().__init__(ident, description, uid)
        self.server = server
        self.ctl = ctl
        self.data = data
        self.fd = data.fileno()
        self.path = path
        self.send_data = data.send
        self.dead = False
        self.qlen = qlen
        self.backlog: deque[bytes] = deque()

    def send(self, data: bytes | memoryview) -> None:
        if self.backlog:
            self.enqueue(data)
            return
        try:
            self.send_data(data)
        except BlockingIOError:
            self.enqueue(data)
        except OSError:
            self.drops += 1
            self.dead = True

    def enqueue(self, data: bytes | memoryview) -> None:
        if len(self.backlog) >= self.qlen:
            self.drops += 1
            return
        self.backlog.append(bytes(data))
        if len(self.backlog) == 1:
            self.server.loop.add_writer(self.data, self.writable)

    def writable(self) -> None:
        backlog = self.backlog
        send = self.send_data
        try:
            while backlog:
                send(backlog[0])
                backlog.popleft()
        except BlockingIOError:
            return
        except OSError:
            backlog.clear()
            self.dead = True
            self.server.reap_soon()
        self.server.loop.remove_writer(self.data)

    def close(self) -> None:
        self.backlog.clear()
        for s in (self.data, self.ctl):
            try:
                s.close()
            except OSError:
                pass
        self.server.unlink(os.path.basename(self.path))


class BatchedEndpoint(UnixEndpoint):
    """A UnixEndpoint whose frames are queued during a receive batch and sent with one
    sendmmsg when the batch ends. Frames forwarded unchanged are memoryviews of the
    batch's receive slot (queued by address, no copy); changed ones (a tag added or
    removed) are bytes, copied into the server's scratch slots."""

    def __init__(self, *args: object) -> None:
        super().__init__(*args)  # type: ignore[arg-type]
        self.queue = mmsg.SendQueue(DRAIN_BUDGET)

    def send(self, data: bytes | memoryview) -> None:
        server = self.server
        if not server.in_batch or self.backlog:
            UnixEndpoint.send(self, data)
            return
        addr = server.cur_addr if data.__class__ is memoryview else server.scratch(data)
        q = self.queue
        count = q.count
        if count == 0:
            server.dirty.append(self)
        elif count == q.capacity:
            self.flush()  # still listed in server.dirty
            if self.backlog:
                UnixEndpoint.send(self, data)
                return
            count = 0
        _pack_iov(q.iov, count << 4, addr, len(data))  # SendQueue.add, inlined
        q.count = count + 1

    def flush(self) -> None:
        err = self.queue.flush(self.fd)
        if err:
            self.dead = True
            return
        # what the socket could not take now goes to the backlog, copied out of the slots
        for frame in self.queue.unsent():
            self.enqueue(frame)


class DataSocketServer:
    """Accept vde clients on ``DIR/ctl`` and move their frames into the Switch."""

    def __init__(self, loop: EventLoop, switch: Switch, directory: str, *, mode: int = 0o600,
                 group: str | None = None, dirmode: int | None = None,
                 mgmtmode: int | None = None, mgmtgroup: str | None = None,
                 batched: bool = True) -> None:
        self.loop = loop
        self.switch = switch
        self.directory = os.path.abspath(directory)
        self.mode = mode
        self.gid = resolve_group(group) if group is not None else None
        self.mgmtmode = mgmtmode if mgmtmode is not None else mode
        self.mgmtgid = resolve_group(mgmtgroup) if mgmtgroup is not None else self.gid
        # vde_switch: with only -m, the directory gets the mode plus matching x bits, setgid.
        self.dirmode = dirmode if dirmode is not None else 0o2000 | mode | ((mode & 0o444) >> 2)
        self.endpoints: dict[int, UnixEndpoint] = {}
        self.qlen = DEFAULT_QLEN
        self._reap_timer: Timer | None = None
        self._pending: dict[int, tuple[socket.socket, Timer]] = {}
        self._buf = bytearray(switch.max_frame + 1)
        self._mv = memoryview(self._buf)
        # Batched I/O (recvmmsg/sendmmsg) where the platform has it.
        self.batched = mmsg.available() and batched
        self.in_batch = False
        self.cur_addr = 0
        self.dirty: list[BatchedEndpoint] = []
        if self.batched:
            slot = (switch.max_frame + 1 + 63) & ~63
            self._rx = mmsg.RecvBatch(DRAIN_BUDGET, slot)
            self._scratch = mmsg.RecvBatch(DRAIN_BUDGET, slot + 64)
            self._scratch_next = 0
        self.on_attach: Callable[[UnixEndpoint], None] | None = None
        self._made_dir = False
        self.dir_fd = -1
        self._setup_dir()
        self.ctl_path = os.path.join(self.directory, "ctl")
        try:
            self.listener = create_unix_listener(self.ctl_path, mode, group, MAX_CTL_BACKLOG,
                                                 dir_fd=self.dir_fd)
        except BaseException:
            self._close_dir()
            raise
        loop.add_reader(self.listener, self._accept)

    def _setup_dir(self) -> None:
        """Open (or make) the control directory, refusing one that another user could
        change (fsafe.open_private_dir): it must be ours, not writable by others, and
        group-writable only for our own group or the one given with ``group`` (its
        parents: root's or ours, not writable by others unless sticky or only by
        ``group``)."""
        given = {self.gid} if self.gid is not None else set()
        self.dir_fd, self._made_dir = fsafe.open_private_dir(
            self.directory, group_ok={os.getegid()} | given, parent_group_ok=given)
        try:
            if self.gid is not None:
                os.fchown(self.dir_fd, -1, self.gid)
            os.fchmod(self.dir_fd, self.dirmode)
        except BaseException:
            self._close_dir()
            raise

    def unlink(self, name: str) -> None:
        """Remove one of our files in the control directory (never through a link)."""
        if self.dir_fd >= 0:
            try:
                os.unlink(name, dir_fd=self.dir_fd)
            except OSError:
                pass

    def _close_dir(self) -> None:
        if self.dir_fd < 0:
            return
        if self._made_dir:
            try:
                os.rmdir(self.directory)
            except OSError:
                pass
        os.close(self.dir_fd)
        self.dir_fd = -1

    # -- handshake -----------------------------------------------------------------
    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                # EMFILE and the like: the listener stays readable, so stop accepting
                # for a moment instead of spinning; waiting clients stay in the backlog.
                self.loop.remove_reader(self.listener)
                self.loop.call_later(0.5, self._resume_accept)
                return
            if len(self._pending) >= MAX_PENDING:
                # Full of connections that said nothing: drop the oldest, so that silent
                # clients cannot lock out real ones (which send their request at once).
                self._drop_pending(next(iter(self._pending)))
            conn.setblocking(False)
            fd = conn.fileno()
            timer = self.loop.call_later(REQUEST_TIMEOUT, lambda fd=fd: self._drop_pending(fd))
            self._pending[fd] = (conn, timer)
            self.loop.add_reader(conn, lambda fd=fd: self._request(fd))

    def _resume_accept(self) -> None:
        if self.listener.fileno() >= 0:
            self.loop.add_reader(self.listener, self._accept)

    def _drop_pending(self, fd: int) -> None:
        item = self._pending.pop(fd, None)
        if item is not None:
            conn, timer = item
            timer.cancel()
            self.loop.remove_reader(conn)
            conn.close()

    def _request(self, fd: int) -> None:
        conn, timer = self._pending[fd]
        try:
            data = conn.recv(wire.MAX_REQUEST)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        # Whatever happens now, the connection is no longer pending.
        del self._pending[fd]
        timer.cancel()
        self.loop.remove_reader(conn)
        try:
            ep = self._attach(conn, data)
        except (FrameError, OSError, ValueError):
            conn.close()
            return
        self.endpoints[ep.ident] = ep
        drain = self._drain_batched if self.batched else self._drain
        self.loop.add_reader(ep.data, lambda: drain(ep))
        self.loop.add_reader(conn, lambda: self._ctl_readable(ep))
        if self.on_attach is not None:
            self.on_attach(ep)

    def _attach(self, conn: socket.socket, data: bytes) -> UnixEndpoint:
        req = wire.parse_request(data)
        # Who the client is comes from the connection, not from the path it names (S3).
        peer = peer_credentials(conn)
        uid = peer.uid
        sw = self.switch
        if req.kind == wire.REQ_NEW_PORT0:
            number = 0
        elif req.port:
            number = req.port
        else:
            free = sw.free_port()
            if free is None:
                raise OSError(errno.ENOSPC, "no free port")
            number = free
        if not 0 <= number < sw.numports:
            raise OSError(errno.EINVAL, "port out of range")
        port = sw.ports.get(number)
        if port is not None and not sw.may_attach(port, uid, user_gids(uid)):
            raise OSError(errno.EPERM, "port ACL")
        ident = conn.fileno()
        name = "%03d.%d" % (number, ident)
        path = os.path.join(self.directory, name)
        dsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self.unlink(name)  # a stale port socket of an earlier run
            dsock.bind(path)  # in our own directory (see _setup_dir)
            dsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            mode = self.mgmtmode if number == 0 else self.mode
            gid = self.mgmtgid if number == 0 else self.gid
            # Mode and owner are set on the pinned socket file, never through a link (S1).
            if os.geteuid() == 0 and uid >= 0:
                fsafe.set_socket_file(name, self.dir_fd, mode & 0o700 if gid is None else mode,
                                      uid, -1 if gid is None else gid)
            else:
                fsafe.set_socket_file(name, self.dir_fd, mode, -1, -1 if gid is None else gid)
            # Only a socket of the peer's own (any, for a root peer): not a socket that the
            # switch could reach with its own rights but the client could not (S4).
            connect_to_socket_of(peer, req.path, socket.SOCK_DGRAM, sock=dsock)
            self._discard_queued(dsock)
            dsock.setblocking(False)
            conn.setblocking(True)
            conn.settimeout(1.0)
            conn.sendall(wire.pack_sockaddr_un(path))
            conn.setblocking(False)
        except BaseException:
            dsock.close()
            self.unlink(name)
            raise
        cls = BatchedEndpoint if self.batched else UnixEndpoint
        ep = cls(self, ident, req.description, uid, conn, dsock, path, self.qlen)
        sw.attach(number, ep)
        return ep

    @staticmethod
    def _discard_queued(dsock: socket.socket) -> None:
        """Drop datagrams that reached the port socket before it was connected to the
        client: the client learns its address only from our reply, so they came from
        someone else."""
        while True:
            try:
                dsock.recv(1, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return

    # -- running endpoints -----------------------------------------------------------
    def _ctl_readable(self, ep: UnixEndpoint) -> None:
        try:
            data = ep.ctl.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.close_endpoint(ep)
        # anything else on the control stream is ignored, as vde_switch does

    def _drain(self, ep: UnixEndpoint) -> None:
        port = ep.port
        if port is None:
            return
        recv_into = ep.data.recv_into
        buf = self._buf
        mv = self._mv
        forward = self.switch.input
        now = monotonic()
        for _ in range(DRAIN_BUDGET):
            try:
                n = recv_into(buf)
            except BlockingIOError:
                break
            except OSError:
                self.close_endpoint(ep)
                return
            forward(port, mv, n, now)
        self._reap()

    def _drain_batched(self, ep: UnixEndpoint) -> None:
        port = ep.port
        if port is None:
            return
        rx = self._rx
        slots = rx.slots
        addrs = rx.addrs
        lengths = rx.lengths
        forward = self.switch.input
        fd = ep.fd
        now = monotonic()
        for _ in range(BATCHES):
            try:
                n = rx.recv(fd)
            except OSError:
                self.close_endpoint(ep)
                break
            if not n:
                break
            self.in_batch = True
            try:
                for i in range(n):
                    self.cur_addr = addrs[i]
                    forward(port, slots[i], lengths[16 * i + 14], now)
            finally:
                self.in_batch = False
                self._flush()
            if n < rx.nslots:
                break
        self._reap()

    def scratch(self, data: bytes) -> int:
        """Copy a changed frame into a scratch slot that lives until the batch is sent."""
        i = self._scratch_next
        if i == self._scratch.nslots:
            # more changed frames than slots: send what is queued to free them
            self._flush()
            i = 0
        self._scratch_next = i + 1
        n = len(data)
        self._scratch.slots[i][:n] = data
        return self._scratch.addrs[i]

    def _flush(self) -> None:
        for ep in self.dirty:
            ep.flush()
        self.dirty.clear()
        self._scratch_next = 0

    def _reap(self) -> None:
        """Close endpoints whose socket failed while we were sending to them."""
        for ep in [e for e in self.endpoints.values() if e.dead]:
            self.close_endpoint(ep)

    def reap_soon(self) -> None:
        if self._reap_timer is None:
            def run() -> None:
                self._reap_timer = None
                self._reap()

            self._reap_timer = self.loop.call_later(0, run)

    def close_endpoint(self, ep: UnixEndpoint) -> None:
        if self.endpoints.pop(ep.ident, None) is None:
            return
        self.loop.remove_reader(ep.data)
        self.loop.remove_writer(ep.data)
        self.loop.remove_reader(ep.ctl)
        self.switch.detach(ep)  # closes its sockets and unlinks its file

    def close_port(self, number: int) -> None:
        port = self.switch.ports.get(number)
        if port is None:
            raise OSError(errno.ENXIO, "no such port")
        for ep in list(port.endpoints):
            if isinstance(ep, UnixEndpoint):
                self.close_endpoint(ep)

    def close(self) -> None:
        for fd in list(self._pending):
            self._drop_pending(fd)
        for ep in list(self.endpoints.values()):
            self.close_endpoint(ep)
        self.loop.remove_reader(self.listener)
        self.listener.close()
        self.unlink("ctl")
        self._close_dir()
