"""A new UTC day begins at the equity at midnight's prices: with the marks of every symbol's bar closing at
midnight, whenever the engine's housekeeping (each second) looks at the clock meanwhile. A paper engine on a
market of two symbols holding positions over a midnight, its feed held for a moment between the two symbols'
candles of the bar closing at midnight (the market clock already at midnight, one candle marked, the other not),
against the same market unheld: the same day start, as a backtest of the candles has it.

The reported case: the console's status line after the same seeded market showed "day +2.05" in one run and
"day +2.33" in another, the housekeeping having begun the day between two candles of that bar in one of them."""

from __future__ import annotations

import asyncio

import pytest

from conftest import engine_session, make_settings
from ffe_engine.clock import DAY_MS, ManualClock
from ffe_engine.ids import IdSource
from ffe_engine.market.simulated import SimulatedFeed

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
START_TS = 1_700_000_040_000  # 2023-11-14 22:14 UTC
MIDNIGHT = (START_TS // DAY_MS + 1) * DAY_MS
MINUTE = 60_000


class HeldAtMidnight(SimulatedFeed):
    """The simulated market, held `hold_s` seconds of real time after the first symbol's candle of the bar that
    closes at midnight: long enough for the housekeeping to look at the clock, which says midnight already."""

    def __init__(self, *args, hold_s: float = 0.0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold_s = hold_s

    async def candles(self):
        async for c in super().candles():
            if c.ts == MIDNIGHT - MINUTE and c.symbol == SYMBOLS[1] and self.hold_s:
                await asyncio.sleep(self.hold_s)
            yield c


async def day_start(tmp_path, hold_s: float) -> tuple[float, float]:
    """The day's start equity and the equity at the end of a run over the midnight, both symbols held from its
    first bar."""
    settings = make_settings(tmp_path, engine={"symbols": SYMBOLS, "warmup_bars": 100, "approval": "manual"},
                             risk={"max_var_pct": 100, "max_concentration_pct": 100, "max_position_pct": 100,
                                   "max_correlation": 1.0, "stop_loss_atr": 1_000, "take_profit_atr": 1_000},
                             ensemble={"strategy": "unanimous", "min_votes": 4},
                             market={"speed": 0.0, "seed": 7}, monitor={"enabled": False})
    clock = ManualClock()
    feed = HeldAtMidnight(SYMBOLS, settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0,
                          start_ts=START_TS, max_bars=(MIDNIGHT - START_TS) // MINUTE + 5, hold_s=hold_s)
    async with engine_session(settings, feed=feed, clock=clock, ids=IdSource(seed=7)) as running:
        e = running.engine
        await e.resume(by="test")
        for symbol in SYMBOLS:
            placed = await e.operator_order(symbol, "buy", round(3_000.0 / e.portfolio.last_price[symbol], 4))
            assert placed["accepted"], placed
        await e.run()
        assert all(s in e.portfolio.positions for s in SYMBOLS), e.portfolio.positions
        assert e.portfolio.day == MIDNIGHT // DAY_MS
        return e.portfolio.day_start_equity, e.portfolio.equity()


async def test_the_day_begins_at_midnight_s_marks_whenever_the_clock_is_looked_at(tmp_path):
    unheld = await day_start(tmp_path / "unheld", hold_s=0.0)
    held = await day_start(tmp_path / "held", hold_s=2.5)
    assert held[1] == pytest.approx(unheld[1], abs=1e-9)  # the same market, the same books at the end
    assert held[0] == pytest.approx(unheld[0], abs=1e-9), (held, unheld)
