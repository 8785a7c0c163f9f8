"""Trend follower: the fast/slow EMA cross."""

from __future__ import annotations

from ..indicators import IndicatorSet
from ..model import Vote
from .base import BUY, HOLD, NO_SIGNAL, SELL, check_positive, scaled


class TrendProvider:
    """BUY while the fast EMA is above the slow EMA and still rising, SELL while it is below and still falling;
    HOLD when the spread between them is under `min_spread` ATRs (no trend) or the fast EMA turns against it.
    Confidence rises linearly with the spread in ATRs, from 0.5 at `min_spread` to 1.0 at `full_spread`."""

    name = "trend"
    __slots__ = ("min_spread", "full_spread")

    def __init__(self, min_spread: float = 0.25, full_spread: float = 3.0) -> None:
        check_positive(self.name, min_spread=min_spread, full_spread=full_spread)
        if full_spread <= min_spread:
            raise ValueError(f"provider 'trend': full_spread ({full_spread}) must exceed min_spread ({min_spread})")
        self.min_spread = float(min_spread)
        self.full_spread = float(full_spread)

    def vote(self, ind: IndicatorSet) -> Vote:
        fast = ind.ema_fast
        slow = ind.ema_slow
        prev_fast = ind.prev_ema_fast
        atr = ind.atr
        if prev_fast is None or fast is None or slow is None or not atr:
            return Vote(self.name, HOLD, 0.0, "warming up")
        spread = (fast - slow) / atr
        if spread >= self.min_spread and fast >= prev_fast:
            conf = scaled(spread, self.min_spread, self.full_spread)
            return Vote(self.name, BUY, conf, f"EMA fast>slow by {spread:.2f} ATR")
        if spread <= -self.min_spread and fast <= prev_fast:
            conf = scaled(-spread, self.min_spread, self.full_spread)
            return Vote(self.name, SELL, conf, f"EMA fast<slow by {-spread:.2f} ATR")
        return Vote(self.name, HOLD, NO_SIGNAL, "no clear trend")
