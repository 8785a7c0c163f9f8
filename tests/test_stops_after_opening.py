"""A position's stop-loss and take-profit are watched on prices after it was opened, on a live engine against the
fake Binance: a candle that ended before the position's order was placed says nothing of it, and of the candle it
was placed in only the close is surely later than the fill.

The fake places its orders on its market clock, the one its candles keep, as an exchange does; the machine's clock
(the engine's) may be ahead of it or behind. The market is flat at 30,000: each candle's low is 29,970, its high
30,030, its close 30,000 (fake_exchange.kline).
"""

from __future__ import annotations

import pytest

from conftest import engine_session
from test_live_engine import running_live
from live_helpers import BTC, M, SteppedClock, fx, next_bar, rows  # noqa: F401

LOW, CLOSE, HIGH = 29_970.0, 30_000.0, 30_030.0
# DATA_STALE judges the newest candle by the machine's clock: let it through where that clock is made to disagree
ANY_AGE = {"stale_after_bars": 10_000}


def flat(symbol: str, ts: int) -> float:
    return CLOSE


class ShiftedClock(SteppedClock):
    """The machine's clock, `forward` seconds off (its times of day too)."""

    def now_ms(self) -> int:
        return int(self.wall() * 1000)


def flat_market(fx) -> ShiftedClock:
    """The fake's market flat at CLOSE, its orders placed on its market clock; a clock for the engine on the same
    time (moved off it by a test's `forward`)."""
    fx.price_path = flat
    fx.set_price("BTCUSDT", CLOSE)
    fx.order_clock = fx.market_clock
    clock = ShiftedClock()
    clock.forward(fx.market_clock() / 1000 - clock.wall())
    return clock


async def candles_now(e) -> list:
    """The candles the engine's feed releases now, through on_candle, without moving the market."""
    got = await e.feed.poll()
    for c in got:
        await e.on_candle(c)
    return got


async def bought(e) -> object:
    result = await e.operator_order(BTC, "buy", 0.02)
    assert result["accepted"], result
    return e.portfolio.positions[BTC]


def sells(fx) -> list:
    return [o for o in fx.orders if o.side == "SELL"]


def placed_at(fx) -> int:
    (buy,) = [o for o in fx.orders if o.side == "BUY"]
    return buy.time


@pytest.mark.parametrize("late", [1, 2])
async def test_candles_that_ended_before_the_position_opened_do_not_stop_it_out(tmp_path, fx, late):
    """The feed's poll comes late: candles close at the exchange, the position is opened (an approval, an
    operator's order), and only then does the engine see them. Their lows, below the new position's stop-loss, are
    prices from before the position: no exit. The stop still works on the candles after it."""
    clock = flat_market(fx)
    async with running_live(tmp_path, fx, clock) as running:
        e = running.engine
        fx.market_clock.step(late)  # candles close at the exchange; the engine has not polled them yet
        pos = await bought(e)
        pos.stop_loss = LOW + 10  # their lows are below it, their closes above
        got = await candles_now(e)
        assert len(got) == late and all(c.ts + M <= placed_at(fx) and c.low < pos.stop_loss < c.close for c in got)
        assert sells(fx) == [] and BTC in e.portfolio.positions

        # the candle the position was opened in: only its close (above the stop) is surely after the fill
        assert await next_bar(e, fx) == 1
        assert sells(fx) == [] and BTC in e.portfolio.positions

        # a candle wholly after the fill: its low is the position's own price, and the stop-loss goes out
        assert await next_bar(e, fx) == 1
        (sell,) = sells(fx)
        assert sell.status == "FILLED"
        assert BTC not in e.portfolio.positions
        assert rows(running.store.path, "SELECT reason FROM trades") == [("stop_loss",)]


@pytest.mark.parametrize("level, exits", [
    ("stop_loss_under_the_low_only", False),  # the low before the fill crossed it; the close did not
    ("take_profit_under_the_high_only", False),
    ("stop_loss_over_the_close", True),  # the close, after the fill, is at or below it
    ("take_profit_under_the_close", True),
])
async def test_in_the_candle_the_position_was_opened_in_only_the_close_counts(tmp_path, fx, level, exits):
    clock = flat_market(fx)
    async with running_live(tmp_path, fx, clock) as running:
        e = running.engine
        pos = await bought(e)  # half way through the candle still open at the exchange
        pos.stop_loss = {"stop_loss_under_the_low_only": LOW + 10, "stop_loss_over_the_close": CLOSE + 10}.get(level)
        pos.take_profit = {"take_profit_under_the_high_only": HIGH - 10,
                           "take_profit_under_the_close": CLOSE - 10}.get(level)
        assert await next_bar(e, fx) == 1
        assert e.last_bar_ts[BTC] < placed_at(fx) < e.last_bar_ts[BTC] + M
        assert [o.side for o in sells(fx)] == (["SELL"] if exits else [])
        assert (BTC in e.portfolio.positions) is not exits


@pytest.mark.parametrize("off_s", [86_400, 75, -45, -86_400])
async def test_the_machine_s_clock_off_the_exchange_s_changes_nothing(tmp_path, fx, off_s):
    """The fill's time and the candles' are both the exchange's: this machine's clock ahead of it or behind (by
    less than a bar, more than one, a day) neither passes over the candles after the fill nor lets a low from
    before it stop the position out."""
    clock = flat_market(fx)
    async with running_live(tmp_path, fx, clock, risk=ANY_AGE) as running:
        e = running.engine
        clock.forward(off_s)
        pos = await bought(e)  # half way through the candle still open at the exchange
        pos.stop_loss = LOW + 10
        assert await next_bar(e, fx) == 1  # that candle: its close only
        assert sells(fx) == [] and BTC in e.portfolio.positions
        assert await next_bar(e, fx) == 1  # the next, whole
        (sell,) = sells(fx)
        assert sell.status == "FILLED" and BTC not in e.portfolio.positions


async def test_a_restart_inside_the_candle_of_the_fill_keeps_where_the_position_s_prices_begin(tmp_path, fx):
    """Killed and started again before the candle the position was placed in has closed: that candle's low, from
    before the fill, still does not stop it out (where its prices begin is stored with the fill), and the candle
    after it is watched whole."""
    clock = flat_market(fx)
    async with running_live(tmp_path, fx, clock) as running:
        await bought(running.engine)  # half way through the candle still open at the exchange
        settings = running.engine.settings
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await e.resume(by="test")
        e.portfolio.positions[BTC].stop_loss = LOW + 10
        assert await next_bar(e, fx) == 1  # the candle of the fill: its close only
        assert sells(fx) == [] and BTC in e.portfolio.positions
        assert await next_bar(e, fx) == 1  # the next, whole
        (sell,) = sells(fx)
        assert sell.status == "FILLED" and BTC not in e.portfolio.positions
