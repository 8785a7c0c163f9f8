"""A new UTC day begins at the equity at midnight's prices: with the marks of every symbol's bar closing at
midnight, whenever the engine's housekeeping (each second) looks at the clock meanwhile, and across a restart.

A paper engine on a market of two symbols holding positions over a midnight, against the same market undisturbed:
the same day start, as a backtest of the candles has it, when
- its feed is held for a moment between the two symbols' candles of the bar closing at midnight (the market clock
  already at midnight, one candle marked, the other not);
- the last symbol's candle of that bar is slow to process (an order in flight polled slowly: a loaded machine, a slow
  disk), the housekeeping running in the middle of it;
- a replay is stopped between the two symbols' candles of that bar and started again.

The reported case: the console's status line after the same seeded market showed "day +2.05" in one run and
"day +2.33" in another, the housekeeping having begun the day between two candles of that bar in one of them."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from conftest import db_rows, engine_session, make_settings, run_ffe
from ffe_engine.clock import DAY_MS, ManualClock
from ffe_engine.ids import IdSource
from ffe_engine.market.csvdata import load_csv
from ffe_engine.market.simulated import SimulatedFeed
from test_restart_midbar import BARS, write_market

SYMBOLS = ["BTC/USDT", "ETH/USDT"]
START_TS = 1_700_000_040_000  # 2023-11-14 22:14 UTC
MIDNIGHT = (START_TS // DAY_MS + 1) * DAY_MS
MINUTE = 60_000
HOUR = 3_600_000
HOLD_S = 2.5  # over two housekeeping rounds


class HeldAtMidnight(SimulatedFeed):
    """The simulated market; before the last symbol's candle of the bar closing at midnight, `before_last()` runs,
    and with `hold` the feed waits HOLD_S seconds of real time: the housekeeping looks at the clock, which says
    midnight already."""

    def __init__(self, *args, hold: bool, before_last, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hold = hold
        self.before_last = before_last

    async def candles(self):
        async for c in super().candles():
            if c.ts == MIDNIGHT - MINUTE and c.symbol == SYMBOLS[-1]:
                await self.before_last()
                if self.hold:
                    await asyncio.sleep(HOLD_S)
            yield c


async def day_start(tmp_path, *, hold: str | None) -> tuple[float, float]:
    """The day's start equity and the equity at the end of a run over the midnight, both symbols held from its
    first bar. `hold`: "feed" (between the two symbols' candles of the bar closing at midnight), "candle" (in the
    last one's processing: a sale of a little BTC placed before it, polled slowly there) or None."""
    settings = make_settings(tmp_path, engine={"symbols": SYMBOLS, "warmup_bars": 100, "approval": "manual"},
                             risk={"max_var_pct": 100, "max_concentration_pct": 100, "max_position_pct": 100,
                                   "max_correlation": 1.0, "stop_loss_atr": 1_000, "take_profit_atr": 1_000},
                             ensemble={"strategy": "unanimous", "min_votes": 4},
                             market={"speed": 0.0, "seed": 7}, monitor={"enabled": False})
    clock = ManualClock()
    engine = None

    async def sell_a_little() -> None:  # the same order in every run: an order in flight while the candle is decided
        placed = await engine.operator_order(SYMBOLS[0], "sell", 0.01)
        assert placed["accepted"], placed

    feed = HeldAtMidnight(SYMBOLS, settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0, start_ts=START_TS,
                          max_bars=(MIDNIGHT - START_TS) // MINUTE + 5, hold=hold == "feed", before_last=sell_a_little)
    async with engine_session(settings, feed=feed, clock=clock, ids=IdSource(seed=7)) as running:
        e = engine = running.engine
        await e.resume(by="test")
        for symbol in SYMBOLS:
            placed = await e.operator_order(symbol, "buy", round(3_000.0 / e.portfolio.last_price[symbol], 4))
            assert placed["accepted"], placed
        if hold == "candle":
            poll = e.orders.poll

            async def slow_poll(*args, **kwargs):
                # In the last symbol's candle of the bar closing at midnight (the first candle of the next day
                # begins the day before it polls).
                if e.last_bar_ts.get(SYMBOLS[-1]) == MIDNIGHT - MINUTE and e.portfolio.day < MIDNIGHT // DAY_MS:
                    await asyncio.sleep(HOLD_S)
                return await poll(*args, **kwargs)

            e.orders.poll = slow_poll
        await e.run()
        assert all(s in e.portfolio.positions for s in SYMBOLS), e.portfolio.positions
        assert e.portfolio.day == MIDNIGHT // DAY_MS
        return e.portfolio.day_start_equity, e.portfolio.equity()


@pytest.mark.parametrize("hold", ["feed", "candle"])
async def test_the_day_begins_at_midnight_s_marks_whenever_the_clock_is_looked_at(tmp_path, hold):
    undisturbed = await day_start(tmp_path / "undisturbed", hold=None)
    held = await day_start(tmp_path / "held", hold=hold)
    assert held[1] == pytest.approx(undisturbed[1], abs=1e-9)  # the same market, the same books at the end
    assert held[0] == pytest.approx(undisturbed[0], abs=1e-9), (held, undisturbed)


# ---------------------------------------------------------------------------------------------------- a restart
def books(cwd: Path) -> dict:
    ((value,),) = db_rows(cwd / "data" / "ffe.db", "SELECT value FROM kv WHERE key = 'portfolio'")
    return json.loads(value)


@pytest.mark.parametrize("warmup", [BARS, 0])
def test_a_replay_stopped_between_two_symbols_candles_of_the_bar_closing_at_midnight_begins_the_day_as_unstopped(
        tmp_path, warmup):
    """With a warm-up, which brings the bar closing at midnight, and without one: the feed brings it then."""
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir()
    write_market(whole)
    config = whole / "config.toml"
    config.write_text(config.read_text().replace(f"warmup_bars = {BARS}", f"warmup_bars = {warmup}"))
    btc_first = load_csv(whole / "BTC-USD_1h.csv", symbol="BTC/USD").ts[0]
    first = run_ffe(whole, "run", "--headless")
    assert first.returncode == 0, first.stderr
    # A midnight ETH/USD is held over, its price moving in the bar closing then: that bar's marks make the day.
    eth = load_csv(whole / "ETH-USD_1h.csv", symbol="ETH/USD")
    close = dict(zip(eth.ts, eth.close))
    held = db_rows(whole / "data" / "ffe.db", "SELECT opened_ts, closed_ts FROM trades WHERE symbol = 'ETH/USD'")
    midnights = [m for m in range((btc_first // DAY_MS + 2) * DAY_MS, btc_first + (BARS - 10) * HOUR, DAY_MS)
                 if any(o < m - HOUR and c > m + HOUR for o, c in held) and close[m - HOUR] != close[m - 2 * HOUR]]
    assert midnights, "no midnight with ETH/USD held over it in the sample's first bars"
    m = midnights[0]
    shutil.rmtree(whole / "data")
    shutil.rmtree(whole / "logs")
    shutil.copytree(whole, stopped)
    # Both end after BTC/USD's candle of the bar opening at midnight; one of them stopped after its candle of the
    # bar before, ETH/USD's candle of that bar not handed out yet, and started again.
    bars = (m - btc_first) // HOUR + 1
    assert run_ffe(whole, "run", "--headless", "--max-bars", str(bars)).returncode == 0
    assert run_ffe(stopped, "run", "--headless", "--max-bars", str(bars - 1)).returncode == 0
    last = dict(db_rows(stopped / "data" / "ffe.db", "SELECT symbol, MAX(ts) FROM decisions GROUP BY symbol"))
    assert last == {"BTC/USD": m - HOUR, "ETH/USD": m - 2 * HOUR}, last  # stopped inside the bar closing at midnight
    again = run_ffe(stopped, "run", "--headless", "--max-bars", "1")
    assert again.returncode == 0, again.stderr
    want, got = books(whole), books(stopped)
    assert got["day"] == want["day"] == m // DAY_MS
    assert got["day_start_equity"] == pytest.approx(want["day_start_equity"], abs=1e-6), (got, want)
