"""An order's trades listed over more than one page of the exchange's answer (Binance's myTrades gives 500 by
default, 1000 at most) are read page after page: an order with more trades than a page is booked whole, not left
`open` with its trades behind for good. Real engines over real SQLite files against the fake Binance through ccxt.
"""

from __future__ import annotations

import pytest

from ffe_engine.venues import ccxt_venue

from live_helpers import BTC, POST_ORDER, fx, rows  # noqa: F401
from test_live_engine import running_live

LOOSE = {"max_position_pct": 100, "max_concentration_pct": 100, "max_leverage": 5, "max_var_pct": 100}
MY_TRADES = "GET /api/v3/myTrades"


async def test_an_order_with_more_trades_than_a_page_is_booked_whole(tmp_path, fx, monkeypatch):  # noqa: F811
    # Pages of 3 (asked for, or the exchange's default): the market order walks the book, seven trades.
    monkeypatch.setattr(ccxt_venue, "TRADES_PAGE", 3, raising=False)
    fx.my_trades_page = 3
    fx.book_levels = 7
    async with running_live(tmp_path, fx, risk=LOOSE) as running:
        e, db = running.engine, running.store.path
        # Its answer lost (the order placed): looked up, as an order's lookup carries no fees, its trades are read.
        fx.fault(POST_ORDER, "drop_after")
        sub = await e.operator_order(BTC, "buy", 0.007)
        cid = sub["client_order_id"]
        [order] = [o for o in fx.orders if o.client_id == cid]
        assert len(order.trades) == 7
        state = "SELECT status, filled FROM orders WHERE client_order_id = ?"
        for _ in range(10):  # the order path's lookups, as the engine makes them on its bars
            if rows(db, state, (cid,))[0][0] == "filled":
                break
            await e.orders.poll()
            await e.flush()
        [(status, filled)] = rows(db, state, (cid,))
        assert filled == pytest.approx(order.filled), (status, filled, order.filled)
        booked = rows(db, "SELECT SUM(quantity), SUM(quantity * price) FROM fills WHERE client_order_id = ?", (cid,))
        assert booked[0][0] == pytest.approx(order.filled)
        assert booked[0][1] == pytest.approx(sum(t.qty * t.price for t in order.trades))
        held = e.portfolio.holding(BTC)
        fees = sum(t.commission for t in order.trades)  # taken in the coin bought
        assert held is not None and held.quantity == pytest.approx(order.filled - fees)
        pages = [r.params for r in fx.requests_to(MY_TRADES)]
        assert any("fromId" in p for p in pages), pages
