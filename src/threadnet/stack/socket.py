"""Sockets on a Stack that the standard library accepts: ``stack.socket()`` / ``msocket()``.

A ``StackSocket`` *is* a ``socket.socket``: its descriptor is one end of an AF_UNIX
socket pair, so select, poll, epoll, ``selectors``, ``asyncio``, ``socketserver`` and
``ssl`` work on it unchanged, and reads and writes are the kernel's own (fast, with its
flow control). The stack holds the other end and pumps bytes between it and the TCP
connection (the pump and the core's owners: ``stack/sockpump.py``); connect, bind,
listen, accept, addresses and options are answered by the stack. Stream data flow:

    application  <->  [socket pair]  <->  pump (runner thread)  <->  TcpConnection

Flow control is end to end: the pump reads from the pair only while the connection has
send space, and takes received data out of the connection only when the pair accepts
it, so a slow reader shrinks the advertised TCP window.

A non-blocking ``connect`` must not look writable before the handshake completes. The
pair's application side is pre-filled (with a tiny send buffer) until it would block;
when the connection is established the pump discards exactly that filler, and the
descriptor becomes writable: select/asyncio see the connect complete at the right time.

Datagram sockets carry a small address header in each datagram of the pair; ``sendto``
goes straight into the stack (in the caller's thread, under the stack lock).

The stack's state names a socket by a handle (``stack/upper.py``): each pump, listening
socket and datagram socket registers an owner in the stack's ``upper`` (``Owners``), and
the core calls it there (``on_tcp_event``, ``on_tcp_ready``, ``on_udp``...).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket as _socket
import struct
import time
from typing import TYPE_CHECKING, Any

from threadnet.stack import rawsocket
from threadnet.stack.sockpump import (
    _APP_BUF,
    _UDP_HDR,
    _DatagramOwner,
    _ListeningOwner,
    _StreamPump,
    unfinished,
)
from threadnet.stack.tcplayer import CATCH_ALL, TCP_BUF, TcpEndpoint, TcpListener

if TYPE_CHECKING:
    from threadnet.stack.stack import Stack

AF_INET, AF_INET6 = _socket.AF_INET, _socket.AF_INET6
SOCK_STREAM, SOCK_DGRAM = _socket.SOCK_STREAM, _socket.SOCK_DGRAM
_LINGER = struct.Struct("ii")


def _to_int_family(family: int) -> int:
    return 4 if family == AF_INET else 6


class StackSocket(_socket.socket):
    """A socket on a threadnet Stack (TCP or UDP, IPv4 or IPv6; raw IP, ping and packet
    sockets: ``stack/rawsocket.py``)."""

    #: a raw, ping or packet socket's end (``stack/rawsocket.py``), and its kind
    _raw: Any = None
    _kind = ""
    _error = 0

    def __init__(self, stack: Stack, family: int = AF_INET, type: int = SOCK_STREAM,
                 proto: int = 0, *, _endpoint: TcpEndpoint | None = None) -> None:
        base_type = type & ~(getattr(_socket, "SOCK_NONBLOCK", 0) | getattr(_socket, "SOCK_CLOEXEC", 0))
        kind = rawsocket.kind_of(family, base_type, proto)
        if not kind and base_type not in (SOCK_STREAM, SOCK_DGRAM):
            raise OSError(errno.ESOCKTNOSUPPORT, "only SOCK_STREAM, SOCK_DGRAM and SOCK_RAW")
        # datagrams travel on a SEQPACKET pair: boundaries kept, no 10-datagram
        # max_dgram_qlen limit, and the application sees EOF if the stack's end goes away
        app, inner = _socket.socketpair(_socket.AF_UNIX, base_type if base_type == SOCK_STREAM
                                        else _socket.SOCK_SEQPACKET)
        for s in (app, inner):
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, _APP_BUF)
            s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, _APP_BUF)
        super().__init__(_socket.AF_UNIX, base_type, 0, fileno=app.detach())
        self._stack = stack
        self._vfamily = family
        self._vtype = base_type
        self._vproto = proto or (_socket.IPPROTO_TCP if base_type == SOCK_STREAM else _socket.IPPROTO_UDP)
        self._inner = inner
        inner.setblocking(False)
        self._local: tuple[bytes, int] | None = None
        self._remote: tuple[bytes, int] | None = None
        self._error = 0
        self._opts: dict[tuple[int, int], int] = {}
        self._listener: TcpListener | None = None
        self._pump: _StreamPump | None = None
        self._udp_key: tuple[bytes, int] | None = None
        self._v6only = False
        # sendto's last destination, as given and as parsed (numeric addresses only)
        self._last_to: Any = None
        self._last_parsed: tuple[int, bytes, int] = (0, b"", 0)
        if kind:
            self._kind = kind
            try:
                self._raw = rawsocket.open_end(self, kind)
            except BaseException:
                super().close()
                inner.close()
                raise
        if type & getattr(_socket, "SOCK_NONBLOCK", 0):
            self.setblocking(False)
        if _endpoint is not None:
            self._local, self._remote = _endpoint.local, _endpoint.remote
            self._pump = _StreamPump(self, _endpoint, connected=True)

    # -- what the stdlib reads -----------------------------------------------------------
    @property
    def family(self) -> _socket.AddressFamily:  # type: ignore[override]
        return _socket.AddressFamily(self._vfamily)

    @property
    def type(self) -> _socket.SocketKind:  # type: ignore[override]
        return _socket.SocketKind(self._vtype)

    @property
    def proto(self) -> int:  # type: ignore[override]
        return self._vproto

    def __repr__(self) -> str:
        state = "closed" if self.fileno() < 0 else f"fd={self.fileno()}"
        return (f"<threadnet.StackSocket {state} family={self.family.name} type={self.type.name} "
                f"laddr={self._fmt(self._local) if self._local else None} "
                f"raddr={self._fmt(self._remote) if self._remote else None}>")

    # -- addresses -----------------------------------------------------------------------
    def _parse(self, address: Any) -> tuple[int, bytes, int]:
        """(IP version, packed address, port) for a stdlib-style address tuple."""
        if not isinstance(address, tuple) or len(address) < 2:
            raise TypeError(f"address must be a (host, port) tuple, not {address!r}")
        host, port = address[0], address[1]
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise OverflowError("port must be 0-65535")
        if host in ("", None):
            return (_to_int_family(self._vfamily), b"", port)
        if host == "<broadcast>":
            host = "255.255.255.255"
        try:
            ip = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            # a name: resolved on this stack, as CPython's setipaddr does (first result)
            sockaddr = self._stack.getaddrinfo(host, port, self._vfamily, self._vtype)[0][4]
            return self._parse(sockaddr[:2])
        if self._vfamily == AF_INET:
            if ip.version != 4:
                raise OSError(errno.EAFNOSUPPORT, f"{host} is not an IPv4 address")
            return 4, b"" if ip.is_unspecified else ip.packed, port
        if ip.version == 4:
            raise _socket.gaierror(_socket.EAI_ADDRFAMILY, f"{host}: IPv4 on an AF_INET6 socket "
                                   "needs the ::ffff: form")
        if ip.is_unspecified:  # "::" binds every address, as "" does
            return 6, b"", port
        if ip.ipv4_mapped is not None:  # v4-mapped on an IPv6 socket: the hybrid engine
            if self._v6only:
                raise OSError(errno.ENETUNREACH, "IPV6_V6ONLY socket")
            return 4, ip.ipv4_mapped.packed, port
        return 6, ip.packed, port

    def _fmt(self, addr: tuple[bytes, int] | None) -> tuple:
        if addr is None:
            return ("0.0.0.0", 0) if self._vfamily == AF_INET else ("::", 0, 0, 0)
        a, port = addr
        if self._vfamily == AF_INET:
            return (str(ipaddress.ip_address(a)) if a else "0.0.0.0", port)
        if len(a) == 4:
            return ("::ffff:" + str(ipaddress.ip_address(a)), port, 0, 0)
        return (str(ipaddress.ip_address(a)) if a else "::", port, 0, 0)

    def getsockname(self) -> tuple:  # type: ignore[override]
        if self._raw is not None:
            return self._raw.name()
        return self._fmt(self._local)

    def getpeername(self) -> tuple:  # type: ignore[override]
        if self._remote is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return self._fmt(self._remote)

    # -- options -------------------------------------------------------------------------
    def setsockopt(self, level: int, optname: int, value: Any, optlen: int | None = None) -> None:  # type: ignore[override]
        if (level, optname) == (_socket.SOL_SOCKET, _socket.SO_LINGER):
            # struct linger {int l_onoff; int l_linger;}, as Linux takes it
            try:
                if isinstance(value, int):  # the struct as a number (a published stack's client)
                    value = value.to_bytes(_LINGER.size, "little")
                onoff, secs = _LINGER.unpack(bytes(value)[:_LINGER.size])
            except (TypeError, OverflowError, struct.error):
                raise OSError(errno.EINVAL, "Invalid argument") from None
            self._opts[(level, optname)] = (int(bool(onoff)), max(0, secs))
            return
        v = int.from_bytes(value, "little") if isinstance(value, bytes | bytearray) else value
        if self._raw is not None and self._raw.setsockopt(level, optname, int(v)):
            self._opts[(level, optname)] = v
            return
        self._opts[(level, optname)] = v
        self._last_to = None  # (IPV6_V6ONLY changes what an address means)
        if (level, optname) == (_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY):
            self._v6only = bool(v)
            if self._listener is not None:
                self._listener.v6only = bool(v)
        pump = self._pump
        if pump is not None:
            with self._stack.locked():
                pump.apply_options()

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> Any:  # type: ignore[override]
        if (level, optname) == (_socket.SOL_SOCKET, _socket.SO_ERROR):
            err, self._error = self._error, 0
            if err == 0 and self._pump is not None and self._pump.error:
                err = self._pump.error
            return err
        if (level, optname) == (_socket.SOL_SOCKET, _socket.SO_TYPE):
            return self._vtype
        if (level, optname) == (_socket.SOL_SOCKET, _socket.SO_ACCEPTCONN):
            return int(self._listener is not None)
        if (level, optname) == (_socket.SOL_SOCKET, _socket.SO_LINGER):
            onoff, secs = self._opts.get((level, optname), (0, 0))
            return onoff if buflen is None else _LINGER.pack(onoff, secs)[:buflen]
        if (level, optname) == (_socket.IPPROTO_TCP, _socket.TCP_MAXSEG) and \
                self._vtype == SOCK_STREAM:
            # as Linux: the segment size in use (options excluded), 536 before a connection
            return self._pump.ep.conn.snd_mss if self._pump is not None else 536
        bufopt = (level, optname) in ((_socket.SOL_SOCKET, _socket.SO_RCVBUF),
                                      (_socket.SOL_SOCKET, _socket.SO_SNDBUF))
        if bufopt and self._pump is not None:  # what the connection really has
            conn = self._pump.ep.conn
            return conn.rcvbuf if optname == _socket.SO_RCVBUF else conn.sndbuf
        if (level, optname) in self._opts:
            return self._opts[(level, optname)]
        return TCP_BUF if bufopt else 0

    def _conn_options(self) -> dict[str, Any]:
        o = self._opts
        opts: dict[str, Any] = {}
        if o.get((_socket.IPPROTO_TCP, _socket.TCP_NODELAY)):
            opts["nodelay"] = True
        if o.get((_socket.SOL_SOCKET, _socket.SO_KEEPALIVE)):
            opts["keepalive"] = True
        if (_socket.SOL_SOCKET, _socket.SO_RCVBUF) in o:
            opts["rcvbuf"] = max(4096, int(o[(_socket.SOL_SOCKET, _socket.SO_RCVBUF)]))
        if (_socket.SOL_SOCKET, _socket.SO_SNDBUF) in o:
            opts["sndbuf"] = max(4096, int(o[(_socket.SOL_SOCKET, _socket.SO_SNDBUF)]))
        return opts

    # -- bind / listen / accept --------------------------------------------------------------
    def bind(self, address: Any) -> None:  # type: ignore[override]
        if self._raw is not None:
            if self._kind == "packet":
                self._raw.bind(address)
            else:
                self._raw.bind(*self._parse(address))
            return
        fam, addr, port = self._parse(address)
        stack = self._stack
        if addr and not (stack._is_local4(addr) if fam == 4 else stack._is_local6(addr)):
            raise OSError(errno.EADDRNOTAVAIL, "Cannot assign requested address")
        if self._local is not None:
            raise OSError(errno.EINVAL, "already bound")
        with stack.locked():
            if self._vtype == SOCK_STREAM:
                reuse = bool(self._opts.get((_socket.SOL_SOCKET, _socket.SO_REUSEADDR)))
                if port == 0:
                    port = stack.tcp.ephemeral(addr)
                elif not reuse and stack.tcp.port_in_use(
                        addr, port, _to_int_family(self._vfamily),
                        self._v6only or self._vfamily == AF_INET):
                    raise OSError(errno.EADDRINUSE, "Address already in use")
                self._local = (addr, port)
            else:
                if port == 0:
                    port = self._free_udp_port(addr)
                self._udp_bind(addr, port)

    def listen(self, backlog: int = 128) -> None:  # type: ignore[override]
        if self._vtype != SOCK_STREAM:
            raise OSError(errno.EOPNOTSUPP, "Operation not supported")
        if self._listener is not None:
            self._listener.backlog = max(1, backlog)
            return
        stack = self._stack
        with stack.locked():
            if self._opts.get((_socket.SOL_IP, _socket.IP_TRANSPARENT)):
                self._local = CATCH_ALL  # the catch-all listener (Stack.catch_all)
            elif self._local is None:
                self._local = (b"", stack.tcp.ephemeral(b""))
            addr, port = self._local
            # (bind has already checked that the port is free)
            owner = stack.upper.add(_ListeningOwner(self._inner))
            try:
                listener = stack.tcp.listen(_to_int_family(self._vfamily), addr, port, backlog,
                                            owner, reuse=True,
                                            v6only=self._v6only or self._vfamily == AF_INET)
            except BaseException:
                stack.upper.release(owner)
                raise
            listener.options = self._conn_options()
            self._listener = listener

    def _announce(self) -> None:
        """A connection is ready to accept: make our descriptor readable (one byte each)."""
        try:
            self._inner.send(b"\0")
        except OSError:
            pass

    def _accepted(self) -> StackSocket | None:
        """The next established connection as a socket (None if it went away meanwhile)."""
        listener = self._listener
        if listener is None:
            raise OSError(errno.EINVAL, "Invalid argument (not listening)")
        with self._stack.locked():
            ep = listener.accept()
            if ep is None:
                return None
            try:
                return StackSocket(self._stack, self._vfamily, SOCK_STREAM, _endpoint=ep)
            except BaseException:
                ep.abort(now=self._stack.clock())  # no descriptor for it (EMFILE): the peer hears a reset
                raise

    def _can_accept(self) -> bool:
        return self._listener is not None

    def accept(self) -> tuple[StackSocket, tuple]:  # type: ignore[override]
        if not self._can_accept():
            raise OSError(errno.EINVAL, "Invalid argument (not listening)")
        timeout = self.gettimeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                token = super().recv(1, _socket.MSG_DONTWAIT)
            except BlockingIOError:
                token = None
            if token:
                sock = self._accepted()
                if sock is not None:
                    if _socket.getdefaulttimeout() is None:
                        sock.setblocking(True)  # accepted sockets start blocking, as in CPython
                    return sock, sock.getpeername()
                continue
            if token == b"":
                self._check_eof()  # a published stack's process may be gone
                raise OSError(errno.EBADF, "listening socket closed")
            if timeout == 0.0:
                raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise TimeoutError("timed out")
            select.select([self], [], [], left)

    # -- connect -------------------------------------------------------------------------------
    def connect(self, address: Any) -> None:  # type: ignore[override]
        err = self._connect(address)
        if err == errno.EINPROGRESS:
            raise BlockingIOError(errno.EINPROGRESS, "Operation now in progress")
        if err:
            raise OSError(err, os.strerror(err))

    def connect_ex(self, address: Any) -> int:  # type: ignore[override]
        try:
            return self._connect(address)
        except OSError as exc:
            return exc.errno or errno.EINVAL

    def _connect(self, address: Any, nonblock: bool | None = None) -> int:
        """Start (and unless non-blocking, finish) a connect; returns an errno value.
        ``nonblock`` overrides the socket's own mode (for the published stacks' server)."""
        if self._kind == "packet":
            return errno.EOPNOTSUPP
        fam, addr, port = self._parse(address)
        stack = self._stack
        if self._raw is not None:
            self._raw.connect(fam, addr)
            self._remote = (addr, 0)
            return 0
        if self._vtype == SOCK_DGRAM:
            with stack.locked():
                if self._udp_key is None:
                    self._udp_bind(b"", self._free_udp_port(b""))
                if not self._local[0]:  # type: ignore[index]
                    # as Linux: a connected socket names the source its route picks
                    src = stack.source4(addr) if fam == 4 else stack._source6(addr)
                    if src is None:
                        return errno.ENETUNREACH
                    self._local = (src, self._local[1])  # type: ignore[index]
            self._remote = (addr, port)
            return 0
        if self._pump is not None:
            if self._pump.connected:
                return errno.EISCONN
            return errno.EALREADY
        if not addr:
            addr = b"\x7f\x00\x00\x01" if fam == 4 else b"\x00" * 15 + b"\x01"
        timeout = 0.0 if nonblock else self.gettimeout()
        with stack.locked():
            src, sport = (self._local or (b"", 0))
            ep = stack.tcp.connect(fam, src or None, sport, addr, port, stack.clock(),
                                   **self._conn_options())
            self._local, self._remote = ep.local, ep.remote
            self._pump = _StreamPump(self, ep, connected=False, fill=(timeout == 0.0))
        if timeout == 0.0:
            return errno.EINPROGRESS
        if not self._pump.done.wait(timeout):
            with stack.locked():
                ep.abort(now=stack.clock())
            raise TimeoutError("timed out")
        return self._pump.error

    # -- data ------------------------------------------------------------------------------------
    def _check_eof(self) -> None:
        pump = self._pump
        if pump is not None and pump.error and pump.error != errno.EPIPE:
            raise OSError(pump.error, os.strerror(pump.error))

    def recv(self, bufsize: int, flags: int = 0) -> bytes:  # type: ignore[override]
        if self._vtype != SOCK_STREAM:
            return self.recvfrom(bufsize, flags)[0]
        data = super().recv(bufsize, flags)
        if not data and bufsize:
            self._check_eof()
        return data

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:  # type: ignore[override]
        if self._vtype != SOCK_STREAM:
            data, _ = self.recvfrom(nbytes or len(buffer), flags)
            memoryview(buffer)[:len(data)] = data
            return len(data)
        n = super().recv_into(buffer, nbytes, flags)
        if n == 0 and (nbytes or len(buffer)):
            self._check_eof()
        return n

    def recvfrom(self, bufsize: int, flags: int = 0) -> tuple[bytes, tuple]:  # type: ignore[override]
        if self._vtype == SOCK_STREAM:
            return self.recv(bufsize, flags), self.getpeername()
        while True:
            raw = super().recv(65535 + _UDP_HDR.size, flags)
            if len(raw) < _UDP_HDR.size:
                self._check_eof()
                raise OSError(errno.EBADF, "the socket was closed")
            if raw[0]:
                if self._kind == "packet":
                    return rawsocket.decode_frame(raw, bufsize)
                return self._parse_datagram(raw, bufsize)
            err = _UDP_HDR.unpack_from(raw)[2]
            if err:  # a ping socket's error, carried with its wake-up (one process or two)
                self._error = 0
                raise OSError(err, os.strerror(err))
            # family 0: the stack's word that an error is pending (_udp_bind's failed), which
            # wakes a blocked recv; reported once, by this call or an earlier send
            self._raise_pending()

    def _raise_pending(self) -> None:
        """Raise the error pending on a connected UDP socket, once (as Linux's sk_err)."""
        err, self._error = self._error, 0
        if err:
            raise OSError(err, os.strerror(err))

    def _parse_datagram(self, raw: bytes, bufsize: int) -> tuple[bytes, tuple]:
        fam, addr, port = _UDP_HDR.unpack_from(raw)
        peer = (addr[:4] if fam == 4 else addr, port)
        return raw[_UDP_HDR.size:_UDP_HDR.size + bufsize], self._fmt(peer)

    def recvfrom_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> tuple[int, tuple]:  # type: ignore[override]
        data, addr = self.recvfrom(nbytes or len(buffer), flags)
        memoryview(buffer)[:len(data)] = data
        return len(data), addr

    def sendto(self, data: Any, flags_or_addr: Any, addr: Any = None) -> int:  # type: ignore[override]
        address = flags_or_addr if addr is None else addr
        if self._vtype == SOCK_STREAM:
            raise OSError(errno.EISCONN, "Transport endpoint is already connected")
        if self._raw is not None:
            return self._raw_sendto(data, address)
        # the hot path of small datagrams: a repeated numeric destination is parsed once,
        # addresses stay packed, and the datagram leaves in this thread; the runner's
        # thread hears of it only if a timer must run earlier (Stack.locked)
        if address == self._last_to:
            fam, dst, port = self._last_parsed
        else:
            fam, dst, port = self._parse(address)
            if dst and _numeric(address[0]):
                self._last_to, self._last_parsed = address, (fam, dst, port)
        data = bytes(data)
        if len(data) > 65507:
            raise OSError(errno.EMSGSIZE, "Message too long")
        if self._error:
            self._raise_pending()
        stack = self._stack
        with stack.locked():
            if self._udp_key is None:
                self._udp_bind(b"", self._free_udp_port(b""))
            local = self._local
            # udp_send takes packed addresses as well as strings (ipaddress.ip_address does)
            stack.udp_send(data, (dst, port), local[1], local[0] or None,  # type: ignore[arg-type,index]
                           stack.clock())
        return len(data)

    def _raw_sendto(self, data: Any, address: Any) -> int:
        if self._error:
            self._raise_pending()
        if self._kind == "packet":
            return self._raw.sendto(bytes(data), address)
        if address is None:
            return self._raw.sendto(bytes(data), None)
        _, dst, _ = self._parse(address)
        return self._raw.sendto(bytes(data), dst)

    def send(self, data: Any, flags: int = 0) -> int:  # type: ignore[override]
        if self._raw is not None:
            return self._raw_sendto(data, None)
        if self._vtype == SOCK_DGRAM:
            if self._remote is None:
                raise OSError(errno.EDESTADDRREQ, "Destination address required")
            return self.sendto(data, self._fmt(self._remote))
        return super().send(data, flags)

    def sendall(self, data: Any, flags: int = 0) -> None:  # type: ignore[override]
        if self._vtype != SOCK_STREAM:
            self.send(data, flags)
            return
        super().sendall(data, flags)

    # -- UDP binding ---------------------------------------------------------------------------------
    def _free_udp_port(self, addr: bytes) -> int:
        import random

        for _ in range(1000):
            port = random.randint(32768, 60999)
            if (addr, port) not in self._stack.udp and (b"", port) not in self._stack.udp:
                return port
        raise OSError(errno.EADDRNOTAVAIL, "no free UDP port")

    def _udp_bind(self, addr: bytes, port: int) -> None:
        stack = self._stack
        owner = stack.upper.add(_DatagramOwner(self))
        try:
            stack.udp_bind(port, owner, str(ipaddress.ip_address(addr)) if addr else None)
        except BaseException:
            stack.upper.release(owner)
            raise
        self._udp_key = (addr, port)
        self._local = (addr, port)

    def dup(self) -> StackSocket:  # type: ignore[override]
        # the socket's state lives in this object, not only in its descriptor
        raise OSError(errno.EOPNOTSUPP, "dup() of a threadnet stack socket is not supported")

    # -- closing -----------------------------------------------------------------------------------
    def close(self) -> None:  # type: ignore[override]
        stack = self._stack
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        if self._listener is not None:
            with stack.locked():
                self._listener.close(stack.clock())
            self._listener = None
        if self._udp_key is not None:
            with stack.locked():
                addr, port = self._udp_key
                stack.udp_unbind(port, str(ipaddress.ip_address(addr)) if addr else None)
            self._udp_key = None
        if self._pump is None:
            try:
                self._inner.close()
            except OSError:
                pass
        pump = self._pump
        onoff, secs = self._opts.get((_socket.SOL_SOCKET, _socket.SO_LINGER), (0, 0))
        if pump is not None and onoff and secs == 0:
            # SO_LINGER with a zero timeout: reset at once, unsent data dropped (Linux)
            with stack.locked():
                if not pump.closed:
                    pump.eof_in = True
                    pump.ep.abort(now=stack.clock())
                    pump._shutdown()
        # a stream's pump sees EOF on its end and closes the connection gracefully
        super().close()
        if pump is not None and onoff and secs > 0 and stack.runner is not None:
            # SO_LINGER with a timeout: close() waits until the data and the FIN are
            # acknowledged, or the timeout passes
            deadline = time.monotonic() + secs
            while time.monotonic() < deadline:
                with stack.lock:
                    if not unfinished(pump.ep):
                        break
                time.sleep(0.01)


def _numeric(host: Any) -> bool:
    """Is ``host`` an address literal (whose parse may be remembered), not a name?"""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except (ValueError, AttributeError):
        return False
    return True


def create_connection(stack: Any, address: tuple[str, int], timeout: float | None = None,
                      source_address: tuple[str, int] | None = None) -> StackSocket:
    """``socket.create_connection`` on ``stack``: every address the stack's resolver
    gives for the host is tried in turn, as the stdlib does."""
    host, port = address[0], address[1]
    errors: list[OSError] = []
    for family, kind, proto, _, sockaddr in stack.getaddrinfo(host, port, 0, SOCK_STREAM):
        sock = stack.socket(family, kind, proto)
        try:
            if timeout is not None:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(sockaddr)
            return sock
        except OSError as exc:
            errors.append(exc)
            sock.close()
        except BaseException:
            sock.close()
            raise
    if not errors:
        raise OSError(errno.EADDRNOTAVAIL, f"getaddrinfo returned nothing for {host!r}")
    raise errors[0]  # as the stdlib does without all_errors


def create_server(stack: Stack, address: tuple[str, int], *, family: int = AF_INET,
                  backlog: int | None = None, reuse_port: bool = False,
                  dualstack_ipv6: bool = False) -> StackSocket:
    """``socket.create_server`` on ``stack``."""
    sock = StackSocket(stack, family, SOCK_STREAM)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        if family == AF_INET6:
            sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 0 if dualstack_ipv6 else 1)
        sock.bind(address)
        sock.listen(128 if backlog is None else backlog)
    except BaseException:
        sock.close()
        raise
    return sock
