"""Breakout: the Donchian channel, with Bollinger expansion as confirmation."""

from __future__ import annotations

from ..indicators import IndicatorColumns, IndicatorSet
from ..model import Vote
from .base import BUY, BUY_CODE, HOLD, HOLD_CODE, NO_SIGNAL, SELL, SELL_CODE, check_positive, scaled


class BreakoutProvider:
    """BUY when the close breaks above the highest high of the previous n bars (Donchian upper), SELL when it
    breaks below the lowest low; HOLD inside the channel. Confidence rises from 0.55 at the channel to 0.9 at
    `full_break` ATRs beyond it, plus `band_bonus` when the close is also outside the Bollinger band (volatility
    expanding in the direction of the break)."""

    name = "breakout"
    __slots__ = ("full_break", "band_bonus")

    def __init__(self, full_break: float = 1.0, band_bonus: float = 0.1) -> None:
        check_positive(self.name, full_break=full_break)
        if not 0.0 <= band_bonus <= 0.1:
            raise ValueError(f"provider 'breakout': band_bonus must be within 0..0.1, got {band_bonus!r}")
        self.full_break = float(full_break)
        self.band_bonus = float(band_bonus)

    def vote(self, ind: IndicatorSet) -> Vote:
        high = ind.dc_high
        atr = ind.atr
        low = ind.dc_low
        upper = ind.bb_upper
        lower = ind.bb_lower
        if high is None or low is None or upper is None or lower is None or not atr:
            return Vote(self.name, HOLD, 0.0, "warming up")
        close = ind.close
        if close > high:
            conf = scaled((close - high) / atr, 0.0, self.full_break, 0.55, 0.9)
            if close > upper:
                conf += self.band_bonus
            return Vote(self.name, BUY, conf, "close above the Donchian high")
        if close < low:
            conf = scaled((low - close) / atr, 0.0, self.full_break, 0.55, 0.9)
            if close < lower:
                conf += self.band_bonus
            return Vote(self.name, SELL, conf, "close below the Donchian low")
        return Vote(self.name, HOLD, NO_SIGNAL, "inside the channel")

    def vote_columns(self, cols: IndicatorColumns) -> tuple[list[int], list[float]]:
        """What `vote` says after each bar of a whole series, in one pass: each bar's action as a code (base.py) and
        its confidence. The reasons are left out: only decision records keep them."""
        c = cols.columns
        full, bonus = self.full_break, self.band_bonus
        codes: list[int] = []
        confs: list[float] = []
        code, conf = codes.append, confs.append
        for high, low, upper, lower, atr, close in zip(c["dc_high"], c["dc_low"], c["bb_upper"], c["bb_lower"],
                                                       c["atr"], c["close"]):
            if high is None or low is None or upper is None or lower is None or not atr:
                code(HOLD_CODE)
                conf(0.0)
            elif close > high:
                x = scaled((close - high) / atr, 0.0, full, 0.55, 0.9)
                if close > upper:
                    x += bonus
                code(BUY_CODE)
                conf(x)
            elif close < low:
                x = scaled((low - close) / atr, 0.0, full, 0.55, 0.9)
                if close < lower:
                    x += bonus
                code(SELL_CODE)
                conf(x)
            else:
                code(HOLD_CODE)
                conf(NO_SIGNAL)
        return codes, confs
