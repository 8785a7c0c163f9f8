"""A live account's first start killed with a buy the exchange had filled and the books had not: real `ffe run
--headless --live` subprocesses against the fake Binance, SIGKILL, the same SQLite database.

A start with no cash of the books' own stored (a first start's books not stored yet, as an ffe that stored them only
with the first bar or fill left them) takes its cash from the exchange's quote balance, which already paid for the
buy, and then books the buy's fill as it resolves the order. The books committed with that fill must not charge the
buy a second time: killed right after that commit, the start after it takes the exchange's cash, and the
reconciliation agrees with the exchange (no cash difference for the operator to accept).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3

import pytest

from ffe_engine.control import request
from live_helpers import (BTC, POST_ORDER, AsyncFfe, exchange_options, fx, live_config, live_env,  # noqa: F401
                          processes, rows, stored_events, wait_for, write_config)
from test_live_restart import RUN, start_engine


def stored_cash(db) -> object:
    """The cash of the books as committed (`kv` `portfolio`), or "no books" when none were stored."""
    books = rows(db, "SELECT value FROM kv WHERE key = 'portfolio'")
    return json.loads(books[0][0])["cash"] if books else "no books"


@pytest.mark.parametrize("books", ["as-stored", "none-stored"])
@pytest.mark.parametrize("at_kill", ["answered", "on-the-wire"])
async def test_a_fill_recovered_at_a_first_start_is_charged_once_in_every_committed_book(tmp_path, fx, processes,
                                                                                         at_kill, books):
    # Answers without fills (ACK), and no poll of the order before the kill: the fill is booked by the next start.
    # A settle window of 10 s: the next start cannot take the exchange's cash again (its reconciliation waits for
    # balances read that long after the fill) before the test has killed it.
    write_config(tmp_path, live_config(fx, engine={"order_poll_s": 30},
                                       exchange={"timeout_ms": 5000, "settle_window_ms": 10_000,
                                                 "options": exchange_options(newOrderRespType={"market": "ACK",
                                                                                               "limit": "ACK"})}))
    db = tmp_path / "data" / "ffe.db"
    sock = tmp_path / "data" / "ffe.sock"

    fx_cash_before = fx.balances["USDT"].total
    first = await start_engine(tmp_path, fx, processes, "first")
    assert (await request(sock, "resume", {"confirm": True}))["ok"]
    if at_kill == "answered":
        answer = await request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.01})
        assert answer["ok"] and answer["result"]["accepted"], answer
    else:  # the exchange fills it and holds the answer
        fx.fault(POST_ORDER, "hang", seconds=20, execute=True)
        placing = asyncio.ensure_future(request(sock, "order", {"symbol": BTC, "side": "buy", "quantity": 0.01}))
        await wait_for(lambda: fx.orders, timeout=30, what="the buy at the exchange")
    await first.kill()
    if at_kill == "on-the-wire":
        with contextlib.suppress(Exception):
            await placing  # the control connection died with the process
    assert [(o.status, o.filled) for o in fx.orders] == [("FILLED", 0.01)]
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(0,)]
    if books == "none-stored":  # the first start's books gone: as an ffe that stored them only with a bar left them
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM kv WHERE key = 'portfolio'")
        conn.close()
    assert stored_cash(db) in ("no books", pytest.approx(fx_cash_before)), stored_cash(db)
    venue_cash = fx.balances["USDT"].total  # what the exchange holds: the buy paid for

    # The next start books the fill; killed as soon as that is committed.
    second = await AsyncFfe.start(tmp_path, *RUN, env=live_env(fx), name="second")
    processes.append(second)
    await wait_for(lambda: not second.alive() or rows(db, "SELECT COUNT(*) FROM fills") == [(1,)], timeout=60,
                   what="the buy's fill booked by the second start", interval=0.01)
    await second.kill()
    assert rows(db, "SELECT COUNT(*) FROM fills") == [(1,)], second.stderr
    # The books committed with the fill charge the buy once: the exchange's cash, or none of the books' own yet.
    cash = stored_cash(db)
    assert cash is None or cash == pytest.approx(venue_cash), (cash, venue_cash)

    # The start after: the exchange's cash, agreed with, and stored.
    third = await start_engine(tmp_path, fx, processes, "third")
    await wait_for(lambda: stored_cash(db) == pytest.approx(venue_cash), timeout=30,
                   what="the exchange's cash stored as the books'")
    status = (await request(sock, "status"))["result"]
    assert status["cash"] == pytest.approx(venue_cash)
    assert status["reconcile_blocked"] == []
    assert all(e["differences"] == [] for e in stored_events(db, "reconcile")), stored_events(db, "reconcile")
    assert [(p["symbol"], p["quantity"]) for p in status["positions"]] == [
        (BTC, pytest.approx(fx.balances["BTC"].total))]
    assert await third.stop() == 0, third.stderr
