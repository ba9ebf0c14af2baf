"""TCP: the sans-IO connection core.

``segment`` is the small record the core works on (the wire formats parse and build the
bytes elsewhere), ``seq`` the mod 2**32 sequence arithmetic, ``rtt`` the RFC 6298
estimator, ``congestion`` the pluggable congestion controls (NewReno, CUBIC) and
``connection`` one connection's state machine (RFC 9293 with RFC 5961, 7323, 2018, 6675,
6582, 5681, 6298 and 1122), put together from ``state``, ``input``, ``receive``,
``output`` and ``sack``.
"""

from threadnet.stack.tcp.congestion import CONGESTION, CongestionControl, Cubic, NewReno
from threadnet.stack.tcp.connection import TcpConnection, TcpState, TcpStats
from threadnet.stack.tcp.rtt import RttEstimator
from threadnet.stack.tcp.segment import ACK, CWR, ECE, FIN, PSH, RST, SYN, URG, Segment

__all__ = [
    "ACK", "CONGESTION", "CWR", "CongestionControl", "Cubic", "ECE", "FIN", "NewReno", "PSH",
    "RST", "RttEstimator", "SYN", "Segment", "TcpConnection", "TcpState", "TcpStats", "URG",
]
