"""The classic libpcap capture file format (what ``tcpdump -w`` writes, not pcapng).

A file is a 24-byte global header (magic, version 2.4, time zone, accuracy, snaplen,
link type) followed by records: a 16-byte header (seconds, microseconds, captured
length, original length) and the captured bytes. We write the microsecond variant
in little-endian byte order, magic 0xa1b2c3d4, link type 1 (Ethernet), which every
reader understands. The reader also accepts big-endian and nanosecond files.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Iterator
from typing import BinaryIO

from threadnet.errors import FrameError

MAGIC_USEC = 0xA1B2C3D4
MAGIC_NSEC = 0xA1B23C4D
VERSION_MAJOR = 2
VERSION_MINOR = 4
DEFAULT_SNAPLEN = 262144  # libpcap's MAXIMUM_SNAPLEN
LINKTYPE_ETHERNET = 1
GLOBAL_HEADER_LEN = 24
RECORD_HEADER_LEN = 16

_GLOBAL_LE = struct.Struct("<IHHiIII")
_RECORD_LE = struct.Struct("<IIII")
_PCAPNG_MAGIC = 0x0A0D0D0A

PathOrFile = str | os.PathLike[str] | BinaryIO


class PcapWriter:
    """Write frames to a pcap file; safe to share between threads.

    ``path_or_fileobj`` is a path (created or truncated, and closed by ``close``) or a
    binary file object opened for writing (flushed but left open by ``close``).
    """

    def __init__(self, path_or_fileobj: PathOrFile, snaplen: int = DEFAULT_SNAPLEN,
                 linktype: int = LINKTYPE_ETHERNET) -> None:
        if not 0 < snaplen <= 0xFFFFFFFF:
            raise ValueError(f"snaplen must be between 1 and 2**32-1, not {snaplen}")
        self.snaplen = snaplen
        self.linktype = linktype
        self.count = 0
        self._lock = threading.Lock()
        # One record header buffer, refilled with pack_into for every frame.
        self._header = bytearray(RECORD_HEADER_LEN)
        if isinstance(path_or_fileobj, str | os.PathLike):
            self._file: BinaryIO = open(path_or_fileobj, "wb")  # closed in close()
            self._owns_file = True
            self.name = os.fspath(path_or_fileobj)
        else:
            self._file = path_or_fileobj
            self._owns_file = False
            self.name = str(getattr(path_or_fileobj, "name", "<file>"))
        self.closed = False
        header = bytearray(GLOBAL_HEADER_LEN)
        _GLOBAL_LE.pack_into(header, 0, MAGIC_USEC, VERSION_MAJOR, VERSION_MINOR, 0, 0,
                             snaplen, linktype)
        try:
            self._file.write(header)
        except BaseException:
            if self._owns_file:
                self._file.close()
            raise

    def write(self, frame: bytes | bytearray | memoryview, ts: float | None = None) -> None:
        """Append one frame captured at ``ts`` (seconds since the epoch; now if None)."""
        if ts is None:
            import time

            ts = time.time()
        sec = int(ts)
        usec = round((ts - sec) * 1_000_000)
        if usec >= 1_000_000:  # rounding carried into the next second
            sec += 1
            usec -= 1_000_000
        origlen = len(frame)
        caplen = min(origlen, self.snaplen)
        with self._lock:
            if self.closed:
                raise ValueError(f"pcap file {self.name} is closed")
            _RECORD_LE.pack_into(self._header, 0, sec, usec, caplen, origlen)
            self._file.write(self._header)
            self._file.write(frame if caplen == origlen else memoryview(frame)[:caplen])
            self.count += 1

    def flush(self) -> None:
        """Push buffered records to the operating system."""
        with self._lock:
            if not self.closed:
                self._file.flush()

    def close(self) -> None:
        """Flush, and close the file if this writer opened it."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            try:
                self._file.flush()
            finally:
                if self._owns_file:
                    self._file.close()

    def __enter__(self) -> PcapWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PcapReader:
    """Iterate ``(timestamp, frame)`` over a classic pcap file.

    Strict: a bad magic, a truncated header or record, or an inconsistent record
    header raises FrameError (when the file is opened or while iterating).
    """

    def __init__(self, path_or_fileobj: PathOrFile) -> None:
        if isinstance(path_or_fileobj, str | os.PathLike):
            self._file: BinaryIO = open(path_or_fileobj, "rb")  # closed in close()
            self._owns_file = True
            self.name = os.fspath(path_or_fileobj)
        else:
            self._file = path_or_fileobj
            self._owns_file = False
            self.name = str(getattr(path_or_fileobj, "name", "<file>"))
        try:
            self._read_global_header()
        except BaseException:
            self.close()
            raise

    def _read_global_header(self) -> None:
        head = self._file.read(GLOBAL_HEADER_LEN)
        if len(head) < 4:
            raise FrameError(f"{self.name}: not a pcap file (too short)")
        for order in "<>":
            (magic,) = struct.unpack_from(order + "I", head)
            if magic in (MAGIC_USEC, MAGIC_NSEC):
                break
        else:
            if struct.unpack_from("<I", head)[0] == _PCAPNG_MAGIC:
                raise FrameError(f"{self.name}: pcapng files are not supported, only classic pcap")
            raise FrameError(f"{self.name}: not a pcap file (magic {head[:4].hex()})")
        if len(head) < GLOBAL_HEADER_LEN:
            raise FrameError(f"{self.name}: truncated pcap file header")
        _, major, minor, _, _, snaplen, linktype = struct.unpack(order + "IHHiIII", head)
        if major != VERSION_MAJOR:
            raise FrameError(f"{self.name}: unsupported pcap version {major}.{minor}")
        self.byteorder = "little" if order == "<" else "big"
        self.nanosecond = magic == MAGIC_NSEC
        self.version = (major, minor)
        self.snaplen = snaplen
        self.linktype = linktype
        self._record = struct.Struct(order + "IIII")
        self._frac = 1e-9 if self.nanosecond else 1e-6
        self._frac_limit = 1_000_000_000 if self.nanosecond else 1_000_000

    def __iter__(self) -> Iterator[tuple[float, bytes]]:
        read = self._file.read
        record = self._record
        # Records may legitimately exceed a small snaplen written by some tools; only
        # reject lengths no libpcap would produce.
        limit = max(self.snaplen, DEFAULT_SNAPLEN)
        index = 0
        while True:
            head = read(RECORD_HEADER_LEN)
            if not head:
                return
            if len(head) < RECORD_HEADER_LEN:
                raise FrameError(f"{self.name}: record {index}: truncated record header")
            sec, frac, caplen, origlen = record.unpack(head)
            if frac >= self._frac_limit:
                raise FrameError(f"{self.name}: record {index}: bad timestamp fraction {frac}")
            if caplen > limit or caplen > origlen:
                raise FrameError(f"{self.name}: record {index}: bad lengths "
                                 f"(captured {caplen}, original {origlen}, snaplen {self.snaplen})")
            data = read(caplen)
            if len(data) < caplen:
                raise FrameError(f"{self.name}: record {index}: truncated "
                                 f"({len(data)} of {caplen} bytes)")
            yield sec + frac * self._frac, data
            index += 1

    def close(self) -> None:
        if self._owns_file:
            self._file.close()

    def __enter__(self) -> PcapReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_pcap(path_or_fileobj: PathOrFile) -> list[tuple[float, bytes]]:
    """Read a whole pcap file into a list of ``(timestamp, frame)``."""
    with PcapReader(path_or_fileobj) as reader:
        return list(reader)


__all__ = [
    "DEFAULT_SNAPLEN",
    "LINKTYPE_ETHERNET",
    "PcapReader",
    "PcapWriter",
    "read_pcap",
]
