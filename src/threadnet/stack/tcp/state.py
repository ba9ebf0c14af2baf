"""A TCP connection's states, counters and the constants of its core."""

from __future__ import annotations

from enum import StrEnum
from operator import itemgetter

#: RFC 7323 5.5: a TS.Recent idle this long is no longer used for PAWS
PAWS_IDLE = 24 * 86400.0
#: RFC 9293 3.7.1: the MSS assumed when the SYN has no MSS option (IPv4)
DEFAULT_MSS = 536
#: smallest MSS accepted from a peer (smaller values would make absurdly many segments)
MIN_MSS = 64
#: RFC 6675 DupThresh
DUPTHRESH = 3
#: the Timestamps option, with its two NOPs, in every segment once negotiated
TS_OPTION_LEN = 12
#: most disjoint ranges held out of order, and in the SACK scoreboard: the window bounds
#: the bytes, this bounds the bookkeeping a peer can make us keep (1-byte islands)
MAX_RANGES = 128
#: persist (zero-window probe) interval bounds
PERSIST_MIN = 0.2
PERSIST_MAX = 60.0


class TcpState(StrEnum):
    CLOSED = "CLOSED"
    LISTEN = "LISTEN"
    SYN_SENT = "SYN-SENT"
    SYN_RECEIVED = "SYN-RECEIVED"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN-WAIT-1"
    FIN_WAIT_2 = "FIN-WAIT-2"
    CLOSE_WAIT = "CLOSE-WAIT"
    CLOSING = "CLOSING"
    LAST_ACK = "LAST-ACK"
    TIME_WAIT = "TIME-WAIT"


_CLOSED = TcpState.CLOSED
_SYN_SENT = TcpState.SYN_SENT
_SYN_RECEIVED = TcpState.SYN_RECEIVED
_ESTABLISHED = TcpState.ESTABLISHED
_FIN_WAIT_1 = TcpState.FIN_WAIT_1
_FIN_WAIT_2 = TcpState.FIN_WAIT_2
_CLOSE_WAIT = TcpState.CLOSE_WAIT
_CLOSING = TcpState.CLOSING
_LAST_ACK = TcpState.LAST_ACK
_TIME_WAIT = TcpState.TIME_WAIT

#: states in which segments may carry our data (or retransmit it, and our FIN)
_SENDING = frozenset((_ESTABLISHED, _CLOSE_WAIT, _FIN_WAIT_1, _CLOSING, _LAST_ACK))
#: states in which arriving data is accepted (RFC 9293 3.10.7.4, seventh check)
_RECEIVING = frozenset((_ESTABLISHED, _FIN_WAIT_1, _FIN_WAIT_2))

_range_end = itemgetter(1)


class TcpStats:
    """Per-connection counters."""

    __slots__ = ("segments_in", "segments_out", "bytes_in", "bytes_out", "retransmits",
                 "retransmitted_bytes", "fast_recoveries", "timeouts", "dup_acks_in",
                 "ooo_segments_in", "challenge_acks", "zero_window_probes",
                 "keepalive_probes", "paws_drops", "dropped", "spurious_recoveries")

    def __init__(self) -> None:
        for name in self.__slots__:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}

    def __repr__(self) -> str:
        return "<TcpStats " + " ".join(f"{k}={v}" for k, v in self.as_dict().items() if v) + ">"


