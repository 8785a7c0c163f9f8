"""Momentum: the MACD histogram."""

from __future__ import annotations

from ..indicators import IndicatorColumns, IndicatorSet
from ..model import Vote
from .base import BUY, BUY_CODE, HOLD, HOLD_CODE, NO_SIGNAL, SELL, SELL_CODE, check_positive, scaled


class MomentumProvider:
    """BUY when the MACD histogram crosses above zero, or is above `min_hist` ATRs and growing; SELL when it
    crosses below zero, or is below -`min_hist` ATRs and falling; HOLD while it fades back toward zero or wiggles
    around it. Confidence rises with the histogram's size in ATRs (0.5 at zero, 1.0 at `full_hist`), plus
    `cross_bonus` on the bar of a zero cross."""

    name = "momentum"
    __slots__ = ("min_hist", "full_hist", "cross_bonus")

    def __init__(self, min_hist: float = 0.1, full_hist: float = 0.5, cross_bonus: float = 0.1) -> None:
        check_positive(self.name, full_hist=full_hist)
        if not 0.0 <= min_hist < full_hist:
            raise ValueError(f"provider 'momentum': min_hist must be within 0..full_hist, got {min_hist!r}")
        if not 0.0 <= cross_bonus <= 0.5:
            raise ValueError(f"provider 'momentum': cross_bonus must be within 0..0.5, got {cross_bonus!r}")
        self.min_hist = float(min_hist)
        self.full_hist = float(full_hist)
        self.cross_bonus = float(cross_bonus)

    def vote(self, ind: IndicatorSet) -> Vote:
        hist = ind.macd_hist
        prev = ind.prev_macd_hist
        atr = ind.atr
        if prev is None or hist is None or not atr:
            return Vote(self.name, HOLD, 0.0, "warming up")
        h = hist / atr
        if hist > 0.0:
            if prev <= 0.0:
                conf = min(1.0, scaled(h, 0.0, self.full_hist) + self.cross_bonus)
                return Vote(self.name, BUY, conf, "MACD histogram crossed above zero")
            if hist > prev and h >= self.min_hist:
                return Vote(self.name, BUY, scaled(h, 0.0, self.full_hist), f"MACD histogram rising, {h:.2f} ATR")
        elif hist < 0.0:
            if prev >= 0.0:
                conf = min(1.0, scaled(-h, 0.0, self.full_hist) + self.cross_bonus)
                return Vote(self.name, SELL, conf, "MACD histogram crossed below zero")
            if hist < prev and h <= -self.min_hist:
                return Vote(self.name, SELL, scaled(-h, 0.0, self.full_hist), f"MACD histogram falling, {h:.2f} ATR")
        return Vote(self.name, HOLD, NO_SIGNAL, "momentum fading")

    def vote_columns(self, cols: IndicatorColumns) -> tuple[list[int], list[float]]:
        """What `vote` says after each bar of a whole series, in one pass: each bar's action as a code (base.py) and
        its confidence. The reasons are left out: only decision records keep them."""
        c = cols.columns
        lo, full, bonus = self.min_hist, self.full_hist, self.cross_bonus
        codes: list[int] = []
        confs: list[float] = []
        code, conf = codes.append, confs.append
        for hist, prev, atr in zip(c["macd_hist"], c["prev_macd_hist"], c["atr"]):
            if prev is None or hist is None or not atr:
                code(HOLD_CODE)
                conf(0.0)
                continue
            h = hist / atr
            if hist > 0.0:
                if prev <= 0.0:
                    code(BUY_CODE)
                    conf(min(1.0, scaled(h, 0.0, full) + bonus))
                    continue
                if hist > prev and h >= lo:
                    code(BUY_CODE)
                    conf(scaled(h, 0.0, full))
                    continue
            elif hist < 0.0:
                if prev >= 0.0:
                    code(SELL_CODE)
                    conf(min(1.0, scaled(-h, 0.0, full) + bonus))
                    continue
                if hist < prev and h <= -lo:
                    code(SELL_CODE)
                    conf(scaled(-h, 0.0, full))
                    continue
            code(HOLD_CODE)
            conf(NO_SIGNAL)
        return codes, confs
