"""An entry whose stop-loss exit would be below the venue's minimum order is not sent: at its stop the position
would be dust, which no stop-loss sells (it would fall on unwatched). Refused for the strategy (`below_minimum`) and
on the order path for every other caller (an approval's order: `BELOW_MINIMUM`)."""

from __future__ import annotations

from ffe_engine.clock import SimClock
from ffe_engine.model import OrderReason, Side
from ffe_engine.risk import OrderIntent
from live_helpers import fx  # noqa: F401  # a fixture
from pipeline_helpers import make_settings, pipelines, replay_feed, strategy_buys, wave

_ = pipelines  # a fixture

BTC = "BTC/USDT"
ALL_IN = {"max_position_pct": 100, "risk_per_trade_pct": 100}


async def strategy_entry(tmp_path, pipelines, min_notional: float):
    s = make_settings(tmp_path, symbols=(BTC,), risk=ALL_IN, venue={"starting_cash": 1000.0,
                                                                     "min_notional": min_notional})
    clock, script = SimClock(), {}
    path = wave(61, base=100.0, amp=0.03, period=7)
    p = await pipelines(s, script=script, feed=replay_feed(tmp_path, {BTC: path + [path[-1]] * 3}, clock),
                        clock=clock)
    await strategy_buys(p, script, BTC)
    (d,) = [d for d in await p.decisions() if d["action"] == "BUY"]
    return p, d


async def test_an_entry_worth_less_than_the_minimum_at_its_stop_loss_is_not_sent(tmp_path, pipelines):
    p, d = await strategy_entry(tmp_path, pipelines, min_notional=970.0)
    sizing = d["event"]["sizing"]
    qty, stop = d["event"]["quantity"], sizing["stop_loss"]
    assert qty * d["price"] >= 970.0 > qty * stop, (qty, d["price"], stop)  # enough at the price, not at the stop
    assert d["outcome"] == "below_minimum"
    assert "at its stop-loss" in d["event"]["reason"] and "970" in d["event"]["reason"], d["event"]["reason"]
    assert await p.rows("SELECT * FROM orders") == []


async def test_an_entry_above_the_minimum_at_its_stop_loss_is_sent(tmp_path, pipelines):
    p, d = await strategy_entry(tmp_path, pipelines, min_notional=500.0)
    assert d["outcome"] == "submitted"
    await p.bars(1)
    assert BTC in p.engine.portfolio.positions


async def test_the_order_path_refuses_such_an_entry_for_any_caller(tmp_path, pipelines):
    p, _ = await strategy_entry(tmp_path, pipelines, min_notional=970.0)
    price = p.engine.portfolio.last_price[BTC]
    intent = OrderIntent(symbol=BTC, side=Side.BUY, quantity=9.9, reason=OrderReason.OPERATOR, ref_price=price,
                         stop_loss=price * 0.9, take_profit=price * 1.2, by="ctl")
    sub = await p.engine.orders.submit(intent)
    assert not sub.accepted and sub.order is None
    assert sub.reason.startswith("below venue minimum at its stop-loss"), sub.reason
    assert await p.rows("SELECT * FROM orders") == []


async def test_what_the_position_holds_after_a_fee_in_the_coin_bought_is_what_counts_at_the_stop(tmp_path, fx):
    """On an exchange that takes a buy's fee in the coin bought, in whole amount steps: an entry worth the minimum at
    its stop-loss as ordered, not as held (0.0002 BTC ordered, 0.00019 held in steps of 0.00001, at a stop of 25,010
    USDT: 4.75 against a minimum of 5), is refused too."""
    from live_helpers import BTC as LIVE_BTC
    from test_live_engine import running_live

    async with running_live(tmp_path, fx, engine={"reconcile_interval_s": 3600}) as running:
        e = running.engine
        market = e.venue.market(LIVE_BTC)
        assert (market.amount_step, market.min_notional) == (0.00001, 5.0)
        intent = OrderIntent(symbol=LIVE_BTC, side=Side.BUY, quantity=0.0002, reason=OrderReason.OPERATOR,
                             ref_price=30_000.0, stop_loss=25_010.0, take_profit=31_000.0, by="ctl")
        assert not market.below_minimum(0.0002, 25_010.0)  # as ordered it would pass
        sub = await e.orders.submit(intent)
        assert not sub.accepted and sub.reason.startswith("below venue minimum at its stop-loss"), sub.reason
        assert LIVE_BTC not in e.portfolio.positions


async def test_the_paper_venue_takes_its_fee_in_the_quote_so_a_whole_step_held_is_sold_at_the_stop(tmp_path, pipelines):
    """The paper venue charges its fee in the quote currency: an entry of one amount step holds that whole step, worth
    more than the minimum at its stop-loss, and is sent (a fee taken from the coin bought would leave less than a
    step, which no exit could sell: not here)."""
    s = make_settings(tmp_path, symbols=(BTC,), risk=ALL_IN, venue={"starting_cash": 1000.0, "min_notional": 10.0,
                                                                     "amount_step": 1.0})
    clock = SimClock()
    p = await pipelines(s, script={}, feed=replay_feed(tmp_path, {BTC: wave(64, base=100.0, amp=0.03, period=7)},
                                                       clock), clock=clock)
    await p.bars(60)
    price = p.engine.portfolio.last_price[BTC]
    intent = OrderIntent(symbol=BTC, side=Side.BUY, quantity=1.0, reason=OrderReason.OPERATOR, ref_price=price,
                         stop_loss=price * 0.97, take_profit=price * 1.2, by="ctl")
    sub = await p.engine.orders.submit(intent)
    assert sub.accepted, sub.reason
