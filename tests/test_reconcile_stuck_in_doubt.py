"""An order whose answer was lost, that the exchange's lookups never find although its balances show it placed,
stays in doubt: it is never sent again. Meanwhile its symbol, the cash and the equity cannot be compared with the
exchange. That must not last: past a bound the order is itself what holds the engine, so that a withdrawal made
meanwhile (or any other difference) is not traded through."""

from __future__ import annotations

import pytest

from conftest import engine_session
from ffe_engine.errors import ControlError
from live_helpers import BTC, GET_ORDER, POST_ORDER, fx, rows, stored_events, wait_for  # noqa: F401
from receiver import Receiver
from test_live_books import climbing, engine_loop, strategy_settings

FAST = {"retry_initial_s": 0.05, "retry_max_s": 0.2, "retry_attempts": 2, "timeout_s": 2.0}


async def test_an_order_in_doubt_for_good_pauses_the_engine_instead_of_trading_through(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await wait_for(lambda: stored_events(db, "reconcile")[-1:] and
                           stored_events(db, "reconcile")[-1]["status"] == "ok", timeout=20,
                           what="a reconciliation that agrees")
            # the entry is placed and filled, its answer lost; the exchange's lookups never find it
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(GET_ORDER, "error", times=100_000, status=400, code=-2013, msg="Order does not exist.")
            fx.market_clock.step()
            await wait_for(lambda: any(o.status.value == "in_doubt" for o in e.orders.live.values()), timeout=30,
                           what="the entry in doubt")
            (cid,) = list(e.orders.live)
            fx.balances["USDT"].free -= 250.0  # and quote leaves the account (a withdrawal)
            await wait_for(lambda: rows(db, "SELECT state, by FROM engine_state") == [("PAUSED", "reconcile")],
                           timeout=30, what="the engine paused by reconciliation")
            assert cid in e.orders.live and e.orders.live[cid].status.value == "in_doubt"
            assert any(d.get("client_order_id") == cid for d in e.reconcile_blocked), e.reconcile_blocked
        assert len(fx.orders) == 1  # never sent again


async def test_the_operator_is_told_what_holds_the_engine_and_what_lifts_it(tmp_path, fx):
    """Not "accept" (refused while the order is in doubt): the order, and that it lifts once the order settles."""
    hook = await Receiver().start()
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3},
                                 alerts={"webhook_url": hook.url + "/hook", **FAST})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.fault(POST_ORDER, "drop_after")
            fx.fault(GET_ORDER, "error", times=100_000, status=400, code=-2013, msg="Order does not exist.")
            fx.market_clock.step()
            await wait_for(lambda: rows(db, "SELECT state, by FROM engine_state") == [("PAUSED", "reconcile")],
                           timeout=60, what="the engine paused by reconciliation")
            (cid,) = list(e.orders.live)
            pages = lambda: [r.body for r in hook.delivered if r.body.get("kind") == "RECONCILE"]  # noqa: E731
            await wait_for(lambda: pages(), timeout=15, what="the page")
            text = pages()[0]["text"]
            assert cid in text and "in doubt" in text and "ffe ctl accept" not in text, text
            with pytest.raises(ControlError, match="in doubt") as info:
                await e.resume(by="test")
            assert "accept" not in str(info.value)
    await hook.stop()
