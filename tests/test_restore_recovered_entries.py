"""An entry made after the backup a database was restored from comes back from the exchange (recovery.py) without
the decision that made it: the books still watch its position with a stop-loss and a take-profit, an approval the
backup held pending whose entry was made since is not offered a second order, and the day's trades count it.
Real engines, real ccxt and the fake Binance, a real backup and restore."""

from __future__ import annotations

import time

import pytest

from conftest import engine_session
from ffe_engine import backup as bk
from ffe_engine.model import OrderReason, Side
from ffe_engine.restore import restore
from ffe_engine.risk import OrderIntent
from live_helpers import BTC, M, POST_ORDER, engine_loop, fx, next_bar, rows, wait_for  # noqa: F401
from test_live_books import climbing, strategy_approval, strategy_entry, strategy_settings


def _dip_next_bar(fx, level: float) -> None:
    """The next closed candle's low goes to `level`, its close on the climb."""
    target = fx.market_clock.now // M * M

    def edit(klines):
        for k in klines:
            if k[0] == target:
                k[3] = f"{level:.2f}"
        return klines
    fx.klines_edit = edit


async def _restored_after_an_entry(tmp_path, fx, settings, entry) -> tuple[str, float]:
    """A backup taken, then an entry made (`entry(e)`), then the backup restored: the entry's client order id and
    the stop-loss it was made with."""
    async with engine_session(settings, live=True):
        pass
    archive = bk.take_stopped(settings, tmp_path / "backups", time.time()).path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        cid = await entry(e)
        stop = e.portfolio.positions[BTC].stop_loss
    restore(archive, settings, force=True, now=time.time())
    return cid, stop


async def test_a_position_recovered_after_a_restore_has_its_stop_loss_watched(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2})

    async def entry(e):
        async with engine_loop(e):
            return await strategy_entry(e, fx)

    cid, stop = await _restored_after_an_entry(tmp_path, fx, settings, entry)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.reconcile()
        assert rows(settings.db_path, "SELECT reason FROM orders WHERE client_order_id = ?", (cid,)) == [("reconcile",)]
        pos = e.portfolio.positions[BTC]
        # The levels a strategy entry at its price has, from the volatility now: the decision's are not restored.
        assert pos.stop_loss is not None and pos.take_profit is not None, pos
        assert pos.stop_loss < pos.entry_price < pos.take_profit
        assert pos.stop_loss == pytest.approx(stop, rel=0.01)
        stored = rows(settings.db_path, "SELECT stop_loss, take_profit FROM positions WHERE symbol = ?", (BTC,))
        assert stored == [(pytest.approx(pos.stop_loss), pytest.approx(pos.take_profit))]
        if e.state.value != "RUNNING":
            await e.resume(by="test")
        _dip_next_bar(fx, pos.stop_loss * 0.99)
        await next_bar(e, fx)
        await wait_for(lambda: not e.orders.live, timeout=20, what="the exit settled")
        exits = rows(settings.db_path, "SELECT reason, side FROM orders WHERE reason = 'stop_loss'")
        assert exits == [("stop_loss", "sell")]
        after = e.portfolio.positions.get(BTC)  # sold; the strategy may have entered again on the climb
        assert after is None or after.entry_decision_id is not None, after


async def test_an_approval_whose_entry_was_made_after_the_backup_sends_no_second_entry(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2, "approval": "manual",
                                                        "approval_ttl_s": 3600})
    async with engine_session(settings, live=True) as running:
        async with engine_loop(running.engine):
            aid = (await strategy_approval(running.engine, fx))["approval_id"]
    archive = bk.take_stopped(settings, tmp_path / "backups", time.time()).path  # the approval pending in it
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert (await e.approve(aid, by="operator"))["accepted"]
        await wait_for(lambda: BTC in e.portfolio.positions and not e.orders.live, timeout=30, what="filled")
    held = fx.balances["BTC"].total
    restore(archive, settings, force=True, now=time.time())
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.reconcile()
        if e.state.value != "RUNNING":
            await e.resume(by="operator")
        again = await e.approve(aid, by="operator")
        assert not again["accepted"] and again["reason"].startswith(f"IN_POSITION: {BTC} is held"), again
        assert len(fx.requests_to(POST_ORDER)) == 1 and fx.balances["BTC"].total == held
        assert rows(settings.db_path, "SELECT status, by FROM approvals WHERE approval_id = ?", (aid,)) == [
            ("rejected", "re-check (operator)")]


async def test_an_entry_recovered_after_a_restore_counts_in_the_day_s_trades(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2}, risk={"max_daily_trades": 1})

    async def entry(e):
        async with engine_loop(e):
            return await strategy_entry(e, fx)

    await _restored_after_an_entry(tmp_path, fx, settings, entry)
    for _ in range(2):  # the start that recovers it, and the one after
        async with engine_session(settings, live=True) as running:
            e = running.engine
            await e.reconcile()
            intent = OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.001, reason=OrderReason.OPERATOR,
                                 ref_price=e.portfolio.last_price[BTC])
            [daily] = [g for g in e.orders.check(intent) if g.code == "DAILY_TRADES"]
            assert not daily.passed and float(daily.value) == 1.0, daily


async def test_a_position_recovered_over_dust_of_an_earlier_one_gets_its_levels_too(tmp_path, fx):
    """The backup holds dust of an earlier position (its buy's fee taken in BTC, its sale cut to the amount step):
    the recovered entry opens its position over that dust, and gets its levels all the same."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            assert (await e.close_position(BTC))["accepted"]
            await wait_for(lambda: not e.orders.live and e.portfolio.is_dust(BTC), timeout=30, what="closed to dust")
    archive = bk.take_stopped(settings, tmp_path / "backups", time.time()).path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        sent = len(fx.requests_to(POST_ORDER))
        async with engine_loop(e):
            for _ in range(5):
                fx.market_clock.step()
                try:
                    await wait_for(lambda: len(fx.requests_to(POST_ORDER)) > sent, timeout=8, what="an entry")
                    break
                except AssertionError:
                    pass
            await wait_for(lambda: e.portfolio.holding(BTC) is not None and not e.orders.live, timeout=30,
                           what="the entry filled")
    restore(archive, settings, force=True, now=time.time())
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.reconcile()
        pos = e.portfolio.positions[BTC]
        assert pos.stop_loss is not None and pos.take_profit is not None, pos


async def test_an_entry_made_while_an_approval_reads_the_price_is_not_added_to_by_it(tmp_path, fx):
    """The operator buys the symbol while an approve waits for the exchange's price: the re-check after the read
    refuses the approval (IN_POSITION), one entry only."""
    import asyncio

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.2, "approval": "manual",
                                                        "approval_ttl_s": 3600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            aid = (await strategy_approval(e, fx))["approval_id"]
            for route in ("GET /api/v3/ticker/price", "GET /api/v3/ticker/24hr", "GET /api/v3/ticker/bookTicker"):
                fx.fault(route, "slow", seconds=2.0)
            asked = len(fx.requests)
            approving = asyncio.ensure_future(e.approve(aid, by="operator"))
            await wait_for(lambda: any("ticker" in r.route for r in fx.requests[asked:]), timeout=10,
                           what="the approval's price read")
            assert (await e.operator_order(BTC, "buy", 0.001))["accepted"]
            await wait_for(lambda: BTC in e.portfolio.positions and not e.orders.live, timeout=20, what="bought")
            answer = await approving
            assert not answer["accepted"] and answer["reason"].startswith("IN_POSITION"), answer
        assert [r.params.get("side") for r in fx.requests_to(POST_ORDER)] == ["BUY"]


async def test_levels_owed_to_a_symbol_no_longer_traded_stop_no_start(tmp_path):
    """`kv levels_owed` names a symbol taken out of engine.symbols since, its position still held (owed at a start
    killed before its warm-up): the start goes on, the levels owed until the symbol is traded again."""
    from conftest import make_settings

    sol = "SOL/USDT"
    first = make_settings(tmp_path, engine={"symbols": [BTC, sol]})
    async with engine_session(first) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        for _ in range(4):
            await e.on_candle(next(candles))
        assert (await e.operator_order(sol, "buy", 1.0))["accepted"]
        for _ in range(4):
            await e.on_candle(next(candles))
        assert sol in e.portfolio.positions
        await running.store.put_kv("levels_owed", [sol], time.time())
    async with engine_session(make_settings(tmp_path, engine={"symbols": [BTC]})) as running:
        assert running.engine.started and sol in running.engine.portfolio.positions
    assert rows(first.db_path, "SELECT value FROM kv WHERE key = 'levels_owed'") == [(f'["{sol}"]',)]


async def test_an_approved_entry_s_minimum_is_measured_at_the_price_it_was_sized_at(tmp_path, fx, monkeypatch):
    """Approved with the exchange's price well above the last bar's close (inside the stops): sized at that price,
    its venue minimum is measured there too, as the exchange measures it, not at the bar-old close."""
    from fake_exchange import LISTINGS
    from ffe_engine.risk import OrderIntent

    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            r = settings.risk
            last = e.portfolio.last_price[BTC]
            atr = (a["price"] - a["intent"]["stop_loss"]) / r.stop_loss_atr
            now = round(last + (r.stop_loss_atr + 0.9 * (r.take_profit_atr - r.stop_loss_atr)) * atr, 2)
            fx.set_price("BTCUSDT", now)
            sized = e.approvals.resized(OrderIntent.from_dict(a["intent"]), now, by="test")
            qty, stop = sized.quantity, sized.stop_loss
            minimum = qty * (last + 0.1 * (stop - last))
            assert qty * last < minimum < qty * stop < qty * now
            e.venue.market(BTC).min_notional = minimum
            monkeypatch.setitem(LISTINGS["BTCUSDT"], "min_notional", str(minimum))
            answer = await e.approve(a["approval_id"])
            assert answer["accepted"], answer
