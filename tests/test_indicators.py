"""Incremental indicators against straightforward full-window computations on the real BTC hourly data."""

from __future__ import annotations

import csv
import gzip
import math
import statistics
from pathlib import Path

import pytest

from ffe_engine.indicators import ATR, EMA, MACD, RSI, SMA, Bollinger, Donchian, IndicatorSet
from ffe_engine.model import Candle

DATA = Path(__file__).resolve().parents[1] / "samples" / "BTC-USD_1h_2020-2023.csv.gz"


def load_bars() -> list[tuple[float, float, float, float]]:
    with gzip.open(DATA, "rt", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(float(r["open"]), float(r["high"]), float(r["low"]), float(r["close"])) for r in rows]


@pytest.fixture(scope="module")
def bars():
    out = load_bars()
    assert len(out) == 35058
    return out


@pytest.fixture(scope="module")
def closes(bars):
    return [b[3] for b in bars]


def close_enough(a: float | None, b: float | None, rel: float = 1e-9, abs_: float = 1e-9) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=rel, abs_tol=abs_)


# ---- straightforward reference implementations -------------------------------------------------------------

def naive_ema_series(xs: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(xs)
    if len(xs) < n:
        return out
    value = sum(xs[:n]) / n
    out[n - 1] = value
    alpha = 2.0 / (n + 1)
    for i in range(n, len(xs)):
        value = alpha * xs[i] + (1 - alpha) * value
        out[i] = value
    return out


def naive_rsi_series(xs: list[float], n: int) -> list[float | None]:
    out: list[float | None] = [None] * len(xs)
    changes = [xs[i] - xs[i - 1] for i in range(1, len(xs))]
    gains = [max(c, 0.0) for c in changes]
    losses = [max(-c, 0.0) for c in changes]
    if len(changes) < n:
        return out
    ag = sum(gains[:n]) / n
    al = sum(losses[:n]) / n

    def rsi(ag: float, al: float) -> float:
        if al == 0:
            return 100.0 if ag > 0 else 50.0
        return 100 - 100 / (1 + ag / al)

    out[n] = rsi(ag, al)
    for j in range(n, len(changes)):
        ag = (ag * (n - 1) + gains[j]) / n
        al = (al * (n - 1) + losses[j]) / n
        out[j + 1] = rsi(ag, al)
    return out


def naive_true_ranges(bars) -> list[float]:
    trs = []
    for i, (_, h, l, _c) in enumerate(bars):
        if i == 0:
            trs.append(h - l)
        else:
            pc = bars[i - 1][3]
            trs.append(max(h - l, abs(h - pc), abs(l - pc)))
    return trs


# ---- the tests ------------------------------------------------------------------------------------------------

def test_sma_matches_window_mean_on_every_bar(closes):
    n = 20
    sma = SMA(n)
    for i, c in enumerate(closes):
        got = sma.update(c)
        if i < n - 1:
            assert got is None
        else:
            assert close_enough(got, math.fsum(closes[i - n + 1:i + 1]) / n, rel=1e-12), i
    assert sma.value == got


@pytest.mark.parametrize("n", [12, 26, 50])
def test_ema_matches_full_recursion(closes, n):
    ref = naive_ema_series(closes, n)
    ema = EMA(n)
    for i, c in enumerate(closes):
        assert close_enough(ema.update(c), ref[i], rel=1e-11), i


def test_ema_recomputed_from_scratch_at_sampled_bars(closes):
    # Rebuild the EMA from the first bar up to each sampled point: the incremental state must agree.
    ema = EMA(20)
    for i, c in enumerate(closes[:6000]):
        ema.update(c)
        if i % 997 == 0 and i >= 19:
            assert close_enough(ema.value, naive_ema_series(closes[:i + 1], 20)[i], rel=1e-11)


def test_rsi_wilder_matches_reference(closes):
    ref = naive_rsi_series(closes, 14)
    rsi = RSI(14)
    for i, c in enumerate(closes):
        got = rsi.update(c)
        assert close_enough(got, ref[i], rel=1e-9, abs_=1e-8), i
        if got is not None:
            assert 0.0 <= got <= 100.0
    assert ref[13] is None and ref[14] is not None  # warm after n + 1 prices


def test_rsi_edge_cases():
    up = RSI(3)
    for x in (1.0, 2.0, 3.0, 4.0):
        up.update(x)
    assert up.value == 100.0
    flat = RSI(3)
    for _ in range(5):
        flat.update(7.0)
    assert flat.value == 50.0
    down = RSI(3)
    for x in (4.0, 3.0, 2.0, 1.0):
        down.update(x)
    assert down.value == 0.0


def test_macd_matches_reference(closes):
    fast = naive_ema_series(closes, 12)
    slow = naive_ema_series(closes, 26)
    line = [None if s is None else f - s for f, s in zip(fast, slow)]
    first = next(i for i, v in enumerate(line) if v is not None)
    sig_part = naive_ema_series([v for v in line[first:]], 9)
    signal = [None] * first + sig_part
    macd = MACD(12, 26, 9)
    for i, c in enumerate(closes):
        got = macd.update(c)
        assert close_enough(got, line[i], rel=1e-8, abs_=1e-7), i
        assert close_enough(macd.signal, signal[i], rel=1e-8, abs_=1e-7), i
        if signal[i] is not None:
            assert close_enough(macd.hist, line[i] - signal[i], rel=1e-7, abs_=1e-7), i
    assert first == 25 and signal[33] is not None and signal[32] is None


def test_atr_wilder_matches_reference(bars):
    trs = naive_true_ranges(bars)
    n = 14
    ref: list[float | None] = [None] * len(bars)
    value = sum(trs[:n]) / n
    ref[n - 1] = value
    for i in range(n, len(trs)):
        value = (value * (n - 1) + trs[i]) / n
        ref[i] = value
    atr = ATR(n)
    for i, (_, h, l, c) in enumerate(bars):
        assert close_enough(atr.update(h, l, c), ref[i], rel=1e-10), i


def test_bollinger_matches_population_std_of_window(closes):
    n, k = 20, 2.0
    bb = Bollinger(n, k)
    for i, c in enumerate(closes):
        mid = bb.update(c)
        if i < n - 1:
            assert mid is None and bb.upper is None
            continue
        window = closes[i - n + 1:i + 1]
        ref_mid = statistics.fmean(window)
        ref_std = statistics.pstdev(window)
        assert close_enough(mid, ref_mid, rel=1e-12), i
        # Absolute tolerance scaled to the price: std can be near zero in a flat hour.
        assert math.isclose(bb.std, ref_std, rel_tol=1e-7, abs_tol=1e-9 * ref_mid), i
        assert math.isclose(bb.upper, ref_mid + k * ref_std, rel_tol=1e-12, abs_tol=1e-8 * ref_mid), i
        assert math.isclose(bb.lower, ref_mid - k * ref_std, rel_tol=1e-12, abs_tol=1e-8 * ref_mid), i


def test_bollinger_stays_exact_on_a_flat_window_after_large_prices():
    # Sum-of-squares formulas lose everything here; the window must report a zero-width band.
    bb = Bollinger(5, 2.0)
    for x in [60000.0, 61000.0, 59000.0, 60500.0, 59500.0] + [1.0] * 12:
        bb.update(x)
    assert bb.value == pytest.approx(1.0, abs=1e-12)
    assert bb.std == pytest.approx(0.0, abs=1e-9)


def test_donchian_excludes_current_bar(bars):
    n = 20
    dc = Donchian(n)
    highs = [b[1] for b in bars]
    lows = [b[2] for b in bars]
    for i, (h, l) in enumerate(zip(highs, lows)):
        dc.update(h, l)
        if i < n:
            assert dc.upper is None and dc.lower is None
            continue
        assert dc.upper == max(highs[i - n:i]), i
        assert dc.lower == min(lows[i - n:i]), i
        assert dc.value == (dc.upper + dc.lower) / 2


def test_donchian_detects_breakout():
    dc = Donchian(3)
    for h, l in [(10, 9), (11, 9.5), (10.5, 9.2)]:
        dc.update(h, l)
    dc.update(12.0, 10.0)  # the breaking bar itself is not part of its own channel
    assert dc.upper == 11 and 12.0 > dc.upper


def test_bad_periods_are_rejected():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="period"):
            SMA(bad)
    with pytest.raises(ValueError, match="shorter"):
        MACD(26, 12)
    with pytest.raises(ValueError, match="shorter"):
        IndicatorSet(ema_fast=50, ema_slow=20)


def test_indicator_set_tracks_every_value(bars):
    ind = IndicatorSet("BTC/USD")
    closes = [b[3] for b in bars]
    ema_f = naive_ema_series(closes, 20)
    ema_s = naive_ema_series(closes, 50)
    rsi = naive_rsi_series(closes, 14)
    prev_hist = None
    for i, (o, h, l, c) in enumerate(bars[:5000]):
        ind.update(Candle("BTC/USD", i * 3_600_000, o, h, l, c, 1.0))
        assert ind.bars == i + 1 and ind.close == c
        assert ind.prev_close == (closes[i - 1] if i else None)
        assert close_enough(ind.ema_fast, ema_f[i], rel=1e-11)
        assert close_enough(ind.ema_slow, ema_s[i], rel=1e-11)
        assert close_enough(ind.prev_ema_fast, ema_f[i - 1] if i else None, rel=1e-11)
        assert close_enough(ind.rsi, rsi[i], abs_=1e-8)
        assert close_enough(ind.prev_rsi, rsi[i - 1] if i else None, abs_=1e-8)
        assert ind.prev_macd_hist == prev_hist
        prev_hist = ind.macd_hist
        if i >= 20:
            assert ind.dc_high == max(b[1] for b in bars[i - 20:i])
            assert ind.bb_lower < ind.bb_mid < ind.bb_upper
        assert ind.warm == (i >= 50)  # EMA(50) needs 50 bars, its previous value one more
