"""The ``slirp://[OPTIONS]`` link scheme: a link whose far end is a slirp gateway in this
process (vdeplug4's name for libvdeplug_slirp). A stack on it, or frames sent into it,
reach the host's network as a QEMU guest's do. Options as ``SlirpOptions.parse``.
"""

from __future__ import annotations

import socket

from threadnet.link.pair import PairLink
from threadnet.slirp.gateway import Gateway
from threadnet.slirp.options import SlirpOptions


class SlirpLink(PairLink):
    """One end of a datagram socket pair; the gateway's stack holds the other."""

    def __init__(self, url: str, options: SlirpOptions) -> None:
        a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        max_frame = options.mtu + 18
        super().__init__(a, max_frame, "slirp")
        self.url = url
        try:
            self.gateway = Gateway(PairLink(b, max_frame, "slirp-gw"), options).start()
        except BaseException:
            a.close()
            b.close()
            raise

    def close(self) -> None:
        if not self.closed:
            super().close()
            self.gateway.close()


def open_slirp(url: str, rest: str, inner: object) -> SlirpLink:
    return SlirpLink(url, SlirpOptions.parse(rest))
