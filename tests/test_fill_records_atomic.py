"""A committed fill always has its `fill` event committed with it, and in the audit trail.

A crash can land at any instant. The instant that matters is the one right after the store commits a fill: the
database that a SIGKILL would leave then is copied (SQLite's online backup reads only committed data) and must
hold the fill's event too, and the audit file must already hold that event. Otherwise a restart finds a fill in
the books that the records never mention.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import random
import sqlite3
from typing import Callable

import pytest

from ffe_engine.audit import AuditWriter
from ffe_engine.clock import SimClock, WallClock
from ffe_engine.events import EngineStateChanged, EventBus, FillEvent
from ffe_engine.market.simulated import SimulatedFeed
from ffe_engine.model import Fill, Order, OrderReason, Side
from ffe_engine.risk import OrderIntent
from ffe_engine.errors import StorageError
from ffe_engine.store import Store

from pipeline_helpers import START_TS, crashed_copy, make_settings, open_pipeline

SYMBOLS = ["BTC/USDT", "ETH/USDT"]


def committed_state(db_path, copy_path) -> tuple[list[tuple], list[tuple]]:
    """(fills, fill events) in the database a crash at this instant would leave."""
    with crashed_copy(db_path, copy_path) as db:
        fills = db.execute("SELECT client_order_id, quantity FROM fills ORDER BY id").fetchall()
        events = [json.loads(r[0]) for r in db.execute("SELECT data FROM events WHERE event = 'fill' ORDER BY seq")]
    return fills, [(e["client_order_id"], e["quantity"]) for e in events]


def audit_fills(path) -> list[tuple]:
    out = []
    for line in path.read_bytes().splitlines():
        rec = json.loads(line)
        if rec.get("event") == "fill":
            out.append((rec["client_order_id"], rec["quantity"]))
    return out


def events_without_their_fill(fills: list[tuple], events: list[tuple]) -> list[tuple]:
    """The fill events committed more often than fills with the same order and quantity."""
    return [x for x in set(events) if events.count(x) > fills.count(x)]


def fill_settings(tmp_path):
    return make_settings(tmp_path, symbols=SYMBOLS, market={"seed": 7}, risk={"min_confidence": 0.3},
                         engine={"warmup_bars": 40})


async def trading_pipeline(settings):
    """An engine on a seeded market that trades within its 600 bars."""
    clock = SimClock()
    feed = SimulatedFeed(SYMBOLS, settings.engine.timeframe_ms, seed=7, clock=clock, speed=0.0, start_ts=START_TS,
                         max_bars=600)
    return await open_pipeline(settings, feed=feed, clock=clock)


def run_checking_each_fill(settings, check: Callable[..., None]) -> None:
    """The trading pipeline's whole run, `check(fill, order)` called right after each fill is committed (the
    instant a crash matters)."""

    async def main() -> None:
        p = await trading_pipeline(settings)
        add_fill = p.store.add_fill

        async def add_fill_then_crash_here(fill, order, *args, **kwargs):
            await add_fill(fill, order, *args, **kwargs)
            check(fill, order)

        p.store.add_fill = add_fill_then_crash_here
        try:
            await asyncio.wait_for(p.engine.run(), timeout=300)
        finally:
            await p.close()

    asyncio.run(main())


def test_every_committed_fill_has_its_event_committed_and_in_the_audit_file(tmp_path):
    settings = fill_settings(tmp_path)
    checked: list[int] = []
    problems: list[str] = []

    def check(fill, order) -> None:
        fills, events = committed_state(settings.db_path, tmp_path / f"crash{len(checked)}.db")
        checked.append(len(fills))
        missing = [x for x in fills if x not in events]
        if missing:
            problems.append(f"after fill {len(fills)}: committed fills without their event: {missing}")
        in_file = audit_fills(settings.audit_path)
        if [x for x in events if x not in in_file]:
            problems.append(f"after fill {len(fills)}: committed fill events missing from the audit file")

    run_checking_each_fill(settings, check)
    assert len(checked) >= 3, f"the run made only {len(checked)} fills"
    assert not problems, "\n".join(problems[:5])


def order_states(db_path, copy_path) -> tuple[dict[str, str], dict[str, str]]:
    """(each order's status in the journal, its last `order` event's status) in the database a crash at this
    instant would leave."""
    with crashed_copy(db_path, copy_path) as db:
        journal = dict(db.execute("SELECT client_order_id, status FROM orders").fetchall())
        events: dict[str, str] = {}
        for (data,) in db.execute("SELECT data FROM events WHERE event = 'order' ORDER BY seq"):
            rec = json.loads(data)
            events[rec["client_order_id"]] = rec["status"]
    return journal, events


def check_order_records(db_path, copy_path, cid: str, problems: list[str]) -> str:
    """Order `cid` in the database a crash at this instant would leave: its status in the journal, returned, with a
    problem noted when its last `order` event says another."""
    journal, events = order_states(db_path, copy_path)
    if events.get(cid) != journal[cid]:
        problems.append(f"order {cid}: {journal[cid]} in the journal, {events.get(cid)} in its records")
    return journal[cid]


def test_a_committed_fill_has_its_order_s_new_status_event_committed_with_it(tmp_path):
    """The fill that ends an order (filled) changes its status in the same transaction as the fill: the `order`
    event saying so is committed with them. A kill right after the commit would otherwise leave the order filled in
    the journal and `new` in its records for good, the next start having nothing left to say about it."""
    settings = fill_settings(tmp_path)
    problems: list[str] = []
    checked: list[int] = []

    def check(fill, order) -> None:
        check_order_records(settings.db_path, tmp_path / f"crash{len(checked)}.db", order.client_order_id, problems)
        checked.append(1)

    run_checking_each_fill(settings, check)
    assert len(checked) >= 3, f"the run made only {len(checked)} fills"
    assert not problems, "\n".join(problems[:5])


async def test_an_order_s_end_without_a_fill_is_committed_with_the_event_that_says_it(tmp_path):
    """A cancel (no fill) stores the order's end: the `order` event saying so is committed with it, so a kill right
    after the commit never leaves the order cancelled in the journal and open in its records."""
    from conftest import engine_session, make_settings as session_settings

    settings = session_settings(tmp_path, engine={"symbols": ["BTC/USDT"], "warmup_bars": 100})
    problems: list[str] = []
    async with engine_session(settings) as running:
        e = running.engine
        update_order = e.store.update_order

        async def update_then_crash_here(order, *args, **kwargs):
            await update_order(order, *args, **kwargs)
            check_order_records(settings.db_path, tmp_path / "crash.db", order.client_order_id, problems)

        e.store.update_order = update_then_crash_here
        placed = await e.operator_order("BTC/USDT", "buy", 0.01)
        assert placed["accepted"], placed
        cancelled = await e.operator_cancel(placed["client_order_id"])
        assert cancelled["cancelled"], cancelled
    assert not problems, "\n".join(problems)


async def test_an_order_journaled_before_its_send_is_committed_with_its_new_event(tmp_path):
    """The journal records an order before it is sent; the `order` event saying it is `new` is committed with it,
    so a kill right after the journal's commit (before the send) never leaves an order in the journal that its
    records never mention: the next start settles it and says how it ended, but not that it began."""
    from conftest import engine_session, make_settings as session_settings

    settings = session_settings(tmp_path, engine={"symbols": ["BTC/USDT"], "warmup_bars": 100})
    problems: list[str] = []
    journaled: list[str] = []
    async with engine_session(settings) as running:
        e = running.engine
        journal_order = e.store.journal_order

        async def journal_then_crash_here(order, *args, **kwargs):
            await journal_order(order, *args, **kwargs)
            check_order_records(settings.db_path, tmp_path / "crash.db", order.client_order_id, problems)
            journaled.append(order.client_order_id)

        e.store.journal_order = journal_then_crash_here
        placed = await e.operator_order("BTC/USDT", "buy", 0.01)
        assert placed["accepted"], placed
    assert journaled, "no order was journaled"
    assert not problems, "\n".join(problems)


async def test_an_order_a_start_finds_new_is_in_doubt_with_the_event_that_says_it(tmp_path, monkeypatch):
    """An order journaled and then left `new` by a kill (it may or may not have reached the venue) is in doubt at the
    next start: that status is committed with the `order` event that says it, so a kill right after leaves no order
    in doubt in the journal that its records still show as new."""
    from conftest import engine_session, make_settings as session_settings

    settings = session_settings(tmp_path, engine={"symbols": ["BTC/USDT"], "warmup_bars": 100})
    async with engine_session(settings):
        pass
    store = await Store.open(settings.db_path)
    try:
        left_new = Order(client_order_id="ffe-left-new-by-a-kill", symbol="BTC/USDT", side=Side.BUY, quantity=0.01,
                         type="market", reason=OrderReason.OPERATOR, venue="paper", created_ts=1, updated_ts=1)
        intent = OrderIntent(symbol="BTC/USDT", side=Side.BUY, quantity=0.01, reason=OrderReason.OPERATOR)
        await store.journal_order(left_new, intent.as_dict())
    finally:
        await store.close()

    problems: list[str] = []
    checked: list[str] = []
    update_order = Store.update_order

    async def update_then_crash_here(self, order, *args, **kwargs):
        await update_order(self, order, *args, **kwargs)
        checked.append(check_order_records(settings.db_path, tmp_path / "crash.db", order.client_order_id, problems))

    monkeypatch.setattr(Store, "update_order", update_then_crash_here)
    async with engine_session(settings):
        pass
    assert "in_doubt" in checked, checked
    assert not problems, "\n".join(problems)


def test_a_trade_a_committed_fill_closes_is_scored_in_the_same_commit(tmp_path):
    """The providers that voted for a trade's entry are scored when the fill that closes it is committed, in the same
    transaction: their scores and the learner's state that counts the trade. A kill right after the commit would
    otherwise leave a closed trade that the feedback loop never learns from, and weights that differ from an
    uninterrupted run's for good."""
    settings = fill_settings(tmp_path)
    problems: list[str] = []
    closed: list[int] = []

    async def main() -> None:
        p = await trading_pipeline(settings)
        add_fill = p.store.add_fill

        async def add_fill_then_crash_here(fill, order, record=None, publish=None, journal=None):
            await add_fill(fill, order, record, publish, journal)
            if record is None or record.trade is None or record.closed_symbol is None:
                return  # no trade closed, or one closed in part: scored when the rest is closed
            trade_id = record.trade.trade_id
            closed.append(trade_id)
            with crashed_copy(settings.db_path, tmp_path / f"crash{len(closed)}.db") as db:
                scored = {r[0] for r in db.execute("SELECT DISTINCT trade_id FROM provider_scores")}
                row = db.execute("SELECT value FROM kv WHERE key = 'weights'").fetchone()
            state = json.loads(row[0])["stats"] if row else {"trades": 0}
            learned = state.get("stats", state)["trades"]  # the learner's state() under "stats"
            if trade_id not in scored:
                problems.append(f"trade {trade_id}: committed without its providers' scores")
            if learned != p.engine.learner.trades:
                problems.append(f"trade {trade_id}: the committed learner counts {learned} trades, "
                                f"{p.engine.learner.trades} in memory")

        p.store.add_fill = add_fill_then_crash_here
        try:
            await asyncio.wait_for(p.engine.run(), timeout=300)
        finally:
            await p.close()

    asyncio.run(main())
    assert len(closed) >= 2, f"the run closed only {len(closed)} trades"
    assert not problems, "\n".join(problems[:5])


def position_records(db_path, copy_path) -> tuple[set, set, set, set]:
    """(closed trades' ids, their `position_closed` events' trade ids, open positions, their `position_opened`
    events) in the database a crash at this instant would leave."""
    with crashed_copy(db_path, copy_path) as db:
        trades = {r[0] for r in db.execute("SELECT id FROM trades")}
        positions = set(db.execute("SELECT symbol, entry_decision_id FROM positions").fetchall())
        closed, opened = set(), set()
        for name, data in db.execute("SELECT event, data FROM events WHERE event IN ('position_opened', "
                                     "'position_closed') ORDER BY seq"):
            rec = json.loads(data)
            if name == "position_closed":
                closed.add(rec["trade_id"])
            else:
                opened.add((rec["symbol"], rec["decision_id"]))
    return trades, closed, positions, opened


def test_a_fill_that_opens_or_closes_a_position_has_its_position_event_committed_with_it(tmp_path):
    """The position opened and the trade closed by a fill are stored in the fill's transaction; so are the events
    that say so. A kill right after the commit would otherwise leave a closed trade, or an open position, that the
    records never mention."""
    settings = fill_settings(tmp_path)
    problems: list[str] = []
    checked: list[int] = []

    def check(fill, order) -> None:
        trades, closed, positions, opened = position_records(settings.db_path, tmp_path / f"crash{len(checked)}.db")
        checked.append(len(trades))
        if trades != closed:
            problems.append(f"trades {sorted(trades)} but position_closed events for {sorted(closed)}")
        if not positions <= opened:
            problems.append(f"open positions {sorted(positions - opened)} without their position_opened event")

    run_checking_each_fill(settings, check)
    assert checked and max(checked) >= 2, f"the run closed only {max(checked, default=0)} trades"
    assert not problems, "\n".join(problems[:5])


def test_a_write_that_gets_in_before_a_fill_does_not_commit_the_fill_s_event_without_it(tmp_path):
    """The store writes the audit trail before it takes its lock for the fill: another writer (an operator's pause,
    the periodic flush) can take the lock first. What it commits must not hold the fill's event without the fill:
    `ffe doctor` run beside an engine found that (a fill event without its fill), and a kill at that instant would
    leave it so for good, and a second event for the fill once the restarted engine records it."""
    settings = fill_settings(tmp_path)
    checked: list[str] = []
    problems: list[str] = []

    async def main() -> None:
        p = await trading_pipeline(settings)
        add_fill = p.store.add_fill
        in_fill = False

        def look(when: str) -> None:
            fills, events = committed_state(settings.db_path, tmp_path / f"crash{len(checked)}.db")
            alone = events_without_their_fill(fills, events)
            if alone:
                problems.append(f"{when}: fill events committed without their fill: {alone}")
            checked.append(when)

        async def audit_then_another_write() -> None:
            await p.audit.flush()
            if in_fill:  # the fill's event is in the audit file now; another writer gets the lock first
                await p.store.flush(audit_first=False)
                look("after the other write")

        async def recording_a_fill(*args, **kwargs):
            nonlocal in_fill
            in_fill = True
            try:
                await add_fill(*args, **kwargs)
            finally:
                in_fill = False
            look("after the fill")

        p.store.write_events_first(audit_then_another_write, p.audit.written)
        p.store.add_fill = recording_a_fill
        try:
            await asyncio.wait_for(p.engine.run(), timeout=300)
        finally:
            await p.close()

    asyncio.run(main())
    assert checked.count("after the other write") >= 3, f"the other write came before {len(checked)} fill(s) only"
    assert not problems, "\n".join(problems[:5])


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_under_random_interleavings_no_commit_holds_a_fill_event_without_its_fill(tmp_path, seed):
    """Fills of several orders recorded at once, beside flushes, state writes and other events, with the audit trail
    yielding at random while it writes: after every write, what is committed holds no fill event without its
    fill, and in the end every fill has its event and every event its fill."""
    rng = random.Random(seed)
    db_path, audit_path = tmp_path / "ffe.db", tmp_path / "audit.jsonl"
    problems: list[str] = []
    looks = 0

    def look(after: str) -> None:
        nonlocal looks
        fills, events = committed_state(db_path, tmp_path / "copy.db")
        alone = events_without_their_fill(fills, events)
        if alone:
            problems.append(f"after {after}: fill events committed without their fill: {alone}")
        looks += 1

    async def main() -> None:
        clock = WallClock()
        store = await Store.open(db_path)
        audit = AuditWriter(audit_path)

        async def audit_write_yielding() -> None:
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)
            await audit.flush()
            for _ in range(rng.randrange(3)):
                await asyncio.sleep(0)

        store.write_events_first(audit_write_yielding, audit.written)
        bus = EventBus(clock)
        bus.add_sink(store.add_event)
        bus.add_sink(audit)

        async def filler(n: int) -> None:
            o = Order(client_order_id=f"ffe-{seed}-{n}", symbol="BTC/USDT", side=Side.BUY, quantity=1.0,
                      type="market", reason=OrderReason.SIGNAL, venue="paper", decision_id="d", created_ts=1,
                      updated_ts=1)
            await store.journal_order(o, {"reason": "signal"})
            for part in range(1, 6):
                o.filled = part * 0.2
                fill = Fill(client_order_id=o.client_order_id, symbol="BTC/USDT", side=Side.BUY, quantity=0.2,
                            price=100.0 + part, fee=0.01, ts=part)
                event = FillEvent(client_order_id=o.client_order_id, symbol="BTC/USDT", side="buy", quantity=0.2,
                                  price=100.0 + part, fee=0.01)
                await store.add_fill(fill, o, publish=functools.partial(bus.publish, event))
                look(f"fill {part} of {o.client_order_id}")
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)

        async def other_writer() -> None:
            for i in range(40):
                choice = rng.randrange(3)
                if choice == 0:
                    await store.flush()
                elif choice == 1:
                    await store.set_engine_state(rng.choice(["RUNNING", "PAUSED"]), "operator", "ctl", clock.wall())
                else:
                    bus.publish(EngineStateChanged(state="PAUSED", previous="RUNNING", reason=f"x{i}", by="test"))
                look(f"other write {i} ({choice})")
                for _ in range(rng.randrange(4)):
                    await asyncio.sleep(0)

        try:
            await asyncio.gather(*(filler(n) for n in range(4)), other_writer(), other_writer())
            await store.flush()
        finally:
            await store.close()
            audit.close()

    asyncio.run(main())
    fills, events = committed_state(db_path, tmp_path / "final.db")
    assert looks == 100  # 20 fills, 80 other writes
    assert not problems, "\n".join(problems[:5])
    assert sorted(fills) == sorted(events) and len(fills) == 20


async def test_after_a_fill_that_could_not_be_recorded_the_books_in_memory_are_never_stored(tmp_path):
    """A fill is applied to the books in memory, then recorded with them in one transaction. If that transaction
    cannot be written (another process holds the database's write lock), the books in memory hold a fill the
    records do not: a later write of the books (the housekeeping's, queued behind the fill's) must not store them,
    even once the lock is gone, or the stored cash would count a fill the fills table lacks (seen once under load:
    `ffe doctor`: "stored cash 8016.39745011, the fills make it 9007.88016813")."""
    store = await Store.open(tmp_path / "ffe.db")
    try:
        await store.conn.execute("PRAGMA busy_timeout=100")  # the engine waits 5 s; the test need not
        o = Order(client_order_id="ffe-1", symbol="BTC/USDT", side=Side.BUY, quantity=1.0, type="market",
                  reason=OrderReason.SIGNAL, venue="paper", decision_id="d", created_ts=1, updated_ts=1)
        await store.journal_order(o, {"reason": "signal"})
        await store.put_kvs({"portfolio": {"cash": 10_000.0, "peak_equity": 10_000.0}}, 1.0)
        holder = sqlite3.connect(tmp_path / "ffe.db", isolation_level=None)
        holder.execute("BEGIN IMMEDIATE")
        o.filled = 1.0
        fill = Fill(client_order_id="ffe-1", symbol="BTC/USDT", side=Side.BUY, quantity=1.0, price=100.0, fee=0.1,
                    ts=2)
        with pytest.raises(StorageError, match="locked by another process"):
            await store.add_fill(fill, o)
        holder.execute("ROLLBACK")
        holder.close()
        # Refused: after the failed write nothing more is written (the books ahead of the records least of all).
        with pytest.raises(StorageError, match="could not be recorded|locked by another process"):
            await store.put_kvs({"portfolio": {"cash": 9_899.9, "peak_equity": 10_000.0}}, 3.0)
        assert await store.get_kv("portfolio") == {"cash": 10_000.0, "peak_equity": 10_000.0}
        assert db_count(tmp_path / "ffe.db", "fills") == 0
    finally:
        with contextlib.suppress(Exception):
            await store.close()


def db_count(db, table: str) -> int:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


def test_a_fill_before_the_first_bar_s_books_commits_the_market_with_them(tmp_path):
    """The books (kv portfolio) are stored with every fill, and a simulated market's state with the books: an
    order on the paper venue before the first bar's books were stored (an operator's, or one recovered at a start)
    fills at the first candle's open, and a kill right after that fill's commit must not leave the books without
    their market, which a start takes for a market lost (damage), not for a first start."""
    settings = fill_settings(tmp_path)
    found: list[tuple[bool, bool]] = []

    async def main() -> None:
        p = await trading_pipeline(settings)
        add_fill = p.store.add_fill

        async def add_fill_then_crash_here(fill, order, *args, **kwargs):
            await add_fill(fill, order, *args, **kwargs)
            with crashed_copy(settings.db_path, tmp_path / f"crash{len(found)}.db") as db:
                keys = {r[0] for r in db.execute("SELECT key FROM kv WHERE key IN ('portfolio', 'market')")}
            found.append(("portfolio" in keys, "market" in keys))

        p.store.add_fill = add_fill_then_crash_here
        try:
            assert await p.store.get_kv("market") is None  # no bar's books stored yet
            await p.engine.operator_order("BTC/USDT", "buy", 0.01, by="ctl")
            candles = p.feed.iter_candles()
            for _ in SYMBOLS:
                await p.engine.on_candle(next(candles))
        finally:
            await p.close()

    asyncio.run(main())
    assert found and found[0][0], found
    assert found[0] == (True, True), "the first fill's commit stored the books without the market"
