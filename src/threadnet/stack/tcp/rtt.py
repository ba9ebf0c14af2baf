"""The retransmission timeout estimator of RFC 6298.

Karn's rule (no samples from retransmitted segments) is the caller's: it either times one
segment that was never retransmitted or measures with the Timestamps option (RFC 7323 4),
which makes every sample unambiguous.
"""

from __future__ import annotations

#: RFC 6298 2.3 gains and the variance multiplier
ALPHA = 0.125
BETA = 0.25
K = 4


class RttEstimator:
    """SRTT, RTTVAR and the RTO with exponential backoff (RFC 6298).

    ``min_rto`` is 0.2 s by default, as Linux uses; RFC 6298 2.4 says 1 s. The backoff
    (5.5) doubles the timeout after each expiry, up to ``max_rto``; a new sample clears it.
    """

    __slots__ = ("min_rto", "max_rto", "granularity", "srtt", "rttvar", "latest",
                 "backoff", "_base")

    def __init__(self, *, initial_rto: float = 1.0, min_rto: float = 0.2, max_rto: float = 120.0,
                 granularity: float = 0.001) -> None:
        if not 0 < min_rto <= max_rto:
            raise ValueError("need 0 < min_rto <= max_rto")
        self.min_rto = min_rto
        self.max_rto = max_rto
        self.granularity = granularity
        self.srtt: float | None = None
        self.rttvar: float | None = None
        self.latest: float | None = None
        self.backoff = 0
        # RFC 6298 2.1: 1 s until the first measurement
        self._base = min(max(initial_rto, min_rto), max_rto)

    def sample(self, r: float) -> None:
        """Feed one round-trip measurement, in seconds."""
        if r < 0.0:
            return
        self.latest = r
        srtt = self.srtt
        if srtt is None:  # RFC 6298 2.2
            self.srtt = r
            self.rttvar = rttvar = r / 2
            srtt = r
        else:  # RFC 6298 2.3: RTTVAR first, with the old SRTT
            self.rttvar = rttvar = (1 - BETA) * self.rttvar + BETA * abs(srtt - r)
            self.srtt = srtt = (1 - ALPHA) * srtt + ALPHA * r
        rto = srtt + max(self.granularity, K * rttvar)
        # RFC 6298 2.4, 2.5: clamp
        self._base = self.min_rto if rto < self.min_rto else self.max_rto if rto > self.max_rto else rto
        self.backoff = 0

    @property
    def base_rto(self) -> float:
        """The RTO before backoff."""
        return self._base

    @property
    def rto(self) -> float:
        """The current timeout: the computed RTO doubled once per expiry, at most max_rto."""
        rto = self._base * (1 << self.backoff)
        return rto if rto < self.max_rto else self.max_rto

    def on_timeout(self) -> None:
        """RFC 6298 5.5: back off the timer after it expired."""
        if self._base * (1 << self.backoff) < self.max_rto:
            self.backoff += 1

    def reset_backoff(self) -> None:
        self.backoff = 0

    def set_initial(self, rto: float) -> None:
        """Replace the RTO used until the first sample (RFC 6298 5.7: 3 s after a lost SYN)."""
        if self.srtt is None:
            self._base = min(max(rto, self.min_rto), self.max_rto)
