"""Quote that leaves the account (or comes in) while the engine is stopped is a difference at the next start, as it is
while the engine runs: the start does not take the exchange's balance over the books' cash without a word."""

from __future__ import annotations

import pytest

from conftest import engine_session
from live_helpers import engine_loop, fx, paused_by_reconciliation, reconciled_ok  # noqa: F401
from test_live_books import climbing, strategy_entry, strategy_settings


async def test_a_withdrawal_while_stopped_pauses_the_next_start(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            await reconciled_ok(db, "a reconciliation that agrees with the entry")
        cash = e.portfolio.cash
    fx.balances["USDT"].free -= 250.0  # withdrawn while the engine is stopped
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await paused_by_reconciliation(db)
            kinds = {d["kind"] for d in e.reconcile_blocked}
            assert "cash" in kinds, e.reconcile_blocked
            assert e.portfolio.cash == pytest.approx(cash)  # the books keep theirs until the operator accepts
            await e.accept_reconcile(by="test")
            assert e.portfolio.cash == pytest.approx(fx.balances["USDT"].total)
