"""A cancel's answer is not the order's last word. Some exchanges queue a cancel and acknowledge it with the order as it
stands (still open); one whose answer raced a fill can say CANCELED of an order that then fills. Either way the order
can trade after the journal ended it `canceled`: what it fills must be booked against it (its status stays final, the
operator is told), or the books hold less than the exchange and reconciliation pauses the engine with advice that
does not fit. The engine looks such an order up by its id at each poll for a while after its cancel, as it does an
order it ended as absent.

Real parts: the engine in-process (journal in SQLite), real ccxt, the fake Binance with queued and unkept cancels.
"""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from conftest import engine_session
from fake_exchange import FakeBinance
from ffe_engine.model import OrderReason, Side
from ffe_engine.risk import OrderIntent
from live_helpers import (BTC, DELETE_ORDER, GET_ORDER, POST_ORDER, fx, live_settings, next_bar, rows,  # noqa: F401
                          stored_events)

MY_TRADES = "GET /api/v3/myTrades"
OPEN_ORDERS = "GET /api/v3/openOrders"


def assert_books_agree(e, fx: FakeBinance) -> None:
    pos = e.portfolio.positions.get(BTC)
    assert (pos.quantity if pos else 0.0) == pytest.approx(fx.balances["BTC"].total, abs=1e-9)
    assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=0.005)


async def resting_buy(e, fx: FakeBinance):
    """A limit buy of the operator's resting at the exchange, below the market (the engine resumed, a bar in)."""
    await next_bar(e, fx)
    await e.resume(by="test")
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR,
                                            type="limit", price=25_000.0, ref_price=30_000.0))
    assert sub.order.status.value == "open", sub.order.status
    return sub.order


async def resting_buy_cancelled(e, fx: FakeBinance, fault: str) -> str:
    """A resting limit buy the operator cancels, its cancel answered as `fault` makes the exchange answer it: the
    journal ends it `canceled` while the exchange still has it open."""
    o = await resting_buy(e, fx)
    cid = o.client_order_id
    fx.fault(DELETE_ORDER, fault, seconds=60.0)
    done, why = await e.orders.cancel(o, by="operator")
    assert done, why
    assert rows(e.store.path, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
    assert fx.open_order(cid) is not None  # the exchange has not done the cancel
    return cid


async def polls(e, n: int = 10) -> None:
    for _ in range(n):
        await e.orders.poll()
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("fault", ["cancel_later", "cancel_unkept"])
async def test_an_order_filled_after_its_cancel_was_answered_has_its_fill_booked(tmp_path, fx, fault):
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        cid = await resting_buy_cancelled(e, fx, fault)
        fx.fill(cid, qty=0.006)  # the price came down to it before the exchange did the cancel
        await polls(e)
        # the fill is booked against the ended order, whose status stays; the rest, still open there, is cancelled
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.006),)]
        assert fx.open_order(cid) is None
        assert [(o.status, o.filled) for o in fx.orders_with(cid)] == [("CANCELED", pytest.approx(0.006))]
        assert_books_agree(e, fx)
        faults = [(f["kind"], f["phase"]) for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
        assert faults == [("reappeared", "fault"), ("reappeared", "resolved")], faults
        # reconciliation finds the books equal to the exchange's, and the engine runs on
        assert await e.reconcile() == []
        assert e.state.value == "RUNNING"


async def test_an_order_that_fills_in_full_after_an_unkept_cancel_has_its_fill_booked_after_a_restart(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        cid = await resting_buy_cancelled(running.engine, fx, "cancel_unkept")
    fx.fill(cid)  # while the engine is stopped
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        await polls(e)
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.01),)]
        assert_books_agree(e, fx)


async def test_a_cancel_the_exchange_did_is_looked_up_for_a_while_then_let_go(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        assert (await e.orders.cancel(o, by="operator"))[0]
        # watched, across a restart too, for 30 settle windows from its end
        (watch,) = rows(db, "SELECT value FROM kv WHERE key = 'orders_ended_unseen'")
        until = json.loads(watch[0])[cid]
        assert until == pytest.approx(time.time() + 30 * e.venue.settle_s, abs=5.0)
        looked = len(fx.requests)
        await polls(e, 3)
        lookups = [r for r in fx.requests[looked:] if r.route == GET_ORDER]
        assert len(lookups) == 3, lookups  # one lookup a poll
        assert e.orders.watching()
        # a lookup a settle window after the cancel that shows it cancelled, nothing filled, ends the watch
        await asyncio.sleep(e.venue.settle_s)
        await polls(e, 1)
        assert not e.orders.watching()
        assert rows(db, "SELECT value FROM kv WHERE key IN ('orders_ended_unseen', 'orders_ended_said')") == [
            ("null",), ("null",)]
        assert [(o.status, o.filled) for o in fx.orders_with(cid)] == [("CANCELED", 0.0)]
        assert not [f for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
        assert_books_agree(e, fx)


async def test_a_cancelled_order_whose_trades_a_lagging_read_leaves_out_is_no_fill_and_no_page(tmp_path, fx):
    # Part of the order filled and was booked before its cancel; the engine restarts, and a replica of the exchange's
    # trades lags behind that fill for a while. A lookup of the cancelled order shows it filled as booked, its
    # trades short of it: no fill the books lack, nothing to page about.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        fx.fill(cid, qty=0.004)
        await polls(e, 3)
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.004),)]
        assert (await e.orders.cancel(o, by="operator"))[0]
    fx.fault(MY_TRADES, "stale", seconds=60.0, times=10_000)  # the newest trade, the order's, left out
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        await polls(e, 5)
        await asyncio.sleep(e.venue.settle_s)
        await polls(e, 5)
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.004),)]
        assert not [f for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        assert e.orders.watching()  # looked at again until its trades show what is booked, or its watch is over
        assert_books_agree(e, fx)


async def test_a_strategy_entry_filled_after_its_cancel_holds_its_stop_loss_and_take_profit(tmp_path, fx):
    # The exchange acknowledged a market buy and filled it a moment later; its cancel meanwhile (a kill switch, say)
    # was answered done but not kept. The position the late fill opens is watched by the levels its entry had.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        await next_bar(e, fx)
        await e.resume(by="test")
        fx.fault(POST_ORDER, "fill_later", seconds=1.0)
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.SIGNAL,
                                                ref_price=30_000.0, stop_loss=29_000.0, take_profit=31_500.0,
                                                confidence=0.9))
        assert sub.order is not None, sub.reason
        cid = sub.order.client_order_id
        assert sub.order.status.value == "open", sub.order.status
        fx.fault(DELETE_ORDER, "cancel_unkept")
        assert (await e.orders.cancel(sub.order, by="operator"))[0]
        await asyncio.sleep(1.2)  # it fills at the exchange
        await polls(e)
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.01),)]
        pos = e.portfolio.positions[BTC]
        assert (pos.stop_loss, pos.take_profit) == (29_000.0, 31_500.0)
        assert_books_agree(e, fx)


def reappeared(db, cid: str) -> list[tuple[str, str]]:
    return [(f["kind"], f["phase"]) for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]


@pytest.mark.parametrize("fault", ["cancel_later", "cancel_unkept"])
async def test_an_order_taken_in_stays_watched_until_a_lookup_shows_it_ended_whatever_its_cancel_answered(
        tmp_path, fx, fault):
    # The cancels the take-in sends are answered as the first was: not done. The order is still open at the exchange,
    # so it is still watched (its cancel sent again a settle window apart, not at every poll), and what it fills
    # later is booked; once a cancel is done, a lookup says so and the watch ends.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        fx.fault(DELETE_ORDER, fault, seconds=60.0, times=1000)
        assert (await e.orders.cancel(o, by="operator"))[0]
        for _ in range(3):
            await asyncio.sleep(e.venue.settle_s + 0.1)
            await polls(e, 4)
        assert fx.open_order(cid) is not None and e.orders.watching()
        assert reappeared(db, cid) == [("reappeared", "fault")]
        assert len(fx.requests_to(DELETE_ORDER)) <= 4  # the first, and one a settle window at most
        fx.fill(cid, qty=0.006)
        fx.clear_faults(DELETE_ORDER)
        await asyncio.sleep(e.venue.settle_s + 0.1)
        await polls(e, 4)
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.006),)]
        assert fx.open_order(cid) is None
        assert reappeared(db, cid) == [("reappeared", "fault"), ("reappeared", "resolved")]
        assert_books_agree(e, fx)


async def test_a_queued_cancel_done_within_the_settle_window_while_reads_lag_is_no_reappeared_order(tmp_path, fx):
    # The exchange does the cancel 0.5 s after it answered it, and its reads lag 1.2 s: both within the settle
    # window (1.5 s). A lookup a settle window after the answer still sees it open; one later sees it cancelled.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        fx.fault(DELETE_ORDER, "cancel_later", seconds=0.5)
        fx.fault(GET_ORDER, "stale", seconds=0.8 * e.venue.settle_s, times=10_000)
        fx.fault(OPEN_ORDERS, "stale", seconds=0.8 * e.venue.settle_s, times=10_000)
        assert (await e.orders.cancel(o, by="operator"))[0]
        for _ in range(40):
            await e.orders.poll()
            await asyncio.sleep(0.1)
        assert [(x.status, x.filled) for x in fx.orders_with(cid)] == [("CANCELED", 0.0)]
        assert len(fx.requests_to(DELETE_ORDER)) == 1
        assert reappeared(db, cid) == []
        assert not e.orders.watching()


async def test_the_watch_of_a_cancelled_order_is_stored_with_the_fill_its_cancel_s_answer_showed(
        tmp_path, fx, monkeypatch):
    # The cancel's answer is the first to show part of the order filled: that fill and the order's end are committed
    # together, and so is its watch. A kill right after that commit leaves the watch stored: the next start books
    # what the order, still open at the exchange, filled since.
    from ffe_engine.store import Store

    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        fx.fill(cid, qty=0.004)  # not looked up yet
        fx.fault(DELETE_ORDER, "cancel_unkept")

        async def killed(*args, **kwargs):
            raise asyncio.CancelledError()  # the process ends at the next write after the fill's

        monkeypatch.setattr(Store, "put_kvs", killed)
        monkeypatch.setattr(Store, "put_kv", killed)
        try:
            await e.orders.cancel(o, by="operator")
        except asyncio.CancelledError:
            pass
        monkeypatch.undo()
        assert rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (cid,)) == [
            ("canceled", pytest.approx(0.004))]
    fx.fill(cid)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        await polls(e)
        assert rows(db, "SELECT SUM(quantity) FROM fills WHERE client_order_id = ?", (cid,)) == [
            (pytest.approx(0.01),)]
        assert_books_agree(e, fx)


async def test_an_order_taken_in_is_said_once_across_a_restart(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        fx.fault(DELETE_ORDER, "cancel_unkept")
        assert (await e.orders.cancel(o, by="operator"))[0]
        fx.fill(cid, qty=0.003)
        fx.fault(DELETE_ORDER, "5xx_not_executed", times=1000)  # its cancel by the take-in does not get through
        await polls(e, 3)
        assert reappeared(db, cid) == [("reappeared", "fault")]
    fx.clear_faults(DELETE_ORDER)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        for _ in range(3):
            await asyncio.sleep(e.venue.settle_s)
            await polls(e, 3)
        assert fx.open_order(cid) is None
        assert_books_agree(e, fx)
        assert reappeared(db, cid) == [("reappeared", "fault"), ("reappeared", "resolved")]


async def test_a_lagging_list_of_open_orders_after_the_take_in_s_cancel_is_no_unknown_order(tmp_path, fx):
    # A cancel answered done but not kept; the order lookups and the open orders lag the exchange by less than the
    # settle window. The watch takes the order in and cancels it (answered, and done this time); the list and the
    # lookup a reconciliation makes just after still show it open. That order is not an unknown open order: nothing
    # holds the engine.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        settle = e.venue.settle_s
        o = await resting_buy(e, fx)
        cid = o.client_order_id
        fx.fault(DELETE_ORDER, "cancel_unkept")
        assert (await e.orders.cancel(o, by="operator"))[0]
        fx.fault(GET_ORDER, "stale", seconds=0.6 * settle, times=10_000)
        fx.fault(OPEN_ORDERS, "stale", seconds=0.6 * settle, times=10_000)
        await asyncio.sleep(settle)
        for _ in range(12):  # reconciliations half a settle window apart, as the engine's own can be
            await e.reconcile()
            assert e.state.value == "RUNNING" and e.reconcile_blocked == [], (e.state_reason, e.reconcile_blocked)
            if len(fx.requests_to(DELETE_ORDER)) == 2:
                break
            await asyncio.sleep(settle / 2)
        assert len(fx.requests_to(DELETE_ORDER)) == 2  # the first cancel, and the take-in's
        assert [(x.status, x.filled) for x in fx.orders_with(cid)] == [("CANCELED", 0.0)]
        for _ in range(3):
            await asyncio.sleep(settle / 2)
            await e.reconcile()
            assert e.state.value == "RUNNING" and e.reconcile_blocked == [], (e.state_reason, e.reconcile_blocked)


async def test_a_queued_cancel_is_no_unknown_open_order_while_the_watch_decides(tmp_path, fx):
    # Two cancelled orders watched; the exchange is still doing the second's cancel (queued for a minute). The
    # first lookup of the next poll gets no answer, so the watch first sees the second open late in the first
    # reconciliation. The reconciliation a settle window after it began must not count that order an unknown open
    # order: the watch takes it in and cancels it; nothing holds the engine.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        settle = e.venue.settle_s
        await next_bar(e, fx)
        await e.resume(by="test")
        orders = []
        for price in (25_000.0, 25_100.0):
            sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01,
                                                    reason=OrderReason.OPERATOR, type="limit", price=price,
                                                    ref_price=30_000.0))
            orders.append(sub.order)
        a, b = orders
        assert (await e.orders.cancel(a, by="operator"))[0]
        fx.fault(DELETE_ORDER, "cancel_later", seconds=60.0)
        assert (await e.orders.cancel(b, by="operator"))[0]
        fx.fault(GET_ORDER, "drop_after")
        for _ in range(8):  # each a settle window after the one before began: where a difference is confirmed
            began = time.monotonic()
            await e.reconcile()
            assert e.state.value == "RUNNING" and e.reconcile_blocked == [], (e.state_reason, e.reconcile_blocked)
            if len(fx.requests_to(DELETE_ORDER)) == 3:
                break
            await asyncio.sleep(max(0.0, began + settle + 0.01 - time.monotonic()))
        assert len(fx.requests_to(DELETE_ORDER)) == 3  # the two cancels, and the take-in's of the second
        assert fx.open_order(b.client_order_id) is None
