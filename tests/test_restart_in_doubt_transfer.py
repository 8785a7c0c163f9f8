"""Quote moved in or out of the account while the engine was stopped with an order in doubt: the start cannot
compare the cash while that order is unsettled (its fill may be in the balances already), says so (its look is not
`ok`), and compares it as soon as it is settled, holding the engine on the difference then, not at the next periodic
reconciliation."""

from __future__ import annotations

import shutil

from conftest import engine_session
from live_helpers import BTC, POST_ORDER, a_difference_of, engine_loop, fx, stored_events, wait_for  # noqa: F401
from pipeline_helpers import crashed_copy
from test_live_books import climbing, strategy_settings

from ffe_engine.model import EngineState, OrderStatus


async def test_quote_moved_while_stopped_with_an_order_in_doubt_holds_the_engine_once_the_order_settles(tmp_path,
                                                                                                       fx):
    climbing(fx)
    before, after = tmp_path / "before", tmp_path / "after"
    engine = {"order_poll_s": 0.2, "reconcile_interval_s": 600}
    settings = strategy_settings(before, fx, engine=engine)
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await e.operator_order(BTC, "buy", 0.001, by="test")
            await wait_for(lambda: BTC in e.portfolio.positions and not e.orders.live, timeout=30,
                           what="the first buy filled")
            fx.fault(POST_ORDER, "drop_before")  # never reaches the exchange; its answer lost
            await e.operator_order(BTC, "buy", 0.001, by="test")
            assert [o.status for o in e.orders.live.values()] == [OrderStatus.IN_DOUBT]
            # Killed here: the files as they are, and nothing more of this process reaches the exchange.
            (after / "data").mkdir(parents=True)
            with crashed_copy(settings.db_path, after / "data" / settings.db_path.name):
                pass
            shutil.copytree(settings.audit_path.parent, after / "logs", ignore=shutil.ignore_patterns("*.lock"))
            fx.down = True
    fx.down = False
    fx.balances["USDT"].free -= 500.0  # withdrawn while the engine was stopped
    settings = strategy_settings(after, fx, engine=engine)
    earlier = len(stored_events(settings.db_path, "reconcile"))
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await wait_for(lambda: not e.orders.live, timeout=30, what="the order in doubt settled")
            withdrawn = a_difference_of("cash")
            await wait_for(lambda: withdrawn(e.reconcile_blocked), timeout=20,
                           what="the withdrawal holding the engine once nothing is in flight")
            assert e.state is EngineState.PAUSED, (e.state, e.state_reason)
    # No look since the start compared the cash with the withdrawal in it and agreed: none is recorded `ok`.
    statuses = [r["status"] for r in stored_events(settings.db_path, "reconcile")[earlier:]]
    assert statuses and "ok" not in statuses, statuses
