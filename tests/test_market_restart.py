"""The simulated market continues across a restart: same prices, same bar time, the recent bars as warm-up.

Seen before: a restart started a new price path, and a position carried across it was re-priced on that path
(BTC 61,182 to 60,028) and stopped out for a loss. The market's state is stored with the engine's books; a new
engine over the same database continues it. Real engine, real SQLite, the simulated feed as `ffe run` makes it.
"""

from __future__ import annotations

from pathlib import Path

from ffe_engine.clock import SimClock

from pipeline_helpers import BUY, MIN, START_TS, make_settings, open_pipeline, simulated_feed
from conftest import db_value, engine_session, run_ffe

BTC, ETH = "BTC/USDT", "ETH/USDT"


async def restart(s, *, start_ts: int, seed: int | None = None, script=None):
    clock = SimClock()
    feed = simulated_feed(s, clock, start_ts=start_ts, seed=seed)
    return await open_pipeline(s, script=script if script is not None else {}, feed=feed, clock=clock)


async def next_bar(p) -> dict:
    """Feed the engine the market's next bar (every symbol's candle) and return the candles by symbol."""
    it = p.feed.iter_candles()
    bars = {}
    for _ in p.settings.engine.symbols:
        c = next(it)
        bars[c.symbol] = c
        await p.engine.on_candle(c)
    return bars


async def test_a_position_carried_across_a_restart_is_priced_on_the_path_it_was_opened_on(tmp_path):
    s = make_settings(tmp_path, risk={"take_profit_atr": 100, "stop_loss_atr": 100})
    script = {BTC: (BUY, 0.8)}
    p = await open_pipeline(s, script=script)
    try:
        await p.until(lambda: BTC in p.engine.portfolio.positions, max_bars=5, what="a BTC position")
        del script[BTC]
        await p.bars(30)
        last = {sym: closes[-1] for sym, closes in p.closes.items()}
        last_ts = p.engine.last_bar_ts[BTC]
        pos = p.engine.portfolio.positions[BTC]
        entry = pos.entry_price
        live = {sym: list(closes) for sym, closes in p.closes.items()}
    finally:
        await p.close()

    # restarted "a moment later" by the wall clock: the fresh start time is earlier than the market time reached
    p = await restart(s, start_ts=START_TS + 5 * MIN)
    try:
        assert p.engine.portfolio.positions[BTC].entry_price == entry
        # warmed on the bars it saw before the stop, not on a made-up past
        warmup = p.engine.feed.history(s.engine.warmup_bars)
        for sym in (BTC, ETH):
            assert [c.close for c in warmup if c.symbol == sym][-len(live[sym]):] == live[sym]
        first = await next_bar(p)
        for sym in (BTC, ETH):
            assert first[sym].open == last[sym]  # the new bar opens at the last close: no jump
        assert p.engine.last_bar_ts[BTC] == last_ts + MIN  # market time goes on
        assert BTC in p.engine.portfolio.positions  # not stopped out by a new path
        assert await p.rows("SELECT count(*) FROM trades") == [(0,)]
    finally:
        await p.close()


async def test_after_a_long_stop_market_time_resumes_at_the_wall_clock_with_prices_continued(tmp_path):
    s = make_settings(tmp_path)
    p = await open_pipeline(s, script={})
    await p.bars(10)
    last = {sym: closes[-1] for sym, closes in p.closes.items()}
    await p.close()
    later = START_TS + 3 * 86_400_000  # three days later by the wall clock, past the market time reached
    p = await restart(s, start_ts=later)
    try:
        bars = await next_bar(p)
        assert p.engine.last_bar_ts[BTC] == later == bars[BTC].ts
        assert {sym: bars[sym].open for sym in (BTC, ETH)} == last
    finally:
        await p.close()


async def test_the_same_saved_market_continues_the_same_way(tmp_path):
    s = make_settings(tmp_path)
    p = await open_pipeline(s, script={})
    await p.bars(20)
    await p.close()
    saved = (tmp_path / "data" / "ffe.db").read_bytes()
    paths = []
    for run in range(2):
        (tmp_path / "data" / "ffe.db").write_bytes(saved)
        for extra in ("-wal", "-shm"):
            (tmp_path / "data" / f"ffe.db{extra}").unlink(missing_ok=True)
        p = await restart(s, start_ts=START_TS)
        await p.bars(15)
        paths.append(dict(p.closes))
        await p.close()
    assert paths[0] == paths[1] and len(paths[0][BTC]) == 15


async def test_a_saved_market_with_a_symbol_removed_goes_on_with_the_other(tmp_path):
    """A symbol taken out of engine.symbols does not make the market another one: BTC goes on from its last close at
    the next bar time (it used to start a new path from the start time: market time back, prices jumped)."""
    p = await open_pipeline(make_settings(tmp_path), script={})
    await p.bars(5)
    last, last_ts = p.closes[BTC][-1], p.engine.last_bar_ts[BTC]
    await p.close()
    s = make_settings(tmp_path, symbols=(BTC,))
    p = await restart(s, start_ts=START_TS)
    try:
        assert [o for o in p.engine.overrides if o.setting.startswith("market")] == []
        bars = await next_bar(p)
        assert bars[BTC].open == last and bars[BTC].ts == last_ts + MIN
    finally:
        await p.close()


async def test_a_different_seed_is_announced_and_the_saved_market_continues(tmp_path):
    p = await open_pipeline(make_settings(tmp_path), script={})  # seed 7
    await p.bars(5)
    last = p.closes[BTC][-1]
    await p.close()
    s = make_settings(tmp_path, market={"seed": 99})
    p = await restart(s, start_ts=START_TS)
    try:
        [o] = [o for o in p.engine.overrides if o.setting == "market.seed"]
        assert (o.configured, o.saved, o.effective) == ("99", "7", "7") and "continues" in o.message
        assert (await next_bar(p))[BTC].open == last
    finally:
        await p.close()


async def test_config_check_says_the_saved_market_continues_when_the_seed_changed(tmp_path):
    (tmp_path / "config.toml").write_text(
        f'[market]\nseed = 11\n\n[storage]\npath = "{tmp_path / "data" / "ffe.db"}"\n\n'
        f'[logging]\ndir = "{tmp_path / "logs"}"\n')
    from conftest import make_settings as host_settings

    async with engine_session(host_settings(tmp_path), max_bars=3) as running:  # seed 7
        await running.engine.run()
    assert db_value(tmp_path / "data" / "ffe.db", "SELECT count(*) FROM kv WHERE key = 'market'") == 1
    res = run_ffe(tmp_path, "config", "check")
    assert res.returncode == 0, res.stderr
    assert any(x.startswith("#   market.seed:") and "continues" in x for x in res.stdout.splitlines()), res.stdout


def replayed_300_bars(tmp_path) -> Path:
    """`ffe run --headless` on the two sample files replayed (`market.source = "replay"`), 300 bars, ended in order:
    its database."""
    from conftest import BTC_CSV, ETH_CSV

    (tmp_path / "config.toml").write_text(
        f'[market]\nsource = "replay"\nreplay_files = {{ "BTC/USD" = "{BTC_CSV}", "ETH/USD" = "{ETH_CSV}" }}\n'
        '[engine]\nsymbols = ["BTC/USD", "ETH/USD"]\ntimeframe = "1h"\nwarmup_bars = 50\n'
        '[venue]\nquote = "USD"\n[risk]\nmin_confidence = 0.3\n')
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", "300")
    assert first.returncode == 0, first.stderr
    return tmp_path / "data" / "ffe.db"


def test_a_replayed_market_goes_on_after_a_restart_from_the_bar_after_the_last_one_seen(tmp_path):
    """`market.source = "replay"`: a restart continues the files from the bar after the last one the engine saw
    (warmed on the bars before it), never again from their first bar: the books carried across are not traded a
    second time on the same history, nor market time sent backwards."""
    from conftest import db_rows

    db = replayed_300_bars(tmp_path)
    seen = db_rows(db, "SELECT symbol, MAX(ts), COUNT(*) FROM decisions GROUP BY symbol ORDER BY symbol")
    second = run_ffe(tmp_path, "run", "--headless", "--max-bars", "200")
    assert second.returncode == 0, second.stderr
    for symbol, last_ts, count in seen:
        ts = [r[0] for r in db_rows(db, "SELECT ts FROM decisions WHERE symbol = ? ORDER BY rowid", (symbol,))]
        assert ts == sorted(set(ts)), f"{symbol}: a bar decided twice, or market time went back"
        later = ts[count:]
        assert later and later[0] == last_ts + 3_600_000  # the next bar, decided at once: warmed up on the past
    fills = [r[0] for r in db_rows(db, "SELECT ts FROM fills ORDER BY id")]
    assert fills and fills == sorted(fills)


def test_a_replayed_market_lost_beside_its_books_stops_the_start_and_doctor_names_it(tmp_path):
    """A replay's place in its files (kv `market`) is stored with the books at every bar: lost, a start would replay
    the files from their first bar under the books carried across, their positions priced on candles already past
    and traded a second time."""
    from test_damaged_database import assert_one_line, damage_record

    db = replayed_300_bars(tmp_path)
    assert db_value(db, "SELECT COUNT(*) FROM fills") > 0
    decided = db_value(db, "SELECT COUNT(*) FROM decisions")
    damage_record(db, "DELETE FROM kv WHERE key = 'market'")
    before = db.read_bytes()
    for args in (("doctor",), ("run", "--headless", "--max-bars", "50")):
        proc = run_ffe(tmp_path, *args, timeout=60)
        assert_one_line(proc, "ffe.db", "has no key market", "portfolio")
        assert "engine started" not in proc.stderr, proc.stderr[-3000:]
        assert db.read_bytes() == before, args
    assert db_value(db, "SELECT COUNT(*) FROM decisions") == decided
