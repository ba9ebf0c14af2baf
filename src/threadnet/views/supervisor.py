"""The supervisor: answers a program's trapped socket calls from a published stack.

(UDP, ping and raw sockets: ``dgram.py``; NETLINK_ROUTE: ``netlink.py``; interface
ioctls: ``ifioctl.py``; the filter: ``bpf.py``; docs/views.md.)

Every AF_INET/AF_INET6 socket the program opens is a socket on the stack, opened
over the publication's protocol (``threadnet.stack.remote``): a control connection
carries the calls only the stack can answer, and the data descriptor (the application
end of the stack's socket pair) is injected into the program with
SECCOMP_IOCTL_NOTIF_ADDFD, so its reads, writes, polls and epolls are the kernel's own.

The program's descriptors are recognised by their sockfs inode (``stat`` of
/proc/TID/fd/N): the inode of an injected descriptor is the one the supervisor
registered. ``close`` is not trapped, and the stack's process holds a copy of each
data descriptor, so a scanner looks every ``SCAN_INTERVAL`` for the registered inodes
in the fd tables of the program's processes (this process is their subreaper, so
orphans stay in the tree); a socket missing from two scans in a row is closed on the
stack (its control connection closed), which sends the FIN the program's close meant.

Blocking calls (a ``connect`` or ``accept`` on a blocking descriptor) wait on a thread
of their own, checking now and then that the notification is still valid: a signal
interrupts the call (the reply would fail with ENOENT), and SA_RESTART re-issues it as
a new notification, which finds the state the first left (a connect in progress says
EALREADY and is waited for again; an accepted connection whose injection failed is kept
and given to the next accept).
"""

from __future__ import annotations

import errno
import os
import select
import socket as _socket
import stat
import struct
import sys
import threading
from collections import deque
from typing import Any

from threadnet.stack import remote
from threadnet.views import dgram, ifioctl, kernel, netlink, sockaddr
from threadnet.views.kernel import NR, Gone, Listener, Notification

SCAN_INTERVAL = 0.1
#: scans a registered inode may be missing from before its socket is closed (a
#: descriptor in flight in an SCM_RIGHTS message is in no fd table for a moment)
MISSING_SCANS = 2
WAIT_SLICE = 0.1  # how often a blocked call checks that its notification is still valid
MAX_WAITERS = 512
MAX_LOGGED = 20

SOCK_TYPE_MASK = 0xF
SOCK_NONBLOCK = _socket.SOCK_NONBLOCK
SOCK_CLOEXEC = _socket.SOCK_CLOEXEC
AF_NETLINK = 16
SOL_SOCKET = _socket.SOL_SOCKET
IPPROTO_TCP = _socket.IPPROTO_TCP
SO_TYPE, SO_ERROR, SO_PROTOCOL, SO_DOMAIN, SO_ACCEPTCONN = 3, 4, 38, 39, 30
# timeouts apply to the data descriptor itself: the kernel answers them on the pair
_ON_PAIR = {(SOL_SOCKET, 20), (SOL_SOCKET, 21), (SOL_SOCKET, 66), (SOL_SOCKET, 67)}
TCP_INFO = 11
TCP_INFO_SIZE = 232
_INT = struct.Struct("=i")
_TCP_ESTABLISHED, _TCP_CLOSE, _TCP_LISTEN, _TCP_SYN_SENT = 1, 7, 10, 2


class VSocket:
    """One of the program's sockets on the stack."""

    def __init__(self, ctl: _socket.socket | None, dfd: int, ino: int, family: int, type: int,
                 proto: int) -> None:
        self.ctl = ctl
        self.dfd = dfd  # our copy of the data descriptor (the stack holds one too)
        self.ino = ino
        self.family = family
        self.type = type
        self.proto = proto or IPPROTO_TCP
        self.rpc_lock = threading.Lock()
        self.lock = threading.Lock()  # one accept at a time
        self.local: Any = None
        self.remote: Any = None
        self.listening = False
        self.connecting = False
        self.missing = 0
        self.pending = True  # being injected: not yet in the program's table
        #: connections accepted from the stack whose injection failed (a signal): the
        #: next accept gives them (their tokens are still on the descriptor)
        self.stash: deque[tuple[int, _socket.socket, dict[str, Any]]] = deque()
        # a datagram socket (threadnet.views.dgram): the program's end of its own pair
        # (our copy), the relay's end, and the sources of queued datagrams
        self.dgram = False
        self.prog: _socket.socket | None = None
        self.relay: _socket.socket | None = None
        self.addrs: deque[list[Any]] = deque()
        self.closed = False
        # an emulated NETLINK_ROUTE socket (threadnet.views.netlink): no stack socket
        self.netlink = False
        self.nl_pid = 0

    def inject_fd(self) -> int:
        """The descriptor the program gets: the stack's pair end, or (UDP) ours."""
        return self.prog.fileno() if self.prog is not None else self.dfd

    def prog_nonblocking(self) -> bool:
        """Is the program's descriptor non-blocking? (It shares our copy's file.)"""
        import fcntl

        return bool(fcntl.fcntl(self.inject_fd(), fcntl.F_GETFL) & os.O_NONBLOCK)

    def rpc(self, op: str, payload: bytes = b"", **args: Any) -> tuple[dict[str, Any], list[int]]:
        nfds = 2 if op == "accept" else 0
        assert self.ctl is not None
        reply, fds = remote._rpc(self.ctl, self.rpc_lock, {"op": op, **args}, payload, nfds=nfds)
        self.update(reply)
        return reply, fds

    def update(self, reply: dict[str, Any]) -> None:
        if reply.get("local") is not None:
            self.local = reply["local"]
        if reply.get("remote") is not None:
            self.remote = reply["remote"]

    def close(self, relay: Any = None) -> None:
        """Close this socket on the stack (a datagram socket's descriptors are released
        by the relay, which may be polling them)."""
        self.closed = True
        if self.dgram and relay is not None:
            relay.wake()
            return
        self.release()

    def release(self) -> None:
        for s in (self.prog, self.relay):
            if s is not None:
                s.close()
        for dfd, ctl, _ in self.stash:
            os.close(dfd)
            ctl.close()
        self.stash.clear()
        if self.ctl is not None:
            self.ctl.close()
        if self.dfd >= 0:
            os.close(self.dfd)
            self.dfd = -1


_NETLINK_CALLS = frozenset(NR[c] for c in (
    "connect", "bind", "getsockname", "getpeername", "setsockopt", "getsockopt", "sendto",
    "recvfrom", "sendmsg", "recvmsg", "sendmmsg", "recvmmsg"))


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"Tgid:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return tid


def _set_nonblocking(fd: int, flag: bool) -> None:
    import fcntl

    fl = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, (fl | os.O_NONBLOCK) if flag else (fl & ~os.O_NONBLOCK))


def _signed(v: int) -> int:
    """A 64-bit argument as the C int the call takes."""
    v &= 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


class Supervisor:
    """Serves one program tree's notifications from the stack published at ``path``."""

    def __init__(self, listener: Listener, path: str, root_pid: int,
                 foreign: set[int] | None = None) -> None:
        self.listener = listener
        self.path = path
        self.root = root_pid
        self.foreign = set(foreign or ())  # our children that are not the program's
        self.socks: dict[int, VSocket] = {}
        self.lock = threading.Lock()
        self.closed = False
        self.waiters = 0
        self.logged = 0
        self._told_undumpable = False
        self._threads: list[threading.Thread] = []
        self._handlers = {
            NR["socket"]: self._socket, NR["connect"]: self._connect,
            NR["bind"]: self._bind, NR["listen"]: self._listen,
            NR["accept"]: self._accept, NR["accept4"]: self._accept,
            NR["getsockname"]: self._getsockname, NR["getpeername"]: self._getpeername,
            NR["setsockopt"]: self._setsockopt, NR["getsockopt"]: self._getsockopt,
        }
        self.relay = dgram.Relay(self)
        self._handlers[NR["ioctl"]] = lambda n: ifioctl.call(self, n)
        self._remote: remote.RemoteStack | None = None
        self._nl_next = -4095  # port ids handed out when the tgid is taken
        for name in ("sendto", "sendmsg", "sendmmsg", "recvfrom", "recvmsg", "recvmmsg"):
            self._handlers[NR[name]] = self._data_call(getattr(dgram, name))

    def _data_call(self, emulate: Any) -> Any:
        """A data call with an address (or any sendmsg/recvmsg): the kernel runs it on
        every descriptor but our datagram sockets."""
        def handler(n: Notification) -> None:
            vs = self._lookup(n, n.args[0])
            if vs is None or not vs.dgram:
                self.listener.cont(n.id)
            else:
                emulate(self, n, vs)
        return handler

    # -- life ---------------------------------------------------------------------------------
    def start(self) -> None:
        for target in (self._receive_loop, self._scan_loop):
            t = threading.Thread(target=target, name=f"views-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)

    def close(self) -> None:
        self.closed = True
        with self.lock:
            socks, self.socks = list(self.socks.values()), {}
        for vs in socks:
            vs.close(self.relay)
        self.relay.wake()

    def _log(self, msg: str) -> None:
        if self.logged < MAX_LOGGED:
            self.logged += 1
            sys.stderr.write(f"threadnet run: supervisor: {msg}\n")

    def _receive_loop(self) -> None:
        try:
            self._receive()
        except BaseException as exc:
            if not self.closed:
                # nobody would answer the program's calls: close the listener, so that
                # they fail (ENOSYS) instead of waiting forever
                self._log(f"stopped: {type(exc).__name__}: {exc}; the program's socket calls "
                          "fail from now on")
                self.listener.close()

    def _receive(self) -> None:
        poller = select.poll()
        poller.register(self.listener.fd, select.POLLIN)
        while not self.closed:
            events = poller.poll(500)
            if not events:
                continue
            if events[0][1] & select.POLLHUP and not events[0][1] & select.POLLIN:
                return  # no process is left under the filter
            try:
                n = self.listener.recv()
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.EINTR) or self.closed:
                    continue
                raise
            self.dispatch(n)

    def dispatch(self, n: Notification) -> None:
        handler = self._handlers.get(n.nr)
        try:
            if n.nr in _NETLINK_CALLS:
                vs = self._lookup(n, n.args[0])
                if vs is not None and vs.netlink:
                    handler = self._netlink_call
            if handler is None:
                self.listener.cont(n.id)  # the data calls: see _data
            else:
                handler(n)
        except Gone:
            pass
        except OSError as exc:
            self._answer_error(n, exc)
        except Exception as exc:  # a bug must not leave the program's thread waiting
            self._log(f"{kernel.NAMES.get(n.nr, n.nr)}: unexpected {type(exc).__name__}: {exc}")
            self.listener.fail(n.id, errno.EIO)

    def _answer_error(self, n: Notification, exc: OSError) -> None:
        err = exc.errno or errno.EIO
        if isinstance(exc, ConnectionResetError) and "gone" in str(exc):
            err = errno.ENETDOWN  # the stack's process is gone: fail closed
        self.listener.fail(n.id, err)

    # -- the program's memory and descriptors ------------------------------------------------
    def _read(self, n: Notification, addr: int, size: int) -> bytes:
        data = kernel.read_memory(n.pid, addr, size)
        if not self.listener.valid(n.id):
            raise Gone
        return data

    def _write(self, n: Notification, addr: int, data: bytes) -> None:
        if not self.listener.valid(n.id):
            raise Gone
        kernel.write_memory(n.pid, addr, data)

    def _lookup(self, n: Notification, fd: int) -> VSocket | None:
        """The stack socket behind the program's descriptor, or None (not ours)."""
        if n.memo is not None:
            return n.memo if isinstance(n.memo, VSocket) else None
        vs = self._find(n, fd)
        n.memo = vs if vs is not None else False
        return vs


    def _ours(self, n: Notification) -> VSocket | None:
        """The stack socket the call's first argument names; None when it is not one of
        ours, and the call has been let through to the kernel."""
        vs = self._lookup(n, n.args[0])
        if vs is None:
            self.listener.cont(n.id)
        return vs
    def _find(self, n: Notification, fd: int) -> VSocket | None:
        fd = _signed(fd)
        if fd < 0:
            return None
        try:
            st = os.stat(f"/proc/{n.pid}/fd/{fd}")
        except PermissionError:
            # a process that made itself non-dumpable (PR_SET_DUMPABLE 0, as some programs
            # do against debuggers) cannot be read without CAP_SYS_PTRACE: its calls run
            # as is, so they fail on the socket pairs (closed: never the host's network)
            if not self._told_undumpable:
                self._told_undumpable = True
                self._log(f"process {n.pid} is not dumpable: its socket calls cannot be "
                          "served without privileges")
            return None
        except OSError:
            return None  # let the kernel say EBADF
        if not self.listener.valid(n.id):
            raise Gone  # the thread id may have been reused
        if not stat.S_ISSOCK(st.st_mode):
            return None
        with self.lock:
            return self.socks.get(st.st_ino)

    def _write_sockaddr(self, n: Notification, addr_ptr: int, len_ptr: int, raw: bytes) -> None:
        """Store an address as accept/getsockname do: truncated to the caller's
        length, which is set to the address's full size."""
        if not addr_ptr:
            return
        if not len_ptr:
            raise OSError(errno.EFAULT, "Bad address")
        (size,) = _INT.unpack(self._read(n, len_ptr, 4))
        if size < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        self._write(n, addr_ptr, raw[:size])
        self._write(n, len_ptr, _INT.pack(len(raw)))

    def _register(self, vs: VSocket) -> None:
        with self.lock:
            self.socks[vs.ino] = vs

    def _unregister(self, vs: VSocket) -> None:
        with self.lock:
            if self.socks.get(vs.ino) is vs:
                del self.socks[vs.ino]

    def _inject(self, n: Notification, vs: VSocket, nonblock: bool, cloexec: bool) -> None:
        """Put ``vs``'s data descriptor into the program as the call's result."""
        _set_nonblocking(vs.inject_fd(), nonblock)
        self._register(vs)
        try:
            self.listener.addfd(n.id, vs.inject_fd(), cloexec=cloexec, send=True)
        except OSError as exc:
            self._unregister(vs)
            if exc.errno == errno.ENOENT:
                raise Gone from None
            raise
        vs.pending = False

    # -- socket ------------------------------------------------------------------------------
    def _socket(self, n: Notification) -> None:
        domain, kind, proto = _signed(n.args[0]), _signed(n.args[1]), _signed(n.args[2])
        if domain == AF_NETLINK:
            if proto == netlink.NETLINK_ROUTE:
                self._netlink_socket(n, kind)
            else:
                self.listener.cont(n.id)  # other netlink families: the kernel's
            return
        if domain not in (_socket.AF_INET, _socket.AF_INET6):
            # no other family may reach the host's network (AF_UNIX never comes here)
            raise OSError(errno.EAFNOSUPPORT, "Address family not supported by protocol")
        base = kind & SOCK_TYPE_MASK
        # UDP, ping (ICMP echo) and raw IP sockets: datagrams with an address header on
        # the stack's pair (threadnet.views.dgram); the stack decides who may open raw ones
        udp = (base == _socket.SOCK_DGRAM and proto in (0, _socket.IPPROTO_UDP, 1, 58)) or \
            base == _socket.SOCK_RAW
        if not udp and (base != _socket.SOCK_STREAM or proto not in (0, IPPROTO_TCP)):
            # SCTP, SEQPACKET...: not served, and refused rather than left to the host
            raise OSError(errno.EPROTONOSUPPORT, "Protocol not supported")
        vs = self._open(domain, base, proto)
        try:
            if udp:
                vs.dgram = True
                vs.proto = proto or _socket.IPPROTO_UDP
                dgram.open_pair(vs)
            self._inject(n, vs, bool(kind & SOCK_NONBLOCK), bool(kind & SOCK_CLOEXEC))
        except BaseException:
            vs.release()
            raise
        if udp:
            self.relay.add(vs)

    def _netlink_socket(self, n: Notification, kind: int) -> None:
        vs = VSocket(None, -1, 0, AF_NETLINK, kind & SOCK_TYPE_MASK, netlink.NETLINK_ROUTE)
        with self.lock:
            used = {s.nl_pid for s in self.socks.values() if s.netlink}
            tgid = _tgid(n.pid)
            if tgid in used:
                self._nl_next -= 1
                tgid = self._nl_next & 0xFFFFFFFF  # as Linux's autobind: -4096, -4097...
        netlink.setup(vs, tgid)
        try:
            self._inject(n, vs, bool(kind & SOCK_NONBLOCK), bool(kind & SOCK_CLOEXEC))
        except BaseException:
            vs.release()
            raise
        self.relay.add(vs)

    def ip(self, argv: list[str]) -> list[dict[str, Any]]:
        """The stack's ``ip -j`` data (for the interface ioctls)."""
        if self._remote is None:
            self._remote = remote.RemoteStack(self.path)
        return self._remote.ip(argv)

    def netlink(self, request: bytes, port_id: int) -> list[bytes]:
        """One NETLINK_ROUTE request answered by the stack's emulator
        (``stack/rtnetlink.py``, through the published stack: changes only for its owner
        and root): the datagrams the program's netlink socket reads."""
        if self._remote is None:
            self._remote = remote.RemoteStack(self.path)
        return self._remote.netlink(request, port_id)

    def _netlink_call(self, n: Notification) -> None:
        vs = self._lookup(n, n.args[0])
        assert vs is not None
        netlink.call(self, n, vs)

    def _open(self, family: int, kind: int, proto: int) -> VSocket:
        try:
            ctl = remote._open_control(self.path)
        except OSError as exc:
            raise OSError(errno.ENETDOWN, f"cannot reach the stack: {exc}") from None
        try:
            reply, fds = remote._rpc(ctl, threading.Lock(), {"op": "socket", "family": family,
                                                            "type": kind, "proto": proto}, nfds=1)
            if len(fds) != 1:
                raise OSError(errno.EPROTO, "the stack sent no descriptor")
        except BaseException:
            ctl.close()
            raise
        dfd = fds[0]
        vs = VSocket(ctl, dfd, os.fstat(dfd).st_ino, family, kind, proto)
        vs.update(reply)
        return vs

    # -- connect -----------------------------------------------------------------------------
    def _connect(self, n: Notification) -> None:
        vs = self._ours(n)
        if vs is None:
            return
        size = _signed(n.args[2])
        if size < 0 or size > 128:
            raise OSError(errno.EINVAL, "Invalid argument")
        addr = sockaddr.decode(self._read(n, n.args[1], size), vs.family)
        reply, _ = vs.rpc("connect", addr=addr)
        err = reply["err"]
        if vs.dgram:
            with vs.lock:
                vs.addrs.clear()  # what is queued now is taken as from the peer
        if err in (errno.EINPROGRESS, errno.EALREADY):
            vs.connecting = True
            if not vs.prog_nonblocking():
                self._wait(n, lambda: self._finish_connect(n, vs))
                return
        if err:
            self.listener.fail(n.id, err)
        else:
            self.listener.reply(n.id, 0)

    def _finish_connect(self, n: Notification, vs: VSocket) -> bool:
        """A blocking connect's wait: True once answered (or gone)."""
        p = select.poll()
        p.register(vs.dfd, select.POLLOUT)
        if not p.poll(WAIT_SLICE * 1000):
            return not self.listener.valid(n.id)
        reply, _ = vs.rpc("status")
        err = reply["error"]
        vs.connecting = False
        if err:
            self.listener.fail(n.id, err)
        else:
            self.listener.reply(n.id, 0)
        return True

    def _wait(self, n: Notification, step: Any) -> None:
        """Run ``step`` on a thread of its own until it returns True (a blocking call)."""
        if self.waiters >= MAX_WAITERS:
            raise OSError(errno.EAGAIN, "too many blocked calls")

        def loop() -> None:
            try:
                while not self.closed:
                    if step():
                        return
                    if not self.listener.valid(n.id):
                        return  # interrupted: SA_RESTART brings it back as a new call
            except Gone:
                pass
            except OSError as exc:
                self._answer_error(n, exc)
            except Exception as exc:
                self._log(f"blocked {kernel.NAMES.get(n.nr, n.nr)}: {type(exc).__name__}: {exc}")
                self.listener.fail(n.id, errno.EIO)
            finally:
                with self.lock:
                    self.waiters -= 1

        with self.lock:
            self.waiters += 1
        threading.Thread(target=loop, name="views-wait", daemon=True).start()

    # -- bind, listen, accept ---------------------------------------------------------------------
    def _bind(self, n: Notification) -> None:
        vs = self._ours(n)
        if vs is None:
            return
        size = _signed(n.args[2])
        if size < 0 or size > 128:
            raise OSError(errno.EINVAL, "Invalid argument")
        vs.rpc("bind", addr=sockaddr.decode(self._read(n, n.args[1], size), vs.family))
        self.listener.reply(n.id, 0)

    def _listen(self, n: Notification) -> None:
        vs = self._ours(n)
        if vs is None:
            return
        backlog = _signed(n.args[1])
        vs.rpc("listen", backlog=max(1, min(backlog if backlog > 0 else 128, 4096)))
        vs.listening = True
        self.listener.reply(n.id, 0)

    def _accept(self, n: Notification) -> None:
        vs = self._ours(n)
        if vs is None:
            return
        if not vs.listening:
            raise OSError(errno.EINVAL, "Invalid argument")
        flags = _signed(n.args[3]) if n.nr == NR["accept4"] else 0
        if flags & ~(SOCK_NONBLOCK | SOCK_CLOEXEC):
            raise OSError(errno.EINVAL, "Invalid argument")
        if self._try_accept(n, vs, flags):
            return
        if vs.prog_nonblocking():
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

        def step() -> bool:
            p = select.poll()
            p.register(vs.dfd, select.POLLIN)
            if not p.poll(WAIT_SLICE * 1000):
                return False
            if not self.listener.valid(n.id):
                return True
            return self._try_accept(n, vs, flags)

        self._wait(n, step)

    def _try_accept(self, n: Notification, vs: VSocket, flags: int) -> bool:
        """Accept one ready connection into the program: False if none is ready."""
        with vs.lock:
            while True:
                try:
                    token = _peek(vs.dfd)
                except BlockingIOError:
                    return False
                if not token:
                    raise OSError(errno.EINVAL, "Invalid argument (the listener is closed)")
                if vs.stash:
                    dfd, ctl, state = vs.stash.popleft()
                else:
                    reply, fds = vs.rpc("accept")
                    if reply.get("none") or len(fds) != 2:
                        for fd in fds:
                            os.close(fd)
                        _take_token(vs.dfd)  # that connection went away meanwhile
                        continue
                    dfd, ctl = fds[0], _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET,
                                                      fileno=fds[1])
                    state = reply
                new = VSocket(ctl, dfd, os.fstat(dfd).st_ino, vs.family, vs.type, vs.proto)
                new.update(state)
                try:
                    if new.remote is not None:
                        self._write_sockaddr(n, n.args[1], n.args[2],
                                             sockaddr.encode(new.remote, vs.family))
                    self._inject(n, new, bool(flags & SOCK_NONBLOCK), bool(flags & SOCK_CLOEXEC))
                except Gone:
                    vs.stash.appendleft((dfd, ctl, state))  # for the next accept
                    raise
                except BaseException:
                    new.close()
                    _take_token(vs.dfd)
                    raise
                _take_token(vs.dfd)
                return True

    # -- names and options ------------------------------------------------------------------------
    def _getsockname(self, n: Notification) -> None:
        vs = self._ours(n)
        if vs is None:
            return
        local = vs.local or (("0.0.0.0", 0) if vs.family == _socket.AF_INET else ("::", 0, 0, 0))
        self._write_sockaddr(n, n.args[1], n.args[2], sockaddr.encode(local, vs.family))
        self.listener.reply(n.id, 0)

    def _getpeername(self, n: Notification) -> None:
        vs = self._ours(n)
        if vs is None:
            return
        if vs.remote is None or self._still_connecting(vs) or vs.listening:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        self._write_sockaddr(n, n.args[1], n.args[2], sockaddr.encode(vs.remote, vs.family))
        self.listener.reply(n.id, 0)

    def _setsockopt(self, n: Notification) -> None:
        vs = self._lookup(n, n.args[0])
        level, name = _signed(n.args[1]), _signed(n.args[2])
        if vs is None or (level, name) in _ON_PAIR:
            self.listener.cont(n.id)
            return
        size = _signed(n.args[4])
        if size < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        raw = self._read(n, n.args[3], min(size, 8)) if n.args[3] else b""
        vs.rpc("setsockopt", level=level, name=name, value=int.from_bytes(raw, "little"))
        self.listener.reply(n.id, 0)

    def _getsockopt(self, n: Notification) -> None:
        vs = self._lookup(n, n.args[0])
        level, name = _signed(n.args[1]), _signed(n.args[2])
        if vs is None or (level, name) in _ON_PAIR:
            self.listener.cont(n.id)
            return
        ptr, len_ptr = n.args[3], n.args[4]
        if not len_ptr:
            raise OSError(errno.EFAULT, "Bad address")
        (size,) = _INT.unpack(self._read(n, len_ptr, 4))
        if size < 0:
            raise OSError(errno.EINVAL, "Invalid argument")
        if (level, name) == (IPPROTO_TCP, TCP_INFO):
            raw = bytearray(TCP_INFO_SIZE)
            raw[0] = self._tcp_state(vs)
            raw = bytes(raw)
        else:
            fixed = {(SOL_SOCKET, SO_DOMAIN): vs.family, (SOL_SOCKET, SO_TYPE): vs.type,
                     (SOL_SOCKET, SO_PROTOCOL): vs.proto,
                     (SOL_SOCKET, SO_ACCEPTCONN): int(vs.listening)}
            value = fixed.get((level, name))
            if value is None:
                value = vs.rpc("getsockopt", level=level, name=name)[0]["value"]
            raw = _INT.pack(int(value) & 0xFFFFFFFF if int(value) >= 0 else int(value))
        self._write(n, ptr, raw[:size])
        self._write(n, len_ptr, _INT.pack(min(size, len(raw))))
        self.listener.reply(n.id, 0)

    def _still_connecting(self, vs: VSocket) -> bool:
        """Is a non-blocking connect still in progress? Its descriptor becomes writable
        when the handshake completes (or fails)."""
        if not vs.connecting:
            return False
        p = select.poll()
        p.register(vs.dfd, select.POLLOUT)
        if not p.poll(0):
            return True
        vs.connecting = False
        return False

    def _tcp_state(self, vs: VSocket) -> int:
        if vs.listening:
            return _TCP_LISTEN
        if self._still_connecting(vs):
            return _TCP_SYN_SENT
        return _TCP_ESTABLISHED if vs.remote is not None else _TCP_CLOSE

    # -- finding closed sockets ---------------------------------------------------------------------
    def _scan_loop(self) -> None:
        import time

        while not self.closed:
            # (without sockets, only orphans to reap: a slower pace)
            time.sleep(SCAN_INTERVAL if self.socks else 10 * SCAN_INTERVAL)
            try:
                self.scan()
            except Exception as exc:
                self._log(f"scan: {type(exc).__name__}: {exc}")

    def members(self) -> tuple[set[int], set[int]]:
        """The program's processes, and those of them that are zombies we may reap."""
        me = os.getpid()
        parents: dict[int, list[int]] = {}
        zombies: set[int] = set()
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    raw = f.read()
            except OSError:
                continue
            rest = raw[raw.rfind(b")") + 2:].split()
            pid, ppid = int(name), int(rest[1])
            parents.setdefault(ppid, []).append(pid)
            if rest[0] == b"Z":
                zombies.add(pid)
        todo = [self.root] + [p for p in parents.get(me, []) if p not in self.foreign]
        seen: set[int] = set()
        while todo:
            p = todo.pop()
            if p in seen:
                continue
            seen.add(p)
            todo.extend(parents.get(p, []))
        reap = {p for p in zombies & seen if p != self.root and p in parents.get(me, [])}
        return seen - zombies, reap

    def scan(self) -> None:
        """Close the stack sockets no process of the program holds any more."""
        procs, reap = self.members()
        for pid in reap:
            try:
                os.waitpid(pid, os.WNOHANG)  # an orphan given to us (subreaper)
            except ChildProcessError:
                pass
        with self.lock:
            if not self.socks:
                return
        held: set[int] = set()
        for pid in procs:
            try:
                names = os.listdir(f"/proc/{pid}/fd")
            except FileNotFoundError:
                continue  # exited meanwhile: its descriptors are closed
            except OSError:
                return  # cannot see this process's table: close nothing this time
            for fd in names:
                try:
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                except OSError:
                    continue
                if link.startswith("socket:["):
                    held.add(int(link[8:-1]))
        gone = []
        with self.lock:
            for ino, vs in list(self.socks.items()):
                if ino in held or vs.pending:
                    vs.missing = 0
                    continue
                vs.missing += 1
                if vs.missing >= MISSING_SCANS:
                    del self.socks[ino]
                    gone.append(vs)
        for vs in gone:
            with vs.lock:
                vs.close(self.relay)


def _peek(fd: int) -> bytes:
    s = _socket.socket(fileno=os.dup(fd))
    try:
        return s.recv(1, _socket.MSG_PEEK | _socket.MSG_DONTWAIT)
    finally:
        s.close()


def _take_token(fd: int) -> None:
    s = _socket.socket(fileno=os.dup(fd))
    try:
        s.recv(1, _socket.MSG_DONTWAIT)
    except OSError:
        pass
    finally:
        s.close()
