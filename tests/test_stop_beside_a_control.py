"""An orderly stop asked while a control is under way (an operator's approve whose order is on the wire): the stop
carries the control out first, as the engine tells a command asked during the stop ("the commands under way are
carried out first"). Its order is answered and booked, and the approval ends approved, before the books are stored
and the connections closed; nothing is left in doubt for the next start to look up.

Real parts: the engine in live mode (real ccxt) with its loop running, its SQLite database, and the fake Binance on
127.0.0.1, which holds the order's answer."""

from __future__ import annotations

import asyncio

from conftest import engine_session
from live_helpers import BTC, POST_ORDER, engine_loop, fx, rows, stored_events, wait_for  # noqa: F401
from test_live_books import climbing, strategy_approval, strategy_settings


async def test_a_stop_asked_while_an_approve_s_order_is_on_the_wire_carries_the_approve_out_first(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"order_poll_s": 600, "approval": "manual"},
                                 exchange={"timeout_ms": 20_000})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            a = await strategy_approval(e, fx)
            fx.fault(POST_ORDER, "hang", seconds=3.0, execute=True)
            approve = asyncio.ensure_future(e.approve(a["approval_id"], by="test"))
            await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=10, what="the approve's order on the wire")
            e.request_stop()  # the loop's end stops the engine (engine_loop waits for it)
        res = await approve
        assert res["accepted"] and not res["in_doubt"], res
        [(status,)] = rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (res["client_order_id"],))
        assert status == "filled", status
        assert BTC in e.portfolio.positions
    outcomes = [x["outcome"] for x in stored_events(db, "approval") if x.get("approval_id") == a["approval_id"]]
    assert outcomes == ["pending", "approved"], outcomes
    [stop] = [r for r in stored_events(db, "run") if r.get("phase") == "stop"]
    assert stop["seq"] > max(x["seq"] for x in stored_events(db, "approval")), "the stop recorded before the approve"
