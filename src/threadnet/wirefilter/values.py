"""Wirefilter values: a number with optional jitter, and the parser of their syntax.

A setting reads ``[LR|RL]NUMBER[+JITTER][U|N]``: the optional prefix restricts it to one
direction, the jitter spreads samples around the number, uniformly (``U``, the default)
or normally (``N``). Bandwidth, speed and capacity also take ``K``/``M``/``G`` suffixes
(powers of 1024) after each number.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass

#: the directions of a channel pair: left to right and right to left
DIRECTIONS = ("LR", "RL")

_MULTIPLIERS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_SYNTAX = r"\s*(?:(LR|RL)\s*)?(S{n})([KMG]?)(?:\+(S{n})([KMG]?))?([UN]?)\s*"
_SETTING = re.compile(_SYNTAX.replace("S{n}", _NUM), re.IGNORECASE)
# the same with signs allowed, only to explain why a negative setting is refused
_SIGNED = re.compile(_SYNTAX.replace("S{n}", rf"[-+]?{_NUM}"), re.IGNORECASE)


@dataclass(slots=True)
class Value:
    """``base`` with ``plus`` of jitter, spread uniformly (``dist='U'``) or normally (``'N'``)."""

    base: float = 0.0
    plus: float = 0.0
    dist: str = "U"

    def sample(self, rng: random.Random) -> float:
        """One sample, never negative. Without jitter this is ``base`` and uses no randomness.

        ``U`` is uniform in [base-plus, base+plus]; ``N`` is normal with ``plus`` as two
        standard deviations, clipped to base +/- 2*plus so that outliers stay bounded.
        """
        plus = self.plus
        if not plus:
            return self.base
        if self.dist == "N":
            x = rng.gauss(self.base, plus / 2)
            lo = self.base - 2 * plus
            hi = self.base + 2 * plus
            x = lo if x < lo else hi if x > hi else x
        else:
            x = self.base + plus * (2.0 * rng.random() - 1.0)
        return x if x > 0.0 else 0.0

    @property
    def enabled(self) -> bool:
        """True when some sample may be non-zero."""
        return bool(self.base or self.plus)

    def __str__(self) -> str:
        # wirefilter's showinfo prints every value as "%g+%g%c"
        return f"{self.base:g}+{self.plus:g}{self.dist}"


def parse_value(text: str, *, multipliers: bool = False, name: str = "value") -> Value:
    """Parse one setting without a direction prefix."""
    values = parse_setting(text, multipliers=multipliers, name=name)
    if len(values) != 2:
        raise ValueError(f"bad value {text!r} for {name}: no LR/RL direction prefix allowed here")
    return values["LR"]


def parse_setting(text: str, *, multipliers: bool = False, name: str = "value") -> dict[str, Value]:
    """Parse ``[LR|RL]NUMBER[+JITTER][U|N]`` into ``{direction: Value}``.

    Without a prefix the setting applies to both directions (two equal, distinct Values).
    With ``multipliers`` each number may end in ``K``, ``M`` or ``G`` (2**10, 2**20, 2**30).
    Raises ValueError naming the bad text and the expected syntax.
    """
    m = _SETTING.fullmatch(text)
    if m is None or (not multipliers and (m.group(3) or m.group(5))):
        if m is None and "-" in text and _SIGNED.fullmatch(text):
            raise ValueError(f"bad value {text!r} for {name}: negative values are not allowed")
        if m is not None:
            raise ValueError(f"bad value {text!r} for {name}: K/M/G multipliers are not allowed")
        mult = "[K|M|G]" if multipliers else ""
        raise ValueError(
            f"bad value {text!r} for {name}: expected [LR|RL]NUMBER{mult}[+JITTER{mult}][U|N]"
        )
    prefix, a, am, b, bm, dist = m.groups()
    base = float(a) * _MULTIPLIERS[am.upper()]
    plus = float(b) * _MULTIPLIERS[bm.upper()] if b is not None else 0.0
    if not (math.isfinite(base) and math.isfinite(plus)):
        raise ValueError(f"bad value {text!r} for {name}: number out of range")
    dist = dist.upper() or "U"
    if prefix:
        return {prefix.upper(): Value(base, plus, dist)}
    return {d: Value(base, plus, dist) for d in DIRECTIONS}
