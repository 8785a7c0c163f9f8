"""The SQLite store: WAL, a versioned schema, durable writes that another connection sees at once, data kept
across a reopen, and a database from a newer ffe refused with a clear error (by the library and by `ffe run`)."""

from __future__ import annotations

import os
import sqlite3
import stat

import pytest

from conftest import db_rows, db_value, run_ffe
from ffe_engine.clock import WallClock
from ffe_engine.events import EngineStateChanged, EventBus
from ffe_engine.model import ClosedTrade, Fill, Order, OrderReason, OrderStatus, Position, Side
from ffe_engine.risk import OrderIntent
from ffe_engine.store import SCHEMA_VERSION, FillRecord, SchemaError, Store

TABLES = {"kv", "engine_state", "decisions", "votes", "gate_results", "orders", "fills", "positions", "trades",
          "provider_scores", "approvals", "events"}


def _order(cid: str = "ffe-test-1") -> Order:
    return Order(client_order_id=cid, symbol="BTC/USDT", side=Side.BUY, quantity=0.5, type="market",
                 reason=OrderReason.SIGNAL, venue="paper", decision_id="d1", created_ts=1, updated_ts=1)


def _intent(o: Order) -> dict:
    return OrderIntent(symbol=o.symbol, side=o.side, quantity=o.quantity, reason=o.reason,
                       decision_id=o.decision_id).as_dict()


async def test_a_new_database_is_in_wal_mode_with_the_schema_version_set(tmp_path):
    path = tmp_path / "data" / "ffe.db"
    store = await Store.open(path)
    try:
        assert db_value(path, "PRAGMA journal_mode") == "wal"
        assert db_value(path, "PRAGMA user_version") == SCHEMA_VERSION >= 1
        tables = {r[0] for r in db_rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert TABLES <= tables
    finally:
        await store.close()


async def test_durable_writes_are_visible_to_another_connection_before_the_call_returns(tmp_path):
    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    try:
        await store.journal_order(_order(), _intent(_order()))
        # No flush, no close: the journal entry is already committed (an order is recorded before it is sent).
        assert db_rows(path, "SELECT client_order_id, status FROM orders") == [("ffe-test-1", "new")]
        await store.set_engine_state("HALTED", "kill switch", "operator", 1.0)
        assert db_rows(path, "SELECT state, reason, by FROM engine_state") == [("HALTED", "kill switch", "operator")]
    finally:
        await store.close()


async def test_reopening_an_existing_database_keeps_its_data(tmp_path):
    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    bus = EventBus(WallClock())
    bus.add_sink(store.add_event)
    o = _order()
    await store.journal_order(o, _intent(o))
    o.status = OrderStatus.OPEN
    await store.update_order(o)
    await store.set_engine_state("PAUSED", "operator", "ctl", 2.0)
    await store.put_kv("portfolio", {"cash": 1234.5, "peak_equity": 1300.0}, 2.0)
    # A fill with what it changed in the book (position, a closed trade), recorded in one transaction.
    o.filled, o.average, o.fee = 0.5, 100.0, 0.05  # as the order path keeps them: what its fills make them
    trade = ClosedTrade(symbol="ETH/USDT", side=Side.BUY, quantity=1.0, entry_price=10.0, exit_price=11.0, pnl=0.9,
                        fees=0.1, reason="take_profit", opened_ts=1, closed_ts=2)
    record = FillRecord(wall=0.0, position=Position(symbol="BTC/USDT", side=Side.BUY, quantity=0.5, entry_price=100.0,
                                          opened_ts=5, stop_loss=90.0, take_profit=120.0, entry_decision_id="d1",
                                          fees=0.05), trade=trade)
    await store.add_fill(Fill(client_order_id=o.client_order_id, symbol="BTC/USDT", side=Side.BUY, quantity=0.5,
                              price=100.0, fee=0.05, ts=5), o, record)
    assert trade.trade_id == 1
    for _ in range(3):  # the state's own records, as the engine writes them with it (a start judges the two)
        bus.publish(EngineStateChanged(state="PAUSED", previous="RUNNING", reason="operator", by="ctl"))
    await store.close()

    store = await Store.open(path)
    try:
        assert db_value(path, "PRAGMA user_version") == SCHEMA_VERSION
        assert await store.get_engine_state() == ("PAUSED", "operator", "ctl")
        assert await store.get_kv("portfolio") == {"cash": 1234.5, "peak_equity": 1300.0}
        live = await store.live_orders()
        assert [(x.client_order_id, x.status) for x in live] == [("ffe-test-1", OrderStatus.OPEN)]
        assert await store.order_intents(["ffe-test-1"]) == {"ffe-test-1": _intent(o)}
        (pos,) = await store.positions()
        assert (pos.symbol, pos.quantity, pos.stop_loss, pos.take_profit) == ("BTC/USDT", 0.5, 90.0, 120.0)
        assert db_rows(path, "SELECT symbol, pnl, reason FROM trades") == [("ETH/USDT", 0.9, "take_profit")]
        assert db_rows(path, "SELECT client_order_id, quantity FROM fills") == [("ffe-test-1", 0.5)]
        assert await store.last_seq() == 3  # the next event continues after these
    finally:
        await store.close()


async def test_a_database_with_a_newer_schema_is_refused_and_left_as_it_was(tmp_path):
    path = tmp_path / "ffe.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    with pytest.raises(SchemaError, match=rf"schema version {SCHEMA_VERSION + 1} is newer") as err:
        await Store.open(path)
    assert str(path) in str(err.value)
    assert db_value(path, "PRAGMA user_version") == SCHEMA_VERSION + 1
    assert db_rows(path, "SELECT name FROM sqlite_master") == []  # no migration ran over it


def test_ffe_run_on_a_newer_database_stops_with_one_line_naming_it(tmp_path):
    db = tmp_path / "data" / "ffe.db"
    db.parent.mkdir()
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()

    proc = run_ffe(tmp_path, "run", "--headless", "--max-bars", "5", timeout=60)  # must end by itself, too
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("ffe: error: ") and "data/ffe.db" in lines[0] and "newer" in lines[0]
    assert db_value(db, "PRAGMA user_version") == SCHEMA_VERSION + 1


async def test_the_books_of_a_bar_are_stored_together_or_not_at_all(tmp_path):
    """The engine stores a bar's books (portfolio, simulated market, paper venue, weights) with put_kvs: a write the
    database refuses half-way leaves none of them changed, so a crash never leaves one of them a bar ahead."""
    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    try:
        await store.put_kvs({"portfolio": {"cash": 1.0}, "market": {"bar": 1}}, 1.0)
        con = sqlite3.connect(path)
        con.execute("CREATE TRIGGER refuse_market BEFORE UPDATE ON kv WHEN NEW.key = 'market' "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END")
        con.commit()
        con.close()
        with pytest.raises(sqlite3.Error, match="refused"):
            await store.put_kvs({"portfolio": {"cash": 2.0}, "market": {"bar": 2}}, 2.0)
        assert db_rows(path, "SELECT key, value FROM kv WHERE key IN ('portfolio', 'market') ORDER BY key") == [
            ("market", '{"bar":1}'), ("portfolio", '{"cash":1.0}')]
    finally:
        await store.close()


async def test_a_new_database_is_private_to_its_user_whatever_the_umask(tmp_path):
    # The engine's start makes its files private (host.py sets the umask); a start stopped at once restores the
    # caller's while the connection's thread may still be creating the file: the file is made 0600 by itself.
    old = os.umask(0o022)
    try:
        store = await Store.open(tmp_path / "ffe.db")
        await store.set_engine_state("RUNNING", "fresh start", "engine", 1.0)
        await store.close()
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "ffe.db").stat().st_mode) == 0o600


async def test_a_write_queued_behind_one_the_lock_refused_writes_nothing(tmp_path):
    """Another process holds the database past busy_timeout_s: the flush under way fails (its events are not
    written), and a state change queued behind it (an operator's pause) must not commit its own later events once
    the lock is gone: the events table would lack the failed flush's seqs, and no start would take the account."""
    import asyncio
    import threading

    from ffe_engine.errors import StorageError

    path = tmp_path / "ffe.db"
    store = await Store.open(path, busy_timeout_s=0.3)
    bus = EventBus(WallClock())
    bus.add_sink(store.add_event)
    try:
        bus.publish(EngineStateChanged(state="RUNNING", previous="", reason="fresh start", by="engine"))
        await store.flush()
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN EXCLUSIVE")
        unlocked = threading.Timer(0.45, lambda: other.execute("ROLLBACK"))
        bus.publish(EngineStateChanged(state="RUNNING", previous="RUNNING", reason="a bar", by="engine"))
        flush = asyncio.ensure_future(store.flush())
        await asyncio.sleep(0.05)  # the flush waits on the lock
        unlocked.start()  # gone after the flush has given up, before the pause's wait would end
        pause = asyncio.ensure_future(store.set_engine_state(
            "PAUSED", "operator", "ctl", 2.0,
            publish=lambda: bus.publish(EngineStateChanged(state="PAUSED", previous="RUNNING", reason="operator",
                                                           by="ctl"))))
        for asked in (flush, pause):
            with pytest.raises(StorageError):
                await asked
        unlocked.join()
        other.close()
        assert db_rows(path, "SELECT seq FROM events ORDER BY seq") == [(1,)]
        assert db_rows(path, "SELECT state FROM engine_state") == []
    finally:
        await store.close()


@pytest.mark.parametrize("command", [("report", "trades"), ("report", "providers"), ("audit", "tail", "-n", "2"),
                                     ("audit", "verify"), ("audit", "show", "1")],
                         ids=["report-trades", "report-providers", "audit-tail", "audit-verify", "audit-show"])
def test_the_readers_refuse_a_database_a_newer_ffe_wrote(tmp_path, command):
    """`ffe report` and `ffe audit` read the records as whole: those of a newer ffe's database are not all this
    release knows how to read. Refused as `ffe doctor`, `ffe backup` and the start refuse it: one line, exit 2."""
    assert run_ffe(tmp_path, "run", "--headless", "--max-bars", "3").returncode == 0
    db = tmp_path / "data" / "ffe.db"
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.commit()
    conn.close()
    proc = run_ffe(tmp_path, *command)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"schema version {SCHEMA_VERSION + 1} is newer than this ffe" in lines[0], proc.stderr
    assert proc.stdout == ""


async def test_a_database_written_over_in_place_is_refused_by_the_next_write_before_its_checkpoint_grows_it_back(
        tmp_path):
    """A smaller SQLite file copied onto the account's (same inode) between two of the engine's looks at its size:
    the next commit's checkpoint would write the WAL's pages back into it and grow it past the size the look
    knows, hiding the change for good. The write itself looks first: refused as damage, nothing written."""
    from ffe_engine.errors import DamagedDatabase

    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    try:
        for n in range(200):
            await store.put_kv(f"k{n}", "x" * 200, 0.0)
        await store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store.check_in_place()  # the size seen
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as conn:
            conn.execute("CREATE TABLE notes (x)")
        with open(path, "r+b") as f:
            f.write(other.read_bytes())
            f.truncate()
        with pytest.raises(DamagedDatabase, match="written over while the engine ran"):
            await store.put_kv("after", 1, 0.0)
        with pytest.raises(DamagedDatabase):
            await store.put_kv("after", 2, 0.0)  # nothing more is written
        assert path.stat().st_size == other.stat().st_size
    finally:
        await store.close()


async def test_a_database_written_over_in_place_is_left_as_it_was_found_halt_and_close_included(tmp_path):
    """Once the file at the path is found written over (another database copied onto it), nothing of the engine's
    goes into it: not the HALTED its stop records, nor its WAL's pages as the connection closes (SQLite checkpoints
    on close); the file stays byte for byte what was put there, as the refusal says."""
    import hashlib

    from ffe_engine.errors import DamagedDatabase

    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    try:
        for n in range(200):
            await store.put_kv(f"k{n}", "x" * 200, 0.0)
        older = tmp_path / "older.db"
        await store.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        older.write_bytes(path.read_bytes())  # the account as it was, copied back later over the grown file
        for n in range(400):
            await store.put_kv(f"m{n}", "y" * 400, 0.0)
        await store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        await store.put_kv("seen", 1, 0.0)  # the size after that, seen
        for n in range(50):
            await store.put_kv(f"w{n}", "z" * 400, 0.0)  # in the WAL only
        path.write_bytes(older.read_bytes())  # in place: the same inode
        put_there = hashlib.sha256(path.read_bytes()).hexdigest()
        with pytest.raises(DamagedDatabase):
            await store.put_kv("after", 1, 0.0)
        assert await store.record_halt("records cannot be written", "engine", 0.0) is False
    finally:
        await store.close()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == put_there


async def test_a_database_cut_back_after_a_commit_s_own_checkpoint_grew_it_is_refused_by_the_next_write(tmp_path):
    """The size a write compares with is the one after the last write (its commit's checkpoint may have grown the
    file), not the one before it: a file cut back below it in between is refused, not taken for the account's."""
    from ffe_engine.errors import DamagedDatabase

    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    try:
        await store.conn.execute("PRAGMA wal_autocheckpoint=1")  # every commit checkpoints, as a busy one does
        await store.put_kv("first", 1, 0.0)
        before = path.stat().st_size
        await store.put_kv("big", "x" * 40_000, 0.0)  # its commit's checkpoint grows the file
        assert path.stat().st_size > before
        with open(path, "r+b") as f:
            f.truncate(before)
        with pytest.raises(DamagedDatabase, match="written over while the engine ran"):
            await store.put_kv("after", 1, 0.0)
    finally:
        await store.close()
