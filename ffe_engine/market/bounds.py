"""What a candle may hold: the times, prices and volumes ffe computes with exactly, and the one check of them that
every reader of candles makes (CSV files at load, `ffe data download`'s rows, an exchange's candles and quotes).

Times are from TIME_MIN_MS (1800) to before TIME_END_MS (2100), in milliseconds since 1970 (negative before it).
Exchanges serve candles from 1970 on, but the files ffe reads also hold stock, index and commodity history (an
index's daily bars from 1927, a commodity's from the 19th century): 1800 admits all of it. A row in the year 1 or
9999 is a typo or damage, not a market, and the year 10000 that a bar near the end of 9999 closes in cannot even be
printed. The end leaves room for synthetic data and keeps every time a bar's close adds far inside the calendar.
Within the bounds an epoch number's unit is told by its size (csvdata.py).

Prices are within [PRICE_MIN, PRICE_MAX], volumes within [0, VOLUME_MAX]. Positive and finite is not enough: the
indicators square prices (a Bollinger band's variance sums n squared deviations) and the sizing multiplies and
divides them (quantity x price, equity / stop distance), so a price near float64's largest (1.8e308) overflows,
and one near its smallest (2.2e-308, below which numbers lose their precision) underflows and silently changes the
trades. Twelve orders of magnitude either side of 1 keep every such product (a price squared is within 1e-24..1e24)
far inside float64's normal range, where every operation is exact to the same relative precision, whatever unit a
market's prices are written in (its trades still depend on it where the venue's amount step and minimum order
bind); they match the bounds ffe sets on money (at most 1e12,
config.py) and on an amount's step (at least 1e-12), and hold every market quoted anywhere, from coins at a
billionth of a dollar to a dear asset quoted in a small currency. The engine does not compute with volumes beyond
carrying them; their bound keeps them numbers a market can trade in a bar (the largest coin supplies are under 1e18
units) and their products with a price finite.
"""

from __future__ import annotations

import math
from itertools import repeat
from operator import le
from typing import Sequence

TIME_MIN_MS = -5_364_662_400_000  # 1800-01-01T00:00:00Z
TIME_END_MS = 4_102_444_800_000  # 2100-01-01T00:00:00Z, the first time past the bound
PRICE_MIN = 1e-12
PRICE_MAX = 1e12
VOLUME_MAX = 1e24

FIELDS = ("open", "high", "low", "close", "volume")


def time_problem(ts_ms: int, text: str) -> str | None:
    """What is wrong with a candle's time in ms (shown as `text`); None when it is within the bounds."""
    if ts_ms < TIME_MIN_MS:
        return f"{text} is before 1800, the first year of the candle times ffe reads"
    if ts_ms >= TIME_END_MS:
        return f"{text} is past 2099, the last year of the candle times ffe reads"
    return None


def value_problem(name: str, value: float, text: str) -> str | None:
    """What is wrong with one value of a candle (`name` one of FIELDS), in words that show it as `text`; None when
    ffe can compute with it."""
    if not math.isfinite(value):
        return f"{name} is not a finite number: {text!r}"
    if value < 0:
        return f"{name} is negative: {text!r}"
    if name == "volume":
        if value > VOLUME_MAX:
            return f"volume {text} is above {VOLUME_MAX:g}, the largest volume ffe computes with"
        return None
    if value == 0:
        return f"{name} is zero"
    if value < PRICE_MIN:
        return f"{name} {text} is below {PRICE_MIN:g}, the smallest price ffe computes with"
    if value > PRICE_MAX:
        return f"{name} {text} is above {PRICE_MAX:g}, the largest price ffe computes with"
    return None


def order_problem(o: float, h: float, lo: float, c: float, shown: Sequence[str]) -> str | None:
    """What is wrong with the order of a candle's prices (`shown`: open, high, low and close as text); None when
    low <= open, close <= high."""
    so, sh, sl, sc = shown
    if h < lo:
        return f"high {sh} is below low {sl}"
    if not lo <= o <= h:
        return f"open {so} is outside low..high {sl}..{sh}"
    if not lo <= c <= h:
        return f"close {sc} is outside low..high {sl}..{sh}"
    return None


def candle_problem(o: float, h: float, lo: float, c: float, v: float) -> str | None:
    """What is wrong with a candle's numbers (from an exchange), the first problem only; None when it is usable."""
    values = (o, h, lo, c, v)
    shown = [repr(x) for x in values]
    for name, value, text in zip(FIELDS, values, shown):
        problem = value_problem(name, value, text)
        if problem is not None:
            return problem
    return order_problem(o, h, lo, c, shown[:4])


def price_problem(price: float) -> str | None:
    """What is wrong with a price quoted alone (a ticker's last); None when it is usable."""
    return value_problem("price", price, repr(price))


def columns_within(low: Sequence[float], high: Sequence[float], volume: Sequence[float]) -> bool:
    """Whether whole columns are within the bounds, given low <= open, close <= high in every row (checked before):
    the lows and the highs bound every price. A NaN is not within."""
    return (all(map(le, repeat(PRICE_MIN), low)) and all(map(le, high, repeat(PRICE_MAX)))
            and all(map(le, repeat(0.0), volume)) and all(map(le, volume, repeat(VOLUME_MAX))))
