"""An entry whose answer was lost is sent again, once proven absent, only while what decided it still stands.

The exchange can keep an order in doubt for a while (its settle window, a Retry-After, an engine down meanwhile):
by the time the order is proven absent the market may have moved past the stops it was made with, or a bar closed
since, on which the strategy (or the operator) decides again. Sent then, it would buy a trade nobody chose (an
approval that bought above its own take-profit). It ends `rejected`, "not sent again: ...", and nothing reaches the
exchange. An exit is sent again whatever the price: the position must be closed.
"""

from __future__ import annotations

import sqlite3

import pytest

from conftest import engine_session
from ffe_engine.errors import ControlError
from live_helpers import (BTC, M, POST_ORDER, engine_loop, fx, live_env, rows, run_ffe_async,  # noqa: F401
                          wait_for)
from test_live_books import (climbing, poll_until_ended, sends, strategy_approval, strategy_order,
                             strategy_settings)


async def test_an_approved_entry_proven_absent_after_the_price_passed_its_take_profit_is_not_sent_again(tmp_path,
                                                                                                       fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.fault(POST_ORDER, "5xx_not_executed", status=503)  # the order never reached the book
            await running.start_control()
            ctl = await run_ffe_async(tmp_path, "ctl", "approve", a["approval_id"], "--data-dir",
                                      str(settings.data_dir), env=live_env(fx), name="approve")
            [cid] = list(e.orders.live)
            assert e.orders.live[cid].status.value == "in_doubt"
            # Said as a closing order's lost answer is: in doubt, and a failure for a script.
            assert ctl.proc.returncode == 1, ctl.stdout + ctl.stderr
            assert f"its order {cid} is in doubt: the answer was lost" in ctl.stdout, ctl.stdout
            [(take_profit,)] = rows(settings.db_path, "SELECT json_extract(intent, '$.take_profit') FROM orders "
                                    "WHERE client_order_id = ?", (cid,))
            fx.set_price("BTCUSDT", round(take_profit * 1.03, 2))
            await poll_until_ended(e, cid, every=0.3, at_most=40)
        assert sends(fx, cid) == 1
        assert fx.orders == [] and fx.balances["BTC"].total == 0
        [(status, error)] = rows(settings.db_path, "SELECT status, error FROM orders WHERE client_order_id = ?",
                                 (cid,))
        assert status == "rejected" and error.startswith("not sent again: "), error
        assert "take-profit" in error, error
        assert BTC not in e.portfolio.positions


async def test_an_entry_proven_absent_once_a_bar_has_passed_since_it_was_made_is_not_sent_again(tmp_path, fx):
    """The engine was down longer than a bar with the strategy's entry in doubt: at the restart it is proven
    absent, and the strategy has decided again since; the old entry is not sent."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.fault(POST_ORDER, "5xx_not_executed", status=503)
            cid = await strategy_order(fx)
            await wait_for(lambda: cid in e.orders.live and e.orders.live[cid].status.value == "in_doubt",
                           timeout=30, what="the entry in doubt")
    # Made two bars before the restart (the engine down that long).
    with sqlite3.connect(settings.db_path) as db:
        db.execute("UPDATE orders SET created_ts = created_ts - ? WHERE client_order_id = ?", (2 * M, cid))
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await poll_until_ended(e, cid, every=0.3, at_most=40)
        assert cid not in e.orders.live
    assert sends(fx, cid) == 1
    assert fx.orders == [] and fx.balances["BTC"].total == 0
    [(status, error)] = rows(settings.db_path, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,))
    assert status == "rejected" and error.startswith("not sent again: "), error
    assert "bar" in error, error


async def test_an_entry_proven_absent_within_its_bar_and_its_stops_is_sent_again(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            fx.fault(POST_ORDER, "5xx_not_executed", status=503)
            cid = await strategy_order(fx)
            await poll_until_ended(e, cid, every=0.3, at_most=40)
        assert sends(fx, cid) == 2
        [(status,)] = rows(settings.db_path, "SELECT status FROM orders WHERE client_order_id = ?", (cid,))
        assert status == "filled"
        assert BTC in e.portfolio.positions


async def test_an_approve_while_the_exchange_holds_orders_leaves_the_trade_pending(tmp_path, fx):
    """The exchange asked for no orders for a while (Retry-After): an approve then sends nothing and ends nothing;
    the trade stays pending, to approve once the wait is over (within its time to live)."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.fault(POST_ORDER, "429", retry_after=30, code=-1015)  # the account's limit on orders
            await e.operator_order(BTC, "buy", 0.01)  # refused: the exchange's Retry-After holds orders from here
            assert e.orders.held_until() is not None
            with pytest.raises(ControlError, match="VENUE_HOLD") as refused:
                await e.approve(a["approval_id"], by="test")
            assert "pending" in str(refused.value)
            assert a["approval_id"] in e.approvals.pending
        assert len(fx.requests_to(POST_ORDER)) == 1
        assert rows(settings.db_path, "SELECT status FROM approvals WHERE approval_id = ?", (a["approval_id"],)) == [
            ("pending",)]


async def test_an_approve_while_the_exchange_holds_every_request_leaves_the_trade_pending_and_says_so(tmp_path, fx):
    """A ban of the address (429 -1003 on any request: every request held) while a trade waits for approval: its
    price cannot be read either. The approve said only that the price could not be read, `approve it again`, which
    fails the same way until the wait is over; it says VENUE_HOLD and when to approve again, as for orders held."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"})
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.fault("GET /api/v3/klines", "429", retry_after=30)  # the address's request weight: every request
            fx.market_clock.step()
            await wait_for(lambda: e.venue.requests_held_until() is not None, timeout=30, what="the hold")
            with pytest.raises(ControlError, match="VENUE_HOLD") as refused:
                await e.approve(a["approval_id"], by="test")
            said = str(refused.value)
            assert "pending" in said and "once the wait is over" in said, said
            assert a["approval_id"] in e.approvals.pending
        assert fx.requests_to(POST_ORDER) == []
