"""A console without colour (NO_COLOR set: textual's monochrome filter) draws every view at 80x24: the trades view
with open positions leaves a column out (width 0), which textual's table draws as an empty segment without a style,
and the filter crashed on it: the console stopped, and the engine with it."""

from __future__ import annotations

from conftest import make_settings
from ffe_engine.clock import ManualClock
from ffe_engine.ids import IdSource
from ffe_engine.market.simulated import SimulatedFeed
from ffe_tui.app import ConsoleApp
from test_tui_helpers import START_TS, screen_text, until

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]


async def test_a_console_without_colour_shows_the_trades_view_with_a_column_left_out(tmp_path, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    settings = make_settings(tmp_path, engine={"symbols": SYMBOLS, "warmup_bars": 100},
                             risk={"stop_loss_atr": 20, "take_profit_atr": 30},  # wide: positions stay open
                             market={"speed": 0.0, "seed": 7}, monitor={"enabled": False})
    clock = ManualClock()
    feed = SimulatedFeed(SYMBOLS, settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0, start_ts=START_TS,
                         max_bars=60)
    app = ConsoleApp(settings, feed=feed, clock=clock, ids=IdSource(seed=7))
    async with app.run_test(size=(80, 24)) as pilot:
        await until(pilot, lambda: app.feed_ended, "the market to end", timeout=60)
        assert app.engine.portfolio.positions, "no position open to show"
        for key in "2134567":
            await pilot.press(key)
            await pilot.pause(0.3)
            assert app.return_code is None and app.is_running, f"view {key}: {screen_text(app)}"
        await pilot.press("2")
        await pilot.pause(0.3)
        shown = screen_text(app)
        assert "+age, trade id" in shown or " more" in shown, shown  # columns left out, said in the headings
        assert any(s in shown for s in app.engine.portfolio.positions), shown
    assert app.return_code in (None, 0)
