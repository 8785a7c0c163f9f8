"""Incremental technical indicators, O(1) per bar.

Every indicator keeps just enough state to fold in one new bar: `update(...)` returns the current value (None
until the indicator is warm) and the same number is kept in `value`. Nothing here recomputes a window from
scratch on the hot path; the two windowed sums (SMA, Bollinger) are re-anchored from their buffer once per
window length so floating-point drift cannot build up over a long run, which is still O(1) amortised.

`IndicatorSet` bundles what the vote providers read, one instance per symbol, as plain attributes.
"""

from __future__ import annotations

import math
from collections import deque

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
        tr = high - low
        if pc is not None:
            a = high - pc if high > pc else pc - high
            if a > tr:
                tr = a
            b = low - pc if low > pc else pc - low
            if b > tr:
                tr = b
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
