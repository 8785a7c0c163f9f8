"""An accept while an order's trades lag its fill at the exchange for longer than the settle window.

The exchange shows the order filled, and its balances hold the fill; the order's trades, which the books take the
fill from (its price and fees), are not listed yet. The books hold the order open and unfilled. Past the settle
window reconciliation pauses the engine on the coins and the cash the fill explains. An accept then would take the
fill's coins into the baseline and its cost off the cash, and the fill booked once its trades are listed would count
them a second time. Real parts: an engine opened in live mode (its CcxtVenue, real ccxt), its SQLite database, the
fake Binance on 127.0.0.1 whose trade list trails its order book, and `ffe ctl accept` as a subprocess.
"""

from __future__ import annotations

from typing import Any

import pytest

from conftest import engine_session, ffe_env
from ffe_engine.model import EngineState, OrderStatus
from ffe_engine.reconcile import BASELINE_KEY
from live_helpers import (BTC, SteppedClock, exchange_options, fx, live_settings, next_bar, rows,  # noqa: F401
                          run_ffe_async, stored_events)

MY_TRADES = "GET /api/v3/myTrades"


def lag_settings(tmp_path, fx, **exchange: Any) -> Any:
    """A live engine RUNNING at its start, whose orders are answered without their fills (RESULT), so that their
    fills are read from the trade list, and whose reconciliation runs when the test says."""
    options = exchange_options(newOrderRespType={"market": "RESULT", "limit": "RESULT"})
    return live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600},
                         exchange={"options": options, **exchange})


async def paused_on_lagging_trades(e, fx, clock: SteppedClock) -> str:
    """An operator's buy filled at the exchange, its trades not listed (until the test clears the fault), past the
    settle window: the engine paused on the differences it explains. Its client order id."""
    fx.fault(MY_TRADES, "stale", seconds=3600, times=10_000)
    cid = str((await e.operator_order(BTC, "buy", 0.01))["client_order_id"])
    for _ in range(3):
        clock.forward(e.venue.settle_s + 0.1)
        await e.reconcile()
    assert e.state is EngineState.PAUSED
    assert e.reconcile_blocked and all(d.get("trades_behind") == [cid] for d in e.reconcile_blocked)
    return cid


async def test_no_accept_while_an_order_s_trades_lag_its_fill_past_the_settle_window(tmp_path, fx):
    settings = lag_settings(tmp_path, fx)
    db = settings.db_path
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await running.start_control()
        await next_bar(e, fx)
        fx.fault(MY_TRADES, "stale", seconds=3600, times=10_000)  # the trade list trails until cleared
        cid = (await e.operator_order(BTC, "buy", 0.01))["client_order_id"]
        assert e.orders.live[cid].status is OrderStatus.OPEN and e.orders.live[cid].filled == 0
        bought = fx.balances["BTC"].total
        assert bought > 0
        # Past the settle window the lag counts: found, found again a window later, the engine paused.
        for _ in range(3):
            clock.forward(e.venue.settle_s + 0.1)
            await e.reconcile()
        assert e.state is EngineState.PAUSED
        found = {d["kind"]: d for d in e.reconcile_blocked}
        assert found["position"]["venue"] == pytest.approx(bought, abs=1e-12)
        # Reported as what the lagging order explains, not as coins and cash of unknown origin.
        assert found["position"]["trades_behind"] == [cid] and found["cash"]["trades_behind"] == [cid]
        cash, baseline = e.portfolio.cash, await running.store.get_kv(BASELINE_KEY)

        for args in ((), ("--own-coins",)):
            ctl = await run_ffe_async(tmp_path, "ctl", "accept", *args, "--data-dir", str(settings.data_dir),
                                      env=ffe_env(), name="accept")
            assert ctl.proc.returncode == 1, ctl.stdout + ctl.stderr
            (line,) = ctl.stderr.splitlines()
            assert "nothing accepted" in line and cid in line and "trades are listed" in line, line
        assert e.portfolio.cash == cash and await running.store.get_kv(BASELINE_KEY) == baseline
        assert "accepted" not in [r["status"] for r in stored_events(db, "reconcile")]

        # The trades are listed: the fill is booked once, and the books agree with the account.
        fx.clear_faults(MY_TRADES)
        await e.orders.poll()
        assert cid not in e.orders.live
        clock.forward(e.venue.settle_s + 0.1)
        assert await e.reconcile() == [] and e.reconcile_blocked == []
        assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-12)
        assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total, abs=1e-6)
        assert await running.store.get_kv(BASELINE_KEY) == baseline


async def test_the_kill_switch_says_an_order_filled_whose_trades_lag_filled_not_a_failed_cancel(tmp_path, fx):
    """The exchange shows the order filled and answers its cancel so; its trades are not listed yet, and the books
    hold it open until they are. The kill switch's report lists it filled before its cancel, as an order whose
    trades are listed (docs/order-path.md: an order already filled is recorded as what it became, not as a failed
    cancel), and the halt is no failure for the operator to act on."""
    settings = lag_settings(tmp_path, fx)
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await next_bar(e, fx)
        fx.fault(MY_TRADES, "stale", seconds=3600, times=10_000)
        cid = (await e.operator_order(BTC, "buy", 0.01))["client_order_id"]
        assert cid in e.orders.live and e.orders.live[cid].filled == 0
        report = await e.halt(reason="test", by="test")
        assert report.failed == [] and report.filled == [cid], report
        [switch] = stored_events(settings.db_path, "kill_switch")
        assert switch["failed"] == [] and switch["filled"] == [cid], switch
        fx.clear_faults(MY_TRADES)
        await e.orders.poll()
        assert cid not in e.orders.live
        assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-12)


async def test_an_order_whose_trades_are_never_listed_is_settled_by_the_operator_and_booked_once(tmp_path, fx):
    """The exchange shows the order filled and never lists its trades: waiting for them would keep the engine paused
    for ever. `ffe ctl settle ID filled` books what the exchange filled beyond the trades it lists, at the price the
    operator read from the exchange's account, and ends the order; the accept is then taken, and trades listed
    after all book nothing twice. Refused, nothing booked: within the settle window, and a quantity other than the
    rest the exchange shows filled."""
    # A settle window the `ffe ctl` process's own start cannot outlast on a loaded machine: the test moves the clock
    # past it.
    settings = lag_settings(tmp_path, fx, settle_window_ms=120_000)
    clock = SteppedClock()

    async def ctl(*args: str):
        return await run_ffe_async(tmp_path, "ctl", *args, "--data-dir", str(settings.data_dir), env=ffe_env(),
                                   name="ctl")

    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await running.start_control()
        await next_bar(e, fx)
        fx.fault(MY_TRADES, "stale", seconds=3600, times=10_000)
        cid = str((await e.operator_order(BTC, "buy", 0.01))["client_order_id"])
        placed = fx.orders[-1]
        price, quantity = placed.quote_filled / placed.filled, placed.filled
        early = await ctl("settle", cid, "filled", "--quantity", f"{quantity}", "--price", f"{price}", "--yes")
        assert early.proc.returncode == 1 and "settle window" in early.stderr, early.stdout + early.stderr
        for _ in range(3):
            clock.forward(e.venue.settle_s + 0.1)
            await e.reconcile()
        assert e.state is EngineState.PAUSED and e.reconcile_blocked
        refused = await ctl("resume")  # the way out, said where the operator looks
        assert refused.proc.returncode == 1 and "ffe ctl settle" in refused.stderr, refused.stdout + refused.stderr

        wrong = await ctl("settle", cid, "filled", "--quantity", f"{quantity / 2}", "--price", f"{price}", "--yes")
        assert wrong.proc.returncode == 1 and f"{quantity:.8g}" in wrong.stderr, wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        assert cid in e.orders.live and e.orders.live[cid].filled == 0

        settled = await ctl("settle", cid, "filled", "--quantity", f"{quantity}", "--price", f"{price}", "--yes")
        assert settled.proc.returncode == 0, settled.stdout + settled.stderr
        assert cid not in e.orders.live
        db = settings.db_path
        assert rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (cid,)) == [
            ("filled", pytest.approx(quantity))]
        assert rows(db, "SELECT quantity, price FROM fills") == [(pytest.approx(quantity), pytest.approx(price))]
        (note,) = stored_events(db, "order_settled")
        assert (note["client_order_id"], note["outcome"], note["by"]) == (cid, "filled", "ctl"), note

        # What still differs (the fee the exchange took in coins, one amount step here) is found and accepted; the
        # engine resumes.
        clock.forward(e.venue.settle_s + 0.1)
        found = {d["kind"] for d in await e.reconcile()}
        assert "position" in found, found
        accepted = await ctl("accept")
        assert accepted.proc.returncode == 0, accepted.stdout + accepted.stderr
        resumed = await ctl("resume")
        assert resumed.proc.returncode == 0, resumed.stdout + resumed.stderr
        assert e.state is EngineState.RUNNING
        clock.forward(e.venue.settle_s + 0.1)
        assert await e.reconcile() == []
        held, cash = e.portfolio.positions[BTC].quantity, e.portfolio.cash
        assert cash == pytest.approx(fx.balances["USDT"].total, abs=1e-6)

        # The trades are listed after all: nothing booked twice, and the books still agree with the account.
        fx.clear_faults(MY_TRADES)
        await e.orders.poll()
        clock.forward(e.venue.settle_s + 0.1)
        assert await e.reconcile() == [] and e.state is EngineState.RUNNING
        assert rows(db, "SELECT count(*) FROM fills") == [(1,)]
        assert (e.portfolio.positions[BTC].quantity, e.portfolio.cash) == (held, cash)

        # The position closes: what is sold is what the account holds, not the fee's worth more.
        closed = await ctl("close", BTC, "--yes")
        assert closed.proc.returncode == 0, closed.stdout + closed.stderr
        await e.orders.poll()
        assert fx.balances["BTC"].total == pytest.approx(0.0, abs=1e-12)
        # the fee's worth the books held beyond the coins is left as dust, which the accepted baseline covers
        assert BTC not in e.portfolio.positions or e.portfolio.is_dust(BTC), e.portfolio.positions
        clock.forward(e.venue.settle_s + 0.1)
        assert await e.reconcile() == []


async def test_an_order_whose_cancel_the_exchange_confirmed_is_not_taken_for_lost_while_its_trades_lag(tmp_path, fx):
    """The exchange fills part of a resting order and answers its cancel CANCELED with that fill; its trade list
    trails, and its lookups by id do not find the order for longer than the settle window (a replica behind). The
    venue has said how the order ended: it is not "no longer known to the venue" (ended rejected with a fill, and an
    ORDER_REAPPEARED page when it shows up again); it waits for its trades, and ends cancelled with its fill."""
    from live_helpers import GET_ORDER
    from test_live_engine import open_limit_orders

    settings = lag_settings(tmp_path, fx)
    db = settings.db_path
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await next_bar(e, fx)
        [cid] = await open_limit_orders(e, 1)
        fx.fault(MY_TRADES, "stale", seconds=3600, times=10_000)
        fx.fill(cid, qty=0.0004)
        done, why = await e.orders.cancel(e.orders.live[cid], by="ctl")
        assert done and "its last fill is recorded once" in why, why
        fx.fault(GET_ORDER, "not_found_once", times=10_000)
        for _ in range(5):
            clock.forward(e.venue.settle_s + 0.1)
            await e.orders.poll()
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("open",)]
        assert not [v for v in stored_events(db, "venue_fault") if v.get("kind") == "reappeared"]
        fx.clear_faults(GET_ORDER)
        fx.clear_faults(MY_TRADES)
        await e.orders.poll()
        assert rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (cid,)) == \
            [("canceled", pytest.approx(0.0004))]
