"""Two links joined back to back in one process (a virtual cable with no switch).

``open_pair(max_frame)`` returns two links: what one sends, the other receives. It rides
on an AF_UNIX datagram socket pair, so frames may be as large as 64 KiB (a "jumbo" MTU
divides every per-packet cost of a stack by up to 40).
"""

from __future__ import annotations

import errno
import socket

from threadnet import mmsg
from threadnet.errors import LinkError
from threadnet.link import Link
from threadnet.link.batch import TxBatch, send_waiting


class PairLink(Link):
    def __init__(self, sock: socket.socket, max_frame: int, name: str) -> None:
        super().__init__()
        self._sock = sock
        self.max_frame = max_frame
        self.url = f"pair://{name}"
        self.drops = 0
        self._tx: TxBatch | None = None
        self.rx_slot = max_frame + 64
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        tx = self._tx
        if tx is not None and tx.depth:
            if tx.add(frame):
                return
            self._flush_tx()  # full, or a frame too big for a slot: keep the order
            if tx.add(frame):
                return
        try:
            # the other side not keeping up is waited for briefly, then the frame is lost
            self.drops += send_waiting(self._sock, frame)
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE:
                self.drops += 1
                return
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: peer gone") from exc

    # -- batched I/O (link/batch.py): used by the stack's driver -------------------------
    def begin_tx(self) -> None:
        """Queue frames sent from now until ``end_tx``, for one ``sendmmsg`` (nestable)."""
        tx = self._tx
        if tx is None:
            if not mmsg.available():
                return
            tx = self._tx = TxBatch(self.rx_slot, max(4, min(64, (1 << 20) // self.rx_slot)))
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
        if self.closed:
            tx.discard()
            return
        try:
            self.drops += tx.flush(self._sock)
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: peer gone") from exc

    def recv_many(self, rb: mmsg.RecvBatch) -> int:
        """Receive up to ``rb.nslots`` frames into ``rb`` (one ``recvmmsg``); see
        ``batch.frames``. Raises LinkError when the peer is gone."""
        try:
            return rb.recv(self._sock.fileno())
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: peer gone") from exc

    def _recv(self) -> bytes:
        try:
            return self._sock.recv(self.max_frame + 64)
        except BlockingIOError:
            raise
        except OSError as exc:
            self.closed_by_peer = True
            raise LinkError(exc.errno, f"{self.url}: peer gone") from exc

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.close()


def open_pair(max_frame: int = 1518, name: str = "pair") -> tuple[PairLink, PairLink]:
    """Two connected links; ``max_frame`` up to 65535 (Ethernet header included)."""
    if not 60 <= max_frame <= 65535:
        raise ValueError("max_frame must be 60..65535")
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return PairLink(a, max_frame, name + "-a"), PairLink(b, max_frame, name + "-b")
