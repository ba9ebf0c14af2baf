"""UDP sockets for supervised programs: a relay, and the calls that carry addresses.

A stack's datagram socket carries a small address header in front of every datagram on
its pair (``threadnet.stack.socket``), which a program's ``recv`` must not see. So the
program gets a socket pair of its own (SOCK_SEQPACKET: boundaries kept, a short read
truncates as UDP's does), and one relay thread moves datagrams between the two:

* from the stack: the header is taken off; on an unconnected socket the source address
  is queued, in order, for the ``recvfrom``/``recvmsg`` that will take the datagram;
* from the program (``send``/``write`` on a connected socket, not trapped): each
  datagram is sent on the stack to the connected peer.

``sendto``/``sendmsg`` with an address are trapped and sent on the stack directly;
``recvfrom``/``recvmsg``/``recvmmsg`` (with an address, or on an unconnected socket) are
answered by the supervisor, which reads the datagram from its copy of the program's end
and writes data and address into the program's memory (MSG_PEEK, MSG_TRUNC and
MSG_DONTWAIT as UDP has them).

On an *unconnected* socket a plain ``recv``/``read`` (not trapped) takes a datagram
without its queued address. So each address is queued with a digest of its datagram's
bytes, and the call that takes a datagram takes the address queued for those bytes,
dropping the ones queued before it (their datagrams went to plain reads). Only two
datagrams with the same bytes from different sources, one of them read plainly, can
still swap their sources.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import select
import socket as _socket
import struct
import threading
from collections import deque
from typing import TYPE_CHECKING, Any

from threadnet.views import kernel, sockaddr

if TYPE_CHECKING:
    from threadnet.views.supervisor import Supervisor, VSocket

_HDR = struct.Struct("!B16sH")  # the stack's datagram header (family 4/6, address, port)
MAX_DATAGRAM = 65507
MAX_QUEUED_ADDRESSES = 4096
_MSGHDR = struct.Struct("=QI4xQQQQi4x")  # name, namelen, iov, iovlen, control, controllen, flags
_MMSGHDR_SIZE = _MSGHDR.size + 8  # + msg_len (unsigned int) and padding
_IOVEC = struct.Struct("=QQ")
MAX_IOV = 1024
MSG_PEEK, MSG_TRUNC, MSG_DONTWAIT = _socket.MSG_PEEK, _socket.MSG_TRUNC, _socket.MSG_DONTWAIT
_APP_BUF = 512 * 1024


def open_pair(vs: VSocket) -> None:
    """Give ``vs`` (a stack datagram socket) the program's pair: ``vs.prog`` is the end
    the program gets (its inode names the socket), ``vs.relay`` ours."""
    prog, relay = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
    for s in (prog, relay):
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_SNDBUF, _APP_BUF)
        s.setsockopt(_socket.SOL_SOCKET, _socket.SO_RCVBUF, _APP_BUF)
    relay.setblocking(False)
    vs.prog = prog
    vs.relay = relay
    vs.addrs = deque()
    vs.ino = os.fstat(prog.fileno()).st_ino


def _source(vs: VSocket, fam: int, packed: bytes, port: int) -> list[Any]:
    if fam == 4:
        host = str(ipaddress.IPv4Address(packed[:4]))
        return [host, port] if vs.family == _socket.AF_INET else ["::ffff:" + host, port, 0, 0]
    return [str(ipaddress.IPv6Address(packed)), port, 0, 0]


class Relay:
    """One thread moving the datagrams of every supervised UDP socket."""

    def __init__(self, sup: Supervisor) -> None:
        self.sup = sup
        self.socks: list[VSocket] = []
        self.lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self._thread: threading.Thread | None = None

    def add(self, vs: VSocket) -> None:
        with self.lock:
            self.socks.append(vs)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="views-relay", daemon=True)
                self._thread.start()
        self.wake()

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:
            pass

    def _loop(self) -> None:
        while not self.sup.closed:
            with self.lock:
                live = [vs for vs in self.socks if not vs.closed]
                dead = [vs for vs in self.socks if vs.closed]
                self.socks = live
            for vs in dead:
                vs.release()  # closed only here, where nothing polls them any more
            p = select.poll()
            p.register(self._wake_r, select.POLLIN)
            fds: dict[int, tuple[VSocket, bool]] = {}
            for vs in live:
                if vs.dfd >= 0:
                    p.register(vs.dfd, select.POLLIN)
                    fds[vs.dfd] = (vs, True)
                p.register(vs.relay.fileno(), select.POLLIN)
                fds[vs.relay.fileno()] = (vs, False)
            for fd, _ev in p.poll(1000):
                if fd == self._wake_r:
                    os.read(self._wake_r, 4096)
                    continue
                vs, from_stack = fds[fd]
                if vs.closed:
                    continue
                try:
                    if from_stack:
                        self._from_stack(vs)
                    else:
                        self._from_program(vs)
                except OSError:
                    pass  # a datagram lost, as UDP may lose one
                except Exception as exc:  # a bug: this socket's datagram, not the relay
                    self.sup._log(f"relay: {type(exc).__name__}: {exc}")

    def _from_stack(self, vs: VSocket) -> None:
        raw = os.read(vs.dfd, MAX_DATAGRAM + 64 + _HDR.size)
        if len(raw) < _HDR.size:
            if not raw:  # the stack's end is gone: the program's recv sees EOF
                vs.relay.shutdown(_socket.SHUT_WR)
            return
        fam, packed, port = _HDR.unpack_from(raw)
        if fam == 0:
            return  # a pending error notice (SO_ERROR answers it)
        payload = raw[_HDR.size:]
        with vs.lock:
            queued = vs.remote is None
            if queued:
                if len(vs.addrs) >= MAX_QUEUED_ADDRESSES:
                    # the oldest: most likely a datagram a plain read took long ago (a
                    # program that never asks for sources must not stop receiving)
                    vs.addrs.popleft()
                vs.addrs.append((hash(payload), _source(vs, fam, packed, port)))
            try:
                vs.relay.send(payload)
            except OSError:
                if queued:
                    vs.addrs.pop()  # the program's queue is full: the datagram is dropped
                raise

    def _from_program(self, vs: VSocket) -> None:
        if vs.netlink:
            from threadnet.views import netlink

            request = vs.relay.recv(netlink.MAX_REQUEST)
            for packet in self.sup.netlink(request, vs.nl_pid):
                vs.relay.send(packet)
            return
        data = vs.relay.recv(MAX_DATAGRAM + 1)
        if len(data) > MAX_DATAGRAM:
            return
        vs.rpc("sendto", payload=data, addr=None)


# -- the trapped calls -------------------------------------------------------------------------
def _read_iov(sup: Supervisor, n: kernel.Notification, iov: int, iovlen: int) -> list[tuple[int, int]]:
    if iovlen > MAX_IOV:
        raise OSError(errno.EMSGSIZE, "Message too long")
    if not iovlen:
        return []
    raw = sup._read(n, iov, _IOVEC.size * iovlen)
    return [_IOVEC.unpack_from(raw, i * _IOVEC.size) for i in range(iovlen)]


def _gather(sup: Supervisor, n: kernel.Notification, vecs: list[tuple[int, int]]) -> bytes:
    total = sum(ln for _, ln in vecs)
    if total > MAX_DATAGRAM:
        raise OSError(errno.EMSGSIZE, "Message too long")
    return b"".join(sup._read(n, base, ln) for base, ln in vecs if ln)


def _send(sup: Supervisor, n: kernel.Notification, vs: VSocket, data: bytes, addr_ptr: int,
          addr_len: int) -> int:
    size = addr_len & 0xFFFFFFFF
    if size > 128:
        raise OSError(errno.EINVAL, "Invalid argument")
    addr = sockaddr.decode(sup._read(n, addr_ptr, size), vs.family)
    reply, _ = vs.rpc("sendto", payload=data, addr=addr)
    return int(reply["n"])


def sendto(sup: Supervisor, n: kernel.Notification, vs: VSocket) -> None:
    _, buf, length, _flags, addr, addrlen = n.args
    if length > MAX_DATAGRAM:
        raise OSError(errno.EMSGSIZE, "Message too long")
    data = sup._read(n, buf, length) if length else b""
    sup.listener.reply(n.id, _send(sup, n, vs, data, addr, addrlen))


def sendmsg(sup: Supervisor, n: kernel.Notification, vs: VSocket) -> None:
    name, namelen, iov, iovlen, *_ = _MSGHDR.unpack(sup._read(n, n.args[1], _MSGHDR.size))
    if not name:
        sup.listener.cont(n.id)  # to the connected peer, through the pair
        return
    data = _gather(sup, n, _read_iov(sup, n, iov, iovlen))
    sup.listener.reply(n.id, _send(sup, n, vs, data, name, namelen))


def sendmmsg(sup: Supervisor, n: kernel.Notification, vs: VSocket) -> None:
    base, count = n.args[1], min(n.args[2] & 0xFFFFFFFF, 1024)
    raw = sup._read(n, base, _MMSGHDR_SIZE * count) if count else b""
    hdrs = [_MSGHDR.unpack_from(raw, i * _MMSGHDR_SIZE) for i in range(count)]
    if not any(h[0] for h in hdrs):
        sup.listener.cont(n.id)
        return
    sent = 0
    for i, (name, namelen, iov, iovlen, *_) in enumerate(hdrs):
        data = _gather(sup, n, _read_iov(sup, n, iov, iovlen))
        if name:
            k = _send(sup, n, vs, data, name, namelen)
        else:
            if vs.remote is None:
                raise OSError(errno.EDESTADDRREQ, "Destination address required")
            k = int(vs.rpc("sendto", payload=data, addr=None)[0]["n"])
        sup._write(n, base + i * _MMSGHDR_SIZE + _MSGHDR.size, struct.pack("=I", k))
        sent += 1
    sup.listener.reply(n.id, sent)


def _take(sup: Supervisor, n: kernel.Notification, vs: VSocket, flags: int
          ) -> tuple[bytes, list[Any] | None] | None:
    """The next datagram and its source, or None if there is none yet."""
    with vs.lock:
        if not sup.listener.valid(n.id):
            raise kernel.Gone
        try:
            data = vs.prog.recv(MAX_DATAGRAM + 1, MSG_DONTWAIT | (flags & MSG_PEEK))
        except BlockingIOError:
            return None
        src = vs.remote if vs.remote is not None else \
            _queued_source(vs.addrs, data, not flags & MSG_PEEK)
    return data, src


def _queued_source(addrs: deque, data: bytes, take: bool) -> Any:
    """The source queued for the datagram ``data`` (None if there is none): the first
    entry with its digest; the entries before it were for datagrams that plain reads
    took, and go."""
    key = hash(data)
    for i, (digest, src) in enumerate(addrs):
        if digest == key:
            for _ in range(i + take):
                addrs.popleft()
            return src
    return None


def _receive(sup: Supervisor, n: kernel.Notification, vs: VSocket, flags: int, deliver: Any) -> None:
    """Take a datagram for the call (waiting on a thread if the call blocks) and hand it
    to ``deliver(data, src)``, which writes it out and answers."""
    got = _take(sup, n, vs, flags)
    if got is not None:
        deliver(*got)
        return
    if flags & MSG_DONTWAIT or vs.prog_nonblocking():
        raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")

    def step() -> bool:
        p = select.poll()
        p.register(vs.prog.fileno(), select.POLLIN)
        if not p.poll(100):
            return False
        got = _take(sup, n, vs, flags)
        if got is None:
            return False
        deliver(*got)
        return True

    sup._wait(n, step)


def _encode_src(vs: VSocket, src: Any) -> bytes:
    if isinstance(src, bytes):
        return src  # already a sockaddr (a netlink socket's peer, the kernel)
    if src is None:
        src = ["0.0.0.0", 0] if vs.family == _socket.AF_INET else ["::", 0, 0, 0]
    return sockaddr.encode(src, vs.family)


def recvfrom(sup: Supervisor, n: kernel.Notification, vs: VSocket) -> None:
    _, buf, length, flags, addr, addrlen = n.args
    flags &= 0xFFFFFFFF

    def deliver(data: bytes, src: list[Any] | None) -> None:
        sup._write(n, buf, data[:length])
        sup._write_sockaddr(n, addr, addrlen, _encode_src(vs, src))
        sup.listener.reply(n.id, len(data) if flags & MSG_TRUNC else min(len(data), length))

    _receive(sup, n, vs, flags, deliver)


def _deliver_msg(sup: Supervisor, n: kernel.Notification, vs: VSocket, hdr_ptr: int,
                 hdr: tuple, data: bytes, src: list[Any] | None) -> int:
    name, namelen, iov, iovlen, _control, _controllen, _ = hdr
    vecs = _read_iov(sup, n, iov, iovlen)
    off = 0
    for base, ln in vecs:
        piece = data[off:off + ln]
        if piece:
            sup._write(n, base, piece)
        off += len(piece)
    out_flags = MSG_TRUNC if len(data) > off else 0
    if name:
        raw = _encode_src(vs, src)
        sup._write(n, name, raw[:namelen])
        namelen = len(raw)
    else:
        namelen = 0
    sup._write(n, hdr_ptr, _MSGHDR.pack(name, namelen, iov, iovlen, _control, 0, out_flags))
    return off


def recvmsg(sup: Supervisor, n: kernel.Notification, vs: VSocket) -> None:
    ptr, flags = n.args[1], n.args[2] & 0xFFFFFFFF
    hdr = _MSGHDR.unpack(sup._read(n, ptr, _MSGHDR.size))
    if not hdr[0] and vs.remote is not None:
        sup.listener.cont(n.id)  # a connected socket's plain read: the pair has it all
        return

    def deliver(data: bytes, src: list[Any] | None) -> None:
        k = _deliver_msg(sup, n, vs, ptr, hdr, data, src)
        sup.listener.reply(n.id, len(data) if flags & MSG_TRUNC else k)

    _receive(sup, n, vs, flags, deliver)


def recvmmsg(sup: Supervisor, n: kernel.Notification, vs: VSocket) -> None:
    """One datagram per call (as recvmmsg may return fewer than asked)."""
    base, count, flags = n.args[1], n.args[2] & 0xFFFFFFFF, n.args[3] & 0xFFFFFFFF
    if count == 0:
        sup.listener.reply(n.id, 0)
        return
    hdr = _MSGHDR.unpack(sup._read(n, base, _MSGHDR.size))

    def deliver(data: bytes, src: list[Any] | None) -> None:
        k = _deliver_msg(sup, n, vs, base, hdr, data, src)
        sup._write(n, base + _MSGHDR.size, struct.pack("=I", k))
        sup.listener.reply(n.id, 1)

    _receive(sup, n, vs, flags & ~0x10000, deliver)  # (MSG_WAITFORONE is ours already)
