"""The paper venue keeps the orders it accepted, as an exchange does: its book is written in the same transaction as
the journal entry that records the accept, so a kill right after it (before the bar ends and the books are stored)
never leaves the journal with an order the venue has forgotten ("venue no longer knows this order")."""

from __future__ import annotations

import json
import shutil

from conftest import db_rows, db_value, engine_session, ffe_env, make_settings, run_ffe

BTC = "BTC/USDT"


async def test_an_accepted_order_is_in_the_stored_paper_book_as_soon_as_the_journal_says_open(tmp_path):
    settings = make_settings(tmp_path, engine={"symbols": [BTC], "warmup_bars": 100})
    db = settings.db_path
    async with engine_session(settings) as running:
        res = await running.engine.operator_order(BTC, "buy", 0.01)
        assert res["accepted"], res
        cid = res["client_order_id"]
        # What a SIGKILL now leaves on disk: the committed database (the WAL included), copied as it is.
        crashed = tmp_path / "crashed"
        (crashed / "data").mkdir(parents=True)
        for name in ("ffe.db", "ffe.db-wal"):
            if (db.parent / name).exists():
                shutil.copy(db.parent / name, crashed / "data" / name)
        shutil.copytree(settings.log_dir, crashed / "logs")
    copy = crashed / "data" / "ffe.db"
    assert db_value(copy, "SELECT status FROM orders WHERE client_order_id = ?", (cid,)) == "open"
    book = db_value(copy, "SELECT value FROM kv WHERE key = 'paper_venue'")
    assert book is not None, "the paper venue's book was not stored with the accept"
    orders = {o["client_order_id"]: o for o in json.loads(book)["orders"]}
    assert orders.get(cid, {}).get("status") == "open"

    # The restart from that state: the order is still known to the venue, and fills at the next candle.
    restarted = make_settings(crashed, engine={"symbols": [BTC], "warmup_bars": 100})
    async with engine_session(restarted, max_bars=3) as again:
        await again.engine.run()
    rows = db_rows(copy, "SELECT status, error FROM orders WHERE client_order_id = ?", (cid,))
    assert rows == [("filled", "")], rows


def test_a_restart_after_more_orders_than_the_saved_book_keeps_gives_new_exchange_ids_and_doctor_passes(tmp_path):
    # One trend provider, loose risk limits and near stops: a short simulated run places a few hundred orders.
    env = ffe_env(FFE_ENSEMBLE__PROVIDERS='["trend"]', FFE_ENSEMBLE__MIN_VOTES=1, FFE_RISK__MIN_CONFIDENCE=0,
                  FFE_RISK__TAKE_PROFIT_ATR=0.05, FFE_RISK__STOP_LOSS_ATR=0.05, FFE_RISK__MAX_DAILY_TRADES=1_000_000,
                  FFE_RISK__MAX_ORDERS_PER_MINUTE=1_000_000, FFE_RISK__MAX_CORRELATION=1, FFE_RISK__MAX_VAR_PCT=100,
                  FFE_RISK__MAX_DRAWDOWN_PCT=100, FFE_RISK__DAILY_LOSS_LIMIT_PCT=100)
    db = tmp_path / "data" / "ffe.db"
    first = run_ffe(tmp_path, "run", "--headless", "--max-bars", "300", env=env)
    assert first.returncode == 0, first.stderr
    before = db_value(db, "SELECT COUNT(*) FROM orders")
    assert before > 200, before  # past the 200 final orders the stored paper book keeps
    second = run_ffe(tmp_path, "run", "--headless", "--max-bars", "150", env=env)
    assert second.returncode == 0, second.stderr
    assert db_value(db, "SELECT COUNT(*) FROM orders") > before  # the restarted engine placed orders
    ids = [row[0] for row in db_rows(db, "SELECT exchange_id FROM orders WHERE exchange_id IS NOT NULL")]
    assert len(set(ids)) == len(ids), sorted(i for i in set(ids) if ids.count(i) > 1)[:5]
    doctor = run_ffe(tmp_path, "doctor")
    assert doctor.returncode == 0, doctor.stderr
