"""The run's database connection (ffe_engine/sqlthread.py): the statements of a transaction are handed to the
connection's thread together, and whatever fails among them fails the transaction whole: nothing of it is kept,
whichever call handed the failing statement over. Real SQLite files; a refused write is a trigger's RAISE."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3

import pytest

from conftest import db_rows
from ffe_engine.model import ClosedTrade, Fill, Order, OrderReason, OrderStatus, Side
from ffe_engine.sqlthread import Connection
from ffe_engine.store import FillRecord, Store


@pytest.fixture
async def conn(tmp_path):
    """A connection to t.db under tmp_path, with a table t (k, v), closed after the test."""
    connection = await Connection.connect(str(tmp_path / "t.db"))
    await connection.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT NOT NULL)")
    yield connection
    await connection.close()


def refuse(path, table: str, when: str = "1") -> None:
    """Writes of rows into `table` (where `when` holds) fail from now on, as a disk refusing them would."""
    db = sqlite3.connect(path)
    db.execute(f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN {when} "
               "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    db.commit()
    db.close()


async def begin_with_a_refused_insert(conn: Connection, path) -> None:
    """A transaction that inserts k = 1, then k = 2, which the database refuses (nothing says so yet)."""
    refuse(path, "t", "NEW.k = 2")
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO t VALUES (1, 'a')")
    await conn.execute("INSERT INTO t VALUES (2, 'b')")


async def test_a_transaction_is_committed_whole_and_its_reads_see_its_own_writes(conn, tmp_path):
    path = tmp_path / "t.db"
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO t VALUES (1, 'a')")
    await conn.executemany("INSERT INTO t VALUES (?, ?)", [(2, "b"), (3, "c")])
    assert db_rows(path, "SELECT k FROM t") == []  # another connection sees nothing before the commit
    cur = await conn.execute("SELECT COUNT(*) FROM t")
    assert await cur.fetchone() == (3,)
    await conn.execute("INSERT INTO t VALUES (4, 'd')")
    await conn.execute("COMMIT")
    assert db_rows(path, "SELECT k, v FROM t ORDER BY k") == [(1, "a"), (2, "b"), (3, "c"), (4, "d")]
    cur = await conn.execute("UPDATE t SET v = 'x' WHERE k > 2")  # outside a transaction: at once
    assert cur.rowcount == 2
    assert db_rows(path, "SELECT v FROM t WHERE k = 4") == [("x",)]


async def test_a_statement_that_fails_inside_a_transaction_fails_its_commit_and_nothing_is_kept(conn, tmp_path):
    path = tmp_path / "t.db"
    await begin_with_a_refused_insert(conn, path)
    await conn.execute("INSERT INTO t VALUES (3, 'c')")
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        await conn.execute("COMMIT")
    await conn.execute("ROLLBACK")  # as the store does after a failed commit
    assert db_rows(path, "SELECT k FROM t") == []
    await conn.execute("INSERT INTO t VALUES (5, 'e')")  # the connection goes on
    assert db_rows(path, "SELECT k FROM t") == [(5,)]


async def test_a_failure_handed_over_by_another_task_s_read_still_fails_the_commit(conn, tmp_path):
    """A read by another task in the middle of a transaction runs the statements held so far: the one that fails
    among them is the transaction's failure, raised by its COMMIT, never committed with the rest."""
    path = tmp_path / "t.db"
    await begin_with_a_refused_insert(conn, path)
    reader = asyncio.ensure_future(conn.execute("SELECT COUNT(*) FROM t"))
    cur = await reader
    assert await cur.fetchone() == (1,)  # it saw what ran before the failure, as it would have
    await conn.execute("INSERT INTO t VALUES (3, 'c')")  # not run: the transaction has failed
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        await conn.execute("COMMIT")
    await conn.execute("ROLLBACK")
    assert db_rows(path, "SELECT k FROM t") == []


async def test_a_rollback_before_anything_reached_the_database_runs_nothing(conn, tmp_path):
    path = tmp_path / "t.db"
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO t VALUES (1, 'a')")
    await conn.execute("ROLLBACK")  # no "no transaction is active" error
    await conn.execute("BEGIN")
    await conn.execute("INSERT INTO t VALUES (2, 'b')")
    await conn.execute("SELECT 1")  # the transaction reached the database
    await conn.execute("ROLLBACK")
    await conn.execute("INSERT INTO t VALUES (3, 'c')")
    assert db_rows(path, "SELECT k FROM t") == [(3,)]


async def test_a_fill_whose_trade_the_database_refuses_is_recorded_not_at_all(tmp_path):
    """The store's fill transaction (fill, order state, position, closed trade, books) through the connection: the
    closed trade's row refused, nothing of the fill is kept and the error reaches the caller."""
    path = tmp_path / "ffe.db"
    store = await Store.open(path)
    order = Order(client_order_id="ffe-1", symbol="BTC/USDT", side=Side.SELL, quantity=0.5, type="market",
                  reason=OrderReason.SIGNAL, venue="paper", decision_id="d1", created_ts=1, updated_ts=1)
    try:
        await store.journal_order(order)
        refuse(path, "trades")
        filled = dataclasses.replace(order, status=OrderStatus.FILLED, filled=0.5, average=100.0, updated_ts=2)
        fill = Fill(client_order_id="ffe-1", symbol="BTC/USDT", side=Side.SELL, quantity=0.5, price=100.0, fee=0.1,
                    ts=2)
        trade = ClosedTrade(symbol="BTC/USDT", side=Side.BUY, quantity=0.5, entry_price=90.0, exit_price=100.0,
                            opened_ts=1, closed_ts=2, pnl=4.9, fees=0.1, reason="signal")
        record = FillRecord(wall=0.0, position=None, closed_symbol="BTC/USDT", trade=trade,
                            kv={"portfolio": {"cash": 1.0}})
        with pytest.raises(sqlite3.IntegrityError):
            await store.add_fill(fill, filled, record)
        assert db_rows(path, "SELECT COUNT(*) FROM fills") == [(0,)]
        assert db_rows(path, "SELECT status, filled FROM orders") == [("new", 0.0)]
        assert db_rows(path, "SELECT COUNT(*) FROM kv WHERE key = 'portfolio'") == [(0,)]
        await store.set_engine_state("PAUSED", "test", "operator", 3.0)  # the store goes on
        assert db_rows(path, "SELECT state FROM engine_state") == [("PAUSED",)]
    finally:
        await store.close()
