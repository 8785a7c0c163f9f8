"""Reconciliation against an exchange whose balance reads trail its books by less than the settle window.

Real parts: an engine opened by `open_engine` in live mode (its CcxtVenue, real ccxt), its SQLite database, and the
fake Binance on 127.0.0.1, whose "stale" account reads answer the balances from before its last change until that
change is `seconds` old (a replica behind by that much). The lag here is well inside the settle window
(`exchange.settle_window_ms`): a difference such a read shows is no difference, however often orders fill; one the
account really holds still pauses the engine once the reads have caught up, and one that is gone holds it no more.
"""

from __future__ import annotations

import asyncio

import pytest

from conftest import engine_session
from ffe_engine.engine import ControlError
from ffe_engine.model import EngineState, OrderReason, OrderStatus, Side
from ffe_engine.risk import OrderIntent
from live_helpers import (BTC, POST_ORDER, fx, live_settings, next_bar, reconcile_twice,  # noqa: F401
                          stored_events, wait_for)

ACCOUNT = "GET /api/v3/account"
LAG_S = 1.0  # the exchange's balance reads trail its books by this much: below the settle window (1.5 s)


def lagging_reads(fx) -> None:
    """From now on every balance read answers the books from before the last change younger than LAG_S."""
    fx.fault(ACCOUNT, "stale", seconds=LAG_S, times=10_000)


async def test_balances_read_before_each_latest_fill_pause_nothing(tmp_path, fx):
    # One market order fills in chunks; each reconciliation reads the balances from before the chunk the journal
    # booked last. Each look finds a different position difference (journal 0.01 venue 0, then 0.02 against 0.01):
    # two reads that lag, not one difference found twice. Once the reads catch up, everything agrees.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        lagging_reads(fx)
        fx.partial_fill_next(1 / 3)
        cid = (await e.operator_order(BTC, "buy", 0.03))["client_order_id"]
        assert e.orders.live[cid].filled == pytest.approx(0.01)
        for chunk in (1, 2):
            assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_blocked == []
            await e.flush()
            look = stored_events(db, "reconcile")[-1]
            assert look["status"] == "unconfirmed", look
            position = next(d for d in look["differences"] if d["kind"] == "position")
            assert position["journal"] - position["venue"] == pytest.approx(0.01, abs=1e-4)  # less the fee
            await asyncio.sleep(e.venue.settle_s)
            fx.fill(cid, 0.01)  # the next chunk, booked by the poll just before the next look
            await e.orders.poll()
            assert e.portfolio.positions[BTC].quantity == pytest.approx(0.01 * (chunk + 1), abs=1e-4)
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_blocked == []
        await asyncio.sleep(e.venue.settle_s)  # the reads have caught up with the last chunk
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_blocked == []
        await e.flush()
        assert stored_events(db, "reconcile")[-1]["status"] == "ok"


async def test_balances_read_before_each_order_s_fill_pause_nothing(tmp_path, fx):
    # Orders that fill at once, a settle window apart, each followed by a look that reads the balances from before
    # it: as many differences as orders, each gone at the next look.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        lagging_reads(fx)
        for quantity in (0.01, 0.02, 0.01):
            assert (await e.operator_order(BTC, "buy", quantity))["accepted"]
            assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_blocked == []
            assert [d["kind"] for d in e.reconcile_unconfirmed][:1] == ["position"]
            await asyncio.sleep(e.venue.settle_s)
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_unconfirmed == []


async def test_coins_that_arrive_while_orders_fill_pause_the_engine_once_the_reads_catch_up(tmp_path, fx):
    # A real difference (coins no order of ffe's explains) made while an order fills in chunks behind lagging
    # reads: the engine looks again by itself once its books have been still for the settle window, and pauses
    # on it then, within two settle windows of the last fill.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        loop = asyncio.ensure_future(e.run())
        try:
            lagging_reads(fx)
            fx.partial_fill_next(1 / 3)
            cid = (await e.operator_order(BTC, "buy", 0.03))["client_order_id"]
            fx.balances["BTC"].free += 0.25
            await e.reconcile()
            for _ in range(2):
                await asyncio.sleep(e.venue.settle_s / 2)
                fx.fill(cid, 0.01)
                await e.orders.poll()
                await e.reconcile()
            assert cid not in e.orders.live and e.state is EngineState.RUNNING
            last_fill = asyncio.get_running_loop().time()
            await wait_for(lambda: e.state is EngineState.PAUSED, timeout=2 * e.venue.settle_s + 2.0,
                           what="the engine paused on the coins")
            assert asyncio.get_running_loop().time() - last_fill < 2 * e.venue.settle_s + 2.0
            position = next(d for d in e.reconcile_blocked if d["kind"] == "position")
            assert position["venue"] - position["journal"] == pytest.approx(0.25, abs=1e-4)
            assert e.state_reason.startswith("reconcile: ")
            await e.flush()
            assert stored_events(db, "reconcile")[-1]["status"] == "differences"
        finally:
            e.request_stop()
            await loop


async def test_a_difference_gone_at_a_later_reconciliation_holds_entries_no_more(tmp_path, fx):
    # Coins arrive, the engine pauses on them; they leave again before anyone accepts: the next reconciliation finds
    # the books and the account agreeing, and nothing it found before holds the engine (no `RECONCILE N` in
    # `ffe ctl status`, resume allowed). The engine stays PAUSED until resumed.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        fx.balances["BTC"].free += 0.25
        assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "equity"]
        assert e.state is EngineState.PAUSED and len(e.reconcile_blocked) == 2
        with pytest.raises(ControlError, match="accept them first") as refused:
            await e.resume(by="test")
        assert "`ffe ctl accept`" in str(refused.value)  # how, where the console has no key for it
        fx.balances["BTC"].free -= 0.25
        assert await e.reconcile() == []
        assert e.reconcile_blocked == [] and e.snapshot()["reconcile_blocked"] == []
        assert e.state is EngineState.PAUSED
        assert await e.resume(by="test") is EngineState.RUNNING


async def test_a_difference_gone_holds_entries_until_a_look_compares_it_with_current_reads(tmp_path, fx):
    # Paused on coins that then leave again, the engine looks while an order in doubt may hold a trade the balances
    # show (nothing compared in its symbol), and right after an order changed (balances that may lag it): neither
    # look lifts the difference. A look the settle window after the order settled, agreeing, does.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        assert (await e.operator_order(BTC, "buy", 0.02))["accepted"]
        await asyncio.sleep(e.venue.settle_s)
        fx.balances["BTC"].free += 0.25
        assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "equity"]
        fx.balances["BTC"].free -= 0.25
        fx.fault(POST_ORDER, "drop_after")
        fx.partial_fill_next(0.5)
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=0.01, reduce_only=True,
                                                reason=OrderReason.OPERATOR, ref_price=30_000.0))
        assert sub.order is not None and sub.order.status is OrderStatus.IN_DOUBT, sub.reason
        cid = sub.order.client_order_id
        fx.fault("GET /api/v3/order", "not_found_once", times=10)  # the exchange does not find it for now
        assert await e.reconcile() == [] and len(e.reconcile_blocked) == 2  # its symbol not compared
        assert e.orders.live[cid].status is OrderStatus.IN_DOUBT
        fx.clear_faults("GET /api/v3/order")
        await e.orders.poll()
        assert e.orders.live[cid].status is OrderStatus.OPEN
        assert (await e.operator_cancel(cid))["cancelled"]  # half filled, the rest cancelled: the books changed
        assert await e.reconcile() == [] and len(e.reconcile_blocked) == 2  # read within the settle window
        await e.flush()
        assert stored_events(db, "reconcile")[-1]["status"] == "unconfirmed"  # not "ok": it compared nothing there
        with pytest.raises(ControlError, match="accept them first"):
            await e.resume(by="test")
        await asyncio.sleep(e.venue.settle_s)
        assert await e.reconcile() == [] and e.reconcile_blocked == []
        assert await e.resume(by="test") is EngineState.RUNNING
