"""An accept takes the exchange's balances over as the books' cash and baseline. A balance read can lag the
exchange's books by up to its settle window (exchange.settle_window_ms), and a read that lags steadily answers the
same figure twice: right after a fill, two reads in a row can agree on balances from before it. An accept never
takes balances read before the settle window has passed since the last order change the engine booked; and cash
that an accept takes over (a deposit, a withdrawal) is no gain and no loss: no peak, no drawdown, no day's loss."""

from __future__ import annotations

import asyncio
import json

import pytest

from conftest import engine_session, ffe_env
from ffe_engine.errors import ControlError
from live_helpers import (BTC, engine_loop, fx, next_bar, paused_by_reconciliation, reconcile_twice,  # noqa: F401
                          rows, run_ffe_async, stored_events)
from test_live_books import GET_ACCOUNT, assert_books_agree, climbing, strategy_entry, strategy_settings

LAG_S = 1.0  # the balance reads' lag: less than the settle window (1.5 s), as the settle window is sized above it


async def deposited_then_sold(e, fx, db) -> None:
    """The strategy's entry; 100 USDT deposited at the exchange, which pauses the engine; then the position closed,
    filled at once, and from then on the exchange's balance reads lag LAG_S behind its books."""
    await strategy_entry(e, fx)
    fx.balances["USDT"].free += 100.0
    await paused_by_reconciliation(db)
    closed = await e.close_position(BTC, by="test")
    assert closed["accepted"], closed
    assert e.portfolio.holding(BTC) is None
    fx.fault(GET_ACCOUNT, "stale", seconds=LAG_S, times=10_000)


async def test_an_accept_right_after_a_sale_takes_balances_that_hold_the_sale(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await deposited_then_sold(e, fx, db)
            peak = e.portfolio.peak_equity
            await e.accept_reconcile(by="test")
            # the sale's proceeds and the deposit are the cash; no coins of the sale stay in the baseline
            assert_books_agree(e, fx)
            [(baseline,)] = rows(db, "SELECT value FROM kv WHERE key = 'reconcile_baseline'")
            assert json.loads(baseline)["BTC"] == pytest.approx(0.0, abs=1e-9), baseline
            assert e.portfolio.peak_equity == pytest.approx(peak + 100.0, abs=0.01)
            assert await reconcile_twice(e) == []
            await next_bar(e, fx)
            assert e.portfolio.max_drawdown_pct < 0.1  # the sale's fee; the proceeds are no fall of the equity
        assert [o.side for o in fx.orders] == ["BUY", "SELL"]


async def test_an_accept_the_settle_window_would_keep_past_a_request_s_time_is_refused_until_then(tmp_path, fx):
    climbing(fx)
    # ffe ctl waits 1 s for an answer: the settle window (1.5 s) does not fit in it
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3},
                                 control={"request_timeout_s": 1.0})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await deposited_then_sold(e, fx, db)
            cash, blocked = e.portfolio.cash, list(e.reconcile_blocked)
            with pytest.raises(ControlError) as refused:
                await e.accept_reconcile(by="test")
            said = str(refused.value)
            assert said.startswith("nothing accepted") and "accept again in" in said, said
            assert "\n" not in said
            assert e.portfolio.cash == cash and e.reconcile_blocked == blocked
            await asyncio.sleep(e.venue.settle_s)
            await e.accept_reconcile(by="test")
            assert_books_agree(e, fx)


async def test_an_accept_waits_no_longer_than_half_of_the_time_its_client_gives_it(tmp_path, fx):
    """`ffe ctl accept --timeout 2` inside the settle window: the engine waits for the window's end only within half
    of the client's time (as within half of its own control.request_timeout_s), and otherwise refuses, nothing
    accepted, in an answer the client still gets. Waiting on past the client, it accepted after the client had
    said that no answer came."""
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3},
                                 exchange={"settle_window_ms": 6000}, control={"request_timeout_s": 30.0})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        await running.start_control()
        async with engine_loop(e):
            await deposited_then_sold(e, fx, db)
            cash = e.portfolio.cash
            ctl = await run_ffe_async(tmp_path, "ctl", "accept", "--timeout", "2", "--data-dir",
                                      str(settings.data_dir), env=ffe_env(), name="accept")
            assert ctl.proc.returncode == 1, ctl.stdout + ctl.stderr
            (line,) = ctl.stderr.splitlines()
            assert "nothing accepted" in line and "accept again in" in line and "no answer" not in line, line
            await asyncio.sleep(2.0)  # an accept left waiting in the engine would have gone through by now
            assert e.portfolio.cash == cash and e.reconcile_blocked  # (its figures follow the sale)
            assert "accepted" not in [r["status"] for r in stored_events(db, "reconcile")]


async def test_an_accept_s_client_timeout_is_checked(tmp_path, fx):
    """The time the client gives an accept is a number of seconds, more than 0 and at most 3600: anything else is
    refused with the argument named, nothing accepted."""
    from ffe_engine.api import dispatch

    settings = strategy_settings(tmp_path, fx)
    async with engine_session(settings, live=True) as running:
        for bad in (0, -1.0, 3601.0, "2", True):
            with pytest.raises(ControlError, match="accept: timeout_s: "):
                await dispatch(running.engine, "accept", {"by": "ctl", "timeout_s": bad})
        assert await dispatch(running.engine, "accept", {"by": "ctl", "timeout_s": 2.0}) == []


async def test_an_accepted_withdrawal_is_no_drawdown_and_no_day_s_loss(tmp_path, fx):
    climbing(fx)
    settings = strategy_settings(tmp_path, fx, engine={"reconcile_interval_s": 0.3},
                                 risk={"max_drawdown_pct": 10.0, "daily_loss_limit_pct": 5.0})
    db = settings.db_path
    async with engine_session(settings, live=True) as running:
        e = running.engine
        async with engine_loop(e):
            await strategy_entry(e, fx)
            fx.balances["USDT"].free -= 2_000.0  # a fifth of the account withdrawn: no trade of ffe's lost it
            await paused_by_reconciliation(db)
            await e.accept_reconcile(by="test")
            assert_books_agree(e, fx)
            assert e.portfolio.drawdown_pct() == pytest.approx(0.0, abs=0.01)
            assert e.portfolio.day_loss_pct() == pytest.approx(0.0, abs=0.01)
            await next_bar(e, fx)
            assert e.portfolio.max_drawdown_pct == pytest.approx(0.0, abs=0.01)
            assert await e.resume(by="test") is not None
            await next_bar(e, fx)
            assert e.state.value == "RUNNING", e.state_reason
        assert not [s for s in stored_events(db, "engine_state") if s.get("by") == "risk"]
