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
from live_helpers import BTC, SteppedClock, fx  # noqa: F401
from test_accept_trades_lag import lag_settings, paused_on_lagging_trades
from test_tui_helpers import notices, said_since, screen_text, status_text, until


def _flat(text: str) -> str:
    return re.sub(r"\s+", " ", text)


async def test_the_console_says_an_order_s_trades_lag_and_that_nothing_is_to_accept(tmp_path, fx):
    settings = lag_settings(tmp_path, fx)
    clock = SteppedClock()
    app = ConsoleApp(settings, live=True, clock=clock)
    async with app.run_test(size=(160, 50)) as pilot:
        await until(pilot, lambda: app.snap is not None and "RUNNING" in status_text(app), "the engine RUNNING")
        e = app.engine
        fx.market_clock.step()
        await until(pilot, lambda: BTC in e.portfolio.last_price, "a price of BTC/USDT")
        cid = await paused_on_lagging_trades(e, fx, clock)

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
