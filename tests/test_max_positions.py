"""Never more than `max_open_positions` positions at once, over a long simulated run.

The engine runs its own loop (Engine.run, the four built-in providers, the paper venue, a SQLite file) on three
symbols of the simulated market for 800 bars each, with the limit at 1 and at 2 and every other limit
loose, so that the strategy wants more positions than it may hold. The proof is read back from the SQLite file: replaying the
stored fills in time order never finds more symbols held at once than the limit, and the decisions table shows
the MAX_OPEN_POSITIONS gate refusing entries (the limit was reached and defended, not merely never tested).
"""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from ffe_engine.clock import SimClock
from ffe_engine.market.simulated import SimulatedFeed

from pipeline_helpers import START_TS, make_settings, max_concurrent_positions, open_pipeline

SYMBOLS = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
BARS = 800  # 2,400 bars of three symbols: 30 to 60 positions opened and 50 to 150 entries refused at the limit


async def _run(settings) -> None:
    clock = SimClock()
    feed = SimulatedFeed(SYMBOLS, settings.engine.timeframe_ms, seed=settings.market.seed, clock=clock, speed=0.0,
                         start_ts=START_TS, max_bars=BARS)
    p = await open_pipeline(settings, feed=feed, clock=clock)
    try:
        await asyncio.wait_for(p.engine.run(), timeout=300)
    finally:
        await p.close()


@pytest.fixture(scope="module", params=[1, 2], ids=["limit1", "limit2"])
def run(request, tmp_path_factory):
    """One long run per limit; returns (limit, path of its database)."""
    limit = request.param
    tmp = tmp_path_factory.mktemp(f"maxpos{limit}")
    settings = make_settings(tmp, symbols=SYMBOLS, market={"seed": 11},
                             risk={"max_open_positions": limit, "min_confidence": 0.3})
    asyncio.run(_run(settings))
    return limit, settings.db_path


def _db(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def test_the_run_went_the_whole_way(run):
    _, path = run
    with _db(path) as db:
        bars = db.execute("SELECT data FROM events WHERE event = 'run' ORDER BY seq DESC LIMIT 1").fetchone()
        per_symbol = dict(db.execute("SELECT symbol, count(*) FROM decisions GROUP BY symbol").fetchall())
    assert b'"phase":"stop"' in bars[0] and f'"bars":{BARS * len(SYMBOLS)}'.encode() in bars[0]
    assert set(per_symbol) == set(SYMBOLS)


def test_stored_fills_never_hold_more_positions_than_the_limit(run):
    limit, path = run
    with _db(path) as db:
        fills = db.execute("SELECT symbol, side, quantity FROM fills ORDER BY ts, id").fetchall()
    most, opened = max_concurrent_positions(fills)
    assert opened >= 20, f"only {opened} positions opened: too short a run to prove anything"
    assert most == limit  # reached, never exceeded


def test_max_open_positions_refused_entries_during_the_run(run):
    limit, path = run
    with _db(path) as db:
        refused = db.execute("SELECT decision_id FROM decisions WHERE outcome = 'rejected' "
                             "AND reason LIKE 'MAX_OPEN_POSITIONS:%'").fetchall()
        assert len(refused) >= 10
        rows = db.execute("SELECT value, limit_value, passed FROM gate_results WHERE code = 'MAX_OPEN_POSITIONS' "
                          "AND decision_id IN (SELECT decision_id FROM decisions WHERE reason LIKE "
                          "'MAX_OPEN_POSITIONS:%')").fetchall()
        submitted = db.execute("SELECT count(*) FROM decisions WHERE outcome = 'submitted'").fetchone()[0]
    assert len(rows) == len(refused)
    assert {(float(v), float(lim), p) for v, lim, p in rows} == {(limit + 1, limit, 0)}
    assert submitted >= 20
