"""Stacks named by path: ``stack.publish(path)`` and ``msocket(path, ...)`` (msocket(2)'s idea);
this module has the protocol and the other process's side, ``stack/publication.py`` the stack's.

A published stack listens on an AF_UNIX SOCK_SEQPACKET socket at ``path`` (the "stack
special file"); its mode and group decide who may use the stack, because connecting to
a Unix socket needs write permission on it. Every virtual socket opened from another
process has two descriptors there:

* the *data* descriptor, the application end of the same socket pair a local
  ``StackSocket`` uses, passed with SCM_RIGHTS: reads and writes go straight through
  the kernel, so the cross-process data path costs what the in-process one does;
* a *control* connection (one per socket) carrying the calls the stack must answer:
  bind, listen, connect, accept, names and options, UDP ``sendto``. Closing it (or the
  process dying) closes the socket in the stack, just as closing a descriptor would.

Messages are one JSON object per packet, optionally followed by a NUL and a binary
payload; replies carry descriptors as ancillary data. The stack's process serves them
on its runner thread (resolver calls, which may wait for the network, on a worker
thread). If the stack's process dies, the data descriptors see their peer vanish and
the control connections reset: blocked calls fail with ECONNRESET or EPIPE at once.
"""

from __future__ import annotations

import _socket as _csocket
import base64
import errno
import json
import logging
import os
import select
import socket as _socket
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from threadnet.stack import rawsocket
from threadnet.stack.socket import AF_INET, SOCK_STREAM, StackSocket

if TYPE_CHECKING:
    pass

MAX_MESSAGE = 65535 + 4096
_UNIX = _socket.AF_UNIX
_SEQPACKET = _socket.SOCK_SEQPACKET


def _encode(obj: dict[str, Any], payload: bytes = b"") -> bytes:
    head = json.dumps(obj, separators=(",", ":")).encode()
    return head + b"\0" + payload if payload else head


def _decode(msg: bytes) -> tuple[dict[str, Any], bytes]:
    head, _, payload = msg.partition(b"\0")
    obj = json.loads(head)
    if not isinstance(obj, dict):
        raise ValueError("a control message must be a JSON object")
    return obj, payload


_log = logging.getLogger("threadnet.stack.remote")
MAX_LOGGED_ERRORS = 20  # tracebacks logged per process (a client must not flood the log)
_internal_errors = 0


def _error_reply(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, _socket.gaierror):
        return {"raise": "gaierror", "errno": exc.errno, "msg": exc.strerror or str(exc)}
    if isinstance(exc, _socket.herror):
        return {"raise": "herror", "errno": exc.errno, "msg": exc.strerror or str(exc)}
    if isinstance(exc, TimeoutError) and exc.errno is None:
        return {"raise": "timeout", "msg": str(exc)}
    if isinstance(exc, OSError):
        return {"raise": "OSError", "errno": exc.errno, "msg": exc.strerror or str(exc)}
    if isinstance(exc, TypeError | ValueError | OverflowError):
        return {"raise": type(exc).__name__, "msg": str(exc)}
    # anything else is a bug in the stack: the stack's log gets the traceback, and the
    # client an I/O error that says what happened (not a ValueError it could not place)
    global _internal_errors
    _internal_errors += 1
    if _internal_errors <= MAX_LOGGED_ERRORS:
        _log.error("published stack: unexpected %s while serving a client", type(exc).__name__,
                   exc_info=exc)
    return {"raise": "OSError", "errno": errno.EIO,
            "msg": f"internal error in the stack: {type(exc).__name__}: {exc}"}


def _raise_from(reply: dict[str, Any]) -> None:
    kind, msg = reply["raise"], reply.get("msg", "")
    if kind == "gaierror":
        raise _socket.gaierror(reply["errno"], msg)
    if kind == "herror":
        raise _socket.herror(reply["errno"], msg)
    if kind == "timeout":
        raise TimeoutError(msg)
    if kind == "OSError":
        raise OSError(reply["errno"], msg)
    raise {"TypeError": TypeError, "OverflowError": OverflowError}.get(kind, ValueError)(msg)


def _tuple(addr: Any) -> Any:
    return tuple(addr) if isinstance(addr, list) else addr


def _numeric_address(addr: Any) -> tuple:
    """An address from a client: numeric only (clients resolve names first, so the
    runner's thread never waits for a resolver that needs the runner)."""
    addr = _tuple(addr)
    if not isinstance(addr, tuple) or len(addr) < 2 or not isinstance(addr[0], str):
        raise TypeError(f"address must be a (host, port) tuple, not {addr!r}")
    host = addr[0]
    if host not in ("", "<broadcast>"):
        import ipaddress

        try:
            ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            raise _socket.gaierror(_socket.EAI_NONAME, f"{host!r}: send a numeric address") from None
    return addr


# -- the other process's side ------------------------------------------------------------------------
def _open_control(path: str) -> _socket.socket:
    ctl = _socket.socket(_UNIX, _SEQPACKET)
    try:
        ctl.connect(path)
    except BaseException:
        ctl.close()
        raise
    return ctl


def _rpc(ctl: _socket.socket, lock: threading.Lock, req: dict[str, Any], payload: bytes = b"",
         nfds: int = 0) -> tuple[dict[str, Any], list[int]]:
    with lock:
        try:
            ctl.send(_encode(req, payload))
            if nfds:
                msg, fds, _, _ = _socket.recv_fds(ctl, MAX_MESSAGE, nfds)
            else:
                msg, fds = ctl.recv(MAX_MESSAGE), []
        except (BrokenPipeError, ConnectionResetError) as exc:
            raise ConnectionResetError(errno.ECONNRESET, "the stack's process is gone") from exc
    if not msg:
        raise ConnectionResetError(errno.ECONNRESET, "the stack's process is gone")
    reply, _ = _decode(msg)
    if "raise" in reply:
        for fd in fds:
            os.close(fd)
        _raise_from(reply)
    return reply, fds


def open_netlink(path: str | os.PathLike[str], pid: int) -> int:
    """A descriptor standing for a NETLINK_ROUTE socket on the stack published at
    ``path`` (``stack/rtnetlink.py``), for a program whose socket reports port id
    ``pid``: inject it in place of the program's ``socket(AF_NETLINK, ...)``."""
    ctl = _open_control(os.fspath(path))
    try:
        _, fds = _rpc(ctl, threading.Lock(), {"op": "netlink", "pid": int(pid)}, nfds=1)
    finally:
        ctl.close()
    if len(fds) != 1:
        for fd in fds:
            os.close(fd)
        raise OSError(errno.EPROTO, "the stack sent no descriptor")
    return fds[0]


class RemoteStack:
    """A stack published by another process, opened by its path (libioth's ``ioth_msocket``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.path.abspath(os.fspath(path))
        self._svc: _socket.socket | None = None
        self._svc_pid = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<RemoteStack {self.path}>"

    def socket(self, family: int = AF_INET, type: int = SOCK_STREAM, proto: int = 0) -> RemoteSocket:
        ctl = _open_control(self.path)
        try:
            base = type & ~(_socket.SOCK_NONBLOCK | _socket.SOCK_CLOEXEC)
            _, fds = _rpc(ctl, threading.Lock(), {"op": "socket", "family": int(family),
                                                 "type": int(base), "proto": int(proto)}, nfds=1)
            if len(fds) != 1:
                raise OSError(errno.EPROTO, "the stack sent no descriptor")
        except BaseException:
            ctl.close()
            raise
        sock = RemoteSocket(self, ctl, fds[0], int(family), base, int(proto))
        if type & _socket.SOCK_NONBLOCK:
            sock.setblocking(False)
        return sock

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            if self._svc is None or self._svc_pid != os.getpid():
                self._svc = _open_control(self.path)
                self._svc_pid = os.getpid()
            svc = self._svc
        try:
            reply, _ = _rpc(svc, self._lock, {"op": "call", "name": name, "args": list(args)})
        except ConnectionResetError:
            with self._lock:
                if self._svc is svc:
                    self._svc = None
                    svc.close()
            raise
        return reply["result"]

    def ip(self, argv: Sequence[str]) -> list[dict[str, Any]]:
        """Run an ``ip`` command line on the stack (``["-6", "route", "show"]``; see
        ``threadnet.stack.ipcommand``): a show's data as ``ip -j`` prints it, [] for a
        change. ``threadnet.stack.ipcommand.IpError`` as ``ip`` would fail; a change
        from a user other than the stack's owner or root fails with "Operation not
        permitted"."""
        from threadnet.stack.ipcommand import IpError

        ctl = _open_control(self.path)
        try:
            lock = threading.Lock()
            reply, _ = _rpc(ctl, lock, {"op": "ip", "argv": [str(w) for w in argv]})
            if "ip_error" in reply:
                raise IpError(reply["ip_error"], int(reply["status"]), int(reply["errno"]))
            pages = [reply["ip"]]
            while reply.get("more"):
                reply, _ = _rpc(ctl, lock, {"op": "ip_more"})
                pages.append(reply["ip"])
        finally:
            ctl.close()
        return json.loads("".join(pages))

    def netlink(self, request: bytes, pid: int) -> list[bytes]:
        """One NETLINK_ROUTE request datagram answered by the stack
        (``stack/rtnetlink.py``): the datagrams a program's netlink socket would read,
        each carrying port id ``pid``. Changes only for the stack's owner and root
        (others get EPERM in the netlink error)."""
        if len(request) > 65536:
            raise OSError(errno.EMSGSIZE, "netlink request too long")
        ctl = _open_control(self.path)
        try:
            lock = threading.Lock()
            reply, _ = _rpc(ctl, lock, {"op": "netlink_request", "pid": int(pid)},
                            bytes(request))
            out = [base64.b64decode(d) for d in reply["netlink"]]
            while reply.get("more"):
                reply, _ = _rpc(ctl, lock, {"op": "netlink_more"})
                out += [base64.b64decode(d) for d in reply["netlink"]]
        finally:
            ctl.close()
        return out

    # the stdlib resolver functions, answered by the stack
    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> list[tuple]:
        if isinstance(host, bytes):
            host = host.decode("idna")
        if isinstance(port, bytes):
            port = port.decode()
        out = []
        for fam, kind, pr, canon, addr in self._call("getaddrinfo", host, port, int(family),
                                                      int(type), int(proto), int(flags)):
            out.append((_socket.AddressFamily(fam), _socket.SocketKind(kind), pr, canon, tuple(addr)))
        return out

    def gethostname(self) -> str:
        return self._call("gethostname")

    def resolv_conf(self) -> str:
        """The stack's name settings as resolv.conf text (read only)."""
        return self._call("resolv_conf")

    def getfqdn(self, name: str = "") -> str:
        return self._call("getfqdn", name)

    def gethostbyname(self, name: str) -> str:
        return self._call("gethostbyname", name)

    def gethostbyname_ex(self, name: str) -> tuple[str, list[str], list[str]]:
        return tuple(self._call("gethostbyname_ex", name))  # type: ignore[return-value]

    def gethostbyaddr(self, ip: str) -> tuple[str, list[str], list[str]]:
        return tuple(self._call("gethostbyaddr", ip))  # type: ignore[return-value]

    def getnameinfo(self, sockaddr: tuple, flags: int) -> tuple[str, str]:
        return tuple(self._call("getnameinfo", list(sockaddr), int(flags)))  # type: ignore[return-value]

    def close(self) -> None:
        with self._lock:
            if self._svc is not None:
                self._svc.close()
                self._svc = None


class RemoteSocket(StackSocket):
    """A socket on a stack in another process. The descriptor is the real data path; the
    control connection carries the calls only the stack can answer."""

    def __init__(self, remote: RemoteStack, ctl: _socket.socket, fd: int, family: int, type: int,
                 proto: int, state: dict[str, Any] | None = None) -> None:
        _socket.socket.__init__(self, _UNIX, type, 0, fileno=fd)
        self._rstack = remote
        self._ctl = ctl
        self._rlock = threading.Lock()
        # what the inherited StackSocket methods read; the rest of its state lives in the
        # stack's process
        self._vfamily = family
        self._vtype = type
        self._vproto = proto or (_socket.IPPROTO_TCP if type == SOCK_STREAM else _socket.IPPROTO_UDP)
        self._kind = rawsocket.kind_of(family, type, proto)
        self._listening = False
        self._laddr: tuple | None = None
        self._raddr: tuple | None = None
        if state:
            self._update(state)

    def _update(self, reply: dict[str, Any]) -> None:
        if reply.get("local") is not None:
            self._laddr = tuple(rawsocket.from_json(reply["local"]))
        if reply.get("remote") is not None:
            self._raddr = tuple(reply["remote"])

    def _call(self, op: str, payload: bytes = b"", nfds: int = 0, **args: Any
              ) -> tuple[dict[str, Any], list[int]]:
        if self._ctl.fileno() < 0:
            raise OSError(errno.EBADF, "Bad file descriptor")
        reply, fds = _rpc(self._ctl, self._rlock, {"op": op, **args}, payload, nfds)
        self._update(reply)
        return reply, fds

    def __repr__(self) -> str:
        state = "closed" if self.fileno() < 0 else f"fd={self.fileno()}"
        return (f"<threadnet.RemoteSocket {state} stack={self._rstack.path} "
                f"family={self.family.name} type={self.type.name} laddr={self._laddr} "
                f"raddr={self._raddr}>")

    def _numeric(self, address: Any) -> list:
        """Names are resolved by the stack first (on its worker thread, not its runner)."""
        if self._kind == "packet":
            return rawsocket.to_json(address)
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
        host = address[0]
        if host and host not in ("<broadcast>",):
            try:
                import ipaddress

                ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                infos = self._rstack.getaddrinfo(host, address[1], self._vfamily, self._vtype)
                if not infos:
                    raise _socket.gaierror(_socket.EAI_NONAME, f"{host}: no address") from None
                return [infos[0][4][0], *address[1:]]
        return list(address)

    def getsockname(self) -> tuple:  # type: ignore[override]
        if self._laddr is None:
            self._call("getsockopt", level=_socket.SOL_SOCKET, name=_socket.SO_TYPE)
        return self._laddr if self._laddr is not None else self._fmt(None)

    def getpeername(self) -> tuple:  # type: ignore[override]
        if self._raddr is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._raddr

    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:  # type: ignore[override]
        v = int.from_bytes(value, "little") if isinstance(value, bytes | bytearray) else int(value)
        self._call("setsockopt", level=level, name=optname, value=v)

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:  # type: ignore[override]
        return self._call("getsockopt", level=level, name=optname)[0]["value"]

    def bind(self, address: Any) -> None:  # type: ignore[override]
        self._call("bind", addr=self._numeric(address))

    def listen(self, backlog: int = 128) -> None:  # type: ignore[override]
        self._call("listen", backlog=backlog)
        self._listening = True

    def _can_accept(self) -> bool:
        return self._listening

    def _accepted(self) -> StackSocket | None:
        reply, fds = self._call("accept", nfds=2)
        if reply.get("none") or len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return None
        ctl = _socket.socket(_UNIX, _SEQPACKET, fileno=fds[1])
        return RemoteSocket(self._rstack, ctl, fds[0], self._vfamily, SOCK_STREAM, 0, reply)

    def _connect(self, address: Any, nonblock: bool | None = None) -> int:
        reply, _ = self._call("connect", addr=self._numeric(address))
        err = reply["err"]
        timeout = self.gettimeout()
        if err != errno.EINPROGRESS or timeout == 0.0:
            return err
        _, writable, _ = select.select([], [self], [], timeout)
        if not writable:
            self._call("abort")
            raise TimeoutError("timed out")
        return self.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)

    def _check_eof(self) -> None:
        err = self._call("status")[0]["error"]
        if err and err != errno.EPIPE:
            raise OSError(err, os.strerror(err))

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:  # type: ignore[override]
        address = flags_or_addr if addr is None else addr
        if self._vtype == SOCK_STREAM:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        data = bytes(data)
        if len(data) > 65507:
            raise OSError(errno.EMSGSIZE, "Message too long")
        return self._call("sendto", data, addr=self._numeric(address))[0]["n"]

    def send(self, data: Any, flags: int = 0) -> int:  # type: ignore[override]
        if self._vtype != SOCK_STREAM:
            data = bytes(data)
            return self._call("sendto", data, addr=None)[0]["n"]
        return _socket.socket.send(self, data, flags)

    def close(self) -> None:  # type: ignore[override]
        _socket.socket.close(self)

    def _real_close(self, _ss: Any = _csocket.socket) -> None:
        try:
            self._ctl.close()
        finally:
            _ss.close(self)

    def detach(self) -> int:
        fd = super().detach()
        self._ctl.close()
        return fd
