"""The TCP segment record the connection core consumes and produces.

It holds header fields and options as plain values; parsing and building the bytes is the
job of the wire format module. ``window`` is the raw 16-bit field, before window scaling.
"""

from __future__ import annotations

from threadnet.wire.tcp import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG  # one definition

__all__ = ["ACK", "CWR", "ECE", "FIN", "PSH", "RST", "SYN", "URG", "Segment"]

_FLAG_NAMES = ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (ACK, "."), (URG, "U"),
               (ECE, "E"), (CWR, "W"))


def flags_str(flags: int) -> str:
    """tcpdump-style flag letters: ``S`` SYN, ``F`` FIN, ``R`` RST, ``P`` PSH, ``.`` ACK."""
    return "".join(name for bit, name in _FLAG_NAMES if flags & bit) or "none"


class Segment:
    """One TCP segment: header fields, options and payload.

    ``seq`` and ``ack`` are 32-bit wire values. ``payload`` is bytes or a memoryview; the
    connection copies what it keeps, so a view into a reused receive buffer is fine.
    Options that are absent are None (``mss``, ``wscale``, ``ts_val``/``ts_ecr``), False
    (``sack_permitted``) or an empty tuple (``sack_blocks``: (left, right) wire pairs).
    """

    __slots__ = ("seq", "ack", "flags", "window", "payload", "mss", "wscale",
                 "sack_permitted", "sack_blocks", "ts_val", "ts_ecr")

    def __init__(self, seq: int, ack: int, flags: int, window: int,
                 payload: bytes | memoryview = b"", mss: int | None = None,
                 wscale: int | None = None, sack_permitted: bool = False,
                 sack_blocks: tuple[tuple[int, int], ...] = (), ts_val: int | None = None,
                 ts_ecr: int | None = None) -> None:
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.mss = mss
        self.wscale = wscale
        self.sack_permitted = sack_permitted
        self.sack_blocks = sack_blocks
        self.ts_val = ts_val
        self.ts_ecr = ts_ecr

    @property
    def seg_len(self) -> int:
        """Sequence space the segment occupies: payload plus one each for SYN and FIN."""
        return len(self.payload) + (self.flags & SYN and 1) + (self.flags & FIN)

    def __repr__(self) -> str:
        parts = [f"Segment [{flags_str(self.flags)}] seq={self.seq}"]
        if self.flags & ACK:
            parts.append(f"ack={self.ack}")
        parts.append(f"win={self.window} len={len(self.payload)}")
        if self.mss is not None:
            parts.append(f"mss={self.mss}")
        if self.wscale is not None:
            parts.append(f"wscale={self.wscale}")
        if self.sack_permitted:
            parts.append("sackOK")
        if self.sack_blocks:
            parts.append("sack=" + ",".join(f"{a}-{b}" for a, b in self.sack_blocks))
        if self.ts_val is not None:
            parts.append(f"ts={self.ts_val}/{self.ts_ecr}")
        return "<" + " ".join(parts) + ">"
