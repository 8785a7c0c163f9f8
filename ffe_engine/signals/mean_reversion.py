"""Mean reversion: RSI (Wilder) extremes confirmed by the Bollinger bands."""

from __future__ import annotations

from ..indicators import IndicatorColumns, IndicatorSet
from ..model import Vote
from .base import BUY, BUY_CODE, HOLD, HOLD_CODE, NO_SIGNAL, SELL, SELL_CODE, scaled


class MeanReversionProvider:
    """BUY when RSI is at or below `oversold` and the close sits in the bottom `band_zone` of the Bollinger band
    (%B <= band_zone, i.e. stretched down to the lower band); SELL when RSI is at or above `overbought` and %B >=
    1 - band_zone. Otherwise HOLD. Confidence rises from 0.55 at the RSI threshold to 0.9 at 20 points beyond it,
    plus 0.1 when the close is outside the band."""

    name = "mean_reversion"
    __slots__ = ("oversold", "overbought", "band_zone")

    def __init__(self, oversold: float = 30.0, overbought: float = 70.0, band_zone: float = 0.1) -> None:
        if not 0.0 < oversold < overbought < 100.0:
            raise ValueError(f"provider 'mean_reversion': need 0 < oversold < overbought < 100, "
                             f"got {oversold!r} and {overbought!r}")
        if not 0.0 <= band_zone < 0.5:
            raise ValueError(f"provider 'mean_reversion': band_zone must be within 0..0.5, got {band_zone!r}")
        self.oversold = float(oversold)
        self.overbought = float(overbought)
        self.band_zone = float(band_zone)

    def vote(self, ind: IndicatorSet) -> Vote:
        rsi = ind.rsi
        upper = ind.bb_upper
        lower = ind.bb_lower
        if rsi is None or upper is None or lower is None:
            return Vote(self.name, HOLD, 0.0, "warming up")
        width = upper - lower
        if width <= 0.0:
            return Vote(self.name, HOLD, NO_SIGNAL, "flat market")
        close = ind.close
        pct_b = (close - lower) / width
        if rsi <= self.oversold and pct_b <= self.band_zone:
            conf = scaled(self.oversold - rsi, 0.0, 20.0, 0.55, 0.9) + (0.1 if close < lower else 0.0)
            return Vote(self.name, BUY, conf, f"RSI {rsi:.0f} oversold at lower band")
        if rsi >= self.overbought and pct_b >= 1.0 - self.band_zone:
            conf = scaled(rsi - self.overbought, 0.0, 20.0, 0.55, 0.9) + (0.1 if close > upper else 0.0)
            return Vote(self.name, SELL, conf, f"RSI {rsi:.0f} overbought at upper band")
        return Vote(self.name, HOLD, NO_SIGNAL, "RSI within range")

    def vote_columns(self, cols: IndicatorColumns) -> tuple[list[int], list[float]]:
        """What `vote` says after each bar of a whole series, in one pass: each bar's action as a code (base.py) and
        its confidence. The reasons are left out: only decision records keep them."""
        c = cols.columns
        oversold, overbought, zone = self.oversold, self.overbought, self.band_zone
        codes: list[int] = []
        confs: list[float] = []
        code, conf = codes.append, confs.append
        for rsi, upper, lower, close in zip(c["rsi"], c["bb_upper"], c["bb_lower"], c["close"]):
            if rsi is None or upper is None or lower is None:
                code(HOLD_CODE)
                conf(0.0)
                continue
            width = upper - lower
            if width <= 0.0:
                code(HOLD_CODE)
                conf(NO_SIGNAL)
                continue
            pct_b = (close - lower) / width
            if rsi <= oversold and pct_b <= zone:
                code(BUY_CODE)
                conf(scaled(oversold - rsi, 0.0, 20.0, 0.55, 0.9) + (0.1 if close < lower else 0.0))
            elif rsi >= overbought and pct_b >= 1.0 - zone:
                code(SELL_CODE)
                conf(scaled(rsi - overbought, 0.0, 20.0, 0.55, 0.9) + (0.1 if close > upper else 0.0))
            else:
                code(HOLD_CODE)
                conf(NO_SIGNAL)
        return codes, confs
