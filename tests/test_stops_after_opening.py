"""A position's stop-loss and take-profit are watched on prices after it was opened, on a live engine against the
fake Binance: a candle that ended before the position existed says nothing of it, and of a candle the position was
opened in only the close is surely later than the fill.

The engine's clock is kept on the fake's market clock (SteppedClock moved to it), so the fill's time and the
candles' times are on one time line, as an exchange's candles and the machine's clock are when they agree. The
market is flat at 30,000: each candle's low is 29,970, its high 30,030, its close 30,000 (fake_exchange.kline).
"""

from __future__ import annotations

import pytest

from test_live_engine import running_live
from live_helpers import BTC, M, SteppedClock, fx, next_bar, rows  # noqa: F401

LOW, CLOSE, HIGH = 29_970.0, 30_000.0, 30_030.0


def flat(symbol: str, ts: int) -> float:
    return CLOSE


class MarketClock(SteppedClock):
    """SteppedClock whose times of day (the fills' too) move with it."""

    def now_ms(self) -> int:
        return int(self.wall() * 1000)


def on_market_time(clock: SteppedClock, fx) -> None:
    """The engine's clock moved to the fake's market clock."""
    clock.forward(fx.market_clock() / 1000 - clock.wall())


def flat_market(fx) -> MarketClock:
    """The fake's market flat at CLOSE; a clock for the engine on its market time."""
    fx.price_path = flat
    fx.set_price("BTCUSDT", CLOSE)
    clock = MarketClock()
    on_market_time(clock, fx)
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


async def test_a_candle_that_ended_before_the_position_opened_does_not_stop_it_out(tmp_path, fx):
    """The feed's poll comes late: a candle closes at the exchange, the position is opened (an approval, an
    operator's order), and only then does the engine see the candle. Its low, below the new position's stop-loss,
    is a price from before the position: no exit. The stop still works on the candles after it."""
    clock = flat_market(fx)
    async with running_live(tmp_path, fx, clock) as running:
        e = running.engine
        fx.market_clock.step()  # a candle closes at the exchange; the engine has not polled it yet
        on_market_time(clock, fx)
        pos = await bought(e)
        pos.stop_loss = LOW + 10  # the unseen candle's low is below it, its close above
        (late,) = await candles_now(e)
        assert late.ts + M < pos.opened_ts and late.low < pos.stop_loss < late.close
        assert sells(fx) == [] and BTC in e.portfolio.positions

        # the candle the position was opened in: only its close (above the stop) is surely after the fill
        assert await next_bar(e, fx) == 1
        on_market_time(clock, fx)
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
        on_market_time(clock, fx)  # half way through the candle still open at the exchange
        pos = await bought(e)
        pos.stop_loss = {"stop_loss_under_the_low_only": LOW + 10, "stop_loss_over_the_close": CLOSE + 10}.get(level)
        pos.take_profit = {"take_profit_under_the_high_only": HIGH - 10,
                           "take_profit_under_the_close": CLOSE - 10}.get(level)
        assert await next_bar(e, fx) == 1
        assert e.last_bar_ts[BTC] < pos.opened_ts < e.last_bar_ts[BTC] + M
        assert [o.side for o in sells(fx)] == (["SELL"] if exits else [])
        assert (BTC in e.portfolio.positions) is not exits


async def test_a_machine_clock_far_ahead_of_the_exchange_s_leaves_no_position_unwatched(tmp_path, fx):
    """Every candle then seems to have ended before the fill. Only the first the engine sees after it (what a late
    poll hands over) can be from before the position: the stop-loss is watched from the next one on."""
    clock = flat_market(fx)
    async with running_live(tmp_path, fx, clock, risk={"stale_after_bars": 10_000}) as running:
        e = running.engine
        clock.forward(86_400)  # this machine's clock a day ahead of the exchange's (DATA_STALE let through)
        pos = await bought(e)
        pos.stop_loss = LOW + 10
        assert await next_bar(e, fx) == 1
        assert e.last_bar_ts[BTC] + M < pos.opened_ts
        assert sells(fx) == [] and BTC in e.portfolio.positions
        assert await next_bar(e, fx) == 1
        (sell,) = sells(fx)
        assert sell.status == "FILLED" and BTC not in e.portfolio.positions
