"""DAILY_TRADES across a restart: the day's entries are counted from the order journal as well as the stored books.
An entry is journaled before it is sent, and the books that count it are stored with the bar (or its fill) after:
a kill between the two left the books counting one entry fewer each time, and a crash loop let more entries
through in a day than `risk.max_daily_trades`."""

from __future__ import annotations

import json
import sqlite3

from conftest import db_value, engine_session, make_settings

BTC, ETH = "BTC/USDT", "ETH/USDT"


async def feed(engine, n: int) -> None:
    candles = engine.feed.iter_candles()
    for _ in range(n):
        await engine.on_candle(next(candles))


def books_counting(db, entries: int) -> None:
    """The stored books as a kill right after the journal's write of the day's entries leaves them: counting fewer."""
    books = json.loads(db_value(db, "SELECT value FROM kv WHERE key = 'portfolio'"))
    books["entries_today"] = entries
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE kv SET value = ? WHERE key = 'portfolio'", (json.dumps(books),))
    conn.close()


async def test_a_restart_counts_the_day_s_entries_the_journal_holds_beyond_the_stored_books(tmp_path):
    settings = make_settings(tmp_path, risk={"max_daily_trades": 2, "max_correlation": 1.0})
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        await feed(e, 2)
        for sym in (BTC, ETH):
            placed = await e.operator_order(sym, "buy", 0.01)
            assert placed["accepted"], placed
        assert e.portfolio.entries_today == 2
    books_counting(db, 0)

    async with engine_session(settings) as running:
        e = running.engine
        assert e.portfolio.entries_today == 2
        refused = await e.operator_order(BTC, "buy", 0.01)
        (gate,) = [g for g in refused["gates"] if g["code"] == "DAILY_TRADES"]
        assert not refused["accepted"] and (gate["value"], gate["passed"]) == (2, False), refused


async def test_exits_are_not_counted_and_books_counting_more_than_the_journal_are_kept(tmp_path):
    """What the counter counts, the journal's count does: entries, not exits; books that count more than the
    journal holds (an entry the venue refused after it was counted) are kept as they are."""
    settings = make_settings(tmp_path, risk={"max_daily_trades": 5, "max_correlation": 1.0})
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        await feed(e, 2)
        assert (await e.operator_order(BTC, "buy", 0.01))["accepted"]
        await feed(e, 4)  # filled at the next candle's open
        assert BTC in e.portfolio.positions
        closed = await e.close_position(BTC, by="test")
        assert closed["accepted"], closed
        assert e.portfolio.entries_today == 1
    books_counting(db, 0)
    async with engine_session(settings) as running:
        assert running.engine.portfolio.entries_today == 1
    books_counting(db, 4)
    async with engine_session(settings) as running:
        assert running.engine.portfolio.entries_today == 4
