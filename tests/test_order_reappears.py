"""An order of ffe's own that the journal has ended while the exchange still has it (its lookups lagged past the
settle window, so it was taken as absent): a HALTED engine's cancel of an order in doubt said "cancelled if it
appears". When the exchange then shows it, open or filled, it must not work on outside the books: an open one is
cancelled at once through the order path, whatever the engine's state, the operator is paged, and what it filled is
booked against the ended order (its status stays final). The books stay equal to the exchange's.

Real parts: the engine in-process (journal in SQLite), real ccxt, the fake Binance with reads that lag ("stale").
"""

from __future__ import annotations

import asyncio
import time

import pytest

from conftest import engine_session
from fake_exchange import FakeBinance
from ffe_engine.model import OrderReason, Side
from ffe_engine.risk import OrderIntent
from live_helpers import (BTC, DELETE_ORDER, GET_ORDER, POST_ORDER, RECV_WINDOW_MS, fx,  # noqa: F401
                          live_settings, next_bar, rows, stored_events, wait_for)
from receiver import Receiver

OPEN_ORDERS = "GET /api/v3/openOrders"
LAG_S = 3 * RECV_WINDOW_MS / 1000  # the exchange's reads lag its book this long: past the settle window
FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}


async def halted_with_an_order_ended_absent(e, fx: FakeBinance) -> tuple[str, float]:
    """A resting limit buy placed at the exchange, its answer lost, its lookups and the open orders lagging past
    the settle window; the kill switch's cancel does not find it ("cancelled if it appears"), and the engine ends it
    `canceled`, absent at the venue, while the exchange has it open. Its client order id and when it was placed."""
    await next_bar(e, fx)
    await e.resume(by="test")
    fx.fault(POST_ORDER, "drop_after")
    fx.fault(GET_ORDER, "stale", seconds=LAG_S, times=10_000)
    fx.fault(OPEN_ORDERS, "stale", seconds=LAG_S, times=10_000)
    fx.fault(DELETE_ORDER, "not_found_once")
    placed = time.time()
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR,
                                            type="limit", price=25_000.0, ref_price=30_000.0))
    cid = sub.order.client_order_id
    assert sub.order.status.value == "in_doubt", sub.order.status
    report = await e.halt(by="operator")
    assert [f["error"] for f in report.failed] == [
        "in doubt and not found yet: not sent again, and cancelled if it appears"], report
    for _ in range(50):
        if cid not in e.orders.live:
            break
        await e.orders.poll()
        await asyncio.sleep(0.1)
    assert rows(e.store.path, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,)) == [
        ("canceled", "absent at the venue")]
    assert fx.open_order(cid) is not None and time.time() - placed < LAG_S  # the lag outlasted the window
    return cid, placed


async def reads_caught_up(fx: FakeBinance, placed: float) -> None:
    """Wait until the exchange's lagging reads (of the order placed at `placed`) have caught up, and end the lag."""
    await asyncio.sleep(max(0.0, placed + LAG_S - time.time()) + 0.2)
    fx.clear_faults(GET_ORDER)
    fx.clear_faults(OPEN_ORDERS)


def assert_books_agree(e, fx: FakeBinance) -> None:
    usdt, btc = fx.balances["USDT"].total, fx.balances["BTC"].total
    pos = e.portfolio.positions.get(BTC)
    assert (pos.quantity if pos else 0.0) == pytest.approx(btc, abs=1e-9)
    assert e.portfolio.cash == pytest.approx(usdt, abs=0.005)


async def test_an_ended_order_the_exchange_lists_open_is_cancelled_at_once_and_its_fill_booked(tmp_path, fx):
    hook = await Receiver().start()
    settings = live_settings(tmp_path, fx, alerts={"webhook_url": hook.url + "/hook", **FAST})
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        cid, placed = await halted_with_an_order_ended_absent(e, fx)
        await reads_caught_up(fx, placed)
        fx.fill(cid, qty=0.004)  # and it fills in part before the engine looks again
        await e.reconcile()
        assert [(o.client_id, o.status, o.filled) for o in fx.orders] == [(cid, "CANCELED", pytest.approx(0.004))]
        assert e.state.value == "HALTED"
        # the journal's end stands; the fill made before the cancel is booked against it
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.004),)]
        assert_books_agree(e, fx)
        statuses = [ev["status"] for ev in stored_events(db, "order") if ev["client_order_id"] == cid]
        assert statuses[-1] == "canceled" and "open" not in statuses, statuses
        # said to the operator: a fault on the order route, and a page
        faults = [(f["kind"], f["phase"]) for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
        assert ("reappeared", "fault") in faults, faults
        pages = lambda: [r.body for r in hook.delivered if r.body.get("kind") == "ORDER_REAPPEARED"]  # noqa: E731
        await wait_for(pages, timeout=15, what="the page")
        (page,) = pages()
        assert page["severity"] == "page" and cid in page["text"], page
        # a later reconciliation finds nothing of it: no unknown open order, nothing to accept
        assert not [d for d in await e.reconcile() if d.get("client_order_id") == cid]
        fx.set_price("BTCUSDT", 24_000.0)  # it would have filled now
        assert [o.filled for o in fx.orders] == [pytest.approx(0.004)]
    await hook.stop()


async def test_an_ended_order_the_exchange_fills_before_any_look_has_its_fill_booked(tmp_path, fx):
    # The order shows up at the exchange and fills in full before any read of its open orders: it is never listed
    # open. The engine keeps looking it up by its id for a while after it ended it as absent, and books the fill.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        cid, placed = await halted_with_an_order_ended_absent(e, fx)
        await reads_caught_up(fx, placed)
        fx.fill(cid)
        for _ in range(20):
            await e.orders.poll()
            await asyncio.sleep(0.1)
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.01),)]
        assert_books_agree(e, fx)
        assert not [d for d in await e.reconcile() if d.get("client_order_id") == cid or d.get("symbol") == BTC]
        assert e.state.value == "HALTED"


async def test_an_ended_order_that_shows_up_open_is_cancelled_by_the_polls_with_no_order_live(tmp_path, fx):
    # HALTED, nothing else in flight: the engine's polls (not only its reconciliations, 10 minutes apart here) look
    # the ended order up, and cancel it as soon as the exchange shows it open.
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        cid, placed = await halted_with_an_order_ended_absent(e, fx)
        assert not e.orders.live
        loop = asyncio.ensure_future(e.run())
        try:
            await reads_caught_up(fx, placed)
            await wait_for(lambda: [o.status for o in fx.orders] == ["CANCELED"], timeout=15,
                           what="the order cancelled at the exchange by a poll")
            assert e.state.value == "HALTED"
        finally:
            e.request_stop()
            await asyncio.wait_for(loop, timeout=30)


async def test_what_a_reappeared_order_filled_is_booked_though_its_cancel_fails(tmp_path, fx):
    # The exchange shows the ended order open and filled in part, and refuses the cancel for now: what it filled is
    # in the account, so it is booked from the lookup at once (the gates must not size on books that lack it).
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        cid, placed = await halted_with_an_order_ended_absent(e, fx)
        await reads_caught_up(fx, placed)
        fx.fill(cid, qty=0.004)
        fx.fault(DELETE_ORDER, "5xx_not_executed", times=100)
        await e.reconcile()
        assert fx.open_order(cid) is not None  # still open there: its cancel is tried again at the next poll
        assert rows(db, "SELECT quantity FROM fills WHERE client_order_id = ?", (cid,)) == [(pytest.approx(0.004),)]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("canceled",)]
        fx.clear_faults(DELETE_ORDER)
        await e.orders.poll()
        assert [(o.status, o.filled) for o in fx.orders] == [("CANCELED", pytest.approx(0.004))]
        assert_books_agree(e, fx)


async def test_an_order_the_exchange_filled_that_a_lagging_read_shows_open_is_not_taken_for_reappeared(tmp_path, fx):
    """Filled by the exchange's own word, then shown open for a moment by reads that lag behind it (a replica): no
    cancel, no `reappeared` fault, no page; the books stay the exchange's, and nothing is left to accept once the
    reads have caught up."""
    settings = live_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        await next_bar(e, fx)
        await e.resume(by="test")
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR,
                                                type="limit", price=25_000.0, ref_price=30_000.0))
        cid = sub.order.client_order_id
        assert sub.accepted and fx.open_order(cid) is not None
        fx.set_price("BTCUSDT", 24_000.0)  # it fills at the exchange
        filled = "SELECT status FROM orders WHERE client_order_id = ?"
        for _ in range(50):
            await e.orders.poll()
            if rows(db, filled, (cid,)) == [("filled",)]:
                break
            await asyncio.sleep(0.1)
        assert rows(db, filled, (cid,)) == [("filled",)] and cid not in e.orders.live
        lag = 0.6 * e.orders.settle_s  # shorter than the settle window, as the docs ask of the window
        fx.fault(GET_ORDER, "stale", seconds=lag, times=10_000)
        fx.fault(OPEN_ORDERS, "stale", seconds=lag, times=10_000)
        first = await e.reconcile()  # the list and the lookup both show it open: one look proves nothing
        assert [d["kind"] for d in first if d.get("client_order_id") == cid] in ([], ["unknown_open_order"])
        assert fx.requests_to(DELETE_ORDER) == []
        assert not [f for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
        await asyncio.sleep(lag + 0.2)
        fx.clear_faults(GET_ORDER)
        fx.clear_faults(OPEN_ORDERS)
        for _ in range(3):  # looked at again once the reads have caught up: nothing of it
            differences = await e.reconcile()
            await asyncio.sleep(e.orders.settle_s / 2)
        assert not [d for d in differences if d.get("client_order_id") == cid], differences
        assert fx.requests_to(DELETE_ORDER) == []
        assert not [f for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
        assert_books_agree(e, fx)
        # A lag again, long after: a sighting of its own, not the first one's continued.
        fx.fault(GET_ORDER, "stale", seconds=lag + 5.0, times=10_000)
        fx.fault(OPEN_ORDERS, "stale", seconds=lag + 5.0, times=10_000)
        await e.reconcile()
        assert fx.requests_to(DELETE_ORDER) == []
        assert not [f for f in stored_events(db, "venue_fault") if f["client_order_id"] == cid]
