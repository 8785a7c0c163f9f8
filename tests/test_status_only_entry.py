"""A strategy entry the exchange executed and a proxy answered with a page whose status ccxt reads as a refusal
(401, 407, 511: AuthenticationError; 422: ExchangeError), on a live engine against the fake Binance: the entry is in
doubt, found filled by its client order id and booked, and the strategy, holding the position, does not buy again
on the bars after it."""

from __future__ import annotations

import pytest

from conftest import engine_session
from live_helpers import BTC, POST_ORDER, engine_loop, fx, rows, wait_for  # noqa: F401
from test_live_books import climbing, strategy_order, strategy_settings

FINAL = ("filled", "canceled", "rejected")


def journaled(db, cid: str) -> list[tuple]:
    return rows(db, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,))


def decisions(db) -> int:
    return len(rows(db, "SELECT decision_id FROM decisions WHERE symbol = ?", (BTC,)))


@pytest.mark.parametrize("status", [401, 407, 422, 511])
async def test_an_entry_answered_by_status_alone_is_booked_and_not_bought_again(tmp_path, fx, status):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.fault(POST_ORDER, "5xx_executed", status=status)
            cid = await strategy_order(fx)
            ended = await wait_for(lambda: [r for r in journaled(db, cid) if r[0] in FINAL], timeout=30,
                                   what="the entry final")
            assert ended == [("filled", "")]
            for _ in range(3):  # the bars after it: the strategy decides on each, holding the position
                seen = decisions(db)
                fx.market_clock.step()
                await wait_for(lambda: decisions(db) > seen, timeout=30, what="the next bar's decision")
            assert [(o.client_id, o.side, o.status) for o in fx.orders] == [(cid, "BUY", "FILLED")]
            assert e.portfolio.positions[BTC].quantity == pytest.approx(fx.balances["BTC"].total, abs=1e-12)
            assert rows(db, "SELECT client_order_id FROM orders") == [(cid,)]
