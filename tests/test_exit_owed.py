"""A stop-loss crossed stays crossed until the position is sold: an exit refused (by the breaker, by the exchange)
is sent again at the symbol's next bar even though that bar, the price back above the level, crosses nothing. The
exit owed is stored: a restart sends it; a halt drops it (HALTED leaves positions to the operator).
"""

from __future__ import annotations

import json

import pytest

from ffe_engine.breaker import SEND
from ffe_engine.clock import ManualClock
from ffe_engine.execution import floor_to_step
from ffe_engine.market.csvdata import load_csv
from ffe_engine.market.replay import ReplayFeed
from ffe_engine.model import EngineState, OrderReason, Side
from ffe_engine.risk import OrderIntent
from ffe_engine.venues.base import VenueError
from ffe_engine.venues.paper import PaperVenue
from pipeline_helpers import (bars_from_closes, make_settings, paper_venue, pipelines, strategy_buys, wave,
                              write_csv)

from live_helpers import fx  # noqa: F401  (a fixture)

_ = pipelines  # a fixture

BTC = "BTC/USDT"
DIP = 63  # the bar whose low goes through the stop-loss; it opens and closes near 100, as do the bars after it


def dip_feed(tmp_path, clock):
    path = wave(61, base=100.0, amp=0.02)
    path += [path[-1]] * 2 + [99.9] + [100.0] * 10
    rows = bars_from_closes(path)
    ts, o, h, _, c, v = rows[DIP]
    rows[DIP] = (ts, o, h, 96.0, c, v)
    f = write_csv(tmp_path / "csv" / "BTC-USDT.csv", rows)
    return ReplayFeed({BTC: load_csv(f, symbol=BTC)}, clock, speed=0.0)


async def entered(p, script) -> None:
    """A position opened by the strategy, its stop-loss below the dip's low and above the bars' lows after it."""
    await strategy_buys(p, script, BTC)
    await p.bars(2)
    pos = p.engine.portfolio.positions[BTC]
    assert 96.0 < pos.stop_loss < 99.5, pos


async def stop_exits(p) -> list[tuple[str, str]]:
    return await p.rows("SELECT status, COALESCE(error, '') FROM orders WHERE reason = 'stop_loss' ORDER BY rowid")


async def owed_stored(p):
    (value,) = (await p.rows("SELECT value FROM kv WHERE key = 'exits_owed'")) or [(None,)]
    return json.loads(value[0]) if value and value[0] else None


class RefusesSells(PaperVenue):
    """The exchange refuses the first `refusals` sells (a trading halt on the market)."""

    refusals = 1

    async def create_order(self, req):
        if req.side is Side.SELL and self.refusals:
            self.refusals -= 1
            raise VenueError('binance {"code":-2010,"msg":"Market is closed."}')
        return await super().create_order(req)


async def test_a_stop_loss_refused_while_the_breaker_is_open_goes_out_once_it_lets_calls_through(tmp_path, pipelines):
    s = make_settings(tmp_path, symbols=(BTC,), breaker={"failure_threshold": 3, "recovery_timeout_s": 60.0})
    clock, script = ManualClock(), {}
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock)
    e = p.engine
    await entered(p, script)
    for _ in range(3):
        e.breaker.record_failure("503 Service Unavailable", SEND)
    assert e.breaker.state == "open"
    await p.bars(1)  # the dip: its stop-loss refused, nothing sent
    assert BTC in e.portfolio.positions
    refused = [d for d in await p.events("order") if d.get("reason") == "stop_loss"]
    assert await stop_exits(p) == [] and len(refused) == 1 and "BREAKER_OPEN" in refused[0]["error"], refused
    clock.forward(61.0)
    assert e.breaker.allows()
    await p.bars(2)  # no bar crosses the level now: the exit owed goes out at the first, and fills at the next open
    assert [status for status, _ in await stop_exits(p)] == ["filled"]
    assert BTC not in e.portfolio.positions
    assert await owed_stored(p) is None


async def test_a_stop_loss_the_exchange_refuses_is_sent_again_at_the_next_bar(tmp_path, pipelines):
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    venue = paper_venue(s, RefusesSells)
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock, venue=venue)
    e = p.engine
    await entered(p, script)
    await p.bars(1)  # the dip: the exit refused by the exchange
    (first,) = await stop_exits(p)
    assert first[0] == "rejected" and "Market is closed" in first[1]
    stored = await owed_stored(p)
    assert stored == {BTC: ["stop_loss", e.portfolio.positions[BTC].stop_loss, e.portfolio.positions[BTC].opened_ts]}
    await p.bars(2)
    assert [status for status, _ in await stop_exits(p)] == ["rejected", "filled"]
    assert BTC not in e.portfolio.positions
    assert await owed_stored(p) is None


async def test_an_exit_owed_is_sent_by_the_next_start_and_dropped_by_a_halt(tmp_path, pipelines):
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    venue = paper_venue(s, RefusesSells)
    venue.refusals = 10
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock, venue=venue)
    await entered(p, script)
    await p.bars(1)
    assert [status for status, _ in await stop_exits(p)] == ["rejected"]
    assert await owed_stored(p) is not None
    await p.close()

    # started again (the exchange takes orders again): the exit owed goes at the next bar, whose range crosses nothing
    clock2 = ManualClock()
    q = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock2), clock=clock2)
    assert BTC in q.engine.portfolio.positions
    await q.until(lambda: BTC not in q.engine.portfolio.positions, max_bars=5, what="the exit owed filled")
    assert [status for status, _ in await stop_exits(q)] == ["rejected", "filled"]
    assert await owed_stored(q) is None
    await q.close()


async def test_a_halt_drops_the_exit_owed(tmp_path, pipelines):
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    venue = paper_venue(s, RefusesSells)
    venue.refusals = 10
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock, venue=venue)
    e = p.engine
    await entered(p, script)
    await p.bars(1)
    assert await owed_stored(p) is not None
    await e.halt(reason="test", by="test")
    assert e.state is EngineState.HALTED
    assert await owed_stored(p) is None
    await e.resume(confirm=True)
    assert e.state is EngineState.RUNNING
    venue.refusals = 0
    await p.bars(3)  # the bars after the dip cross nothing: nothing is sold
    assert [status for status, _ in await stop_exits(p)] == ["rejected"]
    assert BTC in e.portfolio.positions


async def test_an_exit_the_operator_cancels_is_owed_no_more(tmp_path, pipelines):
    """The operator cancels the stop-loss's exit: their word, not the exchange's refusal. The next bars, which cross
    nothing, send no exit; the level is watched again from them."""
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock)
    e = p.engine
    await entered(p, script)
    await p.bars(1)  # the dip: the exit placed, filled by the paper venue at the next candle's open
    (working,) = [o for o in e.orders.live.values() if o.reason.value == "stop_loss"]
    assert (await e.operator_cancel(working.client_order_id, by="operator"))["cancelled"]
    assert await owed_stored(p) is None
    await p.bars(3)
    assert [status for status, _ in await stop_exits(p)] == ["canceled"]
    assert BTC in e.portfolio.positions


async def test_a_sell_working_on_part_of_a_position_does_not_keep_its_stop_loss_from_the_rest(tmp_path, pipelines):
    """The operator's limit sell of a tenth of the position rests far above the market (or an operator's sell is in
    doubt): the stop-loss crossed still sells the rest, not nothing for as long as that sell works."""
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock)
    e = p.engine
    await entered(p, script)
    held = e.portfolio.positions[BTC].quantity
    part = round(held / 10, 5)
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=part, reason=OrderReason.OPERATOR,
                                            type="limit", price=150.0, ref_price=100.0, reduce_only=True))
    assert sub.accepted, sub.reason
    await p.bars(2)  # the dip, then the next open fills the stop-loss exit
    sold = await p.rows("SELECT status, quantity FROM orders WHERE reason = 'stop_loss'")
    assert sold == [("filled", pytest.approx(held - part))], sold
    assert e.portfolio.positions[BTC].quantity == pytest.approx(part)  # what the limit sell still works on


async def test_the_rest_beside_a_sell_working_is_sold_where_the_market_is_not_at_the_level(tmp_path, pipelines):
    """The rest beside an operator's limit sell is worth more than the venue's minimum at the market, less at the
    stop-loss level: a market exit is sold at the market, so the venue takes it; not refused at every bar."""
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock)
    e = p.engine
    await entered(p, script)
    pos = e.portfolio.positions[BTC]
    step = s.venue.amount_step
    rest = floor_to_step(s.venue.min_notional / ((pos.stop_loss + 99.9) / 2), step)
    assert rest * pos.stop_loss < s.venue.min_notional < rest * 99.9
    part = floor_to_step(pos.quantity - rest, step)
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=part, reason=OrderReason.OPERATOR,
                                            type="limit", price=150.0, ref_price=100.0, reduce_only=True))
    assert sub.accepted, sub.reason
    await p.bars(3)
    refused = [d for d in await p.events("order") if d.get("reason") == "stop_loss" and d.get("status") == "refused"]
    assert refused == [] and [status for status, _ in await stop_exits(p)] == ["filled"], refused


async def test_an_exit_held_by_a_retry_after_beside_a_sell_working_goes_once_the_wait_is_over(tmp_path, fx):
    """A stop-loss the exchange's Retry-After held back, an operator's limit sell working on part of the position:
    the rest is sold once the wait is over, not at the next bar (an hour later on hourly bars)."""
    import asyncio

    from live_helpers import POST_ORDER, engine_loop, next_bar, wait_for
    from test_live_engine import running_live

    async with running_live(tmp_path, fx) as running:
        e = running.engine
        assert (await e.operator_order(BTC, "buy", 0.02))["accepted"]
        await wait_for(lambda: not e.orders.live, timeout=10, what="bought")
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=0.005, type="limit",
                                                price=40_000.0, reason=OrderReason.OPERATOR, ref_price=30_000.0,
                                                reduce_only=True))
        assert sub.accepted, sub.reason
        e.portfolio.positions[BTC].stop_loss = 1e9  # crossed at the next bar
        fx.fault(POST_ORDER, "418", retry_after=2)
        await next_bar(e, fx)
        e.portfolio.positions[BTC].stop_loss = None
        assert BTC in e._exits_held
        async with engine_loop(e):
            await wait_for(lambda: e.portfolio.positions[BTC].quantity < 0.006, timeout=15,
                           what="the rest sold once the wait is over, before any new bar")
        await asyncio.sleep(0)


async def test_an_exit_that_sold_the_rest_beside_a_sell_working_is_owed_no_more(tmp_path, pipelines):
    """The crossed stop-loss's exit sold the rest beside the operator's limit sell, filled: nothing is owed then.
    The operator cancels their sell with the market back above the stop: no market sale of their part follows."""
    s = make_settings(tmp_path, symbols=(BTC,))
    clock, script = ManualClock(), {}
    p = await pipelines(s, script=script, feed=dip_feed(tmp_path, clock), clock=clock)
    e = p.engine
    await entered(p, script)
    part = round(e.portfolio.positions[BTC].quantity / 10, 5)
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=part, reason=OrderReason.OPERATOR,
                                            type="limit", price=150.0, ref_price=100.0, reduce_only=True))
    assert sub.accepted, sub.reason
    await p.bars(2)  # the dip, then the next open fills the stop-loss exit of the rest
    pos = e.portfolio.positions[BTC]
    assert pos.quantity == pytest.approx(part) and await owed_stored(p) is None
    await p.bars(2)
    assert e.portfolio.last_price[BTC] > pos.stop_loss
    assert (await e.operator_cancel(sub.order.client_order_id, by="operator"))["cancelled"]
    await p.bars(2)
    sold = await p.rows("SELECT status FROM orders WHERE reason = 'stop_loss'")
    assert sold == [("filled",)], sold
