"""What the operator is told while reconciliation pauses the engine on differences an order's lagging trades explain.

The exchange shows the order filled and its balances hold the fill; its trade list does not list the trade yet, so
the books hold the order open and unfilled. Past the settle window reconciliation pauses on the coins and the cash,
each difference naming the order (`trades_behind`), and `ffe ctl accept` is refused until the trades are listed.
Seen before: `ffe ctl why`, `ffe ctl health` and the refused resume all told the operator to accept them, which is
refused, and `ffe ctl orders` showed the order open, filled 0, with nothing saying its trades lag. Real parts: an
engine opened in live mode (its CcxtVenue, real ccxt), its SQLite database, the fake Binance on 127.0.0.1 whose trade
list trails its order book, and `ffe ctl` as subprocesses.
"""

from __future__ import annotations

import pytest

from conftest import engine_session, ffe_env
from ffe_engine.engine import ControlError
from ffe_engine.model import EngineState
from ffe_engine.views import blocking
from live_helpers import SteppedClock, fx, next_bar, run_ffe_async  # noqa: F401
from test_accept_trades_lag import MY_TRADES, lag_settings, paused_on_lagging_trades
from test_reconcile import place_by_hand



async def test_why_health_resume_and_orders_say_the_order_s_trades_lag_and_nothing_is_to_accept(tmp_path, fx):
    settings = lag_settings(tmp_path, fx)
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await running.start_control()
        await next_bar(e, fx)
        cid = await paused_on_lagging_trades(e, fx, clock)

        async def ctl(*args: str):
            return await run_ffe_async(tmp_path, "ctl", *args, "--data-dir", str(settings.data_dir), env=ffe_env(),
                                       name=args[0])

        why = await ctl("why")
        assert why.proc.returncode == 0, why.stdout + why.stderr
        [line] = [ln for ln in why.stdout.splitlines() if "RECONCILE" in ln]
        assert cid in line and "nothing to accept" in line and "trades are listed" in line, line
        assert "ffe ctl accept" not in line and "unexplained" not in line, line

        health = await ctl("health")
        assert cid in health.stdout and "nothing to accept" in health.stdout, health.stdout
        assert "unexplained" not in health.stdout, health.stdout

        resume = await ctl("resume")
        assert resume.proc.returncode == 1, resume.stdout + resume.stderr
        assert cid in resume.stderr and "trades are listed" in resume.stderr, resume.stderr
        assert "accept them first" not in resume.stderr and "ffe ctl accept" not in resume.stderr, resume.stderr
        assert e.state is EngineState.PAUSED

        orders = await ctl("orders")
        [row] = [ln for ln in orders.stdout.splitlines() if cid in ln]
        assert "trades behind" in row, orders.stdout

        # The trades are listed: the order is booked filled, and nothing is said of it any more.
        fx.clear_faults(MY_TRADES)
        await e.orders.poll()
        orders = await ctl("orders")
        assert "trades behind" not in orders.stdout, orders.stdout


async def test_differences_some_explained_by_lagging_trades_and_some_not_say_both(tmp_path, fx):
    settings = lag_settings(tmp_path, fx)
    clock = SteppedClock()
    async with engine_session(settings, live=True, clock=clock) as running:
        e = running.engine
        await next_bar(e, fx)
        cid = await paused_on_lagging_trades(e, fx, clock)
        await place_by_hand(fx, "by-hand-1")  # an order nobody explains
        for _ in range(2):
            clock.forward(e.venue.settle_s + 0.1)
            await e.reconcile()
        assert any(d["kind"] == "unknown_open_order" for d in e.reconcile_blocked)
        [gate] = [b for b in blocking(e, clock.now_ms()) if b["gate"] == "RECONCILE"]
        assert "1 unexplained difference(s)" in gate["now"] and cid in gate["now"], gate
        # The accept is refused while the trades lag: first they are listed, then the rest accepted.
        assert gate["lifts"].index("trades are listed") < gate["lifts"].index("`ffe ctl accept`"), gate
        with pytest.raises(ControlError) as refused:
            await e.resume(by="test")
        said = str(refused.value)
        assert cid in said and "1 unexplained difference(s)" in said and "trades are listed" in said, said
