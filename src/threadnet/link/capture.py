"""``pcap://FILE{URL}``: record every frame through a link to a pcap file.

A wrapper, so it works around any link and composes with the others::

    link = open_link("pcap:///tmp/trace.pcap{vde:///tmp/sw}")
    link = capture(open_link("udp://2000->10.0.0.1:2000"), "/tmp/trace.pcap")

Frames are recorded in both directions with the wall-clock time of the send or
recv call (pcap has no direction field; tshark tells them apart by MAC address).
"""

from __future__ import annotations

import errno
import os
import time

from threadnet.errors import LinkError, URLError
from threadnet.link import Link, WrapperLink, require_inner, unquote
from threadnet.wire.pcap import PcapWriter


class CaptureLink(WrapperLink):
    """Pass frames through ``inner`` and write each one sent or received to ``pcap``.

    ``pcap`` is a PcapWriter (shared writers are fine: it is thread-safe; the caller
    closes it) or a path (the link creates the file and closes it on ``close``).
    """

    def __init__(self, inner: Link, pcap: PcapWriter | str | os.PathLike[str]) -> None:
        super().__init__(inner)
        if isinstance(pcap, PcapWriter):
            self.writer = pcap
            self._owns_writer = False
        else:
            try:
                self.writer = PcapWriter(pcap)
            except OSError as exc:
                raise LinkError(exc.errno or errno.EIO,
                                f"cannot create pcap file {os.fspath(pcap)}: {exc.strerror or exc}") from exc
            self._owns_writer = True
        self.url = f"pcap://{self.writer.name}{{{inner.url}}}"

    def _send(self, frame: bytes | bytearray | memoryview) -> None:
        ts = time.time()
        self.inner.send(frame)
        # Recorded only once the inner link accepted it (no exception).
        self.writer.write(frame, ts)

    def _on_recv(self, frame: bytes) -> bytes:
        self.writer.write(frame, time.time())
        return frame

    def close(self) -> None:
        if self.closed:
            return
        try:
            super().close()
        finally:
            if self._owns_writer:
                self.writer.close()
            else:
                self.writer.flush()


def capture(link: Link, path: PcapWriter | str | os.PathLike[str]) -> CaptureLink:
    """Wrap ``link`` so that its traffic is written to the pcap file ``path``."""
    return CaptureLink(link, path)


def open_pcap(url: str, rest: str, inner: str | None) -> CaptureLink:
    """``pcap://FILE{URL}``: open the nested link and capture its frames to FILE."""
    from threadnet.link import open_link

    inner_url = require_inner(url, inner)
    path = unquote(rest)
    if not path:
        raise URLError(f"{url!r}: pcap:// needs a file name, e.g. pcap:///tmp/trace.pcap{{null://}}")
    link = open_link(inner_url)
    try:
        return CaptureLink(link, path)
    except BaseException:
        link.close()
        raise
