"""The stack's side of a published stack (``stack.publish(path)``, ``stack/remote.py``
describes the protocol): the listening socket at the path, one connection per virtual
socket or resolver client, acting with the peer's rights (SO_PEERCRED), with per-uid
quotas of sockets and blocking calls served fairly by a few worker threads.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import socket as _socket
import threading
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from threadnet.stack import rawsocket
from threadnet.stack.remote import (
    _SEQPACKET,
    _UNIX,
    MAX_MESSAGE,
    _decode,
    _encode,
    _error_reply,
    _numeric_address,
    _tuple,
)
from threadnet.stack.socket import StackSocket

if TYPE_CHECKING:
    from threadnet.stack.stack import Stack

#: a resolver call's request is small (a DNS name is at most 253 bytes): a larger one is
#: refused rather than kept in a queue
MAX_CALL_MESSAGE = 4096
#: the per-uid limits' defaults (``Publication``): blocking calls queued or running
DEFAULT_MAX_PENDING = 16
#: ... and open control connections (one per socket, one per process for resolver calls);
#: never more than a quarter of what the process's descriptor limit allows
DEFAULT_MAX_SOCKETS = 1024
#: blocking calls of one uid that run at the same time, and worker threads in all
INFLIGHT_PER_CLIENT = 2
MAX_WORKERS = 32
#: the descriptors a socket costs the stack's process: control connection, both pair ends
_FDS_PER_SOCKET = 3
_FD_RESERVE = 64  # for links, consoles, resolver sockets...
#: connections over quota that are kept open just to say EMFILE, per uid
_REFUSING_PER_UID = 8
_REFUSE_LINGER = 2.0
_RESOLVER_CALLS = ("getaddrinfo", "gethostname", "gethostbyname", "gethostbyname_ex",
                   "gethostbyaddr", "getnameinfo", "getfqdn", "resolv_conf")
#: characters of an ``ip`` reply's JSON text per packet: sent as a JSON string, which
#: at worst doubles them (quotes and backslashes escaped), within MAX_MESSAGE
_IP_PAGE = 30000
#: bytes of netlink reply datagrams per control reply (base64: a third more)
_NETLINK_PAGE = 45000

# -- the stack's side ------------------------------------------------------------------------
def _peer_uid(sock: _socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    from threadnet.peer import peer_credentials

    return peer_credentials(sock).uid


def _socket_budget() -> int:
    """How many sockets this process's descriptor limit leaves room for."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft > 1 << 20:
        soft = 1 << 20
    return max(16, (soft - _FD_RESERVE) // _FDS_PER_SOCKET)


class _Job:
    """One blocking call of one control connection."""

    __slots__ = ("conn", "fn", "cancel")

    def __init__(self, conn: _Conn, fn: Callable[[Any], None]) -> None:
        from threadnet.stack.resolver import Cancel

        self.conn = conn
        self.fn = fn
        self.cancel = Cancel()


class _FairQueue:
    """Blocking calls (resolver calls, which may wait on the network) run on worker
    threads, fairly: one bounded queue per client (uid), at most ``inflight`` calls of a
    client running at once, clients served in turn. Threads are started when work
    arrives (``max_workers`` at most) and end when none is left, so an idle publication
    has none. A client over ``max_pending`` queued-or-running calls is refused at once."""

    def __init__(self, max_pending: int, inflight: int = INFLIGHT_PER_CLIENT,
                 max_workers: int = MAX_WORKERS) -> None:
        self.max_pending = max_pending
        self.inflight = inflight
        self.max_workers = max_workers
        self._lock = threading.Lock()
        self._queues: OrderedDict[int, deque[_Job]] = OrderedDict()
        self._running: dict[int, list[_Job]] = {}
        self._pending: dict[int, int] = {}
        self._workers = 0
        self._closed = False

    def pending(self, client: int) -> int:
        with self._lock:
            return self._pending.get(client, 0)

    @property
    def workers(self) -> int:
        return self._workers

    def submit(self, client: int, job: _Job) -> bool:
        """Queue ``job``; False (nothing queued) when the client has too many pending."""
        with self._lock:
            if self._closed or self._pending.get(client, 0) >= self.max_pending:
                return False
            self._pending[client] = self._pending.get(client, 0) + 1
            self._queues.setdefault(client, deque()).append(job)
            start = self._workers < self.max_workers and \
                len(self._running.get(client, ())) < self.inflight
            if start:
                self._workers += 1
        if start:
            threading.Thread(target=self._work, name="threadnet-publish", daemon=True).start()
        return True

    def _next(self) -> tuple[int, _Job] | None:
        """The next job, round robin over clients with work and room (under the lock)."""
        for client, queue in self._queues.items():
            running = self._running.setdefault(client, [])
            if len(running) >= self.inflight:
                continue
            job = queue.popleft()
            if queue:
                self._queues.move_to_end(client)
            else:
                del self._queues[client]
            running.append(job)
            return client, job
        return None

    def _done(self, client: int, job: _Job) -> None:
        running = self._running.get(client)
        if running is not None and job in running:
            running.remove(job)
            if not running:
                del self._running[client]
        left = self._pending.get(client, 0) - 1
        if left > 0:
            self._pending[client] = left
        else:
            self._pending.pop(client, None)

    def _work(self) -> None:
        from threadnet.stack.resolver import cancellable

        while True:
            with self._lock:
                picked = None if self._closed else self._next()
                if picked is None:
                    self._workers -= 1
                    return
            client, job = picked
            try:
                with cancellable(job.cancel):
                    job.fn(job.cancel)
            except Exception:  # the job reports its own errors; never lose a worker
                pass
            finally:
                with self._lock:
                    self._done(client, job)

    def cancel(self, conn: _Conn) -> None:
        """Forget ``conn``'s queued calls and cancel its running ones (it went away)."""
        with self._lock:
            client = conn.uid
            queue = self._queues.get(client)
            if queue:
                keep = deque(j for j in queue if j.conn is not conn)
                dropped = len(queue) - len(keep)
                if keep:
                    self._queues[client] = keep
                else:
                    del self._queues[client]
                left = self._pending.get(client, 0) - dropped
                if left > 0:
                    self._pending[client] = left
                else:
                    self._pending.pop(client, None)
            running = [j for j in self._running.get(client, ()) if j.conn is conn]
        for job in running:
            job.cancel.cancel()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._queues.clear()
            self._pending.clear()
            running = [j for jobs in self._running.values() for j in jobs]
        for job in running:
            job.cancel.cancel()


class Publication:
    """A stack reachable at a filesystem path; ``close()`` (or ``stack.close()``) ends it.

    Who may connect is decided by the path's ``mode`` and ``group``. Each client, told
    apart by the uid its control connections carry (SO_PEERCRED), gets a quota:
    ``max_sockets`` open control connections (one per socket; default
    ``DEFAULT_MAX_SOCKETS``, lowered to a quarter of what the process's descriptor limit
    allows) and ``max_pending`` blocking calls queued or running (resolver calls;
    ``DEFAULT_MAX_PENDING``). Over quota, a request fails at once with EMFILE or EAGAIN.
    Blocking calls are scheduled fairly between clients (``_FairQueue``) and cancelled
    when the connection that asked for them closes."""

    def __init__(self, stack: Stack, path: str | os.PathLike[str], mode: int = 0o660,
                 group: int | str | None = None, *, max_sockets: int | None = None,
                 max_pending: int | None = None) -> None:
        runner = stack.runner
        if runner is None:
            raise ValueError("only a stack run by a runner can be published")
        budget = _socket_budget()
        if max_sockets is None:
            max_sockets = min(DEFAULT_MAX_SOCKETS, max(16, budget // 4))
        if max_pending is None:
            max_pending = DEFAULT_MAX_PENDING
        if int(max_sockets) < 1 or int(max_pending) < 1:
            raise ValueError("max_sockets and max_pending must be at least 1")
        self.max_sockets = int(max_sockets)
        self.max_pending = int(max_pending)
        self._budget = budget  # sockets of all clients together: the process's own limit
        self.stack = stack
        self.path = os.path.abspath(os.fspath(path))
        self.runner = runner
        self._listener = _bind_listener(self.path, mode, group)
        self._inode = os.stat(self.path).st_ino
        self._conns: set[_Conn] = set()
        self._count: dict[int, int] = {}  # counted connections per uid
        self._refusing: dict[int, int] = {}
        self._work = _FairQueue(self.max_pending)
        self.closed = False
        runner.call_soon(lambda: runner.loop.add_reader(self._listener, self._on_accept))

    def __repr__(self) -> str:
        return f"<Publication {self.path} of {self.stack.name}>"

    def usage(self) -> dict[int, dict[str, int]]:
        """Per uid: open sockets (control connections) and pending blocking calls."""
        uids = set(self._count) | set(self._work._pending)
        return {uid: {"sockets": self._count.get(uid, 0), "pending": self._work.pending(uid)}
                for uid in sorted(uids)}

    # -- quotas (runner thread) ------------------------------------------------------------
    def _quota_error(self, uid: int) -> OSError | None:
        if self._count.get(uid, 0) >= self.max_sockets:
            return OSError(errno.EMFILE, f"too many sockets on this stack for uid {uid} "
                                         f"(max_sockets={self.max_sockets})")
        if len(self._conns) >= self._budget:
            return OSError(errno.ENFILE, "the stack's process has no descriptors to spare")
        return None

    def _on_accept(self) -> None:
        for _ in range(64):
            try:
                conn, _ = self._listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    # out of descriptors: pause accepting for a moment instead of spinning
                    self.runner.loop.remove_reader(self._listener)
                    self.runner.loop.call_later(0.1, self._resume_accepting)
                return
            try:
                uid = _peer_uid(conn)
            except OSError:
                conn.close()
                continue
            refusal = self._quota_error(uid)
            if refusal is None:
                self._serve(conn, None, uid)
            else:
                self._refuse(conn, uid, refusal)

    def _refuse(self, ctl: _socket.socket, uid: int, why: OSError) -> None:
        """Keep an over-quota connection a moment, to answer its request with ``why``
        (a client sees EMFILE, not a reset); a few per uid, the rest are closed at once."""
        if self._refusing.get(uid, 0) >= _REFUSING_PER_UID:
            ctl.close()
            return
        self._refusing[uid] = self._refusing.get(uid, 0) + 1
        ctl.setblocking(False)
        c = _Conn(self, ctl, None, uid, counted=False)
        c.refusal = why
        self._conns.add(c)
        self.runner.loop.add_reader(ctl, c.on_readable)
        self.runner.loop.call_later(_REFUSE_LINGER, c.close)

    def _resume_accepting(self) -> None:
        if not self.closed:
            self.runner.loop.add_reader(self._listener, self._on_accept)

    def _serve(self, ctl: _socket.socket, sock: StackSocket | None, uid: int) -> _Conn:
        ctl.setblocking(False)
        c = _Conn(self, ctl, sock, uid, counted=True)
        self._count[uid] = self._count.get(uid, 0) + 1
        self._conns.add(c)
        self.runner.loop.add_reader(ctl, c.on_readable)
        return c

    def _forget(self, c: _Conn) -> None:
        if c not in self._conns:
            return
        self._conns.discard(c)
        if c.counted:
            left = self._count.get(c.uid, 0) - 1
            if left > 0:
                self._count[c.uid] = left
            else:
                self._count.pop(c.uid, None)
        elif c.refusal is not None:
            left = self._refusing.get(c.uid, 0) - 1
            if left > 0:
                self._refusing[c.uid] = left
            else:
                self._refusing.pop(c.uid, None)
        self._work.cancel(c)

    def close(self) -> None:
        """Stop serving: remove the path and close every socket opened through it."""
        if self.closed:
            return
        self.closed = True
        try:
            if os.stat(self.path, follow_symlinks=False).st_ino == self._inode:
                os.unlink(self.path)
        except OSError:
            pass
        self._work.close()
        done = threading.Event()

        def shut() -> None:
            try:
                self.runner.loop.remove_reader(self._listener)
                self._listener.close()
                for c in list(self._conns):
                    c.close()
            finally:
                done.set()

        self.runner.call_soon(shut)
        done.wait(5)


def _bind_listener(path: str, mode: int, group: int | str | None) -> _socket.socket:
    """Bind at a temporary name, set mode and group, then link into place: never a moment
    open to all. The directories above ``path`` must be safe (``threadnet.fsafe``); only a
    stale stack socket of ours is replaced, and symbolic links are never followed."""
    from threadnet.fsafe import bind_unix_listener
    from threadnet.mgmt.console import resolve_group

    gid = resolve_group(group) if group is not None else -1  # before anything is bound
    return bind_unix_listener(path, _SEQPACKET, mode, gid, 128)


class _Conn:
    """One control connection: the calls for one virtual socket (or resolver calls)."""

    def __init__(self, pub: Publication, ctl: _socket.socket, sock: StackSocket | None,
                 uid: int, *, counted: bool) -> None:
        self.pub = pub
        self.ctl = ctl
        self.sock = sock
        self.uid = uid  # the client: SO_PEERCRED of the connection it came from
        self.counted = counted
        self.refusal: OSError | None = None  # over quota: every request gets this
        self._ip_left = ""  # the rest of an ``ip`` reply, sent a page at a time
        self._nl_left: list[bytes] = []  # the rest of a netlink reply's datagrams

    def on_readable(self) -> None:
        try:
            msg, _, flags, _ = self.ctl.recvmsg(MAX_MESSAGE)
        except BlockingIOError:
            return
        except OSError:
            msg, flags = b"", 0
        if not msg:
            self.close()
            return
        if self.refusal is not None:
            self._reply(_error_reply(self.refusal), [])
            self.close()
            return
        try:
            if flags & _socket.MSG_TRUNC:
                raise OSError(errno.EMSGSIZE, "control message too long")
            req, payload = _decode(msg)
            op = req.get("op")
            if op == "call":
                if len(msg) > MAX_CALL_MESSAGE:
                    raise OSError(errno.EMSGSIZE, "resolver call too long")
                self._call_later(req)
                return
            reply, fds = self._handle(op, req, payload)
        except Exception as exc:  # a bad request gets an error, never kills the stack
            reply, fds = _error_reply(exc), []
        self._reply(reply, fds)

    def _reply(self, reply: dict[str, Any], fds: list[Any]) -> None:
        """Send one reply; ``fds`` are descriptors or sockets (closed once sent)."""
        try:
            if self.ctl.fileno() < 0:
                return  # closed meanwhile: nobody waits for this reply
            if fds:
                _socket.send_fds(self.ctl, [_encode(reply)],
                                 [f if isinstance(f, int) else f.fileno() for f in fds])
            else:
                self.ctl.send(_encode(reply))
        except OSError:
            # a client that does not read its replies is not queued for: it is dropped
            self.close()
        finally:
            for f in fds:
                if not isinstance(f, int):
                    f.close()

    def _call_later(self, req: dict[str, Any]) -> None:
        name = req.get("name")
        if name not in _RESOLVER_CALLS:
            self._reply({"raise": "ValueError", "msg": f"unknown call {name!r}"}, [])
            return
        fn = getattr(self.pub.stack, name, None)
        if fn is None:
            self._reply({"raise": "OSError", "errno": errno.ENOSYS,
                         "msg": f"this stack does not provide {name}"}, [])
            return
        args = [_tuple(a) for a in req.get("args", [])]
        if name == "resolv_conf" and args:  # read only: a client may not change the DNS
            self._reply({"raise": "OSError", "errno": errno.EPERM,
                         "msg": "resolv_conf is read only for a stack's clients"}, [])
            return
        runner = self.pub.runner

        def work(cancel: Any) -> None:
            try:
                reply = {"result": fn(*args)}
            except Exception as exc:
                reply = _error_reply(exc)
            if not cancel.cancelled:
                runner.call_soon(lambda: self._reply(reply, []))

        if not self.pub._work.submit(self.uid, _Job(self, work)):
            self._reply({"raise": "OSError", "errno": errno.EAGAIN,
                         "msg": f"too many pending calls on this stack for uid {self.uid} "
                                f"(max_pending={self.pub.max_pending})"}, [])

    def _ip(self, req: dict[str, Any]) -> dict[str, Any]:
        """An ``ip`` command (``stack/ipcommand.py``) for ``threadnet ip --stack``: a show
        for any client, a change only for the stack's owner and root (the uid of the
        connection, SO_PEERCRED), as a kernel lets only CAP_NET_ADMIN change its
        network. The reply is the data as JSON, in pages under MAX_MESSAGE."""
        from threadnet.stack.ipcommand import IpError, execute, parse

        argv = req.get("argv")
        if not isinstance(argv, list) or not all(isinstance(w, str) for w in argv):
            raise TypeError("argv must be a list of strings")
        stack = self.pub.stack
        try:
            cmd = parse(argv)
            if cmd.changes and self.uid not in (0, os.geteuid()):
                raise IpError("RTNETLINK answers: Operation not permitted", 2, errno.EPERM)
            with stack.locked():
                data = execute(stack, cmd, stack.clock())
        except IpError as exc:
            return {"ip_error": exc.message, "status": exc.status, "errno": exc.errno}
        self._ip_left = json.dumps(data, separators=(",", ":"))
        return self._ip_page()

    def _ip_page(self) -> dict[str, Any]:
        page, self._ip_left = self._ip_left[:_IP_PAGE], self._ip_left[_IP_PAGE:]
        return {"ip": page, "more": len(self._ip_left)}

    def _rtnetlink(self) -> Any:
        from threadnet.stack.rtnetlink import RtNetlink

        rtnl = getattr(self.pub, "_rtnetlink", None)
        if rtnl is None:
            rtnl = self.pub._rtnetlink = RtNetlink(self.pub.stack)  # type: ignore[attr-defined]
        return rtnl

    def _netlink_request(self, req: dict[str, Any],
                         payload: bytes) -> tuple[dict[str, Any], list[Any]]:
        """One netlink request datagram (the payload) answered by the stack
        (``RtNetlink.handle``): the reply datagrams, in pages under MAX_MESSAGE. Changes
        only for the stack's owner and root, as ``_ip``."""
        self._nl_left = self._rtnetlink().handle(
            payload, pid=int(req.get("pid", 0)), may_change=self.uid in (0, os.geteuid()))
        return self._netlink_page()

    def _netlink_page(self) -> tuple[dict[str, Any], list[Any]]:
        """The next reply datagrams (base64), at most _NETLINK_PAGE bytes of them but at
        least one."""
        page: list[str] = []
        total = 0
        while self._nl_left and (not page or total + len(self._nl_left[0]) <= _NETLINK_PAGE):
            datagram = self._nl_left.pop(0)
            total += len(datagram)
            page.append(base64.b64encode(datagram).decode())
        return {"netlink": page, "more": len(self._nl_left)}, []

    def _netlink(self, req: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
        """An emulated NETLINK_ROUTE socket (``stack/rtnetlink.py``) for a program on the
        stack, sent with the reply: any client may read, only the stack's owner and root
        change (as ``_ip``). ``pid``: the port id the program's socket reports."""
        from threadnet.stack.rtnlserver import open_netlink

        end = open_netlink(self._rtnetlink(), pid=int(req.get("pid", 0)),
                           may_change=self.uid in (0, os.geteuid()))
        return {"ok": 1}, [end]  # sent with the reply, then closed here

    def _state(self) -> dict[str, Any]:
        s = self.sock
        assert s is not None
        return {"local": rawsocket.to_json(s.getsockname()),
                "remote": s.getpeername() if s._remote is not None else None}

    def _address(self, sock: StackSocket, addr: Any) -> Any:
        """A client's address for ``sock``: an AF_PACKET one as ``rawsocket.to_json``
        sent it, any other numeric."""
        if sock._kind == "packet":
            return rawsocket.from_json(addr)
        return _numeric_address(addr)

    def _handle(self, op: Any, req: dict[str, Any], payload: bytes) -> tuple[dict[str, Any], list[Any]]:
        stack = self.pub.stack
        if op == "ip":
            return self._ip(req), []
        if op == "ip_more":
            return self._ip_page(), []
        if op == "netlink":
            return self._netlink(req)
        if op == "netlink_request":
            return self._netlink_request(req, payload)
        if op == "netlink_more":
            return self._netlink_page()
        if op == "socket":
            if self.sock is not None:
                raise OSError(errno.EISCONN, "this control connection has a socket")
            family, kind, proto = int(req["family"]), int(req["type"]), int(req["proto"])
            if not rawsocket.may_open(rawsocket.kind_of(family, kind, proto), self.uid):
                # raw and packet sockets are the stack owner's and root's, as a kernel
                # keeps them to CAP_NET_RAW (docs/security.md)
                raise OSError(errno.EPERM, "Operation not permitted (raw and packet sockets "
                              "are for the stack's owner and root)")
            self.sock = StackSocket(stack, family, kind, proto)
            return {"ok": 1}, [self.sock.fileno()]
        sock = self.sock
        if sock is None:
            raise OSError(errno.ENOTSOCK, "no socket on this control connection")
        if op == "bind":
            sock.bind(self._address(sock, req["addr"]))
        elif op == "listen":
            sock.listen(int(req["backlog"]))
        elif op == "connect":
            err = sock._connect(_numeric_address(req["addr"]), nonblock=True)
            return {"err": err, **self._state()}, []
        elif op == "accept":
            return self._accept(sock)
        elif op == "abort":
            if sock._pump is not None:
                with stack.locked():
                    sock._pump.ep.abort(now=stack.clock())
        elif op == "status":
            pump = sock._pump
            return {"error": pump.error if pump is not None else 0}, []
        elif op == "getsockopt":
            return {"value": sock.getsockopt(int(req["level"]), int(req["name"]))}, []
        elif op == "setsockopt":
            sock.setsockopt(int(req["level"]), int(req["name"]), int(req["value"]))
        elif op == "sendto":
            addr = req.get("addr")
            n = sock.send(payload) if addr is None else sock.sendto(payload,
                                                                    self._address(sock, addr))
            return {"n": n, **self._state()}, []
        else:
            raise ValueError(f"unknown operation {op!r}")
        return self._state(), []

    def _accept(self, sock: StackSocket) -> tuple[dict[str, Any], list[Any]]:
        """The next connection: its data descriptor and a new control connection, both
        sent with the reply (which ``on_readable`` sends, once)."""
        refusal = self.pub._quota_error(self.uid)
        if refusal is not None:
            # as accept(2) at EMFILE: the connection stays queued (and announced)
            if sock._listener is not None and sock._listener.ready:
                sock._announce()
            raise refusal
        new = sock._accepted()
        if new is None:
            return {"none": 1}, []
        mine, theirs = _socket.socketpair(_UNIX, _SEQPACKET)
        self.pub._serve(mine, new, self.uid)  # the listening socket's client owns it
        return {"local": new.getsockname(), "remote": new.getpeername()}, [new.fileno(), theirs]

    def close(self) -> None:
        if self.ctl.fileno() >= 0:
            self.pub.runner.loop.remove_reader(self.ctl)
            self.ctl.close()
        self.pub._forget(self)
        if self.sock is not None:
            sock, self.sock = self.sock, None
            sock.close()
