"""Two links joined back to back in one process (a virtual cable with no switch).

``open_pair(max_frame)`` returns two links: what one sends, the other receives. It rides
on an AF_UNIX datagram socket pair, so frames may be as large as 64 KiB (a "jumbo" MTU
divides every per-packet cost of a stack by up to 40).
"""

from __future__ import annotations

import errno
import socket

from threadnet.errors import LinkError
from threadnet.link import Link
from threadnet.link.batch import BatchedDatagramLink, TxBatch


class PairLink(BatchedDatagramLink, Link):
    def __init__(self, sock: socket.socket, max_frame: int, name: str) -> None:
        super().__init__()
        self._sock = sock
        self.max_frame = max_frame
        self.max_frame_known = True
        self.url = f"pair://{name}"
        self.drops = 0
        self._tx: TxBatch | None = None
        self.rx_slot = self.tx_slot = max_frame + 64
        sock.setblocking(False)
        for opt in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)

    def fileno(self) -> int:
        return self._sock.fileno()

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        self._send_frame(frame)

    def _lost(self, err: int) -> bool:
        return err == errno.EMSGSIZE  # too big for the pair: that frame is lost, not the link

    def _dgram_socket(self) -> socket.socket:
        return self._sock

    def _gone(self, exc: OSError) -> LinkError:
        return LinkError(exc.errno, f"{self.url}: peer gone")

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
