"""The paper venue keeps the orders it accepted, as an exchange does: its book is written in the same transaction as
the journal entry that records the accept, so a kill right after it (before the bar ends and the books are stored)
never leaves the journal with an order the venue has forgotten ("venue no longer knows this order")."""

from __future__ import annotations

import json
import shutil

from conftest import db_rows, db_value, engine_session, make_settings

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
