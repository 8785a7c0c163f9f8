"""Trend follower: the fast/slow EMA cross."""

from __future__ import annotations

from ..indicators import IndicatorColumns, IndicatorSet
from ..model import Vote
from .base import BUY, BUY_CODE, HOLD, HOLD_CODE, NO_SIGNAL, SELL, SELL_CODE, check_positive, scaled


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

    def vote_columns(self, cols: IndicatorColumns) -> tuple[list[int], list[float]]:
        """What `vote` says after each bar of a whole series, in one pass: each bar's action as a code (base.py) and
        its confidence. The reasons are left out: only decision records keep them."""
        c = cols.columns
        lo, hi = self.min_spread, self.full_spread
        codes: list[int] = []
        confs: list[float] = []
        code, conf = codes.append, confs.append
        for fast, slow, prev_fast, atr in zip(c["ema_fast"], c["ema_slow"], c["prev_ema_fast"], c["atr"]):
            if prev_fast is None or fast is None or slow is None or not atr:
                code(HOLD_CODE)
                conf(0.0)
                continue
            spread = (fast - slow) / atr
            if spread >= lo and fast >= prev_fast:
                code(BUY_CODE)
                conf(scaled(spread, lo, hi))
            elif spread <= -lo and fast <= prev_fast:
                code(SELL_CODE)
                conf(scaled(-spread, lo, hi))
            else:
                code(HOLD_CODE)
                conf(NO_SIGNAL)
        return codes, confs
