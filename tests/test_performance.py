"""The backtest report's figures on small constructed curves and trades whose answers are worked out by hand:
drawdown dates and duration, CAGR, Sharpe, Sortino, Calmar, monthly and yearly returns, the per-symbol and
per-exit tables, and buying and holding."""

from __future__ import annotations

import math
from datetime import datetime, timezone

import pytest

from ffe_engine import performance
from ffe_engine.model import ClosedTrade, Side

HALF_DAY = 43_200_000
HOUR = 3_600_000


def ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp() * 1000)


def two_year_curve() -> list[tuple[int, float]]:
    """12-hour bars from 2021-01-01 for 1461 bars: exactly 730.5 days = two years of 365.25 days.
    Flat at 100 through January; on 1 February +10% (110), then 99, then 88 (20% under the 110 peak); flat until the
    first bar of March takes it to 121, where it stays to the end."""
    t0 = ms("2021-01-01T00:00:00")
    march = ms("2021-03-01T00:00:00")
    equity = []
    for k in range(1461):
        ts = t0 + k * HALF_DAY
        if k < 62:
            eq = 100.0
        elif k == 62:
            eq = 110.0
        elif k == 63:
            eq = 99.0
        elif ts < march:
            eq = 88.0
        else:
            eq = 121.0
        equity.append((ts, eq))
    assert equity[62][0] == ms("2021-02-01T00:00:00") and equity[118][0] == march
    return equity


def test_drawdown_dates_name_the_peak_the_trough_and_the_recovery_at_bar_close_times():
    figures = performance.curve_figures(two_year_curve(), 100.0, HALF_DAY)
    dd = figures["drawdown"]
    assert figures["max_drawdown_pct"] == dd["max_pct"] == 20.0  # 110 -> 88
    assert dd["peak"] == "2021-02-01T12:00:00Z"  # the close of the bar opened at 00:00
    assert dd["trough"] == "2021-02-02T12:00:00Z"
    assert dd["recovered"] == "2021-03-01T12:00:00Z"  # the close of March's first bar, at 121
    assert dd["duration_days"] == 28.0 == dd["longest_days"]


def test_cagr_calmar_sharpe_and_sortino_of_a_known_curve():
    figures = performance.curve_figures(two_year_curve(), 100.0, HALF_DAY)
    # 100 -> 121 over exactly two years: 1.21 ** 0.5 - 1 = 10% a year.
    assert figures["cagr_pct"] == 10.0
    assert figures["calmar"] == 0.5  # 10% / 20%
    # 1461 bar returns, all 0 but four: +10%, -10% (110 -> 99), -1/9 (99 -> 88), +37.5% (88 -> 121).
    n, periods = 1461, 730.5  # 730.5 twelve-hour bars in a year of 365.25 days
    mean = (0.1 - 0.1 - 1 / 9 + 0.375) / n
    sd = math.sqrt((sum((r - mean) ** 2 for r in (0.1, -0.1, -1 / 9, 0.375)) + (n - 4) * mean ** 2) / (n - 1))
    downside = math.sqrt((0.1 ** 2 + (1 / 9) ** 2) / n)
    assert figures["sharpe"] == round(mean / sd * math.sqrt(periods), 3)
    assert figures["sortino"] == round(mean / downside * math.sqrt(periods), 3) == 1.248


def test_a_growth_rate_beyond_a_float_has_no_value():
    """A short span with a large move annualises past what a float holds (x3 in an hour is 3 ** 8766 a year): the
    CAGR, and the Calmar ratio made from it, have no value then, as when nothing is measured."""
    assert performance.cagr(100.0, 300.0, 3_600_000) is None
    assert performance.cagr(100.0, 101.0, 3_600_000) == pytest.approx(1.01 ** 8766 - 1)  # large, and a float
    figures = performance.curve_figures([(0, 100.0), (3_600_000, 300.0)], 100.0, 3_600_000)
    assert figures["cagr_pct"] is None and figures["calmar"] is None
    hold = performance.buy_and_hold({"X/USD": ([0, 3_600_000], [100.0, 300.0], 100.0)}, 100.0, 3_600_000)
    assert hold["cagr_pct"] is None and hold["return_pct"] == 200.0


def test_monthly_and_yearly_returns_of_a_known_curve():
    r = performance.curve_figures(two_year_curve(), 100.0, HALF_DAY)["returns_pct"]
    assert r["monthly"]["2021-01"] == 0.0
    assert r["monthly"]["2021-02"] == -12.0  # 100 -> 88
    assert r["monthly"]["2021-03"] == 37.5  # 88 -> 121
    assert all(v == 0.0 for k, v in r["monthly"].items() if k >= "2021-04")
    assert list(r["monthly"])[-1] == "2023-01"  # the last bar opens on 2023-01-01
    assert r["yearly"] == {"2021": 21.0, "2022": 0.0, "2023": 0.0}


def test_a_curve_that_never_recovers_runs_its_drawdown_to_the_end_and_a_rising_one_has_none():
    t0 = ms("2022-06-01T00:00:00")
    falling = [(t0 + k * HOUR, eq) for k, eq in enumerate([100.0, 105.0, 84.0, 90.0])]
    dd = performance.curve_figures(falling, 100.0, HOUR)["drawdown"]
    assert (dd["max_pct"], dd["peak"], dd["trough"], dd["recovered"]) == (
        20.0, "2022-06-01T02:00:00Z", "2022-06-01T03:00:00Z", None)
    assert dd["duration_days"] == dd["longest_days"] == round(2 * HOUR / 86_400_000, 6)  # to the last close
    rising = [(t0 + k * HOUR, 100.0 + k) for k in range(5)]
    figures = performance.curve_figures(rising, 100.0, HOUR)
    assert figures["drawdown"]["peak"] is None and figures["max_drawdown_pct"] == 0.0
    assert figures["sortino"] is None and figures["calmar"] is None  # nothing lost: no finite ratio


def trade(symbol: str, pnl: float, reason: str, hours: int, entry: float = 100.0, qty: float = 1.0) -> ClosedTrade:
    return ClosedTrade(symbol=symbol, side=Side.BUY, quantity=qty, entry_price=entry, exit_price=entry + pnl,
                       pnl=pnl, fees=0.1, reason=reason, opened_ts=0, closed_ts=hours * HOUR)


def test_trade_tables_by_symbol_and_by_exit_reason():
    trades = [trade("BTC/USD", 5.0, "take_profit", 2), trade("BTC/USD", -3.0, "stop_loss", 4),
              trade("ETH/USD", 4.0, "take_profit", 6)]
    by_symbol = performance.trade_table(trades, "symbol")
    assert list(by_symbol) == ["BTC/USD", "ETH/USD"]  # most trades first
    assert by_symbol["BTC/USD"] == {"trades": 2, "wins": 1, "win_rate_pct": 50.0, "pnl": 2.0, "fees": 0.2,
                                    "avg_return_pct": 1.0, "avg_hold_hours": 3.0}
    by_reason = performance.trade_table(trades, "reason")
    assert by_reason["take_profit"]["trades"] == 2 and by_reason["take_profit"]["pnl"] == 9.0
    assert by_reason["take_profit"]["win_rate_pct"] == 100.0 and by_reason["take_profit"]["avg_hold_hours"] == 4.0
    assert by_reason["stop_loss"] == {"trades": 1, "wins": 0, "win_rate_pct": 0.0, "pnl": -3.0, "fees": 0.1,
                                      "avg_return_pct": -3.0, "avg_hold_hours": 4.0}


def test_buy_and_hold_splits_the_equity_equally_and_counts_a_late_symbol_at_its_share():
    day = 86_400_000
    t0 = ms("2023-01-01T00:00:00")
    prices = {
        "A/USD": ([t0, t0 + day, t0 + 2 * day], [110.0, 90.0, 120.0], 100.0),  # 500 buys 5
        "B/USD": ([t0 + day, t0 + 2 * day], [60.0, 40.0], 50.0),  # from the second day; 500 buys 10
    }
    hold = performance.buy_and_hold(prices, 1000.0, day)
    # Values at each close: 550 + 500 (B not bought yet) = 1050; 450 + 600 = 1050; 600 + 400 = 1000.
    assert hold["end_equity"] == 1000.0 and hold["return_pct"] == 0.0
    assert hold["max_drawdown_pct"] == round(100 * 50 / 1050, 3)
    assert hold["per_symbol"] == {"A/USD": 20.0, "B/USD": -20.0}


def test_the_printed_drawdown_names_its_dates_and_its_recovery():
    from ffe_engine.backtest_report import drawdown_lines

    figures = performance.curve_figures(two_year_curve(), 100.0, HALF_DAY)
    assert drawdown_lines(figures) == [
        "  max drawdown  20.00%  peak 2021-02-01T12:00:00Z, trough 2021-02-02T12:00:00Z",
        "  recovered     2021-03-01T12:00:00Z, 28d00h after the peak; longest time under a peak 28d00h"]
    rising = performance.curve_figures([(0, 101.0), (HOUR, 102.0)], 100.0, HOUR)
    assert drawdown_lines(rising) == ["  max drawdown  0.00%"]


def test_the_printed_drawdown_durations_are_to_the_minute():
    """Durations of hours and minutes are printed as the curve has them, not from days rounded to two places
    (0.01 day is about 14 minutes: 2h read 1h55m)."""
    from ffe_engine.backtest_report import drawdown_lines

    t0, minute = ms("2022-06-01T00:00:00"), 60_000
    equities = [100.0, 99.0, 101.0, 100.0, 98.0, 99.0, 99.5]  # under a peak 2h, then 4h to the end
    curve = [(t0 + k * HOUR, eq) for k, eq in enumerate(equities)]
    lines = drawdown_lines(performance.curve_figures(curve, 100.0, HOUR))
    assert lines[1] == "  recovered     no, 4h00m under that peak by the end; longest time under a peak 4h00m", lines
    curve = [(t0 + k * 131 * minute, eq) for k, eq in enumerate([100.0, 95.0, 96.0])]
    lines = drawdown_lines(performance.curve_figures(curve, 100.0, minute))
    assert lines[1].startswith("  recovered     no, 4h22m under that peak by the end"), lines


def test_calmar_is_measured_on_the_drawdown_itself_not_its_rounded_figure():
    """A shallow drawdown (0.009918%) reported as 0.010% to three places: Calmar divides by the drawdown itself,
    not by that rounded figure (off by almost 1% here)."""
    from ffe_engine.performance import cagr, calmar, curve_figures

    hour = 3_600_000
    start = 10_000.0
    curve = [(i * hour, start * (1.0 + 0.0001 * i)) for i in range(1, 2000)]
    peak = curve[-1][1]
    curve.append((2000 * hour, peak * (1.0 - 0.00009918)))
    curve += [(i * hour, peak * (1.0 + 0.0001 * (i - 2000))) for i in range(2001, 3000)]
    figures = curve_figures(curve, start, hour)
    assert figures["max_drawdown_pct"] == 0.01
    growth = cagr(start, curve[-1][1], curve[-1][0] + hour - curve[0][0])
    assert figures["calmar"] == round(calmar(growth, 0.00009918), 3) != round(calmar(growth, 0.0001), 3)
