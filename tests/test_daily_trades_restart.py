"""DAILY_TRADES across a restart: the day's entries are counted from the order journal as well as the stored books.
An entry is journaled before it is sent, and the books that count it are stored with the bar (or its fill) after:
a kill between the two left the books counting one entry fewer each time, and a crash loop let more entries
through in a day than `risk.max_daily_trades`."""

from __future__ import annotations

import json
import sqlite3

from conftest import db_value, engine_session, make_settings

BTC, ETH = "BTC/USDT", "ETH/USDT"


def one_entry_a_day(tmp_path):
    """Hourly bars, a UTC day every 24 of them, and one entry a day."""
    return make_settings(tmp_path, engine={"timeframe": "1h"}, risk={"max_daily_trades": 1, "max_correlation": 1.0})


async def feed(engine, n: int) -> None:
    candles = engine.feed.iter_candles()
    for _ in range(n):
        await engine.on_candle(next(candles))


def books_counting(db, entries: int, day: int | None = None) -> None:
    """The stored books as a kill right after the journal's write of the day's entries leaves them: counting fewer
    (and, with `day`, still of that day: the kill came before the books of the new day were stored)."""
    books = json.loads(db_value(db, "SELECT value FROM kv WHERE key = 'portfolio'"))
    books["entries_today"] = entries
    if day is not None:
        books["day"] = day
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


async def test_exits_are_not_counted_and_books_counting_more_than_the_journal_are_taken_back_to_it(tmp_path):
    """What the counter counts, the journal's count does: entries, not exits; books that count more than the
    journal holds (stored before an entry the venue refused after it was counted was taken back, then a kill) are
    taken back to the journal's count: the refused entry was not made."""
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
        assert running.engine.portfolio.entries_today == 1


async def test_an_entry_made_in_a_new_day_before_its_books_were_stored_counts_in_that_day_after_a_restart(tmp_path):
    """Killed in the first bar after a UTC midnight: the books stored say the day before, the journal holds the new
    day's entry. The start rolls to the new day and counts that entry in it (it counted the journal's entries of
    the stored books' day, then the roll set the new day's count to 0: one more entry than the limit got through)."""
    settings = one_entry_a_day(tmp_path)
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        first = e.portfolio.day
        while e.portfolio.day == first:
            await e.on_candle(next(candles))
        placed = await e.operator_order(BTC, "buy", 0.01)
        assert placed["accepted"], placed
        assert e.portfolio.entries_today == 1
    books_counting(db, 0, day=first)

    async with engine_session(settings) as running:
        e = running.engine
        assert e.portfolio.day == first + 1 and e.portfolio.entries_today == 1
        refused = await e.operator_order(ETH, "buy", 0.01)
        (gate,) = [g for g in refused["gates"] if g["code"] == "DAILY_TRADES"]
        assert not refused["accepted"] and (gate["value"], gate["passed"]) == (1, False), refused


async def test_an_entry_made_at_the_close_of_a_day_s_last_bar_counts_in_that_day_not_the_next(tmp_path):
    """The last bar of a day closes at midnight, and an entry it decides is journaled at its close (00:00:00.000 of
    the next day): it is that day's, as the running engine counted it, and a restart the next day does not count
    it again."""
    settings = one_entry_a_day(tmp_path)
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        day = e.portfolio.day
        while True:
            c = next(candles)
            if (c.ts + 3_600_000) // 86_400_000 > day and c.ts // 86_400_000 == day:
                break  # the day's last bar: decided at its close, midnight
            await e.on_candle(c)
        e.clock.advance(c.ts + 3_600_000)
        placed = await e.operator_order(BTC, "buy", 0.01)
        assert placed["accepted"], placed
        assert e.portfolio.day == day and e.portfolio.entries_today == 1
        await e.on_candle(c)
        while e.portfolio.day == day:  # to the new day's first bar: its books stored, of the new day
            await e.on_candle(next(candles))
        assert e.portfolio.day == day + 1 and e.portfolio.entries_today == 0
    async with engine_session(settings) as running:
        e = running.engine
        assert e.portfolio.day == day + 1 and e.portfolio.entries_today == 0


async def test_an_entry_made_at_midnight_after_the_new_day_began_counts_in_the_new_day_after_a_restart(tmp_path):
    """The day's last bar done with, the new day begins at midnight by the clock (the housekeeping's turn), and an
    operator's order placed that same millisecond counts in the new day. Its journal time alone, midnight, would
    put it in the day before: killed before the books counting it were stored, the restart let a second entry
    through in a day limited to one. The day it counted in is journaled with it."""
    settings = one_entry_a_day(tmp_path)
    db = settings.db_path
    async with engine_session(settings) as running:
        e = running.engine
        candles = e.feed.iter_candles()
        day = e.portfolio.day
        while True:
            c = next(candles)
            await e.on_candle(c)
            if (c.ts + 3_600_000) // 86_400_000 > day and c.symbol == ETH:
                break  # the day's last bar, done with
        e.clock.advance(c.ts + 3_600_000)
        assert e.portfolio.roll_day(e.clock.now_ms())  # as the housekeeping begins the day at midnight
        placed = await e.operator_order(BTC, "buy", 0.01)
        assert placed["accepted"], placed
        assert e.portfolio.day == day + 1 and e.portfolio.entries_today == 1
    books_counting(db, 0)
    async with engine_session(settings) as running:
        e = running.engine
        assert e.portfolio.day == day + 1 and e.portfolio.entries_today == 1
