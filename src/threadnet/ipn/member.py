"""A member of an IPN bus: its own datagram socket in the bus directory, and the others'.

Sending needs no dispatcher: a member keeps the list of the other members' sockets and
writes each message into each of them itself. The kernel's receive queue of each
member's socket is that member's queue (net.unix.max_dgram_qlen + 1 datagrams: 11 by
default, 513 where systemd sets 512).

- ``broadcast`` buses: every message goes to every other member, on a socket of ours
  connected to each (no path lookup per datagram; ``send_many`` sends a batch to each
  with one ``sendmmsg``, so each reader wakes once for the lot);
- ``switch`` buses: messages are Ethernet frames. One to a learned unicast MAC goes to
  the one member it was last seen from; others (unknown, broadcast, multicast) go to
  every member with one ``sendmmsg`` from our bound socket. Learning needs the sender,
  so switch members send from the socket bound to their name: the address ``recvfrom``
  gives is the kernel's word for who sent (a member's path stays its own while its file
  exists: the directory is sticky), and messages from any other address are dropped and
  counted (``bad``).

A full queue answers EAGAIN to its senders:

- ``lossy`` bus: the message is dropped for that member and counted (``dropped``);
- ``lossless`` bus: a blocking member waits until that member has room (its connected
  socket, or a "probe" connected to it, becomes writable when it has), then sends on.
  A non-blocking member (a stack's link, driven by an event loop) keeps the message in
  a bounded backlog for that member instead (``queue`` messages, then dropped and
  counted) and sends it when ``flush()`` finds room (``wait_fileno()``).

Membership follows the directory: before each send, one ``fstat`` of the directory says
whether its entries changed (its mtime; while the mtime is younger than the clock's
granularity the list is read again on every send, as git does with racy timestamps).
A member that dies leaves its socket file, and sending to it answers ECONNREFUSED: it
is forgotten (and its files removed when we may), also when a sender was waiting for
its room (its socket's closing wakes the waiter). Nothing waits on a dead member.

A member whose socket belongs to a user other than us, root and the bus owner could
swap its file for a symbolic link at any time, so we reach its socket through a
descriptor pinned with ``O_PATH | O_NOFOLLOW`` (``/proc/self/fd/N``), never its name;
entries that are not sockets (symbolic links included) are nobody's.
"""

from __future__ import annotations

import errno
import mmap
import os
import secrets
import select
import socket
import stat
import time
from collections import deque

from threadnet import mmsg
from threadnet.fsafe import set_socket_file
from threadnet.ipn.bus import (
    MAX_MEMBERS,
    MEMBER_PREFIX,
    STATS_PREFIX,
    BusConfig,
    IpnError,
    OpenBus,
    open_bus,
)
from threadnet.ipn.fanout import Batch, Fanout

#: the largest message (an AF_UNIX datagram of up to 64 KiB; a jumbo Ethernet frame fits)
MAX_MESSAGE = 65535
#: what each member's socket may have in flight: every message waiting in the other
#: members' queues is charged to the sender's send buffer
SNDBUF = 8 << 20
#: switch policy: how long a learned address stays, and how many are kept
AGING = 300.0
MAX_MACS = 4096
#: mtimes younger than this (ns) may hide a second change in the same clock tick
RACY_NS = 20_000_000
#: a blocked sender looks again at least this often (a member's death also wakes it)
WAIT_SLICE = 0.25

# the counters file: 16 unsigned 64-bit words
SENT, RECEIVED, DROPPED, WAITS, DEAD, BAD, FLOODED, UNICAST = range(8)
PID = 15
COUNTER_NAMES = ("sent", "received", "dropped", "waits", "dead", "bad", "flooded", "unicast")
STATS_SIZE = 128
#: messages per ``sendmmsg`` of ``send_many``
BATCH = 64


def _writable(fds: list[int], timeout: float) -> list[int]:
    """Which of ``fds`` are writable (or in error), waiting up to ``timeout`` seconds
    (poll: descriptors above FD_SETSIZE are fine)."""
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLOUT)
    try:
        return [fd for fd, _ in p.poll(timeout * 1000)]
    except InterruptedError:
        return []


class _Peer:
    """Another member: its socket's name and inode, our way to it (``addr``: its path, or
    our pinned descriptor's), and on a broadcast bus ``conn``, a socket of ours connected
    to it (a send without a path lookup; writable when it has room)."""

    __slots__ = ("name", "ino", "uid", "addr", "pin", "conn", "probe", "backlog")

    def __init__(self, name: str, ino: int, uid: int, addr: str, pin: int) -> None:
        self.name = name
        self.ino = ino
        self.uid = uid
        self.addr = addr
        self.pin = pin
        self.conn: socket.socket | None = None
        self.probe: socket.socket | None = None
        self.backlog: deque[bytes] | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        if self.pin >= 0:
            os.close(self.pin)
            self.pin = -1


class Member:
    """Join the bus at ``path``. ``blocking``: on a lossless bus, whether ``send`` waits
    for a full member (True) or keeps the message in that member's backlog (False)."""

    def __init__(self, path: str, *, blocking: bool = True) -> None:
        self.bus: OpenBus = open_bus(path)
        self.config: BusConfig = self.bus.config
        self.path = self.bus.path
        self.blocking = blocking
        self.lossless = self.config.lossless
        self.switch = self.config.policy == "switch"
        self.closed = False
        self._uid = os.geteuid()
        self._trusted = {0, self._uid, self.bus.owner}
        self._peers: dict[str, _Peer] = {}
        self._order: list[_Peer] = []
        self._fan: Fanout | None = None
        self._batch: Batch | None = None
        self._dead: set[tuple[str, int]] = set()
        self._mtime = -1
        self._racy = True
        self._pending: list[_Peer] = []  # peers with a backlog (non-blocking, lossless)
        self._txprobe: socket.socket | None = None  # see wait_fileno
        self._aimed: _Peer | None = None
        self._macs: dict[bytes, tuple[str, float]] = {}
        self._sock: socket.socket | None = None
        self._stats: mmap.mmap | None = None
        self.counters: memoryview | None = None
        self._statsview: memoryview | None = None
        self._rbuf = bytearray(MAX_MESSAGE + 1)
        self._rview = memoryview(self._rbuf)
        self.name = ""
        try:
            self._bind()
        except BaseException:
            self.close()
            raise
        self._prefix = self.path + "/" + MEMBER_PREFIX
        self._cut = len(self.path) + 1

    # -- joining ----------------------------------------------------------------------
    def _bind(self) -> None:
        dfd = self.bus.dfd
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock = s
        try:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SNDBUF)
        except OSError:
            pass
        for _ in range(8):
            tag = f"{os.getpid()}.{secrets.token_hex(4)}"
            try:
                s.bind(f"{self.path}/{MEMBER_PREFIX}{tag}")
                break
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    continue
                if exc.errno in (errno.EACCES, errno.EPERM):
                    raise IpnError(errno.EACCES, f"permission denied: this user may not join "
                                   f"the IPN bus {self.path}") from None
                raise IpnError(exc.errno, f"cannot join the IPN bus {self.path}: "
                               f"{exc.strerror}") from None
        else:
            raise IpnError(errno.EADDRINUSE, f"no free member name on {self.path}")
        self.name = MEMBER_PREFIX + tag
        # the socket's mode says who may send to us: the bus's classes (the directory's
        # setgid bit gave it the bus's group)
        set_socket_file(self.name, dfd, self.config.mode)
        fd = os.open(STATS_PREFIX + tag, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                     | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            os.fchmod(fd, 0o600 | (self.config.mode & 0o044))
            os.ftruncate(fd, STATS_SIZE)
            self._stats = mmap.mmap(fd, STATS_SIZE)
        finally:
            os.close(fd)
        self._statsview = memoryview(self._stats)
        self.counters = self._statsview.cast("Q")
        self.counters[PID] = os.getpid()
        self._scan()

    # -- the member list --------------------------------------------------------------
    def members(self) -> list[str]:
        """The other members' names, as last read from the directory."""
        self.refresh()
        return [p.name for p in self._order]

    def refresh(self) -> None:
        """Read the member list again if the directory changed."""
        st = os.fstat(self.bus.dfd)
        if st.st_mtime_ns != self._mtime or self._racy:
            self._scan(st)

    def _scan(self, st: os.stat_result | None = None) -> None:
        dfd = self.bus.dfd
        if st is None:
            st = os.fstat(dfd)
        if st.st_nlink == 0:
            raise IpnError(errno.ENOENT, f"the IPN bus {self.path} was removed")
        self._mtime = st.st_mtime_ns
        self._racy = time.time_ns() - st.st_mtime_ns < RACY_NS
        old = self._peers
        peers: dict[str, _Peer] = {}
        present: set[tuple[str, int]] = set()
        with os.scandir(dfd) as it:
            for entry in it:
                name = entry.name
                if not name.startswith(MEMBER_PREFIX) or name == self.name:
                    continue
                try:
                    est = entry.stat(follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISSOCK(est.st_mode):
                    continue  # a symbolic link or a file is nobody's socket
                key = (name, est.st_ino)
                present.add(key)
                if key in self._dead:
                    continue
                peer = old.get(name)
                if peer is not None and peer.ino == est.st_ino:
                    peers[name] = peer
                    continue
                if len(peers) >= MAX_MEMBERS:
                    continue
                peer = self._adopt(name, est)
                if peer is not None:
                    peers[name] = peer
        for name, peer in old.items():
            if peers.get(name) is not peer:
                peer.close()
        self._dead &= present
        self._set_peers(peers)

    def _adopt(self, name: str, est: os.stat_result) -> _Peer | None:
        if est.st_uid in self._trusted:
            # nobody but its owner (us, root, the bus owner) may swap this entry
            return _Peer(name, est.st_ino, est.st_uid, f"{self.path}/{name}", -1)
        try:
            pin = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self.bus.dfd)
        except OSError:
            return None
        pst = os.fstat(pin)
        if pst.st_ino != est.st_ino or not stat.S_ISSOCK(pst.st_mode):
            os.close(pin)
            return None
        return _Peer(name, est.st_ino, est.st_uid, f"/proc/self/fd/{pin}", pin)

    def _set_peers(self, peers: dict[str, _Peer]) -> None:
        self._peers = peers
        self._order = [peers[n] for n in sorted(peers)]
        self._pending = [p for p in self._order if p.backlog]
        self._fan = None
        if self.switch and mmsg.available() and self._order:
            self._fan = Fanout([p.addr for p in self._order], MAX_MESSAGE)

    def _bury(self, peer: _Peer) -> None:
        """``peer``'s socket has nobody behind it: forget it, and remove its files when
        we may (we own them, or the bus)."""
        assert self.counters is not None
        self.counters[DEAD] += 1
        if peer.backlog:
            self.counters[DROPPED] += len(peer.backlog)
        peer.backlog = None
        if self._aimed is peer:
            self._aimed = None
        self._dead.add((peer.name, peer.ino))
        peer.close()
        peers = dict(self._peers)
        peers.pop(peer.name, None)
        self._set_peers(peers)
        for mac, (who, _) in list(self._macs.items()):
            if who == peer.name:
                del self._macs[mac]
        dfd = self.bus.dfd
        try:
            if os.stat(peer.name, dir_fd=dfd, follow_symlinks=False).st_ino == peer.ino:
                os.unlink(peer.name, dir_fd=dfd)
                os.unlink(STATS_PREFIX + peer.name[len(MEMBER_PREFIX):], dir_fd=dfd)
        except OSError:
            pass  # another user's: its owner or the bus owner cleans it up

    # -- sending ----------------------------------------------------------------------
    def send(self, msg: bytes | bytearray | memoryview) -> None:
        """Send one message to the other members (see the module's notes)."""
        if self.closed:
            raise IpnError(errno.EBADF, f"{self.path}: this member has left the bus")
        n = len(msg)
        if not 0 < n <= MAX_MESSAGE:
            raise IpnError(errno.EMSGSIZE if n else errno.EINVAL,
                           f"an IPN message is 1..{MAX_MESSAGE} bytes, not {n}")
        self.refresh()
        counters = self.counters
        assert counters is not None
        if not self.switch:
            counters[SENT] += 1
            for peer in self._order:
                if peer.backlog:
                    self._hold(peer, msg)
                    continue
                conn = peer.conn or self._connect(peer)
                if conn is None:
                    continue
                try:
                    conn.send(msg, socket.MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    self._full(peer, msg)
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        self._full(peer, msg)
                    else:
                        self._failed(peer, exc.errno)
            return
        if n < 14:
            raise IpnError(errno.EINVAL, f"a message on a switch bus is an Ethernet frame "
                           f"(14 bytes at least), not {n} bytes")
        counters[SENT] += 1
        if not msg[0] & 1:
            entry = self._macs.get(bytes(msg[0:6]))
            if entry is not None:
                peer = self._peers.get(entry[0])
                if peer is not None and time.monotonic() - entry[1] < AGING:
                    counters[UNICAST] += 1
                    self._send_one(peer, msg)
                    return
        counters[FLOODED] += 1
        fan = self._fan
        if fan is None or self._pending:
            for peer in list(self._order):
                self._send_one(peer, msg)
            return
        order = self._order
        fan.load(msg)
        fd = self._sock.fileno()  # type: ignore[union-attr]
        start = 0
        while True:
            start, err = fan.send(fd, start)
            if not err:
                return
            peer = order[start]
            if err in (errno.EAGAIN, errno.ENOBUFS):
                self._full(peer, msg)
            else:
                self._failed(peer, err)
            start += 1
            if self._fan is not fan:
                # a member died meanwhile (the list was rebuilt): the rest one by one
                for peer in order[start:]:
                    if self._peers.get(peer.name) is peer:
                        self._send_one(peer, msg)
                return

    def send_many(self, msgs: list) -> None:
        """Send several messages, as ``send`` each would; on a broadcast bus with one
        ``sendmmsg`` per member for up to ``BATCH`` of them (its reader wakes once for
        the lot). A member's queue holds 11 datagrams by default (net.unix.max_dgram_qlen
        + 1): on a lossy bus, a batch larger than that loses the rest for a member whose
        reader is asleep."""
        if (self.switch or self._pending or self.closed or not mmsg.available()
                or any(not 0 < len(m) <= Batch.SLOT for m in msgs)):
            for msg in msgs:
                self.send(msg)
            return
        self.refresh()
        counters = self.counters
        assert counters is not None
        batch = self._batch
        if batch is None:
            batch = self._batch = Batch(BATCH)
        for first in range(0, len(msgs), BATCH):
            chunk = msgs[first:first + BATCH]
            k = len(chunk)
            counters[SENT] += k
            batch.load(chunk)
            late = []
            for peer in list(self._order):
                conn = peer.conn or self._connect(peer)
                start = 0
                while start < k and conn is not None and peer.conn is conn:
                    start, err = batch.send(conn.fileno(), start, k)
                    if not err:
                        break
                    if err in (errno.EAGAIN, errno.ENOBUFS):
                        if not self.lossless:
                            counters[DROPPED] += 1
                            start += 1
                            continue
                        late.append((peer, start))
                        break
                    self._failed(peer, err)
                    start += 1
            if late:
                self._catch_up(late, batch, chunk, k)

    def _catch_up(self, late: list[tuple[_Peer, int]], batch: Batch, chunk: list,
                  k: int) -> None:
        """Lossless: the members whose queues were full get the rest of the batch.
        Blocking, whichever has room first gets what fits, until all have it all (or
        died); non-blocking, it waits in their backlogs."""
        counters = self.counters
        assert counters is not None
        if not self.blocking:
            for peer, start in late:
                for msg in chunk[start:]:
                    self._hold(peer, msg)
            return
        counters[WAITS] += 1
        todo = dict(late)
        while todo:
            by_fd: dict[int, _Peer] = {}
            for peer in list(todo):
                if self._peers.get(peer.name) is not peer or peer.conn is None:
                    del todo[peer]  # buried meanwhile
                else:
                    by_fd[peer.conn.fileno()] = peer
            if not by_fd:
                return
            for fd in _writable(list(by_fd), WAIT_SLICE):
                peer = by_fd[fd]
                if self._peers.get(peer.name) is not peer:
                    continue
                start, err = batch.send(fd, todo[peer], k)  # what it has room for
                if err and err not in (errno.EAGAIN, errno.ENOBUFS):
                    self._failed(peer, err)
                    start += 1
                if start >= k:
                    todo.pop(peer, None)
                else:
                    todo[peer] = start

    def _connect(self, peer: _Peer) -> socket.socket | None:
        """A socket connected to ``peer``'s (broadcast buses); None when nobody is there
        (the peer is then buried)."""
        s = self._dial(peer, SNDBUF)
        if s is not None:
            peer.conn = s
        return s

    def _dial(self, peer: _Peer, sndbuf: int = 0) -> socket.socket | None:
        """A non-blocking socket connected to ``peer``'s, or None when nobody is there
        (the peer is then buried)."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if sndbuf:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, sndbuf)
            except OSError:
                pass
        try:
            s.connect(peer.addr)
        except OSError as exc:
            s.close()
            self._failed(peer, exc.errno)
            return None
        s.setblocking(False)
        return s

    def _try(self, peer: _Peer, msg: bytes | bytearray | memoryview) -> int:
        """One send to ``peer`` without waiting: 0, or the errno (EAGAIN when full)."""
        try:
            if peer.conn is not None:
                peer.conn.send(msg, socket.MSG_DONTWAIT)
            else:
                self._sock.sendto(msg, socket.MSG_DONTWAIT, peer.addr)  # type: ignore[union-attr]
            return 0
        except (BlockingIOError, InterruptedError):
            return errno.EAGAIN
        except OSError as exc:
            return exc.errno or errno.EIO

    def _send_one(self, peer: _Peer, msg: bytes | bytearray | memoryview) -> None:
        if peer.backlog:
            self._hold(peer, msg)
            return
        err = self._try(peer, msg)
        if err in (errno.EAGAIN, errno.ENOBUFS):
            self._full(peer, msg)
        elif err:
            self._failed(peer, err)

    def _failed(self, peer: _Peer, err: int) -> None:
        if err == errno.EMSGSIZE:
            raise IpnError(err, "message too long for the bus")
        if err in (errno.EACCES, errno.EPERM):
            self.counters[DROPPED] += 1  # type: ignore[index]  # it does not let us write
            return
        self._bury(peer)  # ECONNREFUSED, ENOENT, ENOTSOCK...: nobody there

    def _full(self, peer: _Peer, msg: bytes | bytearray | memoryview) -> None:
        counters = self.counters
        assert counters is not None
        if not self.lossless:
            counters[DROPPED] += 1
            return
        if not self.blocking:
            self._hold(peer, msg)
            return
        counters[WAITS] += 1
        while self._wait_room(peer, WAIT_SLICE):
            err = self._try(peer, msg)
            if not err:
                return
            if err not in (errno.EAGAIN, errno.ENOBUFS):
                self._failed(peer, err)
                return

    def _probe(self, peer: _Peer) -> socket.socket | None:
        """A socket connected to ``peer``'s: writable when ``peer``'s queue has room.
        None when nobody is there (the peer is then buried)."""
        if peer.conn is not None:
            return peer.conn
        if peer.probe is None:
            peer.probe = self._dial(peer)
        return peer.probe

    def _wait_room(self, peer: _Peer, timeout: float) -> bool:
        """Wait until ``peer`` may have room (or ``timeout``); False when it is gone."""
        probe = self._probe(peer)
        if probe is None:
            return False
        if probe is not peer.conn:
            # sending from our bound socket: room in its send buffer first (what waits
            # in every member's queue is charged to it)
            own = self._sock.fileno()  # type: ignore[union-attr]
            if not _writable([own], 0):
                _writable([own], timeout)
        _writable([probe.fileno()], timeout)
        return self._peers.get(peer.name) is peer

    def _hold(self, peer: _Peer, msg: bytes | bytearray | memoryview) -> None:
        q = peer.backlog
        if q is None:
            q = peer.backlog = deque()
        if len(q) >= self.config.queue:
            self.counters[DROPPED] += 1  # type: ignore[index]
            return
        if not q:
            self._pending.append(peer)
        q.append(bytes(msg))

    # -- the backlog of a non-blocking member -----------------------------------------
    def pending(self) -> int:
        """Messages waiting in backlogs for members whose queues were full."""
        return sum(len(p.backlog or ()) for p in self._pending)

    def wait_fileno(self) -> int:
        """A descriptor that becomes writable when the first member we hold messages for
        may have room (writable at once when nothing waits). It is always the same descriptor: a
        socket connected to that member, connected again to the next one as backlogs
        drain (the kernel then wakes whoever polls it), so a loop can keep watching it."""
        if self._txprobe is None:
            self._txprobe = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            self._txprobe.setblocking(False)
        self._aim()
        return self._txprobe.fileno()

    def _aim(self) -> None:
        """Connect the loop's probe to the first member that has a backlog."""
        while self._pending and self._txprobe is not None:
            peer = self._pending[0]
            if self._aimed is peer:
                return
            try:
                self._txprobe.connect(peer.addr)
                self._aimed = peer
                return
            except OSError as exc:
                self._aimed = None
                self._failed(peer, exc.errno)
                if peer in self._pending:  # no permission to write to it: give up on it
                    self.counters[DROPPED] += len(peer.backlog or ())  # type: ignore[index]
                    peer.backlog = None
                    self._pending.remove(peer)

    def flush(self) -> bool:
        """Send what the backlogs hold while the members take it; True while some still
        wait (then ``wait_fileno()`` watches the first of them)."""
        for peer in list(self._pending):
            q = peer.backlog
            while q:
                err = self._try(peer, q[0])
                if err in (errno.EAGAIN, errno.ENOBUFS):
                    break
                if err in (errno.EACCES, errno.EPERM):
                    self.counters[DROPPED] += 1  # type: ignore[index]
                elif err:
                    self._bury(peer)
                    break
                q.popleft()
            if not q and peer in self._pending:
                self._pending.remove(peer)
        if self._pending:
            self._aim()
        return bool(self._pending)

    # -- receiving --------------------------------------------------------------------
    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def setblocking(self, flag: bool) -> None:
        """Whether ``recv`` waits for a message (and, on a lossless bus, ``send`` for a
        full member)."""
        self.blocking = flag
        if self._sock is not None:
            self._sock.setblocking(flag)

    def recv(self) -> tuple[bytes, str]:
        """The next message and its sender's name ("" on a broadcast bus, whose members
        send on unnamed connected sockets). On a switch bus, messages from outside the
        bus are dropped and counted (``bad``), as are empty and truncated ones on any
        bus. BlockingIOError when none waits and the member does not block."""
        sock = self._sock
        if sock is None:
            raise IpnError(errno.EBADF, f"{self.path}: this member has left the bus")
        counters = self.counters
        assert counters is not None
        while True:
            n, addr = sock.recvfrom_into(self._rbuf)
            if n == 0 or n > MAX_MESSAGE:
                counters[BAD] += 1
                continue
            if (isinstance(addr, str) and addr.startswith(self._prefix)
                    and "/" not in addr[self._cut:]):
                sender = addr[self._cut:]
            elif self.switch:
                counters[BAD] += 1  # learning needs the sender: only members' sockets
                continue
            else:
                sender = ""  # a broadcast member's connected socket has no name
            msg = bytes(self._rview[:n])
            counters[RECEIVED] += 1
            if self.switch and n >= 14 and not msg[6] & 1:
                self._learn(msg[6:12], sender)
            return msg, sender

    def _learn(self, mac: bytes, sender: str) -> None:
        macs = self._macs
        if mac not in macs and len(macs) >= MAX_MACS:
            now = time.monotonic()
            for old in [m for m, (_, t) in macs.items() if now - t >= AGING]:
                del macs[old]
            if len(macs) >= MAX_MACS:
                del macs[next(iter(macs))]
        macs[mac] = (sender, time.monotonic())

    def learned(self) -> dict[str, str]:
        """The switch policy's table: MAC (aa:bb:..) -> member name."""
        now = time.monotonic()
        return {m.hex(":"): who for m, (who, t) in self._macs.items() if now - t < AGING}

    # -- leaving ----------------------------------------------------------------------
    def close(self) -> None:
        """Leave the bus: our socket and counters are removed."""
        if self.closed:
            return
        self.closed = True
        for peer in self._peers.values():
            peer.close()
        self._peers = {}
        self._order = []
        self._pending = []
        self._fan = None
        self._batch = None
        self._aimed = None
        if self._txprobe is not None:
            self._txprobe.close()
            self._txprobe = None
        dfd = self.bus.dfd
        if self.name and dfd >= 0:
            for name in (self.name, STATS_PREFIX + self.name[len(MEMBER_PREFIX):]):
                try:
                    os.unlink(name, dir_fd=dfd)
                except OSError:
                    pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.counters is not None:
            self.counters.release()
            self.counters = None
        if self._statsview is not None:
            self._statsview.release()
            self._statsview = None
        if self._stats is not None:
            self._stats.close()
            self._stats = None
        self.bus.close()

    def __enter__(self) -> Member:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<ipn.Member {self.path}/{self.name} {self.config.policy} {self.config.delivery}>"
