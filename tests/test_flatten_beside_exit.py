"""A flatten pressed while a take-profit works on the position, whose cancel the exchange answers "Unknown order
sent." although the order is still open (as Binance can for a moment): what is left beside that exit (coins below
one amount step, or nothing) is no failure and no order, and the position is not dropped. The exit's cancel is sent
again; once it has ended unfilled, the flatten's follow-up closes the position, also in an engine started again
before that. And the kill switch's cancel of such an exit, whose lookup fails too, is sent again instead of leaving
the exit open at the exchange. Against the fake Binance."""

from __future__ import annotations

import json

import pytest

from conftest import engine_session
from ffe_engine.model import EngineState, OrderReason, OrderStatus, Side
from ffe_engine.risk import OrderIntent
from live_helpers import BTC, DELETE_ORDER, GET_ORDER, POST_ORDER, engine_loop, fx, live_settings, rows, stored_events, \
    wait_for  # noqa: F401
from test_live_engine import running_live

STEP = 0.00001  # the fake's amount step for BTC/USDT
# bought -> held (Binance takes a buy's fee from the coins): with the take-profit on every whole step of it, what
# is left beside it is 0.00000512 BTC (below one step: no order can sell it) or nothing at all
BOUGHT = {"sub_step": 0.01488, "none": 0.02}


async def held_beside_a_take_profit(e, fx, left: str) -> tuple[float, str]:
    """A position and a resting take-profit on all of it the venue can sell; the position and the exit's id."""
    bought = await e.operator_order(BTC, "buy", BOUGHT[left])
    assert bought["accepted"], bought
    held = e.portfolio.positions[BTC].quantity
    exit_qty = round(int(held / STEP + 1e-6) * STEP, 8)
    assert (held - exit_qty > 1e-9) is (left == "sub_step"), (held, exit_qty)
    sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=exit_qty, type="limit",
                                            price=40_000.0, reason=OrderReason.TAKE_PROFIT, ref_price=30_000.0,
                                            reduce_only=True))
    assert sub.accepted and sub.order.status is OrderStatus.OPEN, sub.reason
    # Its cancel, and the next few sent again, answered "Unknown order sent." while it is still open: for longer
    # than the flatten's own closing attempts take.
    fx.fault(DELETE_ORDER, "not_found_once", times=6)
    return held, sub.order.client_order_id


def flattened(e, fx, db) -> bool:
    """A flatten sell filled, the books hold nothing the venue can sell, and the flatten is no longer followed up."""
    return bool([o for o in fx.orders if o.type == "MARKET" and o.side == "SELL" and o.status == "FILLED"]
                and e.portfolio.holding(BTC) is None
                and rows(db, "SELECT value FROM kv WHERE key = 'flatten_under_way'") in ([(None,)], [("null",)]))


def assert_flattened(e, fx, db, take_profit: str) -> None:
    """The take-profit ended unfilled, one flatten sell sold every step held, nothing was refused on the way."""
    assert [(o.client_id, o.status, o.filled) for o in fx.orders if o.side == "SELL" and o.type == "LIMIT"] == \
        [(take_profit, "CANCELED", 0.0)]
    assert [o.status for o in fx.orders if o.side == "SELL" and o.type == "MARKET"] == ["FILLED"]
    assert fx.balances["BTC"].total < STEP  # at most what no order can sell
    assert e.portfolio.holding(BTC) is None
    assert [o for o in stored_events(db, "order") if o["status"] == "refused"] == []
    flattens = [k for k in stored_events(db, "kill_switch") if k["action"] == "flatten"]
    assert [f for k in flattens for f in k["failed"] if "symbol" in f] == [], flattens
    assert e.state is EngineState.HALTED


@pytest.mark.parametrize("left", ["sub_step", "none"])
async def test_a_flatten_beside_an_exit_its_cancel_did_not_end_closes_the_position_once_it_ends(tmp_path, fx,
                                                                                               left):
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        _, take_profit = await held_beside_a_take_profit(e, fx, left)
        async with engine_loop(e):
            result = await e.flatten(by="test")
            assert [f.get("client_order_id") for f in result["failed"]] == [take_profit], result
            assert result["closing"] == [] and [w["symbol"] for w in result.get("after_exit", [])] == [BTC], result
            await wait_for(lambda: flattened(e, fx, db), timeout=20, what="the position closed by the follow-up")
        assert_flattened(e, fx, db, take_profit)


@pytest.mark.parametrize("left", ["sub_step", "none"])
async def test_a_flatten_beside_an_exit_its_cancel_did_not_end_goes_on_after_a_restart(tmp_path, fx, left):
    settings = live_settings(tmp_path, fx)
    async with running_live(tmp_path, fx) as running:
        e = running.engine
        _, take_profit = await held_beside_a_take_profit(e, fx, left)
        result = await e.flatten(by="test")  # no engine loop: the exit's cancel is not sent again before the stop
        assert [f.get("client_order_id") for f in result["failed"]] == [take_profit], result
    assert fx.open_order(take_profit) is not None
    [(stored,)] = rows(settings.db_path, "SELECT value FROM kv WHERE key = 'flatten_under_way'")
    assert BTC in (json.loads(stored) or {}), stored  # followed up
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        assert e.state is EngineState.HALTED and e.portfolio.holding(BTC) is not None
        async with engine_loop(e):
            await wait_for(lambda: flattened(e, fx, db), timeout=20, what="the position closed after the restart")
        assert_flattened(e, fx, db, take_profit)


async def test_a_flatten_refused_beside_an_exit_says_why_and_what_is_held_once_the_exit_has_ended(tmp_path, fx):
    """What is left beside the exit can be sold, and the exchange refuses each closing order for it: the flatten's
    failure says the exchange's reason, and the position is still followed, so that once the exit has ended unfilled
    what is held is said too (no closing attempt is left for it)."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        bought = await e.operator_order(BTC, "buy", 0.02)
        assert bought["accepted"], bought
        sub = await e.orders.submit(OrderIntent(symbol=BTC, side=Side.SELL, quantity=0.01, type="limit",
                                                price=40_000.0, reason=OrderReason.TAKE_PROFIT, ref_price=30_000.0,
                                                reduce_only=True))
        assert sub.accepted, sub.reason
        fx.fault(DELETE_ORDER, "not_found_once", times=6)
        fx.fault(POST_ORDER, "error", status=400, code=-2010, msg="Account has insufficient balance for requested "
                 "action.", times=3)
        async with engine_loop(e):
            result = await e.flatten(by="test")
            (failure,) = [f for f in result["failed"] if f.get("symbol") == BTC]
            assert "insufficient balance" in failure["error"], failure
            await wait_for(lambda: fx.open_order(sub.order.client_order_id) is None, timeout=20, what="exit ended")
            await wait_for(lambda: [f for k in stored_events(db, "kill_switch") if k["by"] == "engine"
                                    for f in k["failed"] if "still held after 3" in f.get("error", "")],
                           timeout=20, what="the position still held said")
        assert [o.type for o in fx.orders if o.side == "SELL"] == ["LIMIT"]  # no closing order went through
        assert e.portfolio.holding(BTC) is not None and e.state is EngineState.HALTED


async def test_a_kill_switch_cancel_of_an_exit_said_unknown_and_not_looked_up_is_sent_again(tmp_path, fx):
    """The exchange answers the cancel "Unknown order sent." while the exit is open, and the lookups that follow
    fail (a 503 on every try): not known to be done, so sent again at the next poll until the exchange says how the
    exit ended, instead of being left open there while the engine is HALTED."""
    async with running_live(tmp_path, fx) as running:
        e, db = running.engine, running.store.path
        _, take_profit = await held_beside_a_take_profit(e, fx, "none")
        fx.fault(GET_ORDER, "5xx_not_executed", times=2 * e.venue.reads.attempts)
        report = await e.halt(by="test")
        assert [f["client_order_id"] for f in report.failed] == [take_profit], report
        assert fx.open_order(take_profit) is not None
        async with engine_loop(e):
            await wait_for(lambda: fx.open_order(take_profit) is None, timeout=20, what="the exit cancelled")
            await wait_for(lambda: take_profit not in e.orders.live, timeout=20, what="its cancel recorded")
        assert rows(db, "SELECT status, filled FROM orders WHERE client_order_id = ?", (take_profit,)) == \
            [("canceled", 0.0)]
        assert e.portfolio.holding(BTC) is not None and e.state is EngineState.HALTED  # the kill switch closes none
