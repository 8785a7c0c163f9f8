"""Incremental technical indicators, O(1) per bar.

Every indicator keeps just enough state to fold in one new bar: `update(...)` returns the current value (None
until the indicator is warm) and the same number is kept in `value`. Nothing here recomputes a window from
scratch on the hot path; the two windowed sums (SMA, Bollinger) are re-anchored from their buffer once per
window length so floating-point drift cannot build up over a long run, which is still O(1) amortised.

`IndicatorSet` bundles what the vote providers read, one instance per symbol, as plain attributes.
"""

from __future__ import annotations

import math
from array import array
from collections import deque
from typing import Any, Sequence, cast

from .model import Candle


def _check_period(name: str, n: int) -> int:
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"{name} period must be a positive integer, got {n!r}")
    return n


class SMA:
    """Simple moving average of the last n values."""

    __slots__ = ("n", "value", "_buf", "_sum", "_until_anchor")

    def __init__(self, n: int = 20) -> None:
        self.n = _check_period("SMA", n)
        self.value: float | None = None
        self._buf: deque[float] = deque()
        self._sum = 0.0
        self._until_anchor = n

    def update(self, x: float) -> float | None:
        buf = self._buf
        buf.append(x)
        if len(buf) > self.n:
            self._sum += x - buf.popleft()
        else:
            self._sum += x
        self._until_anchor -= 1
        if self._until_anchor == 0:
            # Re-sum the window once per n updates: removes accumulated rounding error, O(1) amortised.
            self._until_anchor = self.n
            self._sum = math.fsum(buf)
        if len(buf) == self.n:
            self.value = self._sum / self.n
        return self.value


class EMA:
    """Exponential moving average, alpha = 2 / (n + 1), seeded with the SMA of the first n values."""

    __slots__ = ("n", "alpha", "value", "_count", "_sum")

    def __init__(self, n: int = 20) -> None:
        self.n = _check_period("EMA", n)
        self.alpha = 2.0 / (n + 1)
        self.value: float | None = None
        self._count = 0
        self._sum = 0.0

    def update(self, x: float) -> float | None:
        v = self.value
        if v is not None:
            v += self.alpha * (x - v)
            self.value = v
            return v
        self._count += 1
        self._sum += x
        if self._count == self.n:
            self.value = self._sum / self.n
        return self.value


class RSI:
    """Relative strength index with Wilder smoothing.

    The first average gain/loss is the plain mean of the first n price changes; after that
    avg = (avg * (n - 1) + current) / n. RSI is 100 when there were no losses, 50 when the price did not move.
    Warm after n + 1 prices.
    """

    __slots__ = ("n", "value", "avg_gain", "avg_loss", "_prev", "_count")

    def __init__(self, n: int = 14) -> None:
        self.n = _check_period("RSI", n)
        self.value: float | None = None
        self.avg_gain = 0.0
        self.avg_loss = 0.0
        self._prev: float | None = None
        self._count = 0

    def update(self, close: float) -> float | None:
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        change = close - prev
        gain = change if change > 0.0 else 0.0
        loss = -change if change < 0.0 else 0.0
        n = self.n
        if self._count >= n:
            self.avg_gain = (self.avg_gain * (n - 1) + gain) / n
            self.avg_loss = (self.avg_loss * (n - 1) + loss) / n
        else:
            self._count += 1
            self.avg_gain += gain
            self.avg_loss += loss
            if self._count < n:
                return None
            self.avg_gain /= n
            self.avg_loss /= n
        ag, al = self.avg_gain, self.avg_loss
        if al == 0.0:
            self.value = 100.0 if ag > 0.0 else 50.0
        else:
            self.value = 100.0 - 100.0 / (1.0 + ag / al)
        return self.value


class MACD:
    """MACD line = EMA(fast) - EMA(slow) of the close; signal = EMA(signal) of the MACD line; hist = line - signal.

    `value` (and the return of `update`) is the MACD line, warm after `slow` bars; `signal` and `hist` are warm
    after slow + signal - 1 bars.
    """

    __slots__ = ("value", "signal", "hist", "_fast", "_slow", "_sig")

    def __init__(self, fast: int = 12, slow: int = 26, signal: int = 9) -> None:
        if _check_period("MACD fast", fast) >= _check_period("MACD slow", slow):
            raise ValueError(f"MACD fast period ({fast}) must be shorter than the slow period ({slow})")
        self._fast = EMA(fast)
        self._slow = EMA(slow)
        self._sig = EMA(_check_period("MACD signal", signal))
        self.value: float | None = None
        self.signal: float | None = None
        self.hist: float | None = None

    def update(self, close: float) -> float | None:
        f = self._fast.update(close)
        s = self._slow.update(close)
        if s is None or f is None:
            return None
        line = f - s
        self.value = line
        sig = self._sig.update(line)
        if sig is not None:
            self.signal = sig
            self.hist = line - sig
        return line


def true_range(high: float, low: float, prev_close: float | None) -> float:
    """max(high - low, |high - previous close|, |low - previous close|); high - low with no previous close. The ATR
    and its column (atr_column) both take it from here."""
    tr = high - low
    if prev_close is not None:
        a = high - prev_close if high > prev_close else prev_close - high
        if a > tr:
            tr = a
        b = low - prev_close if low > prev_close else prev_close - low
        if b > tr:
            tr = b
    return tr


class ATR:
    """Average true range with Wilder smoothing.

    True range = max(high - low, |high - previous close|, |low - previous close|); the first bar, having no
    previous close, uses high - low. The first ATR is the mean of the first n true ranges.
    """

    __slots__ = ("n", "value", "_prev_close", "_count", "_sum")

    def __init__(self, n: int = 14) -> None:
        self.n = _check_period("ATR", n)
        self.value: float | None = None
        self._prev_close: float | None = None
        self._count = 0
        self._sum = 0.0

    def update(self, high: float, low: float, close: float) -> float | None:
        pc = self._prev_close
        self._prev_close = close
        tr = true_range(high, low, pc)
        v = self.value
        if v is not None:
            n = self.n
            v = (v * (n - 1) + tr) / n
            self.value = v
            return v
        self._count += 1
        self._sum += tr
        if self._count == self.n:
            self.value = self._sum / self.n
        return self.value


class Bollinger:
    """Bollinger bands: mid = SMA(n), upper/lower = mid +/- k * population standard deviation of the window.

    The window mean and sum of squared deviations are kept with a sliding Welford update (add one value, drop
    one), which does not suffer the cancellation of sum-of-squares formulas at prices in the tens of thousands;
    both are recomputed from the window once per n updates so rounding cannot drift. `value` is the mid line.
    """

    __slots__ = ("n", "k", "value", "upper", "lower", "std", "_buf", "_mean", "_m2", "_until_anchor")

    def __init__(self, n: int = 20, k: float = 2.0) -> None:
        self.n = _check_period("Bollinger", n)
        if not k > 0.0:
            raise ValueError(f"Bollinger width k must be positive, got {k!r}")
        self.k = float(k)
        self.value: float | None = None
        self.upper: float | None = None
        self.lower: float | None = None
        self.std: float | None = None
        self._buf: deque[float] = deque()
        self._mean = 0.0
        self._m2 = 0.0
        self._until_anchor = n

    def update(self, x: float) -> float | None:
        buf = self._buf
        buf.append(x)
        n = self.n
        mean = self._mean
        if len(buf) > n:
            old = buf.popleft()
            new_mean = mean + (x - old) / n
            self._m2 += (x - old) * (x - new_mean + old - mean)
        else:
            new_mean = mean + (x - mean) / len(buf)
            self._m2 += (x - mean) * (x - new_mean)
        self._mean = new_mean
        self._until_anchor -= 1
        if self._until_anchor == 0:
            self._until_anchor = n
            self._reanchor()
        if len(buf) < n:
            return None
        m2 = self._m2
        std = math.sqrt(m2 / n) if m2 > 0.0 else 0.0
        mid = self._mean
        self.value = mid
        self.std = std
        self.upper = mid + self.k * std
        self.lower = mid - self.k * std
        return mid

    def _reanchor(self) -> None:
        buf = self._buf
        mean = math.fsum(buf) / len(buf)
        self._mean = mean
        self._m2 = math.fsum((v - mean) * (v - mean) for v in buf)


class Donchian:
    """Donchian channel over the previous n bars, the current bar excluded, so that a close above `upper` (or
    below `lower`) is a breakout. Monotonic deques give amortised O(1) per bar. `value` is the middle line;
    warm once n bars precede the current one.
    """

    __slots__ = ("n", "value", "upper", "lower", "_i", "_hi", "_lo")

    def __init__(self, n: int = 20) -> None:
        self.n = _check_period("Donchian", n)
        self.value: float | None = None
        self.upper: float | None = None
        self.lower: float | None = None
        self._i = 0
        self._hi: deque[tuple[int, float]] = deque()  # (bar index, high), highs strictly decreasing
        self._lo: deque[tuple[int, float]] = deque()  # (bar index, low), lows strictly increasing

    def update(self, high: float, low: float) -> float | None:
        i = self._i
        self._i = i + 1
        hi = self._hi
        lo = self._lo
        if i >= self.n:
            start = i - self.n  # the window is bars start .. i-1
            while hi[0][0] < start:
                hi.popleft()
            while lo[0][0] < start:
                lo.popleft()
            up = hi[0][1]
            dn = lo[0][1]
            self.upper = up
            self.lower = dn
            self.value = (up + dn) * 0.5
        while hi and hi[-1][1] <= high:
            hi.pop()
        hi.append((i, high))
        while lo and lo[-1][1] >= low:
            lo.pop()
        lo.append((i, low))
        return self.value


class IndicatorSet:
    """Everything the vote providers read for one symbol, updated once per closed candle.

    Values are plain attributes: floats once warm, None before. `bars` counts the candles seen.
    Defaults: trend EMAs 20/50, MACD 12/26/9, RSI 14, ATR 14, Bollinger 20 x 2, Donchian 20.
    """

    __slots__ = (
        "symbol", "bars", "ts", "open", "high", "low", "close", "volume", "prev_close",
        "ema_fast", "ema_slow", "prev_ema_fast", "prev_ema_slow",
        "macd", "macd_signal", "macd_hist", "prev_macd_hist",
        "rsi", "prev_rsi", "atr", "bb_upper", "bb_mid", "bb_lower", "bb_std", "dc_high", "dc_low",
        "_ema_fast", "_ema_slow", "_macd", "_rsi", "_atr", "_bb", "_dc",
    )

    def __init__(
        self,
        symbol: str = "",
        *,
        ema_fast: int = 20,
        ema_slow: int = 50,
        macd_fast: int = 12,
        macd_slow: int = 26,
        macd_signal: int = 9,
        rsi: int = 14,
        atr: int = 14,
        bb_period: int = 20,
        bb_k: float = 2.0,
        donchian: int = 20,
    ) -> None:
        if _check_period("EMA fast", ema_fast) >= _check_period("EMA slow", ema_slow):
            raise ValueError(f"EMA fast period ({ema_fast}) must be shorter than the slow period ({ema_slow})")
        self.symbol = symbol
        self._ema_fast = EMA(ema_fast)
        self._ema_slow = EMA(ema_slow)
        self._macd = MACD(macd_fast, macd_slow, macd_signal)
        self._rsi = RSI(rsi)
        self._atr = ATR(atr)
        self._bb = Bollinger(bb_period, bb_k)
        self._dc = Donchian(donchian)
        self.bars = 0
        self.ts = 0
        self.open = self.high = self.low = self.close = self.volume = 0.0
        self.prev_close: float | None = None
        self.ema_fast: float | None = None
        self.ema_slow: float | None = None
        self.prev_ema_fast: float | None = None
        self.prev_ema_slow: float | None = None
        self.macd: float | None = None
        self.macd_signal: float | None = None
        self.macd_hist: float | None = None
        self.prev_macd_hist: float | None = None
        self.rsi: float | None = None
        self.prev_rsi: float | None = None
        self.atr: float | None = None
        self.bb_upper: float | None = None
        self.bb_mid: float | None = None
        self.bb_lower: float | None = None
        self.bb_std: float | None = None
        self.dc_high: float | None = None
        self.dc_low: float | None = None

    def update(self, candle: Candle) -> None:
        close = candle.close
        high = candle.high
        low = candle.low
        self.bars += 1
        self.ts = candle.ts
        self.open = candle.open
        self.high = high
        self.low = low
        self.volume = candle.volume
        self.prev_close = self.close if self.bars > 1 else None
        self.close = close
        self.prev_ema_fast = self.ema_fast
        self.prev_ema_slow = self.ema_slow
        self.ema_fast = self._ema_fast.update(close)
        self.ema_slow = self._ema_slow.update(close)
        m = self._macd
        self.macd = m.update(close)
        self.prev_macd_hist = self.macd_hist
        self.macd_signal = m.signal
        self.macd_hist = m.hist
        self.prev_rsi = self.rsi
        self.rsi = self._rsi.update(close)
        self.atr = self._atr.update(high, low, close)
        bb = self._bb
        self.bb_mid = bb.update(close)
        self.bb_upper = bb.upper
        self.bb_lower = bb.lower
        self.bb_std = bb.std
        dc = self._dc
        dc.update(high, low)
        self.dc_high = dc.upper
        self.dc_low = dc.lower

    @property
    def warm(self) -> bool:
        """True once every indicator (and the previous values the providers compare against) is available."""
        return (self.prev_ema_slow is not None and self.prev_macd_hist is not None and self.prev_rsi is not None
                and self.atr is not None and self.bb_mid is not None and self.dc_high is not None)


# ---------------------------------------------------------------------------------------------------------------
# A whole series at once (backtests): the same numbers as the incremental classes above, bar for bar, bit for bit.
# Each indicator is one tight loop over the series' columns, with the exact arithmetic of its class's `update` in
# the same order (floating-point recurrences such as the EMA cannot be reordered without changing the last bits),
# so a backtest pays no per-bar object overhead for them. tests/test_indicator_columns.py compares the two on
# every bar of the sample files.

Column = list[float | None]
_NAN = float("nan")


def ema_column(xs: Sequence[float], n: int) -> Column:
    """EMA.update over xs: None until n values were seen, then the EMA after each value."""
    _check_period("EMA", n)
    alpha = 2.0 / (n + 1)
    out: Column = []
    append = out.append
    total = 0.0
    v = 0.0
    for count, x in enumerate(xs, 1):
        if count > n:
            v += alpha * (x - v)
            append(v)
        elif count == n:
            total += x
            v = total / n
            append(v)
        else:
            total += x
            append(None)
    return out


def rsi_column(closes: Sequence[float], n: int) -> Column:
    """RSI.update over closes."""
    _check_period("RSI", n)
    out: Column = []
    append = out.append
    if not closes:
        return out
    append(None)
    ag = al = 0.0
    count = 0
    value: float | None = None
    prev = closes[0]
    for i in range(1, len(closes)):
        close = closes[i]
        change = close - prev
        prev = close
        gain = change if change > 0.0 else 0.0
        loss = -change if change < 0.0 else 0.0
        if count >= n:
            ag = (ag * (n - 1) + gain) / n
            al = (al * (n - 1) + loss) / n
        else:
            count += 1
            ag += gain
            al += loss
            if count < n:
                append(None)
                continue
            ag /= n
            al /= n
        if al == 0.0:
            value = 100.0 if ag > 0.0 else 50.0
        else:
            value = 100.0 - 100.0 / (1.0 + ag / al)
        append(value)
    return out


def atr_column(highs: Sequence[float], lows: Sequence[float], closes: Sequence[float], n: int) -> Column:
    """ATR.update over the bars."""
    _check_period("ATR", n)
    out: Column = []
    append = out.append
    pc: float | None = None
    total = 0.0
    v: float | None = None
    count = 0
    for high, low, close in zip(highs, lows, closes):
        tr = true_range(high, low, pc)
        pc = close
        if v is not None:
            v = (v * (n - 1) + tr) / n
        else:
            count += 1
            total += tr
            if count == n:
                v = total / n
        append(v)
    return out


def bollinger_columns(xs: Sequence[float], n: int, k: float) -> tuple[Column, Column, Column, Column]:
    """Bollinger.update over xs: (mid, upper, lower, std), each None until the window is full."""
    _check_period("Bollinger", n)
    if not k > 0.0:
        raise ValueError(f"Bollinger width k must be positive, got {k!r}")
    k = float(k)
    mids: Column = []
    uppers: Column = []
    lowers: Column = []
    stds: Column = []
    buf: deque[float] = deque()
    mean = 0.0
    m2 = 0.0
    until_anchor = n
    fsum = math.fsum
    sqrt = math.sqrt
    for x in xs:
        buf.append(x)
        size = len(buf)
        if size > n:
            old = buf.popleft()
            new_mean = mean + (x - old) / n
            m2 += (x - old) * (x - new_mean + old - mean)
        else:
            new_mean = mean + (x - mean) / size
            m2 += (x - mean) * (x - new_mean)
        mean = new_mean
        until_anchor -= 1
        if until_anchor == 0:
            until_anchor = n
            mean = fsum(buf) / len(buf)
            m2 = fsum([(v - mean) * (v - mean) for v in buf])
        if len(buf) < n:
            mids.append(None)
            uppers.append(None)
            lowers.append(None)
            stds.append(None)
            continue
        std = sqrt(m2 / n) if m2 > 0.0 else 0.0
        mids.append(mean)
        stds.append(std)
        uppers.append(mean + k * std)
        lowers.append(mean - k * std)
    return mids, uppers, lowers, stds


def donchian_columns(highs: Sequence[float], lows: Sequence[float], n: int) -> tuple[Column, Column]:
    """Donchian.update over the bars: (upper, lower) of the previous n bars, None until n bars precede."""
    _check_period("Donchian", n)
    warm = min(n, len(highs))
    uppers: Column = [None] * warm
    lowers: Column = [None] * warm
    uppers += _window_highs(highs, n)
    lowers += _window_lows(lows, n)
    return uppers, lowers


# The window's extreme is carried from bar to bar: a new value beyond it replaces it, and the window is searched
# again only when the value that leaves it was the extreme (a few bars in a hundred on market data), so a bar costs
# a comparison or two, not a call per value as a sliding max over blocks does. Exact: only compares values.

def _window_highs(xs: Sequence[float], n: int) -> list[float]:
    """max(xs[i - n:i]) for each i from n to len(xs) - 1."""
    size = len(xs)
    if size <= n:
        return []
    top = max(xs[:n])
    out = [top]
    append = out.append
    for i in range(n, size - 1):
        x = xs[i]
        if x >= top:
            top = x
        elif xs[i - n] == top:  # the high leaves the window
            top = max(xs[i - n + 1:i + 1])
        append(top)
    return out


def _window_lows(xs: Sequence[float], n: int) -> list[float]:
    """min(xs[i - n:i]) for each i from n to len(xs) - 1."""
    size = len(xs)
    if size <= n:
        return []
    bottom = min(xs[:n])
    out = [bottom]
    append = out.append
    for i in range(n, size - 1):
        x = xs[i]
        if x <= bottom:
            bottom = x
        elif xs[i - n] == bottom:  # the low leaves the window
            bottom = min(xs[i - n + 1:i + 1])
        append(bottom)
    return out


def _doubles(col: Sequence[float | None]) -> array[float]:
    """The column as an array of doubles, NaN where a value is not set. A column is unset only before its first
    value, mostly: then the rest converts at C speed."""
    first = _first_set(col)
    try:
        return array("d", [_NAN]) * first + array("d", cast("Sequence[float]", col[first:]))
    except TypeError:  # an unset value after the first set one
        return array("d", [_NAN if v is None else v for v in col])


def _first_set(col: Sequence[float | None]) -> int:
    for i, v in enumerate(col):
        if v is not None:
            return i
    return len(col)


def shifted(col: Sequence[float | None]) -> Column:
    """The column one bar later: the value before each bar (None before the first)."""
    return [None, *col[:-1]] if col else []


class IndicatorColumns:
    """What an `IndicatorSet` holds after each bar of a series, for every bar at once: one list per attribute,
    indexed by bar. `load(ind, i)` puts bar i's values into an IndicatorSet, for a provider to read.
    Built with the same periods as `IndicatorSet`'s defaults (or the given ones)."""

    FIELDS = ("ts", "open", "high", "low", "close", "volume", "prev_close", "ema_fast", "ema_slow", "prev_ema_fast",
              "prev_ema_slow", "macd", "macd_signal", "macd_hist", "prev_macd_hist", "rsi", "prev_rsi", "atr",
              "bb_upper", "bb_mid", "bb_lower", "bb_std", "dc_high", "dc_low")

    def __init__(self, ts: Sequence[int], open: Sequence[float], high: Sequence[float], low: Sequence[float],
                 close: Sequence[float], volume: Sequence[float], *, ema_fast: int = 20, ema_slow: int = 50,
                 macd_fast: int = 12, macd_slow: int = 26, macd_signal: int = 9, rsi: int = 14, atr: int = 14,
                 bb_period: int = 20, bb_k: float = 2.0, donchian: int = 20) -> None:
        if _check_period("EMA fast", ema_fast) >= _check_period("EMA slow", ema_slow):
            raise ValueError(f"EMA fast period ({ema_fast}) must be shorter than the slow period ({ema_slow})")
        if _check_period("MACD fast", macd_fast) >= _check_period("MACD slow", macd_slow):
            raise ValueError(f"MACD fast period ({macd_fast}) must be shorter than the slow period ({macd_slow})")
        cols: dict[str, Sequence[Any]] = {"ts": ts, "open": open, "high": high, "low": low, "close": close,
                                          "volume": volume}
        self.size = len(close)
        cols["prev_close"] = shifted(close)
        cols["ema_fast"] = ema_column(close, ema_fast)
        cols["ema_slow"] = ema_column(close, ema_slow)
        cols["prev_ema_fast"] = shifted(cols["ema_fast"])
        cols["prev_ema_slow"] = shifted(cols["ema_slow"])
        # MACD: the line once both EMAs are warm (the slow one is the later); its signal line is an EMA of the
        # line from there on; the histogram once the signal is warm.
        fast = ema_column(close, macd_fast)
        slow = ema_column(close, macd_slow)
        line: Column = [None if f is None or s is None else f - s for f, s in zip(fast, slow)]
        values = [x for x in line if x is not None]
        sig: Column = [None] * (len(line) - len(values))
        sig += ema_column(values, _check_period("MACD signal", macd_signal))
        cols["macd"] = line
        cols["macd_signal"] = sig
        hist: Column = [None if m is None or g is None else m - g for m, g in zip(line, sig)]
        cols["macd_hist"] = hist
        cols["prev_macd_hist"] = shifted(hist)
        cols["rsi"] = rsi_column(close, rsi)
        cols["prev_rsi"] = shifted(cols["rsi"])
        cols["atr"] = atr_column(high, low, close, atr)
        cols["bb_mid"], cols["bb_upper"], cols["bb_lower"], cols["bb_std"] = bollinger_columns(close, bb_period, bb_k)
        cols["dc_high"], cols["dc_low"] = donchian_columns(high, low, donchian)
        self.columns = cols
        self._fields = [cols[f] for f in self.FIELDS]
        # The first bar after which IndicatorSet.warm is true (every column, once set, stays set; and from that
        # bar on every column is set).
        self.warm_from = max(_first_set(cols[name]) for name in ("prev_ema_slow", "prev_macd_hist", "prev_rsi",
                                                                 "atr", "bb_mid", "dc_high"))

    @classmethod
    def restored(cls, ts: Sequence[int], open: Sequence[float], high: Sequence[float], low: Sequence[float],
                 close: Sequence[float], volume: Sequence[float], computed: dict[str, array[float]],
                 warm_from: int) -> "IndicatorColumns":
        """Columns computed before (compacted: arrays of doubles) for these candles, as they were (datacache.py)."""
        self = cls.__new__(cls)
        self.size = len(close)
        self.columns = {"ts": ts, "open": open, "high": high, "low": low, "close": close, "volume": volume,
                        **{name: computed[name] for name in cls.FIELDS[6:]}}
        self._fields = [self.columns[f] for f in cls.FIELDS]
        self.warm_from = warm_from
        return self

    def __len__(self) -> int:
        return self.size

    def compact(self) -> None:
        """Keep the computed columns as arrays of doubles (NaN for not yet set), not lists of float objects: a
        quarter of the memory. Their values are the same, bit for bit; `load` gives None where a value is not set."""
        cols = self.columns
        for name in self.FIELDS[6:]:  # the candle's own columns are the series' lists
            cols[name] = _doubles(cols[name])
        self._fields = [cols[f] for f in self.FIELDS]

    def load(self, ind: IndicatorSet, i: int) -> None:
        """Make `ind` what an IndicatorSet is after bar i of this series."""
        ind.bars = i + 1
        values = [col[i] for col in self._fields]
        if i < self.warm_from:  # some values are not set yet (from the warm bar on, every one is)
            values = [None if v is None or v != v else v for v in values]
        (ind.ts, ind.open, ind.high, ind.low, ind.close, ind.volume, ind.prev_close, ind.ema_fast, ind.ema_slow,
         ind.prev_ema_fast, ind.prev_ema_slow, ind.macd, ind.macd_signal, ind.macd_hist, ind.prev_macd_hist, ind.rsi,
         ind.prev_rsi, ind.atr, ind.bb_upper, ind.bb_mid, ind.bb_lower, ind.bb_std, ind.dc_high,
         ind.dc_low) = values
