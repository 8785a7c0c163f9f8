"""A live position's age: from its fill to now on the engine's clock, in `ffe ctl trades`, the console's positions
pane, its trades view and the line under it. A live fill is stamped with the engine's (wall) clock, while the
market time is the open time of the last closed candle: their difference read 0s for up to two timeframes after
the fill, then lagged a timeframe behind.

Real parts: an engine opened in live mode (real ccxt) against the fake Binance on 127.0.0.1, its SQLite database,
`ffe ctl` as a subprocess, the console under Pilot. The engine's clock is the wall clock until the test pins it: the
age is read at a moment the test chooses, 90 minutes after the fill, not whenever the test happens to run.
"""

from __future__ import annotations

from ffe_engine.clock import WallClock
from ffe_tui.app import ConsoleApp
from ffe_tui.panes import PositionsTable
from ffe_tui.views import TradesTable

from conftest import engine_session
from live_helpers import (BTC, fx, live_config, live_env, live_settings, next_bar, run_ffe_async,  # noqa: F401
                          write_config)
from test_tui_helpers import screen_text, status_text, until

HELD_MS = 90 * 60_000  # the age read: 1h30m after the fill


class PinnedClock(WallClock):
    """Wall time, until `pinned` is set: then `now_ms` is that moment."""

    def __init__(self) -> None:
        self.pinned: int | None = None

    def now_ms(self) -> int:
        return super().now_ms() if self.pinned is None else self.pinned


async def test_ctl_trades_gives_a_live_position_s_age_from_its_fill_to_now(tmp_path, fx):
    clock = PinnedClock()
    write_config(tmp_path, live_config(fx))
    async with engine_session(live_settings(tmp_path, fx), live=True, clock=clock) as running:
        e = running.engine
        await running.start_control()
        assert await next_bar(e, fx) == 1
        await e.resume(by="test")
        bought = await e.operator_order(BTC, "buy", 0.001)
        assert bought["accepted"], bought
        (pos,) = e.snapshot()["positions"]
        clock.pinned = pos["opened_ts"] + HELD_MS
        trades = await run_ffe_async(tmp_path, "ctl", "trades", env=live_env(fx), name="trades")
        assert trades.proc.returncode == 0, trades.stderr
        head, row = [line.split() for line in trades.stdout.splitlines()[:2]]
        assert head[-3:] == ["age", "SL", "TP"], head  # counted from the right: the id may be two words
        assert row[-3] == "1h30m", trades.stdout


async def test_the_console_gives_a_live_position_s_age_from_its_fill_to_now(tmp_path, fx):
    clock = PinnedClock()
    app = ConsoleApp(live_settings(tmp_path, fx), live=True, clock=clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, lambda: app.snap is not None and "PAUSED" in status_text(app), "the live engine PAUSED")
        e = app.engine
        fx.market_clock.step()
        await until(pilot, lambda: BTC in e.portfolio.last_price, "a price of BTC/USDT")
        await e.resume(by="test")
        bought = await e.operator_order(BTC, "buy", 0.001)
        assert bought["accepted"], bought
        (pos,) = e.snapshot()["positions"]
        clock.pinned = pos["opened_ts"] + HELD_MS

        def age_in(table) -> str:
            (key,) = list(table.rows)
            return str(table.get_cell(key, "age"))

        positions = app.query_one(PositionsTable)
        await until(pilot, lambda: positions.row_count == 1 and age_in(positions) == "1h30m",
                    "the positions pane's age from the fill")
        await pilot.press("2")
        trades = app.query_one(TradesTable)
        await until(pilot, lambda: trades.row_count == 1 and age_in(trades) == "1h30m", "the trades view's age")
        await pilot.press("j")  # the trade, chosen: the line under the table says when it opened
        await until(pilot, lambda: "(1h30m ago)" in screen_text(app), "the chosen trade's age under the table")
