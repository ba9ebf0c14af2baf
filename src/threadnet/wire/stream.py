"""Stream framing of vde_plug, dpipe, wirefilter and cmd://: a 2-byte big-endian length, then the frame.

Zero-length records are skipped. vde2's tools accept records of at most 1521 bytes,
vdeplug4's 9236; we write at most what the caller gives and read up to ``MAX_RECORD``.
"""

from __future__ import annotations

import struct

from threadnet.errors import FrameError

MAX_RECORD = 9216 + 14 + 4  # vdeplug4 VDE_ETHBUFSIZE
_LEN = struct.Struct("!H")


def encode(frame: bytes | bytearray | memoryview) -> bytes:
    """Return the record for one frame."""
    n = len(frame)
    if n > 0xFFFF:
        raise FrameError(f"frame of {n} bytes does not fit a 2-byte length")
    return _LEN.pack(n) + bytes(frame)


class Decoder:
    """Incremental record decoder: feed bytes, take whole frames.

    A length above ``max_record`` means the stream has lost its framing (the record
    boundaries can no longer be trusted); ``feed`` then raises FrameError and the
    caller should close the stream, as vde_plug does.

    A reader that must not take more than one record off its descriptor (so that the
    descriptor stays readable while records wait in the kernel) reads ``wanted`` bytes at
    a time: feeding no more than that, ``feed`` returns at most one frame.
    """

    __slots__ = ("_buf", "max_record")

    def __init__(self, max_record: int = MAX_RECORD) -> None:
        self._buf = bytearray()
        self.max_record = max_record

    def feed(self, data: bytes | bytearray | memoryview) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > self.max_record:
                del buf[:pos]
                raise FrameError(f"stream record of {n} bytes exceeds {self.max_record}: framing lost")
            if end - pos - 2 < n:
                break
            if n:
                out.append(bytes(buf[pos + 2:pos + 2 + n]))
            pos += 2 + n
        del buf[:pos]
        return out

    @property
    def wanted(self) -> int:
        """Bytes that complete the record header or the record being read (at least 1)."""
        buf = self._buf
        if len(buf) < 2:
            return 2 - len(buf)
        return 2 + ((buf[0] << 8) | buf[1]) - len(buf)

    @property
    def buffered(self) -> int:
        """Bytes held back waiting for the rest of a record."""
        return len(self._buf)
