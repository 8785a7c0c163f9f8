"""Performance figures of an equity curve and of closed trades: drawdown with its dates, CAGR, Sharpe, Sortino,
Calmar, monthly and yearly returns, figures per symbol and per exit reason, and buying and holding the same data.

Pure functions of plain numbers, so each figure can be checked by hand on a small constructed curve.

The curve is what a backtest keeps: one point per bar time, `(bar open time in ms, equity at that bar's close)`.
The account holds `start_equity` at the open of the first bar. A point's equity is measured at the bar's close,
`open time + timeframe`: that is the time the drawdown dates name, and the span CAGR is taken over. Months and
years group bars by their open time, so a bar's gain counts in the month it was made in.
"""

from __future__ import annotations

import math
from collections import Counter
from datetime import datetime, timezone
from itertools import compress, repeat
from operator import add, lt, mul, sub
from typing import Any, Iterable, Sequence

from . import fmt
from .clock import DAY_MS
from .model import ClosedTrade

YEAR_MS = 365.25 * DAY_MS


def returns(curve: Sequence[tuple[int, float]], start_equity: float) -> list[float]:
    """The return of each bar, the first against the starting equity."""
    out: list[float] = []
    prev = start_equity
    for _, eq in curve:
        if prev > 0:
            out.append(eq / prev - 1.0)
        prev = eq
    return out


def sharpe(rets: Sequence[float], periods_per_year: float) -> float:
    """Mean over sample standard deviation of the bar returns, annualised; 0 without variation."""
    if len(rets) < 2:
        return 0.0
    mean = sum(rets) / len(rets)
    # (r - mean) ** 2 summed in order, at C speed (the same figure as a generator gives, to the last bit)
    sd = math.sqrt(sum(map(pow, map(sub, rets, repeat(mean)), repeat(2))) / (len(rets) - 1))
    return mean / sd * math.sqrt(periods_per_year) if sd > 0 else 0.0


def sortino(rets: Sequence[float], periods_per_year: float) -> float | None:
    """Mean over downside deviation (target 0: the root of the mean of min(r, 0)² over all bars), annualised.
    None when no bar lost: the ratio has no finite value then."""
    if not rets:
        return None
    mean = sum(rets) / len(rets)
    # min(r, 0) ** 2 summed over the bars: the bars that did not lose add 0.0, which leaves the sum as it was, so only
    # the losses are squared and summed (in their order: the same figure to the last bit).
    losses = compress(rets, map(lt, rets, repeat(0.0)))
    downside = math.sqrt(sum(map(pow, losses, repeat(2))) / len(rets))
    return mean / downside * math.sqrt(periods_per_year) if downside > 0 else None


def cagr(start_equity: float, end_equity: float, span_ms: float) -> float | None:
    """The compound annual growth rate (a fraction) over `span_ms`; -1 when everything was lost. None when it has no
    value: nothing to measure, or a rate beyond a float (a large move over a short span: x3 in an hour is x3 ** 8766
    in a year)."""
    if start_equity <= 0 or span_ms <= 0:
        return None
    if end_equity <= 0:
        return -1.0
    try:
        return float((end_equity / start_equity) ** (YEAR_MS / span_ms) - 1.0)
    except OverflowError:
        return None


def calmar(cagr_value: float | None, max_drawdown: float) -> float | None:
    """CAGR over the maximum drawdown (both fractions); None without a drawdown."""
    if cagr_value is None or max_drawdown <= 0:
        return None
    return cagr_value / max_drawdown


def drawdown(points: Sequence[tuple[int, float]], start_ts: int, start_equity: float) -> dict[str, Any]:
    """The deepest fall from a peak, with its dates, and the longest time spent below a peak.

    `points` are (time in ms, equity) with the time the equity was measured. The peak of the deepest drawdown is
    the last time the equity stood at that high before falling; it is recovered at the first time the equity is
    back at or above it (None if never). Its duration runs from peak to recovery, or to the last point."""
    return _drawdown(points, start_ts, start_equity)[1]


def _drawdown(points: Sequence[tuple[int, float]], start_ts: int,
              start_equity: float) -> tuple[float, dict[str, Any]]:
    """The deepest fall as a fraction, unrounded (what figures are computed from), and `drawdown`'s report."""
    peak, peak_ts = start_equity, start_ts
    deepest = 0.0
    at: tuple[int, int, float] | None = None  # (peak time, trough time, peak equity) of the deepest drawdown
    trough_index = -1
    longest_ms = 0
    under = False
    for i, (ts, eq) in enumerate(points):
        if eq >= peak:
            if under:  # back at the peak: one spell under it ends
                longest_ms, under = max(longest_ms, ts - peak_ts), False
            peak, peak_ts = eq, ts
        elif peak > 0:
            under = True
            dd = (peak - eq) / peak
            if dd > deepest:
                deepest, at, trough_index = dd, (peak_ts, ts, peak), i
    end_ts = points[-1][0] if points else start_ts
    if under:  # still under the peak at the last point
        longest_ms = max(longest_ms, end_ts - peak_ts)
    if at is None:
        return 0.0, {"max_pct": 0.0, "peak": None, "trough": None, "recovered": None, "duration_days": 0.0,
                     "longest_days": 0.0}
    peak_at, trough_at, peak_equity = at
    recovered = next((ts for ts, eq in points[trough_index + 1:] if eq >= peak_equity), None)
    return deepest, {
        "max_pct": round(100.0 * deepest, 3),
        "peak": fmt.iso_ms(peak_at),
        "trough": fmt.iso_ms(trough_at),
        "recovered": fmt.iso_ms(recovered) if recovered is not None else None,
        # To 0.1 s: two places of a day (about 14 minutes) would print an intraday duration minutes off.
        "duration_days": round(((recovered if recovered is not None else end_ts) - peak_at) / DAY_MS, 6),
        "longest_days": round(longest_ms / DAY_MS, 6),
    }


def month_of(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc).strftime("%Y-%m")


def period_returns(curve: Sequence[tuple[int, float]], start_equity: float) -> dict[str, dict[str, float]]:
    """Return in percent of each calendar month and year (UTC) the curve's bars open in: the equity at the last
    close of the period against the equity at the end of the one before (the starting equity for the first)."""
    month_end: dict[str, float] = {}
    day = None
    month = ""
    for ts, eq in curve:
        if ts // DAY_MS != day:  # a month is told from its UTC day, once per day
            day = ts // DAY_MS
            month = month_of(ts)
        month_end[month] = eq  # the curve is in time order: the last point of a month stays
    months: dict[str, float] = {}
    years: dict[str, float] = {}
    prev = year_base = start_equity
    year = None
    for month, eq in month_end.items():
        if month[:4] != year:
            year, year_base = month[:4], prev
        months[month] = round(100.0 * (eq / prev - 1.0), 3) if prev > 0 else 0.0
        years[month[:4]] = round(100.0 * (eq / year_base - 1.0), 3) if year_base > 0 else 0.0
        prev = eq
    return {"monthly": months, "yearly": years}


def trade_table(trades: Iterable[ClosedTrade], key: str) -> dict[str, dict[str, Any]]:
    """Closed trades grouped by `symbol` or `reason`: count, wins, win rate, net P&L, fees, average return and
    average holding time, most trades first."""
    groups: dict[str, list[ClosedTrade]] = {}
    for t in trades:
        groups.setdefault(getattr(t, key), []).append(t)
    table: dict[str, dict[str, Any]] = {}
    for name, ts in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        wins = sum(1 for t in ts if t.pnl > 0)
        table[name] = {
            "trades": len(ts),
            "wins": wins,
            "win_rate_pct": round(100.0 * wins / len(ts), 2),
            "pnl": round(sum(t.pnl for t in ts), 2),
            "fees": round(sum(t.fees for t in ts), 4),
            "avg_return_pct": round(sum(t.return_pct for t in ts) / len(ts), 3),
            "avg_hold_hours": round(sum(t.closed_ts - t.opened_ts for t in ts) / len(ts) / 3_600_000, 2),
        }
    return table


def buy_and_hold(prices: dict[str, tuple[Sequence[int], Sequence[float], float]], start_equity: float,
                 timeframe_ms: int) -> dict[str, Any]:
    """The starting equity split equally between the symbols, each bought at the open of its first bar and held to
    its last close, with no fees: {symbol: (bar open times, closes, first open)}. Its return, CAGR and max drawdown,
    and the return of each symbol."""
    if not prices or start_equity <= 0:
        return {"return_pct": 0.0, "end_equity": round(start_equity, 2), "cagr_pct": None, "max_drawdown_pct": 0.0,
                "per_symbol": {}}
    share = start_equity / len(prices)
    units = {s: share / first for s, (_, _, first) in prices.items() if first > 0}
    value = {s: share for s in prices}  # a symbol not bought yet counts at its share
    times_of = [times for times, _, _ in prices.values()]
    points: list[tuple[int, float]] = []
    if all(times == times_of[0] for times in times_of):
        # Every symbol has a bar at every time (the usual case): each point sums the symbols' values in the same
        # order as below, a whole column at a time.
        held = [map(mul, repeat(units.get(s, 0.0)), closes) for s, (_, closes, _) in prices.items()]
        points = list(zip(map(add, times_of[0], repeat(timeframe_ms)), map(sum, zip(*held))))
        start_ts = times_of[0][0] if times_of[0] else 0
    else:
        steps = sorted((ts, s, close) for s, (times, closes, _) in prices.items() for ts, close in zip(times, closes))
        for i, (ts, s, close) in enumerate(steps):
            value[s] = units.get(s, 0.0) * close
            if i + 1 == len(steps) or steps[i + 1][0] != ts:  # every symbol's bar at this time is in
                points.append((ts + timeframe_ms, sum(value.values())))
        start_ts = steps[0][0] if steps else 0
    end = points[-1][1] if points else start_equity
    growth = cagr(start_equity, end, points[-1][0] - start_ts) if points else None
    return {
        "return_pct": round(100.0 * (end / start_equity - 1.0), 3),
        "end_equity": round(end, 2),
        "cagr_pct": round(100.0 * growth, 3) if growth is not None else None,
        "max_drawdown_pct": drawdown(points, start_ts, start_equity)["max_pct"],
        "per_symbol": {s: round(100.0 * (closes[-1] / first - 1.0), 3) if closes and first > 0 else 0.0
                       for s, (_, closes, first) in prices.items()},
    }


def curve_figures(curve: Sequence[tuple[int, float]], start_equity: float, timeframe_ms: int) -> dict[str, Any]:
    """Every figure of the equity curve for the report. Sharpe and Sortino are annualised by the curve's own step,
    which is the timeframe unless the files close at different minutes (an hourly file on the hour and another at
    half past close a bar of the books every 30 minutes)."""
    periods = YEAR_MS / curve_step(curve, timeframe_ms)
    rets = returns(curve, start_equity)
    start_ts = curve[0][0] if curve else 0
    closes = [(ts + timeframe_ms, eq) for ts, eq in curve]
    deepest, dd = _drawdown(closes, start_ts, start_equity)
    end = curve[-1][1] if curve else start_equity
    growth = cagr(start_equity, end, closes[-1][0] - start_ts) if curve else None
    cal = calmar(growth, deepest)
    sor = sortino(rets, periods)
    return {
        "max_drawdown_pct": dd["max_pct"],
        "drawdown": dd,
        "cagr_pct": round(100.0 * growth, 3) if growth is not None else None,
        "sharpe": round(sharpe(rets, periods), 3),
        "sortino": round(sor, 3) if sor is not None else None,
        "calmar": round(cal, 3) if cal is not None else None,
        "returns_pct": period_returns(curve, start_equity),
    }


def curve_step(curve: Sequence[tuple[int, float]], timeframe_ms: int) -> int:
    """The most common step between the curve's bar times (the smaller of two as common); `timeframe_ms` for a
    curve of fewer than two points."""
    steps = Counter(b[0] - a[0] for a, b in zip(curve, curve[1:]))
    if not steps:
        return timeframe_ms
    top = max(steps.values())
    return min(step for step, n in steps.items() if n == top)
