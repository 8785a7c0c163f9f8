"""Reconciliation of a live engine with the exchange: the journal against the fake Binance's own book.

Real parts: an engine opened by `open_engine` in live mode (its CcxtVenue, real ccxt, the exchange feed), its SQLite
database, and the fake exchange on 127.0.0.1. What the exchange holds is changed behind the engine's back the way it
happens in practice: an order placed by hand through another client, a deposit, a limit order that fills while the
engine is stopped.
"""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import engine_session, ffe_env, make_settings
from fake_exchange import binance_client
from ffe_engine.engine import ControlError
from ffe_engine.model import EngineState, Order, OrderReason, OrderStatus, Side
from ffe_engine.reconcile import BASELINE_KEY
from ffe_engine.risk import OrderIntent
from ffe_engine.views import blocking
from live_helpers import (BTC, GET_ORDER, POST_ORDER, SteppedClock, exchange_options, fx,  # noqa: F401
                          live_settings, next_bar, paused_by_reconciliation, reconcile_twice, rows, run_ffe_async,
                          stored_events, wait_for)

MY_TRADES = "GET /api/v3/myTrades"


async def place_by_hand(fx, client_id: str, price: float = 20_000.0, qty: float = 0.01) -> None:
    """An order placed at the exchange by someone else (another program, the exchange's web page)."""
    other = binance_client(fx)
    try:
        await other.create_order(BTC, "limit", "buy", qty, price, {"clientOrderId": client_id})
    finally:
        await other.close()


async def test_unknown_open_order_at_start_keeps_the_engine_paused_until_accepted(tmp_path, fx):
    await place_by_hand(fx, "by-hand-1")
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.state is EngineState.PAUSED
        assert rows(db, "SELECT state, reason, by FROM engine_state") == [
            ("PAUSED", "reconcile: 1 difference(s)", "reconcile")]
        # found, then found again once the venue's reads have had their settle window to catch up, before any order
        first, event = stored_events(db, "reconcile")
        assert first["status"] == "unconfirmed" and first["differences"] == event["differences"]
        assert event["status"] == "differences"
        assert event["differences"] == [{"kind": "unknown_open_order", "client_order_id": "by-hand-1",
                                         "symbol": BTC, "side": "buy", "quantity": 0.01, "in_journal": False,
                                         "exchange_id": str(fx.orders[0].order_id)}]

        with pytest.raises(ControlError, match="accept"):
            await e.resume(by="test")
        assert e.state is EngineState.PAUSED
        assert rows(db, "SELECT state FROM engine_state") == [("PAUSED",)]

        accepted = await e.accept_reconcile(by="test")
        assert [d["client_order_id"] for d in accepted] == ["by-hand-1"]
        assert await e.resume(by="test") is EngineState.RUNNING
        assert rows(db, "SELECT state FROM engine_state") == [("RUNNING",)]
        # the order is the exchange's business: ffe neither cancelled nor adopted it
        assert fx.open_order("by-hand-1") is not None
        assert "by-hand-1" not in e.orders.live and rows(db, "SELECT client_order_id FROM orders") == []
        # accepted means explained: the next reconciliation does not stop the engine for it again
        assert await e.reconcile() == []
        assert e.state is EngineState.RUNNING
        # ... but a new one does
        await place_by_hand(fx, "by-hand-2", price=21_000.0)
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING  # once: it may be a read that lags
        await asyncio.sleep(e.venue.settle_s)
        assert [d["client_order_id"] for d in await e.reconcile()] == ["by-hand-2"]
        assert e.state is EngineState.PAUSED
        await e.flush()
        assert [r["status"] for r in stored_events(db, "reconcile")] == ["unconfirmed", "differences", "accepted",
                                                                         "ok", "unconfirmed", "differences"]


async def test_an_unknown_open_order_the_venue_shows_without_a_side_is_not_shown_as_a_buy(tmp_path, fx):
    await place_by_hand(fx, "by-hand-1")
    fx.orders[0].side = ""  # the venue's open orders leave its side out
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    async with engine_session(settings, live=True) as running:
        assert running.engine.state is EngineState.PAUSED
        (difference,) = running.engine.reconcile_blocked
        assert difference["client_order_id"] == "by-hand-1" and difference["side"] == "unknown"


async def test_reads_that_lag_the_venue_s_books_are_no_difference(tmp_path, fx):
    # An exchange's reads can trail its books for a moment: here the balances from before an order's last fill, and
    # the open orders listing that order, which the journal has seen filled. A difference found once is looked at
    # again the venue's settle window later, and only one found again pauses the engine.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        fx.partial_fill_next(0.5)
        answer = await e.operator_order(BTC, "buy", 0.01)
        cid = answer["client_order_id"]
        fx.fill(cid)  # the rest fills: the venue's last change
        await e.orders.poll()
        assert cid not in e.orders.live and e.portfolio.positions[BTC].quantity == pytest.approx(
            fx.balances["BTC"].total, abs=1e-12)
        fx.fault("GET /api/v3/account", "stale")
        fx.fault("GET /api/v3/openOrders", "stale")
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_blocked == []
        await e.flush()
        once = stored_events(db, "reconcile")[-1]
        assert once["status"] == "unconfirmed"
        # (equity differs too when the price has moved since the fill: by the fee alone it can be within tolerance)
        kinds = {d["kind"] for d in once["differences"]}
        assert {"cash", "position", "unknown_open_order"} <= kinds <= {"cash", "equity", "position", "unknown_open_order"}
        await asyncio.sleep(e.venue.settle_s)
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING and e.reconcile_blocked == []
        await e.flush()
        assert stored_events(db, "reconcile")[-1]["status"] == "ok"


async def test_an_order_whose_trades_lag_its_fill_is_no_difference_within_the_settle_window(tmp_path, fx):
    # The venue shows the order filled; its trades, read for the fill's price and fees, do not show it yet: the
    # journal holds the order open and unfilled while the venue's balances hold the fill. For the venue's settle
    # window that is a read that lags, not a difference: two such lags a window apart (one order's, then the next
    # one's) would otherwise count as one difference found twice and pause the engine. Past the window it counts.
    options = exchange_options(newOrderRespType={"market": "RESULT", "limit": "RESULT"})
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600},
                             exchange={"options": options})
    db = settings.db_path
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await next_bar(e, fx)
        fx.fault(MY_TRADES, "stale", seconds=3600, times=1000)  # the trades trail the order book until cleared
        cid = (await e.operator_order(BTC, "buy", 0.01))["client_order_id"]
        assert e.orders.live[cid].status is OrderStatus.OPEN and e.orders.live[cid].filled == 0
        assert fx.balances["BTC"].total > 0
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING
        await e.flush()
        last = stored_events(db, "reconcile")[-1]
        # (within the settle window after the order changed, the balances count for nothing either way)
        assert (last["status"], last["differences"]) == ("unconfirmed", [])
        # The trades still lag a settle window later: no longer a read that lags. Found, then found again.
        clock.forward(e.venue.settle_s + 0.1)
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING
        clock.forward(e.venue.settle_s + 0.1)
        assert [d["kind"] for d in await e.reconcile()][:1] == ["position"] and e.state is EngineState.PAUSED
        fx.clear_faults(MY_TRADES)
        await e.orders.poll()
        assert cid not in e.orders.live and e.portfolio.positions[BTC].quantity == pytest.approx(
            fx.balances["BTC"].total, abs=1e-12)


async def test_running_engine_pauses_on_a_balance_it_cannot_explain_until_accepted(tmp_path, fx):
    settings = live_settings(tmp_path, fx, engine={"reconcile_interval_s": 600})
    db = settings.db_path
    clock = SteppedClock()  # the interval passes when the test says so
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        assert e.reconcile_blocked == []
        assert await running.store.get_kv(BASELINE_KEY) == {"BTC": 0.0}
        await e.resume(by="test")
        loop = asyncio.ensure_future(e.run())
        try:
            fx.balances["BTC"].free += 0.25  # BTC arrives that no order of ffe's explains
            clock.forward(600)
            await paused_by_reconciliation(db, "the engine paused, durably", timeout=20)
            # the coins, and what they are worth: the venue's equity is theirs more than the engine's
            assert e.state_reason == "reconcile: 2 difference(s)"
            position, equity = e.reconcile_blocked
            assert position == {"kind": "position", "symbol": BTC, "journal": 0.0, "venue": 0.25}
            assert equity["kind"] == "equity" and equity["venue"] - equity["journal"] == pytest.approx(
                0.25 * e.portfolio.last_price[BTC], abs=0.01)
            with pytest.raises(ControlError):
                await e.resume(by="test")

            await e.accept_reconcile(by="test")
            assert await running.store.get_kv(BASELINE_KEY) == {"BTC": 0.25}  # the new baseline
            assert await e.resume(by="test") is EngineState.RUNNING
            checks = len(stored_events(db, "reconcile"))
            # later reconciliations agree with the accepted baseline: the engine stays RUNNING
            for n in (1, 2):
                clock.forward(600)
                await wait_for(lambda: len(stored_events(db, "reconcile")) >= checks + n, timeout=20,
                               what=f"{n} more reconciliation(s)")
            assert e.state is EngineState.RUNNING and e.reconcile_blocked == []
            assert stored_events(db, "reconcile")[-1]["status"] == "ok"
        finally:
            e.request_stop()
            await loop


async def test_the_paused_reason_follows_the_differences_found_later(tmp_path, fx):
    # Paused on two differences, the engine finds a third at a later reconciliation: its state's reason (what
    # `ffe ctl status` and the console show, and the stored state) says the three it is held on now, as an accept
    # of them would, not the two of the first pause.
    settings = live_settings(tmp_path, fx, engine={"reconcile_interval_s": 600})
    db = settings.db_path
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await e.resume(by="test")
        loop = asyncio.ensure_future(e.run())
        try:
            fx.balances["BTC"].free += 0.25
            clock.forward(600)
            await wait_for(lambda: e.state_reason == "reconcile: 2 difference(s)", timeout=20,
                           what="the engine paused on two differences")
            await place_by_hand(fx, "by-hand-1")
            clock.forward(600)
            await wait_for(lambda: len(e.reconcile_blocked) == 3, timeout=20, what="the third difference confirmed")
            assert e.state is EngineState.PAUSED and e.state_reason == "reconcile: 3 difference(s)"
            # The state changes in memory first (no order passes the gates from then on), then is stored.
            await wait_for(lambda: rows(db, "SELECT state, reason, by FROM engine_state") == [
                ("PAUSED", "reconcile: 3 difference(s)", "reconcile")], timeout=20, what="the stored state's reason")
            assert len(await e.accept_reconcile(by="test")) == 3
        finally:
            e.request_stop()
            await loop

async def test_a_fill_while_the_engine_was_stopped_is_recorded_at_the_next_start(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        await e.resume(by="test")
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01, type="limit",
                                                price=29_000.0, reason=OrderReason.OPERATOR, ref_price=30_000.0))
        assert sub.accepted and sub.order.status is OrderStatus.OPEN, sub.reason
        cid = sub.order.client_order_id
    # stopped in order: the limit order stays open at the exchange, and fills there while ffe is down
    assert rows(db, "SELECT status FROM orders") == [("open",)]
    fx.set_price("BTCUSDT", 28_900.0)
    assert [(o.client_id, o.status, o.price) for o in fx.orders] == [(cid, "FILLED", 29_000.0)]

    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert rows(db, "SELECT status, filled, average FROM orders") == [("filled", 0.01, 29_000.0)]
        assert rows(db, "SELECT client_order_id, side, quantity, price FROM fills") == [(cid, "buy", 0.01, 29_000.0)]
        held = 0.01 * (1 - fx.fee_rate)  # the buy's fee was taken in BTC
        assert rows(db, "SELECT symbol, quantity, entry_price FROM positions") == [
            (BTC, pytest.approx(held), 29_000.0)]
        assert e.portfolio.positions[BTC].quantity == pytest.approx(held) and e.orders.live == {}
        # recorded as part of the start's reconciliation, which then finds nothing unexplained; the balances it read
        # right after the fill was booked may lag it, so it looks again the settle window later, before trading
        events = stored_events(db, "run", "fill", "reconcile")
        start = max(i for i, ev in enumerate(events) if ev["event"] == "run" and ev["phase"] == "start")
        assert [ev["event"] for ev in events[start + 1:]] == ["fill", "reconcile", "reconcile"]
        assert [ev["differences"] for ev in events[-2:]] == [[], []] and e.reconcile_blocked == []
    assert len(fx.orders) == 1  # nothing was sent again


async def test_exchange_unreachable_at_a_reconciliation_pauses_and_clears_once_it_agrees(tmp_path, fx):
    settings = live_settings(tmp_path, fx)
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await e.resume(by="test")
        fx.down = True
        (difference,) = await e.reconcile()
        assert difference["kind"] == "venue_unreachable"
        assert e.state is EngineState.PAUSED and rows(db, "SELECT by FROM engine_state") == [("reconcile",)]
        # said as what it is: an outage, not a difference for the operator to look into and accept
        (reason,) = rows(db, "SELECT reason FROM engine_state")[0]
        assert reason == "reconcile: the exchange could not be reached" and "difference" not in e.state_reason
        with pytest.raises(ControlError, match="could not be reached") as refused:
            await e.resume(by="test")  # nothing known about the account: no new entries
        assert "difference" not in str(refused.value)
        (gate,) = [g for g in blocking(e, e.clock.now_ms()) if g["gate"] == "RECONCILE"]
        assert gate["now"] == "the exchange could not be reached"

        fx.down = False
        assert await e.reconcile() == []
        # the exchange answers and agrees: nothing for the operator to accept; resuming is the operator's call
        assert e.state is EngineState.PAUSED and e.reconcile_blocked == []
        assert await e.resume(by="test") is EngineState.RUNNING
        await e.flush()
        assert [r["status"] for r in stored_events(db, "reconcile")] == ["ok", "failed", "ok"]


async def test_an_unreachable_exchange_is_no_difference_in_the_health_verdict_nor_the_metrics(tmp_path, fx):
    """/health and /metrics say the reconciliation compared nothing (the exchange could not be reached), not that it
    found a difference: the shipped alert rule on ffe_reconcile_differences pages "then ffe ctl accept", which an
    outage refuses."""
    import aiohttp
    from prometheus_client.parser import text_string_to_metric_families

    settings = live_settings(tmp_path, fx, monitor={"port": 0})
    async with engine_session(settings, live=True) as running:
        e, monitor = running.engine, running.monitor
        fx.down = True
        (difference,) = await e.reconcile()
        assert difference["kind"] == "venue_unreachable"
        verdict = monitor.health()
        assert verdict["reconcile"] == "unreachable" and verdict["reconcile_differences"] == 0, verdict
        assert verdict["status"] == "degraded" and any("could not be reached" in p for p in verdict["problems"])
        async with aiohttp.ClientSession() as s:
            async with s.get(monitor.url + "/metrics") as r:
                scraped = {smp.name: smp.value for fam in text_string_to_metric_families(await r.text())
                           for smp in fam.samples}
        assert scraped["ffe_reconcile_differences"] == 0
        fx.down = False
        assert await e.reconcile() == []
        assert monitor.health()["reconcile"] == "ok"


async def an_order_in_doubt(e, fx, side: Side, quantity: float) -> str:
    """An operator's order that the exchange places and fills while its answer is lost: in doubt. Its client id."""
    fx.fault(POST_ORDER, "drop_after")
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=side, quantity=quantity, reason=OrderReason.OPERATOR,
                                            ref_price=30_000.0))
    assert sub.accepted and sub.order.status is OrderStatus.IN_DOUBT, sub.reason
    return sub.order.client_order_id


async def test_a_fill_of_an_order_in_doubt_at_the_start_is_counted_once_in_the_cash(tmp_path, fx):
    # The engine stops with a buy in doubt: the exchange placed and filled it, the answer was lost. At the next
    # start the exchange says for a moment that it does not know the order (twice), so the start's reconciliation reads
    # the balances while the order is still in doubt: they already hold the buy that the journal has yet to
    # record. The position does not differ (the order explains it), and the cash is taken from the venue only
    # once nothing is in flight: recording the fill later must not take its cost out of the cash a second time.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        cid = await an_order_in_doubt(e, fx, Side.BUY, 0.01)
    assert rows(db, "SELECT status FROM orders") == [("in_doubt",)]
    assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]
    usdt = fx.balances["USDT"].total
    assert usdt < 10_000.0 - 290.0  # the buy's cost is out of the account

    fx.fault(GET_ORDER, "not_found_once", times=2)  # the start's lookup, and its second look before the balances
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.orders.live[cid].status is OrderStatus.IN_DOUBT  # not settled by the start
        assert e.reconcile_blocked == [] and e.state is EngineState.RUNNING, e.reconcile_blocked
        await wait_for(lambda: e.orders.poll() if e.orders.live else True, timeout=20, interval=0.1,
                       what="the order in doubt resolved by the poll")
        assert rows(db, "SELECT status FROM orders") == [("filled",)]
        await e.reconcile()
        assert e.reconcile_blocked == [], e.reconcile_blocked
        assert e.portfolio.cash == pytest.approx(usdt, abs=0.005)
        assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-9)
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(1,)] and len(fx.orders) == 1


async def test_accept_waits_until_no_order_is_in_doubt(tmp_path, fx):
    # A buy is in doubt (the exchange placed and filled it, the answer was lost, and its lookups fail for now)
    # when the operator accepts a difference found meanwhile. The venue's balances already hold the buy that the
    # journal has yet to record: taken as the baseline and the cash, they would count it a second time once the
    # fill is recorded. The accept is refused, with the reason, until the order is settled.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        await next_bar(e, fx)
        cid = await an_order_in_doubt(e, fx, Side.BUY, 0.01)
        assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]
        usdt = fx.balances["USDT"].total
        # lookups that fail (a final error, not an outage): the order stays in doubt whatever the time
        fx.fault(GET_ORDER, "error", times=6, status=400, code=-1100, msg="Illegal characters found in a parameter.")
        await place_by_hand(fx, "by-hand-1")
        (difference,) = await reconcile_twice(e)  # four lookups: each poll, and its second look before the balances
        assert difference["kind"] == "unknown_open_order" and e.state is EngineState.PAUSED
        baseline = await running.store.get_kv(BASELINE_KEY)
        cash = e.portfolio.cash

        with pytest.raises(ControlError, match=f"nothing accepted: order {cid} is in doubt"):
            await e.accept_reconcile(by="test")  # one more failed lookup: still in doubt
        ctl = await run_ffe_async(tmp_path, "ctl", "accept", "--data-dir", str(settings.data_dir), env=ffe_env(),
                                  name="accept")
        assert ctl.proc.returncode == 1, ctl.stdout + ctl.stderr
        (line,) = ctl.stderr.splitlines()
        assert f"nothing accepted: order {cid} is in doubt" in line and ctl.stdout == ""
        # nothing changed: the differences wait, the baseline and the cash are the journal's
        assert e.reconcile_blocked == [difference] and e.state is EngineState.PAUSED
        assert await running.store.get_kv(BASELINE_KEY) == baseline and e.portfolio.cash == cash
        assert fx.pending_faults(GET_ORDER) == 0

        await e.orders.poll()  # the lookup answers: the fill is recorded
        assert rows(db, "SELECT status FROM orders") == [("filled",)] and e.orders.live == {}
        assert [d["client_order_id"] for d in await e.accept_reconcile(by="test")] == ["by-hand-1"]
        assert e.portfolio.cash == pytest.approx(usdt, abs=0.005)
        assert await e.reconcile() == [] and e.reconcile_blocked == []
        assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-9)
        await e.flush()
        assert [r["status"] for r in stored_events(db, "reconcile")] == ["ok", "unconfirmed", "differences",
                                                                         "accepted", "ok"]
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(1,)] and len(fx.orders) == 2


async def test_a_fill_of_an_order_in_doubt_at_the_start_sets_no_peak_before_the_cash_is_settled(tmp_path, fx):
    # The engine stops with a sell in doubt: the exchange filled it, the answer was lost, so the exchange's cash
    # holds the proceeds that the journal has yet to record. At the next start the lookups fail for a while, and
    # the start's reconciliation leaves the cash to a later one. Recording the fill in between must not add the
    # proceeds to a cash that already holds them: a bar closing then would take the double count as a new peak
    # equity, and every drawdown after would be measured from it.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        bought = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.BUY, quantity=0.01,
                                                   reason=OrderReason.OPERATOR, ref_price=30_000.0))
        assert bought.accepted and bought.order.status is OrderStatus.FILLED, bought.reason
        held = e.portfolio.positions[BTC].quantity
        cid = await an_order_in_doubt(e, fx, Side.SELL, held)
    assert [(o.client_id, o.status) for o in fx.orders][1:] == [(cid, "FILLED")]
    assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
    usdt = fx.balances["USDT"].total  # all the account holds now

    # the start's lookup, and its second look before the balances, fail (a final error, not an outage)
    fx.fault(GET_ORDER, "error", times=2, status=400, code=-1100, msg="Illegal characters found in a parameter.")
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.orders.live[cid].status is OrderStatus.IN_DOUBT and e.state is EngineState.RUNNING
        peak = e.portfolio.peak_equity
        assert peak == pytest.approx(10_000.0, abs=1.0)  # the books' own, from before the stop
        await e.orders.poll()  # the lookup answers: the sell is recorded, before the next reconciliation
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        assert e.portfolio.cash == pytest.approx(usdt, abs=0.005) and BTC not in e.portfolio.positions
        assert await next_bar(e, fx) == 1 and await next_bar(e, fx) == 1  # the second closes the first's bar
        assert e.portfolio.peak_equity == pytest.approx(peak) and e.portfolio.drawdown_pct() < 0.1
        assert await e.reconcile() == [] and e.portfolio.cash == pytest.approx(usdt, abs=0.005)
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(2,)] and len(fx.orders) == 2


async def test_an_accept_does_not_take_a_read_that_lags_as_the_baseline(tmp_path, fx):
    # Coins arrive that no order of ffe's explains; the operator accepts them. The balances the accept reads come
    # first from a replica that has neither the coins nor ffe's last buy: taken as the new baseline, they would
    # leave a difference behind (the engine paused again by the next look). An accept takes balances that two
    # reads in a row agree on.
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await next_bar(e, fx)
        assert (await e.operator_order(BTC, "buy", 0.01))["accepted"]  # the exchange's last change: this buy
        held = e.portfolio.positions[BTC].quantity
        fx.balances["BTC"].free += 0.25
        assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "equity"]
        fx.fault("GET /api/v3/account", "stale")
        await e.accept_reconcile(by="test")
        assert (await running.store.get_kv(BASELINE_KEY))["BTC"] == pytest.approx(0.25, abs=1e-9)
        assert e.portfolio.positions[BTC].quantity == pytest.approx(held, abs=1e-12)
        assert await reconcile_twice(e) == [] and e.reconcile_blocked == []


async def test_an_accepted_deposit_s_cash_and_peak_are_stored_with_the_accept_s_record(tmp_path, fx):
    """A deposit accepted: the books' cash, peak and day's start are stored in the transaction of the accept's
    baseline and record, before the accept answers. Stored later (at the next housekeeping round), a kill in between
    left the new baseline with the old cash, and the restart found the same difference and paused again."""
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine  # no engine loop: nothing stores the books between bars
        await next_bar(e, fx)
        await e.flush()
        (before,) = [json.loads(v) for v, in rows(db, "SELECT value FROM kv WHERE key = 'portfolio'")]
        fx.balances["USDT"].free += 10.0  # a deposit
        assert [d["kind"] for d in await reconcile_twice(e)] == ["cash", "equity"]
        await e.accept_reconcile(by="test")
        # read from the file, as the process killed now would leave it
        (books,) = [json.loads(v) for v, in rows(db, "SELECT value FROM kv WHERE key = 'portfolio'")]
        assert books["cash"] == pytest.approx(fx.balances["USDT"].total) == pytest.approx(before["cash"] + 10.0)
        assert books["peak_equity"] == pytest.approx(before["peak_equity"] + 10.0)
        assert books["day_start_equity"] == pytest.approx(before["day_start_equity"] + 10.0)
        assert [r["status"] for r in stored_events(db, "reconcile")][-1] == "accepted"


async def test_an_accept_with_nothing_shown_accepts_nothing(tmp_path, fx):
    """An accept takes what a reconciliation showed the operator, and only that: with no difference waiting, a change
    at the venue since (coins arriving) must not be taken into the baseline unseen."""
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.reconcile_blocked == [] and e.state is EngineState.RUNNING
        cash = e.portfolio.cash
        fx.balances["BTC"].free += 0.25  # after the last reconciliation: nobody has seen it yet
        assert await e.accept_reconcile(by="test") == []
        assert await running.store.get_kv(BASELINE_KEY) == {"BTC": 0.0} and e.portfolio.cash == cash
        await e.flush()
        assert [r["status"] for r in stored_events(db, "reconcile")] == ["ok"]
        # the next reconciliation shows the coins, and an accept then takes them
        assert [d["kind"] for d in await reconcile_twice(e)] == ["position", "equity"]
        assert e.state is EngineState.PAUSED
        assert [d["kind"] for d in await e.accept_reconcile(by="test")] == ["position", "equity"]
        assert await running.store.get_kv(BASELINE_KEY) == {"BTC": 0.25}


async def test_an_accept_refuses_balances_that_moved_since_the_differences_were_shown(tmp_path, fx):
    """10 USDT withdrawn: reconciliation holds the engine, showing cash 10,000 in the journal and 9,990 at the
    exchange. Then 5,000 more leave, and no reconciliation runs before the operator accepts. The accept took the
    balances as they were then (4,990 in the books) while its record, and its answer, said 9,990: the 5,000 left
    unseen, in no record. An accept takes only what was shown: it is refused, nothing changed, and a reconciliation
    shows what the balances are now, which an accept then takes."""
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await reconcile_twice(e)
        fx.balances["USDT"].free -= 10.0
        shown = {d["kind"]: d for d in await reconcile_twice(e)}
        assert shown["cash"]["venue"] == pytest.approx(9_990.0), shown
        fx.balances["USDT"].free -= 5_000.0  # nobody has seen this yet
        with pytest.raises(ControlError, match="other amounts than the differences shown") as refused:
            await e.accept_reconcile(by="test")
        said = str(refused.value)
        assert "USDT: the exchange -10.00 off the books then, -5010.00 now" in said, said
        assert "second look" in said and "settle_window_ms" in said, said  # a new difference is confirmed first
        assert e.portfolio.cash == pytest.approx(10_000.0) and e.state is EngineState.PAUSED
        # The engine's loop reconciles at once (here, without it running, as it would)
        now = {d["kind"]: d for d in await reconcile_twice(e)}
        assert now["cash"]["venue"] == pytest.approx(4_990.0), now
        accepted = await e.accept_reconcile(by="test")
        assert {d["kind"]: d["venue"] for d in accepted}["cash"] == pytest.approx(4_990.0)
        assert e.portfolio.cash == pytest.approx(4_990.0)
        await e.flush()
    records = stored_events(db, "reconcile")
    assert [r["status"] for r in records].count("accepted") == 1
    said = [d["venue"] for r in records for d in r["differences"] if d.get("kind") == "cash"]
    assert said[-1] == pytest.approx(4_990.0) and pytest.approx(9_990.0) in said, said


async def test_a_difference_seen_once_after_a_refused_accept_is_said_to_wait_for_its_second_look(tmp_path, fx):
    """100 USDT deposited and shown; then coins of a traded symbol arrive, and the accept is refused. The
    reconciliation that follows sees the coins once: a difference seen for the first time is confirmed by a second
    look, the settle window later, and an accept meanwhile is refused again. `ffe ctl why` said to accept them; it
    says what the accept waits for."""
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await reconcile_twice(e)
        fx.balances["USDT"].free += 100.0
        await reconcile_twice(e)
        fx.balances["BTC"].free += 0.25
        with pytest.raises(ControlError, match="other amounts than the differences shown"):
            await e.accept_reconcile(by="test")
        await e.reconcile()  # the engine's at once
        assert [d["kind"] for d in e.reconcile_unconfirmed] == ["position"], e.reconcile_unconfirmed
        [held] = [b for b in blocking(e, e.clock.now_ms()) if b["gate"] == "RECONCILE"]
        assert "second look" in held["lifts"] and "refused" in held["lifts"], held
        await reconcile_twice(e)  # the second look confirms it: accepted with what was shown
        assert {d["kind"] for d in await e.accept_reconcile(by="test")} >= {"position", "cash"}
        assert await running.store.get_kv(BASELINE_KEY) == {"BTC": 0.25}


async def test_the_balance_asked_before_a_repeat_never_takes_the_baseline(tmp_path, fx):  # noqa: F811
    """Before an order in doubt is sent again, the venue's balance is compared with the baseline the first
    reconciliation took. With none taken yet there is nothing to compare with: the answer is "nothing shown", and
    no baseline is taken then, from balances that may already hold the order in doubt."""
    settings = live_settings(tmp_path, fx, engine={"reconcile_interval_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        o = Order(client_order_id="ffe-1", symbol=BTC, side=Side.BUY, quantity=0.25, type="market",
                  reason=OrderReason.SIGNAL, venue="binance", created_ts=1, updated_ts=1)
        fx.balances["BTC"].free += 0.25  # as if the order had filled
        assert "as if it had been placed" in (await e.reconciler.shows_placed(o) or "")
        await running.store.delete_kv(BASELINE_KEY)
        assert await e.reconciler.shows_placed(o) is None
        assert await running.store.get_kv(BASELINE_KEY) is None


async def test_a_paper_account_s_difference_accepted_holds_across_a_restart(tmp_path):
    """The simulated exchange's cash differs from the books (its stored book edited, or damaged): reconciliation
    holds entries, the operator accepts the exchange's figure, and after a restart the books still take it: no
    difference comes back, `ffe doctor` agrees, and the peak equity is no phantom drawdown."""
    import json
    import sqlite3

    from ffe_engine import doctor

    settings = make_settings(tmp_path)
    async with engine_session(settings, max_bars=3) as host:
        assert (await host.engine.operator_order("BTC/USDT", "buy", 0.01))["accepted"]
        await host.run()
    with sqlite3.connect(settings.db_path) as db:
        (raw,) = db.execute("SELECT value FROM kv WHERE key = 'paper_venue'").fetchone()
        book = json.loads(raw)
        book["balances"]["USDT"] += 500.0
        db.execute("UPDATE kv SET value = ? WHERE key = 'paper_venue'", (json.dumps(book),))
    async with engine_session(settings, max_bars=3) as host:
        e = host.engine
        assert e.reconcile_blocked, "the difference found at start"
        accepted = await e.accept_reconcile(by="test")
        assert accepted
        await e.resume(by="test")  # accepted, then resumed, as the operator is told to
        cash = e.portfolio.cash
        assert cash == pytest.approx(book["balances"]["USDT"])
        await host.run()
    doctor.check(settings)
    async with engine_session(settings, max_bars=3) as host:
        e = host.engine
        assert e.reconcile_blocked == [] and e.state is EngineState.RUNNING
        assert e.portfolio.cash == pytest.approx(cash)
        assert e.portfolio.drawdown_pct() < 1.0


async def test_a_paper_account_s_accepted_cash_is_stored_with_the_books_and_the_accept_s_record(tmp_path):
    """The paper account's accepted difference (cash_accepted, counted with its fills at every start) and the
    books' cash are stored in the accept's own transaction, with its record: a kill right after it leaves all or
    none of them, never the difference added to a start's cash with the books still holding the old."""
    import sqlite3

    settings = make_settings(tmp_path)
    async with engine_session(settings, max_bars=3) as host:
        assert (await host.engine.operator_order("BTC/USDT", "buy", 0.01))["accepted"]
        await host.run()
    with sqlite3.connect(settings.db_path) as db:
        (raw,) = db.execute("SELECT value FROM kv WHERE key = 'paper_venue'").fetchone()
        book = json.loads(raw)
        book["balances"]["USDT"] += 500.0
        db.execute("UPDATE kv SET value = ? WHERE key = 'paper_venue'", (json.dumps(book),))
    async with engine_session(settings) as host:
        e = host.engine
        assert e.reconcile_blocked, "the difference found at start"
        assert await e.accept_reconcile(by="test")
        stored = dict(rows(settings.db_path, "SELECT key, value FROM kv WHERE key IN ('portfolio', 'cash_accepted')"))
        assert json.loads(stored["cash_accepted"]) == pytest.approx(500.0)
        assert json.loads(stored["portfolio"])["cash"] == pytest.approx(book["balances"]["USDT"])
        assert [r["status"] for r in stored_events(settings.db_path, "reconcile")][-1] == "accepted"


async def test_an_accepted_open_order_is_not_forgotten_for_one_read_that_misses_it(tmp_path, fx):
    """A read of the open orders can lag behind the exchange (a replica): one that misses an order the operator
    accepted does not make ffe forget the acceptance, or the next read would find the order unknown again and
    pause the engine for it. Gone from two reads in a row (cancelled at the exchange), it is forgotten."""
    from ffe_engine.reconcile import ACCEPTED_KEY

    await place_by_hand(fx, "by-hand-1")
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert [d["client_order_id"] for d in await e.accept_reconcile(by="test")] == ["by-hand-1"]
        assert await e.resume(by="test") is EngineState.RUNNING
        accepted = await e.store.get_kv(ACCEPTED_KEY, [])
        assert len(accepted) == 1
        fx.fault("GET /api/v3/openOrders", "stale")  # a replica from before the order was placed
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING
        assert await e.store.get_kv(ACCEPTED_KEY, []) == accepted
        for _ in range(2):
            assert await e.reconcile() == []
            await asyncio.sleep(e.venue.settle_s)
        assert e.state is EngineState.RUNNING and await e.store.get_kv(ACCEPTED_KEY, []) == accepted
        # cancelled at the exchange: gone from two reads, forgotten
        other = binance_client(fx)
        try:
            await other.cancel_order(None, BTC, {"origClientOrderId": "by-hand-1"})
        finally:
            await other.close()
        await e.reconcile()
        await e.reconcile()
        assert await e.store.get_kv(ACCEPTED_KEY, []) == [] and e.state is EngineState.RUNNING


async def test_one_read_that_misses_an_unknown_open_order_does_not_lift_its_hold(tmp_path, fx):
    # A read of the open orders can lag the exchange's books (a replica): one that no longer shows the order placed
    # by hand lifts nothing. Gone for real (cancelled at the exchange), two reads in a row without it lift it.
    await place_by_hand(fx, "by-hand-1")
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        assert e.state is EngineState.PAUSED
        assert [d["client_order_id"] for d in e.reconcile_blocked] == ["by-hand-1"]
        fx.fault("GET /api/v3/openOrders", "stale", seconds=3600)  # the book from before the order was placed
        await e.reconcile()
        assert [d["client_order_id"] for d in e.reconcile_blocked] == ["by-hand-1"]
        with pytest.raises(ControlError, match="accept"):
            await e.resume(by="test")
        other = binance_client(fx)
        try:
            await other.cancel_order(str(fx.orders[0].order_id), BTC)
        finally:
            await other.close()
        await asyncio.sleep(e.venue.settle_s)
        await e.reconcile()
        await e.reconcile()
        assert e.reconcile_blocked == []
        assert await e.resume(by="test") is EngineState.RUNNING
