"""Pluggable congestion control: NewReno (RFC 5681, 6582) and CUBIC (RFC 9438).

A controller owns ``cwnd`` and ``ssthresh`` (bytes). The connection reports events:

- ``on_ack(acked_bytes, rtt, now)``: new data was cumulatively acknowledged outside loss
  recovery while the sender was using its window; ``rtt`` is the smoothed RTT (or None);
- ``on_loss_fast(now, flight_size)``: loss found by duplicate ACKs or SACK, entering fast
  recovery: set ssthresh, and cwnd to the window that recovery starts from;
- ``on_timeout(now, flight_size)``: the retransmission timer expired.

During recovery the connection manages ``cwnd`` itself (NewReno inflation, or the RFC 6675
pipe with cwnd = ssthresh) and sets it when recovery ends.
"""

from __future__ import annotations

INFINITE_SSTHRESH = 1 << 62


def initial_window(mss: int) -> int:
    """RFC 6928: min(10*MSS, max(2*MSS, 14600))."""
    return min(10 * mss, max(2 * mss, 14600))


class CongestionControl:
    """Base class: slow start with appropriate byte counting (RFC 3465, L = 2*SMSS)."""

    name = "base"
    __slots__ = ("mss", "cwnd", "ssthresh")

    def __init__(self, mss: int, initial_cwnd: int | None = None) -> None:
        self.mss = mss
        self.cwnd = initial_cwnd if initial_cwnd is not None else initial_window(mss)
        self.ssthresh = INFINITE_SSTHRESH

    @property
    def in_slow_start(self) -> bool:
        return self.cwnd < self.ssthresh

    def _slow_start(self, acked: int) -> int:
        """Grow cwnd by at most 2*SMSS per ACK (RFC 3465); returns the bytes not used."""
        inc = acked if acked < 2 * self.mss else 2 * self.mss
        room = self.ssthresh - self.cwnd
        if inc > room:
            self.cwnd += room
            return acked - room
        self.cwnd += inc
        return 0

    def on_ack(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        if self.cwnd < self.ssthresh:
            self._slow_start(acked_bytes)

    def on_loss_fast(self, now: float, flight_size: int) -> None:
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self.cwnd = self.ssthresh

    def on_timeout(self, now: float, flight_size: int) -> None:
        # RFC 5681 (4): ssthresh from the flight size, cwnd to the loss window, 1 SMSS
        self.ssthresh = max(flight_size // 2, 2 * self.mss)
        self.cwnd = self.mss

    def __repr__(self) -> str:
        return f"<{type(self).__name__} cwnd={self.cwnd} ssthresh={self.ssthresh}>"


class NewReno(CongestionControl):
    """RFC 5681 slow start and congestion avoidance; RFC 6582 recovery lives in the
    connection (it needs the sequence space)."""

    name = "newreno"
    __slots__ = ("_bytes_acked",)

    def __init__(self, mss: int, initial_cwnd: int | None = None) -> None:
        super().__init__(mss, initial_cwnd)
        self._bytes_acked = 0

    def on_ack(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        if self.cwnd < self.ssthresh:
            acked_bytes = self._slow_start(acked_bytes)
            if not acked_bytes:
                return
        # RFC 5681 3.1, byte counting: one SMSS per cwnd of acknowledged data
        self._bytes_acked += acked_bytes
        if self._bytes_acked >= self.cwnd:
            self._bytes_acked -= self.cwnd
            self.cwnd += self.mss

    def on_loss_fast(self, now: float, flight_size: int) -> None:
        super().on_loss_fast(now, flight_size)
        self._bytes_acked = 0

    def on_timeout(self, now: float, flight_size: int) -> None:
        super().on_timeout(now, flight_size)
        self._bytes_acked = 0


class Cubic(CongestionControl):
    """CUBIC (RFC 9438) with its Reno-friendly region and fast convergence.

    The window function works in segments: W_cubic(t) = C*(t - K)**3 + W_max.
    """

    name = "cubic"
    C = 0.4
    BETA = 0.7
    #: RFC 9438 4.3: the additive increase that makes W_est match Reno's average rate
    ALPHA = 3 * (1 - BETA) / (1 + BETA)
    __slots__ = ("w_max", "k", "epoch_start", "w_est", "cwnd_prior", "_frac")

    def __init__(self, mss: int, initial_cwnd: int | None = None) -> None:
        super().__init__(mss, initial_cwnd)
        self.w_max = 0.0
        self.k = 0.0
        self.epoch_start: float | None = None
        self.w_est = 0.0
        self.cwnd_prior = 0.0
        self._frac = 0.0  # growth below one byte, carried to the next ACK

    def on_ack(self, acked_bytes: int, rtt: float | None, now: float) -> None:
        if self.cwnd < self.ssthresh:
            acked_bytes = self._slow_start(acked_bytes)
            if not acked_bytes:
                return
        mss = self.mss
        cwnd = self.cwnd / mss
        if self.epoch_start is None:
            # RFC 9438 4.2: a congestion avoidance stage begins
            self.epoch_start = now
            if cwnd < self.w_max:
                self.k = ((self.w_max - cwnd) / self.C) ** (1 / 3)
            else:
                self.k = 0.0
                self.w_max = cwnd
            self.w_est = cwnd
        t = now - self.epoch_start
        segs = acked_bytes / mss
        # RFC 9438 4.3: Reno-friendly estimate; alpha becomes 1 once past cwnd_prior
        alpha = 1.0 if self.w_est >= self.cwnd_prior else self.ALPHA
        self.w_est += alpha * segs / cwnd
        w_t = self.C * (t - self.k) ** 3 + self.w_max
        if w_t < self.w_est:
            new = self.w_est
        else:
            # RFC 9438 4.4/4.5: approach W_cubic(t + RTT), clamped to [cwnd, 1.5*cwnd]
            target = self.C * (t + (rtt or 0.0) - self.k) ** 3 + self.w_max
            if target < cwnd:
                target = cwnd
            elif target > 1.5 * cwnd:
                target = 1.5 * cwnd
            new = cwnd + (target - cwnd) / cwnd * segs
        grow = (new - cwnd) * mss + self._frac
        if grow > 0:
            whole = int(grow)
            self._frac = grow - whole
            self.cwnd += whole

    def _reduce(self, flight_size: int) -> None:
        mss = self.mss
        cwnd = self.cwnd / mss
        self.epoch_start = None
        self._frac = 0.0
        # RFC 9438 4.7: fast convergence releases bandwidth to newer flows
        if cwnd < self.w_max:
            self.w_max = cwnd * (1 + self.BETA) / 2
        else:
            self.w_max = cwnd
        self.cwnd_prior = cwnd
        # RFC 9438 4.6: ssthresh = flight_size * beta_cubic
        self.ssthresh = max(int(flight_size * self.BETA), 2 * mss)

    def on_loss_fast(self, now: float, flight_size: int) -> None:
        self._reduce(flight_size)
        self.cwnd = self.ssthresh

    def on_timeout(self, now: float, flight_size: int) -> None:
        # RFC 9438 4.8: ssthresh as for a loss; cwnd to 1 SMSS; the next stage starts with
        # K = 0 and W_max = cwnd at its beginning
        self._reduce(flight_size)
        self.w_max = 0.0
        self.cwnd = self.mss


CONGESTION: dict[str, type[CongestionControl]] = {"newreno": NewReno, "cubic": Cubic}
