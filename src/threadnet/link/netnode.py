"""``hub://``, ``switch://``, ``multi://``, ``bonding://``: a network node inside this process.

vdeplug4 4.0.1's netnode plugins (libvdeplug_netnode.c; Debian's ``libvdeplug_hub.so``
and the others are that one file). Opening ``KIND://PATH`` does not join anything: it
creates, at PATH, a node that serves the vde_switch control protocol (``PATH/ctl``, the
handshake of interop.md 1.2), and the link is the node's own port, its "host". Other
programs join the node with ``vde://PATH`` (Debian's ``vde_plug``, qemu, a threadnet
Stack). The node lives as long as the link: closing it removes PATH, and every port
sees its control stream end. A second ``KIND://PATH`` while the first runs fails (join
with ``vde://PATH``); vdeplug4 fails on any existing PATH, we reuse a directory left by a
node that died (nothing but stale sockets of ours in it).

Where a frame goes (H = the host, this link; ports = the programs that joined):

==========  ===============================  =================================
kind        from H                           from a port
==========  ===============================  =================================
hub         every port                       H and every other port
switch      by destination MAC and VLAN;     by destination (H included);
            unknown/broadcast: every port    unknown/broadcast: H and the others
multi       every port                       H only
bonding     one port, in turn (round robin)  H only
==========  ===============================  =================================

``multi`` joins several links to the same peer (a hand-off: frames may arrive twice while
two are up); ``bonding`` spreads the host's frames over them. Neither nests URLs: the links
are the ``vde://PATH`` ports that join.

URL: ``KIND://[PATH][[OPTION/OPTION...]]``, an empty PATH being ``/tmp/vdenode_USER``.
Options (vdeplug4's, unique prefixes accepted): ``mode=0600`` (the control and port
sockets; execute bits dropped), ``dirmode=`` (default: 02700, or from ``mode`` the
setgid bit plus ``mode`` plus x where r or w), ``grp=GROUP``, and for ``switch``
``hashsize=256`` (forwarding table entries), ``expiretime=120`` (seconds) and
``hashseed=N`` (accepted and unused: the table is a dict). A directory that ``dirmode``
makes writable by group or others also gets the sticky bit, so that nobody else can
remove or replace the node's sockets in it (vdeplug4 does not).

Differences from vdeplug4, none visible on the wire: the switch's table is bounded
(the least recently refreshed entry goes) rather than direct-mapped; VLAN ids are 12 bits
(vdeplug4 masks 10); a frame for a port whose socket is full waits in a bounded
per-port queue (``QLEN``) instead of being dropped at once; a joining socket must belong
to the connecting user (SO_PEERCRED), as with ``threadnet switch``.

The node runs inside ``recv``: accepting, the handshake and frames between ports are
handled there, so the link must be read (a stack's runner, ``threadnet plug``) for the
node to work. ``fileno()`` is an epoll descriptor over all of the node's sockets.
"""

from __future__ import annotations

import errno
import os
import pwd
import re
import select
import socket
import stat
import threading
import time
from collections import deque

from threadnet import fsafe
from threadnet.errors import FrameError, LinkError, URLError
from threadnet.link import Link, parse_options, require_no_inner, split_bracket, unquote
from threadnet.peer import connect_to_socket_of, peer_credentials
from threadnet.wire import stream as wire_stream
from threadnet.wire import vde as wire

HUB, SWITCH, MULTI, BONDING = "hub", "switch", "multi", "bonding"
KINDS = (HUB, SWITCH, MULTI, BONDING)
OPTIONS = ("mode", "dirmode", "grp", "hashsize", "hashseed", "expiretime")

STDMODE = 0o600
STDHASHSIZE = 256
STDEXPIRETIME = 120
CTL_BACKLOG = 15  # vdeplug4's listen() backlog
MAX_PENDING = 32  # connections that have not sent their request yet
MAX_PORTS = 256  # ports (two descriptors each)
QLEN = 128  # frames waiting for a port whose socket is full
EVENT_BUDGET = 64  # events handled in one recv() that bring nothing for the host
RECV_BUF = 65536
SNDBUF = 1 << 20
ETH_HLEN = 14

_IN = select.EPOLLIN
_OUT = select.EPOLLOUT
_TROUBLE = select.EPOLLERR | select.EPOLLHUP
_STALE_NAME = re.compile(r"ctl|fd[0-9]+")


class _Host:
    """The switch table's name for the host (this link)."""

    def __repr__(self) -> str:
        return "<host>"


HOST = _Host()


class Port:
    """A program that joined the node: its control stream and our datagram socket."""

    __slots__ = ("ctl", "data", "name", "description", "uid", "backlog", "drops", "sent")

    def __init__(self, ctl: socket.socket, data: socket.socket, name: str,
                 description: str, uid: int) -> None:
        self.ctl = ctl
        self.data = data
        self.name = name
        self.description = description
        self.uid = uid
        self.backlog: deque[bytes] = deque()
        self.drops = 0
        self.sent = 0

    def __repr__(self) -> str:
        return f"<Port {self.name} uid={self.uid} {self.description!r}>"


class NetNodeLink(Link):
    """A hub, switch, multilink or bonding node served at ``path``; the link is its host."""

    # what vdeplug4 programs read into their buffer
    max_frame = wire_stream.MAX_RECORD
    max_frame_known = True

    def __init__(self, path: str, kind: str = HUB, *, mode: int = STDMODE,
                 dirmode: int | None = None, group: int = -1, hashsize: int = STDHASHSIZE,
                 expiretime: float = STDEXPIRETIME, url: str = "") -> None:
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"unknown node kind {kind!r}")
        self.kind = kind
        self.path = path
        self.url = url or f"{kind}://{path}"
        self.mode = mode & ~0o111
        self.dirmode = dirmode if dirmode is not None else _dirmode_for(self.mode)
        self.gid = group
        self.expiretime = expiretime
        self.capacity = _power_of_two(hashsize)
        #: the switch's table: (MAC << 16 | VLAN) -> (Port or HOST, last seen); in order
        #: of last refresh, so the first is the one to forget when it is full
        self.fdb: dict[int, tuple[object, float]] = {}
        self.ports: list[Port] = []
        self.drops = 0
        self._rr = 0
        self._lock = threading.RLock()
        self._by_fd: dict[int, tuple[str, object]] = {}
        self._pending: dict[int, socket.socket] = {}
        self._quiet = 0
        self._dfd = -1
        self._own_dir = False  # PATH is ours to remove when the node ends
        self._listener: socket.socket | None = None
        self._ep = select.epoll()
        try:
            self._setup()
        except BaseException:
            self._teardown()
            raise

    # -- the node's directory ----------------------------------------------------------
    def _setup(self) -> None:
        given = {self.gid} if self.gid != -1 else set()
        try:
            self._dfd, made = fsafe.open_private_dir(
                self.path, group_ok={os.getegid()} | given, parent_group_ok=given)
        except OSError as exc:
            if _listening(os.path.join(self.path, "ctl")):
                raise self._live() from None  # (another user's node, say)
            raise LinkError(exc.errno or errno.EACCES,
                            f"{self.url}: cannot make the node's directory: {exc}") from None
        if not made:
            self._reuse_stale()
        self._own_dir = True
        ctl = os.path.join(self.path, "ctl")
        try:
            self._listener = fsafe.bind_unix_listener(ctl, socket.SOCK_STREAM, self.mode,
                                                      self.gid, CTL_BACKLOG, dir_fd=self._dfd)
            if self.gid != -1:
                os.fchown(self._dfd, -1, self.gid)
            dirmode = self.dirmode
            if dirmode & 0o022:
                dirmode |= stat.S_ISVTX  # others may add their sockets, not remove ours
            os.fchmod(self._dfd, dirmode)
        except OSError as exc:
            raise LinkError(exc.errno or errno.EACCES,
                            f"{self.url}: cannot serve {ctl}: {exc}") from None
        self._listener.setblocking(False)
        self._register(self._listener, "listen", None)

    def _live(self) -> LinkError:
        return LinkError(errno.EADDRINUSE, f"{self.url}: a node or switch already serves "
                         f"{self.path} (join it with vde://{self.path})")

    def _reuse_stale(self) -> None:
        """PATH exists: go on only if it is what a node of ours that died left behind."""
        live = self._live()
        for name in os.listdir(self._dfd):
            try:
                st = os.stat(name, dir_fd=self._dfd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.geteuid() or (
                    not _STALE_NAME.fullmatch(name) and not name.startswith(".")):
                if name == "ctl" and stat.S_ISSOCK(st.st_mode):
                    raise live  # someone else's switch
                raise LinkError(errno.EEXIST,
                                f"{self.url}: {self.path} exists and is not a node left by "
                                f"this user ({name!r} is in it): choose another path")
        for name in sorted(os.listdir(self._dfd), key=lambda n: n != "ctl"):
            if not _STALE_NAME.fullmatch(name):
                continue
            try:
                fsafe.remove_stale_socket(name, self._dfd, os.path.join(self.path, name),
                                          socket.SOCK_STREAM if name == "ctl" else socket.SOCK_DGRAM)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise live from None
                raise LinkError(exc.errno or errno.EEXIST, f"{self.url}: {exc}") from None

    def _unlink(self, name: str) -> None:
        if self._dfd >= 0:
            try:
                os.unlink(name, dir_fd=self._dfd)
            except OSError:
                pass

    # -- descriptors ---------------------------------------------------------------------
    def _register(self, sock: socket.socket, role: str, obj: object, events: int = _IN) -> None:
        fd = sock.fileno()
        self._ep.register(fd, events)
        self._by_fd[fd] = (role, obj)

    def _forget(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self._by_fd.pop(fd, None) is not None:
            try:
                self._ep.unregister(fd)
            except OSError:
                pass

    def fileno(self) -> int:
        return self._ep.fileno()

    # -- the host's frames ----------------------------------------------------------------
    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        if len(frame) < ETH_HLEN:
            self.drops += 1
            return
        with self._lock:
            if self.closed:
                raise LinkError(f"{self.url}: link is closed")
            if self.kind == SWITCH:
                now = time.monotonic()
                self._learn(frame, HOST, now)
                dst = self._lookup(frame, now)
                if dst is HOST:
                    return  # (a frame to ourselves)
                if dst is not None:
                    self._to_port(dst, frame)  # type: ignore[arg-type]
                    return
            ports = self.ports
            if not ports:
                return
            if self.kind == BONDING:
                self._rr = (self._rr + 1) % len(ports)
                self._to_port(ports[self._rr], frame)
                return
            data = bytes(frame) if len(ports) > 1 and type(frame) is not bytes else frame
            for port in ports:
                self._to_port(port, data)

    def _to_port(self, port: Port, frame: bytes | bytearray | memoryview) -> None:
        if port.backlog:
            self._enqueue(port, frame)
            return
        try:
            port.data.send(frame)
            port.sent += 1
        except (BlockingIOError, InterruptedError):
            self._enqueue(port, frame)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self._enqueue(port, frame)
            else:
                port.drops += 1  # (its socket is gone: its control stream ends soon)

    def _enqueue(self, port: Port, frame: bytes | bytearray | memoryview) -> None:
        if len(port.backlog) >= QLEN:
            port.drops += 1
            return
        port.backlog.append(bytes(frame))
        if len(port.backlog) == 1:
            self._ep.modify(port.data.fileno(), _IN | _OUT)

    def _drain(self, port: Port) -> None:
        backlog = port.backlog
        try:
            while backlog:
                port.data.send(backlog[0])
                backlog.popleft()
                port.sent += 1
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                return
            port.drops += len(backlog)
            backlog.clear()
        self._ep.modify(port.data.fileno(), _IN)

    # -- the switch's table ---------------------------------------------------------------
    @staticmethod
    def _key(frame: bytes | bytearray | memoryview, offset: int) -> int | None:
        """(MAC << 16 | VLAN) of the address at ``offset``; None for a group address."""
        if frame[offset] & 1:
            return None
        vlan = 0
        if len(frame) >= ETH_HLEN + 4 and frame[12] == 0x81 and frame[13] == 0x00:
            vlan = ((frame[14] << 8) | frame[15]) & 0xFFF
        return int.from_bytes(frame[offset:offset + 6], "big") << 16 | vlan

    def _learn(self, frame: bytes | bytearray | memoryview, where: object, now: float) -> None:
        key = self._key(frame, 6)
        if key is None:
            return
        fdb = self.fdb
        if fdb.pop(key, None) is None and len(fdb) >= self.capacity:
            del fdb[next(iter(fdb))]
        fdb[key] = (where, now)

    def _lookup(self, frame: bytes | bytearray | memoryview, now: float) -> object | None:
        key = self._key(frame, 0)
        if key is None:
            return None
        entry = self.fdb.get(key)
        if entry is None:
            return None
        if now - entry[1] > self.expiretime:
            del self.fdb[key]
            return None
        return entry[0]

    # -- the node at work (in recv) -------------------------------------------------------
    def _recv(self) -> bytes:
        with self._lock:
            if self.closed:
                raise LinkError(f"{self.url}: link is closed")
            events = self._ep.poll(0, 1)
            if not events:
                self._quiet = 0
                raise BlockingIOError(errno.EAGAIN, "no frame for the host")
            fd, ev = events[0]
            frame = self._event(fd, ev)
            if frame:
                self._quiet = 0
                return frame
            self._quiet += 1
            if self._quiet >= EVENT_BUDGET:
                # much work for others, nothing for us: let the caller serve its other
                # descriptors (ours stays readable, it comes back)
                self._quiet = 0
                raise BlockingIOError(errno.EAGAIN, "no frame for the host yet")
            return b""

    def _event(self, fd: int, ev: int) -> bytes:
        role, obj = self._by_fd.get(fd, ("", None))
        if role == "data":
            port: Port = obj  # type: ignore[assignment]
            if ev & _OUT:
                self._drain(port)
            if ev & (_IN | _TROUBLE):
                return self._port_input(port, ev)
        elif role == "ctl":
            self._ctl_readable(obj)  # type: ignore[arg-type]
        elif role == "pending":
            self._request(obj)  # type: ignore[arg-type]
        elif role == "listen":
            self._accept()
        else:  # pragma: no cover - a descriptor we no longer know
            try:
                self._ep.unregister(fd)
            except OSError:
                pass
        return b""

    def _port_input(self, port: Port, ev: int) -> bytes:
        try:
            frame = port.data.recv(RECV_BUF)
        except (BlockingIOError, InterruptedError):
            if ev & _TROUBLE:
                self._remove(port)  # nothing to read and an error: do not spin on it
            return b""
        except OSError:
            self._remove(port)
            return b""
        if len(frame) < ETH_HLEN:
            return b""  # (a zero-length datagram is old libvdeplug's goodbye)
        kind = self.kind
        if kind == MULTI or kind == BONDING:
            return frame
        if kind == SWITCH:
            now = time.monotonic()
            self._learn(frame, port, now)
            dst = self._lookup(frame, now)
            if dst is HOST:
                return frame
            if dst is not None:
                if dst is not port:
                    self._to_port(dst, frame)  # type: ignore[arg-type]
                return b""
        for other in self.ports:
            if other is not port:
                self._to_port(other, frame)
        return frame

    def _accept(self) -> None:
        assert self._listener is not None
        for _ in range(MAX_PENDING):
            try:
                conn, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # EMFILE and the like: the client waits in the backlog
            if len(self.ports) + len(self._pending) >= MAX_PORTS:
                conn.close()
                continue
            if len(self._pending) >= MAX_PENDING:
                # silent connections must not lock out real ones, which ask at once
                self._drop_pending(next(iter(self._pending.values())))
            conn.setblocking(False)
            self._pending[conn.fileno()] = conn
            self._register(conn, "pending", conn)

    def _drop_pending(self, conn: socket.socket) -> None:
        self._pending.pop(conn.fileno(), None)
        self._forget(conn)
        conn.close()

    def _request(self, conn: socket.socket) -> None:
        try:
            data = conn.recv(wire.MAX_REQUEST)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._pending.pop(conn.fileno(), None)
        self._forget(conn)
        try:
            port = self._attach(conn, data)
        except (FrameError, OSError, ValueError):
            conn.close()
            return
        self.ports.append(port)
        self._register(port.data, "data", port)
        self._register(port.ctl, "ctl", port)

    def _attach(self, conn: socket.socket, data: bytes) -> Port:
        req = wire.parse_request(data)
        # vdeplug4 serves request_v3 "new port" only (the port number asked is ignored)
        if req.version != wire.VERSION or req.kind != wire.REQ_NEW_CONTROL:
            raise FrameError("not a request_v3 for a new port")
        peer = peer_credentials(conn)
        name = f"fd{conn.fileno()}"
        path = os.path.join(self.path, name)
        dsock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            fsafe.remove_stale_socket(name, self._dfd, path, socket.SOCK_DGRAM)
            dsock.bind(f"/proc/self/fd/{self._dfd}/{name}")
            try:
                dsock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
            except OSError:
                pass
            fsafe.set_socket_file(name, self._dfd, self.mode, -1, self.gid)
            # only a socket of the peer's own: not one we could reach and it could not
            connect_to_socket_of(peer, req.path, socket.SOCK_DGRAM, sock=dsock)
            _discard_queued(dsock)
            dsock.setblocking(False)
            reply = wire.pack_sockaddr_un(path)
            if conn.send(reply) != len(reply):
                raise OSError(errno.EIO, "short reply")
        except BaseException:
            dsock.close()
            self._unlink(name)
            raise
        return Port(conn, dsock, name, req.description, peer.uid)

    def _ctl_readable(self, port: Port) -> None:
        try:
            data = port.ctl.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._remove(port)
        # anything else on the control stream is ignored, as vdeplug4 does

    def _remove(self, port: Port) -> None:
        try:
            self.ports.remove(port)
        except ValueError:
            return
        if self.fdb:
            for key in [k for k, (where, _) in self.fdb.items() if where is port]:
                del self.fdb[key]
        for s in (port.data, port.ctl):
            self._forget(s)
            s.close()
        port.backlog.clear()
        self._unlink(port.name)

    # -- closing ---------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self.closed:
                return
            super().close()
            self._teardown()

    def _teardown(self) -> None:
        for port in list(self.ports):
            self._remove(port)
        for conn in list(self._pending.values()):
            self._drop_pending(conn)
        if self._listener is not None:
            self._forget(self._listener)
            self._listener.close()
            self._listener = None
            self._unlink("ctl")
        if self._own_dir:
            self._own_dir = False
            try:
                os.rmdir(self.path)
            except OSError:
                pass
        if self._dfd >= 0:
            os.close(self._dfd)
            self._dfd = -1
        self._ep.close()

    def __repr__(self) -> str:
        state = " closed" if self.closed else f" {len(self.ports)} ports"
        return f"<NetNodeLink {self.url}{state}>"


def _listening(path: str) -> bool:
    """Does something accept connections at ``path`` (only to choose an error message)?"""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def _discard_queued(dsock: socket.socket) -> None:
    """Datagrams that reached our port socket before it was connected to the client came
    from someone else (the client learns the address only from our reply)."""
    while True:
        try:
            dsock.recv(1, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return


def _power_of_two(n: int) -> int:
    """vdeplug4 rounds the table size up to a power of two."""
    size = 1
    while size < n:
        size <<= 1
    return size


def _dirmode_for(mode: int) -> int:
    """vdeplug4's directory mode for a socket mode: setgid, the mode, and x for every
    class that may read or write (02700 for the default 0600)."""
    return 0o2000 | mode | (mode & 0o444) >> 2 | (mode & 0o222) >> 1


def default_path() -> str:
    """``/tmp/vdenode_USER`` (``/tmp/vdenode_uEUID`` for a user with no name)."""
    euid = os.geteuid()
    try:
        return "/tmp/vdenode_" + pwd.getpwuid(euid).pw_name
    except KeyError:
        return f"/tmp/vdenode_u{euid}"


def _octal(url: str, name: str, text: str) -> int:
    if not text or not all(c in "01234567" for c in text):
        raise URLError(f"{url!r}: {name} must be an octal number, e.g. {name}=0660")
    return int(text, 8)


def _number(url: str, name: str, text: str, least: int) -> int:
    try:
        value = int(text, 0)
    except ValueError:
        value = None
    if value is None or value < least:
        raise URLError(f"{url!r}: {name} must be a number of at least {least}, not {text!r}")
    return value


def parse_netnode(url: str, rest: str, kind: str) -> dict:
    """The keyword arguments of NetNodeLink for ``KIND://[PATH][[OPTIONS]]``."""
    path_text, opts_text = split_bracket(rest)
    opts = parse_options(opts_text, OPTIONS, url)
    path = unquote(path_text)
    if not path:
        path = default_path()
    else:
        parent, name = os.path.split(os.path.abspath(path))
        if not name:
            raise URLError(f"{url!r}: the node's path names no directory to make")
        try:
            path = os.path.join(os.path.realpath(parent, strict=True), name)
        except OSError as exc:
            raise URLError(f"{url!r}: the directory {parent} does not exist: "
                           f"{exc.strerror}") from None
    # the longest socket in it, fd<descriptor>, must fit a sockaddr_un
    if len(os.fsencode(path)) + len("/fd") + 10 >= wire.SUN_PATH_LEN:
        raise URLError(f"{url!r}: the path is too long for unix sockets "
                       f"(at most {wire.SUN_PATH_LEN - 14} bytes)")
    kw: dict = {"kind": kind, "url": url}
    if "mode" in opts:
        kw["mode"] = _octal(url, "mode", opts["mode"])
    if "dirmode" in opts:
        kw["dirmode"] = _octal(url, "dirmode", opts["dirmode"])
    if "grp" in opts:
        from threadnet.mgmt.console import resolve_group

        try:
            kw["group"] = resolve_group(opts["grp"])
        except LookupError:
            raise URLError(f"{url!r}: unknown group {opts['grp']!r}") from None
    if "hashsize" in opts:
        kw["hashsize"] = _number(url, "hashsize", opts["hashsize"], 1)
    if "expiretime" in opts:
        kw["expiretime"] = _number(url, "expiretime", opts["expiretime"], 0)
    if "hashseed" in opts:
        _number(url, "hashseed", opts["hashseed"], 0)
    return {"path": path, **kw}


def _opener(kind: str):  # noqa: ANN202
    def open_node(url: str, rest: str, inner: str | None) -> NetNodeLink:
        require_no_inner(url, inner)
        return NetNodeLink(**parse_netnode(url, rest, kind))

    open_node.__name__ = f"open_{kind}"
    open_node.__doc__ = f"``{kind}://[PATH][[OPTIONS]]``: a {kind} node at PATH; this link is its host."
    return open_node


open_hub = _opener(HUB)
open_switch = _opener(SWITCH)
open_multi = _opener(MULTI)
open_bonding = _opener(BONDING)
