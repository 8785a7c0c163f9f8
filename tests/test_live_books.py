"""The books of a live engine when the strategy trades through faults and restarts, against the fake Binance.

The strategy places every order here: the fake's klines follow a steady climb, on which the trend and breakout
providers vote BUY as soon as the indicators are warm, so the first closed bar after the start makes the engine
enter. Each test checks the fake's own book (orders, balances, the requests it received) and the engine's books
(journal, fills, positions, cash and equity).
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from conftest import engine_session
from fake_exchange import FakeBinance
from ffe_engine.model import OrderStatus
from live_helpers import (BTC, GET_ORDER, M, POST_ORDER, fx, live_settings, rows, stored_events,  # noqa: F401
                          wait_for)

START = 30_000.0
CLIMB = 0.001  # per bar: a trend the strategy buys


def climbing(fx: FakeBinance) -> None:
    """Klines that climb CLIMB per bar for the whole warm-up and after; market orders fill at the last close."""
    origin = fx.market_clock() - 200 * M

    def path(sid: str, ts: int) -> float:
        return round(START * (1.0 + CLIMB * (ts - origin) / M), 2)

    fx.price_path = path
    fx.set_price("BTCUSDT", path("BTCUSDT", fx.market_clock()))


def strategy_settings(tmp_path, fx: FakeBinance, **tables):
    """A live engine whose strategy enters on the climb: warm at start, two trend-following providers."""
    base = {"engine": {"warmup_bars": 80, "live_start_paused": False},
            "ensemble": {"providers": ["trend", "breakout"], "min_votes": 2, "adaptive": False}}
    for key, value in tables.items():
        base.setdefault(key, {}).update(value)
    return live_settings(tmp_path, fx, **base)


@contextlib.asynccontextmanager
async def engine_loop(engine):
    """The engine's own loop (feed, housekeeping: order polls, reconciliation) running in the background."""
    task = asyncio.ensure_future(engine.run())
    try:
        yield task
    finally:
        engine.request_stop()
        await task


def assert_books_agree(e, fx: FakeBinance) -> None:
    """The engine's cash, position and equity are the fake account's, to the cent (and to the coin's step)."""
    usdt, btc = fx.balances["USDT"].total, fx.balances["BTC"].total
    pos = e.portfolio.positions.get(BTC)
    assert (pos.quantity if pos else 0.0) == pytest.approx(btc, abs=1e-9)
    assert e.portfolio.cash == pytest.approx(usdt, abs=0.005)
    price = e.portfolio.last_price[BTC]
    assert e.portfolio.equity() == pytest.approx(usdt + btc * price, abs=0.01)


def order_statuses(db, cid: str) -> list[str]:
    return [e["status"] for e in stored_events(db, "order") if e.get("client_order_id") == cid]


# ---------------------------------------------------------------------------------------------------- lost answer
async def test_lost_answer_found_filled_by_the_poll_stays_filled(tmp_path, fx):
    climbing(fx)
    # the exchange places and fills the order, and holds the answer past the client's 1 s timeout
    fx.fault(POST_ORDER, "hang", seconds=3, execute=True)
    async with engine_session(strategy_settings(tmp_path, fx, engine={"order_poll_s": 0.1}), live=True) as running:
        e, db = running.engine, running.store.path
        async with engine_loop(e):
            fx.market_clock.step()
            (sent,) = await wait_for(lambda: fx.requests_to(POST_ORDER), timeout=30, what="the strategy's order")
            cid = sent.params["newClientOrderId"]
            # the decision is recorded once the send has its outcome (here: the client's timeout)
            (decision,) = await wait_for(lambda: stored_events(db, "decision"), timeout=30, what="the decision")
            assert sent.answered is None  # the fake still holds the answer
            assert len(fx.requests_to(GET_ORDER)) > 0  # and the poll looked the order up meanwhile
            await wait_for(lambda: cid not in e.orders.live, timeout=30, what="the order resolved")
        assert (decision["action"], decision["outcome"], decision["client_order_id"]) == ("BUY", "submitted", cid)
        assert [(o.client_id, o.status) for o in fx.orders] == [(cid, "FILLED")]
        assert rows(db, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == [("filled",)]
        statuses = order_statuses(db, cid)
        assert statuses[-1] == "filled" and "in_doubt" not in statuses[statuses.index("filled"):], statuses
        assert rows(db, "SELECT COUNT(*) FROM fills") == [(1,)]
        assert rows(db, "SELECT symbol, quantity FROM positions") == [(BTC, pytest.approx(fx.balances["BTC"].total))]
        assert_books_agree(e, fx)
