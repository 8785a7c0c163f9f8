"""The console while reconciliation pauses a live engine on differences an order's lagging trades explain: the why
and health views, the resume key and the orders view name the order and say there is nothing to accept, instead of
telling the operator to `ffe ctl accept` (which is refused until the exchange lists the trades).

Real parts: the console under Pilot on an engine opened in live mode (real ccxt), its SQLite database, and the fake
Binance on 127.0.0.1 whose trade list trails its order book.
"""

from __future__ import annotations

import re

from ffe_engine.model import EngineState
from ffe_tui.app import ConsoleApp
from live_helpers import BTC, SteppedClock, exchange_options, fx, live_settings  # noqa: F401
from test_tui_helpers import notices, said_since, screen_text, status_text, until

MY_TRADES = "GET /api/v3/myTrades"


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


async def test_the_console_says_an_order_s_trades_lag_and_that_nothing_is_to_accept(tmp_path, fx):
    options = exchange_options(newOrderRespType={"market": "RESULT", "limit": "RESULT"})
    settings = live_settings(tmp_path, fx, engine={"live_start_paused": False, "reconcile_interval_s": 600},
                             exchange={"options": options})
    clock = SteppedClock()
    app = ConsoleApp(settings, live=True, clock=clock)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.snap is not None and "RUNNING" in status_text(app), "the engine RUNNING")
        e = app.engine
        fx.market_clock.step()
        await until(pilot, lambda: BTC in e.portfolio.last_price, "a price of BTC/USDT")
        fx.fault(MY_TRADES, "stale", seconds=3600, times=10_000)  # the trade list trails until cleared
        cid = str((await e.operator_order(BTC, "buy", 0.01))["client_order_id"])
        for _ in range(3):
            clock.forward(e.venue.settle_s + 0.1)
            await e.reconcile()
        assert e.state is EngineState.PAUSED
        assert e.reconcile_blocked and all(d.get("trades_behind") == [cid] for d in e.reconcile_blocked)

        await pilot.press("6")
        await until(pilot, lambda: "RECONCILE" in screen_text(app), "the why view's RECONCILE")
        said = _flat(screen_text(app))
        assert cid in said and "nothing to accept" in said, said
        assert "ffe ctl accept" not in said and "unexplained" not in said, said

        await pilot.press("7")
        await until(pilot, lambda: "approvals pending" in screen_text(app), "the health view")
        await until(pilot, lambda: cid in _flat(screen_text(app)), "the health view naming the order")
        said = _flat(screen_text(app))
        assert "nothing to accept" in said and "ffe ctl accept" not in said, said

        await pilot.press("3")
        await until(pilot, lambda: "trades behind" in screen_text(app), "the orders view saying its trades lag")

        before = notices(app)
        await pilot.press("p")
        await until(pilot, lambda: said_since(app, before, cid), "the refused resume naming the order")
        assert not said_since(app, before, "accept them first"), [str(n.message) for n in app._notifications]
        assert said_since(app, before, "trades are listed")
        assert e.state is EngineState.PAUSED
