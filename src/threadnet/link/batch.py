"""Batched datagram I/O for links on datagram sockets (``vde://``, pair links).

A stack processes a batch of received frames at a time (``Stack.begin_batch``). Its
answers then go out together: while a link's transmit batch is open, ``TxBatch.add``
copies frames into fixed slots and ``flush`` hands them to the kernel with one
``sendmmsg``. A batch of a single frame is sent as it is, so a link that only ever sends
one frame per batch (an echo reply) never allocates the slots. Receiving, the runner
fills one shared ``mmsg.RecvBatch`` with ``recvmmsg`` per wake-up.

Only where ``mmsg.available()`` (64-bit little-endian Linux); links fall back to one
system call per frame otherwise.

When the socket is full (the peer has not read its queue yet), a link driven by a loop
(``attach_tx``) puts what it cannot send into a bounded ``TxBacklog`` and the loop drains
it when the socket becomes writable: a send under a stack's lock, or on the runner's
thread, never waits. A link with no loop waits up to ``FLUSH_WAIT`` for room instead.
"""

from __future__ import annotations

import ctypes
import errno
import select
import threading
import time
from collections import deque
from collections.abc import Callable

from threadnet import mmsg

#: how long a flush of a link with no loop waits for room in the socket before it drops
#: the rest (the switch or the peer reads its socket in a tight loop: a full queue
#: empties within microseconds)
FLUSH_WAIT = 0.005
MSG_TRUNC = 0x20
#: a driven link's backlog: Linux's default txqueuelen, and at most this many bytes
BACKLOG_FRAMES = 1000
BACKLOG_BYTES = 4 << 20
_FULL = (errno.EAGAIN, errno.ENOBUFS)


class TxBatch:
    """Frames for one datagram socket, sent by one ``sendmmsg`` at ``flush``."""

    def __init__(self, slot_size: int, nslots: int = 64) -> None:
        self.slot_size = slot_size
        self.nslots = nslots
        self.depth = 0  # nested begin() calls
        self.count = 0
        self._first: bytes | bytearray | memoryview | None = None
        self._slots: list[memoryview] | None = None
        self._addrs: list[int] = []
        self._iov: ctypes.Array | None = None
        self._msgs_addr = 0

    def _allocate(self) -> None:
        size = self.slot_size
        self._buf = ctypes.create_string_buffer(self.nslots * size)
        base = ctypes.addressof(self._buf)
        mv = memoryview(self._buf).cast("B")
        self._slots = [mv[i * size:(i + 1) * size] for i in range(self.nslots)]
        self._addrs = [base + i * size for i in range(self.nslots)]
        self._iov = ctypes.create_string_buffer(self.nslots * 16)
        self._msgs = mmsg._headers(self.nslots, ctypes.addressof(self._iov))
        self._msgs_addr = ctypes.addressof(self._msgs)

    def add(self, frame: bytes | bytearray | memoryview) -> bool:
        """Queue ``frame``; False when it cannot be queued (too big, or the batch is full:
        flush and add again)."""
        n = len(frame)
        if n > self.slot_size or self.count >= self.nslots:
            return False
        if self.count == 0:
            self._first = frame  # kept by reference: copied only if a second one comes
            self.count = 1
            return True
        if self._slots is None:
            self._allocate()
        if self._first is not None:
            self._put(0, self._first)
            self._first = None
        self._put(self.count, frame)
        self.count += 1
        return True

    def discard(self) -> None:
        self.count = 0
        self._first = None

    def _put(self, i: int, frame: bytes | bytearray | memoryview) -> None:
        n = len(frame)
        assert self._slots is not None and self._iov is not None
        self._slots[i][:n] = frame
        mmsg.IOV.pack_into(self._iov, i * 16, self._addrs[i], n)

    def send_now(self, sock) -> int:  # noqa: ANN001 - a socket.socket
        """Send what the socket takes without waiting; returns how many frames went (the
        rest stay: ``unsent`` gives them, ``discard`` forgets them). OSError for a dead
        socket."""
        count = self.count
        first = self._first
        if first is not None:
            try:
                sock.send(first)
            except (BlockingIOError, InterruptedError):
                return 0
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                return 0
            return 1
        return self._send_from(sock.fileno(), 0, count)

    def _send_from(self, fd: int, sent: int, count: int) -> int:
        """``sendmmsg`` the queued frames from index ``sent`` on without waiting; returns
        how far it got (less than ``count`` when the socket is full)."""
        sendmmsg = mmsg._libc.sendmmsg  # type: ignore[union-attr]
        while sent < count:
            n = sendmmsg(fd, self._msgs_addr + sent * 64, count - sent, mmsg.MSG_DONTWAIT)
            if n < 0:
                err = ctypes.get_errno()
                if err == errno.EINTR:
                    continue
                if err in _FULL:
                    break
                raise OSError(err, errno.errorcode.get(err, str(err)))
            sent += n
        return sent

    def unsent(self, start: int) -> list[bytes]:
        """Copies of the queued frames from index ``start`` on."""
        if self._first is not None:
            return [bytes(self._first)] if start == 0 else []
        assert self._slots is not None and self._iov is not None
        out = []
        for i in range(start, self.count):
            n = mmsg.IOV.unpack_from(self._iov, i * 16)[1]
            out.append(bytes(self._slots[i][:n]))
        return out

    def flush(self, sock) -> int:  # noqa: ANN001 - a socket.socket
        """Send what is queued, waiting up to FLUSH_WAIT for room; returns how many
        frames were dropped because the socket stayed full. OSError for a dead socket."""
        count = self.count
        if not count:
            return 0
        self.count = 0
        first = self._first
        if first is not None:
            self._first = None
            return self._send_one(sock, first)
        fd = sock.fileno()
        sent = self._send_from(fd, 0, count)
        deadline = None
        while sent < count:  # the socket is full: wait for room, up to FLUSH_WAIT
            now = time.monotonic()
            if deadline is None:
                deadline = now + FLUSH_WAIT
            if now >= deadline:
                return count - sent
            select.select([], [fd], [], deadline - now)
            sent = self._send_from(fd, sent, count)
        return 0

    @staticmethod
    def _send_one(sock, frame: bytes | bytearray | memoryview) -> int:  # noqa: ANN001
        return send_waiting(sock, frame)


def send_waiting(sock, frame: bytes | bytearray | memoryview) -> int:  # noqa: ANN001
    """Send one datagram on a non-blocking socket, waiting up to FLUSH_WAIT for room.
    Returns 1 if it was dropped, else 0; OSError for a dead socket."""
    try:
        sock.send(frame)
        return 0
    except (BlockingIOError, InterruptedError):
        pass
    except OSError as exc:
        if exc.errno != errno.ENOBUFS:
            raise
    deadline = time.monotonic() + FLUSH_WAIT
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return 1
        select.select([], [sock], [], left)
        try:
            sock.send(frame)
            return 0
        except (BlockingIOError, InterruptedError):
            continue
        except OSError as exc:
            if exc.errno != errno.ENOBUFS:
                raise


class TxBacklog:
    """Frames a full socket has not taken yet, oldest first, bounded like a NIC's transmit
    queue (``BACKLOG_FRAMES``, ``BACKLOG_BYTES``). ``lock`` guards it: senders hold a
    stack's lock and then this one, the loop's ``on_writable`` only this one."""

    def __init__(self, max_frames: int = BACKLOG_FRAMES, max_bytes: int = BACKLOG_BYTES) -> None:
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames: deque[bytes] = deque()
        self.bytes = 0
        self.lock = threading.Lock()
        #: the loop's ``wake(link)``, or None when no loop drains this link
        self.wake: Callable | None = None
        #: the loop was woken and watches the socket (set and cleared under ``lock``)
        self.armed = False

    def __len__(self) -> int:
        return len(self.frames)

    def push(self, frame: bytes) -> bool:
        """Queue ``frame``; False when the backlog is full (the caller counts a drop)."""
        n = len(frame)
        if len(self.frames) >= self.max_frames or self.bytes + n > self.max_bytes:
            return False
        self.frames.append(frame)
        self.bytes += n
        return True

    def clear(self) -> int:
        """Forget every frame; returns how many there were."""
        n = len(self.frames)
        self.frames.clear()
        self.bytes = 0
        return n


class BatchedDatagramLink:
    """What a link on one datagram socket needs for batches: ``begin_tx``/``end_tx``
    around a stack's answers, ``recv_many`` for the runner, ``_send_frame`` for its
    ``_send``, and the transmit backlog a loop drains (``attach_tx``, ``on_writable``).
    The link provides ``_dgram`` (its socket), ``rx_slot``, ``drops``, ``closed`` and
    ``_gone(exc)``, the LinkError that says its peer went away."""

    _tx: TxBatch | None = None
    _backlog: TxBacklog | None = None

    def _dgram_socket(self):  # noqa: ANN202
        raise NotImplementedError

    def _gone(self, exc: OSError) -> Exception:
        raise NotImplementedError

    # -- the backlog, drained by a loop --------------------------------------------------
    def attach_tx(self, wake: Callable | None) -> bool:
        bl = self._backlog
        if bl is None:
            bl = self._backlog = TxBacklog()
        with bl.lock:
            bl.wake = wake
            bl.armed = False
            pending = bool(bl.frames)
        if pending and wake is not None:
            with bl.lock:
                bl.armed = True
            wake(self)
        return True

    @property
    def tx_backlog(self) -> int:
        """Frames waiting for room in the socket."""
        bl = self._backlog
        return 0 if bl is None else len(bl.frames)

    def on_writable(self) -> bool:
        bl = self._backlog
        if bl is None:
            return False
        with bl.lock:
            frames = bl.frames
            if self.closed:  # type: ignore[attr-defined]
                frames.clear()
                bl.bytes = 0
            sock = None if self.closed else self._dgram_socket()  # type: ignore[attr-defined]
            while frames:
                frame = frames[0]
                try:
                    sock.send(frame)  # type: ignore[union-attr]
                except (BlockingIOError, InterruptedError):
                    return True
                except OSError as exc:
                    if exc.errno == errno.ENOBUFS:
                        return True
                    # the peer is gone: what waits is lost; the next send or recv says so
                    self.drops += bl.clear()  # type: ignore[attr-defined]
                    self.closed_by_peer = True
                    break
                frames.popleft()
                bl.bytes -= len(frame)
            bl.armed = False
            return False

    def _queue(self, bl: TxBacklog, frames: list[bytes]) -> bool:
        """Put ``frames`` in the backlog (under its lock); True if the loop must be woken."""
        for frame in frames:
            if not bl.push(frame):
                self.drops += 1  # type: ignore[attr-defined]
        if bl.armed or not bl.frames:
            return False
        bl.armed = True
        return True

    def _drain_waiting(self, sock) -> None:  # noqa: ANN001
        """No loop drains the backlog any more: send what it holds, waiting briefly."""
        bl = self._backlog
        assert bl is not None
        with bl.lock:
            while bl.frames:
                frame = bl.frames.popleft()
                bl.bytes -= len(frame)
                self.drops += send_waiting(sock, frame)  # type: ignore[attr-defined]

    # -- sending --------------------------------------------------------------------------
    def _send_frame(self, frame: bytes | bytearray | memoryview) -> None:
        tx = self._tx
        if tx is not None and tx.depth:
            if tx.add(frame):
                return
            self._flush_tx()  # full, or a frame too big for a slot: keep the order
            if tx.add(frame):
                return
        sock = self._dgram_socket()
        bl = self._backlog
        try:
            if bl is not None and bl.wake is not None:
                with bl.lock:
                    if not bl.frames:  # (else it goes behind them: keep the order)
                        try:
                            sock.send(frame)
                            return
                        except (BlockingIOError, InterruptedError):
                            pass
                        except OSError as exc:
                            if exc.errno != errno.ENOBUFS:
                                raise
                    wake = self._queue(bl, [bytes(frame)])
                if wake:
                    bl.wake(self)
                return
            if bl is not None and bl.frames:
                self._drain_waiting(sock)
            # no loop to drain a backlog: a full socket is waited for briefly
            self.drops += send_waiting(sock, frame)  # type: ignore[attr-defined]
        except OSError as exc:
            self.closed_by_peer = True
            raise self._gone(exc) from exc

    def begin_tx(self) -> None:
        """Queue frames sent from now until ``end_tx``, for one ``sendmmsg`` (nestable)."""
        tx = self._tx
        if tx is None:
            if not mmsg.available():
                return
            slot = self.rx_slot  # type: ignore[attr-defined]
            tx = self._tx = TxBatch(slot, max(4, min(64, (1 << 20) // slot)))
        tx.depth += 1

    def end_tx(self) -> None:
        tx = self._tx
        if tx is None or not tx.depth:
            return
        tx.depth -= 1
        if not tx.depth:
            self._flush_tx()

    def _flush_tx(self) -> None:
        tx = self._tx
        if tx is None or not tx.count:
            return
        if self.closed:  # type: ignore[attr-defined]
            tx.discard()
            return
        sock = self._dgram_socket()
        bl = self._backlog
        try:
            if bl is not None and bl.wake is not None:
                with bl.lock:
                    # behind frames already waiting, or what the socket does not take now
                    sent = 0 if bl.frames else tx.send_now(sock)
                    rest = tx.unsent(sent) if sent < tx.count else []
                    tx.discard()
                    wake = self._queue(bl, rest) if rest else False
                if wake:
                    bl.wake(self)
                return
            if bl is not None and bl.frames:
                self._drain_waiting(sock)
            self.drops += tx.flush(sock)  # type: ignore[attr-defined]
        except OSError as exc:
            tx.discard()
            self.closed_by_peer = True
            raise self._gone(exc) from exc

    def recv_many(self, rb: mmsg.RecvBatch) -> int:
        """Receive up to ``rb.nslots`` frames into ``rb`` (one ``recvmmsg``); see
        ``frames``. Raises LinkError when the peer is gone."""
        try:
            return rb.recv(self._dgram_socket().fileno())
        except OSError as exc:
            self.closed_by_peer = True
            raise self._gone(exc) from exc


def frames(rb: mmsg.RecvBatch, n: int) -> list[memoryview]:
    """The ``n`` datagrams ``rb.recv`` received, as views of its slots (valid until its
    next ``recv``), without empty and truncated ones."""
    lengths = rb.lengths
    slots = rb.slots
    out = []
    for i in range(n):
        length = lengths[16 * i + 14]
        if length and not lengths[16 * i + 12] & MSG_TRUNC:
            out.append(slots[i][:length])
    return out
